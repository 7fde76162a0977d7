"""The ``jetstream {}`` settings that bound queues, and JetStream settings on reload.

* ``max_buffered_msgs``/``max_buffered_size`` bound what a stream captured and has not yet
  stored (Go's ``mset.msgs``): a publish beyond them gets Go's PubAck error 10167 with a
  ``429 Too Many Requests`` status, and the server warns;
* ``info_queue_limit``/``request_queue_limit`` bound the API queues: a request that fills
  its queue is dropped unanswered, with a warning and a ``$JS.EVENT.ADVISORY.API.
  LIMIT_REACHED`` advisory in the system account;
* on SIGHUP, JetStream can be turned on and off and its limits raised in every worker, and
  every other change is refused with Go's texts (server/reload.go ``diffOptions``).

Go 2.9.10 (the oracle here) predates the queue settings and refuses raising the limits, so
those answers follow the newest Go source; turning JetStream off and on, and a new store
directory, are compared with the oracle. Everything runs with two workers.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import urllib.request

import nats
import pytest
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
from nats.js.errors import APIError

from natsx.jetstream.queues import (API_DEFAULT_QUEUE_LIMIT, API_INFO_QUEUE, API_QUEUE,
                                    ApiQueue, IngestQueue, ingest_limits, rate_limit_warn)
from natsx.jetstream.settings import Settings
from natsx.server.options import Options
from natsx.server.reload import ReloadError, jetstream_changes

from conftest import RunningServer

pytestmark = pytest.mark.server

WORKERS = "2"


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def write(path, text: str) -> None:
    path.write_text(text)


def start_conf(start_natsx, conf, *, monitor: bool = False) -> RunningServer:
    return start_natsx("-c", str(conf), "--workers", WORKERS, monitor=monitor)


def wait_log(srv: RunningServer, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in srv.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{srv.log()[-3000:]}"
        time.sleep(0.05)
    return srv.log()


def reload(srv: RunningServer, conf, text: str, expect: str) -> None:
    """Writes ``text`` to the config file, sends SIGHUP and waits for ``expect`` logged
    once more than before."""
    before = srv.log().count(expect)
    write(conf, text)
    os.kill(srv.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while srv.log().count(expect) <= before:
        assert time.monotonic() < deadline, f"{expect!r} not logged:\n{srv.log()[-3000:]}"
        time.sleep(0.05)
    time.sleep(0.5)     # the workers apply it after the supervisor logged it


async def burst(nc, subject: str, n: int, payload: bytes = b"x") -> list:
    """``n`` publishes with one reply inbox, sent without waiting; the answers."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    for _ in range(n):
        await nc.publish(subject, payload, reply=inbox)
    await nc.flush()
    answers = []
    try:
        while len(answers) < n:
            answers.append(await sub.next_msg(timeout=3))
    except NatsTimeout:
        pass
    await sub.unsubscribe()
    return answers


TOO_MANY = {"code": 429, "err_code": 10167, "description": "too many requests"}


# ---------------------------------------------------------------------------------- units

def test_ingest_queue_counts_until_confirmed():
    q = IngestQueue(3, 0)
    assert q.admit(10) and q.admit(10) and q.admit(10)
    assert not q.admit(10)                   # Go: len == mlen refuses
    q.committed(5, confirmed=4)              # proposal 5 carries them, not yet applied
    assert not q.admit(10, confirmed=4)
    assert q.admit(10, confirmed=5) and q.msgs == 1
    q.committed()                            # a local commit: durable at once
    assert q.msgs == 0 and q.bytes == 0 and not q.inflight
    sized = IngestQueue(0, 25)
    assert sized.admit(20) and not sized.admit(6) and sized.admit(5)
    assert not IngestQueue(0, 25).admit(26)  # larger than the whole queue: never fits


def test_rate_limited_warnings(caplog):
    caplog.set_level(logging.WARNING, logger="natsx")
    for _ in range(3):
        rate_limit_warn("same statement %s" % id(caplog))
    rate_limit_warn("queue x limit reached, dropping 1 requests", key="fmt %s" % id(caplog))
    rate_limit_warn("queue y limit reached, dropping 1 requests", key="fmt %s" % id(caplog))
    assert [r.getMessage() for r in caplog.records] == [
        "same statement %s" % id(caplog), "queue x limit reached, dropping 1 requests"]


def test_ingest_limits_follow_go_defaults():
    opts = Options()
    assert ingest_limits(Settings.from_options(opts)) == (100_000, 128 << 20)
    opts.jetstream_config = {"max_buffered_msgs": 7, "max_buffered_size": -1}
    assert ingest_limits(Settings.from_options(opts)) == (7, 0)


