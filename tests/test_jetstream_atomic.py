"""Atomic batch publish (ADR-50, Go 2.12 ``allow_atomic``): black-box tests.

A batch is a run of publishes with ``Nats-Batch-Id``, ``Nats-Batch-Sequence`` 1..N and, on the
last one, ``Nats-Batch-Commit: 1`` (natsx.jetstream.batching). The expectations are Go's
(server/jetstream_batching_test.go and processJetStreamBatchMsg in server/stream.go of the 2.12
series): error codes and texts, the empty answer to a staged message, the commit's PubAck with
``"batch"`` and ``"count"``, and the ``jetstream { limits { batch {} } }`` options.

The shared server runs two workers and every stream is created on the worker its publisher
is not connected to, so each batch crosses the rings to the stream's owner.
"""
from __future__ import annotations

import asyncio
import json
import urllib.request

import nats
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig, StreamSource
from nats.js.errors import APIError, NotFoundError

from natsx.jetstream.shards import stream_owner

from test_jetstream import connect, kill_hard, run, start
from test_jetstream_workers import connect_on

pytestmark = pytest.mark.server

WORKERS = 2
_names = iter(range(10**6))


def stream_name(worker: int, prefix: str = "B") -> str:
    """A fresh stream name that worker ``worker`` runs (natsx.jetstream.shards)."""
    while True:
        name = f"{prefix}{next(_names)}"
        if stream_owner("$G", name, WORKERS) == worker:
            return name


def hdrs(batch: str, seq, commit=None, **extra) -> dict:
    h = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(seq)}
    if commit is not None:
        h["Nats-Batch-Commit"] = commit
    h.update({k.replace("_", "-"): v for k, v in extra.items()})
    return h


async def request(nc, subject: str, data: bytes, headers: dict) -> bytes:
    return (await nc.request(subject, data, headers=headers, timeout=3)).data


async def send_batch(nc, batch: str, messages, commit: str = "1") -> dict:
    """Publishes ``messages`` (``(subject, data, extra headers)``) as one batch, the last
    one committing with a request; returns its answer."""
    n = len(messages)
    for i, (subject, data, extra) in enumerate(messages[:-1], 1):
        await nc.publish(subject, data, headers=hdrs(batch, i, **extra))
    subject, data, extra = messages[-1]
    return json.loads(await request(nc, subject, data, hdrs(batch, n, commit, **extra)))


def err(body, code: int) -> dict:
    """The PubAck error of ``body`` (raw or parsed), checked to be Go error ``code``."""
    resp = json.loads(body) if isinstance(body, bytes) else body
    assert resp["error"]["err_code"] == code, resp
    return resp["error"]


async def assert_unchanged(js, stream: str, messages: int, last_seq: int) -> None:
    state = (await js.stream_info(stream)).state
    assert (state.messages, state.last_seq) == (messages, last_seq)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jsatomic")
    srv = start(tmp, str(tmp / "store"), "--workers", str(WORKERS))
    yield srv
    srv.stop()


async def session(server):
    """``(nc, js)``: a connection on worker 0; the streams are made by ``stream_name(1)``,
    so every publish crosses to the stream's owner."""
    nc = await connect_on(server, 0)
    return nc, nc.jetstream()


# ------------------------------------------------------------------------------------ commit

