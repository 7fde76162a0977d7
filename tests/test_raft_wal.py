"""The raft process's write-ahead log (natsx.raftd.wal) and its recovery into LMDB.

A proposal is durable once its group's log is flushed; LMDB takes it afterwards. These tests
cut that in between — the entries are in the log, LMDB has not taken them — and check that
opening the group again (the raft process restarted) applies exactly those, and that the scan
of the log stops where it must: a torn record, the zeros of a chunk, an older cycle's records.
"""
from __future__ import annotations

import os

import lmdb
import pytest

from natsx.raftd import protocol as P
from natsx.raftd import wal as W
from natsx.raftd.server import WAL_NAME, Group


def _ops(key: bytes, value: bytes) -> bytes:
    return P.encode_ops([(P.OP_PUT, P.DB_META, key, value)])


def _get(g: Group, key: bytes):
    with g.env.begin() as txn:
        v = txn.get(key, db=g.dbs[P.DB_META])
        return None if v is None else bytes(v)


def _meta(path: str, key: bytes):
    """Read with an environment of its own (none of the process's may be open on it)."""
    env = lmdb.open(path, readonly=True, max_dbs=8)
    try:
        db = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            v = txn.get(key, db=db)
            return None if v is None else bytes(v)
    finally:
        env.close()


def test_scan_takes_consecutive_whole_records_after_applied():
    recs = [W.record(i, _ops(b"k", b"%d" % i)) for i in range(5, 9)]
    data = b"".join(recs)
    assert [i for i, _ in W.scan(data, 4)] == [5, 6, 7, 8]
    assert [i for i, _ in W.scan(data, 6)] == [7, 8]
    assert W.scan(data, 8) == []
    # A torn last record, a bad CRC, zeros: the scan stops there.
    assert [i for i, _ in W.scan(data[:-3], 4)] == [5, 6, 7]
    bad = bytearray(data)
    bad[len(recs[0]) + 20] ^= 0xFF
    assert [i for i, _ in W.scan(bytes(bad), 4)] == [5]
    assert [i for i, _ in W.scan(data + bytes(4096), 4)] == [5, 6, 7, 8]
    # What is left of an older cycle after the newest records does not continue them.
    old = b"".join(W.record(i, _ops(b"k", b"old")) for i in range(1, 9))
    new = b"".join(recs[:2])
    assert [i for i, _ in W.scan(new + old[len(new):], 4)] == [5, 6]
    assert [i for i, _ in W.scan(W.record(9, b"x") + old[len(W.record(9, b"x")):], 8)] == [9]
    # Entries missing between LMDB and the log.
    with pytest.raises(ValueError):
        W.scan(data, 2)


def test_a_restart_applies_what_the_log_holds_and_lmdb_does_not(tmp_path):
    path = str(tmp_path / "g")
    g = Group(1, path, 1 << 20)
    g.reopen()
    answers = None
    for i in (1, 2, 3):
        g.queue.append((None, g.epoch, i, _ops(b"x", b"v%d" % i)))
    answers = g.run()
    assert [a[1][0] for a in answers] == ["ok"] * 3
    assert g.durable == 3 and g.applied == 0 and len(g.pending) == 3
    # The process dies here: the log has entries 1-3, LMDB none of them.
    g.env.close()
    g.wal.close()
    assert _meta(path, b"x") is None
    g = Group(1, path, 1 << 20)
    assert g.applied == g.durable == 3
    epoch, applied = g.reopen()
    assert applied == 3
    assert _get(g, b"x") == b"v3"
    # The log starts over and keeps working after the recovery.
    g.queue.append((None, epoch, 4, _ops(b"x", b"v4")))
    assert g.run()[0][1] == ["ok", 1, 4]
    g.close()
    assert _meta(path, b"x") == b"v4"
    assert os.path.getsize(os.path.join(path, WAL_NAME)) == W.FIRST_CHUNK


def test_the_log_starts_over_once_lmdb_has_caught_up(tmp_path):
    path = str(tmp_path / "g")
    g = Group(1, path, 1 << 20)
    g.reopen()
    g.queue.append((None, g.epoch, 1, _ops(b"x", b"a")))
    g.run()
    first = g.wal.offset
    assert first > 0
    g.flush()
    g.queue.append((None, g.epoch, 2, _ops(b"x", b"b")))
    g.run()
    assert g.wal.offset == first      # written at 0 again
    # Not caught up: the next record follows.
    g.queue.append((None, g.epoch, 3, _ops(b"x", b"c")))
    g.run()
    assert g.wal.offset > first
    g.env.close()
    g.wal.close()
    g = Group(1, path, 1 << 20)
    assert g.applied == 3 and _get(g, b"x") == b"c"
    g.close()


def test_the_log_is_recovered_also_by_a_run_without_it(tmp_path):
    """Acknowledged entries in the log are applied even when the next run trades the log
    away (``sync_interval``)."""
    path = str(tmp_path / "g")
    g = Group(1, path, 1 << 20)
    g.reopen()
    g.queue.append((None, g.epoch, 1, _ops(b"x", b"logged")))
    g.run()
    g.env.close()
    g.wal.close()
    g = Group(1, path, 1 << 20, sync_interval=60 * 10**9)
    assert g.wal is None and g.applied == 1 and _get(g, b"x") == b"logged"
    g.queue.append((None, g.reopen()[0], 2, _ops(b"x", b"lazy")))
    assert [a[1][0] for a in g.run()] == ["applied", "ok"]
    g.close()


def test_the_file_grows_by_doubling_chunks_and_keeps_its_records(tmp_path):
    wal = W.Wal(str(tmp_path / WAL_NAME))
    sizes = []
    for i in range(1, 41):
        wal.append([W.record(i, b"v" * 10_000)])
        sizes.append(wal.size)
    wal.sync()
    assert sizes[0] == W.FIRST_CHUNK and wal.size >= wal.offset
    assert sorted(set(sizes))[:3] == [W.FIRST_CHUNK, 2 * W.FIRST_CHUNK, 4 * W.FIRST_CHUNK]
    assert [i for i, _ in wal.recover(0)] == list(range(1, 41))
    wal.close()
