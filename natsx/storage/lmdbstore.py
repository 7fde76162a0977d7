"""The LMDB store: a stream's messages in one LMDB environment (a directory) per stream.

Theory of operation
-------------------
Named databases in the environment:

``msgs``     seq (u64 big-endian, so keys sort by sequence) -> record: ``<qqII`` timestamp,
             TTL, subject length, headers length, then subject, headers and payload.
``subj``     subject key -> seq, a dupsort/dupfixed index: one key per subject holding its
             sequences in order, so a subject's first, last, next-after and count come from one
             cursor. Subjects longer than LMDB's key limit (or starting with NUL) are keyed by
             ``\\0`` + BLAKE2b-256 of the subject.
``ttl``      expiry (u64 BE ns) + seq -> empty, for per-message TTLs.
``meta``     ``state`` (msgs, bytes, first seq/time, last seq/time), ``config`` (CBOR),
             ``format``.
``consumers`` consumer name -> CBOR consumer config and state.

Durability. Every write method (see base.py) runs as one LMDB write transaction that also
rewrites ``meta/state`` when it changed, so what is on disk is always a consistent stream. With
``sync=True`` (the default) each commit is fsynced before the method returns; ``begin_batch``
/``commit_batch`` put many writes into one transaction, hence one fsync (group commit: the
caller acknowledges publishes after ``commit_batch`` returns). ``metasync=False`` lets LMDB skip
syncing the meta page, which may lose the last transaction on power loss but never corrupts.
With ``sync=False`` commits reach the OS only and ``sync()`` forces them to disk. A crash loses
at most the uncommitted transaction; reopening recovers exactly what was committed, rebuilding
the in-memory subject index from ``subj`` (O(subjects)).

The map grows by doubling on MapFullError: the transaction is aborted, the in-memory state is
reloaded from the last commit, and the failed write (or the whole open batch, which is kept as a
log of calls for this purpose) is replayed. Methods are deterministic given their arguments
(``store_msg`` stamps its time before entering the write path), so a replay repeats the same
results.

Other processes read the same environment through ``LmdbReader`` (LMDB readers are MVCC
snapshots and never block the writer). Only one process may write, and an environment may be
opened only once per process.

Who writes. Under the supervisor with JetStream on, the raft process (natsx.raftd) is the
single writer of every stream environment: workers use ``RaftLmdbStore`` (raftlmdb.py), which
records the physical writes of this layout and proposes them, and never open an environment
for writing. ``LmdbStore`` writes in-process; a worker uses it only when no raft process runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from typing import Iterator, Optional

import cbor2
import lmdb

from .base import NS_PER_SECOND, StreamStore, _reader, _SubjectState
from .consumerstore import ConsumerStore, decode_consumer, encode_consumer
from .subjects import is_literal, matcher
from .types import (
    FILE_STORAGE,
    ConsumerStoreConfig,
    ErrStoreClosed,
    ErrStoreEOF,
    ErrStoreMsgNotFound,
    StoreConfig,
    StoredMsg,
    StoreError,
    StreamState,
)

__all__ = ["DEFAULT_MAP_SIZE", "LmdbReader", "LmdbStore"]

DEFAULT_MAP_SIZE = 64 * 1024 * 1024
FORMAT = b"natsx-stream/1"

_U64 = struct.Struct(">Q")
_TTL_KEY = struct.Struct(">QQ")
_REC = struct.Struct("<qqII")
_HDR = _REC.size
_STATE = struct.Struct("<QQQqQq")
_MAX_DBS = 8
# Below LMDB's default 511-byte key limit, with room to spare.
_SUBJECT_KEY_MAX = 480


def subject_key(sb: bytes) -> bytes:
    if 0 < len(sb) <= _SUBJECT_KEY_MAX and sb[0] != 0:
        return sb
    return b"\x00" + hashlib.blake2b(sb, digest_size=32).digest()


def _encode_subject(subject: str) -> bytes:
    return subject.encode("utf-8", "surrogateescape")


def _decode_subject(buf) -> str:
    return str(buf, "utf-8", "surrogateescape")


def _decode_msg(seq: int, v) -> StoredMsg:
    ts, _ttl, sl, hl = _REC.unpack_from(v)
    a, b = _HDR + sl, _HDR + sl + hl
    return StoredMsg(_decode_subject(v[_HDR:a]), bytes(v[a:b]), bytes(v[b:]), seq, ts)


def _dups(cur: lmdb.Cursor, key: bytes, lo: int, hi: int, reverse: bool = False) -> Iterator[int]:
    """Sequences of one subject key within ``[lo, hi]``."""
    if lo > hi:
        return
    if not reverse:
        if not cur.set_range_dup(key, _U64.pack(lo)):
            return
        while True:
            seq = int.from_bytes(cur.value(), "big")
            if seq > hi:
                return
            yield seq
            if not cur.next_dup():
                return
    else:
        if cur.set_range_dup(key, _U64.pack(hi + 1)):
            ok = cur.prev_dup()
        elif cur.set_key(key):
            ok = cur.last_dup()
        else:
            return
        while ok:
            seq = int.from_bytes(cur.value(), "big")
            if seq < lo:
                return
            yield seq
            ok = cur.prev_dup()


def _open_dbs(env: lmdb.Environment, txn: Optional[lmdb.Transaction], create: bool) -> tuple:
    return (
        env.open_db(b"msgs", txn=txn, create=create),
        env.open_db(b"subj", txn=txn, create=create, dupsort=True, dupfixed=True),
        env.open_db(b"ttl", txn=txn, create=create),
        env.open_db(b"meta", txn=txn, create=create),
        env.open_db(b"consumers", txn=txn, create=create),
    )


class LmdbStore(StreamStore):
    """A stream store in an LMDB environment at ``path`` (created if missing).

    Args:
        cfg: the stream's limits. None reopens with the stored config; a config that differs
            from the stored one is applied as ``update_config``.
        sync: fsync every commit (LMDB MDB_NOSYNC off).
        metasync: fsync the meta page on commit (MDB_NOMETASYNC off).
        map_size: the initial map size; it doubles whenever it fills.
    """

    _cheap_subject_seek = True

    def __init__(self, path, cfg: Optional[StoreConfig] = None, *, sync: bool = True,
                 metasync: bool = True, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        env = lmdb.open(self.path, map_size=map_size, max_dbs=_MAX_DBS, sync=sync,
                        metasync=metasync, meminit=False)
        # Reader slots of processes that died without closing would otherwise stay taken.
        env.reader_check()
        with env.begin(write=True) as txn:
            (self._dbm, self._dbs, self._dbt, self._dbmeta, self._dbc) = _open_dbs(env, txn, True)
            fresh = txn.get(b"state", db=self._dbmeta) is None
            if fresh:
                txn.put(b"format", FORMAT, db=self._dbmeta)
        self._env = env
        self._wtxn: Optional[lmdb.Transaction] = None
        self._txn: Optional[lmdb.Transaction] = None
        self._batch: Optional[list] = None
        self._dirty_consumers: dict[str, Optional[ConsumerStore]] = {}
        self._cfg_dirty = False
        self._saved_state: tuple = ()
        super().__init__(cfg if cfg is not None else StoreConfig(storage=FILE_STORAGE))
        if fresh:
            self._write_call(LmdbStore._init_fresh, self, (), {})
        else:
            self._reload()
            if cfg is not None and cfg != self.cfg:
                self.update_config(cfg)

    def _init_fresh(self) -> None:
        self._config_changed()
        if self.cfg.first_seq > 0:
            self._purge(self.cfg.first_seq)

    # -- transactions ---------------------------------------------------------------------------

    def _enter_read(self) -> None:
        self._txn = self._wtxn if self._wtxn is not None else self._env.begin(buffers=True)

    def _exit_read(self) -> None:
        txn, self._txn = self._txn, None
        if txn is not self._wtxn:
            txn.abort()

    def _run_write(self, fn, obj, args, kwargs):
        if self._batch is not None:
            return self._batch_call(fn, obj, args, kwargs)
        while True:
            txn = self._wtxn = self._txn = self._env.begin(write=True, buffers=True)
            self._depth = 1
            error = None
            try:
                try:
                    result = fn(obj, *args, **kwargs)
                except StoreError as exc:
                    # Refusals are outcomes, not failures: keep whatever the call did first.
                    error = exc
                self._flush(txn)
                txn.commit()
            except lmdb.MapFullError:
                self._rollback(txn)
                self._grow()
                continue
            except BaseException:
                self._rollback(txn)
                raise
            finally:
                self._wtxn = self._txn = None
                self._depth = 0
            self._committed()
            if error is not None:
                raise error
            return result

    def _batch_call(self, fn, obj, args, kwargs):
        self._batch.append((fn, obj, args, kwargs))
        self._txn = self._wtxn
        self._depth = 1
        try:
            return fn(obj, *args, **kwargs)
        except lmdb.MapFullError:
            result, error = self._replay_batch()
            if error is not None:
                raise error
            return result
        except StoreError:
            raise
        except BaseException:
            batch_txn, self._batch = self._wtxn, None
            self._rollback(batch_txn)
            raise
        finally:
            self._txn = None
            self._depth = 0

    def _replay_batch(self):
        """Grow the map and redo every call of the open batch in a fresh transaction.
        Returns the last call's ``(result, error)``."""
        while True:
            self._rollback(self._wtxn)
            self._grow()
            self._wtxn = self._txn = self._env.begin(write=True, buffers=True)
            self._depth = 1
            result = error = None
            try:
                for fn, obj, args, kwargs in self._batch:
                    try:
                        result, error = fn(obj, *args, **kwargs), None
                    except StoreError as exc:
                        result, error = None, exc
            except lmdb.MapFullError:
                continue
            return result, error

    def begin_batch(self) -> None:
        if self._closed:
            raise ErrStoreClosed()
        if self._batch is not None:
            raise RuntimeError("a batch is already open")
        self._wtxn = self._env.begin(write=True, buffers=True)
        self._batch = []

    def commit_batch(self) -> None:
        if self._batch is None:
            raise RuntimeError("no batch is open")
        while True:
            try:
                self._flush(self._wtxn)
                self._wtxn.commit()
                break
            except lmdb.MapFullError:
                self._replay_batch()
            finally:
                self._txn = None
                self._depth = 0
        self._wtxn = None
        self._batch = None
        self._committed()

    def abort_batch(self) -> None:
        if self._batch is None:
            return
        txn, self._batch = self._wtxn, None
        self._rollback(txn)

    def _flush(self, txn: lmdb.Transaction) -> None:
        state = (self._msgs, self._bytes, self._first, self._first_ts, self._last, self._last_ts)
        # An unchanged transaction commits without writing, so a refused publish costs no sync.
        if state != self._saved_state:
            txn.put(b"state", _STATE.pack(*state), db=self._dbmeta)
        if self._cfg_dirty:
            txn.put(b"config", cbor2.dumps(self.cfg.to_dict()), db=self._dbmeta)
        for name, cs in self._dirty_consumers.items():
            if cs is None:
                txn.delete(name.encode(), db=self._dbc)
            else:
                txn.put(name.encode(), encode_consumer(cs.config, cs._state), db=self._dbc)

    def _committed(self) -> None:
        self._saved_state = (self._msgs, self._bytes, self._first, self._first_ts, self._last,
                             self._last_ts)
        self._cfg_dirty = False
        self._dirty_consumers = {}
        self._deliver_updates()

    def _rollback(self, txn: Optional[lmdb.Transaction]) -> None:
        if txn is not None:
            txn.abort()
        self._wtxn = self._txn = None
        self._updates = []
        self._dirty_consumers = {}
        self._cfg_dirty = False
        self._reload()

    def _grow(self) -> None:
        self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def _reload(self) -> None:
        """Make the in-memory state that of the last commit."""
        txn = self._env.begin(buffers=True)
        try:
            state = _STATE.unpack(txn.get(b"state", db=self._dbmeta))
            (self._msgs, self._bytes, self._first, self._first_ts, self._last,
             self._last_ts) = state
            self._saved_state = state
            cfg = txn.get(b"config", db=self._dbmeta)
            if cfg is not None:
                self.cfg = StoreConfig(**cbor2.loads(bytes(cfg)))
            self._fss = self._load_subjects(txn)
            for name, cs in self._consumers.items():
                data = txn.get(name.encode(), db=self._dbc)
                if data is None:
                    cs._restore(None, None)
                else:
                    cs._restore(*decode_consumer(bytes(data)))
        finally:
            txn.abort()

    def _load_subjects(self, txn: lmdb.Transaction) -> dict[str, _SubjectState]:
        fss: dict[str, _SubjectState] = {}
        cur = txn.cursor(db=self._dbs)
        ok = cur.first()
        while ok:
            key = bytes(cur.key())
            count = cur.count()
            first = int.from_bytes(cur.value(), "big")
            cur.last_dup()
            last = int.from_bytes(cur.value(), "big")
            if key[0] == 0:
                rec = txn.get(_U64.pack(first), db=self._dbm)
                sl = _REC.unpack_from(rec)[2]
                subject = _decode_subject(rec[_HDR:_HDR + sl])
            else:
                subject = _decode_subject(key)
            fss[subject] = _SubjectState(count, first, last)
            ok = cur.next_nodup()
        return fss

    # -- primitives -----------------------------------------------------------------------------

    def _skey(self, subject: str) -> bytes:
        return subject_key(_encode_subject(subject))

    def _p_put(self, seq, subject, headers, payload, ts, ttl):
        txn = self._wtxn
        sb = _encode_subject(subject)
        key = _U64.pack(seq)
        txn.put(key, b"".join((_REC.pack(ts, ttl, len(sb), len(headers)), sb, headers, payload)),
                append=True, db=self._dbm)
        txn.put(subject_key(sb), key, db=self._dbs)
        if ttl > 0:
            txn.put(_TTL_KEY.pack(ts + ttl * NS_PER_SECOND, seq), b"", db=self._dbt)

    def _p_get(self, seq):
        v = self._txn.get(_U64.pack(seq), db=self._dbm)
        return None if v is None else _decode_msg(seq, v)

    def _p_info(self, seq):
        v = self._txn.get(_U64.pack(seq), db=self._dbm)
        if v is None:
            return None
        ts, ttl, sl, hl = _REC.unpack_from(v)
        return (_decode_subject(v[_HDR:_HDR + sl]), ts, ttl,
                self.cfg.msg_size(sl, hl, len(v) - _HDR - sl - hl))

    def _p_delete(self, seq, secure):
        # Freed pages keep their bytes until LMDB reuses them: erase cannot scrub in place.
        txn = self._wtxn
        key = _U64.pack(seq)
        v = txn.get(key, db=self._dbm)
        if v is None:
            return None
        ts, ttl, sl, hl = _REC.unpack_from(v)
        sb = bytes(v[_HDR:_HDR + sl])
        size = self.cfg.msg_size(sl, hl, len(v) - _HDR - sl - hl)
        txn.delete(key, db=self._dbm)
        txn.delete(subject_key(sb), key, db=self._dbs)
        if ttl > 0:
            txn.delete(_TTL_KEY.pack(ts + ttl * NS_PER_SECOND, seq), db=self._dbt)
        return _decode_subject(sb), size

    def _p_next_seq(self, seq):
        cur = self._txn.cursor(db=self._dbm)
        return int.from_bytes(cur.key(), "big") if cur.set_range(_U64.pack(seq)) else None

    def _p_prev_seq(self, seq):
        cur = self._txn.cursor(db=self._dbm)
        ok = cur.prev() if cur.set_range(_U64.pack(seq + 1)) else cur.last()
        return int.from_bytes(cur.key(), "big") if ok else None

    def _position(self, cur: lmdb.Cursor, lo: int, hi: int, reverse: bool) -> bool:
        if not reverse:
            return cur.set_range(_U64.pack(lo))
        return cur.prev() if cur.set_range(_U64.pack(hi + 1)) else cur.last()

    def _p_seqs(self, lo, hi, reverse=False):
        if lo > hi:
            return
        cur = self._txn.cursor(db=self._dbm)
        if not self._position(cur, lo, hi, reverse):
            return
        it = cur.iterprev(values=False) if reverse else cur.iternext(values=False)
        for k in it:
            seq = int.from_bytes(k, "big")
            if (seq < lo) if reverse else (seq > hi):
                return
            yield seq

    def _p_scan(self, lo, hi, reverse=False):
        if lo > hi:
            return
        cur = self._txn.cursor(db=self._dbm)
        if not self._position(cur, lo, hi, reverse):
            return
        unpack = _REC.unpack_from
        for k, v in (cur.iterprev() if reverse else cur.iternext()):
            seq = int.from_bytes(k, "big")
            if (seq < lo) if reverse else (seq > hi):
                return
            ts, ttl, sl, _hl = unpack(v)
            yield seq, _decode_subject(v[_HDR:_HDR + sl]), ts, ttl

    def _p_count(self, lo, hi):
        if hi - lo <= lo - self._first + self._last - hi:
            return sum(1 for _ in self._p_seqs(lo, hi))
        outside = sum(1 for _ in self._p_seqs(self._first, lo - 1))
        outside += sum(1 for _ in self._p_seqs(hi + 1, self._last))
        return self._msgs - outside

    def _p_clear(self):
        txn = self._wtxn
        for db in (self._dbm, self._dbs, self._dbt):
            txn.drop(db, delete=False)

    def _p_ttl_due(self, now):
        cur = self._txn.cursor(db=self._dbt)
        due = []
        for k in cur.iternext(values=False):
            expires, seq = _TTL_KEY.unpack(k)
            if expires > now:
                break
            due.append(seq)
        return due

    def _p_ttl_next(self):
        cur = self._txn.cursor(db=self._dbt)
        return _TTL_KEY.unpack(cur.key())[0] if cur.first() else None

    def _p_subject_scan(self, subject, lo, hi, reverse=False):
        return _dups(self._txn.cursor(db=self._dbs), self._skey(subject), lo, hi, reverse)

    def _p_subject_bounds(self, subject, ss):
        cur = self._txn.cursor(db=self._dbs)
        if cur.set_key(self._skey(subject)):
            ss.first = int.from_bytes(cur.value(), "big")
            cur.last_dup()
            ss.last = int.from_bytes(cur.value(), "big")
        ss.first_stale = ss.last_stale = False

    def _count_partial(self, partial, sseq):
        # Each subject is counted on its own index, from whichever side of sseq is shorter.
        total = first = 0
        for subject, ss in partial.items():
            cur = self._txn.cursor(db=self._dbs)
            key = self._skey(subject)
            if ss.last - sseq <= sseq - ss.first:
                n = f = 0
                for seq in _dups(cur, key, sseq, ss.last):
                    n += 1
                    f = f or seq
            else:
                n = ss.msgs - sum(1 for _ in _dups(cur, key, ss.first, sseq - 1))
                f = next(_dups(cur, key, sseq, ss.last), 0)
            total += n
            if f and (not first or f < first):
                first = f
        return total, first

    # -- consumers and config -------------------------------------------------------------------

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
        data = self._txn.get(name.encode(), db=self._dbc)
        return None if data is None else decode_consumer(bytes(data))

    def _new_consumer(self, name: str, cfg: Optional[ConsumerStoreConfig]) -> ConsumerStore:
        stored = self._load_consumer(name)
        if stored is None:
            cs = ConsumerStore(self, name, cfg or ConsumerStoreConfig())
            # Persist it now, so the consumer is known after a restart even before any update.
            self._write_call(LmdbStore._consumer_changed, self, (cs,), {})
            return cs
        stored_cfg, state = stored
        cs = ConsumerStore(self, name, stored_cfg, state)
        if cfg is not None and cfg != stored_cfg:
            cs.update_config(cfg)
        return cs

    @_reader
    def consumer_names(self) -> list[str]:
        cur = self._txn.cursor(db=self._dbc)
        stored = {bytes(k).decode() for k in cur.iternext(values=False)}
        return sorted(stored | set(self._consumers))

    # -- lifecycle ------------------------------------------------------------------------------

    def sync(self) -> None:
        if self._closed:
            raise ErrStoreClosed()
        self._env.sync(True)

    def stop(self) -> None:
        """Close the environment. An open batch is aborted: commit it first to keep it."""
        if self._closed:
            return
        self.abort_batch()
        super().stop()
        self._env.close()

    def delete(self) -> None:
        self.stop()
        shutil.rmtree(self.path, ignore_errors=True)