@pytest.mark.parametrize("storage,retention", [
    (StorageType.FILE, RetentionPolicy.LIMITS), (StorageType.MEMORY, RetentionPolicy.LIMITS),
    (StorageType.FILE, RetentionPolicy.WORK_QUEUE), (StorageType.MEMORY, RetentionPolicy.INTEREST),
])
def test_commit_stores_the_whole_batch(server, storage, retention):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[f"{s}.*"], storage=storage, retention=retention,
                            allow_atomic=True)
        await js.publish(f"{s}.0", b"before")
        # Staged messages answer with an empty message (Go's flow control), and nothing
        # of the batch is in the stream before the commit.
        for i in range(1, 5):
            r = await nc.request(f"{s}.{i}", b"m%d" % i, headers=hdrs("uuid", i), timeout=3)
            assert r.data == b"" and not r.headers
        await assert_unchanged(js, s, 0 if retention == RetentionPolicy.INTEREST else 1, 1)
        if retention != RetentionPolicy.INTEREST:
            with pytest.raises(NotFoundError):
                await js.get_msg(s, 2)
        raw = await request(nc, f"{s}.5", b"m5", hdrs("uuid", 5, "1"))
        assert raw == b'{"stream":"%s","seq":6,"batch":"uuid","count":5}' % s.encode()
        if retention == RetentionPolicy.INTEREST:
            # No consumer: the sequences are used up, nothing is kept (Go's noInterest).
            await assert_unchanged(js, s, 0, 6)
        else:
            await assert_unchanged(js, s, 6, 6)
            for seq in range(2, 7):
                m = await js.get_msg(s, seq)
                assert (m.subject, m.data) == (f"{s}.{seq - 1}", b"m%d" % (seq - 1))
                # The batch headers are stored with the messages, as in Go.
                assert m.headers["Nats-Batch-Id"] == "uuid"
                assert m.headers["Nats-Batch-Sequence"] == str(seq - 1)
            assert "Nats-Batch-Commit" not in (await js.get_msg(s, 5)).headers
            assert (await js.get_msg(s, 6)).headers["Nats-Batch-Commit"] == "1"
        # A batch of one commits at once; the id may be reused once a batch is over.
        raw = await request(nc, f"{s}.x", b"one", hdrs("uuid", 1, "1"))
        assert json.loads(raw) == {"stream": s, "seq": 7, "batch": "uuid", "count": 1}
        await nc.close()
    run(main())


def test_batches_interleave_and_consumers_see_them_at_commit(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[f"{s}.*"], allow_atomic=True)
        psub = await js.pull_subscribe(f"{s}.*", "dur")
        nc2 = await connect_on(server, 1)     # on the stream's own worker
        await nc.publish(f"{s}.a", b"a1", headers=hdrs("A", 1))
        await nc2.publish(f"{s}.b", b"b1", headers=hdrs("B", 1))
        await nc2.flush()
        # A plain publish goes in between: the batches are not in the stream yet.
        assert (await js.publish(f"{s}.p", b"plain")).seq == 1
        got = [m.data for m in await psub.fetch(1, timeout=3)]
        with pytest.raises(nats.errors.TimeoutError):
            await psub.fetch(1, timeout=0.3)       # the plain one only
        ack_b = json.loads(await request(nc2, f"{s}.b", b"b2", hdrs("B", 2, "1")))
        ack_a = json.loads(await request(nc, f"{s}.a", b"a2", hdrs("A", 2, "1")))
        # Each batch is stored as one run of sequences, in commit order.
        assert (ack_b["seq"], ack_b["count"], ack_a["seq"], ack_a["count"]) == (3, 2, 5, 2)
        while len(got) < 5:
            got += [m.data for m in await psub.fetch(5 - len(got), timeout=3)]
        assert got == [b"plain", b"b1", b"b2", b"a1", b"a2"]
        await nc2.close()
        await nc.close()
    run(main())


# ------------------------------------------------------------------------------------ errors

def test_disabled_stream(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[s])
        raw = await request(nc, s, b"x", hdrs("uuid", 1, "1"))
        assert raw == (b'{"error":{"code":400,"err_code":10174,"description":"atomic publish is '
                       b'disabled"},"stream":"%s","seq":0}' % s.encode())
        # Enabled by an update; turning it off again drops the batch in progress.
        await js.update_stream(name=s, subjects=[s], allow_atomic=True)
        r = await nc.request(s, b"1", headers=hdrs("open", 1), timeout=3)
        assert r.data == b""
        await js.update_stream(name=s, subjects=[s], allow_atomic=False)
        err(await request(nc, s, b"2", hdrs("open", 2, "1")), 10174)
        await js.update_stream(name=s, subjects=[s], allow_atomic=True)
        e = err(await request(nc, s, b"2", hdrs("open", 2, "1")), 10176)
        assert e == {"code": 400, "err_code": 10176,
                     "description": "atomic publish batch is incomplete"}
        await assert_unchanged(js, s, 0, 0)
        await nc.close()
    run(main())


