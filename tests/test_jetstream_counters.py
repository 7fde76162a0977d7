"""JetStream distributed counters (Go 2.12 ``allow_msg_counter``, ADR-49), black-box.

A counter stream stores, per subject, the running total ``{"val":"<total>"}`` of the
``Nats-Incr`` publishes it took, answers each with a PubAck that carries the new total, and
refuses whatever Go 2.12.0's processJetStreamMsg refuses (its texts and codes are checked
as the Go server returns them: ``{"error":{...},"stream":...,"seq":0}``). A counter stream
that sources other counter streams adds up their totals, remembering in
``Nats-Counter-Sources`` the last total taken from each origin subject. The expectations
follow Go's own tests of the feature (server/jetstream_test.go, TestJetStreamAllowMsgCounter*)
and its code; the Debian Go server (2.9) predates counters, so there is no oracle to run.

The servers run with ``--workers 1`` and ``--workers 2`` (where an origin and the stream
sourcing it are placed on different workers: a file origin is then read from its store,
a memory one through a consumer).
"""
from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time

import nats
import pytest

from helpers import Wire
from natsx.jetstream.shards import stream_owner
from test_jetstream import connect, kill_hard, run, start

pytestmark = pytest.mark.server

ERRORS = {
    "missing": {"code": 400, "err_code": 10169,
                "description": "message counter increment is missing"},
    "invalid": {"code": 400, "err_code": 10171,
                "description": "message counter increment is invalid"},
    "disabled": {"code": 400, "err_code": 10168, "description": "message counters is disabled"},
    "payload": {"code": 400, "err_code": 10170, "description": "message counter has payload"},
    "broken": {"code": 400, "err_code": 10172, "description": "message counter is broken"},
    "ttl": {"code": 400, "err_code": 10166, "description": "per-message TTL is disabled"},
    "ttl_invalid": {"code": 400, "err_code": 10165, "description": "invalid per-message TTL"},
    "too_big": {"code": 400, "err_code": 10054,
                "description": "message size exceeds maximum allowed"},
}

_names = iter(range(1, 1 << 30))


def fresh(prefix: str = "C") -> str:
    return f"{prefix}{next(_names)}"


def refused(stream: str, kind: str) -> bytes:
    """Go's JSPubAckResponse for an error: the error, then ``stream`` and ``seq`` 0."""
    return json.dumps({"error": ERRORS[kind], "stream": stream, "seq": 0},
                      separators=(",", ":")).encode()


def ack(stream: str, seq: int, val: str) -> bytes:
    return b'{"stream":"%s","seq":%d,"val":"%s"}' % (stream.encode(), seq, val.encode())


@pytest.fixture(scope="module", params=["1", "2"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("counters")
    srv = start(tmp, str(tmp / "store"), "--workers", request.param)
    srv.workers = int(request.param)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("counters2")
    srv = start(tmp, str(tmp / "store"), "--workers", "2")
    srv.workers = 2
    yield srv
    srv.stop()


async def api(nc, subject: str, body=None) -> dict:
    data = b"" if body is None else json.dumps(body).encode()
    return json.loads((await nc.request(subject, data, timeout=5)).data)


async def create(nc, name: str, **cfg) -> dict:
    """Creates stream ``name``: a counter stream on ``<name>.>`` unless ``cfg`` says
    otherwise (``subjects=None``: none)."""
    cfg.setdefault("subjects", [f"{name.lower()}.>"])
    cfg.setdefault("allow_msg_counter", True)
    if cfg["subjects"] is None:
        del cfg["subjects"]
    resp = await api(nc, f"$JS.API.STREAM.CREATE.{name}", {"name": name, **cfg})
    assert "error" not in resp, resp
    return resp


async def incr(nc, subject: str, value: str | None, payload: bytes = b"", **headers) -> bytes:
    """The raw PubAck of one publish with ``Nats-Incr: value`` (and ``headers``)."""
    hdrs = dict(headers)
    if value is not None:
        hdrs["Nats-Incr"] = value
    msg = await nc.request(subject, payload, timeout=5, headers=hdrs or None)
    return msg.data


def raw_request(port: int, subject: str, hdr: bytes, payload: bytes = b"") -> bytes:
    """One publish with exactly these header bytes; the reply's payload."""
    w = Wire(port, {"headers": True, "protocol": 1})
    w.send(b"SUB _INBOX.raw 1\r\n")
    w.sync()
    w.send(b"HPUB %s _INBOX.raw %d %d\r\n%s%s\r\n" % (
        subject.encode(), len(hdr), len(hdr) + len(payload), hdr, payload))
    frame = None
    while frame is None or frame.startswith(b"INFO "):     # the INFO after CONNECT
        frame = w.frames(1)[0]
    w.sock.close()
    line, _, rest = frame.partition(b"\r\n")
    if line.startswith(b"HMSG"):
        hl = int(line.split()[-2])
        return rest[hl:-2]
    return rest[:-2]


async def last_msg(nc, stream: str, subject: str) -> tuple[bytes, bytes, int]:
    """(headers, payload, seq) of the last message on ``subject`` (STREAM.MSG.GET)."""
    resp = await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
    assert "message" in resp, resp
    m = resp["message"]
    return (base64.b64decode(m.get("hdrs", "")), base64.b64decode(m.get("data", "")),
            m["seq"])


async def msg_at(nc, stream: str, seq: int):
    resp = await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq})
    if "message" not in resp:
        return None
    m = resp["message"]
    return (m["subject"], base64.b64decode(m.get("hdrs", "")),
            base64.b64decode(m.get("data", "")))


