"""Unit tests for the raft core: wire codec, storage, log, and one `Raft` driven message by
message. Whole-group behaviour is in test_raft_scenarios.py."""

from __future__ import annotations

import pathlib
import random
import re

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import natsx.raft as raft_pkg
from natsx.raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Config,
    DecodeError,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    MsgApp,
    MsgAppResp,
    MsgHeartbeat,
    MsgHeartbeatResp,
    MsgPreVote,
    MsgPreVoteResp,
    MsgSnap,
    MsgTimeoutNow,
    MsgVote,
    MsgVoteResp,
    NotLeader,
    ProgressState,
    ProposalDropped,
    Raft,
    RaftError,
    RawNode,
    Role,
    Snapshot,
    SnapshotOutOfDateError,
    UnavailableError,
    decode,
    encode,
)
from natsx.raft.log import RaftLog, Unstable
from natsx.raft.storage import limit_size


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    """Entries given as (index, term); the data names them, so mix-ups show."""
    return [Entry(i, t, EntryType.NORMAL, b"%d/%d" % (i, t)) for i, t in pairs]


def storage(pairs=(), term=0, vote=None, commit=1, voters=(1, 2, 3)) -> MemoryStorage:
    """A storage whose log starts after a snapshot at (1, 1) holding the membership."""
    s = MemoryStorage()
    s.apply_snapshot(Snapshot(1, 1, ConfState(tuple(voters)), b""))
    s.append(ents(*pairs))
    s.set_hard_state(HardState(term, vote, commit))
    return s


def new_raft(node_id=1, st=None, **cfg) -> Raft:
    cfg.setdefault("rng", random.Random(node_id))
    return Raft(Config(id=node_id, **cfg), st if st is not None else storage())


def take(r: Raft) -> list:
    out, r.msgs = r.msgs, []
    return out


def elect(r: Raft) -> None:
    """Make ``r`` leader of its current membership by answering its vote requests."""
    r.hup()
    for _ in range(2):  # pre-vote, then vote
        for m in take(r):
            resp = MsgPreVoteResp if type(m) is MsgPreVote else MsgVoteResp
            r.step(resp(term=m.term, from_=m.to, to=r.id))
    assert r.role is Role.LEADER
    take(r)


# =============================================================================================
# Wire codec

ADD_4 = ConfChange(ConfChangeType.ADD_NODE, 4).encode()
SAMPLES = [
    MsgApp(
        term=3, from_=1, to=2, log_term=2, index=7, commit=6,
        entries=(Entry(8, 3, EntryType.NORMAL, b"x"), Entry(9, 3, EntryType.CONF_CHANGE, ADD_4)),
    ),
    MsgAppResp(term=3, from_=2, to=1, index=9),
    MsgAppResp(term=3, from_=2, to=1, index=7, reject=True, reject_hint=5, log_term=2),
    MsgVote(term=4, from_=3, to=1, log_term=3, index=9, transfer=True),
    MsgVoteResp(term=4, from_=1, to=3, reject=True),
    MsgPreVote(term=5, from_=3, to=1, log_term=3, index=9),
    MsgPreVoteResp(term=5, from_=1, to=3),
    MsgHeartbeat(term=3, from_=1, to=2, commit=6),
    MsgHeartbeatResp(term=3, from_=2, to=1),
    MsgSnap(term=3, from_=1, to=2, snapshot=Snapshot(10, 3, ConfState((1, 2, 3)), b"state")),
    MsgTimeoutNow(term=3, from_=1, to=2),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_encode_decode_roundtrip(msg):
    assert decode(encode(msg)) == msg


def test_every_message_type_has_a_sample():
    assert {type(m) for m in SAMPLES} == set(raft_pkg.messages._TAGS)


def test_heartbeat_is_small():
    # Heartbeats are the most frequent message; arrays keep them tiny.
    assert len(encode(MsgHeartbeat(term=12, from_=1, to=2, commit=1000))) <= 10


@settings(max_examples=50, deadline=None)
@given(
    term=st.integers(0, 2**63),
    index=st.integers(0, 2**40),
    entries=st.lists(
        st.tuples(st.integers(0, 2**40), st.integers(0, 2**20), st.sampled_from(EntryType),
                  st.binary(max_size=40)),
        max_size=5,
    ),
)
def test_msg_app_roundtrip_property(term, index, entries):
    m = MsgApp(term=term, from_=1, to=2, log_term=term, index=index, commit=index,
               entries=tuple(Entry(*e) for e in entries))
    assert decode(encode(m)) == m


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xff",
        cbor2.dumps({"t": 1}),
        cbor2.dumps([]),
        cbor2.dumps([99, 1, 1, 2]),
        cbor2.dumps([8, 1, 1]),  # MsgHeartbeatResp with a field missing
        cbor2.dumps([8, 1, 1, 2, 3]),  # ...and with one too many
        cbor2.dumps([8, -1, 1, 2]),
        cbor2.dumps([8, "1", 1, 2]),
        cbor2.dumps([8, True, 1, 2]),
        cbor2.dumps([4, 1, 1, 2, 1]),  # reject must be a boolean
        cbor2.dumps([1, 1, 1, 2, 0, 0, [[1, 1, 7, b""]], 0]),  # unknown entry type
        cbor2.dumps([1, 1, 1, 2, 0, 0, [[1, 1, 0, "text"]], 0]),
        cbor2.dumps([9, 1, 1, 2, [1, 1, "voters", b""]]),
    ],
)
def test_decode_rejects_malformed_input(raw):
    with pytest.raises(DecodeError):
        decode(raw)


