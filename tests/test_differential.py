"""Differential tests: the same byte exchange against Debian's Go nats-server and natsx.

Each exchange is a list of chunks written by one raw client (a pause between chunks, so
they arrive as separate reads). The answers are read frame by frame until the server
closes the connection or has answered every PING the exchange sent, normalised, and must
be identical. Normalising removes what legitimately differs between two servers (ids,
ports, version strings) and the documented differences between 2.9.10 and the newer
release natsx follows:

* no-responders: 2.12 adds ``Nats-Subject: <subject>`` to the 503 status (2.9.10 sends
  ``NATS/1.0 503`` alone), so the status block is reduced to its first line;
* after its first PONG a protocol-1 client gets an async INFO with ``connect_info`` in
  2.12, which 2.9.10 does not send: such INFO frames are dropped;
* the server's own PINGs (the first one comes ~2s after CONNECT) are dropped.
"""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import GO_SERVER, NATSX, RunningServer, free_port

pytestmark = [pytest.mark.server, pytest.mark.differential]

# INFO fields whose values differ between any two servers.
_VOLATILE_INFO = {"server_id", "server_name", "version", "go", "port", "client_id",
                  "git_commit", "nonce", "xkey"}


# ---------------------------------------------------------------------------- servers

def _start(cmd_head: list[str], tmp_path_factory, name: str, args: tuple) -> RunningServer:
    port, http_port = free_port(), free_port()
    cmd = cmd_head + ["-a", "127.0.0.1", "-p", str(port), "-m", str(http_port), *args]
    return RunningServer(cmd, port, http_port, tmp_path_factory.mktemp(name) / "server.log")


def _pair(tmp_path_factory, *args: str):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    go = _start([GO_SERVER], tmp_path_factory, "go", args)
    natsx = _start(NATSX, tmp_path_factory, "natsx", args)
    return go, natsx


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    pair = _pair(tmp_path_factory)
    yield pair
    for s in pair:
        s.stop()


@pytest.fixture(scope="module")
def user_servers(tmp_path_factory):
    pair = _pair(tmp_path_factory, "--user", "derek", "--pass", "s3cr3t")
    yield pair
    for s in pair:
        s.stop()


@pytest.fixture(scope="module")
def token_servers(tmp_path_factory):
    pair = _pair(tmp_path_factory, "--auth", "tok3n")
    yield pair
    for s in pair:
        s.stop()


# ---------------------------------------------------------------------------- exchange

def _split_frame(buf: bytes) -> bytes | None:
    nl = buf.find(b"\n")
    if nl < 0:
        return None
    line = buf[:nl + 1]
    op = line.split(None, 1)[0].upper() if line.strip() else b""
    if op in (b"MSG", b"HMSG"):
        end = nl + 1 + int(line.split()[-1]) + 2
        return buf[:end] if len(buf) >= end else None
    return line


def _normalise(frame: bytes) -> bytes | None:
    if frame == b"PING\r\n":
        return None
    if frame.startswith(b"INFO "):
        assert frame.endswith(b" \r\n"), frame
        info = json.loads(frame[5:])
        if info.get("connect_info"):
            return None
        info = {k: ("<%s>" % k if k in _VOLATILE_INFO else v) for k, v in info.items()}
        return b"INFO " + json.dumps(info).encode() + b" \r\n"
    if frame.startswith(b"HMSG ") and b"\r\nNATS/1.0 503\r\n" in frame:
        head = frame.split(b"\r\n", 1)[0].split()
        return b"HMSG %s %s 16 16\r\nNATS/1.0 503\r\n\r\n\r\n" % (head[1], head[2])
    return frame


