"""Accounts from a config file: isolation, users bound to accounts, stream and service
imports. Black-box: the real ``natsx`` command with ``-c <config>`` and nats-py clients,
with one worker and with two (where publisher and subscriber may sit on different
workers). Behaviour follows server/accounts.go and server/opts.go (parseAccounts); the
config errors are compared with the Go server's.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import httpx
import nats
import pytest

from conftest import GO_SERVER, NATSX, RunningServer, free_port

pytestmark = pytest.mark.server

CONF = """
accounts {
  A: {
    users: [ {user: a, password: a}, {user: a2, password: a2} ]
    exports: [
      {stream: "feed.>"}
      {stream: "private.>", accounts: [C]}
      {service: "svc.>"}
    ]
  }
  B: {
    users: [ {user: b, password: b} ]
    imports: [
      {stream: {account: A, subject: "feed.>"}, prefix: "from_a"}
      {service: {account: A, subject: "svc.echo"}, to: "echo"}
    ]
  }
  C: {
    users: [ {user: c, password: c} ]
    imports: [
      {stream: {account: A, subject: "private.*"}, to: "priv.*"}
      {service: {account: A, subject: "svc.>"}}
    ]
  }
}
authorization { users: [ {user: g, password: g} ] }
no_auth_user: b
"""


def start(tmp_path, text: str, *flags: str, head: list[str] | None = None) -> RunningServer:
    path = tmp_path / "accounts.conf"
    path.write_text(text)
    port, http_port = free_port(), free_port()
    cmd = (head or NATSX) + ["-c", str(path), "-a", "127.0.0.1", "-p", str(port),
                             "-m", str(http_port), *flags]
    return RunningServer(cmd, port, http_port, tmp_path / "server.log", dict(os.environ))


@pytest.fixture(params=["1", "2", "go"], ids=["one-worker", "two-workers", "go"])
def server(request, tmp_path):
    """natsx with one and two workers; the same exchanges against the Go server."""
    if request.param == "go":
        if GO_SERVER is None:
            pytest.skip("the Go nats-server is not installed")
        srv = start(tmp_path, CONF, head=[GO_SERVER])
    else:
        srv = start(tmp_path, CONF, "--workers", request.param)
    yield srv
    srv.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def connect(srv, user: str | None = None):
    url = (f"nats://{user}:{user}@127.0.0.1:{srv.port}" if user
           else f"nats://127.0.0.1:{srv.port}")
    return await nats.connect(url, allow_reconnect=False)


async def connect_many(srv, user: str, n: int = 4):
    """Several connections: with two workers, some of them land on each."""
    return [await connect(srv, user) for _ in range(n)]


async def received(sub, timeout: float = 0.5) -> list:
    out = []
    while True:
        try:
            m = await sub.next_msg(timeout)
        except nats.errors.TimeoutError:
            return out
        out.append((m.subject, m.data))


def test_messages_never_cross_accounts(server):
    async def main():
        subs = {}
        conns = []
        for user in ("a", "b", "g"):
            for nc in await connect_many(server, user, 2):
                conns.append(nc)
                subs.setdefault(user, []).append(await nc.subscribe("x.>"))
                await nc.flush()
        for user in ("a", "b", "g"):
            for nc in await connect_many(server, user, 2):
                conns.append(nc)
                await nc.publish("x." + user, user.encode())
                await nc.flush()
        result = {u: [await received(s) for s in ss] for u, ss in subs.items()}
        for nc in conns:
            await nc.close()
        return result
    result = run(main())
    for user, per_sub in result.items():
        for got in per_sub:
            assert got == [("x." + user, user.encode())] * 2


def test_connz_shows_the_account(server):
    async def main():
        ncs = [await connect(server, "a"), await connect(server, "g"), await connect(server)]
        await asyncio.sleep(0.2)
        connz = httpx.get(f"http://127.0.0.1:{server.http_port}/connz?auth=1").json()
        for nc in ncs:
            await nc.close()
        return connz
    connz = run(main())
    accounts = sorted((c.get("authorized_user"), c.get("account")) for c in connz["connections"])
    # Go leaves the global account out of /connz.
    assert accounts == [("a", "A"), ("b", "B"), ("g", None)]


def test_stream_import_with_prefix_and_mapping(server):
    async def main():
        b = await connect(server)   # no_auth_user b, account B
        c = await connect(server, "c")
        sb = await b.subscribe("from_a.feed.>")
        sb_plain = await b.subscribe("feed.>")
        sc = await c.subscribe("priv.*")
        await b.flush()
        await c.flush()
        pubs = await connect_many(server, "a", 3)
        for i, a in enumerate(pubs):
            await a.publish(f"feed.n{i}", b"f%d" % i)
            await a.publish(f"private.p{i}", b"p%d" % i)
            await a.flush()
        got = await received(sb), await received(sb_plain), await received(sc)
        for nc in [b, c, *pubs]:
            await nc.close()
        return got
    got_b, got_b_plain, got_c = run(main())
    assert sorted(got_b) == [(f"from_a.feed.n{i}", b"f%d" % i) for i in range(3)]
    assert got_b_plain == []
    assert sorted(got_c) == [(f"priv.p{i}", b"p%d" % i) for i in range(3)]


def test_service_import_request_reply(server):
    async def main():
        responders = await connect_many(server, "a", 2)
        for i, a in enumerate(responders):
            async def handler(msg, i=i):
                await msg.respond(b"echo:" + msg.subject.encode() + b":" + msg.data)
            await a.subscribe("svc.>", queue="q", cb=handler)
            await a.flush()
        out = []
        for _ in range(4):
            b = await connect(server, "b")
            out.append((await b.request("echo", b"hi", timeout=5)).data)
            await b.close()
            c = await connect(server, "c")
            out.append((await c.request("svc.other", b"yo", timeout=5)).data)
            await c.close()
        for nc in responders:
            await nc.close()
        return out
    out = run(main())
    assert out == [b"echo:svc.echo:hi", b"echo:svc.other:yo"] * 4


def test_unimported_subjects_stay_private(server):
    async def main():
        b = await connect(server, "b")
        sb = await b.subscribe(">")
        await b.flush()
        a = await connect(server, "a")
        await a.publish("private.x", b"no")     # exported to C only
        await a.publish("other", b"no")
        await a.flush()
        got = await received(sb)
        await a.close()
        await b.close()
        return got
    assert run(main()) == []


def config_error(tmp_path, text: str, cmd: list[str]) -> str:
    path = tmp_path / "bad.conf"
    path.write_text(text)
    proc = subprocess.run(cmd + ["-c", str(path), "-p", str(free_port())], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


BAD = [
    ('accounts { B: { imports: [ {stream: {account: Z, subject: "x"}} ] } }',
     '"Z" account not defined for stream import'),
    ('accounts { B: { imports: [ {service: {account: Z, subject: "x"}} ] } }',
     '"Z" account not defined for service import'),
    ('accounts { A: {}, B: { imports: [ {stream: {account: A, subject: "x"}} ] } }',
     'Error adding stream import "x": stream import not authorized'),
    ('accounts { A: { exports: [{stream: "x", accounts: [C]}] }, C: {}, '
     'B: { imports: [ {stream: {account: A, subject: "x"}} ] } }',
     'Error adding stream import "x": stream import not authorized'),
    ('accounts { A: { exports: [{stream: "foo"}],'
     ' imports: [{stream: {account: B, subject: "foo"}}] }'
     '\n B: { exports: [{stream: "foo"}],'
     ' imports: [{stream: {account: A, subject: "foo"}}] } }',
     'Error adding stream import "foo": import forms a cycle'),
    ('accounts { A: { exports: [{service: "foo"}],'
     ' imports: [{service: {account: B, subject: "foo"}}] }'
     '\n B: { exports: [{service: "foo"}],'
     ' imports: [{service: {account: A, subject: "foo"}}] } }',
     'Error adding service import "foo": import forms a cycle'),
    ('accounts { A: { users: [{user: a, password: a}], exports: [{service: "svc"}] },'
     ' B: { imports: [{service: {account: A, subject: "svc"}}] } }\nno_auth_user: nobody',
     'no_auth_user: "nobody" not present as user'),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_config_errors(tmp_path, text, expected):
    out = config_error(tmp_path, text, NATSX)
    assert expected in out, out
    if GO_SERVER is not None:
        go_out = config_error(tmp_path, text, [GO_SERVER])
        assert expected in go_out, go_out


def wait_for_log(srv: RunningServer, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = srv.log()
        if text in log:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log:\n{log[-3000:]}")
        time.sleep(0.05)


RELOADED = """
accounts {
  A: {
    users: [ {user: a, password: a} ]
    exports: [ {stream: "feed.>"}, {service: "svc.>"} ]
  }
  B: {
    users: [ {user: b, password: b} ]
    imports: [
      {stream: {account: D, subject: "dfeed.>"}, prefix: "from_d"}
      {service: {account: A, subject: "svc.echo"}, to: "echo"}
    ]
  }
  D: {
    users: [ {user: d, password: d} ]
    exports: [ {stream: "dfeed.>"} ]
  }
}
authorization { users: [ {user: g, password: g}, {user: a2, password: a2} ] }
no_auth_user: b
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_reload_applies_account_changes(tmp_path, workers):
    """Go's reloadAuthorization: a user moved to another account is disconnected; an
    account removed takes its users' connections with it; an account added works at once;
    the imports are rebuilt (B loses A's feed and gains D's) in every worker."""
    srv = start(tmp_path, CONF, "--workers", workers)
    try:
        async def main():
            bs = await connect_many(srv, "b")
            subs = [await nc.subscribe("from_a.>") for nc in bs]
            subs_d = [await nc.subscribe("from_d.>") for nc in bs]
            for nc in bs:
                await nc.flush()
            moved = await connect_many(srv, "a2", 2)
            gone = await connect_many(srv, "c", 2)
            (tmp_path / "accounts.conf").write_text(RELOADED)
            srv.proc.send_signal(signal.SIGHUP)
            log = wait_for_log(srv, "Reloaded server configuration")
            assert "Reloaded: accounts" in log
            # Every worker applies it: wait for each to close its share.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                closed = [nc.is_closed or not nc.is_connected for nc in moved + gone]
                if all(closed):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            pubs = await connect_many(srv, "a") + await connect_many(srv, "d")
            for nc in pubs:
                await nc.publish("feed.1", b"a")
                await nc.publish("dfeed.1", b"d")
                await nc.flush()
            got = [await received(s) for s in subs]
            got_d = [await received(s) for s in subs_d]
            for nc in bs + pubs + moved + gone:
                await nc.close()
            return closed, got, got_d
        closed, got, got_d = run(main())
        assert all(closed)
        assert got == [[]] * 4
        assert got_d == [[("from_d.dfeed.1", b"d")] * 4] * 4
    finally:
        srv.stop()


