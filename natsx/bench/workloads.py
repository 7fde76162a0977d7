"""The workloads: who connects, what they send, and what must arrive.

Theory of operation
-------------------
A workload opens its connections, subscribes, proves that interest has arrived
(``loops.probe``), then starts one thread per client running a loop from
``natsx.bench.loops`` and coordinates from the calling thread: it waits for the senders,
works out how many messages each receiver must get, waits for them (or for the stall
timeout), stops the receivers and checks the counts. A workload returns ``Phase``
objects; a count that does not add up is an error in the phase, never silently a rate.

Placement: with ``placement`` same or cross (natsx.bench.placement), the workloads with
two sides open their receiving connections (subscribers, repliers) first and their
sending ones after, each through the ``Placer``, and label the phase ``workload@mode``
with where the connections went.

Bounds: ``msgs`` is the total over all senders (split as evenly as possible, the first
senders taking the remainder, like ``nats bench``) and ``duration`` a wall-clock limit
on sending; whichever comes first ends the phase, and 0 means no bound of that kind.

Workloads:

* ``pub``     N publishers, no subscribers.
* ``pubsub``  N publishers, M subscribers on the subject; each gets every message.
* ``fanout``  like pubsub with more subscribers by default, subscribed through the
  literal subject and through ``*`` and ``>`` wildcards in turn.
* ``queue``   N publishers, M subscribers in one queue group; each message exactly once.
* ``reqrep``  requesters (``pubs``) against repliers (``subs``, a queue group when more
  than one); ``inflight`` requests outstanding per requester; latency histogram.
* ``js-pub``  JetStream publish waiting for each PubAck, then with a window of
  outstanding acks (one phase per ``windows`` entry); stream created and deleted.
* ``js-pull`` fills a stream, then pull consumers fetch ``batch`` at a time.
* ``kv``      KV put then get (direct get) on bucket stream ``KV_<bucket>``.
"""
from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Callable

import attrs

from natsx._speedups import load
from natsx.bench import loops
from natsx.bench.conn import ApiError, BenchError, ConnectOptions, Connection, new_inbox
from natsx.bench.histogram import Histogram
from natsx.bench.loops import UNBOUNDED, Client, now_ns
from natsx.bench.placement import RECEIVER, SENDER, Placer
from natsx.bench.results import Phase, Sample

WORKLOADS = ("pub", "pubsub", "fanout", "queue", "reqrep", "js-pub", "js-pull", "kv")
#: Workloads with a sending and a receiving side, which ``placement`` applies to.
JS_WORKLOADS = ("js-pub", "js-pull", "kv")
PLACED_WORKLOADS = ("pubsub", "fanout", "queue", "reqrep") + JS_WORKLOADS
GROUPS = {
    "all": WORKLOADS,
    "core": ("pub", "pubsub", "fanout", "queue", "reqrep"),
    "js": JS_WORKLOADS,
}
QUEUE_GROUP = "natsx-bench"
BENCH_HEADERS = b"NATS/1.0\r\nNatsx-Bench: 1\r\n\r\n"

# JetStream API error code for "stream name already in use".
_JS_STREAM_NAME_IN_USE = 10058


@attrs.frozen
class BenchConfig:
    """Everything a workload needs to know; the CLI fills it from its flags."""

    connect: ConnectOptions = ConnectOptions()
    msgs: int = 0
    duration: float = 5.0
    size: int = 128
    subject: str = "bench"
    pubs: int | None = None
    subs: int | None = None
    inflight: int = 1
    windows: tuple[int, ...] | None = None
    batch: int = 100
    storage: str = "file"
    stream: str = "BENCH"
    bucket: str = "bench"
    keys: int = 100
    ack: str = "explicit"
    headers: bool = False
    verify: bool = False
    timeout: float = 5.0
    pure: bool | None = None
    placement: str = "any"
    server_workers: int = 1


def split(total: int, n: int) -> list[int]:
    """``total`` messages over ``n`` senders; 0 (unbounded) stays unbounded."""
    if total <= 0:
        return [UNBOUNDED] * n
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


