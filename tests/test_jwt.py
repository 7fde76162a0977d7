"""NATS JWTs: encode/decode, validation, the trust chain, templates, creds, the memory resolver.

The last test mints an operator, accounts and users here and has the Go nats-server (Debian's
2.9.10) accept and reject them, so the encoding is checked against the reference server.
"""

import asyncio
import base64
import datetime
import json
import os
import shutil
import socket
import subprocess
import time
import zoneinfo

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsx.auth import jwt, nkeys
from natsx.auth.resolver import MemoryResolver, MissingAccountError, ResolverError

NOW = 1_700_000_000


def _kp(prefix):
    return nkeys.KeyPair.create(prefix)


@pytest.fixture
def op():
    return _kp(nkeys.PREFIX_BYTE_OPERATOR)


@pytest.fixture
def acc():
    return _kp(nkeys.PREFIX_BYTE_ACCOUNT)


@pytest.fixture
def usr():
    return _kp(nkeys.PREFIX_BYTE_USER)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj) -> str:
    return _b64(json.dumps(obj).encode())


def _payload(token: str) -> dict:
    seg = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


def _handcraft(header: dict, claims: dict, signer, *, v1=False) -> str:
    h, p = _segment(header), _segment(claims)
    signed = p if v1 else f"{h}.{p}"
    return f"{h}.{p}.{_b64(signer.sign(signed.encode()))}"


def _account(acc, op, **kw):
    return jwt.decode_account_claims(jwt.encode(jwt.AccountClaims(subject=acc.public_key, name="A", **kw), op, issued_at=NOW - 100))


def _user(usr, signer, *, issued_at=NOW - 10, **kw):
    return jwt.decode_user_claims(jwt.encode(jwt.UserClaims(subject=usr.public_key, **kw), signer, issued_at=issued_at))


# ---------------------------------------------------------------------------
# Encode / decode round trips
# ---------------------------------------------------------------------------


def test_operator_round_trip(op):
    sk = _kp(nkeys.PREFIX_BYTE_OPERATOR)
    sys = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    claims = jwt.OperatorClaims(
        subject=op.public_key,
        name="OP",
        signing_keys=(sk.public_key,),
        account_server_url="http://localhost:9090/jwt/v1",
        operator_service_urls=("nats://localhost:4222",),
        system_account=sys.public_key,
        assert_server_version="2.9.0",
        strict_signing_key_usage=True,
        tags=("env:test",),
        expires=NOW + 3600,
    )
    token = jwt.encode(claims, op, issued_at=NOW)
    got = jwt.decode_operator_claims(token)
    assert got == attrs.evolve(claims, issuer=op.public_key, issued_at=NOW, id=got.id)
    assert got.is_self_signed()
    assert len(got.id) == 52
    assert jwt.validate(got, NOW) == ()
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert _payload(token)["nats"]["type"] == "operator"
    assert _payload(token)["nats"]["version"] == 2


def test_account_round_trip_keeps_every_field(op, acc):
    sk = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    scoped = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    other = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    user = _kp(nkeys.PREFIX_BYTE_USER)
    scope = jwt.UserScope(
        key=scoped.public_key,
        role="dev",
        template=jwt.UserPermissionLimits(pub=jwt.Permission(allow=("{{name()}}.>",)), subs=10),
    )
    claims = jwt.AccountClaims(
        subject=acc.public_key,
        name="ACME",
        tags=("team:core",),
        imports=(jwt.Import(name="i", subject="events.>", account=other.public_key, type="stream", local_subject="theirs.>"),),
        exports=(
            jwt.Export(subject="svc.b", type="service", response_type="Stream", response_threshold=2_000_000_000,
                       service_latency=jwt.ServiceLatency(sampling=50, results="lat.b"), revocations={user.public_key: NOW}),
            jwt.Export(subject="feed.*", type="stream", token_req=True, account_token_position=2, advertise=True),
        ),
        limits=jwt.OperatorLimits(
            subs=100, conn=5, leaf=1, payload=1024, data=-1, imports=3, exports=4, wildcards=True,
            tiered_limits={"R1": jwt.JetStreamLimits(mem_storage=1 << 20, disk_storage=1 << 30, streams=10, consumer=100)},
        ),
        signing_keys={sk.public_key: None, scoped.public_key: scope},
        revocations={jwt.ALL: NOW - 5, user.public_key: NOW},
        default_permissions=jwt.Permissions(sub=jwt.Permission(deny=("secret.>",)), resp=jwt.ResponsePermission(max_msgs=1, expires=5_000_000_000)),
        mappings={"orders.*": (jwt.WeightedMapping(subject="orders.$1.a", weight=60), jwt.WeightedMapping(subject="orders.$1.b", weight=40))},
        authorization=jwt.ExternalAuthorization(auth_users=(user.public_key,), allowed_accounts=(jwt.ALL,)),
        trace=jwt.MsgTrace(dest="trace.acme", sampling=10),
        description="the acme account",
        info_url="https://example.com/acme",
    )
    token = jwt.encode(claims, op, issued_at=NOW)
    got = jwt.decode_account_claims(token)
    expected = attrs.evolve(
        claims,
        issuer=op.public_key,
        issued_at=NOW,
        id=got.id,
        exports=tuple(sorted(claims.exports, key=lambda e: e.subject)),
    )
    assert got == expected
    assert got.signing_keys[scoped.public_key].template.subs == 10
    assert got.signing_keys[sk.public_key] is None
    assert got.limits.is_js_enabled()
    nats = _payload(token)["nats"]
    assert nats["signing_keys"][0] == sk.public_key
    assert nats["signing_keys"][1]["kind"] == "user_scope"
    assert nats["exports"][0]["subject"] == "feed.*"  # sorted by subject, as Go does
    assert nats["limits"]["tiered_limits"]["R1"]["streams"] == 10
    assert nats["default_permissions"]["resp"] == {"max": 1, "ttl": 5_000_000_000}
    assert [i.description for i in jwt.validate(got, NOW) if i.blocking] == []


