"""JetStream server features: the jetstream block's limits, per-account JetStream, domains,
advisories and metrics, replay and rate pacing, stream snapshot and restore.

Black-box against the ``natsx`` command with nats-py and raw ``$JS.API`` requests; where the
Debian Go server (2.9.10) answers the same way, the answers are compared with it. Config
parsing is also checked directly through ``load_options``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import nats
import pytest

from conftest import GO_SERVER
from natsx.server.config_options import ConfigProcessError, load_options

pytestmark = pytest.mark.server


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def api(nc, subject: str, body=None, timeout: float = 3) -> dict:
    data = b"" if body is None else json.dumps(body).encode()
    msg = await nc.request(subject, data, timeout=timeout)
    return json.loads(msg.data)


async def pull(nc, subject: str):
    """One message of a pull consumer (the delivery keeps the stored subject, so a plain
    request() cannot match it: listen on an inbox)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b'{"batch":1}', reply=inbox)
    msg = await sub.next_msg(timeout=3)
    await sub.unsubscribe()
    return msg


def write_conf(tmp_path, text: str, name: str = "js.conf") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------------- config

def test_jetstream_block_keys_are_applied(tmp_path):
    conf = write_conf(tmp_path, """
jetstream {
  store_dir: "%s"
  max_memory_store: 1G
  max_file_store: "2G"
  domain: hub
  sync_interval: "5s"
  strict: false
  unique_tag: " AZ "
  max_buffered_msgs: 10
  max_buffered_size: 1M
  max_outstanding_catchup: 64M
  request_queue_limit: 100
  extension_hint: "will_extend"
  cipher: chacha
  limits { max_ack_pending: 50, max_ha_assets: 2, max_request_batch: 7, duplicate_window: "30s" }
}
""" % (tmp_path / "store"))
    opts, _ = load_options(conf, {})
    assert opts.jetstream is True
    assert opts.store_dir == str(tmp_path / "store")
    cfg = opts.jetstream_config
    assert cfg["max_memory"] == 1_000_000_000
    assert cfg["max_store"] == 2 << 30
    assert cfg["domain"] == "hub"
    assert cfg["sync_interval"] == 5_000_000_000 and cfg["sync_always"] is False
    assert cfg["strict"] is False
    assert cfg["unique_tag"] == "az"
    assert cfg["limits"] == {"max_ack_pending": 50, "max_ha_assets": 2,
                             "max_request_batch": 7, "duplicate_window": 30_000_000_000}
    assert cfg["cipher"] == "chachapoly"


@pytest.mark.parametrize("block, needle", [
    ('tpm: { keys_file: "k" }', "jetstream tpm: TPM key storage is not supported"),
    ('cipher: rot13', 'Unknown cipher type: "rot13"'),
    ('max_file_store: "10X"', "max_file_store sizes defined as strings must end in K, M, G, T"),
    ('bogus: 1', 'unknown field "bogus"'),
    ('max_concurrent_io: 2', 'Expected an absolute size for "max_concurrent_io" between 4'),
])
def test_jetstream_block_errors(tmp_path, block, needle):
    conf = write_conf(tmp_path, "jetstream { %s }\n" % block)
    with pytest.raises(ConfigProcessError) as exc:
        load_options(conf, {})
    assert needle in str(exc.value)


def test_account_jetstream_forms(tmp_path):
    conf = write_conf(tmp_path, """
jetstream: enabled
accounts {
  A { jetstream { max_mem: 1M, max_file: 2M, max_streams: 3, max_consumers: 4,
                  max_ack_pending: 5, mem_max_stream_bytes: 6, disk_max_stream_bytes: 7,
                  max_bytes_required: true } }
  B { jetstream: enabled }
  C { jetstream: disabled }
  D { }
}
""")
    opts, _ = load_options(conf, {})
    acc = opts.accounts
    assert acc["A"].jetstream == {
        "max_memory": 1_000_000, "max_storage": 2_000_000, "max_streams": 3,
        "max_consumers": 4, "max_ack_pending": 5, "memory_max_stream_bytes": 6,
        "storage_max_stream_bytes": 7, "max_bytes_required": True}
    assert acc["B"].jetstream["max_memory"] == -1
    assert acc["C"].jetstream is None and acc["D"].jetstream is None
    bad = write_conf(tmp_path, "accounts { A { jetstream { max_mem: true } } }\n", "bad.conf")
    with pytest.raises(ConfigProcessError) as exc:
        load_options(bad, {})
    assert 'Expected a parseable size for "max_mem", got true' in str(exc.value)


# ------------------------------------------------------------------------------------- accounts

ACCOUNTS_CONF = """
jetstream { store_dir: "%s", domain: "hub" }
accounts {
  A { users: [{user: a, password: a}]
      jetstream { max_mem: 64MB, max_file: 32MB, max_streams: 2, max_consumers: 1,
                  max_ack_pending: 100, memory_max_stream_bytes: 2048,
                  store_max_stream_bytes: 4096, max_stream_bytes: true } }
  B { users: [{user: b, password: b}] }
}
"""


