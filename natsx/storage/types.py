"""Values shared by the stream stores: errors, stored messages, states and the store's config.

The names follow the Go server's ``server/store.go``: an error class is named after the Go
sentinel it mirrors (``ErrMaxMsgs`` for ``ErrMaxMsgs``) and carries the same text, because that
text reaches clients inside PubAck and API errors. Sizes follow ``memStoreMsgSize`` and
``fileStoreMsgSize``: what a stream reports as ``bytes`` (and what ``max_bytes`` limits) depends
on the stream's storage type, not on where the store keeps the bytes.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs
from attrs import define, field, frozen

__all__ = [
    "ACK_ALL",
    "ACK_EXPLICIT",
    "ACK_FLOW_CONTROL",
    "ACK_NONE",
    "DISCARD_NEW",
    "DISCARD_OLD",
    "FILE_STORAGE",
    "MEMORY_STORAGE",
    "ConsumerState",
    "ConsumerStoreConfig",
    "ErrBadConsumerState",
    "ErrMaxBytes",
    "ErrMaxMsgs",
    "ErrMaxMsgsPerSubject",
    "ErrMsgTooLarge",
    "ErrNoAckPolicy",
    "ErrSequenceMismatch",
    "ErrStoreClosed",
    "ErrStoreEOF",
    "ErrStoreMsgNotFound",
    "ErrStoreOldUpdate",
    "ErrTooManyResults",
    "Pending",
    "SequencePair",
    "SimpleState",
    "StoreConfig",
    "StoreError",
    "StoredMsg",
    "StreamState",
    "file_store_msg_size",
    "mem_store_msg_size",
]

FILE_STORAGE = "file"
MEMORY_STORAGE = "memory"
DISCARD_OLD = "old"
DISCARD_NEW = "new"
ACK_NONE = "none"
ACK_ALL = "all"
ACK_EXPLICIT = "explicit"
ACK_FLOW_CONTROL = "flow_control"

# filestore.go rlBadThresh: a record this large cannot be represented in a file-store block,
# and the Go server refuses it with ErrMsgTooLarge whatever max_msg_size says.
FILE_STORE_MAX_RECORD = 32 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Errors


class StoreError(Exception):
    """A store refused an operation. Raised before anything changed, so a caller inside a batch
    may catch it and carry on."""

    text = "store error"

    def __init__(self, text: Optional[str] = None) -> None:
        super().__init__(text or self.text)


class ErrStoreClosed(StoreError):
    text = "store is closed"


class ErrStoreMsgNotFound(StoreError):
    text = "no message found"


class ErrStoreEOF(StoreError):
    text = "stream store EOF"


class ErrMaxMsgs(StoreError):
    text = "maximum messages exceeded"


class ErrMaxBytes(StoreError):
    text = "maximum bytes exceeded"


class ErrMaxMsgsPerSubject(StoreError):
    text = "maximum messages per subject exceeded"


class ErrMsgTooLarge(StoreError):
    text = "message too large"


class ErrNoAckPolicy(StoreError):
    text = "ack policy is none"


class ErrSequenceMismatch(StoreError):
    text = "expected sequence does not match store"


class ErrTooManyResults(StoreError):
    text = "too many matching results for request"


class ErrStoreOldUpdate(StoreError):
    text = "old update ignored"


class ErrBadConsumerState(StoreError):
    """A consumer state handed to ``update`` is inconsistent (Go returns ad-hoc errors)."""

    text = "bad consumer state"


# ---------------------------------------------------------------------------------------------
# Sizes


def mem_store_msg_size(subject_len: int, headers_len: int, payload_len: int) -> int:
    """memstore.go memStoreMsgSizeRaw: the bytes plus 16 for sequence and timestamp."""
    return subject_len + headers_len + payload_len + 16


def file_store_msg_size(subject_len: int, headers_len: int, payload_len: int) -> int:
    """filestore.go fileStoreMsgSizeRaw: the length of the Go block-file record."""
    if headers_len == 0:
        # record length(4) + seq(8) + ts(8) + subject length(2) + subject + payload + hash(8)
        return 22 + subject_len + payload_len + 8
    # ... plus header length(4) + headers.
    return 22 + subject_len + 4 + headers_len + payload_len + 8


# ---------------------------------------------------------------------------------------------
# Messages and states


@frozen(slots=True)
class StoredMsg:
    """One stored message. ``ts`` is Unix nanoseconds; ``headers`` is the raw NATS/1.0 block."""

    subject: str
    headers: bytes
    payload: bytes
    seq: int
    ts: int


@frozen(slots=True)
class SimpleState:
    """Messages matching a filter: how many, and the first and last sequence (0 when none)."""

    msgs: int = 0
    first: int = 0
    last: int = 0


@frozen(slots=True)
class StreamState:
    """The stream's state as reported in STREAM.INFO (``state``).

    ``first_seq`` is ``last_seq + 1`` when the stream is empty (and both are 0 for a stream that
    never held anything). ``deleted`` is the list of interior deletes when it was asked for.
    """

    msgs: int = 0
    bytes: int = 0
    first_seq: int = 0
    first_ts: int = 0
    last_seq: int = 0
    last_ts: int = 0
    num_subjects: int = 0
    num_deleted: int = 0
    deleted: Optional[tuple[int, ...]] = None
    consumer_count: int = 0


def _limit(value: int) -> int:
    # The Go server treats 0 and anything below -1 as "unlimited" (-1) for these limits.
    return -1 if value is None or value <= 0 else int(value)


@frozen(slots=True)
class StoreConfig:
    """The part of a StreamConfig that the store enforces.

    Limits use the JetStream conventions: -1 (or 0) is unlimited, ``max_age`` is nanoseconds
    with 0 unlimited, ``discard`` is ``"old"`` or ``"new"``, ``storage`` is ``"file"`` or
    ``"memory"`` and selects the byte accounting.
    """

    subjects: tuple[str, ...] = field(default=(), converter=tuple)
    storage: str = FILE_STORAGE
    max_msgs: int = field(default=-1, converter=_limit)
    max_bytes: int = field(default=-1, converter=_limit)
    max_age: int = 0
    max_msgs_per_subject: int = field(default=-1, converter=_limit)
    max_msg_size: int = field(default=-1, converter=_limit)
    discard: str = DISCARD_OLD
    discard_new_per_subject: bool = False
    first_seq: int = 0
    allow_msg_ttl: bool = False

    def __attrs_post_init__(self) -> None:
        if self.storage not in (FILE_STORAGE, MEMORY_STORAGE):
            raise ValueError(f"unknown storage type {self.storage!r}")
        if self.discard not in (DISCARD_OLD, DISCARD_NEW):
            raise ValueError(f"unknown discard policy {self.discard!r}")
        if self.max_age < 0:
            raise ValueError("max_age must not be negative")

    def msg_size(self, subject_len: int, headers_len: int, payload_len: int) -> int:
        if self.storage == FILE_STORAGE:
            return file_store_msg_size(subject_len, headers_len, payload_len)
        return mem_store_msg_size(subject_len, headers_len, payload_len)

    @classmethod
    def from_stream_config(cls, cfg: Mapping[str, Any]) -> "StoreConfig":
        """Pick the store's fields out of a StreamConfig in its JSON shape."""
        return cls(
            subjects=tuple(cfg.get("subjects") or ()),
            storage=cfg.get("storage", FILE_STORAGE),
            max_msgs=cfg.get("max_msgs", -1),
            max_bytes=cfg.get("max_bytes", -1),
            max_age=cfg.get("max_age", 0) or 0,
            max_msgs_per_subject=cfg.get("max_msgs_per_subject", -1),
            max_msg_size=cfg.get("max_msg_size", -1),
            discard=cfg.get("discard", DISCARD_OLD),
            discard_new_per_subject=bool(cfg.get("discard_new_per_subject", False)),
            first_seq=cfg.get("first_seq", 0) or 0,
            allow_msg_ttl=bool(cfg.get("allow_msg_ttl", False)),
        )

    def to_dict(self) -> dict:
        return attrs.asdict(self, recurse=False) | {"subjects": list(self.subjects)}