Progress = Callable[[str], None]


@attrs.define(eq=False)
class _Run:
    """One workload execution: its connections, clients and threads, all cleaned up."""

    cfg: BenchConfig
    bc: ModuleType
    progress: Progress | None
    label: str = ""
    conns: list[Connection] = attrs.field(factory=list)
    clients: list[Client] = attrs.field(factory=list)
    threads: list[threading.Thread] = attrs.field(factory=list)
    t0: float = attrs.field(factory=time.monotonic)
    placer: Placer | None = None

    def connect(self, name: str, side: str | None = None) -> Connection:
        """A connection named ``name``; ``side`` (RECEIVER/SENDER) places it on a worker."""
        def opener() -> Connection:
            return Connection.open(self.cfg.connect, f"natsx-bench {name}")

        if side is not None and self.placer is not None:
            conn = self.placer.open(opener, side)
        else:
            conn = opener()
        self.conns.append(conn)
        return conn

    def placed(self, phase: Phase) -> Phase:
        """Records where the phase's connections went (a ``placement`` other than any)."""
        if self.placer is not None and self.cfg.placement != "any":
            phase.placement = self.cfg.placement
            phase.params["placement"] = self.placer.describe()
        return phase

    def client(self, conn: Connection, role: str, **fc_options) -> Client:
        c = Client(conn=conn, fc=self.bc.FrameCounter(**fc_options), role=role)
        self.clients.append(c)
        return c

    def start(self, c: Client, fn: Callable, *args) -> None:
        self.threads.append(loops.start(c, fn, *args))

    def deadline(self) -> int:
        d = self.cfg.duration
        return now_ns() + int(d * 1e9) if d > 0 else UNBOUNDED

    def tick(self, count: int, what: str = "msgs") -> None:
        loops.raise_first_error(self.clients)
        if self.progress is not None:
            self.progress(f"{self.label}: {time.monotonic() - self.t0:5.1f} s  {count:,} {what}")

    def wait_done(self, clients: list[Client], count: Callable[[], int], what: str = "msgs") -> None:
        while not all(c.done for c in clients):
            self.tick(count(), what)
            time.sleep(0.05)
        loops.raise_first_error(clients)

    def wait_count(
        self, clients: list[Client], reached: Callable[[], bool], count: Callable[[], int]
    ) -> bool:
        """Wait until ``reached()`` or no progress for the stall timeout; True if reached."""
        last = count()
        last_change = time.monotonic()
        while not reached():
            self.tick(count())
            now = count()
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > self.cfg.timeout:
                return False
            if any(c.done for c in clients):
                loops.raise_first_error(clients)
            time.sleep(0.01)
        return True

    def stop(self, clients: list[Client]) -> None:
        for c in clients:
            c.stop.set()
        for c in clients:
            while not c.done:
                time.sleep(0.005)
        loops.raise_first_error(clients)

    def close(self) -> None:
        for c in self.clients:
            c.stop.set()
        deadline = time.monotonic() + 2.0
        for th in self.threads:
            th.join(max(0.0, deadline - time.monotonic()))
        for conn in self.conns:
            conn.close()
        self.conns.clear()


def run(
    workload: str, cfg: BenchConfig, progress: Progress | None = None
) -> list[Phase]:
    """Run one workload and return its phases.

    Raises:
        BenchError: the workload could not run (connection, auth, no JetStream...).
        KeyboardInterrupt: passed through after the connections are closed.
    """
    try:
        fn = _WORKLOADS[workload]
    except KeyError:
        raise BenchError(f"unknown workload {workload!r}; one of {', '.join(WORKLOADS)}") from None
    placer = None
    if workload in JS_WORKLOADS:
        placer = Placer(cfg.placement, cfg.server_workers, owner=_stream_worker(workload, cfg))
    elif workload in PLACED_WORKLOADS:
        placer = Placer(cfg.placement, cfg.server_workers)
    elif cfg.placement != "any":
        raise BenchError(f"placement applies to {', '.join(PLACED_WORKLOADS)}, not {workload}")
    r = _Run(cfg=cfg, bc=load("benchclient", pure=cfg.pure), progress=progress, label=workload,
             placer=placer)
    try:
        return [r.placed(phase) for phase in fn(r)]
    finally:
        r.close()


