"""Data that crosses the raft core's boundary: log entries, snapshots, states and messages.

Everything here is a frozen attrs class, so a value handed to the application in a `Ready`
(or to the transport in a message) can never be changed behind the core's back.

The wire format is CBOR (``encode`` / ``decode``). A message is an array whose first item is a
small integer tag naming the message type, followed by the fields in declaration order; an
entry is ``[index, term, type, data]`` and a snapshot ``[index, term, voters, data]``. Arrays
rather than maps keep heartbeats, the most frequent message, at a dozen bytes. ``decode`` checks
shapes and types and raises `DecodeError` on anything else: its input comes off a socket.
"""

from __future__ import annotations

import enum
from typing import Any, Optional, Union

import attrs
import cbor2

__all__ = [
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "DecodeError",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MsgApp",
    "MsgAppResp",
    "MsgHeartbeat",
    "MsgHeartbeatResp",
    "MsgPreVote",
    "MsgPreVoteResp",
    "MsgSnap",
    "MsgTimeoutNow",
    "MsgVote",
    "MsgVoteResp",
    "Ready",
    "Role",
    "Snapshot",
    "SoftState",
    "Status",
    "decode",
    "encode",
]


class DecodeError(ValueError):
    """Bytes that are not a well-formed raft message."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryType(enum.IntEnum):
    NORMAL = 0
    #: ``data`` is an encoded `ConfChange`; it takes effect once committed and applied.
    CONF_CHANGE = 1


@attrs.frozen(slots=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@attrs.frozen(slots=True)
class ConfState:
    """The voters of a group, as of some log index."""

    voters: tuple[int, ...] = ()


@attrs.frozen(slots=True)
class Snapshot:
    """The application state up to ``index`` (whose entry had ``term``), with its membership."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.index == 0


@attrs.frozen(slots=True)
class HardState:
    """What must be on stable storage before any message of the same `Ready` is sent."""

    term: int = 0
    vote: Optional[int] = None
    commit: int = 0


@attrs.frozen(slots=True)
class SoftState:
    """Volatile state the application may want to observe (who leads, what this node is)."""

    leader: Optional[int] = None
    role: Role = Role.FOLLOWER


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1


@attrs.frozen(slots=True)
class ConfChange:
    """A single-server membership change (Raft dissertation §4.1), carried in a log entry."""

    type: ConfChangeType
    node_id: int

    def encode(self) -> bytes:
        return cbor2.dumps([int(self.type), self.node_id])

    @classmethod
    def decode(cls, data: bytes) -> "ConfChange":
        try:
            kind, node_id = cbor2.loads(data)
            return cls(ConfChangeType(kind), _int(node_id))
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"bad conf change: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Messages. ``from_`` is the sender, ``to`` the recipient, ``term`` the sender's term (for
# MsgPreVote, the term the sender would campaign at).


@attrs.frozen(slots=True, kw_only=True)
class Message:
    term: int
    from_: int
    to: int


@attrs.frozen(slots=True, kw_only=True)
class MsgApp(Message):
    """AppendEntries: ``entries`` follow the entry at ``index`` whose term is ``log_term``."""

    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0


@attrs.frozen(slots=True, kw_only=True)
class MsgAppResp(Message):
    """Answer to MsgApp (and MsgSnap): ``index`` is the follower's matched last index on
    success, or the rejected ``MsgApp.index``. On rejection ``reject_hint``/``log_term`` name the
    follower's last entry that might match, so the leader can skip a whole term per round
    trip."""

    index: int = 0
    reject: bool = False
    reject_hint: int = 0
    log_term: int = 0


@attrs.frozen(slots=True, kw_only=True)
class MsgVote(Message):
    """RequestVote: the candidate's last log entry is (``index``, ``log_term``). ``transfer``
    marks an election started by a leadership transfer, which voters honour even while they
    still hear from the current leader."""

    log_term: int = 0
    index: int = 0
    transfer: bool = False


@attrs.frozen(slots=True, kw_only=True)
class MsgVoteResp(Message):
    reject: bool = False


@attrs.frozen(slots=True, kw_only=True)
class MsgPreVote(Message):
    """Would you vote for me at ``term``? Nobody changes term or records a vote for it."""

    log_term: int = 0
    index: int = 0


@attrs.frozen(slots=True, kw_only=True)
class MsgPreVoteResp(Message):
    reject: bool = False


@attrs.frozen(slots=True, kw_only=True)
class MsgHeartbeat(Message):
    """``commit`` is capped at the follower's known match so it never commits a divergent
    entry."""

    commit: int = 0


@attrs.frozen(slots=True, kw_only=True)
class MsgHeartbeatResp(Message):
    pass


@attrs.frozen(slots=True, kw_only=True)
class MsgSnap(Message):
    snapshot: Snapshot = Snapshot()