def test_user_round_trip_and_go_zero_values(acc, usr):
    limits = jwt.UserPermissionLimits(
        pub=jwt.Permission(allow=("a.>",), deny=("a.b",)),
        sub=jwt.Permission(allow=("_INBOX.>", "q.* workers")),
        resp=jwt.ResponsePermission(max_msgs=3, expires=60_000_000_000),
        src=("192.168.0.0/16", "::1/128"),
        times=(jwt.TimeRange(start="08:00:00", end="17:00:00"),),
        times_location="America/New_York",
        subs=10, data=2048, payload=512,
        bearer_token=True,
        allowed_connection_types=("STANDARD", "WEBSOCKET"),
    )
    token = jwt.encode(jwt.UserClaims(subject=usr.public_key, name="bob", permission_limits=limits), acc, issued_at=NOW)
    got = jwt.decode_user_claims(token)
    assert got.permission_limits == limits
    assert got.account == acc.public_key
    nats = _payload(token)["nats"]
    assert nats["src"] == ["192.168.0.0/16", "::1/128"]
    assert nats["bearer_token"] is True
    # New claims are unlimited like NewUserClaims, but absent keys decode to Go's zero.
    assert jwt.UserPermissionLimits().subs == jwt.NO_LIMIT
    bare = _handcraft({"typ": "JWT", "alg": "ed25519-nkey"},
                      {"iss": acc.public_key, "sub": usr.public_key, "iat": NOW, "nats": {"type": "user", "version": 2}}, acc)
    zero = jwt.decode_user_claims(bare)
    assert (zero.permission_limits.subs, zero.permission_limits.payload) == (0, 0)
    assert zero.permission_limits.is_empty()
    # CIDRList also accepts a comma separated string.
    csv = _handcraft({"typ": "JWT", "alg": "ed25519-nkey"},
                     {"iss": acc.public_key, "sub": usr.public_key, "nats": {"type": "user", "version": 2, "src": "10.0.0.0/8, 1.2.3.4/32"}}, acc)
    assert jwt.decode_user_claims(csv).permission_limits.src == ("10.0.0.0/8", "1.2.3.4/32")


def test_activation_round_trip(acc):
    importer = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    claims = jwt.ActivationClaims(subject=importer.public_key, import_subject="feed.x", import_type="stream")
    got = jwt.decode(jwt.encode(claims, acc, issued_at=NOW))
    assert isinstance(got, jwt.ActivationClaims)
    assert (got.import_subject, got.import_type, got.issuer) == ("feed.x", "stream", acc.public_key)


def test_legacy_header_and_version_1_tokens(op, acc, usr):
    # The v2 library still reads "alg":"ed25519" and v1 layouts (type and tags at the top,
    # signature over the payload segment only).
    v2_legacy_alg = _handcraft({"typ": "jwt", "alg": "ed25519"},
                               {"iss": acc.public_key, "sub": usr.public_key, "nats": {"type": "user", "version": 2}}, acc)
    assert jwt.decode_user_claims(v2_legacy_alg).subject == usr.public_key
    v1 = _handcraft({"typ": "JWT", "alg": "ed25519"},
                    {"iss": op.public_key, "sub": acc.public_key, "type": "account", "tags": ["x"],
                     "nats": {"limits": {"conn": 2}, "signing_keys": [acc.public_key]}}, op, v1=True)
    got = jwt.decode_account_claims(v1)
    assert (got.version, got.tags, got.limits.conn) == (1, ("x",), 2)
    assert acc.public_key in got.signing_keys
    v1_user_max = _handcraft({"typ": "JWT", "alg": "ed25519"},
                             {"iss": acc.public_key, "sub": usr.public_key, "type": "user", "nats": {"max": 5}}, acc, v1=True)
    with pytest.raises(jwt.DecodeError):
        jwt.decode(v1_user_max)


# ---------------------------------------------------------------------------
# Rejections
# ---------------------------------------------------------------------------


