# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The client-protocol hot path: parse, match, deliver — compiled twin of ``core_py``.

Theory of operation
-------------------
A ``Client`` is one connection's protocol state: its parser position, its options
(headers, echo, verbose, pedantic, no_responders), its counters and its outbound buffer.
Bytes read from the socket go in with ``feed()``; ``next_event()`` then walks every
complete frame. Control operations (CONNECT, SUB, UNSUB, PING, PONG, INFO, +OK, -ERR)
come back to Python as tuples, one at a time, so the server applies them in order.
PUB and HPUB frames never reach Python when the client is attached to a ``Router``:
they are matched in the account's sublist and every delivery is appended, as a ready
MSG/HMSG frame, to the receiving client's outbound buffer. Receivers whose buffer went
from empty to non-empty are listed once in ``Router.touched``; the server flushes each
of them once per read batch.

Deliveries to internal subscribers (system services, JetStream) are queued as tuples in
``Router.internal`` for Python to dispatch after the batch; subscriptions that reached
their auto-unsubscribe limit are listed in ``Router.expired``; clients whose pending
bytes passed ``max_pending`` are flagged ``slow`` and listed in ``Router.touched`` so
the server closes them. Nothing here does I/O or reads a clock.

Without a router (client-side tools, tests), PUB/HPUB frames come back as events too,
which makes this the sans-IO server-side parser of ``natsx.protocol``.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memcmp
from libc.stdint cimport uint32_t, uint64_t

from natsx._speedups._sublist cimport Sublist, SublistResult, Subscription
from natsx._speedups._ring cimport Ring, RecordView

DEF _REC_MSG = 1
# A MSG record whose subject is "<matched> <shown>" (a JetStream delivery), in its aux.
DEF AUX_SHOWN = 1

# Event kinds returned by next_event(); the same numbers in core_py.
DEF _EV_CONNECT = 1
DEF _EV_SUB = 2
DEF _EV_UNSUB = 3
DEF _EV_PING = 4
DEF _EV_PONG = 5
DEF _EV_INFO = 6
DEF _EV_OK = 7
DEF _EV_ERR = 8
DEF _EV_PUB = 9
DEF _EV_CLOSE = 10

EV_CONNECT = _EV_CONNECT
EV_SUB = _EV_SUB
EV_UNSUB = _EV_UNSUB
EV_PING = _EV_PING
EV_PONG = _EV_PONG
EV_INFO = _EV_INFO
EV_OK = _EV_OK
EV_ERR = _EV_ERR
EV_PUB = _EV_PUB
EV_CLOSE = _EV_CLOSE

# Close reasons carried by EV_CLOSE (the /connz reason strings of the Go server).
REASON_PROTOCOL = "Protocol Violation"
REASON_PARSE = "Parse Error"
REASON_AUTH = "Authentication Failure"
REASON_MAX_PAYLOAD = "Maximum Payload Exceeded"
REASON_MAX_CONTROL_LINE = "Maximum Control Line Exceeded"
REASON_CLIENT_CLOSED = "Client Closed"

ERR_UNKNOWN_OP = "Unknown Protocol Operation"
ERR_AUTH = "Authorization Violation"
ERR_MAX_PAYLOAD = "Maximum Payload Violation"
ERR_MAX_CONTROL_LINE = "maximum control line exceeded"

cdef bytes _OK = b"+OK\r\n"
cdef bytes _CRLF = b"\r\n"

# States between calls: where the next frame starts being parsed.
DEF ST_OP = 0        # at the start of a frame
DEF ST_CLOSED = 1    # a protocol error happened; everything after is ignored


cdef inline bint _is_space(unsigned char c) nogil:
    return c == 32 or c == 9


cdef inline unsigned char _upper(unsigned char c) nogil:
    if 97 <= c <= 122:
        return c - 32
    return c


cdef inline Py_ssize_t _parse_size(const unsigned char* p, Py_ssize_t n) nogil:
    # Go's parseSize: 1 to 9 decimal digits, else -1.
    cdef Py_ssize_t i, v = 0
    if n <= 0 or n > 9:
        return -1
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            return -1
        v = v * 10 + (p[i] - 48)
    return v


cdef inline int _split_args(const unsigned char* p, Py_ssize_t n,
                            Py_ssize_t* starts, Py_ssize_t* lens, int maxargs) nogil:
    # Splits on spaces, tabs, CR and LF like Go's splitArg; returns the count, or
    # maxargs + 1 when there are more arguments than fit.
    cdef int count = 0
    cdef Py_ssize_t i, start = -1
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if c == 32 or c == 9 or c == 13 or c == 10:
            if start >= 0:
                if count == maxargs:
                    return maxargs + 1
                starts[count] = start
                lens[count] = i - start
                count += 1
                start = -1
        elif start < 0:
            start = i
    if start >= 0:
        if count == maxargs:
            return maxargs + 1
        starts[count] = start
        lens[count] = n - start
        count += 1
    return count


cdef inline bint _has_prefix(const unsigned char* p, Py_ssize_t n, const char* prefix, Py_ssize_t plen) nogil:
    return n > plen and memcmp(p, prefix, plen) == 0


cdef inline bint _is_literal_valid(const unsigned char* p, Py_ssize_t n) nogil:
    # Go's IsValidLiteralSubject: non-empty tokens, no whitespace, no wildcard tokens.
    cdef Py_ssize_t i, tstart = 0
    cdef unsigned char c
    if n == 0:
        return False
    for i in range(n + 1):
        if i == n or p[i] == 46:
            if i == tstart:
                return False
            if i - tstart == 1 and (p[tstart] == 42 or p[tstart] == 62):
                return False
            tstart = i + 1
        else:
            c = p[i]
            if c == 32 or c == 9 or c == 13 or c == 10 or c == 12:
                return False
    return True


cdef class Router:
    """Shared by every client of one worker: what a read batch left for Python to do."""

    cdef public list touched      # clients whose outbound buffer needs a flush (or close)
    cdef public list internal     # (sub, subject, reply, headers, payload, publisher)
    cdef public list expired      # subscriptions that reached their auto-unsubscribe max
    cdef public unsigned long long in_msgs
    cdef public unsigned long long in_bytes
    cdef public unsigned long long out_msgs
    cdef public unsigned long long out_bytes
    cdef public unsigned long long slow_consumers
    cdef public dict sublists      # account name (bytes) -> Sublist, for messages from peers
    cdef public list congested     # peers whose ring overflowed in this batch
    cdef public unsigned long long forwarded
    cdef uint64_t _rand
    cdef unsigned long long _stamp
    cdef list _hits

    def __init__(self, seed=0x9E3779B97F4A7C15):
        self.touched = []
        self.internal = []
        self.expired = []
        self.sublists = {}
        self.congested = []
        self.forwarded = 0
        self._hits = []
        self._stamp = 0
        self._rand = <uint64_t>seed or 1

    cdef inline uint64_t rand(self):
        # xorshift64*: queue member selection needs speed, not cryptographic quality.
        cdef uint64_t x = self._rand
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self._rand = x
        return x * <uint64_t>0x2545F4914F6CDD1D


MAPPER_CACHE_MAX = 4096
cdef object _MISS = object()

# Transform kinds: natsx.server.mapping's (Go's enum), same numbers.
DEF _TR_NO = 0
DEF _TR_PARTITION = 2
DEF _TR_WILDCARD = 3
DEF _TR_SPLIT_LEFT = 4
DEF _TR_SPLIT_RIGHT = 5
DEF _TR_SLICE_LEFT = 6
DEF _TR_SLICE_RIGHT = 7
DEF _TR_SPLIT = 8
DEF _TR_LEFT = 9
DEF _TR_RIGHT = 10
DEF _TR_RANDOM = 11
DEF _TR_MAX_TOKENS = 256


