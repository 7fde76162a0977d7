"""Single-producer single-consumer byte rings in shared memory — pure-Python twin of ``_ring``.

Same API, same byte layout and same answers as the compiled module, whose header holds
the theory of operation: the header with ``tail`` and ``head`` counters on separate
cache lines, the 32-byte record header, pad records instead of split records, the
``capacity // 2`` record limit and the sleep/wake handshake. Either twin can read what
the other wrote.

What differs is how memory ordering is obtained. The interpreter gives no acquire or
release, but it also never reorders: a slice assignment or ``pack_into`` is a plain
``memcpy``, and the counter is stored only after the record's bytes, with a native
8-byte store (aligned, so it is not torn). On x86 (total store order) that is enough for
the publish/consume direction. The sleep/wake handshake needs a store-then-load barrier,
which x86 does not give for free; ``_fence`` takes and releases a private lock, whose
atomic read-modify-write instructions are full barriers on x86. This twin is the
fallback, not the production path on weakly ordered CPUs.
"""
from __future__ import annotations

import struct
import threading
from typing import Any, Callable, Iterable

MAGIC = b"NXRG"
VERSION = 1
HEADER_SIZE = 512
RECORD_HEADER_SIZE = 32
FLAG_PAD = 1
MIN_CAPACITY = 64
MAX_CAPACITY = 1 << 31
DEFAULT_BATCH = 4096

_OFF_VERSION = 4
_OFF_HEADER_SIZE = 6
_OFF_CAPACITY = 8
_OFF_TAIL = 128
_OFF_HEAD = 256
_OFF_WAITING = 384

# Native formats: "@Q" stores the counter with one aligned 8-byte copy (never torn);
# "=" fixes sizes without padding for the record header, in the host's byte order as
# the compiled twin writes it.
_U64 = struct.Struct("@Q")
_U32 = struct.Struct("@I")
_U16 = struct.Struct("@H")
_RECORD = struct.Struct("=IBBHIIIIII")
_PAD = struct.Struct("=IBBH")
assert _RECORD.size == RECORD_HEADER_SIZE

_fence_lock = threading.Lock()


def _fence() -> None:
    # A lock round trip: the closest thing to a full memory barrier Python offers.
    _fence_lock.acquire()
    _fence_lock.release()


class RingCorruptError(RuntimeError):
    """A record header in the ring is inconsistent with the layout (memory was overwritten)."""


def _check_capacity(capacity: int) -> int:
    if not MIN_CAPACITY <= capacity <= MAX_CAPACITY:
        raise ValueError(f"capacity must be within [{MIN_CAPACITY}, {MAX_CAPACITY}]")
    if capacity & (capacity - 1):
        raise ValueError("capacity must be a power of two")
    return int(capacity)


def ring_size(capacity: int) -> int:
    """Bytes a ring with a data area of ``capacity`` bytes occupies (header included)."""
    return HEADER_SIZE + _check_capacity(capacity)


def record_size(field_bytes: int) -> int:
    """Footprint in the data area of a record whose five fields total ``field_bytes``."""
    if field_bytes < 0:
        raise ValueError("field_bytes must be >= 0")
    return (RECORD_HEADER_SIZE + field_bytes + 7) & ~7


def _ring_view(buffer: Any, offset: int, capacity: int) -> memoryview:
    if offset < 0 or offset % 64:
        raise ValueError("offset must be a non-negative multiple of 64")
    mv = memoryview(buffer)
    if mv.readonly:
        mv.release()
        raise BufferError("the ring needs a writable buffer")
    flat = mv.cast("B")
    mv.release()
    if flat.nbytes < offset + HEADER_SIZE + capacity:
        n = flat.nbytes
        flat.release()
        raise ValueError(
            f"buffer of {n} bytes cannot hold a ring of {HEADER_SIZE + capacity} at {offset}"
        )
    region = flat[offset:offset + HEADER_SIZE + capacity]
    flat.release()
    return region


def format_ring(buffer: Any, capacity: int, offset: int = 0) -> None:
    """Write an empty ring's header into ``buffer`` at ``offset``; see ``_ring.format_ring``."""
    cap = _check_capacity(capacity)
    mv = _ring_view(buffer, offset, cap)
    try:
        mv[:HEADER_SIZE] = bytes(HEADER_SIZE)
        mv[0:4] = MAGIC
        _U16.pack_into(mv, _OFF_VERSION, VERSION)
        _U16.pack_into(mv, _OFF_HEADER_SIZE, HEADER_SIZE)
        _U64.pack_into(mv, _OFF_CAPACITY, cap)
        _fence()
    finally:
        mv.release()


def _field(obj: Any) -> Any:
    if obj is None:
        return b""
    if type(obj) is bytes or type(obj) is bytearray:
        return obj
    mv = memoryview(obj)
    if not mv.c_contiguous:
        raise BufferError("fields must be contiguous buffers")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


