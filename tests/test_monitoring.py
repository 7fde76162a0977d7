"""The monitoring port: every endpoint against Debian's Go nats-server, and natsx's own pages.

The differential tests start the Go server and natsx (two workers) with the same options
and compare, endpoint by endpoint, the top-level JSON keys and their JSON types: natsx may
add keys, but none of Go's may be missing or change type. natsx follows the HEAD of
nats-server where it differs from Debian's 2.9.10; the few places where that shows in a
type are listed in ``_NEWER_THAN_2_9_10`` with the reason. Then /metrics is parsed as
Prometheus would parse it, /stacksz is read for every process, the dashboard is loaded in
headless Chromium and its DOM checked, and the ports file and ``http_base_path`` are
compared with Go's.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import GO_SERVER, NATSX, RunningServer, free_port

pytestmark = pytest.mark.server

CHROMIUM = "/usr/bin/chromium"

# (path, key): where Go 2.9.10 answers with another JSON type than the newer release
# natsx follows, and why.
_NEWER_THAN_2_9_10 = {
    # 2.10 made Leafz build an empty list: "leafs": [] instead of null.
    ("/leafz", "leafs"): ("null", "array"),
}

_ENDPOINTS = [
    "/varz", "/connz", "/connz?subs=detail&auth=1", "/connz?state=closed",
    "/subsz", "/subsz?subs=1", "/routez", "/routez?subs=detail", "/gatewayz",
    "/gatewayz?accs=1", "/leafz", "/leafz?subs=1", "/accountz", "/accountz?acc=$G",
    "/accstatz", "/accstatz?unused=1", "/jsz", "/jsz?accounts=1&streams=1&config=1",
    "/healthz", "/healthz?js-enabled-only=1", "/healthz?js-server-only=1",
]


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}[type(value)]


class Client:
    """A raw NATS client: CONNECT, then PING/PONG to know the server has seen it all."""

    def __init__(self, port: int, name: str = "probe") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.info = json.loads(self._line()[5:])
        self.cid = self.info["client_id"]
        self.send(f'CONNECT {{"verbose":false,"name":"{name}","lang":"raw"}}\r\n'.encode())

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "server closed the connection"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data + b"PING\r\n")
        while self._line() != b"PONG":
            pass

    def close(self) -> None:
        self.sock.close()


def _get(srv: RunningServer, path: str, **kw) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{srv.http_port}{path}", timeout=10, **kw)


def _wait(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start(cmd_head: list[str], tmp_path_factory, name: str, *args: str) -> RunningServer:
    port, http_port = free_port(), free_port()
    cmd = cmd_head + ["-a", "127.0.0.1", "-p", str(port), "-m", str(http_port), *args]
    return RunningServer(cmd, port, http_port, tmp_path_factory.mktemp(name) / "server.log",
                         dict(os.environ))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The Go server and natsx with the same options, each with the same three clients
    (one of them closed since), so /connz has open and closed connections to show."""
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    go = _start([GO_SERVER], tmp_path_factory, "go")
    natsx = _start(NATSX, tmp_path_factory, "natsx", "--workers", "2")
    clients = []
    for srv in (go, natsx):
        cs = [Client(srv.port, f"c{i}") for i in range(3)]
        for i, c in enumerate(cs):
            c.send(f"SUB foo.{i} {i}\r\nSUB bar q 9\r\nPUB foo.0 2\r\nhi\r\n".encode())
        # c0 takes what the others published before it closes: with workers, a message
        # from another worker may still be in the ring when the publisher has its PONG, so
        # c0's out_msgs would depend on timing (Go writes it to c0 before that PONG).
        cs[0].send(b"")
        cs[0].close()
        _wait(lambda: cs[0].cid in [c["cid"] for c in _get(srv, "/connz?state=closed")
                                    .json()["connections"]], "the closed connection")
        clients.append(cs)
    yield go, natsx
    for cs in clients:
        for c in cs:
            c.close()
    go.stop()
    natsx.stop()


