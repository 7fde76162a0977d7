"""Latency histograms: log-linear buckets, exact min/max, mergeable.

Theory of operation
-------------------
A value ``v`` (nanoseconds) below ``2**SUB_BITS`` has a bucket of its own; above, every
power of two ``[2**k, 2**(k+1))`` is split into ``2**(SUB_BITS-1)`` equal buckets, so a
bucket is never wider than 1/64 of the values in it (the layout of HdrHistogram with two
significant digits). The benchmark client records into the same layout in C
(``natsx._speedups.benchclient``) and hands over only the non-empty buckets; this module
turns them into percentiles. A percentile is reported as the midpoint of its bucket,
clamped to the exact minimum and maximum, so its error is under 1%.
"""
from __future__ import annotations

import math
from typing import Iterable

import attrs

SUB_BITS = 7
HALF = 1 << (SUB_BITS - 1)
NBUCKETS = (64 - SUB_BITS + 2) * HALF

#: The percentiles every report shows.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_index(v: int) -> int:
    """The bucket of ``v``; negative values count as 0."""
    if v < (1 << SUB_BITS):
        return v if v > 0 else 0
    e = v.bit_length() - SUB_BITS
    return e * HALF + (v >> e)


def bucket_range(i: int) -> tuple[int, int]:
    """The lowest and highest value that fall into bucket ``i``."""
    if i < (1 << SUB_BITS):
        return i, i
    e = i // HALF - 1
    mant = i - e * HALF
    return mant << e, ((mant + 1) << e) - 1


@attrs.define(eq=False)
class Histogram:
    """Counts per bucket plus exact count, sum, min and max."""

    counts: dict[int, int] = attrs.field(factory=dict)
    count: int = 0
    total: int = 0
    min: int = 0
    max: int = 0

    def record(self, v: int) -> None:
        v = max(v, 0)
        if self.count == 0 or v < self.min:
            self.min = v
        if v > self.max:
            self.max = v
        self.count += 1
        self.total += v
        i = bucket_index(v)
        self.counts[i] = self.counts.get(i, 0) + 1

    def add_buckets(
        self, buckets: Iterable[tuple[int, int]], *, count: int, total: int, lo: int, hi: int
    ) -> None:
        """Merge buckets recorded elsewhere (a ``FrameCounter``) with their exact stats."""
        if count == 0:
            return
        for i, c in buckets:
            self.counts[i] = self.counts.get(i, 0) + c
        if self.count == 0 or lo < self.min:
            self.min = lo
        self.max = max(self.max, hi)
        self.count += count
        self.total += total

    def merge(self, other: Histogram) -> None:
        self.add_buckets(
            other.counts.items(), count=other.count, total=other.total, lo=other.min, hi=other.max
        )

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> float:
        """The value below which ``p`` percent of the recorded values fall."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                lo, hi = bucket_range(i)
                return float(min(max((lo + hi) / 2.0, self.min), self.max))
        return float(self.max)

    def summary(self) -> dict:
        """Count, mean, min, max and the standard percentiles, in nanoseconds."""
        out = {"count": self.count, "mean": self.mean, "min": self.min, "max": self.max}
        for p in PERCENTILES:
            out[f"p{p:g}"] = self.percentile(p)
        return out

    def to_json(self) -> dict:
        return {
            **self.summary(),
            "buckets": [[i, c] for i, c in sorted(self.counts.items())],
        }

    @classmethod
    def from_json(cls, d: dict) -> Histogram:
        h = cls()
        h.add_buckets(
            ((int(i), int(c)) for i, c in d.get("buckets", ())),
            count=d["count"],
            total=round(d["mean"] * d["count"]),
            lo=d["min"],
            hi=d["max"],
        )
        return h
