# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Single-producer single-consumer byte rings in shared memory — compiled twin of ``ring_py``.

Theory of operation
-------------------
A ring lives in any writable buffer that both sides map: an anonymous shared ``mmap``
inherited through ``fork`` or a ``multiprocessing.shared_memory`` segment. ``format_ring``
writes the header once, before the processes start; every process then wraps the same
bytes in its own ``Ring``. One process only appends (the producer), one process only
consumes (the consumer); nothing else may touch the ring.

Layout (integers in the host's byte order; both sides always run on one host)::

    offset  size  field
         0     4  magic b"NXRG"
         4     2  version (1)
         6     2  header size (512)
         8     8  capacity: bytes in the data area, a power of two
       128     8  tail: bytes ever appended            -- written by the producer only
       256     8  head: bytes ever consumed            -- written by the consumer only
       384     4  waiting: consumer is (about to be) asleep
       512     …  data area, ``capacity`` bytes

The counters only grow; a byte's place in the data area is ``counter & (capacity - 1)``,
so ``tail - head`` is the number of bytes pending and no "full versus empty" ambiguity
exists. Each counter sits on its own 128-byte stretch: the producer's stores to ``tail``
and the consumer's stores to ``head`` never fight over a cache line (nor over the line
pair that the adjacent-line prefetcher fetches together). Each side keeps a private copy
of the other side's counter and re-reads the shared one only when the copy says "full"
(producer) or "empty" (consumer), so in steady state each side reads the other's line
once per lap of slack, not once per record.

A record starts at an 8-byte boundary::

         0     4  size: 32 + the five field lengths (before padding)
         4     1  kind, 1..255 (0 is never valid, so zeroed memory is never taken for a record)
         5     1  flags: FLAG_PAD marks filler up to the end of the data area
         6     2  zero
         8     4  aux: a small kind-specific integer (queue weight of a SUB, ...)
        12    20  lengths of account, subject, reply, headers, payload (u32 each)
        32     …  the five fields back to back, then zeros up to a multiple of 8

Records are never split: one that would cross the end of the data area is preceded by a
pad record filling the rest of the lap (8 bytes is the smallest gap, and a pad needs only
its first 8 bytes). Contiguity keeps a write to one ``memcpy`` per field and a read to one
``bytes`` per field, at the price of up to one record's footprint of slack per lap. A
record's footprint (``record_size``) may not exceed ``capacity // 2``: that bound is what
guarantees any accepted record fits once the consumer has emptied the ring, whatever the
position of the counters. ``try_write`` needs the record's footprint, plus the pad when the
record wraps; it returns False, and writes nothing, exactly when the ring lacks that.

Ordering: the producer copies the record, then publishes it with a release store of
``tail``; the consumer reads ``tail`` with acquire, so the record's bytes are visible
before it looks at them, and it hands space back with a release store of ``head``,
which the producer reads with acquire before reusing the space. The consumer publishes
``head`` once per batch (and every quarter lap within a long batch), not per record.

Sleeping without lost wake-ups (a Dekker handshake): the consumer raises ``waiting``,
issues a full fence and looks at ``tail`` once more (``prepare_sleep``), sleeping only if
the ring is still empty. The producer, after publishing a batch, issues a full fence and
looks at ``waiting`` (``take_wakeup``); if it was raised it lowers it and the caller
signals the consumer's eventfd. With a full fence on both sides at least one of them sees
the other's store, so either the consumer sees the record or the producer sees the flag.
The signal costs a fence and one load per batch when the consumer is awake.

The consumer validates every record header before reading through it, so a corrupted
ring raises ``RingCorruptError`` instead of reading out of bounds.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcmp, memcpy, memset


cdef extern from "_atomic.h" nogil:
    uint64_t nx_load_relaxed_u64(const uint64_t *p)
    uint64_t nx_load_acquire_u64(const uint64_t *p)
    void nx_store_release_u64(uint64_t *p, uint64_t v)
    uint32_t nx_load_relaxed_u32(const uint32_t *p)
    void nx_store_relaxed_u32(uint32_t *p, uint32_t v)
    uint32_t nx_exchange_u32(uint32_t *p, uint32_t v)
    void nx_fence()


