"""Configuration reload on SIGHUP: Go's Server.Reload and diffOptions, for natsx's options.

Theory of operation
-------------------
Every process (the supervisor, each worker, the admin process) holds its own ``Options``.
On SIGHUP the supervisor re-reads the config file under the command-line flags it started
with (flags still win), validates the result and compares it with the options in force,
field by field in the order of Go's ``Options`` struct. A changed field that cannot change
at run time (a listener, the server name, ...) refuses the whole reload: the supervisor logs
Go's ``config reload not supported for <Field>: old=..., new=...`` and forwards nothing, so
the old config stays in force everywhere. Otherwise it logs one ``Reloaded: ...`` line per
change, as Go does, and forwards SIGHUP to its children; each of them repeats the read and
the comparison and applies the result to what it owns (a worker to its connections, see
natsx.server.authorization.apply_reload).

The children read the file themselves rather than receive options from the supervisor, so
an edit racing the signal could reach them and not the supervisor; each child refuses a
non-reloadable change on its own, so that race can only make a child apply a newer
reloadable config than the supervisor logged.

JetStream follows Go's diffOptions field by field (``jetstream_changes``): turning it on or
off, and raising ``max_mem_store``/``max_file_store`` from a configured value, are applied
by every worker (``apply_jetstream``: each runs the JetStream of the accounts it owns, and
the server limits are read from its settings at every check); lowering a limit, moving
between a configured and a dynamic one, a new store directory and every other key of the
block refuse the reload with Go's texts.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from natsx import logs
from natsx.server import trace
from natsx.server.config_options import (
    ConfigProcessError,
    go_duration_string,
    go_float,
    load_options,
    validate_options,
)
from natsx.server.options import Options

log = logging.getLogger("natsx")

NO_CONFIG_FILE = "can only reload config when a file is provided using -c or --config"


class ReloadError(Exception):
    """The reload is refused; the text is Go's."""


def _v(value: Any) -> str:
    # Go's %v of the option values natsx has.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if value is None:
        return "[]"
    return str(value)


def _operator_v(value: Any) -> str:
    # Go's %v of a []string; operators and resolvers by what identifies them.
    if value is None:
        return "[]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(getattr(v, "subject", v) for v in value) + "]"
    kind = getattr(value, "kind", None)
    if kind is not None:
        where = value.url or value.dir
        return f"{kind}({where})" if where else kind
    return str(value)


def _dur(value: float) -> str:
    return go_duration_string(value)


