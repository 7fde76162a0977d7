"""Server options: what the command line and the config file resolve to.

Defaults are the Go server's (server/const.go). Durations are seconds as floats, sizes are
bytes. The options object is immutable once a worker starts; a reload builds a new one.
"""
from __future__ import annotations

import os

import attrs

DEFAULT_PORT = 4222
DEFAULT_HOST = "0.0.0.0"
DEFAULT_HTTP_PORT = 8222
MAX_PAYLOAD = 1024 * 1024
MAX_PENDING = 64 * 1024 * 1024
MAX_CONTROL_LINE = 4096
MAX_CONNECTIONS = 64 * 1024
PING_INTERVAL = 120.0
MAX_PINGS_OUT = 2
AUTH_TIMEOUT = 2.0
WRITE_DEADLINE = 10.0
LAME_DUCK_DURATION = 120.0
LAME_DUCK_GRACE_PERIOD = 10.0
MAX_CLOSED_CLIENTS = 10000


@attrs.define
class WebsocketOpts:
    """The ``websocket`` block (Go: WebsocketOpts); port 0 means no WebSocket listener."""

    host: str = ""
    port: int = 0
    advertise: str = ""
    no_auth_user: str = ""
    jwt_cookie: str = ""
    user_cookie: str = ""
    pass_cookie: str = ""
    token_cookie: str = ""
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    token: str = attrs.field(default="", repr=False)
    auth_timeout: float = 0.0
    no_tls: bool = False
    # the ``tls`` block as parsed (natsx.server.tls builds the context); not compared on a
    # reload, as Go leaves the TLS config out of its comparison
    tls: dict | None = attrs.field(default=None, eq=False)
    same_origin: bool = False
    allowed_origins: list = attrs.Factory(list)
    compression: bool = False
    handshake_timeout: float = 0.0
    ping_interval: float = 0.0
    headers: dict = attrs.Factory(dict)

    @property
    def auth_override(self) -> bool:
        """Go's wsConfigAuth: the block's credentials replace the server's for WS clients."""
        return bool(self.username or self.token or self.no_auth_user)


@attrs.define(eq=False)
class Options:
    """Everything a worker needs to know to serve clients."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    server_name: str = ""
    client_advertise: str = ""
    http_host: str = ""
    http_port: int = 0
    https_port: int = 0
    http_base_path: str = ""
    max_payload: int = MAX_PAYLOAD
    max_pending: int = MAX_PENDING
    # Go 2.11+: publishers are not held back for a receiver over 3/4 of its max_pending.
    no_fast_producer_stall: bool = False
    max_control_line: int = MAX_CONTROL_LINE
    max_connections: int = MAX_CONNECTIONS
    max_subscriptions: int = 0
    max_sub_tokens: int = 0
    ping_interval: float = PING_INTERVAL
    max_pings_out: int = MAX_PINGS_OUT
    write_deadline: float = WRITE_DEADLINE
    # Go's write_timeout policy: "" (default: close, for clients), "close" or "retry".
    write_timeout: str = ""
    lame_duck_duration: float = LAME_DUCK_DURATION
    lame_duck_grace_period: float = LAME_DUCK_GRACE_PERIOD
    no_header_support: bool = False
    disable_sublist_cache: bool = False
    max_closed_clients: int = MAX_CLOSED_CLIENTS
    # auth: the single user or token (command line or authorization block), and the
    # users of the authorization block (None when there are none)
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    authorization: str = attrs.field(default="", repr=False)
    auth_timeout: float = AUTH_TIMEOUT
    users: list | None = None
    nkeys: list | None = None
    no_auth_user: str = ""
    # the accounts block: name -> natsx.server.accounts.AccountConfig (None when absent)
    accounts: dict | None = None
    # the top-level ``mappings`` block, the global account's (natsx.server.mapping spec:
    # ((source, (MapDest, ...)), ...)), None when absent
    mappings: tuple | None = None
    system_account: str = ""
    no_system_account: bool = False
    # operator (JWT) mode: the operators' claims and JWTs (``operator``), the keys trusted to
    # sign accounts (``trusted``, or expanded from the operators), the account resolver
    # (natsx.auth.resolver.ResolverConfig), its preloads and the pinned accounts
    trusted_operators: list | None = None
    operator_jwts: list | None = None
    trusted_keys: list | None = None
    resolver: object = None
    resolver_preload: dict | None = None
    resolver_pinned_accounts: frozenset | None = None
    # resolver_tls: the tls block (natsx.server.tls.TLSConfigOpts) a URL resolver fetches
    # account JWTs with; also copied into the URL ResolverConfig
    resolver_tls: object = None
    # operator mode: a bearer user JWT for the clients that present none (Go 2.11)
    default_sentinel: str = attrs.field(default="", repr=False)
    # logging
    debug: bool = False
    trace: bool = False
    trace_verbose: bool = False
    max_traced_msg_len: int = 0   # payload trace lines are cut after this many bytes; 0: whole
    logtime: bool = True
    logtime_utc: bool = False
    log_file: str = ""
    log_size_limit: int = 0
    log_max_num: int = 0
    syslog: bool = False
    remote_syslog: str = ""
    pid_file: str = ""
    ports_file_dir: str = ""
    # JetStream (used by the JetStream issue; the CLI accepts the flags now)
    jetstream: bool = False
    store_dir: str = ""
    # the other keys of the jetstream block, parsed (natsx.jetstream.settings reads them)
    jetstream_config: dict = attrs.Factory(dict)
    # TLS for client connections (natsx.server.tls): the parsed top-level ``tls`` block, or
    # None without TLS; the handshake timeout (Go: TLSTimeout, default 2s, also used by
    # ``auth_timeout``'s default), ``verify_and_map``, the pinned keys, TLS before INFO and
    # its fallback delay, and ``allow_non_tls``; the ``--tls*`` flags (Go: overrideTLS)
    tls_config: object = None
    tls_timeout: float = 0.0
    tls_map: bool = False
    tls_pinned_certs: frozenset | None = None
    tls_handshake_first: bool = False
    tls_handshake_first_fallback: float = 0.0
    allow_non_tls: bool = False
    # OCSP stapling (Go: OCSPConfig): None (not configured) or {"mode": "auto"|"always"|
    # "must"|"never", "urls": [...]}; natsx.server.tls.check_ocsp_stapling decides at startup
    ocsp: dict | None = None
    tls: bool = False
    tls_verify: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca_cert: str = ""
    # runtime
    workers: int = attrs.field(factory=lambda: os.cpu_count() or 1)
    config_file: str = ""
    config_digest: str = ""
    # flags given on the command line, by attribute: they win over the config file, at
    # startup and on every reload (Go: FlagSnapshot)
    cli_overrides: dict = attrs.Factory(dict)
    tags: list = attrs.Factory(list)
    websocket: WebsocketOpts = attrs.Factory(WebsocketOpts)

    @property
    def auth_required(self) -> bool:
        return bool(self.username or self.authorization or self.users or self.nkeys
                    or self.trusted_keys is not None)

    @property
    def operator_mode(self) -> bool:
        """Go: ``s.trustedKeys != nil`` — every client needs a user JWT."""
        return self.trusted_keys is not None