# The layout; ring_py spells out the same numbers.
DEF _HEADER_SIZE = 512
DEF _OFF_MAGIC = 0
DEF _OFF_VERSION = 4
DEF _OFF_HEADER_SIZE = 6
DEF _OFF_CAPACITY = 8
DEF _OFF_TAIL = 128
DEF _OFF_HEAD = 256
DEF _OFF_WAITING = 384
DEF _RECORD_HEADER_SIZE = 32
DEF _VERSION = 1
DEF _FLAG_PAD = 1
DEF _MIN_CAPACITY = 64
DEF _MAX_CAPACITY = 1 << 31        # keeps every accepted record's size within a u32

MAGIC = b"NXRG"
cdef const char *_MAGIC_C = "NXRG"
VERSION = _VERSION
HEADER_SIZE = _HEADER_SIZE
RECORD_HEADER_SIZE = _RECORD_HEADER_SIZE
FLAG_PAD = _FLAG_PAD
MIN_CAPACITY = _MIN_CAPACITY
MAX_CAPACITY = _MAX_CAPACITY
#: Default ``max_records`` of one read: bounds the time a consumer spends on one ring.
DEFAULT_BATCH = 4096


class RingCorruptError(RuntimeError):
    """A record header in the ring is inconsistent with the layout (memory was overwritten)."""


def ring_size(capacity):
    """Bytes a ring with a data area of ``capacity`` bytes occupies (header included)."""
    return _HEADER_SIZE + _check_capacity(capacity)


def record_size(Py_ssize_t field_bytes):
    """Footprint in the data area of a record whose five fields total ``field_bytes``."""
    if field_bytes < 0:
        raise ValueError("field_bytes must be >= 0")
    return (_RECORD_HEADER_SIZE + field_bytes + 7) & ~7


cdef uint64_t _check_capacity(object capacity) except 0:
    cdef uint64_t cap
    if capacity < _MIN_CAPACITY or capacity > _MAX_CAPACITY:
        raise ValueError(f"capacity must be within [{_MIN_CAPACITY}, {_MAX_CAPACITY}]")
    cap = capacity
    if cap & (cap - 1):
        raise ValueError("capacity must be a power of two")
    return cap


def format_ring(buffer, capacity, Py_ssize_t offset=0):
    """Write an empty ring's header into ``buffer`` at ``offset``.

    Call once, before any process wraps the ring; formatting a ring in use loses its
    records and confuses both sides.

    Args:
        buffer: a writable, contiguous buffer (shared mmap, SharedMemory.buf, bytearray).
        capacity: size of the data area; a power of two within [MIN_CAPACITY, MAX_CAPACITY].
        offset: where the ring starts in ``buffer``; a multiple of 64.

    Raises:
        ValueError: bad capacity or offset, or the buffer is too small.
    """
    cdef uint64_t cap = _check_capacity(capacity)
    cdef Py_buffer view
    cdef char *base
    PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
    try:
        base = _ring_base(&view, offset, cap)
        memset(base, 0, _HEADER_SIZE)
        memcpy(base + _OFF_MAGIC, _MAGIC_C, 4)
        (<uint16_t *>(base + _OFF_VERSION))[0] = _VERSION
        (<uint16_t *>(base + _OFF_HEADER_SIZE))[0] = _HEADER_SIZE
        (<uint64_t *>(base + _OFF_CAPACITY))[0] = cap
        nx_fence()
    finally:
        PyBuffer_Release(&view)


cdef char *_ring_base(Py_buffer *view, Py_ssize_t offset, uint64_t cap) except NULL:
    if offset < 0 or offset % 64:
        raise ValueError("offset must be a non-negative multiple of 64")
    if <uint64_t>view.len < <uint64_t>offset + _HEADER_SIZE + cap:
        raise ValueError(
            f"buffer of {view.len} bytes cannot hold a ring of {_HEADER_SIZE + cap} at {offset}"
        )
    cdef char *base = <char *>view.buf + offset
    if (<uintptr_t>base) & 7:
        raise ValueError("the ring must start at an 8-byte aligned address")
    return base


cdef inline int _field_open(object obj, _Field *f) except -1:
    # bytes is the common case and needs no buffer export; anything else must expose a
    # contiguous buffer (bytearray, memoryview of a read buffer, mmap slice).
    if obj is None:
        f.ptr = NULL
        f.size = 0
    elif PyBytes_CheckExact(obj):
        f.ptr = PyBytes_AS_STRING(obj)
        f.size = PyBytes_GET_SIZE(obj)
    else:
        PyObject_GetBuffer(obj, &f.view, PyBUF_SIMPLE)
        f.held = True
        f.ptr = <const char *>f.view.buf
        f.size = f.view.len
    return 0


