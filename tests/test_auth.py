"""Authentication and authorization from a config file, and their reload: black-box.

The real ``natsx`` command runs with ``-c <config>``; clients are raw sockets (for the exact
-ERR texts and for nkey signatures) and nats-py. The behaviours are server/auth.go
(processClientOrLeafAuthentication), server/client.go (processSubEx, pubAllowedFullCheck,
deliverMsg, processSubsOnConfigReload) and server/reload.go. Where natsx follows the newest
Go release rather than Debian's 2.9.10, the test says so; the exchanges on which both agree
are also played against the Go server with the same config.
"""
from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import time

import bcrypt
import httpx
import nats
import pytest

from conftest import GO_SERVER, NATSX, RunningServer, free_port
from helpers import Wire, err, msg
from natsx.auth.nkeys import PREFIX_BYTE_USER, KeyPair

pytestmark = pytest.mark.server

NKEY = KeyPair.create(PREFIX_BYTE_USER)
OTHER_NKEY = KeyPair.create(PREFIX_BYTE_USER)
BOB_HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(11, prefix=b"2a")).decode()
TOKEN_HASH = bcrypt.hashpw(b"t0ken", bcrypt.gensalt(6, prefix=b"2a")).decode()

USERS_CONF = f"""
authorization {{
  users: [
    {{user: alice, password: pw, permissions: {{
        publish: {{allow: ["foo.>", "_INBOX.>"], deny: "foo.secret"}}
        subscribe: {{allow: ["foo.*", "bar", "grp.* q1", "_INBOX.>"], deny: ["foo.secret", "grp.x q2"]}}
    }}}}
    {{user: bob, password: "{BOB_HASH}"}}
    {{user: resp, password: pw, permissions: {{subscribe: "svc.>", allow_responses: true}}}}
    {{user: resp2, password: pw, permissions: {{subscribe: "svc2.>",
                                                allow_responses: {{max: 2, expires: "1s"}}}}}}
    {{user: old, password: pw, permissions: {{publish: ["a", "b.*"], subscribe: "a"}}}}
    {{nkey: {NKEY.public_key}, permissions: {{publish: "nk.>", subscribe: "nk.>"}}}}
  ]
}}
"""


# ---------------------------------------------------------------------------- helpers

AUTH_VIOLATION = err("Authorization Violation")


