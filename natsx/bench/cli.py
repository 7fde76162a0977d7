"""``natsx-bench``: command line, single-server runs and ``--compare``.

Single-server mode runs each named workload against ``--url`` (``--reps`` times) and
prints every phase. ``--compare`` starts natsx and the Go nats-server on free loopback
ports, runs every workload on both, alternating which server goes first in each
repetition so that neither always runs on a warmer machine, and prints the median per
server and the natsx/Go ratio. Servers are stopped on every way out: normal end, error,
Ctrl-C and SIGTERM (turned into KeyboardInterrupt so that ``finally`` blocks run).

Exit status: 0 when every run passed its checks, 1 when any failed, 2 for usage errors,
130 when interrupted.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import sys
import time
from typing import Sequence

import attrs

from natsx import __version__
from natsx._speedups import load
from natsx.bench import placement, report, selftest, workloads
from natsx.bench.conn import DEFAULT_URL, BenchError, ConnectOptions, Connection
from natsx.bench.results import Run
from natsx.bench.servers import ServerProcess, find_go, find_natsx
from natsx.protocol.client_parser import ProtocolError

EPILOG = """\
workloads:
  pub       N publishers, no subscribers
  pubsub    N publishers -> M subscribers, each gets every message
  fanout    1 publisher -> M subscribers (default 4) on the subject, * and >
  queue     N publishers -> M subscribers (default 4) in one queue group
  reqrep    request/reply latency; --pubs requesters, --subs repliers, --inflight
  js-pub    JetStream publish: sync, then async with a window (--window 1,256)
  js-pull   fill a stream, then pull-consumer fetches of --batch
  kv        KV put then get on bucket --bucket (stream KV_<bucket>)
  client    no server: how fast this client builds and counts frames
  groups: all, core (pub..reqrep), js (js-pub, js-pull, kv); default: pub pubsub

Rates are msgs/s and MB/s (payload bytes / 1024^2 / s), aggregate and per client,
like `nats bench`. Every run checks its counts (every subscriber got every message,
queue members got each message exactly once, every request was answered).

examples:
  natsx-bench pub pubsub --size 16 --duration 2
  natsx-bench reqrep --url nats://127.0.0.1:4222 --msgs 100000
  natsx-bench all --compare --workers-natsx 2 --reps 3 --json results.json
  natsx-bench pubsub reqrep --compare --workers-natsx 2 --placement same,cross
