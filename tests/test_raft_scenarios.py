"""Whole-group scenarios for the raft core, over a deterministic in-memory network.

`Network` plays the application and the transport for N `RawNode`s: it runs each node's
Ready/advance cycle against a `MemoryStorage` (persist, then send, then apply), carries
messages through the wire codec with optional delays, drops, partitions and reordering, and
drives time with ticks. It checks safety continuously: no two nodes ever apply different
entries at the same index, every node applies indexes in order, and no term has two leaders.
Everything random comes from seeded ``random.Random`` instances.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Optional

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsx.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MsgApp,
    MsgPreVote,
    MsgSnap,
    MsgTimeoutNow,
    MsgVote,
    NotLeader,
    ProposalDropped,
    RawNode,
    Role,
    Snapshot,
    ConfState,
    decode,
    encode,
)


class SafetyViolation(AssertionError):
    pass


class Node:
    """One server: a RawNode, its storage and its state machine (the applied entries)."""

    def __init__(self, net: "Network", node_id: int, storage: MemoryStorage, peers) -> None:
        self.id = node_id
        self.net = net
        self.storage = storage
        self.founders = peers
        self.alive = True
        self.state: list[tuple[int, int, int, bytes]] = []  # (index, term, type, data)
        self.applied = 0
        self.raw = self._make_raw(peers)

    def _make_raw(self, peers) -> RawNode:
        snap = self.storage.snapshot()
        # The state machine is volatile: it restarts from the snapshot and re-applies.
        self.state = [tuple(x) for x in cbor2.loads(snap.data)] if snap.data else []
        self.applied = snap.index
        cfg = Config(
            id=self.id,
            election_tick=self.net.election_tick,
            heartbeat_tick=self.net.heartbeat_tick,
            rng=random.Random(self.net.seed * 7919 + self.id * 31 + self.net.restarts),
            applied=snap.index,
            max_msg_size=self.net.max_msg_size,
            check_quorum=self.net.check_quorum,
            pre_vote=self.net.pre_vote,
        )
        return RawNode(cfg, self.storage, peers=peers)

    def restart(self) -> None:
        """Crash and come back: only what was persisted survives. A founding member that
        crashed before persisting anything bootstraps again, as a server does when it finds
        no data directory; the bootstrap entries are the same every time."""
        self.net.restarts += 1
        empty = self.storage.last_index() == 0 and self.storage.hard_state.term == 0
        self.raw = self._make_raw(self.founders if empty else None)
        self.alive = True

    @property
    def role(self) -> Role:
        return self.raw.role

    @property
    def term(self) -> int:
        return self.raw.term

    def data(self) -> list[bytes]:
        """Applied application payloads (no-op and conf-change entries left out)."""
        return [d for (_, _, t, d) in self.state if t == EntryType.NORMAL and d]


class Network:
    def __init__(
        self,
        ids: Iterable[int],
        seed: int = 0,
        *,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        check_quorum: bool = True,
        pre_vote: bool = True,
        max_msg_size: Optional[int] = None,
        storages: Optional[dict[int, MemoryStorage]] = None,
        compact_every: int = 0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.election_tick = election_tick
        self.heartbeat_tick = heartbeat_tick
        self.check_quorum = check_quorum
        self.pre_vote = pre_vote
        self.max_msg_size = max_msg_size
        self.compact_every = compact_every
        self.restarts = 0
        self.now = 0
        self.drop_rate = 0.0
        self.max_delay = 0
        self.reorder = False
        #: Chance that a node crashes and restarts at once, just before a delivery to it or
        #: before persisting a Ready: crashes in the middle of elections and replication,
        #: not only between ticks.
        self.bounce_rate = 0.0
        self.cut: set[tuple[int, int]] = set()
        #: Extra drop rule for hand-made scenarios: return True to drop a message.
        self.drop_if: Optional[Callable[[Message], bool]] = None
        self.queue: list[tuple[int, int, bytes]] = []  # (due tick, seq, encoded message)
        self.seq = 0
        self.applied_at: dict[int, tuple[int, int, bytes]] = {}
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.delivered: list[Message] = []
        self.nodes: dict[int, Node] = {}
        ids = list(ids)
        for i in ids:
            if storages is not None:
                self.nodes[i] = Node(self, i, storages[i], None)
            else:
                self.nodes[i] = Node(self, i, MemoryStorage(), ids)

    # -- topology ----------------------------------------------------------------------

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def partition(self, *groups: Iterable[int]) -> None:
        self.heal()
        groups = [set(g) for g in groups]
        for a in self.nodes:
            for b in self.nodes:
                if a != b and not any(a in g and b in g for g in groups):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    def add_node(self, node_id: int) -> Node:
        """A brand-new server joining an existing group: no peers, empty storage."""
        node = Node(self, node_id, MemoryStorage(), None)
        self.nodes[node_id] = node
        return node

    def crash(self, node_id: int) -> None:
        self.nodes[node_id].alive = False

    # -- the application's Ready loop --------------------------------------------------

    def process(self, node: Node) -> None:
        while node.alive:
            rd = node.raw.ready()
            if rd is None:
                return
            if self.bounce_rate and self.rng.random() < self.bounce_rate:
                node.restart()  # crashed before persisting: this Ready is lost
                continue
            st = node.storage
            # 1. persist
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
                node.state = [tuple(x) for x in cbor2.loads(rd.snapshot.data)]
                node.applied = rd.snapshot.index
                for e in node.state:
                    self._check_apply(node, e)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            # 2. send
            for m in rd.messages:
                assert m.from_ == node.id and m.to != node.id
                delay = self.rng.randint(0, self.max_delay) if self.max_delay else 0
                self.seq += 1
                self.queue.append((self.now + delay, self.seq, encode(m)))
            # 3. apply
            for e in rd.committed_entries:
                if e.index != node.applied + 1:
                    raise SafetyViolation(f"node {node.id} applied {e.index} after {node.applied}")
                rec = (e.index, e.term, int(e.type), e.data)
                self._check_apply(node, rec)
                node.state.append(rec)
                node.applied = e.index
            if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
                self._check_leader(node)
            node.raw.advance(rd)
            if self.compact_every and node.applied - st.first_index() >= self.compact_every:
                st.create_snapshot(node.applied, node.raw.conf_state(), cbor2.dumps(node.state))
                st.compact(node.applied)

    def _check_apply(self, node: Node, rec: tuple) -> None:
        seen = self.applied_at.setdefault(rec[0], rec)
        if seen != rec:
            raise SafetyViolation(f"node {node.id} applied {rec} where another applied {seen}")

    def _check_leader(self, node: Node) -> None:
        other = self.leaders.setdefault(node.term, node.id)
        if other != node.id:
            raise SafetyViolation(f"term {node.term} has two leaders: {other} and {node.id}")

    def settle(self, max_rounds: int = 10_000) -> None:
        """Run Ready cycles and deliver every message that is due, until nothing is left."""
        for _ in range(max_rounds):
            for node in self.nodes.values():
                self.process(node)
            due = [q for q in self.queue if q[0] <= self.now]
            if not due:
                return
            self.queue = [q for q in self.queue if q[0] > self.now]
            due.sort()
            if self.reorder:
                self.rng.shuffle(due)
            for _, _, raw in due:
                self._deliver(decode(raw))
        raise AssertionError("network did not settle")

    def _deliver(self, m: Message) -> None:
        src, dst = self.nodes.get(m.from_), self.nodes.get(m.to)
        dropped = (
            dst is None
            or not dst.alive
            or (m.from_, m.to) in self.cut
            or (self.drop_rate and self.rng.random() < self.drop_rate)
            or (self.drop_if is not None and self.drop_if(m))
        )
        if type(m) is MsgSnap and src is not None and src.alive:
            # The transport tells the leader how a snapshot transfer went.
            src.raw.report_snapshot(m.to, not dropped)
        if dropped:
            return
        if self.bounce_rate and self.rng.random() < self.bounce_rate:
            dst.restart()
        self.delivered.append(m)
        dst.raw.step(m)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.now += 1
            for node in self.nodes.values():
                if node.alive:
                    node.raw.tick()
            self.settle()

    # -- conveniences ------------------------------------------------------------------

    def leader(self) -> Optional[Node]:
        """The live leader with the highest term, if any."""
        leaders = [n for n in self.nodes.values() if n.alive and n.role is Role.LEADER]
        return max(leaders, key=lambda n: n.term) if leaders else None

    def wait_leader(self, max_ticks: int = 200, among: Optional[Iterable[int]] = None) -> Node:
        among = set(among) if among is not None else None
        for _ in range(max_ticks):
            self.settle()
            ld = self.leader()
            if ld is not None and (among is None or ld.id in among):
                # Stable: a majority agrees on this leader.
                return ld
            self.tick()
        raise AssertionError("no leader elected")

    def propose(self, data: bytes) -> int:
        ld = self.wait_leader()
        index = ld.raw.propose(data)
        self.settle()
        return index


# =============================================================================================
# Elections


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_elect_exactly_one_leader_per_term(size, seed):
    """"Election Safety: at most one leader can be elected in a given term." (§5.2, Figure 3)"""
    net = Network(range(1, size + 1), seed)
    leader = net.wait_leader()
    net.tick(30)
    assert net.leader() is leader
    assert all(n.raw.leader == leader.id for n in net.nodes.values())
    assert len({n.term for n in net.nodes.values()}) == 1
    # Keep forcing elections by isolating whoever leads; the checker sees every leader.
    for _ in range(3):
        old = net.leader()
        net.isolate(old.id)
        new = net.wait_leader(among=set(net.nodes) - {old.id})
        assert new.term > old.term
        net.heal()
        net.tick(20)
    assert net.leader() is not None


def test_split_votes_resolve_with_randomized_timeouts():
    """"Raft uses randomized election timeouts to ensure that split votes are rare and that
    they are resolved quickly." (§5.2)"""
    for seed in range(10):
        net = Network(range(1, 6), seed, pre_vote=False, check_quorum=False)
        net.wait_leader(max_ticks=60)


