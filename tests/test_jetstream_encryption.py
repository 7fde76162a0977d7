"""JetStream encryption at rest: ``jetstream { key, cipher, prev_key }`` (natsx.storage.crypt).

Three layers. Every store test of test_storage.py runs again against encrypted stores, the
in-process ``LmdbStore`` and the ``RaftLmdbStore`` the raft process writes, so encryption
changes nothing clients can see. Then the codec itself: no plaintext on disk, records bound to
their sequence, Go's key derivation, and every way an environment is opened (same key, wrong
key, no key, previous key, other cipher, plaintext data). Last, the real server with two
workers and nats-py: data back after a restart with the key, no marker in the LMDB files,
Go's warning (and the stream left out) with a wrong key or none, ``prev_key`` rotation and a
plaintext store encrypted on start.
"""
from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import random
import time
from pathlib import Path

import lmdb
import nats
import pytest
from nats.js.errors import NotFoundError

import test_storage
from conftest import NATSX, RunningServer, free_port
from natsx.raftd.client import RaftClient
from natsx.storage import (DEFAULT_MAP_SIZE, FILE_STORAGE, ConsumerStoreConfig, LmdbReader,
                           LmdbStore, StoreConfig)
from natsx.storage.crypt import (AES, CHACHA, EncryptionError, Keyring, open_file,
                                 prepare_path, seal_file)
from natsx.storage.raftlmdb import RaftLmdbStore
from test_jetstream import run
from test_raft_store import pump, raft_address  # noqa: F401  (a fixture)

for _name, _fn in vars(test_storage).items():
    if _name.startswith("test_") and callable(_fn) and \
            "new_store" in inspect.signature(_fn).parameters:
        globals()[_name] = _fn

MARK = b"PLAINTEXT-MARKER-7f3a"
KEYS = Keyring("s3cr3t").for_stream("$G", "S")


# --------------------------------------------------- the store suite on encrypted stores

@pytest.fixture(params=["lmdb", "raft"])
def backend(request):
    return request.param


@pytest.fixture
def new_store(backend, tmp_path, request):
    opened = []
    client = None
    rng = random.Random(1)
    if backend == "raft":
        client = RaftClient(request.getfixturevalue("raft_address"))

    def make(**kw):
        kw.setdefault("storage", FILE_STORAGE)
        path = str(tmp_path / f"s{len(opened)}")
        if backend == "lmdb":
            store = LmdbStore(path, StoreConfig(**kw), sync=False, keys=KEYS)
        else:
            codec = prepare_path(path, KEYS)
            store = RaftLmdbStore(path, StoreConfig(**kw), client.open(path, DEFAULT_MAP_SIZE),
                                  codec)

            def on_dirty():
                store.commit_batch()
                pump(client, rng.random() < 0.5)
            store.on_dirty = on_dirty
        assert store._codec is not None
        opened.append((path, store))
        return store

    yield make
    for path, store in opened:
        if isinstance(store, RaftLmdbStore) and not store.closed:
            if store._has_changes():
                store.commit_batch()
            pump(client, True)
        store.stop()
    if client is not None:
        client.close()


# ------------------------------------------------------------------------------ the codec

def _files(path) -> bytes:
    return b"".join(p.read_bytes() for p in Path(path).rglob("*") if p.is_file())


def _values(path, db: bytes) -> list[bytes]:
    env = lmdb.open(str(path), max_dbs=8, readonly=True)
    try:
        with env.begin() as txn:
            return [bytes(v) for _k, v in txn.cursor(db=env.open_db(db, txn=txn))]
    finally:
        env.close()


def _fill(path, keys, n=20) -> None:
    st = LmdbStore(path, StoreConfig(storage=FILE_STORAGE), keys=keys)
    for i in range(n):
        st.store_msg(f"orders.secret.{i % 3}", b"NATS/1.0\r\nX: " + MARK + b"\r\n\r\n",
                     MARK + b"%d" % i)
    cs = st.consumer_store("DUR", ConsumerStoreConfig())
    cs.update_delivered(1, 3, 1, 0)
    st.stop()


def _check(path, keys) -> None:
    st = LmdbStore(path, None, keys=keys)
    try:
        assert st.state().msgs == 20
        assert st.load_msg(5).payload == MARK + b"4"
        assert st.load_last_msg("orders.secret.1").seq == 20
        assert st.subjects_state("orders.secret.*")["orders.secret.0"].msgs == 7
        assert st.consumer_store("DUR", None).state().delivered.stream == 3
    finally:
        st.stop()


