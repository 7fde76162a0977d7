"""JetStream with several workers: clients on a worker that does not run the stream.

Each stream lives in the worker its account and name hash to (natsx.jetstream.shards); a
client of any other worker reaches it through the mesh exactly as a client of the owner
does: its publishes are captured by the owner's subscriptions, its API requests, pull
requests and acks cross the ring, and deliveries and replies come back the same way. Each
test picks connections by the worker that accepted them (a worker hands out client ids
``index + 1 + k * workers``). The last tests spread one account's streams over 2 and 4
workers, proving where each stream environment is open through ``/proc/<pid>/fd``.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.request

import nats
import pytest
from nats.js import api as jsapi
from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError

from natsx.jetstream.shards import owner, stream_owner

from test_jetstream import connect, run, start
from test_jetstream_raft import raft_pids, wait_new_raft, wait_raft

pytestmark = pytest.mark.server

WORKERS = 2


async def connect_on(srv, worker: int, **kw) -> nats.NATS:
    """A connection accepted by ``worker`` (SO_REUSEPORT spreads them; retry until one is)."""
    spare = []
    try:
        for _ in range(200):
            nc = await connect(srv, **kw)
            if (nc._server_info["client_id"] - 1) % WORKERS == worker:
                return nc
            spare.append(nc)
        raise AssertionError(f"no connection landed on worker {worker}")
    finally:
        for nc in spare:
            await nc.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jsw")
    srv = start(tmp, str(tmp / "store"), "--workers", str(WORKERS))
    yield srv
    srv.stop()


def test_publish_and_api_from_another_worker(server):
    async def main():
        nc = await connect_on(server, 1)
        assert f"Workers:  {WORKERS}" in server.log()
        js = nc.jetstream()
        await js.add_stream(name="W1", subjects=["w1.*"])
        acks = [await js.publish("w1.a", b"%d" % i, headers={"Nats-Msg-Id": f"i{i}"})
                for i in range(10)]
        assert [a.seq for a in acks] == list(range(1, 11))
        dup = await js.publish("w1.a", b"again", headers={"Nats-Msg-Id": "i3"})
        assert dup.duplicate and dup.seq == 4
        si = await js.stream_info("W1")
        assert si.state.messages == 10
        m = await js.get_msg("W1", 5)
        assert m.data == b"4"
        # A client of worker 0 sees the same stream.
        nc0 = await connect_on(server, 0)
        assert (await nc0.jetstream().stream_info("W1")).state.messages == 10
        await nc0.close()
        await nc.close()
    run(main())


def test_pull_and_ack_from_another_worker(server):
    async def main():
        nc = await connect_on(server, 1)
        js = nc.jetstream()
        await js.add_stream(name="W2", subjects=["w2"])
        for i in range(6):
            await js.publish("w2", b"%d" % i)
        psub = await js.pull_subscribe("w2", "puller", stream="W2")
        msgs = await psub.fetch(4, timeout=3)
        assert [m.data for m in msgs] == [b"0", b"1", b"2", b"3"]
        # Deliveries cross the mesh showing the message's subject, not the pull inbox.
        assert {m.subject for m in msgs} == {"w2"}
        for m in msgs[:3]:
            await m.ack_sync()
        await msgs[3].nak()
        again = await psub.fetch(3, timeout=3)
        assert [m.data for m in again] == [b"3", b"4", b"5"]
        assert again[0].metadata.num_delivered == 2
        for m in again:
            await m.ack_sync()
        ci = await js.consumer_info("W2", "puller")
        assert (ci.num_ack_pending, ci.ack_floor.stream_seq) == (0, 6)
        await nc.close()
    run(main())


def test_push_consumer_publisher_and_subscriber_on_other_workers(server):
    async def main():
        sub_nc = await connect_on(server, 1)
        pub_nc = await connect_on(server, 0)
        js = sub_nc.jetstream()
        await js.add_stream(name="W3", subjects=["w3"])
        got = []
        done = asyncio.get_running_loop().create_future()

        async def cb(msg):
            assert msg.subject == "w3"
            got.append(msg.data)
            await msg.ack()
            if len(got) == 5 and not done.done():
                done.set_result(None)
        await js.subscribe("w3", durable="pusher", cb=cb, stream="W3")
        pjs = pub_nc.jetstream()
        for i in range(5):
            await pjs.publish("w3", b"%d" % i)
        await asyncio.wait_for(done, 10)
        assert got == [b"%d" % i for i in range(5)]
        # An ordered consumer (flow control, heartbeats) across the mesh too.
        osub = await js.subscribe("w3", ordered_consumer=True)
        seen = [(await osub.next_msg(timeout=5)).data for _ in range(5)]
        assert seen == got
        await pub_nc.close()
        await sub_nc.close()
    run(main())


def test_kv_from_another_worker(server):
    async def main():
        nc = await connect_on(server, 1)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="WKV", history=3)
        await kv.put("a", b"1")
        rev = await kv.put("a", b"2")
        assert (await kv.get("a")).value == b"2"
        await kv.update("a", b"3", last=rev)
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await kv.update("a", b"4", last=rev)
        watcher = await kv.watchall()
        first = await watcher.updates(timeout=5)
        assert (first.key, first.value) == ("a", b"3")
        await kv.delete("a")
        hist = await kv.history("a")
        assert [e.value for e in hist][-1] == b""
        await watcher.stop()
        await nc.close()
    run(main())


def test_raft_sigkill_with_clients_on_both_workers(tmp_path):
    srv = start(tmp_path, str(tmp_path / "store"), "--workers", str(WORKERS))
    try:
        pid = wait_raft(srv)

        async def main():
            ncs = [await connect_on(srv, w, connect_timeout=10) for w in range(WORKERS)]
            jss = [nc.jetstream() for nc in ncs]
            await jss[0].add_stream(name="WR", subjects=["wr"])
            acked = {}
            for i in range(20):
                if i == 10:
                    os.kill(pid, signal.SIGKILL)
                ack = await jss[i % WORKERS].publish("wr", b"%d" % i,
                                                     headers={"Nats-Msg-Id": f"m{i}"}, timeout=10)
                acked[f"m{i}"] = ack.seq
            assert sorted(acked.values()) == list(range(1, 21))
            for i, seq in enumerate(acked.values()):
                m = await jss[1].get_msg("WR", seq)
                assert m.data == b"%d" % i
            for nc in ncs:
                await nc.close()
        run(main(), timeout=60)
        assert len(raft_pids(srv)) == 2
        wait_new_raft(srv, pid, 1)
    finally:
        srv.stop()


def test_relayed_api_requests_keep_the_client(server):
    """The audit advisory of a request relayed from another worker names that client, and a
    client cannot pose as a relaying worker."""
    async def main():
        nc = await connect_on(server, 1)
        audits = []

        async def cb(m):
            audits.append(m)
        sub = await nc.subscribe("$JS.EVENT.ADVISORY.API", cb=cb)
        await nc.flush()
        await nc.jetstream().account_info()
        # A client publishing to the relay subject itself is ignored.
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request("$NATSX.JSAPI.%d.$JS.API.INFO" % owner("$G", WORKERS), b"",
                             timeout=0.5)
        await asyncio.sleep(0.3)
        await sub.unsubscribe()
        cid = nc._server_info["client_id"]
        await nc.close()
        return audits, cid
    audits, cid = run(main())
    bodies = [json.loads(m.data) for m in audits]
    assert [b["subject"] for b in bodies] == ["$JS.API.INFO"]
    client = bodies[0]["client"]
    assert (client["id"], client["acc"], client["kind"]) == (cid, "$G", "Client")
    assert "Natsx-Relay-Client" not in bodies[0].get("request", "")


def test_worker_0_restart_seen_from_another_worker(tmp_path):
    """Killing the worker that runs the streams: a client of another worker keeps its
    connection and is served again once the worker is back."""
    srv = start(tmp_path, str(tmp_path / "store"), "--workers", str(WORKERS))
    try:
        async def main():
            nc = await connect_on(srv, 1, connect_timeout=10)
            js = nc.jetstream()
            # A stream worker 0 runs (natsx.jetstream.shards).
            r0 = next(n for n in (f"R{i}" for i in range(40))
                      if stream_owner("$G", n, WORKERS) == 0)
            await js.add_stream(name=r0, subjects=["r0"])
            await js.publish("r0", b"before")
            pids = [int(p) for p in re.findall(
                r"\[(\d+)\] \S+ \S+ \[INF\] Starting JetStream", srv.log())]
            os.kill(pids[-1], signal.SIGKILL)
            for _ in range(100):
                await asyncio.sleep(0.1)
                try:
                    ack = await js.publish("r0", b"after", timeout=1)
                    break
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                        NoStreamResponseError):
                    # (nats.py reports a publish nobody received as "no response from stream")
                    continue
            else:
                raise AssertionError("worker 0 did not come back:\n" + srv.log())
            assert ack.seq == 2
            assert (await js.stream_info(r0)).state.messages == 2
            await nc.close()
        run(main())
        assert srv.log().count("Starting JetStream") == 2
    finally:
        srv.stop()


# ------------------------------------------------------------------------ streams as shards

CANDIDATES = ["A", "B", "C", "D", "E", "F", "G", "H", "ACC1", "ACC2", "ONE", "TWO", "THREE"]


def shard_accounts(workers: int) -> dict[int, str]:
    """One account name owned by each worker."""
    out: dict[int, str] = {}
    for acc in CANDIDATES:
        out.setdefault(owner(acc, workers), acc)
    assert len(out) == workers
    return out


def start_sharded(tmp_path, workers: int):
    accounts = shard_accounts(workers)
    conf = tmp_path / "shards.conf"
    conf.write_text("accounts {\n%s}\n" % "".join(
        "  %s { jetstream: enabled, users: [{user: %s, password: pw}] }\n" % (a, a.lower())
        for a in accounts.values()))
    srv = start(tmp_path, str(tmp_path / "store"), "-c", str(conf), "--workers", str(workers))
    return srv, accounts


async def connect_on_n(srv, workers: int, worker: int, user: str, **kw) -> nats.NATS:
    spare = []
    try:
        for _ in range(300):
            nc = await connect(srv, user=user, password="pw", **kw)
            if (nc._server_info["client_id"] - 1) % workers == worker:
                return nc
            spare.append(nc)
        raise AssertionError(f"no connection landed on worker {worker}")
    finally:
        for nc in spare:
            await nc.close()


def worker_pids(srv) -> list[int]:
    raft = set(raft_pids(srv))
    with open(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children") as f:
        return [int(p) for p in f.read().split() if int(p) not in raft]


def holders(srv, account: str, stream: str = "") -> set[int]:
    """The workers that have the LMDB environment of a stream of ``account`` (``stream``,
    or any) open."""
    mark = f"/jetstream/{account}/streams/{stream + '/' if stream else ''}"
    found = set()
    for pid in worker_pids(srv):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if mark in target and target.endswith("data.mdb"):
                found.add(pid)
    return found


@pytest.mark.parametrize("workers", [2, 4])
def test_streams_are_shards_served_from_every_worker(tmp_path, workers):
    """Each stream runs in the worker its name hashes to (natsx.jetstream.shards), so the
    streams of one account spread over every worker, and every API family works from a
    client of any worker: overlap refused across workers, mirrors of a stream another
    worker runs, account info counting every worker's streams, KV and object store."""
    srv, accounts = start_sharded(tmp_path, workers)
    try:
        async def main():
            for w_owner, acc in accounts.items():
                user = acc.lower()
                for w in range(workers):
                    nc = await connect_on_n(srv, workers, w, user)
                    js = nc.jetstream()
                    s = f"S{w}"
                    await js.add_stream(name=s, subjects=[f"s{w}.>"])
                    with pytest.raises(BadRequestError):
                        # Overlap with the stream a client of worker 0 made.
                        await js.add_stream(name=f"X{w}", subjects=["s0.a"])
                    for i in range(5):
                        await js.publish(f"s{w}.a", b"%d" % i)
                    assert (await js.stream_info(s)).state.messages == 5
                    assert (await js.get_msg(s, 3)).data == b"2"
                    psub = await js.pull_subscribe(f"s{w}.a", "dur", stream=s)
                    msgs = await psub.fetch(5, timeout=5)
                    assert [m.data for m in msgs] == [b"%d" % i for i in range(5)]
                    for m in msgs:
                        await m.ack_sync()
                    ci = await js.consumer_info(s, "dur")
                    assert ci.ack_floor.stream_seq == 5
                    # A mirror made from this worker, whatever worker runs the account.
                    await js.add_stream(name=f"M{w}", mirror=jsapi.StreamSource(name=s))
                    for _ in range(100):
                        if (await js.stream_info(f"M{w}")).state.messages == 5:
                            break
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError("mirror did not catch up")
                    names = await js.streams_info()
                    assert {f"S{i}" for i in range(w + 1)} <= {si.config.name for si in names}
                    info = await js.account_info()
                    assert info.streams == 2 * (w + 1)
                    await nc.close()
                # KV and object store from the last worker.
                nc = await connect_on_n(srv, workers, workers - 1, user)
                js = nc.jetstream()
                kv = await js.create_key_value(bucket="KV")
                await kv.put("k", b"v")
                assert (await kv.get("k")).value == b"v"
                obs = await js.create_object_store(bucket="OBJ")
                await obs.put("blob", b"x" * 100_000)
                assert (await obs.get("blob")).data == b"x" * 100_000
                await nc.close()
        run(main(), timeout=120)
        # Each stream nothing mirrors is open in exactly one worker, and every worker runs
        # streams of every account (the mirrors' origins are also read by their mirror's).
        for acc in accounts.values():
            for w in range(workers):
                assert len(holders(srv, acc, f"M{w}")) == 1
            assert len(holders(srv, acc, "KV_KV")) == 1
            assert len(holders(srv, acc)) == workers, (acc, holders(srv, acc))
    finally:
        srv.stop()