def test_bad_signature_rejected(acc, usr):
    token = jwt.encode(jwt.UserClaims(subject=usr.public_key), acc, issued_at=NOW)
    h, p, s = token.split(".")
    claims = _payload(token)
    claims["name"] = "mallory"
    with pytest.raises(jwt.SignatureError):
        jwt.decode(f"{h}.{_segment(claims)}.{s}")
    other = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    with pytest.raises(jwt.SignatureError):
        jwt.decode(f"{h}.{p}.{_b64(other.sign(f'{h}.{p}'.encode()))}")
    with pytest.raises(jwt.SignatureError):
        jwt.decode(f"{h}.{p}.{_b64(bytes(64))}")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "!!!.e30.e30",
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ==.e30.e30",
    ],
)
def test_malformed_tokens_rejected(token):
    with pytest.raises(jwt.DecodeError):
        jwt.decode(token)


def test_bad_headers_and_claims_rejected(acc, usr):
    def tok(header, nats):
        return _handcraft(header, {"iss": acc.public_key, "sub": usr.public_key, "nats": nats}, acc)

    good_header = {"typ": "JWT", "alg": "ed25519-nkey"}
    for header in ({"typ": "JWS", "alg": "ed25519-nkey"}, {"typ": "JWT", "alg": "HS256"}, {"alg": "ed25519-nkey"}):
        with pytest.raises(jwt.DecodeError):
            jwt.decode(tok(header, {"type": "user", "version": 2}))
    for nats in (
        {"type": "user", "version": 3},  # newer than we know
        {"type": "user"},  # version 0
        {"type": "server", "version": 2},
        {"type": "user", "version": 2, "subs": "ten"},
        {"type": "user", "version": 2, "subs": 1.5},
        {"type": "user", "version": 2, "pub": {"allow": "a.b"}},
    ):
        with pytest.raises(jwt.DecodeError):
            jwt.decode(tok(good_header, nats))
    with pytest.raises(jwt.DecodeError):
        jwt.decode_account_claims(tok(good_header, {"type": "user", "version": 2}))


def test_wrong_issuer_type_rejected(op, acc, usr):
    # A user must be issued by an account, an account by an operator or itself.
    with pytest.raises(jwt.IssuerError):
        jwt.encode(jwt.UserClaims(subject=usr.public_key), op)
    with pytest.raises(jwt.IssuerError):
        jwt.encode(jwt.OperatorClaims(subject=op.public_key), acc)
    user_by_op = _handcraft({"typ": "JWT", "alg": "ed25519-nkey"},
                            {"iss": op.public_key, "sub": usr.public_key, "nats": {"type": "user", "version": 2}}, op)
    with pytest.raises(jwt.IssuerError):
        jwt.decode(user_by_op)
    acct_by_user = _handcraft({"typ": "JWT", "alg": "ed25519-nkey"},
                              {"iss": usr.public_key, "sub": acc.public_key, "nats": {"type": "account", "version": 2}}, usr)
    with pytest.raises(jwt.IssuerError):
        jwt.decode(acct_by_user)
    # The subject must have the claim's role too.
    with pytest.raises(jwt.JWTError):
        jwt.encode(jwt.UserClaims(subject=acc.public_key), acc)
    with pytest.raises(jwt.JWTError):
        jwt.encode(jwt.UserClaims(), acc)
    # Self-signed accounts are allowed.
    assert jwt.decode(jwt.encode(jwt.AccountClaims(subject=acc.public_key), acc)).is_self_signed()


def test_expired_and_not_yet_valid(acc, usr):
    expired = _user(usr, acc, expires=NOW - 1)
    assert [i.description for i in jwt.validate(expired, NOW)] == ["claim is expired"]
    assert jwt.is_blocking(jwt.validate(expired, NOW))
    assert not jwt.is_blocking(jwt.validate(expired, NOW), include_time_checks=False)
    with pytest.raises(jwt.ExpiredError):
        jwt.check(expired, NOW)
    # Go compares with now > exp: the expiry second itself is still valid.
    assert jwt.check(expired, NOW - 1) is expired
    early = _user(usr, acc, not_before=NOW + 60)
    with pytest.raises(jwt.NotYetValidError):
        jwt.check(early, NOW)
    assert jwt.check(early, NOW + 60) is early
    account = _account(acc, acc)
    with pytest.raises(jwt.ExpiredError):
        jwt.authorize_user(expired, account, NOW)


def test_validation_errors_block(acc, usr):
    bad = _user(usr, acc, permission_limits=jwt.UserPermissionLimits(
        pub=jwt.Permission(allow=("a b",)), src=("10.0.0.1",), times=(jwt.TimeRange(start="25:00:00", end="x"),),
        times_location="Mars/Olympus"))
    issues = [i.description for i in jwt.validate(bad, NOW)]
    assert any("not allowed to contain queue" in d for d in issues)
    assert any("invalid cidr" in d for d in issues)
    assert any("start in time range is invalid" in d for d in issues)
    assert any("iana time zone" in d for d in issues)
    with pytest.raises(jwt.ValidationError) as exc:
        jwt.check(bad, NOW)
    assert exc.value.issues