def test_nothing_readable_on_disk_and_same_key_reads_all(tmp_path):
    path = tmp_path / "s"
    _fill(path, KEYS)
    disk = _files(path)
    assert MARK not in disk
    assert b"orders.secret" not in disk
    _check(path, KEYS)


def test_plaintext_store_has_the_marker(tmp_path):
    """The control for the test above: without a key the marker is on disk."""
    _fill(tmp_path / "s", None)
    assert MARK in _files(tmp_path / "s")


def test_key_derivation_is_gos_jskeygen():
    """HMAC-SHA256(key, account + stream) (server/jetstream.go jsKeyGen)."""
    keys = Keyring("k1", prev_key="k0").for_stream("ACC", "ORDERS")
    assert keys.keks == [hmac.new(b"k1", b"ACCORDERS", hashlib.sha256).digest(),
                         hmac.new(b"k0", b"ACCORDERS", hashlib.sha256).digest()]


def test_wrong_key_and_no_key_refuse_with_gos_errors(tmp_path):
    path = tmp_path / "s"
    _fill(path, KEYS)
    with pytest.raises(EncryptionError, match="^unable to recover keys$"):
        LmdbStore(path, None, keys=Keyring("other").for_stream("$G", "S"))
    # The same key for another stream name derives another key encryption key.
    with pytest.raises(EncryptionError, match="^unable to recover keys$"):
        LmdbStore(path, None, keys=Keyring("s3cr3t").for_stream("$G", "T"))
    with pytest.raises(EncryptionError, match="^encryption not enabled$"):
        LmdbStore(path, None)
    _check(path, KEYS)


def _swap(path, a, b) -> None:
    env = lmdb.open(str(path), max_dbs=8)
    dbm = env.open_db(b"msgs")
    ka, kb = a.to_bytes(8, "big"), b.to_bytes(8, "big")
    with env.begin(write=True) as txn:
        va, vb = txn.get(ka, db=dbm), txn.get(kb, db=dbm)
        txn.put(ka, vb, db=dbm)
        txn.put(kb, va, db=dbm)
    env.close()


def test_records_are_bound_to_their_sequence(tmp_path):
    path = tmp_path / "s"
    _fill(path, KEYS)
    _swap(path, 5, 6)
    st = LmdbStore(path, None, keys=KEYS)
    try:
        with pytest.raises(EncryptionError, match="message authentication failed"):
            st.load_msg(5)
        with pytest.raises(EncryptionError, match="message authentication failed"):
            st.load_msg(6)
        assert st.load_msg(7).payload == MARK + b"6"
    finally:
        st.stop()
    # The first message of a subject is read on open (its subject names the index entry):
    # a swapped one refuses the store.
    _swap(path, 1, 2)
    with pytest.raises(EncryptionError, match="message authentication failed"):
        LmdbStore(path, None, keys=KEYS)


@pytest.mark.parametrize("cipher", [CHACHA, AES])
def test_prev_key_rotation_reencrypts(tmp_path, caplog, cipher):
    path = tmp_path / "s"
    old = Keyring("old-key", cipher).for_stream("$G", "S")
    _fill(path, old)
    before = _values(path, b"msgs") + _values(path, b"consumers")
    new = Keyring("new-key", cipher, prev_key="old-key").for_stream("$G", "S")
    caplog.set_level("INFO", logger="natsx")
    _check(path, new)
    name = "ChaCha20-Poly1305" if cipher == CHACHA else "AES-GCM"
    assert f"Converting to {name} for stream '$G > S'" in caplog.text
    after = _files(path)
    # Every value was sealed again, and the old ciphertext left the file with its pages.
    assert len(before) == 21 and not any(v[-32:] in after for v in before)
    # The new key alone reads it now; the old one no longer does.
    _check(path, Keyring("new-key", cipher).for_stream("$G", "S"))
    with pytest.raises(EncryptionError, match="unable to recover keys"):
        LmdbStore(path, None, keys=Keyring("old-key", cipher).for_stream("$G", "S"))


