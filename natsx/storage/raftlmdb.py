"""The LMDB store of a worker whose writes go through the raft process.

Theory of operation
-------------------
With the raft process running (natsx.raftd), a worker never writes LMDB: the raft process is
the single writer of every stream environment. ``RaftLmdbStore`` is the worker's end. It is a
``StreamStore`` (base.py: the shared logic, the counters and the per-subject index in memory)
whose primitives

* *write* by recording physical LMDB operations (protocol.OP_*: put/delete a message record,
  its subject-index duplicate and TTL key, drop the databases on a clear; at commit the
  ``state`` and ``config`` meta records and the dirty consumers' encoded state), and
* *read* a fresh LMDB read transaction (MVCC: it never blocks the writer) overlaid with every
  operation not yet known to be applied: the open batch and the proposals in flight. The
  overlay holds the messages put since (a dict and an ordered list of sequences), the
  sequences deleted since, whether a clear happened (then LMDB's older content is hidden), the
  TTLs and the consumers written since; scans merge LMDB's cursor with the overlay's list.

``commit_batch`` sends the recorded operations as one proposal of the stream's RAFT group and
returns at once; ``last_proposal`` is its index, which the owner awaits
(``RaftClient.wait``: durable in the raft process's log) before acknowledging anything the
batch did; LMDB takes it a little later (``group.applied``). A proposal, once applied, is in
LMDB and in the overlay at the same time until the overlay lets it go; every merge is
idempotent for that (a put is shown once, a delete hides both). Applied entries leave the
overlay when it is rebuilt from the proposals still in flight: once none is left, once the
applied ones it still holds pass a size, or after a refusal. The writes of a batch read
through one snapshot, taken at its first write and let go at its commit (or at a rebuild).

A write made outside a batch calls ``on_dirty`` (the stream marks itself dirty), so it is
committed, and awaited, with the batch of the round. The environment has the LmdbStore layout
(lmdbstore.py), so ``LmdbStore`` and ``LmdbReader`` open it as well; the reads shared with
them, decryption included, are lmdbread.py's.

Encryption at rest (crypt.py): the proposals carry values already sealed with the stream's
codec, so the raft process (and its in-memory log) never sees plaintext nor keys. Setting an
environment up for encryption, or converting it (a new key, the previous key, plaintext data),
is the one write a worker makes itself: ``crypt.prepare_path``, in one LMDB transaction, just
before the raft process opens the group and before any proposal of the stream exists.
"""
from __future__ import annotations

import heapq
import os
from bisect import bisect_left, bisect_right
from typing import Optional

import lmdb

from natsx.raftd import protocol as P

from .base import NS_PER_SECOND, StreamStore, _reader
from .consumerstore import ConsumerStore
from .crypt import Codec
from .lmdbread import (HDR, MAX_DBS, REC, STATE, TTL_KEY, U64, LmdbReadPath, begin_read,
                       decode_subject, dups, encode_subject, open_dbs)
from .types import FILE_STORAGE, StoreConfig, StoredMsg

__all__ = ["RaftLmdbStore"]

_MAX_SEQ = (1 << 64) - 1
_OP_PUT, _DB_MSGS, _DB_SUBJ = P.OP_PUT, P.DB_MSGS, P.DB_SUBJ
# The overlay is rebuilt without the answered proposals once they hold this many bytes.
_OV_KEEP_BYTES = 4 << 20


