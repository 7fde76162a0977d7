"""The RAFT consensus core: a pure state machine in the shape of etcd-io/raft.

Theory of operation
-------------------
`Raft` owns one node's view of one group: its term and vote, its log (`RaftLog`: stable
entries in `Storage` plus an in-memory unstable tail), the membership (a set of voter ids) and,
when leading, a `Progress` per voter. It never performs I/O, never reads a clock and never
starts a thread. Three things move it forward:

* ``tick()`` -- one unit of logical time. Followers and candidates count towards a randomized
  election timeout (jitter from the injected ``random.Random``, so runs are reproducible);
  leaders count towards heartbeats and, with check-quorum, verify once per election timeout
  that a quorum was heard from.
* ``step(msg)`` -- a message from a peer. Term rules shared by every role are applied here;
  the rest goes to ``self._step``, which is swapped with the role (``_step_follower``,
  ``_step_candidate`` for both candidate kinds, ``_step_leader``), as is ``self._tick``. No
  other code asks "which role am I?" to decide how to handle a message.
* local calls -- ``propose``, ``hup`` (campaign), ``transfer_leadership``,
  ``apply_conf_change``.

Effects accumulate instead of happening: outgoing messages in ``msgs``, new entries in the
unstable log, commit advances in ``RaftLog.committed``. `RawNode.ready()` packages them into a
`Ready`, which the application must handle in this order: persist ``snapshot``,
``entries`` and ``hard_state``; then send ``messages``; then apply ``committed_entries``;
then call ``advance(ready)``. Persisting first is what makes votes and acknowledgements safe: no
peer can see a vote or an append acknowledgement that a crash could forget.

Guarantees (Raft paper, §5): at most one leader per term; a candidate wins only with a log at
least as up to date as a majority (§5.4.1); a leader commits by counting replicas only entries
of its own term (§5.4.2), previous-term entries being committed indirectly; a follower
truncates conflicting uncommitted entries and never a committed one (an attempt raises);
any message with a higher term demotes a leader or candidate. Pre-vote (dissertation §9.6)
keeps a partitioned node from inflating terms, and check-quorum makes a leader that cannot
reach a majority step down, which in turn lets voters ignore vote requests while they hear
from a live leader (the "lease").

Membership changes are single-server (dissertation §4.1): a `ConfChange` entry takes effect
when the application has applied it (as in etcd; the dissertation adopts it on append), at
most one may be unapplied, and a new leader may not propose one before an entry of its own
term is applied (the fix for the bug described on the raft-dev list in 2015). A group whose only voter is this node elects itself without messages,
so the single-server path costs one Ready/advance cycle per proposal batch.

Costs: a proposal is O(1) plus one MsgApp per follower; computing the commit index sorts the
voters' match indexes (tiny groups); `Progress.inflights` bounds the unacknowledged MsgApps
per follower so a dead follower cannot make the leader buffer unboundedly.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from typing import Callable, Optional

import attrs

from .log import RaftLog
from .messages import (
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message, MsgApp,
    MsgAppResp, MsgHeartbeat, MsgHeartbeatResp, MsgPreVote, MsgPreVoteResp, MsgSnap,
    MsgTimeoutNow, MsgVote, MsgVoteResp, Ready, Role, Snapshot, SoftState, Status,
)
from .storage import SnapshotTemporarilyUnavailableError, Storage, StorageError

__all__ = [
    "Config", "NotLeader", "Progress", "ProgressState", "ProposalDropped", "Raft", "RaftError",
    "RawNode",
]


class RaftError(Exception):
    pass


class ProposalDropped(RaftError):
    """The leader refused the proposal (transfer in progress, conf change pending, removed)."""


class NotLeader(ProposalDropped):
    """This node is not the leader; ``leader`` is the one it knows of, or None."""

    def __init__(self, leader: Optional[int]) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


@attrs.define(eq=False)
class Config:
    """Args:
    id: this node's id (non-zero).
    election_tick: ticks without hearing from a leader before campaigning; the actual
        timeout is drawn from [election_tick, 2 * election_tick).
    heartbeat_tick: ticks between leader heartbeats; must be smaller than election_tick.
    rng: source of election jitter; seed it for reproducible runs.
    applied: last index the application had applied before a restart.
    max_msg_size: bytes of entry data per MsgApp (at least one entry is always sent).
    max_inflight: unacknowledged MsgApps per follower while replicating.
    check_quorum: leaders step down when a quorum went silent for an election timeout.
    pre_vote: run a pre-election before bumping the term.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    rng: random.Random = attrs.field()
    applied: int = 0
    max_msg_size: Optional[int] = 1 << 20
    max_inflight: int = 256
    check_quorum: bool = True
    pre_vote: bool = True

    @rng.default
    def _rng(self) -> random.Random:
        return random.Random(self.id)

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("node id must be positive")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight <= 0:
            raise ValueError("max_inflight must be positive")