def test_api_queue_drains_at_the_limit():
    q = ApiQueue(3, 0)
    assert q.info_limit == 3
    create = ["$JS", "API", "STREAM", "CREATE", "S"]
    info = ["$JS", "API", "STREAM", "INFO", "S"]
    assert ApiQueue.queue_of(info) == API_INFO_QUEUE
    assert ApiQueue.queue_of(["$JS", "API", "INFO"]) == API_INFO_QUEUE
    assert ApiQueue.queue_of(create) == API_QUEUE
    assert [q.admit(create) for _ in range(4)] == ["", "", API_QUEUE, ""]
    assert q.admit(info) == ""
    q.round_done()
    assert q.pending == {API_QUEUE: 0, API_INFO_QUEUE: 0}
    assert ApiQueue(0, 0).limit == API_DEFAULT_QUEUE_LIMIT
    assert ApiQueue(0, 5).info_limit == 5


def _js(on: bool = True, store: str = "/s", **cfg) -> Options:
    return Options(jetstream=on, store_dir=store, jetstream_config=cfg)


def test_jetstream_changes_follow_go_diff_options():
    gb = 1 << 30
    assert jetstream_changes(_js(max_memory=gb, max_store=gb),
                             _js(max_memory=2 * gb, max_store=3 * gb)) == [
        "JetStream max_mem_store = 2.00 GB", "JetStream max_file_store = 3.00 GB"]
    refused = {
        (_js(max_memory=2 * gb), _js(max_memory=gb)):
            "config reload not supported for decreasing jetstream max memory and store",
        (_js(), _js(max_store=gb)):
            "config reload not supported for jetstream dynamic max memory and store",
        (_js(max_store=gb), _js()):
            "config reload not supported for jetstream max memory and max store",
        (_js(), _js(store="/t")):
            "config reload not supported for jetstream storage directory",
        (_js(), _js(store="")): "config reload not supported for jetstream storage dir",
        (_js(), _js(strict=False)):
            "config reload not supported for NoJetStreamStrict: old=false, new=true",
        (_js(key="secret"), _js(key="other")):
            "config reload not supported for JetStreamKey: old=[REDACTED], new=[REDACTED]",
        (_js(), _js(sync_always=True)):
            "config reload not supported for SyncInterval: old=0s, new=2m0s",
        (_js(), _js(limits={"max_ack_pending": 5})):
            "config reload not supported for JetStreamLimits: old={0 0 0 0s 0 0 0 0s}, "
            "new={0 5 0 0s 0 0 0 0s}",
    }
    for (old, new), text in refused.items():
        with pytest.raises(ReloadError) as exc:
            jetstream_changes(old, new)
        assert str(exc.value) == text
    # Turning JetStream off may drop the limits and the store directory; on from off
    # checks neither. Go keeps meta_compact* reloadable.
    assert jetstream_changes(_js(max_memory=gb), _js(False, "")) == ["JetStream"]
    assert jetstream_changes(_js(False, ""), _js(store="/x", max_store=gb)) == ["JetStream"]
    assert jetstream_changes(_js(), _js(meta_compact=5)) == []


# ------------------------------------------------------------------------- ingest queue

def test_max_buffered_size_refuses_what_does_not_fit(start_natsx, tmp_path):
    conf = tmp_path / "js.conf"
    write(conf, f'jetstream {{ store_dir: "{tmp_path}/store", max_buffered_size: 200 }}\n')
    srv = start_conf(start_natsx, conf)

    async def main():
        nc = await nats.connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="B", subjects=["b.>"])
        ack = await js.publish("b.small", b"x" * 50)
        assert ack.seq == 1
        with pytest.raises(APIError) as exc:
            await js.publish("b.big", b"x" * 300)
        assert (exc.value.code, exc.value.err_code, exc.value.description) == \
            (429, 10167, "too many requests")
        # On the wire: Go's status line and PubAck error body.
        msg = await nc.request("b.big", b"x" * 300, timeout=5)
        assert msg.headers.get("Status") == "429"
        assert msg.headers.get("Description") == "Too Many Requests"
        assert json.loads(msg.data) == {"error": TOO_MANY, "stream": "B", "seq": 0}
        assert msg.data.startswith(b'{"error":{"code":429,')
        assert (await js.stream_info("B")).state.messages == 1
        await nc.close()
    run(main())
    wait_log(srv, "Dropping messages due to excessive stream ingest rate on '$G' > "
                  "'B': IPQ size limit reached")


