"""The monitoring endpoints in the Go server's JSON shapes, merged across workers.

Theory of operation
-------------------
``Monitor`` owns the control links to the workers and the facts only the admin knows (the
options, the server id, the start and reload times, the HTTP request counters). Each
endpoint method decodes its query parameters in the order Go's ``Handle*`` function does
(so the first bad one names the same error), counts the request where Go counts it, asks
every worker for its part (``natsx.server.monitor``) and merges: counters are summed,
lists are concatenated and then sorted and paged exactly once, here.

Features natsx does not run (routes, gateways, leaf nodes, MQTT, websocket; JetStream
until a worker reports it running) get the answer the Go server gives when they are not
configured, from the same rules (monitor.go's ``Routez``, ``Gatewayz``, ``Leafz``, ``Jsz``
on a server without them).

Keys follow the field order of Go's structs (HEAD of nats-server); empty ``omitempty``
fields are left out as Go leaves them out. Keys natsx adds are documented where they are
set.
"""
from __future__ import annotations

import asyncio
import os
import time

from natsx import SERVER_VERSION
from natsx.admin.gohttp import BadRequest, go_bool, go_int, go_subs, go_uint
from natsx.server.monitor import go_duration, process_usage, rfc3339

DEFAULT_LIST_SIZE = 1024     # Go: DefaultConnListSize, DefaultSubListSize
REQUEST_TIMEOUT = 5.0
HEALTH_TIMEOUT = 2.0

# Go's monitor.go Connz: (key, reverse). Only cid and start ascend; start is cid order.
_SORTS = {
    "cid": (lambda c, now: c["cid"], False), "start": (lambda c, now: c["cid"], False),
    "subs": (lambda c, now: c["subscriptions"], True),
    "pending": (lambda c, now: c["pending_bytes"], True),
    "msgs_to": (lambda c, now: c["out_msgs"], True),
    "msgs_from": (lambda c, now: c["in_msgs"], True),
    "bytes_to": (lambda c, now: c["out_bytes"], True),
    "bytes_from": (lambda c, now: c["in_bytes"], True),
    "last": (lambda c, now: c["_last"], True),
    "idle": (lambda c, now: now - c["_last"], True),
    "uptime": (lambda c, now: (c["_stop"] or now) - c["_start"], False),
    "stop": (lambda c, now: c["_stop"], True),
    "reason": (lambda c, now: c.get("reason", ""), False),
    "rtt": (lambda c, now: c["_rtt"], True),
}
_STATES = {"open": "open", "closed": "closed", "any": "any", "all": "any"}

# NewJSNotEnabledError().Error(): the description and the error code (errors.json, 10076).
_JS_NOT_ENABLED = "JetStream not enabled (10076)"


def _is_literal_subject(subject: str) -> bool:
    # Go: IsValidLiteralSubject.
    return not any(c in subject for c in " \t\r\n\f") and all(
        tok and tok not in ("*", ">") for tok in subject.split("."))


def _zero_sublist_stats() -> dict:
    return {"num_subscriptions": 0, "num_cache": 0, "num_inserts": 0, "num_removes": 0,
            "num_matches": 0, "cache_hit_rate": 0, "max_fanout": 0, "avg_fanout": 0}


def merge_sublist_stats(stats: list[dict]) -> dict:
    """Go's SublistStats.add over several sublists: rates from the summed hits and fanouts."""
    out = _zero_sublist_stats()
    hits = fanout = 0
    for s in stats:
        for key in ("num_subscriptions", "num_cache", "num_inserts", "num_removes",
                    "num_matches"):
            out[key] += s[key]
        out["max_fanout"] = max(out["max_fanout"], s["max_fanout"])
        hits += round(s["cache_hit_rate"] * s["num_matches"])
        fanout += round(s["avg_fanout"] * s["num_cache"])
    if fanout:
        out["avg_fanout"] = fanout / out["num_cache"]
    if out["num_matches"]:
        out["cache_hit_rate"] = hits / out["num_matches"]
    return out


