"""The measured socket loops, one per client role, and the probe that precedes them.

Theory of operation
-------------------
Each loop owns one connection's socket and runs in its own thread. Python executes once
per socket call: a publisher builds about 64 KiB of frames with ``PubBuilder.build`` and
writes them with one ``sendall``; a subscriber reads up to 256 KiB and hands the read to
``FrameCounter.feed``. Both calls release the GIL while they work, and so do the socket
calls, so the threads of one benchmark process overlap.

Loops stop on their own bound (count sent, deadline) or when the coordinator sets their
``stop`` event; a subscriber cannot know when it is done, so the coordinator watches its
counter instead. Every loop answers server PINGs and fails on ``-ERR`` or a closed
connection rather than reporting a partial count as a rate.

Before a measurement, ``probe`` proves that interest has reached the publishers: on a
server whose subscriptions propagate asynchronously (natsx workers, a cluster) a PONG
after SUB does not mean that a publisher on another worker already sees the subscriber.
Each round every sender publishes one tagged message to every receiver's subject; the
probe ends after the first round that arrived completely. NATS keeps the order of one
publisher's messages to one subscriber, so a complete round also means no earlier probe
message is still on its way.
"""
from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
import time
from typing import Callable

import attrs

from natsx.bench.conn import BenchError, Connection
from natsx.bench.results import Sample
from natsx.protocol.client_parser import Err, HMsg, Msg

BATCH_BYTES = 64 * 1024
RECV_BYTES = 256 * 1024
#: How often a loop that would otherwise block looks at its stop event.
TICK = 0.05
UNBOUNDED = 1 << 62


def now_ns() -> int:
    return time.perf_counter_ns()


def _set_recv_timeout(sock: socket.socket, seconds: float) -> None:
    # A kernel receive timeout (SO_RCVTIMEO) on a blocking socket costs no extra system
    # call per read, unlike socket.settimeout(), which polls before every recv. TLS
    # sockets need Python's own timeout to keep their record state consistent.
    if isinstance(sock, ssl.SSLSocket):
        sock.settimeout(seconds)
        return
    sock.settimeout(None)
    sec = int(seconds)
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, int((seconds - sec) * 1e6))
    )


def _recv_into(sock: socket.socket, mv: memoryview) -> int:
    """Bytes read, or -1 when the receive timeout expired first."""
    try:
        n = sock.recv_into(mv)
    except (socket.timeout, BlockingIOError, ssl.SSLWantReadError):
        return -1
    except OSError as exc:
        raise BenchError(f"connection lost: {exc}") from None
    if n == 0:
        raise BenchError("server closed the connection")
    return n


def _check(fc, role: str) -> None:
    if fc.err_count:
        raise BenchError(f"{role}: server error: {fc.last_err}")


def _send_output(sock: socket.socket, fc) -> None:
    if fc.pending_output:
        try:
            sock.sendall(fc.take_output())
        except OSError as exc:
            raise BenchError(f"connection lost while sending: {exc}") from None


def flush_counted(conn: Connection, fc, timeout: float, role: str) -> None:
    """PING and read (through ``fc``) until its PONG: the server has everything we sent."""
    sock = conn.sock
    want = fc.pongs + 1
    sock.sendall(b"PING\r\n")
    buf = bytearray(RECV_BYTES)
    mv = memoryview(buf)
    _set_recv_timeout(sock, TICK)
    deadline = time.monotonic() + timeout
    while fc.pongs < want:
        if time.monotonic() > deadline:
            raise BenchError(f"{role}: no PONG within {timeout:g} s")
        n = _recv_into(sock, mv)
        if n > 0:
            fc.feed(mv, n)
            _send_output(sock, fc)
            _check(fc, role)


# -- the role loops -----------------------------------------------------------------------


@attrs.define(eq=False)
class Client:
    """What a loop reports, readable by the coordinator while the loop runs."""

    conn: Connection
    fc: object
    role: str
    sent: int = 0
    first: int = 0
    last: int = 0
    start: int = 0
    end: int = 0
    done: bool = False
    error: BaseException | None = None
    stop: threading.Event = attrs.field(factory=threading.Event)