"""


def parse_size(text: str) -> int:
    """``16``, ``1k``, ``64KiB``, ``1M`` (binary multiples) -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)(i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    mult = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    return int(m.group(1)) * mult


def parse_count(text: str) -> int:
    """``100000``, ``100k``, ``1M``, ``1_000_000`` -> int (decimal multiples)."""
    m = re.fullmatch(r"\s*([\d_]+)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    mult = {"": 1, "k": 1000, "m": 1000_000}[m.group(2).lower()]
    return int(m.group(1).replace("_", "")) * mult


def parse_windows(text: str) -> tuple[int, ...]:
    try:
        ws = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of windows: {text!r}") from None
    if not ws or min(ws) < 1:
        raise argparse.ArgumentTypeError("windows must be >= 1")
    return ws


def parse_placements(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in placement.MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(
            f"placement must be a list of {', '.join(placement.MODES)}: {text!r}")
    return tuple(dict.fromkeys(modes))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="natsx-bench",
        description="Benchmark a NATS server (natsx, the Go nats-server, any URL).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workloads", nargs="*", metavar="WORKLOAD", help="workloads or groups to run (see below)")
    c = p.add_argument_group("connection")
    c.add_argument("-s", "--url", default=os.environ.get("NATS_URL", DEFAULT_URL),
                   help="server URL (default: $NATS_URL or %(default)s)")
    c.add_argument("--user")
    c.add_argument("--password")
    c.add_argument("--token")
    c.add_argument("--creds", metavar="FILE", help="user JWT and seed (.creds)")
    c.add_argument("--nkey", metavar="SEED|FILE", help="NKEY seed, or a file holding it")
    c.add_argument("--tls-ca", metavar="FILE")
    c.add_argument("--tls-cert", metavar="FILE")
    c.add_argument("--tls-key", metavar="FILE")
    w = p.add_argument_group("workload")
    w.add_argument("--msgs", type=parse_count, metavar="N",
                   help="messages in total, split over the publishers (default: unbounded)")
    w.add_argument("--duration", type=float, metavar="S",
                   help="seconds of sending per phase (default: 5, or unbounded with --msgs)")
    w.add_argument("--size", type=parse_size, default=128, metavar="B", help="payload bytes (default: 128)")
    w.add_argument("--subject", default="bench", help="subject (default: %(default)s)")
    w.add_argument("--pubs", type=int, metavar="N", help="publishers / requesters (default: 1)")
    w.add_argument("--subs", type=int, metavar="M",
                   help="subscribers / repliers / fetchers (default: 1; fanout and queue 4)")
    w.add_argument("--inflight", type=int, default=1, metavar="W",
                   help="reqrep: requests outstanding per requester (default: 1)")
    w.add_argument("--window", type=parse_windows, metavar="W[,W...]",
                   help="JetStream/KV: outstanding acks, one phase each (default: js-pub 1,256; kv 1; js-pull fill 256)")
    w.add_argument("--batch", type=int, default=100, help="js-pull: messages per fetch (default: 100)")
    w.add_argument("--ack", choices=("explicit", "none"), default="explicit", help="js-pull ack policy")
    w.add_argument("--storage", choices=("file", "memory"), default="file", help="JetStream storage")
    w.add_argument("--stream", default="BENCH", help="JetStream stream name (default: %(default)s)")
    w.add_argument("--bucket", default="bench", help="KV bucket (default: %(default)s)")
    w.add_argument("--keys", type=int, default=100, help="kv: distinct keys (default: 100)")
    w.add_argument("--headers", action="store_true", help="send HPUB with a small header")
    w.add_argument("--verify", action="store_true",
                   help="pubsub/fanout: identify every message, not just count (queue always does)")
    w.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="fail when nothing arrives for this long (default: 5)")
    w.add_argument("--pure", action="store_true", help="use the pure-Python client (slow; for checks)")
    w.add_argument("--placement", type=parse_placements, default=("any",), metavar="MODE[,MODE...]",
                   help="pubsub/fanout/queue/reqrep: put both sides on the same server worker "
                        "(same), on different workers (cross) or let the kernel decide (any); "
                        "js-pub/js-pull/kv: the clients on the stream's worker or on others; "
                        "one phase per mode (default: any)")
    w.add_argument("--server-workers", type=int, metavar="N",
                   help="the worker count of the server at --url, for --placement "
                        "(with --compare: --workers-natsx for natsx, 1 for Go)")
    m = p.add_argument_group("compare")
    m.add_argument("--compare", action="store_true", help="start natsx and the Go nats-server and compare them")
    m.add_argument("--natsx", metavar="PATH", help="natsx command (default: natsx next to this Python)")
    m.add_argument("--go", metavar="PATH", help="Go nats-server (default: /usr/sbin/nats-server, else PATH)")
    m.add_argument("--workers-natsx", type=int, metavar="N", help="natsx --workers (default: CPU count)")
    m.add_argument("--sync-always", action="store_true",
                   help="JetStream workloads: both servers sync every write before acknowledging "
                        "it (a config file with sync_interval: always; the Go server needs 2.10+)")
    m.add_argument("--reps", type=int, metavar="N", help="repetitions (default: 3 with --compare, else 1)")
    o = p.add_argument_group("output")
    o.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write every rep as one JSON document (to FILE, or stdout instead of the table)")
    o.add_argument("--plot", metavar="FILE.png", help="throughput bars and latency CDF (needs matplotlib)")
    o.add_argument("-v", "--verbose", action="store_true", help="--compare: print every run in full")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    p.add_argument("--version", action="version", version=f"natsx-bench {__version__}")
    return p


def expand(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names or ("pub", "pubsub"):
        for w in workloads.GROUPS.get(n, (n,)):
            if w not in workloads.WORKLOADS and w != "client":
                raise BenchError(f"unknown workload {w!r} (see --help)")
            if w not in out:
                out.append(w)
    return out


def config_from(args: argparse.Namespace) -> workloads.BenchConfig:
    duration = args.duration if args.duration is not None else (0.0 if args.msgs else 5.0)
    return workloads.BenchConfig(
        connect=ConnectOptions(
            url=args.url, user=args.user, password=args.password, token=args.token,
            creds=args.creds, nkey=args.nkey, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        ),
        msgs=args.msgs or 0,
        duration=duration,
        size=args.size,
        subject=args.subject,
        pubs=args.pubs,
        subs=args.subs,
        inflight=args.inflight,
        windows=args.window,
        batch=args.batch,
        storage=args.storage,
        stream=args.stream,
        bucket=args.bucket,
        keys=args.keys,
        ack=args.ack,
        headers=args.headers,
        verify=args.verify,
        timeout=args.timeout,
        pure=True if args.pure else None,
        server_workers=args.server_workers or 1,
    )


class Progress:
    """A one-line status on stderr, shown once a run has lasted a couple of seconds."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.begun = 0.0
        self.shown = 0.0
        self.width = 0

    def begin(self) -> None:
        self.begun = time.monotonic()
        self.shown = 0.0

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.begun < 2.0 or now - self.shown < 0.25:
            return
        self.shown = now
        self.width = max(self.width, len(text))
        sys.stderr.write("\r" + text.ljust(self.width))
        sys.stderr.flush()

    def clear(self) -> None:
        if self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()
            self.width = 0


def server_info(cfg: workloads.BenchConfig) -> dict:
    conn = Connection.open(cfg.connect, "natsx-bench info")
    try:
        return conn.info
    finally:
        conn.close()


def plan(names: Sequence[str], placements: Sequence[str]) -> list[tuple[str, str]]:
    """(workload, placement) pairs in run order: placed workloads once per placement."""
    out = []
    for w in names:
        for p in (placements if w in workloads.PLACED_WORKLOADS else ("any",)):
            out.append((w, p))
    return out


def run_label(workload: str, place: str) -> str:
    return workload if place == "any" else f"{workload}@{place}"


def run_one(workload: str, cfg: workloads.BenchConfig, server: str, rep: int, info: dict,
            progress: Progress, place: str = "any") -> Run:
    cfg = attrs.evolve(cfg, placement=place)
    run = Run(workload=run_label(workload, place), server=server, url=cfg.connect.url, rep=rep,
              server_info=info)
    progress.begin()
    try:
        run.phases = workloads.run(workload, cfg, progress)
    except BenchError as exc:
        run.error = str(exc)
    except ProtocolError as exc:
        run.error = f"protocol error: {exc}"
    finally:
        progress.clear()
    return run


def _say(text: str, enabled: bool) -> None:
    if enabled:
        print(text, flush=True)


def _single(args, cfg, names, progress, show) -> tuple[list[Run], dict]:
    info = server_info(cfg)
    servers = {"server": {"url": cfg.connect.url, "info": info}}
    runs = []
    for w, place in plan(names, args.placement):
        for rep in range(args.reps or 1):
            run = run_one(w, cfg, "server", rep if (args.reps or 1) > 1 else 0, info, progress,
                          place)
            runs.append(run)
            _say(report.render_run(run) + "\n", show)
    return runs, servers


def _compare(args, cfg, names, progress, show) -> tuple[list[Run], dict]:
    go = find_go(args.go)
    if not go:
        raise BenchError("no Go nats-server found: install it or pass --go PATH")
    js = any(w in workloads.JS_WORKLOADS for w in names)
    nworkers = args.workers_natsx or os.cpu_count() or 1
    natsx = ServerProcess("natsx", find_natsx(args.natsx), jetstream=js, workers=nworkers,
                          sync_always=args.sync_always)
    gosrv = ServerProcess("go", [go], jetstream=js, sync_always=args.sync_always)
    # How many workers each server runs, for --placement: Go is one process.
    server_workers = {"natsx": nworkers, "go": 1}
    reps = args.reps or 3
    runs: list[Run] = []
    try:
        for srv in (natsx, gosrv):
            srv.start()
        infos = {}
        for srv in (natsx, gosrv):
            infos[srv.name] = server_info(attrs.evolve(cfg, connect=attrs.evolve(cfg.connect, url=srv.url)))
        servers = {
            s.name: {"url": s.url, "command": s.argv(), "info": infos[s.name]} for s in (natsx, gosrv)
        }
        _say(
            f"natsx: {' '.join(natsx.argv())}\ngo:    {' '.join(gosrv.argv())}", show
        )
        placed = [p for p in args.placement if p != "any"]
        if placed and any(w in workloads.PLACED_WORKLOADS for w in names):
            _say(f"placement: {', '.join(args.placement)} on natsx's {nworkers} workers; "
                 "the Go server is one process, so placement is a no-op there", show)
        _say("", show)
        for w, place in plan(names, args.placement):
            for rep in range(reps):
                order = (natsx, gosrv) if rep % 2 == 0 else (gosrv, natsx)
                for srv in order:
                    scfg = attrs.evolve(cfg, connect=attrs.evolve(cfg.connect, url=srv.url),
                                        server_workers=server_workers[srv.name])
                    run = run_one(w, scfg, srv.name, rep, infos[srv.name], progress, place)
                    runs.append(run)
                    if args.verbose:
                        _say(report.render_run(run) + "\n", show)
                    else:
                        status = "ok" if run.ok else "FAILED: " + "; ".join(
                            ([run.error] if run.error else []) + [e for p in run.phases for e in p.errors]
                        )
                        rates = "  ".join(f"{p.label} {report.fmt_short(p.headline())}/s" for p in run.phases)
                        _say(f"{run.workload:<8} rep {rep + 1}/{reps}  {srv.name:<5}  {rates}  {status}",
                             show)
    finally:
        for srv in (natsx, gosrv):
            srv.stop()
    return runs, servers


def _client_selftest(args, show) -> int:
    res = selftest.measure(size=args.size, seconds=min(args.duration or 1.0, 3.0), pure=True if args.pure else None)
    if args.json:
        _write_json(args.json, {"tool": "natsx-bench", "version": __version__, "selftest": res})
    lines = [
        f"client self-test: {res['client']}, {res['size']} B payloads, no server",
        f"  build   PubBuilder.build               {report.fmt_short(res['build_msgs_per_sec']):>8} msgs/s",
        f"  count   FrameCounter.feed              {report.fmt_short(res['count_msgs_per_sec']):>8} msgs/s",
        f"  send    build + sendall (socketpair)   {report.fmt_short(res['send_msgs_per_sec']):>8} msgs/s",
        f"  recv    recv_into + feed (socketpair)  {report.fmt_short(res['recv_msgs_per_sec']):>8} msgs/s",
    ]
    _say("\n".join(lines), show)
    return 0


def _write_json(dest: str, doc: dict) -> None:
    text = json.dumps(doc, indent=2, default=str)
    if dest == "-":
        print(text)
    else:
        with open(dest, "w") as f:
            f.write(text + "\n")


def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        names = expand(args.workloads)
    except BenchError as exc:
        parser.error(str(exc))
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")
    show = args.json != "-"
    if names == ["client"]:
        return _client_selftest(args, show)
    if "client" in names:
        parser.error("the client self-test runs alone: natsx-bench client")
    cfg = config_from(args)
    if cfg.msgs <= 0 and cfg.duration <= 0:
        parser.error("give a bound: --msgs N or --duration S > 0")
    if (not args.compare and any(p != "any" for p in args.placement)
            and args.server_workers is None):
        parser.error("--placement same/cross needs --server-workers N (the worker count of "
                     "the server at --url), or --compare")
    progress = Progress(enabled=not args.quiet and sys.stderr.isatty())
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    bc = load("benchclient", pure=cfg.pure)
    try:
        if args.compare:
            runs, servers = _compare(args, cfg, names, progress, show)
        else:
            runs, servers = _single(args, cfg, names, progress, show)
    except KeyboardInterrupt:
        progress.clear()
        print("natsx-bench: interrupted", file=sys.stderr)
        return 130
    except BenchError as exc:
        progress.clear()
        print(f"natsx-bench: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    server_names = list(servers)
    rows = report.summarize(runs, server_names)
    if args.compare or (args.reps or 1) > 1:
        title = f"median of {args.reps or (3 if args.compare else 1)} reps"
        if args.compare:
            title += f" (natsx --workers {args.workers_natsx or os.cpu_count()}); ratio = natsx/go rate"
        _say(report.render_summary(rows, server_names, title), show)
    if args.json:
        doc = {
            "tool": "natsx-bench",
            "version": __version__,
            "client": bc.__name__,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "workloads": names,
            "config": _config_json(cfg),
            "compare": args.compare,
            "servers": servers,
            "runs": [r.to_json() for r in runs],
            "summary": rows,
        }
        _write_json(args.json, doc)
    if args.plot:
        try:
            report.plot(runs, rows, server_names, args.plot)
        except report.PlotUnavailable as exc:
            print(f"natsx-bench: {exc}", file=sys.stderr)
            return 2
    return 0 if all(r.ok for r in runs) else 1


def _config_json(cfg: workloads.BenchConfig) -> dict:
    d = attrs.asdict(cfg)
    conn = d.pop("connect")
    d["url"] = conn["url"]
    d["auth"] = [k for k in ("user", "token", "creds", "nkey") if conn.get(k)]
    d["tls"] = bool(conn.get("tls_ca") or conn.get("tls_cert")) or conn["url"].startswith("tls://")
    return d


if __name__ == "__main__":
    sys.exit(main())