# (attribute, Go field name, what to log when it changes; None: not reloadable), in the
# order of Go's Options struct, which is the order Go logs the changes in.
_FIELDS: list[tuple[str, str, Callable[[Any], str | None] | None]] = [
    ("server_name", "ServerName", None),
    ("host", "Host", None),
    ("port", "Port", None),
    ("client_advertise", "ClientAdvertise", lambda v: f"client_advertise = {v}"),
    ("trace", "Trace", lambda v: f"trace = {_v(v)}"),
    ("debug", "Debug", lambda v: f"debug = {_v(v)}"),
    ("trace_verbose", "TraceVerbose", lambda v: f"trace_verbose = {_v(v)}"),
    ("disable_sublist_cache", "NoSublistCache", None),
    ("no_header_support", "NoHeaderSupport", None),
    ("logtime", "Logtime", lambda v: f"logtime = {_v(v)}"),
    ("logtime_utc", "LogtimeUTC", lambda v: f"logtime_utc = {_v(v)}"),
    ("max_connections", "MaxConn", lambda v: f"max_connections = {v}"),
    ("max_subscriptions", "MaxSubs", None),
    ("max_sub_tokens", "MaxSubTokens", None),
    ("nkeys", "Nkeys", lambda v: "authorization nkey users"),
    ("users", "Users", lambda v: "authorization users"),
    # Go compares neither users nor accounts and logs both on every reload; the accounts
    # (and the top-level mappings, the global account's) are applied by apply_accounts.
    ("accounts", "Accounts", lambda v: "accounts"),
    ("no_auth_user", "NoAuthUser", None),
    ("default_sentinel", "DefaultSentinel", lambda v: f"default_sentinel = {v}"),
    ("system_account", "SystemAccount", None),
    ("no_system_account", "NoSystemAccount", None),
    ("username", "Username", lambda v: "authorization username"),
    ("password", "Password", lambda v: "authorization password"),
    ("authorization", "Authorization", lambda v: "authorization token"),
    ("ping_interval", "PingInterval", lambda v: f"ping_interval = {_dur(v)}"),
    ("max_pings_out", "MaxPingsOut", lambda v: f"ping_max = {v}"),
    ("http_host", "HTTPHost", None),
    ("http_port", "HTTPPort", None),
    ("http_base_path", "HTTPBasePath", None),
    ("https_port", "HTTPSPort", None),
    ("auth_timeout", "AuthTimeout", lambda v: f"authorization timeout = {_v(v)}"),
    ("max_control_line", "MaxControlLine", lambda v: f"max_control_line = {v}"),
    ("max_payload", "MaxPayload", lambda v: f"max_payload = {v}"),
    ("max_pending", "MaxPending", None),
    ("no_fast_producer_stall", "NoFastProducerStall",
     lambda v: f"fast producers will {'not ' if v else ''}be stalled"),
    # JetStream and StoreDir to SyncAlways: jetstream_changes, as Go's diffOptions.
    ("jetstream", "JetStream", None),
    ("pid_file", "PidFile", lambda v: f"pid_file = {v}" if v else None),
    ("ports_file_dir", "PortsFileDir", lambda v: f"ports_file_dir = {v}"),
    ("log_file", "LogFile", lambda v: f"log_file = {v}"),
    ("log_size_limit", "LogSizeLimit", None),
    ("log_max_num", "LogMaxFiles", None),
    ("syslog", "Syslog", lambda v: f"syslog = {_v(v)}"),
    ("remote_syslog", "RemoteSyslog", lambda v: f"remote_syslog = {v}"),
    ("tls_timeout", "TLSTimeout", lambda v: f"tls timeout = {_v(v)}"),
    ("tls", "TLS", None),
    ("tls_verify", "TLSVerify", None),
    ("tls_map", "TLSMap", None),
    ("tls_cert", "TLSCert", None),
    ("tls_key", "TLSKey", None),
    ("tls_ca_cert", "TLSCaCert", None),
    # A tls block whose files changed compares unequal too (TLSConfigOpts.files_digest).
    ("tls_config", "TLSConfig", lambda v: "tls = " + ("enabled" if v is not None else "disabled")),
    ("tls_pinned_certs", "TLSPinnedCerts", lambda v: f"{len(v or ())} pinned_certs"),
    ("tls_handshake_first", "TLSHandshakeFirst",
     lambda v: f"Client TLS handshake first: {_v(v)}"),
    ("tls_handshake_first_fallback", "TLSHandshakeFirstFallback",
     lambda v: f"Client TLS handshake first fallback delay: {_dur(v)}"),
    ("allow_non_tls", "AllowNonTLS", None),
    ("write_deadline", "WriteDeadline", lambda v: f"write_deadline = {_dur(v)}"),
    ("write_timeout", "WriteTimeout", None),
    ("max_closed_clients", "MaxClosedClients", None),
    ("lame_duck_duration", "LameDuckDuration", None),
    ("lame_duck_grace_period", "LameDuckGracePeriod", None),
    ("max_traced_msg_len", "MaxTracedMsgLen", lambda v: f"max_traced_msg_len = {v}"),
    # Operator mode (Go refuses these: the default case of diffOptions).
    ("trusted_keys", "TrustedKeys", None),
    ("trusted_operators", "TrustedOperators", None),
    ("resolver", "AccountResolver", None),
    ("tags", "Tags", lambda v: "tags"),
    # Go (reload.go): any change to the websocket block but its TLS config is refused.
    ("websocket", "Websocket", None),
]
_DURATIONS = {"ping_interval", "write_deadline", "lame_duck_duration", "lame_duck_grace_period"}
LOGGING_FIELDS = ("debug", "trace", "trace_verbose", "logtime", "logtime_utc", "log_file",
                  "syslog", "remote_syslog")


