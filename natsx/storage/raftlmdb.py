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
(``RaftClient.wait``) before acknowledging anything the batch did. A proposal, once applied,
is in LMDB and in the overlay at the same time until its answer is read; every merge is
idempotent for that (a put is shown once, a delete hides both). Once answered, the entries
leave the overlay, which is rebuilt from the proposals still in flight.

A write made outside a batch calls ``on_dirty`` (the stream marks itself dirty), so it is
committed, and awaited, with the batch of the round. The environment has the LmdbStore layout
(lmdbstore.py), so ``LmdbStore`` and ``LmdbReader`` open it as well.
"""
from __future__ import annotations

import heapq
import os
from bisect import bisect_left, bisect_right
from typing import Optional

import cbor2
import lmdb

from natsx.raftd import protocol as P

from .base import NS_PER_SECOND, StreamStore, _reader
from .consumerstore import ConsumerStore, decode_consumer, encode_consumer
from .lmdbstore import (_HDR, _MAX_DBS, _REC, _STATE, _TTL_KEY, _U64, LmdbStore, _decode_msg,
                        _decode_subject, _dups, _encode_subject, _open_dbs, subject_key)
from .types import FILE_STORAGE, ConsumerStoreConfig, StoreConfig, StoredMsg

__all__ = ["RaftLmdbStore"]

_MAX_SEQ = (1 << 64) - 1


class RaftLmdbStore(StreamStore):
    """A file stream store written through the raft process; ``group`` is the stream's
    ``RaftGroup`` (natsx.raftd.client), already opened (so the environment exists)."""

    _cheap_subject_seek = True

    def __init__(self, path, cfg: Optional[StoreConfig], group) -> None:
        self.path = os.fspath(path)
        self.group = group
        self.on_dirty = None
        self.last_proposal = 0
        env = lmdb.open(self.path, readonly=True, create=False, max_dbs=_MAX_DBS)
        (self._dbm, self._dbs, self._dbt, self._dbmeta, self._dbc) = _open_dbs(env, None, False)
        self._env = env
        self._txn = None
        self._ops: list = []
        self._inflight: list = []          # (index, ops) proposed, not yet answered
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
        if fresh:
            self._write_call(RaftLmdbStore._init_fresh, self, (), {})
        else:
            self._reload()
            if cfg is not None and cfg != self.cfg:
                self.update_config(cfg)

    def _init_fresh(self) -> None:
        self._config_changed()
        if self.cfg.first_seq > 0:
            self._purge(self.cfg.first_seq)

    def _reload(self) -> None:
        txn = self._begin()
        try:
            state = _STATE.unpack(txn.get(b"state", db=self._dbmeta))
            (self._msgs, self._bytes, self._first, self._first_ts, self._last,
             self._last_ts) = state
            self._saved_state = state
            cfg = txn.get(b"config", db=self._dbmeta)
            if cfg is not None:
                self.cfg = StoreConfig(**cbor2.loads(bytes(cfg)))
            self._fss = LmdbStore._load_subjects(self, txn)
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
                ts, ttl, sl, hl = _REC.unpack_from(value)
                a, b = _HDR + sl, _HDR + sl + hl
                self._ov_put(seq, _decode_subject(value[_HDR:a]), bytes(value[a:b]),
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
            heapq.heappush(self._ov_ttls, _TTL_KEY.unpack(key))
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
        """Drops the answered proposals from the overlay."""
        inflight = self._inflight
        if not inflight or inflight[0][0] > self.group.confirmed:
            return
        confirmed = self.group.confirmed
        self._inflight = inflight = [p for p in inflight if p[0] > confirmed]
        self._ov_reset()
        for _index, ops in inflight:
            for op in ops:
                self._ov_apply(*op)
        for op in self._ops:
            self._ov_apply(*op)

    def _op(self, op, db, key, value=b"") -> None:
        self._ops.append((op, db, key, value))

    # -- transactions ----------------------------------------------------------------------

    def _begin(self) -> lmdb.Transaction:
        try:
            return self._env.begin(buffers=True)
        except lmdb.MapResizedError:
            # The raft process grew the map; adopt its size.
            self._env.set_mapsize(0)
            return self._env.begin(buffers=True)

    def _enter_read(self) -> None:
        self._sync_overlay()
        self._txn = self._begin()

    def _exit_read(self) -> None:
        txn, self._txn = self._txn, None
        txn.abort()

    def _run_write(self, fn, obj, args, kwargs):
        self._sync_overlay()
        self._depth = 1
        self._txn = self._begin()
        try:
            return fn(obj, *args, **kwargs)
        finally:
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

    def commit_batch(self) -> None:
        """Proposes what the batch wrote (``last_proposal`` is its index); returns at once."""
        self._batch_open = False
        if self._closed or not self._has_changes():
            return
        ops, self._ops = self._ops, []
        state = self._state_tuple()
        if state != self._saved_state:
            ops.append((P.OP_PUT, P.DB_META, b"state", _STATE.pack(*state)))
            self._saved_state = state
        if self._cfg_dirty:
            ops.append((P.OP_PUT, P.DB_META, b"config", cbor2.dumps(self.cfg.to_dict())))
            self._cfg_dirty = False
        for name, cs in self._dirty_consumers.items():
            if cs is None:
                op = (P.OP_DEL, P.DB_CONSUMERS, name.encode(), b"")
            else:
                op = (P.OP_PUT, P.DB_CONSUMERS, name.encode(),
                      encode_consumer(cs.config, cs._state))
            ops.append(op)
            self._ov_apply(*op)
        self._dirty_consumers = {}
        index = self.group.propose(ops)
        self._inflight.append((index, ops))
        self.last_proposal = index

    def abort_batch(self) -> None:
        """Writes are applied to the overlay as they happen: there is nothing to undo."""
        self._batch_open = False

    # -- primitives ------------------------------------------------------------------------

    def _p_put(self, seq, subject, headers, payload, ts, ttl):
        sb = _encode_subject(subject)
        key = _U64.pack(seq)
        self._op(P.OP_PUT, P.DB_MSGS, key,
                 b"".join((_REC.pack(ts, ttl, len(sb), len(headers)), sb, headers, payload)))
        self._op(P.OP_PUT, P.DB_SUBJ, subject_key(sb), key)
        self._ov_put(seq, subject, headers, payload, ts, ttl)
        if ttl > 0:
            tkey = (ts + ttl * NS_PER_SECOND, seq)
            self._op(P.OP_PUT, P.DB_TTL, _TTL_KEY.pack(*tkey))
            heapq.heappush(self._ov_ttls, tkey)

    def _p_get(self, seq):
        m = self._ov_msgs.get(seq)
        if m is not None:
            return StoredMsg(m[0], m[1], m[2], seq, m[3])
        if self._ov_cleared or seq in self._ov_dels:
            return None
        v = self._txn.get(_U64.pack(seq), db=self._dbm)
        return None if v is None else _decode_msg(seq, v)

    def _p_info(self, seq):
        m = self._ov_msgs.get(seq)
        if m is not None:
            subject, headers, payload, ts, ttl = m
            return (subject, ts, ttl, self.cfg.msg_size(len(_encode_subject(subject)),
                                                        len(headers), len(payload)))
        if self._ov_cleared or seq in self._ov_dels:
            return None
        v = self._txn.get(_U64.pack(seq), db=self._dbm)
        if v is None:
            return None
        ts, ttl, sl, hl = _REC.unpack_from(v)
        return (_decode_subject(v[_HDR:_HDR + sl]), ts, ttl,
                self.cfg.msg_size(sl, hl, len(v) - _HDR - sl - hl))

    def _p_delete(self, seq, secure):
        info = self._p_info(seq)
        if info is None:
            return None
        subject, ts, ttl, size = info
        key = _U64.pack(seq)
        self._op(P.OP_DEL, P.DB_MSGS, key)
        self._op(P.OP_DEL_DUP, P.DB_SUBJ, subject_key(_encode_subject(subject)), key)
        if ttl > 0:
            self._op(P.OP_DEL, P.DB_TTL, _TTL_KEY.pack(ts + ttl * NS_PER_SECOND, seq))
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
        if not LmdbStore._position(self, cur, lo, hi, reverse):
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
        for seq in self._p_seqs(lo, hi, reverse):
            m = self._ov_msgs.get(seq)
            if m is not None:
                yield seq, m[0], m[3], m[4]
                continue
            v = self._txn.get(_U64.pack(seq), db=self._dbm)
            ts, ttl, sl, _hl = _REC.unpack_from(v)
            yield seq, _decode_subject(v[_HDR:_HDR + sl]), ts, ttl

    def _p_count(self, lo, hi):
        if hi - lo <= lo - self._first + self._last - hi:
            return sum(1 for _ in self._p_seqs(lo, hi))
        outside = sum(1 for _ in self._p_seqs(self._first, lo - 1))
        outside += sum(1 for _ in self._p_seqs(hi + 1, self._last))
        return self._msgs - outside

    def _p_clear(self):
        for db in (P.DB_MSGS, P.DB_SUBJ, P.DB_TTL):
            self._op(P.OP_DROP, db, b"")
        self._ov_apply(P.OP_DROP, P.DB_MSGS, b"", b"")

    def _lmdb_ttls(self):
        if self._ov_cleared:
            return
        cur = self._txn.cursor(db=self._dbt)
        for k in cur.iternext(values=False):
            expires, seq = _TTL_KEY.unpack(k)
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
            s for s in _dups(self._txn.cursor(db=self._dbs), subject_key(_encode_subject(subject)),
                             lo, hi, reverse)
            if s not in self._ov_dels and s not in msgs)
        if not ov:
            return iter(base)
        return heapq.merge(base, ov, reverse=reverse)

    def _count_partial(self, partial, sseq):
        total = first = 0
        for subject, ss in partial.items():
            if ss.last - sseq <= sseq - ss.first:
                n = f = 0
                for seq in self._p_subject_scan(subject, sseq, ss.last):
                    n += 1
                    f = f or seq
            else:
                n = ss.msgs - sum(1 for _ in self._p_subject_scan(subject, ss.first, sseq - 1))
                f = next(iter(self._p_subject_scan(subject, sseq, ss.last)), 0)
            total += n
            if f and (not first or f < first):
                first = f
        return total, first

    # -- consumers and config --------------------------------------------------------------

    def _config_changed(self) -> None:
        self._cfg_dirty = True

    def _consumer_changed(self, cs: ConsumerStore) -> None:
        self._dirty_consumers[cs.name] = cs

    def _consumer_detached(self, cs: ConsumerStore, delete: bool) -> None:
        super()._consumer_detached(cs, delete)
        if delete:
            self._dirty_consumers[cs.name] = None

    @_reader
    def _load_consumer(self, name: str):
        if name in self._ov_cons:
            data = self._ov_cons[name]
        else:
            data = self._txn.get(name.encode(), db=self._dbc)
        return None if data is None else decode_consumer(bytes(data))

    def _new_consumer(self, name: str, cfg: Optional[ConsumerStoreConfig]) -> ConsumerStore:
        stored = self._load_consumer(name)
        if stored is None:
            cs = ConsumerStore(self, name, cfg or ConsumerStoreConfig())
            self._write_call(RaftLmdbStore._consumer_changed, self, (cs,), {})
            return cs
        stored_cfg, state = stored
        cs = ConsumerStore(self, name, stored_cfg, state)
        if cfg is not None and cfg != stored_cfg:
            cs.update_config(cfg)
        return cs

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
        super().stop()
        self._env.close()
        self.group.client.drop(self.group, True)