def test_owner_sigkill_answers_503_then_recovers(tmp_path):
    """Killing the worker that runs a stream: the stream's requests fail at once with
    "no responders" (not a timeout) from a client of another worker, a stream of the same
    account another worker runs goes on, and the stream comes back with the restarted
    worker."""
    workers = 2
    srv, accounts = start_sharded(tmp_path, workers)
    try:
        account = accounts[0]
        # V runs in worker 1, O in worker 0.
        victim = next(n for n in CANDIDATES if stream_owner(account, n, workers) == 1)
        other = next(n for n in CANDIDATES if stream_owner(account, n, workers) == 0)

        async def main():
            nc = await connect_on_n(srv, workers, 0, account.lower(), connect_timeout=10)
            js = nc.jetstream(timeout=2)
            js_other = js
            await js.add_stream(name=victim, subjects=["v"])
            await js.add_stream(name=other, subjects=["o"])
            await js.publish("v", b"before")
            (pid,) = holders(srv, account, victim)
            assert holders(srv, account, other) != {pid}
            os.kill(pid, signal.SIGKILL)
            # A request already written to the dead worker's ring is lost with it (as one
            # in flight to a crashed Go server): the first may time out. Once the supervisor
            # has seen the death the other workers drop its interest and the relay answers
            # 503 until the worker is back (which may be quicker than the next request).
            outcomes = []
            for _ in range(200):
                try:
                    await js.stream_info(victim)
                    outcomes.append("ok")
                    break
                except (nats.errors.NoRespondersError, ServiceUnavailableError):
                    # (nats.py's JetStream manager reports the 503 as "service unavailable")
                    outcomes.append("503")
                    await js_other.publish("o", b"meanwhile")
                    await asyncio.sleep(0.01)
                except nats.errors.TimeoutError:
                    outcomes.append("timeout")
            else:
                raise AssertionError("the owner did not come back:\n" + srv.log())
            assert "timeout" not in outcomes[1:], outcomes
            ack = await js.publish("v", b"after")
            assert ack.seq == 2
            assert (await js.stream_info(victim)).state.messages == 2
            assert (await js_other.publish("o", b"x")).stream == other
            await nc.close()
        run(main())
    finally:
        srv.stop()


