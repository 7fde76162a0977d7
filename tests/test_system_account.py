"""The system account over NATS: ``$SYS`` requests and advisories, against Debian's Go server.

Both servers run the same config (``system_account`` and users in it and in one other
account); the clients are nats-py. Every request subject is sent to both and the answers
compared the way test_monitoring compares the HTTP endpoints: the envelope, ``server`` and
``data`` keys of Go's answer must all be in natsx's, with the same JSON types (natsx may
add keys; it follows nats-server's HEAD where Debian's 2.9.10 differs, and the few places
where that shows are listed with the reason). Subjects 2.9.10 does not serve are checked
against the shapes of HEAD's events.go. natsx runs two workers, so the tests also check
that a server-level request gets one merged answer counting the connections of both,
that ``USER.INFO`` is answered by the worker holding the requester, and that advisories
reach a subscriber whichever worker it is on.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import nats
import pytest

from conftest import GO_SERVER, NATSX, RunningServer, free_port

pytestmark = pytest.mark.server

CONFIG = """
system_account: SYS
accounts {
  SYS { users [{user: sys, password: sys}] }
  A {
    users [
      {user: a, password: a},
      {user: c, password: c,
       permissions: {publish: ["$SYS.REQ.USER.INFO", "foo.>"], subscribe: ["_INBOX.>"]}}
    ]
  }
}
"""

# (subject, key path): where Go 2.9.10 answers with another JSON type than HEAD.
_NEWER_THAN_2_9_10 = {
    # 2.10 made Leafz build an empty list: "leafs": [] instead of null.
    ("$SYS.REQ.SERVER.PING.LEAFZ", "data.leafs"): ("null", "array"),
    ("$SYS.REQ.ACCOUNT.A.LEAFZ", "data.leafs"): ("null", "array"),
}

# Subjects and bodies both servers answer.
_DIFFERENTIAL = [
    ("$SYS.REQ.SERVER.PING", ""),
    ("$SYS.REQ.SERVER.PING.STATSZ", ""),
    ("$SYS.REQ.SERVER.PING.VARZ", ""),
    ("$SYS.REQ.SERVER.PING.CONNZ", '{"subscriptions":true}'),
    ("$SYS.REQ.SERVER.PING.CONNZ", '{"subscriptions_detail":true,"auth":true}'),
    ("$SYS.REQ.SERVER.PING.CONNZ", '{"state":1}'),
    ("$SYS.REQ.SERVER.PING.SUBSZ", '{"subscriptions":true}'),
    ("$SYS.REQ.SERVER.PING.ROUTEZ", ""),
    ("$SYS.REQ.SERVER.PING.GATEWAYZ", ""),
    ("$SYS.REQ.SERVER.PING.LEAFZ", ""),
    ("$SYS.REQ.SERVER.PING.ACCOUNTZ", ""),
    ("$SYS.REQ.SERVER.PING.ACCOUNTZ", '{"account":"A"}'),
    ("$SYS.REQ.SERVER.PING.JSZ", ""),
    ("$SYS.REQ.SERVER.PING.HEALTHZ", ""),
    ("$SYS.REQ.SERVER.{id}.VARZ", ""),
    ("$SYS.REQ.SERVER.{id}.CONNZ", ""),
    ("$SYS.REQ.SERVER.{id}.STATSZ", ""),
    ("$SYS.REQ.ACCOUNT.A.SUBSZ", ""),
    ("$SYS.REQ.ACCOUNT.A.CONNZ", ""),
    ("$SYS.REQ.ACCOUNT.A.LEAFZ", ""),
    ("$SYS.REQ.ACCOUNT.A.JSZ", ""),
    ("$SYS.REQ.ACCOUNT.A.INFO", ""),
    ("$SYS.REQ.ACCOUNT.SYS.STATZ", ""),
    ("$SYS.REQ.ACCOUNT.SYS.CONNS", ""),
    ("$SYS.REQ.ACCOUNT.PING.STATZ", ""),
    ("$SYS.REQ.ACCOUNT.PING.CONNZ", ""),
    ("$SYS.REQ.ACCOUNT.NOPE.INFO", ""),
    # Errors: a body that is not JSON (400, no data) and a refused option (500, data null).
    ("$SYS.REQ.SERVER.PING.CONNZ", "{bad"),
    ("$SYS.REQ.SERVER.PING.CONNZ", '{"sort":"nope"}'),
    ("$SYS.REQ.SERVER.PING.STATSZ", "{bad"),
    ("$SYS.REQ.SERVER.PING.SUBSZ", '{"test":"foo.*"}'),
]

# What HEAD's events.go answers where 2.9.10 does not: subject -> (envelope keys, data keys).
_HEAD_ONLY = {
    "$SYS.REQ.SERVER.PING.IDZ": (["name", "host", "id"], None),
    "$SYS.REQ.SERVER.PING.EXPVARZ": (["server", "data"], ["memstats", "cmdline"]),
    "$SYS.REQ.SERVER.PING.IPQUEUESZ": (["server", "data"], []),
    "$SYS.REQ.SERVER.PING.PROFILEZ": (["server", "data"], ["profile", "error"]),
    "$SYS.REQ.USER.INFO": (["server", "data"], ["user", "account"]),
}

_SERVER_INFO_KEYS = ["name", "host", "id", "ver", "jetstream", "flags", "seq", "time"]


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}[type(value)]


def _differences(subject: str, go: dict, nx: dict, path: str = "", depth: int = 2) -> list:
    out = []
    for key, value in go.items():
        where = f"{path}{key}"
        if key not in nx:
            out.append(f"{where} missing")
            continue
        types = (_json_type(value), _json_type(nx[key]))
        if types[0] != types[1]:
            if _NEWER_THAN_2_9_10.get((subject, where)) != types:
                out.append(f"{where}: go {types[0]}, natsx {types[1]}")
        elif depth and isinstance(value, dict):
            out += _differences(subject, value, nx[key], where + ".", depth - 1)
    return out


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _start(cmd_head: list[str], directory, name: str, *args: str,
           http: bool = False) -> RunningServer:
    conf = directory / "sys.conf"
    conf.write_text(CONFIG)
    port = free_port()
    http_port = free_port() if http else None
    cmd = cmd_head + ["-c", str(conf), "-a", "127.0.0.1", "-p", str(port)]
    if http_port:
        cmd += ["-m", str(http_port)]
    return RunningServer(cmd + list(args), port, http_port, directory / f"{name}.log",
                         dict(os.environ))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    go = _start([GO_SERVER], tmp_path_factory.mktemp("go"), "go")
    nx = _start(NATSX, tmp_path_factory.mktemp("natsx"), "natsx", "--workers", "2",
                http=True)
    yield go, nx
    go.stop()
    nx.stop()


async def connect(srv: RunningServer, user: str, **kw) -> nats.NATS:
    kw.setdefault("allow_reconnect", False)
    kw.setdefault("connect_timeout", 5)
    return await nats.connect(srv.url, user=user, password=user, **kw)


async def collect(nc: nats.NATS, subject: str, body: bytes = b"", wait: float = 0.6) -> list:
    """Every reply to one request within ``wait`` seconds: (headers, JSON) pairs."""
    inbox = nc.new_inbox()
    got = []

    async def cb(msg):
        got.append((msg.headers, json.loads(msg.data)))
    sub = await nc.subscribe(inbox, cb=cb)
    await nc.flush()
    await nc.publish(subject, body, reply=inbox)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    return got


async def server_id(nc: nats.NATS) -> str:
    return nc._server_info["server_id"]


async def http_json(srv: RunningServer, path: str) -> dict:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"http://127.0.0.1:{srv.http_port}{path}")
        r.raise_for_status()
        return r.json()


async def spread(srv: RunningServer, user: str, per_worker: int, workers=(0, 1)) -> dict:
    """``per_worker`` connections of ``user`` on each of ``workers`` (others closed)."""
    by_worker: dict[int, list] = {w: [] for w in workers}
    for _ in range(12):
        missing = sum(max(per_worker - len(v), 0) for v in by_worker.values())
        if not missing:
            return by_worker
        batch = [await connect(srv, user) for _ in range(missing * 2)]
        connz = await http_json(srv, "/connz?worker=1&limit=100000")
        where = {c["cid"]: c["worker"] for c in connz["connections"]}
        for nc in batch:
            w = where[nc.client_id]
            if w in by_worker and len(by_worker[w]) < per_worker:
                by_worker[w].append(nc)
            else:
                await nc.close()
    raise AssertionError(f"connections never reached every worker: {by_worker}")


async def close_all(by_worker: dict) -> None:
    for group in by_worker.values():
        for nc in group:
            await nc.close()


# ---------------------------------------------------------------------------- differential


@pytest.mark.parametrize("subject,body", _DIFFERENTIAL,
                         ids=[f"{s} {b}" for s, b in _DIFFERENTIAL])
def test_request_answered_with_gos_shape(pair, subject, body):
    async def main():
        answers = []
        for srv in pair:
            nc = await connect(srv, "sys")
            # A client in account A, so the account's endpoints have something to show.
            other = await connect(srv, "a")
            await other.subscribe("foo.bar")
            await other.flush()
            subj = subject.replace("{id}", await server_id(nc))
            answers.append(await collect(nc, subj, body.encode()))
            await other.close()
            await nc.close()
        return answers
    go, nx = run(main())
    assert len(go) == 1, f"Go's answers to {subject}: {go}"
    assert len(nx) == 1, f"natsx's answers to {subject}: {nx}"
    assert _differences(subject, go[0][1], nx[0][1]) == []
    if "error" in go[0][1]:
        assert nx[0][1]["error"]["code"] == go[0][1]["error"]["code"]
        assert ("data" in nx[0][1]) == ("data" in go[0][1])


@pytest.mark.parametrize("subject", sorted(_HEAD_ONLY))
def test_request_only_head_serves(pair, subject):
    envelope, data_keys = _HEAD_ONLY[subject]

    async def main():
        nc = await connect(pair[1], "sys")
        try:
            return await collect(nc, subject)
        finally:
            await nc.close()
    answers = run(main())
    assert len(answers) == 1
    reply = answers[0][1]
    assert list(reply) == envelope
    if data_keys is not None:
        assert list(reply["server"]) == _SERVER_INFO_KEYS
        assert [k for k in data_keys if k not in reply["data"]] == []


def test_advisories_have_gos_shape(pair):
    async def main():
        seen = []
        for srv in pair:
            watcher = await connect(srv, "sys")
            events: dict[str, dict] = {}

            async def cb(msg, events=events):
                kind = msg.subject.split(".")
                name = ".".join(kind[-2:]) if kind[1] == "SERVER" else ".".join(kind[3:])
                events.setdefault(name, json.loads(msg.data))
            await watcher.subscribe("$SYS.ACCOUNT.A.>", cb=cb)
            await watcher.subscribe("$SYS.SERVER.ACCOUNT.A.CONNS", cb=cb)
            await watcher.subscribe("$SYS.SERVER.*.CLIENT.AUTH.ERR", cb=cb)
            await watcher.flush()
            await watcher.flush()
            nc = await connect(srv, "a", name="advised")
            await nc.publish("foo.x", b"hello")
            await nc.flush()
            await nc.close()
            with pytest.raises(nats.errors.Error):
                await nats.connect(srv.url, user="a", password="wrong", allow_reconnect=False,
                                   max_reconnect_attempts=0, connect_timeout=2)
            deadline = time.monotonic() + 5
            wanted = {"CONNECT", "DISCONNECT", "SERVER.CONNS", "A.CONNS", "AUTH.ERR"}
            while time.monotonic() < deadline and not wanted <= set(events):
                await asyncio.sleep(0.05)
            await watcher.close()
            seen.append(events)
        return seen
    go, nx = run(main())
    for name in ("CONNECT", "DISCONNECT", "SERVER.CONNS", "AUTH.ERR"):
        assert name in go, f"Go sent no {name}: {sorted(go)}"
        assert name in nx, f"natsx sent no {name}: {sorted(nx)}"
        assert _differences(name, go[name], nx[name], depth=2) == [], name
    assert nx["CONNECT"]["type"] == "io.nats.server.advisory.v1.client_connect"
    assert nx["CONNECT"]["client"]["name"] == "advised"
    assert nx["CONNECT"]["client"]["acc"] == "A"
    assert nx["DISCONNECT"]["type"] == "io.nats.server.advisory.v1.client_disconnect"
    assert nx["DISCONNECT"]["reason"] == go["DISCONNECT"]["reason"] == "Client Closed"
    assert nx["DISCONNECT"]["sent"]["msgs"] == 1
    assert nx["AUTH.ERR"]["reason"] == go["AUTH.ERR"]["reason"]
    assert nx["AUTH.ERR"]["client"]["user"] == "a"
    assert nx["SERVER.CONNS"]["type"] == "io.nats.server.advisory.v1.account_connections"


# ---------------------------------------------------------------------------- workers


def test_one_merged_answer_counts_both_workers(pair):
    nx = pair[1]

    async def main():
        clients = await spread(nx, "a", 2)
        sysc = await connect(nx, "sys")
        try:
            sid = await server_id(sysc)
            open_a = 4
            http = await http_json(nx, "/connz?acc=A")
            connz = await collect(sysc, "$SYS.REQ.SERVER.PING.CONNZ", b'{"acc":"A"}')
            direct = await collect(sysc, f"$SYS.REQ.SERVER.{sid}.CONNZ", b'{"acc":"A"}')
            account = await collect(sysc, "$SYS.REQ.ACCOUNT.A.CONNZ")
            statsz = await collect(sysc, "$SYS.REQ.SERVER.PING")
            varz = await collect(sysc, "$SYS.REQ.SERVER.PING.VARZ")
            statz = await collect(sysc, "$SYS.REQ.ACCOUNT.A.STATZ")
            http_varz = await http_json(nx, "/varz")
        finally:
            await sysc.close()
            await close_all(clients)
        return open_a, http, connz, direct, account, statsz, varz, statz, http_varz
    open_a, http, connz, direct, account, statsz, varz, statz, http_varz = run(main())
    for answers in (connz, direct, account, statsz, varz, statz):
        assert len(answers) == 1, answers
    for answers in (connz, direct, account):
        data = answers[0][1]["data"]
        assert data["num_connections"] == data["total"] == open_a == http["total"]
        assert sorted(c["cid"] for c in data["connections"]) == \
            sorted(c["cid"] for c in http["connections"])
    # The system client and the four of account A, on both workers.
    assert statsz[0][1]["statsz"]["connections"] == open_a + 1
    assert varz[0][1]["data"]["connections"] == open_a + 1 == http_varz["connections"]
    assert statz[0][1]["data"]["account_statz"][0]["conns"] == open_a


def test_user_info_is_answered_by_the_requesters_worker(pair):
    nx = pair[1]

    async def main():
        a_clients = await spread(nx, "a", 1, workers=(0,))
        c_clients = await spread(nx, "c", 1, workers=(1,))
        sys_clients = await spread(nx, "sys", 1)
        try:
            out = {}
            for label, group in (("a", a_clients), ("c", c_clients), ("sys", sys_clients)):
                for w, (nc,) in group.items():
                    out[(label, w)] = await collect(nc, "$SYS.REQ.USER.INFO")
            return out
        finally:
            for group in (a_clients, c_clients, sys_clients):
                await close_all(group)
    answers = run(main())
    for (user, worker), got in answers.items():
        assert len(got) == 1, (user, worker, got)
        data = got[0][1]["data"]
        assert data["user"] == user
        assert data["account"] == ("SYS" if user == "sys" else "A")
    assert "permissions" not in answers[("a", 0)][0][1]["data"]
    assert answers[("c", 1)][0][1]["data"]["permissions"] == {
        "publish": {"allow": ["$SYS.REQ.USER.INFO", "foo.>"]},
        "subscribe": {"allow": ["_INBOX.>"]}}


def test_advisories_reach_subscribers_on_every_worker(pair):
    nx = pair[1]

    async def main():
        watchers = await spread(nx, "sys", 1)
        got: dict[int, list] = {0: [], 1: []}
        for w, (nc,) in watchers.items():
            async def cb(msg, w=w):
                got[w].append(msg.subject)
            await nc.subscribe("$SYS.ACCOUNT.A.*", cb=cb)
            await nc.flush()
            await nc.flush()
        clients = await spread(nx, "a", 1)
        await close_all(clients)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(
                v.count("$SYS.ACCOUNT.A.CONNECT") >= 2
                and v.count("$SYS.ACCOUNT.A.DISCONNECT") >= 2 for v in got.values()):
            await asyncio.sleep(0.05)
        await close_all(watchers)
        return got
    got = run(main())
    for w, subjects in got.items():
        assert subjects.count("$SYS.ACCOUNT.A.CONNECT") >= 2, (w, subjects)
        assert subjects.count("$SYS.ACCOUNT.A.DISCONNECT") >= 2, (w, subjects)


# ---------------------------------------------------------------------------- accounts


def test_other_accounts_cannot_see_sys(pair):
    nx = pair[1]

    async def main():
        a = await connect(nx, "a")
        leaked = []

        async def cb(msg):
            leaked.append(msg.subject)
        await a.subscribe("$SYS.>", cb=cb)
        await a.flush()
        sysc = await connect(nx, "sys")
        other = await connect(nx, "a")
        await other.close()
        await collect(sysc, "$SYS.REQ.SERVER.PING")
        await collect(sysc, "$SYS.REQ.SERVER.PING.VARZ")
        # What account A may ask: its own connections only (Go's system imports).
        connz = await collect(a, "$SYS.REQ.SERVER.PING.CONNZ")
        varz = await collect(a, "$SYS.REQ.SERVER.PING.VARZ", wait=0.3)
        await sysc.close()
        await a.close()
        return leaked, connz, varz
    leaked, connz, varz = run(main())
    # Only the requests A itself published match its own $SYS.> subscription.
    assert [s for s in leaked if s not in ("$SYS.REQ.SERVER.PING.CONNZ",
                                           "$SYS.REQ.SERVER.PING.VARZ")] == []
    assert len(connz) == 1
    assert {c.get("account", "A") for c in connz[0][1]["data"]["connections"]} == {"A"}
    assert connz[0][1]["data"]["total"] == 1
    assert varz == []


# ---------------------------------------------------------------------------- timers, stop


@pytest.mark.parametrize("workers", [1, 2])
def test_statsz_burst_then_shutdown_advisory(tmp_path, workers):
    srv = _start(NATSX, tmp_path, "natsx", "--workers", str(workers))

    async def main():
        nc = await connect(srv, "sys")
        stamps = []
        shutdown = []

        async def on_statsz(msg):
            stamps.append((time.monotonic(), json.loads(msg.data)))

        async def on_shutdown(msg):
            shutdown.append(json.loads(msg.data))
        await nc.subscribe("$SYS.SERVER.*.STATSZ", cb=on_statsz)
        await nc.subscribe("$SYS.SERVER.*.SHUTDOWN", cb=on_shutdown)
        await nc.flush()
        deadline = time.monotonic() + 12
        while len(stamps) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not shutdown and time.monotonic() < deadline and not nc.is_closed:
            await asyncio.sleep(0.02)
        await nc.close()
        return stamps, shutdown
    try:
        stamps, shutdown = run(main())
    finally:
        srv.stop()
    assert len(stamps) >= 3, "STATSZ did not arrive in Go's start-up burst"
    gaps = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    # Go doubles the interval from 250ms: each gap grows (timers are noisy, so loosely).
    assert gaps[-1] > gaps[0] * 1.2, gaps
    body = stamps[-1][1]
    assert list(body) == ["server", "statsz"]
    assert body["statsz"]["connections"] == 1
    assert body["server"]["seq"] > stamps[0][1]["server"]["seq"]
    if workers == 1:
        # Worker 0 announces the shutdown before it closes its connections.
        assert shutdown and list(shutdown[0])[:3] == ["name", "host", "id"]


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("body,answered", [
    ('{"server_name":"no-such-server"}', False),
    ('{"host":"127.0.0.1","exact_match":true}', True),
    # (exact_match, which HEAD honours, is ignored by Debian's 2.9.10: not compared.)
    ('{"host":"127.0.0"}', True),
    ('{"tags":["nope"]}', False),
])
def test_server_filters_like_go(pair, body, answered):
    async def main():
        counts = []
        for srv in pair:
            nc = await connect(srv, "sys")
            counts.append(len(await collect(nc, "$SYS.REQ.SERVER.PING.VARZ", body.encode())))
            await nc.close()
        return counts
    assert run(main()) == [int(answered)] * 2


def test_accept_encoding_gzip(pair):
    import gzip

    async def main():
        nc = await connect(pair[1], "sys")
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("$SYS.REQ.SERVER.PING.CONNZ", b"", reply=inbox,
                             headers={"Accept-Encoding": "gzip"})
            return await sub.next_msg(timeout=5)
        finally:
            await nc.close()
    msg = run(main())
    assert msg.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(msg.data))["data"]["num_connections"] >= 1


def test_decode_options_follows_go_unmarshal():
    from natsx.server.system import ApiError, decode_options

    q, filters = decode_options("CONNZ", b'{"subscriptions_detail":true,"state":1,"limit":5,'
                                         b'"acc":"A","unknown":[1],"server_name":"x"}')
    assert q == {"subs": "detail", "state": "closed", "limit": "5", "acc": "A"}
    assert filters == {"server_name": "x"}
    assert decode_options("VARZ", b"") == ({}, {})
    assert decode_options("VARZ", b"null") == ({}, {})
    for body, text in [
        (b"{bad", "invalid character 'b' looking for beginning of object key string"),
        (b"", None),
        (b'{"limit":"5"}', "json: cannot unmarshal string into Go struct field "
                           "ConnzEventOptions.limit of type int"),
        (b"[]", "json: cannot unmarshal array into Go value of type "
                "server.ConnzEventOptions"),
    ]:
        if text is None:
            continue
        with pytest.raises(ApiError) as err:
            decode_options("CONNZ", body)
        assert err.value.code == 400
        assert err.value.description == text


def test_answers_while_a_worker_is_killed(tmp_path):
    """A dead peer is not waited for past the gather timeout, and a restarted one answers."""
    srv = _start(NATSX, tmp_path, "natsx", "--workers", "2", http=True)

    async def main():
        (sysc,) = (await spread(srv, "sys", 1, workers=(0,)))[0]
        varz = await http_json(srv, "/varz")
        os.kill(varz["worker_pids"][1], signal.SIGKILL)
        started = time.monotonic()
        during = await collect(sysc, "$SYS.REQ.SERVER.PING.VARZ", wait=3.0)
        took = time.monotonic() - started
        deadline = time.monotonic() + 15
        while True:
            after = await collect(sysc, "$SYS.REQ.SERVER.PING.VARZ", wait=1.0)
            pids = after[0][1]["data"]["worker_pids"] if after else [0, 0]
            if all(pids) or time.monotonic() > deadline:
                break
        await sysc.close()
        return during, took, after
    try:
        during, took, after = run(main())
    finally:
        srv.stop()
    assert len(during) == 1 and took < 5
    assert len(after) == 1 and all(after[0][1]["data"]["worker_pids"])


# ---------------------------------------------------------------------------- NSUBS, KICK, LDM


def _nsubs_body(acc: str, subject: str, queue: str | None = None) -> bytes:
    import base64

    doc = {"acc": acc, "subject": subject}
    if queue is not None:
        doc["queue"] = base64.b64encode(queue.encode()).decode()   # Go: a []byte
    return json.dumps(doc).encode()


_NSUBS_CASES = [
    ("literal", _nsubs_body("A", "foo.bar")),
    ("queue", _nsubs_body("A", "foo.bar", "q")),
    ("wildcard", _nsubs_body("A", "foo.>")),
    ("partial wildcard", _nsubs_body("A", "foo.*")),
    ("no match", _nsubs_body("A", "bar")),
    ("no connections", _nsubs_body("SYS2", "foo.bar")),
    ("empty", b""),
    ("not json", b"{bad"),
]


def test_nsubs_counts_like_go(pair):
    """$SYS.REQ.ACCOUNT.NSUBS: the account's client subscriptions on a subject (and queue
    group), summed over natsx's workers; Go answers with a bare JSON number."""
    async def main():
        out = []
        for srv in pair:
            if srv is pair[1]:
                by_worker = await spread(srv, "a", 2)
                clients = [nc for group in by_worker.values() for nc in group]
            else:
                by_worker = {}
                clients = [await connect(srv, "a") for _ in range(4)]
            for nc in clients:
                await nc.subscribe("foo.bar")
                await nc.subscribe("foo.*")
                await nc.subscribe("foo.bar", queue="q")
                await nc.flush()
            sysc = await connect(srv, "sys")
            await asyncio.sleep(0.2)
            answers = []
            for _name, body in _NSUBS_CASES:
                inbox = sysc.new_inbox()
                got = []

                async def cb(msg, got=got):
                    got.append(msg.data)
                sub = await sysc.subscribe(inbox, cb=cb)
                await sysc.publish("$SYS.REQ.ACCOUNT.NSUBS", body, reply=inbox)
                await asyncio.sleep(0.5)
                await sub.unsubscribe()
                answers.append(got)
            out.append(answers)
            for nc in clients:
                await nc.close()
            await sysc.close()
        return out
    go, nx = run(main())
    assert nx == go
    assert [a[0] if a else None for a in nx] == [b"12", b"4", b"12", b"12", b"0", None, None,
                                                 None]