# =============================================================================================
# Replication


def test_log_replication():
    """"Once a leader has been elected, it begins servicing client requests ... the leader
    appends the command to its log as a new entry, then issues AppendEntries RPCs in parallel
    to each of the other servers to replicate the entry." (§5.3)"""
    net = Network([1, 2, 3], seed=1)
    for i in range(20):
        net.propose(b"x%d" % i)
    net.tick(3)
    expect = [b"x%d" % i for i in range(20)]
    for n in net.nodes.values():
        assert n.data() == expect


def test_follower_catch_up_after_partition():
    """"If followers crash or run slowly, or if network packets are lost, the leader retries
    AppendEntries RPCs indefinitely ... until all followers eventually store all log
    entries." (§5.3)"""
    net = Network([1, 2, 3], seed=2)
    leader = net.wait_leader()
    lagging = next(i for i in net.nodes if i != leader.id)
    net.isolate(lagging)
    for i in range(30):
        leader.raw.propose(b"p%d" % i)
        net.tick()
    assert net.nodes[lagging].data() == []
    net.heal()
    net.tick(5)
    assert net.nodes[lagging].data() == [b"p%d" % i for i in range(30)]


def test_conflicting_entries_are_overwritten():
    """"If an existing entry conflicts with a new one (same index but different terms),
    delete the existing entry and all that follow it" (Figure 2, AppendEntries rule 3), and
    "the leader handles inconsistencies by forcing the followers' logs to duplicate its own."
    (§5.3)"""
    net = Network([1, 2, 3, 4, 5], seed=3)
    old = net.wait_leader()
    net.propose(b"committed")
    net.isolate(old.id)
    for i in range(3):
        old.raw.propose(b"lost%d" % i)  # never reaches anyone
    net.settle()
    assert len(old.raw.raft.log.unstable.entries) == 0  # persisted locally
    new = net.wait_leader(among=set(net.nodes) - {old.id})
    for i in range(3):
        new.raw.propose(b"kept%d" % i)
        net.settle()
    net.heal()
    net.tick(5)
    assert old.role is Role.FOLLOWER
    for n in net.nodes.values():
        assert n.data() == [b"committed", b"kept0", b"kept1", b"kept2"]
    log = old.storage.entries(1, old.storage.last_index() + 1)
    assert not any(e.data.startswith(b"lost") for e in log)