cdef struct _OutBuf:
    char* p
    Py_ssize_t n
    Py_ssize_t cap


cdef int _ob_put(_OutBuf* b, const char* s, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap
    cdef char* nb
    if n <= 0:
        return 0
    if b.n + n > b.cap:
        cap = b.cap * 2 if b.cap else 128
        while cap < b.n + n:
            cap *= 2
        nb = <char*>realloc(b.p, cap)
        if nb == NULL:
            raise MemoryError()
        b.p = nb
        b.cap = cap
    memcpy(b.p + b.n, s, n)
    b.n += n
    return 0


cdef int _ob_dot(_OutBuf* b) except -1:
    return _ob_put(b, ".", 1)


cdef int _ob_uint(_OutBuf* b, unsigned long long v) except -1:
    cdef char tmp[24]
    cdef int i = 24
    if v == 0:
        return _ob_put(b, "0", 1)
    while v:
        i -= 1
        tmp[i] = <char>(48 + v % 10)
        v //= 10
    return _ob_put(b, tmp + i, 24 - i)


cdef inline uint64_t _xorshift(uint64_t* state):
    cdef uint64_t x = state[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    state[0] = x
    return x * <uint64_t>0x2545F4914F6CDD1D


cdef class CTransform:
    """A subject transform compiled: natsx.server.mapping.Transform (its twin, which
    builds it and which it must agree with) applied without running Python. Subjects of
    more than 256 tokens are left to the twin."""

    cdef list _types, _indexes, _ints, _strs, _dtoks
    cdef Py_ssize_t _nstoks
    cdef bint _fwc_tail
    cdef public bint has_random
    cdef public object twin

    def __init__(self, tr):
        self.twin = tr
        self._types = [int(t) for t in tr.types]
        self._indexes = [[int(i) for i in idx] for idx in tr.indexes]
        self._ints = [int(n) for n in tr.ints]
        self._strs = [bytes(x) for x in tr.strs]
        self._dtoks = [bytes(x) for x in tr.dtoks]
        self._nstoks = len(tr.stoks)
        self._fwc_tail = bool(self._dtoks) and self._dtoks[len(self._dtoks) - 1] == b">"
        self.has_random = bool(tr.has_random)

    def apply(self, bytes subject, bint no_tokens=False):
        """The transformed subject (``no_tokens``: as Go does for a literal source taken
        without splitting the subject)."""
        cdef uint64_t seed = 0x9E3779B97F4A7C15
        return self.apply_c(<const unsigned char*>PyBytes_AS_STRING(subject),
                            PyBytes_GET_SIZE(subject), no_tokens, seed)

    cdef bytes apply_c(self, const unsigned char* s, Py_ssize_t n, bint no_tokens,
                       uint64_t seed):
        cdef Py_ssize_t starts[_TR_MAX_TOKENS]
        cdef Py_ssize_t lens[_TR_MAX_TOKENS]
        cdef Py_ssize_t ntok = 0, i, j, k, start, last, size, pos, rem, first
        cdef long kind, arg, idx
        cdef list index
        cdef uint32_t h
        cdef const unsigned char* tok
        cdef bytes part, sep
        cdef list parts
        cdef _OutBuf ob
        cdef uint64_t rnd = seed | 1
        if not no_tokens:
            start = 0
            for i in range(n + 1):
                if i == n or s[i] == 46:
                    if ntok == _TR_MAX_TOKENS:
                        return self.twin.transform(PyBytes_FromStringAndSize(<char*>s, n))
                    starts[ntok] = start
                    lens[ntok] = i - start
                    ntok += 1
                    start = i + 1
        ob.p = NULL
        ob.n = 0
        ob.cap = 0
        try:
            last = len(self._types) - 1
            for i in range(last + 1):
                kind = <long>self._types[i]
                if kind == _TR_NO:
                    part = <bytes>self._dtoks[i]
                    if PyBytes_GET_SIZE(part) == 1 and PyBytes_AS_STRING(part)[0] == 62:
                        break
                    _ob_put(&ob, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part))
                elif kind == _TR_PARTITION:
                    index = <list>self._indexes[i]
                    h = 0x811C9DC5
                    if len(index):
                        for j in range(len(index)):
                            idx = <long>index[j]
                            if 0 <= idx < ntok:
                                for k in range(lens[idx]):
                                    h = (h ^ s[starts[idx] + k]) * <uint32_t>0x01000193
                    elif not no_tokens:
                        for k in range(n):
                            h = (h ^ s[k]) * <uint32_t>0x01000193
                    arg = <long>self._ints[i]
                    if arg == 0:
                        _ob_put(&ob, "0", 1)
                    else:
                        _ob_uint(&ob, h % <uint32_t>(<uint64_t>arg & 0xFFFFFFFF))
                elif kind == _TR_WILDCARD:
                    index = <list>self._indexes[i]
                    if len(index):
                        idx = <long>index[0]
                        if 0 <= idx < ntok:
                            _ob_put(&ob, <const char*>s + starts[idx], lens[idx])
                elif kind == _TR_RANDOM:
                    arg = <long>self._ints[i]
                    if arg == 0:
                        _ob_put(&ob, "0", 1)
                    else:
                        if arg < 0:
                            arg = -arg
                        _ob_uint(&ob, ((_xorshift(&rnd) >> 33) & 0x7FFFFFFF) % <uint64_t>arg)
                else:
                    idx = <long>(<list>self._indexes[i])[0]
                    if 0 <= idx < ntok:
                        tok = s + starts[idx]
                        size = lens[idx]
                    else:
                        tok = s
                        size = 0
                    arg = <long>self._ints[i]
                    if kind == _TR_SPLIT_LEFT or kind == _TR_SPLIT_RIGHT:
                        if 0 < arg < size:
                            pos = arg if kind == _TR_SPLIT_LEFT else size - arg
                            _ob_put(&ob, <const char*>tok, pos)
                            _ob_dot(&ob)
                            _ob_put(&ob, <const char*>tok + pos, size - pos)
                        else:
                            _ob_put(&ob, <const char*>tok, size)
                    elif kind == _TR_SLICE_LEFT:
                        if 0 < arg < size:
                            j = 0
                            while j + arg <= size:
                                if j:
                                    _ob_dot(&ob)
                                _ob_put(&ob, <const char*>tok + j, arg)
                                if j + arg != size and j + arg + arg > size:
                                    _ob_dot(&ob)
                                    _ob_put(&ob, <const char*>tok + j + arg, size - j - arg)
                                    break
                                j += arg
                        else:
                            _ob_put(&ob, <const char*>tok, size)
                    elif kind == _TR_SLICE_RIGHT:
                        if 0 < arg < size:
                            rem = size % arg
                            if rem:
                                _ob_put(&ob, <const char*>tok, rem)
                                _ob_dot(&ob)
                            j = rem
                            while j + arg <= size:
                                _ob_put(&ob, <const char*>tok + j, arg)
                                if j + arg < size:
                                    _ob_dot(&ob)
                                j += arg
                        else:
                            _ob_put(&ob, <const char*>tok, size)
                    elif kind == _TR_LEFT:
                        _ob_put(&ob, <const char*>tok, arg if 0 < arg < size else size)
                    elif kind == _TR_RIGHT:
                        if 0 < arg < size:
                            _ob_put(&ob, <const char*>tok + size - arg, arg)
                        else:
                            _ob_put(&ob, <const char*>tok, size)
                    elif kind == _TR_SPLIT:
                        sep = <bytes>self._strs[i]
                        if PyBytes_GET_SIZE(sep):
                            parts = PyBytes_FromStringAndSize(<char*>tok, size).split(sep)
                        else:
                            parts = [PyBytes_FromStringAndSize(<char*>tok, size)]
                        k = len(parts)
                        for j in range(k):
                            part = <bytes>parts[j]
                            _ob_put(&ob, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part))
                            if (j < k - 1 and PyBytes_GET_SIZE(<bytes>parts[j + 1])
                                    and not (j == 0 and not PyBytes_GET_SIZE(part))):
                                _ob_dot(&ob)
                if i < last:
                    _ob_dot(&ob)
            if self._fwc_tail:
                first = self._nstoks - 1
                if 0 <= first < ntok:
                    _ob_put(&ob, <const char*>s + starts[first], n - starts[first])
            return PyBytes_FromStringAndSize(ob.p, ob.n)
        finally:
            if ob.p != NULL:
                free(ob.p)


