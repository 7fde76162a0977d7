"""JetStream message schedules (ADR-51, Go 2.12 ``allow_msg_schedules``), black-box.

A schedule is a message with ``Nats-Schedule: @at <RFC 3339 time>`` and a
``Nats-Schedule-Target``; at its time the stream stores a copy on the target subject and
purges the schedule. The expectations are those of Go v2.12.0's
TestJetStreamClusterScheduledDelayedMessage and TestJetStreamScheduledMirrorOrSource
(server/jetstream_cluster_1_test.go, server/jetstream_test.go) and of the code they test
(server/scheduler.go, server/stream.go). Publishes are raw requests, so every PubAck and
error body is checked as the client receives it; several tests run with ``--workers 2``, the
publishing and consuming clients then reaching the stream's worker through the mesh.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import time
import uuid

import nats
import pytest

from conftest import NATSX, RunningServer, free_port
from test_jetstream import kill_hard

pytestmark = pytest.mark.server


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def start(tmp_path, store: str, *args: str, port: int | None = None) -> RunningServer:
    port = port or free_port()
    cmd = NATSX + ["-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store, *args]
    return RunningServer(cmd, port, None, tmp_path / f"natsx-{time.monotonic_ns()}.log",
                         dict(os.environ))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sched")
    srv = start(tmp, str(tmp / "store"), "--workers", "2")
    yield srv
    srv.stop()


@contextlib.asynccontextmanager
async def session(srv: RunningServer):
    nc = await nats.connect(srv.url, allow_reconnect=False, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


def fresh(prefix: str = "SCH") -> str:
    return prefix + uuid.uuid4().hex[:8].upper()


def at(seconds_from_now: float) -> str:
    """``@at`` and an RFC 3339 time with nanoseconds, as Go's tests format it."""
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds_from_now)
    return "@at " + t.isoformat(timespec="microseconds").replace("+00:00", "Z")


async def api(nc, subject: str, body=None) -> dict:
    data = b"" if body is None else json.dumps(body).encode()
    msg = await nc.request(subject, data, timeout=5)
    return json.loads(msg.data)


async def add_stream(nc, **cfg) -> dict:
    resp = await api(nc, f"$JS.API.STREAM.CREATE.{cfg['name']}", cfg)
    assert "error" not in resp, resp
    return resp


async def pub(nc, subject: str, payload: bytes = b"", headers: dict | None = None) -> dict:
    msg = await nc.request(subject, payload, timeout=5, headers=headers)
    return json.loads(msg.data)


async def state(nc, stream: str) -> dict:
    return (await api(nc, f"$JS.API.STREAM.INFO.{stream}"))["state"]


async def last_msg(nc, stream: str, subject: str) -> dict | None:
    """The last message on ``subject`` (STREAM.MSG.GET), headers parsed; None if none."""
    resp = await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
    if "error" in resp:
        assert resp["error"]["err_code"] == 10037, resp
        return None
    m = resp["message"]
    raw = base64.b64decode(m.get("hdrs", "")) if m.get("hdrs") else b""
    lines = raw.decode().split("\r\n")[1:] if raw else []
    m["headers"] = [tuple(ln.split(": ", 1)) for ln in lines if ln]
    m["data"] = base64.b64decode(m.get("data", ""))
    return m


