"""JetStream sharded by stream: one account's streams over every worker, answered as one.

Each stream runs in the worker its account and name hash to, and the account's home
answers INFO, STREAM.NAMES and LIST and vets creates (natsx.jetstream.shards). These tests
run the same requests against ``--workers 1`` and ``--workers 2``/``4`` and compare the JSON
answers, and check the account limits and subject overlap across workers, with clients
spread over the workers by SO_REUSEPORT.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import time
import json

import pytest

from natsx.jetstream.shards import stream_owner

from test_jetstream import api, connect, run, start

pytestmark = pytest.mark.server

NAMES = [f"S{i:02d}" for i in range(12)]
# Fields that differ between two runs whatever the placement.
_VOLATILE = {"created", "ts", "first_ts", "last_ts", "server_time", "active", "last_active",
             "cluster"}


def _stable(obj):
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in _VOLATILE}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


async def _scenario(srv) -> list:
    """Creates streams from several connections, publishes, and returns the answers of the
    account-wide requests."""
    conns = [await connect(srv) for _ in range(6)]
    try:
        for i, name in enumerate(NAMES):
            nc = conns[i % len(conns)]
            cfg = {"name": name, "subjects": [f"s.{i}.>"], "storage":
                   "memory" if i % 3 == 0 else "file"}
            if i % 4 == 1:
                cfg["max_bytes"] = 10_000 + i
            r = await api(nc, f"$JS.API.STREAM.CREATE.{name}", cfg)
            assert "error" not in r, r
            for k in range(i % 5):
                ack = json.loads((await nc.request(f"s.{i}.x", b"m%d" % k, timeout=3)).data)
                assert ack["stream"] == name
        nc = conns[-1]
        r = await api(nc, "$JS.API.CONSUMER.DURABLE.CREATE.S03.D",
                      {"stream_name": "S03", "config": {"durable_name": "D",
                                                        "ack_policy": "explicit"}})
        assert "error" not in r, r
        answers = []
        for subject, body in (
                ("$JS.API.STREAM.NAMES", None), ("$JS.API.STREAM.NAMES", {"offset": 5}),
                ("$JS.API.STREAM.NAMES", {"subject": "s.1.>"}),
                ("$JS.API.STREAM.NAMES", {"subject": "s.*.x"}),
                ("$JS.API.STREAM.NAMES", {"offset": 40}),
                ("$JS.API.STREAM.LIST", None), ("$JS.API.STREAM.LIST", {"offset": 7}),
                ("$JS.API.STREAM.LIST", {"subject": "s.4.>"}),
                ("$JS.API.STREAM.CREATE.X", {"name": "X", "subjects": ["s.2.a"]}),
                ("$JS.API.STREAM.UPDATE.S05", {"name": "S05", "subjects": ["s.6.a"]}),
                ("$JS.API.STREAM.UPDATE.NOPE", {"name": "NOPE", "subjects": ["n"]}),
                ("$JS.API.INFO", None)):
            answers.append((subject, _stable(await api(nc, subject, body))))
        return answers
    finally:
        for nc in conns:
            await nc.close()


@pytest.mark.parametrize("workers", [2, 4])
def test_account_wide_answers_match_one_worker(tmp_path, workers):
    """STREAM.NAMES/LIST (paging, offset, subject filter), INFO, and the overlap refusals
    (10065) of creates and updates answer the same JSON as a single worker, while the
    streams run in every worker."""
    assert {stream_owner("$G", n, workers) for n in NAMES} == set(range(workers))
    results = []
    for count in (1, workers):
        srv = start(tmp_path, str(tmp_path / f"store{count}"), "--workers", str(count))
        try:
            results.append(run(_scenario(srv), timeout=90))
        finally:
            srv.stop()
    single, sharded = results
    for (subject, a), (_, b) in zip(single, sharded):
        assert a == b, (subject, a, b)
    overlap = dict(single)["$JS.API.STREAM.CREATE.X"]
    assert overlap["error"]["err_code"] == 10065
    info = dict(sharded)["$JS.API.INFO"]
    assert info["streams"] == len(NAMES) and info["consumers"] == 1


@pytest.mark.parametrize("workers", [2, 4])
def test_account_limits_across_workers(tmp_path, workers):
    """max_streams counts the account's streams on every worker, max_storage the bytes
    they store, and overlapping creates sent at once from several workers' clients are
    serialised by the home: exactly one passes."""
    conf = tmp_path / "lim.conf"
    conf.write_text(
        "accounts {\n  L { jetstream: {max_streams: 5, max_file: 4000, max_mem: 4000},"
        " users: [{user: l, password: pw}] }\n}\n")
    srv = start(tmp_path, str(tmp_path / "store"), "-c", str(conf), "--workers", str(workers))
    try:
        async def main():
            conns = [await connect(srv, user="l", password="pw") for _ in range(5)]
            # Five creates of overlapping subjects at once: one wins, four get 10065.
            rs = await asyncio.gather(*(
                api(nc, f"$JS.API.STREAM.CREATE.R{i}", {"name": f"R{i}", "subjects": ["race"]})
                for i, nc in enumerate(conns)))
            assert sorted(r.get("error", {}).get("err_code", 0) for r in rs) == \
                [0, 10065, 10065, 10065, 10065], rs
            made = [r["config"]["name"] for r in rs if "error" not in r]
            for i in range(4):
                r = await api(conns[i], f"$JS.API.STREAM.CREATE.T{i}",
                              {"name": f"T{i}", "subjects": [f"t.{i}"]})
                assert "error" not in r, r
            # The sixth stream, whichever worker it would run in.
            r = await api(conns[4], "$JS.API.STREAM.CREATE.T9",
                          {"name": "T9", "subjects": ["t.9"]})
            assert r["error"]["err_code"] == 10027, r
            info = await api(conns[0], "$JS.API.INFO")
            assert info["streams"] == 5, info
            names = (await api(conns[1], "$JS.API.STREAM.NAMES"))["streams"]
            assert sorted(names) == sorted(made + [f"T{i}" for i in range(4)])
            # Bytes stored in several workers' streams count against max_file together.
            stored = 0
            for _ in range(200):
                full = False
                for i in range(4):
                    ack = json.loads((await conns[i].request(
                        f"t.{i}", b"x" * 200, timeout=3)).data)
                    if "error" in ack:
                        assert ack["error"]["err_code"] == 10002, ack
                        full = True
                        break
                    stored += 1
                if full:
                    break
            info = await api(conns[0], "$JS.API.INFO")
            assert info["storage"] <= 4000, info
            assert stored < 4000 // 200, stored
            for nc in conns:
                await nc.close()
        run(main(), timeout=90)
    finally:
        srv.stop()


def test_restore_is_vetted_by_the_home(tmp_path):
    """A STREAM.RESTORE goes through the account's home like a create: racing creates of
    the same subjects from clients of every worker, exactly one of them all passes, and an
    upload in progress holds its subjects."""
    srv = start(tmp_path, str(tmp_path / "store"), "--workers", "2")
    try:
        async def main():
            conns = [await connect(srv) for _ in range(6)]
            for round_ in range(3):
                subject = f"race.{round_}"
                rs = await asyncio.gather(
                    api(conns[0], f"$JS.API.STREAM.RESTORE.Q{round_}",
                        {"config": {"name": f"Q{round_}", "subjects": [subject]}}),
                    *(api(nc, f"$JS.API.STREAM.CREATE.C{round_}{i}",
                          {"name": f"C{round_}{i}", "subjects": [subject]})
                      for i, nc in enumerate(conns[1:])))
                codes = sorted(r.get("error", {}).get("err_code", 0) for r in rs)
                assert codes == [0] + [10065] * 5, rs
                if "error" not in rs[0]:
                    # The upload has not started: its subjects stay taken meanwhile.
                    r = await api(conns[1], f"$JS.API.STREAM.CREATE.L{round_}",
                                  {"name": f"L{round_}", "subjects": [subject]})
                    assert r["error"]["err_code"] == 10065, r
            for nc in conns:
                await nc.close()
        run(main(), timeout=60)
    finally:
        srv.stop()


@pytest.mark.parametrize("encrypted,storage", [(False, "file"), (True, "file"),
                                               (False, "memory")],
                         ids=["plain", "encrypted", "memory"])
def test_sources_and_mirrors_across_workers(tmp_path, encrypted, storage):
    """A mirror and sources whose origin runs in another worker read it (keeping up with
    new messages), a source's ``opt_start_time`` included; with encryption at rest the
    reader opens the origin's records with the origin's stream key. A memory origin lives
    in its worker's process only: it is fed through a consumer on it, as Go feeds all."""
    workers = 2
    pick = [f"N{i}" for i in range(40)]
    origin = next(n for n in pick if stream_owner("$G", n, workers) == 0)
    mirror, source, source_all = [n for n in pick
                                  if stream_owner("$G", n, workers) == 1][:3]
    extra = []
    if encrypted:
        conf = tmp_path / "key.conf"
        conf.write_text('jetstream { key: "mirror-across-workers-key" }\n')
        extra = ["-c", str(conf)]
    srv = start(tmp_path, str(tmp_path / "store"), "--workers", str(workers), *extra)
    try:
        async def main():
            nc = await connect(srv)
            await api(nc, f"$JS.API.STREAM.CREATE.{origin}",
                      {"name": origin, "subjects": ["o.>"], "storage": storage})
            for i in range(2):
                await nc.request(f"o.{i}", b"before", timeout=3)
            await asyncio.sleep(0.1)
            midpoint = time.time_ns()
            await asyncio.sleep(0.1)
            for i in range(2, 4):
                await nc.request(f"o.{i}", b"after", timeout=3)
            stamp = datetime.datetime.fromtimestamp(midpoint / 1e9, datetime.timezone.utc)
            for name, spec in ((mirror, {"mirror": {"name": origin}}),
                               (source, {"sources": [{"name": origin,
                                                      "opt_start_time": stamp.isoformat()}]}),
                               (source_all, {"sources": [{"name": origin,
                                                          "filter_subject": "o.3"}]})):
                r = await api(nc, f"$JS.API.STREAM.CREATE.{name}", {"name": name, **spec})
                assert "error" not in r, r

            async def wait_for(name, count):
                for _ in range(100):
                    info = await api(nc, f"$JS.API.STREAM.INFO.{name}")
                    if info["state"]["messages"] == count:
                        return info
                    await asyncio.sleep(0.05)
                raise AssertionError((name, info))
            await wait_for(mirror, 4)
            await wait_for(source, 2)
            await wait_for(source_all, 1)
            await nc.request("o.3", b"later", timeout=3)
            info = await wait_for(mirror, 5)
            assert info["mirror"]["name"] == origin and info["mirror"]["lag"] == 0
            await wait_for(source, 3)
            await wait_for(source_all, 2)
            msg = await api(nc, f"$JS.API.STREAM.MSG.GET.{source}", {"seq": 1})
            assert base64.b64decode(msg["message"]["data"]) == b"after"
            if storage == "memory":
                # Fed through direct consumers, which Go neither lists nor counts.
                names = await api(nc, f"$JS.API.CONSUMER.NAMES.{origin}")
                assert names["total"] == 0, names
            # The mirror keeps the origin's sequences and times.
            for seq in (1, 5):
                got = await api(nc, f"$JS.API.STREAM.MSG.GET.{mirror}", {"seq": seq})
                want = await api(nc, f"$JS.API.STREAM.MSG.GET.{origin}", {"seq": seq})
                assert got["message"] == want["message"]
            await nc.close()
        run(main())
    finally:
        srv.stop()


