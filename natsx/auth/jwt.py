"""NATS JWTs: decode, verify, validate and encode operator, account, user and activation claims.

Theory of operation
-------------------
A NATS JWT is ``base64url(header) . base64url(claims) . base64url(signature)`` (raw URL-safe
base64, no padding). The header is ``{"typ":"JWT","alg":"ed25519-nkey"}`` (``"ed25519"`` in
version 1 tokens). The claims carry the registered fields at the top level (``iss``, ``sub``,
``iat``, ``exp``, ``nbf``, ``jti``, ``name``, ``aud``) and everything NATS-specific under
``"nats"``, including ``type`` and ``version``. The signature is Ed25519 by the issuer's nkey
over ``header.claims`` (over the claims segment alone in version 1 tokens).

This module mirrors github.com/nats-io/jwt/v2 as the Go server uses it:

- :func:`decode` checks the header, the signature and that the issuer's role may issue this
  type of claim (operator: O; account: O or A; user: A; activation: O or A). It does not look
  at the clock, as ``jwt.Decode`` does not.
- :func:`validate` is ``Claims.Validate``: it returns issues (errors, warnings, time checks)
  against a ``now`` the caller supplies. :func:`check` raises on the blocking ones.
- The trust chain the server walks (``isTrustedIssuer``, ``Account.hasIssuer``, scoped signing
  keys and their templates, revocations, ``checkActivation``) is in :func:`trusted_keys`,
  :func:`verify_account`, :func:`authorize_user`, :func:`expand_user_template` and
  :func:`check_activation`.
- :func:`encode` mints tokens in the shape the Go library writes, so nsc-issued and
  natsx-issued JWTs are interchangeable.

Claims are frozen attrs classes. Each field records its JSON name, its Go ``omitempty``
behaviour and the value an absent key decodes to; that value is Go's zero value, which is not
always the constructor default (a new ``UserClaims`` has ``subs=-1`` like ``NewUserClaims``,
but a token without ``subs`` decodes to 0, as in Go). Nothing here reads the clock except
:func:`encode` when it is not given ``issued_at`` (Go stamps ``iat`` at encode time too).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import ipaddress
import itertools
import json
import re
import time
import urllib.parse
import zoneinfo
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, ClassVar, Union

import attrs

from natsx.auth import nkeys

__all__ = [
    "NO_LIMIT", "ALL", "ALGORITHM_NKEY", "ALGORITHM_NKEY_V1", "EXPORT_TYPES", "RESPONSE_TYPES",
    "USER_SCOPE_KIND", "MAX_TEMPLATE_EXPANSIONS", "JWTError", "DecodeError",
    "SignatureError", "IssuerError", "ExpiredError", "NotYetValidError", "RevokedError",
    "ValidationError", "TemplateError", "CredsError", "Permission", "ResponsePermission",
    "Permissions", "TimeRange", "UserPermissionLimits", "JetStreamLimits", "OperatorLimits",
    "ServiceLatency", "Export", "Import", "WeightedMapping", "ExternalAuthorization", "MsgTrace",
    "UserScope", "OperatorClaims", "AccountClaims", "UserClaims", "ActivationClaims", "Claims",
    "ValidationIssue", "decode", "decode_operator_claims", "decode_account_claims",
    "decode_user_claims", "decode_activation_claims", "encode", "validate", "is_blocking", "check",
    "is_revoked", "is_valid_subject", "trusted_keys", "verify_account", "account_signers",
    "authorize_user", "expand_user_template", "check_activation", "validate_src", "validate_times",
    "parse_decorated_jwt", "parse_decorated_seed", "parse_creds", "decorate_jwt", "decorate_seed",
    "format_user_creds", "decode_generic",
]

#: A limit of -1 means unlimited (jwt.NoLimit).
NO_LIMIT = -1
#: Revocation entry that revokes every key issued at or before its time (jwt.All).
ALL = "*"
ALGORITHM_NKEY = "ed25519-nkey"
ALGORITHM_NKEY_V1 = "ed25519"
_LIB_VERSION = 2

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class JWTError(ValueError):
    """A JWT could not be used."""


class DecodeError(JWTError):
    """Not a NATS JWT: bad segments, header, base64, JSON, claim type or version."""


class SignatureError(JWTError):
    """The signature does not verify with the issuer's key."""


class IssuerError(JWTError):
    """The issuer may not issue this claim, or is not trusted by whoever must accept it."""


class ExpiredError(JWTError):
    """The claim (or the account behind it) has expired."""


class NotYetValidError(JWTError):
    """The claim's ``nbf`` is in the future."""


class RevokedError(JWTError):
    """The account or export revoked this key at or after the claim was issued."""


class ValidationError(JWTError):
    """The claim has blocking validation errors; ``issues`` lists all of them."""

    def __init__(self, issues: Iterable[ValidationIssue]):
        self.issues = tuple(issues)
        super().__init__("; ".join(i.description for i in self.issues if i.blocking or i.time_check))


class TemplateError(JWTError):
    """A scoped signing key template did not expand (unknown function, bad subject, too big)."""


class CredsError(JWTError):
    """A .creds (decorated) file holds no usable JWT or seed."""


# ---------------------------------------------------------------------------
# Field codec: JSON name, Go omitempty, and Go zero value for absent keys
# ---------------------------------------------------------------------------

_CODEC = "natsx.jwt"


def _typename(v: Any) -> str:
    return type(v).__name__


def _dec_str(v: Any) -> str:
    if not isinstance(v, str):
        raise DecodeError(f"expected a string, got {_typename(v)}")
    return v


def _dec_int(v: Any) -> int:
    # Go rejects floats (even 1.0) and booleans for integer fields.
    if isinstance(v, bool) or not isinstance(v, int):
        raise DecodeError(f"expected an integer, got {_typename(v)}")
    return v


def _dec_uint(v: Any) -> int:
    v = _dec_int(v)
    if v < 0:
        raise DecodeError("expected an unsigned integer")
    return v


def _dec_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise DecodeError(f"expected a boolean, got {_typename(v)}")
    return v


def _dec_list(v: Any) -> list:
    if not isinstance(v, list):
        raise DecodeError(f"expected a list, got {_typename(v)}")
    return v


def _dec_strs(v: Any) -> tuple[str, ...]:
    return tuple(_dec_str(x) for x in _dec_list(v))


def _dec_dict(v: Any) -> dict:
    if not isinstance(v, dict):
        raise DecodeError(f"expected an object, got {_typename(v)}")
    return v


def _dec_cidrs(v: Any) -> tuple[str, ...]:
    # CIDRList accepts a JSON list or a comma separated string (jwt types.go UnmarshalJSON).
    if isinstance(v, str):
        out: list[str] = []
        for part in v.lower().split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
        return tuple(out)
    return _dec_strs(v)


def _dec_revocations(v: Any) -> dict[str, int]:
    return {_dec_str(k): _dec_int(t) for k, t in _dec_dict(v).items()}


def _field(
    key: str,
    default: Any,
    *,
    dec: Callable[[Any], Any] | None = None,
    enc: Callable[[Any], Any] | None = None,
    zero: Any = attrs.NOTHING,
    omitempty: bool = True,
    inline: type | None = None,
    top: bool = False,
) -> Any:
    """An attrs field that knows its JSON spelling.

    ``zero`` is a callable giving the value of an absent key (Go's zero value); it defaults to
    the constructor default. ``inline`` marks a Go embedded struct: its fields are read from
    and written to the enclosing JSON object.
    """
    if zero is attrs.NOTHING:
        zero = default.factory if isinstance(default, attrs.Factory) else (lambda d=default: d)
    meta = {
        "key": key,
        "dec": dec,
        "enc": enc,
        "zero": zero,
        "omitempty": omitempty,
        "inline": inline,
        "top": top,
    }
    return attrs.field(default=default, metadata={_CODEC: meta})


def _str(key: str, *, top: bool = False, omitempty: bool = True) -> Any:
    return _field(key, "", dec=_dec_str, top=top, omitempty=omitempty)


def _int(key: str, default: int = 0, *, top: bool = False, unsigned: bool = False) -> Any:
    return _field(key, default, dec=_dec_uint if unsigned else _dec_int, zero=lambda: 0, top=top)


def _bool(key: str, default: bool = False) -> Any:
    return _field(key, default, dec=_dec_bool, zero=lambda: False)


def _strs(key: str, *, dec: Callable[[Any], Any] = _dec_strs) -> Any:
    return _field(key, (), dec=dec, enc=list)