# ------------------------------------------------------------------ JetStream

_CIPHERS = {"chachapoly": "ChaCha20-Poly1305", "aes": "AES-GCM"}


def _js_limits_v(lim: dict) -> str:
    # Go's %v of a JSLimitOpts.
    def d(key):
        return _dur((lim.get(key) or 0) / 1e9)
    return "{%d %d %d %s %d %d %d %s}" % (
        lim.get("max_request_batch", 0), lim.get("max_ack_pending", 0),
        lim.get("max_ha_assets", 0), d("duplicate_window"),
        lim.get("batch_max_inflight_per_stream", 0), lim.get("batch_max_inflight_total", 0),
        lim.get("batch_max_msgs", 0), d("batch_timeout"))


def jetstream_fields(o: Options) -> list[tuple[str, Any, str]]:
    """The JetStream fields of Go's Options after setBaselineOptions, in struct order:
    (Go field name, value, its %v)."""
    cfg = o.jetstream_config or {}
    request_limit = cfg.get("request_queue_limit", 0) or 0
    if request_limit <= 0:
        request_limit = 10_000                  # Go JSDefaultRequestQueueLimit
    info_limit = cfg.get("info_queue_limit", 0) or 0
    if info_limit <= 0:
        info_limit = request_limit
    sync_always = bool(cfg.get("sync_always")) and "sync_interval" not in cfg
    # Go: "sync: always" sets SyncInterval to its default (2m) as well.
    interval = 120 * 10**9 if sync_always else cfg.get("sync_interval", 0) or 0
    lim = cfg.get("limits") or {}
    fields = [
        ("JetStream", bool(o.jetstream)),
        ("NoJetStreamStrict", not cfg.get("strict", True)),
        ("JetStreamMaxMemory", cfg.get("max_memory", -1)),
        ("JetStreamMaxStore", cfg.get("max_store", -1)),
        ("JetStreamDomain", cfg.get("domain", "") or ""),
        ("JetStreamExtHint", (cfg.get("extension_hint", "") or "").lower()),
        ("JetStreamKey", cfg.get("key", "") or ""),
        ("JetStreamOldKey", cfg.get("prev_key", "") or ""),
        ("JetStreamCipher", _CIPHERS.get(cfg.get("cipher", ""), "None")),
        ("JetStreamUniqueTag", cfg.get("unique_tag", "") or ""),
        ("JetStreamLimits", _js_limits_v(lim)),
        ("JetStreamMaxCatchup", cfg.get("max_outstanding_catchup", 0) or 0),
        ("JetStreamRequestQueueLimit", request_limit),
        ("JetStreamInfoQueueLimit", info_limit),
        ("JetStreamMetaCompact", cfg.get("meta_compact", 0) or 0),
        ("JetStreamMetaCompactSize", cfg.get("meta_compact_size", 0) or 0),
        ("JetStreamMetaCompactSync", bool(cfg.get("meta_compact_sync"))),
        ("JetStreamConcurrentIOs", cfg.get("max_concurrent_io", 0) or 4096),
        ("StreamMaxBufferedMsgs", cfg.get("max_buffered_msgs", 0) or 0),
        ("StreamMaxBufferedSize", cfg.get("max_buffered_size", 0) or 0),
        ("StoreDir", o.store_dir or ""),
        ("SyncInterval", interval),
        ("SyncAlways", sync_always),
    ]
    out = []
    for name, value in fields:
        if name == "SyncInterval":
            shown = _dur(value / 1e9)
        elif name == "JetStreamLimits":
            shown, value = value, lim
        elif name in ("JetStreamKey", "JetStreamOldKey"):
            shown = "[REDACTED]" if value else ""    # Go prints the key; natsx does not
        else:
            shown = _v(value)
        out.append((name, value, shown))
    return out


