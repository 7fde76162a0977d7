"""RaftLmdbStore: the worker's stream store whose writes the raft process applies.

Every test of test_storage.py that takes the ``new_store`` fixture runs here again against a
``RaftLmdbStore`` backed by a real raft process (natsx.raftd.server, forked) — the same
semantics as the memory and LMDB stores, by the same assertions. Each write outside a batch is
proposed at once and its answer is read either at once or later, at random, so reads go through
every mix of the overlay and what the raft process already applied. After each test the
environment the raft process wrote is read back with ``LmdbReader`` and compared, message by
message, with what the store shows.
"""
from __future__ import annotations

import inspect
import os
import random
import select
import signal
import socket

import pytest

import test_storage
from natsx.raftd.client import RaftClient
from natsx.raftd.server import RaftServer
from natsx.storage import FILE_STORAGE, DEFAULT_MAP_SIZE, ErrStoreMsgNotFound, LmdbReader, StoreConfig
from natsx.storage.raftlmdb import RaftLmdbStore

for _name, _fn in vars(test_storage).items():
    if _name.startswith("test_") and callable(_fn) and \
            "new_store" in inspect.signature(_fn).parameters:
        globals()[_name] = _fn


@pytest.fixture(scope="module")
def raft_address():
    address = "\0natsx-test-raft-%d" % os.getpid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(16)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            RaftServer(listener).serve()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    listener.close()
    yield address
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def pump(client: RaftClient, block: bool) -> None:
    """Reads the raft process's answers: what has arrived, or until nothing is in flight
    (and LMDB has taken every durable entry)."""
    while True:
        busy = any(g.inflight or (g.applied < g.confirmed and not g.refused)
                   for g in client.all)
        wait = 5.0 if block and busy else 0
        ready, _, _ = select.select([client.sock], [], [], wait)
        if not ready:
            assert not (block and busy), "the raft process did not answer"
            return
        data = client.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        assert data, "the raft process closed the channel"
        for msg in client.decoder.feed(data):
            client._dispatch(msg)
        if not block:
            return


@pytest.fixture
def backend():
    return "raft"


@pytest.fixture
def new_store(raft_address, tmp_path):
    client = RaftClient(raft_address)
    rng = random.Random(1)
    opened = []

    def make(**kw):
        kw.setdefault("storage", FILE_STORAGE)
        path = str(tmp_path / f"s{len(opened)}")
        group = client.open(path, DEFAULT_MAP_SIZE)
        store = RaftLmdbStore(path, StoreConfig(**kw), group)

        def on_dirty():
            store.commit_batch()
            pump(client, rng.random() < 0.5)
        store.on_dirty = on_dirty
        opened.append((path, store))
        return store

    yield make
    for path, store in opened:
        if store.closed:
            continue
        if store._has_changes():
            store.commit_batch()
        pump(client, True)
        check_written(path, store)
    client.close()


def check_written(path: str, store: RaftLmdbStore) -> None:
    state = store.state()
    want = {}
    for seq in range(state.first_seq, state.last_seq + 1):
        try:
            want[seq] = store.load_msg(seq)
        except ErrStoreMsgNotFound:
            pass
    store.stop()        # an environment opens once per process: the reader needs it closed
    with LmdbReader(path) as rd:
        got = rd.state()
        assert (got.msgs, got.bytes, got.first_seq, got.last_seq) == \
            (state.msgs, state.bytes, state.first_seq, state.last_seq)
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                have = rd.load_msg(seq)
            except ErrStoreMsgNotFound:
                have = None
            assert want.get(seq) == have, f"seq {seq}"


# ------------------------------------------------------------------------ the channel itself

def test_decoder_splits_frames_at_any_boundary():
    from natsx.raftd import protocol as P

    msgs = [["prop", 1, 2, 3, [[P.OP_PUT, P.DB_MSGS, b"k", b"v" * 300]]], ["ok", 1, 3]]
    data = b"".join(P.frame(m) for m in msgs)
    for cut in range(len(data) + 1):
        d = P.Decoder()
        assert d.feed(data[:cut]) + d.feed(data[cut:]) == msgs


def _meta_raft(path):
    import struct

    import lmdb

    env = lmdb.open(path, readonly=True, max_dbs=8)
    try:
        db = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            return struct.unpack("<QQ", txn.get(b"raft", db=db)), \
                txn.get(b"x", db=db), txn.get(b"y", db=db)
    finally:
        env.close()