def test_conf_change_roundtrip_and_garbage():
    cc = ConfChange(ConfChangeType.REMOVE_NODE, 7)
    assert ConfChange.decode(cc.encode()) == cc
    for bad in (b"", cbor2.dumps([5, 1]), cbor2.dumps([0]), cbor2.dumps([0, -3])):
        with pytest.raises(DecodeError):
            ConfChange.decode(bad)


def test_messages_are_immutable():
    m = MsgHeartbeat(term=1, from_=1, to=2)
    with pytest.raises(AttributeError):
        m.term = 2


# =============================================================================================
# MemoryStorage


def test_memory_storage_reads():
    s = storage([(2, 1), (3, 2), (4, 2)])
    assert (s.first_index(), s.last_index()) == (2, 4)
    assert s.term(1) == 1  # the compacted entry's term is still known
    assert s.term(4) == 2
    with pytest.raises(CompactedError):
        s.term(0)
    with pytest.raises(UnavailableError):
        s.term(5)
    assert s.entries(2, 4) == ents((2, 1), (3, 2))
    with pytest.raises(CompactedError):
        s.entries(1, 3)
    with pytest.raises(UnavailableError):
        s.entries(3, 6)


def test_memory_storage_append_truncates_conflicts():
    s = storage([(2, 1), (3, 1), (4, 1)])
    s.append(ents((3, 2)))
    assert s.entries(2, s.last_index() + 1) == ents((2, 1), (3, 2))
    s.append(ents((1, 1), (2, 1), (3, 2), (4, 2)))  # overlaps the snapshot: trimmed
    assert s.entries(2, 5) == ents((2, 1), (3, 2), (4, 2))
    with pytest.raises(Exception):
        s.append(ents((9, 2)))  # gap


def test_memory_storage_compact_and_snapshots():
    s = storage([(2, 1), (3, 2), (4, 2)])
    snap = s.create_snapshot(3, ConfState((1, 2)), b"sm")
    assert (snap.index, snap.term, snap.data) == (3, 2, b"sm")
    s.compact(3)
    assert (s.first_index(), s.term(3)) == (4, 2)
    with pytest.raises(CompactedError):
        s.compact(3)
    with pytest.raises(SnapshotOutOfDateError):
        s.create_snapshot(3, ConfState(), b"")
    with pytest.raises(SnapshotOutOfDateError):
        s.apply_snapshot(Snapshot(2, 1))
    s.apply_snapshot(Snapshot(10, 5, ConfState((1,)), b"new"))
    assert (s.first_index(), s.last_index(), s.term(10)) == (11, 10, 5)
    assert s.initial_state()[1] == ConfState((1,))


def test_limit_size_keeps_at_least_one_entry():
    es = [Entry(i, 1, EntryType.NORMAL, b"xx") for i in range(1, 5)]
    assert limit_size(es, None) == es
    assert limit_size(es, 0) == es[:1]
    assert limit_size(es, 5) == es[:2]
    assert limit_size(es, 100) == es


# =============================================================================================
# Log


def test_unstable_stable_to_ignores_a_replaced_entry():
    u = Unstable(5)
    u.truncate_and_append(ents((5, 1), (6, 1)))
    u.truncate_and_append(ents((6, 2)))  # replaced between ready() and advance()
    u.stable_to(6, 1)
    assert u.entries == ents((5, 1), (6, 2))
    u.stable_to(6, 2)
    assert (u.entries, u.offset) == ([], 7)


def test_log_append_when_consistent():
    """"If an existing entry conflicts with a new one (same index but different terms), delete
    the existing entry and all that follow it (§5.3). Append any new entries not already in
    the log." (Figure 2, AppendEntries receiver implementation 3-4)"""
    log = RaftLog(storage([(2, 1), (3, 2), (4, 2)]))
    # Already present: nothing changes.
    assert log.maybe_append(2, 1, 0, tuple(ents((3, 2)))) == 3
    assert log.last_index() == 4
    # Conflict at 4: truncated and replaced.
    assert log.maybe_append(3, 2, 0, tuple(ents((4, 3), (5, 3)))) == 5
    assert [log.term(i) for i in range(2, 6)] == [1, 2, 3, 3]