# ------------------------------------------------------------------ server-wide limits, liveness

def _limits_conf(tmp_path, accounts: dict[int, str], extra: str = "",
                 account_js: str = "enabled") -> str:
    conf = tmp_path / "limits.conf"
    conf.write_text(
        'jetstream { store_dir: "%s", max_memory_store: 100000, max_file_store: 1000000 %s }\n'
        % (tmp_path / "store", extra)
        + "accounts {\n%s}\n" % "".join(
            "  %s { jetstream: %s, users: [{user: %s, password: pw}] }\n"
            % (a, account_js, a.lower()) for a in accounts.values()))
    return str(conf)


def http_json(srv, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}{path}", timeout=10) as r:
        return json.loads(r.read())


async def _api(nc, subject: str, body=None) -> dict:
    data = b"" if body is None else json.dumps(body).encode()
    return json.loads((await nc.request(subject, data, timeout=5)).data)


def test_server_limits_hold_across_workers(start_natsx, tmp_path):
    """max_memory_store / max_file_store hold for the server, not once per worker: streams'
    max_bytes reserved by an account of worker 0 count when an account of worker 1 creates
    one (10047, 10028), bytes stored by one worker count on the other's publishes (10023),
    and /jsz adds the workers' reservations up."""
    accounts = shard_accounts(2)
    srv = start_natsx("-js", "--workers", "2", "-c", _limits_conf(tmp_path, accounts))

    async def main():
        na = await connect(srv, user=accounts[0].lower(), password="pw")
        nb = await connect(srv, user=accounts[1].lower(), password="pw")
        r = await _api(na, "$JS.API.STREAM.CREATE.FA",
                       {"name": "FA", "subjects": ["fa"], "max_bytes": 600_000})
        assert "error" not in r, r
        r = await _api(nb, "$JS.API.STREAM.CREATE.FB",
                       {"name": "FB", "subjects": ["fb"], "max_bytes": 600_000})
        assert r["error"] == {"code": 500, "err_code": 10047,
                              "description": "insufficient storage resources available"}
        r = await _api(nb, "$JS.API.STREAM.CREATE.FB",
                       {"name": "FB", "subjects": ["fb"], "max_bytes": 400_000})
        assert "error" not in r, r
        r = await _api(na, "$JS.API.STREAM.CREATE.MA",
                       {"name": "MA", "subjects": ["ma"], "storage": "memory",
                        "max_bytes": 60_000})
        assert "error" not in r, r
        r = await _api(nb, "$JS.API.STREAM.CREATE.MB",
                       {"name": "MB", "subjects": ["mb"], "storage": "memory",
                        "max_bytes": 60_000})
        assert r["error"] == {"code": 500, "err_code": 10028,
                              "description": "insufficient memory resources available"}
        # A deleted stream gives its reservation back to every worker.
        r = await _api(na, "$JS.API.STREAM.DELETE.MA")
        assert r["success"] is True
        r = await _api(nb, "$JS.API.STREAM.CREATE.MB",
                       {"name": "MB", "subjects": ["mb"], "storage": "memory",
                        "max_bytes": 60_000})
        assert "error" not in r, r
        jsz = await asyncio.to_thread(http_json, srv, "/jsz")
        assert jsz["reserved_storage"] == 1_000_000 and jsz["reserved_memory"] == 60_000
        # Used bytes: worker 0 fills the memory limit (no max_bytes: nothing reserved)...
        r = await _api(na, "$JS.API.STREAM.CREATE.UA",
                       {"name": "UA", "subjects": ["ua"], "storage": "memory"})
        assert "error" not in r, r
        for n in range(20):
            ack = json.loads((await na.request("ua", b"x" * 10_000, timeout=5)).data)
            if "error" in ack:
                break
        assert n == 10 and ack["error"]["err_code"] == 10023, (n, ack)
        # ... and a publish to worker 1's memory stream finds the server full.
        ack = json.loads((await nb.request("mb", b"y", timeout=5)).data)
        assert ack == {"error": {"code": 503, "err_code": 10023,
                                 "description": "insufficient resources"},
                       "stream": "MB", "seq": 0}
        await na.close()
        await nb.close()
    run(main())