def start_with_config(tmp_path, text: str, *flags: str, name: str = "natsx",
                      cmd=None) -> RunningServer:
    path = tmp_path / f"{name}.conf"
    path.write_text(text)
    port, http_port = free_port(), free_port()
    head = cmd or NATSX
    full = head + ["-c", str(path), "-a", "127.0.0.1", "-p", str(port), "-m", str(http_port),
                   *flags]
    srv = RunningServer(full, port, http_port, tmp_path / f"{name}.log", dict(os.environ))
    srv.config_path = path
    return srv


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def eventually(check, timeout: float = 10.0):
    """Retries ``check`` until it returns a true value: each worker applies a reload on
    its own, so a new connection may reach one that has not yet."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def authenticates(port: int, opts: dict) -> bool:
    w = Wire(port, opts).send(b"PING\r\n")
    frames = w.frames_until(lambda f: f == b"PONG\r\n")
    w.close()
    return not w.eof and frames == []


def wait_for_log(srv: RunningServer, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = srv.log()
        if text in log:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log:\n{log[-3000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def users_server(tmp_path_factory):
    srv = start_with_config(tmp_path_factory.mktemp("users"), USERS_CONF)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def go_users_server(tmp_path_factory):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    srv = start_with_config(tmp_path_factory.mktemp("go-users"), USERS_CONF, name="go",
                            cmd=[GO_SERVER])
    yield srv
    srv.stop()


def sign(nonce: str, key: KeyPair = NKEY, encoding=base64.urlsafe_b64encode) -> str:
    sig = encoding(key.sign(nonce.encode())).decode()
    return sig.rstrip("=") if encoding is base64.urlsafe_b64encode else sig


# ---------------------------------------------------------------------------- users

def test_info_requires_auth_and_carries_a_fresh_nonce(users_server):
    a, b = Wire(users_server.port), Wire(users_server.port)
    assert a.info["auth_required"] is True
    assert len(a.info["nonce"]) == 15 and a.info["nonce"] != b.info["nonce"]


def test_plain_and_bcrypt_passwords(users_server):
    for opts in ({"user": "alice", "pass": "pw"}, {"user": "bob", "pass": "secret"}):
        assert Wire(users_server.port, opts).sync() == []


@pytest.mark.parametrize("opts", [
    {"user": "alice", "pass": "wrong"},
    {"user": "bob", "pass": "$2a$11$notthehash"},
    {"user": "bob", "pass": BOB_HASH},
    {"user": "nobody", "pass": "pw"},
    {"auth_token": "pw"},
    {},
    {"user": "alice"},
])
def test_bad_credentials_are_an_authorization_violation(users_server, opts):
    w = Wire(users_server.port, opts).send(b"PING\r\n")
    assert w.until_closed() == [AUTH_VIOLATION]


def test_anything_before_connect_is_an_authorization_violation(users_server):
    w = Wire(users_server.port).send(b"SUB foo 1\r\n")
    assert w.until_closed() == [AUTH_VIOLATION]


def test_nats_py_user_password(users_server):
    async def main():
        nc = await nats.connect(f"nats://alice:pw@127.0.0.1:{users_server.port}",
                                allow_reconnect=False)
        sub = await nc.subscribe("foo.hello")
        await nc.publish("foo.hello", b"hi")
        got = await sub.next_msg(5)
        await nc.close()
        return got.data
    assert run(main()) == b"hi"


def test_nats_py_wrong_password_is_refused(users_server):
    async def main():
        errors = []

        async def on_error(e):
            errors.append(e)
        with pytest.raises(Exception):
            await nats.connect(f"nats://alice:nope@127.0.0.1:{users_server.port}",
                               allow_reconnect=False, max_reconnect_attempts=0,
                               error_cb=on_error)
        return errors
    errors = run(main())
    assert any("authorization violation" in str(e).lower() for e in errors)


def test_connz_reports_the_authorized_user(users_server):
    w = Wire(users_server.port, {"user": "alice", "pass": "pw", "name": "connz-probe"})
    w.sync()
    connz = httpx.get(f"http://127.0.0.1:{users_server.http_port}/connz?auth=1&limit=1000").json()
    mine = [c for c in connz["connections"] if c.get("name") == "connz-probe"]
    assert mine and mine[0]["authorized_user"] == "alice"


# ---------------------------------------------------------------------------- nkeys

@pytest.mark.parametrize("encoding", [base64.urlsafe_b64encode, base64.b64encode])
def test_nkey_signature_of_the_nonce(users_server, encoding):
    w = Wire(users_server.port)
    w.connect({"nkey": NKEY.public_key, "sig": sign(w.info["nonce"], encoding=encoding)})
    w.send(b"SUB nk.a 1\r\nPUB nk.a 2\r\nhi\r\n")
    assert w.sync() == [msg("nk.a", "1", b"hi")]


@pytest.mark.parametrize("case", ["wrong-key", "no-sig", "other-nonce", "unknown-nkey", "garbage"])
def test_nkey_failures(users_server, case):
    w = Wire(users_server.port)
    nonce = w.info["nonce"]
    opts = {"nkey": NKEY.public_key, "sig": sign(nonce)}
    if case == "wrong-key":
        opts["sig"] = sign(nonce, OTHER_NKEY)
    elif case == "no-sig":
        del opts["sig"]
    elif case == "other-nonce":
        opts["sig"] = sign("AAAAAAAAAAAAAAA")
    elif case == "unknown-nkey":
        opts = {"nkey": OTHER_NKEY.public_key, "sig": sign(nonce, OTHER_NKEY)}
    else:
        opts["sig"] = "!!not base64!!"
    assert w.connect(opts).send(b"PING\r\n").until_closed() == [AUTH_VIOLATION]


def test_nats_py_nkey_seed(users_server):
    async def main():
        nc = await nats.connect(f"nats://127.0.0.1:{users_server.port}",
                                nkeys_seed_str=NKEY.seed.decode(), allow_reconnect=False)
        sub = await nc.subscribe("nk.x")
        await nc.publish("nk.x", b"signed")
        got = await sub.next_msg(5)
        await nc.close()
        return got.data
    assert run(main()) == b"signed"


# ---------------------------------------------------------------------------- permissions

ALICE = {"user": "alice", "pass": "pw"}


def test_publish_violations_keep_the_connection(users_server):
    w = Wire(users_server.port, ALICE)
    w.send(b"SUB foo.ok 1\r\nPUB foo.secret 1\r\nx\r\nPUB other 1\r\ny\r\nPUB foo.ok 1\r\nz\r\n"
           b"PUB foo.secret 1\r\nx\r\n")
    assert w.sync() == [err('Permissions Violation for Publish to "foo.secret"'),
                        err('Permissions Violation for Publish to "other"'),
                        msg("foo.ok", "1", b"z"),
                        err('Permissions Violation for Publish to "foo.secret"')]


def test_subscribe_violations_keep_the_connection(users_server):
    w = Wire(users_server.port, ALICE)
    w.send(b"SUB baz 1\r\nSUB grp.a q3 2\r\nSUB grp.a 3\r\nSUB grp.a q1 4\r\nSUB grp.x q2 5\r\n"
           b"SUB grp.x q1 6\r\nSUB foo.secret 7\r\nSUB bar 8\r\nSUB bar q9 9\r\n")
    assert w.sync() == [
        err('Permissions Violation for Subscription to "baz"'),
        err('Permissions Violation for Subscription to "grp.a" using queue "q3"'),
        err('Permissions Violation for Subscription to "grp.a"'),
        err('Permissions Violation for Subscription to "grp.x" using queue "q2"'),
        err('Permissions Violation for Subscription to "foo.secret"'),
    ]
    w.send(b"PUB foo.k 1\r\n1\r\n")   # still usable
    assert w.sync() == []


def test_old_style_permission_lists(users_server):
    w = Wire(users_server.port, {"user": "old", "pass": "pw"})
    w.send(b"SUB a 1\r\nSUB b.x 2\r\nPUB a 1\r\n1\r\nPUB b.x 1\r\n2\r\nPUB c 1\r\n3\r\n")
    assert w.sync() == [err('Permissions Violation for Subscription to "b.x"'),
                        msg("a", "1", b"1"),
                        err('Permissions Violation for Publish to "c"')]


def test_subscribe_deny_filters_deliveries_to_wildcard_subscriptions(users_server):
    alice = Wire(users_server.port, ALICE).send(b"SUB foo.* 1\r\nSUB foo.* q1 2\r\n")
    alice.sync()
    bob = Wire(users_server.port, {"user": "bob", "pass": "secret"})
    bob.send(b"PUB foo.secret 3\r\nnop\r\nPUB foo.open 3\r\nyes\r\n").sync()
    # bob may be on another worker: wait for the deliveries rather than for a PONG. A
    # leaked foo.secret would come first, being published first.
    assert sorted(alice.frames(2)) == sorted([msg("foo.open", "1", b"yes"),
                                              msg("foo.open", "2", b"yes")])


def test_allow_responses_one_reply_per_request(users_server):
    resp = Wire(users_server.port, {"user": "resp", "pass": "pw"}).send(b"SUB svc.echo 1\r\n")
    resp.sync()
    bob = Wire(users_server.port, {"user": "bob", "pass": "secret"})
    bob.send(b"SUB reply.bob 9\r\nPUB svc.echo reply.bob 4\r\nping\r\n").sync()
    assert resp.frames(1) == [msg("svc.echo", "1", b"ping", reply="reply.bob")]
    resp.send(b"PUB reply.bob 4\r\npong\r\nPUB reply.bob 5\r\nagain\r\nPUB elsewhere 1\r\nx\r\n")
    assert resp.sync() == [err('Permissions Violation for Publish to "reply.bob"'),
                           err('Permissions Violation for Publish to "elsewhere"')]
    assert bob.frames(1) == [msg("reply.bob", "9", b"pong")]
    assert bob.sync() == []


def test_allow_responses_max_and_expires(users_server):
    resp = Wire(users_server.port, {"user": "resp2", "pass": "pw"}).send(b"SUB svc2.x 1\r\n")
    resp.sync()
    bob = Wire(users_server.port, {"user": "bob", "pass": "secret"})
    bob.send(b"PUB svc2.x r.1 1\r\na\r\nPUB svc2.x r.2 1\r\nb\r\n").sync()
    assert len(resp.frames(2)) == 2
    resp.send(b"PUB r.1 1\r\n1\r\nPUB r.1 1\r\n2\r\nPUB r.1 1\r\n3\r\n")
    assert resp.sync() == [err('Permissions Violation for Publish to "r.1"')]
    time.sleep(1.3)   # r.2 was never answered and has now expired
    resp.send(b"PUB r.2 1\r\n1\r\n")
    assert resp.sync() == [err('Permissions Violation for Publish to "r.2"')]


def test_nats_py_request_reply_under_allow_responses(users_server):
    async def main():
        url = f"127.0.0.1:{users_server.port}"
        responder = await nats.connect(f"nats://resp:pw@{url}", allow_reconnect=False)

        async def echo(m):
            await m.respond(b"re:" + m.data)
        await responder.subscribe("svc.nats-py", cb=echo)
        await responder.flush()
        requester = await nats.connect(f"nats://bob:secret@{url}", allow_reconnect=False)
        replies = [await requester.request("svc.nats-py", b"%d" % i, timeout=5) for i in range(3)]
        await requester.close()
        await responder.close()
        return [r.data for r in replies]
    assert run(main()) == [b"re:0", b"re:1", b"re:2"]


# ---------------------------------------------------------------------------- differential

def _play(port: int) -> list[list[bytes]]:
    """One scenario with several clients; every client's frames, INFO left out."""
    alice = Wire(port, ALICE)
    alice.send(b"SUB foo.* 1\r\nSUB baz 2\r\nSUB grp.a q3 3\r\nSUB grp.a q1 4\r\n"
               b"PUB foo.secret 1\r\nx\r\nPUB foo.a 1\r\ny\r\n")
    first = alice.sync()
    resp = Wire(port, {"user": "resp", "pass": "pw"}).send(b"SUB svc.d 1\r\n")
    resp.sync()
    bob = Wire(port, {"user": "bob", "pass": "secret"})
    bob.send(b"SUB _R.1 1\r\nPUB foo.secret 1\r\ns\r\nPUB foo.b 1\r\nb\r\nPUB svc.d _R.1 1\r\nq\r\n")
    bob.sync()
    # Clients may sit on different workers: wait for deliveries, not for PONGs.
    got = resp.frames(1)
    resp.send(b"PUB _R.1 1\r\nr\r\nPUB _R.1 1\r\nr\r\nPUB other 1\r\nr\r\n")
    replies = resp.sync()
    bad = Wire(port, {"user": "bob", "pass": "nope"}).send(b"PING\r\n").until_closed()
    return [first, alice.frames(1), got, replies, bob.frames(1), bad]


