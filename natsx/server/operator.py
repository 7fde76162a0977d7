"""Operator (JWT) mode in a worker: user JWT authentication and accounts made from account JWTs.

Theory of operation
-------------------
With ``operator`` or ``trusted`` configured (``Options.operator_mode``) every client must
present a user JWT. ``Operator.authorize`` is the JWT branch of Go's
processClientOrLeafAuthentication, in its order: decode and validate the user claims (expiry
included), find the issuing account (``issuer_account`` for a signing key) through the
resolver, check that a trusted operator key signed it and that the user's issuer is the
account or one of its signing keys (a scoped key replaces the user's permissions with its
template), account expiry, bearer tokens, allowed connection types, the signature of the
INFO nonce (not for bearer tokens), revocations, ``src`` and ``times``. A client that sends
no user JWT is given ``default_sentinel`` when one is configured (a bearer JWT, so no
signature is asked for), and is then checked like any other. Any failure is an
'Authorization Violation', as in Go. The user's permissions (or else the account's
``default_permissions``) are installed as for config users (natsx.server.authorization);
the payload and subscription limits are the smallest of the user's, the account's and the
server's (applyAccountLimits); the connection is closed with 'User Authentication Expired'
when the JWT (or its ``times`` window) runs out.

Accounts. An account is created in a worker the first time it is needed there (a client
connects to it, an import names it), from the JWT the resolver returns, verified against the
trusted keys. Its sublist is registered under its public key, which is its name everywhere,
so every worker creates the same account under the same key and the mesh routes between
them; a worker that only hears of an account from a peer (a subscription announced on the
mesh) creates it bare (``Server.ensure_account``) until it needs the claims. Imports are
internal subscriptions (natsx.server.imports, ``shared``), installed after the exporter's
claims authorize them: a matching export of the right type and, for ``token_req`` exports,
an activation token signed by the exporter. An account whose service exports measure
latency describes its responders to the requestors' workers from every worker that loads
it (natsx.server.imports).

Updates. A new JWT for a live account (pushed on ``$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE``,
``$SYS.REQ.CLAIMS.UPDATE`` for directory resolvers, or re-read on reload) replaces the
claims: imports are rebuilt (also those of accounts importing from it), limits re-applied to
its connections, connections over a lowered connection limit closed, users now revoked
closed with 'User Authentication Revoked'. Every worker subscribes to the update subjects,
so each applies every update; only the worker the publisher is on answers (and writes the
directory resolver's file).

Resolvers: MEMORY and the directory resolvers answer at once; ``URL(...)`` needs an HTTP
request, so ``authorize`` raises ``PendingLookup`` and the connection awaits
``fetch_async`` (in a thread) before handling the CONNECT again. The directory resolvers
also take ``$SYS.REQ.CLAIMS.DELETE`` (a generic JWT self-signed by the operator listing
accounts; refused unless ``allow_delete``, the cache always deletes): the worker the request
came in on removes the files and answers, every worker drops the accounts as Go's removeCb
does (clients closed with 'Account Authentication Expired', JetStream stopped). Worker 0
runs the directory's expiration (the cache's ``ttl``, else the JWTs' own expiry). The cache
answers updates as Go's CacheDirAccResolver does ("jwt updated cache", and "skipped" for
an account the server has not loaded).

JetStream. An account's JWT enables, updates or disables its JetStream (the ``jetstream``
limits, or the R1 tier) in the worker that runs JetStream (worker 0); another worker that
loads an account tells worker 0 (``jwt.loaded`` in the workers' account), which loads it
too. Mappings. The JWT's ``mappings`` are installed in the account (natsx.server.mapping).

Reload. MEMORY preloads are re-read (an account gone is removed, a changed one updated),
and every JWT client is authorized again with the CONNECT it sent (Go's
reloadAuthorization): one no longer authorized is closed with 'Authorization Violation'.
Changing the operators, the trusted keys or the resolver is refused (natsx.server.reload).

Limits. The account connection limit holds for the whole server: the workers exchange
their counts and close the excess (natsx.server.acclimits, Go's remote connection counts).
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import trio

from natsx import SERVER_VERSION
from natsx.auth import jwt
from natsx.auth.nkeys import verify_signature
from natsx.auth.permissions import Permissions, ResponsePermission, SubjectPermission
from natsx.auth.resolver import MemoryResolver, MissingAccountError, ResolverError, URLResolver
from natsx.auth.users import CLIENT_CONNECTION_TYPE, CONNECTION_TYPES
from natsx.server.accounts import ServiceImport, StreamImport

if TYPE_CHECKING:
    from natsx.server.connection import ClientConnection
    from natsx.server.worker import Server

log = logging.getLogger("natsx")

USER_EXPIRED_ERR = "User Authentication Expired"
USER_REVOKED_ERR = "User Authentication Revoked"
ACCOUNT_CONNS_ERR = "maximum account active connections exceeded"
AUTH_EXPIRED = "Authentication Expired"               # close reasons (ClosedState)
REVOKED = "Credentials Revoked"
MAX_ACCOUNT_CONNECTIONS = "Maximum Account Connections Exceeded"

UPDATE_SUBJECTS = (b"$SYS.ACCOUNT.*.CLAIMS.UPDATE", b"$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE")
CLAIMS_UPDATE = b"$SYS.REQ.CLAIMS.UPDATE"
LOOKUP_SUBJECT = b"$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP"
LIST_SUBJECT = b"$SYS.REQ.CLAIMS.LIST"
DELETE_SUBJECT = b"$SYS.REQ.CLAIMS.DELETE"
JWT_LOADED = b"jwt.loaded"       # in the workers' account: an account was loaded


def _jetstream_json(limits) -> dict:
    """An account's JetStream limits as JWT JSON: the plain limits, else the R1 tier (one
    server), else the first tier that enables JetStream."""
    import attrs

    js = limits.jetstream
    if not js.is_enabled() and limits.tiered_limits:
        tiers = limits.tiered_limits
        js = tiers.get("R1") or next((t for t in tiers.values() if t.is_enabled()), js)
    return attrs.asdict(js)


class PendingLookup(Exception):
    """The account's JWT must be fetched (URL resolver) before the CONNECT can be decided."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class AccountLimitReached(Exception):
    """The account is at its connection limit (the error has been sent)."""


