"""Account resolvers: where the server finds an account's JWT by its public key.

Theory of operation
-------------------
In operator mode every account is an account JWT, looked up by public key when a user of
that account connects or an import names it. The resolver only stores and returns tokens;
the caller verifies what it gets back (natsx.auth.jwt.verify_account), as the Go server does
in fetchAccountClaims, because a resolver's content can change underneath it.

:class:`MemoryResolver` is ``resolver: MEMORY`` (server/accounts.go MemAccResolver): a dict,
writable, filled at start-up from ``resolver_preload { <account key>: <jwt> }``. Each preload
must decode as an account JWT or start-up fails (setResolver / "preload account error"); an
expired or otherwise invalid one is accepted and only reported (checkResolvePreloads), so the
report is a separate call that takes the time from the caller.

:class:`URLResolver` is ``resolver: URL(<url>)`` (URLAccResolver): read-only, it asks
``<url>/<account key>`` over HTTP when an account is first needed. The request blocks, so the
server runs :meth:`URLResolver.fetch_blocking` in a thread; :meth:`URLResolver.fetch` only
answers from what earlier fetches returned.
With ``resolver_tls`` (the config's ``tls {}`` block, kept in :class:`ResolverConfig`) an
``https`` URL is fetched with a client context built from it (natsx.server.tls.client_context,
Go's GenTLSConfig with the CA file as the roots): the server is checked against that CA and
its name, unless ``insecure``, and the block's certificate is offered as the client's.
Without it, the system's roots, as Go's http client does.

:class:`DirResolver` is the ``resolver { type: full|cache, dir: ... }`` block
(DirAccResolver, CacheDirAccResolver): one ``<dir>/<account key>.jwt`` file per account,
written when a claims update arrives over the system account, replaced only by a JWT issued
no earlier than the stored one (DirJWTStore.saveIfNewer). ``cache`` keeps at most ``limit``
files, dropping the least recently used, and (with ``ttl``) drops a file ``ttl`` after its
last use; otherwise a file goes when its JWT expires (``expire``). ``delete`` is
``$SYS.REQ.CLAIMS.DELETE``: refused unless ``allow_delete`` (the file is renamed to
``.jwt.deleted``, or removed with ``hard_delete``; the cache always removes).

:class:`ResolverConfig` is what the config file says, kept in the options; ``build`` makes
the live resolver in each worker.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import attrs

from natsx.auth import jwt

__all__ = ["ResolverError", "MissingAccountError", "MemoryResolver", "URLResolver",
           "DirResolver", "ResolverConfig", "FETCH_TIMEOUT"]

#: Go's DEFAULT_ACCOUNT_FETCH_TIMEOUT.
FETCH_TIMEOUT = 1.9


class ResolverError(Exception):
    """A resolver could not store or return an account JWT."""


class MissingAccountError(ResolverError, KeyError):
    """The resolver has no JWT for this account (the Go server's ErrMissingAccount)."""

    def __str__(self) -> str:
        return "account missing"


@attrs.define(eq=False)
class MemoryResolver:
    """``resolver: MEMORY``: account public key -> account JWT, held in memory."""

    _jwts: dict[str, str] = attrs.field(factory=dict, alias="jwts")

    @classmethod
    def from_preload(cls, preloads: Mapping[str, str]) -> MemoryResolver:
        """A resolver holding ``resolver_preload``.

        Raises:
            ResolverError: a preload is not a decodable account JWT.
        """
        resolver = cls()
        resolver.preload(preloads)
        return resolver

    def preload(self, preloads: Mapping[str, str]) -> None:
        """Store every preload after checking that it decodes as an account JWT.

        Nothing is stored when one of them fails, so a bad config leaves no partial state.

        Raises:
            ResolverError: names the first account whose JWT does not decode.
        """
        for name, token in preloads.items():
            try:
                jwt.decode_account_claims(token)
            except jwt.JWTError as e:
                raise ResolverError(f"preload account error for {name!r}: {e}") from None
        self._jwts.update(preloads)

    @staticmethod
    def preload_issues(preloads: Mapping[str, str], now: float) -> dict[str, tuple[str, ...]]:
        """Blocking validation issues of each preload at ``now``, for start-up warnings."""
        report: dict[str, tuple[str, ...]] = {}
        for name, token in preloads.items():
            try:
                issues = jwt.validate(jwt.decode_account_claims(token), now)
            except jwt.JWTError as e:
                report[name] = (str(e),)
                continue
            if jwt.is_blocking(issues):
                report[name] = tuple(i.description for i in issues)
        return report

    @property
    def is_read_only(self) -> bool:
        return False

    def fetch(self, name: str) -> str:
        """The JWT stored for account ``name``.

        Raises:
            MissingAccountError: nothing is stored for ``name``.
        """
        try:
            return self._jwts[name]
        except KeyError:
            raise MissingAccountError(name) from None

    def store(self, name: str, token: str) -> None:
        """Store (or replace) the JWT of account ``name``; the caller has verified it."""
        self._jwts[name] = token

    def __contains__(self, name: object) -> bool:
        return name in self._jwts

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._jwts))

    def __len__(self) -> int:
        return len(self._jwts)