def test_log_rejects_append_without_matching_previous_entry():
    """"Reply false if log doesn't contain an entry at prevLogIndex whose term matches
    prevLogTerm (§5.3)" (Figure 2, AppendEntries receiver implementation 2)"""
    log = RaftLog(storage([(2, 1), (3, 2)]))
    assert log.maybe_append(3, 1, 3, tuple(ents((4, 3)))) is None
    assert log.maybe_append(5, 2, 3, ()) is None
    assert log.committed == 1


def test_log_commit_stops_at_last_new_entry():
    """"If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last new
    entry)" (Figure 2): entries past the ones the leader vouched for may be stale."""
    log = RaftLog(storage([(2, 1), (3, 1), (4, 1), (5, 1)]))
    assert log.maybe_append(2, 1, 10, tuple(ents((3, 1)))) == 3
    assert log.committed == 3


def test_log_never_truncates_committed_entries():
    log = RaftLog(storage([(2, 1), (3, 1)], commit=3))
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.maybe_append(2, 1, 3, tuple(ents((3, 2))))
    with pytest.raises(AssertionError):
        log.commit_to(9)
    log.commit_to(2)  # never goes backwards
    assert log.committed == 3


def test_log_find_conflict_by_term():
    log = RaftLog(storage([(2, 1), (3, 2), (4, 2), (5, 4), (6, 4)]))
    assert log.find_conflict_by_term(6, 3) == (4, 2)
    assert log.find_conflict_by_term(6, 4) == (6, 4)
    assert log.find_conflict_by_term(3, 0) == (0, 0)
    st_ = storage([(2, 1), (3, 2), (4, 2)])
    st_.compact(3)
    # Past the compaction point the term is unknown: assume a possible match there.
    assert RaftLog(st_).find_conflict_by_term(4, 1) == (2, 0)


def test_log_up_to_date():
    """"If the logs have last entries with different terms, then the log with the later term
    is more up-to-date. If the logs end with the same term, then whichever log is longer is
    more up-to-date." (§5.4.1)"""
    log = RaftLog(storage([(2, 1), (3, 2)]))
    assert log.is_up_to_date(2, 3)
    assert not log.is_up_to_date(9, 1)
    assert log.is_up_to_date(3, 2)
    assert not log.is_up_to_date(2, 2)


def test_log_slices_span_storage_and_unstable():
    log = RaftLog(storage([(2, 1), (3, 1)]))
    log.append(ents((4, 2), (5, 2)))
    assert log.slice(2, 6) == ents((2, 1), (3, 1), (4, 2), (5, 2))
    assert log.slice(3, 5) == ents((3, 1), (4, 2))
    assert len(log.slice(2, 6, max_size=0)) == 1
    with pytest.raises(CompactedError):
        log.slice(1, 3)


# =============================================================================================
# Elections


def test_follower_campaigns_after_election_timeout():
    """"If a follower receives no communication over a period of time called the election
    timeout, then it assumes there is no viable leader and begins an election" (§5.2); the
    timeout is drawn from [election_tick, 2 * election_tick)."""
    r = new_raft(pre_vote=False)
    for _ in range(r.election_timeout - 1):
        r.tick()
    assert r.role is Role.FOLLOWER
    for _ in range(r.election_timeout):
        r.tick()
    assert r.role is Role.CANDIDATE and r.term == 1 and r.vote == 1
    assert sorted((type(m).__name__, m.to) for m in take(r)) == [("MsgVote", 2), ("MsgVote", 3)]


def test_randomized_timeout_is_reproducible_from_the_seed():
    def ticks_to_campaign(seed):
        r = new_raft(rng=random.Random(seed), pre_vote=False)
        n = 0
        while r.role is Role.FOLLOWER:
            r.tick()
            n += 1
        return n

    assert ticks_to_campaign(7) == ticks_to_campaign(7)
    assert {ticks_to_campaign(s) for s in range(30)} <= set(range(10, 20))
    assert len({ticks_to_campaign(s) for s in range(30)}) > 3


def test_vote_granted_once_per_term():
    """"Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis" (§5.2); a repeated request from the same candidate is
    granted again (its response may have been lost)."""
    r = new_raft()
    r.step(MsgVote(term=2, from_=2, to=1, log_term=1, index=1))
    r.step(MsgVote(term=2, from_=3, to=1, log_term=1, index=1))
    r.step(MsgVote(term=2, from_=2, to=1, log_term=1, index=1))
    assert [(m.to, m.reject) for m in take(r)] == [(2, False), (3, True), (2, False)]
    assert r.vote == 2


