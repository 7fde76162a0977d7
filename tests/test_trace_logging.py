"""Protocol tracing (-V, -DV, -VV, trace_verbose, max_traced_msg_len) against the Go server.

The same raw-socket exchange runs against natsx and Debian's nats-server 2.9.10; the [TRC]
lines of both logs are compared after replacing each client's ``127.0.0.1:PORT - cid:N`` by
a name. natsx runs with one worker so that every line comes from one process, in order.
"""
from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from natsx.server import trace

pytestmark = pytest.mark.server

_TRC = re.compile(r"^\[\d+\] [\d/]+ [\d:.]+ \[TRC\] (.*)$")


class Raw:
    """A raw client whose operations are confirmed with PING/PONG before the next step."""

    def __init__(self, port: int, connect: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self._until(b"\r\n")   # INFO
        self.port = self.sock.getsockname()[1]
        self.sync(b"CONNECT " + connect + b"\r\n")

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buf += data
        out, _, self.buf = self.buf.partition(marker)
        return out + marker

    def sync(self, ops: bytes = b"") -> bytes:
        self.sock.sendall(ops + b"PING\r\n")
        return self._until(b"PONG\r\n")

    def send(self, ops: bytes) -> None:
        self.sock.sendall(ops)

    def close(self) -> None:
        self.sock.close()


def trace_lines(server, names: dict[int, str], wait_for: str = "", timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        text = server.log()
        if not wait_for or wait_for in text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    lines = []
    for line in text.splitlines():
        m = _TRC.match(line)
        if m:
            body = m.group(1)
            for port, name in names.items():
                body = re.sub(rf"127\.0\.0\.1:{port} - cid:\d+", name, body)
            lines.append(body)
    return lines


def basic_exchange(port: int) -> dict[int, str]:
    sub = Raw(port, b'{"verbose":true,"pedantic":true,"name":"sub","lang":"python",'
                    b'"version":"1.0","user":"u","pass":"secret"}')
    sub.sync(b"SUB foo  1\r\nSUB bar q 2\r\nUNSUB 2 3\r\nSUB once 3\r\nUNSUB 3 1\r\n")
    pub = Raw(port, b'{"verbose":false,"pedantic":false,"headers":true}')
    pub.sync(b'PUB foo 5\r\nhello\r\nPUB foo reply.x 3\r\n\x00"\xff\r\n'
             b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPUB once 2\r\nab\r\n")
    sub.sync()
    pub.sync(b"PUB _R_.x r 1\r\nx\r\nPUB q _R_.y 1\r\ny\r\n")
    sub.sync(b"UNSUB 1\r\n")
    names = {sub.port: "SUB", pub.port: "PUB"}
    pub.send(b"FOO\r\n")
    pub._until(b"\r\n")
    sub.close()
    return names


def test_trace_matches_go(start_natsx, start_go):
    lines = {}
    for kind, start in (("go", start_go), ("natsx", start_natsx)):
        args = ["-V"] if kind == "go" else ["-V", "--workers", "1"]
        srv = start(*args, monitor=False)
        names = basic_exchange(srv.port)
        lines[kind] = trace_lines(srv, names, wait_for="DELSUB 2]")
    assert lines["natsx"] == lines["go"]
    # What the exchange must have shown (so that an empty log cannot pass).
    got = "\n".join(lines["natsx"])
    for expected in ('SUB - <<- [CONNECT {"verbose":true,"pedantic":true,"name":"sub",'
                     '"lang":"python","version":"1.0","user":"u","pass":"[REDACTED]"}]',
                     'SUB - "v1.0:python:sub" - <<- [SUB foo  1]',
                     'PUB - <<- MSG_PAYLOAD: ["\\x00\\"\\xff"]',
                     'SUB - "v1.0:python:sub" - ->> [MSG foo 1 reply.x 3]',
                     'SUB - "v1.0:python:sub" - <-> [DELSUB 3]',
                     "PUB - ->> [-ERR Permissions Violation for Publish with Reply of",
                     "PUB - ->> [-ERR Unknown Protocol Operation]"):
        assert expected in got


def test_debug_trace_and_max_traced_msg_len(start_natsx, start_go, tmp_path):
    conf = tmp_path / "t.conf"
    conf.write_text("max_traced_msg_len: 4\n")
    lines = {}
    for kind, start in (("go", start_go), ("natsx", start_natsx)):
        args = ["-DV", "-c", str(conf)] + (["--workers", "1"] if kind == "natsx" else [])
        srv = start(*args, monitor=False)
        c = Raw(srv.port, b'{"verbose":false}')
        c.sync(b'SUB a 1\r\nPUB a 10\r\n0123456789\r\nPUB a 4\r\nabcd\r\nPUB a 6\r\n"\xc3\xa9\t\xff\r\n')
        names = {c.port: "C"}
        c.close()
        lines[kind] = trace_lines(srv, names, wait_for="DELSUB 1]")
    assert lines["natsx"] == lines["go"]
    assert 'C - <<- MSG_PAYLOAD: ["0123..."]' in lines["natsx"]
    assert 'C - <<- MSG_PAYLOAD: ["abcd"]' in lines["natsx"]


def test_max_traced_msg_len_flag(start_natsx):
    srv = start_natsx("-V", "--max_traced_msg_len", "3", monitor=False)
    c = Raw(srv.port, b'{"verbose":false}')
    c.sync(b"PUB a 5\r\nhello\r\n")
    assert 'C - <<- MSG_PAYLOAD: ["hel..."]' in trace_lines(srv, {c.port: "C"})


def _pings_traced(srv, c: Raw) -> int:
    return sum(1 for line in trace_lines(srv, {c.port: "C"}) if line == "C - <<- [PING]")


def reload_until(srv, c: Raw, traced: bool) -> None:
    """SIGHUP, then PINGs until one is (or is not) traced: every worker applied the reload."""
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = _pings_traced(srv, c)
        c.sync()
        if (_pings_traced(srv, c) > before) == traced:
            return
        time.sleep(0.05)
    pytest.fail(f"trace did not turn {'on' if traced else 'off'} after the reload")


def test_reload_toggles_trace(start_natsx, start_go, tmp_path):
    lines = {}
    for kind, start in (("go", start_go), ("natsx", start_natsx)):
        conf = tmp_path / f"{kind}.conf"
        conf.write_text("trace: false\n")
        args = ["-c", str(conf)] + (["--workers", "1"] if kind == "natsx" else [])
        srv = start(*args, monitor=False)
        c = Raw(srv.port, b'{"verbose":false}')
        c.sync(b"PUB quiet 1\r\nq\r\n")
        conf.write_text("trace: true\nmax_traced_msg_len: 2\n")
        reload_until(srv, c, traced=True)
        c.sync(b"SUB loud 1\r\nPUB loud 3\r\nabc\r\n")
        conf.write_text("trace: false\n")
        reload_until(srv, c, traced=False)
        c.sync(b"PUB quiet 1\r\nq\r\n")
        # The PINGs that waited for the reloads may differ in number.
        lines[kind] = [line for line in trace_lines(srv, {c.port: "C"})
                       if line not in ("C - <<- [PING]", "C - ->> [PONG]")]
        log = srv.log()
        assert "Reloaded: trace = true" in log
        assert "Reloaded: max_traced_msg_len = 2" in log
        assert "Reloaded: trace = false" in log
    assert lines["natsx"] == lines["go"]
    assert lines["natsx"] == ["C - <<- [SUB loud 1]", "C - <<- [PUB loud 3]",
                              'C - <<- MSG_PAYLOAD: ["ab..."]', "C - ->> [MSG loud 1 3]"]


def test_system_account_traced_only_with_trace_verbose(start_natsx, tmp_path):
    conf = tmp_path / "sys.conf"
    conf.write_text("accounts { SYS { users [{user: sys, password: pw}] } }\n"
                    "system_account: SYS\n")
    for flag, shown in (("-V", False), ("-VV", True)):
        srv = start_natsx(flag, "-c", str(conf), "--workers", "1", monitor=False)
        c = Raw(srv.port, b'{"verbose":false,"user":"sys","pass":"pw"}')
        c.sync(b"SUB _INBOX.1 1\r\nPUB $SYS.REQ.SERVER.PING _INBOX.1 0\r\n\r\n")
        c._until(b"MSG _INBOX.1 1 ")
        lines = trace_lines(srv, {c.port: "C"}, wait_for="->> [MSG _INBOX.1 1 ")
        system = [line for line in lines if line.startswith("SYSTEM - ")]
        assert "C - <<- [SUB _INBOX.1 1]" in lines
        assert any(line.startswith("C - ->> [MSG _INBOX.1 1 ") for line in lines), lines
        if shown:
            assert any(re.fullmatch(r"SYSTEM - <<- \[SUB \$SYS\.REQ\.SERVER\.PING  \d+\]", line)
                       for line in system), system
            # The answer to the request, published by the server's SYSTEM client.
            assert any(line.startswith("SYSTEM - <<- [PUB _INBOX.1  ") for line in system), system
            assert 'SYSTEM - <<- MSG_PAYLOAD: ["{\\"server\\":' in "\n".join(system)
        else:
            assert system == []


# ------------------------------------------------------------------ sans-IO parts

@pytest.mark.parametrize("data, quoted", [
    (b"hello", '"hello"'),
    (b'\x00"\xff\\', '"\\x00\\"\\xff\\\\"'),
    (b"\r\n\t\x07\x7f", '"\\r\\n\\t\\a\\x7f"'),
    ("é€".encode(), '"é€"'),
    ("\u200b\U0001F600\u0085".encode(), '"\\u200b\U0001F600\\u0085"'),
    (b"\xe2\x82", '"\\xe2\\x82"'),
])
def test_go_quote(data, quoted):
    assert trace.go_quote(data) == quoted


def test_payload_line_truncation_is_go_2_9_10():
    assert trace.payload_line(b"hello", 0) == '<<- MSG_PAYLOAD: ["hello"]'
    assert trace.payload_line(b"hello", 5) == '<<- MSG_PAYLOAD: ["hello"]'
    assert trace.payload_line(b"hello", 4) == '<<- MSG_PAYLOAD: ["hell..."]'
    # Go keeps ``max`` bytes of the quoted text, escapes included.
    assert trace.payload_line(b"\x00\x01\x02\x03", 2) == '<<- MSG_PAYLOAD: ["\\x..."]'


def test_redact_and_names():
    assert trace.redact(b'{"user":"u","pass":"s3"}') == b'{"user":"u","pass":"[REDACTED]"}'
    assert trace.redact(b'{"user":"u"}') == b'{"user":"u"}'
    assert trace.client_names("1.0", "python", "n") == "v1.0:python:n"
    assert trace.client_names("", "", "n") == "n"
    assert trace.client_names("", "go", "") == "go"


def test_out_ops():
    data = (b"+OK\r\nMSG a 1 3\r\nx\r\n\r\nHMSG a 1 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
            b"INFO {}\r\nPING\r\nPONG\r\n-ERR 'Unknown Protocol Operation'\r\n")
    assert trace.out_ops(data) == ["OK", "MSG a 1 3", "HMSG a 1 r 12 14", "PING", "PONG",
                                   "-ERR Unknown Protocol Operation"]