def test_reload_adds_service_import_in_every_worker(tmp_path):
    srv = start(tmp_path, CONF.replace('{service: {account: A, subject: "svc.echo"}, to: "echo"}',
                                       ""), "--workers", "2")
    try:
        async def main():
            responders = await connect_many(srv, "a")
            for nc in responders:
                async def echo(m, nc=nc):
                    await nc.publish(m.reply, b"echo:" + m.data)
                await nc.subscribe("svc.echo", cb=echo)
                await nc.flush()
            bs = await connect_many(srv, "b")
            before = []
            for nc in bs:
                try:
                    await nc.request("echo", b"x", timeout=0.3)
                    before.append(True)
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    before.append(False)
            (tmp_path / "accounts.conf").write_text(CONF)
            srv.proc.send_signal(signal.SIGHUP)
            wait_for_log(srv, "Reloaded server configuration")
            await asyncio.sleep(1.0)
            after = [(await nc.request("echo", b"x", timeout=2)).data for nc in bs]
            for nc in bs + responders:
                await nc.close()
            return before, after
        before, after = run(main())
        assert before == [False] * 4
        assert after == [b"echo:x"] * 4
    finally:
        srv.stop()


RESPONSES = """
accounts {
  S: {
    users: [ {user: s, password: s} ]
    exports: [
      {service: "one", response_type: singleton}
      {service: "many", response_type: stream}
      {service: "chunks", response: chunked, threshold: "1s"}
    ]
  }
  R: {
    users: [ {user: r, password: r} ]
    imports: [
      {service: {account: S, subject: "one"}}
      {service: {account: S, subject: "many"}}
      {service: {account: S, subject: "chunks"}}
    ]
  }
}
"""