@attrs.define(eq=False)
class URLResolver:
    """``resolver: URL(<url>)``: account JWTs fetched over HTTP, remembered once fetched."""

    url: str
    timeout: float = FETCH_TIMEOUT
    _jwts: dict[str, str] = attrs.field(factory=dict, alias="jwts")
    #: the ssl.SSLContext for https (``resolver_tls``); None: the system's defaults
    ssl_context: object = None

    def __attrs_post_init__(self) -> None:
        if not self.url.endswith("/"):
            self.url += "/"

    @property
    def is_read_only(self) -> bool:
        return True

    def fetch(self, name: str) -> str:
        """What an earlier :meth:`fetch_blocking` returned for ``name``.

        Raises:
            MissingAccountError: not fetched (yet).
        """
        try:
            return self._jwts[name]
        except KeyError:
            raise MissingAccountError(name) from None

    def fetch_blocking(self, name: str) -> str:
        """GET ``<url><name>`` (run it in a thread); the body is the JWT.

        Raises:
            ResolverError: Go's ``could not fetch <"url">: reason``.
        """
        url = self.url + name
        try:
            with urllib.request.urlopen(url, timeout=self.timeout,  # noqa: S310
                                        context=self.ssl_context) as resp:
                body = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            raise ResolverError(f'could not fetch <"{url}">: {e.code} {e.reason}') from None
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ResolverError(f'could not fetch <"{url}">: {reason}') from None
        self._jwts[name] = body
        return body

    def store(self, name: str, token: str) -> None:
        """Remembers a JWT pushed by a claims update (the URL itself is never written)."""
        self._jwts[name] = token

    def __contains__(self, name: object) -> bool:
        return name in self._jwts