def make_storage(entries: list[tuple[int, int]], term: int, vote=None, voters=(1, 2, 3, 4, 5)):
    """A storage holding a snapshot at (1, 1) with the given membership, then entries given
    as (index, term), each carrying its own coordinates as data."""
    st = MemoryStorage()
    st.apply_snapshot(Snapshot(1, 1, ConfState(tuple(voters)), cbor2.dumps([])))
    st.append([Entry(i, t, EntryType.NORMAL, b"i%dt%d" % (i, t)) for i, t in entries])
    st.set_hard_state(HardState(term, vote, 1))
    return st


def test_figure_8_old_term_entry_is_not_committed_by_counting_replicas():
    """"a leader cannot immediately conclude that an entry from a previous term is committed
    once it is stored on a majority of servers. Figure 8 illustrates a situation where an old
    log entry is stored on a majority of servers, yet can still be overwritten by a future
    leader." (§5.4.2)

    Figure 8 replayed with indexes shifted by one. (b): S1 wrote a term-2 entry and crashed;
    S5 wrote a term-3 one. (c): with S5 down, S1 leads term 4 and spreads its term-2 entry to
    S2 and S3 -- a majority -- while its own term-4 entry reaches nobody; S1 must not commit.
    (d): S1 crashes, S5 wins term 5 with votes from S2, S3, S4 and overwrites the entry.
    Had S1 committed it (and applied it), the checker would see two values at index 2."""
    storages = {
        1: make_storage([(2, 2)], term=3),
        2: make_storage([], term=3),
        3: make_storage([], term=3),
        4: make_storage([], term=3),
        5: make_storage([(2, 3)], term=3),
    }
    net = Network(
        range(1, 6), seed=8, storages=storages, pre_vote=False, check_quorum=False,
        max_msg_size=1,
    )
    net.crash(5)
    net.drop_if = rejected_or_no_term(net, 4)
    s1 = net.nodes[1]
    s1.raw.campaign()
    net.tick(5)
    assert s1.role is Role.LEADER and s1.term == 4
    for i in (1, 2, 3):
        assert net.nodes[i].storage.term(2) == 2  # on a majority...
    assert s1.raw.raft.log.committed == 1  # ...and still not committed
    assert all(n.applied == 1 for n in net.nodes.values())

    net.crash(1)
    net.drop_if = None
    s5 = net.nodes[5]
    s5.restart()
    s5.raw.campaign()  # term 4: everyone already voted for S1
    net.settle()
    assert s5.role is Role.FOLLOWER and s5.term == 4
    s5.raw.campaign()
    net.settle()
    assert s5.role is Role.LEADER and s5.term == 5
    net.tick(5)
    for i in (2, 3, 4, 5):
        assert net.nodes[i].state[0][:2] == (2, 3)  # the term-3 entry won
    s1.restart()
    net.tick(5)
    assert s1.state[0][:2] == (2, 3)


