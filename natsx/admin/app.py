"""Monitoring endpoints in the Go server's JSON shapes, merged across workers.

Each request asks every worker for its part over the control channel
(``natsx.server.control``) and merges the answers: counters are summed, connection lists
are concatenated, then sorted and paged as the Go server's /connz does.
"""
from __future__ import annotations

import asyncio
import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from natsx import SERVER_VERSION
from natsx.server.monitor import go_duration, rfc3339

DEFAULT_CONNZ_LIMIT = 1024
_SORTS = {
    "cid": lambda c: c["cid"], "start": lambda c: c["start"],
    "subs": lambda c: -c["subscriptions"], "pending": lambda c: -c["pending_bytes"],
    "msgs_to": lambda c: -c["out_msgs"], "msgs_from": lambda c: -c["in_msgs"],
    "bytes_to": lambda c: -c["out_bytes"], "bytes_from": lambda c: -c["in_bytes"],
    "last": lambda c: c["last_activity"], "idle": lambda c: c["last_activity"],
    "uptime": lambda c: c["start"], "stop": lambda c: c.get("stop", ""),
    "reason": lambda c: c.get("reason", ""), "rtt": lambda c: c.get("rtt", ""),
}


def _bool(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "t", "yes", "y", "detail")


class Monitor:
    """Holds the links to the workers and the static facts /varz reports."""

    def __init__(self, options, server_id: str, links: list, start_time: float) -> None:
        self.options = options
        self.server_id = server_id
        self.links = links
        self.start_time = start_time
        self.config_load_time = start_time
        self.req_stats: dict[str, int] = {}

    async def gather(self, request: dict) -> list[dict]:
        parts = await asyncio.gather(*(link.request(request) for link in self.links),
                                     return_exceptions=True)
        return [p for p in parts if isinstance(p, dict) and "error" not in p]

    def count(self, path: str) -> None:
        self.req_stats[path] = self.req_stats.get(path, 0) + 1

    async def varz(self) -> dict:
        o = self.options
        parts = await self.gather({"op": "varz"})
        total = {k: sum(p.get(k, 0) for p in parts) for k in (
            "connections", "total_connections", "in_msgs", "out_msgs", "in_bytes",
            "out_bytes", "slow_consumers", "subscriptions")}
        now = time.time()
        mem = 0
        try:
            with open("/proc/self/statm") as f:
                mem = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
        return {
            "server_id": self.server_id,
            "server_name": o.server_name or self.server_id,
            "version": SERVER_VERSION,
            "proto": 1,
            "go": "python",
            "host": o.host,
            "port": o.port,
            **({"auth_required": True} if o.auth_required else {}),
            "max_connections": o.max_connections,
            "ping_interval": int(o.ping_interval * 1e9),
            "ping_max": o.max_pings_out,
            "http_host": o.http_host or o.host,
            "http_port": o.http_port,
            "http_base_path": o.http_base_path,
            "https_port": o.https_port,
            "auth_timeout": int(o.auth_timeout) if float(o.auth_timeout).is_integer() else o.auth_timeout,
            "max_control_line": o.max_control_line,
            "max_payload": o.max_payload,
            "max_pending": o.max_pending,
            "cluster": {},
            "gateway": {},
            "leaf": {},
            "mqtt": {},
            "websocket": {},
            "jetstream": {},
            "tls_timeout": 2,
            "write_deadline": int(o.write_deadline * 1e9),
            "start": rfc3339(self.start_time),
            "now": rfc3339(now),
            "uptime": go_duration(now - self.start_time),
            "mem": mem,
            "cores": os.cpu_count() or 1,
            "gomaxprocs": o.workers,
            "cpu": 0,
            **total,
            "routes": 0,
            "remotes": 0,
            "leafnodes": 0,
            "http_req_stats": dict(self.req_stats),
            "config_load_time": rfc3339(self.config_load_time),
            "system_account": "$SYS",
            "workers": len(self.links),
        }

    async def connz(self, q) -> dict:
        state = q.get("state", "open")
        request = {"op": "connz", "state": state, "subs": _bool(q.get("subs")),
                   "subs_detail": (q.get("subs") or "").lower() == "detail",
                   "auth": _bool(q.get("auth"))}
        for key in ("cid", "user", "acc"):
            if q.get(key):
                request[key] = q.get(key)
        parts = await self.gather(request)
        conns = [c for p in parts for c in p.get("connections", [])]
        sort = q.get("sort", "cid")
        key = _SORTS.get(sort, _SORTS["cid"])
        conns.sort(key=key)
        try:
            offset = max(int(q.get("offset", 0)), 0)
        except ValueError:
            offset = 0
        try:
            limit = int(q.get("limit", DEFAULT_CONNZ_LIMIT))
        except ValueError:
            limit = DEFAULT_CONNZ_LIMIT
        page = conns[offset:offset + limit]
        for c in page:
            c.pop("worker", None) if not _bool(q.get("worker")) else None
        return {
            "server_id": self.server_id,
            "now": rfc3339(time.time()),
            "num_connections": len(page),
            "total": len(conns),
            "offset": offset,
            "limit": limit,
            "connections": page,
        }

    async def subsz(self, q) -> dict:
        parts = await self.gather({"op": "subsz", "subs": _bool(q.get("subs")),
                                   "test": q.get("test")})
        stats = [p["stats"] for p in parts]
        num_subs = max((s["num_subscriptions"] for s in stats), default=0)
        out = {
            "server_id": self.server_id,
            "now": rfc3339(time.time()),
            "num_subscriptions": num_subs,
            "num_cache": sum(s["num_cache"] for s in stats),
            "num_inserts": sum(s["num_inserts"] for s in stats),
            "num_removes": sum(s["num_removes"] for s in stats),
            "num_matches": sum(s["num_matches"] for s in stats),
            "cache_hit_rate": (sum(s["cache_hit_rate"] for s in stats) / len(stats)) if stats else 0,
            "max_fanout": max((s["max_fanout"] for s in stats), default=0),
            "avg_fanout": (sum(s["avg_fanout"] for s in stats) / len(stats)) if stats else 0,
        }
        if _bool(q.get("subs")):
            subs = [s for p in parts for s in p.get("subscriptions_list", [])]
            offset = int(q.get("offset", 0) or 0)
            limit = int(q.get("limit", DEFAULT_CONNZ_LIMIT) or DEFAULT_CONNZ_LIMIT)
            out.update(total=len(subs), offset=offset, limit=limit,
                       subscriptions_list=subs[offset:offset + limit])
        return out


def create_app(monitor: Monitor) -> Starlette:
    base = monitor.options.http_base_path.rstrip("/")

    def endpoint(name, fn):
        async def handler(request: Request):
            monitor.count(request.url.path)
            data = await fn(request.query_params)
            return JSONResponse(data, headers={"Access-Control-Allow-Origin": "*"})
        return Route(f"{base}/{name}", handler)

    async def varz(q):
        return await monitor.varz()

    async def healthz(q):
        parts = await monitor.gather({"op": "healthz"})
        if len(parts) != len(monitor.links):
            return {"status": "unavailable", "error": "worker not answering"}
        return {"status": "ok"}

    async def index(request: Request):
        monitor.count(request.url.path)
        links = "".join(f'<a href="{base}/{n}">{n}</a><br/>' for n in ("varz", "connz", "subsz", "healthz"))
        return HTMLResponse(f"<html><body><h1>natsx</h1>{links}</body></html>")

    routes = [
        Route(f"{base}/", index),
        endpoint("varz", varz),
        endpoint("connz", monitor.connz),
        endpoint("subsz", monitor.subsz),
        endpoint("subscriptionsz", monitor.subsz),
        endpoint("healthz", healthz),
    ]
    return Starlette(routes=routes)