@attrs.define(eq=False)
class DirResolver:
    """``resolver { type: full|cache, dir: ... }``: one ``<key>.jwt`` file per account."""

    directory: str
    cache: bool = False
    limit: int = 0
    allow_delete: bool = False
    #: How ``delete`` removes a file: "" (refused), "rename" (to ``.jwt.deleted``) or
    #: "hard" (Go's NoDelete, RenameDeleted, HardDelete).
    delete_type: str = ""
    #: ``cache``'s ``ttl`` in seconds: a file goes that long after it was last stored or
    #: read; 0: a file goes when its JWT expires (DirJWTStore's expiration tracker).
    ttl: float = 0.0

    def __attrs_post_init__(self) -> None:
        os.makedirs(self.directory, mode=0o750, exist_ok=True)

    @property
    def is_read_only(self) -> bool:
        return False

    def _path(self, name: str) -> str | None:
        from natsx.auth import nkeys

        if not nkeys.is_valid_public_key(name):
            return None
        return os.path.join(self.directory, name + ".jwt")

    def fetch(self, name: str) -> str:
        """The stored JWT of ``name``.

        Raises:
            MissingAccountError: no file for ``name``.
        """
        path = self._path(name)
        if path is None:
            raise MissingAccountError(name)
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read()
        except OSError:
            raise MissingAccountError(name) from None
        if self.cache:
            os.utime(path)   # the least recently used file goes first
        return token

    def store(self, name: str, token: str) -> bool:
        """Writes ``token`` unless the stored JWT is the same or issued later
        (DirJWTStore.saveIfNewer); True when the file changed.

        Raises:
            ResolverError: an invalid key, a subject mismatch or a write failure.
        """
        path = self._path(name)
        if path is None:
            raise ResolverError("invalid public key")
        try:
            new = jwt.decode(token)
        except jwt.JWTError as e:
            raise ResolverError(str(e)) from None
        try:
            with open(path, encoding="utf-8") as f:
                existing = f.read()
        except OSError:
            existing = None
        if existing is not None:
            try:
                old = jwt.decode(existing)
            except jwt.JWTError:
                old = None
            if old is not None:
                if old.id == new.id or old.issued_at > new.issued_at:
                    return False
                if new.subject != name:
                    raise ResolverError("jwt subject nkey and provided nkey do not match")
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(token)
            os.replace(tmp, path)
        except OSError as e:
            raise ResolverError(str(e)) from None
        if self.cache and self.limit > 0:
            self._evict()
        return True

    def delete(self, name: str) -> bool:
        """Go's DirJWTStore.delete: removes (or renames) the file of ``name``; False when
        there was none.

        Raises:
            ResolverError: deleting is not enabled, or the file system refused.
        """
        if not self.delete_type:
            raise ResolverError("store is not set up to for delete")
        path = self._path(name)
        if path is None:
            return False
        try:
            if self.delete_type == "rename":
                os.replace(path, path + ".deleted")
            else:
                os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise ResolverError(str(e)) from None
        return True

    def expire(self, now: float) -> list[str]:
        """Removes the files whose time is up (``ttl`` after their last use, else their
        JWT's expiry); the accounts removed."""
        gone = []
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(".jwt"):
                continue
            try:
                if self.ttl:
                    due = entry.stat().st_mtime + self.ttl
                else:
                    with open(entry.path, encoding="utf-8") as f:
                        due = jwt.decode(f.read()).expires or 0
                if due and due <= now:
                    os.unlink(entry.path)
                    gone.append(entry.name[:-4])
            except (OSError, jwt.JWTError):
                continue
        return gone

    @property
    def expire_check(self) -> float:
        """How often ``expire`` runs (Go: ttl/2, at most a minute)."""
        return min(self.ttl / 2, 60.0) if self.ttl else 60.0

    def _evict(self) -> None:
        files = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".jwt"):
                files.append((entry.stat().st_mtime, entry.path))
        files.sort()
        for _mtime, path in files[:max(len(files) - self.limit, 0)]:
            try:
                os.unlink(path)
            except OSError:
                pass

    def __contains__(self, name: object) -> bool:
        path = self._path(name) if isinstance(name, str) else None
        return path is not None and os.path.exists(path)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(e.name[:-4] for e in os.scandir(self.directory)
                           if e.name.endswith(".jwt")))


@attrs.frozen
class ResolverConfig:
    """The ``resolver`` option: ``MEMORY``, ``URL`` or a ``FULL``/``CACHE`` directory."""

    kind: str                 # "MEMORY", "URL", "FULL" or "CACHE"
    url: str = ""
    dir: str = ""
    allow_delete: bool = False
    hard_delete: bool = False
    limit: int = 0
    ttl: float = 0.0
    interval: float = 0.0
    timeout: float = 0.0
    #: ``resolver_tls`` (natsx.server.tls.TLSConfigOpts) for a URL resolver; left out of the
    #: comparison, as Go reloads it without counting it as a change of resolver
    tls: object = attrs.field(default=None, eq=False)

    @property
    def is_dir(self) -> bool:
        return self.kind in ("FULL", "CACHE")

    def build(self, preload: Mapping[str, str] | None = None):
        """The live resolver, with the ``resolver_preload`` accounts stored in it.

        Raises:
            ResolverError: a preload does not decode, or the directory is unusable.
        """
        if self.kind == "URL":
            ctx = None
            if self.tls is not None:
                from natsx.server.tls import TLSSetupError, client_context

                try:
                    ctx = client_context(self.tls)
                except TLSSetupError as e:
                    raise ResolverError(str(e)) from None
            res = URLResolver(self.url, self.timeout or FETCH_TIMEOUT, ssl_context=ctx)
            for name, token in (preload or {}).items():
                res.store(name, token)
            return res
        if self.is_dir:
            try:
                if self.kind == "CACHE":
                    delete = "hard"          # Go: the cache always deletes for real
                else:
                    delete = ("hard" if self.hard_delete else "rename") \
                        if self.allow_delete else ""
                res = DirResolver(self.dir, cache=self.kind == "CACHE",
                                  limit=self.limit or (1000 if self.kind == "CACHE" else 0),
                                  allow_delete=self.allow_delete, delete_type=delete,
                                  ttl=self.ttl if self.kind == "CACHE" else 0.0)
            except OSError as e:
                raise ResolverError(str(e)) from None
            for name, token in (preload or {}).items():
                res.store(name, token)
            return res
        return MemoryResolver.from_preload(preload or {})