async def _raw_on_worker(srv: RunningServer, user: str, worker: int, workers: int = 2):
    """A raw connection of ``user`` on ``worker`` (INFO's client_id tells), after PONG."""
    for _ in range(60):
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        info = json.loads((await reader.readline())[5:])
        if (info["client_id"] - 1) % workers != worker:
            writer.close()
            continue
        writer.write(b'CONNECT {"verbose":false,"protocol":1,"user":"%s","pass":"%s"}\r\n'
                     b"PING\r\n" % (user.encode(), user.encode()))
        await writer.drain()
        line = await reader.readline()
        while line.startswith(b"INFO"):
            line = await reader.readline()
        assert line == b"PONG\r\n", line
        return info["client_id"], reader, writer
    raise AssertionError(f"no connection reached worker {worker}")


async def _read_all(reader, wait: float = 1.0) -> bytes:
    buf = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                return buf + b"<closed>"
            buf += chunk
    except asyncio.TimeoutError:
        return buf


def test_kick_and_ldm_reach_a_client_on_another_worker(pair):
    """Go 2.10+ $SYS.REQ.SERVER.<id>.KICK / .LDM with {"cid": N}, whichever worker holds
    the client: LDM sends it an INFO with "ldm":true, KICK closes it."""
    srv = pair[1]

    async def main():
        (sysc,) = (await spread(srv, "sys", 1, workers=(0,)))[0]
        sid = await server_id(sysc)
        cid, reader, writer = await _raw_on_worker(srv, "a", 1)
        ldm = await collect(sysc, f"$SYS.REQ.SERVER.{sid}.LDM", json.dumps({"cid": cid}).encode())
        ldm_seen = await _read_all(reader, 0.5)
        kick = await collect(sysc, f"$SYS.REQ.SERVER.{sid}.KICK",
                             json.dumps({"cid": cid}).encode())
        kicked = await _read_all(reader, 1.0)
        again = await collect(sysc, f"$SYS.REQ.SERVER.{sid}.KICK",
                              json.dumps({"cid": cid}).encode())
        ldm_gone = await collect(sysc, f"$SYS.REQ.SERVER.{sid}.LDM",
                                 json.dumps({"cid": cid}).encode())
        dropped = await collect(sysc, f"$SYS.REQ.SERVER.{sid}.KICK", b"not json")
        writer.close()
        connz = await http_json(srv, "/connz?state=closed&limit=1000")
        await sysc.close()
        return ldm, ldm_seen, kick, kicked, again, ldm_gone, dropped, connz, cid
    ldm, ldm_seen, kick, kicked, again, ldm_gone, dropped, connz, cid = run(main())
    assert [list(r) for _h, r in ldm] == [["server"]]
    infos = [json.loads(line[5:]) for line in ldm_seen.split(b"\r\n")
             if line.startswith(b"INFO ")]
    assert [(i["client_id"], i.get("connect_info")) for i in infos if i.get("ldm")] == \
        [(cid, None)]
    assert [list(r) for _h, r in kick] == [["server"]]
    assert kicked == b"<closed>"           # Go closes without an -ERR
    assert [r["error"] for _h, r in again] == [
        {"code": 500, "description": "no such client or leafnode id"}]
    assert [r["error"] for _h, r in ldm_gone] == [{"code": 500, "description": "no such client id"}]
    assert dropped == []                   # Go drops a body that is not a request
    assert [c["reason"] for c in connz["connections"] if c["cid"] == cid] == ["Kicked"]