async def _responses(srv, subject: str, late: float = 0.0) -> list:
    """Three responses to one request through the import; with ``late``, a fourth after
    that many seconds. Returns what the requester got."""
    s = await connect(srv, "s")
    r = await connect(srv, "r")

    async def serve(m):
        for i in range(3):
            await s.publish(m.reply, b"%d" % i)
        if late:
            await s.flush()
            await asyncio.sleep(late)
            await s.publish(m.reply, b"late")
        await s.flush()

    await s.subscribe(subject, cb=serve)
    await s.flush()
    inbox = r.new_inbox()
    sub = await r.subscribe(inbox)
    await r.flush()
    await r.publish(subject, b"q", reply=inbox)
    await r.flush()
    got = [m.data for m in await _drain(sub, 0.8 + late)]
    await s.close()
    await r.close()
    return got


async def _drain(sub, wait: float) -> list:
    await asyncio.sleep(wait)
    out = []
    while True:
        try:
            out.append(await sub.next_msg(0.05))
        except nats.errors.TimeoutError:
            return out


@pytest.fixture(params=["1", "2", "go"], ids=["one-worker", "two-workers", "go"])
def responses_server(request, tmp_path):
    if request.param == "go":
        if GO_SERVER is None:
            pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
        srv = start(tmp_path, RESPONSES, head=[GO_SERVER])
    else:
        srv = start(tmp_path, RESPONSES, "--workers", request.param)
    yield srv
    srv.stop()


