"""Operator (JWT) mode options: ``operator``, ``trusted``, ``resolver`` and its preloads.

Theory of operation
-------------------
The config keys of Go's processConfigFileLine for operator mode, parsed into ``Options``
fields with Go's error texts:

* ``operator`` (aliases ``operators``, ``root``...): a path to an operator JWT file
  (decorated or bare), or the JWT itself inline, or a list of them. One operator also
  supplies the system account and, through its ``account_server_url``, a URL resolver, when
  the config does not set them (finish_operator_values).
* ``trusted`` / ``trusted_keys``: operator public keys trusted directly, without JWTs.
* ``resolver``: ``MEMORY``, ``URL(<url>)`` or a ``{type: full|cache, dir, ...}`` block
  (natsx.auth.resolver.ResolverConfig).
* ``resolver_preload { <account key>: <account JWT> }`` and ``resolver_pinned_accounts``.
* ``default_sentinel``: a bearer user JWT standing in for the clients that connect
  without one (natsx.server.operator); ``validate_default_sentinel`` holds Go's checks.

``expand_trusted_keys`` is the expansion of validateTrustedOperators: each operator's key
(unless it asks for strict signing key usage) and its signing keys become trusted keys, so
``Options.trusted_keys`` not being None is what "operator mode" means everywhere else.
``validate_operator_options`` holds that function's checks, with Go's texts.
"""
from __future__ import annotations

import os
import re

from natsx.auth import jwt, nkeys
from natsx.auth.resolver import ResolverConfig
from natsx.config import Token, go_type_name
from natsx.config.values import parse_go_duration

JWT_PREFIX = "eyJ"
_MEM_RE = re.compile(r"(?i)(MEM|MEMORY)\s*")
_URL_RE = re.compile(r'(?i)(?:URL)(?:\(\s*"?([^\s"]*)"?\s*\))?\s*')


def _split(v):
    return (v, v.value) if isinstance(v, Token) else (None, v)


def read_operator_jwt(source: str) -> tuple[str, jwt.OperatorClaims]:
    """Go's readOperatorJWT: a file (decorated or bare JWT), or the JWT inline.

    Raises:
        OSError: not a readable file and not an inline JWT.
        jwt.JWTError: not an operator JWT.
    """
    try:
        with open(source, "rb") as f:
            contents = f.read().decode("utf-8", "replace")
    except OSError:
        if not source.startswith(JWT_PREFIX):
            raise
        contents = source
    token = jwt.parse_decorated_jwt(contents)
    return token, jwt.decode_operator_claims(token)


def _os_error_text(exc: OSError, name: str) -> str:
    # Go's *PathError: "open <name>: no such file or directory"
    reason = (exc.strerror or str(exc)).lower()
    return f"open {name}: {reason}"


def parse_operators(p, tk, v, fail) -> None:
    names: list[str] = []
    if isinstance(v, str):
        names = [v]
    elif isinstance(v, list):
        for item in v:
            itk, iv = _split(item)
            if not isinstance(iv, str):
                p.error(tk, "error parsing operators: unsupported type "
                            f"{go_type_name(iv)} where string is expected")
                break
            names.append(iv)
    else:
        raise fail(tk, f"error parsing operators: unsupported type {go_type_name(v)}")
    operators, tokens = [], []
    for name in names:
        try:
            token, claims = read_operator_jwt(name)
        except OSError as exc:
            p.error(tk, f"error parsing operator JWT: {_os_error_text(exc, name)}")
            continue
        except jwt.JWTError as exc:
            p.error(tk, f"error parsing operator JWT: {exc}")
            continue
        operators.append(claims)
        tokens.append(token)
    p.values["trusted_operators"] = operators
    p.values["operator_jwts"] = tokens


def parse_trusted(p, tk, v, fail) -> None:
    keys: list[str] = []
    if isinstance(v, str):
        keys = [v]
    elif isinstance(v, list):
        for item in v:
            itk, iv = _split(item)
            if not isinstance(iv, str):
                p.error(itk or tk, f"error parsing trusted: unsupported type in array "
                                   f"{go_type_name(iv)}")
                continue
            keys.append(iv)
    else:
        raise fail(tk, f"error parsing trusted: unsupported type {go_type_name(v)}")
    for key in keys:
        if not nkeys.is_valid_public_operator_key(key):
            p.error(tk, f'trust key "{key}" required to be a valid public operator nkey')
    p.values["trusted_keys"] = keys