def exchange(port: int, chunks: list[bytes], pongs: int | None = None,
             timeout: float = 5.0, pause: float = 0.02) -> tuple[list[bytes], bool]:
    """Plays ``chunks``; returns the normalised frames and whether the server closed.

    Reading stops at EOF, or once ``pongs`` PONGs came back (by default one per line
    that starts with PING, in any case); with no PING the server must close.
    """
    if pongs is None:
        pongs = sum(line.upper().startswith(b"PING") for line in b"".join(chunks).split(b"\n"))
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    buf, frames, closed, seen = b"", [], False, 0
    deadline = time.monotonic() + timeout
    try:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause)
        while not closed and not (pongs and seen >= pongs):
            f = _split_frame(buf)
            if f is not None:
                buf = buf[len(f):]
                seen += f == b"PONG\r\n"
                n = _normalise(f)
                if n is not None:
                    frames.append(n)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer; got {frames!r} + {buf[:200]!r}")
            sock.settimeout(remaining)
            try:
                data = sock.recv(1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except socket.timeout:
                continue
            if not data:
                closed = True
            buf += data
    finally:
        sock.close()
    return frames, closed


def both(pair, chunks, **kw):
    go, natsx = pair
    return exchange(go.port, chunks, **kw), exchange(natsx.port, chunks, **kw)


def assert_same(pair, chunks, **kw):
    go, natsx = both(pair, chunks, **kw)
    assert natsx == go
    return go


# ---------------------------------------------------------------------------- cases

C = b'CONNECT {"verbose":false}\r\n'
CV = b'CONNECT {"verbose":true}\r\n'
CH = b'CONNECT {"verbose":false,"headers":true}\r\n'
HDR = b"NATS/1.0\r\nA: b\r\n\r\n"

EXCHANGES = {
    # framing (server/parser.go)
    "lowercase-ops": [b"pub foo 1\r\na\r\nsub foo 9\r\nping\r\n"],
    "mixed-case-ops": [b'CoNnEcT {"verbose":false}\r\nSuB foo 1\r\npUb foo 1\r\nx\r\nPING\r\n'],
    "tabs": [C + b"SUB\tfoo\t1\r\nPUB\tfoo\t2\r\nhi\r\nPING\r\n"],
    "runs-of-spaces": [C + b"SUB  foo \t q  1\r\nPUB   foo  r   2\r\nhi\r\nPING\r\n"],
    "bare-newlines": [b'CONNECT {"verbose":false}\nSUB foo 1\nPUB foo 2\nhi\r\nPING\n'],
    "split-in-the-payload": [C + b"SUB foo 1\r\nPUB foo 5\r\nhe", b"llo\r\nPING\r\n"],
    "split-in-the-op": [C + b"SUB foo 1\r\nPU", b"B foo 2\r\nhi\r", b"\nPING\r\n"],
    "empty-payload": [C + b"SUB foo 1\r\nPUB foo 0\r\n\r\nPING\r\n"],
    "empty-lines": [C + b"\r\n\r\nPING\r\n"],
    "ping-trailer-ignored": [C + b"PINGX\r\nPING foo\r\nPONGX\r\n+OKX\r\nPING\r\n"],
    "client-info-ok-pong-ignored": [C + b"INFO {}\r\n+OK\r\nPONG\r\nPING\r\n"],
    "connect-without-space": [b'CONNECT{"verbose":false}\r\nPING\r\n'],
    "connect-trailing-spaces": [b'CONNECT {"verbose":false}   \r\nPING\r\n'],
    # the -ERR table (server/parser.go, client.go)
    "payload-too-long": [C + b"PUB foo 2\r\nhello\r\nPING\r\n"],
    "payload-without-crlf": [C + b"PUB foo 2\r\nhiXX"],
    "payload-then-lf": [C + b"PUB foo 2\r\nhi\n\n"],
    "unknown-op": [b"FOO bar\r\n"],
    "unknown-op-after-connect": [C + b"FOO bar\r\n"],
    "msg-from-client": [C + b"MSG foo 1 2\r\nhi\r\n"],
    "route-op-from-client": [C + b"RS+ foo\r\n"],
    "leaf-op-from-client": [C + b"LS+ foo\r\n"],
    "pubx": [C + b"PUBX foo 2\r\n"],
    "lone-p": [C + b"P\r\n"],
    "leading-space": [C + b" PING\r\n"],
    "connectx": [b'CONNECTX {"verbose":false}\r\nPING\r\n'],
    "unsub-without-args": [C + b"UNSUB\r\n"],
    "err-from-client": [C + b"-ERR 'x'\r\nPING\r\n"],
    "pub-missing-size": [C + b"PUB foo\r\n"],
    "pub-too-many-args": [C + b"PUB foo bar baz 3\r\n"],
    "pub-bad-size": [C + b"PUB foo x\r\n"],
    "pub-negative-size": [C + b"PUB foo -1\r\n"],
    "pub-ten-digit-size": [C + b"PUB foo 1234567890\r\n"],
    "sub-missing-sid": [C + b"SUB foo\r\n"],
    "sub-too-many-args": [C + b"SUB foo 1 2 3\r\n"],
    "unsub-too-many-args": [C + b"UNSUB 1 2 3\r\n"],
    "max-control-line": [C + b"SUB " + b"a" * 5000 + b" 1\r\n"],
    "max-control-line-unterminated": [C + b"SUB " + b"a" * 5000],
    "control-line-at-limit": [C + b"SUB " + b"a" * 4092 + b" 1\r\nPING\r\n"],
    "control-line-over-limit": [C + b"SUB " + b"a" * 4094 + b" 1\r\nPING\r\n"],
    "long-ping-line": [C + b"PING" + b" " * 5000 + b"\r\n"],
    "max-payload": [C + b"PUB foo 1048577\r\n"],
    "hpub-without-headers": [C + b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"],
    "hpub-header-above-total": [CH + b"HPUB foo 20 14\r\n"],
    "hpub-one-size": [CH + b"HPUB foo 1\r\n"],
    "bad-connect-json": [b"CONNECT {bad json\r\nPING\r\n"],
    "connect-array": [b"CONNECT []\r\nPING\r\n"],
    "connect-verbose-string": [b'CONNECT {"verbose":"yes"}\r\nPING\r\n'],
    "connect-protocol-string": [b'CONNECT {"protocol":"1","verbose":false}\r\nPING\r\n'],
    "connect-protocol-float": [b'CONNECT {"protocol":1.5}\r\nPING\r\n'],
    "connect-name-number": [b'CONNECT {"name":7}\r\nPING\r\n'],
    "connect-nulls": [b'CONNECT {"verbose":null,"name":null}\r\nPING\r\n'],
    "protocol-2": [b'CONNECT {"verbose":false,"protocol":2}\r\n'],
    "protocol-negative": [b'CONNECT {"verbose":false,"protocol":-1}\r\n'],
    "account": [b'CONNECT {"verbose":false,"account":"A"}\r\n'],
    "new-account": [b'CONNECT {"new_account":true}\r\n'],
    "empty-account": [b'CONNECT {"verbose":false,"account":""}\r\nPING\r\n'],
    "no-responders-without-headers": [b'CONNECT {"verbose":false,"no_responders":true}\r\n'],
    # +OK sequences
    "verbose-before-connect": [b"SUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\n"],
    "connect-defaults": [b'CONNECT {"protocol":0}\r\nSUB foo 1\r\nPUB foo.* 1\r\na\r\nPUB foo 1\r\nb\r\nPING\r\n'],
    "verbose-everything": [CV + b"SUB foo 1\r\nUNSUB 1\r\nUNSUB 99\r\nUNSUB 98 3\r\nPUB foo 1\r\na\r\nPING\r\n"],
    "duplicate-sid": [CV + b"SUB foo 1\r\nSUB bar 1\r\nPUB bar 1\r\nx\r\nPUB foo 1\r\ny\r\nPING\r\n"],
    "pedantic-wildcard-publish": [b'CONNECT {"verbose":true,"pedantic":true}\r\nPUB foo.> 1\r\na\r\nPUB foo..bar 1\r\na\r\nPUB foo.* 1\r\na\r\nPING\r\n'],
    "non-pedantic-wildcard-publish": [b'CONNECT {"verbose":true,"pedantic":false}\r\nSUB foo.* 1\r\nPUB foo.* 1\r\na\r\nPING\r\n'],
    "invalid-subjects": [C + b"SUB foo..bar 1\r\nSUB foo. 2\r\nSUB .foo 3\r\nSUB foo.>.bar 4\r\nPING\r\n"],
    "invalid-subjects-verbose": [CV + b"SUB foo..bar 1\r\nSUB ok 2\r\nPING\r\n"],
    "queue-named-gt": [C + b"SUB foo > 1\r\nPUB foo 1\r\na\r\nPING\r\n"],
    "literal-wildcard-tokens": [C + b"SUB foo.*bar 1\r\nSUB foo.b> 2\r\nPUB foo.*bar 1\r\na\r\nPUB foo.b> 1\r\nb\r\nPING\r\n"],
    # MSG / HMSG framing
    "msg-with-reply": [C + b"SUB foo 1\r\nPUB foo bar 2\r\nhi\r\nPING\r\n"],
    "hmsg": [CH + b"SUB foo 1\r\nHPUB foo 18 20\r\n" + HDR + b"hi\r\nPING\r\n"],
    "hmsg-with-reply": [CH + b"SUB foo 1\r\nHPUB foo rep 18 20\r\n" + HDR + b"hi\r\nPING\r\n"],
    "hmsg-headers-only": [CH + b"SUB foo 1\r\nHPUB foo 18 18\r\n" + HDR + b"\r\nPING\r\n"],
    "utf8-subject": [C + "SUB été.ü 1\r\nPUB été.ü 2\r\nhi\r\nPING\r\n".encode()],
    "binary-payload": [C + b"SUB foo 1\r\nPUB foo 6\r\n\r\n\x00\xff\r\n\r\nPING\r\n"],
    "star-wildcard": [C + b"SUB foo.* 1\r\nPUB foo.a 1\r\na\r\nPUB foo.a.b 1\r\nb\r\nPUB foo 1\r\nc\r\nPING\r\n"],
    "full-wildcard": [C + b"SUB foo.> 2\r\nPUB foo.a 1\r\na\r\nPUB foo.a.b 1\r\nb\r\nPUB foo 1\r\nc\r\nPING\r\n"],
    "bare-full-wildcard": [C + b"SUB > 3\r\nPUB a.b.c 1\r\na\r\nPING\r\n"],
    "queue-single-member": [C + b"SUB foo q 1\r\nPUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPING\r\n"],
    "unsub-max": [C + b"SUB foo 1\r\nUNSUB 1 2\r\n" + b"PUB foo 1\r\na\r\n" * 3 + b"PING\r\n"],
    "unsub-max-already-reached": [C + b"SUB foo 1\r\n" + b"PUB foo 1\r\na\r\n" * 2 + b"UNSUB 1 1\r\nPUB foo 1\r\nb\r\nPING\r\n"],
    "unsub-max-zero": [C + b"SUB foo 1\r\nUNSUB 1 0\r\nPUB foo 1\r\na\r\nPING\r\n"],
    "unsub-max-garbage": [C + b"SUB foo 1\r\nUNSUB 1 abc\r\nPUB foo 1\r\na\r\nPING\r\n"],
    "unsub-then-resub-same-sid": [C + b"SUB foo 1\r\nUNSUB 1\r\nSUB bar 1\r\nPUB foo 1\r\na\r\nPUB bar 1\r\nb\r\nPING\r\n"],
    "echo-false": [b'CONNECT {"verbose":false,"echo":false}\r\nSUB foo 1\r\nSUB foo q 2\r\nPUB foo 2\r\nhi\r\nPING\r\n'],
    "max-payload-exactly": [C + b"SUB foo 1\r\nPUB foo 1048576\r\n" + b"x" * 1048576 + b"\r\nPING\r\n"],
    # no responders (the 503 is normalised, see the module docstring)
    "no-responders": [b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nSUB inbox 1\r\nPUB nobody inbox 0\r\n\r\nPING\r\n'],
    "no-responders-after-unsub": [b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nSUB inbox 1\r\nSUB foo q 2\r\nUNSUB 2\r\nPUB foo inbox 0\r\n\r\nPING\r\n'],
    "no-responders-off": [CH + b"SUB inbox 1\r\nPUB nobody inbox 0\r\n\r\nPING\r\n"],
    # reserved subjects
    "reserved-reply-r": [CV + b"SUB foo.a 1\r\nPUB foo.a _R_.x.y 1\r\na\r\nPING\r\n"],
    "reserved-reply-js-ack": [CV + b"PUB foo $JS.ACK.x 1\r\na\r\nPING\r\n"],
    "reserved-reply-gr": [CV + b"PUB foo _GR_.x 1\r\na\r\nPING\r\n"],
    "reserved-prefix-alone": [CV + b"PUB foo _R_. 1\r\na\r\nPUB foo _GR_. 1\r\nb\r\nPING\r\n"],
    "publish-to-gr": [CV + b"SUB _GR_.x 1\r\nPUB _GR_.x 1\r\na\r\nPING\r\n"],
    "publish-to-old-gr": [C + b"PUB $GR.abcd.foo 1\r\na\r\nPING\r\n"],
    # PING / PONG
    "ping": [b"PING\r\n"],
    "ping-after-connect": [C + b"PING\r\nPING\r\n"],
    "protocol-0-first-pong": [b'CONNECT {"verbose":false,"protocol":0}\r\nPING\r\n'],
}


@pytest.mark.parametrize("chunks", EXCHANGES.values(), ids=EXCHANGES.keys())
def test_same_answer(servers, chunks):
    assert_same(servers, chunks)


def test_byte_by_byte(servers):
    data = (CH + b"SUB foo 1\r\nSUB foo q 2\r\nPUB foo r 2\r\nhi\r\nHPUB foo 18 20\r\n" + HDR
            + b"hi\r\nUNSUB 1\r\nPUB foo 1\r\nz\r\nPING\r\n")
    assert_same(servers, [data[i:i + 1] for i in range(len(data))], timeout=15, pause=0.003)


def test_protocol_one_first_pong(servers):
    # The 2.12 async INFO (connect_info) is normalised away; the PONG itself is the same.
    frames, closed = assert_same(servers, [b'CONNECT {"verbose":false,"protocol":1}\r\nPING\r\n'])
    assert frames[1:] == [b"PONG\r\n"] and not closed


def test_no_responders_differs_only_by_the_subject_header(servers):
    chunks = [b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n'
              b"SUB inbox 1\r\nPUB nobody inbox 0\r\n\r\nPING\r\n"]
    go, natsx = servers
    raw = []
    for srv in (go, natsx):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.sendall(chunks[0])
        buf = b""
        while not buf.endswith(b"PONG\r\n"):
            buf += sock.recv(4096)
        sock.close()
        raw.append(buf[buf.index(b"\r\n") + 2:])
    assert raw[0] == b"HMSG inbox 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\nPONG\r\n"
    hdr = b"NATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n"
    assert raw[1] == b"HMSG inbox 1 %d %d\r\n%s\r\nPONG\r\n" % (len(hdr), len(hdr), hdr)


def test_header_message_to_a_plain_subscriber_is_stripped_the_same(servers):
    answers = []
    for srv in servers:
        sub = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sub.sendall(C + b"SUB foo 1\r\nPING\r\n")
        buf = b""
        while not buf.endswith(b"PONG\r\n"):
            buf += sub.recv(4096)
        exchange(srv.port, [CH + b"HPUB foo 18 20\r\n" + HDR + b"hi\r\nPING\r\n"])
        sub.sendall(b"PING\r\n")
        buf = b""
        while not buf.endswith(b"PONG\r\n"):
            buf += sub.recv(4096)
        sub.close()
        answers.append(buf)
    assert answers[1] == answers[0] == b"MSG foo 1 2\r\nhi\r\nPONG\r\n"


def _first_server_frame_after_connect(port: int) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=6) as sock:
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += sock.recv(4096)
        sock.sendall(C)
        start = time.monotonic()
        frame = sock.recv(4096)
        return frame, time.monotonic() - start


def test_timed_answers_are_the_same(servers, user_servers):
    # Authentication Timeout (client.go authTimeout, 2s default) and the first server PING
    # (client.go setFirstPingTimer, 2s after CONNECT), on both servers at once.
    with ThreadPoolExecutor(4) as pool:
        timeouts = [pool.submit(exchange, srv.port, [], timeout=8) for srv in user_servers]
        pings = [pool.submit(_first_server_frame_after_connect, srv.port) for srv in servers]
        timeouts = [f.result() for f in timeouts]
        pings = [f.result() for f in pings]
    assert timeouts[1] == timeouts[0]
    assert timeouts[0][0][1:] == [b"-ERR 'Authentication Timeout'\r\n"] and timeouts[0][1]
    assert [frame for frame, _ in pings] == [b"PING\r\n", b"PING\r\n"]
    assert all(1.5 < elapsed < 5 for _, elapsed in pings), pings


# ---------------------------------------------------------------------------- INFO

def test_info_has_the_same_fields_in_the_same_order(servers):
    infos = []
    for srv in servers:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        line = b""
        while not line.endswith(b"\r\n"):
            line += sock.recv(4096)
        sock.close()
        assert line.startswith(b"INFO {") and line.endswith(b"} \r\n")
        infos.append(json.loads(line[5:]))
    go, natsx = infos
    assert list(natsx) == list(go)
    for key in go:
        if key not in _VOLATILE_INFO:
            assert natsx[key] == go[key], key


@pytest.mark.parametrize("chunks", [
    [b"PING\r\n"],
    [b"PUB foo 1\r\na\r\n"],
    [b"SUB foo 1\r\n"],
    [b"CONNECT {}\r\n"],
    [b'CONNECT {"verbose":false,"user":"derek","pass":"nope"}\r\n'],
    [b'CONNECT {"verbose":false,"user":"nobody","pass":"s3cr3t"}\r\n'],
    [b'CONNECT {"verbose":false,"user":"derek","pass":"s3cr3t"}\r\nPING\r\n'],
    [b'connect {"user":"derek","pass":"s3cr3t"}\r\nSUB foo 1\r\nPUB foo 1\r\nx\r\nPING\r\n'],
    [b'CONNECT {"user":"derek","pass":"nope","protocol":2}\r\n'],
    [b'CONNECT {"user":"derek","pass":"s3cr3t","protocol":2}\r\n'],
    [b'CONNECT {"user":"derek","pass":"s3cr3t","account":"A"}\r\n'],
    [b'CONNECT {"user":"derek","pass":"s3cr3t","no_responders":true}\r\n'],
    [b'CONNECT {"auth_token":"s3cr3t"}\r\n'],
], ids=["ping-first", "pub-first", "sub-first", "no-credentials", "bad-pass", "bad-user",
        "good", "good-lowercase-verbose", "bad-pass-and-protocol", "good-bad-protocol",
        "good-with-account", "good-no-responders", "token-on-user-server"])
def test_user_auth_same_answer(user_servers, chunks):
    assert_same(user_servers, chunks)


@pytest.mark.parametrize("chunks", [
    [b"PING\r\n"],
    [b'CONNECT {"verbose":false,"auth_token":"tok3n"}\r\nPING\r\n'],
    [b'CONNECT {"verbose":false,"auth_token":"bad"}\r\n'],
    [b'CONNECT {"verbose":false,"user":"derek","pass":"tok3n"}\r\n'],
], ids=["ping-first", "good", "bad", "user-on-token-server"])
def test_token_auth_same_answer(token_servers, chunks):
    assert_same(token_servers, chunks)


# ---------------------------------------------------------------------------- monitoring

def _get(srv: RunningServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{srv.http_port}{path}", timeout=5)


@pytest.mark.parametrize("path", [
    "/connz?sort=bogus", "/connz?state=bogus", "/connz?sort=stop", "/connz?sort=reason",
    "/connz?limit=x", "/connz?offset=y", "/connz?cid=abc", "/connz?auth=maybe",
    "/connz?subs=maybe", "/healthz", "/nope", "/subsz?limit=z",
])
def test_monitoring_same_status_and_body(servers, path):
    go, natsx = (_get(s, path) for s in servers)
    assert (natsx.status_code, natsx.text) == (go.status_code, go.text)


def test_connz_connection_has_the_same_keys(servers):
    conns = []
    for srv in servers:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.sendall(b'CONNECT {"verbose":false,"name":"diff"}\r\nSUB foo 1\r\nPING\r\n')
        buf = b""
        while b"PONG\r\n" not in buf:
            buf += sock.recv(4096)
        cid = json.loads(buf[5:buf.index(b"\r\n")])["client_id"]
        page = _get(srv, f"/connz?cid={cid}&subs=1").json()
        sock.close()
        assert list(page) == ["server_id", "now", "num_connections", "total", "offset", "limit",
                              "connections"]
        assert (page["num_connections"], page["limit"]) == (1, 1)
        conns.append(page["connections"][0])
    go, natsx = conns
    assert list(natsx) == list(go)
    for key in ("kind", "type", "ip", "subscriptions", "subscriptions_list", "name",
                "pending_bytes", "in_msgs", "out_msgs"):
        assert natsx[key] == go[key], key


def test_varz_has_every_go_field_and_the_same_defaults(servers):
    go, natsx = (_get(s, "/varz").json() for s in servers)
    assert [k for k in go if k not in natsx] == []
    for key in ("proto", "max_connections", "ping_interval", "ping_max", "http_base_path",
                "https_port", "auth_timeout", "max_control_line", "max_payload", "max_pending",
                "tls_timeout", "write_deadline", "system_account", "host", "cores"):
        assert natsx[key] == go[key], key
