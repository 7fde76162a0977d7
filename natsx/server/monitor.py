"""A worker's part of the monitoring answers, in the Go server's JSON shapes.

Theory of operation
-------------------
The admin process asks every worker over the control channel (``natsx.server.control``)
and merges the parts (``natsx.admin.endpoints``). This module answers for one worker: its
counters, its connections (open and recently closed), its subscriptions and its accounts.
Each answer is a plain JSON document; nothing here sorts, pages or sums across workers.
Keys that start with ``_`` are numeric twins of formatted values (timestamps, RTT) that
the admin needs to sort on and removes before answering.

The Go formatting helpers (RFC 3339 times, ``time.Duration`` strings, the monitor's
``myUptime``) and the process usage sampler live here because both sides use them.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from natsx._speedups import load

GLOBAL_ACCOUNT = "$G"
SYSTEM_ACCOUNT = "$SYS"
_STALE = "Stale Connection"

# ---------------------------------------------------------------------------- Go formats


def rfc3339(ts: float | None) -> str:
    """A Unix time as Go's time.Time marshals in UTC (RFC 3339, trailing zeros trimmed)."""
    if not ts:
        return "0001-01-01T00:00:00Z"
    micros = round(ts * 1_000_000)
    seconds, frac = divmod(micros, 1_000_000)
    out = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        out += "." + f"{frac:06d}".rstrip("0")
    return out + "Z"


def go_duration(seconds: float) -> str:
    """Go's monitor ``myUptime``: whole seconds as 1y2d3h4m5s, leading zero units left out."""
    s = int(seconds)
    mins, secs = divmod(s, 60)
    hrs, mins = divmod(mins, 60)
    days, hrs = divmod(hrs, 24)
    years, days = divmod(days, 365)
    if years:
        return f"{years}y{days}d{hrs}h{mins}m{secs}s"
    if days:
        return f"{days}d{hrs}h{mins}m{secs}s"
    if hrs:
        return f"{hrs}h{mins}m{secs}s"
    if mins:
        return f"{mins}m{secs}s"
    return f"{secs}s"


def _fraction(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10 ** digits)
    text = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


def duration_string(ns: int) -> str:
    """Go's time.Duration.String() for a non-negative number of nanoseconds."""
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _fraction(ns, 3) + "µs"
    if ns < 1_000_000_000:
        return _fraction(ns, 6) + "ms"
    hrs, rest = divmod(ns, 3_600_000_000_000)
    mins, rest = divmod(rest, 60_000_000_000)
    out = f"{hrs}h" if hrs else ""
    if hrs or mins:
        out += f"{mins}m"
    return out + _fraction(rest, 9) + "s"


def rtt_string(rtt: float) -> str:
    """The RTT as /connz shows it: whole microseconds below a millisecond (Go: getRTT)."""
    ns = int(rtt * 1e9)
    if 1_000 < ns < 1_000_000:
        ns -= ns % 1_000
    return duration_string(max(ns, 0))


# ---------------------------------------------------------------------------- process usage


class ProcessUsage:
    """Resident memory and CPU percentage of this process, as Go's pse package reports.

    The CPU figure is the usage over the last window of at least a second (Go samples
    every second), so polling faster than that returns the same number.
    """

    WINDOW = 1.0

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._t0 = time.monotonic()
        self._c0 = self._cpu_seconds()
        self._boot = self._t0
        self._pcpu = 0.0

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            return 0

    def cpu(self) -> float:
        now, used = time.monotonic(), self._cpu_seconds()
        if now - self._t0 >= self.WINDOW:
            self._pcpu = round((used - self._c0) / (now - self._t0) * 100, 1)
            self._t0, self._c0 = now, used
        elif self._t0 == self._boot and now > self._boot:
            # No full window yet: the average since start is the best estimate.
            self._pcpu = round((used - self._c0) / (now - self._boot) * 100, 1)
        return self._pcpu


_usage: tuple[int, ProcessUsage] | None = None


def process_usage() -> ProcessUsage:
    """This process's sampler; a forked child starts its own (its CPU times restart at 0)."""
    global _usage
    if _usage is None or _usage[0] != os.getpid():
        _usage = (os.getpid(), ProcessUsage())
    return _usage[1]