class RaftLmdbStore(LmdbReadPath, StreamStore):
    """A file stream store written through the raft process; ``group`` is the stream's
    ``RaftGroup`` (natsx.raftd.client), already opened (so the environment exists);
    ``codec`` the stream's when it is encrypted (``crypt.prepare_path`` set it up)."""

    _cheap_subject_seek = True

    def __init__(self, path, cfg: Optional[StoreConfig], group,
                 codec: Optional[Codec] = None) -> None:
        self.path = os.fspath(path)
        self.group = group
        self.on_dirty = None
        self.last_proposal = 0
        env = lmdb.open(self.path, readonly=True, create=False, max_dbs=MAX_DBS)
        (self._dbm, self._dbs, self._dbt, self._dbmeta, self._dbc) = open_dbs(env, None, False)
        self._use_codec(codec)
        self._env = env
        self._txn = None
        self._ops: list = []
        self._inflight: list = []          # (index, ops, size) proposed, not yet answered
        self._ov_answered = 0              # size of the answered proposals still overlaid
        self._ov_refused = group.refused   # the group's refusals the overlay has seen
        self._batch_txn = None             # the read snapshot of the open batch's writes
        self._batch_open = False
        self._cfg_dirty = False
        self._dirty_consumers: dict[str, Optional[ConsumerStore]] = {}
        self._saved_state: tuple = ()
        self._ov_reset()
        super().__init__(cfg if cfg is not None else StoreConfig(storage=FILE_STORAGE))
        txn = self._begin()
        try:
            fresh = txn.get(b"state", db=self._dbmeta) is None
        finally:
            txn.abort()
        self._open_state(cfg, fresh)

    def _reload(self) -> None:
        txn = self._begin()
        try:
            self._load_state(txn)
        finally:
            txn.abort()

    # -- overlay ---------------------------------------------------------------------------

    def _ov_reset(self) -> None:
        self._ov_msgs: dict[int, tuple] = {}     # seq -> (subject, headers, payload, ts, ttl)
        self._ov_seqs: list[int] = []
        self._ov_dels: set[int] = set()
        self._ov_cleared = False
        self._ov_ttls: list = []
        self._ov_cons: dict[str, Optional[bytes]] = {}

    def _ov_apply(self, op, db, key, value) -> None:
        if db == P.DB_MSGS:
            if op == P.OP_PUT:
                seq = int.from_bytes(key, "big")
                if self._open_rec is not None:
                    value = self._open_rec(key, value)
                ts, ttl, sl, hl = REC.unpack_from(value)
                a, b = HDR + sl, HDR + sl + hl
                self._ov_put(seq, decode_subject(value[HDR:a]), bytes(value[a:b]),
                             bytes(value[b:]), ts, ttl)
            elif op == P.OP_DEL:
                seq = int.from_bytes(key, "big")
                self._ov_msgs.pop(seq, None)
                self._ov_dels.add(seq)
            elif op == P.OP_DROP:
                self._ov_msgs, self._ov_seqs, self._ov_dels = {}, [], set()
                self._ov_ttls = []
                self._ov_cleared = True
        elif db == P.DB_TTL and op == P.OP_PUT:
            heapq.heappush(self._ov_ttls, TTL_KEY.unpack(key))
        elif db == P.DB_CONSUMERS:
            self._ov_cons[key.decode()] = value if op == P.OP_PUT else None

    def _ov_put(self, seq, subject, headers, payload, ts, ttl) -> None:
        self._ov_msgs[seq] = (subject, headers, payload, ts, ttl)
        self._ov_dels.discard(seq)
        seqs = self._ov_seqs
        if not seqs or seqs[-1] < seq:
            seqs.append(seq)
        else:
            i = bisect_left(seqs, seq)
            if i == len(seqs) or seqs[i] != seq:
                seqs.insert(i, seq)

    def _sync_overlay(self) -> None:
        """Forgets the proposals LMDB has taken (``group.applied``: the raft process answers
        once a proposal is durable in its log, and applies it to LMDB right after); drops
        them from the overlay once it holds enough of them (``_OV_KEEP_BYTES``), no proposal
        is left in flight, or one was refused.

        An applied proposal is in LMDB, so keeping it in the overlay changes no read (every
        merge is idempotent); rebuilding the overlay from the proposals still in flight on
        every answer would cost Python per message for every round a proposal waits."""
        inflight = self._inflight
        group = self.group
        # What LMDB has (durable entries may still be on their way there); after a refusal
        # (a fenced writer) what was answered, as nothing more will be applied for us.
        applied = group.confirmed if group.refused else group.applied
        if not inflight or inflight[0][0] > applied:
            return
        keep = [p for p in inflight if p[0] > applied]
        self._inflight = keep
        if keep and self._ov_refused == self.group.refused:
            for p in inflight[:len(inflight) - len(keep)]:
                self._ov_answered += p[2]
            if self._ov_answered < _OV_KEEP_BYTES:
                return
        self._ov_answered = 0
        self._ov_refused = self.group.refused
        inflight = keep
        self._drop_batch_txn()
        self._ov_reset()
        for _index, ops, _size in inflight:
            for op in ops:
                self._ov_apply(*op)
        for op in self._ops:
            self._ov_apply(*op)

    def _op(self, op, db, key, value=b"") -> None:
        self._ops.append((op, db, key, value))

    # -- transactions ----------------------------------------------------------------------

    def _begin(self) -> lmdb.Transaction:
        # The raft process may have grown the map: begin_read adopts its size.
        return begin_read(self._env)

    def _enter_read(self) -> None:
        self._sync_overlay()
        self._txn = self._begin()

    def _exit_read(self) -> None:
        txn, self._txn = self._txn, None
        txn.abort()

    def _drop_batch_txn(self) -> None:
        txn, self._batch_txn = self._batch_txn, None
        if txn is not None:
            txn.abort()

    def _run_write(self, fn, obj, args, kwargs):
        self._sync_overlay()
        self._depth = 1
        if self._batch_open:
            # Every write of a batch reads through one snapshot: the overlay holds every
            # operation after it until the overlay is rebuilt, which drops the snapshot.
            txn = self._batch_txn
            if txn is None:
                txn = self._batch_txn = self._begin()
            self._txn = txn
        else:
            self._txn = self._begin()
        try:
            return fn(obj, *args, **kwargs)
        finally:
            if self._txn is not self._batch_txn:
                self._txn.abort()
            self._txn = None
            self._depth = 0
            if not self._batch_open and self.on_dirty is not None and self._has_changes():
                self.on_dirty()
            self._deliver_updates()

    def _state_tuple(self) -> tuple:
        return (self._msgs, self._bytes, self._first, self._first_ts, self._last, self._last_ts)

    def _has_changes(self) -> bool:
        return bool(self._ops or self._cfg_dirty or self._dirty_consumers
                    or self._state_tuple() != self._saved_state)

    def begin_batch(self) -> None:
        self._batch_open = True
        # What the raft process applied leaves the overlay here, once per batch: the
        # appends of the batch (``_put_ready``) do not look.
        self._sync_overlay()

    def commit_batch(self) -> None:
        """Proposes what the batch wrote (``last_proposal`` is its index); returns at once."""
        self._batch_open = False
        self._drop_batch_txn()
        if self._closed or not self._has_changes():
            return
        ops, self._ops = self._ops, []
        state = self._state_tuple()
        if state != self._saved_state:
            ops.append((P.OP_PUT, P.DB_META, b"state", STATE.pack(*state)))
            self._saved_state = state
        if self._cfg_dirty:
            ops.append((P.OP_PUT, P.DB_META, b"config", self._config_value()))
            self._cfg_dirty = False
        for name, cs in self._dirty_consumers.items():
            key = name.encode()
            if cs is None:
                op = (P.OP_DEL, P.DB_CONSUMERS, key, b"")
            else:
                op = (P.OP_PUT, P.DB_CONSUMERS, key, self._consumer_value(key, cs))
            ops.append(op)
            self._ov_apply(*op)
        self._dirty_consumers = {}
        index = self.group.propose(ops)
        self._inflight.append((index, ops, len(self.group.inflight.get(index) or ())))
        self.last_proposal = index

    def abort_batch(self) -> None:
        """Writes are applied to the overlay as they happen: there is nothing to undo."""
        self._batch_open = False
        self._drop_batch_txn()

    def _put_ready(self) -> bool:
        """Inside a batch a put needs no read snapshot: it only records operations and
        overlays the message (``append``)."""
        return self._batch_open

    # -- primitives ------------------------------------------------------------------------

    def _p_put(self, seq, subject, headers, payload, ts, ttl):
        sb = encode_subject(subject)
        key = U64.pack(seq)
        rec = b"".join((REC.pack(ts, ttl, len(sb), len(headers)), sb, headers, payload))
        if self._seal_rec is not None:
            rec = self._seal_rec(key, rec)
        self._ops += ((_OP_PUT, _DB_MSGS, key, rec), (_OP_PUT, _DB_SUBJ, self.skey(sb), key))
        self._ov_put(seq, subject, headers, payload, ts, ttl)
        if ttl > 0:
            tkey = (ts + ttl * NS_PER_SECOND, seq)
            self._op(P.OP_PUT, P.DB_TTL, TTL_KEY.pack(*tkey))
            heapq.heappush(self._ov_ttls, tkey)

    def _p_get(self, seq):
        m = self._ov_msgs.get(seq)
        if m is not None:
            return StoredMsg(m[0], m[1], m[2], seq, m[3])
        if self._ov_cleared or seq in self._ov_dels:
            return None
        v = self._txn.get(U64.pack(seq), db=self._dbm)
        return None if v is None else self._decode(seq, v)

    def _p_info(self, seq):
        m = self._ov_msgs.get(seq)
        if m is not None:
            subject, headers, payload, ts, ttl = m
            return (subject, ts, ttl, self.cfg.msg_size(len(encode_subject(subject)),
                                                        len(headers), len(payload)))
        if self._ov_cleared or seq in self._ov_dels:
            return None
        return self._lmdb_info(seq)

    def _p_delete(self, seq, secure):
        info = self._p_info(seq)
        if info is None:
            return None
        subject, ts, ttl, size = info
        key = U64.pack(seq)
        self._op(P.OP_DEL, P.DB_MSGS, key)
        self._op(P.OP_DEL_DUP, P.DB_SUBJ, self._skey(subject), key)
        if ttl > 0:
            self._op(P.OP_DEL, P.DB_TTL, TTL_KEY.pack(ts + ttl * NS_PER_SECOND, seq))
        self._ov_msgs.pop(seq, None)
        self._ov_dels.add(seq)
        return subject, size

    def _ov_range(self, lo, hi, reverse):
        seqs, msgs = self._ov_seqs, self._ov_msgs
        part = seqs[bisect_left(seqs, lo):bisect_right(seqs, hi)]
        return [s for s in (reversed(part) if reverse else part) if s in msgs]

    def _lmdb_seqs(self, lo, hi, reverse):
        if self._ov_cleared:
            return
        cur = self._txn.cursor(db=self._dbm)
        if not self._position(cur, lo, hi, reverse):
            return
        for k in (cur.iterprev(values=False) if reverse else cur.iternext(values=False)):
            seq = int.from_bytes(k, "big")
            if (seq < lo) if reverse else (seq > hi):
                return
            if seq not in self._ov_dels and seq not in self._ov_msgs:
                yield seq

    def _p_seqs(self, lo, hi, reverse=False):
        if lo > hi:
            return iter(())
        ov = self._ov_range(lo, hi, reverse)
        base = self._lmdb_seqs(lo, hi, reverse)
        if not ov:
            return base
        return heapq.merge(base, ov, reverse=reverse)

    def _p_next_seq(self, seq):
        return next(iter(self._p_seqs(seq, _MAX_SEQ)), None)

    def _p_prev_seq(self, seq):
        return next(iter(self._p_seqs(0, seq, True)), None)

    def _p_scan(self, lo, hi, reverse=False):
        ov, get, dbm, opn = self._ov_msgs, self._txn.get, self._dbm, self._open_rec
        for seq in self._p_seqs(lo, hi, reverse):
            m = ov.get(seq)
            if m is not None:
                yield seq, m[0], m[3], m[4]
                continue
            key = U64.pack(seq)
            v = get(key, db=dbm)
            if opn is not None:
                v = opn(key, v)
            ts, ttl, sl, _hl = REC.unpack_from(v)
            yield seq, decode_subject(v[HDR:HDR + sl]), ts, ttl

    def _p_clear(self):
        for db in (P.DB_MSGS, P.DB_SUBJ, P.DB_TTL):
            self._op(P.OP_DROP, db, b"")
        self._ov_apply(P.OP_DROP, P.DB_MSGS, b"", b"")

    def _lmdb_ttls(self):
        if self._ov_cleared:
            return
        cur = self._txn.cursor(db=self._dbt)
        for k in cur.iternext(values=False):
            expires, seq = TTL_KEY.unpack(k)
            if seq not in self._ov_dels and seq not in self._ov_msgs:
                yield expires, seq

    def _ov_ttls_live(self):
        msgs = self._ov_msgs
        for expires, seq in sorted(self._ov_ttls):
            m = msgs.get(seq)
            if m is not None and m[4] > 0 and m[3] + m[4] * NS_PER_SECOND == expires:
                yield expires, seq

    def _p_ttl_due(self, now):
        due = []
        for expires, seq in heapq.merge(self._lmdb_ttls(), self._ov_ttls_live()):
            if expires > now:
                break
            due.append(seq)
        return due

    def _p_ttl_next(self):
        first = next(heapq.merge(self._lmdb_ttls(), self._ov_ttls_live()), None)
        return first[0] if first is not None else None

    def _p_subject_scan(self, subject, lo, hi, reverse=False):
        if lo > hi:
            return iter(())
        msgs = self._ov_msgs
        ov = [s for s in self._ov_range(lo, hi, reverse) if msgs[s][0] == subject]
        base = () if self._ov_cleared else (
            s for s in dups(self._txn.cursor(db=self._dbs), self._skey(subject), lo, hi, reverse)
            if s not in self._ov_dels and s not in msgs)
        if not ov:
            return iter(base)
        return heapq.merge(base, ov, reverse=reverse)

    # -- consumers -------------------------------------------------------------------------

    @_reader
    def _load_consumer(self, name: str):
        key = name.encode()
        if name in self._ov_cons:
            data = self._ov_cons[name]
        else:
            data = self._txn.get(key, db=self._dbc)
        return None if data is None else self._decode_consumer(key, data)

    @_reader
    def consumer_names(self) -> list[str]:
        cur = self._txn.cursor(db=self._dbc)
        names = {bytes(k).decode() for k in cur.iternext(values=False)}
        for name, data in self._ov_cons.items():
            if data is None:
                names.discard(name)
            else:
                names.add(name)
        for name, cs in self._dirty_consumers.items():
            if cs is None:
                names.discard(name)
        return sorted(names | set(self._consumers))

    # -- lifecycle -------------------------------------------------------------------------

    def sync(self) -> None:
        """Every proposal is synced by the raft process before it is answered."""

    def stop(self) -> None:
        """Proposes what is still uncommitted, then closes the environment."""
        if self._closed:
            return
        if self._has_changes():
            self.commit_batch()
        self._drop_batch_txn()
        super().stop()
        self._env.close()

    def delete(self) -> None:
        if self._closed:
            self.group.client.drop(self.group, True)
            return
        self._ops = []
        self._dirty_consumers = {}
        self._cfg_dirty = False
        self._saved_state = self._state_tuple()
        self._drop_batch_txn()
        super().stop()
        self._env.close()
        self.group.client.drop(self.group, True)