def _stream_worker(workload: str, cfg: BenchConfig) -> tuple[str, int] | None:
    """The stream a JetStream workload uses and the natsx worker that runs it (placement)."""
    if cfg.placement == "any" or cfg.server_workers <= 1:
        return None
    c = cfg.connect
    if c.user or c.token or c.creds or c.nkey:
        raise BenchError("placement of a JetStream workload needs the stream's worker, known "
                         "for the global account only: run it without credentials")
    from natsx.jetstream.shards import stream_owner

    stream = f"KV_{cfg.bucket}" if workload == "kv" else cfg.stream
    return f"stream {stream}", stream_owner("$G", stream, cfg.server_workers)


def _params(cfg: BenchConfig, **extra) -> dict:
    return {"msgs": cfg.msgs, "duration": cfg.duration, "size": cfg.size, **extra}


def _fmt(n: int) -> str:
    return f"{n:,}"


# -- core NATS -------------------------------------------------------------------------


def _publishers(r: _Run, n: int) -> tuple[list[Client], list]:
    cfg = r.cfg
    headers = BENCH_HEADERS if cfg.headers else None
    clients, builders = [], []
    for i in range(n):
        conn = r.connect(f"pub {i}", SENDER)
        clients.append(r.client(conn, f"pub {i}"))
        builders.append(r.bc.PubBuilder(cfg.subject.encode(), cfg.size, headers=headers, pub_id=i))
    return clients, builders


def _run_publishers(r: _Run, clients: list[Client], builders: list) -> int:
    targets = split(r.cfg.msgs, len(clients))
    deadline = r.deadline()
    for c, b, t in zip(clients, builders, targets):
        r.start(c, loops.publish_loop, b, t, deadline, r.cfg.timeout)
    r.wait_done(clients, lambda: sum(c.sent for c in clients))
    return sum(c.sent for c in clients)


def _pub_samples(clients: list[Client], size: int) -> list[Sample]:
    return [Sample(c.sent, c.sent * size, c.start, c.end) for c in clients]


def _pub(r: _Run) -> list[Phase]:
    cfg = r.cfg
    npubs = cfg.pubs or 1
    pubs, builders = _publishers(r, npubs)
    sent = _run_publishers(r, pubs, builders)
    phase = Phase("pub", "pub", cfg.size, pubs=_pub_samples(pubs, cfg.size), params=_params(cfg, pubs=npubs))
    phase.checks.append(f"{_fmt(sent)} messages published and flushed")
    return [phase]


def _wildcard_forms(subject: str) -> list[str]:
    head, _, _ = subject.rpartition(".")
    prefix = head + "." if head else ""
    return [subject, prefix + "*", prefix + ">"]


def _pubsub(r: _Run, workload: str, npubs: int, nsubs: int, sub_subjects: list[str], queue: str | None) -> list[Phase]:
    cfg = r.cfg
    sub_conns = [r.connect(f"sub {j}", RECEIVER) for j in range(nsubs)]
    for conn, subj in zip(sub_conns, sub_subjects):
        conn.subscribe(subj, queue)
    for conn in sub_conns:
        conn.flush()
    pubs, builders = _publishers(r, npubs)
    loops.probe(
        [c.conn for c in pubs], sub_conns, [cfg.subject] * nsubs, union=queue is not None, timeout=cfg.timeout
    )
    track = npubs if (queue is not None or cfg.verify) and cfg.size >= 8 else 0
    subs = [r.client(conn, f"sub {j}", track=track) for j, conn in enumerate(sub_conns)]
    for c in subs:
        r.start(c, loops.receive_loop)
    published = _run_publishers(r, pubs, builders)

    def received() -> int:
        return sum(c.fc.msgs for c in subs)

    if queue is None:
        complete = r.wait_count(subs, lambda: all(c.fc.msgs >= published for c in subs), received)
    else:
        complete = r.wait_count(subs, lambda: received() >= published, received)
    r.stop(subs)
    phase = Phase(
        workload,
        workload,
        cfg.size,
        pubs=_pub_samples(pubs, cfg.size),
        subs=[loops.sub_sample(c) for c in subs],
        params=_params(cfg, pubs=npubs, subs=nsubs, subjects=sub_subjects, queue=queue),
    )
    if queue is None:
        _check_each(phase, subs, published, track, complete)
    else:
        _check_queue(phase, subs, published, track)
    return [phase]