def test_vote_denied_to_candidate_with_stale_log():
    """"the voter denies its vote if its own log is more up-to-date than that of the
    candidate." (§5.4.1)"""
    r = new_raft(st=storage([(2, 1), (3, 2)], term=2))
    r.step(MsgVote(term=3, from_=2, to=1, log_term=1, index=9))  # older last term
    r.step(MsgVote(term=4, from_=3, to=1, log_term=2, index=2))  # same term, shorter
    assert [m.reject for m in take(r)] == [True, True]
    assert r.vote is None and r.term == 4
    r.step(MsgVote(term=4, from_=3, to=1, log_term=2, index=3))
    assert [m.reject for m in take(r)] == [False]


def test_vote_is_persisted_before_the_response_is_sent():
    """"Updated on stable storage before responding to RPCs" (Figure 2, currentTerm and
    votedFor); "each server persists its current term and vote; this is necessary to prevent
    the server from voting twice in the same term" (dissertation §3.8). The Ready that carries
    the grant carries the vote, and a restart keeps it."""
    st_ = storage()
    node = RawNode(Config(id=1, rng=random.Random(1)), st_)
    node.step(MsgVote(term=2, from_=2, to=1, log_term=1, index=1))
    rd = node.ready()
    assert rd.hard_state == HardState(2, 2, 1) and rd.must_sync
    assert [type(m) for m in rd.messages] == [MsgVoteResp]
    st_.set_hard_state(rd.hard_state)
    node.advance(rd)
    restarted = RawNode(Config(id=1, rng=random.Random(1)), st_)
    restarted.step(MsgVote(term=2, from_=3, to=1, log_term=1, index=1))
    assert restarted.ready().messages[0].reject


def test_candidate_wins_with_majority_and_appends_an_entry_of_its_term():
    """"A candidate wins an election if it receives votes from a majority of the servers in
    the full cluster for the same term." (§5.2)"""
    r = new_raft(st=storage(voters=(1, 2, 3, 4, 5)), pre_vote=False)
    r.hup()
    take(r)
    r.step(MsgVoteResp(term=1, from_=2, to=1))
    assert r.role is Role.CANDIDATE
    r.step(MsgVoteResp(term=1, from_=3, to=1, reject=True))
    r.step(MsgVoteResp(term=1, from_=4, to=1))
    assert r.role is Role.LEADER and r.lead == 1
    assert r.log.last_index() == 2 and r.log.term(2) == 1
    assert {m.to for m in take(r) if type(m) is MsgApp} == {2, 3, 4, 5}


def test_candidate_loses_when_a_majority_rejects():
    r = new_raft(pre_vote=False)
    r.hup()
    r.step(MsgVoteResp(term=1, from_=2, to=1, reject=True))
    r.step(MsgVoteResp(term=1, from_=3, to=1, reject=True))
    assert r.role is Role.FOLLOWER and r.term == 1


def test_candidate_steps_down_for_a_leader_of_its_term():
    """"If the leader's term (included in its RPC) is at least as large as the candidate's
    current term, then the candidate recognizes the leader as legitimate and returns to
    follower state." (§5.2)"""
    r = new_raft(pre_vote=False)
    r.hup()
    r.step(MsgApp(term=1, from_=3, to=1, log_term=1, index=1))
    assert r.role is Role.FOLLOWER and r.lead == 3


def test_any_role_adopts_a_higher_term():
    """"If RPC request or response contains term T > currentTerm: set currentTerm = T,
    convert to follower (§5.1)" (Figure 2)"""
    r = new_raft()
    elect(r)
    r.step(MsgAppResp(term=r.term + 1, from_=2, to=1))
    assert r.role is Role.FOLLOWER and r.term == 2 and r.lead is None
    elect(r)
    r.step(MsgHeartbeat(term=r.term + 3, from_=3, to=1))
    assert r.role is Role.FOLLOWER and r.term == 6 and r.lead == 3


def test_stale_term_requests_are_rejected():
    """"If a server receives a request with a stale term number, it rejects the request."
    (§5.1) The answer carries the current term, which makes a stale leader step down."""
    r = new_raft(st=storage(term=5))
    r.step(MsgApp(term=3, from_=2, to=1, log_term=1, index=1, entries=tuple(ents((2, 3)))))
    (resp,) = take(r)
    assert type(resp) is MsgAppResp and resp.term == 5
    assert r.log.last_index() == 1
    r.step(MsgVote(term=4, from_=2, to=1, log_term=9, index=9))
    assert take(r) == [] and r.vote is None


