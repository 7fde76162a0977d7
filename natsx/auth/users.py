"""Users and client authentication without JWTs: token, user/password, users, nkey users.

Theory of operation
-------------------
``Authenticator`` is built from the options (the command line's ``--user/--pass/--auth`` or
the config file's ``authorization`` block) and rebuilt on every reload. ``check`` decides one
CONNECT the way server/auth.go ``processClientOrLeafAuthentication`` does for a client when
no operator is configured:

1. No credentials of any kind configured: everyone is in, with no permissions.
2. nkey users: a client that sent nothing is bound to ``no_auth_user`` when that names an
   nkey; a client naming an nkey must sign the INFO ``nonce`` with it (``sig``, base64 raw-url
   or standard) unless it is the no-auth user.
3. users: a client that sent no user, password or token is bound to ``no_auth_user``; then
   the user must exist and the password match (bcrypt hashes ``$2a$...`` are checked as
   hashes).
4. Otherwise the single token, or the single user and password.

The result is an ``Identity``: the name /connz reports and the user's ``Permissions``.

bcrypt at cost 11 takes ~100 ms, which a worker spends on its event loop. Successful checks
are remembered (keyed by the hash and a digest of the password, never the password itself),
so reconnects and re-checks after a reload cost one dictionary lookup.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict

import attrs

from natsx.auth.nkeys import verify_signature
from natsx.auth.permissions import Permissions, PermissionSet

_BCRYPT = re.compile(r"^\$2[abxy]\$\d{2}\$")
_BCRYPT_MEMO_MAX = 1024
_bcrypt_ok: OrderedDict = OrderedDict()

#: Connection types of server/auth.go (jwt.ConnectionType*); natsx clients are STANDARD.
CONNECTION_TYPES = frozenset(("STANDARD", "WEBSOCKET", "LEAFNODE", "LEAFNODE_WS", "MQTT",
                              "MQTT_WS", "IN_PROCESS"))
CLIENT_CONNECTION_TYPE = "STANDARD"


def is_bcrypt(secret: str) -> bool:
    return secret.startswith("$") and _BCRYPT.match(secret) is not None


def compare_passwords(server_secret: str, client_secret: str) -> bool:
    """Go's comparePasswords: a bcrypt hash is verified, anything else compared exactly."""
    if not is_bcrypt(server_secret):
        return hmac.compare_digest(server_secret.encode(), client_secret.encode())
    key = (server_secret, hashlib.sha256(client_secret.encode()).digest())
    if key in _bcrypt_ok:
        _bcrypt_ok.move_to_end(key)
        return True
    import bcrypt

    try:
        ok = bcrypt.checkpw(client_secret.encode(), server_secret.encode())
    except ValueError:
        return False
    if ok:
        _bcrypt_ok[key] = True
        if len(_bcrypt_ok) > _BCRYPT_MEMO_MAX:
            _bcrypt_ok.popitem(last=False)
    return ok


@attrs.frozen
class User:
    """A ``users`` entry with a name (Go: User)."""

    username: str
    password: str = attrs.field(default="", repr=False)
    permissions: Permissions | None = None
    allowed_connection_types: frozenset | None = None
    account: str = ""


@attrs.frozen
class NkeyUser:
    """A ``users`` entry with an ``nkey`` (Go: NkeyUser)."""

    nkey: str
    permissions: Permissions | None = None
    allowed_connection_types: frozenset | None = None
    account: str = ""


@attrs.frozen
class Identity:
    """Who a connection authenticated as: the name /connz shows, and its permissions."""

    name: str = ""
    permissions: Permissions | None = None
    #: the account the connection is bound to; empty means the global account
    account: str = ""


ANONYMOUS = Identity()


def _type_allowed(types: frozenset | None, conn=None) -> bool:
    if not types:
        return True
    # A WebSocket client (natsx.server.websocket) is Go's ConnectionTypeWebsocket.
    kind = "WEBSOCKET" if getattr(conn, "ws", None) is not None else CLIENT_CONNECTION_TYPE
    return kind in types