@attrs.frozen(slots=True, kw_only=True)
class MsgTimeoutNow(Message):
    """Start an election now, skipping pre-vote: the leader is handing over."""


# ---------------------------------------------------------------------------------------------
# Handed to the application.


@attrs.frozen
class Ready:
    """Work for the application, to be done in field order, then `RawNode.advance`.

    snapshot: install into storage (None: none); it replaces the whole log.
    entries: append to storage, replacing any stored entries from the first one's index.
    hard_state: persist (None: unchanged). Written after the entries, so that a crash in
        between never leaves a commit index past the log. ``must_sync`` says whether these
        three writes need an fsync (a commit-only change does not).
    messages: send, only once the above are durable.
    committed_entries: apply to the state machine.
    soft_state: new leader/role (None: unchanged); informational.
    """

    snapshot: Optional[Snapshot]
    entries: tuple[Entry, ...]
    hard_state: Optional[HardState]
    must_sync: bool
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    soft_state: Optional[SoftState]


@attrs.frozen
class Status:
    """A view of one node for monitoring; ``progress`` maps each follower to (state, match,
    next) on a leader."""

    id: int
    term: int
    vote: Optional[int]
    commit: int
    applied: int
    leader: Optional[int]
    role: Role
    voters: tuple[int, ...]
    progress: dict


# ---------------------------------------------------------------------------------------------
# Wire format.

_TAGS: dict[type, int] = {
    MsgApp: 1,
    MsgAppResp: 2,
    MsgVote: 3,
    MsgVoteResp: 4,
    MsgPreVote: 5,
    MsgPreVoteResp: 6,
    MsgHeartbeat: 7,
    MsgHeartbeatResp: 8,
    MsgSnap: 9,
    MsgTimeoutNow: 10,
}
_CLASSES = {tag: cls for cls, tag in _TAGS.items()}
_FIELDS = {cls: tuple(f.name for f in attrs.fields(cls)) for cls in _TAGS}

MessageT = Union[
    MsgApp, MsgAppResp, MsgVote, MsgVoteResp, MsgPreVote, MsgPreVoteResp,
    MsgHeartbeat, MsgHeartbeatResp, MsgSnap, MsgTimeoutNow,
]


def _entry_out(e: Entry) -> list:
    return [e.index, e.term, int(e.type), e.data]


def _snapshot_out(s: Snapshot) -> list:
    return [s.index, s.term, list(s.conf_state.voters), s.data]


def encode(msg: Message) -> bytes:
    """Serialize a message for the transport."""
    cls = type(msg)
    out: list[Any] = [_TAGS[cls]]
    for name in _FIELDS[cls]:
        value = getattr(msg, name)
        if name == "entries":
            value = [_entry_out(e) for e in value]
        elif name == "snapshot":
            value = _snapshot_out(value)
        out.append(value)
    return cbor2.dumps(out)


def _int(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise DecodeError(f"expected a non-negative integer, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError(f"expected a boolean, got {v!r}")
    return v


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise DecodeError(f"expected bytes, got {type(v).__name__}")
    return v


def _list(v: Any, n: Optional[int] = None) -> list:
    if type(v) is not list or (n is not None and len(v) != n):
        raise DecodeError(f"expected an array{'' if n is None else f' of {n}'}, got {v!r}")
    return v


def _entry_in(v: Any) -> Entry:
    index, term, kind, data = _list(v, 4)
    try:
        etype = EntryType(_int(kind))
    except ValueError:
        raise DecodeError(f"unknown entry type {kind!r}") from None
    return Entry(_int(index), _int(term), etype, _bytes(data))


def _snapshot_in(v: Any) -> Snapshot:
    index, term, voters, data = _list(v, 4)
    conf = ConfState(tuple(_int(x) for x in _list(voters)))
    return Snapshot(_int(index), _int(term), conf, _bytes(data))


def _field_in(name: str, v: Any) -> Any:
    if name == "entries":
        return tuple(_entry_in(e) for e in _list(v))
    if name == "snapshot":
        return _snapshot_in(v)
    if name in ("reject", "transfer"):
        return _bool(v)
    return _int(v)


def decode(data: bytes) -> MessageT:
    """Parse bytes produced by `encode`; raises `DecodeError` on anything malformed."""
    try:
        items = cbor2.loads(data)
    except Exception as exc:
        raise DecodeError(f"not CBOR: {exc}") from None
    items = _list(items)
    if not items or type(items[0]) is not int or items[0] not in _CLASSES:
        raise DecodeError(f"unknown message tag in {items[:1]!r}")
    cls = _CLASSES[items[0]]
    names = _FIELDS[cls]
    if len(items) != len(names) + 1:
        raise DecodeError(f"{cls.__name__} needs {len(names)} fields, got {len(items) - 1}")
    return cls(**{name: _field_in(name, v) for name, v in zip(names, items[1:])})
