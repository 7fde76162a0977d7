"""Stable storage as the raft core sees it, and an in-memory implementation for tests.

The core only reads storage (`Storage`); the application writes it while handling a `Ready`
(``set_hard_state``, ``append``, ``apply_snapshot``) and compacts it when it has taken a
snapshot of its state machine (``create_snapshot`` then ``compact``). The read methods must see
every write the application has finished, which the single-threaded Ready/advance cycle
guarantees.

Indexes follow etcd: the log holds ``[first_index(), last_index()]``; the entry just before
``first_index()`` is gone but its term is still answerable, because appends are checked against
the entry that precedes them.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

from .messages import ConfState, Entry, HardState, Snapshot

__all__ = [
    "CompactedError",
    "MemoryStorage",
    "SnapshotOutOfDateError",
    "SnapshotTemporarilyUnavailableError",
    "Storage",
    "StorageError",
    "UnavailableError",
    "limit_size",
]


class StorageError(Exception):
    pass


class CompactedError(StorageError):
    """The requested index is older than the first index: only a snapshot has it now."""


class UnavailableError(StorageError):
    """The requested index is past the last index."""


class SnapshotOutOfDateError(StorageError):
    """The snapshot is older than the one already held."""


class SnapshotTemporarilyUnavailableError(StorageError):
    """The snapshot is being produced; the leader will try again on a later heartbeat."""


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership as of the latest snapshot."""

    def entries(self, lo: int, hi: int, max_size: Optional[int] = None) -> list[Entry]:
        """Entries ``[lo, hi)``, cut after ``max_size`` bytes of data but never empty."""

    def term(self, index: int) -> int:
        """Term of the entry at ``index``, valid from ``first_index() - 1``."""

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Add entries, dropping any stored entry at or after the first new index."""

    def compact(self, index: int) -> None:
        """Discard entries up to and including ``index``."""

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap``."""

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record the application's state at an applied ``index`` as the current snapshot."""


def limit_size(entries: list[Entry], max_size: Optional[int]) -> list[Entry]:
    """Longest prefix of ``entries`` whose data fits ``max_size`` (at least one entry)."""
    if max_size is None or len(entries) <= 1:
        return entries
    size = len(entries[0].data)
    for n in range(1, len(entries)):
        size += len(entries[n].data)
        if size > max_size:
            return entries[:n]
    return entries


class MemoryStorage:
    """`Storage` in a Python list. ``_ents[0]`` is a placeholder standing for the snapshot:
    its index and term are those of the last compacted entry, which keeps index arithmetic free
    of special cases."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(0, 0)]

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.conf_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def entries(self, lo: int, hi: int, max_size: Optional[int] = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(index)
        if index - offset >= len(self._ents):
            raise UnavailableError(index)
        return self._ents[index - offset].term

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise StorageError(
                f"gap in log: appending {entries[0].index} after {self.last_index()}"
            )
        del self._ents[offset:]
        self._ents.extend(entries)

    def compact(self, index: int) -> None:
        offset = self._ents[0].index
        if index <= offset:
            raise CompactedError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        i = index - offset
        self._ents = [Entry(self._ents[i].index, self._ents[i].term)] + self._ents[i + 1 :]

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.index <= self._snapshot.index:
            raise SnapshotOutOfDateError(snap.index)
        self._snapshot = snap
        self._ents = [Entry(snap.index, snap.term)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        if index <= self._snapshot.index:
            raise SnapshotOutOfDateError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        self._snapshot = Snapshot(index, self.term(index), conf_state, data)
        return self._snapshot