def test_per_account_jetstream_and_domain(start_natsx, tmp_path):
    srv = start_natsx("-c", write_conf(tmp_path, ACCOUNTS_CONF % (tmp_path / "store")))

    async def main():
        na = await nats.connect(f"nats://a:a@127.0.0.1:{srv.port}")
        nb = await nats.connect(f"nats://b:b@127.0.0.1:{srv.port}")
        info = await api(na, "$JS.API.INFO")
        assert info["limits"] == {
            "max_memory": 67108864, "max_storage": 33554432, "max_streams": 2,
            "max_consumers": 1, "max_ack_pending": 100, "memory_max_stream_bytes": 2048,
            "storage_max_stream_bytes": 4096, "max_bytes_required": True}
        assert info["domain"] == "hub" and "tiers" not in info
        # Limits: max_bytes required, per-stream maximum, streams, consumers.
        r = await api(na, "$JS.API.STREAM.CREATE.S1", {"name": "S1", "subjects": ["s1"]})
        assert r["error"]["err_code"] == 10113
        r = await api(na, "$JS.API.STREAM.CREATE.S1",
                      {"name": "S1", "subjects": ["s1"], "max_bytes": 8192})
        assert r["error"]["err_code"] == 10122
        for n in (1, 2):
            r = await api(na, f"$JS.API.STREAM.CREATE.S{n}",
                          {"name": f"S{n}", "subjects": [f"s{n}"], "max_bytes": 1000})
            assert "error" not in r, r
        r = await api(na, "$JS.API.STREAM.CREATE.S3",
                      {"name": "S3", "subjects": ["s3"], "max_bytes": 1000})
        assert r["error"]["err_code"] == 10027
        r = await api(na, "$JS.API.CONSUMER.CREATE.S1.C1",
                      {"stream_name": "S1", "config": {"name": "C1", "ack_policy": "explicit"}})
        assert r["config"]["max_ack_pending"] == 100
        r = await api(na, "$JS.API.CONSUMER.CREATE.S1.C2",
                      {"stream_name": "S1", "config": {"name": "C2"}})
        assert r["error"]["err_code"] == 10026
        # The domain: pub acks name it, $JS.hub.API reaches the same API.
        ack = json.loads((await na.request("s1", b"x", timeout=3)).data)
        assert ack == {"stream": "S1", "domain": "hub", "seq": 1}
        r = await api(na, "$JS.hub.API.STREAM.INFO.S1")
        assert r["state"]["messages"] == 1
        # A pull through the domain prefix is routed on to the consumer.
        msg = await pull(na, "$JS.hub.API.CONSUMER.MSG.NEXT.S1.C1")
        assert msg.data == b"x"
        # An account without JetStream.
        r = await api(nb, "$JS.API.INFO")
        assert r["error"] == {"code": 503, "err_code": 10039,
                              "description": "JetStream not enabled for account"}
        r = await api(nb, "$JS.hub.API.STREAM.NAMES")
        assert r["error"]["err_code"] == 10039 and r["streams"] is None
        await na.close()
        await nb.close()
    run(main())


DISABLED_CONF = """
jetstream { store_dir: "%s" }
accounts { A { users: [{user: a, password: a}], jetstream: enabled }
           B { users: [{user: b, password: b}] } }
"""


@pytest.mark.skipif(GO_SERVER is None, reason="the Go nats-server oracle is not installed")
def test_not_enabled_for_account_matches_go(start_natsx, start_go, tmp_path):
    ours = start_natsx("-c", write_conf(tmp_path, DISABLED_CONF % (tmp_path / "a"), "a.conf"))
    go = start_go("-c", write_conf(tmp_path, DISABLED_CONF % (tmp_path / "b"), "b.conf"))

    async def answers(port):
        nc = await nats.connect(f"nats://b:b@127.0.0.1:{port}")
        out = [await api(nc, subject, body) for subject, body in (
            ("$JS.API.INFO", None),
            ("$JS.API.STREAM.NAMES", None),
            ("$JS.API.STREAM.CREATE.X", {"name": "X"}),
            ("$JS.API.STREAM.INFO.X", None),
        )]
        await nc.close()
        return out
    assert run(answers(ours.port)) == run(answers(go.port))


def test_server_limits(start_natsx, tmp_path):
    conf = write_conf(tmp_path, """
jetstream { store_dir: "%s", max_file_store: 2000, max_memory_store: 1000,
            limits { max_ack_pending: 20, max_request_batch: 5, duplicate_window: "1s" } }
""" % (tmp_path / "store"))
    srv = start_natsx("-c", conf)

    async def main():
        nc = await nats.connect(srv.url)
        info = await api(nc, "$JS.API.INFO")
        assert info["limits"]["max_storage"] == -1
        r = await api(nc, "$JS.API.STREAM.CREATE.BIG",
                      {"name": "BIG", "subjects": ["big"], "max_bytes": 4000})
        assert r["error"] == {"code": 500, "err_code": 10047,
                              "description": "insufficient storage resources available"}
        r = await api(nc, "$JS.API.STREAM.CREATE.MEM",
                      {"name": "MEM", "storage": "memory", "max_bytes": 2000})
        assert r["error"]["err_code"] == 10028
        r = await api(nc, "$JS.API.STREAM.CREATE.F", {"name": "F", "subjects": ["f"]})
        assert r["config"]["duplicate_window"] == 1_000_000_000
        r = await api(nc, "$JS.API.CONSUMER.CREATE.F.P",
                      {"stream_name": "F", "config": {"name": "P", "ack_policy": "explicit"}})
        assert r["config"]["max_ack_pending"] == 20 and r["config"]["max_batch"] == 5
        r = await api(nc, "$JS.API.CONSUMER.CREATE.F.Q",
                      {"stream_name": "F",
                       "config": {"name": "Q", "ack_policy": "explicit", "max_batch": 9}})
        assert r["error"] == {"code": 400, "err_code": 10125, "description":
                              "consumer max request batch exceeds server limit of 5"}
        # Fill the server's file limit: then publishes get 10023.
        errors = []
        for _ in range(40):
            ack = json.loads((await nc.request("f", b"x" * 100, timeout=3)).data)
            if "error" in ack:
                errors.append(ack)
        assert errors and errors[0] == {
            "error": {"code": 503, "err_code": 10023, "description": "insufficient resources"},
            "stream": "F", "seq": 0}
        await nc.close()
    run(main())