def _duration(tk, v, fail) -> float:
    if not isinstance(v, str):
        raise fail(tk, f"interface conversion: interface {{}} is {go_type_name(v)}, not string")
    try:
        return parse_go_duration(v) / 1e9
    except ValueError as exc:
        raise fail(tk, str(exc)) from None


def parse_resolver(p, tk, v, fail) -> None:
    if isinstance(v, str):
        p.values["resolver"] = None
        if _MEM_RE.match(v):
            p.values["resolver"] = ResolverConfig("MEMORY")
        else:
            m = _URL_RE.match(v)
            if m and m.group(1):
                url = m.group(1)
                if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
                    raise fail(tk, f'error parsing account resolver url "{url}": missing scheme')
                p.values["resolver"] = ResolverConfig("URL", url=url)
    elif isinstance(v, dict):
        fields = {k.lower(): _split(x) for k, x in v.items()}

        def get(name, kind):
            if name not in fields:
                return None
            ftk, fv = fields[name]
            if not isinstance(fv, kind) or (kind is int and isinstance(fv, bool)):
                go = {str: "string", bool: "bool", int: "int64"}[kind]
                raise fail(ftk or tk, f"interface conversion: interface {{}} is "
                                      f"{go_type_name(fv)}, not {go}")
            return fv

        directory = get("dir", str) or ""
        kind = (get("type", str) or "").upper()
        allow_delete = bool(get("allow_delete", bool))
        hard = get("hard_delete", bool)
        limit = get("limit", int) or 0
        ttl = _duration(tk, fields["ttl"][1], fail) if "ttl" in fields else 0.0
        interval = _duration(tk, fields["interval"][1], fail) if "interval" in fields else 0.0
        timeout = _duration(tk, fields["timeout"][1], fail) if "timeout" in fields else 0.0

        def check_dir() -> None:
            if not directory:
                p.error(tk, "dir has no value and needs to point to a directory")
            elif os.path.exists(directory) and (not os.path.isdir(directory)
                                                or not os.stat(directory).st_mode & 0o200):
                p.error(tk, "dir needs to point to an accessible directory")

        cfg = None
        if kind == "CACHE":
            check_dir()
            if interval:
                p.error(tk, "CACHE does not accept sync")
            if allow_delete:
                p.error(tk, "CACHE does not accept allow_delete")
            if hard is not None:
                p.error(tk, "CACHE does not accept hard_delete")
            cfg = ResolverConfig("CACHE", dir=directory, limit=limit, ttl=ttl, timeout=timeout)
        elif kind == "FULL":
            check_dir()
            if ttl:
                p.error(tk, "FULL does not accept ttl")
            if hard is not None and not allow_delete:
                p.error(tk, "hard_delete has no effect without delete")
            cfg = ResolverConfig("FULL", dir=directory, allow_delete=allow_delete,
                                 hard_delete=bool(hard), limit=limit, interval=interval,
                                 timeout=timeout)
        elif kind in ("MEM", "MEMORY"):
            cfg = ResolverConfig("MEMORY")
        p.values["resolver"] = cfg
    else:
        raise fail(tk, f"error parsing operator resolver, wrong type {go_type_name(v)}")
    if p.values.get("resolver") is None:
        p.error(tk, "error parsing account resolver, should be MEM or  URL(\"url\") or a map "
                    "containing dir and type state=[FULL|CACHE])")


def parse_preload(p, tk, v, fail) -> None:
    if not isinstance(v, dict):
        raise fail(tk, "preload should be a map of account_public_key:account_jwt")
    preloads: dict[str, str] = {}
    for key, raw in v.items():
        vtk, val = _split(raw)
        if not isinstance(val, str):
            p.error(vtk or tk, "preload map value should be a string JWT")
            continue
        try:
            jwt.decode_account_claims(val)
        except jwt.JWTError:
            p.error(vtk or tk, "invalid account JWT")
            continue
        preloads[key] = val
    p.values["resolver_preload"] = preloads