def _str(connect: dict, key: str) -> str:
    value = connect.get(key)
    return value if isinstance(value, str) else ""


class Authenticator:
    """Decides whether a CONNECT may proceed, and as whom."""

    def __init__(self, options) -> None:
        users = getattr(options, "users", None)
        nkeys = getattr(options, "nkeys", None)
        self.users: dict[str, User] = {u.username: u for u in users or ()}
        self.nkeys: dict[str, NkeyUser] = {u.nkey: u for u in nkeys or ()}
        self.username = options.username
        self.password = options.password
        self.token = options.authorization
        self.no_auth_user = getattr(options, "no_auth_user", "")
        self.timeout = options.auth_timeout
        # verify_and_map: the user comes from the client certificate (natsx.auth.certmap)
        self.tls_map = bool(getattr(options, "tls_map", False))
        # Operator mode (natsx.server.operator): every client signs the nonce with its JWT.
        operator = bool(getattr(options, "operator_mode", False))
        self.required = bool(self.users or self.nkeys or self.username or self.token
                             or operator)
        self.nonce_required = bool(self.nkeys) or operator
        self._compiled: dict[Permissions, PermissionSet] = {}

    def permission_set(self, perms: Permissions) -> PermissionSet:
        """The compiled permissions, one per distinct ``Permissions`` (shared by users)."""
        pset = self._compiled.get(perms)
        if pset is None:
            pset = self._compiled[perms] = PermissionSet(perms)
        return pset

    def check(self, connect: dict, conn) -> Identity | None:
        """The identity for this CONNECT, or None for an Authorization Violation.

        ``conn.nonce`` is the nonce sent in this connection's INFO, which an nkey user signs.
        """
        if not self.required:
            return ANONYMOUS
        user = _str(connect, "user")
        password = _str(connect, "pass")
        token = _str(connect, "auth_token")
        nkey = _str(connect, "nkey")
        no_auth = self.no_auth_user
        anonymous = not user and not password and not token
        if self.nkeys:
            if no_auth and anonymous and not nkey and no_auth in self.nkeys:
                nkey = no_auth
            if nkey:
                found = self.nkeys.get(nkey)
                if found is None or not _type_allowed(found.allowed_connection_types, conn):
                    return None
                if nkey != no_auth:
                    sig = _str(connect, "sig")
                    nonce = (getattr(conn, "nonce", "") or "").encode()
                    if not sig or not nonce or not verify_signature(nkey, nonce, sig):
                        return None
                return Identity(nkey, found.permissions, found.account)
        if self.users and self.tls_map:
            found = self._map_certificate(conn)
            # Go compares the password even then: a mapped user without one needs none.
            if found is None or not compare_passwords(found.password, password):
                return None
            return Identity(found.username, found.permissions, found.account)
        if self.users:
            if no_auth and anonymous and no_auth in self.users:
                bound = self.users[no_auth]
                user, password = bound.username, bound.password
            if user:
                found = self.users.get(user)
                if found is None or not _type_allowed(found.allowed_connection_types, conn):
                    return None
                if not compare_passwords(found.password, password):
                    return None
                return Identity(found.username, found.permissions, found.account)
        if self.token:
            return ANONYMOUS if compare_passwords(self.token, token) else None
        if self.username:
            if user != self.username or not compare_passwords(self.password, password):
                return None
            return Identity(user)
        return None

    def _map_certificate(self, conn) -> User | None:
        """The user the client's certificate names (Go: checkClientTLSCertSubject)."""
        certs = getattr(conn, "tls_peer_certs", None)
        if not certs:
            return None
        from natsx.auth.certmap import map_user

        allowed = {name: u for name, u in self.users.items()
                   if _type_allowed(u.allowed_connection_types)}
        return map_user(certs[0], allowed.get, allowed.items())

    def plaintext_passwords(self) -> bool:
        """Go's checkAuthforWarnings: any password stored in clear."""
        if self.password and not is_bcrypt(self.password):
            return True
        # Users without a password are certificate identities under verify_and_map.
        return any(not is_bcrypt(u.password) for u in self.users.values()
                   if u.password or not self.tls_map)
