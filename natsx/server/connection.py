"""One client connection: the read loop, the writer, the ping timer and control operations.

Theory of operation
-------------------
The socket is a plain non-blocking stdlib socket; trio only tells us when it is readable
or writable. The read loop hands every read to the compiled ``Client`` core, which routes
PUB/HPUB frames by itself and gives back control events (CONNECT, SUB, UNSUB, PING ...)
that are handled here, in order. After each read the server flushes every connection the
batch touched: a direct non-blocking ``send`` from the reading task, so a reply usually
leaves in the same loop turn; whatever the kernel does not take is parked in
``_chunks`` for this connection's writer task, which waits for writability and enforces
the write deadline. ``Client.inflight`` mirrors the parked bytes, so a slow consumer is
detected on pending bytes exactly as the Go server does (``max_pending``).
"""
from __future__ import annotations

import errno
import json
import logging
import random
import socket
import time
from typing import TYPE_CHECKING

import trio

from natsx.protocol import events as ev
from natsx.server import tls as tlsmod
from natsx.server import trace
from natsx.server.authorization import authorize
from natsx.server.operator import AccountLimitReached, PendingLookup

if TYPE_CHECKING:
    from natsx.server.worker import Server

log = logging.getLogger("natsx")

MIN_READ = 512
MAX_READ = 65536 * 4
# Go's fast-producer stall (client.go stalledWait): a publisher whose messages pushed a
# receiver past 3/4 of max_pending waits this long after the batch, longer when the
# receiver is over the limit, so a fast producer is throttled instead of the slow
# consumer being cut off.
STALL_MIN = 0.002
STALL_MAX = 0.005
FIRST_PING_INTERVAL = 2.0   # Go: firstClientPingInterval

# Close reasons, as /connz reports them (server/client.go ClosedState.String()).
CLIENT_CLOSED = "Client Closed"
AUTH_TIMEOUT = "Authentication Timeout"
AUTH_VIOLATION = "Authentication Failure"
SLOW_PENDING = "Slow Consumer (Pending Bytes)"
SLOW_DEADLINE = "Slow Consumer (Write Deadline)"
STALE = "Stale Connection"
PROTOCOL_VIOLATION = "Protocol Violation"
BAD_PROTOCOL = "Bad Client Protocol Version"
MAX_CONNECTIONS = "Maximum Connections Exceeded"
SERVER_SHUTDOWN = "Server Shutdown"
WRITE_ERROR = "Write Error"
READ_ERROR = "Read Error"
MAX_SUBS = "Maximum Subscriptions Exceeded"
AUTH_EXPIRED = "Authentication Expired"
TLS_HANDSHAKE_ERROR = "TLS Handshake Error"


# The JSON types of Go's ClientOpts fields. A mismatch fails json.Unmarshal there, which
# closes the connection without -ERR; null leaves the default.
_CONNECT_BOOLS = frozenset(("echo", "verbose", "pedantic", "tls_required", "new_account",
                            "headers", "no_responders"))
_CONNECT_STRINGS = frozenset(("nkey", "jwt", "sig", "auth_token", "user", "pass", "name", "lang",
                              "version", "account", "remote_account", "proxy_sig"))


def _connect_types_ok(opts: dict) -> bool:
    for key, value in opts.items():
        if value is None:
            continue
        if key in _CONNECT_BOOLS and not isinstance(value, bool):
            return False
        if key in _CONNECT_STRINGS and not isinstance(value, str):
            return False
        if key == "protocol" and (isinstance(value, bool) or not isinstance(value, int)):
            return False
    return True


def _ping_interval(conn, opts) -> float:
    """The websocket block's ping_interval, when set, for WebSocket clients."""
    wo = getattr(opts, "websocket", None)
    if conn.ws is not None and wo is not None and wo.ping_interval > 0:
        return wo.ping_interval
    return opts.ping_interval


async def stall_for(target) -> bool:
    """Waits (briefly) for a receiver that is over 3/4 of its max_pending to drain.

    True when the receiver drained, closed, or at least wrote some of its backlog out
    meanwhile: a sender that paces itself to the receiver may go on waiting for it.
    """
    conn = target.conn
    if not isinstance(conn, ClientConnection) or conn.closed:
        return True
    before = target.pending_bytes
    limit = STALL_MAX if before >= target.max_pending else STALL_MIN
    if conn._drained is None:
        conn._drained = trio.Event()
    with trio.move_on_after(limit) as waited:
        await conn._drained.wait()
    return not waited.cancelled_caught or conn.closed or target.pending_bytes < before