# ---------------------------------------------------------------------------------------------
# Replication progress of one follower, as tracked by the leader.


class ProgressState(enum.Enum):
    #: One MsgApp at a time until the follower's match is found.
    PROBE = "probe"
    #: Match known: stream MsgApps optimistically, up to max_inflight unacknowledged.
    REPLICATE = "replicate"
    #: The follower needs compacted entries; a MsgSnap is in flight, appends are paused.
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "match", "next", "state", "paused", "pending_snapshot", "recent_active",
        "inflights", "max_inflight",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False
        self.pending_snapshot = 0
        self.recent_active = False
        # Last index carried by each unacknowledged MsgApp, oldest first.
        self.inflights: deque[int] = deque()
        self.max_inflight = max_inflight

    def __repr__(self) -> str:
        return f"Progress({self.state.value}, match={self.match}, next={self.next})"

    def _reset_state(self, state: ProgressState) -> None:
        self.paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.clear()

    def become_probe(self) -> None:
        # After a snapshot, probing starts right past it: the follower has at least that.
        floor = self.pending_snapshot if self.state is ProgressState.SNAPSHOT else 0
        self._reset_state(ProgressState.PROBE)
        self.next = max(self.match + 1, floor + 1)

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = index

    def maybe_update(self, index: int) -> bool:
        updated = index > self.match
        if updated:
            self.match = index
            self.paused = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # stale rejection
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # answers an older probe
        self.next = max(min(rejected, match_hint + 1), 1)
        self.paused = False
        return True

    def sent_entries(self, last_index: int, count: int) -> None:
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.append(last_index)
            self.paused = len(self.inflights) >= self.max_inflight
        elif self.state is ProgressState.PROBE and count:
            self.paused = True

    def free_le(self, index: int) -> None:
        while self.inflights and self.inflights[0] <= index:
            self.inflights.popleft()
        self.paused = len(self.inflights) >= self.max_inflight

    def is_paused(self) -> bool:
        return self.state is ProgressState.SNAPSHOT or self.paused


# ---------------------------------------------------------------------------------------------


class _Campaign(enum.Enum):
    PRE_ELECTION = "pre-election"
    ELECTION = "election"
    TRANSFER = "transfer"


_RESPONSES = (MsgAppResp, MsgHeartbeatResp, MsgVoteResp, MsgPreVoteResp)


