"""NATS over WebSocket: the upgrade handshake and the frame codec, without I/O.

Theory of operation
-------------------
The Go server serves WebSocket clients from a ``net/http`` server on the ``websocket``
port (server/websocket.go). This module is that protocol as pure functions and one codec
object per connection; natsx.server.wsaccept does the socket side.

Handshake. ``read_request`` takes the bytes received so far and returns either nothing
(need more), a parsed ``Request``, or an ``HttpError`` carrying the exact response Go's
``net/http`` gives for a malformed request (``400 Bad Request``, ``505 ...``, ``431 ...``
with ``Connection: close``). ``upgrade`` applies Go's ``wsUpgrade`` checks in Go's order and
gives Go's statuses: 405 for a method other than GET, 400 for a missing Host, Upgrade,
Connection, key or version, 403 when the Origin is refused (``same_origin``,
``allowed_origins``), all with ``http.Error``'s headers and body; otherwise the ``101``
with ``Sec-WebSocket-Accept``, the permessage-deflate answer, ``Nats-No-Masking`` and the
configured extra headers, and a ``Codec`` for the connection. An error response keeps an
HTTP/1.1 connection open for another request, as ``net/http`` does.

Frames in. ``Codec.decode`` takes everything one ``recv`` returned and gives back the NATS
bytes in it, for one ``core.feed``: headers are parsed across reads (a partial header waits
for the next read), payloads are unmasked as they arrive (the mask position carries over),
fragments are joined, and a compressed message is inflated when its final frame arrives
(a fresh raw-deflate stream each time: the server negotiates ``client_no_context_takeover``).
Control frames are answered here: a ping queues a pong, a close queues the echo of its
status and ends the connection as "Client Closed". A violation of RFC 6455 queues a close
frame 1002 with Go's text and ends the connection as "Read Error". ``decode`` stops at the
frame that ends the connection; ``done`` then holds the close reason for the connection.

Frames out. ``Codec.frame`` turns what the core queued into frames (the server never
masks): one binary frame for the whole batch, or frames of at most 4 KiB for a browser
(User-Agent ``Mozilla/...``); when compression was negotiated and the batch is larger than
64 bytes, one compressed frame (raw deflate, level 1, sync-flushed, the trailing
``00 00 ff ff`` removed, no context kept between frames). Queued control frames go first,
the close frame last, exactly as Go's ``wsCollapsePtoNB`` orders them.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import time
import zlib
from email.utils import formatdate
from urllib.parse import urlsplit

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

FINAL_BIT = 0x80
RSV1_BIT = 0x40
RSV2_BIT = 0x20
RSV3_BIT = 0x10
MASK_BIT = 0x80

MAX_CONTROL_PAYLOAD = 125
FRAME_SIZE_FOR_BROWSERS = 4096
COMPRESS_THRESHOLD = 64
MAX_MSG_PAYLOAD_MULTIPLE = 8
MAX_MSG_PAYLOAD_LIMIT = 64 * 1024 * 1024

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TLS_HANDSHAKE = 1015

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PMC_EXTENSION = "permessage-deflate"
PMC_RESPONSE = ("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                "client_no_context_takeover\r\n")
NO_MASKING_HEADER = "nats-no-masking"
NO_MASKING_RESPONSE = "Nats-No-Masking: true\r\n"
_COMPRESS_LAST_BLOCK = b"\x00\x00\xff\xff\x01\x00\x00\xff\xff"

# net/http's limits: DefaultMaxHeaderBytes plus the 4096 bytes of slack it allows.
MAX_HEADER_BYTES = (1 << 20) + 4096

# Connection close reasons (the ClosedState texts) -> close status (Go: wsEnqueueCloseMessage).
_CLOSE_STATUS = {
    "Client Closed": CLOSE_NORMAL,
    "TLS Handshake Failure": CLOSE_TLS_HANDSHAKE,
    "Parse Error": CLOSE_PROTOCOL_ERROR,
    "Protocol Violation": CLOSE_PROTOCOL_ERROR,
    "Bad Client Protocol Version": CLOSE_PROTOCOL_ERROR,
    "Maximum Message Payload Exceeded": CLOSE_MESSAGE_TOO_BIG,
    "Maximum Payload Exceeded": CLOSE_MESSAGE_TOO_BIG,   # natsx's text for the same state
}
for _reason in ("Authentication Timeout", "Authentication Failure",
                "Slow Consumer (Pending Bytes)", "Slow Consumer (Write Deadline)",
                "Maximum Account Connections Exceeded", "Maximum Connections Exceeded",
                "Maximum Control Line Exceeded", "Maximum Subscriptions Exceeded",
                "Missing Account", "Authentication Expired", "Credentials Revoked"):
    _CLOSE_STATUS[_reason] = CLOSE_POLICY_VIOLATION
for _reason in ("Write Error", "Read Error", "Stale Connection", "Server Shutdown"):
    _CLOSE_STATUS[_reason] = CLOSE_GOING_AWAY

_STATUS_TEXT = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
                405: "Method Not Allowed", 500: "Internal Server Error"}

REASON_CLIENT_CLOSED = "Client Closed"
REASON_READ_ERROR = "Read Error"


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def close_payload(status: int, body: str) -> bytes:
    """A close frame's payload; a body too long for a control frame is cut, with "..."."""
    raw = body.encode()
    if len(raw) > MAX_CONTROL_PAYLOAD - 2:
        raw = raw[:MAX_CONTROL_PAYLOAD - 5] + b"..."
    return status.to_bytes(2, "big") + raw


