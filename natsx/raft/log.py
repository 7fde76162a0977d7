"""The raft log: stable entries in `Storage`, newer ones in memory until the application has
persisted them.

``Unstable`` holds what the core has accepted but the application has not yet written: an
incoming snapshot and/or entries from ``offset`` on. They shadow storage: a conflicting append
truncates the unstable tail (or replaces all of it, when the conflict reaches into stable
entries, which the application's next ``Storage.append`` then overwrites). ``stable_to`` drops
entries once a `Ready` carrying them has been advanced, but only if their term still matches:
a truncation between ``ready()`` and ``advance()`` must not mark the replacement as written.

``RaftLog`` adds the commit and applied indexes. Invariants: ``applied <= committed <=
last_index()``, and ``committed`` never decreases (a committed entry is never truncated; an
attempt is a safety violation and raises).
"""

from __future__ import annotations

from typing import Optional

from .messages import Entry, Snapshot
from .storage import CompactedError, Storage, StorageError, UnavailableError, limit_size

__all__ = ["RaftLog", "Unstable"]


class Unstable:
    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Optional[Snapshot] = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> Optional[int]:
        if self.snapshot is not None:
            return self.snapshot.index + 1
        return None

    def maybe_last_index(self) -> Optional[int]:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.index
        return None

    def maybe_term(self, index: int) -> Optional[int]:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.index == index:
                return self.snapshot.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        if index < self.offset or self.maybe_term(index) != term:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[: after - self.offset] + list(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything before the first index is in the snapshot, which was applied.
        self.committed = first - 1
        self.applied = first - 1

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, unstable={len(self.unstable.entries)})"
        )

    # -- indexes and terms ---------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, index: int) -> int:
        """Term at ``index``; raises `CompactedError`/`UnavailableError` outside the log."""
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        if index + 1 < self.first_index():
            raise CompactedError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except StorageError:
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except StorageError:
            return False

    def is_up_to_date(self, index: int, term: int) -> bool:
        """§5.4.1: compare last terms first, then lengths."""
        last_term = self.last_term()
        return term > last_term or (term == last_term and index >= self.last_index())

    # -- appending -----------------------------------------------------------------------

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        if ents[0].index - 1 < self.committed:
            raise AssertionError(
                f"append at {ents[0].index} would truncate committed entries "
                f"(committed={self.committed})"
            )
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack), else 0."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, and that term. Used to skip a
        whole divergent term per rejection instead of one entry."""
        while index > 0:
            try:
                our = self.term(index)
            except StorageError:
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> Optional[int]:
        """Follower side of AppendEntries. Returns the last index known to match the leader,
        or None when our log has no entry (index, log_term)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        conflict = self.find_conflict(ents)
        if conflict:
            if conflict <= self.committed:
                raise AssertionError(
                    f"entry {conflict} conflicts with committed entry (committed={self.committed})"
                )
            self.append(list(ents[conflict - index - 1 :]))
        # §5.3: commitIndex = min(leaderCommit, index of last new entry); entries past
        # last_new may be stale leftovers that the leader has not vouched for.
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(
                    f"commit {index} is past the last index {self.last_index()}"
                )
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """§5.4.2: only an entry of the current term is committed by counting replicas."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index:
            if index > self.committed or index < self.applied:
                raise AssertionError(
                    f"applied {index} outside [{self.applied}, {self.committed}]"
                )
            self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.index
        self.unstable.restore(snap)

    # -- reading -------------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_size: Optional[int] = None) -> list[Entry]:
        """Entries ``[lo, hi)``; raises `CompactedError` if ``lo`` is before the log."""
        if lo < self.first_index():
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        if lo >= hi:
            return []
        offset = self.unstable.offset
        ents: list[Entry] = []
        if lo < offset:
            ents = self.storage.entries(lo, min(hi, offset), max_size)
            if len(ents) < min(hi, offset) - lo:
                return ents  # cut by max_size
        if hi > offset:
            unstable = self.unstable.slice(max(lo, offset), hi)
            ents = ents + unstable if ents else unstable
        return limit_size(ents, max_size)

    def entries_from(self, index: int, max_size: Optional[int] = None) -> list[Entry]:
        if index > self.last_index():
            return []
        return self.slice(index, self.last_index() + 1, max_size)

    def all_entries(self) -> list[Entry]:
        return self.entries_from(self.first_index())

    def has_next_committed(self) -> bool:
        return self.committed + 1 > max(self.applied + 1, self.first_index())

    def next_committed(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 > lo:
            return self.slice(lo, self.committed + 1)
        return []

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()