def publish_loop(
    c: Client, builder, target: int, deadline_ns: int, timeout: float
) -> None:
    """Send ``target`` messages (or until the deadline), then flush."""
    sock = c.conn.sock
    fc = c.fc
    per_batch = max(1, BATCH_BYTES // builder.frame_size)
    buf = bytearray(65536)
    mv = memoryview(buf)
    sock.settimeout(None)
    next_poll = 0
    c.start = now_ns()
    sent = 0
    while sent < target and not c.stop.is_set():
        k = min(per_batch, target - sent)
        try:
            sock.sendall(builder.build(k))
        except OSError as exc:
            raise BenchError(f"{c.role}: connection lost: {exc}") from None
        sent += k
        c.sent = sent
        t = now_ns()
        if t >= deadline_ns:
            break
        if t >= next_poll:
            # A publisher reads nothing but PING and -ERR; look for them now and then.
            next_poll = t + 50_000_000
            while select.select([sock], [], [], 0)[0]:
                n = sock.recv_into(mv)
                if n <= 0:
                    raise BenchError(f"{c.role}: server closed the connection")
                fc.feed(mv, n)
                _send_output(sock, fc)
                _check(fc, c.role)
    flush_counted(c.conn, fc, timeout, c.role)
    c.end = now_ns()


def receive_loop(c: Client) -> None:
    """Count every frame that arrives until told to stop."""
    sock = c.conn.sock
    fc = c.fc
    buf = bytearray(RECV_BYTES)
    mv = memoryview(buf)
    _set_recv_timeout(sock, TICK)
    c.start = now_ns()
    while not c.stop.is_set():
        n = _recv_into(sock, mv)
        if n < 0:
            continue
        if fc.feed(mv, n):
            t = now_ns()
            if not c.first:
                c.first = t
            c.last = t
        _send_output(sock, fc)
        _check(fc, c.role)
    c.end = now_ns()


def request_loop(
    c: Client, builder, target: int, deadline_ns: int, window: int, timeout: float
) -> None:
    """Keep up to ``window`` requests outstanding until ``target`` have been answered.

    A reply is any message on the requester's inbox, including a status such as 503 (no
    responders); the coordinator checks the counts afterwards. Stops sending at the
    deadline and then waits for what is outstanding.
    """
    sock = c.conn.sock
    fc = c.fc
    buf = bytearray(RECV_BYTES)
    mv = memoryview(buf)
    _set_recv_timeout(sock, TICK)
    stall_ns = int(timeout * 1e9)
    outstanding = 0
    sent = 0
    c.start = last_progress = now_ns()
    while True:
        t = now_ns()
        if sent < target and (t >= deadline_ns or c.stop.is_set()):
            target = sent
        if outstanding < window and sent < target:
            k = min(window - outstanding, target - sent)
            try:
                sock.sendall(builder.build(k))
            except OSError as exc:
                raise BenchError(f"{c.role}: connection lost: {exc}") from None
            sent += k
            outstanding += k
            c.sent = sent
        if outstanding == 0:
            break
        n = _recv_into(sock, mv)
        if n < 0:
            if now_ns() - last_progress > stall_ns:
                raise BenchError(
                    f"{c.role}: {outstanding} of {sent} requests unanswered after {timeout:g} s"
                )
            continue
        before = fc.msgs + fc.statuses
        fc.feed(mv, n)
        answered = fc.msgs + fc.statuses - before
        if answered:
            outstanding -= answered
            last_progress = now_ns()
        _send_output(sock, fc)
        _check(fc, c.role)
    c.end = now_ns()


def fetch_loop(
    c: Client, next_subject: bytes, inbox: bytes, batch: int, deadline_ns: int, timeout: float
) -> None:
    """Pull-consumer fetches of ``batch`` messages, one request outstanding at a time.

    A fetch ends when its batch has arrived or a status (404/408/409) ends it early; the
    coordinator stops the loop once every stored message has been consumed.
    """
    sock = c.conn.sock
    fc = c.fc
    buf = bytearray(RECV_BYTES)
    mv = memoryview(buf)
    _set_recv_timeout(sock, TICK)
    expires = max(int(timeout * 1e9 / 4), 100_000_000)
    body = b'{"batch":%d,"expires":%d}' % (batch, expires)
    c.start = now_ns()
    seq = 0
    while not c.stop.is_set() and now_ns() < deadline_ns:
        seq += 1
        frame = b"PUB %s %s.%d %d\r\n%s\r\n" % (next_subject, inbox, seq, len(body), body)
        try:
            sock.sendall(frame)
        except OSError as exc:
            raise BenchError(f"{c.role}: connection lost: {exc}") from None
        want = fc.msgs + batch
        statuses = fc.statuses
        last_progress = now_ns()
        while fc.msgs < want and fc.statuses == statuses and not c.stop.is_set():
            n = _recv_into(sock, mv)
            if n < 0:
                if now_ns() - last_progress > timeout * 2e9:
                    raise BenchError(f"{c.role}: fetch got no reply in {2 * timeout:g} s")
                continue
            if fc.feed(mv, n):
                t = now_ns()
                if not c.first:
                    c.first = t
                c.last = t
                last_progress = t
            _send_output(sock, fc)
            _check(fc, c.role)
        if fc.statuses != statuses and fc.last_status not in (404, 408, 409):
            raise BenchError(f"{c.role}: fetch ended with status {fc.last_status}")
    c.end = now_ns()


# -- threads ------------------------------------------------------------------------------


def start(c: Client, fn: Callable, *args) -> threading.Thread:
    """Run ``fn(c, *args)`` in a daemon thread that records its error in ``c.error``."""

    def run() -> None:
        try:
            fn(c, *args)
        except BaseException as exc:  # reported by the coordinator, never swallowed
            c.error = exc
        finally:
            c.done = True

    th = threading.Thread(target=run, name=f"natsx-bench-{c.role}", daemon=True)
    th.start()
    return th


def raise_first_error(clients: list[Client]) -> None:
    for c in clients:
        if c.error is not None:
            if isinstance(c.error, BenchError):
                raise c.error
            raise BenchError(f"{c.role}: {type(c.error).__name__}: {c.error}") from c.error


# -- interest probe -----------------------------------------------------------------------


def _drain(receivers: list[Connection], wait: float) -> list[tuple[int, Msg | HMsg]]:
    """Messages that arrive on any receiver within ``wait`` seconds (after the backlogs)."""
    got: list[tuple[int, Msg | HMsg]] = []
    for j, r in enumerate(receivers):
        while r.backlog:
            ev = r.backlog.pop(0)
            if isinstance(ev, (Msg, HMsg)):
                got.append((j, ev))
            elif isinstance(ev, Err):
                raise BenchError(f"server error: {ev.text}")
    if got:
        return got
    socks = {r.sock: j for j, r in enumerate(receivers)}
    ready, _, _ = select.select(list(socks), [], [], wait)
    for s in ready:
        j = socks[s]
        for ev in receivers[j]._read(time.monotonic() + 1.0):
            if isinstance(ev, (Msg, HMsg)):
                got.append((j, ev))
            elif isinstance(ev, Err):
                raise BenchError(f"server error: {ev.text}")
    return got


def probe(
    senders: list[Connection],
    receivers: list[Connection],
    subjects: list[str],
    *,
    union: bool,
    timeout: float,
) -> int:
    """Wait until every sender's messages reach the receivers; returns the rounds used.

    ``subjects[j]`` is what sender messages must be published to for receiver ``j``
    (receivers with the same subject get one publish). With ``union`` (a queue group)
    each message needs to reach one receiver; otherwise every receiver.

    Raises:
        BenchError: interest did not arrive within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    targets = sorted(set(subjects))
    all_senders = set(range(len(senders)))
    rnd = 0
    while True:
        rnd += 1
        tag = f"natsx-bench-probe.{rnd}."
        for i, s in enumerate(senders):
            for subj in targets:
                s.publish(subj, f"{tag}{i}".encode())
        for s in senders:
            s.flush()
        seen = [set() for _ in receivers]
        round_end = min(time.monotonic() + 0.05 * (2 ** min(rnd, 4)), deadline)
        while True:
            if union:
                done = set().union(*seen) >= all_senders
            else:
                done = all(s >= all_senders for s in seen)
            if done or time.monotonic() >= round_end:
                break
            for j, ev in _drain(receivers, 0.01):
                text = ev.payload.decode("latin-1")
                if text.startswith(tag):
                    seen[j].add(int(text[len(tag):]))
        if done:
            break
        if time.monotonic() >= deadline:
            if union:
                missing = f"{len(all_senders - set().union(*seen))} of {len(senders)} senders reached no member"
            else:
                missing = "; ".join(
                    f"receiver {j} heard {len(s)} of {len(senders)} senders"
                    for j, s in enumerate(seen) if s != all_senders
                )
            raise BenchError(
                f"subscriptions did not reach the publishers within {timeout:g} s "
                f"({rnd} probe rounds; last round: {missing})"
            )
    for r in receivers:
        r.flush()
        r.backlog.clear()
    return rnd


def probe_requests(conn: Connection, subject: str, payload: bytes, timeout: float) -> Msg | HMsg:
    """Repeat a request until it is answered (JetStream and KV paths); returns the reply.

    A lost reply (interest not propagated yet) and "no responders" (a service not up
    yet) are both retried, with growing waits, until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    wait = 0.1
    while True:
        began = time.monotonic()
        try:
            return conn.request(subject, payload, timeout=wait)
        except BenchError as exc:
            if time.monotonic() + wait > deadline:
                raise BenchError(f"no reply to {subject} within {timeout:g} s: {exc}") from None
            # "No responders" comes back at once; do not turn the retry into a flood.
            time.sleep(max(0.0, min(wait, deadline - time.monotonic()) - (time.monotonic() - began)))
            wait = min(wait * 2, 1.0)


def sub_sample(c: Client) -> Sample:
    """The Sample of a receiving client: its messages between the first and last arrival."""
    fc = c.fc
    return Sample(msgs=fc.msgs, nbytes=fc.nbytes, start=c.first or c.start, end=c.last or c.start)
