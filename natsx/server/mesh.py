"""The inter-worker mesh: interest propagation and message forwarding over the rings.

Theory of operation
-------------------
Workers are peers in a full mesh of SPSC rings, and the protocol between them mirrors NATS
routes. Every local subscription is announced to every other worker (``SUB`` records carry
account, subject, queue and, for queue groups, the number of local members as weight), so
each worker's sublists also hold one "remote" subscription per (peer, account, subject,
queue) whose client is that peer's ``Client`` with ``peer=True``. The compiled core sends a
matching message once to each peer with interest, naming the queue groups the peer must
serve, and the peer fans it out to its own subscribers (``Client.drain_peer``).

Ordering: a flush (PING) is answered only after every live peer has acknowledged the
client's latest SUB or UNSUB announcement, so "subscribe, flush, then publish from any
connection" never loses a message, as in one process. Announcements are numbered; a peer
acknowledges the highest number it applied after each batch.

nats-py (2.15) writes PING straight to the socket but SUB through its flusher task, so the
SUB often arrives just after the PING. In one process it is applied long before another
client can react to the PONG; across workers its announcement races the publish. Two
things narrow that race (they cannot close it: the SUB may come after the PONG left):
every PONG waits for one round trip through the peers, and a SUB or UNSUB read meanwhile
raises the number it waits for; and a reader applies the records already in its rings
before it routes a read, so interest that reached the worker first counts first. The Go
server loses first messages to the same client order (docs/architecture.md has the
capture and the counts): it is the client's, not something a server can close.

Settling: in one process a PING reaches the server after everything other clients wrote
before it was sent has been read, for every client's read loop runs on its own. A worker's
clients share one trio loop, so data already in a socket may still wait for its reader's
turn. Neither a round (the "ack?" a PING starts) nor an acknowledgement is therefore sent
from the task that decides it: the settle task sends them after two passes of the
scheduler (the first polls the sockets, the second runs every reader it woke), so what
clients wrote before is read and routed first and sits in the ring ahead of the
acknowledgement. That is what makes "publish, flush; then flush and drain on another
connection" deliver every message across workers (nats-py writes its PING ahead of the
buffered PUBs, so the publisher's own PONG does not cover them).

Liveness: the supervisor keeps a small table in shared memory (alive flag, generation and
heartbeat per worker). When a peer dies, its interest is dropped here and nothing more is
forwarded to it; a restarted worker says HELLO and every peer re-announces its interest.
A full ring is back-pressure: records wait in the peer link's overflow, in order, and past
``OVERFLOW_LIMIT`` bytes the workers stop reading from publishers until it drains. A
consumer frees ring space without signalling the producer, so while any overflow waits the
producer retries writing it every ``OVERFLOW_RETRY`` seconds (``retry_overflow``).
"""
from __future__ import annotations

import logging
import mmap
import struct
import threading
from collections import deque

import trio

from natsx._speedups import load
from natsx.mesh import RecordKind, RingSet
from natsx.server.connection import stall_for

log = logging.getLogger("natsx")

_core = load("core")
_sublist = load("sublist")

OVERFLOW_LIMIT = 64 * 1024 * 1024
OVERFLOW_RETRY = 0.001
DRAIN_BATCH = 512
# A drain also ends once this many deliveries for the server's own subscriptions wait
# (JetStream publishes captured by a stream this worker runs): their handlers run after the
# drain, and a stream commits once per batch, so a window of publishes arriving at once is
# committed in several proposals whose syncs and acknowledgements overlap the rest of the
# work, not in one at its end. Other deliveries keep the full batch.
DRAIN_INTERNAL = 64
# How long a link may go on pacing itself to a receiver that falls behind (see
# PeerLink.pushed) before it pushes on: a slow but reading client must not hold every
# other receiver of the peer's messages for longer.
PACE_LIMIT = 1.0
_SLOT = 128
_SLOT_FMT = struct.Struct("<IIQq")   # alive, generation, heartbeat, open client connections
_ALIVE_GEN = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_OFF_BEAT = 8
_OFF_CONNS = 16
# JetStream bytes a worker holds for the streams it runs (natsx.jetstream.serverlimits),
# each an aligned int64 written by that worker alone: what its streams' ``max_bytes``
# reserve, what they store, and what its accounts' limits reserve, per storage type; and the
# atomic batches its streams have open (natsx.jetstream.batching).
JS_FIELDS = {"reserved_memory": 24, "reserved_file": 32, "used_memory": 40, "used_file": 48,
             "account_memory": 56, "account_file": 64, "batches": 80}