def test_pre_vote_does_not_change_terms():
    """"In the Pre-Vote algorithm, a candidate only increments its term if it first learns
    from a majority of the cluster that they would be willing to grant the candidate their
    votes" (dissertation §9.6)"""
    r = new_raft(st=storage(term=3))
    r.hup()
    assert r.role is Role.PRE_CANDIDATE and r.term == 3
    reqs = take(r)
    assert {type(m) for m in reqs} == {MsgPreVote} and reqs[0].term == 4

    voter = new_raft(2, st=storage(term=3))
    voter.step(reqs[0] if reqs[0].to == 2 else reqs[1])
    (resp,) = take(voter)
    assert type(resp) is MsgPreVoteResp and not resp.reject and resp.term == 4
    assert voter.term == 3 and voter.vote is None

    r.step(resp)
    assert r.role is Role.CANDIDATE and r.term == 4  # now the real election
    assert {type(m) for m in take(r)} == {MsgVote}


def test_pre_vote_rejection_with_higher_term_demotes():
    r = new_raft(st=storage(term=3))
    r.hup()
    r.step(MsgPreVoteResp(term=7, from_=2, to=1, reject=True))
    assert r.role is Role.FOLLOWER and r.term == 7


def test_votes_ignored_while_hearing_from_a_leader():
    """"if a server receives a RequestVote request within the minimum election timeout of
    hearing from a current leader, it does not update its term or grant its vote"
    (dissertation §4.2.3) -- unless the leader itself asked for the election (transfer)."""
    r = new_raft(check_quorum=True)
    r.step(MsgHeartbeat(term=1, from_=2, to=1, commit=1))
    take(r)
    r.step(MsgVote(term=2, from_=3, to=1, log_term=5, index=5))
    r.step(MsgPreVote(term=2, from_=3, to=1, log_term=5, index=5))
    assert take(r) == [] and r.term == 1
    r.step(MsgVote(term=2, from_=3, to=1, log_term=5, index=5, transfer=True))
    assert [(type(m), m.reject) for m in take(r)] == [(MsgVoteResp, False)]


def test_rejected_candidate_does_not_reset_election_timer():
    """"If election timeout elapses without receiving AppendEntries RPC from current leader or
    granting vote to candidate: convert to candidate" (Figure 2) -- a refused request leaves
    the timer running, so a stale candidate cannot hold back electable servers."""
    r = new_raft(st=storage([(2, 1)]), pre_vote=False, check_quorum=False)
    for _ in range(5):
        r.tick()
    r.step(MsgVote(term=2, from_=2, to=1, log_term=1, index=1))
    assert take(r)[0].reject and r.election_elapsed == 5
    r.step(MsgVote(term=3, from_=3, to=1, log_term=1, index=2))
    assert not take(r)[0].reject and r.election_elapsed == 0


# =============================================================================================
# Replication and commitment


def test_leader_only_commits_entries_of_its_term_by_counting_replicas():
    """"Raft never commits log entries from previous terms by counting replicas. Only log
    entries from the leader's current term are committed by counting replicas" (§5.4.2)"""
    r = new_raft(st=storage([(2, 1), (3, 2)], term=2), pre_vote=False)
    elect(r)
    assert r.term == 3 and r.log.last_index() == 4
    r.step(MsgAppResp(term=3, from_=2, to=1, index=3))
    assert r.log.committed == 1  # index 3 (term 2) is on a majority, yet not committed
    r.step(MsgAppResp(term=3, from_=2, to=1, index=4))
    assert r.log.committed == 4  # committing index 4 commits everything before it


def test_leader_commit_index_is_the_majority_match():
    r = new_raft(st=storage(voters=(1, 2, 3, 4, 5)), pre_vote=False)
    elect(r)
    for i in range(3):
        r.propose(b"%d" % i)
    take(r)
    assert r.log.last_index() == 5
    r.step(MsgAppResp(term=1, from_=2, to=1, index=5))
    assert r.log.committed == 1
    r.step(MsgAppResp(term=1, from_=3, to=1, index=3))
    assert r.log.committed == 3  # 1, 2 and 3 hold index 3
    r.step(MsgAppResp(term=1, from_=4, to=1, index=4))
    assert r.log.committed == 4


def test_heartbeat_commit_is_capped_at_the_follower_match():
    """A follower whose log may still diverge must not be told to commit past its match."""
    r = new_raft(pre_vote=False)
    elect(r)
    r.propose(b"a")
    take(r)
    r.step(MsgAppResp(term=1, from_=2, to=1, index=3))
    assert r.log.committed == 3
    take(r)
    r.tick()
    beats = {m.to: m.commit for m in take(r) if type(m) is MsgHeartbeat}
    assert beats == {2: 3, 3: 0}


