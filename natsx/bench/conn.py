"""Benchmark connections: a blocking socket, the NATS handshake, and a slow path.

Theory of operation
-------------------
``Connection.open`` does what every NATS client does before its first message: read the
server's ``INFO``, upgrade to TLS when the URL, the options or the server ask for it, send
``CONNECT`` (with user/password, token, NKEY or JWT credentials, signing the server's
nonce with Ed25519), then ``PING`` and wait for ``PONG`` so that an authorization error
surfaces here rather than in the middle of a measurement.

After the handshake the socket belongs to whoever drives it: the workloads hand it to the
compiled counting loop. For everything that is not measured (subscribing, probes, the
JetStream API) the connection has a slow path that parses with
``natsx.protocol.client_parser`` and keeps events it was not waiting for in ``backlog``.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import re
import secrets
import socket
import ssl
import time
from typing import Callable
from urllib.parse import unquote, urlsplit

import attrs

from natsx import __version__
from natsx.protocol.client_parser import ClientParser, Err, Event, HMsg, Info, Msg, Ping, Pong

DEFAULT_URL = "nats://127.0.0.1:4222"


class BenchError(Exception):
    """A benchmark cannot go on: connection refused, auth error, lost messages..."""


@attrs.frozen
class ConnectOptions:
    """Where and how to connect; shared by every connection of a run."""

    url: str = DEFAULT_URL
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    timeout: float = 5.0


@attrs.frozen
class ServerAddress:
    host: str
    port: int
    tls: bool
    user: str | None
    password: str | None
    token: str | None


def parse_url(url: str) -> ServerAddress:
    """Parse ``[nats|tls]://[user:pass@|token@]host[:port]``; the first of a comma list."""
    url = url.split(",")[0].strip()
    if "://" not in url:
        url = "nats://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls"):
        raise BenchError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    token = None
    if user is not None and password is None:
        token, user = user, None
    return ServerAddress(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 4222,
        tls=parts.scheme == "tls",
        user=user,
        password=password,
        token=token,
    )


# -- NKEY signing -----------------------------------------------------------------------
# The encoding of nkeys (github.com/nats-io/nkeys): base32 without padding of
# prefix byte(s) + key + CRC16-XMODEM (little-endian).

_PREFIX_SEED = 18 << 3


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _b32decode(s: str) -> bytes:
    s = s.strip()
    return base64.b32decode(s + "=" * (-len(s) % 8))


def nkey_from_seed(seed: str) -> tuple[str, Callable[[bytes], bytes]]:
    """The public key of an NKEY seed (``SU...``) and a function signing with it."""
    import nacl.signing

    raw = _b32decode(seed)
    if len(raw) != 36 or _crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        raise BenchError("invalid NKEY seed (bad length or checksum)")
    if raw[0] & 0xF8 != _PREFIX_SEED:
        raise BenchError("not an NKEY seed")
    kind = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
    key = nacl.signing.SigningKey(raw[2:34])
    body = bytes([kind]) + bytes(key.verify_key)
    public = base64.b32encode(body + _crc16(body).to_bytes(2, "little")).decode().rstrip("=")
    return public, lambda nonce: key.sign(nonce).signature


def encode_seed(kind_prefix: int, raw_seed: bytes) -> str:
    """Encode a 32-byte Ed25519 seed as an NKEY seed string (tests make users with it).

    Args:
        kind_prefix: the public-key prefix byte, e.g. ``20 << 3`` for a user (``U``).
    """
    b1 = _PREFIX_SEED | (kind_prefix >> 5)
    b2 = (kind_prefix & 31) << 3
    body = bytes([b1, b2]) + raw_seed
    return base64.b32encode(body + _crc16(body).to_bytes(2, "little")).decode().rstrip("=")


_CREDS_BLOCK = re.compile(r"-{3,}[^\n]*-{3,}\s*\n(.+?)\n\s*-{3,}[^\n]*END[^\n]*-{3,}", re.S)