class ClientConnection:
    """A client's socket and everything the server tracks about it."""

    def __init__(self, server: "Server", sock: socket.socket, cid: int, ws=None) -> None:
        self.server = server
        self.sock = sock
        # The WebSocket framing (natsx.server.websocket.Codec); None for a NATS client.
        self.ws = ws
        self.cid = cid
        self.core = server.new_client_core(cid)
        self.core.conn = self
        # Protocol tracing (natsx.server.trace) takes this client off the inline PUB path.
        self.core.trace = bool(server.options.trace)
        try:
            peer = sock.getpeername()
            self.ip, self.port = peer[0], peer[1]
        except OSError:
            self.ip, self.port = "", 0
        self.start = time.time()
        self.last_activity = self.start
        self.stop: float | None = None
        self.name = ""
        self.lang = ""
        self.version = ""
        self.protocol = 0
        self.user = ""
        self.account_name = "$G"
        self.connect_received = False
        self.first_pong_sent = False
        self.pings_out = 0
        self.rtt = 0.0
        self._ping_sent_at = 0.0
        self._rtt_start = 0.0
        self.nonce = ""
        self.connect_opts: dict = {}   # the CONNECT, kept to re-check it on a reload
        self.perms = None              # natsx.auth.permissions.PermissionSet, or None
        # Operator mode (natsx.server.operator): the user's claims, whether it runs on the
        # account's default permissions, its subscription limit (None: the server's), the
        # CONNECT waiting for an account fetch, and the JWT expiry timer.
        self.jwt_user = None
        self.jwt_default_perms = False
        self.max_subs: int | None = None
        self._pending_connect: tuple | None = None
        self._expiry: trio.CancelScope | None = None
        self.sub_seq = 0
        self.deferred_pongs = 0
        self.final_subs: list = []
        self.closed = False
        self.close_reason = ""
        self._chunks: list = []
        self._write_wakeup = trio.Event()
        self._drained: trio.Event | None = None
        self._connect_seen = trio.Event()
        self._cancel: trio.CancelScope | None = None
        self._read_size = MIN_READ * 8
        self._read_error: OSError | None = None   # met while joining TLS records
        self._last_client_activity = self.start
        # TLS (natsx.server.tls): set once the handshake is done; ``sock`` is then the
        # ssl.SSLSocket. /connz reports the version, the cipher and the peer certificates.
        self.tls = False
        self.tls_first = False
        self.tls_version = ""
        self.tls_cipher = ""
        self.tls_peer_certs: list = []

    # ------------------------------------------------------------------ life cycle

    async def run(self) -> None:
        server = self.server
        auth_required = server.auth_for(self).required
        try:
            with trio.CancelScope() as scope:
                self._cancel = scope
                if not await self._open():
                    return
                if auth_required:
                    # Go starts the auth timer after the TLS handshake.
                    self.core.auth_pending = True
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._pinger)
                    if auth_required:
                        nursery.start_soon(self._auth_timer)
                    await self._reader()
                    scope.cancel()
        except Exception:
            # One connection's failure must never take the worker and its other clients
            # down with it.
            log.exception("connection %d failed", self.cid)
            self.close(PROTOCOL_VIOLATION)
        finally:
            self._teardown()

    async def _open(self) -> bool:
        """INFO and the TLS handshake, in the order of Go's createClientEx: INFO in the clear
        then the handshake; with ``handshake_first`` the handshake then INFO (after a
        fallback delay without any byte from the client, INFO in the clear instead); with
        ``allow_non_tls`` the handshake only for a client whose first byte starts a TLS
        record. False when the connection is closed."""
        server = self.server
        ctx = server.tls_context if self.ws is None else None
        if ctx is None:
            self.queue(server.info_bytes(self))
            self.flush()
            return not self.closed
        o = server.options
        tls_first = o.tls_handshake_first
        if tls_first and o.tls_handshake_first_fallback > 0:
            if not await tlsmod.peek(self.sock, o.tls_handshake_first_fallback):
                tls_first = False
        if not tls_first:
            self.queue(server.info_bytes(self))
            self.flush()
            if self.closed:
                return False
        if not tls_first and o.allow_non_tls:
            first = await tlsmod.peek(self.sock, o.tls_timeout)
            if first[:1] != b"\x16":
                return True
        if server.tls_rate is not None and not server.tls_rate.allow(server):
            # Go: connection_rate_limit, refused in the clear before the handshake
            self.close(MAX_CONNECTIONS, tlsmod.THROTTLED_ERR)
            return False
        try:
            self.sock = tlsmod.wrap_server(ctx, self.sock)
            await tlsmod.handshake(self.sock, o.tls_timeout)
            if not tlsmod.pinned(self.sock, o.tls_pinned_certs):
                raise tlsmod.HandshakeError("peer certificate not pinned")
            await tlsmod.check_ocsp_peer(self.sock, ctx, o.tls_config)
        except (tlsmod.HandshakeError, OSError) as exc:
            # Go logs probes and timeouts at debug level, other failures as errors.
            level = logging.DEBUG if getattr(exc, "timeout", False) else logging.ERROR
            text = str(exc) if isinstance(exc, tlsmod.HandshakeError) else "EOF"
            log.log(level, "%s:%d - cid:%d - TLS handshake error: %s", self.ip, self.port,
                    self.cid, text)
            self.close(TLS_HANDSHAKE_ERROR)
            return False
        self.tls = True
        self.tls_first = tls_first
        self.tls_version, self.tls_cipher = tlsmod.connection_state(self.sock)
        self.tls_peer_certs = tlsmod.peer_certificates(self.sock)
        log.debug("%s:%d - cid:%d - TLS version %s, cipher suite %s", self.ip, self.port,
                  self.cid, self.tls_version, self.tls_cipher)
        if tls_first:
            self.queue(server.info_bytes(self, tls_first=True))
            self.flush()
        return not self.closed

    def close(self, reason: str, err: str | None = None) -> None:
        """Closes the connection, sending ``-ERR '<err>'`` first when given."""
        if self.closed:
            return
        self.closed = True
        self.core.closed = True
        self.close_reason = reason
        self.stop = time.time()
        if err:
            self.queue(b"-ERR '" + err.encode() + b"'\r\n")
        if self.ws is not None:
            self.ws.close(reason)
        if reason in (SLOW_PENDING, SLOW_DEADLINE):
            # Go drops a slow consumer's pending data; a partial write could also leave
            # half a frame on the wire.
            self._chunks.clear()
            self.core.inflight = 0
            self.core.take_output()
        else:
            # Best effort: push what is queued (the -ERR) before the socket goes away.
            data = self._pending_data()
            if data:
                try:
                    self.sock.send(data)
                except OSError:
                    pass
        if self._cancel is not None:
            self._cancel.cancel()

    def _teardown(self) -> None:
        if not self.closed:
            self.close(CLIENT_CLOSED)
        if self.core.trace:
            trace.closed(self)
        if self._expiry is not None:
            self._expiry.cancel()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.server.remove_connection(self)

    # ------------------------------------------------------------------ output

    def queue(self, data: bytes) -> None:
        self.core.queue(data)

    def _pending_data(self) -> bytes:
        parts = [bytes(c) for c in self._chunks]
        self._chunks.clear()
        self.core.inflight = 0
        out = self.core.take_output()
        if self.core.trace:
            trace.outbound(self, out)
        parts.append(out if self.ws is None else self.ws.frame(out))
        return b"".join(parts)

    def flush(self) -> None:
        """Sends what the core queued, without blocking; parks the rest for the writer."""
        core = self.core
        core.flush_pending = False
        if self.closed:
            return
        if core.slow:
            self.server.note_slow_consumer(self)
            self.close(SLOW_PENDING)
            return
        if core.out_len == 0 and (self.ws is None or not self.ws.pending):
            return
        data = core.take_output()
        if core.trace:
            trace.outbound(self, data)
        if self.ws is not None:
            data = self.ws.frame(data)
        if self._chunks:
            self._chunks.append(data)
            core.inflight += len(data)
            return
        try:
            n = self.sock.send(data)
        except tlsmod.WANT_IO:
            n = 0   # TLS: the writer retries with these same bytes, as OpenSSL requires
        except OSError:
            self.close(WRITE_ERROR)
            return
        if n < len(data):
            rest = memoryview(data)[n:]
            self._chunks.append(rest)
            core.inflight += len(rest)
            self._write_wakeup.set()

    async def _writer(self) -> None:
        while True:
            await self._write_wakeup.wait()
            self._write_wakeup = trio.Event()
            want_read = False
            sent = 0   # bytes this attempt got out (Go's "written")
            while self._chunks:
                chunk = self._chunks[0]
                # The options in force now: a reload may have changed the deadline.
                with trio.move_on_after(self.server.options.write_deadline) as timeout:
                    if want_read:
                        await trio.lowlevel.wait_readable(self.sock)   # TLS renegotiation
                    else:
                        await trio.lowlevel.wait_writable(self.sock)
                    want_read = False
                if self.closed or not self._chunks or self._chunks[0] is not chunk:
                    # close() took over the pending data while we waited.
                    return
                if timeout.cancelled_caught:
                    self.server.note_slow_consumer(self)
                    # Go's write_timeout policy: "retry" keeps a client that made progress
                    # (a slow consumer from then on); the default closes, as does no progress.
                    if sent and self.server.options.write_timeout == "retry":
                        sent = 0
                        continue
                    self.close(SLOW_DEADLINE)
                    return
                try:
                    n = self.sock.send(chunk)
                except tlsmod.ssl.SSLWantReadError:
                    want_read = True
                    continue
                except tlsmod.WANT_IO:
                    continue
                except OSError:
                    self.close(WRITE_ERROR)
                    return
                self.core.inflight -= n
                sent += n
                if self._drained is not None and self.core.pending_bytes * 4 <= self.core.max_pending * 3:
                    self._drained.set()
                    self._drained = None
                if n < len(chunk):
                    self._chunks[0] = memoryview(chunk)[n:]
                else:
                    self._chunks.pop(0)
            # Anything queued while we were blocked goes out in the same turn.
            if self.core.out_len:
                self.flush()

    # ------------------------------------------------------------------ input

    async def _reader(self) -> None:
        sock = self.sock
        core = self.core
        server = self.server
        handle = self._handle
        while True:
            try:
                if self._read_error is not None:
                    exc, self._read_error = self._read_error, None
                    raise exc
                data = sock.recv(self._read_size)
            except (BlockingIOError, tlsmod.ssl.SSLWantReadError):
                await trio.lowlevel.wait_readable(sock)
                continue
            except tlsmod.ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(sock)
                continue
            except tlsmod.ssl.SSLZeroReturnError:
                self.close(CLIENT_CLOSED)   # the client's close_notify
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                    log.debug("read error on cid %d: %s", self.cid, exc)
                # Go (closedStateForErr): only a clean EOF is "Client Closed"; a reset
                # (a client closing with unread data) is a read error.
                self.close(READ_ERROR)
                return
            if not data:
                self.close(CLIENT_CLOSED)
                return
            if self.tls:
                data = self._tls_records(data)
            n = len(data)
            if n == self._read_size and n < MAX_READ:
                self._read_size *= 2
            elif n < self._read_size // 4 and self._read_size > MIN_READ:
                self._read_size //= 2
            self._last_client_activity = trio.current_time()
            self.last_activity = time.time()
            mesh = server.mesh
            if mesh is not None and mesh.inbox.pending_bytes():
                mesh.poll()   # peers' interest that arrived first applies to this read
                if server.router.internal:
                    # So do the system messages it brought (a claims update answered on
                    # another worker): their handlers run before this read is routed.
                    server.after_batch()
            ws = self.ws
            if ws is not None:
                data = ws.decode(data, core.max_payload)
                if ws.pending:
                    self._touch()   # a pong or a close frame to send after this batch
            core.feed(data)
            while True:
                event = core.next_event()
                if event is None:
                    break
                handle(event)
                if self.closed:
                    break
                if core.trace:
                    # Traced: what each operation made the server send is traced after it.
                    server.after_batch()
                if self._pending_connect is not None:
                    # The account's JWT must be fetched first (URL resolver).
                    server.after_batch()
                    await self._finish_connect()
                    if self.closed:
                        break
            server.after_batch()
            if ws is not None and ws.done is not None and not self.closed:
                # A close frame ("Client Closed") or a framing error ("Read Error").
                if ws.error:
                    log.error("%s:%d - wid:%d - read error: %s", self.ip, self.port, self.cid,
                              ws.error)
                self.close(ws.done)
            if self.closed:
                return
            target = core.stall_target
            if target is not None:
                core.stall_target = None
                if target.conn is not self and not server.options.no_fast_producer_stall:
                    await stall_for(target)
            mesh = server.mesh
            if mesh is not None and not mesh.congested.is_set():
                # A peer worker's ring is backed up: stop reading publishers until it drains.
                await mesh.congested.wait()
            else:
                await trio.lowlevel.checkpoint()

    def _tls_records(self, data: bytes) -> bytes:
        """Joins to ``data`` the further TLS records already readable, up to a read's size.

        An SSL socket's recv returns one record at a time: a client that wrote two PUBs as
        two records would otherwise see their messages come back in two writes a scheduler
        pass apart, where Go, reading its socket in full, answers both in one. What ends the
        connection (close_notify, a reset) is raised by the next read.
        """
        parts = None
        total = len(data)
        sock = self.sock
        while total < self._read_size:
            try:
                more = sock.recv(self._read_size - total)
            except (BlockingIOError, tlsmod.ssl.SSLWantReadError, tlsmod.ssl.SSLWantWriteError):
                break
            except OSError as exc:   # SSLError is one
                self._read_error = exc
                break
            if not more:
                break
            if parts is None:
                parts = [data]
            parts.append(more)
            total += len(more)
        return data if parts is None else b"".join(parts)

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        if self.core.trace:
            trace.inbound(self, event)
        if kind == ev.PING:
            reply = b"PONG\r\n"
            if self.connect_received and not self.first_pong_sent:
                self.first_pong_sent = True
                if self.protocol >= 1:
                    # After the PONG, which clients read as the end of their handshake.
                    reply += self.server.info_bytes(self, connect_info=True)
            mesh = self.server.mesh
            # Across workers a PONG also promises that every worker knows this client's
            # subscriptions (see natsx.server.mesh, "Ordering").
            if mesh is None or mesh.pong_ready(self, reply):
                self.queue(reply)
                self._touch()
        elif kind == ev.PONG:
            self.pings_out = 0
            if self._ping_sent_at:
                self.rtt = time.monotonic() - self._ping_sent_at
                self._ping_sent_at = 0.0
        elif kind == ev.SUB:
            self.server.process_sub(self, event[1], event[2], event[3])
        elif kind == ev.UNSUB:
            if self.core.trace:
                trace.unsub(self, event[1], event[2])
            else:
                self.server.process_unsub(self, event[1], event[2])
        elif kind == ev.CONNECT:
            self._process_connect(event[1])
        elif kind == ev.CLOSE:
            if event[1] == "Authorization Violation":
                self.server.note_auth_error(self)
            self.close(event[2], event[1])
        elif kind == ev.ERR:
            log.info("client %d sent -ERR %s", self.cid, event[1].decode("utf-8", "replace"))
            self.close("Parse Error")
        elif kind == ev.PUB:  # only from a traced client: untraced ones are routed inline
            trace.publish(self, event)
        # +OK and INFO from a client are ignored, as in the Go server.

    def _touch(self) -> None:
        core = self.core
        if not core.flush_pending:
            core.flush_pending = True
            self.server.router.touched.append(core)

    # ------------------------------------------------------------------ CONNECT

    def _process_connect(self, arg: bytes) -> None:
        try:
            opts = json.loads(arg)
            if not isinstance(opts, dict) or not _connect_types_ok(opts):
                raise ValueError("CONNECT is not a valid ClientOpts object")
        except ValueError:
            self.close(PROTOCOL_VIOLATION)
            return
        opts = {k: v for k, v in opts.items() if v is not None}
        if self.ws is not None:
            opts = self.ws.apply_cookies(opts)
        core = self.core
        server = self.server
        if not self._connect_seen.is_set():
            # Go (processConnect): estimate the RTT from accept to CONNECT and start the
            # first, shortened ping timer.
            self.rtt = max(time.time() - self.start, 1e-6)
            self._connect_seen.set()
        core.verbose = bool(opts.get("verbose", True))
        core.pedantic = bool(opts.get("pedantic", True))
        core.echo = bool(opts.get("echo", True))
        headers = bool(opts.get("headers", False)) and not server.options.no_header_support
        core.headers = headers
        core.no_responders = bool(opts.get("no_responders", False))
        self.name = str(opts.get("name", "") or "")
        self.lang = str(opts.get("lang", "") or "")
        self.version = str(opts.get("version", "") or "")
        proto = opts.get("protocol", 0)
        self.protocol = proto
        self.connect_received = True
        # Checked in the order of Go's processConnect: credentials, account, protocol, headers.
        self.connect_opts = opts
        try:
            ok = authorize(server, self, opts)
        except PendingLookup as pending:
            self._pending_connect = (pending.name, arg)
            return
        except AccountLimitReached:
            return      # Go: the account limit's own -ERR, already sent
        if not ok:
            server.note_auth_error(self)
            self.close(AUTH_VIOLATION, "Authorization Violation")
            return
        core.auth_pending = False
        if server.system is not None:
            # Go sends the connect advisory once authenticated (isClientAuthorized).
            server.system.client_connected(self)
        if opts.get("account") or opts.get("new_account"):
            server.note_auth_error(self)
            self.close(AUTH_VIOLATION, "Authorization Violation")
            return
        if proto not in (0, 1):
            self.close(BAD_PROTOCOL, "invalid client protocol")
            return
        if core.no_responders and not headers:
            self.close(PROTOCOL_VIOLATION, "no responders requires headers support")
            return
        if core.verbose:
            self.queue(b"+OK\r\n")
            self._touch()

    async def _finish_connect(self) -> None:
        name, arg = self._pending_connect
        self._pending_connect = None
        await self.server.operator.fetch_async(name)
        if not self.closed:
            self._process_connect(arg)

    def set_expiry(self, delay: float) -> None:
        """Closes the connection after ``delay`` seconds: its user JWT expires (Go:
        setExpirationTimer, authExpired)."""
        if self._expiry is not None:
            self._expiry.cancel()
        scope = self._expiry = trio.CancelScope()

        async def expire() -> None:
            with scope:
                await trio.sleep(delay)
                if not self.closed:
                    log.debug("%s:%d - cid:%d - User Authentication Expired", self.ip,
                              self.port, self.cid)
                    self.close(AUTH_EXPIRED, "User Authentication Expired")

        self.server._nursery.start_soon(expire)

    # ------------------------------------------------------------------ timers

    async def _auth_timer(self) -> None:
        await trio.sleep(self.server.auth_for(self).timeout)
        if not self.connect_received or self.core.auth_pending:
            self.close(AUTH_TIMEOUT, "Authentication Timeout")

    async def _pinger(self) -> None:
        opts = self.server.options
        interval = _ping_interval(self, opts)
        if interval <= 0:
            return
        # Go (setFirstPingTimer): the first PING goes out early, 2s after CONNECT plus up
        # to 20%, so the RTT gets measured; the following ones every ping_interval.
        await self._connect_seen.wait()
        delay = min(interval, FIRST_PING_INTERVAL)
        delay += random.random() * delay / 5
        while True:
            await trio.sleep(delay)
            # Read the options each time: a reload changes them for live connections too
            # (Go re-reads them whenever it sets the ping timer).
            opts = self.server.options
            interval = delay = _ping_interval(self, opts)
            now = time.monotonic()
            need_rtt = self.rtt == 0 or now - self._rtt_start > 300
            # Skip the ping when the client spoke recently (Go: processPingTimer).
            if trio.current_time() - self._last_client_activity < interval and not need_rtt:
                continue
            if self.pings_out + 1 > opts.max_pings_out:
                self.close(STALE, "Stale Connection")
                return
            self.pings_out += 1
            self._ping_sent_at = self._rtt_start = now
            self.queue(b"PING\r\n")
            self.flush()