@pytest.mark.differential
def test_permission_exchanges_match_the_go_server(users_server, go_users_server):
    assert _play(users_server.port) == _play(go_users_server.port)


# ---------------------------------------------------------------------------- token, timeout

@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    srv = start_with_config(tmp_path_factory.mktemp("token"),
                            f'authorization {{ token: "{TOKEN_HASH}", timeout: 1 }}\n')
    yield srv
    srv.stop()


def test_bcrypt_token(token_server):
    assert Wire(token_server.port, {"auth_token": "t0ken"}).sync() == []
    w = Wire(token_server.port, {"auth_token": TOKEN_HASH}).send(b"PING\r\n")
    assert w.until_closed() == [AUTH_VIOLATION]


def test_authentication_timeout(token_server):
    w = Wire(token_server.port)
    start = time.monotonic()
    assert w.until_closed(timeout=5) == [err("Authentication Timeout")]
    assert 0.8 < time.monotonic() - start < 3


def test_command_line_user_overrides_the_authorization_block(tmp_path):
    srv = start_with_config(tmp_path, "authorization { user: derek, password: s3cr3t }\n",
                            "--user", "cli", "--pass", "clipw")
    try:
        assert Wire(srv.port, {"user": "cli", "pass": "clipw"}).sync() == []
        w = Wire(srv.port, {"user": "derek", "pass": "s3cr3t"}).send(b"PING\r\n")
        assert w.until_closed() == [AUTH_VIOLATION]
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- no_auth_user

