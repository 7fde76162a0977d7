"""Turning runs into a table for people, a JSON document for tools, and a plot.

The table prints each phase the way ``nats bench`` does (aggregate rate, then
per-publisher and per-subscriber min/avg/max), plus latency percentiles and the checks
that passed or failed. With several servers, ``summarize`` takes the median of each
phase's headline rate (and latency percentiles) over the repetitions that succeeded and
the natsx/Go ratio; a ratio above 1 means natsx moved more messages per second.
"""
from __future__ import annotations

import statistics
from typing import Iterable

from natsx.bench.histogram import Histogram
from natsx.bench.results import Phase, Run, aggregate, spread


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def fmt_short(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


def fmt_ns(v: float) -> str:
    """A duration in nanoseconds, in the unit that keeps 3 significant digits."""
    if v >= 1e9:
        return f"{v / 1e9:.2f} s"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e3:
        return f"{v / 1e3:.1f} us"
    return f"{v:.0f} ns"


def _describe(p: Phase) -> str:
    q = p.params
    bits = [f"{p.size} B"]
    for key, label in (
        ("pubs", "pubs"), ("subs", "subs"), ("requesters", "requesters"), ("repliers", "repliers"),
        ("inflight", "in flight"), ("clients", "clients"), ("window", "window"),
        ("fetchers", "fetchers"), ("batch", "batch"), ("ack", "ack"), ("storage", "storage"),
        ("keys", "keys"), ("queue", "queue group"), ("placement", "placement"),
    ):
        if q.get(key) not in (None, ""):
            bits.append(f"{label} {q[key]}")
    return ", ".join(bits)


def render_phase(p: Phase) -> list[str]:
    out = [f"{p.label}  ({_describe(p)})"]
    unit = "req/s" if p.kind == "latency" else "msgs/s"
    comb = p.combined() if p.pubs and p.subs and p.kind != "latency" else None
    if comb:
        out.append(f"  Pub/Sub   {fmt_rate(comb.rate):>13} msgs/s  {comb.mbps:9.2f} MB/s  {comb.seconds:6.2f} s")
    names = ("Requests", "Repliers") if p.kind == "latency" else ("Pub", "Sub")
    for name, samples in zip(names, (p.pubs, p.subs)):
        agg = aggregate(samples)
        if not agg:
            continue
        u = unit if samples is p.pubs else "msgs/s"
        out.append(
            f"  {name:<9} {fmt_rate(agg.rate):>13} {u:<6}  {agg.mbps:9.2f} MB/s  {agg.seconds:6.2f} s"
            f"  {agg.msgs:,} msgs"
        )
        sp = spread(samples)
        if sp and len(samples) > 1:
            out.append(
                f"    per client: min {fmt_rate(sp['min'])} | avg {fmt_rate(sp['avg'])} | "
                f"max {fmt_rate(sp['max'])} | stddev {fmt_rate(sp['stddev'])} {u}"
            )
    if p.latency is not None and p.latency.count:
        out.append("  Latency   " + render_latency(p.latency))
    for c in p.checks:
        out.append(f"  ok: {c}")
    for e in p.errors:
        out.append(f"  ERROR: {e}")
    return out


def render_latency(h: Histogram) -> str:
    s = h.summary()
    return (
        f"p50 {fmt_ns(s['p50'])} | p90 {fmt_ns(s['p90'])} | p99 {fmt_ns(s['p99'])} | "
        f"p99.9 {fmt_ns(s['p99.9'])} | max {fmt_ns(s['max'])}  (n={s['count']:,})"
    )


def render_run(run: Run) -> str:
    version = run.server_info.get("version", "?")
    head = f"== {run.workload} on {run.server} ({run.url}, version {version})"
    if run.rep:
        head += f", rep {run.rep + 1}"
    lines = [head]
    if run.error:
        lines.append(f"  ERROR: {run.error}")
    for p in run.phases:
        lines.extend(render_phase(p))
    return "\n".join(lines)


# -- comparisons ------------------------------------------------------------------------


def summarize(runs: Iterable[Run], servers: list[str]) -> list[dict]:
    """One row per phase label: median headline (and latency) per server, and the ratio."""
    rows: dict[str, dict] = {}
    for run in runs:
        labels = [p.label for p in run.phases] or [run.workload]
        for label in labels:
            rows.setdefault(label, {"phase": label, "servers": {s: {"reps": [], "p50": [], "p99": [], "errors": 0} for s in servers}})
        for p in run.phases:
            cell = rows[p.label]["servers"][run.server]
            if p.ok and run.error is None:
                cell["reps"].append(p.headline())
                cell["kind"] = p.kind
                if p.latency is not None and p.latency.count:
                    cell["p50"].append(p.latency.percentile(50))
                    cell["p99"].append(p.latency.percentile(99))
            else:
                cell["errors"] += 1
        if run.error is not None and not run.phases:
            rows[run.workload]["servers"][run.server]["errors"] += 1
    out = []
    for row in rows.values():
        for cell in row["servers"].values():
            cell["median"] = statistics.median(cell["reps"]) if cell["reps"] else None
            cell["p50_median"] = statistics.median(cell["p50"]) if cell["p50"] else None
            cell["p99_median"] = statistics.median(cell["p99"]) if cell["p99"] else None
        if len(servers) == 2:
            a, b = (row["servers"][s]["median"] for s in servers)
            row["ratio"] = a / b if a and b else None
        out.append(row)
    return out


def render_summary(rows: list[dict], servers: list[str], title: str) -> str:
    lines = [title]
    w = max([len(r["phase"]) for r in rows] + [8])
    head = f"{'phase':<{w}}"
    for s in servers:
        head += f"  {s:>26}"
    if len(servers) == 2:
        head += f"  {servers[0] + '/' + servers[1]:>12}"
    lines.append(head)
    for r in rows:
        line = f"{r['phase']:<{w}}"
        for s in servers:
            cell = r["servers"][s]
            if cell["median"] is None:
                text = f"errors ({cell['errors']})" if cell["errors"] else "-"
            else:
                unit = "req/s" if cell.get("kind") == "latency" else "msgs/s"
                text = f"{fmt_short(cell['median'])} {unit}"
                if cell["errors"]:
                    text += f" ({cell['errors']} failed)"
            line += f"  {text:>26}"
        if len(servers) == 2:
            ratio = r.get("ratio")
            line += f"  {(f'{ratio:.2f}x' if ratio else '-'):>12}"
        lines.append(line)
        if any(r["servers"][s]["p50_median"] is not None for s in servers):
            lat = f"{'':<{w}}"
            for s in servers:
                cell = r["servers"][s]
                if cell["p50_median"] is None:
                    text = ""
                else:
                    text = f"p50 {fmt_ns(cell['p50_median'])} p99 {fmt_ns(cell['p99_median'])}"
                lat += f"  {text:>26}"
            lines.append(lat)
    return "\n".join(lines)


# -- plot -------------------------------------------------------------------------------


class PlotUnavailable(Exception):
    pass


def plot(runs: list[Run], rows: list[dict], servers: list[str], path: str) -> None:
    """Throughput bars per phase and server, and latency CDFs, into one PNG.

    Raises:
        PlotUnavailable: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'natsx[plot]' "
            "(or pip install matplotlib)"
        ) from None
    lat_phases = [(run, p) for run in runs for p in run.phases if p.latency is not None and p.latency.count]
    ncols = 2 if lat_phases else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 5), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(1, len(servers))
    for k, s in enumerate(servers):
        xs = [i + k * width for i in range(len(rows))]
        ys = [(r["servers"][s]["median"] or 0) for r in rows]
        ax.bar(xs, ys, width, label=s)
    ax.set_xticks([i + width * (len(servers) - 1) / 2 for i in range(len(rows))])
    ax.set_xticklabels([r["phase"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("msgs/s (median)")
    ax.set_title("Throughput")
    ax.legend()
    if lat_phases:
        ax = axes[0][1]
        merged: dict[tuple[str, str], Histogram] = {}
        for run, p in lat_phases:
            merged.setdefault((run.server, p.label), Histogram()).merge(p.latency)
        from natsx.bench.histogram import bucket_range

        for (server, label), h in sorted(merged.items()):
            xs, ys, seen = [], [], 0
            for i in sorted(h.counts):
                seen += h.counts[i]
                xs.append(max(bucket_range(i)[1], 1) / 1e3)
                ys.append(seen / h.count)
            ax.step(xs, ys, where="post", label=f"{label} ({server})")
        ax.set_xscale("log")
        ax.set_xlabel("latency (us)")
        ax.set_ylabel("fraction of requests")
        ax.set_title("Latency CDF")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