async def wait_total(nc, stream: str, subject: str, want: str, timeout: float = 10.0):
    """Wait until the last message of ``subject`` holds the total ``want``."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        resp = await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
        if "message" in resp:
            got = base64.b64decode(resp["message"]["data"])
            if got == b'{"val":"%s"}' % want.encode():
                m = resp["message"]
                return base64.b64decode(m.get("hdrs", "")), m["seq"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stream} {subject}: {got!r}, want {want}")


def header(hdrs: bytes, key: str) -> list[str]:
    lines = hdrs.decode().split("\r\n")[1:]
    return [ln.split(": ", 1)[1] for ln in lines if ln.startswith(key + ": ")]


def placed(workers: int, owner_of: str | None = None, prefix: str = "O") -> str:
    """A fresh stream name whose owner worker differs from ``owner_of``'s (when there are
    several workers), so a feed between them crosses workers."""
    while True:
        name = fresh(prefix)
        if workers < 2 or owner_of is None or \
                stream_owner("$G", name, workers) != stream_owner("$G", owner_of, workers):
            return name


# ----------------------------------------------------------------------------- increments

def test_increments_pubacks_and_stored_totals(server):
    async def main():
        nc = await connect(server)
        s = fresh()
        await create(nc, s, allow_direct=True)
        subj = f"{s.lower()}.a"
        assert await incr(nc, subj, "+5") == ack(s, 1, "5")
        assert await incr(nc, subj, "-3") == ack(s, 2, "2")
        assert await incr(nc, subj, "1") == ack(s, 3, "3")
        assert await incr(nc, subj, "0") == ack(s, 4, "3")
        assert await incr(nc, subj, "-10") == ack(s, 5, "-7")
        assert await incr(nc, subj, "007") == ack(s, 6, "0")
        # Each subject is its own counter.
        assert await incr(nc, f"{s.lower()}.b", "2") == ack(s, 7, "2")
        # The stored message: the publish's headers, the total as Go formats it.
        hdrs, data, seq = await last_msg(nc, s, subj)
        assert (hdrs, data, seq) == (b"NATS/1.0\r\nNats-Incr: 007\r\n\r\n", b'{"val":"0"}', 6)
        hdrs, data, seq = await last_msg(nc, s, f"{s.lower()}.b")
        assert data == b'{"val":"2"}' and seq == 7
        # Reads are plain reads: by sequence, and direct gets.
        assert await msg_at(nc, s, 5) == (subj, b"NATS/1.0\r\nNats-Incr: -10\r\n\r\n",
                                          b'{"val":"-7"}')
        m = await nc.request(f"$JS.API.DIRECT.GET.{s}", json.dumps(
            {"last_by_subj": subj}).encode(), timeout=5)
        assert m.data == b'{"val":"0"}'
        assert m.headers["Nats-Incr"] == "007" and m.headers["Nats-Sequence"] == "6"
        m = await nc.request(f"$JS.API.DIRECT.GET.{s}.{subj}", b"", timeout=5)
        assert m.data == b'{"val":"0"}' and m.headers["Nats-Subject"] == subj
        info = await api(nc, f"$JS.API.STREAM.INFO.{s}")
        assert info["config"]["allow_msg_counter"] is True
        assert info["state"]["messages"] == 7
        await nc.close()
    run(main())


def test_values_beyond_64_bits(server):
    # This test's own conversions of the 5000-digit numbers need CPython's limit lifted.
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)

    async def main():
        nc = await connect(server)
        s = fresh()
        await create(nc, s)
        subj = f"{s.lower()}.big"
        big = 2 ** 64 + 1
        assert await incr(nc, subj, str(big)) == ack(s, 1, str(big))
        assert await incr(nc, subj, str(big)) == ack(s, 2, str(2 * big))
        assert await incr(nc, subj, f"-{3 * big}") == ack(s, 3, str(-big))
        # Longer than CPython's default int/str conversion limit (4300 digits).
        huge = 10 ** 5000 + 7
        assert await incr(nc, subj, "+" + str(huge)) == ack(s, 4, str(huge - big))
        _, data, _ = await last_msg(nc, s, subj)
        assert data == b'{"val":"%d"}' % (huge - big)
        assert await incr(nc, subj, str(big - huge)) == ack(s, 5, "0")
        await nc.close()
    try:
        run(main())
    finally:
        sys.set_int_max_str_digits(limit)


def test_pipelined_increments_add_up(server):
    """Increments read in one batch each see the previous one (still uncommitted)."""
    async def main():
        nc = await connect(server)
        s = fresh()
        await create(nc, s)
        subj = f"{s.lower()}.x"
        steps = [(i % 7) - 2 for i in range(300)]
        acks = await asyncio.gather(*(incr(nc, subj, str(v)) for v in steps))
        acks = sorted((json.loads(a) for a in acks), key=lambda a: a["seq"])
        assert [a["seq"] for a in acks] == list(range(1, 301))
        # Whatever order they were stored in, each total is the previous one plus a step.
        totals = [int(a["val"]) for a in acks]
        assert totals[-1] == sum(steps)
        assert sorted(b - a for a, b in zip([0] + totals, totals)) == sorted(steps)
        _, data, seq = await last_msg(nc, s, subj)
        assert (data, seq) == (b'{"val":"%d"}' % sum(steps), 300)
        await nc.close()
    run(main())


def test_msg_id_dedupe_answers_without_val(server):
    async def main():
        nc = await connect(server)
        s = fresh()
        await create(nc, s)
        subj = f"{s.lower()}.d"
        assert await incr(nc, subj, "1", **{"Nats-Msg-Id": "once"}) == ack(s, 1, "1")
        assert await incr(nc, subj, "1", **{"Nats-Msg-Id": "once"}) == \
            b'{"stream":"%s","seq":1,"duplicate": true}' % s.encode()
        # A duplicate is answered before the missing increment is noticed, as in Go.
        assert await incr(nc, subj, None, **{"Nats-Msg-Id": "once"}) == \
            b'{"stream":"%s","seq":1,"duplicate": true}' % s.encode()
        assert await incr(nc, subj, "1", **{"Nats-Msg-Id": "twice"}) == ack(s, 2, "2")
        await nc.close()
    run(main())


# --------------------------------------------------------------------------------- errors

def test_publish_errors(server):
    async def main():
        nc = await connect(server)
        s = fresh()
        await create(nc, s)
        subj = f"{s.lower()}.e"
        # No Nats-Incr: no headers at all, other headers, an empty Nats-Incr.
        assert await incr(nc, subj, None) == refused(s, "missing")
        assert await incr(nc, subj, None, Key="Value") == refused(s, "missing")
        assert raw_request(server.port, subj, b"NATS/1.0\r\nNats-Incr:\r\n\r\n") == \
            refused(s, "missing")
        # A plain publish (no headers) with a payload: still the missing increment.
        assert await incr(nc, subj, None, b"data") == refused(s, "missing")
        # Not a decimal big integer (Go's big.Int SetString, base 10).
        for bad in ("bogus", "1.5", "1e3", "0x10", "1_000", "++1", "+", "-", "--1", "\u0661",
                    "1 2"):
            assert await incr(nc, subj, bad) == refused(s, "invalid"), bad
        # Spaces before the value are skipped, nothing after it.
        assert raw_request(server.port, subj, b"NATS/1.0\r\nNats-Incr: 1 \r\n\r\n") == \
            refused(s, "invalid")
        # A payload.
        assert await incr(nc, subj, "1", b"data") == refused(s, "payload")
        # Headers an increment cannot come with (any value), as in Go's test.
        for key in ("Nats-Rollup", "Nats-Expected-Last-Sequence",
                    "Nats-Expected-Last-Subject-Sequence",
                    "Nats-Expected-Last-Subject-Sequence-Subject", "Nats-Expected-Last-Msg-Id"):
            assert await incr(nc, subj, "1", **{key: "1"}) == refused(s, "invalid"), key
        # Even an expected stream that matches.
        assert await incr(nc, subj, "1", **{"Nats-Expected-Stream": s}) == refused(s, "invalid")
        # A counter stream has no message TTLs; an invalid TTL is refused as invalid.
        assert await incr(nc, subj, "1", **{"Nats-TTL": "5s"}) == refused(s, "ttl")
        assert await incr(nc, subj, "1", **{"Nats-TTL": "never"}) == refused(s, "ttl")
        assert await incr(nc, subj, "1", **{"Nats-TTL": "bogus"}) == refused(s, "ttl_invalid")
        # The payload is checked before the conflicting headers, the increment before both.
        assert await incr(nc, subj, "1", b"x", **{"Nats-Rollup": "sub"}) == refused(s, "payload")
        assert await incr(nc, subj, "x", b"x") == refused(s, "invalid")
        # Nothing was stored.
        info = await api(nc, f"$JS.API.STREAM.INFO.{s}")
        assert info["state"]["messages"] == 0 and info["state"]["last_seq"] == 0
        assert await incr(nc, subj, "1") == ack(s, 1, "1")
        await nc.close()
    run(main())


def test_increment_on_a_stream_without_counters(server):
    async def main():
        nc = await connect(server)
        s = fresh("P")
        await create(nc, s, allow_msg_counter=False)
        subj = f"{s.lower()}.a"
        assert await incr(nc, subj, "1") == refused(s, "disabled")
        # An invalid increment is refused as invalid first, on any stream.
        assert await incr(nc, subj, "bogus") == refused(s, "invalid")
        # An empty Nats-Incr is no increment: stored as any message.
        assert raw_request(server.port, subj, b"NATS/1.0\r\nNats-Incr:\r\n\r\n", b"x") == \
            b'{"stream":"%s","seq":1}' % s.encode()
        assert await incr(nc, subj, None, b"plain") == b'{"stream":"%s","seq":2}' % s.encode()
        await nc.close()
    run(main())


def test_broken_counters(server):
    """Go 2.12.0 takes a publish's ``Nats-Stream-Source`` (a source's header) and
    ``Nats-Counter-Sources`` as they come: a source header makes the (empty) payload the
    origin's total, which does not parse; a bad sources header breaks the next increment."""
    async def main():
        nc = await connect(server)
        s = fresh()
        await create(nc, s)
        subj = f"{s.lower()}.b"
        assert await incr(nc, subj, "1", **{"Nats-Stream-Source": f"X 1 > > {subj}"}) == \
            refused(s, "broken")
        assert await incr(nc, subj, "1", **{"Nats-Counter-Sources": "garbage"}) == \
            ack(s, 1, "1")
        assert await incr(nc, subj, "1") == refused(s, "broken")
        assert await incr(nc, f"{s.lower()}.other", "1") == ack(s, 2, "1")
        # Valid sources from a publisher are carried to the next total.
        subj = f"{s.lower()}.c"
        assert await incr(nc, subj, "4", **{"Nats-Counter-Sources": '{"Z":{"z":"9"}}'}) == \
            ack(s, 3, "4")
        assert await incr(nc, subj, "1") == ack(s, 4, "5")
        hdrs, _, _ = await last_msg(nc, s, subj)
        assert hdrs == b'NATS/1.0\r\nNats-Incr: 1\r\nNats-Counter-Sources: {"Z":{"z":"9"}}\r\n\r\n'
        await nc.close()
    run(main())