# ---------------------------------------------------------------------------- dispatch


def handle(server, request: dict) -> dict:
    """Answers one control request; an unknown op gets an error the admin ignores."""
    op = request.get("op")
    part = _OPS.get(op)
    if part is None:
        return {"error": f"unknown op {op!r}"}
    return part(server, request)


def local_subscriptions(server, account=None) -> int:
    """Subscriptions of this worker's clients in ``account`` (default: the global one): its
    sublist less the peer workers' interest, which every worker holds a copy of
    (natsx.server.mesh)."""
    account = account or server.global_account
    count = account.sublist.count
    name = account.name.encode()
    mesh = server.mesh
    if mesh is not None:
        count -= sum(1 for link in mesh.links.values() for key in link.remote
                     if key[0] == name)
    if server.worker_index:
        # Every worker holds the same local-only $SYS service subscriptions
        # (natsx.server.system): the server has them once, so only worker 0's count.
        internal = server.internal_clients.get(name)
        if internal is not None:
            count -= len(getattr(internal, "local_sids", ()))
    return count


def _accounts(server) -> dict:
    return server.accounts


# ---------------------------------------------------------------------------- varz


def varz_part(server, request: dict) -> dict:
    router = server.router
    usage = process_usage()
    return {
        "connections": len(server.connections),
        "total_connections": server.total_connections,
        "in_msgs": router.in_msgs,
        "out_msgs": router.out_msgs,
        "in_bytes": router.in_bytes,
        "out_bytes": router.out_bytes,
        "slow_consumers": server.slow_consumers,
        "stale_connections": server.stale_connections,
        "subscriptions": sum(local_subscriptions(server, a)
                             for a in _accounts(server).values()),
        "mem": usage.rss(),
        "cpu": usage.cpu(),
        "jetstream": jsz_part(server, request),
        "worker": server.worker_index,
        "pid": os.getpid(),
    }


def healthz_part(server, request: dict) -> dict:
    return {"status": "ok", "worker": server.worker_index,
            "jetstream": server.jetstream is not None}


def jsz_part(server, request: dict) -> dict:
    """Whether this worker runs JetStream and, if so, the numbers of Go's JetStreamStats
    and JSInfo totals over the streams it holds (natsx.jetstream.manager)."""
    js = server.jetstream
    if js is None:
        return {"enabled": False}
    memory = storage = streams = consumers = messages = nbytes = total = errors = 0
    owned = {}
    for account in js.accounts.values():
        total += account.api_total
        errors += account.api_errors
        mine = owned[account.name] = {"memory": 0, "storage": 0, "streams": 0,
                                      "api": {"total": account.api_total,
                                              "errors": account.api_errors}}
        for stream in account.streams.values():
            state = stream.store.state()
            streams += 1
            consumers += len(stream.consumers)
            messages += state.msgs
            nbytes += state.bytes
            mine["streams"] += 1
            if stream.cfg["storage"] == "memory":
                memory += state.bytes
                mine["memory"] += state.bytes
            else:
                storage += state.bytes
                mine["storage"] += state.bytes
    # "owned": this worker's share of each account (natsx.jetstream.shards: the streams it
    # runs, the API requests it answered); each account is counted by its home.
    from natsx.jetstream.shards import is_home

    homes = sum(1 for name in js.accounts if is_home(server, name))
    return {"enabled": True, "worker": server.worker_index, "owned": owned, "stats": {
        "memory": memory, "storage": storage, "accounts": homes,
        "reserved_memory": js.reserved("memory"), "reserved_storage": js.reserved("file"),
        "api": {"total": total, "errors": errors}, "streams": streams,
        "consumers": consumers, "messages": messages, "bytes": nbytes},
        # Go's JetStreamConfig and JSLimitOpts: the same in every worker.
        "config": js.settings.to_json(), "limits": js.settings.limits_json()}


def stacksz_part(server, request: dict) -> dict:
    from natsx.admin.stacks import process_stacks

    return {"worker": server.worker_index, "pid": os.getpid(),
            "stacks": process_stacks(f"worker {server.worker_index}", trio_tasks=True)}


