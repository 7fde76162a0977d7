"""NATS over WebSocket: the sans-IO protocol (natsx.server.websocket) and the real server.

The unit tests drive the codec and the handshake functions directly. The server tests start
``natsx`` with a ``websocket`` block and talk to it with raw sockets (the upgrade, frames,
close codes), with nats-py over ``ws://`` (aiohttp), and compare the HTTP answers to bad
upgrade requests with the Go nats-server's (the ``Date`` header normalised).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import struct
import time
import zlib

import httpx
import nats
import pytest

from conftest import free_port
from natsx.server import websocket as wsp
from natsx.server.options import WebsocketOpts

KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455's sample key
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="    # and its accept value
MASK = b"\x37\xfa\x21\x3d"
MPAY = 1024 * 1024


def frame(op: int, payload: bytes, *, mask: bool = True, fin: bool = True, rsv: int = 0,
          key: bytes = MASK) -> bytes:
    """A client frame."""
    b0 = (0x80 if fin else 0) | rsv | op
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack(">H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack(">Q", n)
    if mask:
        payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
        head += key
    return head + payload


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def parse_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Server frames as (first byte, opcode, payload); the server never masks."""
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            n = struct.unpack(">H", data[pos:pos + 2])[0]
            pos += 2
        elif n == 127:
            n = struct.unpack(">Q", data[pos:pos + 8])[0]
            pos += 8
        out.append((b0, b0 & 0x0F, data[pos:pos + n]))
        pos += n
    return out


# ============================================================================ unit: codec


def test_accept_key_is_rfc6455s():
    assert wsp.accept_key(KEY) == ACCEPT


def test_decode_joins_fragments_and_answers_pings_byte_by_byte():
    codec = wsp.Codec()
    data = (frame(2, b"CONNECT {}\r\nPI", fin=False) + frame(9, b"hi")
            + frame(0, b"NG\r\n", key=b"\x01\x02\x03\x04"))
    out = b"".join(codec.decode(data[i:i + 1], MPAY) for i in range(len(data)))
    assert out == b"CONNECT {}\r\nPING\r\n"
    assert codec.done is None
    assert codec.frame(b"") == b"\x8a\x02hi"


def test_decode_large_frame_split_anywhere():
    payload = os.urandom(70_000)
    data = frame(2, payload)
    for cut in (1, 5, 9, 13, 14, 15, 40_001):
        codec = wsp.Codec()
        out = codec.decode(data[:cut], MPAY) + codec.decode(data[cut:], MPAY)
        assert out == payload, cut


def test_decode_several_frames_in_one_read():
    codec = wsp.Codec()
    data = frame(2, b"PING\r\n") + frame(1, b"PONG\r\n") + frame(2, b"")
    assert codec.decode(data, MPAY) == b"PING\r\nPONG\r\n"


def test_unmasked_frames_accepted_with_no_masking():
    codec = wsp.Codec(mask_read=False)
    assert codec.decode(frame(2, b"PING\r\n", mask=False), MPAY) == b"PING\r\n"


def test_compressed_message_fragmented():
    text = b"PUB foo 5\r\nhello\r\n" * 20
    comp = deflate(text)
    codec = wsp.Codec(compress=True)
    data = frame(2, comp[:7], rsv=0x40, fin=False) + frame(9, b"") + frame(0, comp[7:])
    assert codec.decode(data, MPAY) == text
    assert codec.frame(b"") == b"\x8a\x00"


def test_compressed_message_bigger_than_max_payload_fails():
    text = b"x" * 5000
    codec = wsp.Codec(compress=True)
    out = codec.decode(frame(2, deflate(text), rsv=0x40), 1000)
    assert out == text[:1000]          # Go parses the first max_payload bytes, then fails
    assert codec.done == "Read Error"