def test_total_larger_than_max_payload(start_natsx, tmp_path):
    """Go's TestJetStreamAllowMsgCounterMaxPayloadAndSize: the new message must fit the
    server's max_payload and the stream's max_msg_size."""
    conf = tmp_path / "mp.conf"
    conf.write_text("max_payload: 1024\n")
    srv = start_natsx("-js", "-sd", str(tmp_path / "store"), "-c", str(conf), "--workers", "2",
                      monitor=False)

    async def main():
        nc = await connect(srv)
        await create(nc, "T", subjects=["foo"])
        assert await incr(nc, "foo", "1") == ack("T", 1, "1")
        assert await incr(nc, "foo", "1" * 500) == refused("T", "too_big")
        assert await incr(nc, "foo", "-2") == ack("T", 2, "-1")
        assert await incr(nc, "foo", "-" + "1" * 500) == refused("T", "too_big")
        assert await incr(nc, "foo", "1") == ack("T", 3, "0")
        cfg = (await api(nc, "$JS.API.STREAM.INFO.T"))["config"]
        cfg["max_msg_size"] = 37
        assert "error" not in await api(nc, "$JS.API.STREAM.UPDATE.T", cfg)
        # NATS/1.0 + Nats-Incr: 1 (26 bytes) and {"val":"1"} (11 bytes): exactly 37.
        assert await incr(nc, "foo", "1") == ack("T", 4, "1")
        assert await incr(nc, "foo", "10") == refused("T", "too_big")
        await nc.close()
    run(main())