cdef class Mapper:
    """An account's subject mappings as the hot path sees them.

    Compiled mappings (``set(..., entries=)``): ``sources``, a Sublist of the mappings'
    sources whose subscription weights are their positions, tells in compiled code
    whether a mapping applies and which comes first; its destination (picked by weight
    with the Mapper's own generator) is a ``CTransform``. No Python runs per message, and
    the subjects no mapping covers (replies, inboxes) cost one sublist lookup.

    Otherwise ``resolve(subject)`` (natsx.server.mapping.Mappings.plan, the pure build's
    path) runs once per distinct subject and its plan is cached: None (no mapping
    applies), the mapped subject, or ``(cumulative weights, outs)`` where an out is the
    mapped subject or a callable (a destination using ``random()``).

    Every client core of the account shares its Mapper, so a reload that changes the
    mappings reaches them all at once; an account without mappings is ``active`` False
    and costs its clients one test per publish.
    """

    cdef public bint active
    cdef public object resolve
    cdef Sublist _sources
    cdef list _entries
    cdef dict _cache
    cdef bytes _last
    cdef object _last_plan
    cdef uint64_t _rand

    def __init__(self):
        self.active = False
        self.resolve = None
        self._entries = None
        self._cache = {}
        self._last = None
        self._last_plan = None
        from os import urandom
        self._rand = <uint64_t>int.from_bytes(urandom(8), "little") | 1

    def set(self, resolve, Sublist sources=None, list entries=None):
        """``resolve(subject) -> plan``, or None for no mappings; ``sources`` and
        ``entries`` (per mapping, in order: (has wildcards, cumulative weights, a
        CTransform or None per destination)): see above."""
        self.resolve = resolve
        self._sources = sources
        self._entries = entries if sources is not None else None
        self.active = resolve is not None
        self._cache = {}
        self._last = None
        self._last_plan = None

    def cache_count(self):
        return len(self._cache)

    def map(self, bytes subject, int draw=-1):
        """The subject to route instead of ``subject``, or None when no mapping applies;
        ``draw`` (0..99) replaces the random pick among weighted destinations."""
        if not self.active:
            return None
        return self.map_c(<const unsigned char*>PyBytes_AS_STRING(subject),
                          PyBytes_GET_SIZE(subject), draw)

    cdef inline long _draw(self, int draw):
        if draw >= 0:
            return draw
        return <long>((_xorshift(&self._rand) >> 33) % 100)

    cdef object map_c(self, const unsigned char* subj, Py_ssize_t slen, int draw):
        cdef bytes key = self._last
        cdef object plan
        cdef tuple weights, outs, entry
        cdef Py_ssize_t i, n, best
        cdef long w
        cdef SublistResult r
        cdef Subscription sub
        cdef CTransform tr
        cdef bytes out
        if (key is not None and PyBytes_GET_SIZE(key) == slen
                and memcmp(PyBytes_AS_STRING(key), subj, slen) == 0):
            plan = self._last_plan
            if plan is None or type(plan) is bytes:
                return plan
        else:
            key = PyBytes_FromStringAndSize(<char*>subj, slen)
            if self._entries is not None:
                return self._map_compiled(key, subj, slen, draw)
            if self._sources is not None and not self._sources.has_interest(key):
                self._last = key
                self._last_plan = None
                return None
            plan = self._cache.get(key, _MISS)
            if plan is _MISS:
                plan = self.resolve(key)
                if len(self._cache) >= MAPPER_CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = plan
            self._last = key
            self._last_plan = plan
            if plan is None or type(plan) is bytes:
                return plan
        if type(plan) is CTransform:
            # a compiled destination that changes per message (random())
            return (<CTransform>plan).apply_c(subj, slen, False, _xorshift(&self._rand))
        if type(plan) is tuple and len(<tuple>plan) == 3:
            return self._map_compiled(key, subj, slen, draw)
        weights = <tuple>(<tuple>plan)[0]
        outs = <tuple>(<tuple>plan)[1]
        w = self._draw(draw)
        n = len(weights)
        for i in range(n):
            if w < <long>weights[i]:
                plan = outs[i]
                if type(plan) is bytes:
                    return plan
                return plan()
        return b""

    cdef object _map_compiled(self, bytes key, const unsigned char* subj, Py_ssize_t slen,
                              int draw):
        cdef SublistResult r = self._sources.match(key)
        cdef Py_ssize_t i, n, best = -1
        cdef Subscription sub
        cdef tuple entry, weights, outs
        cdef object tr
        cdef long w
        cdef bytes out
        n = len(r.psubs)
        for i in range(n):
            sub = <Subscription>r.psubs[i]
            if best < 0 or sub.weight < best:
                best = sub.weight
        self._last = key
        if best < 0:
            self._last_plan = None
            return None
        entry = <tuple>self._entries[best]
        weights = <tuple>entry[1]
        outs = <tuple>entry[2]
        n = len(weights)
        tr = None
        if n == 1 and <long>weights[0] == 100:
            tr = outs[0]
        else:
            w = self._draw(draw)
            for i in range(n):
                if w < <long>weights[i]:
                    tr = outs[i]
                    break
            else:
                self._last_plan = entry    # weighted: picked again per message
                return b""
            self._last_plan = entry
        if tr is None:
            if n == 1:
                self._last_plan = b""
            return b""
        # Go splits the subject only when a mapping before the one taken needed it.
        out = (<CTransform>tr).apply_c(subj, slen, best == 0 and not entry[0],
                                       _xorshift(&self._rand))
        if n == 1 and <long>weights[0] == 100:
            self._last_plan = tr if (<CTransform>tr).has_random else out
        return out