def _obj(key: str, cls: type, *, optional: bool = False) -> Any:
    if optional:
        return _field(key, None, dec=lambda v: _from_json(cls, v), enc=_to_json)
    return _field(
        key,
        attrs.Factory(cls),
        dec=lambda v: _from_json(cls, v),
        enc=_to_json,
        zero=lambda: _from_json(cls, {}),
        omitempty=False,  # Go's omitempty never omits a non-pointer struct
    )


def _objs(key: str, cls: type) -> Any:
    return _field(
        key,
        (),
        dec=lambda v: tuple(_from_json(cls, x) for x in _dec_list(v)),
        enc=lambda v: [_to_json(x) for x in v],
    )


def _inline(cls: type) -> Any:
    return _field("", attrs.Factory(cls), inline=cls, zero=lambda: _from_json(cls, {}))


def _sorted_map(enc_value: Callable[[Any], Any]) -> Callable[[Mapping], dict]:
    # Go's encoding/json writes map keys sorted.
    return lambda m: {k: enc_value(m[k]) for k in sorted(m)}


def _is_empty(v: Any) -> bool:
    """Go's omitempty test; structs (attrs instances) are never empty."""
    if v is None or isinstance(v, bool):
        return not v
    if isinstance(v, (int, str, tuple, list, dict)):
        return not v
    return False


def _codec_fields(cls: type) -> Iterable[tuple[attrs.Attribute, dict]]:
    for f in attrs.fields(cls):
        meta = f.metadata.get(_CODEC)
        if meta is not None:
            yield f, meta


def _decode_fields(cls: type, d: Mapping[str, Any], *, top: bool | None = None) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for f, meta in _codec_fields(cls):
        if top is not None and meta["top"] != top:
            continue
        if meta["inline"] is not None:
            kw[f.name] = _from_json(meta["inline"], d)
            continue
        v = d.get(meta["key"])
        if v is None:  # absent, or JSON null (which Go leaves at the zero value)
            kw[f.name] = meta["zero"]()
        else:
            kw[f.name] = meta["dec"](v) if meta["dec"] else v
    return kw


def _from_json(cls: type, d: Any) -> Any:
    """Decode the JSON object ``d`` into ``cls``, or raise DecodeError."""
    kw = _decode_fields(cls, _dec_dict(d))
    return cls(**kw)


def _encode_fields(obj: Any, out: dict[str, Any], *, top: bool | None = None) -> dict[str, Any]:
    for f, meta in _codec_fields(type(obj)):
        if top is not None and meta["top"] != top:
            continue
        v = getattr(obj, f.name)
        if meta["inline"] is not None:
            _encode_fields(v, out)
        elif not (meta["omitempty"] and _is_empty(v)):
            out[meta["key"]] = meta["enc"](v) if meta["enc"] else v
    return out


def _to_json(obj: Any) -> dict[str, Any]:
    return _encode_fields(obj, {})


def _go_json(obj: Any) -> str:
    """JSON as Go's encoding/json writes it: compact, UTF-8, HTML-escaped."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    # These characters only occur inside strings, so replacing them textually is safe.
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, esc)
    return s


# ---------------------------------------------------------------------------
# Subjects (jwt types.go Subject, and the server's IsValidSubject)
# ---------------------------------------------------------------------------


def _subject_issues(subject: str, vr: _Results) -> None:
    if subject == "":
        vr.error("subject cannot be empty")
        return
    if " " in subject:
        vr.error(f"subject {subject!r} cannot have spaces")
    if subject[0] == "." or subject[-1] == ".":
        vr.error(f"subject {subject!r} cannot start or end with a `.`")
    if ".." in subject:
        vr.error(f"subject {subject!r} cannot contain consecutive `.`")


def _has_wildcards(subject: str) -> bool:
    return (
        subject.endswith(".>")
        or ".*." in subject
        or subject.endswith(".*")
        or subject.startswith("*.")
        or subject in ("*", ">")
    )


def _is_contained_in(subject: str, other: str) -> bool:
    mine, theirs = subject.split("."), other.split(".")
    if len(mine) > len(theirs) and theirs[-1] != ">":
        return False
    if len(mine) < len(theirs):
        return False
    for i, tok in enumerate(theirs):
        if i == len(theirs) - 1 and tok == ">":
            return True
        if tok != mine[i] and tok != "*":
            return False
    return True


def is_valid_subject(subject: str) -> bool:
    """The server's IsValidSubject: non-empty tokens, no whitespace, ``>`` only last."""
    if subject == "":
        return False
    full_wildcard_seen = False
    for tok in subject.split("."):
        if tok == "" or full_wildcard_seen:
            return False
        if len(tok) > 1:
            if any(c in tok for c in " \t\n\r\f"):
                return False
            continue
        if tok == ">":
            full_wildcard_seen = True
        elif tok in " \t\n\r\f":
            return False
    return True


# ---------------------------------------------------------------------------
# Permissions and limits
# ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Permission:
    """Allow and deny subject lists (a sub entry may be ``"subject queue"``)."""

    allow: tuple[str, ...] = _strs("allow")
    deny: tuple[str, ...] = _strs("deny")

    def is_empty(self) -> bool:
        return not self.allow and not self.deny


@attrs.frozen(kw_only=True)
class ResponsePermission:
    """``resp``: publish ``max_msgs`` replies per request received, within ``expires`` ns."""

    max_msgs: int = _field("max", 0, dec=_dec_int, omitempty=False)
    expires: int = _field("ttl", 0, dec=_dec_int, omitempty=False)


@attrs.frozen(kw_only=True)
class Permissions:
    pub: Permission = _obj("pub", Permission)
    sub: Permission = _obj("sub", Permission)
    resp: ResponsePermission | None = _obj("resp", ResponsePermission, optional=True)


@attrs.frozen(kw_only=True)
class TimeRange:
    """A daily window ``"HH:MM:SS"`` to ``"HH:MM:SS"``; it may cross midnight."""

    start: str = _str("start")
    end: str = _str("end")


@attrs.frozen(kw_only=True)
class UserPermissionLimits:
    """What a user JWT (or a scoped signing key's template) grants and limits.

    The constructor defaults are ``NewUserClaims``'s (subs/data/payload unlimited);
    :meth:`empty` is the zero value that scoped users must carry.
    """

    pub: Permission = _obj("pub", Permission)
    sub: Permission = _obj("sub", Permission)
    resp: ResponsePermission | None = _obj("resp", ResponsePermission, optional=True)
    src: tuple[str, ...] = _strs("src", dec=_dec_cidrs)
    times: tuple[TimeRange, ...] = _objs("times", TimeRange)
    times_location: str = _str("times_location")
    subs: int = _int("subs", NO_LIMIT)
    data: int = _int("data", NO_LIMIT)
    payload: int = _int("payload", NO_LIMIT)
    bearer_token: bool = _bool("bearer_token")
    proxy_required: bool = _bool("proxy_required")
    allowed_connection_types: tuple[str, ...] = _strs("allowed_connection_types")

    @classmethod
    def empty(cls) -> UserPermissionLimits:
        return cls(subs=0, data=0, payload=0)

    def is_empty(self) -> bool:
        """Go's HasEmptyPermissions: equal to the zero value."""
        return self == UserPermissionLimits.empty()

    @property
    def permissions(self) -> Permissions:
        return Permissions(pub=self.pub, sub=self.sub, resp=self.resp)


@attrs.frozen(kw_only=True)
class JetStreamLimits:
    """JetStream limits of an account or of one tier; 0 storage on both means disabled."""

    mem_storage: int = _int("mem_storage")
    disk_storage: int = _int("disk_storage")
    streams: int = _int("streams")
    consumer: int = _int("consumer")
    max_ack_pending: int = _int("max_ack_pending")
    mem_max_stream_bytes: int = _int("mem_max_stream_bytes")
    disk_max_stream_bytes: int = _int("disk_max_stream_bytes")
    max_bytes_required: bool = _bool("max_bytes_required")

    def is_enabled(self) -> bool:
        return self.mem_storage != 0 or self.disk_storage != 0