def _limit(*values: int) -> int:
    """Go's minLimit chain: -1 is unlimited, the smallest other value wins."""
    out = -1
    for v in values:
        if v == -1:
            continue
        out = v if out == -1 else min(out, v)
    return out


def _is_user_jwt(token) -> bool:
    if not isinstance(token, str) or not token:
        return False
    try:
        jwt.decode_user_claims(token)
    except jwt.JWTError:
        return False
    return True


def permissions_from_jwt(p) -> Permissions | None:
    """Go's buildPermissionsFromJwt (with validateResponsePermissions)."""
    if p is None:
        return None
    publish = subscribe = response = None
    if p.pub.allow or p.pub.deny:
        publish = SubjectPermission(tuple(p.pub.allow) or None, tuple(p.pub.deny))
    if p.sub.allow or p.sub.deny:
        subscribe = SubjectPermission(tuple(p.sub.allow) or None, tuple(p.sub.deny))
    if p.resp is not None:
        response = ResponsePermission(p.resp.max_msgs or 1,
                                      p.resp.expires / 1e9 if p.resp.expires else 120.0)
    if publish is None and subscribe is None and response is None:
        return None
    return Permissions(publish, subscribe, response).effective()


class JwtAccount:
    """An account made from its JWT in this worker."""

    __slots__ = ("name", "claims", "token", "conns", "import_subs", "default_perms",
                 "strict", "expiry_scope")

    def __init__(self, name: str) -> None:
        self.name = name
        self.claims: jwt.AccountClaims | None = None
        self.token = ""
        self.conns: set = set()
        self.import_subs: list = []
        self.default_perms: Permissions | None = None
        self.strict = False
        self.expiry_scope: trio.CancelScope | None = None


