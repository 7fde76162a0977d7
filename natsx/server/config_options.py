"""Config file to ``Options``: the Go server's processConfigFileLine, for what natsx has.

Theory of operation
-------------------
``load_options(path, overrides)`` parses the file with positions (Go: ParseFileWithChecks),
maps every top-level key to ``Options`` fields, then applies the command-line flags given
explicitly (``overrides``), which win over the file exactly as Go's second ``fs.Parse`` makes
them win. The same function serves startup, ``-t`` and every reload.

Keys match case-insensitively, with Go's aliases (``net``/``host``, ``max_conn``...). Errors
carry ``file:line:col`` of the offending key and Go's text; all of them are collected and
reported together, as ``processConfigErr`` does, warnings (an integer duration) first. A key
the Go server does not know is ``unknown field "key"``; a key for a feature natsx does not
have yet (``cluster``, ``gateway``, ``mqtt``...) is an error naming the feature — never
accepted and ignored, since a server silently running without the TLS or the accounts its
config asks for is worse than one that refuses to start. A top-level key that only defines
a variable used elsewhere is skipped, as in Go.

``validate_options`` holds the checks Go makes when the server is created (validateOptions),
which ``-t`` does not run.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Callable

import attrs

from natsx.auth.nkeys import is_valid_public_user_key
from natsx.auth.permissions import (
    DEFAULT_RESPONSE_EXPIRES,
    DEFAULT_RESPONSE_MAX_MSGS,
    Permissions,
    ResponsePermission,
    SubjectPermission,
    check_subject_list,
)
from natsx.auth.users import CONNECTION_TYPES, NkeyUser, User
from natsx.config import ConfigError, Token, go_type_name, parse_file_with_positions
from natsx.config.values import parse_go_duration
from natsx.server import options as defaults
from natsx.server.accounts import AccountConfig, Export, ServiceImport, StreamImport
from natsx.server.mapping import MapDest
from natsx.sublist import is_subset_match as _subset
from natsx.sublist import is_valid_publish_subject
from natsx.server.mapping import _atoi as _mapping_atoi
from natsx.server.options import Options
from natsx.server.tls import TLS_TIMEOUT

__all__ = ["ConfigProcessError", "load_options", "process_config_file", "validate_options",
           "config_digest", "go_duration_string"]

_INT32_MAX = (1 << 31) - 1


class ConfigProcessError(Exception):
    """The config file cannot be used; ``str()`` is what nats-server prints after its name.

    ``errors`` and ``warnings`` are the individual messages (``file:line:col: reason``).
    With only warnings the server still starts (and prints them); ``-t`` fails on them.
    """

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings or ())
        super().__init__(str(self))

    def __str__(self) -> str:
        return "".join(m + "\n" for m in self.warnings + self.errors)


class _Fail(Exception):
    def __init__(self, tk: Token | None, reason: str) -> None:
        super().__init__(reason)
        self.tk = tk
        self.reason = reason


def _where(tk: Token | None) -> str:
    if tk is None:
        return ""
    return f"{tk.filename or ''}:{tk.line}:{tk.col}: "


def _split(v: Any) -> tuple[Token | None, Any]:
    return (v, v.value) if isinstance(v, Token) else (None, v)


# ------------------------------------------------------------------ Go type assertions

def _want(tk, v, kind: type, go_name: str):
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if not ok:
        # Go panics on the failed assertion; the panic text is the error.
        raise _Fail(tk, f"interface conversion: interface {{}} is {go_type_name(v)}, not {go_name}")
    return v


def _int(tk, v) -> int:
    return _want(tk, v, int, "int64")


def _str(tk, v) -> str:
    return _want(tk, v, str, "string")


def _bool(tk, v) -> bool:
    return _want(tk, v, bool, "bool")


def _map(tk, v) -> dict:
    return _want(tk, v, dict, "map[string]interface {}")


# ------------------------------------------------------------------ formatting as Go does

def go_duration_string(seconds: float) -> str:
    """Go's time.Duration.String() of a duration given in seconds."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    neg, u = ns < 0, abs(ns)

    def frac(u: int, prec: int) -> tuple[int, str]:
        s, printed = "", False
        for _ in range(prec):
            d = u % 10
            printed = printed or d != 0
            if printed:
                s = str(d) + s
            u //= 10
        return u, ("." + s if printed else "")

    if u < 1_000_000_000:
        unit, prec = ("ns", 0) if u < 1000 else ("µs", 3) if u < 1_000_000 else ("ms", 6)
        u, f = frac(u, prec)
        out = f"{u}{f}{unit}"
    else:
        u, f = frac(u, 9)
        out = f"{u % 60}{f}s"
        u //= 60
        if u:
            out = f"{u % 60}m" + out
            u //= 60
            if u:
                out = f"{u}h" + out
    return "-" + out if neg else out


def go_float(f: float) -> str:
    """Go's %v of a float64, for the values that reach messages (timeouts)."""
    if float(f).is_integer() and abs(f) < 1e21:
        return str(int(f))
    return repr(float(f))


def _go_json(v: Any) -> Any:
    if isinstance(v, Token):
        return _go_json(v.value)
    if isinstance(v, dict):
        return {k: _go_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_go_json(x) for x in v]
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    return v