@pytest.mark.parametrize("data, error", [
    (frame(2, b"x", mask=False), "mask bit missing"),
    (frame(2, b"x", rsv=0x20), "RSV2 and RSV3 must be clear"),
    (frame(2, b"x", rsv=0x40), "compressed frame received without negotiated permessage-deflate"),
    (frame(3, b"x"), "unknown opcode 3"),
    (frame(9, b"x", fin=False), "control frame does not have final bit set"),
    (frame(9, b"x" * 126), "control frame length bigger than maximum allowed of 125 bytes"),
    (frame(0, b"x"), "invalid continuation frame"),
    (frame(2, b"", fin=False) + frame(2, b"y"),
     "new message started before final frame for previous message was received"),
    (frame(8, b"x"), "close frame payload cannot be 1 byte"),
    (frame(8, struct.pack(">H", 1005)), "invalid close status code 1005"),
    (frame(8, struct.pack(">H", 2000)), "invalid close status code 2000"),
])
def test_protocol_errors_close_with_1002_and_gos_text(data, error):
    codec = wsp.Codec()
    assert codec.decode(data, MPAY) == b""
    assert codec.done == "Read Error"
    assert codec.error == error
    frames = parse_frames(codec.frame(b""))
    assert frames == [(0x88, 8, struct.pack(">H", 1002) + error.encode())]


def test_close_frame_is_echoed_and_ends_as_client_closed():
    codec = wsp.Codec()
    data = frame(2, b"PING\r\n") + frame(8, struct.pack(">H", 1001) + b"bye") + frame(2, b"X")
    assert codec.decode(data, MPAY) == b"PING\r\n"    # what follows the close is ignored
    assert codec.done == "Client Closed"
    assert codec.frame(b"PONG\r\n") == b"\x82\x06PONG\r\n\x88\x05\x03\xe9bye"
    codec.close("Client Closed")                       # only one close frame, ever
    assert codec.frame(b"") == b""


def test_close_without_status_and_with_bad_utf8():
    codec = wsp.Codec()
    codec.decode(frame(8, b""), MPAY)
    assert codec.frame(b"") == b"\x88\x00"
    codec = wsp.Codec()
    codec.decode(frame(8, struct.pack(">H", 1000) + b"\xff"), MPAY)
    assert parse_frames(codec.frame(b"")) == [
        (0x88, 8, struct.pack(">H", 1007) + b"invalid utf8 body in close frame")]


@pytest.mark.parametrize("reason, status", [
    ("Client Closed", 1000), ("Authentication Failure", 1008),
    ("Maximum Connections Exceeded", 1008), ("Parse Error", 1002),
    ("Protocol Violation", 1002), ("Maximum Message Payload Exceeded", 1009),
    ("Stale Connection", 1001), ("Server Shutdown", 1001), ("Something Else", 1011),
])
def test_close_status_for_reason(reason, status):
    codec = wsp.Codec()
    codec.close(reason)
    assert parse_frames(codec.frame(b"")) == [(0x88, 8, struct.pack(">H", status) + reason.encode())]


def test_long_close_reason_is_cut_with_dots():
    payload = wsp.close_payload(1002, "x" * 200)
    assert len(payload) == 125 and payload.endswith(b"...")