def test_account_validation(op, acc):
    other = _kp(nkeys.PREFIX_BYTE_ACCOUNT)

    def errors(**kw):
        return [i.description for i in jwt.validate(jwt.AccountClaims(subject=acc.public_key, issuer=op.public_key, **kw), NOW) if i.blocking]

    assert errors() == []
    assert errors(exports=(jwt.Export(subject="a.>", type="stream"), jwt.Export(subject="a.b", type="stream")))
    assert errors(exports=(jwt.Export(subject="a.b", type="stream", response_type="Singleton"),))
    assert errors(limits=jwt.OperatorLimits(exports=1, wildcards=False), exports=(jwt.Export(subject="a.*", type="stream"),))
    assert errors(limits=jwt.OperatorLimits(imports=0), imports=(jwt.Import(subject="x", account=other.public_key, type="stream"),))
    assert errors(limits=jwt.OperatorLimits(jetstream=jwt.JetStreamLimits(streams=1), tiered_limits={"R1": jwt.JetStreamLimits()}))
    assert errors(mappings={"a": (jwt.WeightedMapping(subject="b", weight=70), jwt.WeightedMapping(subject="c", weight=70))})
    assert errors(signing_keys={"not-a-key": None})
    assert errors(authorization=jwt.ExternalAuthorization(allowed_accounts=(other.public_key,)))
    assert errors(imports=(jwt.Import(subject="x.>", account=other.public_key, type="stream", local_subject="y"),))


# ---------------------------------------------------------------------------
# Revocations and signing keys
# ---------------------------------------------------------------------------


def test_is_revoked_semantics():
    # server accounts.go isRevoked: revoked when the revocation time is >= iat.
    assert not jwt.is_revoked({}, "U1", NOW)
    assert jwt.is_revoked({"U1": NOW}, "U1", NOW)
    assert jwt.is_revoked({"U1": NOW}, "U1", NOW - 1)
    assert not jwt.is_revoked({"U1": NOW}, "U1", NOW + 1)
    assert not jwt.is_revoked({"U1": NOW}, "U2", NOW - 1)
    assert jwt.is_revoked({jwt.ALL: NOW}, "U2", NOW - 1)
    assert not jwt.is_revoked({jwt.ALL: NOW}, "U2", NOW + 1)


def test_revoked_user_rejected(acc, usr):
    user = _user(usr, acc, issued_at=NOW - 10)
    assert jwt.authorize_user(user, _account(acc, acc), NOW) == user
    for revocations in ({usr.public_key: NOW - 10}, {jwt.ALL: NOW - 5}):
        with pytest.raises(jwt.RevokedError):
            jwt.authorize_user(user, _account(acc, acc, revocations=revocations), NOW)
    # A JWT issued after the revocation is accepted again.
    fresh = _user(usr, acc, issued_at=NOW)
    assert jwt.authorize_user(fresh, _account(acc, acc, revocations={usr.public_key: NOW - 10}), NOW)


def test_signing_keys(op, acc, usr):
    sk = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    account = _account(acc, op, signing_keys={sk.public_key: None})
    by_sk = _user(usr, sk, issuer_account=acc.public_key)
    assert account.did_sign(by_sk)
    assert jwt.authorize_user(by_sk, account, NOW) == by_sk
    # Not listed: rejected.
    rogue = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    with pytest.raises(jwt.IssuerError):
        jwt.authorize_user(_user(usr, rogue, issuer_account=acc.public_key), account, NOW)
    # A user signed by a key but claiming no issuer_account belongs to that key's "account".
    with pytest.raises(jwt.IssuerError):
        jwt.authorize_user(_user(usr, sk), account, NOW)
    # With strict signing key usage the account's own key no longer issues users.
    by_account = _user(usr, acc)
    assert jwt.authorize_user(by_account, account, NOW)
    with pytest.raises(jwt.IssuerError):
        jwt.authorize_user(by_account, account, NOW, strict=True)
    assert jwt.authorize_user(by_sk, account, NOW, strict=True)


def test_account_trust_via_operator_signing_keys(op, acc):
    op_sk = _kp(nkeys.PREFIX_BYTE_OPERATOR)
    operator = jwt.decode_operator_claims(
        jwt.encode(jwt.OperatorClaims(subject=op.public_key, signing_keys=(op_sk.public_key,)), op))
    trusted = jwt.trusted_keys([operator])
    assert trusted == (op.public_key, op_sk.public_key)
    token = jwt.encode(jwt.AccountClaims(subject=acc.public_key), op_sk, issued_at=NOW)
    assert jwt.verify_account(token, trusted, NOW, name=acc.public_key).issuer == op_sk.public_key
    assert operator.did_sign(jwt.decode(token))
    with pytest.raises(jwt.IssuerError):
        jwt.verify_account(token, trusted, NOW, name=_kp(nkeys.PREFIX_BYTE_ACCOUNT).public_key)
    strict = attrs.evolve(operator, strict_signing_key_usage=True)
    assert jwt.trusted_keys([strict]) == (op_sk.public_key,)
    with pytest.raises(jwt.IssuerError):
        jwt.verify_account(jwt.encode(jwt.AccountClaims(subject=acc.public_key), op, issued_at=NOW),
                           jwt.trusted_keys([strict]), NOW)
    with pytest.raises(jwt.IssuerError):
        jwt.verify_account(token, (_kp(nkeys.PREFIX_BYTE_OPERATOR).public_key,), NOW)
    expiring = jwt.encode(jwt.AccountClaims(subject=acc.public_key, expires=NOW - 1), op, issued_at=NOW - 10)
    with pytest.raises(jwt.ExpiredError):
        jwt.verify_account(expiring, trusted, NOW)