# The keys of Options.jetstream_config that jetstream_fields covers.
_JS_KEYS = frozenset((
    "strict", "max_memory", "max_store", "domain", "extension_hint", "key", "prev_key",
    "cipher", "unique_tag", "limits", "max_outstanding_catchup", "request_queue_limit",
    "info_queue_limit", "meta_compact", "meta_compact_size", "meta_compact_sync",
    "max_concurrent_io", "max_buffered_msgs", "max_buffered_size", "sync_interval",
    "sync_always"))


def jetstream_changes(old: Options, new: Options, js_enabled: bool | None = None) -> list[str]:
    """Go's diffOptions for the JetStream fields: the ``Reloaded: ...`` texts (enabling or
    disabling JetStream, raising ``max_mem_store``/``max_file_store``).

    Raises:
        ReloadError: a change Go refuses (a lower or dynamic limit, another store
        directory, and every other JetStream field, which is not reloadable).
    """
    from natsx.jetstream.manager import friendly_bytes

    if js_enabled is None:
        js_enabled = bool(old.jetstream)
    changes: list[str] = []
    disable_js = False
    mem_changed = file_changed = dir_changed = False
    limits_at = -1
    new_mem = new_store = 0
    for (name, before, shown_before), (_, after, shown_after) in zip(
            jetstream_fields(old), jetstream_fields(new)):
        if before == after:
            continue
        if name == "JetStream":
            changes.append("JetStream")
            disable_js = not after
        elif name == "StoreDir":
            if js_enabled:
                if after == "":
                    dir_changed = True     # fine only when JetStream goes off
                else:
                    raise ReloadError("config reload not supported for jetstream storage "
                                      "directory")
        elif name in ("JetStreamMaxMemory", "JetStreamMaxStore"):
            if not js_enabled:
                continue
            if before != -1 and after != -1 and after > before:
                if limits_at < 0:
                    limits_at = len(changes)
                    changes.append("")
                if name == "JetStreamMaxMemory":
                    new_mem = after
                else:
                    new_store = after
            elif before != -1 and after == -1:
                if name == "JetStreamMaxMemory":
                    mem_changed = True
                else:
                    file_changed = True
            elif before == -1:
                raise ReloadError("config reload not supported for jetstream dynamic max "
                                  "memory and store")
            else:
                raise ReloadError("config reload not supported for decreasing jetstream max "
                                  "memory and store")
        elif name in ("JetStreamMetaCompact", "JetStreamMetaCompactSize",
                      "JetStreamMetaCompactSync"):
            continue    # reloadable in Go (the meta group reads them); clustering only
        elif name == "JetStreamConcurrentIOs" and not new.jetstream:
            continue    # Go keeps the running value while JetStream is off
        else:
            raise ReloadError(f"config reload not supported for {name}: "
                              f"old={shown_before}, new={shown_after}")
    old_cfg, new_cfg = old.jetstream_config or {}, new.jetstream_config or {}
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if key not in _JS_KEYS and old_cfg.get(key) != new_cfg.get(key):
            # A key jetstream_fields does not know yet: never accepted and ignored.
            raise ReloadError(f"config reload not supported for jetstream {key}")
    if not disable_js:
        if mem_changed or file_changed:
            raise ReloadError("config reload not supported for jetstream max memory and "
                              "max store")
        if dir_changed:
            raise ReloadError("config reload not supported for jetstream storage dir")
    if limits_at >= 0:
        # Go's jetStreamLimitsOption.Apply: one notice per raised limit.
        texts = []
        if new_mem > 0:
            texts.append(f"JetStream max_mem_store = {friendly_bytes(new_mem)}")
        if new_store > 0:
            texts.append(f"JetStream max_file_store = {friendly_bytes(new_store)}")
        changes[limits_at:limits_at + 1] = texts
    return changes