def test_puback_with_a_domain(start_natsx, tmp_path):
    """Go's pubAck prefix holds the domain before the sequence; the total comes last."""
    conf = tmp_path / "domain.conf"
    conf.write_text('jetstream { store_dir: "%s", domain: hub }\n' % (tmp_path / "store"))
    srv = start_natsx("-c", str(conf), "--workers", "1", monitor=False)

    async def main():
        nc = await connect(srv)
        await create(nc, "T", subjects=["foo"])
        assert await incr(nc, "foo", "-1") == b'{"stream":"T","domain":"hub","seq":1,"val":"-1"}'
        await nc.close()
    run(main())


# --------------------------------------------------------------------------------- config

def test_config_errors(server):
    def invalid(text):
        return {"code": 500, "err_code": 10052, "description": text}

    async def main():
        nc = await connect(server)
        for extra, text in (({"discard": "new"}, "counter stream cannot use discard new"),
                            ({"allow_msg_ttl": True}, "counter stream cannot use message TTLs"),
                            ({"retention": "interest"},
                             "counter stream can only use limits retention"),
                            ({"retention": "workqueue"},
                             "counter stream can only use limits retention")):
            s = fresh()
            resp = await api(nc, f"$JS.API.STREAM.CREATE.{s}",
                             {"name": s, "subjects": [s], "allow_msg_counter": True, **extra})
            assert resp["error"] == invalid(text), extra
        o = fresh()
        await create(nc, o)
        m = fresh("M")
        resp = await api(nc, f"$JS.API.STREAM.CREATE.{m}",
                         {"name": m, "mirror": {"name": o}, "allow_msg_counter": True})
        assert resp["error"] == {"code": 400, "err_code": 10173,
                                 "description": "stream mirrors can not also calculate counters"}
        # Go's mirror checks come in its order: subjects, then sources, then counters.
        resp = await api(nc, f"$JS.API.STREAM.CREATE.{m}",
                         {"name": m, "mirror": {"name": o}, "subjects": ["zz"],
                          "allow_msg_counter": True})
        assert resp["error"]["err_code"] == 10034
        # Counters can be neither turned off nor on by an update.
        p = fresh("P")
        for cfg in ((await api(nc, f"$JS.API.STREAM.INFO.{o}"))["config"],
                    (await create(nc, p, allow_msg_counter=False))["config"]):
            cfg["allow_msg_counter"] = not cfg.get("allow_msg_counter", False)
            resp = await api(nc, f"$JS.API.STREAM.UPDATE.{cfg['name']}", cfg)
            assert resp["error"] == invalid(
                "stream configuration update can not change message counter setting")
        # An update that keeps it is fine.
        cfg = (await api(nc, f"$JS.API.STREAM.INFO.{o}"))["config"]
        cfg["max_msgs_per_subject"] = 5
        resp = await api(nc, f"$JS.API.STREAM.UPDATE.{o}", cfg)
        assert resp["config"]["allow_msg_counter"] is True
        # Go checks TTLs before subject delete markers turn them on.
        s = fresh()
        resp = await create(nc, s, allow_msg_counter=True, max_age=2_000_000_000,
                            subject_delete_marker_ttl=1_000_000_000)
        assert resp["config"]["allow_msg_ttl"] is True
        await nc.close()
    run(main())