@pytest.mark.parametrize("subject,expected", [
    ("one", [b"0"]), ("many", [b"0", b"1", b"2"]), ("chunks", [b"0", b"1", b"2"])])
def test_service_response_types(responses_server, subject, expected):
    assert run(_responses(responses_server, subject)) == expected


def test_chunked_responses_stop_after_the_threshold(responses_server):
    # threshold 1s; Go checks it with a timer of that period, so past 2s it is gone.
    assert run(_responses(responses_server, "chunks", late=2.5)) == [b"0", b"1", b"2"]


@pytest.mark.parametrize("text,expected", [
    ('accounts { A: { exports: [{service: "x", response_type: "bogus"}] } }',
     'Unknown response type: "bogus"'),
    ('accounts { A: { exports: [{service: "x", threshold: "abc"}] } }',
     'Expected response threshold to be a parseable time duration, got "abc"'),
    ('accounts { A: { exports: [{stream: "x", response_type: stream}] } }',
     "Detected response directive on non-service"),
])
def test_response_type_config_errors(tmp_path, text, expected):
    out = config_error(tmp_path, text, NATSX)
    assert expected in out, out
    if GO_SERVER is not None:
        go_out = config_error(tmp_path, text, [GO_SERVER])
        assert expected in go_out, go_out


@pytest.mark.parametrize("subject,src,dst,expected", [
    ("private.x", "private.*", "priv.*", "priv.x"),
    ("a.b.c.d", "a.>", "z.>", "z.b.c.d"),
    ("a.1.b.2", "a.*.b.*", "x.*.*", "x.1.2"),
    ("svc.echo", "echo", "svc.echo", "svc.echo"),
    ("feed.1", "feed.*", "feed.*", "feed.1"),
])
def test_import_subject_mapping(subject, src, dst, expected):
    from natsx.server.imports import map_subject

    assert map_subject(subject.encode(), src.encode(), dst.encode()) == expected.encode()
LATENCY = """
accounts {
  S: {
    users: [ {user: s, password: s} ]
    exports: [ {service: "svc", latency: "lat.svc"}, {service: "half", latency: {sampling: 50%, subject: "lat.half"}} ]
  }
  R: {
    users: [ {user: r, password: r} ]
    imports: [ {service: {account: S, subject: "svc"}}, {service: {account: S, subject: "half"}} ]
  }
}
"""


async def _latency_events(srv, requests: int = 1, subject: str = "svc") -> list:
    import json

    s = await connect(srv, "s")
    r = await connect(srv, "r")

    async def serve(m):
        if m.reply:
            await s.publish(m.reply, b"ok")

    await s.subscribe(subject, cb=serve)
    lat = await s.subscribe("lat." + subject)
    # Two flushes: nats-py may write the first PING ahead of the SUBs (docs/architecture.md,
    # "Subscribe, flush, publish elsewhere").
    await s.flush()
    await s.flush()
    for _ in range(requests):
        assert (await r.request(subject, b"q", timeout=2)).data == b"ok"
    await r.publish(subject, b"no reply")   # Go: a 400 when sampled
    await r.flush()
    await asyncio.sleep(0.5)
    events = []
    while True:
        try:
            events.append(json.loads((await lat.next_msg(0.2)).data))
        except nats.errors.TimeoutError:
            break
    await s.close()
    await r.close()
    return events


def _shape(ev: dict) -> tuple:
    return (list(ev), ev["status"], ev.get("description"), list(ev.get("requestor") or {}),
            list(ev.get("responder") or {}), ev.get("requestor", {}).get("acc"),
            ev.get("responder", {}).get("acc"))


