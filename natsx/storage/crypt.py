"""Encryption at rest of file streams: the server key, per-stream keys and the record codec.

Theory of operation
-------------------
Configured by ``jetstream { key, cipher, prev_key }`` as in the Go server (server/jetstream.go
``jsKeyGen``, server/filestore.go ``genEncryptionKeys``). ``Keyring`` holds the server key, the
previous one and the cipher (``chachapoly``: ChaCha20-Poly1305, ``aes``: AES-GCM, both from
``cryptography``). Per stream, as Go does:

* the key encryption key is HMAC-SHA256(server key, account name + stream name);
* the stream's own key is a random 32-byte seed, stored in the environment's ``meta`` database
  under ``key``, sealed with the key encryption key: ``cipher id, nonce, sealed seed``. A
  stream deleted and created again gets a new seed, so sequences are never encrypted twice
  under one key.

``Codec`` is a stream's seed at work. Every value natsx writes to the stream's LMDB
environment that carries client data is sealed with it, a random nonce per value, and
authenticated with the value's identity (AEAD associated data), so no value can be swapped
for another one of the same stream:

=============  ===========================================  ===============================
database       encrypted                                    authenticated with
=============  ===========================================  ===============================
``msgs``       the whole record (time, TTL, subject,         ``m`` + the sequence key
               headers, payload)
``meta``       ``config`` (the stream's limits, CBOR)        ``c`` + ``config``
``consumers``  each consumer's config and state (CBOR)       ``o`` + the consumer name
``subj``       keys are ``\\0`` + keyed BLAKE2b-256 of the   (a keyed hash, not a cipher:
               subject (key derived from the seed), so no    lookups stay exact)
               subject appears in clear; values are
               sequences
=============  ===========================================  ===============================

Outside LMDB, the stream's and each consumer's ``meta.inf`` (their JSON config,
natsx.jetstream.manager) are sealed too (``seal_file``), as Go seals its meta files: under a
seed of their own, with the key encryption key of the stream (account + stream name) or of
the consumer (account + stream name + ``.`` + consumer name), as Go derives them.

Not encrypted: the sequence keys of ``msgs``, the ``ttl`` index (expiry time and sequence),
``meta/state`` (message and byte counts, first and last sequence and time), ``meta/format``,
``meta/raft``, the consumer names (keys of ``consumers``) and the stream and consumer
directory names (Go's are in clear too). Memory streams' messages are never encrypted, as
in Go (they are never on disk). Freed LMDB pages keep old ciphertext until reused, never
plaintext once encrypted.

Opening (``prepare_path``: one LMDB write transaction, so a crash leaves the old or the new
form; after a conversion the environment is rewritten with its live pages only, so neither
the plaintext nor the values under the previous key stay in freed pages):

* no key configured, no ``meta/key``: plaintext, and no codec at all (the read and write
  paths then pay nothing for encryption);
* no key configured but ``meta/key`` present: ``EncryptionError("encryption not enabled")``;
* key configured, fresh or plaintext environment: a new seed; existing data is encrypted
  (Go's "Encrypting stream" notice);
* ``meta/key`` opens with the key and cipher configured: that codec;
* it opens only with ``prev_key`` or with the other cipher: everything is re-encrypted under a
  new seed sealed with the current key and cipher (Go's "Converting to <cipher>" notice);
* it opens with neither: ``EncryptionError("unable to recover keys")``; the stream is not
  loaded (the caller logs Go's "Error decrypting our stream metafile" warning).

Sans-IO apart from ``prepare``/``prepare_path``, which open and write the environment before
its store does (a stream's store opens it afterwards, in this process or the raft process).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import shutil
from typing import Optional

import lmdb
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

__all__ = ["AES", "CHACHA", "Codec", "EncryptionError", "Keyring", "StreamKeys",
           "cipher_name", "open_file", "prepare", "prepare_path", "seal_file"]

log = logging.getLogger("natsx")

CHACHA = "chachapoly"
AES = "aes"
_CIPHER_ID = {CHACHA: 1, AES: 2}
_CIPHER_BY_ID = {v: k for k, v in _CIPHER_ID.items()}
# ChaCha20-Poly1305 takes 96-bit nonces; AES-GCM uses the block size, as Go does.
_NONCE = {CHACHA: 12, AES: 16}
_SEED = 32
KEY_RECORD = b"key"
_CHUNK = 1024


class EncryptionError(Exception):
    """A stream's keys cannot be recovered, or a sealed value does not authenticate."""