def test_account_auth_error_event_in_the_clients_account(tmp_path):
    """Go 2.10+: a failed authentication is also published in the account the client was
    in (the global account), on $SYS.ACCOUNT.CLIENT.AUTH.ERR."""
    conf = tmp_path / "g.conf"
    conf.write_text("authorization { users [{user: u, password: u}] }\n")
    port = free_port()
    srv = RunningServer(NATSX + ["-c", str(conf), "-a", "127.0.0.1", "-p", str(port),
                                 "--workers", "2"], port, None, tmp_path / "g.log",
                        dict(os.environ))

    async def main():
        nc = await nats.connect(srv.url, user="u", password="u", allow_reconnect=False)
        got = []

        async def cb(msg):
            got.append(json.loads(msg.data))
        await nc.subscribe("$SYS.ACCOUNT.CLIENT.AUTH.ERR", cb=cb)
        await nc.flush()
        await asyncio.sleep(0.3)
        for _ in range(4):      # on both workers
            try:
                bad = await nats.connect(srv.url, user="u", password="wrong",
                                         allow_reconnect=False, max_reconnect_attempts=0)
                await bad.close()
            except Exception:
                pass
        deadline = time.monotonic() + 5
        while len(got) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await nc.close()
        return got
    try:
        got = run(main())
    finally:
        srv.stop()
    assert len(got) == 4
    event = got[0]
    assert event["type"] == "io.nats.server.advisory.v1.client_disconnect"
    assert event["client"]["acc"] == "$G" and event["client"]["user"] == "u"
    assert event["reason"] == "Authentication Failure"
    assert {"server", "client", "sent", "received", "reason"} <= set(event)