class Ring:
    """One end's handle on a formatted ring; see ``_ring.Ring``."""

    __slots__ = (
        "_mv", "_data", "_cap", "_mask", "_max_record", "_head_seen", "_tail_seen", "_busy",
    )

    def __init__(self, buffer: Any, offset: int = 0) -> None:
        self._mv = None
        self._data = None
        self._busy = False
        mv = _ring_view(buffer, offset, 0)
        try:
            if bytes(mv[0:4]) != MAGIC:
                raise ValueError("no ring at this offset (bad magic); call format_ring first")
            if _U16.unpack_from(mv, _OFF_VERSION)[0] != VERSION:
                raise ValueError("ring layout version mismatch")
            cap = _check_capacity(_U64.unpack_from(mv, _OFF_CAPACITY)[0])
        finally:
            mv.release()
        self._mv = _ring_view(buffer, offset, cap)
        self._data = self._mv[HEADER_SIZE:]
        self._cap = cap
        self._mask = cap - 1
        self._max_record = cap // 2
        self._head_seen = _U64.unpack_from(self._mv, _OFF_HEAD)[0]
        self._tail_seen = _U64.unpack_from(self._mv, _OFF_TAIL)[0]

    def close(self) -> None:
        """Release the buffer, so the mmap or SharedMemory under it can be closed."""
        if self._busy:
            raise RuntimeError("cannot close a ring while it is being read")
        if self._mv is not None:
            self._data.release()
            self._mv.release()
            self._mv = self._data = None

    def _open(self) -> memoryview:
        if self._mv is None:
            raise ValueError("ring is closed")
        return self._mv

    @property
    def closed(self) -> bool:
        return self._mv is None

    @property
    def capacity(self) -> int:
        """Bytes in the data area."""
        return self._cap

    @property
    def max_record(self) -> int:
        """Largest record footprint (``record_size``) that ``try_write`` accepts."""
        return self._max_record

    def pending_bytes(self) -> int:
        """Bytes appended but not yet consumed (records, padding and pads)."""
        mv = self._open()
        head = _U64.unpack_from(mv, _OFF_HEAD)[0]
        tail = _U64.unpack_from(mv, _OFF_TAIL)[0]
        return tail - head if tail > head else 0

    def free_bytes(self) -> int:
        """``capacity - pending_bytes()``; a record that wraps also needs the rest of the lap."""
        return self._cap - self.pending_bytes()

    # ---------------------------------------------------------------- producer

    def _append(self, tail: int, kind: int, aux: int, fields: tuple) -> int:
        """Copy one record at ``tail`` without publishing it: the new tail, or -1 when full."""
        if not 1 <= kind <= 255:
            raise ValueError("kind must be within 1..255")
        if not 0 <= aux <= 0xFFFFFFFF:
            raise OverflowError("aux must fit in an unsigned 32-bit integer")
        account, subject, reply, headers, payload = fields
        la, ls, lr, lh, lp = (len(account), len(subject), len(reply), len(headers),
                              len(payload))
        size = RECORD_HEADER_SIZE + la + ls + lr + lh + lp
        footprint = (size + 7) & ~7
        if footprint > self._max_record:
            raise ValueError(
                f"record of {footprint} bytes exceeds the ring's limit of {self._max_record}"
            )
        cap = self._cap
        pos = tail & self._mask
        need = footprint
        if pos + footprint > cap:
            need += cap - pos
        if tail - self._head_seen + need > cap:
            self._head_seen = _U64.unpack_from(self._mv, _OFF_HEAD)[0]
            if tail - self._head_seen + need > cap:
                return -1
        data = self._data
        if need != footprint:
            _PAD.pack_into(data, pos, cap - pos, 0, FLAG_PAD, 0)
            pos = 0
        _RECORD.pack_into(data, pos, size, kind, 0, 0, aux, la, ls, lr, lh, lp)
        p = pos + RECORD_HEADER_SIZE
        for value, n in ((account, la), (subject, ls), (reply, lr), (headers, lh),
                         (payload, lp)):
            if n:
                data[p:p + n] = value
                p += n
        if footprint != size:
            data[p:pos + footprint] = bytes(footprint - size)
        return tail + need

    def try_write(self, kind: int, account: Any, subject: Any, reply: Any, headers: Any,
                  payload: Any, *, aux: int = 0) -> bool:
        """Append one record and publish it; see ``_ring.Ring.try_write``."""
        mv = self._open()
        fields = (_field(account), _field(subject), _field(reply), _field(headers),
                  _field(payload))
        tail = self._append(_U64.unpack_from(mv, _OFF_TAIL)[0], kind, aux, fields)
        if tail < 0:
            return False
        _U64.pack_into(mv, _OFF_TAIL, tail)
        return True

    def write_batch(self, records: Iterable[tuple]) -> int:
        """Append records in order, publishing them together; see ``_ring.Ring.write_batch``."""
        mv = self._open()
        start = tail = _U64.unpack_from(mv, _OFF_TAIL)[0]
        count = 0
        try:
            for kind, aux, account, subject, reply, headers, payload in records:
                fields = (_field(account), _field(subject), _field(reply), _field(headers),
                          _field(payload))
                new_tail = self._append(tail, kind, aux, fields)
                if new_tail < 0:
                    break
                tail = new_tail
                count += 1
        finally:
            if tail != start:
                _U64.pack_into(mv, _OFF_TAIL, tail)
        return count

    def take_wakeup(self) -> bool:
        """After publishing a batch: True when the consumer may be asleep and must be signalled."""
        mv = self._open()
        _fence()
        if _U32.unpack_from(mv, _OFF_WAITING)[0] == 0:
            return False
        _U32.pack_into(mv, _OFF_WAITING, 0)
        return True

    # ---------------------------------------------------------------- consumer

    def _read(self, max_records: int, out: list | None,
              callback: Callable[..., Any] | None) -> int:
        mv = self._open()
        if self._busy:
            raise RuntimeError("ring reads are not re-entrant")
        data = self._data
        cap = self._cap
        mask = self._mask
        quarter = cap >> 2
        head = published = _U64.unpack_from(mv, _OFF_HEAD)[0]
        tail = self._tail_seen
        if tail <= head:
            tail = self._tail_seen = _U64.unpack_from(mv, _OFF_TAIL)[0]
        unpack = _RECORD.unpack_from
        unpack_pad = _PAD.unpack_from
        n = 0
        self._busy = True
        try:
            while n < max_records:
                if head >= tail:
                    tail = self._tail_seen = _U64.unpack_from(mv, _OFF_TAIL)[0]
                    if head >= tail:
                        break
                pos = head & mask
                if pos + RECORD_HEADER_SIZE > cap:
                    # Too close to the end for a record: only a pad (8 bytes) fits here.
                    size, kind, flags, _ = unpack_pad(data, pos)
                    if not flags & FLAG_PAD:
                        raise RingCorruptError(f"bad record header at {head}")
                else:
                    size, kind, flags, _, aux, la, ls, lr, lh, lp = unpack(data, pos)
                if flags & FLAG_PAD:
                    if size != cap - pos or head + size > tail:
                        raise RingCorruptError(f"bad pad record at {head}")
                    head += size
                    continue
                footprint = (size + 7) & ~7
                if (size < RECORD_HEADER_SIZE or pos + footprint > cap
                        or head + footprint > tail
                        or size != RECORD_HEADER_SIZE + la + ls + lr + lh + lp or kind == 0):
                    raise RingCorruptError(f"bad record header at {head}")
                p = pos + RECORD_HEADER_SIZE
                account = data[p:p + la].tobytes()
                p += la
                subject = data[p:p + ls].tobytes()
                p += ls
                reply = data[p:p + lr].tobytes()
                p += lr
                headers = data[p:p + lh].tobytes()
                p += lh
                payload = data[p:p + lp].tobytes()
                head += footprint
                n += 1
                if head - published >= quarter:
                    _U64.pack_into(mv, _OFF_HEAD, head)
                    published = head
                if callback is None:
                    out.append((kind, aux, account, subject, reply, headers, payload))
                else:
                    callback(kind, aux, account, subject, reply, headers, payload)
        finally:
            self._busy = False
            if head != published:
                _U64.pack_into(mv, _OFF_HEAD, head)
        return n

    def read_batch(self, max_records: int = DEFAULT_BATCH) -> list[tuple]:
        """Consume up to ``max_records`` records; see ``_ring.Ring.read_batch``."""
        out: list[tuple] = []
        self._read(max_records, out, None)
        return out

    def read_into(self, out: list, max_records: int = DEFAULT_BATCH) -> int:
        """Like ``read_batch``, appending to ``out``; returns how many records were read."""
        if type(out) is not list:
            raise TypeError("out must be a list")
        return self._read(max_records, out, None)

    def drain(self, callback: Callable[..., Any], max_records: int = DEFAULT_BATCH) -> int:
        """Consume up to ``max_records`` records through ``callback``; see ``_ring.Ring.drain``."""
        if callback is None:
            raise TypeError("callback must be callable")
        return self._read(max_records, None, callback)

    def prepare_sleep(self) -> bool:
        """Raise ``waiting``; True when the ring is still empty and the consumer may sleep."""
        mv = self._open()
        head = _U64.unpack_from(mv, _OFF_HEAD)[0]
        _U32.pack_into(mv, _OFF_WAITING, 1)
        _fence()
        tail = self._tail_seen = _U64.unpack_from(mv, _OFF_TAIL)[0]
        if tail > head:
            _U32.pack_into(mv, _OFF_WAITING, 0)
            return False
        return True

    def end_sleep(self) -> None:
        """Lower the ``waiting`` flag once awake, so producers stop signalling."""
        _U32.pack_into(self._open(), _OFF_WAITING, 0)

    def discard(self) -> int:
        """Drop everything pending; returns the bytes dropped."""
        mv = self._open()
        if self._busy:
            raise RuntimeError("cannot discard while reading")
        head = _U64.unpack_from(mv, _OFF_HEAD)[0]
        tail = self._tail_seen = _U64.unpack_from(mv, _OFF_TAIL)[0]
        if tail <= head:
            return 0
        _U64.pack_into(mv, _OFF_HEAD, tail)
        return tail - head