class Raft:
    """One node of one RAFT group; see the module docstring."""

    _step: Callable[[Message], None]
    _tick: Callable[[], None]

    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.id = config.id
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.rng = config.rng
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.max_msg_size = config.max_msg_size
        self.max_inflight = config.max_inflight

        self.log = RaftLog(storage)
        hs, cs = storage.initial_state()
        self.term = hs.term
        self.vote = hs.vote
        if hs.commit > self.log.last_index():
            raise RaftError(f"hard state commit {hs.commit} is past the log end")
        self.log.commit_to(hs.commit)
        self.voters: set[int] = set(cs.voters)
        self.progress: dict[int, Progress] = {}
        self.msgs: list[Message] = []
        self.lead: Optional[int] = None
        self.role = Role.FOLLOWER
        self.lead_transferee: Optional[int] = None
        self.pending_conf_index = 0
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout

        if config.applied > self.log.applied:
            # The storage's membership is as of its snapshot; conf changes applied since then
            # (before the restart) are replayed so this node knows its peers again.
            if config.applied > self.log.committed:
                raise RaftError(f"applied {config.applied} is past commit {self.log.committed}")
            for e in self.log.slice(self.log.applied + 1, config.applied + 1):
                if e.type is EntryType.CONF_CHANGE:
                    self._apply_membership(ConfChange.decode(e.data))
            self.log.applied_to(config.applied)
        self.become_follower(self.term, None)

    def __repr__(self) -> str:
        return f"Raft({self.id}, {self.role.value}, term={self.term}, lead={self.lead}, {self.log})"

    # -- state views ---------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def conf_state(self) -> ConfState:
        return ConfState(tuple(sorted(self.voters)))

    def promotable(self) -> bool:
        return self.id in self.voters

    def status(self) -> Status:
        progress = {}
        if self.role is Role.LEADER:
            progress = {
                i: (p.state, p.match, p.next) for i, p in self.progress.items() if i != self.id
            }
        return Status(
            self.id, self.term, self.vote, self.log.committed, self.log.applied, self.lead,
            self.role, tuple(sorted(self.voters)), progress,
        )

    # -- role transitions ----------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        self.lead_transferee = None
        self.votes = {}
        last = self.log.last_index()
        self.progress = {v: Progress(last + 1, self.max_inflight) for v in self.voters}
        if self.id in self.progress:
            self.progress[self.id].match = last
        self.pending_conf_index = 0

    def become_follower(self, term: int, lead: Optional[int]) -> None:
        self._step = self._step_follower
        self._tick = self._tick_election
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise RaftError("leader cannot become pre-candidate")
        # Neither the term nor the vote changes: a pre-election must not disturb anyone.
        self._step = self._step_candidate
        self._tick = self._tick_election
        self.votes = {}
        self.lead = None
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise RaftError("leader cannot become candidate")
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise RaftError("follower cannot become leader without an election")
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.progress[self.id].become_replicate()
        self.progress[self.id].recent_active = True
        # An entry of the new term lets earlier-term entries commit (§5.4.2: they cannot be
        # committed by counting replicas, only under a current-term entry).
        self._append_entries([Entry(0, 0)])
        # No conf change until that entry is applied: a new leader that changed membership
        # before committing in its own term could let two disjoint majorities decide.
        self.pending_conf_index = self.log.last_index()

    # -- time ----------------------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self._check_quorum()
            # A transfer that has not finished within an election timeout has failed.
            if self.role is Role.LEADER and self.lead_transferee is not None:
                self.lead_transferee = None
        if self.role is not Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _check_quorum(self) -> None:
        me = self.progress.get(self.id)
        if me is not None:
            me.recent_active = True
        active = sum(1 for v in self.voters if self.progress[v].recent_active)
        if active < len(self.voters) // 2 + 1:
            self.become_follower(self.term, None)
            return
        for v, pr in self.progress.items():
            if v != self.id:
                pr.recent_active = False

    # -- elections -----------------------------------------------------------------------

    def hup(self, transfer: bool = False) -> None:
        """Start an election if this node may: voter, not leader, no unapplied conf change."""
        if self.role is Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_changes():
            # The membership this node would campaign in may already be obsolete.
            return
        if transfer:
            self._campaign(_Campaign.TRANSFER)
        elif self.pre_vote:
            self._campaign(_Campaign.PRE_ELECTION)
        else:
            self._campaign(_Campaign.ELECTION)

    def _has_unapplied_conf_changes(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        ents = self.log.slice(self.log.applied + 1, self.log.committed + 1)
        return any(e.type is EntryType.CONF_CHANGE for e in ents)

    def _campaign(self, kind: _Campaign) -> None:
        if kind is _Campaign.PRE_ELECTION:
            self.become_pre_candidate()
            term = self.term + 1
        else:
            self.become_candidate()
            term = self.term
        if self._poll(self.id, True) == "won":
            if kind is _Campaign.PRE_ELECTION:
                self._campaign(_Campaign.ELECTION)
            else:
                self.become_leader()
            return
        index, log_term = self.log.last_index(), self.log.last_term()
        for v in sorted(self.voters):
            if v == self.id:
                continue
            if kind is _Campaign.PRE_ELECTION:
                self.msgs.append(
                    MsgPreVote(term=term, from_=self.id, to=v, log_term=log_term, index=index)
                )
            else:
                self.msgs.append(MsgVote(
                    term=term, from_=self.id, to=v, log_term=log_term, index=index,
                    transfer=kind is _Campaign.TRANSFER,
                ))

    def _poll(self, voter: int, granted: bool) -> str:
        self.votes.setdefault(voter, granted)
        yes = sum(1 for v in self.voters if self.votes.get(v) is True)
        no = sum(1 for v in self.voters if self.votes.get(v) is False)
        quorum = len(self.voters) // 2 + 1
        if yes >= quorum:
            return "won"
        if len(self.voters) - no < quorum:
            return "lost"
        return "pending"

    def _campaign_if_alone(self) -> None:
        """A sole voter needs nobody's vote: elect itself now instead of after a timeout.
        Not while it follows a leader, though: then its membership may be a stale one it is
        replaying from the leader's log, and the election timer is the arbiter, as usual."""
        if (
            self.role is not Role.LEADER
            and self.lead is None
            and len(self.voters) == 1
            and self.id in self.voters
        ):
            self.hup()

    # -- messages ------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        mtype = type(m)
        if m.term > self.term:
            if mtype is MsgVote or mtype is MsgPreVote:
                force = mtype is MsgVote and m.transfer
                in_lease = (
                    self.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.election_timeout
                )
                if in_lease and not force:
                    # Dissertation §4.2.3: a server that heard from a leader within the
                    # minimum election timeout neither updates its term nor grants its vote,
                    # so a removed or partitioned server cannot depose a healthy leader.
                    return
            if mtype is MsgPreVote:
                pass  # a pre-vote never changes our term
            elif mtype is MsgPreVoteResp and not m.reject:
                pass  # granted for the future term we asked about; the poll decides
            elif mtype is MsgApp or mtype is MsgHeartbeat or mtype is MsgSnap:
                self.become_follower(m.term, m.from_)
            elif mtype is MsgVote:
                # Figure 2 restarts the election timer only on hearing from a leader or on
                # granting a vote; a rejected candidate with a stale log must not hold back
                # the servers that could win, or it can delay every election it triggers.
                elapsed = self.election_elapsed
                self.become_follower(m.term, None)
                self.election_elapsed = elapsed
            else:
                self.become_follower(m.term, None)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and (mtype is MsgApp or mtype is MsgHeartbeat):
                # A stale leader (e.g. one healing from a partition) would otherwise never
                # learn the new term: with check-quorum and pre-vote we ignore the votes that
                # used to carry it. Our response has our term and makes it step down.
                self.msgs.append(MsgAppResp(term=self.term, from_=self.id, to=m.from_))
            elif mtype is MsgPreVote:
                self.msgs.append(
                    MsgPreVoteResp(term=self.term, from_=self.id, to=m.from_, reject=True)
                )
            return

        if mtype is MsgVote or mtype is MsgPreVote:
            self._handle_vote_request(m)
        else:
            self._step(m)

    def _handle_vote_request(self, m: "MsgVote | MsgPreVote") -> None:
        resp = MsgVoteResp if type(m) is MsgVote else MsgPreVoteResp
        can_vote = (
            self.vote == m.from_
            or (self.vote is None and self.lead is None)
            or (type(m) is MsgPreVote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # The grant carries the candidate's term, which a pre-candidate has not taken yet.
            self.msgs.append(resp(term=m.term, from_=self.id, to=m.from_))
            if type(m) is MsgVote:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self.msgs.append(resp(term=self.term, from_=self.id, to=m.from_, reject=True))

    def _step_follower(self, m: Message) -> None:
        mtype = type(m)
        if mtype is MsgApp:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append_entries(m)
        elif mtype is MsgHeartbeat:
            self.election_elapsed = 0
            self.lead = m.from_
            self.log.commit_to(m.commit)
            self.msgs.append(MsgHeartbeatResp(term=self.term, from_=self.id, to=m.from_))
        elif mtype is MsgSnap:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif mtype is MsgTimeoutNow:
            self.hup(transfer=True)

    def _step_candidate(self, m: Message) -> None:
        mtype = type(m)
        if mtype is MsgApp or mtype is MsgHeartbeat or mtype is MsgSnap:
            # Someone won this term (for a pre-candidate: is leading the current one).
            self.become_follower(m.term, m.from_)
            self._step_follower(m)
        elif (mtype is MsgPreVoteResp and self.role is Role.PRE_CANDIDATE) or (
            mtype is MsgVoteResp and self.role is Role.CANDIDATE
        ):
            result = self._poll(m.from_, not m.reject)
            if result == "won":
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(_Campaign.ELECTION)
                else:
                    self.become_leader()
                    self._bcast_append()
            elif result == "lost":
                self.become_follower(self.term, None)

    def _step_leader(self, m: Message) -> None:
        mtype = type(m)
        pr = self.progress.get(m.from_)
        if pr is None:
            return
        if mtype is MsgAppResp:
            pr.recent_active = True
            if m.reject:
                hint = m.reject_hint
                if m.log_term > 0:
                    hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decr_to(m.index, hint):
                    if pr.state is ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(m.from_)
                return
            was_paused = pr.is_paused()
            if not pr.maybe_update(m.index):
                return
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
                # Caught up from the snapshot, whatever index it actually was at.
                pr.become_probe()
                pr.become_replicate()
            elif pr.state is ProgressState.REPLICATE:
                pr.free_le(m.index)
            if self._maybe_commit():
                self._bcast_append()
            elif was_paused:
                self._send_append(m.from_)
            # Freed window: send what is pending, but no empty commit-only messages.
            while self._maybe_send_append(m.from_, send_if_empty=False):
                pass
            if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
                self._send_timeout_now(m.from_)
        elif mtype is MsgHeartbeatResp:
            pr.recent_active = True
            pr.paused = False
            if pr.state is ProgressState.REPLICATE and len(pr.inflights) >= pr.max_inflight:
                # Let one MsgApp through, so a window of lost messages cannot stall us.
                pr.inflights.popleft()
            if pr.match < self.log.last_index():
                self._send_append(m.from_)

    # -- follower side of replication ----------------------------------------------------

    def _handle_append_entries(self, m: MsgApp) -> None:
        if m.index < self.log.committed:
            self.msgs.append(
                MsgAppResp(term=self.term, from_=self.id, to=m.from_, index=self.log.committed)
            )
            return
        last = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self.msgs.append(MsgAppResp(term=self.term, from_=self.id, to=m.from_, index=last))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self.msgs.append(MsgAppResp(
            term=self.term, from_=self.id, to=m.from_, index=m.index, reject=True,
            reject_hint=hint_index, log_term=hint_term,
        ))

    def _handle_snapshot(self, m: MsgSnap) -> None:
        index = self.log.last_index() if self._restore(m.snapshot) else self.log.committed
        self.msgs.append(MsgAppResp(term=self.term, from_=self.id, to=m.from_, index=index))

    def _restore(self, snap: Snapshot) -> bool:
        if snap.index <= self.log.committed:
            return False
        if self.role is not Role.FOLLOWER:
            # Only a follower is sent snapshots; stepping aside is the safe reaction.
            self.become_follower(self.term + 1, None)
            return False
        if self.log.match_term(snap.index, snap.term):
            # We already hold the snapshot's last entry, hence (log matching) all before it.
            self.log.commit_to(snap.index)
            return False
        self.log.restore(snap)
        self.voters = set(snap.conf_state.voters)
        last = self.log.last_index()
        self.progress = {v: Progress(last + 1, self.max_inflight) for v in self.voters}
        if self.id in self.progress:
            self.progress[self.id].match = last
        return True

    # -- leader side of replication ------------------------------------------------------

    def _append_entries(self, ents: list[Entry]) -> int:
        last = self.log.last_index()
        ents = [Entry(last + 1 + i, self.term, e.type, e.data) for i, e in enumerate(ents)]
        last = self.log.append(ents)
        self.progress[self.id].maybe_update(last)
        self._maybe_commit()
        return last

    def _maybe_commit(self) -> bool:
        matches = sorted((self.progress[v].match for v in self.voters), reverse=True)
        if not matches:
            return False
        return self.log.maybe_commit(matches[len(matches) // 2], self.term)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        try:
            prev_term = self.log.term(prev)
            if pr.state is ProgressState.REPLICATE and len(pr.inflights) >= pr.max_inflight:
                ents: list[Entry] = []
            else:
                ents = self.log.entries_from(pr.next, self.max_msg_size)
        except StorageError:
            # The entries the follower needs were compacted away.
            return send_if_empty and self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.msgs.append(MsgApp(
            term=self.term, from_=self.id, to=to, log_term=prev_term, index=prev,
            entries=tuple(ents), commit=self.log.committed,
        ))
        pr.sent_entries(ents[-1].index if ents else prev, len(ents))
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # don't ship a snapshot to a node that may be down
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.is_empty:
            raise RaftError(f"entries for {to} are compacted but there is no snapshot")
        pr.become_snapshot(snap.index)
        self.msgs.append(MsgSnap(term=self.term, from_=self.id, to=to, snapshot=snap))
        return True

    def _bcast_append(self) -> None:
        for v in self.progress:
            if v != self.id:
                self._send_append(v)

    def _bcast_heartbeat(self) -> None:
        for v, pr in self.progress.items():
            if v != self.id:
                # Never let a follower commit past what it is known to share with us.
                commit = min(pr.match, self.log.committed)
                self.msgs.append(MsgHeartbeat(term=self.term, from_=self.id, to=v, commit=commit))

    def _send_timeout_now(self, to: int) -> None:
        self.msgs.append(MsgTimeoutNow(term=self.term, from_=self.id, to=to))

    # -- local requests ------------------------------------------------------------------

    def propose(self, data: bytes, entry_type: EntryType = EntryType.NORMAL) -> int:
        """Append ``data`` as a new entry; returns its index. Raises `NotLeader` on a
        follower and `ProposalDropped` when the leader cannot take proposals right now."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if self.id not in self.progress:
            raise ProposalDropped("this node was removed from the group")
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        if entry_type is EntryType.CONF_CHANGE:
            if self.pending_conf_index > self.log.applied:
                raise ProposalDropped(
                    f"a conf change is pending (index {self.pending_conf_index}, "
                    f"applied {self.log.applied})"
                )
            self.pending_conf_index = self.log.last_index() + 1
        index = self._append_entries([Entry(0, 0, entry_type, data)])
        self._bcast_append()
        return index

    def transfer_leadership(self, to: int) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if to not in self.voters:
            raise RaftError(f"{to} is not a voter")
        if self.lead_transferee is not None:
            if self.lead_transferee == to:
                return
            self.lead_transferee = None
        if to == self.id:
            return
        # The transfer must finish within an election timeout, counted from now.
        self.election_elapsed = 0
        self.lead_transferee = to
        if self.progress[to].match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_append(to)

    def report_unreachable(self, node: int) -> None:
        pr = self.progress.get(node)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node: int, ok: bool) -> None:
        pr = self.progress.get(node)
        if self.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the next heartbeat response before probing, as after any other send.
        pr.paused = True

    def _apply_membership(self, cc: ConfChange) -> None:
        if cc.type is ConfChangeType.ADD_NODE:
            if cc.node_id in self.voters:
                return
            self.voters.add(cc.node_id)
            pr = Progress(self.log.last_index() + 1, self.max_inflight)
            # A new member gets the benefit of the doubt: check-quorum must not count it
            # as dead before it had a chance to answer, and it needs a snapshot now.
            pr.recent_active = True
            self.progress[cc.node_id] = pr
        else:
            self.voters.discard(cc.node_id)
            self.progress.pop(cc.node_id, None)

    def apply_conf_change(self, cc: ConfChange) -> None:
        """Adopt a committed membership change (called by `RawNode.advance`)."""
        self._apply_membership(cc)
        if self.role is not Role.LEADER:
            return
        if self.id not in self.voters:
            # A removed leader steps aside; the remaining voters elect one among themselves.
            self.become_follower(self.term, None)
            return
        if self.lead_transferee is not None and self.lead_transferee not in self.voters:
            self.lead_transferee = None
        # A smaller quorum may commit more; a new member should not wait for a heartbeat.
        if self._maybe_commit():
            self._bcast_append()
        else:
            for v in list(self.progress):
                if v != self.id:
                    self._maybe_send_append(v, send_if_empty=False)

    def bootstrap(self, peers: list[int]) -> None:
        """Start a brand-new group: the initial membership becomes committed conf-change
        entries at term 1, identical on every founding member, so a node that joins later
        learns the full membership history from the log (or a snapshot)."""
        if self.log.last_index() != 0 or self.term != 0:
            raise RaftError("bootstrap needs empty storage")
        if not peers:
            raise RaftError("bootstrap needs at least one peer")
        self.become_follower(1, None)
        ents = [
            Entry(i + 1, 1, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.ADD_NODE, p).encode())
            for i, p in enumerate(sorted(set(peers)))
        ]
        self.log.append(ents)
        self.log.commit_to(len(ents))
        # Adopt the membership now so the group can elect at once; the entries still reach
        # the application as committed entries, whose re-application is a no-op.
        for p in peers:
            self._apply_membership(ConfChange(ConfChangeType.ADD_NODE, p))
        if self.voters == {self.id}:
            self._campaign(_Campaign.ELECTION)


# ---------------------------------------------------------------------------------------------


class RawNode:
    """The application's handle on a `Raft`: the Ready/advance cycle and local requests.

    Args:
        config: see `Config`.
        storage: the node's stable storage; empty for a new node.
        peers: the founding members of a new group (empty storage only). A node that joins an
            existing group passes none and waits for the leader to contact it. A founding
            member passes the same peers again whenever its storage is still empty (it crashed
            before persisting its first Ready): the bootstrap entries are identical each time,
            whereas replaying them one by one from a leader would show it a membership in which
            it is the only voter.
    """

    def __init__(self, config: Config, storage: Storage, peers: Optional[list[int]] = None):
        self.raft = Raft(config, storage)
        self._prev_hard = self.raft.hard_state()
        self._prev_soft = self.raft.soft_state()
        if peers:
            self.raft.bootstrap(peers)
        else:
            self.raft._campaign_if_alone()
        self._pending: Optional[Ready] = None

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def leader(self) -> Optional[int]:
        return self.raft.lead

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def term(self) -> int:
        return self.raft.term

    def tick(self) -> None:
        self.raft.tick()

    def step(self, msg: Message) -> None:
        """Feed a message from the transport. Responses from non-members are dropped: they
        answer something this node no longer tracks."""
        if msg.to != self.raft.id:
            raise ValueError(f"message for {msg.to} delivered to {self.raft.id}")
        if isinstance(msg, _RESPONSES) and msg.from_ not in self.raft.progress:
            return
        self.raft.step(msg)

    def campaign(self) -> None:
        self.raft.hup()

    def propose(self, data: bytes) -> int:
        return self.raft.propose(data)

    def propose_conf_change(self, cc: ConfChange) -> int:
        return self.raft.propose(cc.encode(), EntryType.CONF_CHANGE)

    def transfer_leadership(self, to: int) -> None:
        self.raft.transfer_leadership(to)

    def report_unreachable(self, node: int) -> None:
        self.raft.report_unreachable(node)

    def report_snapshot(self, node: int, ok: bool) -> None:
        self.raft.report_snapshot(node, ok)

    def conf_state(self) -> ConfState:
        return self.raft.conf_state()

    def status(self) -> Status:
        return self.raft.status()

    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        hard, soft = self._prev_hard, self._prev_soft
        # hard_state() != _prev_hard and soft_state() != _prev_soft, field by field: this
        # runs several times a round, and building the states to compare them costs more.
        return bool(
            r.msgs
            or log.unstable.entries
            or log.unstable.snapshot is not None
            or log.has_next_committed()
            or r.term != hard.term or r.vote != hard.vote or log.committed != hard.commit
            or r.lead != soft.leader or r.role is not soft.role
        )

    def ready(self) -> Optional[Ready]:
        """What to persist, send and apply now, or None when there is nothing."""
        if self._pending is not None:
            raise RaftError("advance() the previous Ready first")
        if not self.has_ready():
            return None
        r = self.raft
        hard, soft = r.hard_state(), r.soft_state()
        entries = tuple(r.log.unstable.entries)
        rd = Ready(
            snapshot=r.log.unstable.snapshot,
            entries=entries,
            hard_state=hard if hard != self._prev_hard else None,
            must_sync=bool(entries)
            or r.log.unstable.snapshot is not None
            or hard.term != self._prev_hard.term
            or hard.vote != self._prev_hard.vote,
            messages=tuple(r.msgs),
            committed_entries=tuple(r.log.next_committed()),
            soft_state=soft if soft != self._prev_soft else None,
        )
        r.msgs = []
        self._prev_hard, self._prev_soft = hard, soft
        self._pending = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The application has handled ``rd``. Committed conf changes take effect here."""
        if rd is not self._pending:
            raise RaftError("advance() needs the Ready returned by the last ready()")
        self._pending = None
        r = self.raft
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.index)
            r.log.applied_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            # A snapshot received since ready() (still unstable) supersedes the membership
            # changes it covers.
            newer = r.log.unstable.snapshot
            superseded = newer.index if newer is not None else 0
            for e in rd.committed_entries:
                if e.type is EntryType.CONF_CHANGE and e.index > superseded:
                    r.apply_conf_change(ConfChange.decode(e.data))
            last_applied = rd.committed_entries[-1].index
            if last_applied > r.log.applied:
                r.log.applied_to(last_applied)
        r._campaign_if_alone()
