# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The benchmark client's hot path — compiled twin of ``benchclient_py``.

Same API, same counts and same bytes as the pure twin; its header describes the
``PubBuilder`` and ``FrameCounter`` objects and the payload tag. Here both do their work
with the GIL released, so publisher and subscriber threads of one benchmark process
overlap: Python only calls ``build`` once per batch (about 64 KiB of frames) and ``feed``
once per socket read.

A frame split across reads is carried in ``pend``: only the bytes needed to complete that
one frame are copied from the next read (first up to its control line's newline, then up
to the end of its payload), then it is processed by the same ``_one`` as every frame
found whole in the read buffer. Everything the counter queues for the server (PONG,
echoed replies, acks) goes to ``out``; bitmap, histogram and both buffers are malloc'd,
which is what lets ``feed`` run without the GIL.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint64_t, int64_t
from libc.stdlib cimport malloc, realloc, free, calloc
from libc.string cimport memcpy, memchr, memset, memcmp
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

LAT_NONE = 0
LAT_PAYLOAD = 1
LAT_RING = 2

cdef enum:
    SUB_BITS = 7
    HALF = 64
    C_NBUCKETS = 3776  # (64 - SUB_BITS + 2) * HALF
    C_MAX_CONTROL_LINE = 1048576
    ERR_TEXT = 256
    ERR_PAYLOAD = 512

NBUCKETS = C_NBUCKETS
MAX_CONTROL_LINE = C_MAX_CONTROL_LINE
SEQ_MASK = (1 << 48) - 1
cdef uint64_t C_SEQ_MASK = (<uint64_t>1 << 48) - 1
# Tags at or above this sequence are not tracked (they would need a bitmap of gigabytes);
# they can only come from a publisher that is not this benchmark.
cdef uint64_t C_MAX_TRACK_SEQ = <uint64_t>1 << 28
MAX_TRACK_SEQ = 1 << 28

# _one() failure codes, turned into ProtocolError text after the GIL is back.
cdef enum:
    E_NONE = 0
    E_NOMEM = 1
    E_FRAME = 2
    E_CRLF = 3
    E_OP = 4
    E_LINE = 5


class ProtocolError(Exception):
    """The byte stream is not the NATS protocol."""


cdef struct Buf:
    char* p
    size_t len
    size_t cap


cdef inline int _reserve(Buf* b, size_t extra) noexcept nogil:
    cdef size_t want = b.len + extra
    cdef size_t cap
    cdef char* np
    if want <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 4096
    while cap < want:
        cap *= 2
    np = <char*>realloc(b.p, cap)
    if np == NULL:
        return -1
    b.p = np
    b.cap = cap
    return 0


cdef inline int _append(Buf* b, const char* s, size_t n) noexcept nogil:
    if _reserve(b, n) < 0:
        return -1
    memcpy(b.p + b.len, s, n)
    b.len += n
    return 0


cdef inline size_t _put_uint(char* dst, uint64_t v) noexcept nogil:
    # Decimal digits of v at dst; returns how many.
    cdef char tmp[20]
    cdef size_t n = 0
    cdef size_t i
    if v == 0:
        dst[0] = 48
        return 1
    while v:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    for i in range(n):
        dst[i] = tmp[n - 1 - i]
    return n