def parse_pinned(p, tk, v, fail) -> None:
    if isinstance(v, str):
        p.values["resolver_pinned_accounts"] = frozenset((v,))
        return
    if not isinstance(v, list):
        raise fail(tk, "error parsing resolver_pinned_accounts: unsupported type "
                       f"{go_type_name(v)}")
    keys = set()
    for item in v:
        itk, iv = _split(item)
        if not isinstance(iv, str):
            p.error(itk or tk, "error parsing resolver_pinned_accounts: unsupported type in "
                               f"array {go_type_name(iv)}")
            continue
        keys.add(iv)
    p.values["resolver_pinned_accounts"] = frozenset(keys)


def finish_operator_values(p) -> None:
    """What one operator JWT supplies when the config does not: the system account and a
    URL resolver on its ``account_server_url`` (Go appends ``/accounts``, as nsc pushes)."""
    values = p.values
    operators = values.get("trusted_operators") or []
    if operators and values.get("trusted_keys"):
        p.errors.append("conflicting options for 'TrustedKeys' and 'TrustedOperators'")
        return
    if len(operators) != 1:
        return
    op = operators[0]
    if values.get("resolver") is None and op.account_server_url:
        url = op.account_server_url
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
            values["resolver"] = ResolverConfig("URL", url=url.rstrip("/") + "/accounts")
    if not values.get("system_account") and op.system_account:
        values["system_account"] = op.system_account


def expand_trusted_keys(o) -> None:
    """validateTrustedOperators' expansion of the operators into trusted keys."""
    if not o.trusted_operators:
        return
    keys: list[str] = []
    for op in o.trusted_operators:
        if not op.strict_signing_key_usage:
            keys.append(op.subject)
        keys.extend(op.signing_keys)
    o.trusted_keys = keys


def validate_operator_options(o) -> str | None:
    """validateTrustedOperators and configureResolver's checks; Go's text, or None."""
    if o.resolver_preload and o.resolver is not None and o.resolver.kind == "URL":
        return ("resolver preloads only available for writeable resolver types "
                "MEM/DIR/CACHE_DIR")
    sentinel = getattr(o, "default_sentinel", "")
    if not o.trusted_operators:
        # Go: without operators there is nothing to resolve the sentinel's account with.
        return "default sentinel requires operators and accounts" if sentinel else None
    if sentinel:
        msg = validate_default_sentinel(sentinel)
        if msg:
            return msg
    if o.resolver is None:
        return "operators require an account resolver to be configured"
    if o.accounts:
        return "operators do not allow Accounts to be configured directly"
    if o.users or o.nkeys:
        return "operators do not allow users to be configured directly"
    if o.system_account:
        found_non_empty = any(op.system_account for op in o.trusted_operators)
        found = any(op.system_account == o.system_account for op in o.trusted_operators)
        if found_non_empty and not found:
            return "system_account in config and operator JWT must be identical"
    elif not o.trusted_operators[0].system_account and o.resolver.is_dir:
        return ("using nats based account resolver - the system account needs to be "
                "specified in configuration or the operator jwt")
    for key in o.trusted_keys or ():
        if not nkeys.is_valid_public_operator_key(key):
            return f'trusted Keys "{key}" are required to be a valid public operator nkey'
    for key in o.resolver_pinned_accounts or ():
        if not nkeys.is_valid_public_account_key(key):
            return f'pinned account key "{key}" is not a valid public account nkey'
    return None


def validate_default_sentinel(token: str) -> str | None:
    """validateTrustedOperators' check of ``default_sentinel``: a user JWT that is a bearer
    token. A scoped user (an ``issuer_account`` and no permissions of its own) passes: its
    signing key's template decides at connect time, where a non-bearer one is refused."""
    try:
        juc = jwt.decode_user_claims(token)
    except jwt.JWTError:
        return "default sentinel JWT not valid"
    lim = juc.permission_limits
    if not lim.bearer_token and not (juc.issuer_account and lim.is_empty()):
        return "default sentinel must be a bearer token"
    return None