# TLS handshakes a worker started in the current second (natsx.server.tls_rate), one word.
_OFF_TLS_RATE = 72
_HELLO = b"hello"
_ACK = b"ack"
_fence_lock = threading.Lock()


def _fence() -> None:
    # A full barrier between our store and the loads that follow it: a lock round trip
    # (its atomic read-modify-write is one on x86), as in natsx._speedups.ring_py.
    _fence_lock.acquire()
    _fence_lock.release()


class PeerTable:
    """Per-worker liveness and connection counts in shared memory.

    One 128-byte slot per worker: alive flag and generation (written by the supervisor),
    heartbeat, the number of client connections the worker holds and its JetStream bytes
    (``JS_FIELDS``) and its TLS handshakes of the current second (natsx.server.tls_rate),
    each written by that worker alone; after the slots, the raft process's
    heartbeat. Each field is written with one aligned store, so a reader never sees a
    torn value. The connection counts make ``max_connections`` a limit on the server, as
    in Go, rather than on each worker (``reserve_connection``); the JetStream bytes do the
    same for ``max_memory_store``/``max_file_store`` (``reserve_js``).
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        # One slot per worker, then the raft process's heartbeat counter.
        self._raft_off = _SLOT * workers
        self._mem = mmap.mmap(-1, max(self._raft_off + 8, mmap.PAGESIZE))

    def read(self, i: int) -> tuple[int, int, int]:
        alive, gen, beat, _ = _SLOT_FMT.unpack_from(self._mem, i * _SLOT)
        return alive, gen, beat

    def set_alive(self, i: int, alive: bool, generation: int) -> None:
        _ALIVE_GEN.pack_into(self._mem, i * _SLOT, int(alive), generation)
        if not alive:
            # A dead worker's connections died with it, and its JetStream bytes are
            # published again by its next incarnation as it recovers its accounts.
            _I64.pack_into(self._mem, i * _SLOT + _OFF_CONNS, 0)
            for off in JS_FIELDS.values():
                _I64.pack_into(self._mem, i * _SLOT + off, 0)

    def beat(self, i: int) -> None:
        off = i * _SLOT + _OFF_BEAT
        (beat,) = _U64.unpack_from(self._mem, off)
        _U64.pack_into(self._mem, off, beat + 1)

    def raft_beat(self) -> None:
        """The raft process's heartbeat (bumped from its loop, read by the supervisor)."""
        (beat,) = _U64.unpack_from(self._mem, self._raft_off)
        _U64.pack_into(self._mem, self._raft_off, beat + 1)

    def raft_heartbeat(self) -> int:
        return _U64.unpack_from(self._mem, self._raft_off)[0]

    # ------------------------------------------------------------------ JetStream bytes

    def set_js(self, i: int, field: str, value: int) -> None:
        """Publishes worker ``i``'s JetStream ``field`` (only worker ``i`` calls this)."""
        _I64.pack_into(self._mem, i * _SLOT + JS_FIELDS[field], value)

    def js(self, i: int, field: str) -> int:
        return _I64.unpack_from(self._mem, i * _SLOT + JS_FIELDS[field])[0]

    def js_total(self, field: str) -> int:
        off = JS_FIELDS[field]
        return sum(_I64.unpack_from(self._mem, i * _SLOT + off)[0] for i in range(self.workers))

    def reserve_js(self, i: int, field: str, held: int, add: int, limit: int) -> bool:
        """Worker ``i``, whose own ``field`` is ``held`` bytes, asks for ``add`` more under
        the server's ``limit``: publish, fence, sum, as ``reserve_connection`` does. On
        success the raised value stays published until the worker publishes its real
        figure (which then includes what it reserved)."""
        self.set_js(i, field, held + add)
        _fence()
        total = self.js_total(field)
        if total - add > limit or add > limit - (total - add):
            self.set_js(i, field, held)
            return False
        return True

    # ------------------------------------------------------------------ TLS handshake rate

    def tls_rate(self, i: int) -> int:
        """Worker ``i``'s word for ``connection_rate_limit`` (natsx.server.tls_rate)."""
        return _I64.unpack_from(self._mem, i * _SLOT + _OFF_TLS_RATE)[0]

    def set_tls_rate(self, i: int, word: int) -> None:
        """Publishes worker ``i``'s word (only worker ``i`` calls this)."""
        _I64.pack_into(self._mem, i * _SLOT + _OFF_TLS_RATE, word)

    # ------------------------------------------------------------------ connections

    def connections(self, i: int) -> int:
        return _I64.unpack_from(self._mem, i * _SLOT + _OFF_CONNS)[0]

    def total_connections(self) -> int:
        return sum(_I64.unpack_from(self._mem, i * _SLOT + _OFF_CONNS)[0]
                   for i in range(self.workers))

    def set_connections(self, i: int, n: int) -> None:
        """Publishes worker ``i``'s count (only worker ``i`` calls this)."""
        _I64.pack_into(self._mem, i * _SLOT + _OFF_CONNS, n)

    def reserve_connection(self, i: int, held: int, limit: int) -> bool:
        """Worker ``i``, holding ``held`` connections, asks for one more under ``limit``.

        The worker publishes ``held + 1`` first, then (after a full fence) sums every
        slot; over the limit, it takes the reservation back. Two workers racing for the
        last place each see at least the other's reservation (store, fence, load on both
        sides), so the sum never passes the limit; at worst both refuse, where Go's lock
        would have let one in.
        """
        if limit < 0:
            return False
        self.set_connections(i, held + 1)
        _fence()
        if self.total_connections() > limit:
            self.set_connections(i, held)
            return False
        return True

    def excess_share(self, i: int, limit: int) -> int:
        """How many of worker ``i``'s connections to close so that the server holds at
        most ``limit`` (a reload lowered it): the excess is taken from the lowest worker
        indexes first. Each worker keeps at most ``limit`` minus what the workers above
        it hold now, and those only go down, so the total ends within the limit whatever
        order the workers apply the reload in."""
        own = self.connections(i)
        above = sum(self.connections(j) for j in range(i + 1, self.workers))
        keep = max(0, min(own, max(limit, 0) - above))
        return own - keep