def read_new_options(current: Options) -> Options:
    """The config file re-read under the same flags, validated.

    Raises:
        ReloadError: no config file, or the new config has errors.
    """
    if not current.config_file:
        raise ReloadError(NO_CONFIG_FILE)
    try:
        new, _warnings = load_options(current.config_file, current.cli_overrides)
        validate_options(new)
    except ConfigProcessError as exc:
        raise ReloadError(str(exc).rstrip("\n")) from None
    # What was resolved at startup and is not the config's to change.
    if new.port == -1:
        new.port = current.port
    if new.http_port == -1:
        new.http_port = current.http_port
    if new.websocket.port == -1:
        new.websocket.port = current.websocket.port
    new.workers = current.workers
    return new


def diff_options(old: Options, new: Options) -> list[str]:
    """The ``Reloaded: ...`` texts for the changes, in Go's order.

    Raises:
        ReloadError: a field that cannot be reloaded changed.
    """
    changes: list[str] = []
    for attr, go_name, describe in _FIELDS:
        before, after = getattr(old, attr), getattr(new, attr)
        if attr in ("users", "accounts"):
            changes.append(describe(after))  # Go re-checks these on every reload
            continue
        if attr == "jetstream":
            changes.extend(jetstream_changes(old, new))
            continue
        if before == after and not (attr == "tls_config" and after is not None):
            # Go re-reads the tls block's files on every reload and logs it.
            continue
        if attr == "no_auth_user" and before and not after and not any(
                u.username == before for u in new.users or ()):
            continue  # Go: dropping no_auth_user is fine when its user went too
        if attr == "trusted_keys" and old.trusted_operators and old.trusted_keys:
            continue  # Go (skipTKeys): the keys of the operators are compared as those
        if attr == "resolver" and (before is None) != (after is None):
            raise ReloadError("config reload does not support moving to or from an "
                              "account resolver")
        if attr in ("trusted_keys", "trusted_operators", "resolver"):
            raise ReloadError(f"config reload not supported for {go_name}: "
                              f"old={_operator_v(before)}, new={_operator_v(after)}")
        if describe is None or attr == "no_auth_user":
            shown = (_dur(before), _dur(after)) if attr in _DURATIONS else (_v(before), _v(after))
            raise ReloadError(f"config reload not supported for {go_name}: "
                              f"old={shown[0]}, new={shown[1]}")
        text = describe(after)
        if text:
            changes.append(text)
    return changes


def logging_changed(old: Options, new: Options) -> bool:
    return any(getattr(old, a) != getattr(new, a) for a in LOGGING_FIELDS)


# ------------------------------------------------------------------ per process

def log_startup_notes(options: Options) -> None:
    """What Go logs about its configuration at startup (NewServer, checkAuthforWarnings)."""
    from natsx.auth.users import Authenticator

    if Authenticator(options).plaintext_passwords():
        log.warning("Plaintext passwords detected, use nkeys or bcrypt")
    if options.config_file:
        log.info("Using configuration file: %s", options.config_file)

def reload_supervisor(arbiter) -> bool:
    """SIGHUP in the supervisor: True when the children should reload too."""
    current: Options = arbiter.options
    try:
        new = read_new_options(current)
        changes = diff_options(current, new)
    except ReloadError as exc:
        log.error("Failed to reload server configuration: %s", exc)
        return False
    for text in changes:
        log.info("Reloaded: %s", text)
    if logging_changed(current, new):
        logs.setup_from(new)
    old_ports_file = arbiter.ports_file_path() if current.ports_file_dir else ""
    arbiter.options = new
    if new.pid_file and new.pid_file != current.pid_file:
        try:
            arbiter.write_pid_file()
        except OSError as exc:
            log.error("Failed to write pidfile: %s", exc)
    if new.ports_file_dir != current.ports_file_dir:
        if old_ports_file:
            try:
                os.unlink(old_ports_file)
            except OSError:
                pass
        try:
            arbiter.write_ports_file()
        except OSError as exc:
            log.error("Failed to write ports file: %s", exc)
    log.info("Reloaded server configuration (%s)", new.config_digest)
    return True