cdef class Client:
    """One connection's protocol state, outbound buffer and counters."""

    # identity and options (set by the server)
    cdef public long long cid
    cdef public object router            # Router or None
    cdef public object sublist           # the account's Sublist
    cdef public object account           # opaque to the hot path
    cdef public Mapper mapper             # the account's subject mappings, or None
    cdef public bint headers
    cdef public bint echo
    cdef public bint verbose
    cdef public bint pedantic
    cdef public bint no_responders
    cdef public bint internal            # deliveries are queued to Router.internal
    cdef public bint auth_pending        # any op but CONNECT is an Authorization Violation
    cdef public bint closed
    cdef public bint slow
    cdef public bint flush_pending
    # Protocol tracing (natsx.server.trace): PUB/HPUB come back as events, and each event's
    # op and raw argument are kept for the [TRC] line.
    cdef public bint trace
    cdef public int trace_op
    cdef public object trace_arg
    cdef public long long max_payload
    cdef public long long max_control_line
    cdef public long long max_pending
    cdef public long long inflight        # bytes taken for sending but not yet written
    cdef public object perm_pub           # None, or an object with allowed(subject) -> bool
    cdef public object perm_deliver       # None, or an object with allowed(subject, queue) -> bool
    cdef public object stall_target       # a receiver over 3/4 of max_pending (Go's stalledWait)
    # None, or an object with add(reply) (called per delivery carrying a reply) and
    # allowed(subject) -> bool (asked, uncached, when perm_pub denies): allow_responses
    cdef public object perm_replies
    cdef public dict subs                 # sid -> Subscription, maintained by the server
    cdef public object conn               # the server's connection object
    cdef public bytes account_name        # carried with messages forwarded to peers
    # a peer worker (its interest is in the sublist; deliveries go to its ring)
    cdef public bint peer
    cdef public object ring               # Ring to the peer worker
    cdef public list overflow             # records waiting for room in the ring, in order
    cdef public Py_ssize_t overflow_bytes
    cdef unsigned long long _hit_stamp
    cdef list _hit_queues
    cdef bint _hit_plain
    cdef public bint _congested
    cdef bytes _last_peer_acc
    # The subject being routed while _deliver runs: an internal subscriber is told it when
    # the delivered subject differs (a JetStream delivery), so a stream import can map it.
    cdef const unsigned char* _rsubj
    cdef Py_ssize_t _rslen
    cdef object _last_sublist
    # counters
    cdef public unsigned long long in_msgs
    cdef public unsigned long long in_bytes
    cdef public unsigned long long out_msgs
    cdef public unsigned long long out_bytes
    # outbound buffer
    cdef char* _obuf
    cdef Py_ssize_t _olen
    cdef Py_ssize_t _ocap
    # parser input
    cdef object _buf                      # bytes or bytearray being parsed
    cdef Py_ssize_t _pos
    cdef bytearray _acc                   # holds an incomplete frame between reads
    cdef object _next                     # the read that completes _acc's frame, parsed next
    cdef Py_ssize_t _next_pos
    cdef Py_ssize_t _need                 # size of the frame in _acc when known, else -1
    cdef int _state
    # last match memo
    cdef bytes _last_subject
    cdef SublistResult _last_result
    cdef unsigned long long _last_genid
    cdef dict _perm_cache

    def __cinit__(self):
        self._ocap = 0
        self._olen = 0
        self._obuf = NULL

    def __dealloc__(self):
        if self._obuf != NULL:
            free(self._obuf)

    def __init__(self, cid=0, router=None, sublist=None):
        self.cid = cid
        self.router = router
        self.sublist = sublist
        self.headers = False
        self.echo = True
        self.verbose = True
        self.pedantic = True
        self.no_responders = False
        self.internal = False
        self.auth_pending = False
        self.closed = False
        self.slow = False
        self.flush_pending = False
        self.trace = False
        self.trace_op = 0
        self.trace_arg = None
        self.max_payload = 1048576
        self.max_control_line = 4096
        self.max_pending = 67108864
        self.inflight = 0
        self.perm_pub = None
        self.perm_deliver = None
        self.stall_target = None
        self.perm_replies = None
        self.subs = {}
        self.account_name = b"$G"
        self.mapper = None
        self.peer = False
        self.ring = None
        self.overflow = []
        self.overflow_bytes = 0
        self._hit_stamp = 0
        self._hit_queues = None
        self._hit_plain = False
        self._last_peer_acc = None
        self._last_sublist = None
        self._buf = b""
        self._pos = 0
        self._acc = bytearray()
        self._next = None
        self._next_pos = 0
        self._need = -1
        self._state = ST_OP
        self._last_subject = None
        self._last_result = None
        self._last_genid = 0
        self._perm_cache = {}

    # ------------------------------------------------------------------ outbound

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self._olen + extra
        cdef Py_ssize_t cap
        cdef char* nb
        if need <= self._ocap:
            return 0
        cap = self._ocap * 2 if self._ocap else 4096
        while cap < need:
            cap *= 2
        nb = <char*>realloc(self._obuf, cap)
        if nb == NULL:
            raise MemoryError()
        self._obuf = nb
        self._ocap = cap
        return 0

    cdef inline void _put(self, const void* p, Py_ssize_t n) noexcept:
        memcpy(self._obuf + self._olen, p, n)
        self._olen += n

    cdef inline void _put_int(self, Py_ssize_t v) noexcept:
        cdef char tmp[24]
        cdef int k = 0
        if v == 0:
            self._obuf[self._olen] = 48
            self._olen += 1
            return
        while v > 0:
            tmp[k] = <char>(48 + v % 10)
            v //= 10
            k += 1
        while k > 0:
            k -= 1
            self._obuf[self._olen] = tmp[k]
            self._olen += 1

    cdef inline void _touch(self):
        if not self.flush_pending:
            self.flush_pending = True
            (<Router>self.router).touched.append(self)

    cpdef queue(self, bytes data):
        """Appends raw protocol bytes (INFO, PONG, -ERR ...) to the outbound buffer."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        self._reserve(n)
        self._put(PyBytes_AS_STRING(data), n)

    cpdef bytes take_output(self):
        """Returns everything queued for sending and empties the buffer."""
        cdef bytes out = PyBytes_FromStringAndSize(self._obuf, self._olen)
        self._olen = 0
        if self._ocap > 1048576:
            # Give back memory after a burst; the next burst grows it again.
            free(self._obuf)
            self._obuf = NULL
            self._ocap = 0
        return out

    @property
    def pending_bytes(self):
        return self._olen + self.inflight

    @property
    def out_len(self):
        return self._olen

    cdef bint _over_pending(self, Py_ssize_t extra):
        if self._olen + self.inflight + extra > self.max_pending:
            if not self.slow:
                self.slow = True
                if self.router is not None:
                    (<Router>self.router).slow_consumers += 1
                self._touch()
            return True
        return False

    cdef void _send_err(self, str text):
        self.queue(b"-ERR '" + text.encode() + b"'\r\n")
        if self.router is not None:
            self._touch()

    # ------------------------------------------------------------------ delivery

    cdef bint _deliver(self, Subscription sub, const unsigned char* subj, Py_ssize_t slen,
                       const unsigned char* reply, Py_ssize_t rlen,
                       const unsigned char* hdr, Py_ssize_t hlen,
                       const unsigned char* pay, Py_ssize_t plen) except -1:
        # self is the publisher; sub.client receives.
        cdef Client c = <Client>sub.client
        cdef Py_ssize_t total, msize
        cdef bytes sid
        cdef Router router = <Router>self.router
        if c is None or (c is self and not c.echo) or sub.closed or c.closed:
            return False
        if c.perm_deliver is not None:
            if not c.perm_deliver.allowed(PyBytes_FromStringAndSize(<char*>subj, slen), sub.queue):
                return False
        sub.delivered += 1
        if sub.max_msgs > 0:
            if sub.delivered == sub.max_msgs:
                router.expired.append(sub)
            elif sub.delivered > sub.max_msgs:
                return False
        if c.internal:
            router.internal.append((
                sub,
                PyBytes_FromStringAndSize(<char*>subj, slen),
                PyBytes_FromStringAndSize(<char*>reply, rlen) if rlen else None,
                PyBytes_FromStringAndSize(<char*>hdr, hlen) if hlen else None,
                PyBytes_FromStringAndSize(<char*>pay, plen),
                self,
                PyBytes_FromStringAndSize(<char*>self._rsubj, self._rslen)
                if self._rsubj != NULL and (self._rslen != slen or
                                            memcmp(self._rsubj, subj, slen) != 0) else None,
            ))
            c.out_msgs += 1
            c.out_bytes += hlen + plen
            return True
        sid = sub.sid
        if hlen and not c.headers:
            hlen = 0
        msize = hlen + plen
        total = slen + PyBytes_GET_SIZE(sid) + rlen + msize + 48
        if c._over_pending(total):
            return False
        if (c._olen + c.inflight) * 4 > c.max_pending * 3 and not c.internal:
            # Go's fast-producer stall: this publisher waits a little after the batch.
            self.stall_target = c
        c._reserve(total)
        if hlen:
            c._put(b"HMSG ", 5)
        else:
            c._put(b"MSG ", 4)
        c._put(subj, slen)
        c._obuf[c._olen] = 32
        c._olen += 1
        c._put(PyBytes_AS_STRING(sid), PyBytes_GET_SIZE(sid))
        c._obuf[c._olen] = 32
        c._olen += 1
        if rlen:
            c._put(reply, rlen)
            c._obuf[c._olen] = 32
            c._olen += 1
        if hlen:
            c._put_int(hlen)
            c._obuf[c._olen] = 32
            c._olen += 1
        c._put_int(msize)
        c._put(b"\r\n", 2)
        if hlen:
            c._put(hdr, hlen)
        c._put(pay, plen)
        c._put(b"\r\n", 2)
        c.out_msgs += 1
        c.out_bytes += msize
        router.out_msgs += 1
        router.out_bytes += msize
        c._touch()
        if rlen and c.perm_replies is not None:
            c.perm_replies.add(PyBytes_FromStringAndSize(<char*>reply, rlen))
        return True

    cdef int _route(self, const unsigned char* subj, Py_ssize_t slen,
                    const unsigned char* reply, Py_ssize_t rlen,
                    const unsigned char* hdr, Py_ssize_t hlen,
                    const unsigned char* pay, Py_ssize_t plen,
                    const unsigned char* dsubj, Py_ssize_t dslen) except -1:
        # Matches ``subj`` and writes ``dsubj`` in the delivered frames: they differ only
        # for JetStream deliveries (``route(..., deliver_as=)``). Returns 1 if delivered.
        cdef Router router = <Router>self.router
        cdef SublistResult r
        cdef Sublist sl = <Sublist>self.sublist
        cdef bytes subject
        cdef Subscription sub
        cdef list qgroup
        cdef Py_ssize_t i, n, start, k
        cdef bint did = False
        cdef bint dynamic = False
        cdef object allowed
        cdef bytes mapped

        if self.mapper is not None and self.mapper.active:
            # The account's subject mappings (Go: selectMappedSubject, before permissions).
            mapped = self.mapper.map_c(subj, slen, -1)
            if mapped is not None:
                if dsubj == subj or (dslen == slen and memcmp(dsubj, subj, slen) == 0):
                    dsubj = <const unsigned char*>PyBytes_AS_STRING(mapped)
                    dslen = PyBytes_GET_SIZE(mapped)
                subj = <const unsigned char*>PyBytes_AS_STRING(mapped)
                slen = PyBytes_GET_SIZE(mapped)

        self.in_msgs += 1
        self.in_bytes += hlen + plen
        router.in_msgs += 1
        router.in_bytes += hlen + plen

        # Publishing to a gateway-routed reply subject is never allowed to clients.
        if _has_prefix(subj, slen, "_GR_.", 5):
            self._send_err('Permissions Violation for Publish to "%s"'
                           % (<bytes>PyBytes_FromStringAndSize(<char*>subj, slen)).decode("utf-8", "replace"))
            return 0

        # Match, memoising the last subject so a steady stream costs one memcmp.
        subject = self._last_subject
        if (subject is not None and PyBytes_GET_SIZE(subject) == slen
                and memcmp(PyBytes_AS_STRING(subject), subj, slen) == 0
                and self._last_genid == sl.genid):
            r = self._last_result
        else:
            subject = PyBytes_FromStringAndSize(<char*>subj, slen)
            if self.perm_pub is not None:
                allowed = self._perm_cache.get(subject)
                if allowed is None:
                    allowed = bool(self.perm_pub.allowed(subject))
                    if len(self._perm_cache) > 4096:
                        self._perm_cache.clear()
                    self._perm_cache[subject] = allowed
                if not allowed:
                    # A response the client may send (allow_responses) counts each time,
                    # so it is neither cached nor memoised.
                    if self.perm_replies is None or not self.perm_replies.allowed(subject):
                        self._send_err('Permissions Violation for Publish to "%s"'
                                       % subject.decode("utf-8", "replace"))
                        return 0
                    dynamic = True
            if slen > 5 and memcmp(subj, b"$NRG.", 5) == 0 and not getattr(self.account, "is_system", False):
                self._send_err('Permissions Violation for Publish to "%s"'
                               % subject.decode("utf-8", "replace"))
                return 0
            r = sl.match(subject)
            self._last_subject = None if dynamic else subject
            self._last_result = r
            self._last_genid = sl.genid

        # Go's isReservedReply: "_R_." counts even alone (len > 3); the others need more.
        # The server's own clients send $JS.ACK replies (JetStream deliveries).
        if rlen and not self.internal and ((rlen >= 4 and memcmp(reply, b"_R_.", 4) == 0)
                     or _has_prefix(reply, rlen, "$JS.ACK.", 8)
                     or _has_prefix(reply, rlen, "_GR_.", 5)):
            self._send_err('Permissions Violation for Publish with Reply of "%s"'
                           % (<bytes>PyBytes_FromStringAndSize(<char*>reply, rlen)).decode("utf-8", "replace"))
            return 0

        if self.verbose:
            self.queue(_OK)
            self._touch()

        router._stamp += 1
        self._rsubj, self._rslen = subj, slen
        n = len(r.psubs)
        for i in range(n):
            sub = <Subscription>r.psubs[i]
            if (<Client>sub.client).peer:
                self._hit_peer(<Client>sub.client, router, None)
            elif self._deliver(sub, dsubj, dslen, reply, rlen, hdr, hlen, pay, plen):
                did = True
        for qgroup in r.qsubs:
            n = len(qgroup)
            if n == 0:
                continue
            # One member per group, picked among all members of every worker: a peer's
            # entry appears once per member it has (its weight), so the pick is uniform,
            # as in one process. A member that cannot take it passes it to the next.
            start = <Py_ssize_t>(router.rand() % <uint64_t>n)
            for i in range(n):
                sub = <Subscription>qgroup[(start + i) % n]
                if (<Client>sub.client).peer:
                    self._hit_peer(<Client>sub.client, router, sub.queue)
                    break
                if self._deliver(sub, dsubj, dslen, reply, rlen, hdr, hlen, pay, plen):
                    did = True
                    break
        self._rsubj = NULL
        if router._hits:
            self._forward(router, subj, slen, reply, rlen, hdr, hlen, pay, plen, dsubj, dslen)
            did = True

        if not did and rlen and self.no_responders:
            self._no_responders(subj, slen, reply, rlen)
        return 1 if did else 0

    cdef inline void _hit_peer(self, Client peer, Router router, object queue):
        if peer._hit_stamp != router._stamp:
            peer._hit_stamp = router._stamp
            peer._hit_queues = None
            peer._hit_plain = False
            router._hits.append(peer)
        if queue is None:
            peer._hit_plain = True
        else:
            if peer._hit_queues is None:
                peer._hit_queues = []
            peer._hit_queues.append(queue)

    cdef int _forward(self, Router router, const unsigned char* subj, Py_ssize_t slen,
                      const unsigned char* reply, Py_ssize_t rlen,
                      const unsigned char* hdr, Py_ssize_t hlen,
                      const unsigned char* pay, Py_ssize_t plen,
                      const unsigned char* dsubj, Py_ssize_t dslen) except -1:
        # One record per peer worker with interest, naming the queue groups it must serve.
        # A JetStream delivery shows another subject than the one matched: the record's
        # subject is then "<matched> <shown>" and its aux AUX_SHOWN (subjects have no spaces).
        cdef Client peer
        cdef bytes acc
        cdef bytes both
        cdef uint32_t aux = 0
        cdef list hits = router._hits
        router._hits = []
        if dsubj != subj and (dslen != slen or memcmp(dsubj, subj, slen) != 0):
            both = (PyBytes_FromStringAndSize(<char*>subj, slen) + b" "
                    + PyBytes_FromStringAndSize(<char*>dsubj, dslen))
            subj = <const unsigned char*>PyBytes_AS_STRING(both)
            slen = PyBytes_GET_SIZE(both)
            aux = AUX_SHOWN
        for peer in hits:
            acc = self.account_name
            if peer._hit_queues is not None:
                acc = acc + b" " + b" ".join(peer._hit_queues)
                peer._hit_queues = None
            router.forwarded += 1
            if not peer.overflow and (<Ring>peer.ring).write_c(
                    _REC_MSG, aux, PyBytes_AS_STRING(acc), PyBytes_GET_SIZE(acc),
                    <const char*>subj, slen, <const char*>reply, rlen,
                    <const char*>hdr, hlen, <const char*>pay, plen):
                peer._touch_peer(router)
                continue
            # The ring is full: keep the record, in order, for the mesh task to write.
            peer.overflow.append((_REC_MSG, aux, acc,
                                  PyBytes_FromStringAndSize(<char*>subj, slen),
                                  PyBytes_FromStringAndSize(<char*>reply, rlen),
                                  PyBytes_FromStringAndSize(<char*>hdr, hlen),
                                  PyBytes_FromStringAndSize(<char*>pay, plen)))
            peer.overflow_bytes += slen + rlen + hlen + plen + 64
            if not peer._congested:
                peer._congested = True
                router.congested.append(peer)
        return 0

    cdef inline void _touch_peer(self, Router router):
        # A peer is "touched" once per batch so the worker signals its wakeup once.
        if not self.flush_pending:
            self.flush_pending = True
            router.touched.append(self)

    def drain_peer(self, Ring ring, Py_ssize_t max_records=65536, bint pace=False,
                   object pushed=None, Py_ssize_t max_internal=0):
        """Delivers the MSG records a peer worker wrote to this worker's local subscribers.

        Returns the other records (interest, control) as tuples for Python, in order
        relative to each other. ``self`` is the peer's Client on this worker. With
        ``pace``, stops after a delivery that leaves ``stall_target`` set (a local receiver
        over 3/4 of its max_pending) to a receiver other than ``pushed``: the rest waits
        in the ring. With ``max_internal``, stops once the router holds that many
        deliveries for the server's own subscriptions (``Router.internal``): their
        handlers run per batch, and a shorter batch lets them start sooner.
        """
        cdef RecordView rv
        cdef Router router = <Router>self.router
        cdef list others = None
        cdef Py_ssize_t n = 0
        ring.begin_read_c()
        try:
            while n < max_records and ring.next_c(&rv):
                n += 1
                if rv.kind == _REC_MSG:
                    self._deliver_from_peer(router, &rv)
                    if pace and self.stall_target is not None and \
                            self.stall_target is not pushed:
                        break
                    if max_internal and len(router.internal) >= max_internal:
                        break
                else:
                    if others is None:
                        others = []
                    others.append((rv.kind, rv.aux,
                                   PyBytes_FromStringAndSize(<char*>rv.field[0], rv.size[0]),
                                   PyBytes_FromStringAndSize(<char*>rv.field[1], rv.size[1]),
                                   PyBytes_FromStringAndSize(<char*>rv.field[2], rv.size[2]),
                                   PyBytes_FromStringAndSize(<char*>rv.field[3], rv.size[3]),
                                   PyBytes_FromStringAndSize(<char*>rv.field[4], rv.size[4])))
        finally:
            ring.end_read_c()
        return others

    cdef int _deliver_from_peer(self, Router router, RecordView* rv) except -1:
        cdef const unsigned char* a = rv.field[0]
        cdef Py_ssize_t alen = rv.size[0], nlen = 0, i, j, n, start
        cdef Sublist sl
        cdef SublistResult r
        cdef Subscription sub
        cdef list qgroup
        cdef bytes qnames = None
        cdef bytes subject
        cdef object found
        # The subject matched, and the one shown (a JetStream delivery: see _forward).
        cdef const unsigned char* ms = rv.field[1]
        cdef Py_ssize_t mlen = rv.size[1]
        cdef const unsigned char* ds = rv.field[1]
        cdef Py_ssize_t dlen = rv.size[1]
        if rv.aux == AUX_SHOWN:
            mlen = 0
            while mlen < rv.size[1] and ms[mlen] != 32:
                mlen += 1
            if mlen < rv.size[1]:
                ds = ms + mlen + 1
                dlen = rv.size[1] - mlen - 1
        while nlen < alen and a[nlen] != 32:
            nlen += 1
        if nlen < alen:
            qnames = PyBytes_FromStringAndSize(<char*>a + nlen + 1, alen - nlen - 1)
        # Same memo as _route: a steady stream from a peer costs two memcmp per message.
        subject = self._last_subject
        if (subject is not None and self._last_peer_acc is not None
                and PyBytes_GET_SIZE(subject) == mlen
                and memcmp(PyBytes_AS_STRING(subject), ms, mlen) == 0
                and PyBytes_GET_SIZE(self._last_peer_acc) == nlen
                and memcmp(PyBytes_AS_STRING(self._last_peer_acc), a, nlen) == 0
                and self._last_genid == (<Sublist>self._last_sublist).genid):
            r = self._last_result
        else:
            acc = PyBytes_FromStringAndSize(<char*>a, nlen)
            found = router.sublists.get(acc)
            if found is None:
                return 0
            sl = <Sublist>found
            subject = PyBytes_FromStringAndSize(<char*>ms, mlen)
            r = sl.match(subject)
            self._last_subject = subject
            self._last_peer_acc = acc
            self._last_sublist = sl
            self._last_result = r
            self._last_genid = sl.genid
        self._rsubj, self._rslen = ms, mlen
        for sub in r.psubs:
            if not (<Client>sub.client).peer:
                self._deliver(sub, ds, dlen, rv.field[2], rv.size[2],
                              rv.field[3], rv.size[3], rv.field[4], rv.size[4])
        if qnames is not None:
            names = qnames.split(b" ")
            for qgroup in r.qsubs:
                n = len(qgroup)
                if n == 0 or (<Subscription>qgroup[0]).queue not in names:
                    continue
                start = <Py_ssize_t>(router.rand() % <uint64_t>n)
                for j in range(n):
                    sub = <Subscription>qgroup[(start + j) % n]
                    if (<Client>sub.client).peer:
                        continue
                    if self._deliver(sub, ds, dlen, rv.field[2], rv.size[2],
                                     rv.field[3], rv.size[3], rv.field[4], rv.size[4]):
                        break
        self._rsubj = NULL
        return 0

    cdef _no_responders(self, const unsigned char* subj, Py_ssize_t slen,
                        const unsigned char* reply, Py_ssize_t rlen):
        # As processInboundClientMsg: a 503 status to the requester's own reply subscription.
        cdef bytes rep = PyBytes_FromStringAndSize(<char*>reply, rlen)
        cdef bytes subject = PyBytes_FromStringAndSize(<char*>subj, slen)
        cdef SublistResult r = (<Sublist>self.sublist).match(rep)
        cdef Subscription sub
        cdef Py_ssize_t hl
        for sub in r.psubs:
            if sub.client is self:
                hl = 32 + slen
                self.queue(b"HMSG %s %s %d %d\r\nNATS/1.0 503\r\nNats-Subject: %s\r\n\r\n\r\n"
                           % (rep, sub.sid, hl, hl, subject))
                self._touch()
                return

    # ------------------------------------------------------------------ parsing

    def feed(self, data):
        """Adds bytes read from the connection; call next_event() until it returns None.

        A frame split across reads is completed in ``_acc`` with only the bytes it lacks;
        the rest of the read is parsed in place, so payload bytes are copied at most once.
        """
        cdef Py_ssize_t n = len(data), k, old
        if n == 0 or self._state == ST_CLOSED:
            return
        if type(data) is not bytes:
            data = bytes(data)
        if self._next is not None:
            # The previous read was not drained: keep it all, in order, in the accumulator.
            self._fold_next()
        if self._buf is self._acc:
            if self._pos:
                del self._acc[:self._pos]
                self._pos = 0
            if len(self._acc) == 0:
                self._buf = data
                return
            k = self._need - len(self._acc) if self._need > 0 else -1
            if 0 < k < n:
                old = len(self._acc)
                PyByteArray_Resize(self._acc, old + k)
                memcpy(PyByteArray_AS_STRING(self._acc) + old, PyBytes_AS_STRING(data), k)
                self._next = data
                self._next_pos = k
            else:
                self._acc.extend(data)
        elif self._pos < len(self._buf):
            self._acc.extend(self._buf[self._pos:])
            self._acc.extend(data)
            self._buf = self._acc
            self._pos = 0
        else:
            self._buf = data
            self._pos = 0

    cdef _fold_next(self):
        if self._buf is self._acc:
            self._acc.extend(self._next[self._next_pos:])
        else:
            self._acc.extend(self._buf[self._pos:])
            self._acc.extend(self._next[self._next_pos:])
            self._buf = self._acc
            self._pos = 0
        self._next = None
        self._need = -1

    cdef _park(self):
        # Keep the unparsed tail for the next feed(): copy it out of a caller's bytes.
        if self._next is not None:
            self._fold_next()
        if self._buf is self._acc:
            if self._pos:
                del self._acc[:self._pos]
        else:
            self._acc.extend(self._buf[self._pos:])
            self._buf = self._acc
        self._pos = 0

    cdef tuple _close(self, str err, str reason):
        self._state = ST_CLOSED
        self._next = None
        self._buf = b""
        self._pos = 0
        del self._acc[:]
        return (_EV_CLOSE, err, reason)

    def next_event(self):
        """Parses frames until a control event; returns it, or None when more data is needed.

        PUB/HPUB are routed inline when a router is attached, otherwise returned as
        (EV_PUB, subject, reply, headers, payload).
        """
        cdef const unsigned char* p
        cdef Py_ssize_t n, pos, i, j, nl, astart, aend, size, hsize, need
        cdef Py_ssize_t starts[5]
        cdef Py_ssize_t lens[5]
        cdef int nargs, op
        cdef unsigned char c0, c1
        cdef object buf
        cdef bint routed = self.router is not None and not self.trace

        if self._state == ST_CLOSED:
            return None
        if self.trace:
            self.trace_op = 0
            self.trace_arg = None
        buf = self._buf
        if type(buf) is bytes:
            p = <const unsigned char*>PyBytes_AS_STRING(buf)
            n = PyBytes_GET_SIZE(buf)
        else:
            p = <const unsigned char*>PyByteArray_AS_STRING(buf)
            n = PyByteArray_GET_SIZE(buf)
        pos = self._pos
        self._need = -1

        while True:
          if pos >= n:
            if self._next is None or buf is not self._acc:
                break
            # The split frame is done: go on with the rest of the read, in place.
            del self._acc[:]
            buf = self._buf = self._next
            pos = self._pos = self._next_pos
            self._next = None
            p = <const unsigned char*>PyBytes_AS_STRING(buf)
            n = PyBytes_GET_SIZE(buf)
            continue
          while pos < n:
            c0 = _upper(p[pos])
            if self.auth_pending and c0 != 67:   # 'C'
                return self._close(ERR_AUTH, REASON_AUTH)
            # ---- recognise the operation name exactly as Go's state machine does
            op = 0
            i = pos
            if c0 == 80:      # P: PUB, PING, PONG
                if i + 1 >= n:
                    break
                c1 = _upper(p[i + 1])
                if c1 == 85:
                    op = _EV_PUB
                    if i + 2 >= n: break
                    if _upper(p[i + 2]) != 66: return self._parse_error()
                    if i + 3 >= n: break
                    if not _is_space(p[i + 3]): return self._parse_error()
                    j = i + 4
                elif c1 == 73 or c1 == 79:
                    if i + 2 >= n: break
                    if _upper(p[i + 2]) != 78: return self._parse_error()
                    if i + 3 >= n: break
                    if _upper(p[i + 3]) != 71: return self._parse_error()
                    op = _EV_PING if c1 == 73 else _EV_PONG
                    j = i + 4
                else:
                    return self._parse_error()
            elif c0 == 72:    # H: HPUB
                j = self._match_word(p, n, i, b"HPUB", 4, True)
                if j == -1: break
                if j == -2: return self._parse_error()
                op = -_EV_PUB
            elif c0 == 83:    # S: SUB
                j = self._match_word(p, n, i, b"SUB", 3, True)
                if j == -1: break
                if j == -2: return self._parse_error()
                op = _EV_SUB
            elif c0 == 85:    # U: UNSUB
                j = self._match_word(p, n, i, b"UNSUB", 5, True)
                if j == -1: break
                if j == -2: return self._parse_error()
                op = _EV_UNSUB
            elif c0 == 67:    # C: CONNECT (spaces after it are optional)
                j = self._match_word(p, n, i, b"CONNECT", 7, False)
                if j == -1: break
                if j == -2: return self._parse_error()
                op = _EV_CONNECT
            elif c0 == 73:    # I: INFO
                j = self._match_word(p, n, i, b"INFO", 4, False)
                if j == -1: break
                if j == -2: return self._parse_error()
                op = _EV_INFO
            elif c0 == 43:    # +OK
                j = self._match_word(p, n, i, b"+OK", 3, False)
                if j == -1: break
                if j == -2: return self._parse_error()
                op = _EV_OK
            elif c0 == 45:    # -ERR
                j = self._match_word(p, n, i, b"-ERR", 4, True)
                if j == -1: break
                if j == -2: return self._parse_error()
                op = _EV_ERR
            else:
                return self._parse_error()

            # ---- skip separators, then find the end of the control line
            while j < n and _is_space(p[j]):
                j += 1
            astart = j
            nl = -1
            while j < n:
                if p[j] == 10:
                    nl = j
                    break
                j += 1
            if nl < 0:
                if (op != _EV_PING and op != _EV_PONG and op != _EV_OK
                        and n - astart > self.max_control_line):
                    return self._max_control_line()
                break
            aend = nl
            if aend > astart and p[aend - 1] == 13:
                aend -= 1
            if aend - astart > self.max_control_line and op != _EV_PING and op != _EV_PONG and op != _EV_OK:
                return self._max_control_line()
            if self.trace:
                self.trace_op = op
                self.trace_arg = PyBytes_FromStringAndSize(<char*>p + astart, aend - astart)

            if op == _EV_PUB or op == -_EV_PUB:
                # ---- PUB subject [reply] size  /  HPUB subject [reply] hdr total
                nargs = _split_args(p + astart, aend - astart, starts, lens, 4)
                hsize = 0
                if op == _EV_PUB:
                    if nargs == 2:
                        size = _parse_size(p + astart + starts[1], lens[1])
                    elif nargs == 3:
                        size = _parse_size(p + astart + starts[2], lens[2])
                    else:
                        return self._close(None, REASON_PROTOCOL)
                    if size < 0:
                        return self._close(None, REASON_PROTOCOL)
                else:
                    if not self.headers:
                        return self._close(None, REASON_PROTOCOL)
                    if nargs == 3:
                        hsize = _parse_size(p + astart + starts[1], lens[1])
                        size = _parse_size(p + astart + starts[2], lens[2])
                    elif nargs == 4:
                        hsize = _parse_size(p + astart + starts[2], lens[2])
                        size = _parse_size(p + astart + starts[3], lens[3])
                    else:
                        return self._close(None, REASON_PROTOCOL)
                    if hsize < 0 or size < 0 or hsize > size:
                        return self._close(None, REASON_PROTOCOL)
                if self.max_payload >= 0 and size > self.max_payload:
                    return self._close(ERR_MAX_PAYLOAD, REASON_MAX_PAYLOAD)
                need = nl + 1 + size + 2
                if need > n:
                    # Complain about a bad subject only once, when the frame is whole.
                    self._need = need - pos
                    break
                if p[need - 2] != 13 or p[need - 1] != 10:
                    return self._parse_error()
                if self.pedantic and not _is_literal_valid(p + astart + starts[0], lens[0]):
                    self._send_err("Invalid Publish Subject")
                self._pos = need
                if routed:
                    if nargs == (2 if op == _EV_PUB else 3):
                        self._route(p + astart + starts[0], lens[0], NULL, 0,
                                    p + nl + 1, hsize, p + nl + 1 + hsize, size - hsize,
                                    p + astart + starts[0], lens[0])
                    else:
                        self._route(p + astart + starts[0], lens[0], p + astart + starts[1], lens[1],
                                    p + nl + 1, hsize, p + nl + 1 + hsize, size - hsize,
                                    p + astart + starts[0], lens[0])
                    pos = need
                    continue
                return (_EV_PUB,
                        PyBytes_FromStringAndSize(<char*>p + astart + starts[0], lens[0]),
                        PyBytes_FromStringAndSize(<char*>p + astart + starts[1], lens[1])
                        if nargs == (3 if op == _EV_PUB else 4) else None,
                        PyBytes_FromStringAndSize(<char*>p + nl + 1, hsize) if op != _EV_PUB else None,
                        PyBytes_FromStringAndSize(<char*>p + nl + 1 + hsize, size - hsize))

            self._pos = nl + 1
            if op == _EV_PING or op == _EV_PONG or op == _EV_OK:
                return (op,)
            if op == _EV_SUB:
                nargs = _split_args(p + astart, aend - astart, starts, lens, 3)
                if nargs == 2:
                    return (_EV_SUB, PyBytes_FromStringAndSize(<char*>p + astart + starts[0], lens[0]),
                            None, PyBytes_FromStringAndSize(<char*>p + astart + starts[1], lens[1]))
                if nargs == 3:
                    return (_EV_SUB, PyBytes_FromStringAndSize(<char*>p + astart + starts[0], lens[0]),
                            PyBytes_FromStringAndSize(<char*>p + astart + starts[1], lens[1]),
                            PyBytes_FromStringAndSize(<char*>p + astart + starts[2], lens[2]))
                return self._close(None, REASON_PROTOCOL)
            if op == _EV_UNSUB:
                nargs = _split_args(p + astart, aend - astart, starts, lens, 2)
                if nargs == 1:
                    return (_EV_UNSUB, PyBytes_FromStringAndSize(<char*>p + astart + starts[0], lens[0]), -1)
                if nargs == 2:
                    return (_EV_UNSUB, PyBytes_FromStringAndSize(<char*>p + astart + starts[0], lens[0]),
                            _parse_size(p + astart + starts[1], lens[1]))
                return self._close(None, REASON_PROTOCOL)
            # CONNECT, INFO, -ERR carry the rest of the line
            return (op, PyBytes_FromStringAndSize(<char*>p + astart, aend - astart))
          else:
            continue
          break   # an incomplete frame: wait for more data

        self._pos = pos
        self._park()
        return None

    cdef Py_ssize_t _match_word(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t i,
                                const char* word, Py_ssize_t wlen, bint need_space):
        # -1: need more data; -2: mismatch; otherwise the index after the word.
        cdef Py_ssize_t k
        for k in range(wlen):
            if i + k >= n:
                return -1
            if _upper(p[i + k]) != <unsigned char>word[k]:
                return -2
        if need_space:
            if i + wlen >= n:
                return -1
            if not _is_space(p[i + wlen]):
                return -2
        return i + wlen

    cdef tuple _parse_error(self):
        return self._close(ERR_UNKNOWN_OP, REASON_PARSE)

    cdef tuple _max_control_line(self):
        return self._close(ERR_MAX_CONTROL_LINE, REASON_MAX_CONTROL_LINE)

    def route(self, bytes subject, bytes reply, bytes headers, bytes payload, bytes deliver_as=None):
        """Routes one message as if this client had published it; True if it was delivered.

        For the server's internal clients (``internal=True``): no parsing, and replies on
        ``$JS.ACK.`` are allowed. ``deliver_as`` is the subject written in the delivered
        frames when it differs from the one matched (a JetStream delivery is matched on the
        consumer's deliver subject or pull inbox but shows the message's own subject).
        Deliveries forwarded to peer workers carry both (``AUX_SHOWN``).
        """
        cdef bytes shown = deliver_as if deliver_as is not None else subject
        if self.router is None:
            raise ValueError("route() needs a router")
        if reply is None:
            reply = b""
        if headers is None:
            headers = b""
        return self._route(<const unsigned char*>PyBytes_AS_STRING(subject), PyBytes_GET_SIZE(subject),
                           <const unsigned char*>PyBytes_AS_STRING(reply), PyBytes_GET_SIZE(reply),
                           <const unsigned char*>PyBytes_AS_STRING(headers), PyBytes_GET_SIZE(headers),
                           <const unsigned char*>PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                           <const unsigned char*>PyBytes_AS_STRING(shown), PyBytes_GET_SIZE(shown)) == 1

    def reset_match_memo(self):
        """Forgets the memoised match, e.g. when the client moves to another account."""
        self._last_subject = None
        self._last_result = None
        self._perm_cache = {}