def test_bearer_tokens_and_disallow_bearer(acc, usr):
    bearer = _user(usr, acc, permission_limits=jwt.UserPermissionLimits(bearer_token=True))
    assert jwt.authorize_user(bearer, _account(acc, acc), NOW)
    with pytest.raises(jwt.JWTError):
        jwt.authorize_user(bearer, _account(acc, acc, limits=jwt.OperatorLimits(disallow_bearer=True)), NOW)


def test_expired_account_rejects_its_users(acc, usr):
    account = _account(acc, acc, expires=NOW)
    with pytest.raises(jwt.ExpiredError):
        jwt.authorize_user(_user(usr, acc), account, NOW)


# ---------------------------------------------------------------------------
# Scoped signing keys and templates
# ---------------------------------------------------------------------------


def _scoped_setup(acc, template, *, account_tags=(), name="ACME"):
    scoped = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    scope = jwt.UserScope(key=scoped.public_key, role="r", template=template)
    account = jwt.decode_account_claims(jwt.encode(
        jwt.AccountClaims(subject=acc.public_key, name=name, tags=account_tags, signing_keys={scoped.public_key: scope}), acc, issued_at=NOW))
    return scoped, account


def test_scoped_template_expansion(acc, usr):
    template = jwt.UserPermissionLimits(
        pub=jwt.Permission(allow=("{{name()}}.>", "{{subject()}}.x", "acct.{{account-name()}}", "id.{{account-subject()}}"),
                           deny=("{{ name() }}.secret",)),
        sub=jwt.Permission(allow=("dept.{{tag(dept)}}.{{account-tag(region)}}",)),
        subs=5,
    )
    scoped, account = _scoped_setup(acc, template, account_tags=("region:eu", "region:us"))
    user = _user(usr, scoped, name="alice", issuer_account=acc.public_key, tags=("dept:sales", "dept:ops", "other:x"),
                 permission_limits=jwt.UserPermissionLimits.empty())
    effective = jwt.authorize_user(user, account, NOW)
    lim = effective.permission_limits
    assert lim.pub.allow == ("alice.>", f"{usr.public_key}.x", "acct.ACME", f"id.{acc.public_key}")
    assert lim.pub.deny == ("alice.secret",)
    assert lim.sub.allow == ("dept.sales.eu", "dept.sales.us", "dept.ops.eu", "dept.ops.us")
    assert lim.subs == 5  # the template's limits replace the user's
    assert jwt.expand_user_template(template, user, account) == lim


def test_scoped_template_failures(acc, usr):
    def expand(pub_allow=(), pub_deny=(), sub_allow=(), name="alice", tags=()):
        template = jwt.UserPermissionLimits(pub=jwt.Permission(allow=pub_allow, deny=pub_deny), sub=jwt.Permission(allow=sub_allow))
        scoped, account = _scoped_setup(acc, template)
        user = _user(usr, scoped, name=name, issuer_account=acc.public_key, tags=tags, permission_limits=jwt.UserPermissionLimits.empty())
        return jwt.expand_user_template(template, user, account)

    # A missing tag in an allow list drops the entry; an allow list emptied becomes deny ">".
    lim = expand(pub_allow=("a.{{tag(missing)}}",), sub_allow=("ok.>", "b.{{tag(missing)}}"))
    assert lim.pub.allow == () and lim.pub.deny == (">",)
    assert lim.sub.allow == ("ok.>",) and lim.sub.deny == ()
    # An invalid subject in an allow list (empty name) is dropped too.
    assert expand(pub_allow=("{{name()}}.x",), name="").pub.deny == (">",)
    with pytest.raises(jwt.TemplateError):
        expand(pub_deny=("a.{{tag(missing)}}",))
    with pytest.raises(jwt.TemplateError):
        expand(pub_allow=("{{nope()}}",))
    with pytest.raises(jwt.TemplateError):
        expand(pub_deny=("{{name()}}.x",), name="")
    many = tuple(f"t:{i}" for i in range(65))
    with pytest.raises(jwt.TemplateError):
        expand(pub_allow=("{{tag(t)}}.{{tag(t)}}",), tags=many)


def test_scoped_user_must_not_carry_permissions(acc, usr):
    scoped, account = _scoped_setup(acc, jwt.UserPermissionLimits(pub=jwt.Permission(allow=("x",))))
    # UserClaims() defaults to unlimited (-1) limits, which is not "empty".
    user = _user(usr, scoped, issuer_account=acc.public_key)
    with pytest.raises(jwt.IssuerError):
        jwt.authorize_user(user, account, NOW)
    empty = _user(usr, scoped, issuer_account=acc.public_key, permission_limits=jwt.UserPermissionLimits.empty())
    assert jwt.authorize_user(empty, account, NOW).permission_limits.pub.allow == ("x",)