# ---------------------------------------------------------------------------- connz


def _sub_detail(s, account: str | None, cid: int) -> dict:
    # Go's SubDetail, keys in struct order; account only in /subsz (newSubDetail).
    detail = {} if account is None else {"account": account}
    detail["subject"] = s.subject.decode("utf-8", "replace")
    if s.queue:
        detail["qgroup"] = s.queue.decode("utf-8", "replace")
    detail["sid"] = s.sid.decode("utf-8", "replace")
    detail["msgs"] = s.delivered
    if s.max_msgs:
        detail["max"] = s.max_msgs
    detail["cid"] = cid
    return detail


def conn_info(server, conn, *, subs: bool, subs_detail: bool, auth: bool,
              now: float) -> dict:
    """One /connz entry, keys in the order of Go's ConnInfo struct."""
    core = conn.core
    stop = conn.stop
    info = {
        "cid": conn.cid,
        "kind": "Client",
        "type": "websocket" if getattr(conn, "ws", None) is not None else "nats",
        "ip": conn.ip,
        "port": conn.port,
        "start": rfc3339(conn.start),
        "last_activity": rfc3339(conn.last_activity),
    }
    if stop:
        info["stop"] = rfc3339(stop)
        info["reason"] = conn.close_reason
    listed = list(conn.final_subs) if conn.closed else list(core.subs.values())
    info.update({
        "rtt": rtt_string(conn.rtt),
        "uptime": go_duration((stop or now) - conn.start),
        "idle": go_duration((stop or now) - conn.last_activity),
        "pending_bytes": core.pending_bytes,
        "in_msgs": core.in_msgs,
        "out_msgs": core.out_msgs,
        "in_bytes": core.in_bytes,
        "out_bytes": core.out_bytes,
        "subscriptions": len(listed),
    })
    if conn.name:
        info["name"] = conn.name
    if conn.lang:
        info["lang"] = conn.lang
    if conn.version:
        info["version"] = conn.version
    if getattr(conn, "tls", False):
        _tls_info(info, conn, auth)
    if auth:
        if conn.user:
            info["authorized_user"] = conn.user
        if conn.account_name != GLOBAL_ACCOUNT:
            info["account"] = conn.account_name
    if listed and (subs or subs_detail):
        if isinstance(listed[0], bytes):
            # Only the subjects survived the close.
            info["subscriptions_list"] = [s.decode("utf-8", "replace") for s in listed]
        elif subs_detail:
            info["subscriptions_list_detail"] = [_sub_detail(s, None, conn.cid) for s in listed]
        else:
            info["subscriptions_list"] = [s.subject.decode("utf-8", "replace") for s in listed]
    info["worker"] = server.worker_index
    info["_start"] = conn.start
    info["_last"] = conn.last_activity
    info["_stop"] = stop or 0.0
    info["_rtt"] = conn.rtt
    return info


def _tls_info(info: dict, conn, auth: bool) -> None:
    """Go's ConnInfo TLS fields; the peer certificates only with ``auth``."""
    info["tls_version"] = conn.tls_version
    info["tls_cipher_suite"] = conn.tls_cipher
    if auth and conn.tls_peer_certs:
        import hashlib

        from natsx.auth.certmap import subject_string
        from natsx.server.tls import spki_sha256

        certs = []
        for der in conn.tls_peer_certs:
            try:
                entry = {"subject": subject_string(der), "spki_sha256": spki_sha256(der),
                         "cert_sha256": hashlib.sha256(der).hexdigest()}
            except ValueError:
                continue
            certs.append({k: v for k, v in entry.items() if v})
        if certs:
            info["tls_peer_certs"] = certs
    if conn.tls_first:
        info["tls_first"] = True


def _interested(conn, subject: bytes, collide) -> bool:
    return any(collide(subject, s.subject) for s in conn.core.subs.values())