class PeerLink:
    """This worker's view of one peer: the ring to it and its remote subscriptions here."""

    def __init__(self, mesh: "Mesh", index: int) -> None:
        self.mesh = mesh
        self.index = index
        core = _core.Client(-(index + 1), mesh.server.router, None)
        core.peer = True
        core.ring = mesh.ringset.rings_to(mesh.index, index)
        core.conn = self
        self.core = core
        self.inbound = mesh.ringset.rings_to(index, mesh.index)
        self.remote: dict[tuple, object] = {}   # (account, subject, queue) -> Subscription
        self.generation = 0
        self.acked = 0
        self.alive = True
        # Deliveries from this peer pace themselves to a local receiver that fell behind
        # while it keeps draining (a burst held in the ring must not make a reading client
        # a slow consumer). One that makes no progress in a stall, or keeps the link paced
        # for PACE_LIMIT, is ``pushed``: messages go on to it as Go's producers go on after
        # their stall, and max_pending closes it; the link still paces for the others.
        self.pushed = None
        self.paced = 0.0

    def flush(self) -> None:
        """Called once per batch when records were written to this peer."""
        self.core.flush_pending = False
        self.mesh.notify.add(self.index)

    def send(self, kind: int, account: bytes, subject: bytes, reply: bytes = b"",
             payload: bytes = b"", aux: int = 0) -> None:
        core = self.core
        record = (kind, aux, account, subject, reply, b"", payload)
        if core.overflow or not core.ring.try_write(kind, account, subject, reply, b"", payload,
                                                    aux=aux):
            core.overflow.append(record)
            core.overflow_bytes += len(subject) + len(payload) + 64
            if not core._congested:
                core._congested = True
                self.mesh.server.router.congested.append(core)
            return
        self.mesh.notify.add(self.index)

    def write_overflow(self) -> bool:
        """Moves waiting records into the ring; True when none are left."""
        core = self.core
        if not core.overflow:
            return True
        n = core.ring.write_batch(core.overflow)
        if n:
            del core.overflow[:n]
            self.mesh.notify.add(self.index)
            core.overflow_bytes = sum(len(r[3]) + len(r[4]) + len(r[5]) + len(r[6]) + 64
                                      for r in core.overflow)
        if not core.overflow:
            core.overflow_bytes = 0
            core._congested = False
            return True
        return False

    def drop_interest(self) -> None:
        subs = list(self.remote.values())
        self.remote.clear()
        by_account: dict = {}
        for sub in subs:
            sub.closed = True
            # A remote subscription's sid is its account name (it has no client sid).
            by_account.setdefault(sub.sid, []).append(sub)
        for acc_name, group in by_account.items():
            sl = self.mesh.server.router.sublists.get(acc_name)
            if sl is not None:
                sl.remove_batch(group)
        self.core.overflow.clear()
        self.core.overflow_bytes = 0
        self.core._congested = False