class LmdbReader:
    """Read-only access to a stream environment from another process.

    Every call reads one consistent snapshot. Only the stored sequences and counters are
    available here (no per-subject totals, which live in the writer's memory).
    """

    def __init__(self, path) -> None:
        self.path = os.fspath(path)
        self._env = lmdb.open(self.path, readonly=True, create=False, max_dbs=_MAX_DBS)
        # Without a transaction: handles opened inside a read-only one do not outlive it.
        (self._dbm, self._dbs, _ttl, self._dbmeta, _c) = _open_dbs(self._env, None, False)

    def _begin(self) -> lmdb.Transaction:
        try:
            return self._env.begin(buffers=True)
        except lmdb.MapResizedError:
            # The writer grew the map; adopt its size.
            self._env.set_mapsize(0)
            return self._env.begin(buffers=True)

    def _state(self, txn) -> tuple[int, int, int, int, int, int]:
        raw = txn.get(b"state", db=self._dbmeta)
        return _STATE.unpack(raw) if raw is not None else (0, 0, 0, 0, 0, 0)

    def state(self) -> StreamState:
        txn = self._begin()
        try:
            msgs, nbytes, first, first_ts, last, last_ts = self._state(txn)
        finally:
            txn.abort()
        num_deleted = last - first + 1 - msgs if msgs else 0
        return StreamState(msgs, nbytes, first, first_ts, last, last_ts, num_deleted=num_deleted)

    def load_msg(self, seq: int) -> StoredMsg:
        txn = self._begin()
        try:
            v = txn.get(_U64.pack(seq), db=self._dbm)
            if v is not None:
                return _decode_msg(seq, v)
            raise ErrStoreEOF() if seq > self._state(txn)[4] else ErrStoreMsgNotFound()
        finally:
            txn.abort()

    def load_next_msg(self, filter_subject: str = "", start: int = 0) -> tuple[StoredMsg, int]:
        """The first message at or after ``start`` matching the filter; raises ErrStoreEOF."""
        txn = self._begin()
        try:
            last = self._state(txn)[4]
            m = matcher(filter_subject)
            cur = txn.cursor(db=self._dbm)
            if m is not None and is_literal(filter_subject):
                sk = subject_key(_encode_subject(filter_subject))
                seq = next(_dups(txn.cursor(db=self._dbs), sk, start, last), None)
                if seq is not None:
                    return _decode_msg(seq, txn.get(_U64.pack(seq), db=self._dbm)), seq
            elif cur.set_range(_U64.pack(start)):
                for k, v in cur.iternext():
                    sm = _decode_msg(int.from_bytes(k, "big"), v)
                    if m is None or m(sm.subject):
                        return sm, sm.seq
            raise ErrStoreEOF()
        finally:
            txn.abort()

    def load_last_msg(self, subject: str = "") -> StoredMsg:
        """The newest message matching ``subject``; raises ErrStoreMsgNotFound."""
        txn = self._begin()
        try:
            m = matcher(subject)
            if m is not None and is_literal(subject):
                cur = txn.cursor(db=self._dbs)
                if cur.set_key(subject_key(_encode_subject(subject))) and cur.last_dup():
                    seq = int.from_bytes(cur.value(), "big")
                    return _decode_msg(seq, txn.get(_U64.pack(seq), db=self._dbm))
            else:
                cur = txn.cursor(db=self._dbm)
                if cur.last():
                    for k, v in cur.iterprev():
                        sm = _decode_msg(int.from_bytes(k, "big"), v)
                        if m is None or m(sm.subject):
                            return sm
            raise ErrStoreMsgNotFound()
        finally:
            txn.abort()

    def close(self) -> None:
        self._env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
