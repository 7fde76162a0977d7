"""Black-box tests of the client protocol: the real ``natsx`` command, raw sockets.

Each test names the behaviour of the Go server it checks (server/parser.go, client.go,
monitor.go, server.go); where natsx follows a newer release than Debian's 2.9.10 the test
says so. Most tests share one server per module (with the default number of workers) and
use their own subjects; the ones that count connections, flood a subscriber or stop the
server start their own. The "across workers" tests pin ``--workers 2`` and place clients
on both workers (a worker's client ids are ``index + 1`` plus multiples of the count), so
they check that the workers behave as one server.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid

import httpx
import pytest

from conftest import NATSX, RunningServer, free_port
from helpers import Wire, msg

pytestmark = pytest.mark.server


# ---------------------------------------------------------------------------- helpers

def connect(port: int, connect: dict | None = None, **kw) -> Wire:
    """A Wire that has sent CONNECT (verbose off unless asked) and had its PONG."""
    w = Wire(port, **kw)
    opts = {"verbose": False, "pedantic": False}
    opts.update(connect or {})
    w.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
    assert w.sync() == ([b"+OK\r\n"] if opts["verbose"] else [])
    return w


def subject() -> str:
    return "t." + uuid.uuid4().hex[:12]


def start_server(tmp_path_factory, *args: str, monitor: bool = True) -> RunningServer:
    port = free_port()
    http_port = free_port() if monitor else None
    cmd = NATSX + ["-a", "127.0.0.1", "-p", str(port)]
    if http_port:
        cmd += ["-m", str(http_port)]
    cmd += list(args)
    log = tmp_path_factory.mktemp("natsx") / "server.log"
    return RunningServer(cmd, port, http_port, log, dict(os.environ))


def http_get(srv: RunningServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{srv.http_port}{path}", timeout=5)


def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def closed_conns(srv: RunningServer, cids, query: str = "") -> list[dict]:
    """The closed connections among ``cids``, once they are all listed."""
    def listed():
        conns = http_get(srv, "/connz?state=closed" + query).json()["connections"]
        mine = [c for c in conns if c["cid"] in cids]
        return mine if len(mine) == len(cids) else None
    return wait_for(listed, what=f"closed connections {sorted(cids)}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--workers", "1", monitor=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--workers", "2")
    yield srv
    srv.stop()


def on_each_worker(srv: RunningServer, opts: dict | None = None) -> tuple[Wire, Wire]:
    """Two connected clients of a ``--workers 2`` server, one on each worker."""
    first = connect(srv.port, opts)
    for _ in range(100):
        other = connect(srv.port, opts)
        if other.info["client_id"] % 2 != first.info["client_id"] % 2:
            return first, other
        other.close()
    raise AssertionError("the kernel never spread the connections over both workers")


@pytest.fixture(scope="module")
def user_server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--user", "derek", "--pass", "s3cr3t")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--auth", "tok3n", monitor=False)
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------- INFO

def test_info_is_sent_on_accept_with_a_space_before_crlf(server):
    # server/util.go generateInfoJSON writes "INFO {json} \r\n".
    w = Wire(server.port)
    assert w.info_line.endswith(b"} \r\n")
    info = w.info
    assert info["server_id"].startswith("N") and len(info["server_id"]) == 56
    assert info["server_id"].isalnum() and info["server_id"].isupper()
    assert info["server_name"] == info["server_id"]
    assert info["proto"] == 1
    assert info["host"] == "127.0.0.1"
    assert info["port"] == server.port
    assert info["headers"] is True
    assert info["max_payload"] == 1048576
    assert isinstance(info["client_id"], int) and info["client_id"] > 0
    assert info["client_ip"] == "127.0.0.1"
    assert "auth_required" not in info
    assert "git_commit" not in info      # omitempty in Go's Info struct
    assert isinstance(info["version"], str) and isinstance(info["go"], str)


def test_info_keys_follow_go_info_struct_order(server, user_server):
    go_order = ["server_id", "server_name", "version", "proto", "go", "host", "port",
                "headers", "auth_required", "max_payload", "client_id", "client_ip", "nonce"]
    for srv in (server, user_server):
        keys = [k for k in Wire(srv.port).info if k in go_order]
        assert keys == [k for k in go_order if k in keys]


def test_each_connection_gets_its_own_client_id(server):
    ids = {Wire(server.port).info["client_id"] for _ in range(3)}
    assert len(ids) == 3


def test_info_says_auth_required_with_user_or_token(user_server, token_server):
    assert Wire(user_server.port).info["auth_required"] is True
    assert Wire(token_server.port).info["auth_required"] is True


# ---------------------------------------------------------------------------- framing

def test_ops_are_case_insensitive(server):
    # FEATURES 1.1: "pub foo 1\r\na\r\nsub foo 9\r\nping\r\n" works (parser.go OP_P/OP_p...).
    s = subject()
    w = Wire(server.port)
    w.send(f'connect {{"verbose":false}}\r\nsub {s} 9\r\npub {s} 1\r\na\r\n'.encode())
    assert w.sync() == [msg(s, "9", b"a")]
    w.send(f"UnSuB 9\r\nPuB {s} 1\r\nb\r\n".encode())
    assert w.sync() == []


def test_tabs_and_runs_of_spaces_separate_arguments(server):
    s = subject()
    w = connect(server.port)
    w.send(f"SUB\t{s}\t \t1\r\nPUB\t {s}  \trep\t2\r\nhi\r\n".encode())
    assert w.sync() == [msg(s, "1", b"hi", "rep")]


def test_bare_newline_ends_a_control_line(server):
    # parser.go drops the \r when present; a bare \n also ends the line.
    s = subject()
    w = Wire(server.port)
    w.send(f'CONNECT {{"verbose":false}}\nSUB {s} 1\nPUB {s} 2\nhi\r\nPING\n'.encode())
    assert w.frame() == msg(s, "1", b"hi")
    assert w.frame() == b"PONG\r\n"


def test_frames_split_across_reads_are_reassembled(server):
    s = subject()
    w = connect(server.port, {"headers": True})
    data = (f"SUB {s} 1\r\nPUB {s} r 5\r\nhello\r\nHPUB {s} 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
            "PING\r\n").encode()
    for i in range(len(data)):
        w.send(data[i:i + 1])
        time.sleep(0.001)
    assert w.frame() == msg(s, "1", b"hello", "r")
    assert w.frame() == f"HMSG {s} 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n".encode()
    assert w.frame() == b"PONG\r\n"


@pytest.mark.parametrize("frame", [
    b"PUB foo 2\r\nhello\r\n",        # payload longer than announced
    b"PUB foo 2\r\nhiXX",             # payload not followed by \r\n
    b"PUB foo 2\r\nhi\n\n",           # \n without the \r after the payload
])
def test_payload_must_be_followed_by_crlf(server, frame):
    # parser.go MSG_END_R / MSG_END_N.
    w = connect(server.port)
    w.send(frame)
    assert w.until_closed() == [b"-ERR 'Unknown Protocol Operation'\r\n"]


@pytest.mark.parametrize("line", [
    b"FOO bar\r\n", b"MSG foo 1 2\r\nhi\r\n", b"RS+ foo\r\n", b"LS+ foo\r\n", b"A+ foo\r\n",
    b"PUBX foo 2\r\n", b"SUBfoo 1\r\n", b"P\r\n", b"UNSUB\r\n",
])
def test_unknown_operation_is_answered_and_closed(server, line):
    w = connect(server.port)
    w.send(line)
    assert w.until_closed() == [b"-ERR 'Unknown Protocol Operation'\r\n"]


def test_the_rest_of_a_ping_pong_or_ok_line_is_ignored(server):
    # parser.go OP_PING/OP_PONG/OP_PLUS_OK wait for the \n and ignore what comes before it.
    w = connect(server.port)
    w.send(b"PINGX\r\nPING foo\r\nPONGX\r\n+OKX\r\n")
    assert w.frame() == b"PONG\r\n"
    assert w.frame() == b"PONG\r\n"
    assert w.sync() == []


@pytest.mark.parametrize("line", [
    b"PUB foo\r\n", b"PUB foo bar baz 3\r\n", b"PUB foo x\r\n", b"PUB foo -1\r\n",
    b"PUB foo 1234567890\r\n", b"SUB foo\r\n", b"SUB foo q 1 2\r\n", b"UNSUB 1 2 3\r\n",
])
def test_malformed_arguments_close_without_err(server, line):
    # client.go processPub/processSub: "processPub Parse Error" is logged, nothing is sent.
    w = connect(server.port)
    w.send(line)
    assert w.until_closed() == []


def test_maximum_control_line_exceeded(server):
    # parser.go overMaxControlLineLimit: default max_control_line 4096.
    w = connect(server.port)
    w.send(b"SUB " + b"a" * 5000 + b" 1\r\n")
    assert w.until_closed() == [b"-ERR 'maximum control line exceeded'\r\n"]


def test_maximum_control_line_counts_an_unterminated_line(server):
    w = connect(server.port)
    w.send(b"SUB " + b"a" * 5000)
    assert w.until_closed() == [b"-ERR 'maximum control line exceeded'\r\n"]


def test_control_line_at_the_limit_is_accepted(server):
    w = connect(server.port)
    w.send(b"SUB " + b"a" * 4092 + b" 1\r\n")     # the arguments are 4094 bytes
    assert w.sync() == []


def test_maximum_payload_violation(server):
    # client.go maxPayloadViolation: checked on the PUB line, before the payload arrives.
    w = connect(server.port)
    w.send(b"PUB foo 1048577\r\n")
    assert w.until_closed() == [b"-ERR 'Maximum Payload Violation'\r\n"]


def test_payload_of_exactly_max_payload_is_delivered(server):
    s = subject()
    w = connect(server.port)
    payload = os.urandom(1048576)
    w.send(f"SUB {s} 1\r\nPUB {s} {len(payload)}\r\n".encode() + payload + b"\r\n")
    assert w.sync(timeout=10) == [msg(s, "1", payload)]


# ---------------------------------------------------------------------------- CONNECT

def test_ops_before_connect_are_allowed_without_auth(server):
    # parser.go OP_START: no auth, so a telnet user may PUB first; verbose defaults to true.
    s = subject()
    w = Wire(server.port)
    w.send(f"SUB {s} 1\r\nPUB {s} 2\r\nhi\r\n".encode())
    assert w.sync() == [b"+OK\r\n", b"+OK\r\n", msg(s, "1", b"hi")]


def test_connect_defaults_are_verbose_pedantic_echo(server):
    # client.go defaultOpts: {"protocol":0} alone earns +OK; pedantic and echo are on.
    s = subject()
    w = Wire(server.port)
    w.send(f'CONNECT {{"protocol":0}}\r\nSUB {s} 1\r\nPUB {s}.* 1\r\na\r\nPUB {s} 1\r\nb\r\n'.encode())
    assert w.sync() == [b"+OK\r\n", b"+OK\r\n", b"-ERR 'Invalid Publish Subject'\r\n",
                        b"+OK\r\n", b"+OK\r\n", msg(s, "1", b"b")]


def test_verbose_acknowledges_connect_sub_unsub_and_pub_but_not_ping(server):
    s = subject()
    w = Wire(server.port)
    w.send(f'CONNECT {{"verbose":true}}\r\nSUB {s} 1\r\nUNSUB 1\r\nPUB {s} 1\r\na\r\n'.encode())
    assert w.sync() == [b"+OK\r\n"] * 4


@pytest.mark.parametrize("arg", [
    b"{bad json", b"[]", b'{"verbose":"yes"}', b'{"protocol":"1"}', b'{"protocol":1.5}',
    b'{"headers":1}', b'{"name":7}',
])
def test_bad_connect_closes_without_err(server, arg):
    # client.go processConnect: a json.Unmarshal error into ClientOpts closes the client.
    w = Wire(server.port)
    w.send(b"CONNECT " + arg + b"\r\nPING\r\n")
    assert w.until_closed() == []


def test_null_connect_fields_keep_their_defaults(server):
    w = Wire(server.port)
    w.send(b'CONNECT {"verbose":null,"name":null}\r\n')
    assert w.sync() == [b"+OK\r\n"]


def test_protocol_above_one_is_refused(server):
    w = Wire(server.port)
    w.send(b'CONNECT {"verbose":false,"protocol":2}\r\n')
    assert w.until_closed() == [b"-ERR 'invalid client protocol'\r\n"]


@pytest.mark.parametrize("arg", [b'{"account":"A"}', b'{"new_account":true}'])
def test_account_in_connect_is_an_authorization_violation(server, arg):
    # client.go processConnect: the deprecated account designation is refused.
    w = Wire(server.port)
    w.send(b"CONNECT " + arg + b"\r\n")
    assert w.until_closed() == [b"-ERR 'Authorization Violation'\r\n"]


def test_empty_account_in_connect_is_ignored(server):
    w = Wire(server.port)
    w.send(b'CONNECT {"verbose":false,"account":"","new_account":false}\r\n')
    assert w.sync() == []


def test_no_responders_requires_headers(server):
    w = Wire(server.port)
    w.send(b'CONNECT {"verbose":false,"no_responders":true}\r\n')
    assert w.until_closed() == [b"-ERR 'no responders requires headers support'\r\n"]


def test_hpub_without_headers_closes_without_err(server):
    # "message headers not supported" is only logged.
    w = connect(server.port)
    w.send(b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
    assert w.until_closed() == []


def test_hpub_header_size_above_total_closes(server):
    w = connect(server.port, {"headers": True})
    w.send(b"HPUB foo 20 14\r\n")
    assert w.until_closed() == []


def test_client_info_ok_and_pong_are_ignored(server):
    w = connect(server.port)
    w.send(b"INFO {}\r\n+OK\r\nPONG\r\n")
    assert w.sync() == []


def test_err_from_a_client_closes_it(server):
    # client.go processErr: a client's -ERR is logged and the connection closed.
    w = connect(server.port)
    w.send(b"-ERR 'whatever'\r\n")
    assert w.until_closed() == []


# ---------------------------------------------------------------------------- auth

@pytest.mark.parametrize("first", [b"PING\r\n", b"PUB foo 1\r\na\r\n", b"SUB foo 1\r\n",
                                   b"CONNECT {}\r\n"])
def test_auth_required_refuses_anything_but_a_good_connect(user_server, first):
    w = Wire(user_server.port)
    w.send(first)
    assert w.until_closed() == [b"-ERR 'Authorization Violation'\r\n"]


def test_bad_password_is_an_authorization_violation(user_server):
    w = Wire(user_server.port)
    w.send(b'CONNECT {"verbose":false,"user":"derek","pass":"nope"}\r\n')
    assert w.until_closed() == [b"-ERR 'Authorization Violation'\r\n"]


def test_good_user_and_password_are_accepted(user_server):
    s = subject()
    w = Wire(user_server.port)
    w.send(f'connect {{"user":"derek","pass":"s3cr3t"}}\r\nSUB {s} 1\r\nPUB {s} 1\r\nx\r\n'.encode())
    assert w.sync() == [b"+OK\r\n", b"+OK\r\n", b"+OK\r\n", msg(s, "1", b"x")]


def test_credentials_are_checked_before_the_protocol_version(user_server):
    # processConnect checks authentication first, then account, then protocol.
    w = Wire(user_server.port)
    w.send(b'CONNECT {"user":"derek","pass":"nope","protocol":2}\r\n')
    assert w.until_closed() == [b"-ERR 'Authorization Violation'\r\n"]


def test_auth_failure_is_recorded_in_closed_connections(user_server):
    w = Wire(user_server.port)
    cid = w.info["client_id"]
    w.send(b'CONNECT {"user":"derek","pass":"nope"}\r\n')
    w.until_closed()
    (closed,) = closed_conns(user_server, {cid})
    assert closed["reason"] == "Authentication Failure"


@pytest.mark.parametrize("token, ok", [("tok3n", True), ("bad", False), (None, False)])
def test_auth_token(token_server, token, ok):
    w = Wire(token_server.port)
    opts = {"verbose": False} if token is None else {"verbose": False, "auth_token": token}
    w.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
    if ok:
        assert w.sync() == []
    else:
        assert w.until_closed() == [b"-ERR 'Authorization Violation'\r\n"]


def test_authentication_timeout_with_the_default_two_seconds(user_server):
    # client.go authTimeout; authorization.timeout defaults to 2s (the CLI cannot change it).
    w = Wire(user_server.port, timeout=8)
    start = time.monotonic()
    assert w.until_closed() == [b"-ERR 'Authentication Timeout'\r\n"]
    assert time.monotonic() - start >= 1.5


# ---------------------------------------------------------------------------- messaging

def test_pedantic_publish_to_a_wildcard_is_refused_but_not_closed(server):
    s = subject()
    w = connect(server.port, {"pedantic": True, "verbose": True})
    w.send(f"PUB {s}.* 1\r\na\r\nPUB {s}..x 1\r\na\r\n".encode())
    assert w.sync() == [b"-ERR 'Invalid Publish Subject'\r\n", b"+OK\r\n",
                        b"-ERR 'Invalid Publish Subject'\r\n", b"+OK\r\n"]


def test_non_pedantic_publish_to_a_wildcard_is_a_literal(server):
    s = subject()
    w = connect(server.port, {"verbose": True})
    w.send(f"PUB {s}.* 1\r\na\r\n".encode())
    assert w.sync() == [b"+OK\r\n"]


def test_echo_false_skips_own_messages(server):
    s = subject()
    quiet = connect(server.port, {"echo": False})
    other = connect(server.port)
    for w in (quiet, other):
        w.send(f"SUB {s} 1\r\n".encode())
        w.sync()
    quiet.send(f"PUB {s} 1\r\na\r\n".encode())
    assert quiet.sync() == []
    assert other.sync() == [msg(s, "1", b"a")]


@pytest.mark.parametrize("bad", ["foo..bar", "foo.", ".foo", "foo.>.bar", "foo.*bar.>.x"])
def test_sub_to_an_invalid_subject_is_refused_but_not_closed(server, bad):
    w = connect(server.port)
    w.send(f"SUB {bad} 1\r\n".encode())
    assert w.sync() == [b"-ERR 'Invalid Subject'\r\n"]


def test_reusing_a_sid_is_ignored(server):
    # client.go processSubEx: the first SUB with a sid wins.
    a, b = subject(), subject()
    w = connect(server.port, {"verbose": True})
    w.send(f"SUB {a} 1\r\nSUB {b} 1\r\nPUB {b} 1\r\nx\r\nPUB {a} 1\r\ny\r\n".encode())
    assert w.sync() == [b"+OK\r\n"] * 4 + [msg(a, "1", b"y")]


def test_unsub_with_max_auto_unsubscribes(server):
    s = subject()
    w = connect(server.port)
    w.send(f"SUB {s} 1\r\nUNSUB 1 2\r\n".encode() + f"PUB {s} 1\r\nx\r\n".encode() * 3)
    assert w.sync() == [msg(s, "1", b"x")] * 2
    w.send(f"PUB {s} 1\r\nx\r\n".encode())
    assert w.sync() == []


def test_unsub_with_max_already_reached_unsubscribes_at_once(server):
    s = subject()
    w = connect(server.port)
    w.send(f"SUB {s} 1\r\n".encode() + f"PUB {s} 1\r\nx\r\n".encode() * 2 + b"UNSUB 1 1\r\n"
           + f"PUB {s} 1\r\ny\r\n".encode())
    assert w.sync() == [msg(s, "1", b"x")] * 2


def test_unsub_of_an_unknown_sid_is_ignored(server):
    w = connect(server.port, {"verbose": True})
    w.send(b"UNSUB 99\r\nUNSUB 98 5\r\n")
    assert w.sync() == [b"+OK\r\n", b"+OK\r\n"]


def test_queue_group_delivers_to_one_member_plus_plain_subscribers(single):
    # client.go processMsgResults: a random member of each group, plus every plain sub.
    server = single
    s = subject()
    members = [connect(server.port) for _ in range(2)]
    plain = connect(server.port)
    for i, w in enumerate(members):
        w.send(f"SUB {s} workers {i + 1}\r\n".encode())
        w.sync()
    plain.send(f"SUB {s} 9\r\n".encode())
    plain.sync()
    pub = connect(server.port)
    n = 200
    pub.send(f"PUB {s} 1\r\nx\r\n".encode() * n)
    pub.sync()
    assert plain.sync() == [msg(s, "9", b"x")] * n
    got = [len(w.sync()) for w in members]
    assert sum(got) == n
    assert all(g > 0 for g in got), got     # members are picked at random, both get some


def test_queue_group_in_one_connection_gets_each_message_once(server):
    s = subject()
    w = connect(server.port)
    w.send(f"SUB {s} q 1\r\nSUB {s} q 2\r\nSUB {s} 3\r\nPUB {s} 1\r\nx\r\n".encode())
    frames = w.sync()
    assert msg(s, "3", b"x") in frames and len(frames) == 2
    assert {msg(s, "1", b"x"), msg(s, "2", b"x")} & set(frames)


def test_wildcards_star_and_full(server):
    s = subject()
    w = connect(server.port)
    w.send(f"SUB {s}.* 1\r\nSUB {s}.> 2\r\nSUB {s}.*.c 3\r\n".encode()
           + f"PUB {s}.a 1\r\n1\r\nPUB {s}.a.b 1\r\n2\r\nPUB {s} 1\r\n3\r\nPUB {s}.b.c 1\r\n4\r\n".encode())
    assert sorted(w.sync()) == sorted([
        msg(f"{s}.a", "1", b"1"), msg(f"{s}.a", "2", b"1"), msg(f"{s}.a.b", "2", b"2"),
        msg(f"{s}.b.c", "2", b"4"), msg(f"{s}.b.c", "3", b"4")])


def test_header_message_framing(server):
    s = subject()
    w = connect(server.port, {"headers": True})
    hdr = b"NATS/1.0\r\nA: b\r\n\r\n"
    w.send(f"SUB {s} 1\r\nHPUB {s} rep {len(hdr)} {len(hdr) + 2}\r\n".encode() + hdr + b"hi\r\n")
    assert w.sync() == [f"HMSG {s} 1 rep {len(hdr)} {len(hdr) + 2}\r\n".encode() + hdr + b"hi\r\n"]


def test_header_message_to_a_client_without_headers_is_stripped(server):
    s = subject()
    plain = connect(server.port)
    plain.send(f"SUB {s} 1\r\n".encode())
    plain.sync()
    pub = connect(server.port, {"headers": True})
    hdr = b"NATS/1.0\r\nA: b\r\n\r\n"
    pub.send(f"HPUB {s} {len(hdr)} {len(hdr) + 5}\r\n".encode() + hdr + b"hello\r\n")
    pub.sync()
    assert plain.sync() == [msg(s, "1", b"hello")]


def test_no_responders_503_names_the_subject(server):
    # natsx follows 2.12: the status carries Nats-Subject (2.9.10 sends the bare 503).
    s, inbox = subject(), subject()
    w = connect(server.port, {"headers": True, "no_responders": True})
    w.send(f"SUB {inbox} 1\r\nPUB {s} {inbox} 0\r\n\r\n".encode())
    hdr = f"NATS/1.0 503\r\nNats-Subject: {s}\r\n\r\n".encode()
    assert w.sync() == [f"HMSG {inbox} 1 {len(hdr)} {len(hdr)}\r\n".encode() + hdr + b"\r\n"]


def test_no_responders_is_silent_when_a_responder_exists(server):
    s, inbox = subject(), subject()
    responder = connect(server.port)
    responder.send(f"SUB {s} 1\r\n".encode())
    responder.sync()
    w = connect(server.port, {"headers": True, "no_responders": True})
    w.send(f"SUB {inbox} 1\r\nPUB {s} {inbox} 0\r\n\r\n".encode())
    assert w.sync() == []
    assert responder.sync() == [msg(s, "1", b"", inbox)]


@pytest.mark.parametrize("reply", ["_R_.x.y", "_R_.", "$JS.ACK.x", "_GR_.x"])
def test_reserved_reply_prefix_is_a_permissions_violation(server, reply):
    # client.go isReservedReply / replySubjectViolation; the connection stays up.
    s = subject()
    w = connect(server.port, {"verbose": True})
    w.send(f"SUB {s} 1\r\nPUB {s} {reply} 1\r\na\r\n".encode())
    assert w.sync() == [b"+OK\r\n",
                        f"-ERR 'Permissions Violation for Publish with Reply of \"{reply}\"'\r\n".encode()]


def test_publish_to_a_gateway_reply_subject_is_refused(server):
    # client.go processInboundClientMsg: hasGWRoutedReplyPrefix.
    w = connect(server.port, {"verbose": True})
    w.send(b"SUB _GR_.x 1\r\nPUB _GR_.x 1\r\na\r\n")
    assert w.sync() == [b"+OK\r\n", b"-ERR 'Permissions Violation for Publish to \"_GR_.x\"'\r\n"]


def test_publish_to_nrg_subjects_is_refused_outside_the_system_account(server):
    # 2.11+: clients may not publish on $NRG.* (2.9.10 allowed it).
    w = connect(server.port)
    w.send(b"PUB $NRG.x 1\r\na\r\n")
    assert w.sync() == [b"-ERR 'Permissions Violation for Publish to \"$NRG.x\"'\r\n"]


def test_utf8_subjects(server):
    s = subject() + ".été"
    w = connect(server.port)
    w.send(f"SUB {s} 1\r\nPUB {s} 2\r\nhi\r\n".encode())
    assert w.sync() == [msg(s, "1", b"hi")]


# ---------------------------------------------------------------------------- PING / PONG

def test_ping_is_answered_with_pong(server):
    w = Wire(server.port)
    w.send(b"PING\r\nping\r\n")
    assert w.frame() == b"PONG\r\n"
    assert w.frame() == b"PONG\r\n"


def test_first_pong_after_connect_brings_async_info_for_protocol_one(server):
    # 2.12 processPing: a proto-1 client gets INFO with connect_info after its first PONG.
    w = Wire(server.port)
    w.send(b'CONNECT {"verbose":false,"protocol":1}\r\nPING\r\n')
    assert w.frame() == b"PONG\r\n"
    info = w.frame()
    assert info.startswith(b"INFO ") and info.endswith(b" \r\n")
    fields = json.loads(info[5:])
    assert fields["connect_info"] is True and fields["remote_account"] == "$G"
    assert w.sync() == []


def test_server_sends_its_first_ping_about_two_seconds_after_connect(server):
    # client.go setFirstPingTimer: min(ping_interval, 2s) plus up to 20%, started by CONNECT.
    w = Wire(server.port, timeout=6)
    w.send(b'CONNECT {"verbose":false}\r\n')
    start = time.monotonic()
    assert w.frame() == b"PING\r\n"
    assert 1.5 <= time.monotonic() - start
    w.send(b"PONG\r\n")
    assert w.sync() == []


@pytest.mark.parametrize("impl", ["natsx", "go"])
def test_stale_connection_after_max_pings_out(impl, tmp_path, start_natsx, start_go):
    # client.go processPingTimer: a client that leaves ping_max PINGs unanswered gets
    # -ERR 'Stale Connection' at the next tick and is closed.
    conf = tmp_path / "ping.conf"
    conf.write_text('ping_interval: "200ms"\nping_max: 2\n')
    srv = (start_natsx if impl == "natsx" else start_go)("-c", str(conf))
    w = Wire(srv.port, timeout=5)
    w.send(b'CONNECT {"verbose":false}\r\n')
    start = time.monotonic()
    assert w.frame() == b"PING\r\n"
    assert w.frame() == b"PING\r\n"
    assert w.frame() == b"-ERR 'Stale Connection'\r\n"
    assert 0.4 <= time.monotonic() - start < 3
    assert w.sock.recv(100) == b""


# ---------------------------------------------------------------------------- monitoring

def test_varz_shape(natsx_server):
    varz = http_get(natsx_server, "/varz")
    assert varz.status_code == 200
    assert varz.headers["content-type"] == "application/json"
    assert varz.text.startswith('{\n  "server_id"')      # json.MarshalIndent, two spaces
    v = varz.json()
    for key in ("server_id", "server_name", "version", "proto", "go", "host", "port",
                "max_connections", "ping_interval", "ping_max", "http_host", "http_port",
                "auth_timeout", "max_control_line", "max_payload", "max_pending", "tls_timeout",
                "write_deadline", "start", "now", "uptime", "mem", "cores", "connections",
                "total_connections", "in_msgs", "out_msgs", "in_bytes", "out_bytes",
                "slow_consumers", "subscriptions", "http_req_stats", "config_load_time"):
        assert key in v, key
    assert v["port"] == natsx_server.port and v["http_port"] == natsx_server.http_port
    assert v["max_payload"] == 1048576 and v["max_pending"] == 64 * 1024 * 1024
    assert v["ping_interval"] == 120 * 10**9 and v["write_deadline"] == 10 * 10**9
    assert v["max_control_line"] == 4096 and v["auth_timeout"] == 2


def test_varz_counts_messages_and_connections(natsx_server):
    # The server's own $SYS service subscriptions count too, as in Go.
    base = http_get(natsx_server, "/varz").json()["subscriptions"]
    w = connect(natsx_server.port)
    w.send(b"SUB foo 1\r\nPUB foo 5\r\nhello\r\n")
    assert w.sync() == [msg("foo", "1", b"hello")]
    # The harness's port probe may still be closing on another worker.
    v = wait_for(lambda: (lambda v: v if v["connections"] == 1 else None)(
        http_get(natsx_server, "/varz").json()), what="one open connection")
    assert v["total_connections"] >= 1
    assert v["in_msgs"] == 1 and v["out_msgs"] == 1
    assert v["in_bytes"] == 5 and v["out_bytes"] == 5
    assert v["subscriptions"] == base + 1


def test_connz_lists_open_connections_with_subs(natsx_server):
    w = connect(natsx_server.port, {"name": "probe", "lang": "raw", "version": "1.2"})
    w.send(b"SUB foo 1\r\nSUB bar q 2\r\n")
    w.sync()
    r = http_get(natsx_server, "/connz?subs=1")
    assert r.text.startswith('{\n  "server_id"')
    c = r.json()
    assert (c["num_connections"], c["total"], c["offset"], c["limit"]) == (1, 1, 0, 1024)
    conn = c["connections"][0]
    assert conn["cid"] == w.info["client_id"]
    assert (conn["kind"], conn["type"], conn["ip"]) == ("Client", "nats", "127.0.0.1")
    assert (conn["name"], conn["lang"], conn["version"]) == ("probe", "raw", "1.2")
    assert conn["subscriptions"] == 2
    assert sorted(conn["subscriptions_list"]) == ["bar", "foo"]
    assert "stop" not in conn and "reason" not in conn
    keys = list(conn)
    assert keys[:7] == ["cid", "kind", "type", "ip", "port", "start", "last_activity"]
    assert conn["rtt"] != "0s"       # estimated from accept to CONNECT, as Go does


def test_connz_by_cid_and_subs_detail(natsx_server):
    a = connect(natsx_server.port)
    b = connect(natsx_server.port)
    b.send(b"SUB foo q 7\r\n")
    b.sync()
    c = http_get(natsx_server, f"/connz?cid={b.info['client_id']}&subs=detail").json()
    assert c["limit"] == 1 and c["num_connections"] == 1
    detail = c["connections"][0]["subscriptions_list_detail"]
    # Go's newClientSubDetail: no account in a connection's subscription details (it is
    # in /subsz's, newSubDetail).
    assert detail == [{"subject": "foo", "qgroup": "q", "sid": "7", "msgs": 0,
                       "cid": b.info["client_id"]}]
    assert a.info["client_id"] != b.info["client_id"]


def test_connz_closed_state_carries_the_reason(natsx_server):
    w = connect(natsx_server.port)
    cid = w.info["client_id"]
    open_one = connect(natsx_server.port)
    w.close()
    (closed,) = closed_conns(natsx_server, {cid})
    assert closed["reason"] == "Client Closed"
    keys = list(closed)
    assert keys.index("stop") == keys.index("last_activity") + 1
    assert keys.index("reason") == keys.index("stop") + 1
    assert [c["cid"] for c in http_get(natsx_server, "/connz").json()["connections"]] == \
        [open_one.info["client_id"]]
    both = http_get(natsx_server, "/connz?state=all").json()["connections"]
    assert {cid, open_one.info["client_id"]} <= {c["cid"] for c in both}
    assert {c["cid"] for c in both} == {c["cid"] for c in http_get(
        natsx_server, "/connz?state=ANY").json()["connections"]}


def test_connz_sort_limit_and_offset(natsx_server):
    conns = [connect(natsx_server.port) for _ in range(4)]
    for i, w in enumerate(conns):
        w.send(b"".join(b"SUB s.%d %d\r\n" % (j, j) for j in range(i)))
        w.sync()
    cids = [w.info["client_id"] for w in conns]
    wait_for(lambda: http_get(natsx_server, "/connz").json()["total"] == 4,
             what="only the four clients open")
    page = http_get(natsx_server, "/connz?limit=2&offset=1").json()
    assert (page["total"], page["num_connections"], page["offset"], page["limit"]) == (4, 2, 1, 2)
    assert [c["cid"] for c in page["connections"]] == sorted(cids)[1:3]
    by_subs = http_get(natsx_server, "/connz?sort=subs").json()["connections"]
    assert [c["cid"] for c in by_subs] == cids[::-1]       # only cid sorts ascending
    assert [c["subscriptions"] for c in by_subs] == [3, 2, 1, 0]
    defaults = http_get(natsx_server, "/connz?limit=0&offset=-3").json()
    assert (defaults["limit"], defaults["offset"]) == (1024, 0)


@pytest.mark.parametrize("query, text", [
    ("sort=bogus", "invalid sorting option: bogus"),
    ("state=bogus", "Error decoding state for bogus"),
    ("sort=stop", "sort by stop only valid on closed connections"),
    ("sort=reason&state=open", "sort by reason only valid on closed connections"),
    ("limit=x", "Error decoding int for 'limit': strconv.Atoi: parsing \"x\": invalid syntax"),
    ("cid=abc", "Error decoding uint64 for 'cid': strconv.ParseUint: parsing \"abc\": invalid syntax"),
    ("auth=maybe", "Error decoding boolean for 'auth': strconv.ParseBool: parsing \"maybe\": invalid syntax"),
])
def test_connz_bad_parameters_are_400_with_go_text(server, query, text):
    r = http_get(server, "/connz?" + query)
    assert (r.status_code, r.text) == (400, text)


def _rfc3339_ns(text: str) -> tuple[str, int]:
    """A UTC RFC 3339 time with an optional fraction as (whole seconds, nanoseconds)."""
    whole, _, frac = text.rstrip("Z").partition(".")
    return whole, int((frac + "000000000")[:9])


def test_connz_sort_by_stop_and_reason_on_closed(natsx_server):
    cids = set()
    for line in (b"FOO\r\n", b"PUB foo\r\n", b"BAR\r\n"):
        w = Wire(natsx_server.port)
        cids.add(w.info["client_id"])
        w.send(line).until_closed()
    closed_conns(natsx_server, cids)
    conns = http_get(natsx_server, "/connz?state=closed&sort=stop").json()["connections"]
    # Go's RFC 3339 times drop trailing zeros of the fraction ("...03.18Z" is before
    # "...03.181009Z"), so they are compared as (seconds, nanoseconds), not as text.
    stops = [_rfc3339_ns(c["stop"]) for c in conns]
    assert stops == sorted(stops, reverse=True)        # most recent first
    reasons = [c["reason"] for c in http_get(natsx_server, "/connz?state=closed&sort=reason")
               .json()["connections"]]
    assert reasons == sorted(reasons)
    assert {"Parse Error", "Protocol Violation"} <= set(reasons)


def test_subsz_shape_and_test_filter(natsx_server):
    # The server's own $SYS service subscriptions count too, as in Go.
    base = http_get(natsx_server, "/subsz").json()["num_subscriptions"]
    w = connect(natsx_server.port)
    w.send(b"SUB foo.* 1\r\nSUB bar 2\r\n")
    w.sync()
    s = http_get(natsx_server, "/subsz").json()
    for key in ("server_id", "now", "num_subscriptions", "num_cache", "num_inserts",
                "num_removes", "num_matches", "cache_hit_rate", "max_fanout", "avg_fanout",
                "total", "offset", "limit"):
        assert key in s, key
    assert s["num_subscriptions"] == base + 2 and "subscriptions_list" not in s
    listed = http_get(natsx_server, "/subsz?subs=1&test=foo.x").json()
    assert listed["total"] == 1
    assert listed["subscriptions_list"] == [{"account": "$G", "subject": "foo.*", "sid": "1",
                                             "msgs": 0, "cid": w.info["client_id"]}]
    assert http_get(natsx_server, "/subscriptionsz").json()["num_subscriptions"] == base + 2
    bad = http_get(natsx_server, "/subsz?test=foo.*")
    assert bad.status_code == 400
    assert bad.text == "invalid test subject, must be valid publish subject: foo.*"


def test_healthz_and_unknown_paths(server):
    r = http_get(server, "/healthz")
    assert (r.status_code, r.text) == (200, '{"status":"ok"}')
    assert r.headers["content-type"] == "application/json"
    r = http_get(server, "/nope")
    assert (r.status_code, r.text) == (404, "404 page not found\n")


# ---------------------------------------------------------------------------- across workers

def test_messages_cross_workers_in_order(pair):
    s = subject()
    sub, pub = on_each_worker(pair)
    sub.send(f"SUB {s} 1\r\n".encode())
    assert sub.sync() == []      # the PONG also means every worker knows the subscription
    pub.send(b"".join(f"PUB {s} {len(str(i))}\r\n{i}\r\n".encode() for i in range(1000)))
    pub.sync()
    got = []
    while len(got) < 1000:
        got.append(sub.frame())
    assert got == [msg(s, "1", str(i).encode()) for i in range(1000)]


def test_max_payload_message_crosses_workers(pair):
    s = subject()
    sub, pub = on_each_worker(pair)
    sub.send(f"SUB {s} 1\r\n".encode())
    sub.sync()
    payload = os.urandom(1048576)
    pub.send(f"PUB {s} {len(payload)}\r\n".encode() + payload + b"\r\n")
    assert pub.sync(timeout=10) == []
    assert sub.frame(timeout=10) == msg(s, "1", payload)


def test_queue_group_is_exactly_once_across_workers(pair):
    s = subject()
    a, b = on_each_worker(pair)
    for i, w in enumerate((a, b)):
        w.send(f"SUB {s} q {i}\r\n".encode())
        w.sync()
    pub = connect(pair.port)
    n = 300
    pub.send(b"".join(f"PUB {s} {len(str(i))}\r\n{i}\r\n".encode() for i in range(n)))
    pub.sync()
    time.sleep(0.2)
    got = [f.split(b"\r\n")[1] for w in (a, b) for f in w.sync()]
    assert sorted(got, key=int) == [str(i).encode() for i in range(n)]


def test_queue_members_on_every_worker_get_messages(pair):
    s = subject()
    a, b = on_each_worker(pair)
    for i, w in enumerate((a, b)):
        w.send(f"SUB {s} q {i}\r\n".encode())
        w.sync()
    a.send(f"PUB {s} 1\r\nx\r\n".encode() * 100)   # the publisher shares a worker with a
    a.sync()
    time.sleep(0.2)
    assert len(b.sync()) > 0


def test_no_responders_across_workers(pair):
    s, inbox = subject(), subject()
    responder, requester = on_each_worker(pair, {"headers": True, "no_responders": True})
    responder.send(f"SUB {s} 1\r\n".encode())
    responder.sync()
    requester.send(f"SUB {inbox} 1\r\nPUB {s} {inbox} 0\r\n\r\n".encode())
    assert requester.sync() == []
    assert responder.sync() == [msg(s, "1", b"", inbox)]
    responder.send(b"UNSUB 1\r\n")
    responder.sync()
    requester.send(f"PUB {s} {inbox} 0\r\n\r\n".encode())
    assert requester.sync()[0].startswith(f"HMSG {inbox} 1 ".encode())


def test_monitoring_counts_each_subscription_once_across_workers(pair):
    a, b = on_each_worker(pair)
    s = subject()
    a.send(f"SUB {s}.a 1\r\nSUB {s}.b 2\r\n".encode())
    b.send(f"SUB {s}.a 1\r\n".encode())
    a.sync()
    b.sync()
    before = http_get(pair, "/varz").json()
    a.send(f"PUB {s}.a 2\r\nhi\r\n".encode())
    a.sync()
    assert b.sync() == [msg(f"{s}.a", "1", b"hi")]
    after = http_get(pair, "/varz").json()
    assert after["in_msgs"] - before["in_msgs"] == 1
    assert after["out_msgs"] - before["out_msgs"] == 2
    listed = http_get(pair, f"/subsz?subs=1&limit=1000&test={s}.a").json()["subscriptions_list"]
    assert sorted(x["cid"] for x in listed) == sorted([a.info["client_id"], b.info["client_id"]])
    conns = {c["cid"]: c for c in http_get(pair, "/connz").json()["connections"]}
    assert conns[a.info["client_id"]]["subscriptions"] == 2
    assert conns[b.info["client_id"]]["subscriptions"] == 1


# ---------------------------------------------------------------------------- slow consumers

def test_slow_consumer_is_closed_on_pending_bytes(natsx_server):
    # client.go queueOutbound: pending bytes over max_pending (64MB) close the reader; no -ERR.
    sub = socket.socket()
    sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sub.connect(("127.0.0.1", natsx_server.port))
    sub.sendall(b'CONNECT {"verbose":false}\r\nSUB flood 1\r\nPING\r\n')
    seen = b""
    while b"PONG\r\n" not in seen:
        seen += sub.recv(4096)
    info = json.loads(seen[5:seen.index(b"\r\n")])
    pub = connect(natsx_server.port)
    frame = b"PUB flood 1048576\r\n" + b"x" * 1048576 + b"\r\n"
    deadline = time.monotonic() + 30
    while http_get(natsx_server, "/varz").json()["slow_consumers"] == 0:
        assert time.monotonic() < deadline, "the subscriber was never cut off"
        pub.send(frame * 8)
    (closed,) = closed_conns(natsx_server, {info["client_id"]})
    assert closed["reason"] in ("Slow Consumer (Pending Bytes)",
                                   "Slow Consumer (Write Deadline)")
    assert http_get(natsx_server, "/varz").json()["slow_consumers"] == 1
    sub.settimeout(10)
    tail = b""
    while True:
        try:
            chunk = sub.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        tail = (tail + chunk)[-64:]
    assert b"-ERR" not in tail
    assert pub.sync() == []       # the publisher is not affected


# ---------------------------------------------------------------------------- signals

def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_lame_duck_mode_on_sigusr2(natsx_server):
    # server.go lameDuckMode: proto-1 clients past their first PONG get INFO "ldm":true;
    # the others get nothing; clients are closed after the 10s grace period, then the
    # server exits.
    modern = Wire(natsx_server.port, timeout=20)
    modern.send(b'CONNECT {"verbose":false,"protocol":1}\r\nPING\r\n')
    assert modern.frame() == b"PONG\r\n"
    assert json.loads(modern.frame()[5:])["connect_info"] is True
    legacy = connect(natsx_server.port)
    natsx_server.proc.send_signal(signal.SIGUSR2)
    frame = modern.frame()
    while frame == b"PING\r\n":
        modern.send(b"PONG\r\n")
        frame = modern.frame()
    info = json.loads(frame[5:])
    assert info["ldm"] is True and "connect_info" not in info
    assert legacy.sync() == []
    # No new clients: Go closes the listener; a worker in lame duck mode closes what it
    # accepts (or greets with an "ldm" INFO a client it accepted just before). Every
    # worker got the signal, but each takes it in its own time.
    def refused() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", natsx_server.port), timeout=2) as late:
                late.settimeout(2)
                greeting = late.recv(4096)
        except (ConnectionRefusedError, ConnectionResetError):
            return True
        return greeting == b"" or b'"ldm":true' in greeting
    wait_for(refused, timeout=3, what="new connections to be turned away")
    start = time.monotonic()
    assert modern.until_closed(timeout=20) == []
    assert time.monotonic() - start > 5
    assert natsx_server.proc.wait(timeout=15) == 0


def test_sigterm_leaves_no_processes(start_natsx):
    srv = start_natsx("--workers", "2")
    wait_for(lambda: len(_children(srv.proc.pid)) == 3, what="two workers and the admin")
    kids = _children(srv.proc.pid)
    client = connect(srv.port)
    assert srv.stop() == 0
    assert client.until_closed() == []
    wait_for(lambda: all(_gone(k) for k in kids), what="the children to exit")
    with socket.socket() as s:      # the client port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", srv.port))


def test_children_die_with_a_killed_supervisor(start_natsx):
    # DESIGN: children must never outlive the supervisor (PR_SET_PDEATHSIG).
    srv = start_natsx("--workers", "1")
    wait_for(lambda: len(_children(srv.proc.pid)) == 2, what="the worker and the admin")
    kids = _children(srv.proc.pid)
    srv.proc.kill()
    srv.proc.wait(5)
    wait_for(lambda: all(_gone(k) for k in kids), what="the children to die")
