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
    max_control_line: int = MAX_CONTROL_LINE
    max_connections: int = MAX_CONNECTIONS
    max_subscriptions: int = 0
    max_sub_tokens: int = 0
    ping_interval: float = PING_INTERVAL
    max_pings_out: int = MAX_PINGS_OUT
    write_deadline: float = WRITE_DEADLINE
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
    system_account: str = ""
    # logging
    debug: bool = False
    trace: bool = False
    trace_verbose: bool = False
    logtime: bool = True
    logtime_utc: bool = False
    log_file: str = ""
    syslog: bool = False
    pid_file: str = ""
    ports_file_dir: str = ""
    # JetStream (used by the JetStream issue; the CLI accepts the flags now)
    jetstream: bool = False
    store_dir: str = ""
    # runtime
    workers: int = attrs.field(factory=lambda: os.cpu_count() or 1)
    config_file: str = ""
    config_digest: str = ""
    # flags given on the command line, by attribute: they win over the config file, at
    # startup and on every reload (Go: FlagSnapshot)
    cli_overrides: dict = attrs.Factory(dict)
    tags: list = attrs.Factory(list)

    @property
    def auth_required(self) -> bool:
        return bool(self.username or self.authorization or self.users or self.nkeys)