def _check_each(phase: Phase, subs: list[Client], published: int, track: int, complete: bool) -> None:
    bad = False
    for c in subs:
        fc = c.fc
        if fc.msgs != published:
            bad = True
            phase.errors.append(f"{c.role} received {_fmt(fc.msgs)} of {_fmt(published)} messages")
        if track:
            seen = int.from_bytes(fc.bitmap(), "little").bit_count()
            if fc.dups or seen != published:
                bad = True
                phase.errors.append(
                    f"{c.role}: {_fmt(seen)} distinct messages, {_fmt(fc.dups)} duplicates"
                )
    if not complete and not bad:
        phase.errors.append("subscribers stalled")
    if not bad:
        how = " (each message identified)" if track else ""
        who = "1 subscriber" if len(subs) == 1 else f"{len(subs)} subscribers"
        phase.checks.append(f"every subscriber received all {_fmt(published)} messages{how} ({who})")


def _check_queue(phase: Phase, subs: list[Client], published: int, track: int) -> None:
    total = sum(c.fc.msgs for c in subs)
    if total != published:
        phase.errors.append(
            f"queue group received {_fmt(total)} messages for {_fmt(published)} published"
        )
    if not track:
        if total == published:
            phase.checks.append(
                f"queue group received {_fmt(total)} messages for {_fmt(published)} published "
                "(payload too small to identify messages)"
            )
        return
    union = 0
    overlap = 0
    for c in subs:
        bits = int.from_bytes(c.fc.bitmap(), "little")
        overlap += (union & bits).bit_count()
        union |= bits
    within = sum(c.fc.dups for c in subs)
    distinct = union.bit_count()
    if overlap or within:
        phase.errors.append(
            f"{_fmt(overlap)} messages delivered to more than one member, {_fmt(within)} twice to the same member"
        )
    if distinct != published:
        phase.errors.append(f"{_fmt(published - distinct)} messages never delivered")
    if phase.ok:
        counts = ", ".join(_fmt(c.fc.msgs) for c in subs)
        phase.checks.append(
            f"each of {_fmt(published)} messages delivered exactly once across the group ({counts})"
        )


def _pubsub_workload(r: _Run) -> list[Phase]:
    cfg = r.cfg
    nsubs = cfg.subs or 1
    return _pubsub(r, "pubsub", cfg.pubs or 1, nsubs, [cfg.subject] * nsubs, None)


def _fanout(r: _Run) -> list[Phase]:
    cfg = r.cfg
    nsubs = cfg.subs or 4
    forms = _wildcard_forms(cfg.subject)
    return _pubsub(r, "fanout", cfg.pubs or 1, nsubs, [forms[j % len(forms)] for j in range(nsubs)], None)


def _queue(r: _Run) -> list[Phase]:
    cfg = r.cfg
    nsubs = cfg.subs or 4
    return _pubsub(r, "queue", cfg.pubs or 1, nsubs, [cfg.subject] * nsubs, QUEUE_GROUP)


# -- request/reply ---------------------------------------------------------------------


def _ring_size(window: int) -> int:
    # Replies may come back out of order (several repliers); a ring much larger than the
    # window keeps an unanswered request's send time from being overwritten.
    return max(1024, 8 * window)


def _latency_of(clients: list[Client]) -> Histogram:
    h = Histogram()
    for c in clients:
        fc = c.fc
        h.add_buckets(fc.histogram(), count=fc.lat_count, total=fc.lat_sum, lo=fc.lat_min, hi=fc.lat_max)
    return h