# ---------------------------------------------------------------------------- RELOAD, STATSZ


def test_reload_request_reloads_and_refuses_like_go(tmp_path):
    """$SYS.REQ.SERVER.<id>.RELOAD reloads the server (config_load_time moves) and answers
    a refused reload with Go's error."""
    srv = _start(NATSX, tmp_path, "natsx", "--workers", "2", http=True)
    conf = tmp_path / "sys.conf"

    async def main():
        nc = await connect(srv, "sys")
        sid = await server_id(nc)
        before = (await collect(nc, "$SYS.REQ.SERVER.PING.VARZ"))[0][1]["data"]
        await asyncio.sleep(1.1)
        ok = await collect(nc, f"$SYS.REQ.SERVER.{sid}.RELOAD", wait=1.5)
        after = (await collect(nc, "$SYS.REQ.SERVER.PING.VARZ"))[0][1]["data"]
        http_after = await http_json(srv, "/varz")
        conf.write_text("server_name: renamed\n" + CONFIG)
        refused = await collect(nc, f"$SYS.REQ.SERVER.{sid}.RELOAD", wait=1.5)
        await nc.close()
        return before, ok, after, http_after, refused
    try:
        before, ok, after, http_after, refused = run(main())
    finally:
        srv.stop()
    assert [list(r) for _h, r in ok] == [["server"]]
    assert after["config_load_time"] > before["config_load_time"]
    assert http_after["config_load_time"] > before["config_load_time"]
    assert [r["error"]["code"] for _h, r in refused] == [500]
    assert refused[0][1]["error"]["description"].startswith(
        "config reload not supported for ServerName: old=")
    assert "Reloaded server configuration" in srv.log()