def cipher_name(cipher: str) -> str:
    """Go's StoreCipher.String()."""
    return {CHACHA: "ChaCha20-Poly1305", AES: "AES-GCM"}.get(cipher, "Unknown StoreCipher")


def _aead(cipher: str, key: bytes):
    return ChaCha20Poly1305(key) if cipher == CHACHA else AESGCM(key)


class Codec:
    """A stream's seed at work: seals and opens the values of its environment."""

    __slots__ = ("cipher", "seed", "_aead", "_n", "_idx")

    def __init__(self, cipher: str, seed: bytes) -> None:
        self.cipher = cipher
        self.seed = seed
        self._aead = _aead(cipher, seed)
        self._n = _NONCE[cipher]
        self._idx = hmac.new(seed, b"natsx subject index", hashlib.sha256).digest()

    def seal(self, aad: bytes, data: bytes) -> bytes:
        nonce = os.urandom(self._n)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, aad: bytes, blob) -> bytes:
        n = self._n
        blob = bytes(blob)
        try:
            return self._aead.decrypt(blob[:n], blob[n:], aad)
        except (InvalidTag, ValueError):
            raise EncryptionError("cipher: message authentication failed") from None

    # The identities values are authenticated with.
    def seal_msg(self, key: bytes, rec: bytes) -> bytes:
        return self.seal(b"m" + key, rec)

    def open_msg(self, key, blob) -> bytes:
        return self.open(b"m" + bytes(key), blob)

    def seal_config(self, data: bytes) -> bytes:
        return self.seal(b"cconfig", data)

    def open_config(self, blob) -> bytes:
        return self.open(b"cconfig", blob)

    def seal_consumer(self, name: bytes, data: bytes) -> bytes:
        return self.seal(b"o" + name, data)

    def open_consumer(self, name: bytes, blob) -> bytes:
        return self.open(b"o" + name, blob)

    def subject_key(self, sb: bytes) -> bytes:
        return b"\x00" + hashlib.blake2b(sb, key=self._idx, digest_size=32).digest()


class StreamKeys:
    """The key encryption keys of one stream (current, then previous) and the cipher."""

    def __init__(self, cipher: str, keks: list[bytes], names: tuple[str, str]) -> None:
        self.cipher = cipher
        self.keks = keks
        self.account, self.stream = names

    def new_codec(self) -> tuple[Codec, bytes]:
        """A fresh seed: its codec and its sealed record (``meta/key``)."""
        seed = os.urandom(_SEED)
        cid = _CIPHER_ID[self.cipher]
        nonce = os.urandom(_NONCE[self.cipher])
        sealed = _aead(self.cipher, self.keks[0]).encrypt(nonce, seed, bytes([cid]))
        return Codec(self.cipher, seed), bytes([cid]) + nonce + sealed

    def recover(self, blob) -> tuple[Codec, bool]:
        """The codec of a sealed seed, and whether it must be converted (it opened with the
        previous key or is under the other cipher). Raises EncryptionError."""
        blob = bytes(blob)
        cipher = _CIPHER_BY_ID.get(blob[0]) if blob else None
        if cipher is None or len(blob) < 1 + _NONCE[cipher] + _SEED:
            raise EncryptionError("encryption bad key size")
        n = _NONCE[cipher]
        for i, kek in enumerate(self.keks):
            try:
                seed = _aead(cipher, kek).decrypt(blob[1:1 + n], blob[1 + n:], blob[:1])
            except InvalidTag:
                continue
            return Codec(cipher, seed), i > 0 or cipher != self.cipher
        raise EncryptionError("unable to recover keys")