def _check_replies(phase: Phase, reqs: list[Client], what: str) -> None:
    sent = sum(c.sent for c in reqs)
    for c in reqs:
        fc = c.fc
        if fc.statuses:
            phase.errors.append(f"{c.role}: {_fmt(fc.statuses)} status replies (last {fc.last_status})")
        if fc.errors:
            phase.errors.append(
                f"{c.role}: {_fmt(fc.errors)} error replies, first: {fc.first_error[:200]!r}"
            )
        if fc.msgs + fc.statuses != c.sent:
            phase.errors.append(f"{c.role}: {_fmt(fc.msgs + fc.statuses)} replies to {_fmt(c.sent)} {what}")
    if phase.ok:
        phase.checks.append(f"{_fmt(sent)} {what}, every one answered")


def _reqrep(r: _Run) -> list[Phase]:
    cfg = r.cfg
    bc = r.bc
    nreq = cfg.pubs or 1
    nrep = cfg.subs or 1
    window = max(1, cfg.inflight)
    queue = QUEUE_GROUP if nrep > 1 else None
    rep_conns = [r.connect(f"replier {j}", RECEIVER) for j in range(nrep)]
    for conn in rep_conns:
        conn.subscribe(cfg.subject, queue)
    for conn in rep_conns:
        conn.flush()
    req_conns = [r.connect(f"requester {i}", SENDER) for i in range(nreq)]
    inboxes = [new_inbox() for _ in req_conns]
    for conn, inbox in zip(req_conns, inboxes):
        conn.subscribe(inbox + ".*")
    for conn in req_conns:
        conn.flush()
    loops.probe(req_conns, rep_conns, [cfg.subject] * nrep, union=queue is not None, timeout=cfg.timeout)
    loops.probe(rep_conns, req_conns, [i + ".probe" for i in inboxes], union=False, timeout=cfg.timeout)
    reps = [r.client(conn, f"replier {j}", echo=True) for j, conn in enumerate(rep_conns)]
    for c in reps:
        r.start(c, loops.receive_loop)
    stamp = cfg.size >= 16
    reqs = []
    headers = BENCH_HEADERS if cfg.headers else None
    for i, (conn, inbox) in enumerate(zip(req_conns, inboxes)):
        b = bc.PubBuilder(
            cfg.subject.encode(), cfg.size, reply=inbox.encode(), reply_seq=True, pub_id=i,
            stamp=stamp, ring=0 if stamp else _ring_size(window), headers=headers,
        )
        c = r.client(conn, f"requester {i}", latency=bc.LAT_PAYLOAD if stamp else bc.LAT_RING, source=b)
        reqs.append((c, b))
    targets = split(cfg.msgs, nreq)
    deadline = r.deadline()
    for (c, b), t in zip(reqs, targets):
        r.start(c, loops.request_loop, b, t, deadline, window, cfg.timeout)
    req_clients = [c for c, _ in reqs]
    r.wait_done(req_clients, lambda: sum(c.fc.msgs for c in req_clients), "replies")
    served_target = sum(c.sent for c in req_clients)
    r.wait_count(reps, lambda: sum(c.fc.msgs for c in reps) >= served_target, lambda: sum(c.fc.msgs for c in reps))
    r.stop(reps)
    phase = Phase(
        "reqrep",
        "reqrep",
        cfg.size,
        kind="latency",
        pubs=[Sample(c.fc.msgs, c.fc.nbytes, c.start, c.end) for c in req_clients],
        subs=[loops.sub_sample(c) for c in reps],
        latency=_latency_of(req_clients),
        params=_params(cfg, requesters=nreq, repliers=nrep, inflight=window, queue=queue),
    )
    _check_replies(phase, req_clients, "requests")
    served = sum(c.fc.msgs for c in reps)
    if served != served_target:
        phase.errors.append(f"repliers saw {_fmt(served)} requests for {_fmt(served_target)} sent")
    return [phase]


