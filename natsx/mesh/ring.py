"""Rings between workers: record kinds, wake-ups and the shared memory that holds the mesh.

Theory of operation
-------------------
Workers are peers in a full mesh: for every ordered pair (src, dst) one single-producer
single-consumer ring carries src's records to dst (``natsx._speedups`` ``_ring`` /
``ring_py`` hold the ring itself and its layout). ``RingSet`` creates all N*(N-1) rings in
one shared mapping, plus one ``Wakeup`` per worker, in the supervisor before it forks; the
workers inherit both. A worker writes through its ``Outbox`` and sleeps on its ``Inbox``.

Memory. The default backing is an anonymous shared ``mmap`` (MAP_SHARED|MAP_ANONYMOUS).
It has no name, so nothing can leak: the kernel frees it when the last process that maps
it exits, however it exits (SIGKILL included). Every process that uses the rings is
forked from the supervisor (a restarted worker too), so no process ever needs to find the
memory by name. ``backing="shm"`` uses a named ``multiprocessing.shared_memory`` segment
instead, for parity with tools that look under /dev/shm; the name carries the
supervisor's pid. Only the creating process unlinks it (``unlink()``, also from
``__exit__``); a child, even one SIGKILLed mid-write, never owns the name. The
supervisor may unlink it right after creation — forked children keep their mapping — and
``multiprocessing``'s resource tracker removes it if the supervisor itself is SIGKILLed.

Wake-ups. Each worker owns one ``Wakeup`` (an eventfd, or a pipe where eventfd is
missing) shared by all its inbound rings. The consumer sleeps only after raising the
``waiting`` flag of every inbound ring and finding them all still empty
(``Inbox.wait``); a producer signals once per batch and only when the flag was raised
(``Outbox.notify``), which lowers it again. A worker busy draining its rings therefore
costs its producers one fence and one load per batch, and no system call.

Back-pressure. ``try_write`` returning False means the destination is behind: the caller
keeps the record and treats the destination like a slow consumer. The ring never drops.

Records. ``(kind, aux, account, subject, reply, headers, payload)``; ``kind`` is a
``RecordKind`` (read back as a plain int, which compares equal to it). Fields are bytes,
empty when absent.
"""
from __future__ import annotations

import enum
import mmap
import os
import secrets
from multiprocessing import shared_memory
from types import ModuleType
from typing import Any

import trio

from natsx._speedups import load

_impl = load("ring")

#: True when the compiled ring is in use.
COMPILED: bool = _impl.__name__.rpartition(".")[2] == "_ring"

Ring = _impl.Ring
RingCorruptError = _impl.RingCorruptError
format_ring = _impl.format_ring
ring_size = _impl.ring_size
record_size = _impl.record_size
HEADER_SIZE: int = _impl.HEADER_SIZE
RECORD_HEADER_SIZE: int = _impl.RECORD_HEADER_SIZE
MIN_CAPACITY: int = _impl.MIN_CAPACITY
MAX_CAPACITY: int = _impl.MAX_CAPACITY
DEFAULT_BATCH: int = _impl.DEFAULT_BATCH

#: Data area of each ring in a ``RingSet`` unless told otherwise. Pages are touched only
#: as the ring is used, so a mesh of 16 workers (240 rings) reserves 240 MiB of address
#: space but costs memory only where traffic flows.
DEFAULT_CAPACITY = 1 << 20


class RecordKind(enum.IntEnum):
    """What a ring record carries; the byte ``kind`` of the record header (0 is invalid).

    Values up to 255 are free for later kinds; a consumer rejects kinds it does not know.
    """

    #: A message for local fan-out: account, subject, reply, headers, payload.
    MSG = 1
    #: Interest gained: account, subject, queue group in ``reply`` (empty for a plain
    #: subscription), queue weight in ``aux``.
    SUB = 2
    #: Interest lost: same fields as SUB.
    UNSUB = 3
    #: Control-plane payload (CBOR), opaque to the ring.
    CONTROL = 4
    #: A publish captured for a stream owned by the destination worker.
    JS_FORWARD = 5
    #: A ``$JS.API`` request for a stream owned by the destination worker.
    JS_API = 6
    #: Liveness beat between workers.
    HEARTBEAT = 7