def test_rejection_hint_skips_a_whole_term():
    """"when rejecting an AppendEntries request, the follower can include the term of the
    conflicting entry and the first index it stores for that term. With this information, the
    leader can decrement nextIndex to bypass all of the conflicting entries in that term"
    (§5.3)"""
    leader_log = [(2, 1), (3, 1), (4, 4), (5, 4), (6, 5), (7, 5), (8, 6), (9, 6), (10, 6)]
    r = new_raft(st=storage(leader_log, term=7), pre_vote=False)
    elect(r)  # term 8, appends index 11
    follower = new_raft(2, st=storage([(2, 1), (3, 1), (4, 2), (5, 2), (6, 2), (7, 3), (8, 3),
                                       (9, 3), (10, 3), (11, 3)], term=8))
    probes = 0
    r.step(MsgHeartbeatResp(term=8, from_=2, to=1))
    while True:
        (app,) = [m for m in take(r) if type(m) is MsgApp and m.to == 2]
        probes += 1
        follower.step(app)
        (resp,) = take(follower)
        r.step(resp)
        if not resp.reject:
            break
    assert probes <= 3  # one entry at a time would take 9
    assert r.progress[2].match == 11
    assert [follower.log.term(i) for i in range(2, 12)] == [1, 1, 4, 4, 5, 5, 6, 6, 6, 8]


def test_inflight_window_bounds_unacknowledged_appends():
    r = new_raft(pre_vote=False, max_inflight=2, max_msg_size=0)
    elect(r)
    r.step(MsgAppResp(term=1, from_=2, to=1, index=2))  # now replicating to 2
    take(r)
    for i in range(5):
        r.propose(b"%d" % i)
    to2 = [m for m in take(r) if type(m) is MsgApp and m.to == 2]
    assert len(to2) == 2 and r.progress[2].is_paused()
    r.step(MsgHeartbeatResp(term=1, from_=2, to=1))  # frees one slot
    assert len([m for m in take(r) if type(m) is MsgApp and m.to == 2]) == 1
    r.step(MsgAppResp(term=1, from_=2, to=1, index=5))
    assert [m.entries[0].index for m in take(r) if type(m) is MsgApp and m.to == 2] == [6, 7]


def test_follower_answers_stale_append_with_its_commit():
    r = new_raft(st=storage([(2, 1), (3, 1)], term=1, commit=3))
    r.step(MsgApp(term=1, from_=2, to=1, log_term=1, index=1, entries=tuple(ents((2, 1)))))
    (resp,) = take(r)
    assert not resp.reject and resp.index == 3


def test_report_unreachable_falls_back_to_probing():
    r = new_raft(pre_vote=False)
    elect(r)
    r.step(MsgAppResp(term=1, from_=2, to=1, index=2))
    assert r.progress[2].state is ProgressState.REPLICATE
    r.report_unreachable(2)
    assert r.progress[2].state is ProgressState.PROBE


# =============================================================================================
# Proposals and the Ready cycle


def test_propose_on_follower_names_the_leader():
    r = new_raft()
    with pytest.raises(NotLeader) as exc:
        r.propose(b"x")
    assert exc.value.leader is None
    r.step(MsgHeartbeat(term=1, from_=3, to=1))
    with pytest.raises(NotLeader) as exc:
        r.propose(b"x")
    assert exc.value.leader == 3


def test_single_node_elects_itself_and_commits():
    """"A candidate wins an election if it receives votes from a majority of the servers"
    (§5.2) -- a group of one is its own majority: it leads at once and commits with no
    messages, in one Ready/advance cycle per proposal."""
    st_ = MemoryStorage()
    node = RawNode(Config(id=1), st_, peers=[1])
    assert node.role is Role.LEADER
    rd = node.ready()
    assert rd.soft_state.role is Role.LEADER and rd.soft_state.leader == 1
    assert rd.messages == ()
    st_.append(rd.entries)
    st_.set_hard_state(rd.hard_state)
    node.advance(rd)

    index = node.propose(b"hello")
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"hello"]
    assert [(e.index, e.data) for e in rd.committed_entries] == [(index, b"hello")]
    assert rd.hard_state.commit == index and rd.messages == ()
    st_.append(rd.entries)
    st_.set_hard_state(rd.hard_state)
    node.advance(rd)
    for _ in range(100):
        node.tick()
    assert node.ready() is None  # a lone leader has nobody to heartbeat
    assert node.role is Role.LEADER


def test_single_node_restart_elects_itself_again():
    st_ = MemoryStorage()
    node = RawNode(Config(id=1), st_, peers=[1])
    for data in (None, b"a", b"b"):
        if data:
            node.propose(data)
        rd = node.ready()
        st_.append(rd.entries)
        st_.set_hard_state(rd.hard_state)
        node.advance(rd)
    term, applied = node.term, st_.hard_state.commit
    node = RawNode(Config(id=1, applied=applied), st_)
    assert node.role is Role.LEADER and node.term == term + 1
    assert [e.data for e in node.ready().committed_entries] == [b""]