def config_digest(tree: dict) -> str:
    """``sha256:<hex>`` of the parsed config as Go's json.Encoder writes it (conf.configDigest)."""
    text = json.dumps(_go_json(tree), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    # encoding/json escapes <, > and & (and the JS line separators) in strings.
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return "sha256:" + hashlib.sha256((text + "\n").encode()).hexdigest()


# ------------------------------------------------------------------ keys natsx refuses

# Go's top-level keys for features this build does not have, with the feature's name.
_NOT_YET: dict[str, str] = {}
for _feature, _keys in {
    "OCSP stapling": "ocsp_cache",
    "clustering": "cluster connect_error_reports reconnect_error_reports",
    "gateways": "gateway",
    "leaf nodes": "leaf leafnodes",
    "MQTT": "mqtt",
    "JetStream domains": "default_js_domain",
    "profiling": "prof_port prof_block_rate",
    "proxies": "proxies proxy_protocol",
    "server metadata": "server_metadata",
    "feature flags": "feature_flags",
}.items():
    for _k in _keys.split():
        _NOT_YET[_k] = _feature


def _not_yet(key: str, feature: str) -> str:
    return f"{key}: {feature} is not supported by this natsx build yet"


# ------------------------------------------------------------------ processing

class _Processor:
    """One pass over a parsed config: ``values`` are the Options fields the file sets."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, tk: Token | None, reason: str) -> None:
        self.errors.append(_where(tk) + reason)

    def warn(self, tk: Token | None, field: str, reason: str) -> None:
        self.warnings.append(f'{_where(tk)}invalid use of field "{field}": {reason}')

    def unknown(self, tk: Token | None, key: str) -> None:
        if tk is not None and tk.used_variable:
            return
        self.errors.append(f'{_where(tk)}unknown field "{key}"')

    def run(self, tree: dict) -> None:
        if not tree:
            self.warnings.append(": config has no values or is empty")
        for key, raw in tree.items():
            tk, v = _split(raw)
            name = key.lower()
            handler = _TOP.get(name)
            try:
                if handler is not None:
                    handler(self, key, tk, v)
                elif name in _NOT_YET:
                    self.error(tk, _not_yet(key, _NOT_YET[name]))
                else:
                    self.unknown(tk, key)
            except _Fail as exc:
                self.error(exc.tk or tk, exc.reason)

    # -------------------------------------------------------------- helpers

    def duration(self, field: str, tk, v) -> float:
        """opts.go parseDuration: a Go duration string, or (warned) a number of seconds."""
        if isinstance(v, str):
            try:
                return parse_go_duration(v) / 1e9
            except ValueError as exc:
                raise _Fail(tk, f"error parsing {field}: {exc}") from None
        self.warn(tk, field, f"{field} should be converted to a duration")
        return float(_int(tk, v))


def _setter(attr: str, conv: Callable) -> Callable:
    def handle(p: _Processor, key: str, tk, v) -> None:
        p.values[attr] = conv(tk, v)
    return handle


def _parse_listen(tk, v) -> tuple[str, int]:
    """opts.go parseListen: a port, or "host:port"."""
    if isinstance(v, int) and not isinstance(v, bool):
        return "", v
    if isinstance(v, str):
        s = v.strip()
        host, sep, port = s.rpartition(":")
        if not sep or (":" in host and not (host.startswith("[") and host.endswith("]"))):
            raise _Fail(tk, f'could not parse address string "{v}"')
        host = host[1:-1] if host.startswith("[") else host
        try:
            return host, int(port, 10)
        except ValueError:
            raise _Fail(tk, f'could not parse port "{port}"') from None
    raise _Fail(tk, f"expected port or host:port, got {go_type_name(v)}")


def _listen(p: _Processor, key, tk, v) -> None:
    host, port = _parse_listen(tk, v)
    p.values["host"] = host
    p.values["port"] = port


def _http(p: _Processor, key, tk, v) -> None:
    host, port = _parse_listen(tk, v)
    p.values["http_host"] = host
    p.values["http_port"] = port


def _https(p: _Processor, key, tk, v) -> None:
    host, port = _parse_listen(tk, v)
    p.values["http_host"] = host
    p.values["https_port"] = port


def _server_name(p: _Processor, key, tk, v) -> None:
    name = _str(tk, v)
    if " " in name:
        raise _Fail(tk, "server name cannot contain spaces")
    p.values["server_name"] = name


def _gov(v) -> str:
    """Go's ``%v`` of a config value."""
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _storage_size(tk, v, what: str) -> int:
    """Go's getStorageSize: an integer, or a string ``<n>K|M|G|T``."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if not isinstance(v, str):
        raise _Fail(tk, f"{what} must be int64 or string")
    if v == "":
        return 0
    mult = {"K": 10, "M": 20, "G": 30, "T": 40}.get(v[-1])
    try:
        num = int(v[:-1], 10)
    except ValueError:
        raise _Fail(tk, f'{what} strconv.ParseInt: parsing "{v[:-1]}": invalid syntax') from None
    if mult is None:
        raise _Fail(tk, f"{what} sizes defined as strings must end in K, M, G, T")
    return num << mult


def _js_limits(p: _Processor, tk, v) -> dict:
    """The jetstream block's ``limits`` (Go: parseJetStreamLimits)."""
    out: dict = {}
    for k, raw in _want(tk, v, dict, "map").items():
        ktk, kv = _split(raw)
        name = k.lower()
        try:
            if name in ("max_ack_pending", "max_ha_assets", "max_request_batch"):
                out[name] = _int(ktk, kv)
            elif name == "duplicate_window":
                try:
                    out[name] = parse_go_duration(_str(ktk, kv))
                except ValueError as exc:
                    p.error(ktk, str(exc))
            elif name == "batch":
                for bk, braw in _map(ktk, kv).items():
                    btk, bv = _split(braw)
                    bname = bk.lower()
                    if bname in ("max_inflight_per_stream", "max_inflight_total", "max_msgs"):
                        out["batch_" + bname] = _int(btk, bv)
                    elif bname == "timeout":
                        try:
                            out["batch_timeout"] = parse_go_duration(_str(btk, bv))
                        except ValueError as exc:
                            p.error(None, str(exc))     # Go: the bare ParseDuration error
                    else:
                        p.unknown(btk, bk)
            else:
                p.unknown(ktk, k)
        except _Fail as exc:
            p.error(exc.tk or ktk, exc.reason)
    return out


def _js_cipher(tk, v) -> str:
    low = _str(tk, v).lower()
    if low in ("chacha", "chachapoly"):
        return "chachapoly"
    if low == "aes":
        return "aes"
    raise _Fail(tk, f"Unknown cipher type: {json.dumps(v)}")


def _jetstream(p: _Processor, key, tk, v) -> None:
    """``jetstream: true|"enabled"|{store_dir, max_mem, domain, ...}`` (Go: parseJetStream).

    Every key of Go's block is applied (``natsx.jetstream.settings`` reads them, encryption at
    rest included: natsx.storage.crypt) except ``tpm``, which this build refuses by name."""
    if isinstance(v, bool):
        p.values["jetstream"] = v
        return
    if isinstance(v, str):
        low = v.lower()
        if low in ("enabled", "enable"):
            p.values["jetstream"] = True
        elif low in ("disabled", "disable"):
            p.values["jetstream"] = False
        else:
            raise _Fail(tk, f"Expected 'enabled' or 'disabled' for string value, got '{v}'")
        return
    if not isinstance(v, dict):
        raise _Fail(tk, f"Expected map, bool or string to define JetStream, got {go_type_name(v)}")
    enabled = True
    cfg: dict = {}
    for k, raw in v.items():
        ktk, kv = _split(raw)
        name = k.lower()
        try:
            if name in ("store", "store_dir", "storedir"):
                if p.values.get("store_dir"):
                    raise _Fail(ktk, "Duplicate 'store_dir' configuration")
                p.values["store_dir"] = _str(ktk, kv)
            elif name in ("enabled", "enable"):
                enabled = _bool(ktk, kv)
            elif name == "strict":
                if not isinstance(kv, bool):
                    raise _Fail(ktk, f"Expected 'true' or 'false' for bool value, got '{kv}'")
                cfg["strict"] = kv
            elif name in ("sync", "sync_interval"):
                if isinstance(kv, str) and kv.lower() == "always":
                    cfg["sync_always"] = True
                    cfg.pop("sync_interval", None)
                else:
                    cfg["sync_interval"] = round(p.duration(k, ktk, kv) * 1e9)
                    cfg["sync_always"] = False
            elif name in ("max_memory_store", "max_mem_store", "max_mem"):
                cfg["max_memory"] = _storage_size(ktk, kv, "max_mem_store")
            elif name in ("max_file_store", "max_file"):
                cfg["max_store"] = _storage_size(ktk, kv, "max_file_store")
            elif name == "domain":
                cfg["domain"] = _str(ktk, kv)
            elif name == "cipher":
                cfg["cipher"] = _js_cipher(ktk, kv)
            elif name in ("key", "ek", "encryption_key"):
                cfg["key"] = _str(ktk, kv)
            elif name in ("prev_key", "prev_ek", "prev_encryption_key"):
                cfg["prev_key"] = _str(ktk, kv)
            elif name == "tpm":
                p.error(ktk, f"jetstream {k}: TPM key storage is not supported by this "
                             "natsx build yet")
            elif name == "extension_hint":
                # Clustering only: Go reads it (validateJetStreamOptions, with a cluster)
                # to let a standalone server of a clustered setup extend another domain
                # over a leafnode, and for the meta group's observer mode.
                cfg["extension_hint"] = _str(ktk, kv)
            elif name == "limits":
                cfg["limits"] = _js_limits(p, ktk, kv)
            elif name == "unique_tag":
                # Clustering only for placement (Go spreads a stream's replicas over
                # servers with distinct tags); a single server shows it in /jsz config.
                cfg["unique_tag"] = _str(ktk, kv).strip().lower()
            elif name in ("max_outstanding_catchup", "max_buffered_size", "meta_compact_size"):
                # max_buffered_size bounds a stream's ingest queue (natsx.jetstream.queues).
                # Clustering only: max_outstanding_catchup (Go gcbOutMax, the bytes in
                # flight while replicas catch up a stream) and meta_compact_size (when the
                # meta group compacts its log).
                cfg[name] = _storage_size(ktk, kv, name)
            elif name in ("max_buffered_msgs", "request_queue_limit", "info_queue_limit"):
                # A stream's ingest queue and the API queues (natsx.jetstream.queues).
                if not isinstance(kv, int) or isinstance(kv, bool):
                    raise _Fail(ktk, f'Expected a parseable size for "{k}", got {_gov(kv)}')
                cfg[name] = kv
            elif name == "meta_compact":
                # Clustering only, with meta_compact_sync: the meta group's log compaction.
                if not isinstance(kv, int) or isinstance(kv, bool) or kv < 0:
                    raise _Fail(ktk, f'Expected an absolute size for "{k}", got {_gov(kv)}')
                cfg[name] = kv
            elif name == "meta_compact_sync":
                cfg[name] = _bool(ktk, kv)
            elif name == "max_concurrent_io":
                # Go bounds its filestore's concurrent blocking disk I/O with it; nothing a
                # client observes, and natsx's stream writes all go through the one raft
                # process already.
                if not isinstance(kv, int) or isinstance(kv, bool) or not 4 <= kv <= 8192:
                    raise _Fail(ktk, f'Expected an absolute size for "{k}" between 4 and '
                                     f"8192, got {_gov(kv)}")
                cfg[name] = kv
            else:
                p.unknown(ktk, k)
        except _Fail as exc:
            p.error(exc.tk or ktk, exc.reason)
    p.values["jetstream"] = enabled
    p.values["jetstream_config"] = cfg


_ACCOUNT_JS_LIMITS = {
    "max_memory": "max_memory", "max_mem": "max_memory", "mem": "max_memory",
    "memory": "max_memory",
    "max_store": "max_storage", "max_file": "max_storage", "max_disk": "max_storage",
    "store": "max_storage", "disk": "max_storage",
    "max_streams": "max_streams", "streams": "max_streams",
    "max_consumers": "max_consumers", "consumers": "max_consumers",
    "mem_max_stream_bytes": "memory_max_stream_bytes",
    "memory_max_stream_bytes": "memory_max_stream_bytes",
    "disk_max_stream_bytes": "storage_max_stream_bytes",
    "store_max_stream_bytes": "storage_max_stream_bytes",
    "max_ack_pending": "max_ack_pending",
}

# Go's defaultJSAccountTiers: everything unlimited.
JS_ACCOUNT_UNLIMITED = {"max_memory": -1, "max_storage": -1, "max_streams": -1,
                        "max_consumers": -1, "max_ack_pending": -1,
                        "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1,
                        "max_bytes_required": False}


def _account_jetstream(p: _Processor, tk, v) -> dict | None:
    """An account's ``jetstream`` (Go: parseJetStreamForAccount): its limits, or None."""
    if isinstance(v, bool):
        return dict(JS_ACCOUNT_UNLIMITED) if v else None
    if isinstance(v, str):
        low = v.lower()
        if low in ("enabled", "enable"):
            return dict(JS_ACCOUNT_UNLIMITED)
        if low in ("disabled", "disable"):
            return None
        raise _Fail(tk, f"Expected 'enabled' or 'disabled' for string value, got '{v}'")
    if not isinstance(v, dict):
        raise _Fail(tk, f"Expected map, bool or string to define JetStream, got {go_type_name(v)}")
    limits = dict(JS_ACCOUNT_UNLIMITED)
    for k, raw in v.items():
        ktk, kv = _split(raw)
        name = k.lower()
        if name in _ACCOUNT_JS_LIMITS:
            if not isinstance(kv, int) or isinstance(kv, bool):
                raise _Fail(ktk, f'Expected a parseable size for "{k}", got {_gov(kv)}')
            limits[_ACCOUNT_JS_LIMITS[name]] = kv
        elif name in ("max_bytes_required", "max_stream_bytes", "max_bytes"):
            if not isinstance(kv, bool):
                raise _Fail(ktk, f'Expected a parseable bool for "{k}", got {_gov(kv)}')
            limits["max_bytes_required"] = kv
        elif name == "cluster_traffic":
            if kv not in ("system", "owner", ""):
                raise _Fail(ktk, f"Expected 'system' or 'owner' string value for \"{k}\", "
                                 f"got {_gov(kv)}")
        else:
            p.unknown(ktk, k)
    return limits


def _trace_level(p: _Processor, key, tk, v) -> None:
    on = _bool(tk, v)
    p.values["trace"] = on
    if key.lower() == "trace_verbose":
        p.values["trace_verbose"] = on


def _int32(attr: str) -> Callable:
    def handle(p: _Processor, key, tk, v) -> None:
        n = _int(tk, v)
        if n > _INT32_MAX:
            raise _Fail(tk, f"{key} value is too big")
        p.values[attr] = n
    return handle


def _max_connections(p: _Processor, key, tk, v) -> None:
    n = _int(tk, v)
    # Go: 0 in the file means "no connections at all", not the default.
    p.values["max_connections"] = -1 if n == 0 else n


def _max_sub_tokens(p: _Processor, key, tk, v) -> None:
    n = _int(tk, v)
    if n > 255:
        raise _Fail(tk, f"{key} value is too big")
    if n <= 0:
        raise _Fail(tk, f"{key} value can not be negative")
    p.values["max_sub_tokens"] = n


def _duration_option(attr: str, field: str) -> Callable:
    def handle(p: _Processor, key, tk, v) -> None:
        p.values[attr] = p.duration(field, tk, v)
    return handle


def _write_timeout(p: _Processor, key, tk, v) -> None:
    """opts.go parseWriteDeadlinePolicy; "default" is stored as ""."""
    v = _str(tk, v)
    if v not in ("default", "close", "retry"):
        raise _Fail(tk, "write_timeout must be 'default', 'close' or 'retry'")
    p.values["write_timeout"] = "" if v == "default" else v


def _lame_duck_duration(p: _Processor, key, tk, v) -> None:
    try:
        d = parse_go_duration(_str(tk, v)) / 1e9
    except ValueError as exc:
        raise _Fail(tk, f"error parsing lame_duck_duration: {exc}") from None
    if d < 30:
        raise _Fail(tk, f"invalid lame_duck_duration of {go_duration_string(d)}, "
                        "minimum is 30 seconds")
    p.values["lame_duck_duration"] = d


def _lame_duck_grace_period(p: _Processor, key, tk, v) -> None:
    try:
        d = parse_go_duration(_str(tk, v)) / 1e9
    except ValueError as exc:
        raise _Fail(tk, f"error parsing lame_duck_grace_period: {exc}") from None
    if d < 0:
        raise _Fail(tk, "invalid lame_duck_grace_period, needs to be positive")
    p.values["lame_duck_grace_period"] = d


def _server_tags(p: _Processor, key, tk, v) -> None:
    if isinstance(v, str):
        tags = [v]
    elif isinstance(v, list):
        tags = []
        for item in v:
            itk, iv = _split(item)
            if not isinstance(iv, str):
                raise _Fail(tk, "error parsing tags: unsupported type *conf.token where "
                                "string is expected")
            tags.append(iv)
    else:
        raise _Fail(tk, f"error parsing tags: unsupported type {go_type_name(v)}")
    tags = list(p.values.get("tags", [])) + [t for t in tags if t]
    p.values["tags"] = tags


# ------------------------------------------------------------------ authorization

def _authorization(p: _Processor, key, tk, v) -> None:
    am = _map(tk, v)
    user = password = token = ""
    timeout = 0.0
    users: list | None = None
    nkeys: list | None = None
    default_perms: Permissions | None = None
    for mk, mraw in am.items():
        mtk, mv = _split(mraw)
        name = mk.lower()
        try:
            if name in ("user", "username"):
                user = _str(mtk, mv)
            elif name in ("pass", "password"):
                password = _str(mtk, mv)
            elif name == "token":
                token = _str(mtk, mv)
            elif name == "timeout":
                timeout = _auth_timeout(p, mk, mtk, mv)
            elif name == "users":
                nkeys, users = _parse_users(p, mtk, mv)
            elif name in ("default_permission", "default_permissions", "permissions"):
                default_perms = _parse_permissions(p, mtk, mv)
            elif name in ("auth_callout", "auth_hook"):
                p.error(mtk, _not_yet(mk, "auth callout"))
            elif name == "proxy_required":
                p.error(mtk, _not_yet(mk, "proxies"))
            else:
                p.unknown(mtk, mk)
        except _Fail as exc:
            p.error(exc.tk or mtk, exc.reason)
    if default_perms is not None:
        # Go: applyDefaultPermissions, to the users that have none of their own.
        users = [u if u.permissions is not None else _with_perms(u, default_perms)
                 for u in users] if users is not None else None
        nkeys = [u if u.permissions is not None else _with_perms(u, default_perms)
                 for u in nkeys] if nkeys is not None else None
    p.values.update(username=user, password=password, authorization=token,
                    auth_timeout=timeout)
    if (user or password) and token:
        raise _Fail(tk, "Cannot have a user/pass and token")
    if users is not None or nkeys is not None:
        if user:
            raise _Fail(tk, "Can not have a single user/pass and a users array")
        if token:
            raise _Fail(tk, "Can not have a token and a users array")
    seen: set[str] = set()
    for u in users or ():
        if u.username in seen:
            raise _Fail(tk, f'Duplicate user "{u.username}" detected')
        seen.add(u.username)
    for u in nkeys or ():
        if u.nkey in seen:
            raise _Fail(tk, f'Duplicate nkey "{u.nkey}" detected')
        seen.add(u.nkey)
    # Go keeps the users (and, separately, the nkeys) only when there are some: an empty
    # ``users: []`` leaves the server without authentication.
    if users:
        p.values["users"] = users + p.values.get("users", [])
    if nkeys:
        p.values["nkeys"] = nkeys + p.values.get("nkeys", [])


def _with_perms(u, perms: Permissions):
    return attrs.evolve(u, permissions=perms)


def _auth_timeout(p: _Processor, key, tk, v) -> float:
    if isinstance(v, bool):
        raise _Fail(tk, "error parsing authorization config, 'timeout' wrong type")
    if isinstance(v, (int, float)):
        at = float(v)
    elif isinstance(v, str):
        try:
            at = parse_go_duration(v) / 1e9
        except ValueError as exc:
            raise _Fail(tk, f"error parsing authorization config, 'timeout' {exc}") from None
    else:
        raise _Fail(tk, "error parsing authorization config, 'timeout' wrong type")
    if at > 60:
        shown = v if isinstance(v, str) else go_float(v)
        p.warn(tk, key, f"timeout of {shown} ({at:f} seconds) is high, consider keeping it "
                        "under 60 seconds. possibly caused by unquoted duration; use '1m' "
                        "instead of 1m, for example")
    return at


def _parse_users(p: _Processor, tk, v) -> tuple[list, list]:
    if not isinstance(v, list):
        raise _Fail(tk, f"Expected users field to be an array, got {v}")
    users: list[User] = []
    nkeys: list[NkeyUser] = []
    for entry in v:
        etk, ev = _split(entry)
        if not isinstance(ev, dict):
            p.error(etk, f"Expected user entry to be a map/struct, got {ev}")
            continue
        username = password = nkey = ""
        perms: Permissions | None = None
        types: frozenset | None = None
        last = etk
        for k, raw in ev.items():
            ktk, kv = _split(raw)
            last = ktk or last
            name = k.lower()
            try:
                if name == "nkey":
                    nkey = _str(ktk, kv)
                elif name in ("user", "username"):
                    username = _str(ktk, kv)
                elif name in ("pass", "password"):
                    password = _str(ktk, kv)
                elif name in ("permission", "permissions", "authorization"):
                    perms = _parse_permissions(p, ktk, kv)
                elif name in ("allowed_connection_types", "connection_types", "clients"):
                    types = _connection_types(p, ktk, kv)
                elif name == "proxy_required":
                    p.error(ktk, _not_yet(k, "proxies"))
                else:
                    p.unknown(ktk, k)
            except _Fail as exc:
                p.error(exc.tk or ktk, exc.reason)
        if not nkey and not username:
            raise _Fail(last, "User entry requires a user")
        if nkey:
            if not is_valid_public_user_key(nkey):
                raise _Fail(last, "Not a valid public nkey for a user")
            if username or password:
                raise _Fail(last, "Nkey users do not take usernames or passwords")
            nkeys.append(NkeyUser(nkey, perms, types))
        else:
            users.append(User(username, password, perms, types))
    return nkeys, users


# ------------------------------------------------------------------ accounts (Go: parseAccounts)

def _accounts(p: _Processor, tk, v) -> None:
    am = _map(tk, v)
    p.accounts_tk = tk   # where Go reports the errors of adding exports and imports
    configs: dict[str, AccountConfig] = dict(p.values.get("accounts") or {})
    imports: list[tuple] = []
    seen_users = {u.username for u in p.values.get("users", ())}
    seen_users |= {u.nkey for u in p.values.get("nkeys", ())}
    for name, raw in am.items():
        atk, av = _split(raw)
        if name in configs:
            p.error(atk, f"Duplicate Account Entry: {name}")
            continue
        cfg = configs[name] = AccountConfig(name)
        if av is None or av == "":
            continue
        if not isinstance(av, dict):
            p.error(atk, f"Expected map entries for accounts, got {go_type_name(av)}")
            continue
        for k, kraw in av.items():
            ktk, kv = _split(kraw)
            key = k.lower()
            try:
                if key == "users":
                    nkeys, users = _parse_users(p, ktk, kv)
                    for u in users:
                        if u.username in seen_users:
                            raise _Fail(ktk, f'Duplicate user "{u.username}" detected')
                        seen_users.add(u.username)
                    for u in nkeys:
                        if u.nkey in seen_users:
                            raise _Fail(ktk, f'Duplicate nkey "{u.nkey}" detected')
                        seen_users.add(u.nkey)
                    if users:
                        p.values["users"] = p.values.get("users", []) + [
                            attrs.evolve(u, account=name) for u in users]
                    if nkeys:
                        p.values["nkeys"] = p.values.get("nkeys", []) + [
                            attrs.evolve(u, account=name) for u in nkeys]
                elif key == "exports":
                    _account_exports(p, cfg, ktk, kv)
                elif key == "imports":
                    if not isinstance(kv, list):
                        raise _Fail(ktk, f"Imports should be an array, got {go_type_name(kv)}")
                    for entry in kv:
                        imports.append((name,) + _account_import(p, entry))
                elif key == "jetstream":
                    cfg.jetstream = _account_jetstream(p, ktk, kv)
                elif key in ("mappings", "maps"):
                    cfg.mappings = cfg.mappings + _mappings(p, ktk, kv)
                elif key in ("default_permissions", "limits",
                             "nkey", "trace_dest", "msg_trace", "cluster_traffic"):
                    p.error(ktk, _not_yet(k, f"account {k}"))
                else:
                    p.unknown(ktk, k)
            except _Fail as exc:
                p.error(exc.tk or ktk, exc.reason)
    for owner, kind, imp, itk in imports:
        target = configs.get(imp.account)
        if target is None:
            p.error(tk, f"{go_quote_str(imp.account)} account not defined for {kind} import")
            continue
        exports = target.stream_exports if kind == "stream" else target.service_exports
        if not _import_authorized(exports, imp.subject, owner):
            p.error(tk, f"Error adding {kind} import {go_quote_str(imp.subject)}: "
                        f"{kind} import not authorized")
            continue
        if _import_forms_cycle(configs, kind, imp.account, imp.subject, {owner}):
            p.error(tk, f"Error adding {kind} import {go_quote_str(imp.subject)}: "
                        "import forms a cycle")
            continue
        cfg = configs[owner]
        (cfg.stream_imports if kind == "stream" else cfg.service_imports).append(imp)
    p.values["accounts"] = configs


# ------------------------------------------------------------------ mappings (Go: parseAccountMappings)

def _mappings(p: _Processor, tk, v) -> tuple:
    """One ``mappings`` block: ((source, (MapDest, ...)), ...), each entry checked by
    building it (Go adds it to the account, whose errors are the config's)."""
    from natsx.server.mapping import Mapping, MappingError
    from natsx.sublist import is_valid_subject

    am = _map(tk, v)
    out = []
    for subj, raw in am.items():
        if not is_valid_subject(subj.encode()):
            p.error(tk, f"Subject {go_quote_str(subj)} is not a valid subject")
            continue
        mtk, mv = _split(raw)
        if isinstance(mv, str):
            dests = (MapDest(mv, 100),)
            prefix = f"Error adding mapping for {go_quote_str(subj)} to {go_quote_str(mv)} : "
        elif isinstance(mv, list):
            parsed = [_map_dest(p, *_split(item)) for item in mv]
            if any(d is None for d in parsed):
                # Go drops the bad entries (each reported) and adds the others.
                parsed = [d for d in parsed if d is not None]
            dests = tuple(parsed)
            prefix = f"Error adding mapping for {go_quote_str(subj)} : "
        else:
            d = _map_dest(p, mtk, mv)
            if d is None:
                continue
            dests = (d,)
            prefix = f"Error adding mapping for {go_quote_str(subj)} : "
        try:
            Mapping(subj, dests)
        except MappingError as exc:
            p.error(mtk, prefix + str(exc))
            continue
        out.append((subj, dests))
    return tuple(out)


def _map_dest(p: _Processor, tk, v):
    """Go's parseAccountMapDest: a ``{destination, weight, cluster}`` map; None (after
    reporting the error) when it is not one."""
    if not isinstance(v, dict):
        p.error(tk, "Expected an entry for the mapping destination")
        return None
    subject = cluster = ""
    weight = None
    for k, raw in v.items():
        ktk, kv = _split(raw)
        key = k.lower()
        if key in ("dest", "destination"):
            subject = _str(ktk, kv)
        elif key == "weight":
            if isinstance(kv, str):
                ws = kv[:-1] if kv.endswith("%") else kv
                w = _mapping_atoi(ws) if ws == ws.strip(" ") else None
                if w is None:
                    p.error(ktk, f"Invalid weight {go_quote_str(ws)} for mapping destination")
                    return None
            elif isinstance(kv, int) and not isinstance(kv, bool):
                w = kv
            else:
                p.error(ktk, f"Unknown entry type for weight of {kv}\n")
                return None
            if w > 100 or w < 0:
                p.error(ktk, f"Invalid weight {w} for mapping destination")
                return None
            weight = w
        elif key == "cluster":
            cluster = _str(ktk, kv)
        else:
            p.error(ktk, f"Unknown field {go_quote_str(k)} for mapping destination")
            return None
    if weight is None:
        p.error(tk, f"Missing weight for mapping destination {go_quote_str(subject)}")
        return None
    return MapDest(subject, weight, cluster)


def _import_forms_cycle(configs: dict, kind: str, account: str, subject: str,
                        visited: set) -> bool:
    """Go: checkStreamImportsForCycles / checkServiceImportsForCycles. Messages on
    ``subject`` in ``account`` may themselves come from that account's imports; following
    them back must not reach an account already on the path, or the internal
    subscriptions would re-publish each other's messages forever."""
    from natsx.sublist import subjects_collide

    cfg = configs.get(account)
    if cfg is None:
        return False
    for imp in (cfg.stream_imports if kind == "stream" else cfg.service_imports):
        if kind == "stream":
            local = imp.to or (imp.prefix.rstrip(".") + "." + imp.subject if imp.prefix
                               else imp.subject)
        else:
            local = imp.to
        if not subjects_collide(subject.encode(), local.encode()):
            continue
        if imp.account in visited:
            return True
        if _import_forms_cycle(configs, kind, imp.account, imp.subject,
                               visited | {imp.account}):
            return True
    return False


def go_quote_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _import_authorized(exports: list, subject: str, importer: str) -> bool:
    """Go: checkStreamImportAuthorized / checkServiceImportAuthorized, for config imports:
    an export whose subject covers the imported one and that admits the importer."""
    from natsx.sublist import is_subset_match

    for exp in exports:
        if is_subset_match(subject.encode(), exp.subject.encode()):
            if exp.accounts is None or importer in exp.accounts:
                return True
    return False


def _account_exports(p: _Processor, cfg: AccountConfig, tk, v) -> None:
    if not isinstance(v, list):
        raise _Fail(tk, f"Exports should be an array, got {go_type_name(v)}")
    for entry in v:
        etk, ev = _split(entry)
        if not isinstance(ev, dict):
            p.error(etk, f"Export Items should be a map with type entry, got {go_type_name(ev)}")
            continue
        stream = service = ""
        accounts: frozenset | None = None
        rtype, rtype_tk, threshold, thresh_tk = "Singleton", None, 0.0, None
        latency, lat_tk = None, None
        for k, kraw in ev.items():
            ktk, kv = _split(kraw)
            key = k.lower()
            if key == "stream":
                stream = _str(ktk, kv)
            elif key == "service":
                service = _str(ktk, kv)
            elif key == "accounts":
                if not isinstance(kv, list):
                    raise _Fail(ktk, f"Expected accounts field to be an array, got "
                                     f"{go_type_name(kv)}")
                accounts = frozenset(_str(*_split(a)) for a in kv)
            elif key in ("response", "response_type"):
                if rtype_tk is not None:
                    p.error(ktk, "Duplicate response type definition")
                    continue
                rtype_tk = ktk or etk
                if not isinstance(kv, str):
                    p.error(ktk, f"Expected response type to be string, got {go_type_name(kv)}")
                    continue
                rtype = {"single": "Singleton", "singleton": "Singleton", "stream": "Streamed",
                         "chunk": "Chunked", "chunked": "Chunked"}.get(kv.lower(), "")
                if not rtype:
                    p.error(ktk, f"Unknown response type: {go_quote_str(kv)}")
                    rtype = "Singleton"
            elif key in ("threshold", "response_threshold", "response_max_time",
                         "response_time"):
                if thresh_tk is not None:
                    p.error(ktk, "Duplicate response threshold detected")
                    continue
                thresh_tk = ktk or etk
                if not isinstance(kv, str):
                    p.error(ktk, "Expected response threshold to be a parseable time duration, "
                                 f"got {go_type_name(kv)}")
                    continue
                try:
                    threshold = parse_go_duration(kv) / 1e9
                except ValueError:
                    p.error(ktk, "Expected response threshold to be a parseable time duration, "
                                 f"got {go_quote_str(kv)}")
            elif key == "latency":
                lat_tk = ktk or etk
                latency = _service_latency(p, lat_tk, kv)
            elif key in ("account_token_position", "allow_trace"):
                # Account token positions, message tracing: not yet.
                p.error(ktk, _not_yet(k, f"export {k}"))
            else:
                p.unknown(ktk, k)
        if stream and service:
            raise _Fail(etk, "Detected stream but already saw a service")
        if stream:
            for rtk in (rtype_tk, thresh_tk):
                if rtk is not None:
                    p.error(rtk, "Detected response directive on non-service")
            if lat_tk is not None and latency is not None:
                p.error(lat_tk, "Detected latency directive on non-service")
            cfg.stream_exports.append(Export(stream, accounts))
        elif service:
            if latency is not None:
                sampling, results = latency
                why = ""
                if not is_valid_publish_subject(results.encode()) or any(
                        _subset(results.encode(), s.encode())
                        for s in [e.subject for e in cfg.service_exports] + [service]):
                    why = "invalid publish subject"
                elif rtype != "Singleton":
                    why = "bad service response type"
                if why:
                    p.error(getattr(p, "accounts_tk", etk),
                            f"Error adding service latency sampling for "
                                 f"{go_quote_str(service)} on subject "
                                 f"{go_quote_str(results)}: {why}")
                    latency = None
            cfg.service_exports.append(Export(service, accounts, rtype, threshold, latency))
        else:
            raise _Fail(etk, "Expect a stream or service")


def _service_latency(p: _Processor, tk, v) -> tuple | None:
    """Go's parseServiceLatency: (sampling, results subject), None after an error."""
    from natsx.server.latency import DEFAULT_SAMPLING, ERR_BAD_SAMPLING

    if isinstance(v, str):
        return DEFAULT_SAMPLING, v
    if not isinstance(v, dict):
        p.error(tk, "Expected latency entry to be a map/struct or string, got "
                    f"{go_type_name(v)}")
        return None
    sampling = DEFAULT_SAMPLING
    if "sampling" in v:
        stk, sv = _split(v["sampling"])
        header = False
        if isinstance(sv, int) and not isinstance(sv, bool):
            sample = sv
        elif isinstance(sv, str):
            if sv.strip().lower() == "headers":
                header, sample = True, 0
            else:
                s = sv[:-1] if sv.endswith("%") else sv
                sample = _mapping_atoi(s)
                if sample is None:
                    p.error(stk, f"Failed to parse latency sample: strconv.Atoi: parsing "
                                 f"{go_quote_str(s)}: invalid syntax")
                    return None
        else:
            p.error(stk, "Expected latency sample to be a string or map/struct, got "
                         f"{go_type_name(sv)}")
            return None
        if not header and not 1 <= sample <= 100:
            p.error(stk, ERR_BAD_SAMPLING)
            return None
        sampling = sample
    if "subject" not in v:
        p.error(tk, "Latency subject required, but missing")
        return None
    sutk, subject = _split(v["subject"])
    if not isinstance(subject, str):
        # Go formats the still-empty string variable here, so the type is always string.
        p.error(sutk, "Expected latency subject to be a string, got string")
        return None
    return sampling, subject


def _account_import(p: _Processor, entry) -> tuple:
    """(kind, import, token) of one ``imports`` entry (Go: parseImportStreamOrService)."""
    etk, ev = _split(entry)
    if not isinstance(ev, dict):
        raise _Fail(etk, f"Import Items should be a map with type entry, got {go_type_name(ev)}")
    kind = ""
    account = subject = prefix = to = ""
    share = False
    trace_tk = None
    for k, kraw in ev.items():
        ktk, kv = _split(kraw)
        key = k.lower()
        if key in ("stream", "service"):
            if kind:
                other = "service" if key == "stream" else "stream"
                raise _Fail(ktk, f"Detected {key} but already saw a {other}")
            kind = key
            if not isinstance(kv, dict):
                raise _Fail(ktk, f"{key.capitalize()} entry should be an account map, got "
                                 f"{go_type_name(kv)}")
            for ik, iraw in kv.items():
                itk, iv = _split(iraw)
                if ik.lower() == "account":
                    account = _str(itk, iv)
                elif ik.lower() == "subject":
                    subject = _str(itk, iv)
            if not account or not subject:
                raise _Fail(ktk, "Expect an account name and a subject")
        elif key == "prefix":
            prefix = _str(ktk, kv)
        elif key == "to":
            to = _str(ktk, kv)
        elif key == "share":
            share = _bool(ktk, kv)
        elif key == "allow_trace":
            trace_tk = ktk
        else:
            p.unknown(ktk, k)
    if not kind:
        raise _Fail(etk, "Expect a stream or service")
    if trace_tk is not None:
        # Go: message tracing may cross stream imports only.
        if kind == "service":
            raise _Fail(trace_tk, "Detected allow_trace directive on a non-stream")
        p.error(trace_tk, _not_yet("allow_trace", "import allow_trace (message tracing)"))
    if kind == "stream":
        if prefix and to:
            raise _Fail(etk, "Stream import can not have a 'prefix' and a 'to' property")
        return kind, StreamImport(account, subject, prefix, to), etk
    return kind, ServiceImport(account, subject, to or subject, share), etk


def _connection_types(p: _Processor, tk, v) -> frozenset:
    if isinstance(v, str):
        names = [v]
    elif isinstance(v, list):
        names = []
        for item in v:
            itk, iv = _split(item)
            if not isinstance(iv, str):
                p.error(itk, "error parsing allowed connection types: unsupported type in "
                             f"array {go_type_name(iv)}")
                continue
            names.append(iv)
    else:
        raise _Fail(tk, f"error parsing allowed connection types: unsupported type "
                        f"{go_type_name(v)}")
    upper = [n.upper() for n in names]
    unknown = [n for n in upper if n not in CONNECTION_TYPES]
    if unknown:
        # Go: convertAllowedConnectionTypes, "%q" of the unknown names
        raise _Fail(tk, "invalid connection types [" + " ".join(f'"{n}"' for n in unknown) + "]")
    return frozenset(upper)


def _parse_permissions(p: _Processor, tk, v) -> Permissions:
    """opts.go parseUserPermissions."""
    if not isinstance(v, dict):
        raise _Fail(tk, f"Expected permissions to be a map/struct, got {v}")
    publish = subscribe = None
    response = None
    for k, raw in v.items():
        ktk, kv = _split(raw)
        name = k.lower()
        try:
            if name in ("pub", "publish", "import"):
                publish = _subject_permission(p, ktk, kv, allow_queue=False)
            elif name in ("sub", "subscribe", "export"):
                subscribe = _subject_permission(p, ktk, kv, allow_queue=True)
            elif name in ("publish_allow_responses", "allow_responses"):
                if isinstance(kv, bool):
                    response = ResponsePermission() if kv else None
                else:
                    response = _allow_responses(p, ktk, kv)
            elif not (ktk is not None and ktk.used_variable):
                p.error(ktk, f'Unknown field "{k}" parsing permissions')
        except _Fail as exc:
            p.error(exc.tk or ktk, exc.reason)
    perms = Permissions(publish, subscribe, response)
    return perms.effective()


def _subject_permission(p: _Processor, tk, v, *, allow_queue: bool) -> SubjectPermission | None:
    if isinstance(v, dict):
        if not v:
            return None
        allow: tuple | None = None
        deny: tuple = ()
        for k, raw in v.items():
            ktk, _kv = _split(raw)
            name = k.lower()
            try:
                if name == "allow":
                    allow = _perm_subjects(ktk, raw, allow_queue)
                elif name == "deny":
                    deny = _perm_subjects(ktk, raw, allow_queue)
                elif not (ktk is not None and ktk.used_variable):
                    p.error(ktk, f'Unknown field name "{k}" parsing subject permissions, '
                                 "only 'allow' or 'deny' are permitted")
            except _Fail as exc:
                p.error(exc.tk or ktk, exc.reason)
        return SubjectPermission(allow, deny)
    return SubjectPermission(_perm_subjects(tk, v, allow_queue), ())


def _perm_subjects(tk, raw, allow_queue: bool) -> tuple:
    rtk, v = _split(raw)
    tk = rtk or tk
    if isinstance(v, str):
        subjects = [v]
    elif isinstance(v, list):
        subjects = []
        for item in v:
            itk, iv = _split(item)
            if not isinstance(iv, str):
                raise _Fail(itk or tk, "Subject in permissions array cannot be cast to string")
            subjects.append(iv)
    else:
        raise _Fail(tk, "Expected subject permissions to be a subject, or array of subjects, "
                        f"got {go_type_name(v)}")
    try:
        check_subject_list(subjects, allow_queue)
    except ValueError as exc:
        raise _Fail(tk, str(exc)) from None
    return tuple(subjects)


def _allow_responses(p: _Processor, tk, v) -> ResponsePermission | None:
    if not isinstance(v, dict):
        raise _Fail(tk, "error parsing response permissions, expected a boolean or a map")
    max_msgs, expires = DEFAULT_RESPONSE_MAX_MSGS, DEFAULT_RESPONSE_EXPIRES
    for k, raw in v.items():
        ktk, kv = _split(raw)
        name = k.lower()
        if name in ("max", "max_msgs", "max_messages", "max_responses"):
            n = _int(ktk, kv)
            if n != 0:  # 0 keeps the default; a negative value means unlimited
                max_msgs = n
        elif name in ("expires", "expiration", "ttl"):
            if not isinstance(kv, str):
                raise _Fail(ktk, "error parsing expires, not a duration string")
            try:
                ttl = parse_go_duration(kv) / 1e9
            except ValueError as exc:
                raise _Fail(ktk, f"error parsing expires: {exc}") from None
            if ttl != 0:
                expires = ttl
        elif not (ktk is not None and ktk.used_variable):
            p.error(ktk, f'Unknown field "{k}" parsing permissions')
    return ResponsePermission(max_msgs, expires)


# ------------------------------------------------------------------ operator mode (Go: opts.go)

def _operators(p: _Processor, key, tk, v) -> None:
    from natsx.server.operator_config import parse_operators

    parse_operators(p, tk, v, _Fail)


def _trusted(p: _Processor, key, tk, v) -> None:
    from natsx.server.operator_config import parse_trusted

    parse_trusted(p, tk, v, _Fail)


def _resolver(p: _Processor, key, tk, v) -> None:
    from natsx.server.operator_config import parse_resolver

    parse_resolver(p, tk, v, _Fail)


def _resolver_preload(p: _Processor, key, tk, v) -> None:
    from natsx.server.operator_config import parse_preload

    parse_preload(p, tk, v, _Fail)


def _resolver_pinned(p: _Processor, key, tk, v) -> None:
    from natsx.server.operator_config import parse_pinned

    parse_pinned(p, tk, v, _Fail)


# ------------------------------------------------------------------ websocket (Go: parseWebsocket)

def _string_array(p: _Processor, field: str, tk, v) -> list[str]:
    """Go's parseStringArray."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        out = []
        for item in v:
            itk, iv = _split(item)
            if isinstance(iv, str):
                out.append(iv)
            else:
                p.error(itk or tk, f"error parsing {field}: unsupported type in array "
                                   f"{go_type_name(iv)}")
        return out
    raise _Fail(tk, f"error parsing {field}: unsupported type {go_type_name(v)}")


def _websocket(p: _Processor, key, tk, v) -> None:
    from natsx.server.options import WebsocketOpts

    if not isinstance(v, dict):
        raise _Fail(tk, f"Expected websocket to be a map, got {go_type_name(v)}")
    wo = p.values.get("websocket") or WebsocketOpts()
    for mk, mraw in v.items():
        mtk, mv = _split(mraw)
        name = mk.lower()
        try:
            if name == "listen":
                wo.host, wo.port = _parse_listen(mtk, mv)
            elif name == "port":
                wo.port = _int(mtk, mv)
            elif name in ("host", "net"):
                wo.host = _str(mtk, mv)
            elif name == "advertise":
                wo.advertise = _str(mtk, mv)
            elif name == "no_tls":
                wo.no_tls = _bool(mtk, mv)
            elif name == "tls":
                wo.tls = parse_tls_block(mtk, mv)
            elif name == "same_origin":
                wo.same_origin = _bool(mtk, mv)
            elif name in ("allowed_origins", "allowed_origin", "allow_origins", "allow_origin",
                          "origins", "origin"):
                wo.allowed_origins = _string_array(p, "allowed origins", mtk, mv)
            elif name == "handshake_timeout":
                if isinstance(mv, int) and not isinstance(mv, bool):
                    wo.handshake_timeout = float(mv)
                elif isinstance(mv, str):
                    try:
                        wo.handshake_timeout = parse_go_duration(mv) / 1e9
                    except ValueError as exc:
                        raise _Fail(mtk, str(exc)) from None
                else:
                    p.error(mtk, "error parsing handshake timeout: unsupported type "
                                 f"{go_type_name(mv)}")
                    wo.handshake_timeout = 0.0
            elif name in ("compress", "compression"):
                wo.compression = _bool(mtk, mv)
            elif name in ("authorization", "authentication"):
                _websocket_auth(p, wo, mtk, mv)
            elif name == "jwt_cookie":
                wo.jwt_cookie = _str(mtk, mv)
            elif name == "user_cookie":
                wo.user_cookie = _str(mtk, mv)
            elif name == "pass_cookie":
                wo.pass_cookie = _str(mtk, mv)
            elif name == "token_cookie":
                wo.token_cookie = _str(mtk, mv)
            elif name == "no_auth_user":
                wo.no_auth_user = _str(mtk, mv)
            elif name == "headers":
                if not isinstance(mv, dict):
                    raise _Fail(mtk, f"error parsing headers: unsupported type {go_type_name(mv)}")
                headers = {}
                for hk, hraw in mv.items():
                    htk, hv = _split(hraw)
                    if isinstance(hv, str):
                        headers[hk] = hv
                    else:
                        p.error(htk or mtk, f"error parsing header key {hk}: unsupported type "
                                            f"{go_type_name(hv)}")
                wo.headers = headers
            elif name == "ping_interval":
                wo.ping_interval = p.duration("ping_interval", mtk, mv)
            else:
                p.unknown(mtk, mk)
        except _Fail as exc:
            p.error(exc.tk or mtk, exc.reason)
    p.values["websocket"] = wo


def _websocket_auth(p: _Processor, wo, tk, v) -> None:
    """The websocket block's ``authorization`` (Go: parseSimpleAuth)."""
    am = _map(tk, v)
    wo.username = wo.password = wo.token = ""
    wo.auth_timeout = 0.0
    for k, raw in am.items():
        ktk, kv = _split(raw)
        name = k.lower()
        if name in ("user", "username"):
            wo.username = _str(ktk, kv)
        elif name in ("pass", "password"):
            wo.password = _str(ktk, kv)
        elif name == "token":
            wo.token = _str(ktk, kv)
        elif name == "timeout":
            wo.auth_timeout = float(kv) if isinstance(kv, (int, float)) and \
                not isinstance(kv, bool) else 1.0
        else:
            p.unknown(ktk, k)


# ------------------------------------------------------------------ tls (Go: parseTLS)

# Keys of Go's tls block for what this build does not have: refused by name.
_TLS_NOT_YET: dict[str, str] = {}


def _ocsp_peer(ktk, kv):
    """``ocsp_peer``: a boolean or Go's options map (ocsp_peer.go parseOCSPPeer)."""
    from natsx.server.ocsp_peer import OCSPPeerConfig

    if isinstance(kv, bool):
        return OCSPPeerConfig(verify=kv)
    if not isinstance(kv, dict):
        # Go's %T of the whole tls block here, not of the value.
        raise _Fail(ktk, "error parsing ocsp peer config: unsupported type "
                         "map[string]interface {}")
    f: dict[str, Any] = {}
    names = {"verify": "verify", "warn_only": "warn_only", "unknown_is_good": "unknown_is_good",
             "allow_when_ca_unreachable": "allow_when_ca_unreachable"}
    seconds = {"allowed_clockskew": "clock_skew", "ca_timeout": "timeout",
               "cache_ttl_when_next_update_unset": "ttl_unset_next_update"}
    for mk, raw in kv.items():
        tk, v = _split(raw)
        tk = tk or ktk
        key = mk.lower()
        unknown = f"error parsing tls peer config, unknown field [{go_quote_str(mk)}]"
        if key in names:
            if not isinstance(v, bool):
                raise _Fail(tk, unknown)
            f[names[key]] = v
        elif key in seconds:
            conversion = "error parsing tls peer config, conversion error: "
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise _Fail(tk, conversion + "unexpected type")
            if isinstance(v, str):
                try:
                    at = parse_go_duration(v) / 1e9
                except ValueError as exc:
                    # Go reports allowed_clockskew's bad duration as a type problem.
                    raise _Fail(tk, conversion + ("unexpected type" if key == "allowed_clockskew"
                                                  else str(exc))) from None
            else:
                at = float(v)
            if at >= 0:
                f[seconds[key]] = at
        else:
            raise _Fail(tk, unknown)
    return OCSPPeerConfig(**f)

# Go's certstore package (server/certstore) on a platform other than Windows: the stores
# exist only there, so naming one fails with these texts; the matching keys are parsed
# and, without a store, have no effect (as in Go).
_CERT_STORES = ("windowscurrentuser", "windowslocalmachine")
_CERT_MATCH_BY = ("issuer", "subject", "thumbprint")
_ERR_BAD_CERT_STORE_FIELD = "expected 'cert_store' to be a valid non-empty string"
_ERR_BAD_CERT_STORE = "cert store type not implemented"
_ERR_OS_NOT_COMPAT = "cert_store not compatible with current operating system"
_ERR_BAD_MATCH_BY_FIELD = "expected 'cert_match_by' to be a valid non-empty string"
_ERR_BAD_MATCH_BY = "cert match by type not implemented"
_ERR_BAD_MATCH_FIELD = "expected 'cert_match' to be a valid non-empty string"
_ERR_BAD_SKIP_INVALID_FIELD = "expected 'cert_match_skip_invalid' to be a boolean"


def _cert_store_key(key: str, ktk, kv) -> None:
    """``cert_store``, ``cert_match_by``, ``cert_match``, ``ca_certs_match`` and
    ``cert_match_skip_invalid`` as Go's parseTLS checks them on Linux."""
    if key == "cert_store":
        if not isinstance(kv, str) or not kv:
            raise _Fail(ktk, _ERR_BAD_CERT_STORE_FIELD)
        if kv.lower() not in _CERT_STORES:
            raise _Fail(ktk, _ERR_BAD_CERT_STORE)
        raise _Fail(ktk, _ERR_OS_NOT_COMPAT)
    if key == "cert_match_by":
        if not isinstance(kv, str) or not kv:
            raise _Fail(ktk, _ERR_BAD_MATCH_BY_FIELD)
        if kv.lower() not in _CERT_MATCH_BY:
            raise _Fail(ktk, _ERR_BAD_MATCH_BY)
    elif key == "cert_match":
        if not isinstance(kv, str) or not kv:
            raise _Fail(ktk, _ERR_BAD_MATCH_FIELD)
    elif key == "cert_match_skip_invalid":
        if not isinstance(kv, bool):
            raise _Fail(ktk, _ERR_BAD_SKIP_INVALID_FIELD)
    elif key == "ca_certs_match" and isinstance(kv, list):
        for item in kv:
            _itk, iv = _split(item)
            if not isinstance(iv, str):
                # Go names the type of the list element: its config token.
                raise _Fail(ktk, "error parsing ca_cert_match: unsupported type *conf.token "
                                 "where string is expected")


def _tls_certs(ktk, kv) -> tuple:
    """``certs``/``certificates``: a list of ``{cert_file, key_file}`` maps (Go: parseTLS)."""
    if not isinstance(kv, list):
        # Go's %T of the whole tls block here, not of the value.
        raise _Fail(ktk, "error parsing certificates config: unsupported type "
                         "map[string]interface {}")
    pairs = []
    for item in kv:
        itk, iv = _split(item)
        itk = itk or ktk
        if not isinstance(iv, dict):
            raise _Fail(itk, "error parsing certificates config: unsupported type "
                             + go_type_name(iv))
        cert = key = ""
        last = itk
        for name, raw in iv.items():
            ftk, fv = _split(raw)
            last = ftk or itk
            if not isinstance(fv, str):
                raise _Fail(last, "error parsing certificates config: unsupported type "
                                  + go_type_name(fv))
            if name == "cert_file":
                cert = fv
            elif name == "key_file":
                key = fv
            else:
                raise _Fail(last, "error parsing tls certs config, unknown field "
                                  + go_quote_str(name))
        if not cert or not key:
            raise _Fail(last, "error parsing certificates config: both 'cert_file' and "
                              "'cert_key' options are required")
        pairs.append((cert, key))
    return tuple(pairs)


def _tls_bool(tk, v, key: str) -> bool:
    if not isinstance(v, bool):
        raise _Fail(tk, f"error parsing tls config, expected '{key}' to be a boolean")
    return v


def _tls_file(tk, v, key: str) -> str:
    if not isinstance(v, str):
        raise _Fail(tk, f"error parsing tls config, expected '{key}' to be filename")
    return v


def _tls_names(tk, v, key: str, known, what: str) -> tuple:
    if not isinstance(v, list):
        raise _Fail(tk, f"interface conversion: interface {{}} is {go_type_name(v)}, "
                        "not []interface {}")
    if not v:
        raise _Fail(tk, f"error parsing tls config, '{key}' cannot be empty")
    out = []
    for item in v:
        itk, iv = _split(item)
        name = _str(itk or tk, iv)
        if name not in known:
            raise _Fail(itk or tk, f"unrecognized {what} {name}")
        out.append(name)
    return tuple(out)


def parse_tls_block(tk, v, *, client_ctx: bool = True):
    """A ``tls {}`` block as a natsx.server.tls.TLSConfigOpts (Go: parseTLS), its files
    loaded once to report Go's GenTLSConfig errors now. Reusable for the ``tls`` block of
    other listeners (``websocket { tls {} }``).

    Raises:
        _Fail: with Go's text and the offending key's position.
    """
    from natsx.server import tls as tlsmod

    block = _map(tk, v)
    f: dict[str, Any] = {}
    insecure_seen: list[str] = []
    allow_insecure = False
    for mk, raw in block.items():
        ktk, kv = _split(raw)
        ktk = ktk or tk
        key = mk.lower()
        if key in ("cert_file", "key_file", "ca_file"):
            f[key] = _tls_file(ktk, kv, key)
        elif key in ("insecure", "verify"):
            f[key] = _tls_bool(ktk, kv, key)
        elif key == "verify_and_map":
            if _tls_bool(ktk, kv, key):
                f["verify"] = True
            f["map"] = kv
        elif key == "verify_cert_and_check_known_urls":
            if _tls_bool(ktk, kv, key) and client_ctx:
                raise _Fail(ktk, "verify_cert_and_check_known_urls not supported in this context")
            if kv:
                raise _Fail(ktk, _not_yet(mk, "checking known URLs"))
        elif key == "allow_insecure_cipher_suites":
            allow_insecure = _tls_bool(ktk, kv, key)
        elif key == "cipher_suites":
            names = _tls_names(ktk, kv, key, {**tlsmod.GO_CIPHERS, **tlsmod.INSECURE_CIPHERS},
                               "cipher")
            insecure_seen = [n for n in names if n in tlsmod.INSECURE_CIPHERS]
            f["ciphers"] = names
        elif key == "curve_preferences":
            f["curve_preferences"] = _tls_names(ktk, kv, key, tlsmod.CURVES, "curve preference")
        elif key == "timeout":
            if isinstance(kv, bool) or not isinstance(kv, (int, float, str)):
                raise _Fail(ktk, "error parsing tls config, 'timeout' wrong type")
            if isinstance(kv, str):
                try:
                    f["timeout"] = parse_go_duration(kv) / 1e9
                except ValueError as exc:
                    raise _Fail(ktk, f"error parsing tls config, 'timeout' {exc}") from None
            else:
                f["timeout"] = float(kv)
        elif key == "pinned_certs":
            if not isinstance(kv, list):
                raise _Fail(ktk, "error parsing tls config, expected 'pinned_certs' to be a list "
                                 "of hex-encoded sha256 of DER encoded SubjectPublicKeyInfo")
            pins = set()
            for item in kv:
                itk, iv = _split(item)
                entry = _str(itk or ktk, iv).lower()
                if len(entry) != 64 or any(c not in "0123456789abcdef" for c in entry):
                    raise _Fail(itk or ktk, f"error parsing tls config, 'pinned_certs' key {entry} "
                                            "does not look like hex-encoded sha256 of DER "
                                            "encoded SubjectPublicKeyInfo")
                pins.add(entry)
            if pins:
                f["pinned_certs"] = frozenset(pins)
        elif key in ("handshake_first", "first", "immediate"):
            if isinstance(kv, bool):
                f["handshake_first"] = kv
            elif isinstance(kv, str):
                low = kv.lower()
                if low in ("true", "on"):
                    f["handshake_first"] = True
                elif low in ("false", "off"):
                    f["handshake_first"] = False
                elif low in ("auto", "auto_fallback"):
                    f["handshake_first"] = True
                    f["fallback_delay"] = tlsmod.HANDSHAKE_FIRST_FALLBACK
                else:
                    try:
                        f["fallback_delay"] = parse_go_duration(kv) / 1e9
                    except ValueError:
                        raise _Fail(ktk, f"field {go_quote_str(mk)}'s value "
                                         f"{go_quote_str(kv)} is invalid") from None
                    f["handshake_first"] = True
            else:
                raise _Fail(ktk, f"field {go_quote_str(mk)} should be a boolean or a string, "
                                 f"got {go_type_name(kv)}")
        elif key == "min_version":
            if not isinstance(kv, str):
                raise _Fail(ktk, f"error parsing tls config: 'min_version' wrong type: {kv}")
            if kv not in ("1.0", "1.1", "1.2", "1.3"):
                raise _Fail(ktk, f"error parsing tls config: unknown version: {kv}")
            if kv in ("1.0", "1.1"):
                raise _Fail(ktk, "error parsing tls config: unsupported TLS version: TLS "
                                 + kv)
            f["min_version"] = kv
        elif key == "connection_rate_limit":
            if isinstance(kv, bool) or not isinstance(kv, int):
                raise _Fail(ktk, "error parsing tls config, 'connection_rate_limit' wrong type")
            f["rate_limit"] = kv
        elif key in ("certs", "certificates"):
            f["certificates"] = _tls_certs(ktk, kv)
        elif key == "ocsp_peer":
            f["ocsp_peer"] = _ocsp_peer(ktk, kv)
        elif key in ("cert_store", "cert_match_by", "cert_match", "ca_certs_match",
                     "cert_match_skip_invalid"):
            _cert_store_key(key, ktk, kv)
        elif key in _TLS_NOT_YET:
            raise _Fail(ktk, _not_yet(mk, _TLS_NOT_YET[key]))
        else:
            raise _Fail(ktk, f"error parsing tls config, unknown field {go_quote_str(mk)}")
    if f.get("certificates") and f.get("cert_file"):
        raise _Fail(tk, "error parsing tls config, cannot combine 'cert_file' option with "
                        "'certs' option")
    if insecure_seen and not allow_insecure:
        raise _Fail(tk, "insecure cipher suites configured without "
                        "'allow_insecure_cipher_suites' option set: " + ", ".join(insecure_seen))
    opts = tlsmod.TLSConfigOpts(**f)
    try:
        tlsmod.server_context(opts)
    except tlsmod.TLSSetupError as exc:
        raise _Fail(tk, str(exc)) from None
    return attrs.evolve(opts, files_digest=tlsmod.files_digest(opts))


def _ocsp(p: _Processor, key, tk, v) -> None:
    """``ocsp``: a boolean (auto or never) or a map of ``mode`` and ``url``/``urls`` (Go:
    the "ocsp" case of processConfigFileLine, with its error texts)."""
    if isinstance(v, bool):
        p.values["ocsp"] = {"mode": "auto" if v else "never", "urls": []}
        return
    if not isinstance(v, dict):
        raise _Fail(tk, f"error parsing ocsp config: unsupported type {go_type_name(v)}")
    cfg = {"mode": "auto", "urls": []}
    for k, raw in v.items():
        ktk, kv = _split(raw)
        if k == "mode":
            mode = kv.lower() if isinstance(kv, str) else None
            if mode not in ("always", "must", "never", "auto"):
                # Go prints the mode's type (%T), not its value.
                raise _Fail(ktk, "error parsing ocsp config: unsupported ocsp mode string")
            cfg["mode"] = mode
        elif k == "urls":
            cfg["urls"] = [str(_split(u)[1]) for u in (kv or [])]
        elif k == "url":
            cfg["urls"] = [_str(ktk, kv)]
        else:
            raise _Fail(ktk, "error parsing ocsp config: unsupported field string")
    p.values["ocsp"] = cfg


def _resolver_tls(p: _Processor, key, tk, v) -> None:
    """``resolver_tls``: the TLS the URL account resolver connects with (Go: parseTLS in a
    client context, then GenTLSConfig with the CA file as the roots)."""
    from natsx.server import tls as tlsmod

    tc = parse_tls_block(tk, v, client_ctx=True)
    try:
        tlsmod.client_context(tc)
    except tlsmod.TLSSetupError as exc:
        raise _Fail(tk, str(exc)) from None
    p.values["resolver_tls"] = tc


def attach_resolver_tls(values: dict) -> None:
    """Gives a URL resolver (``resolver: URL(...)`` or the operator's account server URL)
    the ``resolver_tls`` settings (Go: configureResolver)."""
    tc = values.get("resolver_tls")
    res = values.get("resolver")
    if tc is not None and res is not None and getattr(res, "kind", "") == "URL":
        values["resolver"] = attrs.evolve(res, tls=tc)


def _tls(p: _Processor, key, tk, v) -> None:
    tc = parse_tls_block(tk, v)
    p.values.update(tls_config=tc, tls_timeout=tc.timeout, tls_map=tc.map,
                    tls_pinned_certs=tc.pinned_certs, tls_handshake_first=tc.handshake_first,
                    tls_handshake_first_fallback=tc.fallback_delay)


_TOP: dict[str, Callable] = {
    "listen": _listen,
    "client_advertise": _setter("client_advertise", _str),
    "port": _setter("port", _int),
    "server_name": _server_name,
    "host": _setter("host", _str),
    "net": _setter("host", _str),
    "debug": _setter("debug", _bool),
    "trace": _setter("trace", _bool),
    "trace_verbose": _trace_level,
    "trace_headers": _trace_level,
    "max_traced_msg_len": _setter("max_traced_msg_len", _int),
    "logtime": _setter("logtime", _bool),
    "logtime_utc": _setter("logtime_utc", _bool),
    "disable_sublist_cache": _setter("disable_sublist_cache", _bool),
    "no_sublist_cache": _setter("disable_sublist_cache", _bool),
    "authorization": _authorization,
    "http": _http,
    "http_port": _setter("http_port", _int),
    "monitor_port": _setter("http_port", _int),
    "http_base_path": _setter("http_base_path", _str),
    "logfile": _setter("log_file", _str),
    "log_file": _setter("log_file", _str),
    "logfile_size_limit": _setter("log_size_limit", _int),
    "log_size_limit": _setter("log_size_limit", _int),
    "logfile_max_num": _setter("log_max_num", _int),
    "log_max_num": _setter("log_max_num", _int),
    "syslog": _setter("syslog", _bool),
    "remote_syslog": _setter("remote_syslog", _str),
    "pidfile": _setter("pid_file", _str),
    "pid_file": _setter("pid_file", _str),
    "ports_file_dir": _setter("ports_file_dir", _str),
    "max_control_line": _int32("max_control_line"),
    "max_payload": _int32("max_payload"),
    "max_pending": _setter("max_pending", _int),
    "max_connections": _max_connections,
    "max_conn": _max_connections,
    "max_subscriptions": _setter("max_subscriptions", _int),
    "max_subs": _setter("max_subscriptions", _int),
    "max_sub_tokens": _max_sub_tokens,
    "max_subscription_tokens": _max_sub_tokens,
    "ping_interval": _duration_option("ping_interval", "ping_interval"),
    "ping_max": _setter("max_pings_out", _int),
    "write_deadline": _duration_option("write_deadline", "write_deadline"),
    "write_timeout": _write_timeout,
    "no_fast_producer_stall": _setter("no_fast_producer_stall", _bool),
    "lame_duck_duration": _lame_duck_duration,
    "lame_duck_grace_period": _lame_duck_grace_period,
    "no_auth_user": _setter("no_auth_user", _str),
    "accounts": lambda p, key, tk, v: _accounts(p, tk, v),
    "mappings": lambda p, key, tk, v: p.values.__setitem__(
        "mappings", (p.values.get("mappings") or ()) + _mappings(p, tk, v)),
    "maps": lambda p, key, tk, v: p.values.__setitem__(
        "mappings", (p.values.get("mappings") or ()) + _mappings(p, tk, v)),
    "system_account": _setter("system_account", _str),
    "system": _setter("system_account", _str),
    "no_system_account": _setter("no_system_account", _bool),
    "no_system": _setter("no_system_account", _bool),
    "no_sys_acc": _setter("no_system_account", _bool),
    "no_header_support": _setter("no_header_support", _bool),
    "max_closed_clients": _setter("max_closed_clients", _int),
    "server_tags": _server_tags,
    "jetstream": _jetstream,
    "websocket": _websocket,
    "ws": _websocket,
    "store_dir": _setter("store_dir", _str),
    "tls": _tls,
    "resolver_tls": _resolver_tls,
    "https": _https,
    "https_port": _setter("https_port", _int),
    "allow_non_tls": _setter("allow_non_tls", _bool),
    "ocsp": _ocsp,
    "storedir": _setter("store_dir", _str),
    **{k: _operators for k in ("operator", "operators", "roots", "root", "root_operators",
                               "root_operator")},
    "trusted": _trusted,
    "trusted_keys": _trusted,
    "resolver": _resolver,
    "account_resolver": _resolver,
    "accounts_resolver": _resolver,
    "resolver_preload": _resolver_preload,
    "default_sentinel": _setter("default_sentinel", _str),
    "resolver_pinned_accounts": _resolver_pinned,
}


# ------------------------------------------------------------------ entry points

def process_config_file(path: str) -> tuple[dict[str, Any], list[str], str]:
    """Reads ``path``; returns (Options fields it sets, warnings, digest).

    Raises:
        ConfigProcessError: the file cannot be read or parsed, or has errors.
    """
    try:
        tree = parse_file_with_positions(path)
    except ConfigError as exc:
        # Go prints the parser's own text, which already names the line.
        raise ConfigProcessError([exc.reason]) from None
    p = _Processor()
    p.run(tree)
    from natsx.server.operator_config import finish_operator_values

    finish_operator_values(p)
    attach_resolver_tls(p.values)
    if p.errors:
        raise ConfigProcessError(p.errors, p.warnings)
    return p.values, p.warnings, config_digest(tree)


def load_options(path: str, overrides: dict[str, Any] | None = None) -> tuple[Options, list[str]]:
    """Options from the config file with the command-line ``overrides`` on top.

    Returns the options and the warnings to print.

    Raises:
        ConfigProcessError: the config file has errors.
    """
    values, warnings, digest = process_config_file(path)
    opts = Options()
    for attr, value in values.items():
        setattr(opts, attr, value)
    overrides = dict(overrides or {})
    for attr, value in overrides.items():
        setattr(opts, attr, value)
    opts.config_file = path
    opts.config_digest = digest
    opts.cli_overrides = overrides
    if "auth_timeout" not in values:
        opts.auth_timeout = 0.0   # the default depends on TLS (Go: getDefaultAuthTimeout)
    apply_tls_flags(opts)
    apply_baseline(opts)
    from natsx.server.operator_config import expand_trusted_keys

    expand_trusted_keys(opts)
    return opts, warnings


_TLS_FLAGS = ("tls", "tls_verify", "tls_cert", "tls_key", "tls_ca_cert")


def apply_tls_flags(o: Options) -> None:
    """The ``--tls*`` flags over the config's ``tls`` block (Go: ConfigureOptions and
    overrideTLS): ``--tls=false`` disables TLS; any other of them replaces the block's
    certificate, key, CA and verification with the flags' (the block's timeout,
    verify_and_map and handshake_first stay).

    Raises:
        ConfigProcessError: with Go's text.
    """
    from natsx.server import tls as tlsmod

    given = [f for f in _TLS_FLAGS if f in o.cli_overrides]
    if not given:
        return
    if "tls" in given and not o.tls:
        o.tls_config = None
        return
    if not o.tls_cert:
        raise ConfigProcessError(["TLS Server certificate must be present and valid"])
    if not o.tls_key:
        raise ConfigProcessError(["TLS Server private key must be present and valid"])
    tc = tlsmod.TLSConfigOpts(cert_file=o.tls_cert, key_file=o.tls_key, ca_file=o.tls_ca_cert,
                              verify=o.tls_verify)
    try:
        tlsmod.server_context(tc)
    except tlsmod.TLSSetupError as exc:
        raise ConfigProcessError([str(exc)]) from None
    o.tls_config = attrs.evolve(tc, files_digest=tlsmod.files_digest(tc))


def apply_baseline(o: Options) -> None:
    """Go's setBaselineOptions and server defaults: a zero means the default."""
    if not o.host:
        o.host = defaults.DEFAULT_HOST
    if o.port == 0:
        o.port = defaults.DEFAULT_PORT
    if o.max_connections == 0:
        o.max_connections = defaults.MAX_CONNECTIONS
    if o.ping_interval == 0:
        o.ping_interval = defaults.PING_INTERVAL
    if o.max_pings_out == 0:
        o.max_pings_out = defaults.MAX_PINGS_OUT
    if o.tls_timeout == 0:
        o.tls_timeout = TLS_TIMEOUT
    if o.auth_timeout == 0:
        # Go: getDefaultAuthTimeout, the TLS timeout plus a second with TLS
        o.auth_timeout = o.tls_timeout + 1.0 if o.tls_config is not None else \
            defaults.AUTH_TIMEOUT
    if o.max_payload == 0:
        o.max_payload = defaults.MAX_PAYLOAD
    if o.max_pending == 0:
        o.max_pending = defaults.MAX_PENDING
    if o.max_control_line == 0:
        o.max_control_line = defaults.MAX_CONTROL_LINE
    if o.write_deadline == 0:
        o.write_deadline = defaults.WRITE_DEADLINE
    if o.lame_duck_duration == 0:
        o.lame_duck_duration = defaults.LAME_DUCK_DURATION
    if o.lame_duck_grace_period == 0:
        o.lame_duck_grace_period = defaults.LAME_DUCK_GRACE_PERIOD
    if o.max_closed_clients == 0:
        o.max_closed_clients = defaults.MAX_CLOSED_CLIENTS
    if o.websocket.port != 0 and not o.websocket.host:
        o.websocket.host = defaults.DEFAULT_HOST


def validate_options(o: Options) -> None:
    """Go's validateOptions, for the options natsx has (checked at startup and on reload).

    Raises:
        ConfigProcessError: with Go's message.
    """
    def fail(msg: str):
        raise ConfigProcessError([msg])

    if o.lame_duck_duration > 0 and o.lame_duck_grace_period >= o.lame_duck_duration:
        grace, duration = (go_duration_string(o.lame_duck_grace_period),
                           go_duration_string(o.lame_duck_duration))
        fail(f"lame duck grace period ({grace}) should be strictly lower than lame duck "
             f"duration ({duration})")
    if o.max_payload > o.max_pending:
        fail(f"max_payload ({o.max_payload}) cannot be higher than max_pending ({o.max_pending})")
    if o.server_name and " " in o.server_name:
        fail("server name cannot contain spaces")
    from natsx.server import tls as tlsmod

    msg = tlsmod.check_ocsp_stapling(o.ocsp, (o.tls_config, o.websocket.tls))
    if msg:
        fail(msg)
    for tc in (o.tls_config, o.websocket.tls):
        # Go: plugTLSOCSPPeer, when the server starts
        if getattr(tc, "ocsp_peer_verify", False) and not tc.verify:
            from natsx.server.ocsp_peer import MTLS_REQUIRED

            fail(MTLS_REQUIRED)
    from natsx.server.operator_config import validate_operator_options

    msg = validate_operator_options(o)
    if msg:
        fail(msg)
    for u in o.users or ():
        _validate_perms(u.permissions, f'invalid permissions for user "{u.username}"')
    for u in o.nkeys or ():
        _validate_perms(u.permissions, f'invalid permissions for nkey "{u.nkey}"')
    if o.no_auth_user:
        if o.users is None and o.nkeys is None:
            fail(f'no_auth_user: "{o.no_auth_user}" present, but users/nkeys are not defined')
        names = {u.username for u in o.users or ()} | {u.nkey for u in o.nkeys or ()}
        if o.no_auth_user not in names:
            fail(f'no_auth_user: "{o.no_auth_user}" not present as user or nkey in '
                 "authorization block or account configuration")
    msg = _validate_websocket(o)
    if msg:
        fail(msg)


def _validate_websocket(o: Options) -> str:
    """Go's validateWebsocketOptions: the error text, or ""."""
    from urllib.parse import urlsplit

    from natsx.server.websocket import host_and_port

    wo = o.websocket
    if wo.port == 0:
        return ""
    if wo.tls is None and not wo.no_tls:
        return "websocket requires TLS configuration"
    for origin in wo.allowed_origins:
        if not origin.startswith("/") and "://" not in origin:
            return f'unable to parse allowed origin: parse "{origin}": invalid URI for request'
        try:
            u = urlsplit(origin)
        except ValueError as exc:
            return f"unable to parse allowed origin: {exc}"
        if u.scheme not in ("http", "https"):
            return (f"unable to parse allowed origin {json.dumps(origin)}: allowed origins must "
                    "be absolute URLs with http or https scheme")
        if not u.netloc:
            return f"unable to parse allowed origin {json.dumps(origin)}: host is required"
        try:
            host_and_port(u.scheme == "https", u.netloc)
        except ValueError as exc:
            return f"unable to parse allowed origin: {exc}"
    if wo.no_auth_user:
        if o.users is None and o.nkeys is None:
            return f'no_auth_user: "{wo.no_auth_user}" present, but users/nkeys are not defined'
        names = {u.username for u in o.users or ()} | {u.nkey for u in o.nkeys or ()}
        if wo.no_auth_user not in names:
            return (f'no_auth_user: "{wo.no_auth_user}" not present as user or nkey in '
                    "authorization block or account configuration")
    if o.users or o.nkeys:
        if wo.username:
            return "websocket authentication username not compatible with presence of users/nkeys"
        if wo.token:
            return "websocket authentication token not compatible with presence of users/nkeys"
    if wo.jwt_cookie and getattr(o, "trusted_keys", None) is None:
        return ("trusted operators or trusted keys configuration is required for JWT "
                f"authentication via cookie {json.dumps(wo.jwt_cookie)}")
    for key in wo.headers:
        k = key.lower()
        if k in ("host", "content-length", "connection", "upgrade", "nats-no-masking"):
            return f"websocket: invalid header {json.dumps(key)} not allowed"
        if k.startswith("sec-websocket-"):
            return f'websocket: invalid header {json.dumps(key)}, "Sec-WebSocket-" prefix not allowed'
    return ""


def _validate_perms(perms: Permissions | None, what: str) -> None:
    if perms is None:
        return
    for label, sp, queue in (("publish", perms.publish, False),
                             ("subscribe", perms.subscribe, True)):
        if sp is None:
            continue
        for kind, entries in (("allow", sp.allow or ()), ("deny", sp.deny)):
            try:
                check_subject_list(entries, queue)
            except ValueError as exc:
                raise ConfigProcessError([f"{what}: {label} {kind}: {exc}"]) from None