class Wakeup:
    """A level-triggered doorbell that one process rings and another sleeps on.

    An eventfd (a counter the kernel turns into readability) where available, a
    non-blocking pipe otherwise. Create it before forking; every process gets the fd.

    Args:
        use_eventfd: force eventfd (True) or the pipe (False); default: eventfd when the
            platform has it.
    """

    __slots__ = ("_rfd", "_wfd", "_eventfd")

    def __init__(self, *, use_eventfd: bool | None = None) -> None:
        if use_eventfd is None:
            use_eventfd = hasattr(os, "eventfd")
        self._eventfd = use_eventfd
        if use_eventfd:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._rfd = self._wfd = fd
        else:
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)

    def fileno(self) -> int:
        """The fd that becomes readable when signalled."""
        return self._rfd

    def signal(self) -> None:
        """Make the fd readable (idempotent until ``clear``)."""
        try:
            if self._eventfd:
                os.eventfd_write(self._wfd, 1)
            else:
                os.write(self._wfd, b"\x01")
        except BlockingIOError:
            # Counter saturated or pipe full: the fd is readable already, which is all a
            # signal has to achieve.
            pass

    def clear(self) -> None:
        """Consume pending signals, so the fd is not readable until the next ``signal``."""
        try:
            if self._eventfd:
                os.eventfd_read(self._rfd)
            else:
                while os.read(self._rfd, 4096):
                    pass
        except BlockingIOError:
            pass

    async def wait(self) -> None:
        """Sleep until signalled, then clear."""
        await trio.lowlevel.wait_readable(self._rfd)
        self.clear()

    def close(self) -> None:
        """Close this process's fds (other processes keep theirs)."""
        if self._rfd >= 0:
            os.close(self._rfd)
            if self._wfd != self._rfd:
                os.close(self._wfd)
            self._rfd = self._wfd = -1


class Inbox:
    """A worker's inbound rings and the wake-up they share.

    Drain each ring in ``rings`` (source worker -> Ring), then ``await wait()``: it
    returns at once when a record arrived meanwhile and sleeps otherwise.
    """

    __slots__ = ("rings", "wakeup", "_list")

    def __init__(self, rings: dict[int, Any], wakeup: Wakeup) -> None:
        self.rings = rings
        self.wakeup = wakeup
        self._list = list(rings.values())

    def arm(self) -> bool:
        """Raise every ring's ``waiting`` flag; True when all are still empty (safe to
        sleep on ``wakeup``), False (flags lowered) when one holds records."""
        for ring in self._list:
            if not ring.prepare_sleep():
                self.disarm()
                return False
        return True

    def disarm(self) -> None:
        """Lower every ``waiting`` flag: the worker is awake and will drain."""
        for ring in self._list:
            ring.end_sleep()

    async def wait(self) -> None:
        """Return when an inbound ring may hold records (possibly spuriously)."""
        if not self.arm():
            await trio.lowlevel.checkpoint()
            return
        try:
            await self.wakeup.wait()
        finally:
            self.disarm()

    def pending_bytes(self) -> int:
        """Bytes waiting in all inbound rings."""
        return sum(ring.pending_bytes() for ring in self._list)


class Outbox:
    """A worker's outbound rings (destination worker -> Ring) and their consumers' wake-ups."""

    __slots__ = ("rings", "_wakeups", "_pairs")

    def __init__(self, rings: dict[int, Any], wakeups: dict[int, Wakeup]) -> None:
        self.rings = rings
        self._wakeups = wakeups
        self._pairs = [(rings[dst], wakeups[dst]) for dst in rings]

    def notify(self, dst: int | None = None) -> None:
        """After a batch of writes: signal each destination (or just ``dst``) that may be
        asleep. Costs a fence and a load per ring when nobody sleeps."""
        if dst is not None:
            if self.rings[dst].take_wakeup():
                self._wakeups[dst].signal()
            return
        for ring, wakeup in self._pairs:
            if ring.take_wakeup():
                wakeup.signal()