# -- JetStream -------------------------------------------------------------------------


def _require_jetstream(ctl: Connection, timeout: float) -> None:
    # A server may accept clients a moment before its JetStream API answers, so "no
    # responders" is retried until the timeout before it becomes the verdict.
    try:
        loops.probe_requests(ctl, "$JS.API.INFO", b"", timeout)
    except BenchError as exc:
        raise BenchError(f"the server has no JetStream (start it with -js): {exc}") from None


def _create_stream(ctl: Connection, cfg: BenchConfig, name: str, subjects: list[str], **extra) -> None:
    body = {
        "name": name,
        "subjects": subjects,
        "storage": cfg.storage,
        "retention": "limits",
        "discard": "old",
        "num_replicas": 1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msg_size": -1,
        "max_consumers": -1,
        **extra,
    }
    try:
        ctl.api(f"$JS.API.STREAM.CREATE.{name}", body, timeout=cfg.timeout)
    except ApiError as exc:
        if exc.err_code == _JS_STREAM_NAME_IN_USE:
            raise BenchError(
                f"stream {name} already exists on the server; delete it or pick another name "
                "(--stream / --bucket)"
            ) from None
        raise


def _delete_stream(ctl: Connection, name: str, timeout: float) -> None:
    try:
        ctl.api(f"$JS.API.STREAM.DELETE.{name}", timeout=timeout)
    except BenchError:
        pass  # best effort: the run's own result matters more than its cleanup


def _stream_messages(ctl: Connection, name: str, timeout: float) -> int:
    info = ctl.api(f"$JS.API.STREAM.INFO.{name}", timeout=timeout)
    return int(info.get("state", {}).get("messages", 0))


def _request_phase(
    r: _Run,
    workload: str,
    name: str,
    subject: str,
    nclients: int,
    window: int,
    *,
    size: int,
    probe_subject: str,
    probe_payload: bytes,
    keys: int = 0,
    payload: bytes | None = None,
    scan_errors: bool = True,
    what: str = "requests",
) -> tuple[Phase, list[Client]]:
    """Requesters with a window of outstanding requests, timed by the reply subjects."""
    cfg = r.cfg
    bc = r.bc
    clients = []
    builders = []
    for i in range(nclients):
        conn = r.connect(f"{workload} {name} {i}", SENDER)
        inbox = new_inbox()
        conn.subscribe(inbox + ".*")
        conn.flush()
        # The reply path (stream leader -> this inbox) is what must work; the probe's own
        # inbox is subscribed after the measured one, so proving it proves both.
        loops.probe_requests(conn, probe_subject, probe_payload, cfg.timeout)
        b = bc.PubBuilder(
            subject.encode(), size, reply=inbox.encode(), reply_seq=True, pub_id=i,
            ring=_ring_size(window), keys=keys, payload=payload,
        )
        clients.append(r.client(conn, f"{name} {i}", latency=bc.LAT_RING, source=b, scan_errors=scan_errors))
        builders.append(b)
    targets = split(cfg.msgs, nclients)
    r.label = f"{workload} {name}"
    deadline = r.deadline()
    for c, b, t in zip(clients, builders, targets):
        r.start(c, loops.request_loop, b, t, deadline, window, cfg.timeout)
    r.wait_done(clients, lambda: sum(c.fc.msgs for c in clients), what)
    phase = Phase(
        workload,
        name,
        size,
        kind="latency",
        pubs=[Sample(c.fc.msgs, c.fc.msgs * size, c.start, c.end) for c in clients],
        latency=_latency_of(clients),
        params=_params(cfg, clients=nclients, window=window, size=size),
    )
    _check_replies(phase, clients, what)
    return phase, clients


def _windows(cfg: BenchConfig, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, w) for w in (cfg.windows or default))