def _data_stats(msgs: int, nbytes: int) -> dict:
    # Go's DataStats; natsx has no gateways, routes or leaf nodes to split traffic over.
    zero = {"msgs": 0, "bytes": 0}
    return {"msgs": msgs, "bytes": nbytes, "gateways": dict(zero), "routes": dict(zero),
            "leafs": dict(zero)}


def _rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def account_exports(config) -> list[dict]:
    """Go's ExtExport list of an account: services first, then streams, as accountInfo."""
    out = []
    for kind, exports in (("service", config.service_exports), ("stream", config.stream_exports)):
        for e in sorted(exports, key=lambda e: e.subject):
            item = {"subject": e.subject, "type": kind}
            if kind == "service":
                item["response_type"] = "Singleton"
            if e.accounts:
                item["approved_accounts"] = sorted(e.accounts)
            out.append(item)
    return out


def account_imports(config) -> list[dict]:
    """Go's ExtImport list of an account: streams first, then services, as accountInfo."""
    out = []
    for imp in config.stream_imports:
        if imp.to:
            local = imp.to
        elif imp.prefix:
            local = imp.prefix.rstrip(".") + "." + imp.subject
        else:
            local = imp.subject
        out.append({"subject": imp.subject, "account": imp.account, "local_subject": local,
                    "type": "stream", "invalid": False, "share": False, "tracking": False})
    for imp in config.service_imports:
        local = imp.to or imp.subject
        out.append({"subject": imp.subject, "account": imp.account, "to": local,
                    "local_subject": local, "type": "service", "invalid": False,
                    "share": False, "tracking": False})
    return out


def _varz_websocket(o) -> dict:
    """Go's WebsocketOptsVarz: omitempty fields left out."""
    wo = getattr(o, "websocket", None)
    if wo is None:
        return {}
    tls = wo.tls
    out = {"host": wo.host, "port": wo.port, "advertise": wo.advertise,
           "no_auth_user": wo.no_auth_user, "jwt_cookie": wo.jwt_cookie,
           "handshake_timeout": int(wo.handshake_timeout * 1e9),
           "auth_timeout": wo.auth_timeout, "no_tls": wo.no_tls,
           "tls_map": bool(tls is not None and getattr(tls, "map", False)),
           "same_origin": wo.same_origin, "allowed_origins": list(wo.allowed_origins),
           "compression": wo.compression}
    return {k: v for k, v in out.items() if v}


