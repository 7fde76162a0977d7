"""The read path of a stream's LMDB environment, shared by every store that reads one.

Theory of operation
-------------------
The layout (its databases and records) is described in lmdbstore.py. Three classes read it:
``LmdbStore`` (the in-process writer), ``RaftLmdbStore`` (raftlmdb.py: a worker whose writes
go through the raft process) and ``LmdbReader`` (another process). What they share is here,
once: the record and subject-key encodings, the subject-index walk (``dups``), the
state/config/subject-index reload, cursor positioning, counts, and the encoding of what is
written at commit (config, consumers).

It is also where decryption (crypt.py) is wired in. ``LmdbReadPath`` holds the stream's
``Codec`` (None for a plaintext stream) and derives from it, once at open, the few functions
every per-record path of the three classes calls: ``_decode(seq, value)`` (a ``StoredMsg``), ``_open_rec``
(None when plaintext, so a plaintext scan tests one local for None and calls nothing) and
``_seal_rec`` for the writers. A subject's index key is ``skey(subject bytes)``: the subject
itself, or a hash when it is too long or the stream is encrypted.

A class using ``LmdbReadPath`` provides ``_txn`` (the read transaction of the current call),
the database handles ``_dbm``, ``_dbs``, ``_dbt``, ``_dbmeta``, ``_dbc`` and, for the
``StreamStore`` parts, its ``_p_seqs``/``_p_subject_scan`` primitives.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Iterator, Optional

import cbor2
import lmdb

from .consumerstore import ConsumerStore, decode_consumer, encode_consumer
from .crypt import Codec
from .types import ConsumerStoreConfig, StoreConfig, StoredMsg

U64 = struct.Struct(">Q")
TTL_KEY = struct.Struct(">QQ")
REC = struct.Struct("<qqII")
HDR = REC.size
STATE = struct.Struct("<QQQqQq")
MAX_DBS = 8
# Below LMDB's default 511-byte key limit, with room to spare.
SUBJECT_KEY_MAX = 480


def subject_key(sb: bytes) -> bytes:
    if 0 < len(sb) <= SUBJECT_KEY_MAX and sb[0] != 0:
        return sb
    return b"\x00" + hashlib.blake2b(sb, digest_size=32).digest()


def encode_subject(subject: str) -> bytes:
    return subject.encode("utf-8", "surrogateescape")


def decode_subject(buf) -> str:
    return str(buf, "utf-8", "surrogateescape")


def decode_msg(seq: int, v) -> StoredMsg:
    ts, _ttl, sl, hl = REC.unpack_from(v)
    a, b = HDR + sl, HDR + sl + hl
    return StoredMsg(decode_subject(v[HDR:a]), bytes(v[a:b]), bytes(v[b:]), seq, ts)


def dups(cur: lmdb.Cursor, key: bytes, lo: int, hi: int, reverse: bool = False) -> Iterator[int]:
    """Sequences of one subject key within ``[lo, hi]``."""
    if lo > hi:
        return
    if not reverse:
        if not cur.set_range_dup(key, U64.pack(lo)):
            return
        while True:
            seq = int.from_bytes(cur.value(), "big")
            if seq > hi:
                return
            yield seq
            if not cur.next_dup():
                return
    else:
        if cur.set_range_dup(key, U64.pack(hi + 1)):
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


def open_dbs(env: lmdb.Environment, txn: Optional[lmdb.Transaction], create: bool) -> tuple:
    return (
        env.open_db(b"msgs", txn=txn, create=create),
        env.open_db(b"subj", txn=txn, create=create, dupsort=True, dupfixed=True),
        env.open_db(b"ttl", txn=txn, create=create),
        env.open_db(b"meta", txn=txn, create=create),
        env.open_db(b"consumers", txn=txn, create=create),
    )


def begin_read(env: lmdb.Environment) -> lmdb.Transaction:
    """A read transaction of an environment another process writes (and may grow)."""
    try:
        return env.begin(buffers=True)
    except lmdb.MapResizedError:
        env.set_mapsize(0)
        return env.begin(buffers=True)


def read_state(txn, dbmeta) -> Optional[tuple]:
    raw = txn.get(b"state", db=dbmeta)
    return None if raw is None else STATE.unpack(raw)


class LmdbReadPath:
    """The reads (and commit encodings) of a stream environment; see the module docstring."""

    _codec: Optional[Codec] = None
    _open_rec = None

    def _use_codec(self, codec: Optional[Codec]) -> None:
        self._codec = codec
        if codec is None:
            self._decode = decode_msg
            self._open_rec = None
            self.skey = subject_key
            self._seal_rec = None
        else:
            open_msg = codec.open_msg
            self._open_rec = open_msg
            self.skey = codec.subject_key
            self._seal_rec = codec.seal_msg

            def _decode(seq, v, _key=U64.pack):
                return decode_msg(seq, open_msg(_key(seq), v))

            self._decode = _decode

    # -- records -------------------------------------------------------------------------------

    def _skey(self, subject: str) -> bytes:
        return self.skey(encode_subject(subject))

    def _plain(self, key, v):
        """The plaintext record of a stored value."""
        opn = self._open_rec
        return v if opn is None else opn(key, v)

    def _lmdb_info(self, seq: int):
        key = U64.pack(seq)
        v = self._txn.get(key, db=self._dbm)
        if v is None:
            return None
        if self._open_rec is not None:
            v = self._open_rec(key, v)
        ts, ttl, sl, hl = REC.unpack_from(v)
        return (decode_subject(v[HDR:HDR + sl]), ts, ttl,
                self.cfg.msg_size(sl, hl, len(v) - HDR - sl - hl))

    # -- open and reload -----------------------------------------------------------------------

    def _open_state(self, cfg: Optional[StoreConfig], fresh: bool) -> None:
        """A store's last step of opening: a fresh environment gets its config (and first
        sequence) written; an existing one is reloaded, and ``cfg`` applied if it differs."""
        if fresh:
            self._write_call(type(self)._init_fresh, self, (), {})
        else:
            self._reload()
            if cfg is not None and cfg != self.cfg:
                self.update_config(cfg)

    def _init_fresh(self) -> None:
        self._config_changed()
        if self.cfg.first_seq > 0:
            self._purge(self.cfg.first_seq)

    def _load_state(self, txn) -> None:
        """The counters, the config and the per-subject index of the last commit."""
        from .base import _SubjectState

        state = STATE.unpack(txn.get(b"state", db=self._dbmeta))
        (self._msgs, self._bytes, self._first, self._first_ts, self._last,
         self._last_ts) = state
        self._saved_state = state
        cfg = txn.get(b"config", db=self._dbmeta)
        if cfg is not None:
            codec = self._codec
            raw = codec.open_config(cfg) if codec is not None else bytes(cfg)
            self.cfg = StoreConfig(**cbor2.loads(raw))
        fss = {}
        cur = txn.cursor(db=self._dbs)
        ok = cur.first()
        while ok:
            key = bytes(cur.key())
            count = cur.count()
            first = int.from_bytes(cur.value(), "big")
            cur.last_dup()
            last = int.from_bytes(cur.value(), "big")
            if key[0] == 0:
                fkey = U64.pack(first)
                rec = self._plain(fkey, txn.get(fkey, db=self._dbm))
                sl = REC.unpack_from(rec)[2]
                subject = decode_subject(rec[HDR:HDR + sl])
            else:
                subject = decode_subject(key)
            fss[subject] = _SubjectState(count, first, last)
            ok = cur.next_nodup()
        self._fss = fss

    # -- walks ---------------------------------------------------------------------------------

    def _position(self, cur: lmdb.Cursor, lo: int, hi: int, reverse: bool) -> bool:
        if not reverse:
            return cur.set_range(U64.pack(lo))
        return cur.prev() if cur.set_range(U64.pack(hi + 1)) else cur.last()

    def _p_count(self, lo, hi):
        if hi - lo <= lo - self._first + self._last - hi:
            return sum(1 for _ in self._p_seqs(lo, hi))
        outside = sum(1 for _ in self._p_seqs(self._first, lo - 1))
        outside += sum(1 for _ in self._p_seqs(hi + 1, self._last))
        return self._msgs - outside

    def _count_partial(self, partial, sseq):
        # Each subject is counted on its own index, from whichever side of sseq is shorter.
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

    # -- config and consumers ------------------------------------------------------------------

    def _config_value(self) -> bytes:
        raw = cbor2.dumps(self.cfg.to_dict())
        codec = self._codec
        return raw if codec is None else codec.seal_config(raw)

    def _consumer_value(self, name: bytes, cs: ConsumerStore) -> bytes:
        raw = encode_consumer(cs.config, cs._state)
        codec = self._codec
        return raw if codec is None else codec.seal_consumer(name, raw)

    def _decode_consumer(self, name: bytes, data):
        codec = self._codec
        return decode_consumer(codec.open_consumer(name, data) if codec is not None
                               else bytes(data))

    def _config_changed(self) -> None:
        self._cfg_dirty = True

    def _consumer_changed(self, cs: ConsumerStore) -> None:
        self._dirty_consumers[cs.name] = cs

    def _consumer_detached(self, cs: ConsumerStore, delete: bool) -> None:
        super()._consumer_detached(cs, delete)
        if delete:
            self._dirty_consumers[cs.name] = None

    def _new_consumer(self, name: str, cfg: Optional[ConsumerStoreConfig]) -> ConsumerStore:
        stored = self._load_consumer(name)
        if stored is None:
            cs = ConsumerStore(self, name, cfg or ConsumerStoreConfig())
            # Persist it now, so the consumer is known after a restart even before any update.
            self._write_call(type(self)._consumer_changed, self, (cs,), {})
            return cs
        stored_cfg, state = stored
        cs = ConsumerStore(self, name, stored_cfg, state)
        if cfg is not None and cfg != stored_cfg:
            cs.update_config(cfg)
        return cs