def test_scope_template_defaults_to_unlimited(acc):
    # NewUserScope starts the template unlimited, so absent limits decode as -1.
    scoped = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    token = _handcraft({"typ": "JWT", "alg": "ed25519-nkey"}, {
        "iss": acc.public_key, "sub": acc.public_key,
        "nats": {"type": "account", "version": 2,
                 "signing_keys": [{"kind": "user_scope", "key": scoped.public_key, "role": "r", "template": {}}]}}, acc)
    scope = jwt.decode_account_claims(token).signing_keys[scoped.public_key]
    assert (scope.template.subs, scope.template.data, scope.template.payload) == (-1, -1, -1)
    bad = _handcraft({"typ": "JWT", "alg": "ed25519-nkey"}, {
        "iss": acc.public_key, "sub": acc.public_key,
        "nats": {"type": "account", "version": 2, "signing_keys": [{"kind": "other", "key": scoped.public_key}]}}, acc)
    with pytest.raises(jwt.DecodeError):
        jwt.decode(bad)


# ---------------------------------------------------------------------------
# Activations (private imports)
# ---------------------------------------------------------------------------


def test_check_activation(acc):
    exporter_kp, importer_kp = acc, _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    sk = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    export = jwt.Export(subject="private.>", type="stream", token_req=True)
    exporter = _account(exporter_kp, exporter_kp, exports=(export,), signing_keys={sk.public_key: None})

    def activation(signer=exporter_kp, **kw):
        claims = jwt.ActivationClaims(subject=importer_kp.public_key, import_subject="private.>", import_type="stream", **kw)
        return jwt.encode(claims, signer, issued_at=NOW - 10)

    def imp(token, subject="private.a"):
        return jwt.Import(subject=subject, account=exporter_kp.public_key, token=token, type="stream")

    act = jwt.check_activation(imp(activation()), importer_kp.public_key, exporter, NOW, export=export)
    assert act.subject == importer_kp.public_key
    via_sk = activation(sk, issuer_account=exporter_kp.public_key)
    assert jwt.check_activation(imp(via_sk), importer_kp.public_key, exporter, NOW).issuer == sk.public_key
    rogue = _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    with pytest.raises(jwt.IssuerError):
        jwt.check_activation(imp(activation(rogue, issuer_account=exporter_kp.public_key)), importer_kp.public_key, exporter, NOW)
    with pytest.raises(jwt.ValidationError):  # issued by someone else entirely
        jwt.check_activation(imp(activation(rogue)), importer_kp.public_key, exporter, NOW)
    with pytest.raises(jwt.ValidationError):  # for another account
        jwt.check_activation(imp(activation()), rogue.public_key, exporter, NOW)
    with pytest.raises(jwt.ValidationError):  # outside the activated subject
        jwt.check_activation(imp(activation(), subject="other.a"), importer_kp.public_key, exporter, NOW)
    with pytest.raises(jwt.ExpiredError):
        jwt.check_activation(imp(activation(expires=NOW)), importer_kp.public_key, exporter, NOW)
    revoked = attrs.evolve(export, revocations={importer_kp.public_key: NOW})
    with pytest.raises(jwt.RevokedError):
        jwt.check_activation(imp(activation()), importer_kp.public_key, exporter, NOW, export=revoked)


# ---------------------------------------------------------------------------
# Connection-time checks
# ---------------------------------------------------------------------------


def test_validate_src(acc, usr):
    user = _user(usr, acc, permission_limits=jwt.UserPermissionLimits(src=("192.168.1.0/24", "2001:db8::/32")))
    assert jwt.validate_src(user, "192.168.1.7")
    assert jwt.validate_src(user, "::ffff:192.168.1.7")
    assert jwt.validate_src(user, "2001:db8::1")
    assert not jwt.validate_src(user, "10.0.0.1")
    assert not jwt.validate_src(user, "")
    assert not jwt.validate_src(user, "not-an-ip")
    assert jwt.validate_src(_user(usr, acc), "")


def test_validate_times(acc, usr):
    utc = datetime.timezone.utc

    def at(hh, mm=0):
        return datetime.datetime(2024, 3, 1, hh, mm, tzinfo=utc).timestamp()

    office = _user(usr, acc, permission_limits=jwt.UserPermissionLimits(times=(jwt.TimeRange(start="09:00:00", end="17:00:00"),)))
    assert jwt.validate_times(office, at(12), utc) == (True, 5 * 3600)
    assert jwt.validate_times(office, at(18), utc) == (False, 0.0)
    night = _user(usr, acc, permission_limits=jwt.UserPermissionLimits(times=(jwt.TimeRange(start="22:00:00", end="06:00:00"),)))
    assert jwt.validate_times(night, at(5), utc) == (True, 3600)
    assert jwt.validate_times(night, at(23, 30), utc) == (True, 6.5 * 3600)
    assert jwt.validate_times(night, at(12), utc)[0] is False
    # times_location overrides the server's zone: 09:00-17:00 in New York is 14:00-22:00 UTC.
    ny = _user(usr, acc, permission_limits=jwt.UserPermissionLimits(
        times=(jwt.TimeRange(start="09:00:00", end="17:00:00"),), times_location="America/New_York"))
    assert jwt.validate_times(ny, at(12), utc)[0] is False
    assert jwt.validate_times(ny, at(15), zoneinfo.ZoneInfo("Asia/Tokyo")) == (True, 7 * 3600)
    assert jwt.validate_times(_user(usr, acc), at(3)) == (True, 0.0)