def reload_worker(server) -> None:
    """SIGHUP in a worker: re-read, and apply to this worker's connections."""
    from natsx.server.authorization import apply_reload

    current: Options = server.options
    try:
        new = read_new_options(current)
        diff_options(current, new)
    except ReloadError as exc:
        # The supervisor has logged this already (it forwards the signal only when it
        # accepted the reload); seeing it here means the file changed in between.
        log.debug("worker %d: reload refused: %s", server.worker_index, exc)
        return
    if logging_changed(current, new):
        logs.setup_from(new)
    apply_reload(server, new)
    trace.apply(server)
    apply_jetstream(server, current, new)
    if getattr(server, "system", None) is not None:
        server.system.reloaded()


def apply_jetstream(server, old: Options, new: Options) -> None:
    """The JetStream part of a reload in a worker, after ``jetstream_changes`` accepted it:
    Go's jetStreamLimitsOption.Apply (raised limits), DisableJetStream and
    restartJetStream. A server started without JetStream gets its raft process from the
    supervisor on the reload that turns it on (before the workers are told), so its file
    streams are written through it as on a server started with JetStream."""
    js = server.jetstream
    if js is not None and not new.jetstream:
        if server.worker_index == 0:
            log.info("Initiating JetStream Shutdown...")
        js.shutdown()
        # Kept for its API subscriptions, which leave requests unanswered as Go's do.
        server.jetstream_off = js
        server.jetstream = None
        if server.worker_index == 0:
            log.info("JetStream Shutdown")
        return
    if js is None and new.jetstream:
        from natsx.jetstream import JetStream

        off = getattr(server, "jetstream_off", None)
        if off is not None:
            off.unsubscribe_api()
            server.jetstream_off = None
        if server.worker_index == 0:
            log.info("Restarting JetStream")
        js = server.jetstream = JetStream(server)
        js.ready = True     # the workers are all up: a feed's requests may go at once
        js.start(server._nursery)   # its API subscriptions include the relay's
        return
    if js is None:
        return
    cfg = new.jetstream_config or {}
    settings = js.settings
    mem, store = cfg.get("max_memory", -1), cfg.get("max_store", -1)
    if mem > 0 and mem != settings.max_memory:
        settings.max_memory = mem
    if store > 0 and store != settings.max_store:
        settings.max_store = store


def apply_accounts(server, old: Options, new: Options) -> None:
    """The accounts part of a reload in a worker (Go: reloadAuthorization with configured
    accounts): accounts added get their sublist, accounts removed lose it (their clients,
    whose users are gone too, are closed by the re-check that follows), mappings are
    installed again everywhere and the imports rebuilt. Clients whose user moved to another
    account are closed by natsx.server.authorization.apply_reload."""
    from natsx.server.accounts import system_account_name

    configs = new.accounts or {}
    changed = old.accounts != new.accounts
    if changed and server.imports is not None:
        server.imports.stop(configs)
    if server.operator is None:
        keep = set(configs) | {"$G", system_account_name(new)}
        for name in [n for n in server.accounts if n not in keep]:
            if (old.accounts or {}).get(name) is None:
                continue   # not a configured account (the workers' own, for instance)
            del server.accounts[name]
            server.router.sublists.pop(name.encode(), None)
            server.internal_clients.pop(name.encode(), None)
        server._create_accounts(new)
    server.apply_mappings(new)
    if not changed:
        return
    if server.imports is None:
        if not any(c.stream_imports or c.service_imports for c in configs.values()):
            return
        from natsx.server.imports import Imports

        server.imports = Imports(server)
    server.imports.start(configs, local=True)


def reload_admin(monitor) -> None:
    """SIGHUP in the admin process: /varz reports the reloaded options."""
    current: Options = monitor.options
    try:
        new = read_new_options(current)
        diff_options(current, new)
    except ReloadError:
        return
    if logging_changed(current, new):
        logs.setup_from(new)
    monitor.options = new
    monitor.config_load_time = time.time()