def frame_header(opcode: int, length: int, *, first: bool = True, final: bool = True,
                 compressed: bool = False) -> bytes:
    """A server frame header (never masked)."""
    b0 = (opcode if first else 0) | (FINAL_BIT if final else 0) | (RSV1_BIT if compressed else 0)
    if length <= 125:
        return bytes((b0, length))
    if length < 65536:
        return bytes((b0, 126)) + length.to_bytes(2, "big")
    return bytes((b0, 127)) + length.to_bytes(8, "big")


def unmask(data: bytes, key: bytes, pos: int = 0) -> bytes:
    """XORs ``data`` with the 4-byte ``key`` starting at key position ``pos``."""
    n = len(data)
    if not n:
        return b""
    if pos:
        key = key[pos:] + key[:pos]
    stream = key * ((n + 3) // 4)
    if n != len(stream):
        stream = stream[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def is_valid_close_status(code: int) -> bool:
    if code in (CLOSE_NO_STATUS, 1004, 1006, CLOSE_TLS_HANDSHAKE):
        return False
    if code < 1000 or code >= 5000:
        return False
    return not 1016 <= code <= 2999


def max_message_size(max_payload: int) -> int:
    """The most compressed bytes one message may carry (Go: wsMaxMessageSize)."""
    if max_payload <= 0:
        max_payload = 1024 * 1024
    return min(max_payload * MAX_MSG_PAYLOAD_MULTIPLE, MAX_MSG_PAYLOAD_LIMIT)


# ---------------------------------------------------------------------------- codec


class Codec:
    """One WebSocket connection's framing state, both directions."""

    def __init__(self, *, compress: bool = False, mask_read: bool = True,
                 browser: bool = False, nocompfrag: bool = False,
                 cookies: dict | None = None, client_ip: str = "") -> None:
        self.compress = compress
        self.mask_read = mask_read
        self.browser = browser
        self.nocompfrag = nocompfrag
        #: values of the configured cookies, by CONNECT field ("user", "pass", ...)
        self.cookies = cookies or {}
        #: the client's address from X-Forwarded-For, when it is an IP address
        self.client_ip = client_ip
        #: set when the connection must end: the close reason ("Client Closed", "Read Error")
        self.done: str | None = None
        #: what went wrong, for the log ("" for a clean close frame)
        self.error = ""
        self.close_sent = False
        self._frames: list[bytes] = []     # control frames to send before the data
        self._close_msg: bytes | None = None
        self._buf = b""                    # an incomplete frame header (or control frame)
        self._rem = 0                      # payload bytes left in the current data frame
        self._in_frame = False
        self._key = b""
        self._kpos = 0
        self._final = True                 # the current message's final frame was seen
        self._fin_frame = True             # the current frame is the message's last
        self._compressed = False           # the current message is compressed
        self._cbufs: list[bytes] = []
        self._csize = 0

    # ------------------------------------------------------------------ input

    def decode(self, data: bytes, max_payload: int) -> bytes:
        """The NATS bytes in ``data``; sets ``done`` when the connection must end."""
        if self.done is not None:
            return b""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        out: list[bytes] = []
        pos = 0
        end = len(data)
        while pos < end or (self._in_frame and self._rem == 0):
            if not self._in_frame:
                used = self._header(data, pos, end, out, max_payload)
                if used < 0:
                    self._buf = data[pos:]
                    break
                pos = used
                if self.done is not None:
                    break
                continue
            n = min(self._rem, end - pos)
            chunk = data[pos:pos + n]
            pos += n
            self._rem -= n
            if self.mask_read and n:
                chunk = unmask(chunk, self._key, self._kpos)
                self._kpos = (self._kpos + n) & 3
            last = self._rem == 0
            if self._compressed:
                if not self._collect(chunk, last and self._fin_frame, out, max_payload):
                    break
            elif chunk:
                out.append(chunk)
            if last:
                self._in_frame = False
        return b"".join(out)

    def _header(self, data: bytes, pos: int, end: int, out: list, max_payload: int) -> int:
        """Parses the frame header at ``pos``; the position after it, or -1 for more data."""
        if end - pos < 2:
            return -1
        b0 = data[pos]
        b1 = data[pos + 1]
        opcode = b0 & 0x0F
        final = bool(b0 & FINAL_BIT)
        compressed = bool(b0 & RSV1_BIT)
        if b0 & (RSV2_BIT | RSV3_BIT):
            return self._protocol_error("RSV2 and RSV3 must be clear")
        if compressed and not self.compress:
            return self._protocol_error(
                "compressed frame received without negotiated permessage-deflate")
        if self.mask_read and not b1 & MASK_BIT:
            return self._protocol_error("mask bit missing")
        length = b1 & 0x7F
        control = opcode in (OP_CLOSE, OP_PING, OP_PONG)
        if control:
            if length > MAX_CONTROL_PAYLOAD:
                return self._protocol_error(
                    "control frame length bigger than maximum allowed of "
                    f"{MAX_CONTROL_PAYLOAD} bytes")
            if not final:
                return self._protocol_error("control frame does not have final bit set")
            if compressed:
                return self._protocol_error("control frame must not be compressed")
        elif opcode in (OP_TEXT, OP_BINARY):
            if not self._final:
                return self._protocol_error(
                    "new message started before final frame for previous message was received")
        elif opcode == OP_CONT:
            if self._final or compressed:
                return self._protocol_error("invalid continuation frame")
        else:
            return self._protocol_error(f"unknown opcode {opcode}")
        p = pos + 2
        if length == 126:
            if end - p < 2:
                return -1
            length = int.from_bytes(data[p:p + 2], "big")
            p += 2
        elif length == 127:
            if end - p < 8:
                return -1
            length = int.from_bytes(data[p:p + 8], "big")
            p += 8
            if length >> 63:
                return self._protocol_error("invalid 64-bit payload length")
        key = b""
        if self.mask_read:
            if end - p < 4:
                return -1
            key = data[p:p + 4]
            p += 4
        if control:
            if end - p < length:
                return -1
            payload = data[p:p + length]
            if key:
                payload = unmask(payload, key)
            self._control(opcode, payload)
            return p + length
        # A data frame: the state that Go keeps in wsReadInfo.
        if opcode != OP_CONT:
            self._compressed = compressed
        self._final = final
        self._fin_frame = final
        self._in_frame = True
        self._rem = length
        self._key = key
        self._kpos = 0
        return p

    def _collect(self, chunk: bytes, final: bool, out: list, max_payload: int) -> bool:
        """Accumulates a compressed message; inflates it on its last byte. False: stop."""
        limit = max_message_size(max_payload)
        if chunk:
            if self._csize + len(chunk) > limit:
                return self._fail("maximum payload exceeded")
            self._cbufs.append(chunk)
            self._csize += len(chunk)
        if not final:
            return True
        if self._csize + len(_COMPRESS_LAST_BLOCK) > limit:
            return self._fail("maximum payload exceeded")
        raw = b"".join(self._cbufs) + _COMPRESS_LAST_BLOCK
        self._cbufs = []
        self._csize = 0
        mpay = max_payload if max_payload > 0 else 1024 * 1024
        try:
            inflated = zlib.decompressobj(-15).decompress(raw, mpay + 1)
        except zlib.error as exc:
            return self._fail(f"flate: {exc}")
        if len(inflated) > mpay:
            # Go hands the first max_payload bytes to the parser, then fails.
            out.append(inflated[:mpay])
            return self._fail("maximum payload exceeded")
        out.append(inflated)
        return True

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._frames.append(frame_header(OP_PONG, len(payload)) + payload)
        elif opcode == OP_CLOSE:
            status = CLOSE_NO_STATUS
            body = ""
            if len(payload) == 1:
                self._protocol_error("close frame payload cannot be 1 byte")
                return
            if len(payload) >= 2:
                status = int.from_bytes(payload[:2], "big")
                if not is_valid_close_status(status):
                    self._protocol_error(f"invalid close status code {status}")
                    return
                if len(payload) > 2:
                    try:
                        body = payload[2:].decode("utf-8")
                    except UnicodeDecodeError:
                        status = CLOSE_INVALID_PAYLOAD
                        body = "invalid utf8 body in close frame"
            # 1005 means "no status": nothing to echo then.
            self._enqueue_close(close_payload(status, body) if status != CLOSE_NO_STATUS else b"")
            self.done = REASON_CLIENT_CLOSED
        # A pong needs nothing.

    def _protocol_error(self, message: str) -> int:
        self._enqueue_close(close_payload(CLOSE_PROTOCOL_ERROR, message))
        self.error = message
        self.done = REASON_READ_ERROR
        return 0

    def _fail(self, message: str) -> bool:
        self._cbufs = []
        self._csize = 0
        self.error = message
        self.done = REASON_READ_ERROR
        return False

    # ------------------------------------------------------------------ output

    def _enqueue_close(self, payload: bytes) -> None:
        self.close_sent = True
        self._close_msg = frame_header(OP_CLOSE, len(payload)) + payload

    def close(self, reason: str) -> None:
        """Queues the close frame for a connection closed for ``reason`` (once)."""
        if self.close_sent:
            return
        status = _CLOSE_STATUS.get(reason, CLOSE_INTERNAL_ERROR)
        self._enqueue_close(close_payload(status, reason))

    @property
    def pending(self) -> bool:
        """Control frames wait to be sent."""
        return bool(self._frames) or self._close_msg is not None

    def frame(self, data: bytes) -> bytes:
        """The frames for ``data`` (what the core queued), after any control frames."""
        parts = self._frames
        self._frames = []
        if data:
            mfs = FRAME_SIZE_FOR_BROWSERS if self.browser else 0
            if self.compress and len(data) > COMPRESS_THRESHOLD:
                comp = zlib.compressobj(1, zlib.DEFLATED, -15)
                p = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
                p = p[:-4]
                if self.nocompfrag:
                    mfs = 0
                if mfs and len(p) > mfs:
                    first = True
                    while p:
                        chunk, p = p[:mfs], p[mfs:]
                        parts.append(frame_header(OP_BINARY, len(chunk), first=first,
                                                  final=not p, compressed=first))
                        parts.append(chunk)
                        first = False
                else:
                    parts.append(frame_header(OP_BINARY, len(p), compressed=True))
                    parts.append(p)
            elif mfs and len(data) > mfs:
                for i in range(0, len(data), mfs):
                    chunk = data[i:i + mfs]
                    parts.append(frame_header(OP_BINARY, len(chunk)))
                    parts.append(chunk)
            else:
                parts.append(frame_header(OP_BINARY, len(data)))
                parts.append(data)
        if self._close_msg is not None:
            parts.append(self._close_msg)
            self._close_msg = None
        return b"".join(parts)

    # ------------------------------------------------------------------ CONNECT

    def apply_cookies(self, opts: dict) -> dict:
        """The CONNECT with the configured cookies filling absent credentials."""
        if not self.cookies:
            return opts
        opts = dict(opts)
        for field, value in self.cookies.items():
            if not opts.get(field):
                opts[field] = value
        return opts


# ---------------------------------------------------------------------------- handshake


class Request:
    """A parsed HTTP/1.x request head."""

    __slots__ = ("method", "target", "version", "headers", "body_length", "chunked")

    def __init__(self, method: str, target: str, version: tuple[int, int],
                 headers: dict[str, list[str]]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers      # lower-case name -> values, in order
        self.body_length = 0
        self.chunked = False

    def get(self, name: str) -> str:
        values = self.headers.get(name)
        return values[0] if values else ""

    @property
    def host(self) -> str:
        return self.get("host")

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after an error response (net/http rules)."""
        if self.chunked:
            return False
        if self.version >= (1, 1):
            return not header_contains(self.headers, "connection", "close")
        return header_contains(self.headers, "connection", "keep-alive")


class HttpError:
    """A response for a request that could not be served; ``close`` after sending it."""

    __slots__ = ("status", "response", "close", "reason")

    def __init__(self, status: int, response: bytes, close: bool, reason: str) -> None:
        self.status = status
        self.response = response
        self.close = close
        self.reason = reason


def _bad_request(status: int, text: str, detail: str = "") -> HttpError:
    # net/http's answer to a request it cannot parse: no Date, no Content-Length.
    head = f"{status} {text}" + (f": {detail}" if detail else "")
    resp = (f"HTTP/1.1 {head}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Connection: close\r\n\r\n{head}").encode()
    return HttpError(status, resp, True, detail or text)


def read_request(buf: bytes) -> tuple[Request | HttpError | None, int]:
    """Parses one request head from ``buf``: (request or error or None, bytes used)."""
    end = buf.find(b"\n\r\n")
    alt = buf.find(b"\n\n")
    if end < 0 or (0 <= alt < end):
        end, skip = alt, 2
    else:
        skip = 3
    if end < 0:
        if len(buf) > MAX_HEADER_BYTES:
            return _bad_request(431, "Request Header Fields Too Large"), len(buf)
        return None, 0
    used = end + skip
    if used > MAX_HEADER_BYTES:
        return _bad_request(431, "Request Header Fields Too Large"), used
    lines = buf[:end + 1].decode("latin-1").split("\n")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if lines and lines[-1] == "":
        lines.pop()
    # Go skips empty lines before the request line (RFC 7230 3.5).
    while lines and lines[0] == "":
        lines.pop(0)
    if not lines:
        return None, used
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return _bad_request(400, "Bad Request"), used
    method, target, proto = parts
    version = _parse_version(proto)
    if version is None:
        return _bad_request(400, "Bad Request"), used
    if version[0] != 1:
        return _bad_request(505, "HTTP Version Not Supported", "unsupported protocol version"), used
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            return _bad_request(400, "Bad Request"), used
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            return _bad_request(400, "Bad Request"), used
        headers.setdefault(name.lower(), []).append(value.strip(" \t"))
    hosts = headers.get("host", [])
    if len(hosts) > 1:
        return _bad_request(400, "Bad Request", "too many Host headers"), used
    if version >= (1, 1) and not hosts:
        return _bad_request(400, "Bad Request", "missing required Host header"), used
    req = Request(method, target, version, headers)
    if headers.get("transfer-encoding"):
        req.chunked = True
    cl = headers.get("content-length")
    if cl:
        try:
            req.body_length = int(cl[0])
        except ValueError:
            return _bad_request(400, "Bad Request"), used
        if req.body_length < 0:
            return _bad_request(400, "Bad Request"), used
    return req, used


def _parse_version(proto: str) -> tuple[int, int] | None:
    if proto == "HTTP/1.1":
        return 1, 1
    if proto == "HTTP/1.0":
        return 1, 0
    if not proto.startswith("HTTP/"):
        return None
    major, dot, minor = proto[5:].partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def header_contains(headers: dict[str, list[str]], name: str, value: str) -> bool:
    """Whether a header has ``value`` among its comma-separated tokens (Go: wsHeaderContains)."""
    value = value.lower()
    for line in headers.get(name, ()):
        for token in line.split(","):
            if token.strip(" \t").lower() == value:
                return True
    return False


def http_error(req: Request, status: int, reason: str, *, now: float | None = None) -> HttpError:
    """Go's ``wsReturnHTTPError``: ``http.Error`` with ``Sec-Websocket-Version: 13``."""
    text = _STATUS_TEXT[status]
    body = text + "\n"
    keep = req.keep_alive
    proto = "HTTP/1.1" if req.version >= (1, 1) else "HTTP/1.0"
    date = formatdate(now if now is not None else time.time(), usegmt=True)
    head = (f"{proto} {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Sec-Websocket-Version: 13\r\nX-Content-Type-Options: nosniff\r\n"
            f"Date: {date}\r\nContent-Length: {len(body)}\r\n")
    if req.version >= (1, 1) and not keep:
        head += "Connection: close\r\n"
    elif req.version < (1, 1) and keep:
        head += "Connection: keep-alive\r\n"
    if req.method == "HEAD":
        body = ""
    return HttpError(status, (head + "\r\n" + body).encode("latin-1"), not keep, reason)


class Settings:
    """What the handshake needs from the ``websocket`` options, prepared once."""

    def __init__(self, opts) -> None:
        self.compression = bool(opts.compression)
        self.same_origin = bool(opts.same_origin)
        self.tls = opts.tls is not None
        #: host -> [(scheme, port)] (Go: wsSetOriginOptions)
        self.allowed_origins: dict[str, list[tuple[str, str]]] = {}
        for origin in opts.allowed_origins or ():
            try:
                u = urlsplit(origin)
                host, port = host_and_port(u.scheme == "https", u.netloc)
            except ValueError:
                continue
            self.allowed_origins.setdefault(host, []).append((u.scheme, port))
        self.raw_headers = "".join(f"{k}: {v}\r\n" for k, v in (opts.headers or {}).items())
        self.cookie_fields = {}
        for name, field in ((opts.jwt_cookie, "jwt"), (opts.user_cookie, "user"),
                            (opts.pass_cookie, "pass"), (opts.token_cookie, "auth_token")):
            if name:
                self.cookie_fields[name] = field


def host_and_port(tls: bool, hostport: str) -> tuple[str, str]:
    """Go's wsGetHostAndPort: a missing port is the scheme's default.

    Raises:
        ValueError: ``hostport`` cannot be split.
    """
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ValueError(f"address {hostport}: missing ']' in address")
        host, rest = hostport[1:close], hostport[close + 1:]
        if not rest:
            return host.lower(), "443" if tls else "80"
        if not rest.startswith(":"):
            raise ValueError(f"address {hostport}: unexpected ']' in address")
        return host.lower(), rest[1:]
    if ":" not in hostport:
        return hostport.lower(), "443" if tls else "80"
    host, _, port = hostport.rpartition(":")
    if ":" in host:
        raise ValueError(f"address {hostport}: too many colons in address")
    return host.lower(), port


def check_origin(settings: Settings, req: Request, tls: bool) -> str:
    """Go's checkOrigin: "" when allowed, else why not."""
    if not settings.same_origin and not settings.allowed_origins:
        return ""
    origin = req.get("origin") or req.get("sec-websocket-origin")
    if not origin:
        return ""
    if not origin.startswith("/") and "://" not in origin:
        return f'parse "{origin}": invalid URI for request'
    try:
        u = urlsplit(origin)
        oh, op = host_and_port(u.scheme == "https", u.netloc)
    except ValueError as exc:
        return str(exc)
    if settings.same_origin:
        try:
            rh, rp = host_and_port(tls, req.host)
        except ValueError as exc:
            return str(exc)
        if oh != rh or op != rp or u.scheme.lower() != ("https" if tls else "http"):
            return "not same origin"
    if settings.allowed_origins:
        if not any(u.scheme == scheme and op == port
                   for scheme, port in settings.allowed_origins.get(oh, ())):
            return "not in the allowed list"
    return ""


def _cookies(req: Request) -> dict[str, str]:
    """Cookie name -> value, as Go's Request.Cookies reads them (the first of a name wins
    there too only by order: later ones overwrite, as the loop in wsUpgrade does)."""
    found: dict[str, str] = {}
    for line in req.headers.get("cookie", ()):
        for part in line.split(";"):
            name, sep, value = part.strip().partition("=")
            if not sep or not name:
                continue
            if len(value) > 1 and value[0] == value[-1] == '"':
                value = value[1:-1]
            found[name] = value
    return found


class Upgraded:
    """A successful upgrade: the ``101`` to send and the connection's codec."""

    __slots__ = ("response", "codec", "kind")

    def __init__(self, response: bytes, codec: Codec, kind: str) -> None:
        self.response = response
        self.codec = codec
        self.kind = kind


def upgrade(settings: Settings, req: Request, *, tls: bool = False,
            early_data: bool = False, mqtt_enabled: bool = False,
            now: float | None = None) -> Upgraded | HttpError | None:
    """Go's wsUpgrade for one request. None: close without an answer (Go hijacked the
    connection and found the client already sending frames)."""
    try:
        path = urlsplit(req.target).path
    except ValueError:
        path = req.target
    kind = "CLIENT"
    if path.endswith("/leafnode"):
        kind = "LEAF"
    elif path.endswith("/mqtt"):
        kind = "MQTT"
    if kind == "MQTT" and not mqtt_enabled:
        return http_error(req, 404, "mqtt websocket endpoint not enabled", now=now)
    if req.method != "GET":
        return http_error(req, 405, "request method must be GET", now=now)
    if not req.host:
        return http_error(req, 400, "'Host' missing in request", now=now)
    if not header_contains(req.headers, "upgrade", "websocket"):
        return http_error(req, 400, "invalid value for header 'Upgrade'", now=now)
    if not header_contains(req.headers, "connection", "upgrade"):
        return http_error(req, 400, "invalid value for header 'Connection'", now=now)
    key = req.get("sec-websocket-key")
    if not key:
        return http_error(req, 400, "key missing", now=now)
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 16:
        return http_error(req, 400, "invalid websocket key", now=now)
    if not header_contains(req.headers, "sec-websocket-version", "13"):
        return http_error(req, 400, "invalid version", now=now)
    why = check_origin(settings, req, tls)
    if why:
        return http_error(req, 403, f"origin not allowed: {why}", now=now)
    compress = settings.compression and any(
        param.strip(" \t").lower() == PMC_EXTENSION
        for line in req.headers.get("sec-websocket-extensions", ())
        for ext in line.split(",") for param in ext.split(";"))
    no_masking = req.get(NO_MASKING_HEADER) == "true"
    if early_data:
        return None
    resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n")
    if compress:
        resp += PMC_RESPONSE
    if no_masking:
        resp += NO_MASKING_RESPONSE
    if kind == "MQTT":
        resp += "Sec-Websocket-Protocol: mqtt\r\n"
    resp += settings.raw_headers + "\r\n"
    client_ip = ""
    forwarded = req.headers.get("x-forwarded-for")
    if forwarded:
        try:
            ipaddress.ip_address(forwarded[0])
            client_ip = forwarded[0]
        except ValueError:
            pass
    browser = nocompfrag = False
    cookies: dict[str, str] = {}
    if kind in ("CLIENT", "MQTT"):
        ua = req.get("user-agent")
        if ua.startswith("Mozilla/"):
            browser = True
            nocompfrag = compress and "Version/" in ua and "Safari/" in ua
        if settings.cookie_fields:
            for name, value in _cookies(req).items():
                field = settings.cookie_fields.get(name)
                if field:
                    cookies[field] = value
    codec = Codec(compress=compress, mask_read=not no_masking, browser=browser,
                  nocompfrag=nocompfrag, cookies=cookies, client_ip=client_ip)
    return Upgraded(resp.encode("latin-1"), codec, kind)