def rejected_or_no_term(net: Network, term: int):
    """A drop rule: lose every MsgApp that would deliver an entry of ``term``; those the
    follower would reject (it lacks the preceding entry) still go through, so probing walks
    back and the follower receives the older entries one by one (with max_msg_size=1)."""

    def drop(m: Message) -> bool:
        return (
            type(m) is MsgApp
            and any(e.term == term for e in m.entries)
            and net.nodes[m.to].raw.raft.log.last_index() >= m.index
        )

    return drop


def test_figure_8_current_term_entry_commits_the_old_one():
    """"if S1 replicates an entry from its current term on a majority of the servers before
    crashing, as in (e), then this entry is committed (S5 cannot win an election). At this
    point all preceding entries in the log are committed as well." (§5.4.2)"""
    storages = {
        1: make_storage([(2, 2)], term=3),
        2: make_storage([(2, 2)], term=3),
        3: make_storage([], term=3),
        4: make_storage([], term=3),
        5: make_storage([(2, 3)], term=3),
    }
    net = Network(range(1, 6), seed=9, storages=storages, pre_vote=False)
    net.crash(5)
    net.nodes[1].raw.campaign()
    net.settle()
    s1 = net.leader()
    assert s1 is not None and s1.id == 1 and s1.term == 4
    net.tick(3)
    assert s1.raw.raft.log.committed == 3  # index 2 (term 2) under index 3 (term 4)
    net.crash(1)
    net.nodes[5].restart()
    net.nodes[5].raw.campaign()
    net.tick(50)
    leader = net.leader()
    assert leader.id != 5
    for i in (2, 3, 4, 5):
        assert net.nodes[i].state[0][:2] == (2, 2)


def test_leader_commits_nothing_of_an_old_term_until_its_own_entry_replicates():
    """"Raft never commits log entries from previous terms by counting replicas. Only log
    entries from the leader's current term are committed by counting replicas" (§5.4.2):
    the old entry reaches a majority, yet the commit index stays put until the new leader's
    own entry does."""
    voters = (1, 2, 3)
    storages = {
        1: make_storage([(2, 2)], term=3, voters=voters),
        2: make_storage([(2, 2)], term=3, voters=voters),
        3: make_storage([], term=3, voters=voters),
    }
    net = Network(voters, seed=10, storages=storages, pre_vote=False, max_msg_size=1)
    # S3 is probed down to index 2 and receives it; nobody receives S1's term-4 entry.
    net.drop_if = rejected_or_no_term(net, 4)
    net.nodes[1].raw.campaign()
    net.tick(5)
    s1 = net.nodes[1]
    assert s1.role is Role.LEADER and s1.term == 4
    assert net.nodes[3].storage.last_index() == 2  # term-2 entry on all three
    assert s1.raw.raft.log.committed == 1
    assert all(n.applied == 1 for n in net.nodes.values())
    net.drop_if = None
    net.tick(3)
    assert s1.raw.raft.log.committed == 3
    assert all(n.applied == 3 for n in net.nodes.values())


