"""Message schedules (ADR-51): Go 2.12's ``allow_msg_schedules``.

Theory of operation
-------------------
A stream with ``allow_msg_schedules`` accepts a *schedule*: a message whose
``Nats-Schedule`` header is ``@at <RFC 3339 time>`` (the only pattern Go v2.12.0's
getMessageSchedule knows; anything else is error 10189) and whose ``Nats-Schedule-Target``
names a literal subject of the stream other than the schedule's own. ``check_publish`` is
the block of Go's processJetStreamMsg that vets it, in Go's order, and adds
``Nats-Rollup: sub`` when the publisher did not: a schedule subject holds one schedule, the
latest.

``MsgScheduling`` is Go's MsgScheduling (server/scheduler.go) for one stream: the pending
schedules by subject, the sequence of the message holding each, and the subjects whose
message was produced but whose schedule message is still there (``inflight``). It runs on
one timer of the stream's worker (``JetStream.call_later``, trio), armed at the earliest
pending time but never sooner than 250 ms ahead, as Go's resetTimer does; a schedule already
due therefore fires at the next tick. The timer fires as a worker batch (``Timers``), so the
message it produces is stored through ``Stream.process_msg`` — the stream's ordinary store
path: its checks, the raft proposal of the batch, the consumers — on the target subject with
the schedule's payload and headers, less ``Nats-Schedule``, ``Nats-Schedule-*``,
``Nats-Expected-*``, ``Nats-Msg-Id``, ``Nats-TTL`` and ``Nats-Rollup``, plus
``Nats-Scheduler: <schedule subject>``, ``Nats-Schedule-Next: purge`` and
``Nats-TTL: <Nats-Schedule-TTL>`` when one was given. Storing a message that carries
``Nats-Schedule-Next: purge`` purges its ``Nats-Scheduler`` subject (``scheduler_to_purge``,
applied by ``Stream._after_store``), which removes the schedule.

Go keeps the scheduler's entries until it finds their message gone; here the produced
message is stored synchronously, so an entry whose message the purge removed is dropped at
once. A produced message the stream refuses (sealed, full with discard new) leaves its
schedule in flight, as in Go until a leader change: it does not fire again until the
schedule is replaced or the server restarts. A new schedule moves the timer earlier but never
later (Go resets it to at least 250 ms ahead whenever a schedule is stored, so schedules
stored more often than that would postpone the due ones indefinitely).

On start (and after a snapshot restore, or when an update turns schedules on) the pending
schedules are rebuilt by scanning the stored messages (Go's filestore reads an index file or
scans the blocks that hold schedules; memory streams come back empty), and those already due
fire at the first tick.
"""
from __future__ import annotations

import heapq
import logging
import re
import time

from natsx.jetstream.errors import error
from natsx.jetstream.util import (NS, gen_header, is_valid_literal_subject, parse_message_ttl,
                                  remove_header_if_prefix_present, remove_header_if_present,
                                  slice_header, subjects_collide)
from natsx.storage import StoreError

log = logging.getLogger("natsx")

SCHEDULE = b"Nats-Schedule"
SCHEDULE_TTL = b"Nats-Schedule-TTL"
SCHEDULE_TARGET = b"Nats-Schedule-Target"
SCHEDULER = b"Nats-Scheduler"
SCHEDULE_NEXT = b"Nats-Schedule-Next"
SCHEDULE_NEXT_PURGE = b"purge"

#: Go's resetTimer floor: the scheduler never fires sooner than this after being armed.
MIN_FIRE_NS = 250_000_000


# ----------------------------------------------------------------------------- times (Go's)

_GO_RFC3339 = re.compile(rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
                         rb"(?:[.,]([0-9]+))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))")
_ZERO_TIME_SECS = -62135596800     # 0001-01-01T00:00:00Z, Go's zero Time, in Unix seconds