def test_max_buffered_msgs_bounds_a_burst(start_natsx, tmp_path):
    conf = tmp_path / "js.conf"
    write(conf, f'jetstream {{ store_dir: "{tmp_path}/store", max_buffered_msgs: 3 }}\n')
    srv = start_conf(start_natsx, conf)
    n = 400

    async def main():
        nc = await nats.connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(name="Q", subjects=["q.>"])
        answers = await burst(nc, "q.x", n)
        assert len(answers) == n
        bodies = [json.loads(m.data) for m in answers]
        refused = [b for b in bodies if "error" in b]
        stored = [b["seq"] for b in bodies if "error" not in b]
        assert refused and stored, "a burst over 3 buffered messages is partly refused"
        assert all(b == {"error": TOO_MANY, "stream": "Q", "seq": 0} for b in refused)
        assert all(m.headers and m.headers.get("Status") == "429"
                   for m, b in zip(answers, bodies) if "error" in b)
        assert sorted(stored) == list(range(1, len(stored) + 1))
        assert (await js.stream_info("Q")).state.messages == len(stored)
        # Drained once committed: the next publish is stored.
        ack = await js.publish("q.after", b"y")
        assert ack.seq == len(stored) + 1
        await nc.close()
    run(main())
    wait_log(srv, "Dropping messages due to excessive stream ingest rate on '$G' > 'Q': "
                  "IPQ len limit reached")


# ---------------------------------------------------------------------------- API queue

def test_info_queue_limit_drops_info_requests(start_natsx, tmp_path):
    conf = tmp_path / "js.conf"
    write(conf, f"""
jetstream {{ store_dir: "{tmp_path}/store", info_queue_limit: 1 }}
accounts {{
  A: {{ jetstream: enabled, users: [{{user: a, password: a}}] }}
  SYS: {{ users: [{{user: sys, password: sys}}] }}
}}
system_account: SYS
""")
    srv = start_conf(start_natsx, conf)

    async def main():
        sysc = await nats.connect(f"nats://sys:sys@127.0.0.1:{srv.port}")
        adv = await sysc.subscribe("$JS.EVENT.ADVISORY.API.LIMIT_REACHED")
        await sysc.flush()
        nc = await nats.connect(f"nats://a:a@127.0.0.1:{srv.port}")
        js = nc.jetstream()
        # Go: with a limit of 1 every push fills the info queue, so every info request
        # is dropped; the other requests have their own queue (default 10,000).
        await js.add_stream(name="I", subjects=["i.>"])
        for subject in ("$JS.API.STREAM.INFO.I", "$JS.API.INFO", "$JS.API.STREAM.NAMES"):
            with pytest.raises(NatsTimeout):
                await nc.request(subject, b"", timeout=0.5)
        await js.delete_stream("I")
        m = await adv.next_msg(timeout=5)
        event = json.loads(m.data)
        assert list(event) == ["type", "id", "timestamp", "server", "dropped"]
        assert event["type"] == "io.nats.jetstream.advisory.v1.api_limit_reached"
        assert event["dropped"] == 1
        await nc.close()
        await sysc.close()
    run(main())
    wait_log(srv, "JetStream API info queue limit reached, dropping 1 requests")


# -------------------------------------------------------------------------------- reload

JS_CONF = """
jetstream {{ store_dir: "{store}", max_mem: {mem}, max_file: 1GB{extra} }}
accounts {{ {accounts} }}
"""


def accounts_by_worker(workers: int = int(WORKERS)) -> list[str]:
    """One account name owned by each worker (natsx.jetstream.shards)."""
    from natsx.jetstream.shards import owner

    names: dict[int, str] = {}
    for name in ("A", "B", "C", "D", "E", "F", "G", "H"):
        names.setdefault(owner(name, workers), name)
    return [names[i] for i in range(workers)]


def test_reload_raises_limits_and_refuses_the_rest(start_natsx, tmp_path):
    conf = tmp_path / "js.conf"
    store = tmp_path / "store"
    accounts = accounts_by_worker()
    acc_text = "\n".join(f"{a}: {{ jetstream: enabled, users: [{{user: {a.lower()}, "
                        f"password: p}}] }}" for a in accounts)

    def text(mem="10MB", extra="", where=store):
        return JS_CONF.format(store=where, mem=mem, extra=extra, accounts=acc_text)
    write(conf, text())
    srv = start_conf(start_natsx, conf)

    async def create(account: str, expect_error: int = 0):
        nc = await nats.connect(f"nats://{account.lower()}:p@127.0.0.1:{srv.port}")
        js = nc.jetstream()
        try:
            if expect_error:
                with pytest.raises(APIError) as exc:
                    await js.add_stream(name="M", subjects=["m"], storage="memory",
                                        max_bytes=20 << 20)
                assert exc.value.err_code == expect_error
            else:
                await js.add_stream(name="M", subjects=["m"], storage="memory",
                                    max_bytes=20 << 20)
                await js.delete_stream("M")
        finally:
            await nc.close()

    # Every worker (each owns one of the accounts) checks the server's memory limit.
    for account in accounts:
        run(create(account, 10028))     # insufficient memory resources
    reload(srv, conf, text("30MB"), "Reloaded: JetStream max_mem_store = 30.00 MB")
    for account in accounts:
        run(create(account))
    for new, err in [
            (text("20MB"), "config reload not supported for decreasing jetstream max memory "
                           "and store"),
            (text("30MB", ", domain: x"), "config reload not supported for JetStreamDomain: "
                                          "old=, new=x"),
            (text("30MB", ", max_buffered_msgs: 5"),
             "config reload not supported for StreamMaxBufferedMsgs: old=0, new=5"),
            (text("30MB", ", request_queue_limit: 5"),
             "config reload not supported for JetStreamRequestQueueLimit: old=10000, new=5"),
            (text("30MB", where=tmp_path / "other"),
             "config reload not supported for jetstream storage directory"),
            ('jetstream { store_dir: "%s", max_file: 1GB }' % store,
             "config reload not supported for jetstream max memory and max store"),
    ]:
        reload(srv, conf, new, "Failed to reload server configuration: " + err)