def test_no_auth_user(tmp_path):
    srv = start_with_config(tmp_path, """
authorization {
  users: [
    {user: guest, password: gpw, permissions: {publish: "public.>", subscribe: "public.>"}}
    {user: admin, password: apw}
  ]
}
no_auth_user: guest
""")
    try:
        guest = Wire(srv.port, {})
        guest.send(b"SUB public.a 1\r\nSUB private 2\r\nPUB public.a 1\r\nx\r\nPUB private 1\r\ny\r\n")
        assert guest.sync() == [err('Permissions Violation for Subscription to "private"'),
                                msg("public.a", "1", b"x"),
                                err('Permissions Violation for Publish to "private"')]
        admin = Wire(srv.port, {"user": "admin", "pass": "apw"}).send(b"SUB private 1\r\n")
        assert admin.sync() == []
        # Credentials that fail do not fall back to the no-auth user.
        w = Wire(srv.port, {"user": "admin", "pass": "bad"}).send(b"PING\r\n")
        assert w.until_closed() == [AUTH_VIOLATION]

        async def main():
            nc = await nats.connect(f"nats://127.0.0.1:{srv.port}", allow_reconnect=False)
            sub = await nc.subscribe("public.nats-py")
            await nc.publish("public.nats-py", b"anon")
            got = await sub.next_msg(5)
            await nc.close()
            return got.data
        assert run(main()) == b"anon"
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- reload

