"""JetStream black-box tests: nats-py's JetStream API and raw requests against ``natsx -js``.

Most tests share one server (module scope) and use their own stream names; the restart and
durability tests start their own servers on a store directory they keep across restarts.
Error codes and status lines are the Go server's (server/jetstream_errors_generated.go,
server/consumer.go), checked through what the client sees.

The setup every test shares lives in the helpers below, so a test body holds only what it is
about: ``async_test`` runs an ``async def`` test under ``run``; ``js_session`` is a connection
and its JetStream context, closed on the way out; ``js_stream`` adds a stream with a fresh
name to that (its subjects are templates on the name, ``"{s}.*"``); ``publish_numbered``
fills one; ``assert_state`` checks named fields of a stream's state and ``raises_code`` an
API error's Go error code.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import socket
import time
import uuid

import nats
import pytest
from nats.js import api as jsapi
from nats.js.errors import APIError, BadRequestError, NotFoundError

from conftest import NATSX, RunningServer, free_port, wait_port

pytestmark = pytest.mark.server


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def async_test(fn):
    """An ``async def`` test run to completion under ``run`` (pytest still sees its fixtures
    through ``functools.wraps``)."""
    @functools.wraps(fn)
    def test(*args, **kwargs):
        run(fn(*args, **kwargs))
    return test


def name(prefix: str = "S") -> str:
    return prefix + uuid.uuid4().hex[:8].upper()


def start(tmp_path, store: str, *args: str, port: int | None = None) -> RunningServer:
    port = port or free_port()
    cmd = NATSX + ["-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store, *args]
    return RunningServer(cmd, port, None, tmp_path / f"natsx-{time.monotonic_ns()}.log",
                         dict(os.environ))


def kill_hard(srv: RunningServer) -> None:
    """SIGKILL the supervisor and its workers (a crash, not a shutdown)."""
    try:
        os.killpg(srv.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    srv.proc.wait(10)
    srv._log.close()
    # The port is free once the workers are gone too.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=0.2):
                time.sleep(0.05)
        except OSError:
            return


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("js")
    srv = start(tmp, str(tmp / "store"))
    yield srv
    srv.stop()


async def connect(srv: RunningServer, **kw) -> nats.NATS:
    kw.setdefault("allow_reconnect", False)
    kw.setdefault("connect_timeout", 3)
    return await nats.connect(srv.url, **kw)


@contextlib.asynccontextmanager
async def js_session(srv: RunningServer, **kw):
    """``(nc, js)``: a connection (``connect``'s options) and its JetStream context."""
    nc = await connect(srv, **kw)
    try:
        yield nc, nc.jetstream()
    finally:
        await nc.close()


async def new_stream(js, *subjects: str, **config) -> str:
    """Adds a stream with a fresh name and returns the name. ``subjects`` are templates on
    it (``"{s}.*"``); with none the stream takes its own name as its only subject."""
    s = name()
    await js.add_stream(name=s, subjects=[t.format(s=s) for t in subjects or ("{s}",)],
                        **config)
    return s


@contextlib.asynccontextmanager
async def js_stream(srv: RunningServer, *subjects: str, **config):
    """``(nc, js, s)``: ``js_session`` plus a stream of its own (see ``new_stream``)."""
    async with js_session(srv) as (nc, js):
        yield nc, js, await new_stream(js, *subjects, **config)


async def publish_numbered(js, subject: str, count: int) -> None:
    """Publishes ``b"0"``, ``b"1"``, ... to ``subject``, each acknowledged before the next."""
    for i in range(count):
        await js.publish(subject, b"%d" % i)


async def assert_state(js, stream: str, **want) -> None:
    """The stream's state has these values (nats-py StreamState field names)."""
    state = (await js.stream_info(stream)).state
    assert {k: getattr(state, k) for k in want} == want


@contextlib.contextmanager
def raises_code(exc: type[APIError], err_code: int):
    """``pytest.raises`` for a JetStream API error that also checks its Go error code."""
    with pytest.raises(exc) as e:
        yield e
    assert e.value.err_code == err_code


async def api(nc, subject: str, body=None) -> dict:
    data = b"" if body is None else json.dumps(body).encode()
    msg = await nc.request(subject, data, timeout=3)
    return json.loads(msg.data)


async def collect(nc, subject: str, data: bytes, want: int = 10, wait: float = 1.0):
    """Send a request and gather every reply (messages and status messages) for ``wait``."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, data, reply=inbox)
    out = []
    try:
        while len(out) < want:
            out.append(await sub.next_msg(timeout=wait))
    except nats.errors.TimeoutError:
        pass
    await sub.unsubscribe()
    return out


async def stored_ids(js, stream: str) -> list[tuple[str, int]]:
    """``(Nats-Msg-Id, sequence)`` of every message the stream holds, in order."""
    si = await js.stream_info(stream)
    ids = []
    for seq in range(si.state.first_seq, si.state.last_seq + 1):
        m = await js.get_msg(stream, seq)
        ids.append((m.headers["Nats-Msg-Id"], m.seq))
    return ids


# ------------------------------------------------------------------------------------- basics

def test_info_advertises_jetstream(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        info = json.loads(s.recv(4096).split(b" ", 1)[1])
    assert info["jetstream"] is True


@async_test
async def test_account_info(server):
    async with js_session(server) as (nc, _):
        info = await api(nc, "$JS.API.INFO")
        assert info["type"] == "io.nats.jetstream.api.v1.account_info_response"
        assert info["limits"]["max_streams"] == -1
        assert info["limits"]["max_bytes_required"] is False
        # A request is counted once answered (Go: sendAPIResponse), so INFO sees the ones
        # before it.
        again = await api(nc, "$JS.API.INFO")
        assert again["api"]["total"] == info["api"]["total"] + 1
        assert again["api"]["level"] == 2


@async_test
async def test_stream_create_info_update_delete(server):
    async with js_session(server) as (nc, js):
        s = name()
        si = await js.add_stream(name=s, subjects=[f"{s}.>"])
        assert si.config.retention == "limits" and si.config.storage == "file"
        assert si.config.duplicate_window == 120.0 and si.config.max_msgs == -1
        assert si.did_create
        # Creating again with the same config is idempotent; a different one is 10058.
        await js.add_stream(name=s, subjects=[f"{s}.>"])
        with raises_code(BadRequestError, 10058):
            await js.add_stream(name=s, subjects=[f"{s}.>"], max_msgs=3)
        si = await js.update_stream(name=s, subjects=[f"{s}.>"], max_msgs=3)
        assert si.config.max_msgs == 3
        with raises_code(APIError, 10052):
            await js.update_stream(name=s, subjects=[f"{s}.>"], storage="memory")
        assert s in [i.config.name for i in await js.streams_info()]
        names = (await api(nc, "$JS.API.STREAM.NAMES"))["streams"]
        assert s in names
        assert await js.delete_stream(s)
        with raises_code(NotFoundError, 10059):
            await js.stream_info(s)


@async_test
async def test_stream_create_errors(server):
    async with js_stream(server, "{s}.a") as (nc, js, s):
        r = await api(nc, f"$JS.API.STREAM.CREATE.{name()}", {"name": name(), "subjects": [f"{s}.*"]})
        assert r["error"]["err_code"] == 10056   # name mismatch is checked first
        other = name()
        r = await api(nc, f"$JS.API.STREAM.CREATE.{other}", {"name": other, "subjects": [f"{s}.*"]})
        assert r["error"] == {"code": 400, "err_code": 10065,
                              "description": "subjects overlap with an existing stream"}
        msg = await nc.request(f"$JS.API.STREAM.CREATE.{other}", b"{nope", timeout=3)
        assert json.loads(msg.data)["error"]["err_code"] == 10025
        r = await api(nc, f"$JS.API.STREAM.CREATE.{other}", {"name": other, "num_replicas": 3})
        assert r["error"]["err_code"] == 10074
        r = await api(nc, f"$JS.API.STREAM.CREATE.{other}", {"name": other, "max_age": 1000})
        assert r["error"] == {"code": 500, "err_code": 10052,
                              "description": "max age needs to be >= 100ms"}
        r = await api(nc, "$JS.API.STREAM.INFO.NOPE")
        assert r == {"type": "io.nats.jetstream.api.v1.stream_info_response",
                     "error": {"code": 404, "err_code": 10059, "description": "stream not found"},
                     "total": 0, "offset": 0, "limit": 0}


# ------------------------------------------------------------------------------------- publish

@async_test
async def test_publish_acks_and_dedupe(server):
    async with js_stream(server, "{s}.*") as (nc, js, s):
        a1 = await js.publish(f"{s}.a", b"one", headers={"Nats-Msg-Id": "m1"})
        a2 = await js.publish(f"{s}.a", b"one again", headers={"Nats-Msg-Id": "m1"})
        a3 = await js.publish(f"{s}.b", b"two")
        assert (a1.stream, a1.seq, a1.duplicate) == (s, 1, None)
        assert (a2.seq, a2.duplicate) == (1, True)
        assert a3.seq == 2
        # A publish without a reply is stored silently.
        await nc.publish(f"{s}.c", b"three")
        await nc.flush()
        await assert_state(js, s, messages=3, last_seq=3)


@async_test
async def test_publish_expected_headers(server):
    async with js_stream(server, "{s}.*") as (nc, js, s):
        await js.publish(f"{s}.a", b"x", headers={"Nats-Msg-Id": "id1"})
        cases = [
            ({"Nats-Expected-Stream": "OTHER"}, 10060, "expected stream does not match"),
            ({"Nats-Expected-Last-Sequence": "5"}, 10071, "wrong last sequence: 1"),
            ({"Nats-Expected-Last-Subject-Sequence": "7"}, 10071, "wrong last sequence: 1"),
            ({"Nats-Expected-Last-Msg-Id": "nope"}, 10070, "wrong last msg ID: id1"),
            ({"Nats-Rollup": "sub"}, 10111, "rollup not permitted"),
        ]
        for hdrs, code, text in cases:
            msg = await nc.request(f"{s}.a", b"y", headers=hdrs, timeout=3)
            body = json.loads(msg.data)
            assert body["error"]["err_code"] == code, hdrs
            assert body["error"]["description"] == text
            assert body["stream"] == s and body["seq"] == 0
        ok = await js.publish(f"{s}.a", b"z", headers={"Nats-Expected-Last-Sequence": "1",
                                                      "Nats-Expected-Last-Msg-Id": "id1"})
        assert ok.seq == 2
        ok = await js.publish(f"{s}.new", b"z", headers={"Nats-Expected-Last-Subject-Sequence": "0"})
        assert ok.seq == 3


def test_publishes_of_one_read_are_each_answered(server):
    """Publishes that reach a stream in one read are handled as one run: plain ones by the
    stream's own loop, the others (Nats- headers) by the full checks, interleaved. Each
    gets its own answer, and the sequences follow the order they were sent in."""
    from helpers import Wire

    s = name()
    w = Wire(server.port, {"headers": True})
    cfg = json.dumps({"name": s, "subjects": [s], "max_msg_size": 64}).encode()
    w.send(b"SUB _r.* 1\r\nPUB $JS.API.STREAM.CREATE.%s _r.0 %d\r\n%s\r\n"
           % (s.encode(), len(cfg), cfg))

    def replies(count):
        got = {}
        while len(got) < count:
            f = w.frame()
            assert f is not None, "the server closed the connection"
            if f == b"PING\r\n":
                w.send(b"PONG\r\n")
                continue
            head, _, body = f.partition(b"\r\n")
            assert head.startswith(b"MSG "), f
            got[head.split()[1].decode()] = json.loads(body[:-2])
        return got

    assert "error" not in replies(1)["_r.0"]

    def pub(reply, payload, **headers):
        if not headers:
            return b"PUB %s %s %d\r\n%s\r\n" % (s.encode(), reply, len(payload), payload)
        hdr = b"NATS/1.0\r\n" + b"".join(b"%s: %s\r\n" % (k.replace("_", "-").encode(),
                                                           v.encode())
                                          for k, v in headers.items()) + b"\r\n"
        return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (s.encode(), reply, len(hdr),
                                                   len(hdr) + len(payload), hdr, payload)

    w.send(b"".join([
        pub(b"_r.1", b"plain"),
        pub(b"_r.2", b"first", Nats_Msg_Id="a"),
        pub(b"_r.3", b"again", Nats_Msg_Id="a"),
        pub(b"_r.4", b"x" * 100),
        pub(b"_r.5", b"late", Nats_Expected_Last_Sequence="9"),
        pub(b"_r.6", b"plain again"),
        pub(b"_r.7", b"other header", X_Trace="1"),
        pub(b"_r.8", b"expected", Nats_Expected_Last_Sequence="4"),
    ]))
    got = replies(8)
    assert got["_r.1"] == {"stream": s, "seq": 1}
    assert got["_r.2"] == {"stream": s, "seq": 2}
    assert got["_r.3"] == {"stream": s, "seq": 2, "duplicate": True}
    assert got["_r.4"]["error"]["err_code"] == 10054
    assert got["_r.5"]["error"] == {"code": 400, "err_code": 10071,
                                    "description": "wrong last sequence: 2"}
    assert got["_r.6"] == {"stream": s, "seq": 3}
    assert got["_r.7"] == {"stream": s, "seq": 4}
    assert got["_r.8"] == {"stream": s, "seq": 5}
    w.sock.close()


@async_test
async def test_limits_discard_new_and_max_msg_size(server):
    async with js_stream(server, max_msgs=2, discard="new", max_msg_size=10) as (nc, js, s):
        await js.publish(s, b"1")
        await js.publish(s, b"2")
        msg = await nc.request(s, b"3", timeout=3)
        assert json.loads(msg.data)["error"] == {"code": 503, "err_code": 10077,
                                                 "description": "maximum messages exceeded"}
        msg = await nc.request(s, b"x" * 11, timeout=3)
        assert json.loads(msg.data)["error"]["err_code"] == 10054
        old = await new_stream(js, max_msgs=2)
        await publish_numbered(js, old, 5)
        await assert_state(js, old, messages=2, first_seq=4, last_seq=5)


@async_test
async def test_rollup(server):
    async with js_stream(server, "{s}.*", allow_rollup_hdrs=True) as (nc, js, s):
        await publish_numbered(js, f"{s}.a", 3)
        await js.publish(f"{s}.b", b"b")
        await js.publish(f"{s}.a", b"last", headers={"Nats-Rollup": "sub"})
        await assert_state(js, s, messages=2)
        await js.publish(f"{s}.c", b"all", headers={"Nats-Rollup": "all"})
        await assert_state(js, s, messages=1, last_seq=6)


@async_test
async def test_max_age_expires_messages(server):
    async with js_stream(server, max_age=0.3, storage="memory") as (nc, js, s):
        await js.publish(s, b"gone soon")
        await assert_state(js, s, messages=1)
        await asyncio.sleep(0.8)
        await assert_state(js, s, messages=0)


# ------------------------------------------------------------------------------------- messages

@async_test
async def test_msg_get_delete_and_purge(server):
    async with js_stream(server, "{s}.*") as (nc, js, s):
        await js.publish(f"{s}.a", b"a1", headers={"X": "1"})
        await js.publish(f"{s}.b", b"b1")
        await js.publish(f"{s}.a", b"a2")
        m = await js.get_msg(s, 1)
        assert (m.subject, m.data, m.headers["X"]) == (f"{s}.a", b"a1", "1")
        m = await js.get_last_msg(s, f"{s}.a")
        assert m.seq == 3
        with raises_code(NotFoundError, 10037):
            await js.get_msg(s, 42)
        assert await js.delete_msg(s, 2)
        r = await api(nc, f"$JS.API.STREAM.MSG.DELETE.{s}", {"seq": 2})
        assert r["error"]["err_code"] == 10057
        await assert_state(js, s, messages=2, num_deleted=1)
        r = await api(nc, f"$JS.API.STREAM.PURGE.{s}", {"filter": f"{s}.a", "keep": 1})
        assert r == {"type": "io.nats.jetstream.api.v1.stream_purge_response",
                     "success": True, "purged": 1}
        await js.purge_stream(s)
        await assert_state(js, s, messages=0, first_seq=4)


@async_test
async def test_deny_delete_and_purge(server):
    async with js_stream(server, deny_delete=True, deny_purge=True) as (nc, js, s):
        await js.publish(s, b"x")
        r = await api(nc, f"$JS.API.STREAM.MSG.DELETE.{s}", {"seq": 1})
        assert r["error"] == {"code": 500, "err_code": 10057,
                              "description": "message delete not permitted"}
        r = await api(nc, f"$JS.API.STREAM.PURGE.{s}")
        assert r["error"]["err_code"] == 10110


@async_test
async def test_direct_get(server):
    async with js_stream(server, "{s}.*", allow_direct=True) as (nc, js, s):
        await js.publish(f"{s}.a", b"one", headers={"Nats-Msg-Id": "m1"})
        await js.publish(f"{s}.a", b"two")
        msg = await nc.request(f"$JS.API.DIRECT.GET.{s}", json.dumps({"seq": 1}).encode(),
                               timeout=3)
        assert msg.data == b"one"
        assert msg.headers["Nats-Msg-Id"] == "m1"
        assert msg.headers["Nats-Stream"] == s and msg.headers["Nats-Sequence"] == "1"
        assert msg.headers["Nats-Subject"] == f"{s}.a" and "Nats-Time-Stamp" in msg.headers
        msg = await nc.request(f"$JS.API.DIRECT.GET.{s}.{s}.a", b"", timeout=3)
        assert msg.data == b"two"
        msg = await nc.request(f"$JS.API.DIRECT.GET.{s}",
                               json.dumps({"next_by_subj": f"{s}.a", "seq": 2}).encode(), timeout=3)
        assert msg.headers["Nats-Sequence"] == "2"
        out = await collect(nc, f"$JS.API.DIRECT.GET.{s}", json.dumps({"seq": 9}).encode(), 1)
        assert out[0].headers[nats.js.api.Header.STATUS] == "404"
        # Without allow_direct nobody answers.
        plain = await new_stream(js)
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(f"$JS.API.DIRECT.GET.{plain}", b'{"seq":1}', timeout=2)


# ------------------------------------------------------------------------------------- pull

@async_test
async def test_pull_fetch_ack_and_consumer_info(server):
    async with js_stream(server, "{s}.*") as (nc, js, s):
        await publish_numbered(js, f"{s}.a", 5)
        psub = await js.pull_subscribe(f"{s}.a", "dur", stream=s)
        msgs = await psub.fetch(3, timeout=2)
        assert [m.data for m in msgs] == [b"0", b"1", b"2"]
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        toks = msgs[0].reply.split(".")
        assert len(toks) == 9 and toks[:4] == ["$JS", "ACK", s, "dur"]
        assert toks[4:7] == ["1", "1", "1"] and toks[8] == "4"
        assert msgs[2].metadata.num_pending == 2
        await msgs[0].ack()
        await msgs[1].ack_sync()
        ci = await js.consumer_info(s, "dur")
        assert ci.num_ack_pending == 1 and ci.num_pending == 2
        assert ci.delivered.stream_seq == 3 and ci.ack_floor.stream_seq == 2
        assert ci.config.ack_policy == "explicit" and ci.config.max_ack_pending == 1000
        await msgs[2].ack()
        msgs = await psub.fetch(5, timeout=1)
        assert [m.data for m in msgs] == [b"3", b"4"]
        for m in msgs:
            await m.ack()
        with pytest.raises(nats.errors.TimeoutError):
            await psub.fetch(1, timeout=0.5)


@async_test
async def test_pull_request_statuses(server):
    async with js_stream(server) as (nc, js, s):
        await api(nc, f"$JS.API.CONSUMER.CREATE.{s}.c",
                  {"stream_name": s, "config": {"durable_name": "c", "ack_policy": "explicit",
                                                "max_waiting": 1, "max_batch": 10}})
        nxt = f"$JS.API.CONSUMER.MSG.NEXT.{s}.c"
        out = await collect(nc, nxt, b'{"no_wait":true}', 1)
        assert (out[0].headers["Status"], out[0].headers["Description"]) == ("404", "No Messages")
        await js.publish(s, b"m")
        out = await collect(nc, nxt, b'{"batch":3,"expires":300000000}', 5)
        assert out[0].data == b"m"
        assert out[1].headers["Status"] == "408"
        assert out[1].headers["Nats-Pending-Messages"] == "2"
        out = await collect(nc, nxt, b'{"batch":11}', 1)
        assert out[0].headers["Description"] == "Exceeded MaxRequestBatch of 10"
        out = await collect(nc, nxt, b'{"idle_heartbeat":1000000000,"expires":1000000}', 1)
        assert out[0].headers["Description"] == "Bad Request - heartbeat value too large"
        # A second waiting request over max_waiting.
        first = nc.new_inbox()
        keep = await nc.subscribe(first)
        await nc.publish(nxt, b'{"batch":1,"expires":2000000000}', reply=first)
        await nc.flush()
        out = await collect(nc, nxt, b'{"batch":1,"expires":2000000000}', 1)
        assert (out[0].headers["Status"], out[0].headers["Description"]) == \
            ("409", "Exceeded MaxWaiting")
        await keep.unsubscribe()
        # Pull requests to a push consumer.
        await js.add_consumer(s, durable_name="p", deliver_subject=nc.new_inbox())
        out = await collect(nc, f"$JS.API.CONSUMER.MSG.NEXT.{s}.p", b"", 1)
        assert out[0].headers["Description"] == "Consumer is push based"


@async_test
async def test_pull_idle_heartbeat(server):
    async with js_stream(server) as (nc, js, s):
        await js.add_consumer(s, durable_name="c", ack_policy="explicit")
        out = await collect(nc, f"$JS.API.CONSUMER.MSG.NEXT.{s}.c",
                            b'{"batch":1,"expires":1200000000,"idle_heartbeat":400000000}', 5, 1.5)
        statuses = [m.headers["Status"] for m in out]
        assert statuses.count("100") >= 2 and statuses[-1] == "408"


@async_test
async def test_redelivery_nak_term_and_progress(server):
    async with js_stream(server) as (nc, js, s):
        await publish_numbered(js, s, 3)
        psub = await js.pull_subscribe(s, "c", stream=s,
                                       config=jsapi.ConsumerConfig(ack_wait=0.5, max_deliver=3))
        m0, m1, m2 = await psub.fetch(3, timeout=2)
        await m0.nak()
        await m1.term()
        await m2.in_progress()
        again = await psub.fetch(1, timeout=2)
        assert again[0].data == b"0" and again[0].metadata.num_delivered == 2
        await again[0].nak(delay=0.3)
        t0 = time.monotonic()
        again = await psub.fetch(1, timeout=3)
        assert again[0].data in (b"0", b"2")
        assert time.monotonic() - t0 >= 0.2
        ci = await js.consumer_info(s, "c")
        assert ci.num_redelivered >= 1


@async_test
async def test_ack_wait_redelivery_and_max_deliver(server):
    async with js_stream(server) as (nc, js, s):
        await js.publish(s, b"x")
        psub = await js.pull_subscribe(s, "c", stream=s,
                                       config=jsapi.ConsumerConfig(ack_wait=0.3, max_deliver=2))
        first = (await psub.fetch(1, timeout=2))[0]
        second = (await psub.fetch(1, timeout=3))[0]
        assert first.metadata.num_delivered == 1 and second.metadata.num_delivered == 2
        with pytest.raises(nats.errors.TimeoutError):
            await psub.fetch(1, timeout=1)
        ci = await js.consumer_info(s, "c")
        assert ci.num_ack_pending == 0 and ci.num_redelivered == 1


@async_test
async def test_backoff_requires_max_deliver(server):
    async with js_stream(server) as (nc, js, s):
        with raises_code(BadRequestError, 10116):
            await js.add_consumer(s, durable_name="c", ack_policy="explicit",
                                  backoff=[1, 2, 3], max_deliver=2)
        ci = await js.add_consumer(s, durable_name="c", ack_policy="explicit",
                                   backoff=[0.5, 1], max_deliver=3)
        assert ci.config.ack_wait == 0.5


@async_test
async def test_max_ack_pending_stalls_delivery(server):
    async with js_stream(server) as (nc, js, s):
        await publish_numbered(js, s, 4)
        psub = await js.pull_subscribe(s, "c", stream=s,
                                       config=jsapi.ConsumerConfig(max_ack_pending=2))
        msgs = await psub.fetch(4, timeout=1)
        assert len(msgs) == 2
        await msgs[0].ack()
        more = await psub.fetch(4, timeout=1)
        assert [m.data for m in more] == [b"2"]


# ------------------------------------------------------------------------------------- consumers

@async_test
async def test_consumer_create_forms_and_errors(server):
    async with js_stream(server, "{s}.*") as (nc, js, s):
        pre = "$JS.API.CONSUMER"
        r = await api(nc, f"{pre}.CREATE.{s}.c1.{s}.a",
                      {"stream_name": s, "config": {"name": "c1", "filter_subject": f"{s}.b"}})
        assert r["error"]["err_code"] == 10131
        r = await api(nc, f"{pre}.CREATE.{s}.c1.{s}.a",
                      {"stream_name": s, "config": {"name": "c1", "filter_subject": f"{s}.a"}})
        assert r["name"] == "c1" and r["config"]["inactive_threshold"] == 5_000_000_000
        r = await api(nc, f"{pre}.DURABLE.CREATE.{s}.d1",
                      {"stream_name": s, "config": {"durable_name": "d1", "ack_policy": "explicit"}})
        assert r["name"] == "d1" and r["config"]["durable_name"] == "d1"
        r = await api(nc, f"{pre}.CREATE.{s}",
                      {"stream_name": s, "config": {"durable_name": "x"}})
        assert r["error"]["err_code"] == 10020
        r = await api(nc, f"{pre}.CREATE.{s}.d1",
                      {"stream_name": s, "action": "create",
                       "config": {"durable_name": "d1", "ack_policy": "explicit", "max_deliver": 5}})
        assert r["error"]["err_code"] == 10148
        r = await api(nc, f"{pre}.CREATE.{s}.zz",
                      {"stream_name": s, "action": "update", "config": {"durable_name": "zz"}})
        assert r["error"]["err_code"] == 10149
        r = await api(nc, f"{pre}.CREATE.{s}.d1",
                      {"stream_name": s, "config": {"durable_name": "d1", "ack_policy": "explicit",
                                                    "max_deliver": 5}})
        assert r["config"]["max_deliver"] == 5
        r = await api(nc, f"{pre}.CREATE.{s}.d1",
                      {"stream_name": s, "config": {"durable_name": "d1", "ack_policy": "all"}})
        assert r["error"] == {"code": 500, "err_code": 10012,
                              "description": "ack policy can not be updated"}
        # 2.10+: a filter outside the stream's subjects is accepted and matches nothing.
        r = await api(nc, f"{pre}.CREATE.{s}.x",
                      {"stream_name": s, "config": {"name": "x", "filter_subject": "other"}})
        assert r["num_pending"] == 0
        await api(nc, f"{pre}.DELETE.{s}.x")
        r = await api(nc, f"{pre}.CREATE.{s}.x",
                      {"stream_name": s, "config": {"name": "x", "deliver_subject": f"{s}.a"}})
        assert r["error"]["err_code"] == 10081
        r = await api(nc, f"{pre}.INFO.{s}.nope")
        assert r["error"] == {"code": 404, "err_code": 10014, "description": "consumer not found"}
        names = await api(nc, f"{pre}.NAMES.{s}")
        assert names["consumers"] == ["c1", "d1"]
        lst = await api(nc, f"{pre}.LIST.{s}")
        assert [c["name"] for c in lst["consumers"]] == ["c1", "d1"]
        assert await js.delete_consumer(s, "d1")
        with pytest.raises(NotFoundError):
            await js.delete_consumer(s, "d1")


@async_test
async def test_multiple_filters_and_deliver_policies(server):
    async with js_stream(server, "{s}.*") as (nc, js, s):
        for subj in "abcab":
            await js.publish(f"{s}.{subj}", subj.encode())
        await js.add_consumer(s, durable_name="multi", ack_policy="explicit",
                              filter_subjects=[f"{s}.a", f"{s}.b"])
        psub = await js.pull_subscribe_bind("multi", stream=s)
        msgs = await psub.fetch(10, timeout=1)
        assert [m.data for m in msgs] == [b"a", b"b", b"a", b"b"]
        await js.add_consumer(s, durable_name="lps", deliver_policy="last_per_subject",
                              filter_subject=f"{s}.*", ack_policy="none")
        psub = await js.pull_subscribe_bind("lps", stream=s)
        msgs = await psub.fetch(10, timeout=1)
        assert sorted(m.metadata.sequence.stream for m in msgs) == [3, 4, 5]
        await js.add_consumer(s, durable_name="new", deliver_policy="new", ack_policy="none")
        await js.add_consumer(s, durable_name="seq", deliver_policy="by_start_sequence",
                              opt_start_seq=4, ack_policy="none")
        psub = await js.pull_subscribe_bind("seq", stream=s)
        assert [m.data for m in await psub.fetch(10, timeout=1)] == [b"a", b"b"]
        assert (await js.consumer_info(s, "new")).num_pending == 0
        await js.publish(f"{s}.c", b"later")
        assert (await js.consumer_info(s, "new")).num_pending == 1


@async_test
async def test_push_consumer_and_queue_group(server):
    async with js_stream(server) as (nc, js, s):
        await publish_numbered(js, s, 4)
        got = []

        async def cb(m):
            got.append(m.data)
            await m.ack()
        sub = await js.subscribe(s, cb=cb, durable="push", stream=s)
        for _ in range(50):
            if len(got) == 4:
                break
            await asyncio.sleep(0.05)
        assert got == [b"0", b"1", b"2", b"3"]
        await js.publish(s, b"4")
        await asyncio.sleep(0.2)
        assert got[-1] == b"4"
        ci = await js.consumer_info(s, "push")
        assert ci.push_bound and ci.num_ack_pending == 0
        await sub.unsubscribe()
        # Two queue members share the deliveries.
        q = await new_stream(js)
        seen = {1: 0, 2: 0}

        def make(i):
            async def handler(m):
                seen[i] += 1
                await m.ack()
            return handler
        await js.subscribe(q, queue="workers", cb=make(1), stream=q)
        await js.subscribe(q, queue="workers", cb=make(2), stream=q)
        for i in range(20):
            await js.publish(q, b"x")
        await asyncio.sleep(0.5)
        assert seen[1] + seen[2] == 20


@async_test
async def test_ordered_consumer_flow_control(server):
    async with js_stream(server, storage="memory") as (nc, js, s):
        payload = b"x" * 1024
        for _ in range(200):
            await nc.publish(s, payload)
        await js.publish(s, b"end")
        sub = await js.subscribe(s, ordered_consumer=True, stream=s)
        count = 0
        while True:
            m = await sub.next_msg(timeout=3)
            count += 1
            if m.data == b"end":
                break
        assert count == 201


@async_test
async def test_ephemeral_pull_consumer_goes_away_when_inactive(server):
    async with js_stream(server) as (nc, js, s):
        r = await api(nc, f"$JS.API.CONSUMER.CREATE.{s}",
                      {"stream_name": s, "config": {"ack_policy": "explicit",
                                                    "inactive_threshold": 300_000_000}})
        cname = r["name"]
        assert len(cname) == 8
        await asyncio.sleep(1.8)
        with pytest.raises(NotFoundError):
            await js.consumer_info(s, cname)


# ------------------------------------------------------------------------------------- retention

@async_test
async def test_workqueue_retention(server):
    async with js_stream(server, "{s}.*", retention="workqueue") as (nc, js, s):
        await publish_numbered(js, f"{s}.a", 3)
        psub = await js.pull_subscribe(f"{s}.a", "w", stream=s)
        with raises_code(BadRequestError, 10099):
            await js.add_consumer(s, durable_name="w2", ack_policy="explicit")
        with pytest.raises(BadRequestError) as e:
            await js.add_consumer(s, durable_name="w3", ack_policy="none",
                                  filter_subject=f"{s}.b")
        assert e.value.err_code in (10084, 10098)
        msgs = await psub.fetch(3, timeout=2)
        for m in msgs[:2]:
            await m.ack_sync()
        await assert_state(js, s, messages=1, first_seq=3)


@async_test
async def test_interest_retention(server):
    async with js_stream(server, retention="interest") as (nc, js, s):
        await js.publish(s, b"nobody")    # no consumer: not kept
        await assert_state(js, s, messages=0)
        a = await js.pull_subscribe(s, "a", stream=s)
        b = await js.pull_subscribe(s, "b", stream=s)
        await js.publish(s, b"both")
        (ma,) = await a.fetch(1, timeout=2)
        await ma.ack_sync()
        await assert_state(js, s, messages=1)
        (mb,) = await b.fetch(1, timeout=2)
        await mb.ack_sync()
        await assert_state(js, s, messages=0)


# ------------------------------------------------------------------------------------- KV

@async_test
async def test_kv_basics(server):
    async with js_session(server) as (nc, js):
        bucket = name("kv")
        kv = await js.create_key_value(bucket=bucket, history=3)
        assert await kv.put("k", b"1") == 1
        assert await kv.put("k", b"2") == 2
        assert (await kv.get("k")).value == b"2"
        assert await kv.create("new", b"n") == 3
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await kv.create("new", b"again")
        assert await kv.update("k", b"3", last=2) == 4
        await kv.delete("k")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("k")
        history = await kv.history("k")
        assert [e.value for e in history] == [b"2", b"3", b""]
        assert await kv.keys() == ["new"]
        watcher = await kv.watchall()
        first = await watcher.updates(timeout=2)
        assert first.key in ("k", "new")
        await kv.put("w", b"watched")
        seen = []
        for _ in range(5):
            e = await watcher.updates(timeout=2)
            if e is None:
                continue
            seen.append(e.key)
            if e.key == "w":
                break
        assert "w" in seen
        await watcher.stop()
        await kv.purge("new")
        status = await kv.status()
        assert status.values >= 1


# ------------------------------------------------------------------------------------- restarts

def test_streams_and_consumers_survive_restart(tmp_path):
    store = str(tmp_path / "store")
    srv = start(tmp_path, store)
    port = srv.port

    async def before():
        async with js_session(srv) as (nc, js):
            await js.add_stream(name="FILE", subjects=["f.*"])
            await js.add_stream(name="MEM", subjects=["m.*"], storage="memory")
            for i in range(5):
                await js.publish("f.a", b"%d" % i, headers={"Nats-Msg-Id": f"id{i}"})
                await js.publish("m.a", b"%d" % i)
            psub = await js.pull_subscribe("f.a", "dur", stream="FILE")
            msgs = await psub.fetch(3, timeout=2)
            await msgs[0].ack_sync()
            await msgs[1].ack_sync()
    run(before())
    srv.stop()
    srv = start(tmp_path, store, port=port)

    async def after():
        async with js_session(srv) as (nc, js):
            await assert_state(js, "FILE", messages=5, last_seq=5)
            await assert_state(js, "MEM", messages=0)
            ci = await js.consumer_info("FILE", "dur")
            assert ci.ack_floor.stream_seq == 2 and ci.delivered.stream_seq == 3
            assert ci.num_ack_pending == 1
            # The dedupe window survives too.
            ack = await js.publish("f.a", b"dup", headers={"Nats-Msg-Id": "id4"})
            assert ack.duplicate and ack.seq == 5
    run(after())
    srv.stop()


def test_acknowledged_publishes_survive_sigkill(tmp_path):
    """Every PubAck the client got names a message that is there after a crash, in order,
    and retrying an unacknowledged publish with its Nats-Msg-Id never stores it twice."""
    store = str(tmp_path / "store")
    port = free_port()
    acked: dict[str, int] = {}
    state = {"next": 0}

    async def publish_until_killed(srv: RunningServer, run_for: float):
        nc = await connect(srv, connect_timeout=10)
        js = nc.jetstream()
        if state["next"] == 0:
            await js.add_stream(name="DUR", subjects=["dur"])

        async def publisher():
            while True:
                i = state["next"]
                ack = await js.publish("dur", b"payload-%d" % i,
                                       headers={"Nats-Msg-Id": f"m{i}"}, timeout=2)
                acked[f"m{i}"] = ack.seq
                state["next"] = i + 1

        task = asyncio.create_task(publisher())
        await asyncio.sleep(run_for)
        os.killpg(srv.proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(task, 5)
        except Exception:
            pass
        try:
            await nc.close()
        except Exception:
            pass

    rng = random.Random(7)
    for _ in range(4):
        srv = start(tmp_path, store, port=port)
        run(publish_until_killed(srv, rng.uniform(0.4, 1.2)))
        kill_hard(srv)

    srv = start(tmp_path, store, port=port)

    async def verify():
        async with js_session(srv, connect_timeout=10) as (nc, js):
            return await stored_ids(js, "DUR")
    stored = run(verify())
    srv.stop()
    assert len(acked) >= 20, f"only {len(acked)} publishes were acknowledged"
    by_id = dict(stored)
    assert len(by_id) == len(stored), "a Nats-Msg-Id was stored twice"
    for msg_id, seq in acked.items():
        assert by_id.get(msg_id) == seq, f"acknowledged {msg_id} at {seq} is missing"
    order = [int(i[1:]) for i, _ in stored]
    assert order == sorted(order), "messages out of publish order"


# ------------------------------------------------------------------------------------- CLI

def test_jetstream_flags_and_workers(tmp_path):
    port = free_port()
    store = tmp_path / "sd"
    cmd = NATSX + ["-a", "127.0.0.1", "-p", str(port), "--jetstream", f"-sd={store}",
                   "--workers", "3"]
    srv = RunningServer(cmd, port, None, tmp_path / "cli.log", dict(os.environ))
    try:
        wait_port(port)

        async def main():
            async with js_session(srv) as (nc, js):
                await js.add_stream(name="CLI", subjects=["cli"])
        run(main())
        assert (store / "jetstream" / "$G" / "streams" / "CLI" / "meta.inf").exists()
    finally:
        srv.stop()
    log = srv.log()
    # JetStream no longer reduces the workers: the others reach it through the mesh.
    assert "reduced to 1" not in log
    assert "Workers:  3" in log