def _js_pub(r: _Run) -> list[Phase]:
    cfg = r.cfg
    ctl = r.connect("control")
    _require_jetstream(ctl, cfg.timeout)
    _create_stream(ctl, cfg, cfg.stream, [cfg.subject])
    phases = []
    try:
        for window in _windows(cfg, (1, 256)):
            before = _stream_messages(ctl, cfg.stream, cfg.timeout)
            name = "sync" if window == 1 else f"async-{window}"
            phase, clients = _request_phase(
                r, "js-pub", name, cfg.subject, cfg.pubs or 1, window, size=cfg.size,
                probe_subject=cfg.subject, probe_payload=b"natsx-bench probe", what="publishes",
            )
            phase.params["storage"] = cfg.storage
            acked = sum(c.fc.msgs for c in clients)
            stored = _stream_messages(ctl, cfg.stream, cfg.timeout) - before
            phase.params["stored"] = stored
            if stored < acked:
                phase.errors.append(f"stream holds {_fmt(stored)} new messages for {_fmt(acked)} acknowledged")
            elif phase.ok:
                phase.checks.append(f"stream {cfg.stream} ({cfg.storage}) stored every acknowledged message")
            phases.append(phase)
    finally:
        _delete_stream(ctl, cfg.stream, cfg.timeout)
    return phases


def _js_pull(r: _Run) -> list[Phase]:
    cfg = r.cfg
    ctl = r.connect("control")
    _require_jetstream(ctl, cfg.timeout)
    _create_stream(ctl, cfg, cfg.stream, [cfg.subject])
    durable = "natsx-bench"
    nfetch = cfg.subs or 1
    try:
        fill, _ = _request_phase(
            r, "js-pull", "fill", cfg.subject, cfg.pubs or 1, max(_windows(cfg, (256,))), size=cfg.size,
            probe_subject=cfg.subject, probe_payload=b"natsx-bench probe", what="publishes",
        )
        total = _stream_messages(ctl, cfg.stream, cfg.timeout)
        _create_durable(ctl, cfg, durable, max_ack_pending=max(1000, 4 * cfg.batch * nfetch))
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{cfg.stream}.{durable}".encode()
        clients = []
        inboxes = []
        for j in range(nfetch):
            conn = r.connect(f"fetch {j}", SENDER)
            inbox = new_inbox()
            conn.subscribe(inbox + ".*")
            conn.flush()
            loops.probe_requests(conn, f"$JS.API.CONSUMER.INFO.{cfg.stream}.{durable}", b"", cfg.timeout)
            ack = b"+ACK" if cfg.ack == "explicit" else None
            clients.append(r.client(conn, f"fetch {j}", ack=ack))
            inboxes.append(inbox.encode())
        r.label = "js-pull fetch"
        deadline = r.deadline()
        for c, inbox in zip(clients, inboxes):
            r.start(c, loops.fetch_loop, next_subject, inbox, cfg.batch, deadline, cfg.timeout)

        def consumed() -> int:
            return sum(c.fc.msgs for c in clients)

        complete = r.wait_count(
            clients, lambda: consumed() >= total or all(c.done for c in clients), consumed
        )
        r.stop(clients)
        got = consumed()
        fetch = Phase(
            "js-pull",
            "fetch",
            cfg.size,
            subs=[loops.sub_sample(c) for c in clients],
            params=_params(cfg, fetchers=nfetch, batch=cfg.batch, ack=cfg.ack, storage=cfg.storage, stored=total),
        )
        if got > total:
            fetch.errors.append(f"consumed {_fmt(got)} messages from a stream of {_fmt(total)}")
        elif got < total:
            if not complete:
                fetch.errors.append(f"fetches stalled after {_fmt(got)} of {_fmt(total)} messages")
            else:
                fetch.checks.append(f"stopped at the deadline after {_fmt(got)} of {_fmt(total)} messages")
        else:
            fetch.checks.append(f"consumed all {_fmt(total)} stored messages")
            if cfg.ack == "explicit":
                for c in clients:
                    c.conn.flush()
                _check_acked(fetch, ctl, cfg, durable)
        return [fill, fetch]
    finally:
        _delete_stream(ctl, cfg.stream, cfg.timeout)