# ------------------------------------------------------------------------------------- events

def test_advisories_and_ack_metric(start_natsx, tmp_path):
    srv = start_natsx("-js", "-sd", str(tmp_path / "store"))

    async def main():
        nc = await nats.connect(srv.url)
        events: list = []

        async def cb(m):
            events.append((m.subject, json.loads(m.data)))
        sub = await nc.subscribe("$JS.EVENT.>", cb=cb)
        await nc.flush()
        await api(nc, "$JS.API.STREAM.CREATE.EV", {"name": "EV", "subjects": ["ev"]})
        await api(nc, "$JS.API.STREAM.UPDATE.EV",
                  {"name": "EV", "subjects": ["ev"], "max_msgs": 10})
        await api(nc, "$JS.API.CONSUMER.CREATE.EV.D",
                  {"stream_name": "EV", "config": {"durable_name": "D", "ack_policy": "explicit",
                                                   "sample_freq": "100%", "max_deliver": 1}})
        await nc.request("ev", b"1", timeout=3)
        await nc.request("ev", b"2", timeout=3)
        m = await pull(nc, "$JS.API.CONSUMER.MSG.NEXT.EV.D")
        await m.ack_sync()
        m = await pull(nc, "$JS.API.CONSUMER.MSG.NEXT.EV.D")
        await m.term()
        await api(nc, "$JS.API.CONSUMER.DELETE.EV.D")
        await api(nc, "$JS.API.STREAM.DELETE.EV")
        await nc.flush()
        await asyncio.sleep(0.3)
        await sub.unsubscribe()
        await nc.close()
        return events

    events = run(main())
    by_subject = {}
    for subject, body in events:
        by_subject.setdefault(subject, []).append(body)
        assert set(body) >= {"type", "id", "timestamp"}
    created = by_subject["$JS.EVENT.ADVISORY.STREAM.CREATED.EV"][0]
    assert created["type"] == "io.nats.jetstream.advisory.v1.stream_action"
    assert (created["stream"], created["action"]) == ("EV", "create")
    assert by_subject["$JS.EVENT.ADVISORY.STREAM.UPDATED.EV"][0]["action"] == "modify"
    assert by_subject["$JS.EVENT.ADVISORY.STREAM.DELETED.EV"][0]["action"] == "delete"
    cc = by_subject["$JS.EVENT.ADVISORY.CONSUMER.CREATED.EV.D"][0]
    assert cc["type"] == "io.nats.jetstream.advisory.v1.consumer_action"
    assert (cc["stream"], cc["consumer"], cc["action"]) == ("EV", "D", "create")
    assert by_subject["$JS.EVENT.ADVISORY.CONSUMER.DELETED.EV.D"][0]["action"] == "delete"
    metric = by_subject["$JS.EVENT.METRIC.CONSUMER.ACK.EV.D"][0]
    assert metric["type"] == "io.nats.jetstream.metric.v1.consumer_ack"
    assert (metric["stream_seq"], metric["consumer_seq"], metric["deliveries"]) == (1, 1, 1)
    assert metric["ack_time"] > 0
    term = by_subject["$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.EV.D"][0]
    assert term["type"] == "io.nats.jetstream.advisory.v1.terminated"
    assert term["stream_seq"] == 2
    audits = by_subject["$JS.EVENT.ADVISORY.API"]
    assert all(a["type"] == "io.nats.jetstream.advisory.v1.api_audit" for a in audits)
    first = audits[0]
    assert first["subject"] == "$JS.API.STREAM.CREATE.EV"
    assert json.loads(first["request"]) == {"name": "EV", "subjects": ["ev"]}
    assert json.loads(first["response"])["type"] == \
        "io.nats.jetstream.api.v1.stream_create_response"
    assert first["client"]["acc"] == "$G" and first["client"]["kind"] == "Client"
    assert [a["subject"] for a in audits][-1] == "$JS.API.STREAM.DELETE.EV"


# ------------------------------------------------------------------------------------- pacing