def test_statsz_continues_while_worker_0_is_stuck(tmp_path):
    """Worker 0 sends STATSZ; while it is down, restarting or stuck (its heartbeat stalled),
    worker 1 does (a worker's events have seq * workers + index as ``seq``: it tells the
    sender)."""
    srv = _start(NATSX, tmp_path, "natsx", "--workers", "2", http=True)

    async def main():
        (sysc,) = (await spread(srv, "sys", 1, workers=(1,)))[1]
        seqs = []

        async def cb(msg):
            seqs.append(json.loads(msg.data)["server"]["seq"])
        await sysc.subscribe("$SYS.SERVER.*.STATSZ", cb=cb)
        await sysc.flush()
        await asyncio.sleep(1.0)
        before = list(seqs)
        varz = await http_json(srv, "/varz")
        pid = varz["worker_pids"][0]
        os.kill(pid, signal.SIGSTOP)
        try:
            # Noticed after BEAT_STALE (3s); the stuck worker's part of the answer is
            # waited for up to the gather timeout (2s).
            await asyncio.sleep(7.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        during = seqs[len(before):]
        await asyncio.sleep(1.0)
        await sysc.close()
        return before, during
    try:
        before, during = run(main())
    finally:
        srv.stop()
    assert before and all(s % 2 == 0 for s in before), before
    assert during and all(s % 2 == 1 for s in during), during     # worker 1 took over