@attrs.frozen(kw_only=True)
class OperatorLimits:
    """An account's ``limits``; constructor defaults are ``NewAccountClaims``'s."""

    subs: int = _int("subs", NO_LIMIT)
    data: int = _int("data", NO_LIMIT)
    payload: int = _int("payload", NO_LIMIT)
    imports: int = _int("imports", NO_LIMIT)
    exports: int = _int("exports", NO_LIMIT)
    wildcards: bool = _bool("wildcards", True)
    disallow_bearer: bool = _bool("disallow_bearer")
    conn: int = _int("conn", NO_LIMIT)
    leaf: int = _int("leaf", NO_LIMIT)
    jetstream: JetStreamLimits = _inline(JetStreamLimits)
    tiered_limits: dict[str, JetStreamLimits] = _field(
        "tiered_limits",
        attrs.Factory(dict),
        dec=lambda v: {_dec_str(k): _from_json(JetStreamLimits, t) for k, t in _dec_dict(v).items()},
        enc=_sorted_map(_to_json),
    )

    def is_empty(self) -> bool:
        return self == _from_json(OperatorLimits, {})

    def is_js_enabled(self) -> bool:
        if self.tiered_limits:
            return any(t.is_enabled() for t in self.tiered_limits.values())
        return self.jetstream.is_enabled()


# ---------------------------------------------------------------------------
# Exports, imports, mappings, scoped signing keys
# ---------------------------------------------------------------------------

EXPORT_TYPES = ("stream", "service")
RESPONSE_TYPES = ("Singleton", "Stream", "Chunked")


def _dec_export_type(v: Any) -> str:
    v = _dec_str(v)
    if v not in EXPORT_TYPES:
        raise DecodeError(f"unknown export type {v!r}")
    return v


@attrs.frozen(kw_only=True)
class ServiceLatency:
    sampling: int = _int("sampling")
    results: str = _str("results", omitempty=False)


@attrs.frozen(kw_only=True)
class Export:
    name: str = _str("name")
    subject: str = _str("subject")
    type: str = _field("type", "", dec=_dec_export_type)
    token_req: bool = _bool("token_req")
    revocations: dict[str, int] = _field(
        "revocations", attrs.Factory(dict), dec=_dec_revocations, enc=_sorted_map(lambda t: t)
    )
    response_type: str = _str("response_type")
    response_threshold: int = _int("response_threshold")  # nanoseconds
    service_latency: ServiceLatency | None = _obj("service_latency", ServiceLatency, optional=True)
    account_token_position: int = _int("account_token_position", unsigned=True)
    advertise: bool = _bool("advertise")
    allow_trace: bool = _bool("allow_trace")
    description: str = _str("description")
    info_url: str = _str("info_url")

    def is_revoked(self, pubkey: str, issued_at: int) -> bool:
        """Whether an activation for ``pubkey`` issued at ``issued_at`` was revoked."""
        return is_revoked(self.revocations, pubkey, issued_at)


@attrs.frozen(kw_only=True)
class Import:
    name: str = _str("name")
    subject: str = _str("subject")
    account: str = _str("account")
    token: str = _str("token")
    to: str = _str("to")
    local_subject: str = _str("local_subject")
    type: str = _field("type", "", dec=_dec_export_type)
    share: bool = _bool("share")
    allow_trace: bool = _bool("allow_trace")


@attrs.frozen(kw_only=True)
class WeightedMapping:
    subject: str = _str("subject", omitempty=False)
    weight: int = _int("weight", unsigned=True)
    cluster: str = _str("cluster")

    def effective_weight(self) -> int:
        return 100 if self.weight == 0 else self.weight


def _dec_mappings(v: Any) -> dict[str, tuple[WeightedMapping, ...]]:
    return {
        _dec_str(k): tuple(_from_json(WeightedMapping, x) for x in _dec_list(ms))
        for k, ms in _dec_dict(v).items()
    }


@attrs.frozen(kw_only=True)
class ExternalAuthorization:
    """An account's ``authorization`` (auth callout): users that bypass it, target accounts."""

    auth_users: tuple[str, ...] = _strs("auth_users")
    allowed_accounts: tuple[str, ...] = _strs("allowed_accounts")
    xkey: str = _str("xkey")

    def is_enabled(self) -> bool:
        return bool(self.auth_users)


@attrs.frozen(kw_only=True)
class MsgTrace:
    dest: str = _str("dest")
    sampling: int = _int("sampling")


USER_SCOPE_KIND = "user_scope"


@attrs.frozen(kw_only=True)
class UserScope:
    """A scoped signing key: users it signs get ``template`` instead of their own permissions."""

    kind: str = _field("kind", USER_SCOPE_KIND, dec=_dec_str, omitempty=False)
    key: str = _str("key", omitempty=False)
    role: str = _str("role", omitempty=False)
    template: UserPermissionLimits = _obj("template", UserPermissionLimits)
    description: str = _str("description")