def test_replay_original_keeps_the_original_gaps(start_natsx, tmp_path):
    srv = start_natsx("-js", "-sd", str(tmp_path / "store"))

    async def main():
        nc = await nats.connect(srv.url)
        await api(nc, "$JS.API.STREAM.CREATE.RP", {"name": "RP", "subjects": ["rp"]})
        for i in range(3):
            await nc.request("rp", b"%d" % i, timeout=3)
            if i < 2:
                await asyncio.sleep(0.6)
        got: list = []
        done = asyncio.Event()

        async def cb(msg):
            got.append(time.monotonic())
            if len(got) == 4:
                done.set()
        await nc.subscribe("deliver.rp", cb=cb)
        await api(nc, "$JS.API.CONSUMER.CREATE.RP.R",
                  {"stream_name": "RP", "config": {"name": "R", "deliver_subject": "deliver.rp",
                                                   "replay_policy": "original"}})
        await asyncio.sleep(1.5)
        # Caught up: a new message goes out at once, without the gap since the last one.
        await nc.publish("rp", b"late")
        await asyncio.wait_for(done.wait(), 10)
        await nc.close()
        return got

    got = run(main())
    assert got[1] - got[0] >= 0.45 and got[2] - got[1] >= 0.45


def test_rate_limit_bps_paces_deliveries(start_natsx, tmp_path):
    srv = start_natsx("-js", "-sd", str(tmp_path / "store"))

    async def main():
        nc = await nats.connect(srv.url)
        # 8000 bits/s = 1000 bytes/s; the burst is the stream's max message size (300).
        await api(nc, "$JS.API.STREAM.CREATE.RL",
                  {"name": "RL", "subjects": ["rl"], "max_msg_size": 300})
        for _ in range(6):
            await nc.request("rl", b"x" * 250, timeout=3)
        got: list = []
        done = asyncio.Event()

        async def cb(msg):
            got.append(time.monotonic())
            if len(got) == 6:
                done.set()
        await nc.subscribe("deliver.rl", cb=cb)
        start = time.monotonic()
        r = await api(nc, "$JS.API.CONSUMER.CREATE.RL.L",
                      {"stream_name": "RL", "config": {"name": "L", "deliver_subject": "deliver.rl",
                                                       "rate_limit_bps": 8000}})
        assert r["config"]["rate_limit_bps"] == 8000
        await asyncio.wait_for(done.wait(), 15)
        await nc.close()
        return got[-1] - start

    # 6 x 252 bytes at 1000 B/s with a 300-byte burst: at least ~1.2s.
    assert run(main()) >= 1.0


# ------------------------------------------------------------------------------------- snapshots

async def snapshot(nc, stream: str, **req) -> tuple[dict, bytes, list]:
    """Go's snapshot client side: subscribe, request, ack every chunk that has a reply."""
    inbox = nc.new_inbox()
    chunks: list = []
    statuses: list = []
    done = asyncio.Event()

    async def cb(msg):
        if msg.data:
            chunks.append(msg.data)
            if msg.reply:
                await nc.publish(msg.reply, b"")
            return
        statuses.append(msg.headers)
        done.set()
    sub = await nc.subscribe(inbox, cb=cb)
    resp = await api(nc, f"$JS.API.STREAM.SNAPSHOT.{stream}", dict(req, deliver_subject=inbox))
    if "error" not in resp:
        await asyncio.wait_for(done.wait(), 20)
    await sub.unsubscribe()
    return resp, b"".join(chunks), [len(c) for c in chunks] + statuses


async def restore(nc, stream: str, config: dict, data: bytes, chunk: int = 1000) -> dict:
    r = await api(nc, f"$JS.API.STREAM.RESTORE.{stream}", {"config": config})
    assert r["type"] == "io.nats.jetstream.api.v1.stream_restore_response", r
    if "error" in r:
        return r
    deliver = r["deliver_subject"]
    assert deliver.startswith(f"$JS.SNAPSHOT.RESTORE.{stream}.")
    for i in range(0, len(data), chunk):
        ack = await nc.request(deliver, data[i:i + chunk], timeout=3)
        assert ack.data == b""
    final = await nc.request(deliver, b"", timeout=5)
    return json.loads(final.data)