@pytest.fixture(scope="module")
def natsx_pair(pair):
    return pair[1]


# ---------------------------------------------------------------------------- differential


@pytest.mark.parametrize("path", _ENDPOINTS)
def test_endpoint_has_every_go_key_with_its_type(pair, path):
    go, natsx = (_get(s, path) for s in pair)
    assert natsx.status_code == go.status_code == 200
    assert natsx.headers["content-type"] == go.headers["content-type"] == "application/json"
    gj, nj = go.json(), natsx.json()
    endpoint = path.split("?")[0]
    missing = [k for k in gj if k not in nj]
    assert missing == [], f"keys of Go's {path} missing in natsx"
    wrong = {k: (_json_type(gj[k]), _json_type(nj[k])) for k in gj
             if _json_type(gj[k]) != _json_type(nj[k])
             and _NEWER_THAN_2_9_10.get((endpoint, k)) != (_json_type(gj[k]), _json_type(nj[k]))}
    assert wrong == {}, f"JSON types differ in {path} (go, natsx)"


def _name(conn: dict) -> str:
    return conn["name"]


def test_connection_entries_have_every_go_key(pair):
    for path in ("/connz?subs=detail&auth=1", "/connz?state=closed&subs=1"):
        # Only the test's clients: the harness's port probes are closed connections too.
        go, natsx = ([c for c in _get(s, path).json()["connections"] if "name" in c]
                     for s in pair)
        assert len(go) == len(natsx) > 0
        for g, n in zip(sorted(go, key=_name), sorted(natsx, key=_name)):
            assert [k for k in g if k not in n] == [], path
            for key in ("kind", "type", "subscriptions", "name", "lang", "in_msgs",
                        "out_msgs", "in_bytes", "out_bytes"):
                assert n.get(key) == g.get(key), (path, key)
            # A client closing with unread bytes resets the socket: both servers then say
            # "Read Error" instead of "Client Closed", depending on timing, not on the server.
            closed_alike = {"Client Closed", "Read Error"}
            assert (n.get("reason") == g.get("reason")
                    or {n.get("reason"), g.get("reason")} <= closed_alike), path
            if "subscriptions_list_detail" in g:
                def strip(c):
                    return sorted((s["subject"], s["sid"], s["msgs"])
                                  for s in c["subscriptions_list_detail"])
                assert strip(n) == strip(g)


def test_account_detail_keys(pair):
    go, natsx = (_get(s, "/accountz?acc=$G").json()["account_detail"] for s in pair)
    assert [k for k in go if k not in natsx] == []
    # Go's global account imports the $SYS services (natsx.server.system serves them);
    # HEAD adds $SYS.REQ.USER.INFO to the ones Debian's 2.9.10 lists.
    go_imports = {(i["subject"], i["to"]) for i in go["imports"]}
    assert go_imports <= {(i["subject"], i["to"]) for i in natsx["imports"]}
    assert list(natsx["sublist_stats"]) == list(go["sublist_stats"])
    assert natsx["client_connections"] == go["client_connections"] == 2


@pytest.mark.parametrize("path", [
    "/accountz?acc=nope", "/jsz?leader-only=1", "/jsz?accounts=maybe", "/leafz?subs=x",
    "/gatewayz?accs=2", "/routez?subs=x", "/accstatz?unused=x", "/healthz?js-enabled-only=x",
    "/connz?acc=nope", "/varz/",
])
def test_same_status_and_text_as_go(pair, path):
    go, natsx = (_get(s, path) for s in pair)
    assert natsx.status_code == go.status_code
    if go.headers["content-type"].startswith("application/json"):
        g, n = go.json(), natsx.json()
        g.pop("now", None)
        n.pop("now", None)
        assert n == g
    else:
        assert natsx.text == go.text