class Keyring:
    """The server's ``jetstream`` key, previous key and cipher."""

    def __init__(self, key: str, cipher: str = CHACHA, prev_key: str = "") -> None:
        if cipher not in _CIPHER_ID:
            raise ValueError(f"unknown cipher {cipher!r}")
        self.key = key
        self.prev_key = prev_key
        self.cipher = cipher

    def for_stream(self, account: str, stream: str) -> StreamKeys:
        """Go's jsKeyGen(key, account)(stream): HMAC-SHA256(key, account + stream)."""
        ctx = (account + stream).encode()
        keks = [hmac.new(k.encode(), ctx, hashlib.sha256).digest()
                for k in (self.key, self.prev_key) if k]
        return StreamKeys(self.cipher, keks, (account, stream))


# ------------------------------------------------------------------------------ opening

def prepare(env: lmdb.Environment, keys: Optional[StreamKeys]) -> tuple[Optional[Codec], bool]:
    """Sets up (or converts) encryption of the open, writable environment ``env``; returns
    its codec (None: plaintext) and whether its values were converted. See the module
    docstring."""
    from .lmdbread import open_dbs

    while True:
        try:
            with env.begin(write=True) as txn:
                dbs = open_dbs(env, txn, True)
                return _prepare(txn, dbs, keys)
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def _prepare(txn, dbs, keys):
    meta = dbs[3]
    blob = txn.get(KEY_RECORD, db=meta)
    if keys is None:
        if blob is not None:
            raise EncryptionError("encryption not enabled")
        return None, False
    if blob is None:
        codec, sealed = keys.new_codec()
        converted = txn.get(b"state", db=meta) is not None
        if converted:
            log.info("  Encrypting stream '%s > %s'", keys.account, keys.stream)
            _convert(txn, dbs, None, codec)
        txn.put(KEY_RECORD, sealed, db=meta)
        return codec, converted
    codec, converting = keys.recover(blob)
    if not converting:
        return codec, False
    log.info("  Converting to %s for stream '%s > %s'", cipher_name(keys.cipher),
             keys.account, keys.stream)
    new, sealed = keys.new_codec()
    _convert(txn, dbs, codec, new)
    txn.put(KEY_RECORD, sealed, db=meta)
    return new, True