def test_snapshot_restore_round_trip(start_natsx, tmp_path):
    srv = start_natsx("-js", "-sd", str(tmp_path / "store"))

    async def main():
        nc = await nats.connect(srv.url)
        cfg = {"name": "SN", "subjects": ["sn.>"], "max_msgs_per_subject": 100}
        await api(nc, "$JS.API.STREAM.CREATE.SN", cfg)
        payloads = [os.urandom(300 + i) for i in range(60)]
        for i, p in enumerate(payloads):
            await nc.request(f"sn.{i % 3}", p, headers={"Nats-Msg-Id": f"id{i}"}, timeout=3)
        await api(nc, "$JS.API.STREAM.MSG.DELETE.SN", {"seq": 10})
        await api(nc, "$JS.API.CONSUMER.CREATE.SN.D",
                  {"stream_name": "SN", "config": {"durable_name": "D",
                                                   "ack_policy": "explicit"}})
        for _ in range(5):
            m = await pull(nc, "$JS.API.CONSUMER.MSG.NEXT.SN.D")
            await m.ack_sync()
        before = await api(nc, "$JS.API.STREAM.INFO.SN")
        cinfo = await api(nc, "$JS.API.CONSUMER.INFO.SN.D")

        resp, data, shape = await snapshot(nc, "SN", chunk_size=1024, window_size=2048)
        assert resp["type"] == "io.nats.jetstream.api.v1.stream_snapshot_response"
        assert resp["config"]["name"] == "SN"
        assert resp["state"]["messages"] == 59 and resp["state"]["last_seq"] == 60
        # Full 1KiB chunks acknowledged one window at a time, a short last one, then 204.
        sizes, end = shape[:-1], shape[-1]
        assert all(s == 1024 for s in sizes[:-1]) and 0 < sizes[-1] <= 1024
        assert end is not None and end.get("Status") == "204"

        r = await api(nc, "$JS.API.STREAM.RESTORE.SN", {"config": cfg})
        assert r["error"] == {"code": 400, "err_code": 10130,
                              "description": "stream name already in use, cannot restore"}
        await api(nc, "$JS.API.STREAM.DELETE.SN")
        final = await restore(nc, "SN", resp["config"], data)
        assert final["type"] == "io.nats.jetstream.api.v1.stream_create_response", final
        after = await api(nc, "$JS.API.STREAM.INFO.SN")
        for key in ("messages", "bytes", "first_seq", "last_seq", "num_deleted", "num_subjects"):
            assert after["state"][key] == before["state"][key], key
        assert after["created"] == before["created"]
        for seq in (1, 11, 60):
            got = await api(nc, "$JS.API.STREAM.MSG.GET.SN", {"seq": seq})
            assert got["message"]["subject"] == f"sn.{(seq - 1) % 3}"
        got = await api(nc, "$JS.API.STREAM.MSG.GET.SN", {"seq": 10})
        assert got["error"]["err_code"] == 10037
        restored = await api(nc, "$JS.API.CONSUMER.INFO.SN.D")
        for key in ("delivered", "ack_floor"):
            for seq in ("consumer_seq", "stream_seq"):
                assert restored[key][seq] == cinfo[key][seq] == 5
        assert restored["num_pending"] == cinfo["num_pending"]
        m = await pull(nc, "$JS.API.CONSUMER.MSG.NEXT.SN.D")
        assert m.data == payloads[5]
        # The sequence continues, and the duplicate window came back.
        ack = json.loads((await nc.request("sn.0", b"n", headers={"Nats-Msg-Id": "id59"},
                                           timeout=3)).data)
        assert ack.get("duplicate") is True and ack["seq"] == 60
        ack = json.loads((await nc.request("sn.0", b"n", timeout=3)).data)
        assert ack["seq"] == 61
        await nc.close()
    run(main())


def test_snapshot_restore_errors(start_natsx, tmp_path):
    srv = start_natsx("-js", "-sd", str(tmp_path / "store"))

    async def main():
        nc = await nats.connect(srv.url)
        await api(nc, "$JS.API.STREAM.CREATE.E", {"name": "E", "subjects": ["e"]})
        r = await api(nc, "$JS.API.STREAM.SNAPSHOT.E")
        assert r["error"]["err_code"] == 10003
        r = await api(nc, "$JS.API.STREAM.SNAPSHOT.E", {"deliver_subject": "a.*"})
        assert r["error"] == {"code": 400, "err_code": 10015,
                              "description": "deliver subject not valid"}
        r = await api(nc, "$JS.API.STREAM.SNAPSHOT.NOPE", {"deliver_subject": "x"})
        assert r["error"]["err_code"] == 10059
        r = await api(nc, "$JS.API.STREAM.RESTORE.E2", {"config": {"name": "OTHER"}})
        assert r["error"]["err_code"] == 10056
        # Garbage uploaded: the restore fails and no stream is left behind.
        final = await restore(nc, "G", {"name": "G", "subjects": ["g"]}, b"not a snapshot")
        assert final["error"]["err_code"] == 10062
        r = await api(nc, "$JS.API.STREAM.INFO.G")
        assert r["error"]["err_code"] == 10059
        # A receiver that never acks: the transfer ends with 408 No Flow Response.
        for i in range(200):
            await nc.publish("e", os.urandom(2000))
        await nc.flush()
        inbox = nc.new_inbox()
        got: list = []
        done = asyncio.Event()

        async def cb(msg):
            got.append(msg)
            if not msg.data:
                done.set()
        await nc.subscribe(inbox, cb=cb)
        await api(nc, "$JS.API.STREAM.SNAPSHOT.E",
                  {"deliver_subject": inbox, "chunk_size": 1024, "window_size": 1024})
        await asyncio.wait_for(done.wait(), 15)
        assert got[-1].headers.get("Status") == "408"
        assert len(got) == 2      # one chunk (the window), then the end
        await nc.close()
    run(main())


# ------------------------------------------------------------------------------------- strict

STRICT_CONF = 'jetstream { store_dir: "%s" %s }\n'