@pytest.mark.parametrize("storage", ["file", "memory"])
def test_a_full_source_target_waits_and_skips_nothing(tmp_path, storage):
    """A target that refuses a sourced message (full, discard new) is not skipped past it:
    the source holds and tries that message again (Go's retrySourceConsumerAtSeq), so once
    room is made every origin message arrives. File origins are read directly, memory ones
    fed through a consumer: both hold."""
    workers = 2
    pick = [f"F{i}" for i in range(40)]
    origin = next(n for n in pick if stream_owner("$G", n, workers) == 0)
    target = next(n for n in pick if stream_owner("$G", n, workers) == 1)
    srv = start(tmp_path, str(tmp_path / "store"), "--workers", str(workers))
    try:
        async def main():
            nc = await connect(srv)
            await api(nc, f"$JS.API.STREAM.CREATE.{origin}",
                      {"name": origin, "subjects": ["f.>"], "storage": storage})
            for i in range(4):
                await nc.request(f"f.{i}", b"%d" % i, timeout=3)
            r = await api(nc, f"$JS.API.STREAM.CREATE.{target}", {
                "name": target, "max_msgs": 2, "discard": "new",
                "sources": [{"name": origin}]})
            assert "error" not in r, r

            async def sourced():
                got = []
                info = await api(nc, f"$JS.API.STREAM.INFO.{target}")
                st = info["state"]
                for seq in range(st["first_seq"], st["last_seq"] + 1):
                    m = await api(nc, f"$JS.API.STREAM.MSG.GET.{target}", {"seq": seq})
                    if "message" in m:
                        got.append(base64.b64decode(m["message"]["data"]))
                return got

            deadline = time.monotonic() + 10
            while await sourced() != [b"0", b"1"]:
                assert time.monotonic() < deadline, await sourced()
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            assert await sourced() == [b"0", b"1"]
            r = await api(nc, f"$JS.API.STREAM.PURGE.{target}", {})
            assert r["success"] is True
            deadline = time.monotonic() + 10
            while await sourced() != [b"2", b"3"]:
                assert time.monotonic() < deadline, await sourced()
                await asyncio.sleep(0.1)
            await nc.close()
        run(main(), timeout=60)
    finally:
        srv.stop()