# ---------------------------------------------------------------------------------------------
# Consumers


@frozen(slots=True)
class SequencePair:
    """A consumer sequence and the stream sequence of the same message."""

    consumer: int = 0
    stream: int = 0


@frozen(slots=True)
class Pending:
    """An unacknowledged delivery: its consumer sequence and when it was (re)delivered (ns)."""

    sequence: int
    timestamp: int


@define
class ConsumerState:
    """What a consumer must remember across restarts (Go ``ConsumerState``).

    ``pending`` and ``redelivered`` are keyed by stream sequence; ``redelivered`` counts the
    redeliveries (delivery count - 1).
    """

    delivered: SequencePair = SequencePair()
    ack_floor: SequencePair = SequencePair()
    pending: dict[int, Pending] = field(factory=dict)
    redelivered: dict[int, int] = field(factory=dict)

    def copy(self) -> "ConsumerState":
        return ConsumerState(self.delivered, self.ack_floor, dict(self.pending),
                             dict(self.redelivered))


@frozen(slots=True)
class ConsumerStoreConfig:
    """The part of a ConsumerConfig the consumer store's bookkeeping depends on."""

    ack_policy: str = ACK_EXPLICIT
    max_deliver: int = -1

    def __attrs_post_init__(self) -> None:
        if self.ack_policy not in (ACK_NONE, ACK_ALL, ACK_EXPLICIT, ACK_FLOW_CONTROL):
            raise ValueError(f"unknown ack policy {self.ack_policy!r}")