RELOAD_BEFORE = """
authorization {
  users: [
    {user: u1, password: p}
    {user: u2, password: p, permissions: {subscribe: {allow: ["foo.>", "q.*"]}, publish: ["x", "foo.>"]}}
  ]
}
"""
RELOAD_AFTER = """
debug: true
authorization {
  users: [
    {user: u2, password: p, permissions: {subscribe: {allow: ["foo.bar"]}, publish: ["y", "foo.>"]}}
    {user: u3, password: p}
  ]
}
"""


def test_reload_adds_and_removes_users_and_changes_permissions(tmp_path):
    srv = start_with_config(tmp_path, RELOAD_BEFORE, "--workers", "2")
    try:
        # Enough connections that both workers hold some.
        u1s = [Wire(srv.port, {"user": "u1", "pass": "p"}) for _ in range(6)]
        for w in u1s:
            w.sync()
        u2 = Wire(srv.port, {"user": "u2", "pass": "p"})
        u2.send(b"SUB foo.bar 1\r\nSUB foo.baz 2\r\nSUB q.a grp 3\r\nPUB x 1\r\n1\r\n")
        assert u2.sync() == []
        u2.send(b"PUB foo.baz 1\r\n2\r\n")   # the core now caches "allowed" for foo.baz
        assert u2.sync() == [msg("foo.baz", "2", b"2")]
        srv.config_path.write_text(RELOAD_AFTER)
        srv.proc.send_signal(signal.SIGHUP)
        for w in u1s:
            assert w.until_closed() == [AUTH_VIOLATION]
        # Go 2.12 names the queue group in the sid form too (2.9.10 leaves it out).
        assert u2.frames(2) == [
            err('Permissions Violation for Subscription to "foo.baz" (sid "2")'),
            err('Permissions Violation for Subscription to "q.a" using queue "grp" (sid "3")'),
        ]
        u2.send(b"PUB x 1\r\n1\r\nPUB y 1\r\n2\r\nPUB foo.bar 1\r\n3\r\nPUB foo.baz 1\r\n4\r\n")
        assert u2.sync() == [err('Permissions Violation for Publish to "x"'),
                             msg("foo.bar", "1", b"3")]
        assert eventually(lambda: authenticates(srv.port, {"user": "u3", "pass": "p"}))
        assert eventually(lambda: not authenticates(srv.port, {"user": "u1", "pass": "p"}))
        u3 = Wire(srv.port, {"user": "u3", "pass": "p"}).send(b"PUB foo.bar 1\r\n5\r\n")
        assert u3.sync() == []
        assert u2.frames(1) == [msg("foo.bar", "1", b"5")]
        log = wait_for_log(srv, "Reloaded server configuration")
        assert "[INF] Reloaded: debug = true" in log
        assert "[INF] Reloaded: authorization users" in log
        assert 'Removed sub "foo.baz" (sid "2") for User "u2" - not authorized' in log
    finally:
        srv.stop()