def test_cipher_change_converts(tmp_path, caplog):
    path = tmp_path / "s"
    _fill(path, Keyring("k", CHACHA).for_stream("$G", "S"))
    caplog.set_level("INFO", logger="natsx")
    _check(path, Keyring("k", AES).for_stream("$G", "S"))
    assert "Converting to AES-GCM for stream '$G > S'" in caplog.text
    raw = lmdb.open(str(tmp_path / "s"), max_dbs=8, readonly=True)
    with raw.begin() as txn:
        assert txn.get(b"key", db=raw.open_db(b"meta", txn=txn))[0] == 2     # AES
    raw.close()


def test_plaintext_store_is_encrypted_on_open(tmp_path, caplog):
    path = tmp_path / "s"
    _fill(path, None)
    caplog.set_level("INFO", logger="natsx")
    _check(path, KEYS)
    assert "Encrypting stream '$G > S'" in caplog.text
    assert MARK not in _files(path)       # freed pages too: the environment was compacted
    _check(path, KEYS)


def test_meta_files_are_sealed_and_converted():
    data = b'{"config": {"subjects": ["orders.>"]}}'
    raw = seal_file(KEYS, data)
    assert b"orders" not in raw
    assert open_file(KEYS, raw) == (data, False)
    assert seal_file(KEYS, data) != raw            # a fresh seed and nonce every write
    with pytest.raises(EncryptionError, match="^unable to recover keys$"):
        open_file(Keyring("other").for_stream("$G", "S"), raw)
    with pytest.raises(EncryptionError, match="^encryption not enabled$"):
        open_file(None, raw)
    # Rewrite when found in clear with a key, or sealed under the previous key.
    assert open_file(KEYS, data) == (data, True)
    assert open_file(None, data) == (data, False)
    rotated = Keyring("new", prev_key="s3cr3t").for_stream("$G", "S")
    assert open_file(rotated, raw) == (data, True)


def test_reader_of_another_process_takes_the_codec(tmp_path):
    path = tmp_path / "s"
    _fill(path, KEYS)
    codec = prepare_path(str(path), KEYS)
    with LmdbReader(path, codec) as rd:
        assert rd.load_msg(2).payload == MARK + b"1"
        assert rd.load_last_msg("orders.secret.2").seq == 18
        assert rd.load_next_msg("orders.secret.2", 4) == (rd.load_msg(6), 6)


# ------------------------------------------------------------------------- the server



def _server(tmp_path, store, extra="", workers=2):
    conf = tmp_path / f"js-{time.monotonic_ns()}.conf"
    conf.write_text('jetstream { store_dir: "%s"\n%s\n}\n' % (store, extra))
    port = free_port()
    cmd = NATSX + ["-a", "127.0.0.1", "-p", str(port), "-c", str(conf),
                   "--workers", str(workers)]
    return RunningServer(cmd, port, None, tmp_path / f"natsx-{time.monotonic_ns()}.log",
                         dict(os.environ))


def _wait_log(srv, text, timeout=15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in srv.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{srv.log()[-3000:]}")


async def _publish(url, n=10):
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="ENC", subjects=["enc.>"])
    await js.add_stream(name="MEM", subjects=["mem.>"], storage="memory")
    for i in range(n):
        ack = await js.publish(f"enc.secret.{i % 2}", MARK + b"-%d" % i,
                               headers={"X-Secret": MARK.decode()})
        assert ack.seq == i + 1
    await js.publish("mem.x", MARK)
    sub = await js.pull_subscribe("enc.>", durable="D")
    msgs = await sub.fetch(3)
    for m in msgs:
        await m.ack_sync()
    await nc.close()


async def _read_back(url, n=10):
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info("ENC")
    assert info.state.messages == n
    m = await js.get_msg("ENC", 4)
    assert m.data == MARK + b"-3" and m.headers["X-Secret"] == MARK.decode()
    last = await js.get_last_msg("ENC", "enc.secret.0")
    assert last.seq == n - 1
    cinfo = await js.consumer_info("ENC", "D")
    assert cinfo.ack_floor.stream_seq == 3 and cinfo.num_pending == n - 3
    # A memory stream's config comes back (its messages do not, as in Go).
    assert (await js.stream_info("MEM")).config.subjects == ["mem.>"]
    await nc.close()


async def _stream_missing(url):
    nc = await nats.connect(url)
    js = nc.jetstream()
    with pytest.raises(NotFoundError):
        await js.stream_info("ENC")
    await nc.close()


def _lmdb_files(store) -> bytes:
    return b"".join(p.read_bytes() for p in Path(store).rglob("*.mdb"))