def test_leader_change_keeps_committed_entries():
    """"Leader Completeness: if a log entry is committed in a given term, then that entry will
    be present in the logs of the leaders for all higher-numbered terms." (§5.4, Figure 3)"""
    net = Network([1, 2, 3, 4, 5], seed=11)
    committed = []
    for round_ in range(4):
        leader = net.wait_leader()
        for i in range(3):
            data = b"r%di%d" % (round_, i)
            leader.raw.propose(data)
            committed.append(data)
            net.tick()
        net.tick(2)
        net.isolate(leader.id)
        new = net.wait_leader(among=set(net.nodes) - {leader.id})
        log = new.raw.raft.log
        entries = log.slice(log.first_index(), log.last_index() + 1)
        assert [e.data for e in entries if e.data and e.type is EntryType.NORMAL][
            : len(committed)
        ] == committed
        net.heal()
        net.tick(5)
    for n in net.nodes.values():
        assert n.data() == committed


# =============================================================================================
# Property: state machine safety under random faults


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.sampled_from([3, 5]),
    drop_rate=st.sampled_from([0.0, 0.05, 0.2]),
    max_delay=st.integers(0, 3),
    compact_every=st.sampled_from([0, 5]),
    max_msg_size=st.sampled_from([None, 1]),
    pre_vote=st.booleans(),
    check_quorum=st.booleans(),
)
def test_state_machine_safety_under_faults(
    seed, size, drop_rate, max_delay, compact_every, max_msg_size, pre_vote, check_quorum
):
    """"State Machine Safety: if a server has applied a log entry at a given index to its
    state machine, no other server will ever apply a different log entry for the same index."
    (§5.4.3, Figure 3) -- checked on every apply, under random partitions, drops, delays,
    reordering and crash/restarts; applied sequences must be prefixes of one another."""
    net = Network(
        range(1, size + 1), seed, compact_every=compact_every, max_msg_size=max_msg_size,
        pre_vote=pre_vote, check_quorum=check_quorum,
    )
    net.drop_rate = drop_rate
    net.max_delay = max_delay
    net.reorder = True
    net.bounce_rate = 0.005
    run_faults(net, random.Random(seed ^ 0x5EED), ticks=300)
    converge(net)
    states = sorted((n.state for n in net.nodes.values()), key=len)
    for shorter, longer in zip(states, states[1:]):
        assert longer[: len(shorter)] == shorter


def converge(net: Network) -> None:
    """Heal everything; a leader must emerge and every node must apply a new entry."""
    net.heal()
    net.drop_rate = 0.0
    net.bounce_rate = 0.0
    for n in net.nodes.values():
        if not n.alive:
            n.restart()
    for _ in range(10):
        leader = net.wait_leader(max_ticks=300)
        try:
            leader.raw.propose(b"final")
        except ProposalDropped:
            pass
        net.tick(20)
        if all(b"final" in n.data() for n in net.nodes.values()):
            return
    raise AssertionError("the healed group did not converge")


def run_faults(net: Network, rng: random.Random, ticks: int) -> None:
    """Random partitions (often cutting the leader off), crashes and restarts, with every
    live leader proposing about every other tick."""
    size = len(net.nodes)
    proposed = 0
    for _ in range(ticks):
        r = rng.random()
        leader = net.leader()
        if r < 0.04:
            k = rng.randint(1, size - 1)
            side = rng.sample(sorted(net.nodes), k)
            net.partition(side, [i for i in net.nodes if i not in side])
        elif r < 0.06 and leader is not None:
            net.isolate(leader.id)
        elif r < 0.10:
            net.heal()
        elif r < 0.12:
            victim = rng.choice(sorted(net.nodes))
            if net.nodes[victim].alive:
                net.crash(victim)
            else:
                net.nodes[victim].restart()
        elif r < 0.13 and leader is not None:
            net.crash(leader.id)
        elif r < 0.15:
            for n in net.nodes.values():
                if not n.alive:
                    n.restart()
        for n in net.nodes.values():
            if n.alive and n.role is Role.LEADER and rng.random() < 0.5:
                try:
                    n.raw.propose(b"v%d" % proposed)
                    proposed += 1
                except ProposalDropped:
                    pass
        net.tick()


