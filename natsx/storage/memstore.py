"""The memory store: a stream's messages in Python objects (Go ``memStore``).

Theory of operation
-------------------
Messages live in a dict keyed by sequence. Sequences are only ever appended in increasing order
(a store is always at ``last_seq + 1``) and removed anywhere, so their order is kept in a
``SeqList``: a list of sorted blocks of at most ``SeqList.LOAD`` sequences with each block's
maximum alongside, which gives O(log n) successor/predecessor lookups, O(1) appends and cheap
removals without a balanced tree. Per-message TTLs are a heap of ``(expires, seq)`` checked
lazily against the live message, so removing a message never has to search the heap.

Everything else — limits, discard policies, per-subject state, purges, expiry — is the shared
logic in base.py. Nothing is durable: ``sync`` and batches are no-ops here.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from typing import Iterator, Optional

from .base import NS_PER_SECOND, StreamStore, subject_len
from .types import MEMORY_STORAGE, StoreConfig, StoredMsg

__all__ = ["MemStore", "SeqList"]


class SeqList:
    """Sorted unique sequences; appends must be larger than every member."""

    LOAD = 1024

    __slots__ = ("_blocks", "_maxes", "_len")

    def __init__(self) -> None:
        self._blocks: list[list[int]] = []
        self._maxes: list[int] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, seq: int) -> None:
        if self._blocks and len(self._blocks[-1]) < self.LOAD:
            self._blocks[-1].append(seq)
            self._maxes[-1] = seq
        else:
            self._blocks.append([seq])
            self._maxes.append(seq)
        self._len += 1

    def discard(self, seq: int) -> bool:
        bi = bisect_left(self._maxes, seq)
        if bi == len(self._maxes):
            return False
        blk = self._blocks[bi]
        i = bisect_left(blk, seq)
        if blk[i] != seq:
            return False
        del blk[i]
        self._len -= 1
        if not blk:
            del self._blocks[bi]
            del self._maxes[bi]
        elif i == len(blk):
            self._maxes[bi] = blk[-1]
        return True

    def ceil(self, seq: int) -> Optional[int]:
        """The smallest member >= seq."""
        bi = bisect_left(self._maxes, seq)
        if bi == len(self._maxes):
            return None
        blk = self._blocks[bi]
        return blk[bisect_left(blk, seq)]

    def floor(self, seq: int) -> Optional[int]:
        """The largest member <= seq."""
        bi = bisect_left(self._maxes, seq)
        if bi < len(self._maxes):
            blk = self._blocks[bi]
            i = bisect_right(blk, seq)
            if i:
                return blk[i - 1]
        return self._maxes[bi - 1] if bi else None

    def rank(self, seq: int) -> int:
        """How many members are < seq."""
        bi = bisect_left(self._maxes, seq)
        n = sum(len(b) for b in self._blocks[:bi])
        if bi < len(self._blocks):
            n += bisect_left(self._blocks[bi], seq)
        return n

    def irange(self, lo: int, hi: int, reverse: bool = False) -> Iterator[int]:
        """Members in ``[lo, hi]``. Do not mutate while iterating."""
        if lo > hi or not self._blocks:
            return
        blocks, maxes = self._blocks, self._maxes
        if not reverse:
            bi = bisect_left(maxes, lo)
            if bi == len(maxes):
                return
            i = bisect_left(blocks[bi], lo)
            for blk in blocks[bi:]:
                for v in blk[i:] if i else blk:
                    if v > hi:
                        return
                    yield v
                i = 0
        else:
            bi = bisect_left(maxes, hi)
            if bi == len(maxes):
                bi -= 1
                j = len(blocks[bi])
            else:
                j = bisect_right(blocks[bi], hi)
            while bi >= 0:
                for v in reversed(blocks[bi][:j]):
                    if v < lo:
                        return
                    yield v
                bi -= 1
                if bi >= 0:
                    j = len(blocks[bi])


class MemStore(StreamStore):
    """A stream store in memory. ``cfg.storage`` (default "memory") selects the byte
    accounting, so a memory-backed copy of a file stream reports the same sizes."""

    def __init__(self, cfg: Optional[StoreConfig] = None) -> None:
        super().__init__(cfg if cfg is not None else StoreConfig(storage=MEMORY_STORAGE))
        # seq -> (subject, headers, payload, ts): a StoredMsg is made when one is read (its
        # frozen attrs constructor costs more than the rest of a store).
        self._by_seq: dict[int, tuple] = {}
        self._ttls: dict[int, int] = {}
        self._seqs = SeqList()
        self._ttl_heap: list[tuple[int, int]] = []
        if self.cfg.first_seq > 0:
            self._purge(self.cfg.first_seq)

    # -- primitives -----------------------------------------------------------------------------

    def _put_ready(self) -> bool:
        return True

    def _p_put(self, seq, subject, headers, payload, ts, ttl):
        self._by_seq[seq] = (subject, headers, payload, ts)
        self._seqs.append(seq)
        if ttl:
            self._ttls[seq] = ttl
            if ttl > 0:
                heapq.heappush(self._ttl_heap, (ts + ttl * NS_PER_SECOND, seq))

    def _p_get(self, seq):
        m = self._by_seq.get(seq)
        return None if m is None else StoredMsg(m[0], m[1], m[2], seq, m[3])

    def _size(self, m: tuple) -> int:
        return self.cfg.msg_size(subject_len(m[0]), len(m[1]), len(m[2]))

    def _p_info(self, seq):
        m = self._by_seq.get(seq)
        if m is None:
            return None
        return m[0], m[3], self._ttls.get(seq, 0), self._size(m)

    def _p_delete(self, seq, secure):
        m = self._by_seq.pop(seq, None)
        if m is None:
            return None
        self._seqs.discard(seq)
        self._ttls.pop(seq, None)
        return m[0], self._size(m)

    def _p_next_seq(self, seq):
        return self._seqs.ceil(seq)

    def _p_prev_seq(self, seq):
        return self._seqs.floor(seq)

    def _p_seqs(self, lo, hi, reverse=False):
        return self._seqs.irange(lo, hi, reverse)

    def _p_scan(self, lo, hi, reverse=False):
        by_seq, ttls = self._by_seq, self._ttls
        for seq in self._seqs.irange(lo, hi, reverse):
            m = by_seq[seq]
            yield seq, m[0], m[3], ttls.get(seq, 0)

    def _p_subject_scan(self, subject, lo, hi, reverse=False):
        by_seq = self._by_seq
        for seq in self._seqs.irange(lo, hi, reverse):
            if by_seq[seq][0] == subject:
                yield seq

    def _p_count(self, lo, hi):
        return self._seqs.rank(hi + 1) - self._seqs.rank(lo)

    def _p_clear(self):
        self._by_seq = {}
        self._ttls = {}
        self._seqs = SeqList()
        self._ttl_heap = []

    def _ttl_live(self, expires: int, seq: int) -> bool:
        m = self._by_seq.get(seq)
        ttl = self._ttls.get(seq, 0)
        return m is not None and ttl > 0 and m[3] + ttl * NS_PER_SECOND == expires

    def _p_ttl_due(self, now):
        heap, due = self._ttl_heap, []
        while heap and heap[0][0] <= now:
            expires, seq = heapq.heappop(heap)
            if self._ttl_live(expires, seq):
                due.append(seq)
        return due

    def _p_ttl_next(self):
        heap = self._ttl_heap
        while heap and not self._ttl_live(*heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def stop(self) -> None:
        super().stop()
        self._p_clear()