def test_frame_headers_by_size():
    codec = wsp.Codec()
    assert codec.frame(b"x" * 125)[:2] == b"\x82\x7d"
    assert codec.frame(b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert codec.frame(b"x" * 65536)[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")


def test_output_compressed_only_above_threshold():
    codec = wsp.Codec(compress=True)
    assert codec.frame(b"x" * 64) == b"\x82\x40" + b"x" * 64
    data = b"MSG foo 1 5\r\nhello\r\n" * 50
    frames = parse_frames(codec.frame(data))
    assert len(frames) == 1 and frames[0][0] == 0xC2   # FIN, RSV1, binary
    assert zlib.decompressobj(-15).decompress(frames[0][2] + b"\x00\x00\xff\xff") == data


def test_browser_frames_are_at_most_4k():
    codec = wsp.Codec(browser=True)
    frames = parse_frames(codec.frame(b"y" * 10_000))
    assert [len(p) for _, _, p in frames] == [4096, 4096, 1808]
    assert all(b0 == 0x82 for b0, _, _ in frames)
    codec = wsp.Codec(browser=True, compress=True)
    data = os.urandom(20_000)          # incompressible: several compressed fragments
    frames = parse_frames(codec.frame(data))
    assert frames[0][0] == 0x42 and frames[-1][0] == 0x80 and len(frames) > 1
    raw = b"".join(p for _, _, p in frames)
    assert zlib.decompressobj(-15).decompress(raw + b"\x00\x00\xff\xff") == data


def test_cookies_fill_absent_credentials_only():
    codec = wsp.Codec(cookies={"user": "alice", "pass": "pw"})
    assert codec.apply_cookies({"user": "bob"}) == {"user": "bob", "pass": "pw"}


# ============================================================================ unit: handshake


def _req(raw: bytes):
    req, used = wsp.read_request(raw)
    assert used > 0
    return req


UPGRADE = ("GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n")


def test_upgrade_response_with_compression_and_no_masking():
    settings = wsp.Settings(WebsocketOpts(port=1, no_tls=True, compression=True,
                                          headers={"X-Test": "1"}))
    req = _req((UPGRADE + "Sec-WebSocket-Extensions: permessage-deflate; "
                "client_max_window_bits\r\nNats-No-Masking: true\r\n"
                "User-Agent: Mozilla/5.0\r\n\r\n").encode())
    up = wsp.upgrade(settings, req)
    assert up.response == (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {ACCEPT}\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
        "client_no_context_takeover\r\nNats-No-Masking: true\r\nX-Test: 1\r\n\r\n").encode()
    assert up.codec.compress and not up.codec.mask_read and up.codec.browser


def test_request_needs_the_whole_head():
    assert wsp.read_request(UPGRADE.encode()) == (None, 0)


@pytest.mark.parametrize("origin, allowed", [
    ("http://example.com", True), ("http://example.com:80", True),
    ("https://example.com", False), ("http://other.com", False),
    ("http://example.com:8080", False), ("null", False),
])
def test_allowed_origins(origin, allowed):
    settings = wsp.Settings(WebsocketOpts(port=1, no_tls=True,
                                          allowed_origins=["http://example.com"]))
    req = _req((UPGRADE + f"Origin: {origin}\r\n\r\n").encode())
    assert (wsp.check_origin(settings, req, False) == "") is allowed


def test_same_origin():
    settings = wsp.Settings(WebsocketOpts(port=1, no_tls=True, same_origin=True))
    ok = _req((UPGRADE + "Origin: http://localhost\r\n\r\n").encode())
    bad = _req((UPGRADE + "Origin: http://localhost:81\r\n\r\n").encode())
    assert wsp.check_origin(settings, ok, False) == ""
    assert wsp.check_origin(settings, bad, False) == "not same origin"
    assert wsp.check_origin(settings, ok, True) == "not same origin"   # scheme differs


# ============================================================================ server


def ws_config(tmp_path, body: str = "", name: str = "ws.conf") -> tuple[str, int]:
    port = free_port()
    path = tmp_path / name
    path.write_text(f"websocket {{\n  port: {port}\n  no_tls: true\n{body}\n}}\n")
    return str(path), port


def http_exchange(port: int, data: bytes, wait: float = 0.5) -> tuple[bytes, bool]:
    """What the server answers to ``data``, and whether it closed the connection (the
    answer may take a loaded machine seconds; after it, ``wait`` tells an open connection)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        s.settimeout(10)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
                s.settimeout(wait)
        except socket.timeout:
            return out, False
        except ConnectionResetError:
            return out, True


def ws_connect(port: int, extra: str = "") -> tuple[socket.socket, bytes]:
    """Upgrades a raw socket; returns it and the frames that followed the 101 (the INFO)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall((UPGRADE + extra + "\r\n").encode())
    s.settimeout(5)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    while not rest or len(parse_frames_partial(rest)) == 0:
        rest += s.recv(65536)
    return s, rest


def parse_frames_partial(data: bytes):
    try:
        frames = parse_frames(data)
    except (IndexError, struct.error):
        return []
    return frames if sum(len(p) for *_, p in frames) else []


def read_until(s: socket.socket, pred, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        if pred(buf):
            break
    return buf


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


BAD_REQUESTS = [
    b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: abc\r\n\r\n"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 12\r\n\r\n"),
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    b"garbage\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    (UPGRADE + "\r\nxx").encode(),     # data before the handshake completed
]


def _normalise(resp: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]+\r\n", b"Date: X\r\n", resp)


@pytest.mark.server
@pytest.mark.differential
def test_bad_upgrade_requests_answered_as_go_does(tmp_path, start_natsx, start_go):
    conf, port = ws_config(tmp_path)
    start_natsx("-c", conf, monitor=False)
    go_conf, go_port = ws_config(tmp_path, name="go.conf")
    start_go("-c", go_conf, monitor=False)
    for data in BAD_REQUESTS:
        ours = http_exchange(port, data)
        theirs = http_exchange(go_port, data)
        assert (_normalise(ours[0]), ours[1]) == (_normalise(theirs[0]), theirs[1]), data


@pytest.mark.server
def test_forbidden_origin(tmp_path, start_natsx):
    conf, port = ws_config(tmp_path, 'allowed_origins: ["http://good.example"]')
    start_natsx("-c", conf, monitor=False)
    bad, _ = http_exchange(port, (UPGRADE + "Origin: http://evil.example\r\n\r\n").encode())
    assert bad.startswith(b"HTTP/1.1 403 Forbidden\r\n") and bad.endswith(b"\r\n\r\nForbidden\n")
    good, closed = http_exchange(port, (UPGRADE + "Origin: http://good.example\r\n\r\n").encode())
    assert good.startswith(b"HTTP/1.1 101 ") and not closed


@pytest.mark.server
def test_raw_frames_ping_fragments_masking_close(tmp_path, start_natsx):
    conf, port = ws_config(tmp_path)
    srv = start_natsx("-c", conf)
    s, first = ws_connect(port)
    (b0, op, info), = parse_frames(first)
    assert b0 == 0x82 and info.startswith(b"INFO ")
    doc = json.loads(info[5:])
    assert doc["port"] == port and "tls_required" not in doc
    # A ping frame in the middle of a fragmented message, and verbose +OK.
    s.sendall(frame(2, b'CONNECT {"verbose":true}\r\nPI', fin=False) + frame(9, b"hey")
              + frame(0, b"NG\r\n"))
    got = read_until(s, lambda b: b"PONG" in b)
    frames = parse_frames(got)
    assert frames[0] == (0x8A, 10, b"hey")    # the pong comes first, as in Go
    assert {b0 for b0, _, _ in frames[1:]} == {0x82}
    assert b"".join(p for _, _, p in frames[1:]) == b"+OK\r\nPONG\r\n"
    # /connz shows the client as a websocket one.
    connz = httpx.get(f"http://127.0.0.1:{srv.http_port}/connz").json()
    assert [c["type"] for c in connz["connections"]] == ["websocket"]
    # A close frame is echoed, and the connection ends as "Client Closed".
    s.sendall(frame(8, struct.pack(">H", 1000) + b"done"))
    got = read_until(s, lambda b: False, timeout=2)
    assert got == b"\x88\x06\x03\xe8done"
    s.close()
    time.sleep(0.3)
    closed = httpx.get(f"http://127.0.0.1:{srv.http_port}/connz?state=closed").json()
    assert closed["connections"][-1]["reason"] == "Client Closed"
    # An unmasked frame is a protocol error: close 1002, then the server hangs up.
    s, _ = ws_connect(port)
    s.sendall(frame(2, b"PING\r\n", mask=False))
    got = read_until(s, lambda b: False, timeout=2)
    assert got == b"\x88\x12\x03\xeamask bit missing"
    s.close()


@pytest.mark.server
def test_auth_violation_sends_err_then_close_1008(tmp_path, start_natsx):
    conf, port = ws_config(tmp_path, "authorization { token: s3cr3t }")
    start_natsx("-c", conf, monitor=False)
    s, first = ws_connect(port)
    assert json.loads(parse_frames(first)[0][2][5:])["auth_required"] is True
    s.sendall(frame(2, b'CONNECT {"auth_token":"wrong"}\r\n'))
    frames = parse_frames(read_until(s, lambda b: b"\x88" in b[-40:], timeout=3))
    assert frames[0][2] == b"-ERR 'Authorization Violation'\r\n"
    assert frames[-1] == (0x88, 8, struct.pack(">H", 1008) + b"Authentication Failure")


@pytest.mark.server
def test_natspy_over_websocket_with_compression(tmp_path, start_natsx):
    conf, port = ws_config(tmp_path, "compression: true")
    srv = start_natsx("-c", conf, monitor=False)

    big = os.urandom(100) * 200     # compressible, larger than the threshold

    async def main():
        nc = await nats.connect(f"ws://127.0.0.1:{port}")
        tcp = await nats.connect(srv.url)
        sub = await nc.subscribe("ws.>")
        async def echo(m):
            await m.respond(m.data[::-1])

        await nc.subscribe("svc", cb=echo)
        await nc.flush()
        await tcp.publish("ws.a", big, headers={"k": "v"})
        await nc.publish("ws.b", b"small")
        msg1 = await sub.next_msg(timeout=5)
        msg2 = await sub.next_msg(timeout=5)
        reply = await tcp.request("svc", big, timeout=5)
        await nc.close()
        await tcp.close()
        return msg1, msg2, reply

    m1, m2, reply = run(main())
    if m1.subject != "ws.a":     # two publishers: either order
        m1, m2 = m2, m1
    assert (m1.subject, m1.data, m1.headers) == ("ws.a", big, {"k": "v"})
    assert (m2.subject, m2.data) == ("ws.b", b"small")
    assert reply.data == big[::-1]


@pytest.mark.server
def test_websocket_block_auth_overrides_the_servers(tmp_path, start_natsx):
    # The server has a user; the websocket block has its own token.
    conf, port = ws_config(tmp_path, "authorization { token: wstoken }")
    text = open(conf).read()
    with open(conf, "w") as f:
        f.write("authorization { user: tcpuser, password: tcppass }\n" + text)
    srv = start_natsx("-c", conf, monitor=False)

    async def main():
        ok = await nats.connect(f"ws://127.0.0.1:{port}", token="wstoken")
        await ok.close()
        with pytest.raises(Exception):
            await nats.connect(f"ws://127.0.0.1:{port}", user="tcpuser", password="tcppass",
                               allow_reconnect=False, max_reconnect_attempts=0)
        tcp = await nats.connect(srv.url, user="tcpuser", password="tcppass")
        await tcp.close()

    run(main())


@pytest.mark.server
def test_no_auth_user_of_the_websocket_block(tmp_path, start_natsx):
    conf, port = ws_config(tmp_path, "no_auth_user: wsuser")
    text = open(conf).read()
    with open(conf, "w") as f:
        f.write("authorization { users: [{user: wsuser, password: a}, {user: other, "
                "password: b}] }\n" + text)
    srv = start_natsx("-c", conf)

    async def main():
        nc = await nats.connect(f"ws://127.0.0.1:{port}")
        await nc.flush()
        connz = httpx.get(f"http://127.0.0.1:{srv.http_port}/connz?auth=1").json()
        await nc.close()
        return connz

    connz = run(main())
    assert [(c["type"], c.get("authorized_user")) for c in connz["connections"]] == [
        ("websocket", "wsuser")]


@pytest.mark.server
def test_allowed_connection_types_distinguish_websocket(tmp_path, start_natsx):
    conf, port = ws_config(tmp_path)
    text = open(conf).read()
    with open(conf, "w") as f:
        f.write('authorization { users: [{user: tcponly, password: a, '
                'allowed_connection_types: ["STANDARD"]}, {user: wsonly, password: b, '
                'allowed_connection_types: ["WEBSOCKET"]}] }\n' + text)
    srv = start_natsx("-c", conf, monitor=False)

    async def attempt(url, user, password):
        try:
            nc = await nats.connect(url, user=user, password=password, allow_reconnect=False,
                                    max_reconnect_attempts=0)
        except Exception:
            return False
        await nc.close()
        return True

    async def main():
        ws = f"ws://127.0.0.1:{port}"
        return [await attempt(ws, "wsonly", "b"), await attempt(ws, "tcponly", "a"),
                await attempt(srv.url, "tcponly", "a"), await attempt(srv.url, "wsonly", "b")]

    assert run(main()) == [True, False, True, False]


@pytest.mark.server
def test_websocket_and_tcp_clients_across_two_workers(tmp_path, start_natsx):
    conf, port = ws_config(tmp_path)
    srv = start_natsx("-c", conf, "--workers", "2")

    async def main():
        # The kernel spreads connections over the workers: connect until each kind has a
        # client on each worker (a worker's client ids are its index + 1 plus multiples
        # of the worker count).
        async def on_both(url):
            clients, seen = [], set()
            while len(seen) < 2 and len(clients) < 40:
                c = await nats.connect(url)
                clients.append(c)
                seen.add((c._server_info["client_id"] - 1) % 2)
            return clients

        ws_clients = await on_both(f"ws://127.0.0.1:{port}")
        tcp_clients = await on_both(srv.url)
        subs = [await c.subscribe("x.ws") for c in ws_clients]
        tsubs = [await c.subscribe("x.tcp") for c in tcp_clients]
        for c in ws_clients + tcp_clients:
            await c.flush()
        await asyncio.sleep(0.3)
        await tcp_clients[0].publish("x.ws", b"to-ws")
        await ws_clients[0].publish("x.tcp", b"to-tcp")
        for c in ws_clients + tcp_clients:
            await c.flush()
        got = [(await s.next_msg(timeout=5)).data for s in subs + tsubs]
        connz = httpx.get(f"http://127.0.0.1:{srv.http_port}/connz").json()
        for c in ws_clients + tcp_clients:
            await c.close()
        return got, connz

    got, connz = run(main())
    n_ws = sum(c["type"] == "websocket" for c in connz["connections"])
    assert got == [b"to-ws"] * n_ws + [b"to-tcp"] * (len(got) - n_ws)
    # A worker's client ids are its index + 1 plus multiples of the worker count.
    workers = {(c["type"], (c["cid"] - 1) % 2) for c in connz["connections"]}
    assert {"websocket", "nats"} == {t for t, _ in workers}
    assert {w for t, w in workers if t == "websocket"} == {0, 1}


@pytest.mark.server
def test_random_port_and_ports_file(tmp_path, start_natsx):
    conf = tmp_path / "ws.conf"
    conf.write_text("websocket { port: -1, no_tls: true }\n")
    start_natsx("-c", str(conf), "--ports_file_dir", str(tmp_path), monitor=False)
    deadline = time.monotonic() + 5
    files = []
    while not files and time.monotonic() < deadline:
        files = list(tmp_path.glob("*.ports"))
        time.sleep(0.05)
    ports = json.loads(files[0].read_text())
    url = ports["websocket"][0]
    assert url.startswith("ws://")
    port = int(url.rsplit(":", 1)[1])
    s, first = ws_connect(port)
    assert json.loads(parse_frames(first)[0][2][5:])["port"] == port
    s.close()


@pytest.mark.parametrize("body, error", [
    ("port: 1234", "websocket requires TLS configuration"),
    ("port: 1234, no_tls: true, allowed_origins: [\"ftp://x\"]",
     'unable to parse allowed origin "ftp://x": allowed origins must be absolute URLs with '
     "http or https scheme"),
    ("port: 1234, no_tls: true, headers { Upgrade: x }",
     'websocket: invalid header "Upgrade" not allowed'),
    ("port: 1234, no_tls: true, headers { Sec-WebSocket-Foo: x }",
     'websocket: invalid header "Sec-WebSocket-Foo", "Sec-WebSocket-" prefix not allowed'),
    ("port: 1234, no_tls: true, no_auth_user: bob",
     'no_auth_user: "bob" present, but users/nkeys are not defined'),
    ("port: 1234, no_tls: true, jwt_cookie: jwt",
     'trusted operators or trusted keys configuration is required for JWT authentication '
     'via cookie "jwt"'),
])
def test_invalid_websocket_options(tmp_path, body, error):
    from natsx.server.config_options import (ConfigProcessError, load_options,
                                             validate_options)

    conf = tmp_path / "bad.conf"
    conf.write_text(f"websocket {{ {body} }}\n")
    opts, _ = load_options(str(conf))
    with pytest.raises(ConfigProcessError) as exc:
        validate_options(opts)
    assert str(exc.value).strip() == error


def test_websocket_block_parsed(tmp_path):
    from natsx.server.config_options import load_options

    conf = tmp_path / "ok.conf"
    conf.write_text('ws { listen: "127.0.0.1:-1", no_tls: true, compression: true, '
                    'handshake_timeout: "3s", same_origin: true, origins: "http://a", '
                    'authorization { user: u, pass: p, timeout: 5 }, user_cookie: c1, '
                    'ping_interval: "30s", headers { X-A: b } }\n')
    opts, _ = load_options(str(conf))
    wo = opts.websocket
    assert (wo.host, wo.port, wo.compression, wo.handshake_timeout, wo.same_origin) == \
        ("127.0.0.1", -1, True, 3.0, True)
    assert (wo.allowed_origins, wo.username, wo.password, wo.auth_timeout) == \
        (["http://a"], "u", "p", 5.0)
    assert (wo.user_cookie, wo.ping_interval, wo.headers) == ("c1", 30.0, {"X-A": "b"})
    assert wo.auth_override
