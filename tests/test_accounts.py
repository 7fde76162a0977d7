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


def test_reload_keeps_accounts_and_refuses_changing_them(tmp_path):
    srv = start(tmp_path, CONF)
    try:
        async def main():
            b = await connect(srv, "b")
            sb = await b.subscribe("from_a.>")
            await b.flush()
            # A user moved to another account is disconnected: its subscriptions are
            # in the old account.
            moved = await connect(srv, "a2")
            srv.config_path = tmp_path / "accounts.conf"
            srv.config_path.write_text(CONF.replace("{user: a2, password: a2}", "")
                                       .replace("{user: g, password: g}",
                                                "{user: g, password: g}, "
                                                "{user: a2, password: a2}"))
            srv.proc.send_signal(signal.SIGHUP)
            wait_for_log(srv, "Reloaded server configuration")
            a = await connect(srv, "a")
            await a.publish("feed.1", b"after reload")
            await a.flush()
            got = await received(sb)
            await asyncio.sleep(0.3)
            closed = moved.is_closed or not moved.is_connected
            srv.config_path.write_text(CONF.replace("C: {", "D: {}\n  C: {"))
            srv.proc.send_signal(signal.SIGHUP)
            wait_for_log(srv, "config reload not supported for Accounts")
            await a.publish("feed.2", b"still")
            await a.flush()
            got += await received(sb)
            for nc in (a, b, moved):
                await nc.close()
            return got, closed
        got, closed = run(main())
        assert got == [("from_a.feed.1", b"after reload"), ("from_a.feed.2", b"still")]
        assert closed
    finally:
        srv.stop()


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
