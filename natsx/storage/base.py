"""The stream store: one JetStream stream's messages, limits and per-subject index.

Theory of operation
-------------------
``StreamStore`` holds everything the Go server's ``StreamStore`` implementations share —
discard policies, limits, purges, per-subject state, filtered counts, expiry — written once
against a handful of primitives (``_p_*``) that a backend provides: put/get/delete a message by
sequence, walk present sequences, walk one subject's sequences, clear, and a TTL index. The
memory store (memstore.py) and the LMDB store (lmdbstore.py) are those primitives; behaviour is
therefore identical by construction, and the tests run every case against both.

What lives in Python memory in both backends: the counters (msgs, bytes, first/last sequence
and time) and the per-subject index ``subject -> msgs, first, last``. Like Go's memstore, a
subject's first/last are recomputed lazily after the message they pointed at is removed
(``first_stale``/``last_stale``); the LMDB backend answers that from its subject index in
O(log n), the memory backend by scanning forward as Go does.

Sequences: ``first_seq`` is the oldest present message (``last_seq + 1`` when empty) and
``last_seq`` the newest ever assigned; the sequences between them that are not present are
interior deletes. Every method that changes the store is a *write*; the backend runs each one
atomically (one LMDB transaction) and may group several into a batch. A ``StoreError`` is
raised before a write has changed anything, except where the Go server also changes state
first (a consumer's ack dropping its redelivery count), so a caller may catch it inside a batch.

The store reads no clock for expiry: the owner calls ``expire(now_ns)`` and schedules the next
call at ``next_expiry()``. ``store_msg`` stamps ``time.time_ns()`` only when given no time.
Removals and stores are reported to the ``register_storage_updates`` callback as
``(msgs_delta, bytes_delta, seq, subject)`` (seq 0 and subject "" for bulk changes), after the
change is committed. Not thread-safe: one owner drives a store.
"""

from __future__ import annotations

import functools
import itertools
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Union

from .consumerstore import ConsumerStore
from .subjects import is_literal, matcher
from .types import (
    DISCARD_NEW,
    DISCARD_OLD,
    FILE_STORAGE,
    FILE_STORE_MAX_RECORD,
    ConsumerStoreConfig,
    ErrMaxBytes,
    ErrMaxMsgs,
    ErrMaxMsgsPerSubject,
    ErrMsgTooLarge,
    ErrSequenceMismatch,
    ErrStoreClosed,
    ErrStoreEOF,
    ErrStoreMsgNotFound,
    ErrTooManyResults,
    SimpleState,
    StoreConfig,
    StoreError,
    StoredMsg,
    StreamState,
)

__all__ = ["StreamStore", "StorageUpdateHandler"]

NS_PER_SECOND = 1_000_000_000

#: ``(msgs_delta, bytes_delta, seq, subject)``; seq is 0 and subject "" for bulk changes.
StorageUpdateHandler = Callable[[int, int, int, str], None]

# Go's memstore shouldLinearScan: past this many subjects, matching a wildcard against every
# subject costs more than walking messages until one matches.
_LINEAR_SCAN_SUBJECTS = 256


def subject_str(subject: Union[str, bytes]) -> str:
    if isinstance(subject, str):
        return subject
    # surrogateescape keeps any byte sequence round-trippable through the str form.
    return bytes(subject).decode("utf-8", "surrogateescape")


def subject_len(subject: str) -> int:
    """The subject's length in bytes, as Go's len() counts it for sizes."""
    if subject.isascii():
        return len(subject)
    return len(subject.encode("utf-8", "surrogateescape"))


def _as_bytes(data) -> bytes:
    if data is None:
        return b""
    return data if type(data) is bytes else bytes(data)


class _SubjectState:
    __slots__ = ("msgs", "first", "last", "first_stale", "last_stale")

    def __init__(self, msgs: int, first: int, last: int) -> None:
        self.msgs = msgs
        self.first = first
        self.last = last
        self.first_stale = False
        self.last_stale = False


def _reader(fn):
    @functools.wraps(fn)
    def method(self: "StreamStore", *args, **kwargs):
        if self._closed:
            raise ErrStoreClosed()
        if self._depth:
            return fn(self, *args, **kwargs)
        self._enter_read()
        self._depth = 1
        try:
            return fn(self, *args, **kwargs)
        finally:
            self._depth = 0
            self._exit_read()

    return method


def _writer(fn):
    @functools.wraps(fn)
    def method(self: "StreamStore", *args, **kwargs):
        return self._write_call(fn, self, args, kwargs)

    return method