def test_strict_refuses_unknown_request_fields(start_natsx, tmp_path):
    """Go 2.11+ (jetstream_api.go unmarshalRequest, strict by default): a field the
    request struct does not have, at any depth, fails with 10025 naming it; keys match
    fields case-insensitively, and maps (metadata) take any key."""
    srv = start_natsx("-c", write_conf(tmp_path, STRICT_CONF % (tmp_path / "store", "")))

    def unknown(name: str) -> dict:
        return {"code": 400, "err_code": 10025,
                "description": f'invalid JSON: json: unknown field "{name}"'}

    async def main():
        nc = await nats.connect(srv.url)
        r = await api(nc, "$JS.API.STREAM.CREATE.S", {"name": "S", "subjects": ["s"], "foo": 1})
        assert r["error"] == unknown("foo")
        r = await api(nc, "$JS.API.STREAM.CREATE.S",
                      {"name": "S", "subjects": ["s"], "sources": [{"name": "X", "bar": 1}]})
        assert r["error"] == unknown("bar")
        r = await api(nc, "$JS.API.STREAM.CREATE.S",
                      {"name": "S", "Subjects": ["s"], "metadata": {"any": "key"}})
        assert "error" not in r, r
        r = await api(nc, "$JS.API.CONSUMER.CREATE.S.C",
                      {"stream_name": "S", "config": {"name": "C", "ack_polcy": "none"}})
        assert r["error"] == unknown("ack_polcy")
        r = await api(nc, "$JS.API.STREAM.MSG.GET.S", {"seq": 1, "last": True})
        assert r["error"] == unknown("last")
        r = await api(nc, "$JS.API.STREAM.INFO.S", {"deleted_details": True, "x": 0})
        assert r["error"] == unknown("x") and r["total"] == 0
        await nc.close()
    run(main())
    assert 'json: unknown field' not in srv.log()


def test_strict_false_decodes_leniently(start_natsx, tmp_path):
    srv = start_natsx("-c", write_conf(tmp_path, STRICT_CONF % (tmp_path / "store",
                                                                 ", strict: false")))

    async def main():
        nc = await nats.connect(srv.url)
        r = await api(nc, "$JS.API.STREAM.CREATE.S", {"name": "S", "subjects": ["s"], "foo": 1})
        assert "error" not in r and r["config"]["name"] == "S", r
        r = await api(nc, "$JS.API.CONSUMER.CREATE.S.C",
                      {"stream_name": "S", "config": {"name": "C", "bogus": 1}})
        assert "error" not in r, r
        await nc.close()
    run(main())
    assert "Invalid JetStream request '$G > $JS.API.STREAM.CREATE.S': json: unknown field \"foo\"" in srv.log()
    assert "Strict:" not in srv.log()


# ------------------------------------------------------------------ sources in other accounts

EXTERNAL_CONF = """
jetstream { store_dir: "%s" }
accounts {
  A: { jetstream: enabled, users: [{user: a, password: a}],
       exports: [ {service: "$JS.API.>"}, {service: "$JS.FC.>"}, {stream: "deliver.>"} ] }
  B: { jetstream: enabled, users: [{user: b, password: b}],
       imports: [ {service: {account: A, subject: "$JS.API.>"}, to: "JS.A.API.>"},
                  {service: {account: A, subject: "$JS.FC.>"}},
                  {stream: {account: A, subject: "deliver.>"}} ] }
}
"""


async def _external_scenario(port: int, storage: str) -> list:
    """Account B mirrors and sources account A's stream through its imports of A's API and
    deliveries (``external``); returns what a client of B then observes."""
    a = await nats.connect(f"nats://a:a@127.0.0.1:{port}")
    b = await nats.connect(f"nats://b:b@127.0.0.1:{port}")
    ext = {"api": "JS.A.API", "deliver": "deliver"}
    out = []
    r = await api(a, "$JS.API.STREAM.CREATE.O", {"name": "O", "subjects": ["o.>"],
                                                 "storage": storage})
    assert "error" not in r, r
    for i in range(3):
        await a.request(f"o.{i}", b"m%d" % i, timeout=3)
    await a.request("o.x", b"deleted", timeout=3)
    await api(a, "$JS.API.STREAM.MSG.DELETE.O", {"seq": 4})
    for name, spec in (("M", {"mirror": {"name": "O", "external": ext}}),
                       ("S", {"sources": [{"name": "O", "external": ext,
                                           "filter_subject": "o.1"}]})):
        r = await api(b, f"$JS.API.STREAM.CREATE.{name}", {"name": name, **spec})
        assert "error" not in r, r
    for i in range(3, 6):
        await a.request(f"o.{i % 2}", b"n%d" % i, timeout=3)

    async def settle(name, count):
        for _ in range(100):
            info = await api(b, f"$JS.API.STREAM.INFO.{name}")
            if info["state"]["messages"] == count:
                return info
            await asyncio.sleep(0.05)
        raise AssertionError((name, info))
    m = await settle("M", 6)
    s = await settle("S", 3)
    out.append({k: m["state"][k] for k in ("messages", "first_seq", "last_seq", "num_deleted")})
    out.append({k: s["state"][k] for k in ("messages", "first_seq", "last_seq")})
    out.append((m["mirror"]["name"], m["mirror"]["external"], m["mirror"]["lag"]))
    for seq in (1, 5, 7):
        got = await api(b, "$JS.API.STREAM.MSG.GET.M", {"seq": seq})
        want = await api(a, "$JS.API.STREAM.MSG.GET.O", {"seq": seq})
        out.append(got["message"] == want["message"])
    for seq in (1, 2, 3):
        got = (await api(b, "$JS.API.STREAM.MSG.GET.S", {"seq": seq}))["message"]
        hdr = base64.b64decode(got["hdrs"]).decode()
        # "O:<hash of the API prefix> <origin seq>", then (2.10+) the filter and destination.
        label = hdr.split("Nats-Stream-Source: ")[1].split("\r\n")[0].split(" ")
        out.append((got["subject"], base64.b64decode(got["data"]), label[:2]))
    # Sourcing consumers are neither listed nor counted on the origin.
    out.append((await api(a, "$JS.API.CONSUMER.NAMES.O"))["total"])
    out.append((await api(a, "$JS.API.STREAM.INFO.O"))["state"]["consumer_count"])
    await a.close()
    await b.close()
    return out