def test_healthz_bad_arguments_are_400(natsx_pair):
    # Newer than 2.9.10 (which ignores these arguments): healthz checks them first, and
    # the HTTP body has no status_code, since the status line carries it.
    r = _get(natsx_pair, "/healthz?stream=s")
    assert r.status_code == 400
    assert r.text == ('{"status":"error","error":"\\"account\\" must not be empty when '
                      'checking stream health"}')
    r = _get(natsx_pair, "/healthz?account=a&consumer=c&details=true")
    assert r.status_code == 400
    assert r.json() == {"status": "error", "errors": [
        {"type": "BAD_REQUEST",
         "error": '"stream" must not be empty when checking consumer health'}]}


def test_raftz_without_raft_groups(natsx_pair):
    # HandleRaftz (2.10+) when no raft node is registered; 2.9.10 has no /raftz.
    r = _get(natsx_pair, "/raftz")
    assert (r.status_code, r.text) == (404, "No Raft nodes registered")


def test_connz_filters(natsx_pair):
    connz = _get(natsx_pair, "/connz").json()
    assert connz["num_connections"] == 2
    # Go's total counts the open connections before the user/client-id filters.
    assert _get(natsx_pair, "/connz?mqtt_client=x").json()["connections"] == []
    assert _get(natsx_pair, "/connz?mqtt_client=x").json()["total"] == 2
    one = _get(natsx_pair, "/connz?acc=$G&filter_subject=foo.2").json()["connections"]
    assert [c["name"] for c in one] == ["c2"]
    assert len(_get(natsx_pair, "/connz?acc=$G&filter_subject=bar").json()["connections"]) == 2
    assert len(_get(natsx_pair, "/connz?acc=$G&filter_subject=>").json()["connections"]) == 2
    bad = _get(natsx_pair, "/connz?filter_subject=foo.2")
    assert (bad.status_code, bad.text) == (400,
                                            "filter by subject only valid with account filtering")
    workers = {c["worker"] for c in _get(natsx_pair, "/connz?worker=1").json()["connections"]}
    assert workers <= {0, 1}


def test_accstatz_counts_the_account_traffic(natsx_pair):
    (g,) = _get(natsx_pair, "/accstatz").json()["account_statz"]
    varz = _get(natsx_pair, "/varz").json()
    assert (g["acc"], g["conns"], g["total_conns"]) == ("$G", 2, 2)
    # The closed client's traffic still counts for its account.
    assert g["received"]["msgs"] == varz["in_msgs"] == 3
    assert g["sent"]["msgs"] == varz["out_msgs"]
    names = [a["acc"] for a in _get(natsx_pair, "/accstatz?unused=1").json()["account_statz"]]
    assert names == ["$G", "$SYS"]


def test_varz_worker_breakdown_adds_up(natsx_pair):
    varz = _get(natsx_pair, "/varz").json()
    stats = varz["worker_stats"]
    assert [w["worker"] for w in stats] == [0, 1] and all(w["answered"] for w in stats)
    assert [w["pid"] for w in stats] == varz["worker_pids"]
    for key in ("connections", "total_connections", "in_msgs", "out_msgs", "subscriptions"):
        assert sum(w[key] for w in stats) == varz[key], key
    assert varz["in_client_msgs"] == varz["in_msgs"]


# ---------------------------------------------------------------------------- /metrics


