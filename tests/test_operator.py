"""Operator (JWT) mode: user JWT authentication, accounts from account JWTs, resolvers.

Black-box: keys and JWTs are minted at test time with natsx.auth (nothing secret is
committed), natsx is started with an operator config and driven with nats-py (``.creds``
files, ``user_jwt_cb``/``signature_cb``) and raw sockets; the raw answers (INFO fields,
-ERR lines) are compared with the Go server (/usr/sbin/nats-server) started with the same
config. Behaviour follows server/auth.go (processClientOrLeafAuthentication), accounts.go
(updateAccountClaimsWithRefresh, resolvers) and opts.go.
"""
from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import re
import socket
import threading
import time

import nats
import pytest

from conftest import GO_SERVER, NATSX, RunningServer, free_port
from natsx.auth import jwt, nkeys

pytestmark = pytest.mark.server

OP = nkeys.PREFIX_BYTE_OPERATOR
ACC = nkeys.PREFIX_BYTE_ACCOUNT
USR = nkeys.PREFIX_BYTE_USER


# ------------------------------------------------------------------ minting

class World:
    """An operator, a system account and accounts A (exporter) and B (importer)."""

    def __init__(self, **a_limits) -> None:
        self.op = nkeys.KeyPair.create(OP)
        self.sys = nkeys.KeyPair.create(ACC)
        self.a = nkeys.KeyPair.create(ACC)
        self.b = nkeys.KeyPair.create(ACC)
        self.op_jwt = jwt.encode(jwt.OperatorClaims(subject=self.op.public_key, name="test-op",
                                                    system_account=self.sys.public_key), self.op)
        self.accounts = {
            self.sys.public_key: self.account(self.sys, "SYS"),
            self.a.public_key: self.account(self.a, "A", exports=(
                jwt.Export(subject="events.>", type="stream"),
                jwt.Export(subject="svc.>", type="service")), **a_limits),
            self.b.public_key: self.account(self.b, "B", imports=(
                jwt.Import(subject="events.>", account=self.a.public_key, type="stream",
                           local_subject="a.events.>"),
                jwt.Import(subject="svc.echo", account=self.a.public_key, type="service",
                           local_subject="echo"))),
        }

    def account(self, kp, name, *, exports=(), imports=(), revocations=None, **limits) -> str:
        lim = jwt.OperatorLimits(**limits)
        claims = jwt.AccountClaims(subject=kp.public_key, name=name, exports=exports,
                                   imports=imports, limits=lim, revocations=revocations or {})
        return jwt.encode(claims, self.op)

    @staticmethod
    def user(account_kp, name="u", *, iat=None, **fields) -> tuple[nkeys.KeyPair, str]:
        ukp = nkeys.KeyPair.create(USR)
        lim = jwt.UserPermissionLimits(**{k: v for k, v in fields.items() if k != "expires"})
        claims = jwt.UserClaims(subject=ukp.public_key, name=name, permission_limits=lim,
                                expires=fields.get("expires", 0))
        return ukp, jwt.encode(claims, account_kp, issued_at=iat)

    def config(self, tmp_path, resolver: str = "MEMORY", preload: bool = True) -> str:
        op_file = tmp_path / "op.jwt"
        op_file.write_text(jwt.decorate_jwt(self.op_jwt))
        lines = [f'operator: "{op_file}"', f"resolver: {resolver}"]
        if preload:
            lines.append("resolver_preload {")
            lines += [f'  {k}: "{v}"' for k, v in self.accounts.items()]
            lines.append("}")
        path = tmp_path / "op.conf"
        path.write_text("\n".join(lines) + "\n")
        return str(path)


def creds(tmp_path, ukp, token, name="user.creds") -> str:
    path = tmp_path / name
    path.write_text(jwt.format_user_creds(token, ukp.seed))
    return str(path)


def start(tmp_path, conf: str, *flags: str, go: bool = False, env=None) -> RunningServer:
    port = free_port()
    head = [GO_SERVER] if go else NATSX
    if go and GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    cmd = head + ["-c", conf, "-a", "127.0.0.1", "-p", str(port), *flags]
    name = "go" if go else "natsx"
    return RunningServer(cmd, port, None, tmp_path / f"{name}-{port}.log",
                         dict(os.environ, **(env or {})))


@pytest.fixture
def servers(tmp_path):
    started = []

    def run(conf, *flags, go=False):
        srv = start(tmp_path, conf, *flags, go=go)
        started.append(srv)
        return srv

    yield run
    for s in started:
        s.stop()


# ------------------------------------------------------------------ raw exchange

def _read_until(sock, pred, timeout=3.0) -> bytes:
    sock.settimeout(0.1)
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred(buf):
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
    return buf


