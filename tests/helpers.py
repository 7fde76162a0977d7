"""Raw-socket client helpers shared by the black-box protocol tests.

``Wire`` is a client at the byte level: it reads the server's INFO on connect, then the
server's answer frame by frame (a control line, plus the payload of MSG/HMSG). The
server's own PINGs (the first one comes 2 s after CONNECT) are answered and left out of
what the helpers return, so no test depends on their timing. Writing to a connection the
server already closed is not an error here: the test reads the close instead.
"""
from __future__ import annotations

import json
import socket
import time


def split_frame(buf: bytes) -> bytes | None:
    """The first complete server frame in ``buf`` (control line plus any payload)."""
    nl = buf.find(b"\n")
    if nl < 0:
        return None
    line = buf[:nl + 1]
    op = line.split(None, 1)[0].upper() if line.strip() else b""
    if op in (b"MSG", b"HMSG"):
        end = nl + 1 + int(line.split()[-1]) + 2
        return buf[:end] if len(buf) >= end else None
    return line


def err(text: str) -> bytes:
    return b"-ERR '" + text.encode() + b"'\r\n"


def msg(subject: str, sid: str, payload: bytes, reply: str | None = None) -> bytes:
    mid = f" {reply}" if reply else ""
    return f"MSG {subject} {sid}{mid} {len(payload)}\r\n".encode() + payload + b"\r\n"


class Wire:
    """A raw client connection that reads the server's answer frame by frame.

    ``connect``, when given, is sent as CONNECT (verbose off unless it says otherwise)
    right after the INFO, without waiting for an answer.
    """

    def __init__(self, port: int, connect: dict | None = None, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.info_line = self.frame()
        assert self.info_line is not None and self.info_line.startswith(b"INFO "), self.info_line
        self.info = json.loads(self.info_line[5:])
        if connect is not None:
            self.connect(connect)

    def connect(self, opts: dict) -> "Wire":
        return self.send(b"CONNECT " + json.dumps({"verbose": False, **opts}).encode() + b"\r\n")

    def send(self, data: bytes) -> "Wire":
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return self

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete frame; buffered {self.buf[:200]!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except socket.timeout:
            raise TimeoutError(f"no complete frame; buffered {self.buf[:200]!r}") from None
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def frame(self, timeout: float | None = None) -> bytes | None:
        """The next frame, or None at EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            f = split_frame(self.buf)
            if f is not None:
                self.buf = self.buf[len(f):]
                return f
            if self.eof or not self._fill(deadline):
                return None

    def frames_until(self, stop, timeout: float | None = None) -> list[bytes]:
        """Frames up to (not including) the first one ``stop`` accepts, or to EOF."""
        out = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            f = self.frame(max(deadline - time.monotonic(), 0.001))
            if f is None or stop(f):
                return out
            if f == b"PING\r\n":
                self.send(b"PONG\r\n")
                continue
            out.append(f)

    def sync(self, timeout: float | None = None) -> list[bytes]:
        """Sends PING; returns every frame the server sent before the PONG."""
        self.send(b"PING\r\n")
        out = self.frames_until(lambda f: f == b"PONG\r\n", timeout)
        assert not self.eof, f"connection closed; got {out!r}"
        return out

    def frames(self, n: int, timeout: float | None = None) -> list[bytes]:
        """The next ``n`` frames (the server's PINGs answered and left out)."""
        out: list[bytes] = []
        self.frames_until(lambda f: f != b"PING\r\n" and (out.append(f) or len(out) == n),
                          timeout)
        return out

    def until_closed(self, timeout: float | None = None) -> list[bytes]:
        """Returns every frame until the server closes the connection."""
        out = self.frames_until(lambda f: False, timeout)
        assert self.eof, out
        return out

    def close(self) -> None:
        self.sock.close()
