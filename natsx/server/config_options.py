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
have yet (``tls``, ``cluster``, ``jetstream``...) is an error naming the feature — never
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
from natsx.server.options import Options

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
    "TLS": "tls allow_non_tls ocsp ocsp_cache",
    "HTTPS monitoring": "https https_port",
    "clustering": "cluster connect_error_reports reconnect_error_reports",
    "gateways": "gateway",
    "leaf nodes": "leaf leafnodes",
    "WebSocket": "websocket ws",
    "MQTT": "mqtt",
    "JetStream domains": "default_js_domain",
    "subject mappings": "mappings maps",
    "operator (JWT) mode": ("operator operators roots root root_operators root_operator resolver "
                            "account_resolver accounts_resolver resolver_tls resolver_preload "
                            "resolver_pinned_accounts trusted trusted_keys default_sentinel"),
    "disabling the system account": "no_system_account no_system no_sys_acc",
    "syslog": "syslog remote_syslog",
    "log file rotation": "logfile_size_limit log_size_limit logfile_max_num log_max_num",
    "profiling": "prof_port prof_block_rate",
    "trace length limits": "max_traced_msg_len",
    "proxies": "proxies proxy_protocol",
    "write timeout policies": "write_timeout",
    "fast producer stall control": "no_fast_producer_stall",
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


def _server_name(p: _Processor, key, tk, v) -> None:
    name = _str(tk, v)
    if " " in name:
        raise _Fail(tk, "server name cannot contain spaces")
    p.values["server_name"] = name


# Keys of Go's jetstream block (parseJetStream) that natsx does not apply yet: refused with a
# clear error rather than accepted and ignored.
_JS_NOT_YET = frozenset(("max_memory_store", "max_mem_store", "max_mem", "max_file_store",
                         "max_file", "sync_interval", "sync_always", "max_buffered_msgs",
                         "max_buffered_size", "max_outstanding_catchup", "max_ack_pending",
                         "request_queue_limit", "unique_tag", "cipher", "compress_ok",
                         "strict", "limits", "tpm", "extension_hint"))


def _jetstream(p: _Processor, key, tk, v) -> None:
    """``jetstream: true|"enabled"|{store_dir, ...}`` (Go: parseJetStream)."""
    if isinstance(v, bool):
        p.values["jetstream"] = v
        return
    if isinstance(v, str):
        low = v.lower()
        if low in ("enabled", "enable", "true", "yes", "on"):
            p.values["jetstream"] = True
        elif low in ("disabled", "disable", "false", "no", "off"):
            p.values["jetstream"] = False
        else:
            raise _Fail(tk, f"Expected 'enabled' or 'disabled' for string value, got '{v}'")
        return
    block = _map(tk, v)
    enabled = True
    for k, raw in block.items():
        ktk, kv = _split(raw)
        name = k.lower()
        if name in ("store", "store_dir", "storedir"):
            p.values["store_dir"] = _str(ktk, kv)
        elif name == "enabled":
            enabled = _bool(ktk, kv)
        elif name == "domain":
            p.error(ktk, "JetStream domains are not supported by this natsx build yet")
        elif name in _JS_NOT_YET:
            p.error(ktk, f'jetstream option "{k}" is not supported by this natsx build yet')
        else:
            p.error(ktk, f'Unknown field "{k}" parsing jetstream')
    p.values["jetstream"] = enabled


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
                elif key in ("default_permissions", "jetstream", "mappings", "maps", "limits",
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
            elif key in ("response", "response_type", "threshold", "response_threshold",
                         "latency", "account_token_position", "allow_trace"):
                # Response types other than Singleton, latency tracking: not yet.
                p.error(ktk, _not_yet(k, f"export {k}"))
            else:
                p.unknown(ktk, k)
        if stream and service:
            raise _Fail(etk, "Detected stream but already saw a service")
        if stream:
            cfg.stream_exports.append(Export(stream, accounts))
        elif service:
            cfg.service_exports.append(Export(service, accounts))
        else:
            raise _Fail(etk, "Expect a stream or service")


def _account_import(p: _Processor, entry) -> tuple:
    """(kind, import, token) of one ``imports`` entry (Go: parseImportStreamOrService)."""
    etk, ev = _split(entry)
    if not isinstance(ev, dict):
        raise _Fail(etk, f"Import Items should be a map with type entry, got {go_type_name(ev)}")
    kind = ""
    account = subject = prefix = to = ""
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
        elif key in ("share", "allow_trace"):
            p.error(ktk, _not_yet(k, f"import {k}"))
        else:
            p.unknown(ktk, k)
    if not kind:
        raise _Fail(etk, "Expect a stream or service")
    if kind == "stream":
        if prefix and to:
            raise _Fail(etk, "Stream import can not have a 'prefix' and a 'to' property")
        return kind, StreamImport(account, subject, prefix, to), etk
    return kind, ServiceImport(account, subject, to or subject), etk


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
    "lame_duck_duration": _lame_duck_duration,
    "lame_duck_grace_period": _lame_duck_grace_period,
    "no_auth_user": _setter("no_auth_user", _str),
    "accounts": lambda p, key, tk, v: _accounts(p, tk, v),
    "system_account": _setter("system_account", _str),
    "system": _setter("system_account", _str),
    "no_header_support": _setter("no_header_support", _bool),
    "max_closed_clients": _setter("max_closed_clients", _int),
    "server_tags": _server_tags,
    "jetstream": _jetstream,
    "store_dir": _setter("store_dir", _str),
    "storedir": _setter("store_dir", _str),
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
    apply_baseline(opts)
    return opts, warnings


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
    if o.auth_timeout == 0:
        o.auth_timeout = defaults.AUTH_TIMEOUT
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