def read_creds(path: str) -> tuple[str, str]:
    """(user JWT, seed) from a ``.creds`` file."""
    with open(path) as f:
        blocks = [b.strip() for b in _CREDS_BLOCK.findall(f.read())]
    if len(blocks) < 2:
        raise BenchError(f"{path}: not a creds file (needs a JWT and a seed block)")
    return blocks[0], blocks[1]


def _sign(sign: Callable[[bytes], bytes], nonce: str) -> str:
    return base64.urlsafe_b64encode(sign(nonce.encode())).decode().rstrip("=")


# -- the connection ---------------------------------------------------------------------

_inbox_ids = itertools.count(1)


def new_inbox() -> str:
    """A fresh inbox prefix, unique across processes and connections."""
    return f"_INBOX.{secrets.token_hex(8)}{next(_inbox_ids)}"


@attrs.define(eq=False)
class Connection:
    """One client connection; see the module header."""

    sock: socket.socket
    info: dict
    opts: ConnectOptions
    parser: ClientParser = attrs.field(factory=ClientParser)
    backlog: list[Event] = attrs.field(factory=list)
    _sids: itertools.count = attrs.field(factory=lambda: itertools.count(1))
    _api_inbox: str | None = None

    @classmethod
    def open(cls, opts: ConnectOptions, name: str = "natsx-bench") -> Connection:
        """Connect and complete the handshake.

        Raises:
            BenchError: refused, timed out, TLS failure or an authorization error.
        """
        addr = parse_url(opts.url)
        try:
            sock = socket.create_connection((addr.host, addr.port), timeout=opts.timeout)
        except OSError as exc:
            raise BenchError(f"cannot connect to {addr.host}:{addr.port}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(sock=sock, info={}, opts=opts)
        try:
            conn._handshake(addr, name)
        except BaseException:
            conn.close()
            raise
        return conn

    def _handshake(self, addr: ServerAddress, name: str) -> None:
        deadline = time.monotonic() + self.opts.timeout
        info = None
        while info is None:
            for ev in self._read(deadline):
                if isinstance(ev, Info):
                    info = ev.info
                    break
        self.info = info
        rest = self.parser.buffered
        want_tls = addr.tls or bool(self.opts.tls_ca or self.opts.tls_cert)
        if want_tls or info.get("tls_required"):
            if rest:
                raise BenchError("server sent data before the TLS handshake")
            self._start_tls(addr.host)
        opts = self.opts
        connect: dict = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "echo": True,
            "lang": "python-natsx-bench",
            "version": __version__,
            "name": name,
            "tls_required": want_tls,
        }
        user = opts.user or addr.user
        password = opts.password if opts.password is not None else addr.password
        token = opts.token or addr.token
        if user is not None:
            connect["user"] = user
            connect["pass"] = password or ""
        if token:
            connect["auth_token"] = token
        nonce = info.get("nonce", "")
        if opts.creds:
            jwt, seed = read_creds(opts.creds)
            _, sign = nkey_from_seed(seed)
            connect["jwt"] = jwt
            connect["sig"] = _sign(sign, nonce)
        elif opts.nkey:
            seed = opts.nkey
            if os.path.exists(seed):
                with open(seed) as f:
                    seed = f.read().strip()
            public, sign = nkey_from_seed(seed)
            connect["nkey"] = public
            connect["sig"] = _sign(sign, nonce)
        self.send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        while True:
            for ev in self._read(deadline):
                if isinstance(ev, Err):
                    raise BenchError(f"server refused the connection: {ev.text}")
                if isinstance(ev, Pong):
                    return

    def _start_tls(self, host: str) -> None:
        ctx = ssl.create_default_context(cafile=self.opts.tls_ca)
        if self.opts.tls_cert:
            ctx.load_cert_chain(self.opts.tls_cert, self.opts.tls_key)
        try:
            self.sock = ctx.wrap_socket(self.sock, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            raise BenchError(f"TLS handshake failed: {exc}") from None

    # -- slow path ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise BenchError(f"connection lost while sending: {exc}") from None

    def _read(self, deadline: float) -> list[Event]:
        """Read once (until ``deadline``) and return the events; answers PING itself."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError("timed out waiting for the server")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise BenchError("timed out waiting for the server") from None
        except OSError as exc:
            raise BenchError(f"connection lost: {exc}") from None
        if not data:
            raise BenchError("server closed the connection")
        events = self.parser.feed(data)
        if any(isinstance(ev, Ping) for ev in events):
            self.send(b"PONG\r\n")
            events = [ev for ev in events if not isinstance(ev, Ping)]
        return events

    def next_event(self, timeout: float) -> Event:
        """The next event, from the backlog first.

        Raises:
            BenchError: nothing arrived within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while not self.backlog:
            self.backlog.extend(self._read(deadline))
        return self.backlog.pop(0)

    def flush(self, timeout: float | None = None) -> None:
        """Round trip a PING: everything sent before it has been processed by the server.

        Raises:
            BenchError: the server answered ``-ERR`` or did not answer in time.
        """
        self.send(b"PING\r\n")
        deadline = time.monotonic() + (timeout or self.opts.timeout)
        while True:
            for ev in self._read(deadline):
                if isinstance(ev, Pong):
                    return
                if isinstance(ev, Err):
                    raise BenchError(f"server error: {ev.text}")
                self.backlog.append(ev)

    def subscribe(self, subject: str, queue: str | None = None) -> str:
        """Send SUB and return its sid (no flush)."""
        sid = str(next(self._sids))
        q = f" {queue}" if queue else ""
        self.send(f"SUB {subject}{q} {sid}\r\n".encode())
        return sid

    def unsubscribe(self, sid: str) -> None:
        self.send(f"UNSUB {sid}\r\n".encode())

    def publish(self, subject: str, payload: bytes = b"", reply: str | None = None) -> None:
        r = f" {reply}" if reply else ""
        self.send(f"PUB {subject}{r} {len(payload)}\r\n".encode() + payload + b"\r\n")

    def request(self, subject: str, payload: bytes = b"", timeout: float | None = None) -> Msg | HMsg:
        """Publish with a reply subject and wait for the first reply.

        Raises:
            BenchError: no reply in time, or the server answered 503 (no responders).
        """
        if self._api_inbox is None:
            self._api_inbox = new_inbox()
            self.subscribe(self._api_inbox + ".*")
        reply = f"{self._api_inbox}.{next(self._sids)}"
        self.publish(subject, payload, reply)
        deadline = time.monotonic() + (timeout or self.opts.timeout)
        kept: list[Event] = []
        try:
            while True:
                while self.backlog:
                    ev = self.backlog.pop(0)
                    if isinstance(ev, (Msg, HMsg)) and ev.subject == reply:
                        if isinstance(ev, HMsg) and not ev.payload and ev.headers.startswith(b"NATS/1.0 503"):
                            raise BenchError(f"no responders for {subject}")
                        return ev
                    if isinstance(ev, Err):
                        raise BenchError(f"server error: {ev.text}")
                    kept.append(ev)
                self.backlog.extend(self._read(deadline))
        finally:
            self.backlog[:0] = kept

    def api(self, subject: str, body: dict | None = None, timeout: float | None = None) -> dict:
        """A JetStream (or any JSON) API request; raises on an ``error`` in the reply."""
        payload = json.dumps(body).encode() if body is not None else b""
        msg = self.request(subject, payload, timeout)
        try:
            reply = json.loads(msg.payload or b"{}")
        except ValueError:
            raise BenchError(f"{subject}: reply is not JSON: {msg.payload[:200]!r}") from None
        if isinstance(reply, dict) and reply.get("error"):
            err = reply["error"]
            raise ApiError(subject, err.get("code", 0), err.get("err_code", 0), err.get("description", ""))
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ApiError(BenchError):
    """A JetStream API request answered with an error."""

    def __init__(self, subject: str, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{subject}: {description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description
