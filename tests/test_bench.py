"""natsx-bench: the client protocol parser, the counting core (both twins), histograms,
and a short run of every workload against a real server.

The smoke runs take their server from the ``server_cmd`` fixture: its parameters are the
keys of ``SERVER_COMMANDS`` (the Go nats-server here; add natsx to run them against it
too). They assert counts, never speed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsx._speedups import NO_EXTENSIONS, compiled, load
from natsx.bench import cli, histogram, report, workloads
from natsx.bench.conn import BenchError, ConnectOptions, encode_seed, nkey_from_seed, parse_url
from natsx.bench.histogram import Histogram, bucket_index, bucket_range
from natsx.bench.servers import GO_DEFAULT, ServerProcess, find_natsx, free_port
from natsx.protocol.client_parser import (
    ClientParser,
    Err,
    HMsg,
    Info,
    Msg,
    Ok,
    Ping,
    Pong,
    ProtocolError,
    parse_headers,
)

# -- twins ----------------------------------------------------------------------------------


@pytest.fixture(params=["compiled", "pure"])
def bc(request):
    """The benchclient module, once per twin."""
    if request.param == "compiled":
        if NO_EXTENSIONS:
            pytest.skip("NATSX_NO_EXTENSIONS is set")
        if not compiled("benchclient"):
            pytest.skip("compiled benchclient missing (test_compiled_benchclient_loads fails)")
        return load("benchclient", pure=False)
    return load("benchclient", pure=True)


def test_compiled_benchclient_loads():
    if NO_EXTENSIONS:
        pytest.skip("NATSX_NO_EXTENSIONS is set: the pure twin is expected")
    assert compiled("benchclient"), (
        "natsx._speedups._benchclient did not import; build it "
        "(cythonize -i natsx/_speedups/_benchclient.pyx) or set NATSX_NO_EXTENSIONS=1"
    )
    assert load("benchclient").__name__ == "natsx._speedups._benchclient"


# -- a model of the server byte stream ------------------------------------------------------

_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=6)
_subject = st.lists(_token, min_size=1, max_size=4).map(".".join)
_sid = st.integers(1, 10**6).map(str)
_payload = st.binary(max_size=40) | st.sampled_from([b"\r\n", b"MSG x 1 2\r\n", b"\n\n", b"PING\r\n"])
_space = st.sampled_from([" ", "  ", "\t", " \t"])


@st.composite
def _msg(draw):
    subject, sid = draw(_subject), draw(_sid)
    reply = draw(st.none() | _subject)
    payload = draw(_payload)
    sp = draw(_space)
    args = [subject, sid] + ([reply] if reply else []) + [str(len(payload))]
    wire = ("MSG" + sp + sp.join(args) + "\r\n").encode() + payload + b"\r\n"
    return wire, Msg(subject, sid, reply, payload)


@st.composite
def _hmsg(draw):
    subject, sid = draw(_subject), draw(_sid)
    reply = draw(st.none() | _subject)
    status = draw(st.none() | st.sampled_from(["404 No Messages", "408 Request Timeout", "503"]))
    if status:
        headers = f"NATS/1.0 {status}\r\n\r\n".encode()
        payload = b""
    else:
        headers = f"NATS/1.0\r\nBench: {draw(_token)}\r\n\r\n".encode()
        payload = draw(_payload)
    total = len(headers) + len(payload)
    args = [subject, sid] + ([reply] if reply else []) + [str(len(headers)), str(total)]
    wire = ("HMSG " + " ".join(args) + "\r\n").encode() + headers + payload + b"\r\n"
    return wire, HMsg(subject, sid, reply, headers, payload)


_control = st.sampled_from(
    [
        (b"PING\r\n", Ping()),
        (b"PONG\r\n", Pong()),
        (b"+OK\r\n", Ok()),
        (b"ping\r\n", Ping()),
        (b"-ERR 'Slow Consumer'\r\n", Err("Slow Consumer")),
        (b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n", Err('Permissions Violation for Publish to "x"')),
        (b'INFO {"server_id":"X","max_payload":1048576}\r\n', Info({"server_id": "X", "max_payload": 1048576})),
    ]
)

_frames = st.lists(st.one_of(_msg(), _hmsg(), _control), max_size=25)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts, prev = [], 0
    for p in points + [len(data)]:
        parts.append(data[prev:p])
        prev = p
    return parts


# -- client_parser --------------------------------------------------------------------------


def test_client_parser_events():
    p = ClientParser()
    evs = p.feed(
        b'INFO {"server_id":"S","headers":true}\r\n+OK\r\nPING\r\nMSG foo.bar 7 5\r\nhello\r\n'
        b"MSG foo 1  2\r\nhi\r\nHMSG foo 9 _INBOX.x 16 16\r\nNATS/1.0 503\r\n\r\n\r\n-ERR 'Unknown Subject'\r\nPONG\r\n"
    )
    assert evs == [
        Info({"server_id": "S", "headers": True}),
        Ok(),
        Ping(),
        Msg("foo.bar", "7", None, b"hello"),
        Msg("foo", "1", None, b"hi"),
        HMsg("foo", "9", "_INBOX.x", b"NATS/1.0 503\r\n\r\n", b""),
        Err("Unknown Subject"),
        Pong(),
    ]
    assert p.buffered == b""


def test_client_parser_keeps_partial_frames():
    p = ClientParser()
    assert p.feed(b"MSG foo 1 5\r\nhel") == []
    assert p.buffered == b"MSG foo 1 5\r\nhel"
    assert p.feed(b"lo\r") == []
    assert p.feed(b"\n") == [Msg("foo", "1", None, b"hello")]


@pytest.mark.parametrize(
    "bad",
    [b"FOO bar\r\n", b"MSG foo 1 x\r\nabc\r\n", b"MSG foo\r\n", b"MSG foo 1 3\r\nabcXY", b"HMSG a 1 5 3\r\n"],
)
def test_client_parser_rejects_garbage(bad):
    with pytest.raises(ProtocolError):
        ClientParser().feed(bad)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(frames=_frames, cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_client_parser_any_split_gives_the_same_events(frames, cuts):
    data = b"".join(w for w, _ in frames)
    expected = [e for _, e in frames]
    p = ClientParser()
    got = []
    for part in _split(data, cuts):
        got.extend(p.feed(part))
    assert got == expected
    assert p.buffered == b""


def test_parse_headers():
    assert parse_headers(b"NATS/1.0 404 No Messages\r\n\r\n") == (404, "No Messages", {})
    status, desc, h = parse_headers(b"NATS/1.0\r\nA: 1\r\nA: 2\r\nNats-Stream: S\r\n\r\n")
    assert status is None and desc == ""
    assert h == {"A": ["1", "2"], "Nats-Stream": ["S"]}


# -- the counting core ----------------------------------------------------------------------


def _expected_counts(frames):
    """What a FrameCounter(echo=True) must report for these frames, and its output."""
    c = dict(msgs=0, nbytes=0, pings=0, pongs=0, oks=0, infos=0, statuses=0, err_count=0)
    last_err = ""
    out = []
    for _, ev in frames:
        if isinstance(ev, Msg) or (isinstance(ev, HMsg) and not (ev.payload == b"" and ev.headers[9:12].isdigit())):
            c["msgs"] += 1
            c["nbytes"] += len(ev.payload)
            if ev.reply:
                out.append(b"PUB %s %d\r\n%s\r\n" % (ev.reply.encode(), len(ev.payload), ev.payload))
        elif isinstance(ev, HMsg):
            c["statuses"] += 1
        elif isinstance(ev, Ping):
            c["pings"] += 1
            out.append(b"PONG\r\n")
        elif isinstance(ev, Pong):
            c["pongs"] += 1
        elif isinstance(ev, Ok):
            c["oks"] += 1
        elif isinstance(ev, Info):
            c["infos"] += 1
        elif isinstance(ev, Err):
            c["err_count"] += 1
            last_err = ev.text
    return c, last_err, b"".join(out)


def _counts(fc):
    return {k: getattr(fc, k) for k in ("msgs", "nbytes", "pings", "pongs", "oks", "infos", "statuses", "err_count")}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(frames=_frames, cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_frames_split_anywhere_are_counted_once(bc, frames, cuts):
    data = b"".join(w for w, _ in frames)
    counts, last_err, out = _expected_counts(frames)
    fc = bc.FrameCounter(echo=True)
    got_out = []
    returned = 0
    for part in _split(data, cuts):
        returned += fc.feed(part)
        got_out.append(fc.take_output())
    assert _counts(fc) == counts
    assert returned == counts["msgs"]
    assert fc.last_err == last_err
    assert b"".join(got_out) == out
    assert fc.buffered == 0


def test_split_inside_every_byte_of_a_frame(bc):
    frame = b"HMSG a.b 1 r.5 12 20\r\nNATS/1.0\r\n\r\n" + b"y" * 8 + b"\r\n"
    data = b"PING\r\n" + frame * 3
    for i in range(len(data) + 1):
        fc = bc.FrameCounter()
        fc.feed(data[:i])
        fc.feed(memoryview(bytearray(data[i:] + b"xx")), len(data) - i)
        assert (fc.msgs, fc.nbytes, fc.pings) == (3, 24, 1), i


def test_counter_rejects_garbage(bc):
    with pytest.raises(bc.ProtocolError):
        bc.FrameCounter().feed(b"WHAT\r\n")
    with pytest.raises(bc.ProtocolError):
        bc.FrameCounter().feed(b"MSG a 1 2\r\nabcd")


def test_statuses_errors_and_err_text(bc):
    fc = bc.FrameCounter(scan_errors=True)
    fc.feed(
        b"HMSG _I.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
        b'MSG _I.2 1 26\r\n{"stream":"S", "seq":1}xxx\r\n'
        b'MSG _I.3 1 45\r\n{"error":{"code":503,"description":"nope"}}xx\r\n'
        b"-ERR 'Authorization Violation'\r\n"
    )
    assert (fc.statuses, fc.last_status, fc.msgs, fc.errors, fc.err_count) == (1, 503, 2, 1, 1)
    assert fc.first_error.startswith(b'{"error"')
    assert fc.last_err == "Authorization Violation"


def _as_msgs(pubs: bytes) -> bytes:
    """Turn a buffer of PUB frames into the MSG frames a subscriber would read."""
    out = []
    p = ClientParser()
    data = pubs.replace(b"PUB ", b"MSG ", -1)
    # PUB has no sid; insert one after the subject to make a valid MSG.
    pos = 0
    while pos < len(data):
        nl = data.index(b"\r\n", pos)
        args = data[pos + 4 : nl].split()
        size = int(args[-1])
        line = b"MSG " + args[0] + b" 1 " + b" ".join(args[1:]) + b"\r\n"
        start = nl + 2
        out.append(line + data[start : start + size] + b"\r\n")
        pos = start + size + 2
    joined = b"".join(out)
    assert all(isinstance(e, Msg) for e in p.feed(joined))
    return joined


def test_tags_track_every_message_once(bc):
    pubs = [bc.PubBuilder(b"t", 16, pub_id=i) for i in range(3)]
    data = b"".join(_as_msgs(p.build(50)) for p in pubs)
    fc = bc.FrameCounter(track=3)
    fc.feed(data)
    bits = int.from_bytes(fc.bitmap(), "little")
    assert bits.bit_count() == 150 and fc.dups == 0
    fc.feed(data[: len(data) // 3])  # publisher 0's messages again
    assert fc.dups == 50
    fc.feed(b"MSG t 1 8\r\n" + (1 << 62).to_bytes(8, "little") + b"\r\n")
    assert fc.foreign == 1


def test_builders_of_both_twins_agree():
    c = load("benchclient", pure=False) if compiled("benchclient") else None
    if c is None:
        pytest.skip("compiled benchclient missing")
    p = load("benchclient", pure=True)
    cases = [
        dict(subject=b"a.b", size=0),
        dict(subject=b"a", size=7),
        dict(subject=b"a", size=100, pub_id=5),
        dict(subject=b"a", size=30, reply=b"r", reply_seq=True),
        dict(subject=b"k.", size=9, keys=3, reply=b"in", reply_seq=True),
        dict(subject=b"h", size=12, headers=b"NATS/1.0\r\nX: 1\r\n\r\n", reply=b"r"),
        dict(subject=b"f", size=0, payload=b'{"batch":1}'),
    ]
    for kw in cases:
        bc_, bp = c.PubBuilder(**kw), p.PubBuilder(**kw)
        assert bc_.build(7) == bp.build(7), kw
        assert bc_.build(3) == bp.build(3), kw
        assert bc_.frame_size == bp.frame_size


def test_builder_frames(bc):
    b = bc.PubBuilder(b"$KV.b.k", 8, keys=2, reply=b"_I", reply_seq=True, pub_id=1)
    assert b.build(3) == (
        b"PUB $KV.b.k0 _I.0 8\r\n" + (1 << 48).to_bytes(8, "little") + b"\r\n"
        b"PUB $KV.b.k1 _I.1 8\r\n" + ((1 << 48) | 1).to_bytes(8, "little") + b"\r\n"
        b"PUB $KV.b.k0 _I.2 8\r\n" + ((1 << 48) | 2).to_bytes(8, "little") + b"\r\n"
    )
    assert b.seq == 3


def test_latency_from_payload_and_from_ring(bc):
    b = bc.PubBuilder(b"req", 16, reply=b"_I", reply_seq=True, stamp=True, ring=16)
    frames = _frames_of(b.build(4))
    time.sleep(0.002)
    # What a replier echoes: each request's payload, on the request's reply subject.
    echoed = b"".join(
        b"MSG _I.%d 1 16\r\n" % i + f[f.index(b"\r\n") + 2 :] for i, f in enumerate(frames)
    )
    for mode in (bc.LAT_PAYLOAD, bc.LAT_RING):
        fc = bc.FrameCounter(latency=mode, source=b)
        fc.feed(echoed)
        assert fc.lat_count == 4
        assert 2_000_000 <= fc.lat_min <= fc.lat_max < 5_000_000_000
        assert sum(c for _, c in fc.histogram()) == 4


def _frames_of(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        nl = data.index(b"\r\n", pos)
        size = int(data[pos:nl].split()[-1])
        end = nl + 2 + size + 2
        out.append(data[pos:end])
        pos = end
    return out


def test_ack_reply(bc):
    fc = bc.FrameCounter(ack=b"+ACK")
    fc.feed(b"MSG s 1 $JS.ACK.S.c.1.1.1.0.0 3\r\nabc\r\nMSG s 1 3\r\nabc\r\n")
    assert fc.take_output() == b"PUB $JS.ACK.S.c.1.1.1.0.0 4\r\n+ACK\r\n"


# -- histogram ------------------------------------------------------------------------------


@given(st.integers(0, 2**63 - 1))
def test_bucket_holds_its_value(v):
    lo, hi = bucket_range(bucket_index(v))
    assert lo <= v <= hi
    assert hi - lo <= max(lo // 64, 0) + 1


def test_bucket_layout_is_shared_by_both_twins():
    twins = [load("benchclient", pure=True)]
    if compiled("benchclient"):
        twins.append(load("benchclient", pure=False))
    values = [0, 1, 127, 128, 129, 255, 256, 1000, 123_456, 10**9, 2**40 + 7, 2**63 - 1]
    for m in twins:
        assert [m.bucket_index(v) for v in values] == [bucket_index(v) for v in values]
        assert m.NBUCKETS == histogram.NBUCKETS
        assert max(bucket_index(v) for v in values) < m.NBUCKETS


def test_histogram_percentiles():
    h = Histogram()
    for v in range(1, 100_001):
        h.record(v * 1000)
    assert h.count == 100_000 and h.min == 1000 and h.max == 100_000_000
    for p in (50, 90, 99, 99.9):
        exact = p / 100 * 100_000_000
        assert abs(h.percentile(p) - exact) / exact < 0.01, p
    assert h.percentile(100) == h.max
    other = Histogram()
    other.record(5)
    h.merge(other)
    assert h.min == 5 and h.count == 100_001
    assert Histogram.from_json(h.to_json()).summary() == pytest.approx(h.summary())


# -- connection helpers ---------------------------------------------------------------------


def test_parse_url():
    a = parse_url("tls://u:p%40ss@example.com:4333,nats://other")
    assert (a.host, a.port, a.tls, a.user, a.password, a.token) == ("example.com", 4333, True, "u", "p@ss", None)
    b = parse_url("s3cr3t@127.0.0.1")
    assert (b.port, b.token, b.user) == (4222, "s3cr3t", None)
    with pytest.raises(BenchError):
        parse_url("http://x")


def test_nkey_seed_round_trip():
    import nacl.signing

    raw = bytes(range(32))
    seed = encode_seed(20 << 3, raw)
    assert seed.startswith("SU")
    public, sign = nkey_from_seed(seed)
    assert public.startswith("U") and len(public) == 56
    sig = sign(b"nonce")
    nacl.signing.SigningKey(raw).verify_key.verify(b"nonce", sig)
    with pytest.raises(BenchError):
        nkey_from_seed(seed[:-1] + ("A" if seed[-1] != "A" else "B"))


# -- smoke runs against a real server -------------------------------------------------------


def _go_command() -> list[str]:
    if not os.path.exists(GO_DEFAULT):
        pytest.skip(f"the Go nats-server is not installed at {GO_DEFAULT}")
    return [GO_DEFAULT]


#: Server commands the smoke runs use, by fixture id; each takes the nats-server flags.
SERVER_COMMANDS = {"go": _go_command}


@pytest.fixture(scope="module", params=sorted(SERVER_COMMANDS))
def server_cmd(request) -> list[str]:
    """The command of the server under test (without port, address and store flags)."""
    return SERVER_COMMANDS[request.param]()


@pytest.fixture(scope="module")
def server(server_cmd):
    with ServerProcess("under-test", server_cmd, jetstream=True) as srv:
        yield srv


def _cfg(server, bc, **kw) -> workloads.BenchConfig:
    base = dict(
        connect=ConnectOptions(url=server.url),
        duration=1.0,
        timeout=5.0,
        pure=bc.__name__.endswith("_py"),
    )
    base.update(kw)
    return workloads.BenchConfig(**base)


def _ok(phases):
    for p in phases:
        assert p.ok, (p.label, p.errors)
    return phases


def test_smoke_pub(server, bc):
    (p,) = _ok(workloads.run("pub", _cfg(server, bc, msgs=20_000, pubs=2, size=16)))
    assert sum(s.msgs for s in p.pubs) == 20_000
    assert [s.msgs for s in p.pubs] == [10_000, 10_000]


def test_smoke_pubsub(server, bc):
    (p,) = _ok(workloads.run("pubsub", _cfg(server, bc, msgs=20_000, pubs=2, subs=2, size=16, verify=True)))
    assert [s.msgs for s in p.subs] == [20_000, 20_000]
    assert p.headline() > 0


def test_smoke_fanout(server, bc):
    (p,) = _ok(workloads.run("fanout", _cfg(server, bc, msgs=10_000, subject="bench.fan", headers=True)))
    assert [s.msgs for s in p.subs] == [10_000] * 4
    assert p.params["subjects"] == ["bench.fan", "bench.*", "bench.>", "bench.fan"]


def test_smoke_queue(server, bc):
    (p,) = _ok(workloads.run("queue", _cfg(server, bc, msgs=20_000, pubs=2, size=32)))
    assert sum(s.msgs for s in p.subs) == 20_000
    assert any("exactly once" in c for c in p.checks)


def test_smoke_reqrep(server, bc):
    (p,) = _ok(workloads.run("reqrep", _cfg(server, bc, msgs=1_000, size=32)))
    assert p.pubs[0].msgs == 1_000
    assert p.latency.count == 1_000
    (p,) = _ok(workloads.run("reqrep", _cfg(server, bc, msgs=2_000, pubs=2, subs=2, inflight=8, size=8)))
    assert sum(s.msgs for s in p.pubs) == 2_000 and sum(s.msgs for s in p.subs) == 2_000
    assert p.latency.count == 2_000


def test_smoke_js_pub(server, bc):
    phases = _ok(workloads.run("js-pub", _cfg(server, bc, msgs=1_000, windows=(1, 64), size=64)))
    assert [p.name for p in phases] == ["sync", "async-64"]
    for p in phases:
        assert p.pubs[0].msgs == 1_000 and p.latency.count == 1_000
        assert p.params["stored"] >= 1_000


def test_smoke_js_pull(server, bc):
    fill, fetch = _ok(workloads.run("js-pull", _cfg(server, bc, msgs=3_000, storage="memory", batch=50, subs=2)))
    assert fill.pubs[0].msgs == 3_000
    stored = fetch.params["stored"]
    assert stored >= 3_000
    assert sum(s.msgs for s in fetch.subs) == stored
    assert any("acknowledged" in c for c in fetch.checks)


def test_smoke_kv(server, bc):
    put, get = _ok(workloads.run("kv", _cfg(server, bc, msgs=500, keys=50, storage="memory", size=24)))
    assert put.pubs[0].msgs == 500 and get.pubs[0].msgs == 500
    assert get.pubs[0].nbytes == 500 * 24


def test_smoke_errors_are_reported_not_hidden(server, bc):
    cfg = _cfg(server, bc, msgs=10, connect=ConnectOptions(url=f"nats://127.0.0.1:{free_port()}", timeout=1))
    with pytest.raises(BenchError, match="cannot connect"):
        workloads.run("pub", cfg)


# -- the command ----------------------------------------------------------------------------


def test_cli_json_and_plot(server, capsys, tmp_path):
    rc = cli.main(["pub", "reqrep", "--url", server.url, "--msgs", "2000", "--json", "-", "-q"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["workload"] for r in doc["runs"]] == ["pub", "reqrep"]
    assert doc["runs"][1]["phases"][0]["latency_ns"]["count"] == 2000
    rc = cli.main(["pub", "--url", server.url, "--msgs", "100", "-q", "--plot", str(tmp_path / "p.png")])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert rc == 2
        assert "needs matplotlib" in capsys.readouterr().err
    else:
        assert rc == 0 and (tmp_path / "p.png").stat().st_size > 0


def test_cli_table(server, capsys):
    rc = cli.main(["pubsub", "--url", server.url, "--msgs", "5000", "--size", "1k", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Pub/Sub" in out and "ok: every subscriber received all 5,000 messages" in out


def test_summary_ratio():
    from natsx.bench.results import Phase, Run, Sample

    def run(server, rate):
        p = Phase("pub", "pub", 16, pubs=[Sample(int(rate), int(rate) * 16, 0, 1_000_000_000)])
        return Run("pub", server, "u", 0, phases=[p])

    rows = report.summarize([run("natsx", 200), run("go", 100), run("natsx", 300), run("go", 100)], ["natsx", "go"])
    assert rows[0]["servers"]["natsx"]["median"] == 250 and rows[0]["ratio"] == 2.5
    assert "2.50x" in report.render_summary(rows, ["natsx", "go"], "t")


def _fake_natsx(tmp_path) -> str:
    """A stand-in for natsx (the Go server without --workers) to test the compare plumbing."""
    path = tmp_path / "fake-natsx"
    path.write_text(
        "#!/bin/sh\n"
        'args=""\nskip=0\nfor a in "$@"; do\n'
        '  if [ $skip = 1 ]; then skip=0; continue; fi\n'
        '  if [ "$a" = "--workers" ]; then skip=1; continue; fi\n'
        '  args="$args $a"\ndone\n'
        f"exec {GO_DEFAULT} $args\n"
    )
    path.chmod(0o755)
    return str(path)


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.add(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_compare_runs_both_servers_and_stops_them(tmp_path, capsys):
    _go_command()
    before = _children(os.getpid())
    rc = cli.main(
        ["pub", "js-pub", "--compare", "--natsx", _fake_natsx(tmp_path), "--reps", "2", "--msgs", "300",
         "--window", "8", "--json", str(tmp_path / "r.json"), "-q"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [(r["workload"], r["server"]) for r in doc["runs"]] == [
        ("pub", "natsx"), ("pub", "go"), ("pub", "go"), ("pub", "natsx"),
        ("js-pub", "natsx"), ("js-pub", "go"), ("js-pub", "go"), ("js-pub", "natsx"),
    ]
    assert {row["phase"] for row in doc["summary"]} == {"pub", "js-pub/async-8"}
    assert all(row["ratio"] for row in doc["summary"])
    assert "natsx/go" in out
    assert _children(os.getpid()) <= before


def test_compare_stops_servers_on_ctrl_c(tmp_path):
    _go_command()
    proc = subprocess.Popen(
        [sys.executable, "-m", "natsx.bench", "pub", "--compare", "--natsx", _fake_natsx(tmp_path),
         "--duration", "60", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        deadline = time.monotonic() + 20
        while len(_children(proc.pid)) < 2:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "servers did not start"
            time.sleep(0.05)
        servers = _children(proc.pid)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 130
        assert b"interrupted" in proc.stderr.read()
        assert not [pid for pid in servers if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_find_natsx_prefers_explicit_path():
    assert find_natsx("/x/natsx") == ["/x/natsx"]
    assert find_natsx()[0]


# -- authentication and TLS (the handshake every workload goes through) ---------------------


def _run_pub(url: str, **conn) -> None:
    cfg = workloads.BenchConfig(connect=ConnectOptions(url=url, timeout=3, **conn), msgs=100, duration=1.0)
    (p,) = _ok(workloads.run("pub", cfg))
    assert p.pubs[0].msgs == 100


def test_user_password_and_token(tmp_path):
    go = _go_command()
    with ServerProcess("userpass", [*go, "--user", "bench", "--pass", "s3cret"]) as srv:
        _run_pub(srv.url, user="bench", password="s3cret")
        _run_pub(srv.url.replace("nats://", "nats://bench:s3cret@"))
        with pytest.raises(BenchError, match="Authorization Violation"):
            _run_pub(srv.url, user="bench", password="wrong")
    with ServerProcess("token", [*go, "--auth", "t0ken"]) as srv:
        _run_pub(srv.url, token="t0ken")
        _run_pub(srv.url.replace("nats://", "nats://t0ken@"))


def test_nkey_signs_the_nonce(tmp_path):
    go = _go_command()
    seed = encode_seed(20 << 3, os.urandom(32))
    public, _ = nkey_from_seed(seed)
    conf = tmp_path / "nkey.conf"
    conf.write_text(f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n")
    (tmp_path / "user.nk").write_text(seed + "\n")
    with ServerProcess("nkey", [*go, "-c", str(conf)]) as srv:
        _run_pub(srv.url, nkey=str(tmp_path / "user.nk"))
        _run_pub(srv.url, nkey=seed)
        with pytest.raises(BenchError, match="Authorization Violation"):
            _run_pub(srv.url, nkey=encode_seed(20 << 3, os.urandom(32)))


def _make_certs(d) -> tuple[str, str, str]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("bench CA")).issuer_name(name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (d / "ca.pem", d / "server.pem", d / "server-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tuple(str(p) for p in paths)


def test_tls(tmp_path):
    go = _go_command()
    ca, cert, key = _make_certs(tmp_path)
    with ServerProcess("tls", [*go, "--tls", "--tlscert", cert, "--tlskey", key]) as srv:
        _run_pub(srv.url, tls_ca=ca)
        _run_pub(srv.url.replace("nats://", "tls://"), tls_ca=ca)
        cfg = workloads.BenchConfig(connect=ConnectOptions(url=srv.url, tls_ca=ca), msgs=2_000, duration=1.0)
        (p,) = _ok(workloads.run("pubsub", cfg))
        assert p.subs[0].msgs == 2_000
        with pytest.raises(BenchError, match="TLS"):
            _run_pub(srv.url)


# -- placement: both sides on the same worker or on different ones --------------------------


class _FakeConn:
    def __init__(self, cid: int) -> None:
        self.info = {"client_id": cid}
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _opener(cids):
    it = iter(cids)
    opened = []

    def opener():
        conn = _FakeConn(next(it))
        opened.append(conn)
        return conn
    return opener, opened


def test_worker_of_follows_the_client_id_stride():
    from natsx.bench.placement import worker_of

    # Worker i hands out i+1, i+1+n, i+1+2n... (natsx.server.worker._allocate_cid).
    assert [worker_of({"client_id": c}, 2) for c in (1, 2, 3, 4, 2_000_001)] == [0, 1, 0, 1, 0]
    assert [worker_of({"client_id": c}, 4) for c in (1, 6, 11, 16)] == [0, 1, 2, 3]
    assert worker_of({"client_id": 7}, 1) == 0
    assert worker_of({}, 2) is None


def test_placer_same_and_cross_reconnect_until_the_worker_fits():
    from natsx.bench.placement import RECEIVER, SENDER, Placer

    # 4 workers; cids 3, 4, 5, 7 live on workers 2, 3, 0, 2.
    p = Placer("same", 4)
    opener, opened = _opener([3, 4, 5, 7])
    assert p.open(opener, RECEIVER).info["client_id"] == 3      # fixes the home: worker 2
    assert p.open(opener, SENDER).info["client_id"] == 7        # 4 and 5 were elsewhere
    assert [c.closed for c in opened] == [False, True, True, False]
    assert p.describe() == "same (receivers on worker 2, senders on worker 2)"

    p = Placer("cross", 2)
    opener, opened = _opener([2, 4, 1])                          # workers 1, 1, 0
    assert p.open(opener, RECEIVER).info["client_id"] == 2
    assert p.open(opener, SENDER).info["client_id"] == 1
    assert [c.closed for c in opened] == [False, True, False]
    assert p.describe() == "cross (receivers on worker 1, senders on worker 0)"


def test_placer_gives_up_with_a_clear_error():
    from natsx.bench.placement import RECEIVER, SENDER, Placer

    p = Placer("cross", 2, max_attempts=5)
    opener, opened = _opener([1] + [3, 5, 7, 9, 11])             # every one on worker 0
    p.open(opener, RECEIVER)
    with pytest.raises(BenchError, match=r"placement cross: no sender connection landed on "
                                         r"a worker other than 0 in 5 attempts \(worker 0: 5\)"):
        p.open(opener, SENDER)
    assert all(c.closed for c in opened[1:])


def test_placer_is_a_no_op_with_one_worker():
    from natsx.bench.placement import RECEIVER, SENDER, Placer

    p = Placer("cross", 1)
    opener, opened = _opener([1, 2])
    p.open(opener, RECEIVER)
    p.open(opener, SENDER)
    assert not any(c.closed for c in opened)
    assert p.describe() == "cross (no-op: one worker)"
    with pytest.raises(BenchError, match="unknown placement"):
        Placer("elsewhere", 2)


def test_cli_placement_needs_the_worker_count_of_a_url(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["pubsub", "--placement", "cross", "--msgs", "10"])
    assert exc.value.code == 2
    assert "--server-workers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["pubsub", "--placement", "sideways", "--msgs", "10"])


@pytest.fixture(scope="module")
def natsx_two_workers():
    """natsx --workers 2 with its monitoring port (to check placement against /connz)."""
    http_port = free_port()
    with ServerProcess("natsx", [sys.executable, "-m", "natsx", "-m", str(http_port)],
                       workers=2) as srv:
        yield types.SimpleNamespace(url=srv.url, http_port=http_port)


def _connz_workers(srv) -> dict[int, int]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}/connz?worker=1&limit=1000",
                                timeout=10) as r:
        return {c["cid"]: c["worker"] for c in json.load(r)["connections"]}


def test_placement_lands_where_connz_says(natsx_two_workers):
    from natsx.bench.conn import Connection
    from natsx.bench.placement import RECEIVER, SENDER, Placer

    srv = natsx_two_workers
    opts = ConnectOptions(url=srv.url)
    for mode in ("same", "cross"):
        p = Placer(mode, 2)
        conns = [p.open(lambda: Connection.open(opts), side)
                 for side in (RECEIVER, SENDER, SENDER, RECEIVER)]
        try:
            deadline = time.monotonic() + 10
            while True:
                where = _connz_workers(srv)
                if all(c.info["client_id"] in where for c in conns) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            got = [where[c.info["client_id"]] for c in conns]
            if mode == "same":
                assert len(set(got)) == 1, got
            else:
                assert got[0] == got[3] and got[1] != got[0] and got[2] != got[0], got
        finally:
            for c in conns:
                c.close()


@pytest.mark.parametrize("mode", ["same", "cross"])
def test_smoke_placed_pubsub_and_reqrep_on_natsx(natsx_two_workers, bc, mode):
    cfg = _cfg(natsx_two_workers, bc, msgs=2_000, duration=0, size=16, placement=mode,
               server_workers=2)
    (p,) = _ok(workloads.run("pubsub", cfg))
    assert p.label == f"pubsub@{mode}" and p.subs[0].msgs == 2_000
    recv, send = p.params["placement"].split("receivers on worker ")[1].split(", senders on worker ")
    send = send.rstrip(")")
    assert (recv == send) == (mode == "same"), p.params["placement"]
    (p,) = _ok(workloads.run("reqrep", attrs.evolve(cfg, msgs=500)))
    assert p.label == f"reqrep@{mode}" and p.latency.count == 500
    with pytest.raises(BenchError, match="placement applies to"):
        workloads.run("pub", cfg)


@pytest.mark.parametrize("mode", ["same", "cross"])
def test_placed_jetstream_workloads_put_clients_by_the_stream_worker(bc, mode):
    # A JetStream workload's receiving side is its stream, run by the worker its name
    # hashes to (natsx.jetstream.shards): "same" opens the clients on that worker, "cross"
    # on the other; the worker a connection landed on is the one its client id names
    # (test_placement_lands_where_connz_says).
    from natsx.jetstream.shards import stream_owner

    with ServerProcess("natsx", [sys.executable, "-m", "natsx"], workers=2,
                       jetstream=True) as srv:
        cfg = _cfg(srv, bc, msgs=300, duration=0, size=16, windows=(8,), placement=mode,
                   server_workers=2)
        for workload, stream in (("js-pub", "BENCH"), ("kv", "KV_bench")):
            phases = _ok(workloads.run(workload, attrs.evolve(cfg, keys=10)))
            owner = stream_owner("$G", stream, 2)
            for p in phases:
                assert p.label.endswith(f"@{mode}"), p.label
                where = p.params["placement"]
                head, clients = where.split(", clients on worker ")
                assert head == f"{mode} (stream {stream} on worker {owner}", where
                assert (clients.rstrip(")") == str(owner)) == (mode == "same"), where
    with pytest.raises(BenchError, match="global account only"):
        workloads.run("js-pub", attrs.evolve(cfg, connect=ConnectOptions(url=srv.url,
                                                                        token="t")))


def test_compare_same_and_cross_against_go_in_one_run(tmp_path, capsys):
    # The acceptance run of the multi-process runtime, with tiny counts: 1:1 pub/sub
    # throughput and request/reply latency, both sides on one worker and on two, next to
    # the Go server (where placement is a no-op and says so).
    _go_command()
    before = _children(os.getpid())
    rc = cli.main(["pubsub", "reqrep", "--compare", "--workers-natsx", "2", "--placement",
                   "same,cross", "--reps", "1", "--msgs", "500", "--size", "16",
                   "--json", str(tmp_path / "r.json"), "-q"])
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = json.loads((tmp_path / "r.json").read_text())
    labels = ["pubsub@same", "pubsub@cross", "reqrep@same", "reqrep@cross"]
    assert [row["phase"] for row in doc["summary"]] == labels
    assert all(row["ratio"] for row in doc["summary"])
    assert all(row["servers"][s]["p50_median"] for row in doc["summary"][2:] for s in ("natsx", "go"))
    for run in doc["runs"]:
        (phase,) = run["phases"]
        where = phase["params"]["placement"]
        if run["server"] == "go":
            assert where.endswith("(no-op: one worker)"), where
        else:
            recv, send = where.split("receivers on worker ")[1].rstrip(")").split(
                ", senders on worker ")
            assert (recv == send) == run["workload"].endswith("@same"), where
    assert "placement is a no-op there" in out
    assert _children(os.getpid()) <= before


def test_sync_always_starts_a_server_whose_jetstream_syncs_every_write():
    """--sync-always: the server is started from a config file with sync_interval: always
    (Go needs 2.10+ for it); natsx takes the same file, and /varz shows it in force."""
    import urllib.request

    http_port = free_port()
    with ServerProcess("natsx", [sys.executable, "-m", "natsx", "-m", str(http_port)],
                       jetstream=True, sync_always=True, workers=1) as srv:
        argv = srv.argv()
        assert argv[argv.index("-c") + 1] == srv.config_path and "-js" not in argv
        with open(srv.config_path) as f:
            assert "sync_interval: always" in f.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/varz", timeout=10) as r:
            config = json.load(r)["jetstream"]["config"]
        assert config["sync_always"] is True
        assert config["store_dir"].startswith(srv.workdir)
    plain = ServerProcess("go", ["nats-server"], jetstream=True)
    assert plain.config_path is None and "-js" in plain.argv()
