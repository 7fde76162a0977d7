"""JetStream hosted in the raft process: the single LMDB writer survives SIGKILL.

The supervisor runs the raft process next to the workers when JetStream is on; every file
stream write is a proposal the raft process commits, applies to LMDB and syncs before the
worker acknowledges anything. These tests kill that process with SIGKILL while clients publish,
ack and fetch, and check that the supervisor restarts it, that every acknowledged write is
there (and there once), and that service resumes without the clients reconnecting.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import nats
import pytest

from conftest import free_port
from test_jetstream import connect, run, start

pytestmark = pytest.mark.server


def raft_pids(srv) -> list[int]:
    """The pids of the raft processes the server logged, oldest first."""
    return [int(p) for p in re.findall(r"JetStream raft process ready \(pid (\d+)\)", srv.log())]


def wait_new_raft(srv, old: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = raft_pids(srv)
        if pids and pids[-1] != old:
            return pids[-1]
        time.sleep(0.05)
    raise AssertionError("the raft process was not restarted:\n" + srv.log())


def wait_raft(srv, timeout: float = 15) -> int:
    return wait_new_raft(srv, 0, timeout)


def test_raft_process_runs_as_the_writer(tmp_path):
    srv = start(tmp_path, str(tmp_path / "store"))
    try:
        pid = wait_raft(srv)
        assert pid != srv.proc.pid

        async def main():
            nc = await connect(srv)
            js = nc.jetstream()
            await js.add_stream(name="W", subjects=["w"])
            ack = await js.publish("w", b"one")
            assert ack.seq == 1
            await nc.close()
        run(main())
        # The stream's environment is mapped by the raft process, which wrote it.
        with open(f"/proc/{pid}/maps") as f:
            assert "/streams/W/msgs/data.mdb" in f.read()
    finally:
        srv.stop()


def test_acked_publishes_survive_raft_sigkill(tmp_path):
    """Publishing without pause while the raft process is SIGKILLed twice: the clients stay
    connected, every PubAck names a message that is stored at that sequence, none is stored
    twice (retries carry the same Nats-Msg-Id), and publishing goes on after each restart."""
    store = str(tmp_path / "store")
    srv = start(tmp_path, store)
    acked: dict[str, int] = {}
    try:
        pid = wait_raft(srv)

        async def main():
            nc = await connect(srv, connect_timeout=10)
            js = nc.jetstream()
            await js.add_stream(name="RK", subjects=["rk"])
            state = {"next": 0, "stop": False}

            async def publisher():
                while not state["stop"]:
                    i = state["next"]
                    try:
                        ack = await js.publish("rk", b"payload-%d" % i,
                                               headers={"Nats-Msg-Id": f"m{i}"}, timeout=5)
                    except nats.errors.TimeoutError:
                        continue        # retry the same id: the dedupe window answers
                    acked[f"m{i}"] = ack.seq
                    state["next"] = i + 1

            task = asyncio.create_task(publisher())
            nonlocal pid
            for _ in range(2):
                await asyncio.sleep(0.7)
                before = len(acked)
                os.kill(pid, signal.SIGKILL)
                pid = await asyncio.get_running_loop().run_in_executor(
                    None, wait_new_raft, srv, pid)
                await asyncio.sleep(0.7)
                assert len(acked) > before, "no publish was acknowledged after the restart"
            state["stop"] = True
            await asyncio.wait_for(task, 10)
            si = await js.stream_info("RK")
            stored = []
            for seq in range(si.state.first_seq, si.state.last_seq + 1):
                m = await js.get_msg("RK", seq)
                stored.append((m.headers["Nats-Msg-Id"], m.seq))
            await nc.close()
            return stored
        stored = run(main(), timeout=90)
    finally:
        srv.stop()
    assert len(acked) >= 10
    by_id = dict(stored)
    assert len(by_id) == len(stored), "a Nats-Msg-Id was stored twice"
    for msg_id, seq in acked.items():
        assert by_id.get(msg_id) == seq, f"acknowledged {msg_id} at {seq} is missing"
    # And all of it is on disk: a fresh server finds the same stream.
    srv = start(tmp_path, store, port=free_port())
    try:
        async def after():
            nc = await connect(srv, connect_timeout=10)
            si = await nc.jetstream().stream_info("RK")
            await nc.close()
            return si.state.messages
        assert run(after()) == len(stored)
    finally:
        srv.stop()


def test_consumer_acks_and_deletes_across_raft_sigkill(tmp_path):
    """Consumer state, message deletes, purges and stream deletes are raft writes too."""
    store = str(tmp_path / "store")
    srv = start(tmp_path, store)
    port = srv.port
    try:
        pid = wait_raft(srv)

        async def main():
            nc = await connect(srv, connect_timeout=10)
            js = nc.jetstream()
            await js.add_stream(name="CK", subjects=["ck.*"])
            await js.add_stream(name="GONE", subjects=["gone"])
            for i in range(10):
                await js.publish("ck.a" if i % 2 else "ck.b", b"%d" % i)
            await js.publish("gone", b"x")
            psub = await js.pull_subscribe("ck.*", "dur", stream="CK")
            msgs = await psub.fetch(4, timeout=3)
            for m in msgs[:3]:
                await m.ack_sync()
            os.kill(pid, signal.SIGKILL)
            # Requests made while the raft process restarts are answered once it is back.
            await js.delete_msg("CK", 10)
            await msgs[3].ack_sync(timeout=10)
            assert await js.purge_stream("CK", subject="ck.b") is True
            await js.delete_stream("GONE")
            wait_new_raft(srv, pid)
            # A stream of the same name starts empty.
            await js.add_stream(name="GONE", subjects=["gone"])
            assert (await js.stream_info("GONE")).state.messages == 0
            ci = await js.consumer_info("CK", "dur")
            assert (ci.ack_floor.consumer_seq, ci.num_ack_pending) == (4, 0)
            await nc.close()
        run(main(), timeout=60)
    finally:
        srv.stop()
    srv = start(tmp_path, store, port=port)
    try:
        async def after():
            nc = await connect(srv, connect_timeout=10)
            js = nc.jetstream()
            si = await js.stream_info("CK")
            ci = await js.consumer_info("CK", "dur")
            gone = await js.stream_info("GONE")
            await nc.close()
            return (si.state.messages, ci.ack_floor.consumer_seq, ci.num_ack_pending,
                    gone.state.messages)
        # ck.a is at 2, 4, 6, 8 (10 deleted, ck.b purged); the four acks survived.
        assert run(after()) == (4, 4, 0, 0)
    finally:
        srv.stop()


def test_worker_sigkill_reopens_its_streams(tmp_path):
    """A worker killed with SIGKILL is restarted and reopens its streams from LMDB (the raft
    process kept them open); its stale proposals can never land after the new one's."""
    srv = start(tmp_path, str(tmp_path / "store"))
    try:
        wait_raft(srv)

        async def before():
            nc = await connect(srv)
            js = nc.jetstream()
            await js.add_stream(name="WK", subjects=["wk"])
            for i in range(20):
                await js.publish("wk", b"%d" % i)
            psub = await js.pull_subscribe("wk", "dur", stream="WK")
            for m in await psub.fetch(5, timeout=3):
                await m.ack_sync()
            await nc.close()
        run(before())
        workers = [int(p) for p in re.findall(r"\[(\d+)\] \S+ \S+ \[INF\] Starting JetStream",
                                              srv.log())]
        assert workers, srv.log()
        os.kill(workers[-1], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while srv.log().count("Starting JetStream") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

        async def after():
            nc = await connect(srv, connect_timeout=10)
            js = nc.jetstream()
            ack = await js.publish("wk", b"next")
            ci = await js.consumer_info("WK", "dur")
            si = await js.stream_info("WK")
            await nc.close()
            return ack.seq, ci.ack_floor.stream_seq, si.state.messages
        assert run(after()) == (21, 5, 21)
    finally:
        srv.stop()


def test_async_persist_mode_answers_before_the_sync(tmp_path):
    """persist_mode "async" (Go 2.12, file storage only): a publish is acknowledged once its
    proposal is on its way to the raft process, not after the log's sync. With the raft
    process stopped (SIGSTOP), a publish to the async stream is answered and one to a
    default stream is not; both are stored once it runs again. The mode can not change,
    and the checks Go makes on it hold."""
    from nats.js.api import PersistMode, StorageType, StreamConfig
    from nats.js.errors import APIError

    srv = start(tmp_path, str(tmp_path / "store"))
    pid = wait_raft(srv)
    stopped = False
    try:
        async def main():
            nonlocal stopped
            nc = await connect(srv)
            js = nc.jetstream()
            await js.add_stream(name="A", subjects=["a"], persist_mode=PersistMode.ASYNC)
            await js.add_stream(name="D", subjects=["d"])
            assert (await js.stream_info("A")).config.persist_mode == PersistMode.ASYNC
            assert (await js.publish("a", b"one")).seq == 1
            assert (await js.publish("d", b"one")).seq == 1
            os.kill(pid, signal.SIGSTOP)
            stopped = True
            assert (await js.publish("a", b"two", timeout=3)).seq == 2
            with pytest.raises(nats.errors.TimeoutError):
                await js.publish("d", b"two", timeout=1)
            os.kill(pid, signal.SIGCONT)
            stopped = False
            assert (await js.publish("d", b"three")).seq == 3
            assert (await js.stream_info("A")).state.messages == 2
            assert (await js.get_msg("A", 2)).data == b"two"
            assert (await js.get_msg("D", 2)).data == b"two"

            # Go's JSStreamInvalidConfigF: 500, 10052, the reason as the description.
            with pytest.raises(APIError) as e:
                await js.update_stream(name="A", subjects=["a"])
            assert (e.value.code, e.value.err_code, e.value.description) == (
                500, 10052, "stream configuration update can not change persist mode")
            with pytest.raises(APIError) as e:
                await js.add_stream(name="M", subjects=["m"], storage=StorageType.MEMORY,
                                    persist_mode=PersistMode.ASYNC)
            assert (e.value.err_code, e.value.description) == (
                10052, "async persist mode is only supported on file storage")
            with pytest.raises(APIError) as e:
                await js.add_stream(StreamConfig(name="B", subjects=["b"], allow_atomic=True,
                                                 persist_mode=PersistMode.ASYNC))
            assert (e.value.err_code, e.value.description) == (
                10052, "async persist mode is not supported with atomic batch publish")
            await nc.close()
        run(main(), timeout=30)
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        srv.stop()