def ts_ns(text: str) -> int:
    """An RFC 3339 time with up to nanoseconds, in Unix ns."""
    base, _, frac = text.rstrip("Z").partition(".")
    secs = datetime.datetime.fromisoformat(base).replace(tzinfo=datetime.timezone.utc)
    return int(secs.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


async def poll(fn, timeout: float = 5.0, interval: float = 0.05):
    """Calls ``fn`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


def error_body(stream: str, code: int, err_code: int, description: str) -> dict:
    return {"error": {"code": code, "err_code": err_code, "description": description},
            "stream": stream, "seq": 0}


# ------------------------------------------------------------------------------------- firing

@pytest.mark.parametrize("storage", ["file", "memory"])
def test_delayed_message_fires_at_its_time_with_go_headers(server, storage):
    s = fresh()

    async def main():
        async with session(server) as nc:
            await add_stream(nc, name=s, subjects=[f"{s}.*"], storage=storage,
                             allow_msg_schedules=True, allow_msg_ttl=True)
            # A schedule far away, then one soon on the same subject: the second rolls
            # the first up (the "Nats-Rollup: sub" a schedule gets).
            ack = await pub(nc, f"{s}.schedule", b"", {
                "Nats-Schedule": at(3600), "Nats-Schedule-Target": f"{s}.publish",
                "Nats-Schedule-TTL": "1s", "Nats-Rollup": "sub"})
            assert ack == {"stream": s, "seq": 1}
            when = at(1.5)
            ack = await pub(nc, f"{s}.schedule", b"hello", {
                "Nats-Schedule": when, "Nats-Schedule-Target": f"{s}.publish",
                "Nats-Schedule-TTL": "1s",
                # Stripped from the scheduled message.
                "Nats-Expected-Stream": s, "Nats-Expected-Last-Sequence": "1",
                "Nats-Expected-Last-Subject-Sequence": "1", "Nats-Msg-Id": "X",
                "Nats-TTL": "60s", "Header": "Value"})
            assert ack == {"stream": s, "seq": 2}
            published = time.time_ns()
            st = await state(nc, s)
            assert (st["messages"], st["first_seq"], st["last_seq"]) == (1, 2, 2)
            sched = await last_msg(nc, s, f"{s}.schedule")
            assert sched["seq"] == 2 and sched["headers"][-1] == ("Nats-Rollup", "sub")

            async def produced():
                m = await last_msg(nc, s, f"{s}.publish")
                if m is not None:
                    return m
                # Late only by the timer's granularity (and a loaded machine).
                assert time.time_ns() < ts_ns(when[4:]) + 4_000_000_000
                return None
            assert await last_msg(nc, s, f"{s}.publish") is None
            m = await poll(produced, timeout=6)
            assert ts_ns(m["time"]) >= ts_ns(when[4:]) > published
            assert m["seq"] == 3 and m["subject"] == f"{s}.publish" and m["data"] == b"hello"
            assert m["headers"] == [("Header", "Value"), ("Nats-Scheduler", f"{s}.schedule"),
                                    ("Nats-Schedule-Next", "purge"), ("Nats-TTL", "1s")]
            # The schedule is gone: only the produced message is left.
            assert await last_msg(nc, s, f"{s}.schedule") is None
            st = await state(nc, s)
            assert (st["messages"], st["first_seq"], st["last_seq"]) == (1, 3, 3)

            # Then the produced message's TTL (from Nats-Schedule-TTL) removes it.
            async def emptied():
                st = await state(nc, s)
                return st if st["messages"] == 0 else None
            st = await poll(emptied, timeout=5)
            assert (st["first_seq"], st["last_seq"]) == (4, 3)
            # Nothing else fires later.
            await asyncio.sleep(0.6)
            assert (await state(nc, s))["last_seq"] == 3
    run(main())


def test_schedule_already_due_fires_at_once(server):
    s = fresh()

    async def main():
        async with session(server) as nc:
            await add_stream(nc, name=s, subjects=[f"{s}.*"], allow_msg_schedules=True)
            # Header order reversed (Go's ...ReversedHeaderOrder): the shared prefix must not
            # confuse the lookups.
            t0 = time.monotonic()
            ack = await pub(nc, f"{s}.schedule", b"due", {
                "Nats-Schedule-Target": f"{s}.publish",
                "Nats-Schedule": "@at 1970-01-01T00:00:00Z"})
            assert ack == {"stream": s, "seq": 1}

            async def fired():
                st = await state(nc, s)
                return st if st["last_seq"] == 2 and st["messages"] == 1 else None
            await poll(fired, timeout=3)
            assert time.monotonic() - t0 < 2
            m = await last_msg(nc, s, f"{s}.publish")
            assert m["data"] == b"due"
            # No Nats-Schedule-TTL: no Nats-TTL.
            assert m["headers"] == [("Nats-Scheduler", f"{s}.schedule"),
                                    ("Nats-Schedule-Next", "purge")]
    run(main())


def test_consumers_on_the_target_receive_the_scheduled_message(server):
    s = fresh()

    async def main():
        async with session(server) as nc, session(server) as nc2:
            js = nc2.jetstream()
            await add_stream(nc, name=s, subjects=[f"{s}.*"], allow_msg_schedules=True)
            psub = await js.pull_subscribe(f"{s}.target", "puller", stream=s)
            got = asyncio.get_running_loop().create_future()

            async def cb(msg):
                if not got.done():
                    got.set_result(msg)
                await msg.ack()
            await js.subscribe(f"{s}.target", cb=cb, stream=s, manual_ack=True)
            await pub(nc, f"{s}.sched", b"to-consumers", {
                "Nats-Schedule": at(1), "Nats-Schedule-Target": f"{s}.target",
                "Nats-Msg-Id": "once"})
            pushed = await asyncio.wait_for(got, 6)
            assert pushed.subject == f"{s}.target" and pushed.data == b"to-consumers"
            assert pushed.headers["Nats-Scheduler"] == f"{s}.sched"
            assert pushed.headers["Nats-Schedule-Next"] == "purge"
            assert "Nats-Msg-Id" not in pushed.headers
            msgs = await psub.fetch(1, timeout=3)
            assert msgs[0].data == b"to-consumers" and msgs[0].metadata.sequence.stream == 2
            await msgs[0].ack_sync()
            # The schedule itself is purged: the delivered message is all that is left.
            assert (await state(nc, s))["messages"] == 1
    run(main())


def test_replaced_schedule_fires_once(server):
    """A newer schedule on the subject replaces the pending one (rollup), and a purged
    schedule never fires."""
    s = fresh()

    async def main():
        async with session(server) as nc:
            await add_stream(nc, name=s, subjects=[f"{s}.*"], allow_msg_schedules=True)
            for i, delay in enumerate((0.8, 1.0)):
                ack = await pub(nc, f"{s}.a", b"v%d" % i, {
                    "Nats-Schedule": at(delay), "Nats-Schedule-Target": f"{s}.out"})
                assert ack["seq"] == i + 1
            await pub(nc, f"{s}.b", b"never", {
                "Nats-Schedule": at(1.0), "Nats-Schedule-Target": f"{s}.out"})
            resp = await api(nc, f"$JS.API.STREAM.PURGE.{s}", {"filter": f"{s}.b"})
            assert resp["purged"] == 1
            m = await poll(lambda: last_msg(nc, s, f"{s}.out"), timeout=5)
            assert m["data"] == b"v1" and m["seq"] == 4
            await asyncio.sleep(1.0)
            st = await state(nc, s)
            assert (st["messages"], st["last_seq"]) == (1, 4)
    run(main())


# ------------------------------------------------------------------------------------- errors

def test_publish_errors(server):
    s, dis, nottl = fresh(), fresh("DIS"), fresh("NOTTL")

    async def main():
        async with session(server) as nc:
            await add_stream(nc, name=dis, subjects=[f"{dis}"])
            await add_stream(nc, name=nottl, subjects=[f"{nottl}.*"], allow_msg_schedules=True)
            await add_stream(nc, name=s, subjects=[f"{s}.*"], allow_msg_schedules=True,
                             allow_msg_ttl=True)
            due = "@at 1970-01-01T00:00:00Z"

            disabled = error_body(dis, 400, 10188, "message schedules is disabled")
            assert await pub(nc, dis, b"", {"Nats-Schedule": due}) == disabled
            assert await pub(nc, dis, b"", {"Nats-Schedule": "disabled"}) == disabled
            # An empty Nats-Schedule is no schedule at all.
            assert await pub(nc, dis, b"", {"Nats-Schedule": ""}) == {"stream": dis, "seq": 1}
            # Nor may a client's message ask to purge a "schedule" there (it would purge
            # any subject): refused, and nothing is purged.
            assert await pub(nc, dis, b"", {"Nats-Schedule-Next": "purge",
                                            "Nats-Scheduler": dis}) == disabled
            assert await pub(nc, dis, b"", {"Nats-Schedule-Next": "later",
                                            "Nats-Scheduler": dis}) == {"stream": dis, "seq": 2}

            assert await pub(nc, f"{nottl}.x", b"", {
                "Nats-Schedule": due, "Nats-Schedule-Target": f"{nottl}.y",
                "Nats-Schedule-TTL": "1s"}) == \
                error_body(nottl, 400, 10166, "per-message TTL is disabled")

            invalid = error_body(s, 400, 10189, "message schedules pattern is invalid")
            for pattern in ("invalid", "@every 1s", "@at", "@at 2025-13-01T00:00:00Z",
                            "@at 2025-01-01 00:00:00Z", "@at  1970-01-01T00:00:00Z",
                            "@at 1970-01-01T00:00:00"):
                assert await pub(nc, f"{s}.invalid", b"",
                                 {"Nats-Schedule": pattern}) == invalid, pattern

            target = error_body(s, 400, 10190, "message schedules target is invalid")
            for tgt in (None, "not.matching", f"{s}.*", f"{s}.>", f"{s}.invalid", f"{s}..x"):
                headers = {"Nats-Schedule": due}
                if tgt is not None:
                    headers["Nats-Schedule-Target"] = tgt
                assert await pub(nc, f"{s}.invalid", b"", headers) == target, tgt

            ttl = error_body(s, 400, 10191, "message schedules invalid per-message TTL")
            for value in ("invalid", "0", "500ms", "-1"):
                assert await pub(nc, f"{s}.invalid", b"", {
                    "Nats-Schedule": due, "Nats-Schedule-Target": f"{s}.publish",
                    "Nats-Schedule-TTL": value}) == ttl, value

            assert await pub(nc, f"{s}.invalid", b"", {
                "Nats-Schedule": due, "Nats-Schedule-Target": f"{s}.publish",
                "Nats-Schedule-TTL": "1s", "Nats-Rollup": "all"}) == \
                error_body(s, 400, 10192, "message schedules invalid rollup")

            # Nothing was stored by any of them.
            st = await state(nc, s)
            assert (st["messages"], st["last_seq"]) == (0, 0)
            # An explicit "sub" rollup (any case) is the one a schedule may carry.
            ack = await pub(nc, f"{s}.ok", b"", {
                "Nats-Schedule": at(3600), "Nats-Schedule-Target": f"{s}.publish",
                "Nats-Rollup": "SUB", "Nats-Schedule-TTL": "never"})
            assert ack == {"stream": s, "seq": 1}
    run(main())


def test_config_errors(server):
    s = fresh()

    async def main():
        async with session(server) as nc:
            resp = await api(nc, "$JS.API.STREAM.CREATE.M", {
                "name": "M", "mirror": {"name": "O"}, "allow_msg_schedules": True})
            assert resp["error"] == {"code": 400, "err_code": 10186,
                                     "description": "stream mirrors can not also schedule "
                                                    "messages"}
            resp = await api(nc, "$JS.API.STREAM.CREATE.M", {
                "name": "M", "sources": [{"name": "O"}], "allow_msg_schedules": True})
            assert resp["error"] == {"code": 400, "err_code": 10187,
                                     "description": "stream source can not also schedule "
                                                    "messages"}
            # Go checks this before the source's own fields.
            resp = await api(nc, "$JS.API.STREAM.CREATE.M", {
                "name": "M", "sources": [{"name": "bad.name"}], "allow_msg_schedules": True})
            assert resp["error"]["err_code"] == 10187

            resp = await api(nc, f"$JS.API.STREAM.CREATE.{s}", {
                "name": s, "subjects": [f"{s}.*"], "allow_msg_schedules": True,
                "pedantic": True})
            assert resp["error"] == {"code": 500, "err_code": 10052,
                                     "description": "message scheduling cannot be set if "
                                                    "roll-ups are disabled"}
            # Without pedantic, roll-ups (and purges) are turned on.
            resp = await add_stream(nc, name=s, subjects=[f"{s}.*"], allow_msg_schedules=True,
                                    deny_purge=True)
            cfg = resp["config"]
            assert cfg["allow_msg_schedules"] is True and cfg["allow_rollup_hdrs"] is True
            assert cfg["deny_purge"] is False

            cfg["allow_msg_schedules"] = False
            resp = await api(nc, f"$JS.API.STREAM.UPDATE.{s}", cfg)
            assert resp["error"] == {"code": 500, "err_code": 10052,
                                     "description": "message schedules can not be disabled"}
    run(main())


def test_update_turns_schedules_on(server):
    s = fresh()

    async def main():
        async with session(server) as nc:
            resp = await add_stream(nc, name=s, subjects=[f"{s}.*"])
            assert (await pub(nc, f"{s}.a", b"", {"Nats-Schedule": at(1),
                                                  "Nats-Schedule-Target": f"{s}.b"}))[
                "error"]["err_code"] == 10188
            cfg = dict(resp["config"], allow_msg_schedules=True)
            resp = await api(nc, f"$JS.API.STREAM.UPDATE.{s}", cfg)
            assert resp["config"]["allow_msg_schedules"] is True
            assert resp["config"]["allow_rollup_hdrs"] is True
            assert (await pub(nc, f"{s}.a", b"x", {"Nats-Schedule": at(0.5),
                                                   "Nats-Schedule-Target": f"{s}.b"})) == \
                {"stream": s, "seq": 1}
            m = await poll(lambda: last_msg(nc, s, f"{s}.b"), timeout=4)
            assert m["data"] == b"x"
    run(main())


# ------------------------------------------------------------------------------------- restarts

@pytest.mark.parametrize("workers,stop", [("1", "term"), ("2", "term"), ("2", "kill")])
def test_pending_schedules_fire_after_a_restart(tmp_path, workers, stop):
    store = str(tmp_path / "store")
    srv = start(tmp_path, store, "--workers", workers)
    port = srv.port
    late_at = time.time() + 8

    async def before():
        async with session(srv) as nc:
            await add_stream(nc, name="R", subjects=["r.*"], allow_msg_schedules=True,
                             allow_msg_ttl=True)
            # One due while the server is down, one due after it is back.
            assert (await pub(nc, "r.early", b"early", {
                "Nats-Schedule": at(1.0), "Nats-Schedule-Target": "r.out1"}))["seq"] == 1
            assert (await pub(nc, "r.late", b"late", {
                "Nats-Schedule": at(late_at - time.time()), "Nats-Schedule-Target": "r.out2",
                "Nats-Schedule-TTL": "1h"}))["seq"] == 2
    run(before())
    if stop == "kill":
        kill_hard(srv)
    else:
        srv.stop()
    time.sleep(1.2)
    srv = start(tmp_path, store, "--workers", workers, port=port)

    async def after():
        async with session(srv) as nc:
            m = await poll(lambda: last_msg(nc, "R", "r.out1"), timeout=3)
            assert m["data"] == b"early"
            assert await last_msg(nc, "R", "r.early") is None
            # The other is still pending (unless the restart took that long), then fires.
            if time.time() < late_at - 0.5:
                assert await last_msg(nc, "R", "r.late") is not None
                assert await last_msg(nc, "R", "r.out2") is None
            m = await poll(lambda: last_msg(nc, "R", "r.out2"),
                           timeout=max(late_at - time.time(), 0) + 5)
            assert m["data"] == b"late" and ("Nats-TTL", "1h") in m["headers"]
            assert await last_msg(nc, "R", "r.late") is None
            st = await state(nc, "R")
            assert (st["messages"], st["last_seq"]) == (2, 4)
    run(after())
    srv.stop()
    # And nothing fires twice after another restart.
    srv = start(tmp_path, store, "--workers", workers, port=port)

    async def again():
        async with session(srv) as nc:
            await asyncio.sleep(0.6)
            st = await state(nc, "R")
            assert (st["messages"], st["last_seq"]) == (2, 4)
    run(again())
    srv.stop()


# ------------------------------------------------------------------------------------- helpers

def test_go_time_and_ttl_parsing():
    """Go's time.Parse(time.RFC3339) and parseMessageTTL, as getMessageSchedule and
    getMessageScheduleTTL use them (no server)."""
    from natsx.jetstream.schedules import get_schedule
    from natsx.jetstream.util import parse_message_ttl

    def sched(value: str):
        return get_schedule(b"NATS/1.0\r\nNats-Schedule: " + value.encode() + b"\r\n\r\n")

    assert sched("@at 1970-01-01T00:00:00Z") == (True, 0)
    assert sched("@at 2025-01-02T03:04:05.123456789Z") == (True, 1735787045123456789)
    # A one-digit hour, a comma, more than nine digits and an offset are Go's too.
    assert sched("@at 2025-01-02T3:04:05,5+01:00") == (True, 1735783445500000000)
    assert sched("@at 2025-01-02T03:04:05.1234567891Z") == (True, 1735787045123456789)
    # Go's zero time is no schedule at all; past 2262 UnixNano wraps as in Go.
    assert sched("@at 0001-01-01T01:00:00+01:00") == (True, None)
    assert sched("@at 9999-12-31T23:59:59Z") == (True, -4852116232933722624)
    for bad in ("@at 2023-02-29T00:00:00Z", "@at 2025-01-02t03:04:05Z", "@at 2025-01-02T24:00:00Z",
                "@at 2025-01-02T03:04:05z", "@at 2025-01-02T03:04:05Z ", "@in 1s", "@at"):
        assert sched(bad) == (False, None), bad
    assert get_schedule(b"NATS/1.0\r\nNats-Schedule-Target: x\r\n\r\n") == (True, None)

    assert [parse_message_ttl(v) for v in (b"1s", b"1.9s", b"2h", b"5", b"00", b"NEVER")] == \
        [1, 1, 7200, 5, 0, -1]
    for bad in (b"0", b"999ms", b"-1", b"1s ", b"x", b""):
        with pytest.raises(ValueError):
            parse_message_ttl(bad)


def test_produced_headers_follow_go():
    """The headers getScheduledMessages strips and adds, with Go's removal quirks (no
    server): only a key that starts a line is removed, and only its first occurrence."""
    from natsx.jetstream.schedules import produce

    hdr = (b"NATS/1.0\r\nA: 1\r\nNats-Schedule: @at 1970-01-01T00:00:00Z\r\n"
           b"Nats-Schedule-Target: t\r\nNats-Schedule-Next: purge\r\nNats-Schedule-X: y\r\n"
           b"Nats-Expected-Stream: S\r\nNats-Msg-Id: 1\r\nNats-TTL: 5s\r\nNats-Rollup: sub\r\n"
           b"B: 2\r\n\r\n")
    assert produce("s", hdr, b"1s") == (b"NATS/1.0\r\nA: 1\r\nB: 2\r\nNats-Scheduler: s\r\n"
                                        b"Nats-Schedule-Next: purge\r\nNats-TTL: 1s\r\n\r\n")
    assert produce("s", b"NATS/1.0\r\nNats-Schedule: x\r\n\r\n", b"") == \
        b"NATS/1.0\r\nNats-Scheduler: s\r\nNats-Schedule-Next: purge\r\n\r\n"
