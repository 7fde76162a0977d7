"""What a benchmark run measured: samples per client, phases, and their aggregates.

Rates follow ``nats bench``: a client's rate is its messages over its own elapsed time
(a publisher from its first send to the flush after its last; a subscriber from its
first message to its last); an aggregate rate is all the clients' messages over the time
from the earliest start to the latest end. MB/s is bytes of payload per second in units
of 1024 * 1024 bytes, as ``nats bench`` prints it.
"""
from __future__ import annotations

import statistics

import attrs

from natsx.bench.histogram import Histogram

MB = 1024 * 1024


@attrs.define
class Sample:
    """One client's count over its own time window (monotonic nanoseconds)."""

    msgs: int
    nbytes: int
    start: int
    end: int

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0) / 1e9

    @property
    def rate(self) -> float:
        s = self.seconds
        return self.msgs / s if s > 0 else 0.0

    @property
    def mbps(self) -> float:
        s = self.seconds
        return self.nbytes / s / MB if s > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "msgs": self.msgs,
            "bytes": self.nbytes,
            "seconds": self.seconds,
            "msgs_per_sec": self.rate,
            "mb_per_sec": self.mbps,
        }


def aggregate(samples: list[Sample]) -> Sample | None:
    """All samples as one: summed counts over the span from first start to last end."""
    live = [s for s in samples if s.msgs]
    if not live:
        return None
    return Sample(
        msgs=sum(s.msgs for s in live),
        nbytes=sum(s.nbytes for s in live),
        start=min(s.start for s in live),
        end=max(s.end for s in live),
    )


def spread(samples: list[Sample]) -> dict | None:
    """min/avg/max/stddev of the per-client rates."""
    rates = [s.rate for s in samples if s.msgs]
    if not rates:
        return None
    return {
        "min": min(rates),
        "avg": statistics.fmean(rates),
        "max": max(rates),
        "stddev": statistics.pstdev(rates) if len(rates) > 1 else 0.0,
    }


@attrs.define
class Phase:
    """One measured phase of a workload (most workloads have one; kv has put and get).

    ``pubs`` are the clients that send (publishers, requesters, JetStream publishers),
    counting what was sent or, for request workloads, the replies received; ``subs`` the
    clients that receive (subscribers, repliers, pull consumers). ``kind`` says which
    number is the headline: ``"throughput"`` (messages moved) or ``"latency"`` (request
    round trips, with a histogram).
    """

    workload: str
    name: str
    size: int
    kind: str = "throughput"
    pubs: list[Sample] = attrs.field(factory=list)
    subs: list[Sample] = attrs.field(factory=list)
    latency: Histogram | None = None
    checks: list[str] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    params: dict = attrs.field(factory=dict)
    placement: str = ""   # "same"/"cross" when the phase was placed (natsx.bench.placement)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def label(self) -> str:
        base = self.workload if self.name == self.workload else f"{self.workload}/{self.name}"
        return f"{base}@{self.placement}" if self.placement else base

    def combined(self) -> Sample | None:
        """Publishers and subscribers together, the ``Pub/Sub stats`` line of nats bench."""
        return aggregate(self.pubs + self.subs)

    def headline(self) -> float:
        """The rate that comparisons use: messages (or requests) per second."""
        if self.kind == "latency" or not self.subs:
            agg = aggregate(self.pubs)
        elif not self.pubs:
            agg = aggregate(self.subs)
        else:
            agg = self.combined()
        return agg.rate if agg else 0.0

    def to_json(self) -> dict:
        out: dict = {
            "workload": self.workload,
            "phase": self.name,
            "kind": self.kind,
            "placement": self.placement or "any",
            "size": self.size,
            "params": self.params,
            "headline_msgs_per_sec": self.headline(),
            "ok": self.ok,
            "checks": self.checks,
            "errors": self.errors,
        }
        for role, samples in (("pub", self.pubs), ("sub", self.subs)):
            agg = aggregate(samples)
            out[role] = {
                "aggregate": agg.to_json() if agg else None,
                "per_client": spread(samples),
                "clients": [s.to_json() for s in samples],
            }
        comb = self.combined() if self.pubs and self.subs else None
        out["combined"] = comb.to_json() if comb else None
        out["latency_ns"] = self.latency.to_json() if self.latency and self.latency.count else None
        return out


@attrs.define
class Run:
    """One run of one workload against one server."""

    workload: str
    server: str
    url: str
    rep: int
    phases: list[Phase] = attrs.field(factory=list)
    error: str | None = None
    server_info: dict = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and all(p.ok for p in self.phases)

    def to_json(self) -> dict:
        return {
            "workload": self.workload,
            "server": self.server,
            "url": self.url,
            "rep": self.rep,
            "ok": self.ok,
            "error": self.error,
            "server_info": {
                k: self.server_info.get(k)
                for k in ("server_name", "version", "go", "jetstream", "max_payload")
                if k in self.server_info
            },
            "phases": [p.to_json() for p in self.phases],
        }