def test_founder_that_lost_its_bootstrap_does_not_elect_itself_while_catching_up():
    """A founding member that crashed before persisting anything, and came back without its
    peers, replays the membership from the leader's log one entry at a time and passes
    through a membership in which it is the only voter. It follows the leader it hears from
    instead of electing itself from that stale view."""
    net = Network(range(1, 6), seed=27, max_msg_size=1)
    net.crash(1)  # before its first Ready was persisted
    net.wait_leader()
    for i in range(3):
        net.propose(b"f%d" % i)
    s1 = net.nodes[1]
    assert s1.storage.last_index() == 0
    s1.raw = s1._make_raw(None)  # restarts as if it were joining
    s1.alive = True
    net.tick(30)
    assert 1 not in net.leaders.values()
    assert s1.raw.conf_state().voters == (1, 2, 3, 4, 5)
    assert s1.data() == [b"f0", b"f1", b"f2"]


# =============================================================================================
# Snapshots


def test_snapshot_install_on_lagging_follower():
    """"the leader must occasionally send snapshots to followers that lag behind. This happens
    when the leader has already discarded the next log entry that it needs to send to a
    follower." (§7)"""
    net = Network([1, 2, 3], seed=12, compact_every=4)
    leader = net.wait_leader()
    lagging = next(i for i in net.nodes if i != leader.id)
    net.isolate(lagging)
    for i in range(20):
        leader.raw.propose(b"s%d" % i)
        net.tick()
    assert leader.storage.first_index() > net.nodes[lagging].storage.last_index() + 1
    net.delivered.clear()
    net.heal()
    net.tick(5)
    snaps = [m for m in net.delivered if type(m) is MsgSnap]
    assert snaps and snaps[0].to == lagging
    follower = net.nodes[lagging]
    assert follower.storage.snapshot().index >= snaps[0].snapshot.index
    assert follower.data() == [b"s%d" % i for i in range(20)]
    leader.raw.propose(b"after")
    net.tick(2)
    assert follower.data()[-1] == b"after"


def test_dropped_snapshot_is_retried():
    """A snapshot lost in transit is reported back and sent again on a later probe."""
    net = Network([1, 2, 3], seed=13, compact_every=4)
    leader = net.wait_leader()
    lagging = next(i for i in net.nodes if i != leader.id)
    net.isolate(lagging)
    for i in range(12):
        leader.raw.propose(b"s%d" % i)
        net.tick()
    net.heal()
    drops = [0]

    def drop_first_snapshot(m):
        if type(m) is MsgSnap and drops[0] == 0:
            drops[0] += 1
            return True
        return False

    net.drop_if = drop_first_snapshot
    net.tick(10)
    assert drops[0] == 1
    assert net.nodes[lagging].data() == [b"s%d" % i for i in range(12)]


# =============================================================================================
# Membership


def test_add_node():
    """"Raft restricts the types of changes that are allowed: only one server can be added or
    removed from the cluster at a time." (dissertation §4.1) The new server learns the log,
    including the membership history, from the leader."""
    net = Network([1, 2, 3], seed=14)
    net.propose(b"before")
    leader = net.wait_leader()
    net.add_node(4)
    leader.raw.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    net.tick(5)
    for n in net.nodes.values():
        assert n.raw.conf_state().voters == (1, 2, 3, 4)
    assert net.nodes[4].data() == [b"before"]
    net.propose(b"after")
    net.tick(2)
    assert net.nodes[4].data() == [b"before", b"after"]
    # Four voters need three for a quorum: two down means no progress.
    others = [i for i in (1, 2, 3) if i != leader.id]
    net.crash(others[0])
    net.crash(others[1])
    leader.raw.propose(b"stuck")
    net.tick(3)
    assert b"stuck" not in leader.data()


def test_add_node_after_compaction_uses_snapshot():
    """A server added after the log was compacted starts from a snapshot, which carries the
    membership."""
    net = Network([1, 2, 3], seed=15, compact_every=3)
    for i in range(10):
        net.propose(b"c%d" % i)
    leader = net.wait_leader()
    net.add_node(4)
    leader.raw.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    net.delivered.clear()
    net.tick(5)
    assert any(type(m) is MsgSnap and m.to == 4 for m in net.delivered)
    assert net.nodes[4].raw.conf_state().voters == (1, 2, 3, 4)
    assert net.nodes[4].data() == [b"c%d" % i for i in range(10)]