# ------------------------------------------------------------------------- mirrors, sources

def test_mirror_copies_counters_verbatim(server):
    async def main():
        nc = await connect(server)
        o = fresh()
        await create(nc, o)
        m = placed(server.workers, o, "M")
        await create(nc, m, subjects=None, mirror={"name": o}, allow_msg_counter=False)
        subj = f"{o.lower()}.a"
        for v in ("1", "2"):
            await incr(nc, subj, v)
        await wait_total(nc, m, subj, "3")
        assert await msg_at(nc, m, 1) == (subj, b"NATS/1.0\r\nNats-Incr: 1\r\n\r\n",
                                          b'{"val":"1"}')
        await nc.close()
    run(main())


def test_source_into_a_stream_without_counters_is_verbatim(server):
    async def main():
        nc = await connect(server)
        o = fresh()
        await create(nc, o)
        t = placed(server.workers, o, "V")
        await create(nc, t, subjects=None, allow_msg_counter=False, sources=[{"name": o}])
        subj = f"{o.lower()}.a"
        await incr(nc, subj, "1")
        await incr(nc, subj, "2")
        hdrs, _ = await wait_total(nc, t, subj, "3")
        assert header(hdrs, "Nats-Incr") == ["2"]
        assert header(hdrs, "Nats-Stream-Source") == [f"{o} 2 > > {subj}"]
        assert header(hdrs, "Nats-Counter-Sources") == []
        await nc.close()
    run(main())