def test_invalid_ids_sequences_and_commits(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        # The id: at most 64 bytes.
        e = err(await request(nc, s, b"", hdrs("A" * 65, 1, "1")), 10179)
        assert e["description"] == "atomic publish batch ID is invalid"
        ok = json.loads(await request(nc, s, b"", hdrs("A" * 64, 1, "1")))
        assert ok["batch"] == "A" * 64 and ok["count"] == 1 and ok["seq"] == 1
        # The sequence header is required.
        e = err(await request(nc, s, b"", {"Nats-Batch-Id": "x"}), 10175)
        assert e["description"] == "atomic publish sequence is missing"
        # A batch starts at 1. A sequence that is not a number reads as 2^64-1, as Go's
        # parseInt64 makes it: past the maximum size.
        for seq in ("2", "0"):
            err(await request(nc, s, b"", hdrs("x", seq)), 10176)
        err(await request(nc, s, b"", hdrs("x", "abc")), 10199)
        # A commit other than "1" drops the batch.
        assert await request(nc, s, b"1", hdrs("c", 1)) == b""
        e = err(await request(nc, s, b"2", hdrs("c", 2, "true")), 10200)
        assert e["description"] == "atomic publish batch commit is invalid"
        err(await request(nc, s, b"3", hdrs("c", 3, "1")), 10176)
        # A batch of one with a bad commit opens and drops at once.
        err(await request(nc, s, b"", hdrs("d", 1, "yes")), 10200)
        await assert_unchanged(js, s, 1, 1)
        await nc.close()
    run(main())


def test_gap_abandons_the_batch(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        adv = await nc.subscribe(f"$JS.EVENT.ADVISORY.STREAM.BATCH_ABANDONED.{s}")
        await nc.flush()
        await nc.publish(s, b"1", headers=hdrs("gap", 1))
        await nc.publish(s, b"2", headers=hdrs("gap", 2))
        err(await request(nc, s, b"4", hdrs("gap", 4, "1")), 10176)
        event = json.loads((await adv.next_msg(timeout=3)).data)
        assert event["type"] == "io.nats.jetstream.advisory.v1.stream_batch_abandoned"
        assert list(event)[3:] == ["stream", "batch", "reason"]
        assert (event["stream"], event["batch"], event["reason"]) == (s, "gap", "incomplete")
        # The batch is gone: what follows finds none.
        err(await request(nc, s, b"3", hdrs("gap", 3, "1")), 10176)
        await assert_unchanged(js, s, 0, 0)
        # A repeated sequence is a gap too.
        await nc.publish(s, b"1", headers=hdrs("rep", 1))
        err(await request(nc, s, b"1", hdrs("rep", 1, "1")), 10176)
        await assert_unchanged(js, s, 0, 0)
        await nc.close()
    run(main())


def test_duplicate_message_ids(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        # Within the batch.
        e = err(await send_batch(nc, "d1", [(s, b"1", {"Nats-Msg-Id": "a"}),
                                            (s, b"2", {"Nats-Msg-Id": "b"}),
                                            (s, b"3", {"Nats-Msg-Id": "a"})]), 10201)
        assert e["description"] == "atomic publish batch contains duplicate message id"
        await assert_unchanged(js, s, 0, 0)
        # Distinct ids are stored and remembered for deduplication.
        ack = await send_batch(nc, "d2", [(s, b"1", {"Nats-Msg-Id": "a"}),
                                          (s, b"2", {"Nats-Msg-Id": "b"})])
        assert (ack["seq"], ack["count"]) == (2, 2)
        dup = await js.publish(s, b"again", headers={"Nats-Msg-Id": "b"})
        assert dup.duplicate and dup.seq == 2
        # An id already in the stream's duplicate window fails the batch.
        err(await send_batch(nc, "d3", [(s, b"1", {"Nats-Msg-Id": "c"}),
                                        (s, b"2", {"Nats-Msg-Id": "a"})]), 10201)
        await assert_unchanged(js, s, 2, 2)
        await nc.close()
    run(main())


def test_expected_last_sequence_failure_rolls_back_the_batch(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[f"{s}.*"], allow_atomic=True)
        await js.publish(f"{s}.a", b"")
        await js.publish(f"{s}.b", b"")
        # On the first message the header holds the stream's last sequence.
        ack = await send_batch(nc, "ok", [(f"{s}.a", b"1", {"Nats-Expected-Last-Sequence": "2"}),
                                          (f"{s}.b", b"2", {})])
        assert (ack["seq"], ack["count"]) == (4, 2)
        # On a later one it is checked against the stream as the batch leaves it...
        e = err(await send_batch(nc, "mid", [
            (f"{s}.a", b"1", {"Nats-Expected-Last-Sequence": "4"}),
            (f"{s}.a", b"2", {}),
            (f"{s}.b", b"3", {"Nats-Expected-Last-Sequence": "4"}),
            (f"{s}.b", b"4", {})]), 10071)
        assert e["description"] == "wrong last sequence: 6"
        await assert_unchanged(js, s, 4, 4)
        # ... and even right, only the first message may carry it.
        e = err(await send_batch(nc, "mid2", [
            (f"{s}.a", b"1", {}),
            (f"{s}.b", b"2", {"Nats-Expected-Last-Sequence": "5"})]), 10164)
        assert e["description"] == "wrong last sequence"
        await assert_unchanged(js, s, 4, 4)
        # Per subject: a subject the batch wrote cannot be checked, another one can.
        err(await send_batch(nc, "subj", [
            (f"{s}.a", b"1", {}),
            (f"{s}.a", b"2", {"Nats-Expected-Last-Subject-Sequence": "3"})]), 10164)
        e = err(await send_batch(nc, "subj2", [
            (f"{s}.a", b"1", {}),
            (f"{s}.c", b"2", {"Nats-Expected-Last-Subject-Sequence": "0",
                              "Nats-Expected-Last-Subject-Sequence-Subject": f"{s}.b"})]), 10071)
        assert e["description"] == "wrong last sequence: 4"
        await assert_unchanged(js, s, 4, 4)
        ack = await send_batch(nc, "subj3", [
            (f"{s}.a", b"1", {}),
            (f"{s}.c", b"2", {"Nats-Expected-Last-Subject-Sequence": "4",
                              "Nats-Expected-Last-Subject-Sequence-Subject": f"{s}.b"})])
        assert (ack["seq"], ack["count"]) == (6, 2)
        await nc.close()
    run(main())


def test_unsupported_headers_and_other_checks(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[f"{s}.*"], allow_atomic=True,
                            allow_rollup_hdrs=True)
        # Nats-Expected-Last-Msg-Id is refused on any message of the batch.
        e = err(await send_batch(nc, "u", [(f"{s}.a", b"1", {"Nats-Expected-Last-Msg-Id": "x"}),
                                           (f"{s}.a", b"2", {})]), 10177)
        assert e["description"] == "atomic publish unsupported header used: " \
                                   "Nats-Expected-Last-Msg-Id"
        e = err(await send_batch(nc, "s", [(f"{s}.a", b"1", {}),
                                           (f"{s}.a", b"2", {"Nats-Expected-Stream": "OTHER"})]),
                10060)
        # Rollups: "all" on the first message only, "sub" on a subject's first only.
        e = err(await send_batch(nc, "r", [(f"{s}.a", b"1", {}),
                                           (f"{s}.b", b"2", {"Nats-Rollup": "all"})]), 10111)
        assert e["description"] == "batch rollup all invalid"
        e = err(await send_batch(nc, "r2", [(f"{s}.a", b"1", {}),
                                            (f"{s}.a", b"2", {"Nats-Rollup": "sub"})]), 10111)
        assert e["description"] == "batch rollup sub invalid"
        e = err(await send_batch(nc, "r3", [(f"{s}.a", b"1", {"Nats-Rollup": "bad"})]), 10111)
        assert e["description"] == 'rollup value invalid: "bad"'
        e = err(await send_batch(nc, "t", [(f"{s}.a", b"1", {"Nats-TTL": "1h"})]), 10166)
        await assert_unchanged(js, s, 0, 0)
        await js.publish(f"{s}.a", b"old")
        ack = await send_batch(nc, "r4", [(f"{s}.b", b"1", {}),
                                          (f"{s}.a", b"2", {"Nats-Rollup": "sub"})])
        assert (ack["seq"], ack["count"]) == (3, 2)
        await assert_unchanged(js, s, 2, 3)
        await nc.close()
    run(main())


def test_checks_see_the_transformed_subjects(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[f"{s}.in.*"], allow_atomic=True,
                            subject_transform={"src": f"{s}.in.*",
                                               "dest": f"{s}.out.{{{{wildcard(1)}}}}"})
        # The first message is stored as <s>.out.a: the second cannot check that subject.
        err(await send_batch(nc, "t", [
            (f"{s}.in.a", b"1", {}),
            (f"{s}.in.b", b"2", {"Nats-Expected-Last-Subject-Sequence": "0",
                                 "Nats-Expected-Last-Subject-Sequence-Subject": f"{s}.out.a"})]),
            10164)
        ack = await send_batch(nc, "t", [
            (f"{s}.in.a", b"1", {}),
            (f"{s}.in.b", b"2", {"Nats-Expected-Last-Subject-Sequence": "0"})])
        assert (ack["seq"], ack["count"]) == (2, 2)
        assert [(await js.get_msg(s, q)).subject for q in (1, 2)] == [f"{s}.out.a", f"{s}.out.b"]
        await nc.close()
    run(main())


def test_discard_new_counts_the_whole_batch(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[f"{s}.*"], allow_atomic=True, discard="new",
                            max_msgs=3)
        await js.publish(f"{s}.a", b"")
        e = err(await send_batch(nc, "n", [(f"{s}.a", b"", {})] * 3), 10077)
        assert e == {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}
        await assert_unchanged(js, s, 1, 1)
        ack = await send_batch(nc, "n", [(f"{s}.a", b"", {})] * 2)
        assert (ack["seq"], ack["count"]) == (3, 2)
        t = stream_name(1)
        await js.add_stream(name=t, subjects=[t], allow_atomic=True, discard="new",
                            max_msgs_per_subject=2, discard_new_per_subject=True)
        await js.publish(t, b"")
        err(await send_batch(nc, "p", [(t, b"", {})] * 2), 10077)
        await assert_unchanged(js, t, 1, 1)
        await nc.close()
    run(main())


def test_too_large_batch_with_go_defaults(server):
    """Go's default maximum: 1000 messages in a batch."""
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        adv = await nc.subscribe(f"$JS.EVENT.ADVISORY.STREAM.BATCH_ABANDONED.{s}")
        await nc.flush()
        ack = await send_batch(nc, "max", [(s, b"%d" % i, {}) for i in range(1000)])
        assert (ack["seq"], ack["count"]) == (1000, 1000)
        e = err(await send_batch(nc, "big", [(s, b"%d" % i, {}) for i in range(1001)]), 10199)
        assert e["description"] == "atomic publish batch is too large: 1000"
        event = json.loads((await adv.next_msg(timeout=3)).data)
        assert (event["batch"], event["reason"]) == ("big", "large")
        # A first message past the maximum says so too.
        err(await request(nc, s, b"", hdrs("far", 1001, "1")), 10199)
        await assert_unchanged(js, s, 1000, 1000)
        await nc.close()
    run(main(), timeout=120)


# ------------------------------------------------------------------------------------ config

def test_mirror_cannot_use_atomic_publish_and_drops_batch_headers(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        ack = await send_batch(nc, "m", [(s, b"1", {}), (s, b"2", {}), (s, b"3", {})])
        assert ack["count"] == 3
        await js.publish(s, b"4", headers={"Nats-Expected-Stream": s, "X-Keep": "1"})
        with pytest.raises(APIError) as e:
            await js.add_stream(StreamConfig(name=stream_name(0, "M"), allow_atomic=True,
                                             mirror=StreamSource(name=s)))
        assert (e.value.err_code, e.value.description) == (
            10198, "stream mirrors can not also use atomic publishing")
        # A mirror and a source copy the messages without the batch headers, nor the
        # expected ones (Go).
        m, src = stream_name(0, "M"), stream_name(1, "S")
        await js.add_stream(name=m, mirror=StreamSource(name=s))
        await js.add_stream(name=src, sources=[StreamSource(name=s)])
        for _ in range(100):
            if (await js.stream_info(m)).state.messages == 4 and \
                    (await js.stream_info(src)).state.messages == 4:
                break
            await asyncio.sleep(0.05)
        assert not (await js.get_msg(m, 3)).headers
        h = (await js.get_msg(src, 3)).headers
        assert list(h) == ["Nats-Stream-Source"]
        assert (await js.get_msg(m, 4)).headers == {"X-Keep": "1"}
        assert sorted((await js.get_msg(src, 4)).headers) == ["Nats-Stream-Source", "X-Keep"]
        await nc.close()
    run(main())


def test_stream_delete_discards_its_batches(server):
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        assert await request(nc, s, b"1", hdrs("x", 1)) == b""
        await js.delete_stream(s)
        await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        err(await request(nc, s, b"2", hdrs("x", 2, "1")), 10176)
        await assert_unchanged(js, s, 0, 0)
        await nc.close()
    run(main())


def test_committed_batch_survives_a_crash_and_a_staged_one_does_not(tmp_path):
    """A committed batch is acknowledged once the raft process has synced it, whole; a
    batch still staged lives in the owner's memory only and is gone after a crash."""
    store = str(tmp_path / "store")
    srv = start(tmp_path, store, "--workers", str(WORKERS))
    s = stream_name(1)

    async def before():
        nc = await connect_on(srv, 0)
        js = nc.jetstream()
        await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        ack = await send_batch(nc, "keep", [(s, b"%d" % i, {}) for i in range(50)])
        assert (ack["seq"], ack["count"]) == (50, 50)
        assert await request(nc, s, b"1", hdrs("lost", 1)) == b""
        await nc.close()
    try:
        run(before())
    finally:
        kill_hard(srv)
    srv = start(tmp_path, store, "--workers", str(WORKERS), port=srv.port)

    async def after():
        nc = await connect(srv)
        js = nc.jetstream()
        await assert_unchanged(js, s, 50, 50)
        err(await request(nc, s, b"2", hdrs("lost", 2, "1")), 10176)
        await nc.close()
    try:
        run(after())
    finally:
        srv.stop()


def _http_json(srv, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}{path}", timeout=10) as r:
        return json.loads(r.read())


def test_configured_limits_and_timeout(start_natsx, tmp_path):
    """``jetstream { limits { batch {} } }``: open batches per stream and per server (counted
    over both workers), messages per batch, and the time a batch has to commit."""
    conf = tmp_path / "js.conf"
    conf.write_text('jetstream {\n  store_dir: "%s"\n  limits {\n    batch {\n'
                    '      max_inflight_per_stream: 1\n      max_inflight_total: 2\n'
                    '      max_msgs: 3\n      timeout: "2s"\n    }\n  }\n}\n'
                    % (tmp_path / "store"))
    srv = start_natsx("-c", str(conf), "--workers", str(WORKERS))

    async def main():
        nc = await connect(srv)
        js = nc.jetstream()
        a, b, c = stream_name(0), stream_name(1), stream_name(0)
        for s in (a, b, c):
            await js.add_stream(name=s, subjects=[s], allow_atomic=True)
        adv = await nc.subscribe("$JS.EVENT.ADVISORY.STREAM.BATCH_ABANDONED.>")
        await nc.flush()
        assert await request(nc, a, b"", hdrs("a1", 1)) == b""
        # One open batch per stream.
        err(await request(nc, a, b"", hdrs("a2", 1)), 10176)
        # Two on the server: worker 1's stream takes the second, worker 0's cannot open a third.
        assert await request(nc, b, b"", hdrs("b1", 1)) == b""
        err(await request(nc, c, b"", hdrs("c1", 1, "1")), 10176)
        # A batch has two seconds to commit from its first message.
        events = [json.loads((await adv.next_msg(timeout=6)).data) for _ in range(2)]
        assert sorted((e["stream"], e["batch"], e["reason"]) for e in events) == sorted(
            [(a, "a1", "timeout"), (b, "b1", "timeout")])
        err(await request(nc, a, b"", hdrs("a1", 2, "1")), 10176)
        ack = json.loads(await request(nc, c, b"", hdrs("c1", 1, "1")))
        assert (ack["seq"], ack["count"]) == (1, 1)
        # Three messages at most.
        ack = await send_batch(nc, "three", [(c, b"", {})] * 3)
        assert ack["count"] == 3
        e = err(await send_batch(nc, "four", [(c, b"", {})] * 4), 10199)
        assert e["description"] == "atomic publish batch is too large: 3"
        await assert_unchanged(js, c, 4, 4)
        limits = await asyncio.to_thread(_http_json, srv, "/jsz")
        assert {k: v for k, v in limits["limits"].items() if "batch" in k} == {
            "max_batch_inflight_per_stream": 1, "max_batch_inflight_total": 2,
            "max_batch_size": 3, "max_batch_timeout": 2_000_000_000}
        await nc.close()
    run(main())


# --------------------------------------------------------------------------------- schedules

def test_a_schedule_in_a_batch_is_checked_stored_and_fires(server):
    """A batch may carry a message schedule (natsx.jetstream.schedules): the commit vets it
    as a lone publish is vetted (an invalid target abandons the whole batch), stores it with
    its implied ``Nats-Rollup: sub``, and it fires like any other."""
    async def main():
        import datetime

        nc, js = await session(server)
        s = stream_name(1)
        await js.add_stream(name=s, subjects=[f"{s}.>"], allow_atomic=True,
                            allow_msg_schedules=True)
        at = (datetime.datetime.now(datetime.timezone.utc) +
              datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        bad = {"Nats-Schedule": f"@at {at}", "Nats-Schedule-Target": "elsewhere"}
        err(await send_batch(nc, "bad", [(f"{s}.a", b"1", {}), (f"{s}.sched", b"x", bad)]),
            10190)
        await assert_unchanged(js, s, 0, 0)
        good = {"Nats-Schedule": f"@at {at}", "Nats-Schedule-Target": f"{s}.target"}
        ack = await send_batch(nc, "good", [(f"{s}.a", b"1", {}),
                                            (f"{s}.sched", b"payload", good)])
        assert (ack["seq"], ack["count"]) == (2, 2), ack
        stored = await js.get_msg(s, 2)
        assert stored.headers["Nats-Rollup"] == "sub"
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            try:
                fired = await js.get_last_msg(s, f"{s}.target")
                break
            except NotFoundError:
                assert asyncio.get_running_loop().time() < deadline, "the schedule never fired"
                await asyncio.sleep(0.1)
        assert fired.data == b"payload"
        assert fired.headers["Nats-Scheduler"] == f"{s}.sched"
        # The headers it copied from its schedule (the batch's) stay, as in Go, and did
        # not make it a batch of its own.
        assert fired.headers["Nats-Batch-Id"] == "good"
        await nc.close()
    run(main())


# ---------------------------------------------------------------------------------- counters

def test_counter_increments_in_a_batch_add_up_at_the_commit(server):
    """Go 2.12 applies a batch's ``Nats-Incr`` at the commit, on a running total of the
    batch's earlier increments of the subject; one without an increment, on a counter
    stream, abandons the whole batch (10169)."""
    async def main():
        nc, js = await session(server)
        s = stream_name(1)
        created = json.loads((await nc.request(f"$JS.API.STREAM.CREATE.{s}", json.dumps(
            {"name": s, "subjects": [f"{s}.*"], "allow_atomic": True,
             "allow_msg_counter": True}).encode(), timeout=3)).data)
        assert "error" not in created, created
        await nc.request(f"{s}.a", b"", headers={"Nats-Incr": "10"}, timeout=3)
        err(await send_batch(nc, "bad", [(f"{s}.a", b"", {"Nats-Incr": "1"}),
                                         (f"{s}.a", b"", {})]), 10169)
        err(await send_batch(nc, "bad2", [(f"{s}.a", b"x", {"Nats-Incr": "1"})]), 10170)
        await assert_unchanged(js, s, 1, 1)
        ack = await send_batch(nc, "inc", [(f"{s}.a", b"", {"Nats-Incr": "5"}),
                                           (f"{s}.b", b"", {"Nats-Incr": "-2"}),
                                           (f"{s}.a", b"", {"Nats-Incr": "+100"})])
        assert ack == {"stream": s, "seq": 4, "batch": "inc", "count": 3}
        values = [json.loads((await js.get_msg(s, seq)).data) for seq in (2, 3, 4)]
        assert values == [{"val": "15"}, {"val": "-2"}, {"val": "115"}]
        # And a lone increment after it goes on from the batch's total.
        r = json.loads((await nc.request(f"{s}.a", b"", headers={"Nats-Incr": "1"},
                                         timeout=3)).data)
        assert r == {"stream": s, "seq": 5, "val": "116"}
        await nc.close()
    run(main())
