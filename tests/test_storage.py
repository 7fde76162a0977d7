"""Tests for the JetStream stream stores (natsx.storage).

Every behavioural test runs against both backends through the ``new_store`` fixture; the tests
are named after the Go tests they port (server/memstore_test.go, server/store_test.go,
server/filestore_test.go). Byte counts follow the configured storage type (memStoreMsgSize for
"memory", fileStoreMsgSize for "file"), so expectations are computed with ``cfg.msg_size``.
LMDB-only tests cover recovery, batching, map growth and readers in other processes; a
hypothesis state machine drives both stores with the same operations and compares them with
each other and with a brute-force view of the stored messages.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import tempfile

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from natsx.storage import (
    ACK_ALL,
    ACK_EXPLICIT,
    ACK_NONE,
    DISCARD_NEW,
    FILE_STORAGE,
    MEMORY_STORAGE,
    ConsumerState,
    ConsumerStoreConfig,
    ErrBadConsumerState,
    ErrMaxBytes,
    ErrMaxMsgs,
    ErrMaxMsgsPerSubject,
    ErrMsgTooLarge,
    ErrNoAckPolicy,
    ErrSequenceMismatch,
    ErrStoreClosed,
    ErrStoreEOF,
    ErrStoreMsgNotFound,
    ErrStoreOldUpdate,
    ErrTooManyResults,
    LmdbReader,
    LmdbStore,
    MemStore,
    Pending,
    SequencePair,
    SimpleState,
    StoreConfig,
    StoreError,
    file_store_msg_size,
    mem_store_msg_size,
)
from natsx.storage.memstore import SeqList
from natsx.storage.subjects import subject_matches

SEC = 1_000_000_000


@pytest.fixture(params=["memory", "lmdb"])
def backend(request):
    return request.param


@pytest.fixture
def new_store(backend, tmp_path):
    """``new_store(**cfg)``: a store of the parametrized backend. The memory store accounts as
    "memory" and the LMDB one as "file" unless ``storage`` says otherwise."""
    opened = []

    def make(**kw):
        kw.setdefault("storage", MEMORY_STORAGE if backend == "memory" else FILE_STORAGE)
        cfg = StoreConfig(**kw)
        if backend == "memory":
            store = MemStore(cfg)
        else:
            # Syncing is covered by the durability tests; here it would only cost time.
            store = LmdbStore(tmp_path / f"s{len(opened)}", cfg, sync=False)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.stop()


def size_of(store, subject, headers=b"", payload=b""):
    return store.cfg.msg_size(len(subject), len(headers), len(payload))


def fill(store, subjects, payload=b"ok", ts=None):
    """Store one message per subject, in one batch (one commit for the LMDB store)."""
    seqs = []
    with store.batch():
        for i, subject in enumerate(subjects):
            seqs.append(store.store_msg(subject, b"", payload,
                                        ts_ns=None if ts is None else ts + i)[0])
    return seqs


# =============================================================================================
# Basics


def test_msg_sizes_match_go():
    # memstore.go memStoreMsgSize and filestore.go fileStoreMsgSize.
    assert mem_store_msg_size(3, 10, 11) == 3 + 10 + 11 + 16
    assert file_store_msg_size(3, 0, 11) == 22 + 3 + 11 + 8
    assert file_store_msg_size(3, 10, 11) == 22 + 3 + 4 + 10 + 11 + 8


def test_store_basics(new_store):
    # TestMemStoreBasics
    ms = new_store()
    seq, ts = ms.store_msg("foo", b"", b"Hello World")
    assert seq == 1 and ts > 0
    state = ms.state()
    assert state.msgs == 1
    assert state.bytes == size_of(ms, "foo", b"", b"Hello World")
    assert (state.first_seq, state.last_seq, state.first_ts, state.last_ts) == (1, 1, ts, ts)
    sm = ms.load_msg(1)
    assert (sm.subject, sm.payload, sm.headers, sm.seq, sm.ts) == \
        ("foo", b"Hello World", b"", 1, ts)
    with pytest.raises(ErrStoreEOF):
        ms.load_msg(2)


def test_scan_walks_the_stored_messages_in_order(new_store):
    ms = new_store()
    assert list(ms.scan()) == []
    fill(ms, ["a", "b", "c", "d", "e"])
    ms.remove_msg(2)
    assert [sm.seq for sm in ms.scan()] == [1, 3, 4, 5]
    assert [sm.subject for sm in ms.scan(start=3, last=4)] == ["c", "d"]
    # The end is the last sequence when the walk starts: what is stored during it is not
    # visited.
    seen = []
    for sm in ms.scan():
        seen.append(sm.seq)
        if sm.seq == 1:
            ms.store_msg("f", b"", b"late")
    assert seen == [1, 3, 4, 5]
    ms.purge()
    assert list(ms.scan()) == []


def test_store_msg_headers(new_store):
    # TestMemStoreMsgHeaders
    ms = new_store()
    hdr, msg = b"NATS/1.0\r\nname: derek\r\n\r\n", b"Hello World"
    ms.store_msg("foo", hdr, msg)
    sm = ms.load_msg(1)
    assert (sm.headers, sm.payload) == (hdr, msg)
    assert ms.state().bytes == size_of(ms, "foo", hdr, msg)
    assert ms.erase_msg(1)
    with pytest.raises(ErrStoreMsgNotFound):
        ms.load_msg(1)


def test_store_time_stamps(new_store):
    # TestMemStoreTimeStamps: the given time is kept as is.
    ms = new_store()
    for i in range(10):
        ms.store_msg("foo", b"", b"x", ts_ns=1_000 + i)
    assert [ms.load_msg(s).ts for s in range(1, 11)] == list(range(1_000, 1_010))


def test_store_bytes_subject(new_store):
    # The wire hands subjects over as bytes; they are stored and reported as str.
    ms = new_store()
    ms.store_msg(b"foo.bar", b"", b"x")
    assert ms.load_msg(1).subject == "foo.bar"
    assert ms.subjects_totals("foo.*") == {"foo.bar": 1}


def test_store_raw_sequence_mismatch(new_store):
    ms = new_store()
    assert ms.store_raw(0, 10, "foo") == 1
    assert ms.store_raw(2, 11, "foo") == 2
    with pytest.raises(ErrSequenceMismatch):
        ms.store_raw(5, 12, "foo")
    assert ms.state().last_seq == 2


def test_store_closed(new_store):
    ms = new_store()
    ms.store_msg("foo")
    ms.stop()
    with pytest.raises(ErrStoreClosed):
        ms.store_msg("foo")
    with pytest.raises(ErrStoreClosed):
        ms.load_msg(1)
    with pytest.raises(ErrStoreClosed):
        ms.state()


def test_storage_update_callback(new_store):
    ms = new_store(max_msgs=2)
    seen = []
    ms.register_storage_updates(lambda *a: seen.append(a))
    ms.store_msg("a", b"", b"1")
    ms.store_msg("b", b"", b"2")
    ms.store_msg("c", b"", b"3")  # pushes "a" out
    sz = size_of(ms, "a", b"", b"1")
    assert seen == [(1, sz, 1, "a"), (1, sz, 2, "b"), (-1, -sz, 1, "a"), (1, sz, 3, "c")]
    seen.clear()
    ms.remove_msg(2)
    assert seen == [(-1, -sz, 2, "b")]
    seen.clear()
    ms.purge()
    assert seen == [(-1, -sz, 0, "")]


@pytest.mark.parametrize("limits", [
    {},
    {"max_msgs": 5},
    {"max_bytes": 400},
    {"max_msgs_per_subject": 2},
    {"max_msgs": 5, "discard": DISCARD_NEW},
    {"max_bytes": 400, "discard": DISCARD_NEW},
    {"max_msgs_per_subject": 2, "discard": DISCARD_NEW, "discard_new_per_subject": True},
    {"max_msg_size": 40},
])
def test_append_is_store_msg(new_store, backend, limits):
    """``append`` (the stream owner's publish path) leaves the same messages, counters,
    per-subject state and storage updates as ``store_msg``, limits and refusals included,
    and takes no detour through ``store_msg`` while no limit is reached."""
    rng = random.Random(7)
    via_store, via_append = new_store(**limits), new_store(**limits)
    seen = {id(via_store): [], id(via_append): []}
    for s in (via_store, via_append):
        s.register_storage_updates(lambda *a, s=s: seen[id(s)].append(a))
    fallbacks = []
    plain_store_msg = via_append.store_msg

    def store_msg(*args, **kw):
        fallbacks.append(args[0])
        return plain_store_msg(*args, **kw)
    via_append.store_msg = store_msg
    ts = 1_000 * SEC
    calls = 0
    for round_ in range(6):
        with via_store.batch(), via_append.batch():
            for _ in range(rng.randrange(1, 8)):
                subject = rng.choice(["a", "b.c", "dé"])
                hdr = rng.choice([b"", b"NATS/1.0\r\nX: 1\r\n\r\n"])
                payload = b"p" * rng.randrange(0, 50)
                ts += 1
                try:
                    want = via_store.store_msg(subject, hdr, payload, ts)[0]
                except StoreError as exc:
                    want = type(exc)
                calls += 1
                try:
                    got = via_append.append(subject, hdr, payload, ts)
                except StoreError as exc:
                    got = type(exc)
                assert got == want
    assert via_append.state() == via_store.state()
    assert via_append.subjects_state(">") == via_store.subjects_state(">")
    state = via_store.state()
    for seq in range(state.first_seq, state.last_seq + 1):
        assert via_append.load_msg(seq) == via_store.load_msg(seq)
    assert seen[id(via_append)] == seen[id(via_store)]
    if backend != "lmdb" and not limits:
        # The memory store and the raft overlay put in place; the local LMDB store needs
        # its write transaction, so it always takes store_msg.
        assert fallbacks == []
    if backend == "lmdb":
        assert len(fallbacks) == calls
    else:
        assert len(fallbacks) < calls


# =============================================================================================
# Limits


def test_store_msg_limit(new_store):
    # TestMemStoreMsgLimit
    ms = new_store(max_msgs=10)
    for _ in range(10):
        ms.store_msg("foo", b"", b"Hello World")
    assert ms.state().msgs == 10
    ms.store_msg("foo", b"", b"Hello World")
    state = ms.state()
    assert (state.msgs, state.first_seq, state.last_seq) == (10, 2, 11)
    with pytest.raises(ErrStoreMsgNotFound):
        ms.load_msg(1)


def test_store_bytes_limit(new_store):
    # TestMemStoreBytesLimit
    msg = bytes(512)
    probe = new_store()
    stored = size_of(probe, "foo", b"", msg)
    to_store = 1024
    ms = new_store(max_bytes=stored * to_store)
    fill(ms, ["foo"] * to_store, msg)
    state = ms.state()
    assert (state.msgs, state.bytes) == (to_store, stored * to_store)
    for _ in range(10):
        ms.store_msg("foo", b"", msg)
    state = ms.state()
    assert (state.msgs, state.bytes) == (to_store, stored * to_store)
    assert (state.first_seq, state.last_seq) == (11, to_store + 10)


def test_store_bytes_limit_with_discard_new(new_store):
    # TestMemStoreBytesLimitWithDiscardNew (nats-server#4771)
    probe = new_store()
    stored = size_of(probe, "tiny", b"", bytes(7))
    ms = new_store(max_bytes=stored * 3 + 1, discard=DISCARD_NEW)
    for i in range(10):
        if i < 3:
            ms.store_msg("tiny", b"", bytes(7))
        else:
            with pytest.raises(ErrMaxBytes):
                ms.store_msg("tiny", b"", bytes(7))
    state = ms.state()
    assert (state.msgs, state.bytes) == (3, stored * 3)


@pytest.mark.parametrize("limits, error", [
    (dict(max_msgs=1), ErrMaxMsgs),
    (dict(max_bytes=33), ErrMaxBytes),
    (dict(max_msgs_per_subject=1), None),
    (dict(max_msgs_per_subject=1, discard_new_per_subject=True), ErrMaxMsgsPerSubject),
    (dict(max_msgs=1, max_msgs_per_subject=1), None),
    (dict(max_bytes=33, max_msgs_per_subject=1), None),
    (dict(max_msgs=1, max_msgs_per_subject=1, discard_new_per_subject=True),
     ErrMaxMsgsPerSubject),
    (dict(max_bytes=33, max_msgs_per_subject=1, discard_new_per_subject=True),
     ErrMaxMsgsPerSubject),
], ids=["MaxMsgs", "MaxBytes", "MaxMsgsPer", "MaxMsgsPer_DiscardNewPer", "MaxMsgsPer_MaxMsgs",
        "MaxMsgsPer_MaxBytes", "MaxMsgsPer_MaxMsgs_DiscardNewPer",
        "MaxMsgsPer_MaxBytes_DiscardNewPer"])
def test_store_discard_new(new_store, limits, error):
    # TestStoreDiscardNew: only the leader refuses; followers (no check) always store.
    ms = new_store(subjects=["foo"], discard=DISCARD_NEW, **limits)
    ts = 1_000
    expected = 1

    def require_state():
        state = ms.state()
        assert (state.msgs, state.first_seq, state.last_seq) == (1, expected, expected)

    ms.store_msg("foo")
    if error is None:
        ms.store_raw(0, ts, "foo", discard_new_check=True)
        expected += 1
    else:
        with pytest.raises(error):
            ms.store_raw(0, ts, "foo", discard_new_check=True)
    require_state()

    ms.store_raw(0, ts, "foo", discard_new_check=False)
    expected += 1
    if ms.cfg.max_msgs_per_subject > 0:
        require_state()
    else:
        # Discard new never removes old messages to make room.
        state = ms.state()
        assert (state.msgs, state.first_seq, state.last_seq) == (2, expected - 1, expected)


def test_store_discard_new_per_subject_allows_rollup(new_store):
    ms = new_store(discard=DISCARD_NEW, max_msgs_per_subject=1, discard_new_per_subject=True)
    ms.store_msg("kv.a")
    with pytest.raises(ErrMaxMsgsPerSubject):
        ms.store_msg("kv.a")
    ms.store_msg("kv.a", b"NATS/1.0\r\nNats-Rollup: sub\r\n\r\n")
    assert ms.subjects_state() == {"kv.a": SimpleState(1, 2, 2)}


def test_store_max_msgs_per_subject(new_store):
    ms = new_store(max_msgs_per_subject=2)
    fill(ms, ["a", "b", "a", "a", "b", "a", "c"])
    assert ms.subjects_state() == {"a": SimpleState(2, 4, 6), "b": SimpleState(2, 2, 5),
                                   "c": SimpleState(1, 7, 7)}
    state = ms.state(deleted=True)
    assert (state.msgs, state.first_seq, state.num_deleted, state.deleted) == (5, 2, 1, (3,))


def test_store_update_max_msgs_per_subject(new_store):
    # TestMemStoreUpdateMaxMsgsPerSubject
    ms = new_store(subjects=["foo"], max_msgs_per_subject=10)
    ms.update_config(StoreConfig(storage=ms.cfg.storage, subjects=["foo"],
                                 max_msgs_per_subject=50))
    fill(ms, ["foo"] * 22)
    assert ms.subjects_state("foo")["foo"].msgs == 22
    ms.update_config(StoreConfig(storage=ms.cfg.storage, subjects=["foo"],
                                 max_msgs_per_subject=10))
    assert ms.subjects_state("foo")["foo"].msgs == 10


def test_store_max_msgs_per_update_bug(new_store):
    # TestStoreMaxMsgsPerUpdateBug: unlimited -> 1 enforces at once.
    ms = new_store(subjects=["foo"])
    fill(ms, ["foo"] * 5)
    ms.update_config(StoreConfig(storage=ms.cfg.storage, subjects=["foo"],
                                 max_msgs_per_subject=1))
    state = ms.state()
    assert (state.msgs, state.first_seq, state.last_seq) == (1, 5, 5)
    assert StoreConfig(max_msgs_per_subject=-2).max_msgs_per_subject == -1


def test_store_max_msgs_per_update_to_one_remove_newest(new_store):
    # TestStoreMaxMsgsPerUpdateToOneRemoveNewest: the subject's last was removed (stale last).
    ms = new_store(subjects=["foo.*"])
    ms.store_msg("foo.0")
    fill(ms, [f"foo.{i}" for i in range(1, 10)])
    nseq, _ = ms.store_msg("foo.0")
    fill(ms, [f"foo.{i}" for i in range(1, 10)])
    lseq, _ = ms.store_msg("foo.0")
    assert ms.remove_msg(lseq)
    ms.update_config(StoreConfig(storage=ms.cfg.storage, subjects=["foo.*"],
                                 max_msgs_per_subject=1))
    assert ms.subjects_state("foo.0")["foo.0"] == SimpleState(1, nseq, nseq)
    assert ms.load_last_msg("foo.0").seq == nseq
    assert ms.load_next_msg("foo.0", False, 0)[1] == nseq


def test_store_max_msg_size(new_store):
    ms = new_store(max_msg_size=10)
    ms.store_msg("foo", b"", bytes(10))
    with pytest.raises(ErrMsgTooLarge):
        ms.store_msg("foo", b"NATS/1.0\r\n\r\n", bytes(1))
    # Replicated copies are not re-checked, as in Go.
    ms.store_raw(0, 5, "foo", b"", bytes(11))
    assert ms.state().msgs == 2


def test_store_update_config_enforces_limits(new_store):
    ms = new_store()
    fill(ms, ["foo"] * 10, payload=b"x")
    one = size_of(ms, "foo", b"", b"x")
    ms.update_config(StoreConfig(storage=ms.cfg.storage, max_msgs=6))
    assert ms.state().first_seq == 5
    ms.update_config(StoreConfig(storage=ms.cfg.storage, max_bytes=one * 3))
    state = ms.state()
    assert (state.msgs, state.first_seq) == (3, 8)
    with pytest.raises(ValueError):
        ms.update_config(StoreConfig(storage=MEMORY_STORAGE if ms.cfg.storage == FILE_STORAGE
                                     else FILE_STORAGE))


# =============================================================================================
# Age and TTL


def test_store_age_limit(new_store):
    # TestMemStoreAgeLimit, with the clock injected.
    max_age = 10 * SEC
    ms = new_store(max_age=max_age)
    assert ms.next_expiry() is None
    fill(ms, ["foo"] * 100, ts=1_000 * SEC)
    assert ms.next_expiry() == 1_000 * SEC + max_age
    assert ms.expire(1_000 * SEC + max_age - 1) == 0
    # Messages at ts <= now - max_age go: the first 50 here.
    assert ms.expire(1_000 * SEC + max_age + 49) == 50
    assert ms.state().first_seq == 51
    assert ms.next_expiry() == 1_000 * SEC + 50 + max_age
    assert ms.expire(2_000 * SEC) == 50
    state = ms.state()
    assert (state.msgs, state.bytes, state.first_seq, state.last_seq) == (0, 0, 101, 100)
    assert ms.next_expiry() is None
    # And again after more messages.
    fill(ms, ["foo"] * 100, ts=3_000 * SEC)
    assert ms.expire(4_000 * SEC) == 100


def test_store_never_ttl_exempt_from_max_age(new_store):
    ms = new_store(max_age=SEC, allow_msg_ttl=True)
    ms.store_msg("foo", ts_ns=10 * SEC, ttl=-1)
    ms.store_msg("foo", ts_ns=10 * SEC)
    assert ms.next_expiry() == 11 * SEC
    assert ms.expire(100 * SEC) == 1
    assert ms.load_msg(1).seq == 1
    assert ms.next_expiry() is None


def test_store_message_ttl(new_store):
    # TestMemStoreMessageTTL
    ms = new_store(subjects=["test"], allow_msg_ttl=True)
    for _ in range(10):
        ms.store_msg("test", ts_ns=50 * SEC, ttl=1)
    state = ms.state()
    assert (state.first_seq, state.last_seq, state.msgs) == (1, 10, 10)
    assert ms.next_expiry() == 51 * SEC
    assert ms.expire(51 * SEC - 1) == 0
    assert ms.expire(52 * SEC) == 10
    state = ms.state()
    assert (state.first_seq, state.last_seq, state.msgs) == (11, 10, 0)
    assert ms.next_expiry() is None


def test_store_ttl_removed_message_leaves_no_expiry(new_store):
    ms = new_store(allow_msg_ttl=True)
    ms.store_msg("a", ts_ns=SEC, ttl=5)
    ms.store_msg("b", ts_ns=SEC, ttl=9)
    ms.remove_msg(1)
    assert ms.next_expiry() == 10 * SEC
    ms.purge()
    assert ms.next_expiry() is None


def test_store_update_config_ttl_state(new_store):
    # TestStoreUpdateConfigTTLState
    ms = new_store(subjects=["foo"])
    seq, _ = ms.store_msg("foo", ts_ns=SEC, ttl=1)
    assert ms.expire(10 * SEC) == 0
    ms.load_msg(seq)
    ms.update_config(StoreConfig(storage=ms.cfg.storage, subjects=["foo"], allow_msg_ttl=True),
                     now_ns=10 * SEC)
    # Enabling TTLs picks up the message stored before.
    with pytest.raises(ErrStoreMsgNotFound):
        ms.load_msg(seq)
    seq, _ = ms.store_msg("foo", ts_ns=20 * SEC, ttl=1)
    assert ms.expire(30 * SEC) == 1
    ms.update_config(StoreConfig(storage=ms.cfg.storage, subjects=["foo"]))
    seq, _ = ms.store_msg("foo", ts_ns=40 * SEC, ttl=1)
    assert ms.expire(50 * SEC) == 0
    ms.load_msg(seq)


# =============================================================================================
# Purge, compact, truncate, remove


def test_store_purge(new_store):
    # TestMemStorePurge, TestMemStorePurgeLeaksDmap
    ms = new_store()
    fill(ms, ["foo"] * 10)
    for seq in range(2, 10):
        ms.remove_msg(seq)
    assert ms.state().num_deleted == 8
    assert ms.purge() == 2
    state = ms.state(deleted=True)
    assert (state.msgs, state.bytes, state.first_seq, state.last_seq) == (0, 0, 11, 10)
    assert (state.num_deleted, state.deleted, state.num_subjects) == (0, (), 0)
    assert ms.store_msg("foo")[0] == 11


def test_store_purge_ex_zero(new_store):
    # TestStorePurgeExZero (nats-server#6709)
    ms = new_store(subjects=["foo"])
    ms.purge()
    assert (ms.state().first_seq, ms.state().last_seq) == (1, 0)
    ms.purge_ex("", 0, 0)
    assert (ms.state().first_seq, ms.state().last_seq) == (1, 0)


def test_store_purge_ex_with_subject(new_store):
    # TestMemStorePurgeExWithSubject
    ms = new_store()
    fill(ms, ["foo"] * 100)
    assert ms.purge_ex("foo", 0, 0) == 100
    assert ms.state().msgs == 0


@pytest.mark.parametrize("subject, keep", [("", 0), (">", 0), ("foo", 0), ("", 3), ("foo", 3)])
def test_store_purge_ex_sequence_one(new_store, subject, keep):
    # TestStorePurgeExSequenceOne: "up to but not including 1" purges nothing.
    ms = new_store(subjects=["foo", "bar"])
    fill(ms, ["foo", "bar"] * 5)
    before = ms.state()
    assert ms.purge_ex(subject, 1, keep) == 0
    assert ms.state() == before


def test_store_purge_ex_wildcard_keep_and_seq(new_store):
    ms = new_store()
    fill(ms, ["orders.eu.1", "orders.us.1", "orders.eu.2", "stock.a", "orders.eu.1",
              "orders.us.2", "stock.b", "orders.eu.2"])
    # Wildcard with keep: of the 4 "orders.eu.*" (1, 3, 5, 8) the newest 2 stay.
    assert ms.purge_ex("orders.eu.*", 0, 2) == 2
    assert sorted(ms.subjects_totals("orders.eu.*").items()) == [("orders.eu.1", 1),
                                                                 ("orders.eu.2", 1)]
    # Up to (not including) seq 6 for "orders.>": removes 2 and 5.
    assert ms.purge_ex("orders.>", 6, 0) == 2
    assert ms.subjects_totals("orders.>") == {"orders.us.2": 1, "orders.eu.2": 1}
    # Full wildcard with keep keeps the newest messages of the whole stream.
    assert ms.purge_ex(">", 0, 2) == 2
    assert [ms.load_msg(s).subject for s in (7, 8)] == ["stock.b", "orders.eu.2"]
    assert ms.state().msgs == 2


def test_store_purge_ex_keep_with_interior_deletes(new_store):
    # TestStorePurgeExKeepWithInteriorDeletes
    ms = new_store(subjects=["foo"])
    fill(ms, ["foo"] * 50)
    for seq in range(2, 51, 2):
        ms.remove_msg(seq)
    assert ms.state().msgs == 25
    assert ms.purge_ex("", 0, 5) == 20
    state = ms.state()
    assert (state.msgs, state.first_seq, state.last_seq) == (5, 41, 50)


def test_store_purge_ex_with_deleted_msgs(new_store):
    # TestMemStorePurgeExWithDeletedMsgs
    ms = new_store(subjects=["foo"])
    fill(ms, ["foo"] * 10)
    ms.remove_msg(2)
    ms.remove_msg(9)
    assert ms.purge_ex("", 9, 0) == 7
    state = ms.state()
    assert (state.first_seq, state.last_seq, state.msgs) == (10, 10, 1)


def test_store_compact(new_store):
    # TestMemStoreCompact
    ms = new_store()
    fill(ms, ["foo"] * 10)
    assert ms.compact(6) == 5
    state = ms.state()
    assert (state.msgs, state.first_seq) == (5, 6)
    # Past the end: everything goes and the next message gets that sequence.
    assert ms.compact(100) == 5
    state = ms.state()
    assert (state.first_seq, state.last_seq, state.msgs) == (100, 99, 0)
    assert ms.store_msg("foo")[0] == 100


@pytest.mark.parametrize("cseq", [2, 3, 4])
def test_store_compact_cleans_up_dmap(new_store, cseq):
    # TestStoreCompactCleansUpDmap
    ms = new_store(subjects=["foo"])
    fill(ms, ["foo"] * 3)
    ms.remove_msg(2)
    assert ms.state().num_deleted == 1
    ms.compact(cseq)
    state = ms.state(deleted=True)
    assert (state.num_deleted, state.deleted) == (0, ())
    assert (state.first_seq, state.last_seq) == (max(3, cseq), 3)


def test_store_compact_fully_deleted_range(new_store):
    # TestStoreCompactFullyDeletedRange
    ms = new_store(subjects=["foo"])
    fill(ms, ["foo"] * 3)
    ms.remove_msg(2)
    ms.remove_msg(3)
    ms.compact(2)
    state = ms.state()
    assert (state.msgs, state.last_seq, state.first_seq, state.first_ts) == (0, 3, 4, 0)


def test_store_compact_multi_block_subject_info(new_store):
    # TestMemStoreStreamCompactMultiBlockSubjectInfo
    ms = new_store(subjects=["foo.*"])
    fill(ms, [f"foo.{i}" for i in range(1000)])
    assert ms.compact(501) == 500
    assert ms.state().num_subjects == 500


def test_store_stream_truncate(new_store):
    # TestMemStoreStreamTruncate
    ms = new_store()
    fill(ms, ["foo"] * 49 + ["bar"] * 51)
    ms.truncate(50)
    assert ms.state().msgs == 50
    for seq in (10, 20, 30, 40):
        ms.remove_msg(seq)
    ms.truncate(25)
    state = ms.state(deleted=True)
    assert (state.msgs, state.num_subjects, state.deleted) == (23, 1, (10, 20))
    assert ms.load_msg(25).seq == 25
    assert ms.state().last_ts == ms.load_msg(25).ts


def test_store_stream_truncate_reset(new_store):
    # TestMemStoreStreamTruncateReset
    ms = new_store(subjects=["foo"])
    fill(ms, ["foo"] * 1000, b"Hello World")
    ms.truncate(0)
    state = ms.state()
    assert (state.msgs, state.bytes, state.first_seq, state.last_seq) == (0, 0, 0, 0)
    assert (state.num_subjects, state.num_deleted) == (0, 0)
    fill(ms, ["foo"] * 1000, b"Hello World")
    state = ms.state()
    assert (state.msgs, state.first_seq, state.last_seq) == (1000, 1, 1000)
    assert state.bytes == 1000 * size_of(ms, "foo", b"", b"Hello World")
    assert (state.num_subjects, state.num_deleted) == (1, 0)


@pytest.mark.parametrize("tseq", [0, 1])
def test_store_truncate_cleans_up_dmap(new_store, tseq):
    # TestStoreTruncateCleansUpDmap
    ms = new_store(subjects=["foo"])
    fill(ms, ["foo"] * 3)
    ms.remove_msg(2)
    ms.truncate(tseq)
    state = ms.state(deleted=True)
    assert state.deleted == ()
    assert (state.first_seq, state.last_seq) == (min(1, tseq), tseq)


def test_store_stream_state_deleted(new_store):
    # TestMemStoreStreamStateDeleted
    ms = new_store()
    for i in range(1, 11):
        ms.store_msg("foo", b"", b"[%08d] Hello World!" % i)
    assert ms.state(deleted=True).deleted == ()
    expected = list(range(2, 10, 2))
    for seq in expected:
        assert ms.remove_msg(seq)
    assert ms.state(deleted=True).deleted == tuple(expected)
    ms.remove_msg(1)
    ms.remove_msg(3)
    state = ms.state(deleted=True)
    assert state.deleted == tuple(expected[2:])
    assert (state.first_seq, state.num_deleted) == (5, 2)
    assert not ms.remove_msg(3)
    assert not ms.remove_msg(99)


def test_store_delete_all_first_sequence_check(new_store):
    # TestMemStoreDeleteAllFirstSequenceCheck
    ms = new_store(subjects=["foo"])
    fill(ms, ["foo"] * 10)
    for seq in range(1, 11):
        ms.remove_msg(seq)
    state = ms.state()
    assert (state.first_seq, state.last_seq, state.msgs) == (11, 10, 0)


def test_store_delete_blocks(new_store):
    # TestMemStoreDeleteBlocks: num_deleted agrees with the listed interior deletes.
    ms = new_store(subjects=["*"])
    fill(ms, ["A"] * 2000)
    rnd = random.Random(7)
    for seq in rnd.sample(range(1, 2001), 1000):
        ms.remove_msg(seq)
    state = ms.state(deleted=True)
    assert state.num_deleted == len(state.deleted)
    assert state.msgs == 1000


# =============================================================================================
# Sequences and skips


def test_store_initial_first_seq(new_store):
    # TestMemStoreInitialFirstSeq
    ms = new_store(first_seq=1000)
    assert ms.state().first_seq == 1000
    assert ms.store_msg("A", b"", b"OK")[0] == 1000
    assert ms.store_msg("B", b"", b"OK")[0] == 1001
    state = ms.state()
    assert (state.msgs, state.first_seq, state.last_seq) == (2, 1000, 1001)


def test_store_skip_msgs(new_store):
    # TestMemStoreSkipMsgs
    ms = new_store(subjects=["*"])
    with pytest.raises(ErrSequenceMismatch):
        ms.skip_msgs(10, 100)
    ms.skip_msgs(1, 100)
    state = ms.state()
    assert (state.first_seq, state.last_seq) == (101, 100)
    ms.skip_msgs(101, 100_000)
    state = ms.state()
    assert (state.first_seq, state.last_seq) == (100_101, 100_100)

    ms = new_store(subjects=["*"])
    ms.store_msg("foo")
    ms.skip_msgs(2, 10)
    state = ms.state(deleted=True)
    assert (state.first_seq, state.last_seq, state.msgs) == (1, 11, 1)
    assert (state.num_deleted, len(state.deleted)) == (10, 10)
    assert ms.skip_msg() == 12


def test_store_skip_msgs_carry_forward_last_time(new_store):
    # TestStoreSkipMsgsCarryForwardLastTime / ...FromEmpty
    ms = new_store(subjects=["foo"])
    old = 1_000 * SEC
    ms.store_raw(1, old, "foo")
    ms.skip_msgs(2, 10, ts_ns=5_000 * SEC)
    assert (ms.state().last_seq, ms.state().last_ts) == (11, old)
    assert ms.skip_msg(12, ts_ns=6_000 * SEC) == 12
    assert ms.state().last_ts == old
    newer = old + 15 * SEC
    ms.store_raw(13, newer, "foo")
    assert ms.get_seq_from_time(old) == 1
    assert ms.get_seq_from_time(old + 5 * SEC) == 13
    assert ms.get_seq_from_time(newer) == 13
    assert ms.get_seq_from_time(newer + 1) == 14
    # No interest: the time moves.
    ms.skip_msg(0, ts_ns=7_000 * SEC, no_interest=True)
    assert ms.state().last_ts == 7_000 * SEC

    empty = new_store()
    assert empty.skip_msg(0, ts_ns=77) == 1
    assert empty.skip_msg(0, ts_ns=99) == 2
    state = empty.state()
    assert (state.last_seq, state.last_ts, state.first_seq) == (2, 77, 3)


def test_store_get_seq_from_time(new_store):
    # TestMemStoreGetSeqFromTimeWithLastDeleted, TestStoreGetSeqFromTimeWithInteriorDeletesGap
    ms = new_store(subjects=["*"])
    with ms.batch():
        for i in range(1, 1001):
            ms.store_msg("A", b"", b"OK", ts_ns=i * SEC + (100 * SEC if i > 500 else 0))
    for seq in range(900, 1001):
        ms.remove_msg(seq)
    assert ms.get_seq_from_time(550 * SEC) == 501
    for seq in range(400, 700):
        ms.remove_msg(seq)
    assert ms.get_seq_from_time(450 * SEC) == 700
    assert ms.get_seq_from_time(0) == 1
    assert ms.get_seq_from_time(10_000 * SEC) == 1001


def test_store_subject_for_seq(new_store):
    # TestMemStoreSubjectForSeq
    ms = new_store(subjects=["foo.>"])
    ms.store_msg("foo.bar")
    with pytest.raises(ErrStoreMsgNotFound):
        ms.subject_for_seq(0)
    assert ms.subject_for_seq(1) == "foo.bar"
    with pytest.raises(ErrStoreMsgNotFound):
        ms.subject_for_seq(2)


# =============================================================================================
# Loading


def test_store_load_next_msg_wildcard_start_before_first_match(new_store):
    # TestStoreLoadNextMsgWildcardStartBeforeFirstMatch
    ms = new_store(subjects=["bar.*", "foo.*"])
    fill(ms, [f"bar.{i}" for i in range(100)])
    assert ms.store_msg("foo.1")[0] == 101
    sm, nseq = ms.load_next_msg("foo.*", True, 1)
    assert (sm.subject, nseq) == ("foo.1", 101)
    with pytest.raises(ErrStoreEOF):
        ms.load_next_msg("foo.*", True, nseq + 1)


def test_store_load_next_msg(new_store):
    # TestMemStoreNextWildcardMatch / TestMemStoreNextLiteralMatch
    ms = new_store()
    fill(ms, ["foo.bar.a", "foo.baz.b", "foo.bar.c", "zzz", "foo.bar.a", "foo.baz.b"])
    assert ms.load_next_msg("", None, 0)[1] == 1
    assert ms.load_next_msg(">", None, 4)[1] == 4
    assert ms.load_next_msg("foo.bar.a", False, 2)[1] == 5
    assert ms.load_next_msg("foo.*.b", True, 3)[1] == 6
    assert ms.load_next_msg("foo.>", True, 4)[1] == 5
    assert ms.load_next_msg("*.bar.*", True, 0)[1] == 1
    ms.remove_msg(5)
    with pytest.raises(ErrStoreEOF):
        ms.load_next_msg("foo.bar.a", False, 2)
    with pytest.raises(ErrStoreEOF):
        ms.load_next_msg("nope", False, 0)
    with pytest.raises(ErrStoreEOF):
        ms.load_next_msg("", None, 7)


def test_store_load_next_msg_many_subjects(new_store):
    # Past the linear-scan threshold the wildcard path walks messages instead of subjects.
    ms = new_store()
    fill(ms, [f"s.{i}" for i in range(400)] + ["t.x", "s.0"])
    assert ms.load_next_msg("t.*", True, 0)[1] == 401
    assert ms.load_next_msg("s.*", True, 401)[1] == 402


def test_store_msg_load_prev_msg(new_store):
    # TestStoreMsgLoadPrevMsg
    ms = new_store(subjects=["foo.*", "bar.*"])
    fill(ms, ["foo.1", "bar.1", "foo.2", "bar.2", "foo.3"], b"ZZZ")
    sm, seq = ms.load_prev_msg("", False, 5)
    assert (sm.subject, seq) == ("foo.3", 5)
    sm, seq = ms.load_prev_msg("foo.2", False, 5)
    assert (sm.subject, seq) == ("foo.2", 3)
    sm, seq = ms.load_prev_msg("foo.*", True, 5)
    assert (sm.subject, seq) == ("foo.3", 5)
    assert ms.load_prev_msg("bar.*", True, 3)[1] == 2
    with pytest.raises(ErrStoreEOF):
        ms.load_prev_msg("baz.*", True, 5)
    got, seq = [], 5
    while True:
        try:
            _sm, seq = ms.load_prev_msg(">", True, seq)
        except ErrStoreEOF:
            break
        got.append(seq)
        seq -= 1
    assert got == [5, 4, 3, 2, 1]


def test_store_load_last_msg(new_store):
    ms = new_store()
    fill(ms, ["a.1", "b.1", "a.2", "a.1", "b.2"])
    assert ms.load_last_msg("a.1").seq == 4
    assert ms.load_last_msg("a.*").seq == 4
    assert ms.load_last_msg("b.>").seq == 5
    assert ms.load_last_msg("").seq == 5
    ms.remove_msg(5)
    assert ms.load_last_msg(">").seq == 4
    assert ms.load_last_msg("b.*").seq == 2
    with pytest.raises(ErrStoreMsgNotFound):
        ms.load_last_msg("c")


# =============================================================================================
# Subject state and pending counts


def test_store_subjects_totals(new_store):
    # TestMemStoreSubjectsTotals
    ms = new_store(subjects=["*.*"])
    rnd = random.Random(1)
    fmap, bmap, subjects = {}, {}, []
    for _ in range(3000):
        prefix, m = ("foo", fmap) if rnd.randrange(2) == 0 else ("bar", bmap)
        dt = rnd.randrange(100)
        m[dt] = m.get(dt, 0) + 1
        subjects.append(f"{prefix}.{dt}")
    fill(ms, subjects)
    for dt, total in fmap.items():
        assert ms.subjects_totals(f"foo.{dt}") == {f"foo.{dt}": total}
    st_foo = ms.subjects_totals("foo.*")
    assert len(st_foo) == len(fmap) and sum(st_foo.values()) == sum(fmap.values())
    st_bar = ms.subjects_totals("bar.*")
    assert len(st_bar) == len(bmap) and sum(st_bar.values()) == sum(bmap.values())
    assert len(ms.subjects_totals("*.*")) == len(fmap) + len(bmap)


def test_store_subjects_state(new_store):
    ms = new_store()
    fill(ms, ["a.1", "a.2", "b.1", "a.1", "a.2", "a.1"])
    ms.remove_msg(1)
    ms.remove_msg(5)
    assert ms.subjects_state("a.*") == {"a.1": SimpleState(2, 4, 6), "a.2": SimpleState(1, 2, 2)}
    assert ms.subjects_state("b.1") == {"b.1": SimpleState(1, 3, 3)}
    assert ms.subjects_state("c.*") == {}
    assert ms.all_last_seqs() == [2, 3, 6]


def _stored(ms):
    """``[(seq, subject)]`` of every stored message, by loading them one by one."""
    out = []
    state = ms.state()
    for seq in range(state.first_seq, state.last_seq + 1):
        try:
            out.append((seq, ms.load_msg(seq).subject))
        except ErrStoreMsgNotFound:
            pass
    return out


def _brute_state(stored, sseq, flt, last_only):
    msgs = first = last = 0
    seen = set()
    for seq, subject in reversed(stored) if last_only else stored:
        if seq < sseq or not subject_matches(subject, flt) or subject in seen:
            continue
        if last_only:
            seen.add(subject)
        msgs += 1
        first = seq if not first or seq < first else first
        last = max(last, seq)
    return SimpleState(msgs, first, last)


def test_store_num_pending(new_store):
    # TestMemStoreNumPending, smaller, with interior deletes added.
    ms = new_store(subjects=["*.*.*.*"])
    rnd = random.Random(3)
    tokens = ["foo", "bar", "baz"]
    fill(ms, [".".join(rnd.choice(tokens) for _ in range(4)) for _ in range(3000)])
    for seq in rnd.sample(range(1, 3001), 300):
        ms.remove_msg(seq)
    last = ms.state().last_seq
    stored = _stored(ms)
    for flt in ["foo.>", "*.bar.>", "foo.bar.*.baz", "*.foo.bar.*", "foo.foo.bar.baz", ">"]:
        for start in [0, 1, 2, 200, 444, 555, 1222, 1888, 2345, 2999]:
            np, valid = ms.num_pending(start, flt, False)
            fs = ms.filtered_state(start, flt)
            assert valid == last
            assert fs == _brute_state(stored, start, flt, False), (flt, start)
            assert np == fs.msgs
            np_last, _ = ms.num_pending(start, flt, True)
            assert np_last == _brute_state(stored, start, flt, True).msgs, (flt, start)


def test_store_num_pending_bug(new_store):
    # TestMemStoreNumPendingBug
    ms = new_store(subjects=["foo.*"])
    subjects = []
    for subj in ["foo.foo", "foo.bar", "foo.baz", "foo.zzz"]:
        subjects += ["foo.aaa", subj, subj]
    fill(ms, subjects)
    assert ms.num_pending(4, "foo.*", False)[0] == 9


def test_store_num_pending_last_per_subject_exclude_overcount(new_store):
    # TestStoreNumPendingLastPerSubjectExcludeOvercount
    ms = new_store(subjects=["foo.*"])
    fill(ms, ["foo.A"] * 10 + ["foo.B", "foo.C"])
    ms.skip_msgs(13, 87)
    ms.store_msg("foo.B")
    ms.skip_msgs(101, 899)
    ms.store_msg("foo.C")
    assert ms.num_pending(13, "foo.*", True)[0] == 2


def test_store_multi_last_seqs(new_store):
    # TestMemStoreMultiLastSeqs
    ms = new_store(subjects=["foo.*", "bar.*"])
    fill(ms, ["foo.foo", "foo.bar", "foo.baz"] * 33 + ["bar.foo", "bar.bar", "bar.baz"] * 33,
         b"abc")
    assert ms.multi_last_seqs(["foo.*"], 3) == [1, 2, 3]
    assert ms.multi_last_seqs(["foo.*"], 0) == [97, 98, 99]
    assert ms.multi_last_seqs(["bar.*"], 0) == [196, 197, 198]
    assert ms.multi_last_seqs(["bar.*"], 99) == []
    assert ms.multi_last_seqs(["foo.foo", "foo.bar", "foo.baz"], 3) == [1, 2, 3]
    assert ms.multi_last_seqs(["foo.foo", "foo.bar", "foo.baz"], 0) == [97, 98, 99]
    assert ms.multi_last_seqs(["bar.foo", "bar.bar", "bar.baz"], 99) == []
    assert ms.multi_last_seqs(["foo.foo"], 3) == [1]
    assert ms.multi_last_seqs(["foo.*", "foo.bar"], 3) == [1, 2, 3]
    assert ms.multi_last_seqs(["bar.>", "bar.bar", "bar.baz"], 0) == [196, 197, 198]
    assert ms.multi_last_seqs([">"], 0) == [97, 98, 99, 196, 197, 198]
    assert ms.multi_last_seqs([">"], 99) == [97, 98, 99]


def test_store_multi_last_seqs_max_allowed(new_store):
    # TestMemStoreMultiLastSeqsMaxAllowed
    ms = new_store(subjects=["foo.*"])
    fill(ms, [f"foo.{i}" for i in range(1, 101)])
    with pytest.raises(ErrTooManyResults):
        ms.multi_last_seqs(["foo.*"], 0, 10)


# =============================================================================================
# Consumers


def test_consumer_explicit_acks(new_store):
    ms = new_store()
    o = ms.consumer_store("dur", ConsumerStoreConfig(ACK_EXPLICIT))
    assert not o.has_state()
    assert ms.state().consumer_count == 1
    o.update_delivered(1, 1, 1, 10)
    o.update_delivered(2, 2, 1, 11)
    o.update_delivered(3, 5, 1, 12)
    s = o.state()
    assert (s.delivered, s.ack_floor) == (SequencePair(3, 5), SequencePair(0, 0))
    assert s.pending == {1: Pending(1, 10), 2: Pending(2, 11), 5: Pending(3, 12)}
    o.update_acks(1, 1)
    assert o.state().ack_floor == SequencePair(1, 1)
    o.update_acks(3, 5)
    assert o.state().ack_floor == SequencePair(1, 1)
    o.update_acks(2, 2)
    s = o.state()
    assert (s.pending, s.ack_floor) == ({}, SequencePair(3, 5))
    # A replayed old ack is ignored; an ack of something never delivered is refused.
    o.update_acks(1, 1)
    o.update_delivered(4, 6, 1, 20)
    with pytest.raises(ErrStoreMsgNotFound):
        o.update_acks(9, 9)
    # A redelivery keeps the original consumer sequence and counts the redelivery.
    o.update_delivered(5, 6, 2, 30)
    s = o.state()
    assert (s.pending, s.redelivered, s.delivered) == ({6: Pending(4, 30)}, {6: 1},
                                                       SequencePair(5, 6))
    o.update_acks(5, 6)
    s = o.state()
    assert (s.pending, s.redelivered, s.ack_floor) == ({}, {}, SequencePair(5, 6))


def test_consumer_ack_floor_stops_below_oldest_pending(new_store):
    ms = new_store()
    o = ms.consumer_store("c")
    for d, s in [(1, 10), (2, 11), (3, 12), (4, 13)]:
        o.update_delivered(d, s, 1, 0)
    o.update_acks(2, 11)
    assert o.state().ack_floor == SequencePair(0, 0)
    o.update_acks(1, 10)
    # Everything up to stream 11 is acked; delivery 3 (stream 12) is the oldest pending.
    assert o.state().ack_floor == SequencePair(2, 11)


def test_consumer_ack_all_and_none(new_store):
    ms = new_store()
    o = ms.consumer_store("all", ConsumerStoreConfig(ACK_ALL))
    for d in range(1, 6):
        o.update_delivered(d, d, 1, 0)
    o.update_delivered(6, 2, 2, 0)
    o.update_acks(3, 3)
    s = o.state()
    assert (s.ack_floor, sorted(s.pending), s.redelivered) == (SequencePair(3, 3), [4, 5], {})

    n = ms.consumer_store("none", ConsumerStoreConfig(ACK_NONE))
    n.update_delivered(1, 7, 1, 0)
    s = n.state()
    assert (s.delivered, s.ack_floor, s.pending) == (SequencePair(1, 7), SequencePair(1, 7), {})
    with pytest.raises(ErrNoAckPolicy):
        n.update_delivered(2, 7, 2, 0)
    with pytest.raises(ErrNoAckPolicy):
        n.update_acks(1, 7)
    assert ms.state().consumer_count == 2


def test_consumer_max_deliver_and_redelivered_below(new_store):
    ms = new_store()
    o = ms.consumer_store("c", ConsumerStoreConfig(ACK_EXPLICIT, max_deliver=2))
    o.update_delivered(1, 1, 1, 0)
    o.update_delivered(2, 2, 1, 0)
    o.update_delivered(3, 1, 3, 0)  # over max_deliver: no longer pending
    o.update_delivered(4, 2, 2, 0)
    s = o.state()
    assert (sorted(s.pending), s.redelivered) == ([2], {1: 2, 2: 1})
    o.remove_redelivered_below(2)
    assert o.state().redelivered == {2: 1}


def test_consumer_update_and_starting(new_store):
    ms = new_store()
    o = ms.consumer_store("c")
    good = ConsumerState(SequencePair(10, 20), SequencePair(5, 15), {18: Pending(8, 1)}, {18: 2})
    o.update(good)
    assert o.state() == good
    with pytest.raises(ErrStoreOldUpdate):
        o.update(ConsumerState(SequencePair(9, 20), SequencePair(5, 15)))
    with pytest.raises(ErrBadConsumerState):
        o.update(ConsumerState(SequencePair(10, 20), SequencePair(11, 15)))
    with pytest.raises(ErrBadConsumerState):
        o.update(ConsumerState(SequencePair(10, 20), SequencePair(5, 15), {30: Pending(1, 1)}))
    o.force_update(ConsumerState(SequencePair(1, 1), SequencePair(1, 1)))
    assert o.state().delivered == SequencePair(1, 1)
    o.reset(100)
    assert o.state() == ConsumerState(SequencePair(0, 100), SequencePair(0, 100))
    o.update_starting(150)
    assert o.state().delivered == SequencePair(0, 150)
    assert o.has_state()
    o.stop()
    assert ms.state().consumer_count == 0
    with pytest.raises(ErrStoreClosed):
        o.state()


# =============================================================================================
# LMDB: persistence, batches, map growth


def test_lmdb_reopen_recovers_state(tmp_path):
    cfg = StoreConfig(subjects=["kv.>"], max_msgs_per_subject=2)
    with LmdbStore(tmp_path, cfg, sync=False) as ms:
        fill(ms, ["kv.a", "kv.b", "kv.a", "kv.a", "kv.c"], b"v")
        ms.remove_msg(2)
        ms.skip_msg(ts_ns=1)
        o = ms.consumer_store("d")
        o.update_delivered(1, 3, 1, 5)
        ms.consumer_store("gone").delete()
        before = (ms.state(deleted=True), ms.subjects_state())
    with LmdbStore(tmp_path, sync=False) as ms:
        assert ms.cfg == cfg
        # The consumer handles of the old process are gone until asked for again.
        assert ms.state(deleted=True) == attrs.evolve(before[0], consumer_count=0)
        assert ms.subjects_state() == before[1]
        assert ms.consumer_names() == ["d"]
        o = ms.consumer_store("d")
        assert o.state().pending == {3: Pending(1, 5)}
        assert ms.store_msg("kv.a")[0] == 7
        assert ms.subjects_state("kv.a") == {"kv.a": SimpleState(2, 4, 7)}


def test_lmdb_reopen_with_new_config_applies_limits(tmp_path):
    with LmdbStore(tmp_path, StoreConfig(), sync=False) as ms:
        fill(ms, ["a"] * 10)
    with LmdbStore(tmp_path, StoreConfig(max_msgs=4), sync=False) as ms:
        assert (ms.state().msgs, ms.state().first_seq) == (4, 7)
    with LmdbStore(tmp_path, sync=False) as ms:
        assert ms.cfg.max_msgs == 4


def test_lmdb_first_seq_only_on_create(tmp_path):
    with LmdbStore(tmp_path, StoreConfig(first_seq=50), sync=False) as ms:
        assert ms.store_msg("a")[0] == 50
    with LmdbStore(tmp_path, sync=False) as ms:
        assert ms.store_msg("a")[0] == 51


def test_lmdb_batch_commit_and_abort(tmp_path):
    with LmdbStore(tmp_path, StoreConfig(discard=DISCARD_NEW, max_msgs=5), sync=False) as ms:
        seen = []
        ms.register_storage_updates(lambda *a: seen.append(a[2]))
        ms.begin_batch()
        for _ in range(3):
            ms.store_msg("a")
        # Reads inside the batch see its writes; callbacks wait for the commit.
        assert ms.state().msgs == 3 and ms.load_msg(3).seq == 3
        assert seen == []
        ms.commit_batch()
        assert seen == [1, 2, 3]
        # A refusal inside a batch leaves the rest of it intact.
        with ms.batch():
            ms.store_msg("a")
            ms.store_msg("a")
            with pytest.raises(ErrMaxMsgs):
                ms.store_msg("a")
        assert ms.state().msgs == 5
        ms.purge()
        ms.begin_batch()
        ms.store_msg("b")
        ms.consumer_store("c").update_delivered(1, 6, 1, 0)
        ms.abort_batch()
        state = ms.state()
        assert (state.msgs, state.last_seq, state.num_subjects) == (0, 5, 0)
        assert ms.consumer_store("c").state().delivered == SequencePair(0, 0)


def test_lmdb_map_grows(tmp_path):
    payload = bytes(range(256)) * 4
    with LmdbStore(tmp_path, sync=False, map_size=256 * 1024) as ms:
        for i in range(300):  # one transaction each
            ms.store_msg(f"a.{i % 7}", b"", payload)
        with ms.batch():  # and a batch that outgrows the map several times over
            for i in range(3000):
                ms.store_msg(f"b.{i % 5}", b"", payload)
            o = ms.consumer_store("c")
            o.update_delivered(1, 1, 1, 0)
        assert ms._env.info()["map_size"] > 4 * 1024 * 1024
        assert ms.state().msgs == 3300
        assert ms.load_msg(3300).payload == payload
        assert ms.subjects_totals("b.*") == {f"b.{i}": 600 for i in range(5)}
    with LmdbStore(tmp_path, sync=False) as ms:
        assert ms.state().msgs == 3300
        assert ms.consumer_store("c").state().delivered == SequencePair(1, 1)


def test_lmdb_long_and_binary_subjects(tmp_path):
    long_subject = "x." + "y" * 600
    raw = b"bin.\xff\xfe"
    with LmdbStore(tmp_path, sync=False) as ms:
        ms.store_msg(long_subject)
        ms.store_msg(raw)
        ms.store_msg(long_subject)
        assert ms.load_last_msg(long_subject).seq == 3
    with LmdbStore(tmp_path, sync=False) as ms:
        assert ms.subjects_totals() == {long_subject: 2, raw.decode("utf-8", "surrogateescape"): 1}
        assert ms.load_next_msg(long_subject, False, 2)[1] == 3
        assert ms.load_msg(2).subject.encode("utf-8", "surrogateescape") == raw


# =============================================================================================
# LMDB: other processes


def _fork(child):
    """Run ``child(go_fd)`` in a forked process before anything is opened; it reads one byte from
    ``go_fd`` per phase and returns a JSON-able value. Returns ``(pid, go_w, result_r)``."""
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(go_w)
            os.close(res_r)
            out = json.dumps(child(go_r)).encode()
            os.write(res_w, out)
        except BaseException as exc:  # report, never return into pytest
            os.write(res_w, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(res_w)
    return pid, go_w, res_r


def _collect(pid, res_r):
    chunks = []
    while True:
        b = os.read(res_r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(res_r)
    _, status = os.waitpid(pid, 0)
    return json.loads(b"".join(chunks)), status


def test_lmdb_forked_reader(tmp_path):
    path = str(tmp_path / "stream")

    def reader(go):
        os.read(go, 1)
        out = {}
        with LmdbReader(path) as rd:
            s = rd.state()
            out["state1"] = [s.msgs, s.first_seq, s.last_seq, s.num_deleted]
            out["msg5"] = rd.load_msg(5).payload.decode()
            out["last_b"] = rd.load_last_msg("orders.b").seq
            out["next_wc"] = rd.load_next_msg("orders.*", 3)[1]
            try:
                rd.load_msg(2)
            except ErrStoreMsgNotFound:
                out["missing"] = True
            os.read(go, 1)  # the writer has since grown the map and written more
            s = rd.state()
            out["state2"] = [s.msgs, s.last_seq]
            out["last_all"] = rd.load_last_msg().seq
            out["next_lit"] = rd.load_next_msg("orders.c", 0)[1]
        return out

    pid, go, res = _fork(reader)
    with LmdbStore(path, sync=False, map_size=128 * 1024) as ms:
        fill(ms, [f"orders.{c}" for c in "abab" + "ab" * 48], b"p")
        ms.remove_msg(2)
        os.write(go, b"1")
        with ms.batch():
            for _ in range(2000):
                ms.store_msg("orders.c", b"", bytes(200))
        os.write(go, b"2")
        out, status = _collect(pid, res)
    assert status == 0, out
    assert out == {"state1": [99, 1, 100, 1], "msg5": "p", "last_b": 100, "next_wc": 3,
                   "missing": True, "state2": [2099, 2100], "last_all": 2100, "next_lit": 101}


def test_lmdb_recovers_committed_messages_after_crash(tmp_path):
    path = str(tmp_path / "stream")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            ms = LmdbStore(path, StoreConfig(subjects=["crash.>"]))
            for i in range(1, 31):
                seq, _ = ms.store_msg(f"crash.{i % 3}", b"", b"m%d" % i)
                os.write(w, b"%d\n" % seq)  # reported only once the commit returned
            ms.begin_batch()
            for i in range(31, 51):
                ms.store_msg(f"crash.{i % 3}", b"", b"m%d" % i)
            os.write(w, b"batch\n")
        except BaseException:
            code = 1
        os._exit(code)  # no commit, no close: the process just dies
    os.close(w)
    reported = []
    with os.fdopen(r) as f:
        for line in f:
            reported.append(line.strip())
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert reported[-1] == "batch"
    committed = [int(x) for x in reported[:-1]]
    assert committed == list(range(1, 31))
    with LmdbStore(path) as ms:
        state = ms.state()
        assert (state.msgs, state.first_seq, state.last_seq) == (30, 1, 30)
        for seq in committed:
            sm = ms.load_msg(seq)
            assert (sm.subject, sm.payload) == (f"crash.{seq % 3}", b"m%d" % seq)
        assert ms.subjects_totals() == {"crash.0": 10, "crash.1": 10, "crash.2": 10}
        assert ms.store_msg("crash.0")[0] == 31


def test_lmdb_batches_are_atomic_under_sigkill(tmp_path):
    path = str(tmp_path / "stream")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            ms = LmdbStore(path, metasync=False)
            n = 0
            while True:
                with ms.batch():
                    for _ in range(10):
                        n += 1
                        ms.store_msg("k", b"", b"%d" % n)
                os.write(w, b"%d\n" % n)
        finally:
            os._exit(1)
    os.close(w)
    acked = 0
    with os.fdopen(r) as f:
        for line in f:
            acked = int(line)
            if acked >= 100:
                os.kill(pid, signal.SIGKILL)
                break
    os.waitpid(pid, 0)
    with LmdbStore(path) as ms:
        state = ms.state()
        # Every acknowledged batch is there, and no batch is there in part.
        assert state.last_seq >= acked and state.last_seq % 10 == 0
        assert (state.msgs, state.first_seq) == (state.last_seq, 1)
        assert [ms.load_msg(s).payload for s in (1, state.last_seq)] == \
               [b"1", b"%d" % state.last_seq]


# =============================================================================================
# SeqList and the differential state machine


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 400)), max_size=300))
@settings(max_examples=60, deadline=None)
def test_seqlist_matches_sorted_list(ops):
    SeqList.LOAD = 8
    try:
        sl, model, nxt = SeqList(), [], 1
        for add, x in ops:
            if add:
                nxt += x % 5 + 1
                sl.append(nxt)
                model.append(nxt)
            elif model:
                v = model[x % len(model)]
                assert sl.discard(v)
                model.remove(v)
            assert not sl.discard(10_000)
            probe = x % (nxt + 2)
            assert sl.ceil(probe) == next((v for v in model if v >= probe), None)
            assert sl.floor(probe) == next((v for v in reversed(model) if v <= probe), None)
            assert sl.rank(probe) == sum(1 for v in model if v < probe)
            lo, hi = sorted((probe, x % (nxt + 2)))
            assert list(sl.irange(lo, hi)) == [v for v in model if lo <= v <= hi]
            assert list(sl.irange(lo, hi, True)) == [v for v in reversed(model) if lo <= v <= hi]
        assert len(sl) == len(model)
    finally:
        SeqList.LOAD = 1024


SUBJECTS = ["a", "b", "c.x", "c.y", "d.x.1"]
FILTERS = ["", ">", "a", "c.*", "c.>", "*.x", "d.*.1", "zz"]


class StoreComparison(RuleBasedStateMachine):
    """The LMDB store (reopened now and then, writes grouped in batches at times) against the
    memory store: same results for every operation, and both consistent with their messages."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="natsx-storage-")
        self.cfg = StoreConfig(storage=FILE_STORAGE, max_msgs_per_subject=4, max_msgs=30,
                               max_age=50, allow_msg_ttl=True)
        self.mem = MemStore(self.cfg)
        self.lmdb = LmdbStore(self.dir, self.cfg, sync=False, map_size=64 * 1024)
        self.now = 1_000
        self.ttls: dict[int, int] = {}  # seq -> TTL it was stored with

    def view(self):
        """The memory store's messages, loaded one by one: the oracle's input."""
        state = self.mem.state()
        out = []
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                out.append(self.mem.load_msg(seq))
            except ErrStoreMsgNotFound:
                pass
        return out

    def teardown(self):
        self.lmdb.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def both(self, fn):
        outcomes = []
        for store in (self.mem, self.lmdb):
            try:
                outcomes.append(("ok", fn(store)))
            except StoreError as exc:
                outcomes.append(("err", type(exc).__name__))
        assert outcomes[0] == outcomes[1]
        return outcomes[0]

    @rule(subject=st.sampled_from(SUBJECTS), size=st.integers(0, 40),
          ttl=st.sampled_from([0, 0, 0, -1, 1, 3]), step=st.integers(0, 3))
    def store(self, subject, size, ttl, step):
        self.now += step
        outcome = self.both(lambda s: s.store_msg(subject, b"", bytes(size), ts_ns=self.now,
                                                  ttl=ttl))
        if outcome[0] == "ok":
            self.ttls[outcome[1][0]] = ttl

    def _store_all(self, store, subjects, now):
        for subj in subjects:
            try:
                self.ttls[store.store_msg(subj, b"", b"x", ts_ns=now)[0]] = 0
            except StoreError:
                pass  # a refusal inside a batch leaves the rest of the batch alone

    @rule(subjects=st.lists(st.sampled_from(SUBJECTS), min_size=1, max_size=8),
          abort=st.booleans())
    def batch(self, subjects, abort):
        self.now += 1
        if abort:
            # Only LMDB can take a batch back; nothing it did may remain.
            before = self.lmdb.state(deleted=True)
            self.lmdb.begin_batch()
            self._store_all(self.lmdb, subjects, self.now)
            self.lmdb.abort_batch()
            assert self.lmdb.state(deleted=True) == before
            return
        for store in (self.mem, self.lmdb):
            with store.batch():
                self._store_all(store, subjects, self.now)

    @rule(data=st.data())
    def remove(self, data):
        last = self.mem.state().last_seq
        seq = data.draw(st.integers(0, last + 2))
        erase = data.draw(st.booleans())
        self.both(lambda s: s.erase_msg(seq) if erase else s.remove_msg(seq))

    @rule(flt=st.sampled_from(FILTERS), data=st.data(), keep=st.integers(0, 3))
    def purge_ex(self, flt, data, keep):
        seq = data.draw(st.integers(0, self.mem.state().last_seq + 2))
        self.both(lambda s: s.purge_ex(flt, seq, keep))

    @rule(data=st.data())
    def compact(self, data):
        seq = data.draw(st.integers(0, self.mem.state().last_seq + 3))
        self.both(lambda s: s.compact(seq))

    @rule(data=st.data())
    def truncate(self, data):
        state = self.mem.state()
        seq = data.draw(st.integers(max(0, state.first_seq - 1), state.last_seq))
        self.both(lambda s: s.truncate(seq))

    @rule(num=st.integers(1, 4))
    def skip(self, num):
        self.both(lambda s: s.skip_msgs(0, num, ts_ns=self.now))

    @rule(step=st.integers(0, 60))
    def expire(self, step):
        self.now += step
        cfg = self.mem.cfg

        def due(sm):
            ttl = self.ttls[sm.seq]
            by_age = cfg.max_age > 0 and sm.ts <= self.now - cfg.max_age and ttl >= 0
            by_ttl = cfg.allow_msg_ttl and ttl > 0 and sm.ts + ttl * SEC <= self.now
            return by_age or by_ttl

        expected = {sm.seq for sm in self.view() if due(sm)}
        assert self.both(lambda s: s.expire(self.now)) == ("ok", len(expected))
        assert not expected & {sm.seq for sm in self.view()}
        self.both(lambda s: s.next_expiry())

    @rule(max_msgs=st.sampled_from([-1, 5, 30]), max_bytes=st.sampled_from([-1, 300, 1500]),
          maxp=st.sampled_from([-1, 1, 2, 4]), discard=st.sampled_from(["old", "new"]),
          per_subject=st.booleans(), ttl=st.booleans())
    def update_config(self, max_msgs, max_bytes, maxp, discard, per_subject, ttl):
        cfg = StoreConfig(storage=FILE_STORAGE, max_msgs=max_msgs, max_bytes=max_bytes,
                          max_msgs_per_subject=maxp, max_age=50, allow_msg_ttl=ttl,
                          discard=discard, discard_new_per_subject=per_subject)
        self.both(lambda s: s.update_config(cfg, now_ns=self.now))

    @rule()
    def reopen(self):
        self.lmdb.stop()
        self.lmdb = LmdbStore(self.dir, sync=False)

    @rule(flt=st.sampled_from(FILTERS), data=st.data())
    def load(self, flt, data):
        state = self.mem.state()
        start = data.draw(st.integers(0, state.last_seq + 1))
        stored = [(sm.seq, sm.subject) for sm in self.view()]
        matching = [seq for seq, subj in stored if subject_matches(subj, flt)]
        nxt = [seq for seq in matching if seq >= start]
        prev = [seq for seq in matching if seq <= start]
        for store in (self.mem, self.lmdb):
            assert store.filtered_state(start, flt) == _brute_state(stored, start, flt, False)
            assert store.num_pending(start, flt, True)[0] == \
                _brute_state(stored, start, flt, True).msgs
            try:
                assert store.load_next_msg(flt, None, start)[1] == nxt[0]
            except ErrStoreEOF:
                assert not nxt
            try:
                assert store.load_prev_msg(flt, None, start)[1] == prev[-1]
            except ErrStoreEOF:
                assert not prev
            try:
                assert store.load_last_msg(flt).seq == matching[-1]
            except ErrStoreMsgNotFound:
                assert not matching
        self.both(lambda s: s.load_msg(start))
        self.both(lambda s: s.load_next_msg(flt, None, start))
        self.both(lambda s: s.load_prev_msg(flt, None, start))
        self.both(lambda s: s.load_last_msg(flt))
        self.both(lambda s: s.filtered_state(start, flt))
        self.both(lambda s: s.num_pending(start, flt, True))
        self.both(lambda s: s.subjects_state(flt))
        self.both(lambda s: s.multi_last_seqs([flt, "a"], start, 0))
        self.both(lambda s: s.get_seq_from_time(self.now - start))

    @invariant()
    def same_and_consistent(self):
        state = self.mem.state(deleted=True)
        assert self.lmdb.state(deleted=True) == state
        assert self.lmdb.subjects_state() == self.mem.subjects_state()
        # Brute force: the counters and the subject index agree with the messages.
        msgs, nbytes, subjects = 0, 0, {}
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                sm = self.mem.load_msg(seq)
            except ErrStoreMsgNotFound:
                continue
            msgs += 1
            nbytes += size_of(self.mem, sm.subject, sm.headers, sm.payload)
            n, first, _ = subjects.get(sm.subject, (0, seq, 0))
            subjects[sm.subject] = (n + 1, first, seq)
        assert (msgs, nbytes) == (state.msgs, state.bytes)
        assert self.mem.subjects_state() == {k: SimpleState(*v) for k, v in subjects.items()}
        present = {sm.seq for sm in self.view()}
        gaps = [s for s in range(state.first_seq, state.last_seq + 1) if s not in present]
        assert state.deleted == (tuple(gaps) if msgs else ())
        if msgs:
            assert self.mem.load_msg(state.first_seq).ts == state.first_ts


StoreComparison.TestCase.settings = settings(
    max_examples=100, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_store_comparison = StoreComparison.TestCase