class Operator:
    """One worker's operator mode: trusted keys, the resolver and the JWT accounts."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        o = server.options
        self.trusted = frozenset(o.trusted_keys or ())
        self.operators = list(o.trusted_operators or ())
        self.pinned = set(o.resolver_pinned_accounts) if o.resolver_pinned_accounts else None
        if self.pinned is not None and o.system_account:
            self.pinned.add(o.system_account)
        if o.resolver is not None:
            self.resolver = o.resolver.build(o.resolver_preload)
        else:
            self.resolver = MemoryResolver()
        self.is_dir = o.resolver is not None and o.resolver.is_dir
        self.accounts: dict[str, JwtAccount] = {}
        self._failed: dict[str, str] = {}      # name -> fetch error, for one CONNECT retry
        self._creating: set[str] = set()
        self.imports = None
        # account -> its responders' describer (natsx.server.imports, latency)
        self._describers: dict = {}
        self._nursery: trio.Nursery | None = None
        self._seq = 0
        from natsx.server.acclimits import AccountConnLimits

        self.limits = AccountConnLimits(server, self)

    # ------------------------------------------------------------------ accounts

    def _strict_for(self, claims: jwt.AccountClaims) -> bool:
        for op in self.operators:
            if op.did_sign(claims) and op.strict_signing_key_usage:
                return True
        return False

    def _verify(self, name: str, token: str) -> jwt.AccountClaims:
        claims = jwt.verify_account(token, self.trusted, time.time(), name=name)
        for op in self.operators:
            if claims.issuer == op.subject and op.strict_signing_key_usage:
                raise jwt.IssuerError("operator requires issuer to be a signing key")
        return claims

    def lookup(self, name: str) -> JwtAccount | None:
        """The account ``name`` with its claims, created from the resolver if needed.

        Raises:
            PendingLookup: the URL resolver must fetch it first.
        """
        jacc = self.accounts.get(name)
        if jacc is not None and jacc.claims is not None:
            return jacc
        try:
            token = self.resolver.fetch(name)
        except MissingAccountError:
            if isinstance(self.resolver, URLResolver):
                err = self._failed.pop(name, None)
                if err is None:
                    raise PendingLookup(name) from None
                log.error("Account JWT lookup error: %s", err)
            else:
                log.debug("Account JWT lookup error: account missing")
            return None
        try:
            claims = self._verify(name, token)
        except jwt.JWTError as exc:
            log.debug("Account JWT lookup error for %s: %s", name, exc)
            return None
        jacc = self.accounts.get(name)
        if jacc is None:
            jacc = self.accounts[name] = JwtAccount(name)
        self._apply(jacc, claims, token)
        return jacc

    async def fetch_async(self, name: str, depth: int = 0) -> None:
        """Fetches ``name`` (and the accounts it imports from) with the URL resolver."""
        res = self.resolver
        if not isinstance(res, URLResolver) or name in res:
            return
        try:
            token = await trio.to_thread.run_sync(res.fetch_blocking, name)
        except ResolverError as exc:
            self._failed[name] = str(exc)
            return
        if depth >= 3:
            return
        try:
            claims = jwt.decode_account_claims(token)
        except jwt.JWTError:
            return
        for imp in claims.imports:
            if imp.account and imp.account not in res:
                await self.fetch_async(imp.account, depth + 1)

    # ------------------------------------------------------------------ claims

    def _apply(self, jacc: JwtAccount, claims: jwt.AccountClaims, token: str) -> None:
        """Installs (or replaces) an account's claims (updateAccountClaimsWithRefresh)."""
        server = self.server
        initial = jacc.claims is None
        old_exports = None if initial else jacc.claims.exports
        from natsx.server.mapping import from_jwt

        server.ensure_account(jacc.name).set_mappings(from_jwt(claims.mappings))
        jacc.claims = claims
        jacc.token = token
        jacc.strict = self._strict_for(claims)
        jacc.default_perms = permissions_from_jwt(claims.default_permissions)
        self._creating.add(jacc.name)
        try:
            self._install_imports(jacc)
        finally:
            self._creating.discard(jacc.name)
        self._arm_account_expiry(jacc)
        self._describe_responders(jacc)
        if not initial and old_exports != claims.exports:
            # Importers of this account: their imports are checked again.
            for other in list(self.accounts.values()):
                if other is not jacc and other.claims is not None and any(
                        i.account == jacc.name for i in other.claims.imports):
                    self._install_imports(other)
        if not initial:
            self._refresh_connections(jacc)
        self._jetstream_claims(jacc)
        if initial and server.system is not None:
            server.system.account_added(jacc.name)

    # ------------------------------------------------------------------ JetStream

    def _jetstream_claims(self, jacc: JwtAccount, removed: bool = False) -> None:
        """The account's JetStream limits from its JWT (Go: updateAccountClaimsWithRefresh
        enables, updates or disables JetStream for the account). An account's streams
        are spread over the workers (natsx.jetstream.shards): a worker that loads the
        account tells the others, so every worker loads the claims too."""
        server = self.server
        js = server.jetstream
        if js is None:
            return
        if server.worker_count > 1 and not removed:
            from natsx.server.system import WORKERS_ACCOUNT

            server.internal_publish(WORKERS_ACCOUNT, JWT_LOADED, None, None,
                                    jacc.name.encode())
        from natsx.jetstream.errors import ApiError
        from natsx.jetstream.manager import limits_from_jwt

        limits = None
        if not removed and jacc.claims is not None and jacc.name != self._system_name():
            limits = limits_from_jwt(_jetstream_json(jacc.claims.limits))
        try:
            if limits is not None:
                server.run_batch(js.enable_account, jacc.name, limits)
            elif jacc.name in js.accounts or jacc.name not in js.disabled:
                server.run_batch(js.disable_account, jacc.name)
        except ApiError as exc:
            log.error("Error enabling JetStream for account %r: %s", jacc.name, exc)
            server.run_batch(js.disable_account, jacc.name)

    def _system_name(self) -> str:
        return self.server.options.system_account or "$SYS"

    def _service_exports(self, name: str) -> list:
        """The service exports of a JWT account, for response types and latency
        (natsx.server.imports)."""
        from natsx.server.imports import exports_from_jwt

        jacc = self.accounts.get(name)
        if jacc is None or jacc.claims is None:
            return []
        return exports_from_jwt(jacc.claims.exports)

    def _on_peer_sub(self, account: bytes, sub) -> None:
        """A (re)started JetStream worker listens for loaded accounts: tell it ours."""
        from natsx.server.system import WORKERS_ACCOUNT

        if account != WORKERS_ACCOUNT or sub.subject != JWT_LOADED or not sub.client.peer:
            return
        for jacc in list(self.accounts.values()):
            if jacc.claims is not None:
                self.server.internal_publish(WORKERS_ACCOUNT, JWT_LOADED, None, None,
                                             jacc.name.encode())

    def _on_loaded(self, subject, reply, headers, payload, publisher) -> None:
        """A peer loaded an account: this worker loads it too, for its JetStream."""
        name = payload.decode("utf-8", "replace")
        jacc = self.accounts.get(name)
        if jacc is not None and jacc.claims is not None:
            return
        try:
            self.lookup(name)
        except PendingLookup:
            if self._nursery is not None:
                self._nursery.start_soon(self._fetch_then_lookup, name)

    async def _fetch_then_lookup(self, name: str) -> None:
        await self.fetch_async(name)
        try:
            self.server.run_batch(self.lookup, name)
        except PendingLookup:
            pass

    def _install_imports(self, jacc: JwtAccount) -> None:
        server = self.server
        for acc_name, sub in jacc.import_subs:
            server.internal_unsubscribe(acc_name, sub)
        jacc.import_subs = []
        claims = jacc.claims
        if not claims.imports:
            return
        self._ensure_imports()
        now = time.time()
        for imp in claims.imports:
            if imp.account == jacc.name:
                continue
            exporter = self.accounts.get(imp.account)
            if exporter is None or exporter.claims is None:
                if imp.account in self._creating:
                    continue
                try:
                    exporter = self.lookup(imp.account)
                except PendingLookup:
                    exporter = None
            if exporter is None:
                log.error("Can't locate account [%s] for import of [%s] %s", imp.account,
                          imp.subject, imp.type)
                continue
            if not self._import_authorized(jacc.name, imp, exporter, now):
                log.debug("Import of %s from %s not authorized for %s", imp.subject,
                          imp.account, jacc.name)
                continue
            if imp.type == "stream":
                if imp.local_subject:
                    mine = StreamImport(imp.account, imp.subject, to=imp.local_subject)
                else:
                    mine = StreamImport(imp.account, imp.subject, prefix=imp.to)
            else:
                if imp.local_subject:
                    mine = ServiceImport(imp.account, imp.subject, imp.local_subject, imp.share)
                else:
                    mine = ServiceImport(imp.account, imp.to or imp.subject, imp.subject,
                                         imp.share)
            try:
                sub = self.imports.add(jacc.name, imp.type, mine, shared=True)
            except ValueError:
                continue
            local_acc = imp.account if imp.type == "stream" else jacc.name
            jacc.import_subs.append((local_acc, sub))

    def _ensure_imports(self):
        if self.imports is None:
            from natsx.server.imports import Imports

            self.imports = Imports(self.server)
            self.imports.export_source = self._service_exports
        return self.imports

    def _describe_responders(self, jacc: JwtAccount) -> None:
        """An account whose service exports measure latency: its responders on this worker
        are described to the requestors' workers (natsx.server.imports); gone with the
        last such export."""
        sub = self._describers.pop(jacc.name, None)
        claims = jacc.claims
        wanted = claims is not None and any(
            e.type == "service" and e.service_latency is not None and e.service_latency.results
            for e in claims.exports)
        if wanted:
            if sub is None:
                sub = self._ensure_imports()._describe_responders(jacc.name)
            self._describers[jacc.name] = sub
        elif sub is not None:
            self.server.internal_unsubscribe(jacc.name, sub)

    def _import_authorized(self, importer: str, imp, exporter: JwtAccount, now: float) -> bool:
        from natsx.sublist import is_subset_match

        for exp in exporter.claims.exports:
            if exp.type != imp.type:
                continue
            if not is_subset_match(imp.subject.encode(), exp.subject.encode()):
                continue
            if not exp.token_req:
                return True
            if exp.revocations and jwt.is_revoked(exp.revocations, importer, 0):
                continue
            try:
                jwt.check_activation(imp, importer, exporter.claims, now, strict=exporter.strict,
                                     export=exp)
                return True
            except jwt.JWTError:
                continue
        return False

    def _arm_account_expiry(self, jacc: JwtAccount) -> None:
        if jacc.expiry_scope is not None:
            jacc.expiry_scope.cancel()
            jacc.expiry_scope = None
        exp = jacc.claims.expires
        if not exp or self._nursery is None:
            return
        scope = jacc.expiry_scope = trio.CancelScope()

        async def expire() -> None:
            with scope:
                await trio.sleep(max(exp - time.time(), 0))
                for conn in list(jacc.conns):
                    conn.close(AUTH_EXPIRED, "Account Authentication Expired")

        self._nursery.start_soon(expire)

    def _refresh_connections(self, jacc: JwtAccount) -> None:
        """Go: the tail of updateAccountClaimsWithRefresh, for the account's clients."""
        from natsx.server.authorization import set_permissions, _remove_forbidden_subscriptions

        claims = jacc.claims
        # A lowered connection limit: the newest connections server-wide go.
        self.limits.enforce(jacc)
        for conn in sorted(jacc.conns, key=lambda c: c.start):
            if conn.closed:
                continue
            juc = conn.jwt_user
            if juc is None:
                continue
            if juc.permission_limits.bearer_token and claims.limits.disallow_bearer:
                self.server.note_auth_error(conn)
                conn.close("Authentication Failure", "Authorization Violation")
                continue
            if claims.is_revoked(juc.subject, juc.issued_at):
                conn.close(REVOKED, USER_REVOKED_ERR)
                continue
            self._apply_limits(conn, jacc, juc)
            if conn.jwt_default_perms:
                set_permissions(self.server, conn, jacc.default_perms)
                _remove_forbidden_subscriptions(self.server, conn)
        self.server.after_batch()
        self.limits.changed(jacc, force=True)

    # ------------------------------------------------------------------ CONNECT

    def authorize(self, conn: "ClientConnection", connect: dict) -> bool:
        """The JWT branch of processClientOrLeafAuthentication (see the module docstring).

        Raises:
            PendingLookup: fetch the account, then call again.
            AccountLimitReached: the connection was closed for the account's limit.
        """
        checked = self._check(conn, connect)
        if checked is None:
            return False
        jacc, juc, now, valid_for = checked
        self._register(conn, jacc, juc, now, valid_for)
        return True

    def _check(self, conn, connect: dict):
        """The checks of ``authorize``: (account, user claims, now, valid for) or None."""
        token = connect.get("jwt")
        sentinel = self.server.options.default_sentinel
        if sentinel and not _is_user_jwt(token):
            # Go: a client without a (decodable) user JWT is the default sentinel; it
            # becomes the CONNECT's JWT, so a reload checks the client with it again.
            token = connect["jwt"] = sentinel
        if not isinstance(token, str) or not token:
            log.debug("Authentication requires a user JWT")
            return None
        try:
            juc = jwt.decode_user_claims(token)
        except jwt.JWTError as exc:
            log.debug("User JWT not valid: %s", exc)
            return None
        lim = juc.permission_limits
        if lim.proxy_required:
            return None
        now = time.time()
        if jwt.is_blocking(jwt.validate(juc, now)):
            log.debug("User JWT no longer valid")
            return None
        issuer = juc.issuer_account or juc.issuer
        if self.pinned is not None and issuer not in self.pinned:
            log.debug("Account %s not listed as operator pinned account", issuer)
            return None
        jacc = self.lookup(issuer)
        if jacc is None:
            return None
        claims = jacc.claims
        if claims.issuer not in self.trusted:
            log.debug("Account JWT not signed by trusted operator")
            return None
        try:
            juc = jwt.authorize_user(juc, claims, now, strict=jacc.strict)
        except jwt.JWTError as exc:
            log.debug("%s", exc)
            return None
        lim = juc.permission_limits
        if lim.allowed_connection_types:
            known = {t.upper() for t in lim.allowed_connection_types} & CONNECTION_TYPES
            kind = "WEBSOCKET" if getattr(conn, "ws", None) is not None else CLIENT_CONNECTION_TYPE
            if not known or kind not in known:
                log.debug("Connection type not allowed")
                return None
        if not lim.bearer_token:
            sig = connect.get("sig")
            if not isinstance(sig, str) or not sig:
                log.debug("Signature missing")
                return None
            if not verify_signature(juc.subject, (conn.nonce or "").encode(), sig):
                log.debug("Signature not verified")
                return None
        if not jwt.validate_src(juc, conn.ip):
            log.error("%s:%d - cid:%d - Bad src Ip %s", conn.ip, conn.port, conn.cid, conn.ip)
            return None
        allowed, valid_for = jwt.validate_times(juc, now)
        if not allowed:
            log.error("%s:%d - cid:%d - Outside connect times", conn.ip, conn.port, conn.cid)
            return None
        return jacc, juc, now, valid_for

    def authorize_logged(self, conn: "ClientConnection", connect: dict) -> bool:
        """``authorize`` with Go's authViolation log line on a refusal."""
        ok = self.authorize(conn, connect)
        if not ok:
            log.error("%s:%d - cid:%d - authentication error", conn.ip, conn.port, conn.cid)
        return ok

    def recheck(self, conn) -> bool:
        """A reload: Go's reloadAuthorization asks isClientAuthorized again, with the
        CONNECT the client sent (its JWT and the signed nonce). A client no longer
        authorized, or now in another account, is closed with 'Authorization
        Violation'; the others get their limits under the new server options. False when
        the connection was closed."""
        if not conn.connect_received or conn.core.auth_pending:
            return True
        try:
            checked = self._check(conn, conn.connect_opts or {})
        except PendingLookup:
            checked = ()      # not fetched (URL resolver): nothing to decide it on
        if checked is None or (checked and checked[0].name != conn.account_name):
            log.error("%s:%d - cid:%d - authentication error", conn.ip, conn.port, conn.cid)
            self.server.note_auth_error(conn)
            conn.close("Authentication Failure", "Authorization Violation")
            return False
        jacc = self.accounts.get(conn.account_name)
        if jacc is not None and jacc.claims is not None and conn.jwt_user is not None:
            self._apply_limits(conn, jacc, conn.jwt_user)
        return True

    def _register(self, conn, jacc: JwtAccount, juc, now: float, valid_for: float) -> None:
        from natsx.server.authorization import set_permissions

        server = self.server
        # Go's MaxTotalConnectionsReached: this worker's clients plus the other workers'.
        live = sum(1 for c in jacc.conns if not c.closed) + self.limits.remote_count(jacc.name)
        limit = jacc.claims.limits.conn
        server.bind_account(conn, jacc.name)
        conn.jwt_user = juc
        if limit != -1 and live >= limit:
            log.error("%s:%d - cid:%d - %s", conn.ip, conn.port, conn.cid, ACCOUNT_CONNS_ERR)
            conn.close(MAX_ACCOUNT_CONNECTIONS, ACCOUNT_CONNS_ERR)
            raise AccountLimitReached(jacc.name)
        jacc.conns.add(conn)
        self.limits.changed(jacc)
        conn.user = juc.subject
        perms = permissions_from_jwt(juc.permission_limits.permissions)
        conn.jwt_default_perms = perms is None
        if perms is None:
            perms = jacc.default_perms
        set_permissions(server, conn, perms)
        self._apply_limits(conn, jacc, juc)
        # Go: setExpiration, the JWT's expiry or the end of its times window.
        delay = 0.0
        if juc.expires:
            delay = max(juc.expires - now, 0.0)
            if valid_for and valid_for < delay:
                delay = valid_for
        elif valid_for:
            delay = valid_for
        if juc.expires or valid_for:
            conn.set_expiry(delay)

    def _apply_limits(self, conn, jacc: JwtAccount, juc) -> None:
        """Go's applyAccountLimits: the smallest of the user's, the account's and the
        server's payload and subscription limits."""
        lim = juc.permission_limits
        if juc.version == 1:
            upay = usubs = -1     # version 1 user JWTs carried no such limits
        else:
            upay, usubs = lim.payload, lim.subs
        acc = jacc.claims.limits
        o = self.server.options
        payload = _limit(upay, acc.payload, o.max_payload or -1)
        subs = _limit(usubs, acc.subs, o.max_subscriptions or -1)
        conn.core.max_payload = payload
        conn.max_subs = subs

    def connection_closed(self, conn) -> None:
        jacc = self.accounts.get(conn.account_name)
        if jacc is not None and conn in jacc.conns:
            jacc.conns.discard(conn)
            self.limits.changed(jacc)

    # ------------------------------------------------------------------ updates

    def update(self, name: str, token: str) -> tuple[str, str | None]:
        """A pushed account JWT: (message, error) as Go's respondToUpdate reports it."""
        try:
            claims = jwt.decode_account_claims(token)
        except jwt.JWTError as exc:
            return "jwt update resulted in error", str(exc)
        if claims.subject != name:
            return "jwt update resulted in error", "subject does not match jwt content"
        jacc = self.accounts.get(name)
        if (jacc is None or jacc.claims is None) and name not in self.resolver:
            # Go answers for the accounts the server has; a peer worker may have this one
            # only if the resolver knows it.
            return "jwt update skipped", None
        if jacc is None:
            jacc = self.accounts[name] = JwtAccount(name)
        try:
            claims = self._verify(name, token)
        except jwt.JWTError as exc:
            return "jwt update resulted in error", str(exc)
        if not self.is_dir:
            self.resolver.store(name, token)
        self._apply(jacc, claims, token)
        return "jwt updated", None

    def reload(self, options) -> None:
        """A reload: new preloads replace the MEMORY resolver's accounts (Go reloadAuthorization)."""
        self.pinned = set(options.resolver_pinned_accounts) \
            if options.resolver_pinned_accounts else None
        if self.pinned is not None and options.system_account:
            self.pinned.add(options.system_account)
        if options.resolver is None or options.resolver.kind != "MEMORY":
            return
        self.resolver = options.resolver.build(options.resolver_preload)
        for name, jacc in list(self.accounts.items()):
            if jacc.claims is None:
                continue
            try:
                token = self.resolver.fetch(name)
                claims = self._verify(name, token)
            except (MissingAccountError, jwt.JWTError):
                log.info("Reloaded: deleting account [removed]: %r", name)
                self._remove(jacc, expired=False)
                continue
            if token != jacc.token:
                self._apply(jacc, claims, token)

    # ------------------------------------------------------------------ system services

    def start(self, nursery: trio.Nursery) -> None:
        """Subscribes to the claims services of the system account (events.go, DirAccResolver)."""
        self._nursery = nursery
        self.limits.start()
        if self.server.worker_count > 1 and self.server.options.jetstream:
            from natsx.server.system import WORKERS_ACCOUNT

            # Every worker runs some of every account's streams (natsx.jetstream.shards).
            self.server.internal_subscribe(WORKERS_ACCOUNT, JWT_LOADED, self._on_loaded)
            self.server.sub_hooks.append(self._on_peer_sub)
        for jacc in self.accounts.values():
            if jacc.claims is not None:
                self._arm_account_expiry(jacc)
        server = self.server
        sys = server.options.system_account or "$SYS"
        server.ensure_account(sys)
        for subject in UPDATE_SUBJECTS:
            server.internal_subscribe(sys, subject, self._on_account_update)
        if self.is_dir:
            server.internal_subscribe(sys, CLAIMS_UPDATE, self._on_claims_update)
            server.internal_subscribe(sys, DELETE_SUBJECT, self._on_delete)
            if self.server.worker_index == 0:
                nursery.start_soon(self._expire_files)
            if not self.resolver.cache:      # Go: only the full resolver serves lookups
                server.internal_subscribe(sys, LOOKUP_SUBJECT, self._on_lookup)
            server.internal_subscribe(sys, LIST_SUBJECT, self._on_list)
        if sys in self.resolver:
            try:
                self.lookup(sys)
            except PendingLookup:
                pass

    def _respond(self, reply, account: str, message: str, err: str | None) -> None:
        if err is None:
            log.debug("%s - %s", message, account) if account else log.debug("%s", message)
        elif account:
            log.error("%s - %s - %s", message, account, err)
        else:
            log.error("%s - %s", message, err)
        if not reply:
            return
        # Go's ClaimUpdateStatus / ClaimUpdateError: ``account`` is omitempty.
        if err is None:
            body = {"data": {"account": account, "code": 200, "message": message}}
        else:
            body = {"error": {"account": account, "code": 500,
                              "description": f"{message} - {err}"}}
        if not account:
            del body["data" if err is None else "error"]["account"]
        self._publish(reply, body)

    def _publish(self, reply: bytes, body) -> None:
        server = self.server
        self._seq += 1
        info = {"name": server.server_name, "host": server.options.host, "id": server.server_id,
                "ver": SERVER_VERSION, "jetstream": bool(server.options.jetstream),
                "flags": 0, "seq": self._seq,
                "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
        if isinstance(body, dict):
            payload = json.dumps({"server": info, **body}, separators=(",", ":")).encode()
        else:
            payload = body
        server.internal_publish(server.options.system_account or "$SYS", reply, None, None,
                                payload)

    def _on_account_update(self, subject, reply, headers, payload, publisher) -> None:
        tokens = subject.split(b".")
        if len(tokens) == 6:        # $SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE
            name = tokens[3].decode("utf-8", "replace")
        elif len(tokens) == 5:      # $SYS.ACCOUNT.<key>.CLAIMS.UPDATE
            name = tokens[2].decode("utf-8", "replace")
        else:
            return
        local = not publisher.peer
        token = payload.decode("utf-8", "replace")
        if self.is_dir:
            self._dir_update(name, token, reply if local else None, local, strict_name=True)
            return
        if not payload:
            if local:
                self._respond(reply, name, "jwt update error", "request body is empty")
            return
        message, err = self.update(name, token)
        if local:
            self._respond(reply, name, message, err)

    def _on_claims_update(self, subject, reply, headers, payload, publisher) -> None:
        local = not publisher.peer
        self._dir_update(None, payload.decode("utf-8", "replace"), reply if local else None,
                         local, strict_name=False)

    def _dir_update(self, name, token, reply, write: bool, *, strict_name: bool) -> None:
        if self.resolver.cache:
            self._cache_update(name, token, reply, write, strict_name=strict_name)
            return
        try:
            claims = jwt.decode_account_claims(token)
        except jwt.JWTError as exc:
            self._respond(reply, "n/a", "jwt update resulted in error", str(exc))
            return
        if jwt.is_blocking(jwt.validate(claims, time.time()), include_time_checks=False):
            self._respond(reply, claims.subject, "jwt validation failed", "validation errors")
            return
        if strict_name and claims.subject != name:
            self._respond(reply, name, "jwt update resulted in error",
                          "subject does not match jwt content")
            return
        name = claims.subject
        if claims.issuer in {op.subject for op in self.operators if op.strict_signing_key_usage}:
            self._respond(reply, name, "jwt update resulted in error",
                          "operator requires issuer to be a signing key")
            return
        if self._store_and_apply(name, token, reply, write, "jwt update resulted in error",
                                 "DirResolver - Update for account {name!r} resulted in error {exc}"):
            self._respond(reply, name, "jwt updated", None)

    def _cache_update(self, name, token, reply, write: bool, *, strict_name: bool) -> None:
        """CacheDirAccResolver's update handlers: only an account the server has loaded is
        stored, and the answers say "cache"."""
        try:
            claims = jwt.decode_account_claims(token)
        except jwt.JWTError as exc:
            self._respond(reply, name if strict_name else "n/a",
                          "jwt update cache resulted in error", str(exc))
            return
        if strict_name and claims.subject != name:
            self._respond(reply, name, "jwt update cache resulted in error",
                          "subject does not match jwt content")
            return
        name = claims.subject
        if claims.issuer in {op.subject for op in self.operators if op.strict_signing_key_usage}:
            self._respond(reply, name, "jwt update cache resulted in error",
                          "operator requires issuer to be a signing key")
            return
        if name not in self.server.accounts:
            self._respond(reply, name, "jwt update cache skipped", None)
            return
        if jwt.is_blocking(jwt.validate(claims, time.time()), include_time_checks=False):
            self._respond(reply, name, "jwt update cache validation failed", "validation errors")
            return
        if self._store_and_apply(name, token, reply, write, "jwt update cache resulted in error",
                                 "DirResolver - Update resulted in error {exc}"):
            self._respond(reply, name, "jwt updated cache", None)

    def _store_and_apply(self, name, token, reply, write: bool, error: str, log_format: str) -> bool:
        """The common end of both directory resolvers' update handlers: store the JWT (when
        this worker writes), then apply it to a loaded account unless it is older than the
        claims in force. False when storing failed (the error is answered)."""
        if write:
            try:
                self.resolver.store(name, token)
            except ResolverError as exc:
                self._respond(reply, name, error, str(exc))
                return False
        jacc = self.accounts.get(name)
        if jacc is not None and jacc.claims is not None:
            try:
                verified = self._verify(name, token)
            except jwt.JWTError as exc:
                log.error(log_format.format(name=name, exc=exc))
            else:
                if verified.issued_at >= jacc.claims.issued_at:
                    self._apply(jacc, verified, token)
        return True

    def _on_delete(self, subject, reply, headers, payload, publisher) -> None:
        """Go's handleDeleteRequest: a generic JWT, self-signed by the operator (or one of
        its signing keys), listing ``accounts`` to delete. The worker the request came
        in on removes the files and answers; every worker drops the accounts (removeCb)."""
        from natsx.auth import nkeys

        local = not publisher.peer
        reply = reply if local else None
        subj = ""
        err = None
        accounts: list = []
        try:
            subj, issuer, data = jwt.decode_generic(payload.decode("utf-8", "replace"))
        except jwt.JWTError as exc:
            err = str(exc)
        else:
            sys_name = self._system_name()
            if not self.resolver.delete_type:
                err = "delete must be enabled in server config"
            elif subj != issuer:
                err = "not self signed"
            elif issuer not in self._operator_keys():
                err = "not trusted"
            elif not isinstance(data.get("accounts"), list):
                err = "malformed request"
            else:
                accounts = data["accounts"]
                for acc in accounts:
                    if not isinstance(acc, str) or not nkeys.is_valid_public_account_key(acc):
                        err = "malformed request"
                        break
                    if acc == sys_name:
                        err = "not allowed to delete system account"
                        break
        if err is not None:
            if local:
                self._respond(reply, "", f"delete accounts request by {subj} failed", err)
            return
        errors, passed = [], 0
        for acc in accounts:
            if local:
                try:
                    self.resolver.delete(acc)
                except ResolverError as exc:
                    errors.append(str(exc))
                    continue
            passed += 1
            jacc = self.accounts.get(acc)
            if jacc is not None and jacc.claims is not None:
                self._remove(jacc, expired=True)
        if not local:
            return
        if not errors:
            self._respond(reply, "", f"deleted {passed} accounts", None)
        else:
            self._respond(reply, "", f"deleted {passed} accounts, failed for {len(errors)}",
                          "\n".join(errors))

    def _operator_keys(self) -> set:
        """Go's getOperatorKeys: the first operator's key (unless it demands signing
        keys) and its signing keys."""
        if not self.operators:
            return set()
        op = self.operators[0]
        keys = set(op.signing_keys)
        if not op.strict_signing_key_usage:
            keys.add(op.subject)
        return keys

    def _remove(self, jacc: JwtAccount, *, expired: bool) -> None:
        """An account is gone (deleted, or removed by a reload): its clients are closed
        ('Account Authentication Expired' for a delete, Go's removeCb; 'Authorization
        Violation' for a reload), its imports and JetStream stopped."""
        for conn in list(jacc.conns):
            if expired:
                conn.close(AUTH_EXPIRED, "Account Authentication Expired")
            else:
                self.server.note_auth_error(conn)
                conn.close("Authentication Failure", "Authorization Violation")
        for acc_name, sub in jacc.import_subs:
            self.server.internal_unsubscribe(acc_name, sub)
        jacc.import_subs = []
        if jacc.expiry_scope is not None:
            jacc.expiry_scope.cancel()
            jacc.expiry_scope = None
        self._jetstream_claims(jacc, removed=True)
        jacc.claims = None
        jacc.token = ""
        self._describe_responders(jacc)
        if not self.server._in_batch:
            self.server.after_batch()

    async def _expire_files(self) -> None:
        """The directory resolver's expiration (DirJWTStore.startExpiring): files past
        the cache's ``ttl``, or holding an expired JWT, are removed."""
        res = self.resolver
        while True:
            await trio.sleep(res.expire_check)
            try:
                for name in res.expire(time.time()):
                    log.debug("DirResolver - removed expired jwt of %s", name)
            except OSError as exc:
                log.error("DirResolver - expiration failed: %s", exc)

    def _on_lookup(self, subject, reply, headers, payload, publisher) -> None:
        if not reply or publisher.peer:
            return
        tokens = subject.split(b".")
        if len(tokens) != 6:
            return
        name = tokens[3].decode("utf-8", "replace")
        try:
            token = self.resolver.fetch(name)
        except MissingAccountError:
            token = ""
        self._publish(reply, token.encode())

    def _on_list(self, subject, reply, headers, payload, publisher) -> None:
        if not reply or publisher.peer:
            return
        self._publish(reply, {"data": list(self.resolver)})