def test_account_limits_reserve_across_workers(start_natsx, tmp_path):
    """Go's sufficientResources on the whole server: two accounts whose max_mem each fits
    the server's limit but not together, owned by different workers, are not both enabled."""
    accounts = shard_accounts(2)
    srv = start_natsx("-js", "--workers", "2", "-c", _limits_conf(
        tmp_path, accounts, account_js="{ max_mem: 60000, max_file: 1000 }"))

    async def main():
        enabled = []
        for acc in accounts.values():
            nc = await connect(srv, user=acc.lower(), password="pw")
            info = await _api(nc, "$JS.API.INFO")
            enabled.append("error" not in info)
            # Every worker agrees with the home: a refused account answers 10039 from the
            # clients of each worker, for requests naming a stream too.
            # (A stream name each worker runs.)
            names = {stream_owner(acc, f"X{i}", 2): f"X{i}" for i in range(40)}
            assert len(names) == 2
            for w in range(2):
                ncw = await connect_on_n(srv, 2, w, acc.lower())
                for subject in ["$JS.API.INFO"] + [f"$JS.API.STREAM.INFO.{n}"
                                                   for n in names.values()]:
                    r = await _api(ncw, subject)
                    if not enabled[-1]:
                        assert r["error"]["err_code"] == 10039, (acc, w, subject, r)
                    elif subject != "$JS.API.INFO":
                        assert r["error"]["err_code"] == 10059, (acc, w, subject, r)
                await ncw.close()
            await nc.close()
        return enabled
    enabled = run(main())
    assert enabled.count(True) <= 1, enabled
    assert "Error enabling JetStream for account" in srv.log()