@pytest.mark.parametrize("storage", ["file", "memory"])
def test_sources_aggregate(server, storage):
    """Two counter streams sourced into a third: totals add up; each sourced message's
    Nats-Incr becomes the difference it made, and every message of the aggregate carries
    the last total taken from each origin subject."""
    async def main():
        nc = await connect(server)
        agg = fresh("AGG")
        o1 = placed(server.workers, agg)
        o2 = placed(server.workers, agg)
        for o in (o1, o2):
            await create(nc, o, storage=storage)
        await create(nc, agg, subjects=[f"{agg.lower()}.>"], sources=[
            {"name": o, "subject_transforms": [{"src": f"{o.lower()}.>",
                                                "dest": f"{agg.lower()}.>"}]}
            for o in (o1, o2)])
        s1, s2, a = f"{o1.lower()}.x", f"{o2.lower()}.x", f"{agg.lower()}.x"
        assert await incr(nc, s1, "5") == ack(o1, 1, "5")
        await wait_total(nc, agg, a, "5")
        assert await incr(nc, s2, "7") == ack(o2, 1, "7")
        await wait_total(nc, agg, a, "12")
        assert await incr(nc, s1, "-2") == ack(o1, 2, "3")
        hdrs, seq = await wait_total(nc, agg, a, "10")
        assert seq == 3
        assert hdrs == (b"NATS/1.0\r\nNats-Incr: -2\r\nNats-Stream-Source: %s 2 %s.> %s.> %s\r\n"
                        b"Nats-Counter-Sources: %s\r\n\r\n" % (
                            o1.encode(), o1.lower().encode(), agg.lower().encode(), s1.encode(),
                            json.dumps({o1: {s1: "3"}, o2: {s2: "7"}}, sort_keys=True,
                                       separators=(",", ":")).encode()))
        # A local increment on the aggregate keeps the sources' totals.
        assert await incr(nc, a, "1000") == ack(agg, 4, "1010")
        hdrs, _, _ = await last_msg(nc, agg, a)
        assert json.loads(header(hdrs, "Nats-Counter-Sources")[0]) == {o1: {s1: "3"},
                                                                         o2: {s2: "7"}}
        # Another origin subject has its own entry.
        await incr(nc, f"{o2.lower()}.y", "100")
        hdrs, _ = await wait_total(nc, agg, f"{agg.lower()}.y", "100")
        assert json.loads(header(hdrs, "Nats-Counter-Sources")[0]) == {
            o2: {f"{o2.lower()}.y": "100"}}
        # Big totals from the origins add up too.
        big = 2 ** 70
        await incr(nc, s2, str(big))
        hdrs, _ = await wait_total(nc, agg, a, str(1010 + big))
        assert header(hdrs, "Nats-Incr") == [str(big)]
        assert json.loads(header(hdrs, "Nats-Counter-Sources")[0])[o2][s2] == str(7 + big)
        await nc.close()
    run(main())