def _toggle_script(port: int, phase: str) -> asyncio.Future:
    async def main():
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        js = nc.jetstream()
        out = {}
        try:
            if phase == "create":
                await js.add_stream(name="T", subjects=["t.>"])
                out["seq"] = (await js.publish("t.a", b"1")).seq
            try:
                m = await nc.request("$JS.API.STREAM.INFO.T", b"", timeout=1)
                out["info"] = json.loads(m.data).get("state", {}).get("messages")
            except NatsTimeout:
                out["info"] = "timeout"
            except NoRespondersError:
                out["info"] = "no responders"
            try:
                await nc.request("t.b", b"2", timeout=1)
                out["publish"] = "answered"
            except NoRespondersError:
                out["publish"] = "no responders"
            except NatsTimeout:
                out["publish"] = "timeout"
        finally:
            await nc.close()
        return out
    return main()


def test_reload_turns_jetstream_off_and_on_as_go(start_natsx, start_go, tmp_path):
    """Off: API requests go unanswered and stream subjects have no responders (as the Go
    server does); on again: the streams are back."""
    results = {}
    for kind in ("go", "natsx"):
        conf = tmp_path / f"{kind}.conf"
        on = f'jetstream {{ store_dir: "{tmp_path}/{kind}" }}\n'
        write(conf, on)
        srv = start_go("-c", str(conf), monitor=False) if kind == "go" else \
            start_natsx("-c", str(conf), "--workers", WORKERS, monitor=False)
        seen = [run(_toggle_script(srv.port, "create"))]
        reload(srv, conf, "# off\n", "Reloaded: JetStream")
        wait_log(srv, "JetStream Shutdown")
        seen.append(run(_toggle_script(srv.port, "off")))
        reload(srv, conf, on, "Restarting JetStream")
        seen.append(run(_toggle_script(srv.port, "on")))
        results[kind] = seen
    assert results["natsx"][:2] == results["go"][:2]
    assert results["go"][1] == {"info": "timeout", "publish": "no responders"}
    # On again, the newest Go recovers the account's streams (EnableJetStream: "Recovering
    # JetStream state for account"); 2.9.10 answers "stream not found" until a restart.
    assert results["natsx"][2] == {"info": 2, "publish": "answered"}


def test_reload_enables_jetstream_started_without(start_natsx, tmp_path):
    """A server started without JetStream (so without a raft process) gets it on reload,
    in every worker, and its file streams are written by the raft process the reload
    started (their write-ahead log is there)."""
    conf = tmp_path / "s.conf"
    write(conf, "# nothing\n")
    srv = start_conf(start_natsx, conf, monitor=True)

    async def off():
        nc = await nats.connect(srv.url)
        with pytest.raises(NoRespondersError):
            await nc.request("$JS.API.INFO", b"", timeout=2)
        await nc.close()
    run(off())
    reload(srv, conf, f'jetstream {{ store_dir: "{tmp_path}/store", max_mem: 64MB }}\n',
           "Reloaded: JetStream")

    async def on():
        # Publish from fresh connections until both workers have served one (the kernel
        # picks the worker by the connection's addresses).
        workers, i = set(), 0
        while (len(workers) < 2 or i < 8) and i < 40:
            nc = await nats.connect(srv.url)
            workers.add((nc._server_info["client_id"] - 1) % 2)
            js = nc.jetstream()
            if i == 0:
                await js.add_stream(name="E", subjects=["e.>"])
            assert (await js.publish("e.x", b"%d" % i)).seq == i + 1
            await nc.close()
            i += 1
        assert workers == {0, 1}
        return i
    published = run(on())
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}/jsz", timeout=5) as r:
        jsz = json.load(r)
    assert jsz["config"]["max_memory"] == 64 << 20
    assert jsz["streams"] == 1 and jsz["messages"] == published
    assert (tmp_path / "store" / "jetstream" / "$G" / "streams" / "E" / "msgs" / "raft.wal").exists()
    assert "exited with" not in srv.log()   # the workers took the reload in place