def _run_server(tmp_path, store, extra, check, wait="") -> None:
    """Starts a server on ``store`` with ``extra`` in its jetstream block, waits until
    ``wait`` is logged, runs ``check(url)`` with nats-py and stops it."""
    srv = _server(tmp_path, store, extra)
    try:
        if wait:
            _wait_log(srv, wait)
        run(check(srv.url))
    finally:
        srv.stop()


RESTORED = "Restored 10 messages for stream '$G > ENC'"
WRONG_KEY = "Error decrypting our stream metafile: unable to recover keys"


@pytest.mark.server
def test_server_encrypts_and_restarts_with_the_key(tmp_path):
    store = str(tmp_path / "store")
    _run_server(tmp_path, store, 'key: "s3cr3t"', _publish,
                wait="Encryption:      ChaCha20-Poly1305")
    disk = _lmdb_files(store)
    assert disk and MARK not in disk and b"enc.secret" not in disk
    # The meta files (stream and consumer configs) are sealed too.
    metas = list(Path(store).rglob("meta.inf"))
    assert len(metas) == 3          # ENC, its consumer D, MEM
    assert not any(b"enc.>" in p.read_bytes() or b"mem.>" in p.read_bytes() for p in metas)
    _run_server(tmp_path, store, 'key: "s3cr3t"', _read_back, wait=RESTORED)


@pytest.mark.server
def test_server_wrong_key_or_none_leaves_the_stream_out(tmp_path):
    store = str(tmp_path / "store")
    _run_server(tmp_path, store, 'key: "s3cr3t"', _publish)
    _run_server(tmp_path, store, 'key: "wrong"', _stream_missing, wait=WRONG_KEY)
    _run_server(tmp_path, store, "", _stream_missing,
                wait="Error decrypting our stream metafile: encryption not enabled")
    # Nothing was lost: the right key still reads everything.
    _run_server(tmp_path, store, 'key: "s3cr3t"', _read_back, wait=RESTORED)


@pytest.mark.server
def test_server_prev_key_rotation(tmp_path):
    store = str(tmp_path / "store")
    _run_server(tmp_path, store, 'key: "old"', _publish)
    _run_server(tmp_path, store, 'key: "new", prev_key: "old", cipher: aes', _read_back,
                wait="Converting to AES-GCM for stream '$G > ENC'")
    # The new key alone reads it now; another cipher converts it again, as in Go.
    _run_server(tmp_path, store, 'key: "new", cipher: aes', _read_back, wait=RESTORED)
    _run_server(tmp_path, store, 'key: "new"', _read_back,
                wait="Converting to ChaCha20-Poly1305 for stream '$G > ENC'")
    _run_server(tmp_path, store, 'key: "old"', _stream_missing, wait=WRONG_KEY)
    assert MARK not in _lmdb_files(store)


@pytest.mark.server
def test_server_encrypts_a_plaintext_store_on_start(tmp_path):
    store = str(tmp_path / "store")
    _run_server(tmp_path, store, "", _publish)
    assert MARK in _lmdb_files(store)
    assert any(b"enc.>" in p.read_bytes() for p in Path(store).rglob("meta.inf"))
    _run_server(tmp_path, store, 'key: "s3cr3t"', _read_back,
                wait="Encrypting stream '$G > ENC'")
    assert MARK not in _lmdb_files(store)
    assert not any(b"enc.>" in p.read_bytes() for p in Path(store).rglob("meta.inf"))


def test_reload_refuses_a_key_change(tmp_path):
    """Go's diffOptions has no case for JetStreamKey/JetStreamOldKey: not reloadable."""
    from natsx.server.config_options import load_options
    from natsx.server.reload import ReloadError, jetstream_changes

    def opts(block):
        conf = tmp_path / f"r-{time.monotonic_ns()}.conf"
        conf.write_text("jetstream { %s }\n" % block)
        return load_options(str(conf))[0]

    old = opts('key: "one"')
    assert jetstream_changes(old, opts('key: "one"')) == []
    with pytest.raises(ReloadError, match="^config reload not supported for JetStreamKey: "):
        jetstream_changes(old, opts('key: "two"'))
    with pytest.raises(ReloadError, match="^config reload not supported for JetStreamOldKey: "):
        jetstream_changes(old, opts('key: "one", prev_key: "zero"'))