# ---------------------------------------------------------------------------
# .creds files
# ---------------------------------------------------------------------------


def test_creds_round_trip(acc, usr):
    token = jwt.encode(jwt.UserClaims(subject=usr.public_key), acc)
    text = jwt.format_user_creds(token, usr.seed)
    assert text.startswith("-----BEGIN NATS USER JWT-----\n")
    assert "------END USER NKEY SEED------" in text
    assert jwt.parse_creds(text) == (token, usr.seed)
    assert jwt.parse_creds(text.replace("\n", "\r\n").encode()) == (token, usr.seed)
    assert jwt.parse_decorated_jwt(token + "\n") == token
    assert jwt.parse_decorated_jwt(jwt.decorate_jwt(token)) == token
    # A seed outside banners is found line by line.
    bare = f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n  {usr.seed.decode()}\n"
    assert jwt.parse_creds(bare) == (token, usr.seed)
    with pytest.raises(jwt.CredsError):
        jwt.parse_creds(f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n")
    with pytest.raises(jwt.CredsError):
        jwt.parse_creds("nothing here")
    with pytest.raises(jwt.CredsError):
        jwt.format_user_creds(token, acc.seed)
    with pytest.raises(jwt.CredsError):
        jwt.format_user_creds(jwt.encode(jwt.AccountClaims(subject=acc.public_key), acc), usr.seed)


def test_creds_are_read_by_nats_py(tmp_path, acc, usr):
    # nats-py's own creds reader must find the same JWT and seed.
    from nats.aio.client import Client

    token = jwt.encode(jwt.UserClaims(subject=usr.public_key), acc)
    path = tmp_path / "u.creds"
    path.write_text(jwt.format_user_creds(token, usr.seed))
    client = Client()
    client._user_credentials = str(path)
    client._setup_nkeys_jwt_connect()
    assert bytes(client._user_jwt_cb()).decode() == token
    sig = client._signature_cb("nonce")  # standard base64, which CONNECT sig also accepts
    assert nkeys.verify_signature(usr.public_key, b"nonce", sig.decode())


# ---------------------------------------------------------------------------
# MemoryResolver
# ---------------------------------------------------------------------------


def test_memory_resolver(op, acc):
    token = jwt.encode(jwt.AccountClaims(subject=acc.public_key), op, issued_at=NOW)
    resolver = MemoryResolver.from_preload({acc.public_key: token})
    assert resolver.fetch(acc.public_key) == token
    assert acc.public_key in resolver and len(resolver) == 1
    assert not resolver.is_read_only
    other = _kp(nkeys.PREFIX_BYTE_ACCOUNT).public_key
    with pytest.raises(MissingAccountError):
        resolver.fetch(other)
    resolver.store(other, token)
    assert sorted(resolver) == sorted([acc.public_key, other])
    user_token = jwt.encode(jwt.UserClaims(subject=_kp(nkeys.PREFIX_BYTE_USER).public_key), acc)
    fresh = MemoryResolver()
    with pytest.raises(ResolverError):
        fresh.preload({acc.public_key: token, other: user_token})
    assert len(fresh) == 0  # nothing stored from a failed preload
    expired = jwt.encode(jwt.AccountClaims(subject=acc.public_key, expires=NOW - 1), op, issued_at=NOW - 10)
    fresh.preload({acc.public_key: expired})  # accepted, only reported
    assert list(MemoryResolver.preload_issues({acc.public_key: expired}, NOW)) == [acc.public_key]
    assert MemoryResolver.preload_issues({acc.public_key: token}, NOW) == {}


# ---------------------------------------------------------------------------
# Against the Go server
# ---------------------------------------------------------------------------

GO_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@pytest.mark.differential
@pytest.mark.skipif(not os.path.exists(GO_SERVER), reason="needs the Go nats-server")
def test_go_server_accepts_and_rejects_our_jwts(tmp_path):
    import nats
    import nats.errors

    now = int(time.time())
    op = _kp(nkeys.PREFIX_BYTE_OPERATOR)
    sys_acc, acc = _kp(nkeys.PREFIX_BYTE_ACCOUNT), _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    sk, scoped = _kp(nkeys.PREFIX_BYTE_ACCOUNT), _kp(nkeys.PREFIX_BYTE_ACCOUNT)
    good, by_sk, by_scope, revoked, expired, rogue_user = (_kp(nkeys.PREFIX_BYTE_USER) for _ in range(6))
    rogue_signer = _kp(nkeys.PREFIX_BYTE_ACCOUNT)

    template = jwt.UserPermissionLimits(pub=jwt.Permission(allow=("{{name()}}.>",)), sub=jwt.Permission(allow=("{{name()}}.>",)))
    (tmp_path / "op.jwt").write_text(jwt.encode(jwt.OperatorClaims(subject=op.public_key, system_account=sys_acc.public_key), op))
    sys_jwt = jwt.encode(jwt.AccountClaims(subject=sys_acc.public_key, name="SYS"), op)
    acc_jwt = jwt.encode(jwt.AccountClaims(
        subject=acc.public_key, name="APP",
        signing_keys={sk.public_key: None, scoped.public_key: jwt.UserScope(key=scoped.public_key, role="r", template=template)},
        revocations={revoked.public_key: now}), op)
    from conftest import free_port

    port = free_port()
    (tmp_path / "server.conf").write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'operator: "{tmp_path / "op.jwt"}"\n'
        f'system_account: "{sys_acc.public_key}"\n'
        "resolver: MEMORY\n"
        f'resolver_preload: {{\n  {sys_acc.public_key}: "{sys_jwt}"\n  {acc.public_key}: "{acc_jwt}"\n}}\n'
    )
    users = {
        "good": (good, jwt.encode(jwt.UserClaims(subject=good.public_key, name="good"), acc)),
        "by_sk": (by_sk, jwt.encode(jwt.UserClaims(subject=by_sk.public_key, issuer_account=acc.public_key), sk)),
        "by_scope": (by_scope, jwt.encode(jwt.UserClaims(
            subject=by_scope.public_key, name="alice", issuer_account=acc.public_key,
            permission_limits=jwt.UserPermissionLimits.empty()), scoped)),
        "revoked": (revoked, jwt.encode(jwt.UserClaims(subject=revoked.public_key), acc, issued_at=now - 60)),
        "expired": (expired, jwt.encode(jwt.UserClaims(subject=expired.public_key, expires=now - 1), acc, issued_at=now - 60)),
        "rogue": (rogue_user, jwt.encode(jwt.UserClaims(subject=rogue_user.public_key, issuer_account=acc.public_key), rogue_signer)),
    }
    for name, (kp, token) in users.items():
        (tmp_path / f"{name}.creds").write_text(jwt.format_user_creds(token, kp.seed))

    proc = subprocess.Popen([GO_SERVER, "-c", str(tmp_path / "server.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)

        async def try_connect(name):
            errors = []

            async def on_error(e):
                errors.append(str(e))

            try:
                nc = await nats.connect(f"nats://127.0.0.1:{port}", user_credentials=str(tmp_path / f"{name}.creds"),
                                        allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0, error_cb=on_error)
            except (nats.errors.Error, OSError, asyncio.TimeoutError) as e:
                return None, [str(e), *errors]
            return nc, errors

        async def scenario():
            results = {}
            for name in ("revoked", "expired", "rogue"):
                nc, errors = await try_connect(name)
                results[name] = nc is None and any("authorization violation" in e.lower() for e in errors)
                if nc is not None:
                    await nc.close()
            nc, _ = await try_connect("good")
            sub = await nc.subscribe("hello")
            await nc.publish("hello", b"world")
            msg = await sub.next_msg(timeout=2)
            results["good"] = msg.data == b"world"
            await nc.close()
            nc, _ = await try_connect("by_sk")
            results["by_sk"] = nc is not None and nc.is_connected
            await nc.close()
            # The Go server expands the scope template: alice may use alice.>, nothing else.
            errors = []
            nc, errors = await try_connect("by_scope")
            sub = await nc.subscribe("alice.in")
            await nc.publish("alice.in", b"ok")
            results["scoped_allowed"] = (await sub.next_msg(timeout=2)).data == b"ok"
            await nc.subscribe("bob.in")
            await nc.flush(timeout=2)
            await asyncio.sleep(0.2)
            results["scoped_denied"] = any("permissions violation" in e.lower() for e in errors)
            await nc.close()
            return results

        results = asyncio.run(scenario())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert results == {
        "revoked": True, "expired": True, "rogue": True, "good": True, "by_sk": True,
        "scoped_allowed": True, "scoped_denied": True,
    }


# ---------------------------------------------------------------------------
# Robustness and exports
# ---------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_nats_keys = st.sampled_from([
    "pub", "sub", "resp", "src", "times", "subs", "bearer_token", "imports", "exports", "limits",
    "signing_keys", "revocations", "default_permissions", "mappings", "authorization", "trace",
    "tags", "issuer_account", "kind", "subject", "allowed_connection_types", "tiered_limits",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["operator", "account", "user", "activation"]),
       extra=st.dictionaries(_nats_keys, _json_values, max_size=4))
def test_decode_only_raises_jwt_errors(acc, kind, extra):
    # Whatever a correctly signed token carries, decoding either works or raises JWTError.
    claims = {"iss": acc.public_key, "sub": acc.public_key, "nats": {**extra, "type": kind, "version": 2}}
    token = _handcraft({"typ": "JWT", "alg": "ed25519-nkey"}, claims, acc)
    try:
        decoded = jwt.decode(token)
    except jwt.JWTError:
        return
    jwt.validate(decoded, NOW)


def test_public_names_are_exported_once():
    for module in (jwt, nkeys):
        assert len(module.__all__) == len(set(module.__all__))
        for name in module.__all__:
            assert hasattr(module, name), name