cdef inline void _fields_close(_Field *f):
    cdef int i
    for i in range(5):
        if f[i].held:
            f[i].held = False
            PyBuffer_Release(&f[i].view)


cdef class Ring:
    """One end's handle on a formatted ring; see the module header.

    A process uses a ring either as its producer (``try_write``, ``write_batch``,
    ``take_wakeup``) or as its consumer (``read_batch``, ``read_into``, ``drain``,
    ``prepare_sleep``, ``end_sleep``, ``discard``), never both, and from one thread.

    Args:
        buffer: the writable buffer holding the ring (the handle keeps it exported until
            ``close()``).
        offset: where ``format_ring`` put the ring.

    Raises:
        ValueError: no ring of this version at ``offset``, or the buffer is too small.
    """

    def __cinit__(self, buffer, Py_ssize_t offset=0):
        cdef uint64_t cap
        cdef char *base
        PyObject_GetBuffer(buffer, &self._view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        self._held = True
        if offset < 0 or self._view.len < offset + _HEADER_SIZE:
            raise ValueError("buffer too small for a ring header at this offset")
        base = <char *>self._view.buf + offset
        if memcmp(base + _OFF_MAGIC, _MAGIC_C, 4) != 0:
            raise ValueError("no ring at this offset (bad magic); call format_ring first")
        if (<uint16_t *>(base + _OFF_VERSION))[0] != _VERSION:
            raise ValueError("ring layout version mismatch")
        cap = (<uint64_t *>(base + _OFF_CAPACITY))[0]
        _check_capacity(cap)
        self._base = _ring_base(&self._view, offset, cap)
        self._data = <unsigned char *>(self._base + _HEADER_SIZE)
        self._tail = <uint64_t *>(self._base + _OFF_TAIL)
        self._head = <uint64_t *>(self._base + _OFF_HEAD)
        self._waiting = <uint32_t *>(self._base + _OFF_WAITING)
        self._cap = cap
        self._mask = cap - 1
        self._max_record = cap // 2
        self._head_seen = nx_load_acquire_u64(self._head)
        self._tail_seen = nx_load_acquire_u64(self._tail)

    def __dealloc__(self):
        if self._held:
            self._held = False
            PyBuffer_Release(&self._view)

    def close(self):
        """Release the buffer, so the mmap or SharedMemory under it can be closed."""
        if self._busy:
            raise RuntimeError("cannot close a ring while it is being read")
        self._base = NULL
        if self._held:
            self._held = False
            PyBuffer_Release(&self._view)

    cdef int _check_open(self) except -1:
        if self._base == NULL:
            raise ValueError("ring is closed")
        return 0

    @property
    def closed(self):
        return self._base == NULL

    @property
    def capacity(self):
        """Bytes in the data area."""
        return self._cap

    @property
    def max_record(self):
        """Largest record footprint (``record_size``) that ``try_write`` accepts."""
        return self._max_record

    def pending_bytes(self):
        """Bytes appended but not yet consumed (records, padding and pads)."""
        self._check_open()
        cdef uint64_t head = nx_load_acquire_u64(self._head)
        cdef uint64_t tail = nx_load_acquire_u64(self._tail)
        return tail - head if tail > head else 0

    def free_bytes(self):
        """``capacity - pending_bytes()``; a record that wraps also needs the rest of the lap."""
        self._check_open()
        cdef uint64_t head = nx_load_acquire_u64(self._head)
        cdef uint64_t tail = nx_load_acquire_u64(self._tail)
        return self._cap - (tail - head if tail > head else 0)

    # ---------------------------------------------------------------- producer

    cdef int _append(self, uint64_t *tail, int kind, uint32_t aux, _Field *f) except -1:
        """Copy one record at ``tail[0]`` without publishing it: 1 when written, 0 when full."""
        cdef uint64_t fields, size, footprint, need, pos, t = tail[0]
        cdef unsigned char *p
        cdef uint32_t *h
        cdef int i
        if kind < 1 or kind > 255:
            raise ValueError("kind must be within 1..255")
        fields = <uint64_t>f[0].size + f[1].size + f[2].size + f[3].size + f[4].size
        size = _RECORD_HEADER_SIZE + fields
        footprint = (size + 7) & ~(<uint64_t>7)
        if footprint > self._max_record:
            raise ValueError(
                f"record of {footprint} bytes exceeds the ring's limit of {self._max_record}"
            )
        pos = t & self._mask
        need = footprint
        if pos + footprint > self._cap:
            need += self._cap - pos
        if (t - self._head_seen) + need > self._cap:
            self._head_seen = nx_load_acquire_u64(self._head)
            if (t - self._head_seen) + need > self._cap:
                return 0
        if need != footprint:
            h = <uint32_t *>(self._data + pos)
            h[0] = <uint32_t>(self._cap - pos)
            (<uint8_t *>h)[4] = 0
            (<uint8_t *>h)[5] = _FLAG_PAD
            (<uint16_t *>h)[3] = 0
            pos = 0
        p = self._data + pos
        h = <uint32_t *>p
        h[0] = <uint32_t>size
        p[4] = <uint8_t>kind
        p[5] = 0
        (<uint16_t *>p)[3] = 0
        h[2] = aux
        for i in range(5):
            h[3 + i] = <uint32_t>f[i].size
        p += _RECORD_HEADER_SIZE
        for i in range(5):
            if f[i].size:
                memcpy(p, f[i].ptr, f[i].size)
                p += f[i].size
        if footprint != size:
            memset(p, 0, footprint - size)
        tail[0] = t + need
        return 1

    def try_write(self, int kind, account, subject, reply, headers, payload, *,
                  uint32_t aux=0):
        """Append one record and publish it.

        Args:
            kind: record kind, 1..255 (``natsx.mesh.ring.RecordKind``).
            account, subject, reply, headers, payload: bytes-like or None (empty).
            aux: kind-specific unsigned 32-bit integer.

        Returns:
            True when written; False, with nothing written, when the ring lacks room. A
            False is back-pressure: the caller keeps the record, it is never dropped here.

        Raises:
            ValueError: the record's footprint exceeds ``max_record``, or a bad kind.
        """
        cdef _Field f[5]
        cdef uint64_t tail
        cdef int i, written
        if self._base == NULL:
            raise ValueError("ring is closed")
        for i in range(5):
            f[i].held = False
        try:
            _field_open(account, &f[0])
            _field_open(subject, &f[1])
            _field_open(reply, &f[2])
            _field_open(headers, &f[3])
            _field_open(payload, &f[4])
            tail = nx_load_relaxed_u64(self._tail)
            written = self._append(&tail, kind, aux, f)
        finally:
            _fields_close(f)
        if written:
            nx_store_release_u64(self._tail, tail)
            return True
        return False

    def write_batch(self, records):
        """Append records in order, publishing them together; stop at the first that does not fit.

        Args:
            records: an iterable of ``(kind, aux, account, subject, reply, headers,
                payload)`` tuples, the shape ``read_batch`` returns.

        Returns:
            How many records were written (the caller keeps the rest).

        Raises:
            ValueError: as ``try_write``; the records before the bad one are published.
        """
        cdef _Field f[5]
        cdef uint64_t tail, start
        cdef Py_ssize_t count = 0
        cdef int i
        self._check_open()
        start = tail = nx_load_relaxed_u64(self._tail)
        try:
            for rec in records:
                kind, aux, account, subject, reply, headers, payload = rec
                for i in range(5):
                    f[i].held = False
                try:
                    _field_open(account, &f[0])
                    _field_open(subject, &f[1])
                    _field_open(reply, &f[2])
                    _field_open(headers, &f[3])
                    _field_open(payload, &f[4])
                    if not self._append(&tail, kind, aux, f):
                        break
                finally:
                    _fields_close(f)
                count += 1
        finally:
            if tail != start:
                nx_store_release_u64(self._tail, tail)
        return count

    def take_wakeup(self):
        """After publishing a batch: True when the consumer may be asleep and must be signalled.

        Lowers the consumer's ``waiting`` flag when it returns True, so one signal is sent
        per sleep, not per batch.
        """
        self._check_open()
        nx_fence()
        if nx_load_relaxed_u32(self._waiting) == 0:
            return False
        return nx_exchange_u32(self._waiting, 0) != 0


    # ---------------------------------------------------------------- C-level API

    cdef int write_c(self, int kind, uint32_t aux,
                     const char *account, Py_ssize_t alen,
                     const char *subject, Py_ssize_t slen,
                     const char *reply, Py_ssize_t rlen,
                     const char *headers, Py_ssize_t hlen,
                     const char *payload, Py_ssize_t plen) except -1:
        """try_write for C callers: raw pointers, published at once; 1 written, 0 full."""
        cdef _Field f[5]
        cdef uint64_t tail
        if self._base == NULL:
            raise ValueError("ring is closed")
        f[0].ptr = account
        f[0].size = alen
        f[1].ptr = subject
        f[1].size = slen
        f[2].ptr = reply
        f[2].size = rlen
        f[3].ptr = headers
        f[3].size = hlen
        f[4].ptr = payload
        f[4].size = plen
        tail = nx_load_relaxed_u64(self._tail)
        if self._append(&tail, kind, aux, f):
            nx_store_release_u64(self._tail, tail)
            return 1
        return 0

    cdef int begin_read_c(self) except -1:
        """Starts a zero-copy batch: next_c() until 0, then end_read_c()."""
        self._check_open()
        if self._busy:
            raise RuntimeError("ring reads are not re-entrant")
        self._busy = True
        self._rhead = self._rpublished = nx_load_relaxed_u64(self._head)
        return 0

    cdef int next_c(self, RecordView *rv) except -1:
        """Points ``rv`` at the next record, valid until the next call; 0 when none."""
        cdef uint64_t head = self._rhead, tail, pos, size, footprint, fields
        cdef unsigned char *p
        cdef uint32_t *h
        cdef int i
        while True:
            tail = self._tail_seen
            if head >= tail:
                tail = self._tail_seen = nx_load_acquire_u64(self._tail)
                if head >= tail:
                    self._rhead = head
                    return 0
            # The previous record is done with: let the producer reuse space every quarter.
            if head - self._rpublished >= (self._cap >> 2):
                nx_store_release_u64(self._head, head)
                self._rpublished = head
            pos = head & self._mask
            p = self._data + pos
            h = <uint32_t *>p
            size = h[0]
            if p[5] & _FLAG_PAD:
                if size != self._cap - pos or head + size > tail:
                    raise RingCorruptError(f"bad pad record at {head}")
                head += size
                continue
            footprint = (size + 7) & ~(<uint64_t>7)
            if (size < _RECORD_HEADER_SIZE or pos + footprint > self._cap
                    or head + footprint > tail):
                raise RingCorruptError(f"bad record header at {head}")
            fields = <uint64_t>h[3] + h[4] + h[5] + h[6] + h[7]
            if size != _RECORD_HEADER_SIZE + fields or p[4] == 0:
                raise RingCorruptError(f"bad record header at {head}")
            rv.kind = p[4]
            rv.aux = h[2]
            p += _RECORD_HEADER_SIZE
            for i in range(5):
                rv.field[i] = p
                rv.size[i] = h[3 + i]
                p += h[3 + i]
            self._rhead = head + footprint
            return 1

    cdef void end_read_c(self):
        """Publishes the consumed records and ends the batch."""
        if self._rhead != self._rpublished:
            nx_store_release_u64(self._head, self._rhead)
        self._busy = False

    # ---------------------------------------------------------------- consumer

    cdef Py_ssize_t _read(self, Py_ssize_t max_records, list out, object callback) except -1:
        cdef uint64_t head, tail, published, pos, size, footprint, fields
        cdef unsigned char *p
        cdef uint32_t *h
        cdef Py_ssize_t n = 0
        cdef uint64_t quarter = self._cap >> 2
        cdef int kind
        self._check_open()
        if self._busy:
            raise RuntimeError("ring reads are not re-entrant")
        head = nx_load_relaxed_u64(self._head)
        published = head
        tail = self._tail_seen
        if tail <= head:
            tail = self._tail_seen = nx_load_acquire_u64(self._tail)
        self._busy = True
        try:
            while n < max_records:
                if head >= tail:
                    # Caught up with the last look; take one more so a producer that kept
                    # writing during the batch is served without another round trip.
                    tail = self._tail_seen = nx_load_acquire_u64(self._tail)
                    if head >= tail:
                        break
                pos = head & self._mask
                p = self._data + pos
                h = <uint32_t *>p
                size = h[0]
                if p[5] & _FLAG_PAD:
                    if size != self._cap - pos or head + size > tail:
                        raise RingCorruptError(f"bad pad record at {head}")
                    head += size
                    continue
                # Bounds first, from the size alone: the field lengths are read only once
                # the whole header is known to lie inside the data area.
                footprint = (size + 7) & ~(<uint64_t>7)
                if (size < _RECORD_HEADER_SIZE or pos + footprint > self._cap
                        or head + footprint > tail):
                    raise RingCorruptError(f"bad record header at {head}")
                fields = <uint64_t>h[3] + h[4] + h[5] + h[6] + h[7]
                kind = p[4]
                if size != _RECORD_HEADER_SIZE + fields or kind == 0:
                    raise RingCorruptError(f"bad record header at {head}")
                p += _RECORD_HEADER_SIZE
                account = PyBytes_FromStringAndSize(<char *>p, h[3])
                p += h[3]
                subject = PyBytes_FromStringAndSize(<char *>p, h[4])
                p += h[4]
                reply = PyBytes_FromStringAndSize(<char *>p, h[5])
                p += h[5]
                headers = PyBytes_FromStringAndSize(<char *>p, h[6])
                p += h[6]
                payload = PyBytes_FromStringAndSize(<char *>p, h[7])
                aux = h[2]
                # The record is consumed once its fields are copied out, even if the
                # callback raises: it was delivered.
                head += footprint
                n += 1
                if head - published >= quarter:
                    nx_store_release_u64(self._head, head)
                    published = head
                if callback is None:
                    out.append((kind, aux, account, subject, reply, headers, payload))
                else:
                    callback(kind, aux, account, subject, reply, headers, payload)
        finally:
            self._busy = False
            if head != published:
                nx_store_release_u64(self._head, head)
        return n

    def read_batch(self, Py_ssize_t max_records=DEFAULT_BATCH):
        """Consume up to ``max_records`` records.

        Returns:
            A list of ``(kind, aux, account, subject, reply, headers, payload)`` tuples;
            ``kind`` and ``aux`` are ints, the five fields bytes (empty when absent).

        Raises:
            RingCorruptError: a record header is inconsistent; nothing past it is consumed.
        """
        cdef list out = []
        self._read(max_records, out, None)
        return out

    def read_into(self, list out not None, Py_ssize_t max_records=DEFAULT_BATCH):
        """Like ``read_batch``, appending to ``out``; returns how many records were read."""
        return self._read(max_records, out, None)

    def drain(self, callback, Py_ssize_t max_records=DEFAULT_BATCH):
        """Consume up to ``max_records`` records, calling ``callback(kind, aux, account,
        subject, reply, headers, payload)`` for each; returns how many were consumed.

        A record is consumed before its callback runs, so an exception from the callback
        propagates with that record gone and the rest still pending.
        """
        if callback is None:
            raise TypeError("callback must be callable")
        return self._read(max_records, None, callback)

    def prepare_sleep(self):
        """Raise the ``waiting`` flag; True when the ring is still empty and the consumer
        may sleep until signalled, False (flag lowered again) when records are pending."""
        self._check_open()
        cdef uint64_t head = nx_load_relaxed_u64(self._head)
        nx_exchange_u32(self._waiting, 1)
        nx_fence()
        cdef uint64_t tail = nx_load_acquire_u64(self._tail)
        self._tail_seen = tail
        if tail > head:
            nx_store_relaxed_u32(self._waiting, 0)
            return False
        return True

    def end_sleep(self):
        """Lower the ``waiting`` flag once awake, so producers stop signalling."""
        self._check_open()
        nx_store_relaxed_u32(self._waiting, 0)

    def discard(self):
        """Drop everything pending (a consumer that restarts without its predecessor's
        state); returns the bytes dropped."""
        self._check_open()
        if self._busy:
            raise RuntimeError("cannot discard while reading")
        cdef uint64_t head = nx_load_relaxed_u64(self._head)
        cdef uint64_t tail = nx_load_acquire_u64(self._tail)
        self._tail_seen = tail
        if tail <= head:
            return 0
        nx_store_release_u64(self._head, tail)
        return tail - head