def test_stopped_raft_process_is_killed_and_restarted(tmp_path):
    """A raft process that stops (SIGSTOP) holds every publish: the supervisor sees its
    heartbeat stall, kills it and starts another, and the publish is acknowledged."""
    srv = start(tmp_path, str(tmp_path / "store"), "--workers", str(WORKERS))
    try:
        pid = wait_raft(srv)

        async def main():
            nc = await connect(srv)
            js = nc.jetstream()
            await js.add_stream(name="HB", subjects=["hb"])
            assert (await js.publish("hb", b"before")).seq == 1
            os.kill(pid, signal.SIGSTOP)
            ack = await js.publish("hb", b"while stopped", timeout=40)
            assert ack.seq == 2
            m = await js.get_msg("HB", 2)
            assert m.data == b"while stopped"
            await nc.close()
        run(main(), timeout=60)
        assert "JetStream raft process (pid %d) stopped its heartbeat" % pid in srv.log()
        wait_new_raft(srv, pid, 1)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except (ProcessLookupError, UnboundLocalError):
            pass
        srv.stop()


def test_jsz_config_and_limits_from_the_workers(start_natsx, tmp_path):
    """/jsz ``config`` is Go's JetStreamConfig of the jetstream block (CompressOK because
    both limits are set, Strict by default), ``limits`` its JSLimitOpts."""
    accounts = shard_accounts(2)
    srv = start_natsx("-js", "--workers", "2", "-c", _limits_conf(
        tmp_path, accounts, extra=', domain: hub, limits { max_ack_pending: 7 }'))
    jsz = http_json(srv, "/jsz")
    assert jsz["config"] == {"max_memory": 100000, "max_storage": 1000000,
                             "store_dir": str(tmp_path / "store" / "jetstream"),
                             "sync_always": True, "domain": "hub", "compress_ok": True,
                             "strict": True}
    assert jsz["limits"] == {"max_ack_pending": 7}
    varz = http_json(srv, "/varz")
    assert varz["jetstream"]["config"] == jsz["config"]
