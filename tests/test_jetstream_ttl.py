"""Per-message TTLs and subject delete markers (Go 2.11: ``allow_msg_ttl``, ``Nats-TTL``,
``subject_delete_marker_ttl``), black-box against ``natsx -js --workers 2``.

The expectations are Go's single-server processJetStreamMsg and parseMessageTTL (2.12): a
TTL is a Go duration of at least a second, a plain number of seconds or ``never`` in any
case; a TTL on a stream without ``allow_msg_ttl`` is refused as disabled (10166), one that
does not parse as invalid (10165, also on such a stream, after the other checks); a TTL
shorter than the delete markers' is raised to theirs unless the stream keeps one message
a subject; a subject whose last message ages out keeps a marker (reason MaxAge, the
markers' TTL, a rollup of the subject) until the marker's own TTL has run.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from test_jetstream import connect, name, run, start

pytestmark = pytest.mark.server

NS = 1_000_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jsttl")
    srv = start(tmp, str(tmp / "store"), "--workers", "2")
    yield srv
    srv.stop()


async def create(nc, **cfg) -> str:
    s = name()
    body = {"name": s, "subjects": [f"{s}.>"], **cfg}
    r = json.loads((await nc.request(f"$JS.API.STREAM.CREATE.{s}", json.dumps(body).encode(),
                                     timeout=3)).data)
    assert "error" not in r, r
    return s


async def publish(nc, subject: str, ttl: str | None, data: bytes = b"x") -> dict:
    headers = {"Nats-TTL": ttl} if ttl is not None else None
    return json.loads((await nc.request(subject, data, headers=headers, timeout=3)).data)


async def stored(nc, stream: str) -> dict:
    """seq -> (subject, headers, payload) of every message the stream holds."""
    out = {}
    seq = 1
    while True:
        r = json.loads((await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}",
                                         json.dumps({"seq": seq, "next_by_subj": ">"}).encode(),
                                         timeout=3)).data)
        if "error" in r:
            return out
        m = r["message"]
        hdrs = {}
        if m.get("hdrs"):
            for line in base64.b64decode(m["hdrs"]).decode().split("\r\n")[1:]:
                if line:
                    k, v = line.split(":", 1)
                    hdrs[k] = v.strip()
        out[m["seq"]] = (m["subject"], hdrs, m.get("data", ""))
        seq = m["seq"] + 1


async def wait_for(predicate, timeout: float = 8.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def error_code(ack: dict) -> int | None:
    return ack.get("error", {}).get("err_code")


def test_ttl_values_and_errors(server):
    async def main():
        nc = await connect(server)
        plain = await create(nc)
        ttl = await create(nc, allow_msg_ttl=True)
        for value, code in (("1h", 10166), ("NEVER", 10166), ("30", 10166), ("bogus", 10165),
                            ("0", 10165), ("00", None), ("", None)):
            assert error_code(await publish(nc, f"{plain}.a", value)) == code, value
        for value, code in (("1h", None), ("never", None), ("Never", None), ("30", None),
                            ("00", None), ("500ms", 10165), ("0", 10165), ("-1", 10165),
                            ("1.5x", 10165)):
            assert error_code(await publish(nc, f"{ttl}.a", value)) == code, value
        await nc.close()
    run(main())


def test_a_message_expires_after_its_ttl_and_never_outlives_max_age(server):
    async def main():
        nc = await connect(server)
        s = await create(nc, allow_msg_ttl=True)
        await publish(nc, f"{s}.a", "1s")
        await publish(nc, f"{s}.b", None)
        await publish(nc, f"{s}.c", "never")

        async def first_gone():
            msgs = await stored(nc, s)
            return msgs if 1 not in msgs else None
        assert sorted(await wait_for(first_gone)) == [2, 3]
        # max_age takes what has no TTL, but not a "never".
        aged = await create(nc, allow_msg_ttl=True, max_age=NS)
        await publish(nc, f"{aged}.a", None)
        await publish(nc, f"{aged}.b", "never")

        async def aged_out():
            msgs = await stored(nc, aged)
            return msgs if 1 not in msgs else None
        assert sorted(await wait_for(aged_out)) == [2]
        await nc.close()
    run(main())


def test_subject_delete_marker_replaces_the_last_message_then_goes(server):
    async def main():
        nc = await connect(server)
        s = await create(nc, max_age=NS, subject_delete_marker_ttl=2 * NS)
        info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{s}", b"", timeout=3)).data)
        # Markers need TTLs and rollups, which the config turns on.
        assert info["config"]["allow_msg_ttl"] is True
        assert info["config"]["allow_rollup_hdrs"] is True
        await publish(nc, f"{s}.a", None, b"first")
        await publish(nc, f"{s}.a", None, b"second")

        async def marker():
            msgs = await stored(nc, s)
            return msgs if msgs and all(h.get("Nats-Marker-Reason") for _, h, _ in
                                        msgs.values()) else None
        msgs = await wait_for(marker)
        [(subject, headers, data)] = msgs.values()
        assert subject == f"{s}.a" and data == ""
        assert headers == {"Nats-Marker-Reason": "MaxAge", "Nats-TTL": "2s",
                           "Nats-Rollup": "sub"}

        async def empty():
            return (await stored(nc, s)) == {}
        assert await wait_for(empty)
        await nc.close()
    run(main())


@pytest.mark.parametrize("per_subject, want", [(-1, "5"), (1, "1s")])
def test_a_ttl_shorter_than_the_markers_is_raised(server, per_subject, want):
    async def main():
        nc = await connect(server)
        s = await create(nc, subject_delete_marker_ttl=5 * NS,
                         max_msgs_per_subject=per_subject)
        assert error_code(await publish(nc, f"{s}.a", "1s")) is None
        [(_, headers, _)] = (await stored(nc, s)).values()
        assert headers["Nats-TTL"] == want
        await nc.close()
    run(main())