def test_reload_with_a_non_reloadable_change_is_refused(tmp_path):
    pid_file = tmp_path / "natsx.pid"
    srv = start_with_config(tmp_path, RELOAD_BEFORE, "-P", str(pid_file))
    try:
        u1 = Wire(srv.port, {"user": "u1", "pass": "p"})
        u1.sync()
        srv.config_path.write_text(RELOAD_AFTER + "server_name: renamed\n")
        # natsx --signal reload=<pid file>, as nats-server -sl reload=<pid file>
        r = subprocess.run(NATSX + ["--signal", f"reload={pid_file}"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        wait_for_log(srv, "[ERR] Failed to reload server configuration: config reload not "
                          "supported for ServerName: old=, new=renamed")
        # The old config stays in force: u1 still works, u3 does not exist.
        assert u1.sync() == []
        assert Wire(srv.port, {"user": "u1", "pass": "p"}).sync() == []
        w = Wire(srv.port, {"user": "u3", "pass": "p"}).send(b"PING\r\n")
        assert w.until_closed() == [AUTH_VIOLATION]
        assert "Reloaded: authorization users" not in srv.log()
    finally:
        srv.stop()


def test_reload_turns_auth_on_and_changes_limits(tmp_path):
    # One worker: both clients must have seen the reload when the first one has.
    srv = start_with_config(tmp_path, "max_payload: 1000\n", "--workers", "1")
    try:
        anon = Wire(srv.port, {})
        anon.sync()
        keep = Wire(srv.port, {"user": "x", "pass": "y"})   # credentials ignored without auth
        keep.sync()
        assert anon.info["max_payload"] == 1000 and "auth_required" not in anon.info
        srv.config_path.write_text("max_payload: 4000\n"
                                   "authorization { users: [{user: x, password: y}] }\n")
        srv.proc.send_signal(signal.SIGHUP)
        assert anon.until_closed() == [AUTH_VIOLATION]
        keep.send(b"SUB big 1\r\nPUB big 2000\r\n" + b"z" * 2000 + b"\r\n")
        assert keep.sync() == [msg("big", "1", b"z" * 2000)]
        fresh = Wire(srv.port)
        assert fresh.info["max_payload"] == 4000 and fresh.info["auth_required"] is True
        log = wait_for_log(srv, "Reloaded server configuration")
        assert "Reloaded: max_payload = 4000" in log
        varz = httpx.get(f"http://127.0.0.1:{srv.http_port}/varz").json()
        assert varz["max_payload"] == 4000 and varz["auth_required"] is True
    finally:
        srv.stop()


def test_sighup_without_a_config_file_is_logged(start_natsx):
    srv = start_natsx()
    srv.proc.send_signal(signal.SIGHUP)
    wait_for_log(srv, "[ERR] Failed to reload server configuration: can only reload config "
                      "when a file is provided using -c or --config")
    assert Wire(srv.port, {}).sync() == []