def _create_durable(ctl: Connection, cfg: BenchConfig, durable: str, max_ack_pending: int) -> None:
    body = {
        "stream_name": cfg.stream,
        "config": {
            "durable_name": durable,
            "ack_policy": cfg.ack,
            "deliver_policy": "all",
            "max_ack_pending": max_ack_pending,
            "max_waiting": 512,
        },
    }
    # DURABLE.CREATE is what 2.9 understands; newer servers also take the name in
    # CONSUMER.CREATE.<stream>.<name>, the form that remains when the older one goes.
    try:
        ctl.api(f"$JS.API.CONSUMER.DURABLE.CREATE.{cfg.stream}.{durable}", body, timeout=cfg.timeout)
    except ApiError:
        raise
    except BenchError:
        ctl.api(f"$JS.API.CONSUMER.CREATE.{cfg.stream}.{durable}", body, timeout=cfg.timeout)


def _check_acked(phase: Phase, ctl: Connection, cfg: BenchConfig, durable: str) -> None:
    deadline = time.monotonic() + cfg.timeout
    while True:
        info = ctl.api(f"$JS.API.CONSUMER.INFO.{cfg.stream}.{durable}", timeout=cfg.timeout)
        pending = int(info.get("num_ack_pending", 0))
        if pending == 0:
            phase.checks.append("every delivery acknowledged (num_ack_pending 0)")
            return
        if time.monotonic() > deadline:
            phase.errors.append(f"{_fmt(pending)} deliveries still unacknowledged")
            return
        time.sleep(0.05)


def _kv(r: _Run) -> list[Phase]:
    cfg = r.cfg
    bucket = cfg.bucket
    stream = f"KV_{bucket}"
    ctl = r.connect("control")
    _require_jetstream(ctl, cfg.timeout)
    # The stream a KV bucket is (as nats.go and nats.py create it): one value per key.
    _create_stream(
        ctl, cfg, stream, [f"$KV.{bucket}.>"],
        max_msgs_per_subject=1, discard="new", allow_rollup_hdrs=True, deny_delete=True,
        allow_direct=True, duplicate_window=120_000_000_000,
    )
    phases = []
    try:
        for window in _windows(cfg, (1,)):
            suffix = "" if window == 1 else f"-{window}"
            put, putters = _request_phase(
                r, "kv", "put" + suffix, f"$KV.{bucket}.k", cfg.pubs or 1, window, size=cfg.size,
                keys=cfg.keys, probe_subject=f"$KV.{bucket}.probe", probe_payload=b"natsx-bench probe",
                what="puts",
            )
            put.params["keys"] = cfg.keys
            phases.append(put)
            written = min(cfg.keys, min(c.sent for c in putters))
            if written == 0 or not put.ok:
                break
            get, getters = _request_phase(
                r, "kv", "get" + suffix, f"$JS.API.DIRECT.GET.{stream}.$KV.{bucket}.k", cfg.pubs or 1,
                window, size=0, keys=written, payload=b"",
                probe_subject=f"$JS.API.DIRECT.GET.{stream}.$KV.{bucket}.probe", probe_payload=b"",
                scan_errors=False, what="gets",
            )
            get.size = cfg.size
            get.params.update(keys=written, size=cfg.size)
            for s, c in zip(get.pubs, getters):
                s.nbytes = c.fc.nbytes
            values = sum(c.fc.nbytes for c in getters)
            got = sum(c.fc.msgs for c in getters)
            if values != got * cfg.size:
                get.errors.append(f"values of {_fmt(values)} bytes for {_fmt(got)} gets of {cfg.size} bytes")
            elif get.ok:
                get.checks.append(f"every get returned a {cfg.size}-byte value")
            phases.append(get)
    finally:
        _delete_stream(ctl, stream, cfg.timeout)
    return phases


_WORKLOADS: dict[str, Callable[[_Run], list[Phase]]] = {
    "pub": _pub,
    "pubsub": _pubsub_workload,
    "fanout": _fanout,
    "queue": _queue,
    "reqrep": _reqrep,
    "js-pub": _js_pub,
    "js-pull": _js_pull,
    "kv": _kv,
}