def test_remove_node():
    """"Without additional mechanism, servers not in Cnew can disrupt the cluster."
    (dissertation §4.2.3) The group continues with the rest; the removed server, which no
    longer hears from a leader and keeps timing out, changes nobody's term (pre-vote, and
    votes ignored while a leader is heard from)."""
    net = Network([1, 2, 3], seed=16)
    leader = net.wait_leader()
    net.tick(2)
    victim = next(i for i in net.nodes if i != leader.id)
    # Cut off first, so the victim never learns it was removed and still campaigns.
    net.isolate(victim)
    leader.raw.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, victim))
    net.tick(3)
    assert leader.raw.conf_state().voters == tuple(sorted(set(net.nodes) - {victim}))
    assert net.nodes[victim].raw.conf_state().voters == (1, 2, 3)
    term = leader.term
    net.heal()
    net.delivered.clear()
    net.tick(100)
    assert any(type(m) is MsgPreVote and m.from_ == victim for m in net.delivered)
    assert net.leader() is leader and leader.term == term
    net.propose(b"two")
    assert b"two" in leader.data() and b"two" not in net.nodes[victim].data()


def test_remove_leader_elects_a_new_one():
    """"a leader that is removed from the configuration steps down once the Cnew entry is
    committed." (dissertation §4.2.2) Here: once applied. The remaining voters then elect a
    leader among themselves."""
    net = Network([1, 2, 3], seed=17)
    leader = net.wait_leader()
    leader.raw.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, leader.id))
    net.tick(2)
    assert leader.role is Role.FOLLOWER
    new = net.wait_leader(among=set(net.nodes) - {leader.id})
    new.raw.propose(b"next")
    net.tick(2)
    assert b"next" in new.data()


def test_only_one_conf_change_at_a_time():
    """"The configuration change is complete once the Cnew entry is committed." (dissertation
    §4.1) Only then may the next one start; here the leader waits until it is applied, and a
    new leader also waits for an entry of its own term."""
    net = Network([1, 2, 3], seed=18)
    leader = net.wait_leader()
    net.tick(2)
    net.add_node(4)
    net.add_node(5)
    leader.raw.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    with pytest.raises(ProposalDropped):
        leader.raw.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 5))
    net.tick(3)
    leader.raw.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 5))
    net.tick(3)
    assert leader.raw.conf_state().voters == (1, 2, 3, 4, 5)


def test_shrinking_to_one_voter_leads_alone():
    """After removing both peers, the last voter commits on its own."""
    net = Network([1, 2, 3], seed=19)
    leader = net.wait_leader()
    for other in [i for i in net.nodes if i != leader.id]:
        net.tick(2)
        leader.raw.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, other))
        net.tick(2)
    assert leader.raw.conf_state().voters == (leader.id,)
    for i in list(net.nodes):
        if i != leader.id:
            net.crash(i)
    leader.raw.propose(b"alone")
    net.settle()
    assert leader.data()[-1] == b"alone"


# =============================================================================================
# Leadership transfer, check-quorum, pre-vote


def test_leadership_transfer():
    """"The prior leader sends a TimeoutNow request to the target server. This request has the
    same effect as the target server's election timer firing" (dissertation §3.10); the
    target wins without waiting for an election timeout."""
    net = Network([1, 2, 3], seed=20)
    leader = net.wait_leader()
    net.propose(b"a")
    target = next(i for i in net.nodes if i != leader.id)
    net.delivered.clear()
    leader.raw.transfer_leadership(target)
    net.settle()
    assert net.nodes[target].role is Role.LEADER
    assert net.nodes[target].term == leader.term
    assert leader.role is Role.FOLLOWER
    assert any(type(m) is MsgTimeoutNow for m in net.delivered)
    assert any(type(m) is MsgVote and m.transfer for m in net.delivered)
    net.propose(b"b")
    assert net.nodes[target].data() == [b"a", b"b"]


def test_leadership_transfer_to_lagging_follower_catches_it_up_first():
    """"The prior leader stops accepting new client requests." then "The prior leader fully
    updates the target server's log to match its own, using the normal log replication
    mechanism" (dissertation §3.10), and only then sends TimeoutNow."""
    net = Network([1, 2, 3], seed=21)
    leader = net.wait_leader()
    target = next(i for i in net.nodes if i != leader.id)
    net.isolate(target)
    for i in range(5):
        leader.raw.propose(b"t%d" % i)
        net.tick()
    net.heal()
    leader.raw.transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        leader.raw.propose(b"refused")
    net.settle()
    assert net.nodes[target].role is Role.LEADER
    assert net.nodes[target].data() == [b"t%d" % i for i in range(5)]


