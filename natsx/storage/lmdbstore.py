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
             ``format``; ``key`` (the stream's sealed seed) when it is encrypted.
``consumers`` consumer name -> CBOR consumer config and state.

Encryption at rest (crypt.py): with the server's ``jetstream { key }`` the records, the config
and the consumers' values are sealed with a per-stream key and the subject index is keyed by
a keyed hash; crypt.py says exactly what is and is not encrypted. Opening converts a store as
needed (plaintext found, previous key, other cipher) before anything reads it. Without a key
the paths below run as they always did: the codec hooks are None and cost one test.

The read path shared with ``RaftLmdbStore`` and ``LmdbReader`` (record decoding, decryption,
the subject-index walk, reload, counts, consumer encoding) is lmdbread.py's.

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
for writing, except to give a new environment its encryption key or to convert one, before the
raft process opens it (crypt.prepare_path). ``LmdbStore`` writes in-process; a worker uses it
only when no raft process runs.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import lmdb

from .base import NS_PER_SECOND, StreamStore, _reader
from .crypt import Codec, StreamKeys, prepare_path
from .lmdbread import HDR as _HDR
from .lmdbread import MAX_DBS as _MAX_DBS
from .lmdbread import REC as _REC
from .lmdbread import STATE as _STATE
from .lmdbread import TTL_KEY as _TTL_KEY
from .lmdbread import U64 as _U64
from .lmdbread import (LmdbReadPath, begin_read, decode_subject, dups, encode_subject,
                       open_dbs, read_state, subject_key)
from .subjects import is_literal, matcher
from .types import (
    FILE_STORAGE,
    ErrStoreClosed,
    ErrStoreEOF,
    ErrStoreMsgNotFound,
    StoreConfig,
    StoredMsg,
    StoreError,
    StreamState,
)

__all__ = ["DEFAULT_MAP_SIZE", "LmdbReader", "LmdbStore", "subject_key"]

DEFAULT_MAP_SIZE = 64 * 1024 * 1024
FORMAT = b"natsx-stream/1"
# The names other modules (natsx.raftd) know them by.
_open_dbs = open_dbs


class LmdbStore(LmdbReadPath, StreamStore):
    """A stream store in an LMDB environment at ``path`` (created if missing).

    Args:
        cfg: the stream's limits. None reopens with the stored config; a config that differs
            from the stored one is applied as ``update_config``.
        sync: fsync every commit (LMDB MDB_NOSYNC off).
        metasync: fsync the meta page on commit (MDB_NOMETASYNC off).
        map_size: the initial map size; it doubles whenever it fills.
        keys: the stream's keys when the server encrypts at rest (crypt.py); opening
            converts the environment as needed and raises ``EncryptionError`` when its keys
            cannot be recovered.
    """

    _cheap_subject_seek = True

    def __init__(self, path, cfg: Optional[StoreConfig] = None, *, sync: bool = True,
                 metasync: bool = True, map_size: int = DEFAULT_MAP_SIZE,
                 keys: Optional[StreamKeys] = None) -> None:
        self.path = os.fspath(path)
        codec = prepare_path(self.path, keys)
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
        self._use_codec(codec)
        self._env = env
        self._wtxn: Optional[lmdb.Transaction] = None
        self._txn: Optional[lmdb.Transaction] = None
        self._batch: Optional[list] = None
        self._dirty_consumers: dict[str, Optional[ConsumerStore]] = {}
        self._cfg_dirty = False
        self._saved_state: tuple = ()
        super().__init__(cfg if cfg is not None else StoreConfig(storage=FILE_STORAGE))
        self._open_state(cfg, fresh)

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
            txn.put(b"config", self._config_value(), db=self._dbmeta)
        for name, cs in self._dirty_consumers.items():
            key = name.encode()
            if cs is None:
                txn.delete(key, db=self._dbc)
            else:
                txn.put(key, self._consumer_value(key, cs), db=self._dbc)

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
            self._load_state(txn)
            for name, cs in self._consumers.items():
                key = name.encode()
                data = txn.get(key, db=self._dbc)
                if data is None:
                    cs._restore(None, None)
                else:
                    cs._restore(*self._decode_consumer(key, data))
        finally:
            txn.abort()

    # -- primitives -----------------------------------------------------------------------------

    def _p_put(self, seq, subject, headers, payload, ts, ttl):
        txn = self._wtxn
        sb = encode_subject(subject)
        key = _U64.pack(seq)
        rec = b"".join((_REC.pack(ts, ttl, len(sb), len(headers)), sb, headers, payload))
        if self._seal_rec is not None:
            rec = self._seal_rec(key, rec)
        txn.put(key, rec, append=True, db=self._dbm)
        txn.put(self.skey(sb), key, db=self._dbs)
        if ttl > 0:
            txn.put(_TTL_KEY.pack(ts + ttl * NS_PER_SECOND, seq), b"", db=self._dbt)

    def _p_get(self, seq):
        v = self._txn.get(_U64.pack(seq), db=self._dbm)
        return None if v is None else self._decode(seq, v)

    _p_info = LmdbReadPath._lmdb_info

    def _p_delete(self, seq, secure):
        # Freed pages keep their bytes until LMDB reuses them: erase cannot scrub in place.
        txn = self._wtxn
        key = _U64.pack(seq)
        v = txn.get(key, db=self._dbm)
        if v is None:
            return None
        if self._open_rec is not None:
            v = self._open_rec(key, v)
        ts, ttl, sl, hl = _REC.unpack_from(v)
        sb = bytes(v[_HDR:_HDR + sl])
        size = self.cfg.msg_size(sl, hl, len(v) - _HDR - sl - hl)
        txn.delete(key, db=self._dbm)
        txn.delete(self.skey(sb), key, db=self._dbs)
        if ttl > 0:
            txn.delete(_TTL_KEY.pack(ts + ttl * NS_PER_SECOND, seq), db=self._dbt)
        return decode_subject(sb), size

    def _p_next_seq(self, seq):
        cur = self._txn.cursor(db=self._dbm)
        return int.from_bytes(cur.key(), "big") if cur.set_range(_U64.pack(seq)) else None

    def _p_prev_seq(self, seq):
        cur = self._txn.cursor(db=self._dbm)
        ok = cur.prev() if cur.set_range(_U64.pack(seq + 1)) else cur.last()
        return int.from_bytes(cur.key(), "big") if ok else None

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
        unpack, opn = _REC.unpack_from, self._open_rec
        for k, v in (cur.iterprev() if reverse else cur.iternext()):
            seq = int.from_bytes(k, "big")
            if (seq < lo) if reverse else (seq > hi):
                return
            if opn is not None:
                v = opn(k, v)
            ts, ttl, sl, _hl = unpack(v)
            yield seq, decode_subject(v[_HDR:_HDR + sl]), ts, ttl

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
        return dups(self._txn.cursor(db=self._dbs), self._skey(subject), lo, hi, reverse)

    def _p_subject_bounds(self, subject, ss):
        cur = self._txn.cursor(db=self._dbs)
        if cur.set_key(self._skey(subject)):
            ss.first = int.from_bytes(cur.value(), "big")
            cur.last_dup()
            ss.last = int.from_bytes(cur.value(), "big")
        ss.first_stale = ss.last_stale = False

    # -- consumers and config -------------------------------------------------------------------

    @_reader
    def _load_consumer(self, name: str):
        key = name.encode()
        data = self._txn.get(key, db=self._dbc)
        return None if data is None else self._decode_consumer(key, data)

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


class LmdbReader(LmdbReadPath):
    """Read-only access to a stream environment from another process.

    Every call reads one consistent snapshot. Only the stored sequences and counters are
    available here (no per-subject totals, which live in the writer's memory). ``codec`` is
    the stream's (crypt.py) when it is encrypted.
    """

    def __init__(self, path, codec: Optional[Codec] = None) -> None:
        self.path = os.fspath(path)
        self._env = lmdb.open(self.path, readonly=True, create=False, max_dbs=_MAX_DBS)
        # Without a transaction: handles opened inside a read-only one do not outlive it.
        (self._dbm, self._dbs, _ttl, self._dbmeta, _c) = open_dbs(self._env, None, False)
        self._use_codec(codec)

    def _state(self, txn) -> tuple[int, int, int, int, int, int]:
        return read_state(txn, self._dbmeta) or (0, 0, 0, 0, 0, 0)

    def state(self) -> StreamState:
        txn = begin_read(self._env)
        try:
            msgs, nbytes, first, first_ts, last, last_ts = self._state(txn)
        finally:
            txn.abort()
        num_deleted = last - first + 1 - msgs if msgs else 0
        return StreamState(msgs, nbytes, first, first_ts, last, last_ts, num_deleted=num_deleted)

    def load_msg(self, seq: int) -> StoredMsg:
        txn = begin_read(self._env)
        try:
            v = txn.get(_U64.pack(seq), db=self._dbm)
            if v is not None:
                return self._decode(seq, v)
            raise ErrStoreEOF() if seq > self._state(txn)[4] else ErrStoreMsgNotFound()
        finally:
            txn.abort()

    def load_next_msg(self, filter_subject: str = "", start: int = 0) -> tuple[StoredMsg, int]:
        """The first message at or after ``start`` matching the filter; raises ErrStoreEOF."""
        txn = begin_read(self._env)
        try:
            last = self._state(txn)[4]
            m = matcher(filter_subject)
            cur = txn.cursor(db=self._dbm)
            if m is not None and is_literal(filter_subject):
                seq = next(dups(txn.cursor(db=self._dbs), self._skey(filter_subject), start,
                                last), None)
                if seq is not None:
                    return self._decode(seq, txn.get(_U64.pack(seq), db=self._dbm)), seq
            elif cur.set_range(_U64.pack(start)):
                for k, v in cur.iternext():
                    sm = self._decode(int.from_bytes(k, "big"), v)
                    if m is None or m(sm.subject):
                        return sm, sm.seq
            raise ErrStoreEOF()
        finally:
            txn.abort()

    def load_last_msg(self, subject: str = "") -> StoredMsg:
        """The newest message matching ``subject``; raises ErrStoreMsgNotFound."""
        txn = begin_read(self._env)
        try:
            m = matcher(subject)
            if m is not None and is_literal(subject):
                cur = txn.cursor(db=self._dbs)
                if cur.set_key(self._skey(subject)) and cur.last_dup():
                    seq = int.from_bytes(cur.value(), "big")
                    return self._decode(seq, txn.get(_U64.pack(seq), db=self._dbm))
            else:
                cur = txn.cursor(db=self._dbm)
                if cur.last():
                    for k, v in cur.iterprev():
                        sm = self._decode(int.from_bytes(k, "big"), v)
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