def test_a_reopened_group_fences_its_old_writer(raft_address, tmp_path):
    from natsx.raftd import protocol as P

    path = str(tmp_path / "g")
    old, new = RaftClient(raft_address), RaftClient(raft_address)
    g_old = old.open(path, DEFAULT_MAP_SIZE)
    i = g_old.propose([(P.OP_PUT, P.DB_META, b"x", b"1")])
    pump(old, True)
    assert g_old.confirmed == i and not g_old.errors
    # A new writer (a restarted worker) opens the same environment: the old one is fenced.
    g_new = new.open(path, DEFAULT_MAP_SIZE)
    assert g_new.epoch > g_old.epoch and g_new.next_index == i + 1
    j = g_old.propose([(P.OP_PUT, P.DB_META, b"x", b"stale")])
    pump(old, True)
    assert g_old.errors.get(j) == "stale epoch"
    k = g_new.propose([(P.OP_PUT, P.DB_META, b"y", b"2")])
    pump(new, True)
    assert g_new.confirmed == k and not g_new.errors
    new.drop(g_new, False)
    (epoch, applied), x, y = _meta_raft(path)
    assert (applied, x, y) == (k, b"1", b"2")
    old.close()
    new.close()


def test_reconnect_resends_only_what_was_not_applied(raft_address, tmp_path):
    """Answers lost with the channel: the entries LMDB has are not sent again, the others
    are, under the new epoch."""
    import time as _time

    from natsx.raftd import protocol as P

    path = str(tmp_path / "r")
    client = RaftClient(raft_address)
    group = client.open(path, DEFAULT_MAP_SIZE)
    a = group.propose([(P.OP_PUT, P.DB_META, b"x", b"a")])
    pump(client, True)
    # Entry b is applied but its answer is lost; entry c never reaches the raft process.
    b = group.propose([(P.OP_PUT, P.DB_META, b"x", b"b")])
    _time.sleep(0.3)
    client._disconnect()
    c = group.propose([(P.OP_PUT, P.DB_META, b"y", b"c")])
    group.inflight[b] = [(P.OP_PUT, P.DB_META, b"x", b"b")]
    group.confirmed = a
    client._connect(_time.monotonic() + 5)
    assert b not in group.inflight and group.confirmed >= b
    pump(client, True)
    assert group.confirmed == c and not group.errors
    client.drop(group, False)
    (_epoch, applied), x, y = _meta_raft(path)
    assert (applied, x, y) == (c, b"b", b"c")
    client.close()


def test_proposal_frames_split_at_any_boundary():
    """Proposals travel as binary frames (``prop_frame``) among CBOR ones; the operations stay
    one blob until applied."""
    from natsx.raftd import protocol as P

    ops = [(P.OP_PUT, P.DB_MSGS, b"\0" * 8, b"v" * 300), (P.OP_DEL, P.DB_SUBJ, b"s", b"")]
    blob = P.encode_ops(ops)
    data = P.frame(["ok", 1, 2]) + P.prop_frame(7, 3, 9, blob) + P.frame(["ok", 1, 3])
    want = [["ok", 1, 2], ["prop", 7, 3, 9, blob], ["ok", 1, 3]]
    for cut in range(len(data) + 1):
        d = P.Decoder()
        got = d.feed(data[:cut]) + d.feed(data[cut:])
        assert got == want
    assert P.decode_ops(blob) == ops
    with pytest.raises(ValueError):
        P.Decoder().feed(P._LEN.pack(3) + b"\0\1\2")


def test_reads_stay_exact_while_answered_proposals_leave_the_overlay(raft_address, tmp_path,
                                                                     monkeypatch):
    """Answered proposals leave the overlay in bulk (past ``_OV_KEEP_BYTES``, or when nothing is
    in flight; how many stay at a time depends on when the raft process answers, so it is not
    asserted): every read is the same throughout, and the overlay is empty once nothing is in
    flight."""
    import natsx.storage.raftlmdb as raftlmdb

    monkeypatch.setattr(raftlmdb, "_OV_KEEP_BYTES", 3000)
    client = RaftClient(raft_address)
    path = str(tmp_path / "ov")
    group = client.open(path, DEFAULT_MAP_SIZE)
    store = RaftLmdbStore(path, StoreConfig(storage=FILE_STORAGE), group)
    store.commit_batch()
    pump(client, True)
    payloads = {}
    for round_ in range(12):
        store.begin_batch()
        for i in range(3):
            seq, _ = store.store_msg(f"s.{i}", b"", b"%d-%d" % (round_, i) * 40)
            payloads[seq] = b"%d-%d" % (round_, i) * 40
        if round_ == 5:
            store.remove_msg(2)
            del payloads[2]
        store.commit_batch()
        # Take answers until all but the last proposal are in LMDB (the applier follows
        # the answers): only what it has may leave the overlay.
        while group.applied < store.last_proposal - 1:
            pump(client, False)
        for seq, payload in payloads.items():
            assert store.load_msg(seq).payload == payload
    pump(client, True)
    store.load_msg(1)               # a read notices nothing is in flight any more
    assert store._ov_msgs == {} and not store._inflight
    check_written(path, store)
    client.close()