@pytest.mark.skipif(GO_SERVER is None, reason="the Go nats-server oracle is not installed")
@pytest.mark.parametrize("storage,workers", [("file", "1"), ("memory", "2")])
def test_external_mirror_and_source_match_go(start_natsx, start_go, tmp_path, storage, workers):
    ours = start_natsx("--workers", workers,
                       "-c", write_conf(tmp_path, EXTERNAL_CONF % (tmp_path / "a"), "a.conf"))
    go = start_go("-c", write_conf(tmp_path, EXTERNAL_CONF % (tmp_path / "b"), "b.conf"))
    got = run(_external_scenario(ours.port, storage))
    assert got == run(_external_scenario(go.port, storage))
    assert got[-2:] == [0, 0] and got[7][2][0].startswith("O:")


# ------------------------------------------------------------------------- priority groups

async def _pull_one(nc, consumer: str, body: dict, wait: float = 1.0):
    """The first reply to one pull request: (data, headers)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.PG.{consumer}", json.dumps(body).encode(),
                     reply=inbox)
    msg = await sub.next_msg(timeout=wait)
    await sub.unsubscribe()
    return msg.data, dict(msg.headers or {})


@pytest.mark.parametrize("workers", ["1", "2"])
def test_priority_groups_pinned_client_and_overflow(start_natsx, tmp_path, workers):
    """Go 2.11's priority groups: config checks, the pinned client (Nats-Pin-Id, 423s, the
    pin's lease, UNPIN, its advisories and info state) and overflow (min_pending)."""
    srv = start_natsx("-js", "-sd", str(tmp_path / "store"), "--workers", workers)

    async def main():
        nc = await nats.connect(srv.url)
        await api(nc, "$JS.API.STREAM.CREATE.PG", {"name": "PG", "subjects": ["pg.>"]})
        for cfg, code in (({"priority_policy": "pinned_client"}, 10159),
                          ({"priority_policy": "overflow", "priority_groups": ["a b"]}, 10162),
                          ({"priority_policy": "overflow", "priority_groups": [""]}, 10161),
                          ({"priority_groups": ["A"]}, 10196),
                          ({"priority_timeout": 5}, 10197),
                          ({"priority_policy": "pinned_client", "priority_groups": ["A"],
                            "deliver_subject": "x"}, 10178),
                          ({"priority_policy": "bogus", "priority_groups": ["A"]}, 10025)):
            r = await api(nc, "$JS.API.CONSUMER.CREATE.PG.X",
                          {"stream_name": "PG", "config": {"name": "X", **cfg}})
            assert r["error"]["err_code"] == code, (cfg, r)
        r = await api(nc, "$JS.API.CONSUMER.CREATE.PG.PIN", {"stream_name": "PG", "config": {
            "name": "PIN", "ack_policy": "explicit", "priority_policy": "pinned_client",
            "priority_groups": ["A"], "priority_timeout": 1_000_000_000}})
        assert r["priority_groups"] == [{"group": "A", "pinned_ts": "0001-01-01T00:00:00Z"}]
        await api(nc, "$JS.API.CONSUMER.CREATE.PG.OV", {"stream_name": "PG", "config": {
            "name": "OV", "ack_policy": "explicit", "priority_policy": "overflow",
            "priority_groups": ["A"]}})
        advisories = await nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.*.PG.PIN")
        for i in range(4):
            await nc.request(f"pg.{i}", b"m%d" % i, timeout=3)
        wait = {"batch": 1, "expires": 300_000_000}
        for body, text in (({}, "Bad Request - Priority Group missing"),
                           ({"group": "B"}, "Bad Request - Invalid Priority Group"),
                           ({"group": "A", "min_pending": 2},
                            "Bad Request - Not a Overflow Priority consumer")):
            _, hdrs = await _pull_one(nc, "PIN", {**wait, **body})
            assert (hdrs["Status"], hdrs["Description"]) == ("400", text)
        data, hdrs = await _pull_one(nc, "PIN", {**wait, "group": "A"})
        pin = hdrs["Nats-Pin-Id"]
        assert data == b"m0" and len(pin) == 22
        # Another client waits while the pin holds; a wrong id is refused at once.
        _, hdrs = await _pull_one(nc, "PIN", {**wait, "group": "A"})
        assert hdrs["Status"] == "408"
        _, hdrs = await _pull_one(nc, "PIN", {**wait, "group": "A", "id": "nope"})
        assert (hdrs["Status"], hdrs["Description"]) == ("423", "Nats-Pin-Id mismatch")
        data, hdrs = await _pull_one(nc, "PIN", {**wait, "group": "A", "id": pin})
        assert data == b"m1" and hdrs["Nats-Pin-Id"] == pin
        info = await api(nc, "$JS.API.CONSUMER.INFO.PG.PIN")
        assert info["priority_groups"][0]["pinned_client_id"] == pin
        r = await api(nc, "$JS.API.CONSUMER.UNPIN.PG.PIN", {"group": "B"})
        assert r["error"]["err_code"] == 10160
        r = await api(nc, "$JS.API.CONSUMER.UNPIN.PG.PIN", {"group": "A"})
        assert r == {"type": "io.nats.jetstream.api.v1.consumer_unpin_response"}
        # The old pin's request is turned away; a new client gets a new pin, which lapses
        # after priority_timeout without a request from it.
        _, hdrs = await _pull_one(nc, "PIN", {**wait, "group": "A", "id": pin})
        assert (hdrs["Status"], hdrs["Description"]) == ("423", "Nats-Wrong-Pin-Id")
        data, hdrs = await _pull_one(nc, "PIN", {**wait, "group": "A"})
        assert data == b"m2" and hdrs["Nats-Pin-Id"] != pin
        events = []
        for _ in range(4):
            m = await advisories.next_msg(timeout=3)
            events.append(json.loads(m.data))
        assert [(e["type"].rsplit(".", 1)[1], e.get("reason"), e["group"]) for e in events] == [
            ("consumer_group_pinned", None, "A"), ("consumer_group_unpinned", "admin", "A"),
            ("consumer_group_pinned", None, "A"), ("consumer_group_unpinned", "timeout", "A")]
        assert events[0]["pinned_id"] == pin and events[2]["pinned_id"] == hdrs["Nats-Pin-Id"]
        info = await api(nc, "$JS.API.CONSUMER.INFO.PG.PIN")
        assert "pinned_client_id" not in info["priority_groups"][0]
        # Overflow: a request with min_pending is served only that far behind.
        _, hdrs = await _pull_one(nc, "OV", {**wait, "group": "A", "min_pending": 5})
        assert hdrs["Status"] == "408"
        data, _ = await _pull_one(nc, "OV", {**wait, "group": "A", "min_pending": 4})
        assert data == b"m0"
        _, hdrs = await _pull_one(nc, "OV", {**wait, "group": "A", "id": "x"})
        assert hdrs["Description"] == "Bad Request - Not a Pinned Client Priority consumer"
        await nc.close()
    run(main())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_priority_groups_prioritized(start_natsx, tmp_path, workers):
    """Go 2.12's prioritized policy: waiting pull requests are served lowest ``priority``
    first (0-9; a request of a priority waits behind those before it of the same one and
    takes turns with them), whatever order they came in."""
    srv = start_natsx("-js", "-sd", str(tmp_path / "store"), "--workers", workers)

    async def main():
        nc = await nats.connect(srv.url)
        await api(nc, "$JS.API.STREAM.CREATE.PG", {"name": "PG", "subjects": ["pg.>"]})
        r = await api(nc, "$JS.API.CONSUMER.CREATE.PG.PR", {"stream_name": "PG", "config": {
            "name": "PR", "ack_policy": "none", "priority_policy": "prioritized",
            "priority_groups": ["A"]}})
        assert r["config"]["priority_policy"] == "prioritized", r
        wait = {"expires": 3_000_000_000, "group": "A"}
        for body, text in (({"priority": 10}, "Bad Request - Priority must be between 0 and 9"),
                           ({"priority": -1}, "Bad Request - Priority must be between 0 and 9"),
                           ({"group": ""}, "Bad Request - Priority Group missing")):
            _, hdrs = await _pull_one(nc, "PR", {"batch": 1, **wait, **body})
            assert (hdrs["Status"], hdrs["Description"]) == ("400", text)
        # Requests queued before any message: priority 5 (two messages), then 1 (one),
        # then 5 again, then 1 again.
        got = []
        subs = []
        for label, priority, batch in (("a5", 5, 2), ("b1", 1, 1), ("c5", 5, 1),
                                       ("d1", 1, 1)):
            inbox = nc.new_inbox()

            async def cb(msg, label=label):
                if not msg.headers or "Status" not in msg.headers:
                    got.append((label, msg.data))
            subs.append(await nc.subscribe(inbox, cb=cb))
            await nc.publish("$JS.API.CONSUMER.MSG.NEXT.PG.PR", json.dumps(
                {"batch": batch, "priority": priority, **wait}).encode(), reply=inbox)
        await nc.flush()
        info = await api(nc, "$JS.API.CONSUMER.INFO.PG.PR")
        assert info["num_waiting"] == 4
        for i in range(5):
            await nc.request(f"pg.{i}", b"m%d" % i, timeout=3)
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Priority 1 first in arrival order, then priority 5 taking turns: a5, c5, a5.
        assert got == [("b1", b"m0"), ("d1", b"m1"), ("a5", b"m2"), ("c5", b"m3"),
                       ("a5", b"m4")]
        await nc.close()
    run(main())