def test_sources_added_later_start_above_zero(server):
    """Go's TestJetStreamAllowMsgCounterSourceStartingAboveZero: origins that kept one
    message per subject, sourced by an update into a counter stream with a local total."""
    async def main():
        nc = await connect(server)
        m = fresh("AGG")
        o1, o2 = placed(server.workers, m), placed(server.workers, m)
        await create(nc, o1, subjects=[f"{o1.lower()}.1"], max_msgs_per_subject=1)
        await create(nc, o2, subjects=[f"{o2.lower()}.2"], max_msgs_per_subject=1)
        for i in range(5):
            assert await incr(nc, f"{o1.lower()}.1", "1") == ack(o1, i + 1, str(i + 1))
            assert await incr(nc, f"{o2.lower()}.2", "2") == ack(o2, i + 1, str(2 * (i + 1)))
        cfg = (await create(nc, m, subjects=["foo"]))["config"]
        assert await incr(nc, "foo", "1") == ack(m, 1, "1")
        cfg["sources"] = [{"name": o, "subject_transforms": [{"src": f"{o.lower()}.*",
                                                              "dest": "foo"}]}
                          for o in (o1, o2)]
        resp = await api(nc, f"$JS.API.STREAM.UPDATE.{m}", cfg)
        assert "error" not in resp, resp
        await wait_total(nc, m, "foo", "16")
        # An origin in another worker is read from its LMDB file, which takes a write just
        # after its acknowledgement: a source may copy a total the origin's last message
        # had not replaced yet (Go copies 5 and 10 only). Totals add up the same; here one
        # such intermediate copy is an extra message.
        last = (await api(nc, f"$JS.API.STREAM.INFO.{m}"))["state"]["last_seq"]
        assert last in (3, 4)
        assert await incr(nc, "foo", "1") == ack(m, last + 1, "17")
        hdrs, _, _ = await last_msg(nc, m, "foo")
        assert json.loads(header(hdrs, "Nats-Counter-Sources")[0]) == {
            o1: {f"{o1.lower()}.1": "5"}, o2: {f"{o2.lower()}.2": "10"}}
        incrs = []
        for seq in range(1, last + 2):
            subject, h, _ = await msg_at(nc, m, seq)
            assert subject == "foo"
            incrs.append(int(header(h, "Nats-Incr")[0]))
        assert incrs[0] == 1 and incrs[-1] == 1 and sum(incrs[1:-1]) == 15
        if last == 3:
            assert sorted(incrs[1:3]) == [5, 10]
        await nc.close()
    run(main())


def test_daisy_chained_aggregates(server):
    """A counter stream sourcing an aggregate: the aggregate's own source header goes
    (Go's processInboundSourceMsg), the counter sources are the chain's next link's."""
    async def main():
        nc = await connect(server)
        o = fresh()
        a1 = placed(server.workers, o, "A")
        a2 = placed(server.workers, a1, "B")
        await create(nc, o)
        await create(nc, a1, subjects=None, sources=[{"name": o}])
        await create(nc, a2, subjects=None, sources=[{"name": a1}])
        subj = f"{o.lower()}.x"
        await incr(nc, subj, "3")
        await incr(nc, subj, "4")
        hdrs, seq = await wait_total(nc, a2, subj, "7")
        assert seq == 2
        assert header(hdrs, "Nats-Stream-Source") == [f"{a1} 2 > > {subj}"]
        assert header(hdrs, "Nats-Counter-Sources") == [json.dumps({a1: {subj: "7"}})
                                                        .replace(" ", "")]
        assert header(hdrs, "Nats-Incr") == ["4"]
        await nc.close()
    run(main())