def raw_connect(port: int, ukp=None, token: str | None = None, *, sign=True, extra=b"PING\r\n",
                connect_extra: dict | None = None, wait=lambda b: b"PONG" in b or b"-ERR" in b,
                timeout=3.0) -> tuple[dict, bytes]:
    """INFO, then CONNECT with the JWT and the nonce signed; returns (INFO, what followed)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        info_line = _read_until(sock, lambda b: b"\r\n" in b)
        info = json.loads(info_line.split(b" ", 1)[1])
        opts = {"verbose": False, "pedantic": False, "protocol": 1}
        if token is not None:
            opts["jwt"] = token
        if sign and ukp is not None:
            opts["sig"] = base64.urlsafe_b64encode(ukp.sign(info["nonce"].encode())).rstrip(
                b"=").decode()
        opts.update(connect_extra or {})
        sock.sendall(b"CONNECT " + json.dumps(opts).encode() + b"\r\n" + extra)
        return info, _no_connect_info(_read_until(sock, wait, timeout))


def _no_connect_info(out: bytes) -> bytes:
    """Drops the INFO natsx sends after the first PONG (``connect_info``, Go 2.10+): the Go
    oracle here is 2.9.10, which does not send it."""
    return re.sub(rb'INFO \{[^\r]*"connect_info":true[^\r]*\r\n', b"", out)


def _info_shape(info: dict) -> list:
    return [k for k in info if k not in ("go", "version")]


# ------------------------------------------------------------------ config

def test_config_accepts_operator_keys_and_checks_them(tmp_path):
    from natsx.server.config_options import ConfigProcessError, load_options, validate_options

    w = World()
    o, _ = load_options(w.config(tmp_path))
    validate_options(o)
    assert o.trusted_keys == [w.op.public_key]
    assert o.system_account == w.sys.public_key       # from the operator JWT
    assert o.resolver.kind == "MEMORY" and set(o.resolver_preload) == set(w.accounts)
    # The JWT inline works as well as a file.
    inline = tmp_path / "inline.conf"
    inline.write_text(f'operator: "{w.op_jwt}"\nresolver: URL(http://127.0.0.1:1/jwt/v1)\n')
    o, _ = load_options(str(inline))
    assert o.resolver.kind == "URL" and o.resolver.url == "http://127.0.0.1:1/jwt/v1"
    bad = tmp_path / "bad.conf"
    bad.write_text(f'operator: "{w.op_jwt}"\naccounts {{ X: {{}} }}\nresolver: MEMORY\n')
    o, _ = load_options(str(bad))
    with pytest.raises(ConfigProcessError, match="operators do not allow Accounts"):
        validate_options(o)
    nores = tmp_path / "nores.conf"
    nores.write_text(f'operator: "{w.op_jwt}"\n')
    o, _ = load_options(str(nores))
    with pytest.raises(ConfigProcessError, match="operators require an account resolver"):
        validate_options(o)
    badpre = tmp_path / "badpre.conf"
    badpre.write_text(f'operator: "{w.op_jwt}"\nresolver: MEMORY\n'
                      f'resolver_preload {{ {w.a.public_key}: "nope" }}\n')
    with pytest.raises(ConfigProcessError, match="invalid account JWT"):
        load_options(str(badpre))
    dirconf = tmp_path / "dir.conf"
    dirconf.write_text(f'operator: "{w.op_jwt}"\nresolver {{ type: full, dir: "{tmp_path}/jwts",'
                       ' allow_delete: true, interval: "2m" }\n')
    o, _ = load_options(str(dirconf))
    validate_options(o)
    assert o.resolver.kind == "FULL" and o.resolver.allow_delete and o.resolver.interval == 120


def test_natsx_t_accepts_the_go_fixture_config(tmp_path):
    """`-t` on an operator config with preloads, as the Go server accepts it."""
    import subprocess

    w = World()
    conf = w.config(tmp_path)
    out = subprocess.run(NATSX + ["-t", "-c", conf], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ INFO and -ERR against Go

def _failure_cases(w: World):
    good_kp, good = w.user(w.a)
    rogue_acc = nkeys.KeyPair.create(ACC)
    rogue_kp, rogue = w.user(rogue_acc)                # account unknown to the resolver
    exp_kp, expired = w.user(w.a, expires=int(time.time()) - 10)
    wrong_kp = nkeys.KeyPair.create(USR)                  # signs with the wrong key
    bearer_kp, bearer = w.user(w.a, bearer_token=True)
    ws_kp, ws_only = w.user(w.a, allowed_connection_types=("WEBSOCKET",))
    src_kp, src_bad = w.user(w.a, src=("10.9.8.0/24",))
    return {
        "no_jwt": (None, None, True),
        "garbage_jwt": (good_kp, "not.a.jwt", True),
        "no_sig": (good_kp, good, False),
        "wrong_sig": (wrong_kp, good, True),
        "unknown_account": (rogue_kp, rogue, True),
        "expired": (exp_kp, expired, True),
        "bearer_without_sig": (bearer_kp, bearer, False),
        "websocket_only": (ws_kp, ws_only, True),
        "bad_src": (src_kp, src_bad, True),
        "ok": (good_kp, good, True),
    }


def test_info_and_auth_answers_match_go(tmp_path, servers):
    w = World()
    conf = w.config(tmp_path)
    nx, go = servers(conf), servers(conf, go=True)
    for name, (ukp, token, sign) in _failure_cases(w).items():
        ninfo, nout = raw_connect(nx.port, ukp, token, sign=sign)
        ginfo, gout = raw_connect(go.port, ukp, token, sign=sign)
        assert nout == gout, name
        assert _info_shape(ninfo) == _info_shape(ginfo), name
        assert ninfo["auth_required"] is True and len(ninfo["nonce"]) == len(ginfo["nonce"])
    assert "authentication error" in nx.log()


def test_account_connection_and_payload_limits_match_go(tmp_path, servers):
    # One worker: natsx counts an account's connections per worker (see natsx.server.operator).
    w = World(conn=1, payload=16)
    conf = w.config(tmp_path)
    nx, go = servers(conf, "--workers", "1"), servers(conf, go=True)
    for srv in (nx, go):
        ukp, token = w.user(w.a)
        with socket.create_connection(("127.0.0.1", srv.port)) as first:
            info = json.loads(_read_until(first, lambda b: b"\r\n" in b).split(b" ", 1)[1])
            sig = base64.urlsafe_b64encode(ukp.sign(info["nonce"].encode())).rstrip(b"=")
            first.sendall(b'CONNECT {"verbose":false,"protocol":1,"jwt":"%s","sig":"%s"}\r\n'
                          b"PING\r\n" % (token.encode(), sig))
            assert b"PONG" in _read_until(first, lambda b: b"PONG" in b)
            _read_until(first, lambda b: False, 0.3)
            _, second = raw_connect(srv.port, *w.user(w.a))
            srv.second = second
            first.sendall(b"PUB x 17\r\n" + b"y" * 17 + b"\r\n")
            srv.big = _read_until(first, lambda b: b"-ERR" in b)
    assert nx.second == go.second == b"-ERR 'maximum account active connections exceeded'\r\n"
    assert nx.big == go.big and b"Maximum Payload Violation" in nx.big


def test_user_subscription_limit_matches_go(tmp_path, servers):
    w = World()
    conf = w.config(tmp_path)
    nx, go = servers(conf), servers(conf, go=True)
    ukp, token = w.user(w.a, subs=2)
    subs = b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n"
    outs = [raw_connect(s.port, ukp, token, extra=subs, wait=lambda b: b"PONG" in b)[1]
            for s in (nx, go)]
    assert outs[0] == outs[1] == b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n"


def test_user_expiry_closes_with_gos_error(tmp_path, servers):
    w = World()
    conf = w.config(tmp_path)
    nx, go = servers(conf), servers(conf, go=True)
    outs = []
    for srv in (nx, go):
        ukp, token = w.user(w.a, expires=int(time.time()) + 2)
        _, out = raw_connect(srv.port, ukp, token, extra=b"PING\r\n",
                             wait=lambda b: b"Expired" in b, timeout=6)
        outs.append(out)
    assert outs[0] == outs[1] == b"PONG\r\n-ERR 'User Authentication Expired'\r\n"


# ------------------------------------------------------------------ nats-py clients

async def _echo_roundtrip(url, **kw) -> bytes:
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5, **kw)
    try:
        async def h(m):
            await nc.publish(m.reply, b"OK:" + m.data)
        await nc.subscribe("help", cb=h)
        await nc.flush()
        return (await nc.request("help", b"hi", timeout=2)).data
    finally:
        await nc.close()


def test_nats_py_creds_file_and_signature_callback(tmp_path, servers):
    w = World()
    nx = servers(w.config(tmp_path))
    ukp, token = w.user(w.a)
    assert asyncio.run(_echo_roundtrip(nx.url, user_credentials=creds(tmp_path, ukp, token))) \
        == b"OK:hi"

    def sig_cb(nonce: str) -> bytes:
        return base64.b64encode(ukp.sign(nonce.encode()))

    assert asyncio.run(_echo_roundtrip(nx.url, user_jwt_cb=lambda: token.encode(),
                                       signature_cb=sig_cb)) == b"OK:hi"
    bad_kp, bad = w.user(nkeys.KeyPair.create(ACC))
    with pytest.raises(Exception):
        asyncio.run(_echo_roundtrip(nx.url, user_credentials=creds(tmp_path, bad_kp, bad, "b")))


def test_user_permissions_from_the_jwt(tmp_path, servers):
    w = World()
    nx = servers(w.config(tmp_path))
    go = servers(w.config(tmp_path), go=True)
    ukp, token = w.user(w.a, pub=jwt.Permission(allow=("ok.>", "_INBOX.>"), deny=("ok.no",)),
                        sub=jwt.Permission(allow=("ok.>", "_INBOX.>")))
    chunks = (b"SUB ok.1 1\r\nSUB bad 2\r\nPUB ok.no 1\r\nx\r\nPUB nope 1\r\nx\r\n"
              b"PUB ok.1 2\r\nhi\r\nPING\r\n")
    outs = [raw_connect(s.port, ukp, token, extra=chunks, wait=lambda b: b"PONG" in b)[1]
            for s in (nx, go)]
    assert outs[0] == outs[1]
    assert b"Permissions Violation for Subscription to \"bad\"" in outs[0]
    assert b"Permissions Violation for Publish to \"nope\"" in outs[0]
    assert b"MSG ok.1 1 2\r\nhi\r\n" in outs[0]


# ------------------------------------------------------------------ claims updates

def _sys_request(port, w: World, subject: str, payload: bytes) -> dict:
    skp, stoken = w.user(w.sys, "sys")
    body = (b"SUB _INBOX.r 1\r\nPUB %s _INBOX.r %d\r\n%s\r\n"
            % (subject.encode(), len(payload), payload))
    _, out = raw_connect(port, skp, stoken, extra=body, wait=lambda b: b"MSG _INBOX.r" in b
                         and b"}\r\n" in b.split(b"MSG _INBOX.r", 1)[1])
    frame = out.split(b"MSG _INBOX.r", 1)[1]
    return json.loads(frame.split(b"\r\n")[1])


def test_revocation_pushed_as_a_claims_update_closes_the_user(tmp_path, servers):
    w = World()
    conf = w.config(tmp_path)
    nx, go = servers(conf), servers(conf, go=True)
    outs, answers = [], []
    for srv in (nx, go):
        ukp, token = w.user(w.a, iat=int(time.time()) - 5)
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            info = json.loads(_read_until(sock, lambda b: b"\r\n" in b).split(b" ", 1)[1])
            sig = base64.urlsafe_b64encode(ukp.sign(info["nonce"].encode())).rstrip(b"=")
            sock.sendall(b'CONNECT {"verbose":false,"protocol":1,"jwt":"%s","sig":"%s"}\r\n'
                         b"PING\r\n" % (token.encode(), sig))
            assert b"PONG" in _read_until(sock, lambda b: b"PONG" in b)
            _read_until(sock, lambda b: False, 0.3)
            revoked = w.account(w.a, "A", exports=(jwt.Export(subject="events.>", type="stream"),),
                                revocations={ukp.public_key: int(time.time())})
            answers.append(_sys_request(srv.port, w,
                                        f"$SYS.REQ.ACCOUNT.{w.a.public_key}.CLAIMS.UPDATE",
                                        revoked.encode()))
            outs.append(_read_until(sock, lambda b: b"-ERR" in b))
            # A new connection with the revoked user is refused.
            _, again = raw_connect(srv.port, ukp, token)
            outs.append(again)
    assert outs[0] == outs[2] == b"-ERR 'User Authentication Revoked'\r\n"
    assert outs[1] == outs[3] == b"-ERR 'Authorization Violation'\r\n"
    for a in answers:
        assert a["data"] == {"account": w.a.public_key, "code": 200, "message": "jwt updated"}
        assert set(a["server"]) >= {"name", "host", "id", "ver", "seq", "time"}


def test_full_dir_resolver_stores_updates_and_answers_lookups(tmp_path, servers):
    w = World()
    d = tmp_path / "jwts"
    op_file = tmp_path / "op.jwt"
    op_file.write_text(w.op_jwt)
    conf = tmp_path / "dir.conf"
    conf.write_text(f'operator: "{op_file}"\nresolver {{ type: full, dir: "{d}" }}\n'
                    "resolver_preload {\n" + f'  {w.sys.public_key}: '
                    f'"{w.accounts[w.sys.public_key]}"\n' + "}\n")
    nx = servers(str(conf))
    ukp, token = w.user(w.a)
    _, out = raw_connect(nx.port, ukp, token)
    assert out == b"-ERR 'Authorization Violation'\r\n"       # not pushed yet
    ans = _sys_request(nx.port, w, "$SYS.REQ.CLAIMS.UPDATE", w.accounts[w.a.public_key].encode())
    assert ans["data"]["message"] == "jwt updated"
    assert (d / f"{w.a.public_key}.jwt").read_text() == w.accounts[w.a.public_key]
    _, out = raw_connect(nx.port, ukp, token)
    assert out == b"PONG\r\n"
    skp, stoken = w.user(w.sys, "sys")
    body = (b"SUB _INBOX.l 1\r\nPUB $SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP _INBOX.l 0\r\n\r\n"
            % w.a.public_key.encode())
    _, out = raw_connect(nx.port, skp, stoken, extra=body,
                         wait=lambda b: w.accounts[w.a.public_key].encode() in b)
    assert w.accounts[w.a.public_key].encode() in out


# ------------------------------------------------------------------ URL resolver

class _JwtServer(http.server.BaseHTTPRequestHandler):
    jwts: dict = {}

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        body = self.jwts.get(name)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_url_resolver_fetches_accounts_and_reports_unreachable(tmp_path, servers):
    w = World()
    _JwtServer.jwts = dict(w.accounts)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JwtServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/jwt/v1/accounts/"
        nx = servers(w.config(tmp_path, resolver=f"URL({url})", preload=False))
        ukp, token = w.user(w.b)          # B imports from A: both fetched
        assert asyncio.run(_echo_roundtrip(nx.url, user_credentials=creds(tmp_path, ukp, token))) \
            == b"OK:hi"
    finally:
        httpd.shutdown()
    dead = f"http://127.0.0.1:{free_port()}/accounts/"
    nx2 = servers(w.config(tmp_path, resolver=f"URL({dead})", preload=False))
    ukp, token = w.user(w.a)
    _, out = raw_connect(nx2.port, ukp, token)
    assert out == b"-ERR 'Authorization Violation'\r\n"
    time.sleep(0.3)
    assert re.search(r'Account JWT lookup error: could not fetch <"http://127\.0\.0\.1:\d+/'
                     r'accounts/A[A-Z0-9]+">', nx2.log())


# ------------------------------------------------------------------ imports across workers

async def _imports_across_workers(url, w: World, tmp_path) -> tuple[list, list]:
    a_kp, a_tok = w.user(w.a, "a")
    b_kp, b_tok = w.user(w.b, "b")
    a_creds, b_creds = creds(tmp_path, a_kp, a_tok, "a.creds"), creds(tmp_path, b_kp, b_tok, "b.creds")
    # Several connections per account, so both workers hold clients of both accounts.
    bs = [await nats.connect(url, user_credentials=b_creds) for _ in range(4)]
    as_ = [await nats.connect(url, user_credentials=a_creds) for _ in range(4)]
    got: list = []
    for i, nc in enumerate(bs):
        async def cb(m, i=i):
            got.append((i, m.subject, m.data))
        await nc.subscribe("a.events.>", cb=cb)
        await nc.flush()

    async def echo(m):
        await m.respond(b"echo:" + m.data)
    await as_[0].subscribe("svc.echo", cb=echo)
    await as_[0].flush()
    await asyncio.sleep(0.3)
    for j, nc in enumerate(as_):
        await nc.publish(f"events.{j}", b"e%d" % j)
        await nc.flush()
    replies = []
    for nc in bs:
        replies.append((await nc.request("echo", b"q", timeout=3)).data)
    await asyncio.sleep(0.5)
    for nc in bs + as_:
        await nc.close()
    return got, replies


@pytest.mark.parametrize("workers", ["1", "2"])
def test_imports_and_exports_between_jwt_accounts(tmp_path, servers, workers):
    w = World()
    nx = servers(w.config(tmp_path), "--workers", workers)
    got, replies = asyncio.run(_imports_across_workers(nx.url, w, tmp_path))
    # Each of the 4 events reaches each of the 4 subscribers exactly once, as a.events.<j>.
    assert sorted(got) == sorted((i, f"a.events.{j}", b"e%d" % j)
                                 for i in range(4) for j in range(4))
    assert replies == [b"echo:q"] * 4


# ------------------------------------------------------------------ limits across workers

def _open_on(port: int, worker: int, workers: int = 2, tries: int = 60) -> tuple:
    """A socket whose connection landed on ``worker`` (INFO's client_id tells: workers
    allocate ids worker+1 + k*workers), with its INFO; the others are closed unused."""
    for _ in range(tries):
        sock = socket.create_connection(("127.0.0.1", port))
        info = json.loads(_read_until(sock, lambda b: b"\r\n" in b).split(b" ", 1)[1])
        if (info["client_id"] - 1) % workers == worker:
            return sock, info
        sock.close()
    raise AssertionError(f"no connection reached worker {worker}")


def _auth(sock, info, ukp, token) -> bytes:
    sig = base64.urlsafe_b64encode(ukp.sign(info["nonce"].encode())).rstrip(b"=")
    sock.sendall(b'CONNECT {"verbose":false,"protocol":1,"jwt":"%s","sig":"%s"}\r\nPING\r\n'
                 % (token.encode(), sig))
    return _no_connect_info(_read_until(sock, lambda b: b"PONG" in b or b"-ERR" in b))


def _closed_with(sock, timeout=3.0) -> bytes:
    """What the server sent until it closed ``sock`` (b"" and no close: still open)."""
    sock.settimeout(0.1)
    buf, end = b"", time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return buf + b"<closed>"
        if not chunk:
            return buf + b"<closed>"
        buf += chunk
    return buf


def test_account_connection_limit_holds_across_workers(tmp_path, servers):
    """JWT max_connections is the server's, not each worker's (Go: remote conns counts)."""
    w = World(conn=2)
    nx = servers(w.config(tmp_path), "--workers", "2")
    ukp, token = w.user(w.a, iat=int(time.time()) - 5)
    held = []
    for worker in (0, 1):
        sock, info = _open_on(nx.port, worker)
        assert _auth(sock, info, ukp, token) == b"PONG\r\n"
        held.append(sock)
    time.sleep(0.3)
    # Both workers now refuse a third client of the account, whichever gets it.
    for worker in (0, 1):
        sock, info = _open_on(nx.port, worker)
        with sock:
            assert _auth(sock, info, ukp, token) == \
                b"-ERR 'maximum account active connections exceeded'\r\n"
    # One leaves: a new client gets in again, on the other worker.
    held.pop(0).close()
    time.sleep(0.3)
    sock, info = _open_on(nx.port, 0)
    assert _auth(sock, info, ukp, token) == b"PONG\r\n"
    held.insert(0, sock)            # worker 0's is now the newest
    time.sleep(0.3)
    # The limit lowered to 1: the newest connection server-wide is closed, only it.
    lowered = w.account(w.a, "A", exports=(jwt.Export(subject="events.>", type="stream"),),
                        conn=1)
    ans = _sys_request(nx.port, w, f"$SYS.REQ.ACCOUNT.{w.a.public_key}.CLAIMS.UPDATE",
                       lowered.encode())
    assert ans["data"]["message"] == "jwt updated"
    assert _closed_with(held[0]) == \
        b"-ERR 'maximum account active connections exceeded'\r\n<closed>"
    held[1].sendall(b"PING\r\n")
    assert _read_until(held[1], lambda b: b"PONG" in b) == b"PONG\r\n"
    for sock in held:
        sock.close()


def test_account_connection_limit_excess_from_a_race_is_closed(tmp_path, servers):
    """Two workers admitting at once can pass the limit; the updates then close the
    newest server-wide (Go's updateRemoteServer closes the excess)."""
    w = World(conn=1)
    nx = servers(w.config(tmp_path), "--workers", "2")
    ukp, token = w.user(w.a)
    a, ainfo = _open_on(nx.port, 0)
    b, binfo = _open_on(nx.port, 1)
    sig = {s: base64.urlsafe_b64encode(ukp.sign(i["nonce"].encode())).rstrip(b"=")
           for s, i in ((a, ainfo), (b, binfo))}
    for sock in (a, b):             # back to back: both CONNECTs race the updates
        sock.sendall(b'CONNECT {"verbose":false,"protocol":1,"jwt":"%s","sig":"%s"}\r\n'
                     b"PING\r\n" % (token.encode(), sig[sock]))
    # The server's first PING (its RTT probe) may come within the window: not at issue.
    outs = [_no_connect_info(_closed_with(s, 2.0)).replace(b"PING\r\n", b"") for s in (a, b)]
    for s in (a, b):
        s.close()
    err = b"-ERR 'maximum account active connections exceeded'\r\n"
    # Exactly one survives. When both passed admission, the excess closed is the newest
    # (b, accepted last); when a busy worker let b's CONNECT through first, a is refused
    # at admission instead.
    survivors = [o for o in outs if o == b"PONG\r\n"]
    assert len(survivors) == 1, outs
    (loser,) = [o for o in outs if o != b"PONG\r\n"]
    assert loser in (err + b"<closed>", b"PONG\r\n" + err + b"<closed>"), outs
    if loser.startswith(b"PONG"):
        assert outs[0] == b"PONG\r\n", outs     # both admitted: the newest is closed


# ------------------------------------------------------------------ JetStream limits from JWTs

def _js_limits(**kw) -> jwt.JetStreamLimits:
    base = dict(mem_storage=1 << 20, disk_storage=1 << 20, streams=1, consumer=2,
                max_ack_pending=-1, mem_max_stream_bytes=-1, disk_max_stream_bytes=-1)
    base.update(kw)
    return jwt.JetStreamLimits(**base)


async def _js_story(url, w: World, tmp_path, workers: int) -> list:
    """What a JetStream client of A (and of B, no JetStream) sees as A's claims change."""
    a_kp, a_tok = w.user(w.a, "a")
    b_kp, b_tok = w.user(w.b, "b")
    a_creds = creds(tmp_path, a_kp, a_tok, "ja.creds")
    b_creds = creds(tmp_path, b_kp, b_tok, "jb.creds")
    out = []
    # With two workers, use a client on worker 1: JetStream runs in worker 0, which must
    # load the account from its JWT when another worker does.
    pool = [await nats.connect(url, user_credentials=a_creds, allow_reconnect=False)
            for _ in range(6 if workers > 1 else 1)]
    nc = next(c for c in pool if (c.client_id - 1) % workers == workers - 1)
    for other in pool:
        if other is not nc:
            await other.close()
    await asyncio.sleep(0.3)
    js = nc.jetstream(timeout=3)

    async def info():
        try:
            return dict(vars((await js.account_info()).limits))
        except nats.js.errors.APIError as exc:
            return {"error": exc.err_code}

    out.append(("limits", await info()))
    await js.add_stream(name="S1", subjects=["s1.>"], storage="memory")
    try:
        await js.add_stream(name="S2", subjects=["s2.>"], storage="memory")
        out.append(("second stream", "created"))
    except nats.js.errors.APIError as exc:
        out.append(("second stream", exc.err_code, exc.description))
    bnc = await nats.connect(url, user_credentials=b_creds, allow_reconnect=False)
    try:
        await bnc.jetstream(timeout=3).account_info()
        out.append(("B", "enabled"))
    except nats.js.errors.APIError as exc:
        out.append(("B", exc.err_code, exc.description))
    await bnc.close()
    # The claims change: more streams; then JetStream off.
    sys_kp, sys_tok = w.user(w.sys, "sys")
    snc = await nats.connect(url, user_credentials=creds(tmp_path, sys_kp, sys_tok, "js.creds"),
                             allow_reconnect=False)
    for limits in (_js_limits(streams=3), jwt.JetStreamLimits()):
        token = w.account(w.a, "A", exports=(jwt.Export(subject="events.>", type="stream"),),
                          jetstream=limits)
        msg = await snc.request(f"$SYS.REQ.ACCOUNT.{w.a.public_key}.CLAIMS.UPDATE",
                                token.encode(), timeout=3)
        out.append(("update", json.loads(msg.data)["data"]["message"]))
        await asyncio.sleep(0.5)
        out.append(("limits", await info()))
    await snc.close()
    await nc.close()
    return out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_jetstream_limits_follow_the_account_jwt(tmp_path, servers, workers):
    """Go enables, updates and disables an account's JetStream from its JWT's limits."""
    w = World(jetstream=_js_limits())
    conf = w.config(tmp_path)
    nx = servers(conf, "--workers", workers, "-js", "-sd", str(tmp_path / "nx-js"))
    go = servers(conf, "-js", "-sd", str(tmp_path / "go-js"), go=True)
    (tmp_path / "nx").mkdir()
    (tmp_path / "go").mkdir()
    got = asyncio.run(asyncio.wait_for(_js_story(nx.url, w, tmp_path / "nx", int(workers)), 60))
    want = asyncio.run(asyncio.wait_for(_js_story(go.url, w, tmp_path / "go", 1), 60))
    assert got == want
    assert got[0] == ("limits", {"max_memory": 1 << 20, "max_storage": 1 << 20,
                                 "max_streams": 1, "max_consumers": 2,
                                 "max_ack_pending": -1, "memory_max_stream_bytes": -1,
                                 "storage_max_stream_bytes": -1, "max_bytes_required": False})
    assert got[1][:2] == ("second stream", 10027)
    assert got[2][:2] == ("B", 10039)
    assert got[4][1]["max_streams"] == 3
    assert got[-1] == ("limits", {"error": 10039})


# ------------------------------------------------------------------ CLAIMS.DELETE, cache ttl

def _generic_jwt(signer, subject: str, data: dict) -> str:
    """A version 2 generic JWT (jwt.GenericClaims: ``data`` under ``nats``)."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64(json.dumps({"jti": "J" * 52, "iat": int(time.time()), "iss": signer.public_key,
                           "sub": subject, "nats": data}).encode())
    return f"{head}.{body}.{b64(signer.sign(f'{head}.{body}'.encode()))}"


def _dir_config(tmp_path, w: World, name: str, resolver: str, preload=()) -> str:
    op_file = tmp_path / "op.jwt"
    op_file.write_text(w.op_jwt)
    conf = tmp_path / f"{name}.conf"
    lines = [f'operator: "{op_file}"', f"resolver {{ {resolver} }}", "resolver_preload {"]
    lines += [f'  {k}: "{w.accounts[k]}"' for k in (w.sys.public_key, *preload)]
    conf.write_text("\n".join(lines + ["}"]) + "\n")
    return str(conf)


def _answer(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "server"}


def test_claims_delete_like_go(tmp_path, servers):
    """$SYS.REQ.CLAIMS.DELETE: a generic JWT self-signed by the operator lists accounts; the
    full resolver with allow_delete renames their files and closes their clients."""
    w = World()
    rogue = nkeys.KeyPair.create(OP)
    requests = {
        "not self signed": _generic_jwt(w.op, w.a.public_key, {"accounts": [w.a.public_key]}),
        "not trusted": _generic_jwt(rogue, rogue.public_key, {"accounts": [w.a.public_key]}),
        "system": _generic_jwt(w.op, w.op.public_key, {"accounts": [w.sys.public_key]}),
        "malformed": _generic_jwt(w.op, w.op.public_key, {"accounts": ["nope"]}),
        "no list": _generic_jwt(w.op, w.op.public_key, {}),
        "garbage": "not-a-jwt",
        "ok": _generic_jwt(w.op, w.op.public_key, {"accounts": [w.a.public_key]}),
    }
    results = {}
    for kind in ("natsx", "go"):
        d = tmp_path / kind
        d.mkdir()
        jwts = d / "jwts"
        conf = _dir_config(d, w, "del", f'type: full, dir: "{jwts}", allow_delete: true')
        srv = servers(conf, go=kind == "go")
        _sys_request(srv.port, w, "$SYS.REQ.CLAIMS.UPDATE", w.accounts[w.a.public_key].encode())
        ukp, token = w.user(w.a)
        sock = socket.create_connection(("127.0.0.1", srv.port))
        info = json.loads(_read_until(sock, lambda b: b"\r\n" in b).split(b" ", 1)[1])
        assert _auth(sock, info, ukp, token) == b"PONG\r\n"
        _read_until(sock, lambda b: False, 0.3)
        answers = {name: _answer(_sys_request(srv.port, w, "$SYS.REQ.CLAIMS.DELETE",
                                              req.encode()))
                   for name, req in requests.items()}
        closed = _closed_with(sock)
        sock.close()
        _, again = raw_connect(srv.port, ukp, token)
        files = sorted(p.name for p in jwts.iterdir())
        results[kind] = (answers, closed, again, files)
        # Without allow_delete: refused.
        d2 = d / "nodelete"
        d2.mkdir()
        srv2 = servers(_dir_config(d2, w, "nodel", f'type: full, dir: "{d2 / "j"}"'),
                       go=kind == "go")
        results[kind] += (_answer(_sys_request(srv2.port, w, "$SYS.REQ.CLAIMS.DELETE",
                                               requests["ok"].encode())),)
    assert results["natsx"] == results["go"]
    answers, closed, again, files, refused = results["natsx"]
    assert answers["ok"] == {"data": {"code": 200, "message": "deleted 1 accounts"}}
    assert answers["system"]["error"]["description"].endswith(
        "not allowed to delete system account")
    assert closed == b"-ERR 'Account Authentication Expired'\r\n<closed>"
    assert again == b"-ERR 'Authorization Violation'\r\n"
    assert f"{w.a.public_key}.jwt.deleted" in files
    assert refused["error"]["description"].endswith("delete must be enabled in server config")


def test_cache_resolver_ttl_drops_files_like_go(tmp_path, servers):
    w = World()
    dirs, first = {}, {}
    for kind in ("natsx", "go"):
        d = tmp_path / kind
        d.mkdir()
        dirs[kind] = d / "jwts"
        servers(_dir_config(d, w, "cache", f'type: cache, dir: "{dirs[kind]}", ttl: "1s"',
                            preload=(w.a.public_key,)), go=kind == "go")
        # natsx's supervisor listens before its workers have stored the preloads: the
        # first listing is taken once the account's file is there (Go's, at once).
        deadline, seen = time.monotonic() + 5, None
        while time.monotonic() < deadline:
            now = sorted(p.name for p in dirs[kind].iterdir()) if dirs[kind].is_dir() else []
            if now and now == seen:
                break       # the same files twice in a row: the preloads are written
            seen = now
            time.sleep(0.05)
        first[kind] = seen
    time.sleep(3.0)
    later = {k: sorted(p.name for p in d.iterdir()) for k, d in dirs.items()}
    assert first["natsx"] == first["go"] and f"{w.a.public_key}.jwt" in first["natsx"]
    assert later == {"natsx": [], "go": []}


# ------------------------------------------------------------------ reload

def _sighup_and_wait(srv, text: str, timeout: float = 5.0) -> None:
    import signal

    before = srv.log().count(text)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while srv.log().count(text) <= before:
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.05)


def test_reload_refuses_operator_changes_and_rechecks_jwt_clients(tmp_path, servers):
    """Go's reload: a changed operator (or trusted keys, or moving to/from a resolver) is
    refused; a MEMORY resolver account no longer preloaded is deleted and its clients are
    closed with 'Authorization Violation'."""
    w = World()
    conf = w.config(tmp_path)
    outs = {}
    for kind in ("natsx", "go"):
        path = tmp_path / f"{kind}.conf"
        path.write_text(open(conf).read())
        srv = servers(str(path), go=kind == "go")
        ukp, token = w.user(w.a)
        bkp, btoken = w.user(w.b)
        held = []
        for kp, tok in ((ukp, token), (bkp, btoken)):
            sock = socket.create_connection(("127.0.0.1", srv.port))
            info = json.loads(_read_until(sock, lambda b: b"\r\n" in b).split(b" ", 1)[1])
            assert _auth(sock, info, kp, tok) == b"PONG\r\n"
            held.append(sock)
        time.sleep(0.3)
        # Another operator: refused, nothing changes.
        op2_kp = nkeys.KeyPair.create(OP)
        op2 = tmp_path / f"{kind}-op2.jwt"
        op2.write_text(jwt.encode(jwt.OperatorClaims(
            subject=op2_kp.public_key, name="other-op", system_account=w.sys.public_key),
            op2_kp))
        path.write_text(open(conf).read().replace(str(tmp_path / "op.jwt"), str(op2)))
        _sighup_and_wait(srv, "config reload not supported for TrustedOperators")
        # A's preload gone: A's client is closed, B's stays.
        kept = "\n".join(line for line in open(conf).read().splitlines()
                         if not line.strip().startswith(w.a.public_key))
        path.write_text(kept + "\n")
        _sighup_and_wait(srv, "Reloaded server configuration")
        closed = _closed_with(held[0])
        held[1].sendall(b"PING\r\n")
        alive = _read_until(held[1], lambda b: b"PONG" in b)
        outs[kind] = (closed, alive)
        for sock in held:
            sock.close()
    assert outs["natsx"] == outs["go"]
    assert outs["natsx"] == (b"-ERR 'Authorization Violation'\r\n<closed>", b"PONG\r\n")


# ------------------------------------------------------------------ system imports of JWT accounts

def test_jwt_accounts_get_the_system_imports(tmp_path, servers):
    """Accounts created from JWTs after start get Go's system imports: CONNZ pings answered
    for the account's own connections (and USER.INFO, which 2.9.10 does not have)."""
    w = World()
    conf = w.config(tmp_path)
    results = []
    for srv in (servers(conf, "--workers", "2"), servers(conf, go=True)):
        async def main(url=srv.url):
            a_kp, a_tok = w.user(w.a, "a")
            b_kp, b_tok = w.user(w.b, "b")
            acs = creds(tmp_path, a_kp, a_tok, "ia.creds")
            bcs = creds(tmp_path, b_kp, b_tok, "ib.creds")
            others = [await nats.connect(url, user_credentials=bcs) for _ in range(2)]
            ncs = [await nats.connect(url, user_credentials=acs) for _ in range(3)]
            await asyncio.sleep(0.3)
            got = []
            for subject in ("$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.ACCOUNT.PING.CONNZ"):
                msg = await ncs[0].request(subject, b"", timeout=3)
                data = json.loads(msg.data)["data"]
                got.append((data["num_connections"], len(data["connections"])))
            try:
                info = json.loads((await ncs[1].request("$SYS.REQ.USER.INFO", b"",
                                                        timeout=1)).data)["data"]
            except Exception:
                info = None
            for nc in ncs + others:
                await nc.close()
            return got, info
        results.append(asyncio.run(main()))
    (nx, nx_info), (go, _go_info) = results
    assert nx == go == [(3, 3)] * 2         # A's three, not B's two
    assert nx_info["account"] == w.a.public_key and nx_info["user"].startswith("U")


def test_conn_counts_rank_server_wide():
    """The sans-IO ranking: the ``limit`` oldest connections server-wide stay."""
    from natsx.server.acclimits import ConnCounts

    c = ConnCounts(0)
    c.update("A", 1, 2, [(1.0, 2), (3.0, 4)])
    local = [(2.0, 1, "a"), (4.0, 3, "b")]
    assert c.excess("A", 2, local) == ["b"]           # ranks: 1.0, 2.0 | 3.0, 4.0
    assert c.excess("A", 3, local) == ["b"]
    assert c.excess("A", 4, local) == []
    assert c.excess("A", -1, local) == []
    assert c.excess("A", 2, local, alive=set()) == []  # worker 1 is dead
    # A truncated list: its unlisted connections count as older (Go's harsh rule).
    c.update("A", 1, 5, [(1.0, 2)])
    assert c.excess("A", 3, local) == ["a", "b"]
    # Only reports under the claims in force close connections.
    c.update("A", 1, 2, [(1.0, 2), (3.0, 4)], tag="old-jwt")
    assert c.excess("A", 2, local, tag="new-jwt") == []
    assert c.excess("A", 2, local, tag="old-jwt") == ["b"]
    assert c.remote_count("A") == 2          # admission counts every report
    c.update("A", 1, 0, [])
    assert c.remote_count("A") == 0


# ------------------------------------------------------------------ JWT mappings

def test_jwt_account_mappings_like_go(tmp_path, servers):
    """An account JWT's ``mappings`` map its clients' publishes (natsx.server.mapping), and a
    claims update replaces them, as in Go. (Weights are explicit: 2.9.10 reads a missing
    weight as 0%, HEAD as 100%, which natsx follows.)"""
    w = World()
    kp = w.a

    def with_mappings(dest: str) -> str:
        mappings = {"orders.*": (jwt.WeightedMapping(subject=dest, weight=100),)}
        return jwt.encode(jwt.AccountClaims(subject=kp.public_key, name="A",
                                            mappings=mappings), w.op)
    w.accounts[kp.public_key] = with_mappings("mapped.$1")
    conf = w.config(tmp_path)
    ukp, token = w.user(w.a)
    ucreds = creds(tmp_path, ukp, token)

    async def story(srv) -> list:
        seen = []
        # Publisher and subscriber on different workers where there are two.
        ncs = [await nats.connect(srv.url, user_credentials=ucreds) for _ in range(4)]

        async def cb(m):
            seen.append(m.subject)
        await ncs[0].subscribe(">", cb=cb)
        await ncs[0].flush()
        await asyncio.sleep(0.2)
        for i, nc in enumerate(ncs[1:]):
            await nc.publish(f"orders.{i}", b"x")
            await nc.flush()
        await asyncio.sleep(0.3)
        ans = _sys_request(srv.port, w, f"$SYS.REQ.ACCOUNT.{kp.public_key}.CLAIMS.UPDATE",
                           with_mappings("moved.$1").encode())
        seen.append(ans["data"]["message"])
        for i, nc in enumerate(ncs[1:]):
            await nc.publish(f"orders.{i}", b"x")
            await nc.flush()
        await asyncio.sleep(0.3)
        for nc in ncs:
            await nc.close()
        return sorted(seen[:3]) + [seen[3]] + sorted(seen[4:])

    outs = [asyncio.run(story(srv))
            for srv in (servers(conf, "--workers", "2"), servers(conf, go=True))]
    assert outs[0] == outs[1]
    assert outs[0] == ["mapped.0", "mapped.1", "mapped.2", "jwt updated",
                       "moved.0", "moved.1", "moved.2"]


# ------------------------------------------------------------------ default sentinel

def _with_sentinel(tmp_path, w: World, sentinel: str, name: str = "sentinel.conf") -> str:
    path = tmp_path / name
    path.write_text(open(w.config(tmp_path)).read() + f'default_sentinel: "{sentinel}"\n')
    return str(path)


def test_default_sentinel_is_validated_like_go(tmp_path):
    """validateTrustedOperators (Go 2.11+): operators required, a decodable user JWT, a
    bearer token unless a scoped user (issuer_account and no permissions of its own)."""
    from natsx.server.config_options import ConfigProcessError, load_options, validate_options

    w = World()
    _, bearer = w.user(w.a, bearer_token=True)
    _, plain = w.user(w.a)
    signer = nkeys.KeyPair.create(ACC)
    scoped = jwt.encode(jwt.UserClaims(subject=nkeys.KeyPair.create(USR).public_key,
                                       issuer_account=w.a.public_key,
                                       permission_limits=jwt.UserPermissionLimits.empty()),
                        signer)

    def check(conf: str) -> str | None:
        try:
            validate_options(load_options(conf)[0])
        except ConfigProcessError as exc:
            return str(exc)
        return None

    assert check(_with_sentinel(tmp_path, w, bearer)) is None
    assert check(_with_sentinel(tmp_path, w, scoped)) is None
    for token, reason in ((plain, "default sentinel must be a bearer token"),
                          ("not.a.jwt", "default sentinel JWT not valid"),
                          (w.accounts[w.a.public_key], "default sentinel JWT not valid")):
        out = check(_with_sentinel(tmp_path, w, token))
        assert out is not None and reason in out, (reason, out)
    for head in ("", f'trusted: "{w.op.public_key}"\n'):
        alone = tmp_path / "alone.conf"
        alone.write_text(head + f'default_sentinel: "{bearer}"\n')
        out = check(str(alone))
        assert out is not None and "default sentinel requires operators and accounts" in out


def test_default_sentinel_admits_clients_without_credentials(tmp_path, servers):
    """A client with no user JWT (or one that does not decode) connects as the sentinel,
    with its permissions; a client with its own JWT is checked with that one; an account
    with ``disallow_bearer`` refuses the sentinel like any bearer token (Go: auth.go)."""
    w = World()
    _, sentinel = w.user(w.a, name="sentinel", bearer_token=True,
                         pub=jwt.Permission(allow=("help", "_INBOX.>")),
                         sub=jwt.Permission(allow=("help", "_INBOX.>")))
    nx = servers(_with_sentinel(tmp_path, w, sentinel), "--workers", "2")
    _, out = raw_connect(nx.port, extra=b"PUB help 2\r\nhi\r\nPUB other 2\r\nhi\r\nPING\r\n",
                         wait=lambda b: b"PONG" in b)
    assert out == b"-ERR 'Permissions Violation for Publish to \"other\"'\r\nPONG\r\n"
    _, out = raw_connect(nx.port, None, "not.a.jwt")
    assert out == b"PONG\r\n"
    # A JWT of its own that decodes is used, even when it then fails: no fallback.
    exp_kp, expired = w.user(w.a, expires=int(time.time()) - 10)
    _, out = raw_connect(nx.port, exp_kp, expired)
    assert out == b"-ERR 'Authorization Violation'\r\n"
    # nats-py without credentials: request/reply inside the sentinel's permissions.
    assert asyncio.run(_echo_roundtrip(nx.url)) == b"OK:hi"
    ukp, token = w.user(w.a)
    ucreds = creds(tmp_path, ukp, token)

    async def own_user_unrestricted() -> bytes:
        nc = await nats.connect(nx.url, user_credentials=ucreds, allow_reconnect=False)
        try:
            sub = await nc.subscribe("other")
            await nc.publish("other", b"mine")
            return (await sub.next_msg(timeout=2)).data
        finally:
            await nc.close()
    assert asyncio.run(own_user_unrestricted()) == b"mine"

    strict = World(disallow_bearer=True)
    _, bearer = strict.user(strict.a, bearer_token=True)
    refusing = servers(_with_sentinel(tmp_path, strict, bearer, "strict.conf"))
    _, out = raw_connect(refusing.port)
    assert out == b"-ERR 'Authorization Violation'\r\n"


def test_default_sentinel_reloads(tmp_path, servers):
    """Go reloads ``default_sentinel`` (reload.go defaultSentinelOption): new clients get the
    new one; a connected client keeps the one it was given (it became its CONNECT's JWT)."""
    w = World()
    _, first = w.user(w.a, name="first", bearer_token=True)
    _, second = w.user(w.b, name="second", bearer_token=True,
                       pub=jwt.Permission(deny=(">",)))
    conf = _with_sentinel(tmp_path, w, first)
    nx = servers(conf)
    held = socket.create_connection(("127.0.0.1", nx.port))
    _read_until(held, lambda b: b"\r\n" in b)
    held.sendall(b'CONNECT {"verbose":false,"protocol":1}\r\nPING\r\n')
    assert _no_connect_info(_read_until(held, lambda b: b"PONG" in b)) == b"PONG\r\n"
    text = open(conf).read()
    with open(conf, "w") as f:
        f.write(text.replace(first, second))
    _sighup_and_wait(nx, "Reloaded: default_sentinel = " + second)
    # The workers apply the reload after the supervisor logged it: wait for the new one.
    deadline = time.monotonic() + 5
    while True:
        _, out = raw_connect(nx.port, extra=b"PUB x 0\r\n\r\nPING\r\n",
                             wait=lambda b: b"PONG" in b)
        if out != b"PONG\r\n" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert out == b"-ERR 'Permissions Violation for Publish to \"x\"'\r\nPONG\r\n"
    held.sendall(b"PUB x 0\r\n\r\nPING\r\n")
    assert _read_until(held, lambda b: b"PONG" in b) == b"PONG\r\n"
    held.close()