def _days_in(month: int, year: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_go_rfc3339(value: bytes) -> tuple[int, bool]:
    """``time.Parse(time.RFC3339, value)`` as Go parses it: a one-digit hour, a fraction
    after the seconds (``.`` or ``,``, digits past the ninth ignored) and a ``Z`` or
    ``±hh:mm`` offset (up to 24:60) are accepted; ranges are checked. Returns
    ``(UnixNano, IsZero)``, UnixNano wrapped to int64 as Go computes it. Raises ValueError."""
    m = _GO_RFC3339.fullmatch(value)
    if m is None:
        raise ValueError("cannot parse time")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac, sign, oh, om = m.group(7), m.group(8), m.group(9), m.group(10)
    if not 1 <= mo <= 12 or h >= 24 or mi >= 60 or s >= 60 or not 1 <= d <= _days_in(mo, y):
        raise ValueError("time out of range")
    offset = 0
    if sign is not None:
        if int(oh) > 24 or int(om) > 60:
            raise ValueError("time zone offset out of range")
        offset = (int(oh) * 60 + int(om)) * 60
        if sign == b"-":
            offset = -offset
    nsec = int(frac[:9].ljust(9, b"0")) if frac else 0
    secs = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
    ns = (secs * NS + nsec + (1 << 63)) % (1 << 64) - (1 << 63)
    return ns, secs == _ZERO_TIME_SECS and nsec == 0


def get_schedule(hdr: bytes | None) -> tuple[bool, int | None]:
    """Go's getMessageSchedule: ``(ok, when)``; ``when`` is the time (Unix ns) the message
    is scheduled for, None when it is no schedule (no or an empty ``Nats-Schedule``, or Go's
    zero time); ``ok`` is False when the pattern is invalid."""
    val = slice_header(hdr, SCHEDULE)
    if not val:
        return True, None
    if not val.startswith(b"@at "):
        return False, None
    try:
        ns, zero = parse_go_rfc3339(val[4:])
    except ValueError:
        return False, None
    return True, (None if zero else ns)


def get_schedule_ttl(hdr: bytes | None) -> bytes | None:
    """Go's getMessageScheduleTTL: the raw ``Nats-Schedule-TTL`` (b"" when absent), None when
    it is not a valid TTL."""
    ttl = slice_header(hdr, SCHEDULE_TTL)
    if not ttl:
        return b""
    try:
        parse_message_ttl(ttl)
    except ValueError:
        return None
    return bytes(ttl)


def scheduler_to_purge(hdr: bytes) -> str:
    """The subject a stored message's ``Nats-Schedule-Next: purge`` asks to purge (its
    ``Nats-Scheduler``), or "" (Go's processJetStreamMsg, after the store)."""
    if slice_header(hdr, SCHEDULE_NEXT) != SCHEDULE_NEXT_PURGE:
        return ""
    scheduler = slice_header(hdr, SCHEDULER)
    return scheduler.decode("utf-8", "surrogateescape") if scheduler else ""


# ----------------------------------------------------------------------------- publish checks

def check_publish(cfg: dict, subject: str, hdr: bytes) -> tuple[bytes, int | None]:
    """The message scheduling checks of Go's processJetStreamMsg for a publish on
    ``subject``: ``(hdr, when)`` with ``Nats-Rollup: sub`` added to a schedule that has no
    rollup and ``when`` its time (Unix ns; None for a message that is no schedule).
    Raises ApiError."""
    ok, when = get_schedule(hdr)
    allowed = cfg.get("allow_msg_schedules")
    if not ok:
        raise error("JSMessageSchedulesPatternInvalidErr" if allowed
                    else "JSMessageSchedulesDisabledErr")
    if when is None:
        if not allowed and slice_header(hdr, SCHEDULE_NEXT) == SCHEDULE_NEXT_PURGE:
            # What a schedule's message carries to purge its schedule; from a client, on a
            # stream without schedules, it would purge any subject (deny_purge or not): Go
            # refuses it since 2.12.x.
            raise error("JSMessageSchedulesDisabledErr")
        return hdr, None
    if not allowed:
        raise error("JSMessageSchedulesDisabledErr")
    ttl = get_schedule_ttl(hdr)
    if ttl is None:
        raise error("JSMessageSchedulesTTLInvalidErr")
    if ttl and not cfg.get("allow_msg_ttl"):
        raise error("JSMessageTTLDisabledErr")
    target = (slice_header(hdr, SCHEDULE_TARGET) or b"").decode("utf-8", "surrogateescape")
    if not target or not is_valid_literal_subject(target) or subjects_collide(target, subject):
        raise error("JSMessageSchedulesTargetInvalidErr")
    if not any(subjects_collide(s, target) for s in cfg.get("subjects") or ()):
        raise error("JSMessageSchedulesTargetInvalidErr")
    rollup = slice_header(hdr, b"Nats-Rollup")
    if not rollup:
        hdr = gen_header(hdr, b"Nats-Rollup", b"sub")
    elif rollup.lower() != b"sub":
        raise error("JSMessageSchedulesRollupInvalidErr")
    return hdr, when


def produce(subject: str, hdr: bytes | None, ttl: bytes) -> bytes:
    """The headers of the message a schedule on ``subject`` produces (Go's
    getScheduledMessages)."""
    hdr = remove_header_if_present(hdr, SCHEDULE)
    hdr = remove_header_if_prefix_present(hdr, b"Nats-Schedule-")
    hdr = remove_header_if_prefix_present(hdr, b"Nats-Expected-")
    hdr = remove_header_if_present(hdr, b"Nats-Msg-Id")
    hdr = remove_header_if_present(hdr, b"Nats-TTL")
    hdr = remove_header_if_present(hdr, b"Nats-Rollup")
    hdr = gen_header(hdr, SCHEDULER, subject.encode("utf-8", "surrogateescape"))
    hdr = gen_header(hdr, SCHEDULE_NEXT, SCHEDULE_NEXT_PURGE)
    if ttl:
        hdr = gen_header(hdr, b"Nats-TTL", ttl)
    return hdr


# ----------------------------------------------------------------------------- the scheduler

class MsgScheduling:
    """The pending schedules of one stream and their timer; see the module docstring."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.schedules: dict[str, tuple[int, int]] = {}    # subject -> (seq, when)
        self.seq_to_subj: dict[int, str] = {}
        self.inflight: set[str] = set()
        self._heap: list[tuple[int, int]] = []             # (when, seq); stale ones skipped
        self.timer = None
        self._timer_at = 0                                  # Unix ns the timer fires at

    def init(self, seq: int, subject: str, when: int) -> None:
        old = self.schedules.get(subject)
        if old is not None:
            self.seq_to_subj.pop(old[0], None)
        self.schedules[subject] = (seq, when)
        self.seq_to_subj[seq] = subject
        self.inflight.discard(subject)
        heapq.heappush(self._heap, (when, seq))

    def add(self, seq: int, subject: str, when: int) -> None:
        """A schedule was stored: track it and move the timer earlier if it must."""
        self.init(seq, subject, when)
        self.arm()

    def remove(self, seq: int) -> None:
        subject = self.seq_to_subj.pop(seq, None)
        if subject is not None:
            self.schedules.pop(subject, None)
            self.inflight.discard(subject)

    def recover(self) -> None:
        """Rebuild the pending schedules from the stored messages, then arm the timer."""
        for sm in self.stream.store.scan():
            if sm.headers and SCHEDULE + b":" in sm.headers:
                ok, when = get_schedule(sm.headers)
                if ok and when is not None:
                    self.init(sm.seq, sm.subject, when)
        self.arm()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _next(self) -> int | None:
        heap = self._heap
        while heap:
            when, seq = heap[0]
            subject = self.seq_to_subj.get(seq)
            if subject is not None and subject not in self.inflight:
                return when
            heapq.heappop(heap)      # replaced, removed, or in flight (never fires again)
        return None

    def arm(self) -> None:
        """Arm the timer at the earliest pending schedule, at least 250 ms ahead (Go's
        resetTimer), unless it is armed sooner already."""
        stream = self.stream
        when = self._next()
        if when is None or stream.closed:
            self.stop()
            return
        now = time.time_ns()
        at = max(when, now + MIN_FIRE_NS)
        if self.timer is not None:
            if self._timer_at <= at:
                return
            self.timer.cancel()
        self._timer_at = at
        self.timer = stream.js.call_later((at - now) / NS, self._fire)

    def _fire(self) -> None:
        self.timer = None
        stream = self.stream
        if stream.closed:
            return
        try:
            # What the timer was armed for is due, whatever the wall clock says meanwhile.
            self.run(max(time.time_ns(), self._timer_at))
        finally:
            if not stream.closed:
                self.arm()

    def run(self, now: int) -> None:
        """Go's runMsgScheduling: produce the message of every schedule due at ``now``, in
        stream order, through the stream's store path."""
        store = self.stream.store
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            _when, seq = heapq.heappop(heap)
            subject = self.seq_to_subj.get(seq)
            if subject is None or subject in self.inflight:
                continue
            try:
                sm = store.load_msg(seq)
            except StoreError:
                self.remove(seq)
                continue
            ttl = get_schedule_ttl(sm.headers)
            target = slice_header(sm.headers, SCHEDULE_TARGET)
            if ttl is None or not target:
                self.remove(seq)
                continue
            due.append((seq, subject, target.decode("utf-8", "surrogateescape"),
                        produce(sm.subject, sm.headers, ttl), sm.payload))
            self.inflight.add(subject)
        due.sort()
        for seq, subject, target, hdr, payload in due:
            try:
                self.stream.process_msg(target, None, hdr, payload, produced=True)
            except Exception:
                log.exception("JetStream: scheduled message of stream %r failed",
                              self.stream.name)
            try:
                store.load_msg(seq)
            except StoreError:
                # Purged by the message it produced: done.
                self.remove(seq)
