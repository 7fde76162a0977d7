"""The client-protocol hot path: parse, match, deliver — pure-Python twin of ``_core``.

Same API, same events and same outbound bytes as the compiled module; see its header for
the theory of operation. This twin favours clarity over speed; the tests run every case
against both.
"""
from __future__ import annotations

import random

EV_CONNECT = 1
EV_SUB = 2
EV_UNSUB = 3
EV_PING = 4
EV_PONG = 5
EV_INFO = 6
EV_OK = 7
EV_ERR = 8
EV_PUB = 9
EV_CLOSE = 10

_REC_MSG = 1  # natsx.mesh.ring.RecordKind.MSG


class _Stalled(Exception):
    """Ends a ``drain_peer`` batch early (a receiver fell behind, enough internal deliveries)."""
# A MSG record whose subject is "<matched> <shown>" (a JetStream delivery), in its aux.
AUX_SHOWN = 1

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

_SPACE = (32, 9)
_SPLIT = b" \t\r\n"
_NEED = -1
_BAD = -2
_OPS = {
    ord("H"): (b"HPUB", True, -EV_PUB),
    ord("S"): (b"SUB", True, EV_SUB),
    ord("U"): (b"UNSUB", True, EV_UNSUB),
    ord("C"): (b"CONNECT", False, EV_CONNECT),
    ord("I"): (b"INFO", False, EV_INFO),
    ord("+"): (b"+OK", False, EV_OK),
    ord("-"): (b"-ERR", True, EV_ERR),
}
_NO_MCL = (EV_PING, EV_PONG, EV_OK)


def _parse_size(b: bytes) -> int:
    # Go's parseSize: 1 to 9 decimal digits, else -1.
    if not 0 < len(b) <= 9 or not all(48 <= c <= 57 for c in b):
        return -1
    return int(b)


def _split_args(line: bytes) -> list[bytes]:
    return line.replace(b"\t", b" ").replace(b"\r", b" ").replace(b"\n", b" ").split()


def _is_literal_valid(subject: bytes) -> bool:
    if not subject:
        return False
    for ws in (b" ", b"\t", b"\r", b"\n", b"\x0c"):
        if ws in subject:
            return False
    for tok in subject.split(b"."):
        if not tok or tok == b"*" or tok == b">":
            return False
    return True


class Router:
    """Shared by every client of one worker: what a read batch left for Python to do."""

    __slots__ = ("touched", "internal", "expired", "in_msgs", "in_bytes", "out_msgs",
                 "out_bytes", "slow_consumers", "_rng", "sublists", "congested", "forwarded")

    def __init__(self, seed: int = 0x9E3779B97F4A7C15) -> None:
        self.touched: list = []
        self.internal: list = []
        self.expired: list = []
        self.in_msgs = self.in_bytes = self.out_msgs = self.out_bytes = 0
        self.slow_consumers = 0
        self.sublists: dict = {}
        self.congested: list = []
        self.forwarded = 0
        self._rng = random.Random(seed)

    def rand(self, n: int) -> int:
        return self._rng.randrange(n)


class Mapper:
    """An account's subject mappings as the hot path sees them: see the compiled twin."""

    __slots__ = ("active", "resolve", "_cache", "_rng", "_sources")

    def __init__(self) -> None:
        self.active = False
        self.resolve = None
        self._sources = None
        self._cache: dict = {}
        self._rng = random.Random()

    def set(self, resolve, sources=None, entries=None) -> None:
        """``resolve(subject) -> plan`` (natsx.server.mapping.Mappings.plan), or None;
        ``sources``: a Sublist of the mappings' sources, asked first. ``entries`` (the
        compiled twin's transforms) are not used here: the plans come from
        natsx.server.mapping, the transforms' twin."""
        self.resolve = resolve
        self._sources = sources
        self.active = resolve is not None
        self._cache = {}

    def cache_count(self) -> int:
        return len(self._cache)

    def map(self, subject: bytes, draw: int = -1):
        """The subject to route instead of ``subject``, or None when no mapping applies;
        ``draw`` (0..99) replaces the random pick among weighted destinations."""
        if not self.active:
            return None
        if self._sources is not None and not self._sources.has_interest(subject):
            return None
        plan = self._cache.get(subject, _MISS)
        if plan is _MISS:
            plan = self.resolve(subject)
            if len(self._cache) >= MAPPER_CACHE_MAX:
                self._cache.clear()
            self._cache[subject] = plan
        if plan is None or type(plan) is bytes:
            return plan
        weights, outs = plan
        w = self._rng.randrange(100) if draw < 0 else draw
        for i, limit in enumerate(weights):
            if w < limit:
                out = outs[i]
                return out if type(out) is bytes else out()
        return b""


