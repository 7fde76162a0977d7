"""Service latency events (natsx.server.latency): every status Go reports, the import's
``share`` flag and the tracing headers that decided a sample.

Black-box: natsx with two workers and the Go server (/usr/sbin/nats-server, 2.9.10) run the
same story with nats-py and a raw socket; a subscriber in the exporting account collects
the ``io.nats.server.metric.v1.service_latency`` events, and their keys (and the values
that do not depend on timing) are compared. Behaviour follows server/accounts.go
(sendTrackingLatency, sendBadRequestTrackingLatency, sendBackendErrorTrackingLatency,
sendReplyInterestLostTrackLatency, shouldSample).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import nats
import pytest

from conftest import GO_SERVER, NATSX, RunningServer, free_port

pytestmark = pytest.mark.server

# R shares its requestors' details with S; P does not. "svc.>" measures every request and
# gives up on a response after 1s; "hdr.>" measures the requests whose headers ask for it.
CONF = """
accounts {
  S: {
    users: [ {user: s, password: s} ]
    exports: [
      {service: "svc.>", latency: "lat.svc", response_threshold: "1s"}
      {service: "hdr.>", latency: {sampling: headers, subject: "lat.hdr"}}
    ]
  }
  R: {
    users: [ {user: r, password: r} ]
    imports: [
      {service: {account: S, subject: "svc.>"}, share: true}
      {service: {account: S, subject: "hdr.>"}}
    ]
  }
  P: {
    users: [ {user: p, password: p} ]
    imports: [ {service: {account: S, subject: "svc.>"}} ]
  }
}
"""

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _start(tmp_path, go: bool) -> RunningServer:
    path = tmp_path / "latency.conf"
    path.write_text(CONF)
    port = free_port()
    if go and GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    head = [GO_SERVER] if go else NATSX + ["--workers", "2"]
    cmd = head + ["-c", str(path), "-a", "127.0.0.1", "-p", str(port)]
    return RunningServer(cmd, port, None, tmp_path / f"{'go' if go else 'natsx'}.log",
                         dict(os.environ))


def _raw(port: int, user: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(3)
    sock.recv(4096)   # INFO
    sock.sendall(b'CONNECT {"user":"%s","pass":"%s","verbose":false,"name":"raw"}\r\n'
                 b"PING\r\n" % (user.encode(), user.encode()))
    buf = b""
    while b"PONG" not in buf:
        buf += sock.recv(4096)
    return sock


async def _story(srv) -> dict:
    """The events of each step, keyed by the step's name."""
    s = await nats.connect(srv.url, user="s", password="s", name="responder")
    r = await nats.connect(srv.url, user="r", password="r", name="requestor")
    p = await nats.connect(srv.url, user="p", password="p", name="plain")

    async def echo(m):
        if m.reply:
            await s.publish(m.reply, b"ok")

    async def ignore(m):
        pass

    for subject in ("svc.echo", "hdr.echo"):
        await s.subscribe(subject, cb=echo)
    await s.subscribe("svc.slow", cb=ignore)
    events = await s.subscribe("lat.>")
    await s.flush()
    await asyncio.sleep(0.3)      # the subscriptions reach the other worker

    async def collect(wait: float) -> list:
        got = []
        end = time.monotonic() + wait
        while True:
            try:
                m = await events.next_msg(max(end - time.monotonic(), 0.05))
            except nats.errors.TimeoutError:
                return got
            got.append(json.loads(m.data))

    out = {}
    assert (await r.request("svc.echo", b"q", timeout=2)).data == b"ok"
    out["200 shared"] = await collect(0.5)
    assert (await p.request("svc.echo", b"q", timeout=2)).data == b"ok"
    out["200 plain"] = await collect(0.5)
    await r.publish("svc.echo", b"no reply")
    await r.flush()
    out["400"] = await collect(0.5)
    await r.publish("svc.nobody", b"q", reply="_INBOX.nobody")
    await r.flush()
    out["503"] = await collect(0.5)
    await p.publish("svc.slow", b"q", reply="_INBOX.slow")
    await p.flush()
    # Go checks the threshold every threshold: the event comes within 1 to 2 seconds.
    out["504"] = await collect(2.8)
    sock = _raw(srv.port, "p")
    sock.sendall(b"SUB _INBOX.raw.1 1\r\nPUB svc.slow _INBOX.raw.1 1\r\nx\r\nPING\r\n")
    time.sleep(0.2)
    sock.sendall(b"UNSUB 1\r\nPING\r\n")
    out["408 unsubscribed"] = await collect(0.6)
    sock.sendall(b"SUB _INBOX.raw.2 2\r\nPUB svc.slow _INBOX.raw.2 1\r\nx\r\nPING\r\n")
    time.sleep(0.2)
    sock.close()
    out["408 disconnected"] = await collect(0.6)
    hdrs = {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE", "other": "x"}
    assert (await r.request("hdr.echo", b"q", timeout=2, headers=hdrs)).data == b"ok"
    out["200 traceparent"] = await collect(0.5)
    b3 = {"X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-SpanId": "e457b5a2e4d86bd1",
          "X-B3-Sampled": "1"}
    assert (await r.request("hdr.echo", b"q", timeout=2, headers=b3)).data == b"ok"
    out["200 b3"] = await collect(0.5)
    assert (await r.request("hdr.echo", b"q", timeout=2,
                            headers={"X-B3-Sampled": "0"})).data == b"ok"
    out["not sampled"] = await collect(0.5)
    for nc in (s, r, p):
        await nc.close()
    return out


def _shape(ev: dict) -> tuple:
    """What does not depend on timing or ids."""
    req, resp = ev.get("requestor") or {}, ev.get("responder") or {}
    return (list(ev), ev["status"], ev.get("description"), list(req), req.get("acc"),
            req.get("name"), list(resp), resp.get("acc"), resp.get("name"), ev.get("header"))


def test_latency_statuses_share_and_headers_match_go(tmp_path):
    shapes = {}
    for go in (False, True):
        srv = _start(tmp_path, go)
        try:
            out = asyncio.run(_story(srv))
        finally:
            srv.stop()
        shapes["go" if go else "natsx"] = {k: [_shape(e) for e in v] for k, v in out.items()}
        # Timing-dependent values are still sane.
        for step, evs in out.items():
            for ev in evs:
                assert ev["type"] == "io.nats.server.metric.v1.service_latency"
                assert ev["total"] >= ev["service"] >= 0 and ev["system"] >= 0, step
    natsx, go = shapes["natsx"], shapes["go"]
    assert natsx == go
    statuses = {k: [s[1] for s in v] for k, v in natsx.items()}
    assert statuses == {"200 shared": [200], "200 plain": [200], "400": [400], "503": [503],
                        "504": [504], "408 unsubscribed": [408], "408 disconnected": [408],
                        "200 traceparent": [200], "200 b3": [200], "not sampled": []}
    shared, plain = natsx["200 shared"][0], natsx["200 plain"][0]
    assert shared[3] == ["start", "host", "id", "acc", "user", "name", "lang", "ver", "rtt",
                         "server", "kind", "client_type"] and shared[5] == "requestor"
    assert plain[3] == ["acc", "rtt"] and plain[4] == "P"
    assert natsx["200 traceparent"][0][-1] == {"Traceparent": [TRACEPARENT],
                                               "Tracestate": ["congo=t61rcWkgMzE"]}
    assert natsx["200 b3"][0][-1] == {"X-B3-Sampled": ["1"],
                                      "X-B3-Traceid": ["80f198ee56343ba864fe8b2a57d3eff7"],
                                      "X-B3-Spanid": ["e457b5a2e4d86bd1"]}


# ------------------------------------------------------------------ sampling decisions

def _hdr(**values) -> bytes:
    lines = [b"NATS/1.0"] + [f"{k.replace('_', '-')}: {v}".encode() for k, v in values.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.parametrize("headers, expected", [
    (None, (False, None)),
    (_hdr(other="x"), (False, None)),
    # Uber: the low bit of the flags' last hex digit; baggage ("Uberctx-*") kept.
    (_hdr(uber_trace_id="479fefe9525eddb:5adb976bfc1f95c1:479fefe9525eddb:1",
          uberctx_user="me"),
     (True, {"Uber-Trace-Id": ["479fefe9525eddb:5adb976bfc1f95c1:479fefe9525eddb:1"],
             "Uberctx-User": ["me"]})),
    (_hdr(uber_trace_id="a:b:c:0"), (False, None)),
    (_hdr(uber_trace_id="a:b:c:zz"), (False, None)),
    # Zipkin's multi headers: X-B3-Sampled decides, else a trace id leaves it to us.
    (_hdr(x_b3_traceid="80f1", x_b3_parentspanid="05e3", x_b3_sampled="1"),
     (True, {"X-B3-Sampled": ["1"], "X-B3-Traceid": ["80f1"], "X-B3-Parentspanid": ["05e3"]})),
    (_hdr(x_b3_traceid="80f1", x_b3_sampled="0"), (False, None)),
    (_hdr(x_b3_traceid="80f1"), (True, {"X-B3-Traceid": ["80f1"]})),
    # Zipkin's single header: "0" or a third field "0" denies.
    (_hdr(b3="80f198ee-e457b5a2-1-05e3ac9a"), (True, {"B3": ["80f198ee-e457b5a2-1-05e3ac9a"]})),
    (_hdr(b3="80f198ee-e457b5a2-0"), (False, None)),
    (_hdr(b3="0"), (False, None)),
    # W3C: the flags' low bit.
    (_hdr(traceparent="00-4bf9-00f0-00"), (False, None)),
    (_hdr(traceparent="00-4bf9-00f0-03"), (True, {"Traceparent": ["00-4bf9-00f0-03"]})),
])
def test_header_sampling_like_go(headers, expected):
    from natsx.server.latency import sample

    assert sample(0, headers) == expected


def test_sampling_percentages():
    from natsx.server.latency import sample

    assert sample(100, _hdr(b3="0")) == (True, None)   # the percentage wins, no header kept
    assert sample(-1, _hdr(b3="1")) == (False, None)


def test_canonical_header_names():
    from natsx.server.latency import canonical_key

    assert canonical_key("x-b3-traceid") == "X-B3-Traceid"
    assert canonical_key("TRACEPARENT") == "Traceparent"
    assert canonical_key("bad key") == "bad key"


# ------------------------------------------------------------------ config

@pytest.mark.parametrize("entry, expected", [
    ('{service: {account: S, subject: "svc"}, share: "yes"}',
     "interface conversion: interface {} is string, not bool"),   # Go's text
    ('{service: {account: S, subject: "svc"}, allow_trace: true}',
     "Detected allow_trace directive on a non-stream"),
    ('{stream: {account: S, subject: "ev"}, allow_trace: true}',
     "allow_trace: import allow_trace (message tracing) is not supported by this natsx "
     "build yet"),
])
def test_import_share_and_allow_trace_config(tmp_path, entry, expected):
    from natsx.server.config_options import ConfigProcessError, load_options

    path = tmp_path / "c.conf"
    path.write_text("accounts {\n  S: {exports: [{service: svc}, {stream: ev}]}\n"
                    f"  R: {{imports: [\n    {entry}\n  ]}}\n}}\n")
    with pytest.raises(ConfigProcessError) as exc:
        load_options(str(path))
    assert expected in str(exc.value)


def test_import_share_is_read(tmp_path):
    from natsx.server.config_options import load_options

    path = tmp_path / "c.conf"
    path.write_text(CONF)
    opts, _ = load_options(str(path))
    assert [(i.subject, i.share) for i in opts.accounts["R"].service_imports] == \
        [("svc.>", True), ("hdr.>", False)]


# ------------------------------------------------------------------ JWT accounts

async def _jwt_story(url: str, a_creds: str, b_creds: str) -> list:
    a = await nats.connect(url, user_credentials=a_creds, name="responder")
    b = await nats.connect(url, user_credentials=b_creds, name="requestor")

    async def echo(m):
        await a.publish(m.reply, b"ok")

    await a.subscribe("svc.echo", cb=echo)
    lat = await a.subscribe("lat")
    await a.flush()
    await asyncio.sleep(0.3)
    assert (await b.request("echo", b"q", timeout=2)).data == b"ok"
    events = []
    while True:
        try:
            events.append(json.loads((await lat.next_msg(0.5)).data))
        except nats.errors.TimeoutError:
            break
    await a.close()
    await b.close()
    return events


def test_jwt_import_share_like_go(tmp_path):
    """An account JWT's import with ``share`` describes the requestor in full, as the
    config's does; the export's ``service_latency`` decides the sampling."""
    from natsx.auth import jwt
    from test_operator import World, creds

    w = World()
    w.accounts[w.a.public_key] = w.account(w.a, "A", exports=(
        jwt.Export(subject="svc.>", type="service",
                   service_latency=jwt.ServiceLatency(sampling=100, results="lat")),))
    w.accounts[w.b.public_key] = w.account(w.b, "B", imports=(
        jwt.Import(subject="svc.echo", account=w.a.public_key, type="service",
                   local_subject="echo", share=True),))
    conf = w.config(tmp_path)
    # Go sends the events through its system account: name it (2.9.10 does not take it
    # from the operator JWT).
    with open(conf, "a") as f:
        f.write(f"system_account: {w.sys.public_key}\n")
    a_creds = creds(tmp_path, *w.user(w.a, name="ua"), name="a.creds")
    b_creds = creds(tmp_path, *w.user(w.b, name="ub"), name="b.creds")
    shapes = {}
    for go in (False, True):
        if go and GO_SERVER is None:
            pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
        port = free_port()
        cmd = ([GO_SERVER] if go else NATSX + ["--workers", "2"]) + [
            "-c", conf, "-a", "127.0.0.1", "-p", str(port)]
        srv = RunningServer(cmd, port, None, tmp_path / f"jwt-{go}.log", dict(os.environ))
        try:
            events = asyncio.run(_jwt_story(srv.url, a_creds, b_creds))
        finally:
            srv.stop()
        assert len(events) == 1 and events[0]["status"] == 200
        req = events[0]["requestor"]
        assert req["acc"] == w.b.public_key and req["name"] == "requestor"
        shapes[go] = (_shape(events[0]), req.get("issuer_key"), req.get("name_tag"))
    assert shapes[False] == shapes[True]
