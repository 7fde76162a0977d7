"""A worker's part of the monitoring answers, in the Go server's JSON shapes.

The admin process asks every worker over the control channel and merges the parts
(``natsx.admin.merge``); this module only describes what one worker knows.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from natsx.server.connection import ClientConnection


def rfc3339(ts: float | None) -> str:
    if not ts:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_duration(seconds: float) -> str:
    """Formats like Go's time.Duration.String() rounded to seconds for uptime/idle."""
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    out = ""
    if d:
        out += f"{d}d"
    if d or h:
        out += f"{h}h"
    if d or h or m:
        out += f"{m}m"
    return out + f"{s}s"


def rtt_string(rtt: float) -> str:
    if rtt <= 0:
        return "0s"
    us = rtt * 1e6
    if us < 1000:
        return f"{us:.3f}µs"
    return f"{us / 1000:.6g}ms"


def handle(server, request: dict) -> dict:
    op = request.get("op")
    if op == "varz":
        return varz_part(server)
    if op == "connz":
        return connz_part(server, request)
    if op == "subsz":
        return subsz_part(server, request)
    if op == "healthz":
        return {"status": "ok"}
    return {"error": f"unknown op {op!r}"}


def local_subscriptions(server) -> int:
    """Subscriptions of this worker's clients: its sublist less the peer workers' interest,
    which every worker holds a copy of (natsx.server.mesh)."""
    count = server.global_account.sublist.count
    mesh = getattr(server, "mesh", None)
    if mesh is not None:
        count -= sum(1 for link in mesh.links.values() for key in link.remote
                     if key[0] == b"$G")
    return count


def varz_part(server) -> dict:
    router = server.router
    subs = local_subscriptions(server)
    return {
        "connections": len(server.connections),
        "total_connections": server.total_connections,
        "in_msgs": router.in_msgs,
        "out_msgs": router.out_msgs,
        "in_bytes": router.in_bytes,
        "out_bytes": router.out_bytes,
        "slow_consumers": server.slow_consumers,
        "subscriptions": subs,
        "worker": server.worker_index,
        "pid": os.getpid(),
    }


def conn_info(server, conn: ClientConnection, *, subs: bool, subs_detail: bool,
              auth: bool, now: float) -> dict:
    core = conn.core
    stop = conn.stop
    info = {
        "cid": conn.cid,
        "kind": "Client",
        "type": "nats",
        "ip": conn.ip,
        "port": conn.port,
        "start": rfc3339(conn.start),
        "last_activity": rfc3339(conn.last_activity),
    }
    # Keys in the order of Go's ConnInfo struct.
    if stop:
        info["stop"] = rfc3339(stop)
        info["reason"] = conn.close_reason
    info.update({
        "rtt": rtt_string(conn.rtt),
        "uptime": go_duration((stop or now) - conn.start),
        "idle": go_duration(now - conn.last_activity),
        "pending_bytes": core.pending_bytes,
        "in_msgs": core.in_msgs,
        "out_msgs": core.out_msgs,
        "in_bytes": core.in_bytes,
        "out_bytes": core.out_bytes,
        "subscriptions": len(core.subs) if not conn.closed else len(conn.final_subs),
        "worker": server.worker_index,
        "rtt_seconds": conn.rtt,   # for sort=rtt; the admin drops it
    })
    if conn.name:
        info["name"] = conn.name
    if conn.lang:
        info["lang"] = conn.lang
    if conn.version:
        info["version"] = conn.version
    if auth:
        if conn.user:
            info["authorized_user"] = conn.user
        info["account"] = conn.account_name
    if subs or subs_detail:
        if conn.closed:
            names = [s.decode("utf-8", "replace") for s in conn.final_subs]
            if names:
                info["subscriptions_list"] = names
        else:
            listed = list(core.subs.values())
            if subs_detail and listed:
                info["subscriptions_list_detail"] = [
                    {
                        "account": conn.account_name,
                        "subject": s.subject.decode("utf-8", "replace"),
                        **({"qgroup": s.queue.decode("utf-8", "replace")} if s.queue else {}),
                        "sid": s.sid.decode("utf-8", "replace"),
                        "msgs": s.delivered,
                        **({"max": s.max_msgs} if s.max_msgs else {}),
                        "cid": conn.cid,
                    }
                    for s in listed
                ]
            elif listed:
                info["subscriptions_list"] = [s.subject.decode("utf-8", "replace") for s in listed]
    return info


def connz_part(server, request: dict) -> dict:
    now = time.time()
    state = request.get("state", "open")
    cid = request.get("cid")
    opts = dict(subs=bool(request.get("subs")), subs_detail=bool(request.get("subs_detail")),
                auth=bool(request.get("auth")), now=now)
    user = request.get("user")
    acc = request.get("acc")
    conns = []
    if state in ("open", "any", "all"):
        conns.extend(server.connections.values())
    if state in ("closed", "any", "all"):
        conns.extend(server.closed)
    out = []
    for c in conns:
        if cid is not None and c.cid != int(cid):
            continue
        if user and c.user != user:
            continue
        if acc and c.account_name != acc:
            continue
        out.append(conn_info(server, c, **opts))
    return {"connections": out}


def subsz_part(server, request: dict) -> dict:
    sl = server.global_account.sublist
    stats = sl.stats()
    stats["num_subscriptions"] = local_subscriptions(server)
    part = {"stats": stats}
    if request.get("subs"):
        test = request.get("test")
        subs = [s for s in sl.all_subscriptions() if not getattr(s.client, "peer", False)]
        if test:
            from natsx._speedups import load

            match_literal = load("sublist").match_literal
            tb = test.encode()
            subs = [s for s in subs if match_literal(tb, s.subject)]
        part["subscriptions_list"] = [
            {
                "account": "$G",
                "subject": s.subject.decode("utf-8", "replace"),
                **({"qgroup": s.queue.decode("utf-8", "replace")} if s.queue else {}),
                "sid": s.sid.decode("utf-8", "replace"),
                "msgs": s.delivered,
                **({"max": s.max_msgs} if s.max_msgs else {}),
                "cid": getattr(s.client, "cid", 0),
            }
            for s in subs
        ]
    return part