def _compact(env: lmdb.Environment, path: str) -> None:
    """Rewrites the environment with its live pages only, so the pages a conversion freed
    (plaintext, or values under the previous key) leave the disk; closes ``env``. Only
    while no other process has the environment open."""
    tmp = os.path.join(path, ".compact")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        env.copy(tmp, compact=True)
        env.close()
        fd = os.open(os.path.join(tmp, "data.mdb"), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(os.path.join(tmp, "data.mdb"), os.path.join(path, "data.mdb"))
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(txn, dbs, old: Optional[Codec], new: Codec) -> None:
    """Re-seals every value of the environment from ``old`` (None: plaintext) to ``new``
    and rebuilds the subject index under ``new``'s keyed hash."""
    from .lmdbread import HDR, REC

    dbm, dbs_, _dbt, dbmeta, dbc = dbs
    txn.drop(dbs_, delete=False)
    start = None
    while True:
        cur = txn.cursor(db=dbm)
        ok = cur.set_range(start) if start is not None else cur.first()
        chunk = []
        while ok and len(chunk) < _CHUNK:
            chunk.append((bytes(cur.key()), bytes(cur.value())))
            ok = cur.next()
        if not chunk:
            break
        for k, v in chunk:
            rec = old.open_msg(k, v) if old is not None else v
            sl = REC.unpack_from(rec)[2]
            txn.put(k, new.seal_msg(k, rec), db=dbm)
            txn.put(new.subject_key(rec[HDR:HDR + sl]), k, db=dbs_)
        if not ok:
            break
        start = (int.from_bytes(chunk[-1][0], "big") + 1).to_bytes(8, "big")
    cfg = txn.get(b"config", db=dbmeta)
    if cfg is not None:
        plain = old.open_config(cfg) if old is not None else bytes(cfg)
        txn.put(b"config", new.seal_config(plain), db=dbmeta)
    cur = txn.cursor(db=dbc)
    consumers = [(bytes(k), bytes(v)) for k, v in cur.iternext()]
    for name, v in consumers:
        plain = old.open_consumer(name, v) if old is not None else v
        txn.put(name, new.seal_consumer(name, plain), db=dbc)


def prepare_path(path: str, keys: Optional[StreamKeys]) -> Optional[Codec]:
    """``prepare`` for an environment this process does not keep open (the raft process
    writes it). It is only read when that is enough: no keys (an encrypted environment then
    raises), or a ``meta/key`` that opens with the current key and cipher. Otherwise (a new
    or plaintext environment, a conversion) it is opened for writing, set up or converted in
    one transaction, compacted after a conversion, and closed."""
    from .lmdbread import MAX_DBS

    if os.path.exists(os.path.join(path, "data.mdb")):
        env = lmdb.open(path, readonly=True, create=False, max_dbs=MAX_DBS)
        try:
            blob = _key_record(env)
        finally:
            env.close()
        if keys is None:
            if blob is not None:
                raise EncryptionError("encryption not enabled")
            return None
        if blob is not None:
            codec, converting = keys.recover(blob)
            if not converting:
                return codec
    elif keys is None:
        return None
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, max_dbs=MAX_DBS, meminit=False)
    try:
        codec, converted = prepare(env, keys)
        if converted:
            _compact(env, path)
        return codec
    finally:
        env.close()


def reader_codec(env: lmdb.Environment, keys: Optional[StreamKeys]) -> Optional[Codec]:
    """The codec a reader of an environment another process writes needs (a feed reading
    its origin in another worker): None when it is plaintext. Never writes: an environment
    still to be converted, or one the keys cannot open, raises EncryptionError."""
    blob = _key_record(env)
    if blob is None:
        if keys is not None:
            raise EncryptionError("stream not encrypted yet")
        return None
    if keys is None:
        raise EncryptionError("encryption not enabled")
    codec, converting = keys.recover(blob)
    if converting:
        raise EncryptionError("stream is being converted")
    return codec


def _key_record(env) -> Optional[bytes]:
    with env.begin() as txn:
        if txn.get(b"meta") is None:
            return None
        blob = txn.get(KEY_RECORD, db=env.open_db(b"meta", txn=txn, create=False))
        return None if blob is None else bytes(blob)


# ------------------------------------------------------------------------------ meta files

_FILE_MAGIC = b"\x00natsx-sealed/1\n"


def seal_file(keys: StreamKeys, data: bytes) -> bytes:
    """A meta file's bytes sealed under a fresh seed: magic, seed record length (u16 BE), the
    sealed seed (as ``meta/key``), then the sealed data. One file, written atomically, so the
    key and the data can never come from two different writes (Go keeps them in two)."""
    codec, sealed_seed = keys.new_codec()
    return b"".join((_FILE_MAGIC, len(sealed_seed).to_bytes(2, "big"), sealed_seed,
                     codec.seal(b"meta", data)))


def open_file(keys: Optional[StreamKeys], raw: bytes) -> tuple[bytes, bool]:
    """A meta file's data, and whether it must be written again (plaintext found with a key
    set, sealed under the previous key or the other cipher). Raises EncryptionError when
    sealed and no key is set (Go's "encryption not enabled") or its keys cannot be
    recovered."""
    if not raw.startswith(_FILE_MAGIC):
        return raw, keys is not None
    if keys is None:
        raise EncryptionError("encryption not enabled")
    at = len(_FILE_MAGIC)
    n = int.from_bytes(raw[at:at + 2], "big")
    codec, converting = keys.recover(raw[at + 2:at + 2 + n])
    return codec.open(b"meta", raw[at + 2 + n:]), converting