def test_restart_without_applied_replays_membership_through_ready():
    st_ = MemoryStorage()
    node = RawNode(Config(id=1), st_, peers=[1])
    rd = node.ready()
    st_.append(rd.entries)
    st_.set_hard_state(rd.hard_state)
    node = RawNode(Config(id=1), st_)  # applied=0: the application re-applies everything
    assert node.role is Role.FOLLOWER
    rd = node.ready()
    assert rd.committed_entries[0].type is EntryType.CONF_CHANGE
    node.advance(rd)
    assert node.role is Role.LEADER


def test_ready_cycle_contract():
    st_ = MemoryStorage()
    node = RawNode(Config(id=1), st_, peers=[1])
    rd = node.ready()
    with pytest.raises(RaftError):
        node.ready()  # the previous Ready is still being handled
    st_.append(rd.entries)
    node.advance(rd)
    assert node.ready() is None
    node.propose(b"x")
    rd2 = node.ready()
    with pytest.raises(RaftError):
        node.advance(rd)
    st_.append(rd2.entries)
    node.advance(rd2)
    assert node.ready() is None


def test_commit_only_change_needs_no_sync():
    st_ = storage([(2, 1)], term=1)
    node = RawNode(Config(id=1), st_)
    node.step(MsgHeartbeat(term=1, from_=2, to=1, commit=2))
    rd = node.ready()
    assert rd.hard_state.commit == 2 and not rd.must_sync
    assert [e.index for e in rd.committed_entries] == [2]


def test_step_checks_addressing():
    node = RawNode(Config(id=1), storage())
    with pytest.raises(ValueError):
        node.step(MsgHeartbeat(term=1, from_=2, to=9))
    node.step(MsgAppResp(term=9, from_=42, to=1))  # response from a stranger: dropped
    assert node.term == 0


def test_config_validation():
    for bad in (dict(id=0), dict(id=1, heartbeat_tick=10, election_tick=10),
                dict(id=1, max_inflight=0)):
        with pytest.raises(ValueError):
            Raft(Config(**bad), MemoryStorage())


def test_conf_change_waits_for_an_applied_entry_of_the_leaders_term():
    """A new leader proposes no membership change before an entry of its own term is applied
    (the single-server change bug reported on raft-dev, 2015), and only one is pending."""
    r = new_raft(pre_vote=False)
    elect(r)
    cc = ConfChange(ConfChangeType.ADD_NODE, 4).encode()
    with pytest.raises(ProposalDropped):
        r.propose(cc, EntryType.CONF_CHANGE)
    r.step(MsgAppResp(term=1, from_=2, to=1, index=2))
    r.log.applied_to(2)
    assert r.propose(cc, EntryType.CONF_CHANGE) == 3
    with pytest.raises(ProposalDropped):
        r.propose(cc, EntryType.CONF_CHANGE)
    r.propose(b"data is fine meanwhile")


def test_conf_change_blocks_campaign_until_applied():
    """A node with a committed but unapplied membership change does not campaign: the
    membership it would campaign in may already be obsolete."""
    cc = ConfChange(ConfChangeType.REMOVE_NODE, 3).encode()
    st_ = storage()
    st_.append([Entry(2, 1, EntryType.CONF_CHANGE, cc)])
    st_.set_hard_state(HardState(1, None, 2))
    r = new_raft(st=st_, pre_vote=False)
    for _ in range(50):
        r.tick()
    assert r.role is Role.FOLLOWER and take(r) == []


def test_restart_replays_membership_up_to_applied():
    st_ = storage([(2, 1)], term=1)
    st_.append([Entry(3, 1, EntryType.CONF_CHANGE,
                      ConfChange(ConfChangeType.ADD_NODE, 4).encode())])
    st_.set_hard_state(HardState(1, None, 3))
    assert new_raft(st=st_, applied=3).voters == {1, 2, 3, 4}
    assert new_raft(st=st_, applied=2).voters == {1, 2, 3}


# =============================================================================================
# Snapshots