class RingSet:
    """The full mesh of rings for ``workers`` workers, in one shared mapping.

    Create in the supervisor before forking; see the module header for the backings and
    why the default cannot leak.

    Args:
        workers: number of workers (1 gives no rings, only a wake-up).
        capacity: data area of each ring (a power of two).
        backing: ``"anonymous"`` (default) or ``"shm"`` (a named segment under /dev/shm).
        impl: ring module to use (the compiled or pure twin); default the selected one.
        use_eventfd: passed to every ``Wakeup``.

    Raises:
        ValueError: bad worker count, capacity or backing.
    """

    def __init__(self, workers: int, capacity: int = DEFAULT_CAPACITY, *,
                 backing: str = "anonymous", impl: ModuleType | None = None,
                 use_eventfd: bool | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if backing not in ("anonymous", "shm"):
            raise ValueError("backing must be 'anonymous' or 'shm'")
        self._impl = impl = impl or _impl
        self.workers = workers
        self.capacity = capacity
        self.backing = backing
        self._owner = os.getpid()
        # Page-aligned rings: each ring's header lines belong to it alone.
        self._stride = -(-impl.ring_size(capacity) // mmap.PAGESIZE) * mmap.PAGESIZE
        count = workers * (workers - 1)
        size = max(count * self._stride, mmap.PAGESIZE)
        self._mmap: mmap.mmap | None = None
        self._shm: shared_memory.SharedMemory | None = None
        self._unlinked = False
        self._rings: list[Any] = []
        self._wakeups: list[Wakeup] = []
        if backing == "anonymous":
            self._mmap = mmap.mmap(-1, size)
            buf: Any = self._mmap
        else:
            self._shm = shared_memory.SharedMemory(
                name=f"natsx_{self._owner}_{secrets.token_hex(4)}", create=True, size=size
            )
            buf = self._shm.buf
        try:
            for k in range(count):
                impl.format_ring(buf, capacity, k * self._stride)
                self._rings.append(impl.Ring(buf, k * self._stride))
            self._wakeups = [Wakeup(use_eventfd=use_eventfd) for _ in range(workers)]
        except BaseException:
            self.close()
            self.unlink()
            raise

    @property
    def name(self) -> str | None:
        """The segment's name under /dev/shm (``backing="shm"``), else None."""
        return self._shm.name if self._shm is not None else None

    def _index(self, src: int, dst: int) -> int:
        if not (0 <= src < self.workers and 0 <= dst < self.workers) or src == dst:
            raise IndexError(f"no ring from worker {src} to worker {dst}")
        return src * (self.workers - 1) + (dst if dst < src else dst - 1)

    def rings_to(self, src: int, dst: int) -> Any:
        """The ring carrying records from worker ``src`` to worker ``dst``."""
        return self._rings[self._index(src, dst)]

    def wakeup(self, worker: int) -> Wakeup:
        """The wake-up that ``worker`` sleeps on."""
        return self._wakeups[worker]

    def inbox(self, worker: int) -> Inbox:
        """``worker``'s inbound rings and wake-up (its consumer side)."""
        rings = {src: self.rings_to(src, worker) for src in range(self.workers) if src != worker}
        return Inbox(rings, self._wakeups[worker])

    def outbox(self, worker: int) -> Outbox:
        """``worker``'s outbound rings and the wake-ups of their consumers (its producer side)."""
        rings = {dst: self.rings_to(worker, dst) for dst in range(self.workers) if dst != worker}
        return Outbox(rings, {dst: self._wakeups[dst] for dst in rings})

    def close(self) -> None:
        """Close the rings, the wake-ups' fds and the mapping in this process (idempotent).

        Other processes keep their mappings; memory goes when the last one unmaps.
        """
        for ring in self._rings:
            ring.close()
        for wakeup in self._wakeups:
            wakeup.close()
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        if self._shm is not None:
            self._shm.close()

    def unlink(self) -> None:
        """Remove the named segment (``backing="shm"``), in the creating process only.

        Safe at any time after the workers were forked: their mappings stay valid.
        Idempotent; a no-op for the anonymous backing and in other processes.
        """
        if self._shm is None or self._unlinked or os.getpid() != self._owner:
            return
        self._unlinked = True
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> RingSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.unlink()