class Monitor:
    """The links to the workers, and what /varz reports that only the admin knows."""

    def __init__(self, options, server_id: str, links: list, start_time: float) -> None:
        self.options = options
        self.server_id = server_id
        self.links = links
        self.start_time = start_time
        self.config_load_time = start_time
        self.req_stats: dict[str, int] = {}

    # ------------------------------------------------------------------ plumbing

    async def ask(self, request: dict, timeout: float = REQUEST_TIMEOUT) -> list[dict | None]:
        """Every worker's answer by worker index; None where a worker did not answer."""
        async def one(link):
            try:
                reply = await link.request(request, timeout)
            except (OSError, asyncio.TimeoutError, ConnectionError, ValueError):
                return None
            return None if "error" in reply else reply
        return list(await asyncio.gather(*(one(link) for link in self.links)))

    async def gather(self, request: dict, timeout: float = REQUEST_TIMEOUT) -> list[dict]:
        return [p for p in await self.ask(request, timeout) if p is not None]

    def count(self, path: str) -> None:
        """Go's httpReqStats: keyed by the endpoint's path without the base path."""
        self.req_stats[path] = self.req_stats.get(path, 0) + 1

    def _now(self) -> str:
        return rfc3339(time.time())

    @property
    def system_account(self) -> str:
        """The system account's name; "" with ``no_system_account`` (Go: omitempty)."""
        from natsx.server.accounts import system_account_name

        return system_account_name(self.options)

    # ------------------------------------------------------------------ varz

    async def varz(self, q=None) -> dict:
        self.count("/varz")
        return await self.varz_data()

    async def varz_data(self) -> dict:
        """The merged /varz, without counting a request (/metrics renders from it too)."""
        o = self.options
        answers = await self.ask({"op": "varz"})
        parts = [p for p in answers if p is not None]

        def total(key):
            return sum(p.get(key, 0) for p in parts)
        now = time.time()
        usage = process_usage()
        slow, stale = total("slow_consumers"), total("stale_connections")
        auth_timeout = float(o.auth_timeout)
        varz = {
            "server_id": self.server_id,
            "server_name": o.server_name or self.server_id,
            "version": SERVER_VERSION,
            "proto": 1,
            "go": "python",
            "host": o.host,
            "port": o.port,
        }
        if o.auth_required:
            varz["auth_required"] = True
        tls_config = getattr(o, "tls_config", None)
        if tls_config is not None and not o.allow_non_tls:
            varz["tls_required"] = True
        if tls_config is not None and tls_config.verify:
            varz["tls_verify"] = True
        if varz.get("tls_required") and getattr(tls_config, "ocsp_peer_verify", False):
            varz["tls_ocsp_peer_verify"] = True   # Go: with TLS required, ocsp_peer verify
        varz["max_connections"] = o.max_connections
        if o.max_subscriptions:
            varz["max_subscriptions"] = o.max_subscriptions
        varz.update({
            "ping_interval": int(o.ping_interval * 1e9),
            "ping_max": o.max_pings_out,
            "http_host": o.http_host or o.host,
            "http_port": o.http_port,
            "http_base_path": o.http_base_path,
            "https_port": o.https_port,
            "auth_timeout": auth_timeout,
            "max_control_line": o.max_control_line,
            "max_payload": o.max_payload,
            "max_pending": o.max_pending,
            # What Go's ClusterOptsVarz... hold without the feature configured: every
            # field is omitempty, so each is an empty object.
            "cluster": {},
            "gateway": {},
            "leaf": {},
            "mqtt": {},
            "websocket": _varz_websocket(o),
            "jetstream": self._varz_jetstream(parts),
            "tls_timeout": o.tls_timeout or 2,
            "write_deadline": int(o.write_deadline * 1e9),
            **({"write_timeout": o.write_timeout} if o.write_timeout else {}),
            "start": rfc3339(self.start_time),
            "now": rfc3339(now),
            "uptime": go_duration(now - self.start_time),
            # The server is every process: the supervisor, the admin and the workers.
            "mem": _rss_of(os.getppid()) + usage.rss() + total("mem"),
            "cores": len(os.sched_getaffinity(0)),
            "gomaxprocs": o.workers,
            "cpu": round(usage.cpu() + total("cpu"), 1),
            "connections": total("connections"),
            "total_connections": total("total_connections"),
            "routes": 0,
            "remotes": 0,
            "leafnodes": 0,
            "in_msgs": total("in_msgs"),
            "in_bytes": total("in_bytes"),
            # Every message natsx receives or sends is a client's: there are no routes,
            # gateways or leaf nodes.
            "in_client_msgs": total("in_msgs"),
            "in_client_bytes": total("in_bytes"),
            "out_msgs": total("out_msgs"),
            "out_bytes": total("out_bytes"),
            "out_client_msgs": total("out_msgs"),
            "out_client_bytes": total("out_bytes"),
            "slow_consumers": slow,
            "stale_connections": stale,
            # natsx never stalls a producer (Go's flush stalls); it cuts slow consumers off.
            "stalled_clients": 0,
            "subscriptions": total("subscriptions"),
            "http_req_stats": dict(sorted(self.req_stats.items())),
            "config_load_time": rfc3339(self.config_load_time),
            "config_digest": o.config_digest,
        })
        if o.tags:
            varz["tags"] = list(o.tags)
        if self.system_account:
            varz["system_account"] = self.system_account
        varz.update({
            "slow_consumer_stats": {"clients": slow, "routes": 0, "gateways": 0, "leafs": 0},
            "stale_connection_stats": {"clients": stale, "routes": 0, "gateways": 0,
                                       "leafs": 0},
            # No JetStream, so no disk I/O semaphore: Go reports zeros then.
            "disk_io_wait_stats": {"waiters": 0, "waits": 0, "wait_time": 0,
                                   "max_wait_time": 0},
        })
        if tls_config is not None:
            from natsx.server.tls import cert_not_after

            not_after = cert_not_after(tls_config)
            if not_after:
                varz["tls_cert_not_after"] = rfc3339(not_after)
        varz.update({
            # natsx extensions: the worker count, each worker's pid by index (0 when it did
            # not answer) and each worker's share of the counters.
            "workers": len(self.links),
            "worker_pids": [p["pid"] if p else 0 for p in answers],
            "worker_stats": [self._worker_stat(i, p) for i, p in enumerate(answers)],
        })
        return varz

    def _varz_jetstream(self, parts: list[dict]) -> dict:
        """Go's JetStreamVarz: empty without JetStream, else its config and stats."""
        running = [p["jetstream"] for p in parts if p.get("jetstream", {}).get("enabled")]
        if not running:
            return {}
        stats, _ = self._jetstream_numbers(running)
        return {"config": self._jetstream_config(running), "stats": stats}

    @staticmethod
    def _worker_stat(index: int, part: dict | None) -> dict:
        keys = ("connections", "total_connections", "subscriptions", "in_msgs", "out_msgs",
                "in_bytes", "out_bytes", "slow_consumers", "stale_connections", "mem", "cpu")
        if part is None:
            return {"worker": index, "pid": 0, "answered": False, **{k: 0 for k in keys}}
        return {"worker": index, "pid": part["pid"], "answered": True,
                **{k: part.get(k, 0) for k in keys}}

    # ------------------------------------------------------------------ connz

    async def connz(self, q) -> dict:
        """Go's HandleConnz then Connz."""
        sort = q.get("sort") or "cid"
        auth = go_bool(q, "auth")
        subs, subs_detail = go_subs(q)
        offset = go_int(q, "offset")
        limit = go_int(q, "limit")
        cid = go_uint(q, "cid")
        raw_state = q.get("state") or "open"
        state = _STATES.get(raw_state.lower())
        if state is None:
            raise BadRequest(f"Error decoding state for {raw_state}")
        user, acc = q.get("user") or "", q.get("acc") or ""
        self.count("/connz")
        # Connz's own checks, in its order.
        if sort not in _SORTS:
            raise BadRequest(f"invalid sorting option: {sort}")
        offset = max(offset, 0)
        if limit <= 0:
            limit = DEFAULT_LIST_SIZE
        if sort in ("stop", "reason") and state != "closed":
            raise BadRequest(f"sort by {sort} only valid on closed connections")
        if cid:
            limit = 1
        # Go's HTTP handler does not read filter_subject (only the $SYS CONNZ request
        # does); natsx accepts it here too, with Connz's rule that it needs an account.
        subject = q.get("filter_subject") or ""
        if subject and subject != ">":
            if not acc:
                raise BadRequest("filter by subject only valid with account filtering")
        else:
            subject = ""
        request = {"op": "connz", "state": state, "subs": subs, "subs_detail": subs_detail,
                   "auth": auth}
        for key, value in (("cid", cid), ("user", user), ("acc", acc),
                           ("mqtt_client", q.get("mqtt_client")),
                           ("filter_subject", subject)):
            if value:
                request[key] = value
        parts = await self.gather(request)
        now = time.time()
        if acc and not any(acc in p.get("accounts", (acc,)) for p in parts):
            # Connz returns early for an unknown account, before it sets the server id
            # and the list: Go answers "" and null.
            return {"server_id": "", "now": rfc3339(now), "num_connections": 0, "total": 0,
                    "offset": offset, "limit": limit, "connections": None}
        conns = [c for p in parts for c in p["connections"]]
        total = sum(p["total"] for p in parts)
        key, reverse = _SORTS[sort]
        conns.sort(key=lambda c: c["cid"])
        if sort not in ("cid", "start"):
            conns.sort(key=lambda c: key(c, now), reverse=reverse)
        page = conns[offset:offset + limit]
        keep_worker = go_bool(q, "worker")
        for c in page:
            for k in [k for k in c if k.startswith("_")]:
                del c[k]
            # natsx extension: ?worker=1 keeps the index of the worker serving each one.
            if not keep_worker:
                c.pop("worker", None)
        return {
            "server_id": self.server_id,
            "now": rfc3339(now),
            "num_connections": len(page),
            "total": total,
            "offset": offset,
            "limit": limit,
            "connections": page,
        }

    # ------------------------------------------------------------------ subsz

    async def subsz(self, q) -> dict:
        """Go's HandleSubsz then Subsz."""
        self.count("/subsz")
        want_subs = go_bool(q, "subs")
        offset = go_int(q, "offset")
        limit = go_int(q, "limit")
        test = q.get("test") or ""
        acc = q.get("acc") or ""
        offset = max(offset, 0)
        if limit <= 0:
            limit = DEFAULT_LIST_SIZE
        if test and not _is_literal_subject(test):
            raise BadRequest(f"invalid test subject, must be valid publish subject: {test}")
        request = {"op": "subsz", "subs": want_subs, "test": test}
        if acc:
            request["acc"] = acc
        parts = await self.gather(request)
        out = {"server_id": self.server_id, "now": self._now()}
        out.update(merge_sublist_stats([s for p in parts for s in p["stats"]]))
        subs = [s for p in parts for s in p.get("subscriptions_list", [])]
        out.update(total=len(subs), offset=offset, limit=limit)
        if subs[offset:offset + limit]:
            out["subscriptions_list"] = subs[offset:offset + limit]
        return out

    # ------------------------------------------------------------------ routez, gatewayz, leafz

    async def routez(self, q) -> dict:
        """Go's Routez on a server without a cluster: no routes, no permissions."""
        go_subs(q)
        self.count("/routez")
        return {"server_id": self.server_id, "server_name": self.options.server_name
                or self.server_id, "now": self._now(), "num_routes": 0, "routes": []}

    async def gatewayz(self, q) -> dict:
        """Go's Gatewayz with gateways disabled: empty maps, no name, host or port."""
        self.count("/gatewayz")
        go_subs(q)
        go_bool(q, "accs")
        return {"server_id": self.server_id, "now": self._now(), "outbound_gateways": {},
                "inbound_gateways": {}}

    async def leafz(self, q) -> dict:
        """Go's Leafz with no leaf node connections (an empty list, not null, since 2.10)."""
        self.count("/leafz")
        go_bool(q, "subs")
        return {"server_id": self.server_id, "now": self._now(), "leafnodes": 0, "leafs": []}

    # ------------------------------------------------------------------ accounts

    async def _account_parts(self) -> dict[str, dict]:
        """Each account's totals over the workers."""
        merged: dict[str, dict] = {}
        for part in await self.gather({"op": "accounts"}):
            for name, a in part["accounts"].items():
                m = merged.setdefault(name, {"conns": 0, "leafnodes": 0,
                                             "num_subscriptions": 0, "sent": [0, 0],
                                             "received": [0, 0], "slow_consumers": 0,
                                             "sublists": []})
                for key in ("conns", "leafnodes", "num_subscriptions", "slow_consumers"):
                    m[key] += a[key]
                for key in ("sent", "received"):
                    m[key][0] += a[key]["msgs"]
                    m[key][1] += a[key]["bytes"]
                m["sublists"].append(a["sublist"])
        return merged

    async def accountz(self, q) -> dict:
        """Go's Accountz: the account names, or one account's details (?acc=)."""
        self.count("/accountz")
        acc = q.get("acc") or ""
        accounts = await self._account_parts()
        out = {"server_id": self.server_id, "now": self._now()}
        if self.system_account:
            out["system_account"] = self.system_account
        if not acc:
            out["accounts"] = sorted(accounts)
            return out
        a = accounts.get(acc)
        if a is None:
            raise BadRequest(f"Account {acc} does not exist")
        detail = {"account_name": acc, "update_time": rfc3339(self.config_load_time)}
        if acc == self.system_account:
            detail["is_system"] = True
        stats = merge_sublist_stats(a["sublists"])
        stats["num_subscriptions"] = a["num_subscriptions"]
        detail.update({"expired": False, "complete": True, "jetstream_enabled": False,
                       "leafnode_connections": a["leafnodes"],
                       "client_connections": a["conns"],
                       "subscriptions": a["num_subscriptions"]})
        # Empty exports and imports are left out, as omitempty leaves them out.
        config = (self.options.accounts or {}).get(acc)
        exports, imports = [], []
        if config is not None:
            exports, imports = account_exports(config), account_imports(config)
        # Go's ExtMap of the account's subject mappings (the top-level block is $G's).
        from natsx.server.mapping import build, ext_map

        try:
            spec = (self.options.mappings or ()) if acc == "$G" else ()
            mappings = ext_map(build(spec + tuple(getattr(config, "mappings", ()) or ())))
        except ValueError:
            mappings = {}
        if mappings:
            detail["mappings"] = mappings
        if self.system_account and acc != self.system_account:
            # Every other account imports the system account's own services (Go:
            # registerSystemImports; natsx.server.system serves them).
            from natsx.server.system import system_imports

            imports = system_imports(acc, self.system_account) + imports
        if exports:
            detail["exports"] = exports
        if imports:
            detail["imports"] = imports
        detail["sublist_stats"] = stats
        out["account_detail"] = detail
        return out

    async def accstatz(self, q) -> dict:
        """Go's AccountStatz: accounts with local connections, or all with ?unused=1."""
        self.count("/accstatz")
        unused = go_bool(q, "unused")
        # natsx extensions (Go's HTTP handler reads only "unused"; its $SYS request has
        # "accounts" and "include_unused"): include_unused, and accs=a,b to pick accounts.
        unused = unused or go_bool(q, "include_unused")
        wanted = [a for a in (q.get("accs") or "").split(",") if a]
        accounts = await self._account_parts()
        names = [n for n in wanted if n in accounts] if wanted else sorted(accounts)
        stats = []
        for name in names:
            a = accounts[name]
            if not unused and a["conns"] == 0 and a["leafnodes"] == 0:
                continue
            stats.append({
                "acc": name,
                "name": "",
                "conns": a["conns"],
                "leafnodes": a["leafnodes"],
                "total_conns": a["conns"] + a["leafnodes"],
                "num_subscriptions": a["num_subscriptions"],
                "sent": _data_stats(*a["sent"]),
                "received": _data_stats(*a["received"]),
                "slow_consumers": a["slow_consumers"],
            })
        return {"server_id": self.server_id, "now": self._now(), "account_statz": stats}

    # ------------------------------------------------------------------ jsz, healthz

    async def jsz(self, q) -> dict:
        """Go's Jsz: ``disabled`` and zeros on a server without JetStream running."""
        self.count("/jsz")
        for name in ("accounts", "streams", "consumers", "direct-consumers", "config"):
            go_bool(q, name)
        go_int(q, "offset")
        go_int(q, "limit")
        leader_only = go_bool(q, "leader-only")
        go_bool(q, "raft")
        go_bool(q, "stream-leader-only")
        running = [p for p in await self.gather({"op": "jsz"}) if p.get("enabled")]
        if leader_only and not running:
            # Only a JetStream meta leader answers a leader-only request.
            raise BadRequest("filtered response: not leader")
        stats, totals = self._jetstream_numbers(running)
        out = dict(stats, server_id=self.server_id, now=self._now())
        if not running:
            out["disabled"] = True
        out["config"] = self._jetstream_config(running)
        if running:
            # Go's JSLimitOpts (a pointer: present, maybe empty, whenever JetStream runs).
            out["limits"] = running[0].get("limits") or {}
        out.update(totals)
        return out

    @staticmethod
    def _jetstream_numbers(running: list[dict]) -> tuple[dict, dict]:
        """Go's JetStreamStats and the JSInfo totals, summed over the workers running it."""
        stats = {"memory": 0, "storage": 0, "reserved_memory": 0, "reserved_storage": 0,
                 "accounts": 0, "ha_assets": 0, "api": {"level": 0, "total": 0, "errors": 0}}
        totals = {"streams": 0, "consumers": 0, "messages": 0, "bytes": 0, "total": 0}
        for part in running:
            for key, value in part["stats"].items():
                if key == "api":
                    for k, v in value.items():
                        stats["api"][k] = stats["api"].get(k, 0) + v
                elif key in stats:
                    stats[key] += value
                elif key in totals:
                    totals[key] += value
            totals["total"] = stats["accounts"]
        return stats, totals

    def _jetstream_config(self, running: list[dict]) -> dict:
        """Go's JetStreamConfig: every worker resolves the same ``jetstream {}`` block
        (natsx.jetstream.settings), so the first running worker's is the server's; zero
        limits without JetStream, as Go's empty struct."""
        for part in running:
            if part.get("config"):
                return dict(part["config"])
        config = {"max_memory": 0, "max_storage": 0}
        if running and self.options.store_dir:
            # Go reports the directory it stores in: the configured one plus "jetstream".
            config["store_dir"] = os.path.join(self.options.store_dir, "jetstream")
        return config

    async def healthz(self, q) -> tuple[int, dict]:
        """Go's HandleHealthz then healthz(): the HTTP status and the body.

        The body never carries ``status_code`` over HTTP: Go removes it there since the
        status line says it (it stays in the $SYS HEALTHZ answer).
        """
        self.count("/healthz")
        # js-enabled(-only) and js-meta-only only narrow the JetStream checks, which end
        # at "not enabled" here; they are decoded for their 400s.
        go_bool(q, "js-enabled")
        go_bool(q, "js-enabled-only")
        js_server_only = go_bool(q, "js-server-only")
        go_bool(q, "js-meta-only")
        details = go_bool(q, "details")
        account, stream, consumer = (q.get(k) or "" for k in ("account", "stream", "consumer"))

        def failed(code: int, status: str, kind: str, error: str) -> tuple[int, dict]:
            if details:
                return code, {"status": "error", "errors": [{"type": kind, "error": error}]}
            return code, {"status": status, "error": error}

        if not account and stream:
            return failed(400, "error", "BAD_REQUEST",
                          '"account" must not be empty when checking stream health')
        if not stream and consumer:
            return failed(400, "error", "BAD_REQUEST",
                          '"stream" must not be empty when checking consumer health')
        answers = await self.ask({"op": "healthz"}, HEALTH_TIMEOUT)
        missing = [f"worker {i}" for i, a in enumerate(answers) if a is None]
        if missing:
            # Go's readyForConnections error, naming what is not ready.
            return failed(500, "error", "CONNECTION",
                          f"failed to be ready for connections after "
                          f"{go_duration(HEALTH_TIMEOUT)}: {', '.join(missing)}")
        if js_server_only or not self.options.jetstream:
            return 200, {"status": "ok"}
        if any(a.get("jetstream") for a in answers):
            return 200, {"status": "ok"}
        # JetStream asked for in the configuration but not running.
        return failed(503, "unavailable", "JETSTREAM", _JS_NOT_ENABLED)

    # ------------------------------------------------------------------ stacksz

    async def stacksz(self) -> str:
        """Every process's Python stacks: the admin's own, then each worker's."""
        from natsx.admin.stacks import process_stacks

        texts = [process_stacks("admin", asyncio_tasks=True)]
        for i, part in enumerate(await self.ask({"op": "stacksz"}, HEALTH_TIMEOUT)):
            if part is None:
                texts.append(f"process worker {i}: no answer within "
                             f"{go_duration(HEALTH_TIMEOUT)} (its event loop may be stuck)\n")
            else:
                texts.append(part["stacks"])
        return "\n".join(texts)