_MISS = object()
MAPPER_CACHE_MAX = 4096


class Client:
    """One connection's protocol state, outbound buffer and counters."""

    __slots__ = ("cid", "router", "sublist", "account", "headers", "echo", "verbose",
                 "pedantic", "no_responders", "internal", "auth_pending", "closed", "slow",
                 "flush_pending", "trace", "trace_op", "trace_arg", "max_payload", "max_control_line", "max_pending", "inflight",
                 "perm_pub", "perm_deliver", "stall_target", "perm_replies", "subs", "conn", "in_msgs", "in_bytes", "out_msgs",
                 "out_bytes", "_out", "_buf", "_closed_parse", "_last_subject", "_last_result", "mapper",
                 "_last_genid", "_perm_cache", "account_name", "peer", "ring", "overflow",
                 "overflow_bytes", "_congested", "_routed")

    def __init__(self, cid: int = 0, router: Router | None = None, sublist=None) -> None:
        self.cid = cid
        self._routed = None     # the subject being routed while _deliver runs (see _deliver)
        self.router = router
        self.sublist = sublist
        self.account = None
        self.mapper = None
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
        # Protocol tracing (natsx.server.trace): see the compiled twin.
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
        self.subs: dict = {}
        self.conn = None
        self.account_name = b"$G"
        self.peer = False
        self.ring = None
        self.overflow: list = []
        self.overflow_bytes = 0
        self._congested = False
        self.in_msgs = self.in_bytes = self.out_msgs = self.out_bytes = 0
        self._out = bytearray()
        self._buf = bytearray()
        self._closed_parse = False
        self._last_subject = None
        self._last_result = None
        self._last_genid = 0
        self._perm_cache: dict = {}

    # ------------------------------------------------------------------ outbound

    def _touch(self) -> None:
        if not self.flush_pending:
            self.flush_pending = True
            self.router.touched.append(self)

    def queue(self, data: bytes) -> None:
        """Appends raw protocol bytes (INFO, PONG, -ERR ...) to the outbound buffer."""
        self._out += data

    def take_output(self) -> bytes:
        """Returns everything queued for sending and empties the buffer."""
        out = bytes(self._out)
        self._out = bytearray()
        return out

    @property
    def pending_bytes(self) -> int:
        return len(self._out) + self.inflight

    @property
    def out_len(self) -> int:
        return len(self._out)

    def _over_pending(self, extra: int) -> bool:
        if len(self._out) + self.inflight + extra > self.max_pending:
            if not self.slow:
                self.slow = True
                if self.router is not None:
                    self.router.slow_consumers += 1
                self._touch()
            return True
        return False

    def _send_err(self, text: str) -> None:
        self.queue(b"-ERR '" + text.encode() + b"'\r\n")
        if self.router is not None:
            self._touch()

    # ------------------------------------------------------------------ delivery

    def _deliver(self, sub, subject: bytes, reply: bytes, hdr: bytes, pay: bytes) -> bool:
        c = sub.client
        router = self.router
        if c is None or (c is self and not c.echo) or sub.closed or c.closed:
            return False
        if c.perm_deliver is not None and not c.perm_deliver.allowed(subject, sub.queue):
            return False
        sub.delivered += 1
        if sub.max_msgs > 0:
            if sub.delivered == sub.max_msgs:
                router.expired.append(sub)
            elif sub.delivered > sub.max_msgs:
                return False
        if c.internal:
            routed = self._routed
            router.internal.append((sub, subject, reply or None, hdr or None, pay, self,
                                    routed if routed is not None and routed != subject
                                    else None))
            c.out_msgs += 1
            c.out_bytes += len(hdr) + len(pay)
            return True
        if hdr and not c.headers:
            hdr = b""
        msize = len(hdr) + len(pay)
        if c._over_pending(len(subject) + len(sub.sid) + len(reply) + msize + 48):
            return False
        if (len(c._out) + c.inflight) * 4 > c.max_pending * 3 and not c.internal:
            # Go's fast-producer stall: this publisher waits a little after the batch.
            self.stall_target = c
        out = c._out
        if hdr:
            out += b"HMSG %s %s %s%d %d\r\n" % (subject, sub.sid, reply + b" " if reply else b"",
                                                len(hdr), msize)
            out += hdr
        else:
            out += b"MSG %s %s %s%d\r\n" % (subject, sub.sid, reply + b" " if reply else b"", msize)
        out += pay
        out += b"\r\n"
        c.out_msgs += 1
        c.out_bytes += msize
        router.out_msgs += 1
        router.out_bytes += msize
        c._touch()
        if reply and c.perm_replies is not None:
            c.perm_replies.add(reply)
        return True

    def _route(self, subject: bytes, reply: bytes, hdr: bytes, pay: bytes,
               shown: bytes | None = None) -> bool:
        # Matches ``subject`` and writes ``shown`` in the delivered frames: they differ only
        # for JetStream deliveries (``route(..., deliver_as=)``).
        mapper = self.mapper
        if mapper is not None and mapper.active:
            # The account's subject mappings (Go: selectMappedSubject, before permissions).
            mapped = mapper.map(subject)
            if mapped is not None:
                if shown is None or shown == subject:
                    shown = mapped
                subject = mapped
        if shown is None:
            shown = subject
        router = self.router
        sl = self.sublist
        size = len(hdr) + len(pay)
        self.in_msgs += 1
        self.in_bytes += size
        router.in_msgs += 1
        router.in_bytes += size

        if len(subject) > 5 and subject.startswith(b"_GR_."):
            self._send_err('Permissions Violation for Publish to "%s"' % subject.decode("utf-8", "replace"))
            return

        dynamic = False
        if (self._last_subject is not None and self._last_subject == subject
                and self._last_genid == sl.genid):
            r = self._last_result
        else:
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
                        return
                    dynamic = True
            if (len(subject) > 5 and subject.startswith(b"$NRG.")
                    and not getattr(self.account, "is_system", False)):
                self._send_err('Permissions Violation for Publish to "%s"'
                               % subject.decode("utf-8", "replace"))
                return
            r = sl.match(subject)
            self._last_subject = None if dynamic else subject
            self._last_result = r
            self._last_genid = sl.genid

        # Go's isReservedReply: "_R_." counts even alone (len > 3); the others need more.
        # The server's own clients send $JS.ACK replies (JetStream deliveries).
        if reply and not self.internal and (reply.startswith(b"_R_.")
                      or (len(reply) > 8 and reply.startswith(b"$JS.ACK."))
                      or (len(reply) > 5 and reply.startswith(b"_GR_."))):
            self._send_err('Permissions Violation for Publish with Reply of "%s"'
                           % reply.decode("utf-8", "replace"))
            return

        if self.verbose:
            self.queue(b"+OK\r\n")
            self._touch()

        did = False
        hits: dict = {}
        self._routed = subject
        for sub in r.psubs:
            if sub.client.peer:
                hits.setdefault(sub.client, [])
            elif self._deliver(sub, shown, reply, hdr, pay):
                did = True
        for qgroup in r.qsubs:
            n = len(qgroup)
            if not n:
                continue
            # One member per group, picked among all members of every worker (a peer's
            # entry appears once per member it has); one that cannot take it passes it on.
            start = router.rand(n)
            for k in range(n):
                sub = qgroup[(start + k) % n]
                if sub.client.peer:
                    hits.setdefault(sub.client, []).append(sub.queue)
                    break
                if self._deliver(sub, shown, reply, hdr, pay):
                    did = True
                    break
        self._routed = None
        if hits:
            self._forward(router, hits, subject, reply, hdr, pay, shown)
            did = True
        if not did and reply and self.no_responders:
            for sub in sl.match(reply).psubs:
                if sub.client is self:
                    hl = 32 + len(subject)
                    self.queue(b"HMSG %s %s %d %d\r\nNATS/1.0 503\r\nNats-Subject: %s\r\n\r\n\r\n"
                               % (reply, sub.sid, hl, hl, subject))
                    self._touch()
                    return False
        return did

    # ------------------------------------------------------------------ peers

    def _forward(self, router, hits: dict, subject, reply, hdr, pay, shown=None) -> None:
        # One record per peer worker with interest, naming the queue groups it must serve.
        # A JetStream delivery shows another subject than the one matched: the record's
        # subject is then "<matched> <shown>" and its aux AUX_SHOWN (subjects have no spaces).
        aux = 0
        if shown is not None and shown != subject:
            subject = subject + b" " + shown
            aux = AUX_SHOWN
        for peer, queues in hits.items():
            acc = self.account_name
            if queues:
                acc = acc + b" " + b" ".join(queues)
            router.forwarded += 1
            record = (_REC_MSG, aux, acc, subject, reply, hdr, pay)
            if not peer.overflow and peer.ring.try_write(_REC_MSG, acc, subject, reply, hdr, pay,
                                                         aux=aux):
                if not peer.flush_pending:
                    peer.flush_pending = True
                    router.touched.append(peer)
                continue
            peer.overflow.append(record)
            peer.overflow_bytes += len(subject) + len(reply) + len(hdr) + len(pay) + 64
            if not peer._congested:
                peer._congested = True
                router.congested.append(peer)

    def drain_peer(self, ring, max_records: int = 65536, pace: bool = False, pushed=None,
                   max_internal: int = 0):
        """Delivers the MSG records a peer worker wrote to this worker's local subscribers.

        With ``pace``, stops after a delivery that leaves ``stall_target`` set (a local
        receiver over 3/4 of its max_pending) to a receiver other than ``pushed``: the rest
        waits in the ring. With ``max_internal``, stops once the router holds that many
        deliveries for the server's own subscriptions (``Router.internal``).
        """
        others = []
        router = self.router

        def take(*rec):
            if rec[0] == _REC_MSG:
                self._deliver_from_peer(rec)
                target = self.stall_target
                if pace and target is not None and target is not pushed:
                    raise _Stalled
                if max_internal and len(router.internal) >= max_internal:
                    raise _Stalled
            else:
                others.append(rec)

        try:
            ring.drain(take, max_records)
        except _Stalled:
            pass   # the record was consumed before its callback ran
        return others or None

    def _deliver_from_peer(self, rec) -> None:
        _kind, aux, acc, subject, reply, hdr, pay = rec
        shown = subject
        if aux == AUX_SHOWN:
            subject, _, shown = subject.partition(b" ")
        name, _, qnames = acc.partition(b" ")
        sl = self.router.sublists.get(name)
        if sl is None:
            return
        r = sl.match(subject)
        self._routed = subject
        for sub in r.psubs:
            if not sub.client.peer:
                self._deliver(sub, shown, reply, hdr, pay)
        if qnames:
            names = qnames.split(b" ")
            for qgroup in r.qsubs:
                n = len(qgroup)
                if not n or qgroup[0].queue not in names:
                    continue
                start = self.router.rand(n)
                for k in range(n):
                    sub = qgroup[(start + k) % n]
                    if not sub.client.peer and self._deliver(sub, shown, reply, hdr, pay):
                        break
        self._routed = None

    # ------------------------------------------------------------------ parsing

    def feed(self, data) -> None:
        """Adds bytes read from the connection; call next_event() until it returns None."""
        if data and not self._closed_parse:
            self._buf += data

    def _close(self, err, reason):
        self._closed_parse = True
        self._buf = bytearray()
        return (EV_CLOSE, err, reason)

    @staticmethod
    def _match_word(buf, n: int, i: int, word: bytes, need_space: bool) -> int:
        for k, w in enumerate(word):
            if i + k >= n:
                return _NEED
            c = buf[i + k]
            if 97 <= c <= 122:
                c -= 32
            if c != w:
                return _BAD
        if need_space:
            if i + len(word) >= n:
                return _NEED
            if buf[i + len(word)] not in _SPACE:
                return _BAD
        return i + len(word)

    def next_event(self):
        """Parses frames until a control event; returns it, or None when more data is needed."""
        if self._closed_parse:
            return None
        buf = self._buf
        n = len(buf)
        pos = 0
        routed = self.router is not None and not self.trace
        if self.trace:
            self.trace_op = 0
            self.trace_arg = None
        try:
            while pos < n:
                c0 = buf[pos]
                if 97 <= c0 <= 122:
                    c0 -= 32
                if self.auth_pending and c0 != 67:
                    return self._close(ERR_AUTH, REASON_AUTH)
                if c0 == 80:  # P
                    if pos + 1 >= n:
                        break
                    c1 = buf[pos + 1] & 0xDF
                    if c1 == 85:
                        j = self._match_word(buf, n, pos, b"PUB", True)
                        op = EV_PUB
                    elif c1 in (73, 79):
                        j = self._match_word(buf, n, pos, b"PING" if c1 == 73 else b"PONG", False)
                        op = EV_PING if c1 == 73 else EV_PONG
                    else:
                        return self._close(ERR_UNKNOWN_OP, REASON_PARSE)
                elif c0 in _OPS:
                    word, need_space, op = _OPS[c0]
                    j = self._match_word(buf, n, pos, word, need_space)
                else:
                    return self._close(ERR_UNKNOWN_OP, REASON_PARSE)
                if j == _NEED:
                    break
                if j == _BAD:
                    return self._close(ERR_UNKNOWN_OP, REASON_PARSE)

                while j < n and buf[j] in _SPACE:
                    j += 1
                astart = j
                nl = buf.find(b"\n", astart)
                if nl < 0:
                    if op not in _NO_MCL and n - astart > self.max_control_line:
                        return self._close(ERR_MAX_CONTROL_LINE, REASON_MAX_CONTROL_LINE)
                    break
                aend = nl
                if aend > astart and buf[aend - 1] == 13:
                    aend -= 1
                if op not in _NO_MCL and aend - astart > self.max_control_line:
                    return self._close(ERR_MAX_CONTROL_LINE, REASON_MAX_CONTROL_LINE)
                line = bytes(buf[astart:aend])
                if self.trace:
                    self.trace_op = op
                    self.trace_arg = line

                if op == EV_PUB or op == -EV_PUB:
                    args = _split_args(line)
                    hsize = 0
                    if op == EV_PUB:
                        if len(args) not in (2, 3):
                            return self._close(None, REASON_PROTOCOL)
                        size = _parse_size(args[-1])
                        if size < 0:
                            return self._close(None, REASON_PROTOCOL)
                        reply = args[1] if len(args) == 3 else b""
                    else:
                        if not self.headers or len(args) not in (3, 4):
                            return self._close(None, REASON_PROTOCOL)
                        hsize = _parse_size(args[-2])
                        size = _parse_size(args[-1])
                        if hsize < 0 or size < 0 or hsize > size:
                            return self._close(None, REASON_PROTOCOL)
                        reply = args[1] if len(args) == 4 else b""
                    if self.max_payload >= 0 and size > self.max_payload:
                        return self._close(ERR_MAX_PAYLOAD, REASON_MAX_PAYLOAD)
                    need = nl + 1 + size + 2
                    if need > n:
                        break
                    if buf[need - 2] != 13 or buf[need - 1] != 10:
                        return self._close(ERR_UNKNOWN_OP, REASON_PARSE)
                    subject = args[0]
                    if self.pedantic and not _is_literal_valid(subject):
                        self._send_err("Invalid Publish Subject")
                    hdr = bytes(buf[nl + 1:nl + 1 + hsize])
                    pay = bytes(buf[nl + 1 + hsize:nl + 1 + size])
                    pos = need
                    if routed:
                        self._route(subject, reply, hdr, pay)
                        continue
                    return (EV_PUB, subject, reply or None, hdr if op != EV_PUB else None, pay)

                pos = nl + 1
                if op in _NO_MCL:
                    return (op,)
                if op == EV_SUB:
                    args = _split_args(line)
                    if len(args) == 2:
                        return (EV_SUB, args[0], None, args[1])
                    if len(args) == 3:
                        return (EV_SUB, args[0], args[1], args[2])
                    return self._close(None, REASON_PROTOCOL)
                if op == EV_UNSUB:
                    args = _split_args(line)
                    if len(args) == 1:
                        return (EV_UNSUB, args[0], -1)
                    if len(args) == 2:
                        return (EV_UNSUB, args[0], _parse_size(args[1]))
                    return self._close(None, REASON_PROTOCOL)
                return (op, line)
            return None
        finally:
            if not self._closed_parse and pos:
                del self._buf[:pos]

    def route(self, subject: bytes, reply: bytes | None, headers: bytes | None, payload: bytes,
              deliver_as: bytes | None = None) -> bool:
        """Routes one message as if this client had published it; True if it was delivered.
        See the compiled twin."""
        if self.router is None:
            raise ValueError("route() needs a router")
        return bool(self._route(subject, reply or b"", headers or b"", payload, deliver_as))

    def reset_match_memo(self) -> None:
        """Forgets the memoised match, e.g. when the client moves to another account."""
        self._last_subject = None
        self._last_result = None
        self._perm_cache = {}
