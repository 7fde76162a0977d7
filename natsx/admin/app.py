"""Monitoring endpoints in the Go server's JSON shapes, merged across workers.

Each request asks every worker for its part over the control channel
(``natsx.server.control``) and merges the answers: counters are summed, connection lists
are concatenated, then sorted and paged as the Go server's /connz does.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

from natsx import SERVER_VERSION
from natsx.server.monitor import go_duration, rfc3339

DEFAULT_CONNZ_LIMIT = 1024


def _uptime(c: dict, now: str) -> float:
    end = datetime.fromisoformat((c.get("stop") or now).rstrip("Z"))
    return (end - datetime.fromisoformat(c["start"].rstrip("Z"))).total_seconds()


# Go's monitor.go Connz: (key, reverse). Only cid/start ascend; start is the same as cid.
# The timestamps are fixed-width RFC 3339, so they compare as strings.
_SORTS = {
    "cid": (lambda c, now: c["cid"], False), "start": (lambda c, now: c["cid"], False),
    "subs": (lambda c, now: c["subscriptions"], True),
    "pending": (lambda c, now: c["pending_bytes"], True),
    "msgs_to": (lambda c, now: c["out_msgs"], True),
    "msgs_from": (lambda c, now: c["in_msgs"], True),
    "bytes_to": (lambda c, now: c["out_bytes"], True),
    "bytes_from": (lambda c, now: c["in_bytes"], True),
    "last": (lambda c, now: c["last_activity"], True),
    "idle": (lambda c, now: c["last_activity"], False),   # most idle first
    "uptime": (_uptime, False),                           # shortest uptime first
    "stop": (lambda c, now: c.get("stop", ""), True),
    "reason": (lambda c, now: c.get("reason", ""), False),
    "rtt": (lambda c, now: c.get("rtt_seconds", 0), True),
}
_STATES = {"open": "open", "closed": "closed", "any": "any", "all": "any"}
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class BadRequest(Exception):
    """A query parameter the Go server would refuse with 400 and this text."""


def _bool(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "t", "yes", "y", "detail")


def _decode_error(kind: str, name: str, func: str, value: str) -> str:
    # monitor.go decodeBool/decodeInt/decodeUint64 with the strconv error text.
    return (f"Error decoding {kind} for '{name}': strconv.{func}: parsing \"{value}\": "
            "invalid syntax")


def _go_bool(q, name: str) -> bool:
    v = q.get(name)
    if not v:
        return False
    if v in _GO_TRUE:
        return True
    if v in _GO_FALSE:
        return False
    raise BadRequest(_decode_error("boolean", name, "ParseBool", v))


def _go_int(q, name: str) -> int:
    v = q.get(name)
    if not v:
        return 0
    try:
        return int(v, 10)
    except ValueError:
        raise BadRequest(_decode_error("int", name, "Atoi", v)) from None


def _go_uint(q, name: str) -> int:
    v = q.get(name)
    if not v:
        return 0
    if not v.isdigit():
        raise BadRequest(_decode_error("uint64", name, "ParseUint", v))
    return int(v)


def _is_literal_subject(subject: str) -> bool:
    return not any(c in subject for c in " \t\r\n\f") and all(
        tok and tok not in ("*", ">") for tok in subject.split("."))


class GoJSONResponse(JSONResponse):
    """JSON indented by two spaces, as Go's json.MarshalIndent writes the monitoring pages."""

    def render(self, content) -> bytes:
        return json.dumps(content, indent=2, ensure_ascii=False).encode()


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
        worker_pids = [0] * len(self.links)
        for p in parts:
            if 0 <= p.get("worker", -1) < len(worker_pids):
                worker_pids[p["worker"]] = p.get("pid", 0)
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
            # natsx extension: each worker's process id by worker index (0 when it did
            # not answer), for operators and tests that signal one worker.
            "worker_pids": worker_pids,
        }

    async def connz(self, q) -> dict:
        # Parameters are decoded in the order of Go's HandleConnz, with its error texts.
        sort = q.get("sort") or "cid"
        auth = _go_bool(q, "auth")
        subs_detail = (q.get("subs") or "").lower() == "detail"
        subs = subs_detail or _go_bool(q, "subs")
        offset = max(_go_int(q, "offset"), 0)
        limit = _go_int(q, "limit")
        if limit <= 0:
            limit = DEFAULT_CONNZ_LIMIT
        cid = _go_uint(q, "cid")
        raw_state = q.get("state") or "open"
        state = _STATES.get(raw_state.lower())
        if state is None:
            raise BadRequest(f"Error decoding state for {raw_state}")
        if sort not in _SORTS:
            raise BadRequest(f"invalid sorting option: {sort}")
        if sort in ("stop", "reason") and state != "closed":
            raise BadRequest(f"sort by {sort} only valid on closed connections")
        request = {"op": "connz", "state": state, "subs": subs, "subs_detail": subs_detail,
                   "auth": auth}
        if cid:
            request["cid"] = cid
            limit = 1
        for key in ("user", "acc"):
            if q.get(key):
                request[key] = q.get(key)
        parts = await self.gather(request)
        conns = [c for p in parts for c in p.get("connections", [])]
        now = rfc3339(time.time())
        key, reverse = _SORTS[sort]
        conns.sort(key=lambda c: key(c, now), reverse=reverse)
        page = conns[offset:offset + limit]
        keep_worker = _bool(q.get("worker"))
        for c in page:
            c.pop("rtt_seconds", None)
            if not keep_worker:
                c.pop("worker", None)
        return {
            "server_id": self.server_id,
            "now": now,
            "num_connections": len(page),
            "total": len(conns),
            "offset": offset,
            "limit": limit,
            "connections": page,
        }

    async def subsz(self, q) -> dict:
        want_subs = _go_bool(q, "subs")
        offset = max(_go_int(q, "offset"), 0)
        limit = _go_int(q, "limit")
        if limit <= 0:
            limit = DEFAULT_CONNZ_LIMIT
        test = q.get("test")
        if test and not _is_literal_subject(test):
            raise BadRequest(f"invalid test subject, must be valid publish subject: {test}")
        parts = await self.gather({"op": "subsz", "subs": want_subs, "test": test})
        stats = [p["stats"] for p in parts]
        num_subs = sum(s["num_subscriptions"] for s in stats)   # each worker: its own clients
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
        subs = [s for p in parts for s in p.get("subscriptions_list", [])] if want_subs else []
        out.update(total=len(subs), offset=offset, limit=limit)
        if subs[offset:offset + limit]:
            out["subscriptions_list"] = subs[offset:offset + limit]
        return out


def create_app(monitor: Monitor) -> Starlette:
    base = monitor.options.http_base_path.rstrip("/")

    def endpoint(name, fn, response_class=GoJSONResponse):
        async def handler(request: Request):
            monitor.count(request.url.path)
            try:
                data = await fn(request.query_params)
            except BadRequest as exc:
                return PlainTextResponse(str(exc), status_code=400)
            return response_class(data, headers={"Access-Control-Allow-Origin": "*"})
        return Route(f"{base}/{name}", handler)

    async def not_found(request: Request, exc: HTTPException):
        # Go's http.NotFound body; other HTTP errors keep starlette's default text.
        if exc.status_code == 404:
            return PlainTextResponse("404 page not found\n", status_code=404)
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code)

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
        endpoint("healthz", healthz, JSONResponse),   # Go: json.Marshal, not indented
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})