def test_leadership_transfer_aborts_after_election_timeout():
    """"If leadership transfer does not complete after about an election timeout, the prior
    leader aborts the transfer and resumes accepting client requests." (dissertation §3.10)"""
    net = Network([1, 2, 3], seed=22)
    leader = net.wait_leader()
    target = next(i for i in net.nodes if i != leader.id)
    net.crash(target)
    leader.raw.transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        leader.raw.propose(b"x")
    net.tick(net.election_tick)
    assert leader.role is Role.LEADER
    leader.raw.propose(b"x")


def test_check_quorum_leader_steps_down():
    """"a leader steps down if an election timeout elapses without a successful round of
    heartbeats to a majority of its cluster" (dissertation §6.2)."""
    net = Network([1, 2, 3, 4, 5], seed=23)
    leader = net.wait_leader()
    net.isolate(leader.id)
    net.tick(net.election_tick * 2)
    assert leader.role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        leader.raw.propose(b"x")
    new = net.wait_leader(among=set(net.nodes) - {leader.id})
    net.heal()
    net.tick(5)
    assert leader.raw.leader == new.id


def test_pre_vote_keeps_partitioned_node_from_disrupting():
    """"In the Pre-Vote algorithm, a candidate only increments its term if it first learns
    from a majority of the cluster that they would be willing to grant the candidate their
    votes" (dissertation §9.6): an isolated follower rejoins without deposing the leader."""
    net = Network([1, 2, 3], seed=24)
    leader = net.wait_leader()
    term = leader.term
    follower = next(i for i in net.nodes if i != leader.id)
    net.isolate(follower)
    net.tick(100)
    assert net.nodes[follower].term == term
    net.heal()
    net.tick(5)
    assert net.leader() is leader and leader.term == term


def test_without_pre_vote_isolated_node_inflates_its_term():
    """The contrast: without pre-vote the isolated node's term grows with each timeout, and
    on rejoining it forces a new election (which it cannot win with its stale log)."""
    net = Network([1, 2, 3], seed=25, pre_vote=False, check_quorum=False)
    leader = net.wait_leader()
    term = leader.term
    follower = next(i for i in net.nodes if i != leader.id)
    net.isolate(follower)
    leader.raw.propose(b"x")
    net.tick(100)
    assert net.nodes[follower].term > term + 2
    net.heal()
    net.tick(net.election_tick * 3)
    new = net.wait_leader()
    assert new.term > term and new.id != follower


def test_figure_7_logs_converge():
    """"When the leader at the top comes to power, it is possible that any of scenarios (a-f)
    could occur in follower logs." (Figure 7) -- missing entries, extra uncommitted entries,
    or both; the leader brings every one of them in line with its own log."""
    leader_log = [(2, 1), (3, 1), (4, 4), (5, 4), (6, 5), (7, 5), (8, 6), (9, 6), (10, 6)]
    follower_logs = {
        2: [(2, 1), (3, 1), (4, 4), (5, 4), (6, 5), (7, 5), (8, 6), (9, 6)],  # (a)
        3: [(2, 1), (3, 1), (4, 4)],  # (b)
        4: [(2, 1), (3, 1), (4, 4), (5, 4), (6, 5), (7, 5), (8, 6), (9, 6), (10, 6), (11, 6)],
        5: [(2, 1), (3, 1), (4, 4), (5, 4), (6, 5), (7, 5), (8, 6), (9, 6), (10, 6), (11, 7),
            (12, 7)],  # (d)
        6: [(2, 1), (3, 1), (4, 4), (5, 4), (6, 4), (7, 4)],  # (e)
        7: [(2, 1), (3, 1), (4, 2), (5, 2), (6, 2), (7, 3), (8, 3), (9, 3), (10, 3), (11, 3)],
    }
    ids = range(1, 8)
    storages = {1: make_storage(leader_log, term=8, voters=ids)}
    for i, log in follower_logs.items():
        storages[i] = make_storage(log, term=8, voters=ids)
    net = Network(ids, seed=26, storages=storages, pre_vote=False)
    # (c) and (d) hold longer logs, so they must not be the ones to stand; crash them.
    net.crash(4)
    net.crash(5)
    net.nodes[1].raw.campaign()
    net.settle()
    assert net.nodes[1].role is Role.LEADER
    net.nodes[4].restart()
    net.nodes[5].restart()
    net.tick(10)
    expect = net.nodes[1].storage.entries(2, net.nodes[1].storage.last_index() + 1)
    for i in ids:
        st_ = net.nodes[i].storage
        assert st_.entries(2, st_.last_index() + 1) == expect