def _dec_signing_keys(v: Any) -> dict[str, UserScope | None]:
    out: dict[str, UserScope | None] = {}
    for item in _dec_list(v):
        if isinstance(item, str):
            out[item] = None
        elif isinstance(item, dict):
            if item.get("kind") != USER_SCOPE_KIND:
                raise DecodeError(f"unknown signing key scope {item.get('kind')!r}")
            # NewUserScope starts the template unlimited; absent limits stay -1.
            given = item.get("template")
            template = {"subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT, **({} if given is None else _dec_dict(given))}
            scope = _from_json(UserScope, {**item, "template": template})
            out[scope.key] = scope
        else:
            raise DecodeError("signing key must be a string or a scope")
    return out


def _enc_signing_keys(keys: Mapping[str, UserScope | None]) -> list:
    return [k if scope is None else _to_json(scope) for k, scope in keys.items()]


# ---------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _ClaimsData:
    """Registered claims (top level, in Go's field order) plus GenericFields tags/version."""

    CLAIM_TYPE: ClassVar[str] = ""
    ISSUER_PREFIXES: ClassVar[tuple[int, ...]] = ()
    SUBJECT_PREFIX: ClassVar[int] = -1

    audience: str = _str("aud", top=True)
    expires: int = _int("exp", top=True)
    id: str = _str("jti", top=True)
    issued_at: int = _int("iat", top=True)
    issuer: str = _str("iss", top=True)
    name: str = _str("name", top=True)
    not_before: int = _int("nbf", top=True)
    subject: str = _str("sub", top=True)
    tags: tuple[str, ...] = _strs("tags")
    version: int = _int("version", _LIB_VERSION)

    @property
    def claim_type(self) -> str:
        return self.CLAIM_TYPE

    def is_self_signed(self) -> bool:
        return self.issuer == self.subject


@attrs.frozen(kw_only=True)
class OperatorClaims(_ClaimsData):
    CLAIM_TYPE: ClassVar[str] = "operator"
    ISSUER_PREFIXES: ClassVar[tuple[int, ...]] = (nkeys.PREFIX_BYTE_OPERATOR,)
    SUBJECT_PREFIX: ClassVar[int] = nkeys.PREFIX_BYTE_OPERATOR

    signing_keys: tuple[str, ...] = _strs("signing_keys")
    account_server_url: str = _str("account_server_url")
    operator_service_urls: tuple[str, ...] = _strs("operator_service_urls")
    system_account: str = _str("system_account")
    assert_server_version: str = _str("assert_server_version")
    strict_signing_key_usage: bool = _bool("strict_signing_key_usage")

    def did_sign(self, claims: Claims) -> bool:
        """Whether ``claims`` were issued by this operator or one of its signing keys."""
        return claims.issuer == self.subject or claims.issuer in self.signing_keys


@attrs.frozen(kw_only=True)
class AccountClaims(_ClaimsData):
    CLAIM_TYPE: ClassVar[str] = "account"
    ISSUER_PREFIXES: ClassVar[tuple[int, ...]] = (nkeys.PREFIX_BYTE_ACCOUNT, nkeys.PREFIX_BYTE_OPERATOR)
    SUBJECT_PREFIX: ClassVar[int] = nkeys.PREFIX_BYTE_ACCOUNT

    imports: tuple[Import, ...] = _objs("imports", Import)
    exports: tuple[Export, ...] = _objs("exports", Export)
    limits: OperatorLimits = _obj("limits", OperatorLimits)
    signing_keys: dict[str, UserScope | None] = _field(
        "signing_keys", attrs.Factory(dict), dec=_dec_signing_keys, enc=_enc_signing_keys
    )
    revocations: dict[str, int] = _field(
        "revocations", attrs.Factory(dict), dec=_dec_revocations, enc=_sorted_map(lambda t: t)
    )
    default_permissions: Permissions = _obj("default_permissions", Permissions)
    mappings: dict[str, tuple[WeightedMapping, ...]] = _field(
        "mappings", attrs.Factory(dict), dec=_dec_mappings, enc=_sorted_map(lambda ms: [_to_json(m) for m in ms])
    )
    authorization: ExternalAuthorization = _obj("authorization", ExternalAuthorization)
    trace: MsgTrace | None = _obj("trace", MsgTrace, optional=True)
    cluster_traffic: str = _str("cluster_traffic")
    description: str = _str("description")
    info_url: str = _str("info_url")

    def is_revoked(self, pubkey: str, issued_at: int) -> bool:
        """Whether a user JWT for ``pubkey`` issued at ``issued_at`` was revoked."""
        return is_revoked(self.revocations, pubkey, issued_at)

    def did_sign(self, claims: Claims) -> bool:
        """jwt AccountClaims.DidSign: issued by the account, or by one of its signing keys."""
        if claims.issuer == self.subject:
            return True
        if isinstance(claims, (UserClaims, ActivationClaims)) and claims.issuer_account == self.subject:
            return claims.issuer in self.signing_keys
        return False


@attrs.frozen(kw_only=True)
class UserClaims(_ClaimsData):
    CLAIM_TYPE: ClassVar[str] = "user"
    ISSUER_PREFIXES: ClassVar[tuple[int, ...]] = (nkeys.PREFIX_BYTE_ACCOUNT,)
    SUBJECT_PREFIX: ClassVar[int] = nkeys.PREFIX_BYTE_USER

    permission_limits: UserPermissionLimits = _inline(UserPermissionLimits)
    #: The account a signing key issued this user for; empty when the account signed it.
    issuer_account: str = _str("issuer_account")

    @property
    def account(self) -> str:
        """Public key of the account this user belongs to."""
        return self.issuer_account or self.issuer


@attrs.frozen(kw_only=True)
class ActivationClaims(_ClaimsData):
    """Grants the account in ``subject`` an import of a private (token_req) export."""

    CLAIM_TYPE: ClassVar[str] = "activation"
    ISSUER_PREFIXES: ClassVar[tuple[int, ...]] = (nkeys.PREFIX_BYTE_ACCOUNT, nkeys.PREFIX_BYTE_OPERATOR)
    SUBJECT_PREFIX: ClassVar[int] = nkeys.PREFIX_BYTE_ACCOUNT

    import_subject: str = _str("subject")
    import_type: str = _field("kind", "", dec=_dec_export_type)
    issuer_account: str = _str("issuer_account")


Claims = Union[OperatorClaims, AccountClaims, UserClaims, ActivationClaims]
_CLAIM_CLASSES: dict[str, type] = {
    c.CLAIM_TYPE: c for c in (OperatorClaims, AccountClaims, UserClaims, ActivationClaims)
}


def _claims_to_json(claims: Claims) -> dict[str, Any]:
    out = _encode_fields(claims, {}, top=True)
    nats = _encode_fields(claims, {}, top=False)
    # GenericFields come last in Go's structs: tags, type, version.
    tags = nats.pop("tags", None)
    version = nats.pop("version", None)
    if tags is not None:
        nats["tags"] = tags
    nats["type"] = claims.CLAIM_TYPE
    if version is not None:
        nats["version"] = version
    out["nats"] = nats
    return out


def _claims_from_json(data: Mapping[str, Any]) -> Claims:
    """Pick the claim class from ``type``/``version`` and migrate version 1 layouts."""
    nats = data.get("nats")
    nats = {} if nats is None else _dec_dict(nats)
    v1_type = data.get("type")
    if v1_type:
        # Version 1 kept type, tags and issuer_account at the top level (decoder_*.go).
        kind, version = _dec_str(v1_type), 1
        nats = dict(nats)
        for moved in ("tags", "issuer_account"):
            if data.get(moved) is not None:
                nats[moved] = data[moved]
    else:
        kind = _dec_str(nats.get("type") or "")
        version = _dec_int(nats.get("version") or 0)
    if version > _LIB_VERSION:
        raise DecodeError("JWT was generated by a newer version")
    cls = _CLAIM_CLASSES.get(kind)
    if cls is None:
        raise DecodeError(f"unsupported claim type {kind!r}")
    if version != _LIB_VERSION and not (version == 1 and cls is not ActivationClaims):
        raise DecodeError(f"library supports version {_LIB_VERSION} or less - received {version}")
    if version == 1 and cls is UserClaims and nats.get("max", NO_LIMIT) != NO_LIMIT:
        raise DecodeError("jwtV1 user: deprecated Max/Times in jwtV2")
    kw = _decode_fields(cls, data, top=True)
    kw.update(_decode_fields(cls, nats, top=False))
    kw["version"] = version
    return cls(**kw)


# ---------------------------------------------------------------------------
# Decode and encode
# ---------------------------------------------------------------------------


def _b64url_decode(segment: str) -> bytes:
    # Go's RawURLEncoding: URL alphabet, no padding.
    if "=" in segment or len(segment) % 4 == 1:
        raise DecodeError("illegal base64 data")
    try:
        return base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("illegal base64 data") from None


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _parse_json_segment(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url_decode(segment))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DecodeError("invalid JSON") from None
    if not isinstance(value, dict):
        raise DecodeError("expected a JSON object")
    return value


def decode(token: str) -> Claims:
    """Decode ``token`` and verify its signature and issuer role (jwt.Decode).

    Raises:
        DecodeError: malformed token, header, claims, or unsupported type/version.
        SignatureError: the signature does not verify with ``iss``.
        IssuerError: ``iss`` is not a key allowed to issue this type of claim.
    """
    if not isinstance(token, str):
        raise DecodeError("token must be a string")
    chunks = token.split(".")
    if len(chunks) != 3:
        raise DecodeError("expected 3 chunks")
    header = _parse_json_segment(chunks[0])
    typ, alg = header.get("typ"), header.get("alg")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        raise DecodeError(f"not supported type {typ!r}")
    if not isinstance(alg, str) or alg.lower() not in (ALGORITHM_NKEY_V1, ALGORITHM_NKEY):
        raise DecodeError(f"unexpected {alg!r} algorithm")
    claims = _claims_from_json(_parse_json_segment(chunks[1]))
    sig = _b64url_decode(chunks[2])
    signed = chunks[1] if claims.version <= 1 else f"{chunks[0]}.{chunks[1]}"
    try:
        issuer = nkeys.KeyPair.from_public_key(claims.issuer)
    except nkeys.NkeysError:
        raise SignatureError(f"claim failed V{max(claims.version, 1)} signature verification") from None
    if not issuer.verify(signed.encode("ascii"), sig):
        raise SignatureError(f"claim failed V{max(claims.version, 1)} signature verification")
    if issuer.prefix not in claims.ISSUER_PREFIXES:
        raise IssuerError(f"{claims.CLAIM_TYPE} JWT issuer {claims.issuer} may not issue this claim")
    return claims


def _decode_as(token: str, cls: type) -> Any:
    claims = decode(token)
    if not isinstance(claims, cls):
        raise DecodeError(f"not {cls.CLAIM_TYPE} claim")
    return claims


def decode_operator_claims(token: str) -> OperatorClaims:
    return _decode_as(token, OperatorClaims)


def decode_account_claims(token: str) -> AccountClaims:
    return _decode_as(token, AccountClaims)


def decode_user_claims(token: str) -> UserClaims:
    return _decode_as(token, UserClaims)


def decode_activation_claims(token: str) -> ActivationClaims:
    return _decode_as(token, ActivationClaims)


def _claims_hash(claims: Claims) -> str:
    """jti: SHA-512/256 of the registered claims with an empty jti, base32 without padding."""
    data = _encode_fields(attrs.evolve(claims, id=""), {}, top=True)
    digest = hashlib.new("sha512_256", _go_json(data).encode()).digest()
    return base64.b32encode(digest).rstrip(b"=").decode("ascii")


def encode(claims: Claims, signer: nkeys.KeyPair, *, issued_at: int | None = None) -> str:
    """Sign ``claims`` with ``signer``, as the Go library's ``Encode``.

    The token gets ``iss`` = the signer's public key, ``iat`` = ``issued_at`` (the wall clock
    when omitted), a fresh ``jti`` and ``version`` 2; an account's exports and imports are
    sorted by subject. Whatever ``claims`` held in those fields is replaced.

    Raises:
        JWTError: the subject is missing or of the wrong role for this claim type.
        IssuerError: ``signer`` may not issue this type of claim.
        nkeys.CannotSignError: ``signer`` holds no private key.
    """
    if not claims.subject:
        raise JWTError("subject is not set")
    if not nkeys.is_valid_public_key(claims.subject, claims.SUBJECT_PREFIX):
        raise JWTError(f"expected subject to be a {claims.CLAIM_TYPE} public key")
    if signer.prefix not in claims.ISSUER_PREFIXES:
        raise IssuerError(f"unable to validate expected prefixes for a {claims.CLAIM_TYPE} issuer")
    if isinstance(claims, AccountClaims):
        claims = attrs.evolve(
            claims,
            exports=tuple(sorted(claims.exports, key=lambda e: e.subject)),
            imports=tuple(sorted(claims.imports, key=lambda i: i.subject)),
        )
    claims = attrs.evolve(
        claims,
        issuer=signer.public_key,
        issued_at=int(time.time()) if issued_at is None else int(issued_at),
        version=_LIB_VERSION,
    )
    claims = attrs.evolve(claims, id=_claims_hash(claims))
    header = _b64url_encode(_go_json({"typ": "JWT", "alg": ALGORITHM_NKEY}).encode())
    payload = _b64url_encode(_go_json(_claims_to_json(claims)).encode())
    to_sign = f"{header}.{payload}"
    return f"{to_sign}.{_b64url_encode(signer.sign(to_sign.encode('ascii')))}"


# ---------------------------------------------------------------------------
# Validation (Claims.Validate); time is always the caller's
# ---------------------------------------------------------------------------


@attrs.frozen
class ValidationIssue:
    description: str
    blocking: bool = False
    time_check: bool = False


class _Results:
    def __init__(self) -> None:
        self.issues: list[ValidationIssue] = []

    def error(self, msg: str) -> None:
        self.issues.append(ValidationIssue(msg, blocking=True))

    def warning(self, msg: str) -> None:
        self.issues.append(ValidationIssue(msg))

    def time_check(self, msg: str) -> None:
        self.issues.append(ValidationIssue(msg, time_check=True))


def is_blocking(issues: Iterable[ValidationIssue], include_time_checks: bool = True) -> bool:
    """ValidationResults.IsBlocking."""
    return any(i.blocking or (include_time_checks and i.time_check) for i in issues)


def validate(claims: Claims, now: float) -> tuple[ValidationIssue, ...]:
    """All validation issues of ``claims`` at unix time ``now`` (Claims.Validate)."""
    vr = _Results()
    _validate_claims(claims, now, vr, time_checks=True)
    return tuple(vr.issues)


def check(claims: Claims, now: float) -> Claims:
    """Return ``claims`` if nothing blocks them at ``now``, else raise.

    Raises:
        ExpiredError, NotYetValidError: a time check failed (and nothing else blocks).
        ValidationError: any blocking error.
    """
    issues = validate(claims, now)
    if any(i.blocking for i in issues):
        raise ValidationError(issues)
    if claims.expires > 0 and now > claims.expires:
        raise ExpiredError("claim is expired")
    if claims.not_before > 0 and claims.not_before > now:
        raise NotYetValidError("claim is not yet valid")
    return claims


def _validate_claims(claims: Claims, now: float, vr: _Results, *, time_checks: bool) -> None:
    if time_checks:
        if claims.expires > 0 and now > claims.expires:
            vr.time_check("claim is expired")
        if claims.not_before > 0 and claims.not_before > now:
            vr.time_check("claim is not yet valid")
    if isinstance(claims, UserClaims):
        _validate_user_limits(claims.permission_limits, vr)
        if claims.issuer_account and not nkeys.is_valid_public_account_key(claims.issuer_account):
            vr.error("account_id is not an account public key")
    elif isinstance(claims, AccountClaims):
        _validate_account(claims, now, vr)
    elif isinstance(claims, OperatorClaims):
        _validate_operator(claims, vr)
    elif isinstance(claims, ActivationClaims):
        if claims.import_type not in EXPORT_TYPES:
            vr.error(f"invalid export type: {claims.import_type!r}")
        if claims.import_type == "service" and _has_wildcards(claims.import_subject):
            vr.error(f"services cannot have wildcard subject: {claims.import_subject!r}")
        _subject_issues(claims.import_subject, vr)
        if claims.issuer_account and not nkeys.is_valid_public_account_key(claims.issuer_account):
            vr.error("account_id is not an account public key")


def _validate_permission(p: Permission, vr: _Results, *, permit_queue: bool) -> None:
    for entry in (*p.allow, *p.deny):
        tokens = entry.split(" ")
        if len(tokens) > 2:
            vr.error(f'Permission Subject "{entry}" contains too many spaces')
            continue
        for tok in tokens:
            _subject_issues(tok, vr)
        if len(tokens) == 2 and not permit_queue:
            vr.error(f'Permission Subject "{entry}" is not allowed to contain queue')


def _validate_permissions(p: Permissions | UserPermissionLimits, vr: _Results) -> None:
    _validate_permission(p.sub, vr, permit_queue=True)
    _validate_permission(p.pub, vr, permit_queue=False)


_TIME_RE = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})", re.ASCII)