class Mesh:
    """The worker's end of the mesh."""

    def __init__(self, server, ringset: RingSet, table: PeerTable, index: int) -> None:
        self.server = server
        self.ringset = ringset
        self.table = table
        self.index = index
        self.inbox = ringset.inbox(index)
        self.outbox = ringset.outbox(index)
        self.notify: set[int] = set()
        self.links: dict[int, PeerLink] = {}
        for j in range(ringset.workers):
            if j != index:
                self.links[j] = PeerLink(self, j)
        # Local interest: (account, subject, queue) -> number of local subscriptions.
        self.local: dict[tuple, int] = {}
        self.seq = 0
        self.deferred: deque = deque()   # (needed seq, conn) PONGs waiting for acks
        self._received: dict[int, int] = {}   # peer -> highest announcement seq applied
        self.congested = trio.Event()
        self.congested.set()   # set = not congested
        self._overflowing = trio.Event()   # set = records wait in some peer's overflow
        self._settle = trio.Event()   # set = rounds to start or acknowledgements to send

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        for link in self.links.values():
            link.inbound.discard()
            alive, gen, _ = self.table.read(link.index)
            link.alive = bool(alive)
            link.generation = gen
            link.acked = 0
            link.send(RecordKind.CONTROL, b"", _HELLO)
        self._notify()

    # ------------------------------------------------------------------ local interest

    def sub_added(self, account: bytes, sub) -> int:
        key = (account, sub.subject, sub.queue)
        n = self.local.get(key, 0) + 1
        self.local[key] = n
        if n == 1 or sub.queue is not None:
            self._announce(RecordKind.SUB, key, n)
        return self.seq

    def sub_removed(self, account: bytes, sub) -> int:
        key = (account, sub.subject, sub.queue)
        n = self.local.get(key, 0) - 1
        if n > 0:
            self.local[key] = n
            if sub.queue is not None:
                self._announce(RecordKind.SUB, key, n)
        else:
            self.local.pop(key, None)
            self._announce(RecordKind.UNSUB, key, 0)
        return self.seq

    def _announce(self, kind: int, key: tuple, weight: int) -> None:
        self.seq += 1
        account, subject, queue = key
        seq = b"%d" % self.seq
        for link in self.links.values():
            if link.alive:
                link.send(kind, account, subject, queue or b"", seq, aux=weight)

    # ------------------------------------------------------------------ flush barrier

    def pong_ready(self, conn, reply: bytes) -> bool:
        """True when the PONG (``reply``) for ``conn`` may go now; otherwise it is queued
        until every live peer acknowledged a round trip started here."""
        if any(link.alive for link in self.links.values()):
            # The round starts once the worker settled (``_settle_loop``): None until then.
            needed = None
            self._settle.set()
        else:
            if conn.deferred_pongs:
                self._release_pongs()
            if not conn.deferred_pongs:
                return True
            # No peer to wait for, but this client's earlier PONGs still wait: keep order.
            needed = self.seq
        conn.deferred_pongs += 1
        self.deferred.append([needed, conn, reply, False])
        return False

    def _start_round(self) -> None:
        """Sends one "ack?" to every live peer for the PONGs waiting to start theirs."""
        waiting = [entry for entry in self.deferred if entry[0] is None]
        if not waiting:
            return
        self.seq += 1
        seq = b"%d" % self.seq
        for link in self.links.values():
            if link.alive:
                link.send(RecordKind.CONTROL, b"", _ACK + b"?", payload=seq)
        for entry in waiting:
            entry[0] = self.seq

    def _send_acks(self) -> None:
        received, self._received = self._received, {}
        for index, seq in received.items():
            link = self.links.get(index)
            if link is not None and link.alive:
                link.send(RecordKind.CONTROL, b"", _ACK, payload=b"%d" % seq)

    async def settle_loop(self) -> None:
        """Starts flush rounds and sends acknowledgements once the worker settled."""
        while True:
            await self._settle.wait()
            self._settle = trio.Event()
            # Two passes of the scheduler: the first polls the sockets, the second runs
            # every reader that poll woke, so what they had is routed ahead of this.
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            self._start_round()
            self._send_acks()
            self._release_pongs()
            self._notify()

    def _min_acked(self) -> int:
        acked = [l.acked for l in self.links.values() if l.alive]
        return min(acked) if acked else self.seq

    def _release_pongs(self) -> None:
        floor = self._min_acked()
        while self.deferred:
            entry = self.deferred[0]
            needed, conn, reply, raised = entry
            if needed is None:
                if not conn.closed and any(link.alive for link in self.links.values()):
                    break   # its round has not started yet
                entry[0] = needed = self.seq
            if not raised and conn.sub_seq > needed:
                # A SUB/UNSUB read after the PING was announced later: wait for it too,
                # once, so a client that keeps subscribing still gets its PONG.
                entry[0] = needed = conn.sub_seq
                entry[3] = True
            if not conn.closed and needed > floor:
                break
            self.deferred.popleft()
            conn.deferred_pongs -= 1
            if not conn.closed:
                conn.queue(reply)
                conn._touch()

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        server = self.server
        while True:
            await self.inbox.wait()
            self.poll()
            server.after_batch()
            for link in list(self.links.values()):
                target = link.core.stall_target
                if target is None:
                    link.pushed, link.paced = None, 0.0     # flowing freely again
                    continue
                # A local subscriber fell behind on messages from this peer.
                link.core.stall_target = None
                start = trio.current_time()
                progressed = await stall_for(target)
                if target is not link.pushed:
                    link.paced += trio.current_time() - start
                    if not progressed or link.paced >= PACE_LIMIT:
                        link.pushed, link.paced = target, 0.0

    async def retry_overflow(self) -> None:
        """Writes waiting overflow as the peers free ring space.

        Nothing signals a producer when its ring drains, and the task that overflowed (a
        publisher's reader, now held by ``congested``) may be the only one this worker
        runs: retry until every link's overflow is in its ring.
        """
        while True:
            await self._overflowing.wait()
            self._overflowing = trio.Event()
            while True:
                await trio.sleep(OVERFLOW_RETRY)
                if all(not link.core.overflow for link in self.links.values()):
                    break
                self.after_batch()

    def poll(self) -> None:
        """Applies what the peers wrote: messages, interest, acknowledgements.

        The mesh task calls it when woken; a client's reader calls it too, before routing
        a read, when records wait: interest that reached this worker before the publish
        did must count for it, whichever task trio happens to run first.
        """
        self._check_peers()
        pace = not self.server.options.no_fast_producer_stall
        for link in self.links.values():
            # Small batches, so a subscriber falling behind is noticed and the peer's ring
            # (then its publishers, through the overflow limit) feels the back-pressure.
            others = link.core.drain_peer(link.inbound, DRAIN_BATCH, pace, link.pushed,
                                          DRAIN_INTERNAL)
            if others:
                for rec in others:
                    try:
                        self._apply(link, rec)
                    except (ValueError, KeyError) as exc:
                        log.error("bad mesh record from worker %d: %r (%s)", link.index,
                                  rec[:4], exc)
        if self._received:
            self._settle.set()   # acknowledged by the settle task, after the readers ran
        self._release_pongs()

    def after_batch(self) -> None:
        """Writes overflow, signals peers once per batch, updates back-pressure."""
        router = self.server.router
        if router.congested:
            router.congested = []
        congested = overflowing = False
        for link in self.links.values():
            if not link.write_overflow():
                overflowing = True
                if link.core.overflow_bytes > OVERFLOW_LIMIT:
                    congested = True
        if overflowing:
            self._overflowing.set()
        if congested and self.congested.is_set():
            self.congested = trio.Event()
        elif not congested and not self.congested.is_set():
            self.congested.set()
        if self.deferred:
            self._release_pongs()
        self._notify()

    def _notify(self) -> None:
        if self.notify:
            for j in self.notify:
                self.outbox.notify(j)
            self.notify.clear()

    def _check_peers(self) -> None:
        for link in self.links.values():
            alive, gen, _ = self.table.read(link.index)
            if link.alive and (not alive or gen != link.generation):
                log.warning("worker %d is gone; dropping its interest", link.index)
                link.drop_interest()
                link.alive = False
            if alive and not link.alive and gen != link.generation:
                # The restarted worker announces itself with HELLO; wait for it.
                link.generation = gen

    def _apply(self, link: PeerLink, rec: tuple) -> None:
        kind, aux, account, subject, reply, _headers, payload = rec
        if kind == RecordKind.SUB or kind == RecordKind.UNSUB:
            queue = reply or None
            key = (account, subject, queue)
            sl = self.server.sublist_for(account)
            sub = link.remote.get(key)
            if kind == RecordKind.SUB:
                if sub is None:
                    sub = _sublist.Subscription(subject, account, queue, link.core)
                    sub.weight = max(aux, 1)
                    try:
                        sl.insert(sub)
                    except ValueError:
                        sub = None
                    if sub is not None:
                        link.remote[key] = sub
                        # Interest that appears on a peer wakes what waits for it here
                        # (a push consumer whose deliver subject gets a subscriber).
                        for hook in self.server.sub_hooks:
                            hook(account, sub)
                elif queue is not None and sub.weight != aux:
                    sub.weight = max(aux, 1)
                    sl.update_remote_qsub(sub)
            elif sub is not None:
                del link.remote[key]
                sub.closed = True
                sl.remove(sub)
            if payload:
                self._received[link.index] = int(payload)
        elif kind == RecordKind.CONTROL:
            # subject names the command, payload carries its argument
            if subject == _HELLO:
                self._hello(link)
            elif subject == _ACK:
                link.acked = max(link.acked, int(payload or 0))
            elif subject == _ACK + b"?":
                # "acknowledge this number": sent after a re-announcement
                self._received[link.index] = max(self._received.get(link.index, 0), int(payload))

    def _hello(self, link: PeerLink) -> None:
        """A (re)started peer: forget what it had, tell it everything we have."""
        link.drop_interest()
        link.alive = True
        link.generation = self.table.read(link.index)[1]
        # Everything is re-announced under the current number, so the peer's
        # acknowledgement releases the flushes that wait for it.
        seq = b"%d" % self.seq
        link.acked = 0
        for (account, subject, queue), n in self.local.items():
            link.send(RecordKind.SUB, account, subject, queue or b"", seq, aux=n)
        link.send(RecordKind.CONTROL, b"", _ACK + b"?", payload=seq)