cdef inline void _put_le64(char* dst, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        dst[i] = <char>(v & 0xFF)
        v >>= 8


cdef inline uint64_t _get_le64(const char* src) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(7, -1, -1):
        v = (v << 8) | <uint8_t>src[i]
    return v


cdef inline uint64_t _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline int _bitlen(uint64_t v) noexcept nogil:
    cdef int n = 0
    while v:
        v >>= 1
        n += 1
    return n


cdef inline Py_ssize_t _bucket(uint64_t v) noexcept nogil:
    cdef int e
    if v < (1 << SUB_BITS):
        return <Py_ssize_t>v
    e = _bitlen(v) - SUB_BITS
    return e * HALF + <Py_ssize_t>(v >> e)


def bucket_index(v):
    """Histogram bucket of ``v`` (negative values count as 0)."""
    if v <= 0:
        return 0
    return _bucket(<uint64_t>v)


def now_ns():
    """The clock both twins stamp with (CLOCK_MONOTONIC)."""
    return _now()


# -- publishing -----------------------------------------------------------------------


cdef class PubBuilder:
    """Builds batches of PUB/HPUB frames; see ``benchclient_py``."""

    cdef readonly bytes subject
    cdef readonly object reply
    cdef readonly bytes headers
    cdef readonly Py_ssize_t size
    cdef readonly bint reply_seq
    cdef readonly bint stamp
    cdef readonly bint tagged
    cdef readonly int pub_id
    cdef readonly Py_ssize_t keys
    cdef readonly Py_ssize_t frame_size
    cdef public unsigned long long seq
    cdef bytes _head
    cdef bytes _sizes
    cdef bytes _payload
    cdef bytes _reply
    cdef bint has_reply
    cdef const char* head_p
    cdef size_t head_n
    cdef const char* sizes_p
    cdef size_t sizes_n
    cdef const char* hdrs_p
    cdef size_t hdrs_n
    cdef const char* body_p
    cdef const char* reply_p
    cdef size_t reply_n
    cdef uint64_t* ring
    cdef Py_ssize_t ring_n
    cdef Buf buf

    def __cinit__(self):
        self.ring = NULL
        self.buf.p = NULL
        self.buf.len = 0
        self.buf.cap = 0

    def __init__(self, subject, Py_ssize_t size, *, reply=None, bint reply_seq=False,
                 headers=None, int pub_id=0, bint stamp=False, Py_ssize_t ring=0,
                 Py_ssize_t keys=0, payload=None):
        if payload is not None:
            size = len(payload)
        self.subject = bytes(subject)
        self.size = size
        self.reply = bytes(reply) if reply is not None else None
        self._reply = self.reply if reply is not None else b""
        self.reply_seq = reply_seq and reply is not None
        self.headers = bytes(headers) if headers else b""
        self.pub_id = pub_id
        self.tagged = size >= 8 and payload is None
        self.stamp = stamp and self.tagged and size >= 16
        self.keys = keys
        self.seq = 0
        self._payload = bytes(payload) if payload is not None else b"x" * size
        hl = len(self.headers)
        op = b"HPUB " if hl else b"PUB "
        self._sizes = (b" %d %d\r\n" % (hl, hl + size)) if hl else (b" %d\r\n" % size)
        self._head = op + self.subject
        if self.reply is not None and not self.keys:
            self._head += b" " + self.reply
            if self.reply_seq:
                self._head += b"."
        extra = 0
        if self.keys:
            extra += 20
            if self.reply is not None:
                extra += len(self.reply) + 22
        elif self.reply_seq:
            extra += 20
        self.frame_size = len(self._head) + len(self._sizes) + hl + size + 2 + extra
        # The bytes objects are held by self, so these views stay valid for its lifetime.
        self.has_reply = self.reply is not None
        self.head_p = self._head
        self.head_n = len(self._head)
        self.sizes_p = self._sizes
        self.sizes_n = len(self._sizes)
        self.hdrs_p = self.headers
        self.hdrs_n = hl
        self.body_p = self._payload
        self.reply_p = self._reply
        self.reply_n = len(self._reply)
        if ring > 0:
            self.ring = <uint64_t*>calloc(ring, sizeof(uint64_t))
            if self.ring == NULL:
                raise MemoryError()
            self.ring_n = ring

    def __dealloc__(self):
        free(self.ring)
        free(self.buf.p)

    def ring_get(self, unsigned long long seq):
        if self.ring_n == 0:
            return 0
        return self.ring[seq % self.ring_n]

    def build(self, Py_ssize_t count):
        """The next ``count`` frames, as one buffer."""
        cdef int rc
        if count < 0:
            raise ValueError("count must be >= 0")
        with nogil:
            rc = self._build(count)
        if rc < 0:
            raise MemoryError()
        return PyBytes_FromStringAndSize(self.buf.p, self.buf.len)

    cdef int _build(self, Py_ssize_t count) noexcept nogil:
        cdef uint64_t ts = _now()
        cdef uint64_t s
        cdef Py_ssize_t i
        cdef char* w
        cdef const char* head = self.head_p
        cdef size_t head_n = self.head_n
        cdef const char* sizes = self.sizes_p
        cdef size_t sizes_n = self.sizes_n
        cdef const char* hdrs = self.hdrs_p
        cdef size_t hdrs_n = self.hdrs_n
        cdef const char* body = self.body_p
        cdef size_t body_n = <size_t>self.size
        cdef const char* reply = self.reply_p
        cdef size_t reply_n = self.reply_n
        cdef size_t skip = 0
        if self.tagged:
            skip = 16 if self.stamp else 8
        self.buf.len = 0
        if _reserve(&self.buf, <size_t>count * <size_t>self.frame_size) < 0:
            return -1
        w = self.buf.p
        for i in range(count):
            s = self.seq + <uint64_t>i
            if self.ring_n:
                self.ring[s % <uint64_t>self.ring_n] = ts
            memcpy(w, head, head_n)
            w += head_n
            if self.keys:
                w += _put_uint(w, s % <uint64_t>self.keys)
                if self.has_reply:
                    w[0] = 32
                    w += 1
                    memcpy(w, reply, reply_n)
                    w += reply_n
                    if self.reply_seq:
                        w[0] = 46
                        w += 1
                        w += _put_uint(w, s)
            elif self.reply_seq:
                w += _put_uint(w, s)
            memcpy(w, sizes, sizes_n)
            w += sizes_n
            if hdrs_n:
                memcpy(w, hdrs, hdrs_n)
                w += hdrs_n
            if self.tagged:
                _put_le64(w, (<uint64_t>self.pub_id << 48) | (s & C_SEQ_MASK))
                if self.stamp:
                    _put_le64(w + 8, ts)
            memcpy(w + skip, body + skip, body_n - skip)
            w += body_n
            w[0] = 13
            w[1] = 10
            w += 2
        self.buf.len = w - self.buf.p
        self.seq += <uint64_t>count
        return 0


# -- receiving ------------------------------------------------------------------------


cdef inline bint _is_space(char c) noexcept nogil:
    return c == 32 or c == 9


cdef inline long long _parse_size(const char* s, size_t n) noexcept nogil:
    # Go's parseSize: 1 to 9 digits, else -1.
    cdef long long v = 0
    cdef size_t i
    if n == 0 or n > 9:
        return -1
    for i in range(n):
        if s[i] < 48 or s[i] > 57:
            return -1
        v = v * 10 + (s[i] - 48)
    return v


cdef inline bint _upper_eq(const char* s, const char* word, size_t n) noexcept nogil:
    cdef size_t i
    cdef char c
    for i in range(n):
        c = s[i]
        if 97 <= c <= 122:
            c -= 32
        if c != word[i]:
            return False
    return True


cdef inline bint _has_error_key(const char* p, size_t n) noexcept nogil:
    # A JetStream API error reply carries the JSON key "error".
    cdef const char* q = p
    cdef const char* end = p + n
    while end - q >= 7:
        q = <const char*>memchr(q, 34, end - q - 6)
        if q == NULL:
            return False
        if memcmp(q, b'"error"', 7) == 0:
            return True
        q += 1
    return False


cdef class FrameCounter:
    """Counts complete frames in a server byte stream; see ``benchclient_py``."""

    cdef public long long msgs
    cdef public long long nbytes
    cdef public long long pings
    cdef public long long pongs
    cdef public long long oks
    cdef public long long infos
    cdef public long long statuses
    cdef public int last_status
    cdef public long long errors
    cdef public long long err_count
    cdef public long long dups
    cdef public long long foreign
    cdef public long long lat_count
    cdef public long long lat_min
    cdef public long long lat_max
    cdef public long long lat_sum
    cdef public object first_error
    cdef public object last_err
    cdef readonly int track
    cdef readonly int latency
    cdef readonly bint scan_errors
    cdef readonly bint echo
    cdef readonly object source
    cdef readonly object ack
    cdef const char* ack_p
    cdef size_t ack_n
    cdef uint64_t* ring
    cdef uint64_t ring_n
    cdef uint64_t now
    cdef Buf pend
    cdef Buf out
    cdef Buf bits
    cdef int64_t* hist
    cdef int perr
    cdef char errtext[ERR_TEXT]
    cdef int errtext_n
    cdef bint errtext_new
    cdef char errpay[ERR_PAYLOAD]
    cdef int errpay_n
    cdef bint errpay_new

    def __cinit__(self):
        self.hist = <int64_t*>calloc(C_NBUCKETS, sizeof(int64_t))
        if self.hist == NULL:
            raise MemoryError()
        self.pend.p = NULL
        self.pend.len = self.pend.cap = 0
        self.out.p = NULL
        self.out.len = self.out.cap = 0
        self.bits.p = NULL
        self.bits.len = self.bits.cap = 0

    def __init__(self, *, int track=0, bint scan_errors=False, int latency=0,
                 PubBuilder source=None, bint echo=False, ack=None):
        if latency == 2 and source is None:
            raise ValueError("LAT_RING needs the PubBuilder whose ring holds the send times")
        self.track = track
        self.scan_errors = scan_errors
        self.latency = latency
        self.source = source
        if source is not None:
            # The builder owns the ring; holding it in self.source keeps it alive.
            self.ring = source.ring
            self.ring_n = <uint64_t>source.ring_n
        self.echo = echo
        self.ack = bytes(ack) if ack is not None else None
        if self.ack is not None:
            self.ack_p = <const char*>(<char*>self.ack)
            self.ack_n = len(self.ack)
        self.reset()

    def __dealloc__(self):
        free(self.hist)
        free(self.pend.p)
        free(self.out.p)
        free(self.bits.p)

    def reset(self):
        """Forget every count, the bitmap, the histogram and any carried partial frame."""
        self.msgs = self.nbytes = self.pings = self.pongs = self.oks = self.infos = 0
        self.statuses = 0
        self.last_status = 0
        self.errors = self.err_count = self.dups = self.foreign = 0
        self.lat_count = self.lat_min = self.lat_max = self.lat_sum = 0
        self.first_error = b""
        self.last_err = ""
        self.errtext_new = self.errpay_new = False
        self.errpay_n = 0
        memset(self.hist, 0, C_NBUCKETS * sizeof(int64_t))
        if self.bits.p != NULL:
            memset(self.bits.p, 0, self.bits.cap)
        self.bits.len = 0
        self.pend.len = 0
        self.out.len = 0

    # -- results -----------------------------------------------------------------------

    @property
    def pending_output(self):
        return self.out.len

    @property
    def buffered(self):
        """Bytes of a split frame carried to the next ``feed``."""
        return self.pend.len

    def take_output(self):
        b = PyBytes_FromStringAndSize(self.out.p, self.out.len)
        self.out.len = 0
        return b

    def histogram(self):
        """Non-empty buckets as (bucket index, count), in index order."""
        cdef Py_ssize_t i
        return [(i, self.hist[i]) for i in range(C_NBUCKETS) if self.hist[i]]

    def bitmap(self):
        """The tag bitmap: bit ``sequence * track + publisher`` is set per message seen."""
        return PyBytes_FromStringAndSize(self.bits.p, self.bits.len)

    # -- parsing ---------------------------------------------------------------------

    def feed(self, const unsigned char[::1] data, Py_ssize_t n=-1):
        """Count the frames completed by ``data[:n]``; returns the data messages counted.

        Raises:
            ProtocolError: the stream is not NATS.
        """
        cdef long long before = self.msgs
        cdef const char* p = NULL
        cdef int rc
        if n < 0 or n > data.shape[0]:
            n = data.shape[0]
        if n > 0:
            p = <const char*>&data[0]
        with nogil:
            self.now = _now()
            self.perr = E_NONE
            rc = self._feed(p, <size_t>n)
        if self.errtext_new:
            self.errtext_new = False
            self.last_err = self.errtext[:self.errtext_n].decode("utf-8", "replace")
        if self.errpay_new:
            self.errpay_new = False
            self.first_error = self.errpay[:self.errpay_n]
        if rc < 0:
            if self.perr == E_NOMEM:
                raise MemoryError()
            raise ProtocolError({
                E_FRAME: "bad MSG/HMSG frame",
                E_CRLF: "payload not followed by CRLF",
                E_OP: "unknown operation",
                E_LINE: "control line too long",
            }.get(self.perr, "protocol error"))
        return self.msgs - before

    cdef int _feed(self, const char* p, size_t n) noexcept nogil:
        cdef size_t pos = 0
        cdef Py_ssize_t r
        cdef Py_ssize_t need = -1
        cdef const char* nl = NULL
        cdef size_t take
        if self.pend.len:
            while True:
                r = self._one(self.pend.p, self.pend.len, &need)
                if r < 0:
                    return -1
                if r > 0:
                    self.pend.len = 0
                    break
                if need < 0:
                    nl = <const char*>memchr(p + pos, 10, n - pos) if pos < n else NULL
                    take = (nl - (p + pos) + 1) if nl != NULL else n - pos
                else:
                    take = <size_t>need - self.pend.len
                    if take > n - pos:
                        take = n - pos
                if _append(&self.pend, p + pos, take) < 0:
                    self.perr = E_NOMEM
                    return -1
                pos += take
                if pos >= n and (need < 0 and nl == NULL or need >= 0 and self.pend.len < <size_t>need):
                    if need < 0 and self.pend.len > C_MAX_CONTROL_LINE:
                        self.perr = E_LINE
                        return -1
                    return 0
        while pos < n:
            r = self._one(p + pos, n - pos, &need)
            if r < 0:
                return -1
            if r == 0:
                break
            pos += <size_t>r
        if pos < n:
            if need < 0 and n - pos > C_MAX_CONTROL_LINE:
                self.perr = E_LINE
                return -1
            if _append(&self.pend, p + pos, n - pos) < 0:
                self.perr = E_NOMEM
                return -1
        return 0

    cdef Py_ssize_t _one(self, const char* ptr, size_t avail, Py_ssize_t* need) noexcept nogil:
        # One frame at ptr: bytes consumed, 0 when incomplete (need = its full length,
        # or -1 while the control line is incomplete), -1 on a protocol error.
        cdef const char* nl = <const char*>memchr(ptr, 10, avail)
        cdef const char* le
        cdef const char* tok[7]
        cdef size_t tlen[7]
        cdef int nt = 0
        cdef const char* q
        cdef const char* ts
        cdef char c
        cdef bint hmsg
        cdef long long hdr = 0
        cdef long long total
        cdef size_t line_n
        cdef size_t full
        need[0] = -1
        if nl == NULL:
            return 0
        le = nl - 1 if nl > ptr and (nl - 1)[0] == 13 else nl
        line_n = <size_t>(nl - ptr) + 1
        if le == ptr:
            return <Py_ssize_t>line_n
        c = ptr[0] | 0x20
        if c == 109 or c == 104:  # 'm', 'h'
            hmsg = c == 104
            q = ptr
            while q < le:
                while q < le and _is_space(q[0]):
                    q += 1
                if q >= le:
                    break
                if nt == 7:
                    self.perr = E_FRAME
                    return -1
                ts = q
                while q < le and not _is_space(q[0]):
                    q += 1
                tok[nt] = ts
                tlen[nt] = <size_t>(q - ts)
                nt += 1
            if hmsg:
                if nt != 5 and nt != 6:
                    self.perr = E_FRAME
                    return -1
                hdr = _parse_size(tok[nt - 2], tlen[nt - 2])
                total = _parse_size(tok[nt - 1], tlen[nt - 1])
                if hdr < 0 or total < 0 or hdr > total:
                    self.perr = E_FRAME
                    return -1
            else:
                if nt != 4 and nt != 5:
                    self.perr = E_FRAME
                    return -1
                total = _parse_size(tok[nt - 1], tlen[nt - 1])
                if total < 0:
                    self.perr = E_FRAME
                    return -1
            full = line_n + <size_t>total + 2
            need[0] = <Py_ssize_t>full
            if avail < full:
                return 0
            if ptr[full - 2] != 13 or ptr[full - 1] != 10:
                self.perr = E_CRLF
                return -1
            if (hmsg and nt == 6) or (not hmsg and nt == 5):
                self._message(tok[1], tlen[1], tok[3], tlen[3], nl + 1, <size_t>hdr, <size_t>total)
            else:
                self._message(tok[1], tlen[1], NULL, 0, nl + 1, <size_t>hdr, <size_t>total)
            if self.perr != E_NONE:
                return -1
            return <Py_ssize_t>full
        if le - ptr >= 4 and _upper_eq(ptr, b"PING", 4):
            self.pings += 1
            if _append(&self.out, b"PONG\r\n", 6) < 0:
                self.perr = E_NOMEM
                return -1
        elif le - ptr >= 4 and _upper_eq(ptr, b"PONG", 4):
            self.pongs += 1
        elif le - ptr >= 3 and _upper_eq(ptr, b"+OK", 3):
            self.oks += 1
        elif le - ptr >= 4 and _upper_eq(ptr, b"INFO", 4):
            self.infos += 1
        elif le - ptr >= 4 and _upper_eq(ptr, b"-ERR", 4):
            self.err_count += 1
            self._err_text(ptr + 4, le)
        else:
            self.perr = E_OP
            return -1
        return <Py_ssize_t>line_n

    cdef void _err_text(self, const char* s, const char* e) noexcept nogil:
        while s < e and _is_space(s[0]):
            s += 1
        while e > s and _is_space((e - 1)[0]):
            e -= 1
        if e - s >= 2 and s[0] == 39 and (e - 1)[0] == 39:
            s += 1
            e -= 1
        if e - s > ERR_TEXT:
            e = s + ERR_TEXT
        memcpy(self.errtext, s, e - s)
        self.errtext_n = <int>(e - s)
        self.errtext_new = True

    cdef void _message(self, const char* subj, size_t subj_n, const char* reply, size_t reply_n,
                       const char* h, size_t hdr, size_t total) noexcept nogil:
        cdef size_t plen = total - hdr
        cdef const char* pp = h + hdr
        cdef uint64_t tag
        cdef uint64_t bit
        cdef size_t byte
        cdef size_t old
        cdef uint8_t mask
        if (hdr >= 12 and plen == 0 and memcmp(h, b"NATS/1.0 ", 9) == 0
                and 48 <= h[9] <= 57 and 48 <= h[10] <= 57 and 48 <= h[11] <= 57):
            self.statuses += 1
            self.last_status = (h[9] - 48) * 100 + (h[10] - 48) * 10 + (h[11] - 48)
            return
        self.msgs += 1
        self.nbytes += plen
        if self.track and plen >= 8:
            tag = _get_le64(pp)
            if (tag >> 48) >= <uint64_t>self.track or (tag & C_SEQ_MASK) >= C_MAX_TRACK_SEQ:
                self.foreign += 1
                self._message_rest(subj, subj_n, reply, reply_n, pp, plen)
                return
            bit = (tag & C_SEQ_MASK) * <uint64_t>self.track + (tag >> 48)
            byte = <size_t>(bit >> 3)
            if byte >= self.bits.len:
                old = self.bits.cap
                if byte >= old:
                    if _reserve(&self.bits, byte + 1 - self.bits.len) < 0:
                        self.perr = E_NOMEM
                        return
                    memset(self.bits.p + old, 0, self.bits.cap - old)
                self.bits.len = byte + 1
            mask = <uint8_t>(1 << (bit & 7))
            if (<uint8_t>self.bits.p[byte]) & mask:
                self.dups += 1
            else:
                self.bits.p[byte] = <char>((<uint8_t>self.bits.p[byte]) | mask)
        self._message_rest(subj, subj_n, reply, reply_n, pp, plen)

    cdef void _message_rest(self, const char* subj, size_t subj_n, const char* reply,
                            size_t reply_n, const char* pp, size_t plen) noexcept nogil:
        cdef uint64_t seq
        cdef const char* q
        cdef const char* body
        cdef size_t body_n
        cdef char num[24]
        cdef size_t num_n
        if self.scan_errors and _has_error_key(pp, plen):
            self.errors += 1
            if self.errpay_n == 0:
                self.errpay_n = <int>(plen if plen < ERR_PAYLOAD else ERR_PAYLOAD)
                memcpy(self.errpay, pp, self.errpay_n)
                self.errpay_new = True
        if self.latency == 1:
            if plen >= 16:
                self._record(<int64_t>(self.now - _get_le64(pp + 8)))
        elif self.latency == 2 and self.ring_n:
            q = subj + subj_n
            while q > subj and (q - 1)[0] != 46:
                q -= 1
            seq = 0
            if q < subj + subj_n:
                while q < subj + subj_n:
                    if q[0] < 48 or q[0] > 57:
                        break
                    seq = seq * 10 + <uint64_t>(q[0] - 48)
                    q += 1
                if q == subj + subj_n:
                    self._record(<int64_t>(self.now - self.ring[seq % self.ring_n]))
        if reply != NULL and (self.echo or self.ack_p != NULL):
            if self.echo:
                body = pp
                body_n = plen
            else:
                body = self.ack_p
                body_n = self.ack_n
            num_n = _put_uint(num, body_n)
            if _reserve(&self.out, reply_n + num_n + body_n + 8) < 0:
                self.perr = E_NOMEM
                return
            _append(&self.out, b"PUB ", 4)
            _append(&self.out, reply, reply_n)
            _append(&self.out, b" ", 1)
            _append(&self.out, num, num_n)
            _append(&self.out, b"\r\n", 2)
            _append(&self.out, body, body_n)
            _append(&self.out, b"\r\n", 2)

    cdef inline void _record(self, int64_t v) noexcept nogil:
        if v < 0:
            v = 0
        if self.lat_count == 0 or v < self.lat_min:
            self.lat_min = v
        if v > self.lat_max:
            self.lat_max = v
        self.lat_count += 1
        self.lat_sum += v
        self.hist[_bucket(<uint64_t>v)] += 1