def test_leader_sends_snapshot_for_compacted_entries():
    """"the leader must occasionally send snapshots to followers that lag behind. This happens
    when the leader has already discarded the next log entry that it needs to send to a
    follower." (§7)"""
    st_ = storage([(2, 1), (3, 1), (4, 1)], term=1, commit=4)
    st_.create_snapshot(4, ConfState((1, 2, 3)), b"sm@4")
    st_.compact(4)
    r = new_raft(st=st_, pre_vote=False, applied=4)
    elect(r)
    r.progress[2].recent_active = True
    r.step(MsgAppResp(term=2, from_=2, to=1, index=4, reject=True, reject_hint=1, log_term=1))
    (snap,) = [m for m in take(r) if type(m) is MsgSnap]
    assert snap.snapshot.index == 4 and snap.snapshot.data == b"sm@4"
    assert r.progress[2].state is ProgressState.SNAPSHOT
    # The follower installs it; its ack resumes replication from the snapshot on.
    f = RawNode(Config(id=2), storage(term=1))
    f.step(snap)
    rd = f.ready()
    assert rd.snapshot == snap.snapshot and rd.committed_entries == ()
    (resp,) = rd.messages
    assert resp.index == 4 and not resp.reject
    f.advance(rd)
    assert f.raft.log.applied == 4 and f.status().commit == 4
    r.step(resp)
    assert r.progress[2].state is ProgressState.REPLICATE
    assert [m.entries[0].index for m in take(r) if type(m) is MsgApp] == [5]


def test_follower_ignores_old_snapshot_and_fast_forwards_known_one():
    r = new_raft(st=storage([(2, 1), (3, 1)], term=1, commit=2))
    r.step(MsgSnap(term=1, from_=2, to=1, snapshot=Snapshot(2, 1, ConfState((1, 2, 3)))))
    assert take(r)[0].index == 2 and r.log.unstable.snapshot is None
    # We already hold (3, 1): no restore, just commit.
    r.step(MsgSnap(term=1, from_=2, to=1, snapshot=Snapshot(3, 1, ConfState((1, 2, 3)))))
    assert take(r)[0].index == 3 and r.log.committed == 3
    assert r.log.unstable.snapshot is None


def test_failed_snapshot_falls_back_to_probe():
    st_ = storage([(2, 1), (3, 1)], term=1, commit=3)
    st_.create_snapshot(3, ConfState((1, 2, 3)), b"")
    st_.compact(3)
    r = new_raft(st=st_, pre_vote=False, applied=3)
    elect(r)
    r.progress[2].recent_active = True
    r.step(MsgAppResp(term=2, from_=2, to=1, index=3, reject=True, reject_hint=0))
    assert r.progress[2].state is ProgressState.SNAPSHOT
    r.report_snapshot(2, ok=False)
    assert r.progress[2].state is ProgressState.PROBE and r.progress[2].is_paused()


# =============================================================================================
# Leadership transfer and check-quorum


def test_transfer_sends_timeout_now_when_target_is_up_to_date():
    r = new_raft(pre_vote=False)
    elect(r)
    r.step(MsgAppResp(term=1, from_=2, to=1, index=2))
    take(r)
    r.transfer_leadership(2)
    assert [type(m) for m in take(r)] == [MsgTimeoutNow]
    with pytest.raises(ProposalDropped):
        r.propose(b"x")
    with pytest.raises(RaftError):
        r.transfer_leadership(9)


def test_timeout_now_starts_a_forced_election_without_pre_vote():
    r = new_raft(2)
    r.step(MsgHeartbeat(term=1, from_=1, to=2))
    take(r)
    r.step(MsgTimeoutNow(term=1, from_=1, to=2))
    assert r.role is Role.CANDIDATE and r.term == 2
    assert all(type(m) is MsgVote and m.transfer for m in take(r))


def test_check_quorum_leader_steps_down():
    """"a leader steps down if an election timeout elapses without a successful round of
    heartbeats to a majority of its cluster" (dissertation §6.2)"""
    r = new_raft(pre_vote=False, check_quorum=True)
    elect(r)
    for _ in range(r.election_timeout - 1):
        r.tick()
    assert r.role is Role.LEADER
    r.tick()
    assert r.role is Role.FOLLOWER and r.lead is None


def test_check_quorum_leader_stays_with_a_responsive_majority():
    r = new_raft(pre_vote=False, check_quorum=True)
    elect(r)
    for _ in range(5 * r.election_timeout):
        r.tick()
        r.step(MsgHeartbeatResp(term=1, from_=2, to=1))
    assert r.role is Role.LEADER


# =============================================================================================
# Package hygiene


def test_public_names_exported_once():
    assert len(raft_pkg.__all__) == len(set(raft_pkg.__all__))
    for name in raft_pkg.__all__:
        assert getattr(raft_pkg, name) is not None


def test_core_does_no_io():
    """The consensus core is pure: no clock, sockets, threads or event loop."""
    forbidden = re.compile(r"^\s*(import|from)\s+(time|socket|trio|threading|asyncio|os|select)\b",
                           re.M)
    for path in pathlib.Path(raft_pkg.__file__).parent.glob("*.py"):
        assert not forbidden.search(path.read_text()), path