def connz_part(server, request: dict) -> dict:
    """This worker's connections that pass the filters, and Go's ``total`` for them.

    Go counts ``total`` before the user, client-id and subject filters (Connz sets it from
    the account's or the server's client list), so the filters shrink the list, not it.
    """
    now = time.time()
    state = request.get("state", "open")
    cid = request.get("cid")
    user = request.get("user")
    acc = request.get("acc")
    subject = request.get("filter_subject")
    opts = dict(subs=bool(request.get("subs")), subs_detail=bool(request.get("subs_detail")),
                auth=bool(request.get("auth")), now=now)
    open_conns = list(server.connections.values()) if state in ("open", "any") else []
    closed_conns = list(server.closed) if state in ("closed", "any") else []
    if acc:
        open_conns = [c for c in open_conns if c.account_name == acc]
        closed_conns = [c for c in closed_conns if c.account_name == acc]
    total = len(open_conns) + len(closed_conns)
    if cid is not None:
        found = [c for c in open_conns if c.cid == cid]
        open_conns, closed_conns = found, [] if found else [
            c for c in closed_conns if c.cid == cid][:1]
    if user:
        open_conns = [c for c in open_conns if c.user == user]
        closed_conns = [c for c in closed_conns if c.user == user]
    if request.get("mqtt_client"):
        # Only MQTT connections carry a client id, and this worker serves NATS clients.
        open_conns, closed_conns = [], []
    if subject:
        collide = load("sublist").subjects_collide
        wanted = subject.encode()
        open_conns = [c for c in open_conns if _interested(c, wanted, collide)]
    out = [conn_info(server, c, **opts) for c in open_conns + closed_conns]
    return {"total": total, "connections": out, "accounts": list(_accounts(server))}


# ---------------------------------------------------------------------------- subsz


def subsz_part(server, request: dict) -> dict:
    acc = request.get("acc")
    accounts = [a for name, a in _accounts(server).items() if not acc or name == acc]
    stats = []
    listed = []
    for account in accounts:
        sl = account.sublist
        st = sl.stats()
        st["num_subscriptions"] = local_subscriptions(server, account)
        stats.append(st)
        if request.get("subs"):
            subs = [s for s in sl.all_subscriptions() if not getattr(s.client, "peer", False)]
            test = request.get("test")
            if test:
                match_literal = load("sublist").match_literal
                tb = test.encode()
                subs = [s for s in subs if match_literal(tb, s.subject)]
            listed.extend(_sub_detail(s, account.name, getattr(s.client, "cid", 0))
                          for s in subs)
    part = {"stats": stats}
    if request.get("subs"):
        part["subscriptions_list"] = listed
    return part


# ---------------------------------------------------------------------------- accounts


def accounts_part(server, request: dict) -> dict:
    """Per account: what /accountz and /accstatz report about this worker's share.

    Traffic is the account's open connections' counters plus what its closed connections
    did (kept by the worker when they close), as Go's per-account stats count it.
    """
    out = {}
    open_by_account: dict[str, list] = {}
    for conn in server.connections.values():
        open_by_account.setdefault(conn.account_name, []).append(conn.core)
    closed = server.closed_traffic
    slow = server.slow_by_account
    for name, account in _accounts(server).items():
        cores = open_by_account.get(name, [])
        in_msgs, in_bytes, out_msgs, out_bytes = closed.get(name, (0, 0, 0, 0))
        for core in cores:
            in_msgs += core.in_msgs
            in_bytes += core.in_bytes
            out_msgs += core.out_msgs
            out_bytes += core.out_bytes
        stats = account.sublist.stats()
        stats["num_subscriptions"] = local_subscriptions(server, account)
        out[name] = {"conns": len(cores), "leafnodes": 0,
                     "num_subscriptions": stats["num_subscriptions"],
                     "received": {"msgs": in_msgs, "bytes": in_bytes},
                     "sent": {"msgs": out_msgs, "bytes": out_bytes},
                     "slow_consumers": slow.get(name, 0),
                     "is_system": account.is_system,
                     "sublist": stats}
    return {"accounts": out}


_OPS = {
    "varz": varz_part,
    "connz": connz_part,
    "subsz": subsz_part,
    "accounts": accounts_part,
    "healthz": healthz_part,
    "jsz": jsz_part,
    "stacksz": stacksz_part,
}