@pytest.mark.parametrize("storage", ["file", "memory"])
def test_source_of_plain_messages_holds_until_it_goes(server, storage):
    """A counter stream sourcing a message without Nats-Incr refuses it (missing
    increment): Go logs it and retries that message, storing nothing meanwhile. Once the
    message is deleted from the origin, the retry goes on with the next one (here a
    counter message the origin sourced verbatim)."""
    async def main():
        nc = await connect(server)
        c = fresh()
        p = placed(server.workers, c, "P")
        t = placed(server.workers, p)
        await create(nc, c)
        await create(nc, p, storage=storage, allow_msg_counter=False, sources=[{"name": c}])
        await create(nc, t, subjects=None, sources=[{"name": p}])
        assert await nc.request(f"{p.lower()}.a", b"plain", timeout=5)
        subj = f"{c.lower()}.x"
        await incr(nc, subj, "5")
        await wait_total(nc, p, subj, "5")
        await asyncio.sleep(1.0)
        info = await api(nc, f"$JS.API.STREAM.INFO.{t}")
        assert info["state"]["messages"] == 0
        deadline = time.monotonic() + 10
        while "message counter increment is missing (10169)" not in server.log():
            assert time.monotonic() < deadline, server.log()[-2000:]
            await asyncio.sleep(0.1)
        assert f"Error processing inbound source \"{p} > >\" for '$G' > '{t}': " \
               "message counter increment is missing (10169)" in server.log()
        resp = await api(nc, f"$JS.API.STREAM.MSG.DELETE.{p}", {"seq": 1})
        assert resp.get("success") is True, resp
        hdrs, seq = await wait_total(nc, t, subj, "5")
        assert seq == 1
        assert header(hdrs, "Nats-Stream-Source") == [f"{p} 2 > > {subj}"]
        assert json.loads(header(hdrs, "Nats-Counter-Sources")[0]) == {p: {subj: "5"}}
        await nc.close()
    run(main())


# -------------------------------------------------------------------------------- restart

@pytest.mark.parametrize("how", ["stop", "kill"])
def test_totals_survive_a_restart(tmp_path, how):
    store = str(tmp_path / "store")
    srv = start(tmp_path, store, "--workers", "2")
    agg = fresh("AGG")
    o = placed(2, agg)
    so, sa = f"{o.lower()}.n", f"{agg.lower()}.n"
    try:
        async def before():
            nc = await connect(srv)
            await create(nc, o)
            await create(nc, agg, sources=[{"name": o, "subject_transforms": [
                {"src": f"{o.lower()}.>", "dest": f"{agg.lower()}.>"}]}])
            big = 3 ** 50
            assert await incr(nc, so, str(big)) == ack(o, 1, str(big))
            assert await incr(nc, so, "1") == ack(o, 2, str(big + 1))
            assert await incr(nc, sa, "-5") == ack(agg, 1, "-5")
            await wait_total(nc, agg, sa, str(big - 4))
            await nc.close()
        run(before())
    finally:
        if how == "kill":
            kill_hard(srv)
        else:
            srv.stop(signal.SIGTERM)
    srv = start(tmp_path, store, "--workers", "2")
    try:
        async def after():
            nc = await connect(srv)
            big = 3 ** 50
            # The totals continue from the last stored message of each subject.
            for _ in range(100):
                try:
                    got = await incr(nc, so, "1")
                    break
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.1)
            assert got == ack(o, 3, str(big + 2))
            # The aggregate takes only the difference: nothing is counted twice.
            await wait_total(nc, agg, sa, str(big - 3))
            assert await incr(nc, sa, "3") == ack(agg, 5, str(big))
            info = await api(nc, f"$JS.API.STREAM.INFO.{agg}")
            assert info["state"]["messages"] == 5
            await nc.close()
        run(after())
    finally:
        srv.stop()