def test_service_latency_events_match_go(tmp_path):
    shapes = {}
    for head in ("natsx", "go"):
        if head == "go" and GO_SERVER is None:
            pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
        # Two workers: the responder may be a client of the other one (see imports).
        srv = start(tmp_path, LATENCY, *([] if head == "go" else ["--workers", "2"]),
                    head=[GO_SERVER] if head == "go" else None)
        try:
            events = run(_latency_events(srv))
        finally:
            srv.stop()
        assert [e["type"] for e in events] == ["io.nats.server.metric.v1.service_latency"] * 2
        # Independent events: across workers the 200 may come after the 400.
        ok, bad = sorted(events, key=lambda e: e["status"])
        assert ok["status"] == 200 and ok["total"] > 0 and ok["total"] >= ok["service"] >= 0
        assert bad["status"] == 400
        shapes[head] = [_shape(e) for e in (ok, bad)]
    assert shapes["natsx"] == shapes["go"]


def test_service_latency_sampling(tmp_path):
    srv = start(tmp_path, LATENCY, "--workers", "2")
    try:
        events = run(_latency_events(srv, requests=200, subject="half"))
    finally:
        srv.stop()
    # Go's draw: rand(100) <= 50, so 51% of the 201 requests (200 answered, one 400).
    assert 60 < len(events) < 150


async def _jwt_stream_responses(url: str, a_creds: str, b_creds: str) -> list:
    a = await nats.connect(url, user_credentials=a_creds)
    b = await nats.connect(url, user_credentials=b_creds)

    async def serve(m):
        for i in range(3):
            await a.publish(m.reply, b"%d" % i)

    await a.subscribe("svc.echo", cb=serve)
    await a.flush()
    inbox = b.new_inbox()
    sub = await b.subscribe(inbox)
    await b.flush()
    await b.publish("echo", b"q", reply=inbox)
    await b.flush()
    got = [m.data for m in await _drain(sub, 0.8)]
    await a.close()
    await b.close()
    return got


@pytest.mark.parametrize("head", ["natsx", "go"])
def test_jwt_export_response_type(tmp_path, head):
    """A JWT service export's response_type is honoured as the config's is."""
    from natsx.auth import jwt
    from test_operator import World, creds

    w = World()
    w.accounts[w.a.public_key] = w.account(w.a, "A", exports=(
        jwt.Export(subject="svc.>", type="service", response_type="Stream"),))
    conf = w.config(tmp_path)
    if head == "go" and GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    port = free_port()
    cmd = [GO_SERVER] if head == "go" else NATSX + ["--workers", "2"]
    srv = RunningServer(cmd + ["-c", conf, "-a", "127.0.0.1", "-p", str(port)], port, None,
                        tmp_path / f"{head}.log", dict(os.environ))
    try:
        a_creds = creds(tmp_path, *w.user(w.a), name="a.creds")
        b_creds = creds(tmp_path, *w.user(w.b), name="b.creds")
        got = run(_jwt_stream_responses(srv.url, a_creds, b_creds))
    finally:
        srv.stop()
    assert got == [b"0", b"1", b"2"]


async def _latency_across_workers(srv, requests: int = 20) -> list:
    import json

    responders = await connect_many(srv, "s", 4)
    for nc in responders:
        async def serve(m, nc=nc):
            await nc.publish(m.reply, b"ok")
        await nc.subscribe("svc", cb=serve, queue="q")
        await nc.flush()
    watcher = await connect(srv, "s")
    lat = await watcher.subscribe("lat.svc")
    await watcher.flush()
    requesters = await connect_many(srv, "r", 2)
    await asyncio.sleep(0.3)
    for i in range(requests):
        assert (await requesters[i % 2].request("svc", b"q", timeout=2)).data == b"ok"
    await asyncio.sleep(0.5)
    events = []
    while True:
        try:
            events.append(json.loads((await lat.next_msg(0.2)).data))
        except nats.errors.TimeoutError:
            break
    for nc in responders + requesters + [watcher]:
        await nc.close()
    return events


def test_service_latency_describes_responders_on_other_workers(tmp_path):
    """Responders and requesters spread over two workers: every event names its
    responder, whichever worker it is a client of."""
    srv = start(tmp_path, LATENCY, "--workers", "2")
    try:
        events = run(_latency_across_workers(srv))
    finally:
        srv.stop()
    assert len(events) == 20
    assert all(e["status"] == 200 and e["responder"]["acc"] == "S"
               and e["requestor"] == {"acc": "R", "rtt": e["requestor"]["rtt"]}
               for e in events)
    assert len({e["responder"]["id"] for e in events}) > 1