def test_metrics_parse_as_prometheus_text(natsx_pair):
    from prometheus_client.parser import text_string_to_metric_families

    r = _get(natsx_pair, "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    varz = _get(natsx_pair, "/varz").json()

    def value(name, **labels):
        (sample,) = [s for s in families[name].samples
                     if all(s.labels.get(k) == v for k, v in labels.items())]
        return sample.value

    sid = varz["server_id"]
    assert value("gnatsd_varz_connections", server_id=sid) == varz["connections"] == 2
    assert value("gnatsd_varz_in_msgs", server_id=sid) == varz["in_msgs"]
    assert families["gnatsd_varz_in_msgs"].type == "counter"
    assert families["gnatsd_varz_subscriptions"].type == "gauge"
    info = families["gnatsd_varz_info"].samples[0]
    assert info.labels["version"] == varz["version"] and info.value == 1
    per_worker = [value("natsx_worker_connections", worker=str(i)) for i in range(2)]
    assert sum(per_worker) == varz["connections"]
    assert [value("natsx_worker_up", worker=str(i)) for i in range(2)] == [1, 1]
    assert value("gnatsd_varz_http_req_stats", path="/metrics") >= 1


# ---------------------------------------------------------------------------- /stacksz


def test_stacksz_shows_every_process(natsx_pair):
    r = _get(natsx_pair, "/stacksz")
    assert r.status_code == 200
    headers = [line for line in r.text.splitlines() if line.startswith("process ")]
    assert [h.split(" pid ")[0] for h in headers] == ["process admin", "process worker 0",
                                                      "process worker 1"]
    pids = _get(natsx_pair, "/varz").json()["worker_pids"]
    assert headers[1:] == [f"process worker {i} pid {p}" for i, p in enumerate(pids)]
    # The admin's asyncio tasks and the workers' trio tasks, not just the threads.
    assert "[asyncio, pending]" in r.text
    assert re.search(r"task \S*_accept_loop \[trio\]", r.text)
    assert "natsx/server/connection.py" in r.text   # a client's reader task, suspended


# ---------------------------------------------------------------------------- /dashboard


def test_dashboard_in_headless_chromium(natsx_pair, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    page = _get(natsx_pair, "/dashboard")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http://" not in page.text and "https://" not in page.text   # no external assets
    extra = [Client(natsx_pair.port, f"dash{i}") for i in range(3)]
    try:
        expected = _wait(lambda: (lambda v: v if v["connections"] == 5 else None)(
            _get(natsx_pair, "/varz").json()), "five connections")["connections"]
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=5000", "--dump-dom",
             f"http://127.0.0.1:{natsx_pair.http_port}/dashboard"],
            capture_output=True, text=True, timeout=60)
    finally:
        for c in extra:
            c.close()
    dom = out.stdout
    assert 'data-state="ok"' in dom, out.stderr[-2000:]
    assert re.search(r'id="connections">(\d+)<', dom).group(1) == str(expected)
    body = re.search(r'<table id="workers">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    assert body.count("<tr") == 2
    assert int(re.search(r'data-points="(\d+)"', dom).group(1)) >= 2
    polls = int(re.search(r'data-polls="(\d+)"', dom).group(1))
    assert polls >= 2
    conns = re.search(r'<table id="conns">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    assert "dash0" in conns


# ---------------------------------------------------------------------------- base path, req stats


_BASE_PATHS = ["/nats", "/nats/", "/nats/varz", "/varz", "/", "/nats//varz",
               "/nats/connz?limit=x", "/nats/connz?sort=bogus", "/nats/subsz?limit=x",
               "/nats/subscriptionsz", "/nats/healthz", "/nats/routez", "/nats/gatewayz",
               "/nats/leafz", "/nats/accountz", "/nats/accstatz", "/nats/jsz", "/nats/raftz",
               "/nats/stacksz", "/nats/varz"]


def test_http_base_path_and_request_counts_match_go(tmp_path_factory, tmp_path):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    conf = tmp_path / "base.conf"
    conf.write_text('http_base_path: "/nats/"\n')
    go = _start([GO_SERVER], tmp_path_factory, "go-base", "-c", str(conf))
    natsx = _start(NATSX, tmp_path_factory, "natsx-base", "-c", str(conf), "--workers", "1")
    try:
        for path in _BASE_PATHS:
            g, n = (_get(s, path) for s in (go, natsx))
            assert n.status_code == g.status_code, path
            if g.status_code == 301:
                assert n.headers["location"] == g.headers["location"]
        go_v, natsx_v = (_get(s, "/nats/varz").json() for s in (go, natsx))
        assert natsx_v["http_base_path"] == go_v["http_base_path"] == "/nats/"
        assert natsx_v["http_req_stats"] == go_v["http_req_stats"]
        index = _get(natsx, "/nats").text
        assert 'href="./nats/varz"' in index and 'href="./nats/dashboard"' in index
    finally:
        go.stop()
        natsx.stop()


# ---------------------------------------------------------------------------- ports file


def _ports_run(cmd: list[str], directory: Path, prefix: str):
    proc = subprocess.Popen(cmd + ["-p", "-1", "-m", "-1", "--ports_file_dir", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    path = directory / f"{prefix}_{proc.pid}.ports"
    try:
        text = _wait(lambda: path.exists() and path.read_text(), str(path))
    except AssertionError:
        proc.kill()
        raise
    return proc, path, text


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_ports_file_with_random_ports_matches_go(tmp_path, host):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    (tmp_path / "go").mkdir()
    (tmp_path / "natsx").mkdir()
    go, go_path, go_text = _ports_run([GO_SERVER, "-a", host], tmp_path / "go",
                                      os.path.basename(GO_SERVER))
    natsx, natsx_path, natsx_text = _ports_run(NATSX + ["-a", host, "--workers", "1"],
                                               tmp_path / "natsx", "natsx")
    try:
        go_ports, natsx_ports = json.loads(go_text), json.loads(natsx_text)
        # json.Marshal: compact, nats before monitoring.
        assert natsx_text == json.dumps(natsx_ports, separators=(",", ":"))
        assert list(natsx_ports) == list(go_ports) == ["nats", "monitoring"]

        def hosts(urls):
            return [re.sub(r":\d+$", "", u) for u in urls]
        for key in ("nats", "monitoring"):
            if host == "127.0.0.1":
                assert hosts(natsx_ports[key]) == hosts(go_ports[key])
            else:
                # Go listens dual-stack and lists IPv6 addresses too; natsx's IPv4
                # listeners list the IPv4 ones, in Go's order.
                assert hosts(natsx_ports[key]) == [h for h in hosts(go_ports[key]) if "[" not in h]
        nats_port = int(natsx_ports["nats"][0].rsplit(":", 1)[1])
        http_port = int(natsx_ports["monitoring"][0].rsplit(":", 1)[1])
        assert nats_port > 0 and http_port > 0
        varz = httpx.get(f"http://127.0.0.1:{http_port}/varz", timeout=10).json()
        assert varz["port"] == nats_port
        assert Client(nats_port).cid > 0
    finally:
        _stop(go)
        _stop(natsx)
    assert not go_path.exists() and not natsx_path.exists()


# ---------------------------------------------------------------------------- units


def test_go_formats():
    from natsx.server.monitor import duration_string, go_duration, rfc3339, rtt_string

    assert rfc3339(0) == "0001-01-01T00:00:00Z"
    assert rfc3339(1700000000.5) == "2023-11-14T22:13:20.5Z"
    assert rfc3339(1700000000.123456) == "2023-11-14T22:13:20.123456Z"
    assert rfc3339(1700000000) == "2023-11-14T22:13:20Z"
    assert [duration_string(n) for n in (0, 999, 1500, 1_234_567, 2_500_000_000,
                                         3_723_000_000_000)] == [
        "0s", "999ns", "1.5µs", "1.234567ms", "2.5s", "1h2m3s"]
    assert rtt_string(0.000123456) == "123µs"           # Go truncates to µs below 1ms
    assert rtt_string(0.0123456789) == "12.345678ms"
    assert [go_duration(s) for s in (5, 65, 3665, 90061, 31_626_061)] == [
        "5s", "1m5s", "1h1m5s", "1d1h1m1s", "1y1d1h1m1s"]


def test_go_json_escapes_like_encoding_json():
    from natsx.admin.gohttp import go_json

    assert go_json({"s": "a>b<c&d", "f": 2.0, "g": 0.5}, indent=False) == \
        b'{"s":"a\\u003eb\\u003cc\\u0026d","f":2,"g":0.5}'
    assert go_json({"a": [1]}) == b'{\n  "a": [\n    1\n  ]\n}'


def test_go_parameter_errors():
    from natsx.admin.gohttp import BadRequest, go_int, go_uint

    with pytest.raises(BadRequest, match=r"^Error decoding int for 'limit': strconv.Atoi: "
                                          r'parsing "9223372036854775808": value out of range$'):
        go_int({"limit": "9223372036854775808"}, "limit")
    assert go_int({"offset": "-3"}, "offset") == -3
    with pytest.raises(BadRequest, match="ParseUint"):
        go_uint({"cid": "-1"}, "cid")


def test_admin_link_drops_a_late_answer():
    # A worker that answers after the admin gave up must not have its answer taken for
    # the next request's (natsx.server.control).
    from natsx.server.control import _LEN, AdminLink, encode_frame

    admin_end, worker_end = socket.socketpair()

    async def main():
        link = AdminLink(admin_end)
        with pytest.raises(asyncio.TimeoutError):
            await link.request({"op": "slow"}, timeout=0.2)
        first = json.loads(_read_frame(worker_end))
        second_task = asyncio.ensure_future(link.request({"op": "fast"}, timeout=5))
        await asyncio.sleep(0.05)
        second = json.loads(_read_frame(worker_end))
        worker_end.sendall(encode_frame({"answer": "slow", "_id": first["_id"]}))
        worker_end.sendall(encode_frame({"answer": "fast", "_id": second["_id"]}))
        return await second_task

    def _read_frame(sock):
        head = sock.recv(4, socket.MSG_WAITALL)
        (n,) = _LEN.unpack(head)
        return sock.recv(n, socket.MSG_WAITALL)

    try:
        assert asyncio.run(main()) == {"answer": "fast"}
    finally:
        admin_end.close()
        worker_end.close()


# ---------------------------------------------------------------------------- JetStream


def test_jsz_and_varz_with_jetstream_running(tmp_path_factory, tmp_path):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    go = _start([GO_SERVER], tmp_path_factory, "go-js", "-js", "-sd", str(tmp_path / "go"))
    natsx = _start(NATSX, tmp_path_factory, "natsx-js", "-js", "-sd", str(tmp_path / "natsx"),
                   "--workers", "1")
    try:
        for srv in (go, natsx):
            c = Client(srv.port)
            create = json.dumps({"name": "S", "subjects": ["s.>"], "storage": "memory"})
            c.send(f"SUB _INBOX.r 1\r\nPUB $JS.API.STREAM.CREATE.S _INBOX.r {len(create)}\r\n"
                   f"{create}\r\n".encode())
            _wait(lambda: _get(srv, "/jsz").json()["streams"] == 1, "the stream")
            c.send(b"PUB s.a 2\r\nhi\r\nPUB s.b 3\r\nhey\r\n")
            c.close()
        go_j, natsx_j = (_get(s, "/jsz").json() for s in (go, natsx))
        assert [k for k in go_j if k not in natsx_j] == []
        assert "disabled" not in natsx_j
        for key in ("streams", "consumers", "messages", "accounts"):
            assert natsx_j[key] == go_j[key], key
        assert natsx_j["config"]["store_dir"] == str(tmp_path / "natsx" / "jetstream")
        go_v, natsx_v = (_get(s, "/varz").json()["jetstream"] for s in (go, natsx))
        assert list(natsx_v) == list(go_v) == ["config", "stats"]
        assert natsx_v["stats"]["memory"] > 0
        assert _get(natsx, "/healthz?js-enabled-only=1").json() == {"status": "ok"}
    finally:
        go.stop()
        natsx.stop()