def _parse_clock(value: str) -> tuple[int, int, int] | None:
    """Go's time.Parse("15:04:05", value) as (hour, minute, second), or None."""
    m = _TIME_RE.fullmatch(value)
    if not m:
        return None
    h, mi, s = (int(x) for x in m.groups())
    if h > 23 or mi > 59 or s > 59:
        return None
    return h, mi, s


def _parse_cidr(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    # Go's net.ParseCIDR requires the "/len" part, and keeps host bits (strict=False).
    if "/" not in cidr:
        return None
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return None


def _load_zone(name: str) -> datetime.tzinfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _validate_user_limits(lim: UserPermissionLimits, vr: _Results) -> None:
    _validate_permissions(lim, vr)
    for cidr in lim.src:
        if _parse_cidr(cidr) is None:
            vr.error(f"invalid cidr {cidr!r} in user src limits")
    for tr in lim.times:
        for label, value in (("start", tr.start), ("end", tr.end)):
            if value == "":
                vr.error(f"time ranges {label} must contain a {label}")
            elif _parse_clock(value) is None:
                vr.error(f"{label} in time range is invalid {value!r}")
    if lim.times_location and _load_zone(lim.times_location) is None:
        vr.error(f"could not parse iana time zone by name: {lim.times_location}")


def _validate_info(description: str, info_url: str, vr: _Results) -> None:
    if len(description) > 8 * 1024:
        vr.error("Description is too long")
    if info_url:
        if len(info_url) > 8 * 1024:
            vr.error("Info URL is too long")
        try:
            u = urllib.parse.urlparse(info_url)
            ok = bool(u.scheme and u.hostname)
        except ValueError:
            ok = False
        if not ok:
            vr.error("error parsing info url: no hostname or scheme")


def _validate_export(e: Export, vr: _Results) -> None:
    if e.type not in EXPORT_TYPES:
        vr.error(f"invalid export type: {e.type!r}")
    if e.type == "service" and e.response_type not in ("", *RESPONSE_TYPES):
        vr.error(f"invalid response type for service: {e.response_type!r}")
    if e.type == "stream" and e.response_type:
        vr.error(f"invalid response type for stream: {e.response_type!r}")
    if e.service_latency is not None:
        if e.type != "service":
            vr.error("latency tracking only permitted for services")
        if not 1 <= e.service_latency.sampling <= 100:
            vr.error("sampling percentage needs to be between 1-100")
        _subject_issues(e.service_latency.results, vr)
        if _has_wildcards(e.service_latency.results):
            vr.error("results subject can not contain wildcards")
    if e.response_threshold < 0:
        vr.error("negative response threshold is invalid")
    if e.response_threshold > 0 and e.type != "service":
        vr.error("response threshold only valid for services")
    _subject_issues(e.subject, vr)
    if e.account_token_position > 0:
        tokens = e.subject.split(".")
        if not _has_wildcards(e.subject):
            vr.error(f"Account Token Position can only be used with wildcard subjects: {e.subject}")
        elif e.account_token_position > len(tokens):
            vr.error(f"Account Token Position {e.account_token_position} exceeds length of subject '{e.subject}'")
        elif tokens[e.account_token_position - 1] != "*":
            vr.error(
                f"Account Token Position {e.account_token_position} matches "
                f"'{tokens[e.account_token_position - 1]}' but must match a * in: {e.subject}"
            )
    _validate_info(e.description, e.info_url, vr)


def _validate_exports(exports: tuple[Export, ...], vr: _Results) -> None:
    for e in exports:
        _validate_export(e, vr)
    for kind in EXPORT_TYPES:
        subjects = [e.subject for e in exports if (e.type == "service") == (kind == "service")]
        overlaps: dict[str, str] = {}
        for i, ns in enumerate(subjects):
            for j, s in enumerate(subjects):
                if i != j and _is_contained_in(ns, s):
                    overlaps.setdefault(s, ns)
        for k, v in overlaps.items():
            vr.error(f"{kind} export subject {k!r} already exports {v!r}")


def _renaming_subject_issues(local: str, subject: str, vr: _Results) -> None:
    _subject_issues(local, vr)
    if subject == "":
        vr.error("subject cannot be empty")

    def ends_in_fwc(s: str) -> bool:
        return s == ">" or s.endswith(".>")

    if ends_in_fwc(local) != ends_in_fwc(subject):
        vr.error("both, renaming subject and subject, need to end or not end in >")
    wildcards = 1 if subject == "*" else subject.split(".").count("*")
    refs = 0
    for tok in local.split("."):
        if tok == "*":
            refs += 1
        if len(tok) >= 2 and tok[0] == "$" and tok[1:].isdigit():
            if int(tok[1:]) > wildcards:
                vr.error(f"Reference {tok} in {local!r} reference * in {subject!r} that do not exist")
            else:
                refs += 1
    if refs != wildcards:
        vr.error("subject does not contain enough * or reference wildcards $[0-9]")


def _renaming_to_subject(local: str) -> str:
    return ".".join("*" if len(t) > 1 and t[0] == "$" and t[1:].isdigit() else t for t in local.split("."))


def _validate_import(i: Import, account: str, vr: _Results) -> None:
    if i.type not in EXPORT_TYPES:
        vr.error(f"invalid import type: {i.type!r}")
    if i.type == "service" and i.allow_trace:
        vr.error("AllowTrace only valid for stream import")
    if not i.account:
        vr.error("account to import from is not specified")
    if i.to:
        vr.warning("the field to has been deprecated (use LocalSubject instead)")
    _subject_issues(i.subject, vr)
    if i.local_subject:
        _renaming_subject_issues(i.local_subject, i.subject, vr)
        if i.to:
            vr.error("Local Subject replaces To")
    if i.share and i.type != "service":
        vr.error(f"sharing information (for latency tracking) is only valid for services: {i.subject!r}")
    if not i.token:
        return
    try:
        act = decode_activation_claims(i.token)
    except JWTError:
        vr.error(f"import {i.subject!r} contains an invalid activation token")
        return
    if not (act.issuer == i.account or act.issuer_account == i.account):
        vr.error(f"activation token doesn't match account for import {i.subject!r}")
    if act.subject != account:
        vr.error(f"activation token doesn't match account it is being included in, {i.subject!r}")
    if act.import_type != i.type:
        vr.error(f"mismatch between token import type {act.import_type} and type of import {i.type}")
    _validate_claims(act, 0, vr, time_checks=False)
    subj = i.to if i.type == "service" and i.to else i.subject
    if not _is_contained_in(subj, act.import_subject):
        vr.error(f"activation token import subject {act.import_subject!r} doesn't match import {i.subject!r}")


def _validate_imports(imports: tuple[Import, ...], account: str, vr: _Results) -> None:
    seen: list[str] = []
    for i in imports:
        if i.type == "service":
            sub = i.to or _renaming_to_subject(i.local_subject) or i.subject
            for k in seen:
                if _is_contained_in(sub, k) or _is_contained_in(k, sub):
                    vr.error(f"overlapping subject namespace for {sub!r} and {k!r}")
            seen.append(sub)
        _validate_import(i, account, vr)


def _validate_account(a: AccountClaims, now: float, vr: _Results) -> None:
    _validate_imports(a.imports, a.subject, vr)
    _validate_exports(a.exports, vr)
    lim = a.limits
    if lim.tiered_limits:
        if lim.jetstream != JetStreamLimits():
            vr.error("JetStream Limits and tiered JetStream Limits are mutually exclusive")
        if "" in lim.tiered_limits:
            vr.error('Tiered JetStream Limits can not contain a blank "" tier name')
    _validate_permissions(a.default_permissions, vr)
    for src, targets in a.mappings.items():
        _subject_issues(src, vr)
        total, per_cluster = 0, {}
        for m in targets:
            _subject_issues(m.subject, vr)
            if m.cluster:
                per_cluster[m.cluster] = per_cluster.get(m.cluster, 0) + m.weight
                if per_cluster[m.cluster] > 100:
                    vr.error(f"Mapping {src!r} in cluster {m.cluster!r} exceeds 100% among all of it's weighted to mappings")
            else:
                total += m.effective_weight()
        if total > 100:
            vr.error(f"Mapping {src!r} exceeds 100% among all of it's weighted to mappings")
    auth = a.authorization
    if auth.allowed_accounts and not auth.auth_users:
        vr.error("External authorization cannot have accounts without users specified")
    for u in auth.auth_users:
        if not nkeys.is_valid_public_user_key(u):
            vr.error(f"AuthUser {u!r} is not a valid user public key")
    for acc in auth.allowed_accounts:
        if acc == ALL:
            if len(auth.allowed_accounts) > 1:
                vr.error(f"AllowedAccounts can only be a list of accounts or {ALL!r}")
        elif not nkeys.is_valid_public_account_key(acc):
            vr.error(f"Account {acc!r} is not a valid account public key")
    if auth.xkey and not nkeys.is_valid_public_curve_key(auth.xkey):
        vr.error(f"XKey {auth.xkey!r} is not a valid public xkey")
    if a.trace is not None:
        tvr = _Results()
        _subject_issues(a.trace.dest, tvr)
        if tvr.issues:
            vr.error(f"the account Trace.Destination {tvr.issues[0].description}")
        if _has_wildcards(a.trace.dest):
            vr.error(f"the account Trace.Destination subject {a.trace.dest!r} is not a valid publish subject")
        if not 0 <= a.trace.sampling <= 100:
            vr.error(f"the account Trace.Sampling value '{a.trace.sampling}' is not valid, should be in the range [1..100]")
    if not lim.is_empty() and lim.imports >= 0 and len(a.imports) > lim.imports:
        vr.error("the account contains more imports than allowed by the operator")
    if lim.imports != NO_LIMIT and len(a.imports) > lim.imports:
        vr.error("the account contains more imports than allowed by the operator")
    if lim.exports != NO_LIMIT:
        if len(a.exports) > lim.exports:
            vr.error("the account contains more exports than allowed by the operator")
        if not lim.wildcards and any(_has_wildcards(e.subject) for e in a.exports):
            vr.error("the account contains wildcard exports that are not allowed by the operator")
    for key, scope in a.signing_keys.items():
        if not nkeys.is_valid_public_account_key(key if scope is None else scope.key):
            vr.error(f"{key!r} is not a valid account signing key")
    _validate_info(a.description, a.info_url, vr)
    if a.cluster_traffic not in ("", "system", "owner"):
        target = a.cluster_traffic.removeprefix("account:")
        if target == a.cluster_traffic:
            vr.error(f"unknown cluster traffic option: {a.cluster_traffic!r}")
        elif not nkeys.is_valid_public_account_key(target):
            vr.error("cluster traffic is not a public account key")
    if nkeys.is_valid_public_account_key(a.issuer) and not lim.is_empty():
        vr.warning("self-signed account JWTs shouldn't contain operator limits")


def _validate_operator(o: OperatorClaims, vr: _Results) -> None:
    if o.account_server_url:
        try:
            scheme = urllib.parse.urlparse(o.account_server_url).scheme
        except ValueError:
            scheme = ""
        if not scheme:
            vr.error(f"account server url {o.account_server_url!r} requires a protocol")
    for url in o.operator_service_urls:
        if not url:
            continue
        try:
            u = urllib.parse.urlparse(url)
        except ValueError:
            vr.error(f"error parsing operator service url {url!r}")
            continue
        if u.username is not None:
            vr.error(f"operator service url {url!r} - credentials are not supported")
        if u.path:
            vr.error(f"operator service url {url!r} - paths are not supported")
        if u.scheme.lower() not in ("nats", "tls"):
            vr.error(f"operator service url {url!r} - protocol not supported (only 'nats' or 'tls' only)")
    for k in o.signing_keys:
        if not nkeys.is_valid_public_operator_key(k):
            vr.error(f"{k} is not an operator public key")
    if o.system_account and not nkeys.is_valid_public_account_key(o.system_account):
        vr.error(f"{o.system_account} is not an account public key")
    if o.assert_server_version:
        parts = o.assert_server_version.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            vr.error("asserted server version must be of the form <major>.<minor>.<update>")


# ---------------------------------------------------------------------------
# Trust chain (server/jwt.go, server/accounts.go, server/auth.go)
# ---------------------------------------------------------------------------


def is_revoked(revocations: Mapping[str, int], pubkey: str, issued_at: int) -> bool:
    """Whether ``pubkey``'s claim issued at ``issued_at`` is revoked (server isRevoked).

    A revocation at time T covers claims issued at or before T, for that key or, with the
    ``"*"`` entry, for every key.
    """
    if not revocations:
        return False
    for key in (pubkey, ALL):
        t = revocations.get(key)
        if t is not None and t >= issued_at:
            return True
    return False


def trusted_keys(operators: Iterable[OperatorClaims]) -> tuple[str, ...]:
    """Keys that may sign accounts: each operator (unless strict) and its signing keys.

    Mirrors validateTrustedOperators, which expands ``trusted_operators`` into trusted keys.
    """
    keys: list[str] = []
    for op in operators:
        if not op.strict_signing_key_usage:
            keys.append(op.subject)
        keys.extend(op.signing_keys)
    return tuple(keys)


def verify_account(
    token: str, trusted: Collection[str], now: float, *, name: str | None = None
) -> AccountClaims:
    """Decode an account JWT the way the server accepts one from a resolver.

    Mirrors fetchAccountClaims/verifyAccountClaims: the subject must be ``name`` (when given),
    the issuer one of ``trusted`` keys, and nothing may block validation, expiry included.

    Raises:
        DecodeError, SignatureError, IssuerError, ExpiredError, NotYetValidError, ValidationError.
    """
    claims = decode_account_claims(token)
    if name is not None and claims.subject != name:
        raise IssuerError(f"account JWT subject {claims.subject} is not {name}")
    if claims.issuer not in trusted:
        raise IssuerError("account JWT not signed by a trusted operator")
    check(claims, now)
    return claims


def account_signers(account: AccountClaims, *, strict: bool = False) -> dict[str, UserScope | None]:
    """Keys that may issue users for ``account``, with their scope (None: unscoped).

    The account's own key is included unless its operator has ``strict_signing_key_usage``
    (updateAccountClaimsWithRefresh).
    """
    signers: dict[str, UserScope | None] = dict(account.signing_keys)
    if not strict:
        signers[account.subject] = None
    return signers


def authorize_user(user: UserClaims, account: AccountClaims, now: float, *, strict: bool = False) -> UserClaims:
    """The checks the server makes on a user JWT once it has the account's claims.

    Mirrors processClientOrLeafAuthentication: validation at ``now``, the issuer (the account
    or one of its signing keys), scoped signing keys (the user must carry no permissions and
    gets the expanded template), account expiry, ``disallow_bearer`` and revocation. Returns
    the effective claims. The nonce signature, ``src``, ``times`` and connection types are
    per-connection and checked separately (nkeys.verify_signature, validate_src,
    validate_times).

    Raises:
        ExpiredError, NotYetValidError, ValidationError, IssuerError, RevokedError,
        TemplateError, JWTError (bearer token not allowed).
    """
    check(user, now)
    if user.account != account.subject:
        raise IssuerError(f"user JWT is for account {user.account}, not {account.subject}")
    signers = account_signers(account, strict=strict)
    if user.issuer not in signers:
        raise IssuerError("User JWT issuer is not known")
    scope = signers[user.issuer]
    if scope is not None:
        if scope.key != user.issuer:
            raise IssuerError("issuer not the scoped signer")
        if not user.permission_limits.is_empty():
            raise IssuerError("scoped users require no permissions or limits set")
        user = attrs.evolve(user, permission_limits=expand_user_template(scope.template, user, account))
    if account.expires and account.expires <= now:
        raise ExpiredError("Account JWT has expired")
    if user.permission_limits.bearer_token and account.limits.disallow_bearer:
        raise JWTError("Account does not allow bearer tokens")
    if account.is_revoked(user.subject, user.issued_at):
        raise RevokedError("User authentication revoked")
    return user


_MUSTACHE_RE = re.compile(r"\{\{([^}]+)\}\}")
MAX_TEMPLATE_EXPANSIONS = 4096


def _template_tag(op: str) -> tuple[str, str] | None:
    low = op.lower()
    for kind in ("account-tag", "tag"):
        if low.startswith(kind + "(") and op.endswith(")"):
            return kind, op[len(kind) + 1 : -1]
    return None


def expand_user_template(
    template: UserPermissionLimits, user: UserClaims, account: AccountClaims
) -> UserPermissionLimits:
    """Expand a scoped signing key's template for ``user`` (processUserPermissionsTemplate).

    Functions: ``{{name()}}``, ``{{subject()}}``, ``{{account-name()}}``,
    ``{{account-subject()}}``, ``{{tag(x)}}`` and ``{{account-tag(x)}}`` (every value of the
    ``x:value`` tags, so one entry may expand to several subjects). In allow lists an entry that
    expands to an invalid subject is dropped, and an allow list emptied that way becomes
    ``deny >``; in deny lists it is an error.

    Raises:
        TemplateError: unknown function, invalid deny subject, or more than 4096 subjects.
    """

    def values_of(op: str, entry: str, fail_on_bad_subject: bool) -> tuple[list[str], bool]:
        low = op.lower()
        if low == "name()":
            return [user.name], False
        if low == "subject()":
            return [user.subject], False
        if low == "account-name()":
            return [account.name], False
        if low == "account-subject()":
            return [user.issuer_account], False
        tag = _template_tag(op)
        if tag is None:
            raise TemplateError(f"template operation in {entry!r}: {op!r} is not defined")
        kind, name = tag
        prefix = name.lower() + ":"
        tags = account.tags if kind == "account-tag" else user.tags
        found = [t[len(prefix) :] for t in tags if t.startswith(prefix)]
        if found:
            return found, True
        if fail_on_bad_subject:
            raise TemplateError(f"generated invalid subject {entry!r}: {name!r} is not defined")
        return [" "], True  # an invalid subject, dropped below

    def apply(entries: tuple[str, ...], fail_on_bad_subject: bool) -> tuple[str, ...]:
        if not any(_MUSTACHE_RE.search(e) for e in entries):
            return entries
        emitted: list[str] = []
        for entry in entries:
            sources = [m.group(0) for m in _MUSTACHE_RE.finditer(entry)]
            values: list[list[str]] = []
            has_tags = False
            for src in sources:
                vals, is_tag = values_of(src[2:-2].strip(), entry, fail_on_bad_subject)
                values.append(vals)
                has_tags |= is_tag
            if has_tags:
                count = 1
                for v in values:
                    count *= len(v)
                if count > MAX_TEMPLATE_EXPANSIONS or len(emitted) > MAX_TEMPLATE_EXPANSIONS - count:
                    raise TemplateError(f"template expansion exceeds limit: {MAX_TEMPLATE_EXPANSIONS}")
                combos = itertools.product(*values)
            else:
                combos = iter([tuple(v[0] for v in values)])
            for combo in combos:
                subject = entry
                for src, value in zip(sources, combo):
                    subject = subject.replace(src, value)
                if is_valid_subject(subject):
                    emitted.append(subject)
                elif fail_on_bad_subject:
                    raise TemplateError("generated invalid subject")
        return tuple(emitted)

    sub_allow = apply(template.sub.allow, False)
    sub_deny = apply(template.sub.deny, True)
    pub_allow = apply(template.pub.allow, False)
    pub_deny = apply(template.pub.deny, True)
    # An allow list that expanded to nothing must not turn into "allow everything".
    if template.sub.allow and not sub_allow and ">" not in sub_deny:
        sub_deny += (">",)
    if template.pub.allow and not pub_allow and ">" not in pub_deny:
        pub_deny += (">",)
    return attrs.evolve(
        template,
        sub=Permission(allow=sub_allow, deny=sub_deny),
        pub=Permission(allow=pub_allow, deny=pub_deny),
    )


def check_activation(
    imp: Import,
    importer: str,
    exporter: AccountClaims,
    now: float,
    *,
    strict: bool = False,
    export: Export | None = None,
) -> ActivationClaims:
    """Verify the activation token of ``imp`` (account ``importer``) against ``exporter``.

    Mirrors Account.checkActivation and isIssuerClaimTrusted: the import must validate, the
    token must be issued by the exporter (or, with ``issuer_account``, one of its signing
    keys), must not have expired at ``now``, and must not be revoked by ``export``.

    Raises:
        DecodeError, SignatureError, IssuerError, ExpiredError, NotYetValidError,
        ValidationError, RevokedError.
    """
    if not imp.token:
        raise DecodeError("import has no activation token")
    if imp.account != exporter.subject:
        raise IssuerError(f"import is from account {imp.account}, not {exporter.subject}")
    vr = _Results()
    _validate_import(imp, importer, vr)
    if is_blocking(vr.issues):
        raise ValidationError(vr.issues)
    act = decode_activation_claims(imp.token)
    if act.issuer_account:
        if act.issuer_account != exporter.subject:
            raise IssuerError(f"invalid issuer account {act.issuer_account!r} in activation claim")
        if act.issuer not in account_signers(exporter, strict=strict):
            raise IssuerError("activation issuer is not a signing key of the exporting account")
    check(act, now)
    if act.expires and act.expires <= now:
        raise ExpiredError("activation token has expired")
    if export is not None and export.is_revoked(act.subject, act.issued_at):
        raise RevokedError("activation token revoked")
    return act


def validate_src(user: UserClaims, host: str) -> bool:
    """Whether a client at ``host`` may use ``user`` (its ``src`` CIDRs; server validateSrc)."""
    src = user.permission_limits.src
    if not src:
        return True
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    # Go compares an IPv4-mapped IPv6 address as the IPv4 address it carries.
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for cidr in src:
        net = _parse_cidr(cidr)
        if net is None:
            return False  # an invalid CIDR makes the JWT invalid; deny
        if any(c.version == net.version and c in net for c in candidates):
            return True
    return False


def validate_times(
    user: UserClaims, now: float, local_tz: datetime.tzinfo | None = None
) -> tuple[bool, float]:
    """Whether ``now`` is inside one of the user's time windows, and for how many seconds more.

    Windows are wall-clock times in ``times_location`` or else ``local_tz`` (the server's local
    zone when None), as validateTimesAt. With no windows: ``(True, 0.0)``.
    """
    lim = user.permission_limits
    if not lim.times:
        return True, 0.0
    if lim.times_location:
        tz = _load_zone(lim.times_location)
        if tz is None:
            return False, 0.0
    elif local_tz is not None:
        tz = local_tz
    else:
        tz = datetime.datetime.fromtimestamp(now).astimezone().tzinfo
    wall_now = datetime.datetime.fromtimestamp(now, tz)
    ok, valid_for = False, 0.0
    for tr in lim.times:
        start_hms, end_hms = _parse_clock(tr.start), _parse_clock(tr.end)
        if start_hms is None or end_hms is None:
            return False, 0.0
        start = wall_now.replace(hour=start_hms[0], minute=start_hms[1], second=start_hms[2], microsecond=0)
        end = wall_now.replace(hour=end_hms[0], minute=end_hms[1], second=end_hms[2], microsecond=0)
        in_range, remaining = _in_time_range(start.timestamp(), end.timestamp(), now, end)
        if in_range and (not ok or remaining > valid_for):
            ok, valid_for = True, remaining
    return ok, valid_for


def _in_time_range(start: float, end: float, now: float, end_wall: datetime.datetime) -> tuple[bool, float]:
    # validateTimeRangeAt: strict bounds; a range whose start is after its end crosses midnight.
    if start < now < end:
        return True, end - now
    if start > end:
        if end > now:  # after midnight, e.g. 22:00-06:00 at 05:00
            return True, end - now
        tomorrow = (end_wall + datetime.timedelta(days=1)).timestamp()
        if start < now < tomorrow:  # before midnight, e.g. 22:00-06:00 at 23:30
            return True, tomorrow - now
    return False, 0.0


# ---------------------------------------------------------------------------
# Decorated files: .creds and banner-wrapped JWTs and seeds (jwt creds_utils.go)
# ---------------------------------------------------------------------------

_DECORATED_RE = re.compile(
    r"\s*(?:(?:-{3,}.*-{3,}\r?\n)([\w\-.=]+)(?:\r?\n-{3,}.*-{3,}(\r?\n|\Z)))", re.ASCII
)
_SEED_PREFIXES = ("SO", "SA", "SU")


def _as_text(data: str | bytes) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data


def parse_decorated_jwt(data: str | bytes) -> str:
    """The JWT in a decorated file; a file without banners is taken to be a bare JWT."""
    text = _as_text(data)
    m = _DECORATED_RE.search(text)
    return m.group(1) if m else text.strip()


def parse_decorated_seed(data: str | bytes) -> bytes:
    """The operator, account or user seed in a decorated file (ParseDecoratedNKey).

    Raises:
        CredsError: no seed, or not an operator/account/user seed.
    """
    text = _as_text(data)
    blocks = [m.group(1) for m in _DECORATED_RE.finditer(text)]
    seed: str | None = None
    if len(blocks) > 1:
        seed = blocks[1]
    else:
        for line in text.splitlines():
            if line.strip().startswith(_SEED_PREFIXES):
                seed = line.strip()
                break
    if seed is None:
        raise CredsError("no nkey seed found")
    if not seed.startswith(_SEED_PREFIXES):
        raise CredsError("doesn't contain a seed nkey")
    try:
        nkeys.KeyPair.from_seed(seed)
    except nkeys.NkeysError as e:
        raise CredsError(f"invalid seed: {e}") from None
    return seed.encode("ascii")


def parse_creds(data: str | bytes) -> tuple[str, bytes]:
    """``(user JWT, seed)`` from a .creds file as written by nsc or :func:`format_user_creds`.

    Raises:
        CredsError: no JWT block, or no usable seed.
    """
    text = _as_text(data)
    if not _DECORATED_RE.search(text):
        raise CredsError("no JWT found in credentials")
    return parse_decorated_jwt(text), parse_decorated_seed(text)


def decorate_jwt(token: str, kind: str | None = None) -> str:
    """``token`` between ``-----BEGIN NATS <KIND> JWT-----`` banners (kind from the token)."""
    if kind is None:
        kind = decode(token).CLAIM_TYPE
    kind = kind.upper()
    return f"-----BEGIN NATS {kind} JWT-----\n{token}\n------END NATS {kind} JWT------\n\n"


def decorate_seed(seed: str | bytes) -> str:
    """A seed with the nsc banner and warning.

    Raises:
        CredsError: not an operator, account or user seed.
    """
    text = _as_text(seed).strip()
    kind = {"SU": "USER", "SA": "ACCOUNT", "SO": "OPERATOR"}.get(text[:2])
    if kind is None:
        raise CredsError("seed is not an operator, account or user seed")
    return (
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN {kind} NKEY SEED-----\n{text}\n------END {kind} NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def format_user_creds(token: str, seed: str | bytes) -> str:
    """A .creds file for a user JWT and its seed (FormatUserConfig).

    Raises:
        CredsError: ``token`` is not a user JWT or ``seed`` not a user seed.
    """
    if not isinstance(decode(token), UserClaims):
        raise CredsError("only user JWTs can be serialized as a user config")
    if not _as_text(seed).strip().startswith("SU"):
        raise CredsError("nkey seed is not an user seed")
    return decorate_jwt(token, "user") + decorate_seed(seed)


def decode_generic(token: str) -> tuple[str, str, dict]:
    """Go's DecodeGeneric: any signed JWT as (subject, issuer, data), ``data`` being its
    ``nats`` object (version 2) or its top-level fields (version 1). The signature is
    checked against ``iss``; the claim type is not.

    Raises:
        DecodeError: malformed token.
        SignatureError: the signature does not verify with ``iss``.
    """
    if not isinstance(token, str):
        raise DecodeError("token must be a string")
    chunks = token.split(".")
    if len(chunks) != 3:
        raise DecodeError("expected 3 chunks")
    header = _parse_json_segment(chunks[0])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() not in (ALGORITHM_NKEY_V1, ALGORITHM_NKEY):
        raise DecodeError(f"unexpected {alg!r} algorithm")
    body = _parse_json_segment(chunks[1])
    sig = _b64url_decode(chunks[2])
    v1 = alg.lower() == ALGORITHM_NKEY_V1
    signed = chunks[1] if v1 else f"{chunks[0]}.{chunks[1]}"
    issuer, subject = body.get("iss"), body.get("sub")
    if not isinstance(issuer, str) or not isinstance(subject, str):
        raise DecodeError("invalid JSON")
    try:
        key = nkeys.KeyPair.from_public_key(issuer)
    except nkeys.NkeysError:
        raise SignatureError(f"claim failed V{1 if v1 else 2} signature verification") from None
    if not key.verify(signed.encode("ascii"), sig):
        raise SignatureError(f"claim failed V{1 if v1 else 2} signature verification")
    nats = body.get("nats")
    data = dict(nats) if isinstance(nats, dict) else {
        k: v for k, v in body.items() if k not in ("jti", "iat", "iss", "name", "sub", "exp",
                                                   "nbf", "aud")}
    return subject, issuer, data