class StreamStore:
    """Base of the stream stores; see the module docstring. Use ``MemStore`` or ``LmdbStore``."""

    #: True when the backend finds a subject's next sequence without scanning the stream.
    _cheap_subject_seek = False

    def __init__(self, cfg: StoreConfig) -> None:
        self.cfg = cfg
        self._msgs = 0
        self._bytes = 0
        self._first = 0
        self._first_ts = 0
        self._last = 0
        self._last_ts = 0
        self._fss: dict[str, _SubjectState] = {}
        self._consumers: dict[str, ConsumerStore] = {}
        self._scb: Optional[StorageUpdateHandler] = None
        self._updates: list[tuple[int, int, int, str]] = []
        self._closed = False
        self._depth = 0

    # =========================================================================================
    # Backend primitives

    def _p_put(self, seq: int, subject: str, headers: bytes, payload: bytes, ts: int,
               ttl: int) -> None:
        raise NotImplementedError

    def _p_get(self, seq: int) -> Optional[StoredMsg]:
        raise NotImplementedError

    def _p_info(self, seq: int) -> Optional[tuple[str, int, int, int]]:
        """``(subject, ts, ttl, size)`` of a present message."""
        raise NotImplementedError

    def _p_delete(self, seq: int, secure: bool) -> Optional[tuple[str, int]]:
        """Remove a message from storage and its indexes; ``(subject, size)`` or None."""
        raise NotImplementedError

    def _p_next_seq(self, seq: int) -> Optional[int]:
        """The smallest present sequence >= seq."""
        raise NotImplementedError

    def _p_prev_seq(self, seq: int) -> Optional[int]:
        """The largest present sequence <= seq."""
        raise NotImplementedError

    def _p_seqs(self, lo: int, hi: int, reverse: bool = False) -> Iterator[int]:
        raise NotImplementedError

    def _p_scan(self, lo: int, hi: int,
                reverse: bool = False) -> Iterator[tuple[int, str, int, int]]:
        """``(seq, subject, ts, ttl)`` of present messages in ``[lo, hi]``."""
        raise NotImplementedError

    def _p_count(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def _p_clear(self) -> None:
        raise NotImplementedError

    def _p_ttl_due(self, now: int) -> list[int]:
        """Sequences whose TTL expired at or before ``now``."""
        raise NotImplementedError

    def _p_ttl_next(self) -> Optional[int]:
        raise NotImplementedError

    def _p_subject_scan(self, subject: str, lo: int, hi: int,
                        reverse: bool = False) -> Iterator[int]:
        for seq, subj, _ts, _ttl in self._p_scan(lo, hi, reverse):
            if subj == subject:
                yield seq

    def _p_subject_bounds(self, subject: str, ss: _SubjectState) -> None:
        """Recompute a subject's stale first and/or last sequence (Go recalculateForSubj)."""
        if ss.first_stale:
            lo = max(ss.first + 1, self._first)
            for seq in self._p_subject_scan(subject, lo, ss.last):
                ss.first = seq
                break
            ss.first_stale = False
            if ss.msgs == 1:
                ss.last, ss.last_stale = ss.first, False
                return
        if ss.last_stale:
            hi = min(ss.last - 1, self._last)
            for seq in self._p_subject_scan(subject, ss.first, hi, reverse=True):
                ss.last = seq
                break
            ss.last_stale = False
            if ss.msgs == 1:
                ss.first = ss.last

    def _count_partial(self, partial: dict[str, _SubjectState], sseq: int) -> tuple[int, int]:
        """How many messages of the ``partial`` subjects sit at or after ``sseq``, and the
        first of them. Walks whichever side of ``sseq`` is shorter, as Go's memstore does."""
        hi = max(ss.last for ss in partial.values())
        lo = min(ss.first for ss in partial.values())
        if hi - sseq <= sseq - lo:
            n = first = 0
            for seq, subj, _ts, _ttl in self._p_scan(sseq, hi):
                if subj in partial:
                    n += 1
                    first = first or seq
            return n, first
        before = sum(1 for _s, subj, _t, _l in self._p_scan(lo, sseq - 1) if subj in partial)
        first = next((seq for seq, subj, _t, _l in self._p_scan(sseq, hi) if subj in partial), 0)
        return sum(ss.msgs for ss in partial.values()) - before, first

    # Scopes: the LMDB backend opens transactions here.

    def _enter_read(self) -> None:
        pass

    def _exit_read(self) -> None:
        pass

    def _write_call(self, fn, obj, args, kwargs):
        if self._closed:
            raise ErrStoreClosed()
        if self._depth:
            return fn(obj, *args, **kwargs)
        return self._run_write(fn, obj, args, kwargs)

    def _run_write(self, fn, obj, args, kwargs):
        self._depth = 1
        try:
            return fn(obj, *args, **kwargs)
        finally:
            self._depth = 0
            self._deliver_updates()

    # Persistence hooks (no-ops in memory).

    def _config_changed(self) -> None:
        pass

    def _consumer_changed(self, cs: ConsumerStore) -> None:
        pass

    def _consumer_detached(self, cs: ConsumerStore, delete: bool) -> None:
        if self._consumers.get(cs.name) is cs:
            del self._consumers[cs.name]

    def _new_consumer(self, name: str, cfg: Optional[ConsumerStoreConfig]) -> ConsumerStore:
        return ConsumerStore(self, name, cfg or ConsumerStoreConfig())

    # =========================================================================================
    # Lifecycle, callbacks, batches

    def register_storage_updates(self, cb: Optional[StorageUpdateHandler]) -> None:
        """Report every change in stored messages and bytes to ``cb`` (Go StorageUpdateHandler)."""
        self._scb = cb

    def _notify(self, msgs: int, nbytes: int, seq: int, subject: str) -> None:
        if self._scb is not None:
            self._updates.append((msgs, nbytes, seq, subject))

    def _deliver_updates(self) -> None:
        if self._updates:
            updates, self._updates = self._updates, []
            cb = self._scb
            if cb is not None:
                for u in updates:
                    cb(*u)

    def begin_batch(self) -> None:
        """Group the following writes into one commit (and one sync) until ``commit_batch``."""

    def commit_batch(self) -> None:
        """Commit (and sync, if the store syncs) every write since ``begin_batch``."""

    def abort_batch(self) -> None:
        """Drop the writes since ``begin_batch`` where the backend can (LMDB); the memory store
        has already applied them."""

    @contextmanager
    def batch(self):
        """``with store.batch():`` commits on exit and aborts if the block raises."""
        self.begin_batch()
        try:
            yield self
        except BaseException:
            self.abort_batch()
            raise
        self.commit_batch()

    def sync(self) -> None:
        """Force committed data to stable storage (a no-op in memory)."""

    def stop(self) -> None:
        """Close the store. Further calls raise ErrStoreClosed."""
        self._closed = True
        for cs in list(self._consumers.values()):
            cs._closed = True
        self._consumers.clear()

    def delete(self) -> None:
        """Close the store and remove its data."""
        self.stop()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # =========================================================================================
    # Storing

    def store_msg(self, subject: Union[str, bytes], headers: bytes = b"", payload: bytes = b"",
                  ts_ns: Optional[int] = None, ttl: int = 0) -> tuple[int, int]:
        """Append a message at the next sequence (Go StoreMsg).

        Args:
            ttl: per-message TTL in seconds (``Nats-TTL``); -1 never expires, 0 none.

        Returns:
            ``(seq, ts)``.

        Raises:
            ErrMaxMsgs, ErrMaxBytes, ErrMaxMsgsPerSubject: discard new and a limit reached.
            ErrMsgTooLarge: over ``max_msg_size`` (or a record the file store cannot hold).
        """
        if ts_ns is None:
            ts_ns = time.time_ns()
        seq = self._store(subject_str(subject), _as_bytes(headers), _as_bytes(payload),
                          0, ts_ns, ttl, True)
        return seq, ts_ns

    def append(self, subject: str, headers: bytes, payload: bytes, ts: int) -> int:
        """``store_msg(subject, headers, payload, ts)[0]`` for the stream owner's hot path:
        a publish (str subject, bytes headers and payload, no TTL). When the backend can put
        without a write scope (``_put_ready``) and the message passes every limit without
        removing anything, it is stored here in one frame; otherwise by ``store_msg``."""
        cfg = self.cfg
        hl, pl = len(headers), len(payload)
        size = cfg.msg_size(len(subject) if subject.isascii() else subject_len(subject), hl, pl)
        if self._depth or self._closed or type(headers) is not bytes or \
                type(payload) is not bytes or \
                (cfg.storage == FILE_STORAGE and size > FILE_STORE_MAX_RECORD) or \
                0 < cfg.max_msg_size < hl + pl or \
                0 < cfg.max_msgs <= self._msgs or 0 < cfg.max_bytes < self._bytes + size:
            return self.store_msg(subject, headers, payload, ts)[0]
        ss = self._fss.get(subject)
        if ss is not None and 0 < cfg.max_msgs_per_subject <= ss.msgs or \
                not self._put_ready():
            return self.store_msg(subject, headers, payload, ts)[0]
        seq = self._last + 1
        self._put_last(seq, subject, headers, payload, ts, 0, size, ss)
        if self._scb is not None:
            self._scb(1, size, seq, subject)
        return seq

    def _put_last(self, seq: int, subject: str, headers: bytes, payload: bytes, ts: int,
                  ttl: int, size: int, ss: Optional[_SubjectState]) -> None:
        """Puts a message at the new last sequence and counts it in the stream's and its
        subject's state (``ss``, None for a new subject)."""
        self._p_put(seq, subject, headers, payload, ts, ttl)
        if self._msgs == 0:
            self._first, self._first_ts = seq, ts
        self._msgs += 1
        self._bytes += size
        self._last, self._last_ts = seq, ts
        if ss is not None:
            ss.msgs += 1
            ss.last, ss.last_stale = seq, False
        else:
            self._fss[subject] = _SubjectState(1, seq, seq)

    def _put_ready(self) -> bool:
        """Whether ``_p_put`` may be called outside a write scope (``append``); the backend
        readies itself for it."""
        return False

    def store_raw(self, seq: int, ts: int, subject: Union[str, bytes], headers: bytes = b"",
                  payload: bytes = b"", ttl: int = 0, discard_new_check: bool = False) -> int:
        """Store a message at a given sequence and time, for replicas and mirrors
        (Go StoreRawMsg). ``seq`` 0 means the next one; anything else must be ``last_seq + 1``.
        Followers pass ``discard_new_check=False``: only the leader may refuse a message."""
        return self._store(subject_str(subject), _as_bytes(headers), _as_bytes(payload),
                           seq, ts, ttl, discard_new_check)

    @_writer
    def _store(self, subject: str, headers: bytes, payload: bytes, seq: int, ts: int, ttl: int,
               discard_new_check: bool) -> int:
        cfg = self.cfg
        hl, pl = len(headers), len(payload)
        size = cfg.msg_size(subject_len(subject), hl, pl)
        if cfg.storage == FILE_STORAGE and size > FILE_STORE_MAX_RECORD:
            raise ErrMsgTooLarge()
        ss = self._fss.get(subject)
        maxp = cfg.max_msgs_per_subject
        # A subject at its limit makes room for the new message by dropping its oldest one.
        at_subject_limit = ss is not None and 0 < maxp <= ss.msgs
        if discard_new_check:
            if cfg.max_msg_size > 0 and hl + pl > cfg.max_msg_size:
                raise ErrMsgTooLarge()
            if cfg.discard == DISCARD_NEW:
                # A rollup purges the subject after storing, so it may pass a full subject.
                if at_subject_limit and cfg.discard_new_per_subject and \
                        b"Nats-Rollup:" not in headers:
                    raise ErrMaxMsgsPerSubject()
                if 0 < cfg.max_msgs <= self._msgs and not at_subject_limit:
                    raise ErrMaxMsgs()
                if 0 < cfg.max_bytes < self._bytes + size:
                    if not at_subject_limit:
                        raise ErrMaxBytes()
                    self._recalc(subject, ss)
                    info = self._p_info(ss.first)
                    if info is None or info[3] < size:
                        raise ErrMaxBytes()

        if seq != self._last + 1:
            if seq > 0:
                raise ErrSequenceMismatch()
            seq = self._last + 1

        self._put_last(seq, subject, headers, payload, ts, ttl, size, ss)
        if ss is not None and 0 < maxp < ss.msgs:
            self._enforce_per_subject(subject, ss)

        self._enforce_msg_limit()
        self._enforce_bytes_limit()
        self._notify(1, size, seq, subject)
        return seq

    def skip_msg(self, seq: int = 0, *, ts_ns: Optional[int] = None,
                 no_interest: bool = False) -> int:
        """Use up the next sequence without storing anything (Go SkipMsg; with
        ``no_interest``, SkipMsgNoInterest, which also moves ``last_ts``). Returns it."""
        now = time.time_ns() if ts_ns is None else ts_ns
        return self._skip(seq, 1, now, no_interest)

    def skip_msgs(self, seq: int, num: int, *, ts_ns: Optional[int] = None) -> None:
        """Use up ``num`` sequences starting at ``seq`` (Go SkipMsgs)."""
        now = time.time_ns() if ts_ns is None else ts_ns
        self._skip(seq, num, now, False)

    @_writer
    def _skip(self, seq: int, num: int, now: int, no_interest: bool) -> int:
        if seq != self._last + 1:
            if seq > 0:
                raise ErrSequenceMismatch()
            seq = self._last + 1
        last = seq + num - 1
        self._last = last
        # Skips carry the last message's time forward; only an empty history takes "now".
        if no_interest or self._last_ts == 0:
            self._last_ts = now
        if self._msgs == 0:
            self._first, self._first_ts = last + 1, 0
        return seq

    # =========================================================================================
    # Limits and removal

    def _recalc(self, subject: str, ss: _SubjectState) -> None:
        if ss.first_stale or ss.last_stale:
            self._p_subject_bounds(subject, ss)

    def _remove_one(self, seq: int, secure: bool = False) -> Optional[tuple[str, int]]:
        removed = self._p_delete(seq, secure)
        if removed is None:
            return None
        subject, size = removed
        self._msgs -= 1
        self._bytes = max(0, self._bytes - size)
        if seq == self._first:
            nxt = self._p_next_seq(seq)
            if nxt is None:
                self._first, self._first_ts = self._last + 1, 0
            else:
                self._first, self._first_ts = nxt, self._p_info(nxt)[1]
        self._remove_seq_per_subject(subject, seq)
        return removed

    def _remove(self, seq: int, secure: bool = False) -> bool:
        removed = self._remove_one(seq, secure)
        if removed is None:
            return False
        self._notify(-1, -removed[1], seq, removed[0])
        return True

    def _remove_seq_per_subject(self, subject: str, seq: int) -> None:
        # memstore.go removeSeqPerSubject: keep first/last exact when cheap, else mark stale.
        ss = self._fss.get(subject)
        if ss is None:
            return
        if ss.msgs == 1:
            del self._fss[subject]
            return
        ss.msgs -= 1
        if ss.msgs == 1:
            if not ss.last_stale and seq != ss.last:
                ss.first, ss.first_stale = ss.last, False
                return
            if not ss.first_stale and seq != ss.first:
                ss.last, ss.last_stale = ss.first, False
                return
        if seq == ss.first:
            ss.first_stale = True
        if seq == ss.last:
            ss.last_stale = True

    def _remove_first(self) -> None:
        if not self._remove(self._first):
            raise RuntimeError(f"stream store inconsistent: first sequence {self._first} missing")

    def _enforce_msg_limit(self) -> None:
        cfg = self.cfg
        if cfg.discard != DISCARD_OLD or cfg.max_msgs <= 0:
            return
        while self._msgs > cfg.max_msgs:
            self._remove_first()

    def _enforce_bytes_limit(self) -> None:
        cfg = self.cfg
        if cfg.discard != DISCARD_OLD or cfg.max_bytes <= 0:
            return
        while self._bytes > cfg.max_bytes:
            self._remove_first()

    def _enforce_per_subject(self, subject: str, ss: _SubjectState) -> None:
        maxp = self.cfg.max_msgs_per_subject
        while 0 < maxp < ss.msgs:
            self._recalc(subject, ss)
            if not self._remove(ss.first):
                break

    @_writer
    def remove_msg(self, seq: int) -> bool:
        """Remove one message; False when it is not there (Go RemoveMsg)."""
        return self._remove(seq)

    @_writer
    def erase_msg(self, seq: int) -> bool:
        """Remove one message and drop its contents (Go EraseMsg). The memory store releases
        the only reference; LMDB frees the pages, which keep the bytes until reused."""
        return self._remove(seq, secure=True)

    @_writer
    def purge(self) -> int:
        """Remove every message; ``first_seq`` becomes ``last_seq + 1``. Returns how many."""
        return self._purge(0)

    def _purge(self, fseq: int) -> int:
        purged, nbytes = self._msgs, self._bytes
        if fseq > self._last + 1:
            self._last = fseq - 1
        self._p_clear()
        self._fss = {}
        self._msgs = self._bytes = 0
        self._first, self._first_ts = self._last + 1, 0
        if purged:
            self._notify(-purged, -nbytes, 0, "")
        return purged

    @_writer
    def purge_ex(self, subject: str = "", seq: int = 0, keep: int = 0) -> int:
        """Purge messages matching ``subject`` (wildcards allowed) below ``seq`` (exclusive,
        0 = all), leaving the newest ``keep`` (Go PurgeEx). Returns how many were removed."""
        subject = subject_str(subject)
        if seq == 1:
            return 0
        if subject in ("", ">"):
            if keep == 0 and seq == 0:
                return self._purge(0)
            if seq > 1:
                return self._compact(seq)
            subject = ">"
        ss = self._filtered_state(1, subject)
        if ss.msgs == 0:
            return 0
        maxp = 0
        if keep > 0:
            if keep >= ss.msgs:
                return 0
            maxp = ss.msgs - keep
        last = seq - 1 if seq else ss.last
        m = matcher(subject)
        if m is not None and is_literal(subject):
            found: Iterable[int] = self._p_subject_scan(subject, ss.first, last)
        else:
            found = (s for s, subj, _t, _l in self._p_scan(ss.first, last) if m is None or m(subj))
        victims = list(itertools.islice(found, maxp) if maxp else found)
        purged = nbytes = 0
        low = None
        for s in victims:
            removed = self._remove_one(s)
            if removed is not None:
                purged += 1
                nbytes += removed[1]
                if low is None:
                    low = (s, removed[0])
        if purged == 1:
            self._notify(-1, -nbytes, low[0], low[1])
        elif purged:
            self._notify(-purged, -nbytes, 0, "")
        return purged

    @_writer
    def compact(self, seq: int) -> int:
        """Remove every message below ``seq``; past the end, the next message gets ``seq``
        (Go Compact). Returns how many were removed."""
        return self._compact(seq)

    def _compact(self, seq: int) -> int:
        if seq == 0:
            return self._purge(0)
        if self._first > seq:
            return 0
        if seq <= self._last:
            purged = nbytes = 0
            for s in list(self._p_seqs(self._first, seq - 1)):
                removed = self._remove_one(s)
                if removed is not None:
                    purged += 1
                    nbytes += removed[1]
            if self._msgs == 0:
                self._first, self._first_ts = self._last + 1, 0
        else:
            purged, nbytes = self._msgs, self._bytes
            self._p_clear()
            self._fss = {}
            self._msgs = self._bytes = 0
            self._first, self._first_ts = seq, 0
            self._last = seq - 1
        if purged:
            self._notify(-purged, -nbytes, 0, "")
        return purged

    @_writer
    def truncate(self, seq: int) -> None:
        """Remove every message above ``seq`` and make ``seq`` the last sequence; 0 resets the
        store to its initial state (Go Truncate)."""
        purged, nbytes = self._msgs, self._bytes
        if seq == 0:
            self._p_clear()
            self._fss = {}
            self._msgs = self._bytes = 0
            self._first = self._first_ts = self._last = self._last_ts = 0
        else:
            info = self._p_info(seq)
            last_ts = info[1] if info is not None else self._last_ts
            for s in list(self._p_seqs(seq + 1, self._last)):
                self._remove_one(s)
            self._last, self._last_ts = seq, last_ts
            if self._msgs == 0:
                self._first, self._first_ts = seq + 1, 0
            purged, nbytes = purged - self._msgs, nbytes - self._bytes
        if purged:
            self._notify(-purged, -nbytes, 0, "")

    # =========================================================================================
    # Expiry

    @_writer
    def expire(self, now_ns: int) -> int:
        """Remove messages past ``max_age`` or their TTL as of ``now_ns``. Returns how many."""
        return self._expire(now_ns)

    def _expire(self, now: int) -> int:
        removed = 0
        max_age = self.cfg.max_age
        if max_age > 0 and self._msgs:
            oldest_kept = now - max_age
            victims = []
            for seq, _subj, ts, ttl in self._p_scan(self._first, self._last):
                if ts > oldest_kept:
                    break
                if ttl >= 0:  # a negative TTL ("never") exempts a message from max_age
                    victims.append(seq)
            for seq in victims:
                removed += self._remove(seq)
        if self.cfg.allow_msg_ttl:
            for seq in self._p_ttl_due(now):
                removed += self._remove(seq)
        return removed

    @_reader
    def next_expiry(self) -> Optional[int]:
        """When (Unix ns) ``expire`` next has something to do; None when nothing will expire."""
        due = []
        if self.cfg.max_age > 0 and self._msgs:
            for _seq, _subj, ts, ttl in self._p_scan(self._first, self._last):
                if ttl >= 0:
                    due.append(ts + self.cfg.max_age)
                    break
        if self.cfg.allow_msg_ttl:
            t = self._p_ttl_next()
            if t is not None:
                due.append(t)
        return min(due, default=None)

    # =========================================================================================
    # Config

    def update_config(self, cfg: StoreConfig, now_ns: Optional[int] = None) -> None:
        """Apply new limits, enforcing message, byte and (tightened) per-subject limits now,
        and age/TTL limits too when ``now_ns`` is given (Go UpdateConfig)."""
        if cfg.storage != self.cfg.storage:
            raise ValueError("a stream's storage type cannot change")
        self._update_config(cfg, now_ns)

    @_writer
    def _update_config(self, cfg: StoreConfig, now_ns: Optional[int]) -> None:
        old = self.cfg
        self.cfg = cfg
        self._config_changed()
        self._enforce_msg_limit()
        self._enforce_bytes_limit()
        maxp, old_maxp = cfg.max_msgs_per_subject, old.max_msgs_per_subject
        if maxp > 0 and (old_maxp <= 0 or maxp < old_maxp):
            for subject, ss in list(self._fss.items()):
                if ss.msgs > maxp:
                    self._enforce_per_subject(subject, ss)
        if now_ns is not None:
            self._expire(now_ns)

    # =========================================================================================
    # Loading

    @_reader
    def load_msg(self, seq: int) -> StoredMsg:
        """Raises ErrStoreEOF past the last sequence, else ErrStoreMsgNotFound when missing."""
        sm = self._p_get(seq)
        if sm is None:
            raise ErrStoreEOF() if seq > self._last else ErrStoreMsgNotFound()
        return sm

    @_reader
    def load_last_msg(self, subject: str = "") -> StoredMsg:
        """The newest message matching ``subject`` (wildcards allowed; "" or ">" = any)."""
        subject = subject_str(subject)
        seq = 0
        if matcher(subject) is None:
            if self._msgs:
                seq = self._p_prev_seq(self._last) or 0
        elif is_literal(subject):
            ss = self._fss.get(subject)
            if ss is not None:
                self._recalc(subject, ss)
                seq = ss.last
        else:
            seq = max((ss.last for _s, ss in self._matching(subject)), default=0)
        sm = self._p_get(seq) if seq else None
        if sm is None:
            raise ErrStoreMsgNotFound()
        return sm

    def scan(self, start: int = 0, last: int = 0):
        """Every stored message from ``start`` (the first) to ``last`` (the last sequence
        when the scan starts), in order: the walk recovery and maintenance make."""
        last = last or self.state().last_seq
        seq = start
        while seq <= last:
            try:
                sm, seq = self.load_next_msg("", start=seq)
            except StoreError:
                return
            if seq > last:
                return
            yield sm
            seq += 1

    @_reader
    def load_next_msg(self, filter_subject: str = "", wc: Optional[bool] = None,
                      start: int = 0) -> tuple[StoredMsg, int]:
        """The first message at or after ``start`` matching the filter, and its sequence
        (Go LoadNextMsg). ``wc`` is accepted for Go's signature; the filter itself decides.

        Raises:
            ErrStoreEOF: nothing matches from ``start`` on.
        """
        filter_subject = subject_str(filter_subject)
        start = max(start, self._first)
        if self._msgs == 0 or start > self._last:
            raise ErrStoreEOF()
        seq = self._next_match(filter_subject, start)
        if seq is None:
            raise ErrStoreEOF()
        return self._p_get(seq), seq

    def _next_match(self, filter_subject: str, start: int) -> Optional[int]:
        m = matcher(filter_subject)
        if m is None:
            return self._p_next_seq(start)
        if is_literal(filter_subject):
            ss = self._fss.get(filter_subject)
            if ss is None:
                return None
            self._recalc(filter_subject, ss)
            if ss.last < start:
                return None
            return next(self._p_subject_scan(filter_subject, max(start, ss.first), ss.last), None)
        lo, hi = start, self._last
        if len(self._fss) <= _LINEAR_SCAN_SUBJECTS:
            candidates = [(s, ss) for s, ss in self._matching(filter_subject) if ss.last >= start]
            if not candidates:
                return None
            if self._cheap_subject_seek:
                firsts = (next(self._p_subject_scan(s, max(start, ss.first), ss.last), None)
                          for s, ss in candidates)
                return min((seq for seq in firsts if seq is not None), default=None)
            lo = max(start, min(ss.first for _s, ss in candidates))
            hi = max(ss.last for _s, ss in candidates)
        for seq, subj, _ts, _ttl in self._p_scan(lo, hi):
            if m(subj):
                return seq
        return None

    @_reader
    def load_prev_msg(self, filter_subject: str = "", wc: Optional[bool] = None,
                      start: int = 0) -> tuple[StoredMsg, int]:
        """The last message at or before ``start`` matching the filter (Go LoadPrevMsg)."""
        filter_subject = subject_str(filter_subject)
        if self._msgs == 0 or start < self._first:
            raise ErrStoreEOF()
        start = min(start, self._last)
        m = matcher(filter_subject)
        seq = None
        if m is None:
            seq = self._p_prev_seq(start)
        elif is_literal(filter_subject):
            ss = self._fss.get(filter_subject)
            if ss is not None:
                self._recalc(filter_subject, ss)
                if ss.first <= start:
                    seq = next(self._p_subject_scan(filter_subject, ss.first, min(start, ss.last),
                                                    reverse=True), None)
        else:
            seq = next((s for s, subj, _t, _l in self._p_scan(self._first, start, reverse=True)
                        if m(subj)), None)
        if seq is None:
            raise ErrStoreEOF()
        return self._p_get(seq), seq

    @_reader
    def subject_for_seq(self, seq: int) -> str:
        info = self._p_info(seq) if seq >= self._first else None
        if info is None:
            raise ErrStoreMsgNotFound()
        return info[0]

    @_reader
    def get_seq_from_time(self, ts_ns: int) -> int:
        """The first sequence stored at or after ``ts_ns``; ``last_seq + 1`` if none."""
        if self._msgs == 0:
            return self._last + 1
        if ts_ns <= self._first_ts:
            return self._first
        last = self._p_prev_seq(self._last)
        if ts_ns > self._p_info(last)[1]:
            return self._last + 1
        lo, hi = self._first, last
        while lo < hi:
            mid = (lo + hi) // 2
            s = self._p_next_seq(mid)
            if self._p_info(s)[1] >= ts_ns:
                hi = mid
            else:
                lo = s + 1
        return self._p_next_seq(lo)

    # =========================================================================================
    # State

    @_reader
    def state(self, deleted: bool = False) -> StreamState:
        """The stream state; ``deleted=True`` also lists the interior deletes (O(msgs))."""
        num_deleted = self._num_deleted()
        dlist = None
        if deleted:
            dlist = tuple(self._deleted_seqs()) if num_deleted else ()
        return StreamState(self._msgs, self._bytes, self._first, self._first_ts, self._last,
                           self._last_ts, len(self._fss), num_deleted, dlist,
                           len(self._consumers))

    def _num_deleted(self) -> int:
        if self._msgs == 0:
            return 0
        return self._last - self._first + 1 - self._msgs

    def _deleted_seqs(self) -> Iterator[int]:
        expect = self._first
        for seq in self._p_seqs(self._first, self._last):
            if seq != expect:
                yield from range(expect, seq)
            expect = seq + 1
        # Skips past the newest message are deletes too.
        yield from range(expect, self._last + 1)

    def _matching(self, filter_subject: str) -> Iterator[tuple[str, _SubjectState]]:
        """Subjects matching a filter, with exact first/last."""
        m = matcher(filter_subject)
        if m is None:
            items: Iterable[tuple[str, _SubjectState]] = list(self._fss.items())
        elif is_literal(filter_subject):
            ss = self._fss.get(filter_subject)
            items = [(filter_subject, ss)] if ss is not None else []
        else:
            items = [(s, ss) for s, ss in self._fss.items() if m(s)]
        for subject, ss in items:
            if ss.first_stale or ss.last_stale:
                self._p_subject_bounds(subject, ss)
            yield subject, ss

    @_reader
    def filtered_state(self, seq: int, subject: str = "") -> SimpleState:
        """Messages at or after ``seq`` matching ``subject`` (Go FilteredState)."""
        return self._filtered_state(seq, subject_str(subject))

    def _filtered_state(self, sseq: int, filter_subject: str,
                        last_per_subject: bool = False) -> SimpleState:
        sseq = max(sseq, self._first)
        if self._msgs == 0 or sseq > self._last:
            return SimpleState()
        if matcher(filter_subject) is None and not last_per_subject:
            last = self._p_prev_seq(self._last)
            if last < sseq:  # only skipped sequences from sseq on
                return SimpleState()
            if sseq <= self._first:
                return SimpleState(self._msgs, self._first, last)
            if self._num_deleted() == 0:
                return SimpleState(self._last - sseq + 1, sseq, last)
            return SimpleState(self._p_count(sseq, last), self._p_next_seq(sseq), last)

        total = first = last = 0
        partial: dict[str, _SubjectState] = {}
        for subject, ss in self._matching(filter_subject):
            if ss.last < sseq:
                continue
            last = max(last, ss.last)
            if last_per_subject:
                n, f = 1, ss.last
            elif ss.first >= sseq:
                n, f = ss.msgs, ss.first
            else:
                partial[subject] = ss
                continue
            total += n
            if not first or f < first:
                first = f
        if partial:
            n, f = self._count_partial(partial, sseq)
            total += n
            if f and (not first or f < first):
                first = f
        return SimpleState(total, first, last)

    @_reader
    def num_pending(self, sseq: int, filter_subject: str = "",
                    last_per_subject: bool = False) -> tuple[int, int]:
        """``(count, valid_through)``: messages from ``sseq`` matching the filter (only the last
        one of each subject with ``last_per_subject``), valid through ``last_seq``."""
        ss = self._filtered_state(sseq, subject_str(filter_subject), last_per_subject)
        return ss.msgs, self._last

    @_reader
    def subjects_state(self, filter_subject: str = "") -> dict[str, SimpleState]:
        return {s: SimpleState(ss.msgs, ss.first, ss.last)
                for s, ss in self._matching(subject_str(filter_subject))}

    @_reader
    def subjects_totals(self, filter_subject: str = "") -> dict[str, int]:
        filter_subject = subject_str(filter_subject)
        m = matcher(filter_subject)
        if m is None:
            return {s: ss.msgs for s, ss in self._fss.items()}
        return {s: ss.msgs for s, ss in self._fss.items() if m(s)}

    @_reader
    def all_last_seqs(self) -> list[int]:
        return sorted(ss.last for _s, ss in self._matching(""))

    @_reader
    def multi_last_seqs(self, filters: Iterable[str], max_seq: int = 0,
                        max_allowed: int = 0) -> list[int]:
        """Sorted last sequences of every subject matching any filter, none above ``max_seq``
        (0 = last). Raises ErrTooManyResults past ``max_allowed`` (> 0)."""
        if self._msgs == 0:
            return []
        if max_seq == 0:
            max_seq = self._last
        seqs: set[int] = set()
        for f in filters:
            for subject, ss in self._matching(subject_str(f)):
                if ss.last <= max_seq:
                    seqs.add(ss.last)
                elif ss.msgs > 1 and ss.first <= max_seq:
                    prev = next(self._p_subject_scan(subject, ss.first, max_seq, reverse=True),
                                None)
                    if prev is not None:
                        seqs.add(prev)
            if 0 < max_allowed < len(seqs):
                raise ErrTooManyResults()
        return sorted(seqs)

    # =========================================================================================
    # Consumers

    def consumer_store(self, name: str, cfg: Optional[ConsumerStoreConfig] = None
                       ) -> ConsumerStore:
        """The consumer's store, recovering stored state; ``cfg`` replaces the stored config."""
        if self._closed:
            raise ErrStoreClosed()
        if not name:
            raise ValueError("bad consumer name")
        cs = self._consumers.get(name)
        if cs is None:
            cs = self._new_consumer(name, cfg)
            self._consumers[name] = cs
        elif cfg is not None and cfg != cs.config:
            cs.update_config(cfg)
        return cs

    def consumer_names(self) -> list[str]:
        """Names of the consumers with state in this store."""
        if self._closed:
            raise ErrStoreClosed()
        return sorted(self._consumers)
