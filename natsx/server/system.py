"""The system account's services and advisories: the Go server's ``$SYS`` API over NATS.

Theory of operation
-------------------
The Go server answers monitoring requests over NATS in its system account
(``$SYS.REQ.SERVER.PING[.<ENDPOINT>]``, ``$SYS.REQ.SERVER.<id>.<ENDPOINT>``,
``$SYS.REQ.ACCOUNT.<acc>.<ENDPOINT>``, ``$SYS.REQ.USER.INFO``) and publishes advisories
there (client connect and disconnect, authentication errors, account connection counts,
periodic ``STATSZ``, shutdown). This module does the same for natsx. The JSON is built by
the sans-IO functions at the top (Go's ``ServerInfo``, ``ClientInfo``, event and response
envelopes, request option decoding); ``SystemServices`` wires them to internal
subscriptions (natsx.server.internal) and to the monitoring code the admin process uses.

One server, many workers. natsx runs one server identity as N worker processes, so a
server-level request must get one answer carrying every worker's data, exactly like the
HTTP endpoint. Two choices make that hold:

* Who answers. Every worker subscribes to the request subjects with *local* internal
  subscriptions, which are not announced to the peer workers (Go does the same for
  ``$SYS.REQ.USER.*.INFO``: ``sysSubscribeInternal``). A request therefore reaches the
  services of exactly one worker: the one holding the requesting connection. That worker
  answers ``USER.INFO`` about the requester from its own state, and for everything else
  it gathers the other workers' parts and merges them.

* How it gathers. Over the mesh itself, not through the admin process. Every worker
  holds a hidden account (``WORKERS_ACCOUNT``, in the router's sublists but not among the
  server's accounts, so no client can bind to it and no endpoint lists it) in which it
  subscribes, announced to its peers, to ``ask`` and to ``ans.<its index>.*``. To gather,
  a worker publishes one ``ask`` message (the same JSON request the admin process sends
  over the control channel, natsx.server.monitor) with reply ``ans.<index>.<id>``; each
  peer answers with its part, cut into chunks that fit in a ring record. The asker waits
  for the peers whose ``ask`` interest it holds — the mesh drops a dead peer's interest,
  so a dead worker is not waited for, nor one whose heartbeat stalled — at most
  ``GATHER_TIMEOUT``, then merges what came
  with the admin process's own merge code (natsx.admin.endpoints.Monitor, with ``ask``
  replaced). The admin process is not needed (it only runs with a monitoring port), and
  the requests get the rings' ordering, liveness and back-pressure for free.

Advisories come from the worker where the event happened: connect, disconnect and
authentication-error events carry that connection's data; account connection counts and
``STATSZ`` are server-wide, so they are gathered first (``STATSZ`` is sent by one worker,
the lowest-numbered live one — worker 0 unless it is down or restarting, when the next
takes over at once — on Go's schedule: 250ms after start, doubling up to
``STATSZ_INTERVAL``, and only when someone listens). Events go out in the order they happened through one queue per
worker. ``server.seq`` in the envelopes counts per worker, interleaved by worker index
so that no two workers send the same number.

A failed authentication is also announced in the account the client was in (Go 2.10+,
``$SYS.ACCOUNT.CLIENT.AUTH.ERR``; the global account until one is bound).

Requests about one client or the whole server: ``$SYS.REQ.SERVER.<id>.KICK`` and ``.LDM``
(``{"cid": N}``; the ``ask`` goes to every worker and the one holding the client acts),
``.RELOAD`` (the checks of natsx.server.reload run here so a refusal is answered with Go's
text; the reload itself is the supervisor's SIGHUP, which reaches every process), and
``$SYS.REQ.ACCOUNT.NSUBS`` (Go's accNumSubsReq: the account's client subscriptions on a
subject and queue group, summed over the workers, answered only when the server has
connections in the account).

Non-system accounts get what Go's system imports give them (``registerSystemImports``):
``$SYS.REQ.USER.INFO``, and ``$SYS.REQ.SERVER.PING.CONNZ``, ``$SYS.REQ.ACCOUNT.PING.CONNZ``
and ``$SYS.REQ.ACCOUNT.PING.STATZ`` answered for that account only; accounts created after
start (JWT accounts) get them when they are created (``account_added``). The JWT claim
subjects (``$SYS.REQ.ACCOUNT.*.CLAIMS.*``, ``$SYS.REQ.CLAIMS.*``) are left to the
operator-mode code (natsx.server.operator).
"""
from __future__ import annotations

import json
import logging
import math
import secrets
import sys
import time

import trio

from natsx import SERVER_VERSION
from natsx.server.monitor import handle as monitor_part
from natsx.server.monitor import process_usage, rfc3339

log = logging.getLogger("natsx")

WORKERS_ACCOUNT = b"$NATSX_WORKERS"
_ASK = b"ask"
GATHER_TIMEOUT = 2.0
CHUNK = 128 * 1024
STATSZ_FIRST = 0.25
STATSZ_INTERVAL = 10.0        # Go: statsHBInterval
CONNS_HB_INTERVAL = 30.0      # Go: eventsHBInterval
TAKEOVER_CHECK = 0.1          # how often a worker that does not send STATSZ checks
BEAT_STALE = 3.0              # a worker whose heartbeat (1/s) stalls this long is down

NSUBS_SUBJECT = b"$SYS.REQ.ACCOUNT.NSUBS"
ACCOUNT_AUTH_ERR_SUBJECT = b"$SYS.ACCOUNT.CLIENT.AUTH.ERR"

CONNECT_TYPE = "io.nats.server.advisory.v1.client_connect"
DISCONNECT_TYPE = "io.nats.server.advisory.v1.client_disconnect"
ACCOUNT_CONNS_TYPE = "io.nats.server.advisory.v1.account_connections"

#: Server endpoints: ``$SYS.REQ.SERVER.PING.<name>`` and ``$SYS.REQ.SERVER.<id>.<name>``.
SERVER_ENDPOINTS = ("IDZ", "STATSZ", "VARZ", "SUBSZ", "CONNZ", "ROUTEZ", "GATEWAYZ", "LEAFZ",
                    "ACCOUNTZ", "JSZ", "HEALTHZ", "PROFILEZ", "EXPVARZ", "IPQUEUESZ", "RAFTZ")
#: Account endpoints: ``$SYS.REQ.ACCOUNT.<acc>.<name>``.
ACCOUNT_ENDPOINTS = ("SUBSZ", "CONNZ", "LEAFZ", "JSZ", "INFO", "STATZ", "CONNS")

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


KICKED = "Kicked"          # Go's ClosedState for a client closed by KICK


def decode_nsubs(body: bytes) -> tuple[str, str, str | None] | None:
    """Go's accNumSubsReq: ``{"acc", "subject", "queue"}``, the queue a []byte (so
    base64 in JSON); None where Go's json.Unmarshal fails or the body is empty."""
    import base64
    import binascii

    if not body:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    acc, subject, queue = doc.get("acc") or "", doc.get("subject") or "", doc.get("queue")
    if not isinstance(acc, str) or not isinstance(subject, str):
        return None
    if queue is not None:
        if not isinstance(queue, str):
            return None
        try:
            queue = base64.b64decode(queue, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None
        queue = queue or None
    return acc, subject, queue


class Skip(Exception):
    """Go's errSkipZreq: the request is not answered at all."""


class ApiError(Exception):
    """An error answer: Go's ApiError code and description."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


# ---------------------------------------------------------------------------- builders


def event_id() -> str:
    """A unique event id in the shape of Go's nuid (22 base-62 characters)."""
    return "".join(_B62[b % 62] for b in secrets.token_bytes(22))


def go_json(value) -> bytes:
    """Go's json.Marshal of ``value`` (compact, HTML characters escaped)."""
    from natsx.admin.gohttp import go_json as _go_json

    return _go_json(value, indent=False)


def server_info(*, name: str, host: str, server_id: str, seq: int, jetstream: bool,
                tags=(), now: float | None = None) -> dict:
    """Go's ServerInfo, keys in struct order; omitempty fields left out when empty."""
    info = {"name": name, "host": host, "id": server_id, "ver": SERVER_VERSION}
    if tags:
        info["tags"] = list(tags)
    info["jetstream"] = jetstream
    # Go's capability flags: JetStreamEnabled | BinaryStreamSnapshot when JetStream runs.
    info["flags"] = 3 if jetstream else 0
    info["seq"] = seq
    info["time"] = rfc3339(time.time() if now is None else now)
    return info


def client_info(conn, *, stop: float | None = None, account: str | None = None,
                rtt: bool = False, server: str | None = None, jwt: bool = False) -> dict:
    """Go's ClientInfo of a client connection, keys in struct order (omitempty fields left
    out when empty): the RTT with ``stop`` or ``rtt``, the server name with ``server``, and
    with ``jwt`` a JWT user's JWT, signing key, name and tags (Go: getClientInfo(true))."""
    info = {"start": rfc3339(conn.start)}
    if conn.ip:
        info["host"] = conn.ip
    info["id"] = conn.cid
    acc = account if account is not None else conn.account_name
    if acc:
        info["acc"] = acc
    user = raw_auth_user(conn)
    if user:
        info["user"] = user
    if conn.name:
        info["name"] = conn.name
    if conn.lang:
        info["lang"] = conn.lang
    if conn.version:
        info["ver"] = conn.version
    if stop is not None or rtt:
        nanos = int(conn.rtt * 1e9)
        if nanos:
            info["rtt"] = nanos
    if server:
        info["server"] = server
    if stop is not None:
        info["stop"] = rfc3339(stop)
    juc = getattr(conn, "jwt_user", None) if jwt else None
    if juc is not None:
        # A JWT user (natsx.server.operator): c.opts.JWT, issuerForClient, c.nameTag, c.tags.
        token = (getattr(conn, "connect_opts", None) or {}).get("jwt")
        if isinstance(token, str) and token:
            info["jwt"] = token
        if juc.issuer:
            info["issuer_key"] = juc.issuer
        if juc.name:
            info["name_tag"] = juc.name
        if juc.tags:
            info["tags"] = list(juc.tags)
    info["kind"] = "Client"
    info["client_type"] = "nats"
    return info


def raw_auth_user(conn) -> str:
    """Go's getRawAuthUser: the authenticated user, else what the CONNECT offered."""
    if conn.user:
        return conn.user
    opts = getattr(conn, "connect_opts", None) or {}
    for key in ("nkey", "user"):
        if isinstance(opts.get(key), str) and opts[key]:
            return opts[key]
    if opts.get("auth_token"):
        return "[REDACTED]"
    return ""


def system_imports(account: str, system: str) -> list[dict]:
    """Go's registerSystemImports as /accountz lists them (ExtImport, services)."""
    out = []
    for subject, to in (("$SYS.REQ.ACCOUNT.PING.CONNZ", f"$SYS.REQ.ACCOUNT.{account}.CONNZ"),
                        ("$SYS.REQ.SERVER.PING.CONNZ", f"$SYS.REQ.ACCOUNT.{account}.CONNZ"),
                        ("$SYS.REQ.ACCOUNT.PING.STATZ", f"$SYS.REQ.ACCOUNT.{account}.STATZ"),
                        ("$SYS.REQ.USER.INFO", f"$SYS.REQ.USER.{account}.INFO")):
        out.append({"subject": subject, "account": system, "to": to, "local_subject": to,
                    "type": "service", "invalid": False, "share": False, "tracking": False})
    return out


def connect_event(si: dict, conn, now: float) -> dict:
    return {"type": CONNECT_TYPE, "id": event_id(), "timestamp": rfc3339(now), "server": si,
            "client": client_info(conn)}


def disconnect_event(si: dict, conn, now: float, reason: str,
                     account: str | None = None) -> dict:
    """Go's DisconnectEventMsg: ``sent`` is what the client sent, ``received`` what it got."""
    core = conn.core
    return {"type": DISCONNECT_TYPE, "id": event_id(), "timestamp": rfc3339(now),
            "server": si, "client": client_info(conn, stop=now, account=account),
            "sent": {"msgs": core.in_msgs, "bytes": core.in_bytes},
            "received": {"msgs": core.out_msgs, "bytes": core.out_bytes},
            "reason": reason}


def account_conns_event(si: dict, stat: dict, now: float) -> dict:
    """Go's AccountNumConns: the event header, the server, then the AccountStat fields."""
    return dict({"type": ACCOUNT_CONNS_TYPE, "id": event_id(), "timestamp": rfc3339(now),
                 "server": si}, **stat)


def permissions_json(perms) -> dict | None:
    """Go's publicPermissions of a natsx.auth.permissions.Permissions (None: no limits)."""
    if perms is None:
        return None

    def side(p) -> dict:
        out = {}
        if p is not None and p.allow is not None:
            out["allow"] = list(p.allow)
        if p is not None and p.deny:
            out["deny"] = list(p.deny)
        return out
    out = {"publish": side(perms.publish), "subscribe": side(perms.subscribe)}
    if perms.response is not None:
        out["responses"] = {"max": perms.response.max_msgs,
                            "ttl": int(perms.response.expires * 1e9)}
    return out


def user_info(conn) -> dict:
    """Go's UserInfo of the requesting connection."""
    info = {"user": conn.user, "account": conn.account_name}
    pset = getattr(conn, "perms", None)
    perms = permissions_json(getattr(pset, "permissions", None)) if pset is not None else None
    if perms is not None:
        info["permissions"] = perms
    return info


# Request options: the Go struct's JSON field -> (query name of the HTTP endpoint, type).
_BOOL, _INT, _STR, _LIST = "bool", "int", "string", "list"
_OPTIONS = {
    "CONNZ": {"sort": ("sort", _STR), "auth": ("auth", _BOOL),
              "subscriptions": ("subs", _BOOL), "subscriptions_detail": ("subs", "detail"),
              "offset": ("offset", _INT), "limit": ("limit", _INT), "cid": ("cid", _INT),
              "mqtt_client": ("mqtt_client", _STR), "state": ("state", "state"),
              "user": ("user", _STR), "acc": ("acc", _STR),
              "filter_subject": ("filter_subject", _STR)},
    "SUBSZ": {"offset": ("offset", _INT), "limit": ("limit", _INT),
              "subscriptions": ("subs", _BOOL), "account": ("acc", _STR),
              "test": ("test", _STR)},
    "ROUTEZ": {"subscriptions": ("subs", _BOOL), "subscriptions_detail": ("subs", "detail")},
    "GATEWAYZ": {"name": ("name", _STR), "accounts": ("accs", _BOOL),
                 "account_name": ("acc_name", _STR), "subscriptions": ("subs", _BOOL),
                 "subscriptions_detail": ("subs", "detail")},
    "LEAFZ": {"subscriptions": ("subs", _BOOL), "account": ("acc", _STR)},
    "ACCOUNTZ": {"account": ("acc", _STR)},
    "JSZ": {"account": ("acc", _STR), "accounts": ("accounts", _BOOL),
            "streams": ("streams", _BOOL), "consumer": ("consumers", _BOOL),
            "direct_consumer": ("direct-consumers", _BOOL), "config": ("config", _BOOL),
            "leader_only": ("leader-only", _BOOL), "offset": ("offset", _INT),
            "limit": ("limit", _INT), "raft": ("raft", _BOOL),
            "stream_leader_only": ("stream-leader-only", _BOOL)},
    "HEALTHZ": {"js-enabled": ("js-enabled", _BOOL), "js-enabled-only": ("js-enabled-only", _BOOL),
                "js-server-only": ("js-server-only", _BOOL),
                "js-meta-only": ("js-meta-only", _BOOL), "account": ("account", _STR),
                "stream": ("stream", _STR), "consumer": ("consumer", _STR),
                "details": ("details", _BOOL)},
    "STATZ": {"accounts": ("accs", _LIST), "include_unused": ("include_unused", _BOOL)},
    "PROFILEZ": {"name": ("name", _STR), "debug": ("debug", _INT), "duration": ("duration", _INT)},
}
_FILTERS = {"server_name": _STR, "cluster": _STR, "host": _STR, "exact_match": _BOOL,
            "tags": _LIST, "domain": _STR}
_STATES = {0: "open", 1: "closed", 2: "any"}
_GO_TYPES = {_BOOL: "bool", _INT: "int", _STR: "string", _LIST: "[]string", "state":
             "server.ConnState", "detail": "bool"}


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value, kind: str, field: str, struct: str) -> ApiError:
    # encoding/json's UnmarshalTypeError text.
    return ApiError(400, f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                         f"{struct}.{field} of type {_GO_TYPES[kind]}")


def decode_options(endpoint: str, body: bytes) -> tuple[dict, dict]:
    """A request body as (query parameters of the HTTP endpoint, event filter options).

    Raises ApiError(400) where Go's json.Unmarshal fails. Unknown fields are ignored, as
    encoding/json ignores them.
    """
    if not body:
        return {}, {}
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, _json_syntax_error(body, exc)) from None
    if doc is None:
        return {}, {}
    if not isinstance(doc, dict):
        name = "EventFilterOptions" if endpoint == "FILTER" else f"{endpoint.title()}EventOptions"
        raise ApiError(400, f"json: cannot unmarshal {_json_kind(doc)} into Go value of type "
                            f"server.{name}")
    q: dict = {}
    fields = _OPTIONS.get(endpoint, {})
    struct = "EventFilterOptions" if endpoint == "FILTER" else f"{endpoint.title()}EventOptions"
    for key, value in doc.items():
        spec = fields.get(key)
        if spec is None or value is None:
            continue
        name, kind = spec
        if kind in (_BOOL, "detail"):
            if not isinstance(value, bool):
                raise _type_error(value, kind, key, struct)
            if value:
                q[name] = "detail" if kind == "detail" else "true"
        elif kind == _INT:
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or (isinstance(value, float) and not value.is_integer()):
                raise _type_error(value, kind, key, struct)
            q[name] = str(int(value))
        elif kind == "state":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _type_error(value, kind, key, struct)
            q[name] = _STATES.get(value, "open")
        elif kind == _LIST:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _type_error(value, kind, key, struct)
            q[name] = ",".join(value)
        else:
            if not isinstance(value, str):
                raise _type_error(value, kind, key, struct)
            q[name] = value
    filters = {}
    for key, kind in _FILTERS.items():
        value = doc.get(key)
        if value is None:
            continue
        ok = (isinstance(value, bool) if kind == _BOOL else
              isinstance(value, list) and all(isinstance(v, str) for v in value)
              if kind == _LIST else isinstance(value, str))
        if not ok:
            raise _type_error(value, kind, key, struct)
        filters[key] = value
    return q, filters


def _json_syntax_error(body: bytes, exc: Exception) -> str:
    """encoding/json's SyntaxError text for the common cases."""
    pos = getattr(exc, "pos", None)
    text = body.decode("utf-8", "replace")
    if pos is None or pos >= len(text):
        return "unexpected end of JSON input"
    ch = text[pos]
    msg = getattr(exc, "msg", "")
    if "property name" in msg:
        return f"invalid character {ch!r} looking for beginning of object key string"
    if "Expecting value" in msg:
        return f"invalid character {ch!r} looking for beginning of value"
    if "delimiter" in msg:
        return f"invalid character {ch!r} after object key:value pair"
    return f"invalid character {ch!r} after top-level value"


def accept_encoding(headers: bytes | None) -> str:
    """Go's getAcceptEncoding: "snappy", "gzip", "identity" (something else) or ""."""
    if not headers:
        return ""
    value = ""
    for line in headers.split(b"\r\n")[1:]:
        name, sep, rest = line.partition(b":")
        if sep and name.strip().lower() == b"accept-encoding":
            value = rest.strip().decode("latin-1").lower()
            break
    if not value:
        return ""
    if "snappy" in value or "s2" in value:
        return "snappy"
    if "gzip" in value:
        return "gzip"
    return "identity"


def encode_response(payload: bytes, encoding: str) -> tuple[bytes | None, bytes]:
    """(headers, payload) of an answer to a request that asked for ``encoding``.

    natsx compresses with gzip only: a request asking for snappy/s2 gets the plain JSON,
    marked ``identity`` as Go marks an encoding it cannot produce.
    """
    if not encoding or not payload:
        return None, payload
    if encoding == "gzip":
        import gzip

        return b"NATS/1.0\r\nContent-Encoding: gzip\r\n\r\n", gzip.compress(payload)
    return b"NATS/1.0\r\nContent-Encoding: identity\r\n\r\n", payload


def filtered_out(filters: dict, *, name: str, host: str, tags, domain: str) -> bool:
    """Go's filterRequest: True when the request's server filters exclude this server."""
    cluster = ""
    if filters.get("exact_match"):
        if (filters.get("server_name") and filters["server_name"] != name) or \
                (filters.get("host") and filters["host"] != host) or \
                (filters.get("cluster") and filters["cluster"] != cluster):
            return True
    elif (filters.get("server_name") and filters["server_name"] not in name) or \
            (filters.get("host") and filters["host"] not in host) or \
            (filters.get("cluster") and filters["cluster"] not in cluster):
        return True
    if any(t not in tags for t in filters.get("tags") or ()):
        return True
    return bool(filters.get("domain")) and filters["domain"] != domain


def statsz_data(varz: dict, accounts: dict, start: str) -> dict:
    """Go's ServerStats from the merged /varz and per-account numbers."""
    stats = {
        "start": start,
        "mem": varz["mem"],
        "cores": varz["cores"],
        "cpu": varz["cpu"],
        "connections": varz["connections"],
        "total_connections": varz["total_connections"],
        "active_accounts": sum(1 for a in accounts.values() if a["conns"] or a["leafnodes"]),
        "subscriptions": varz["subscriptions"],
        "sent": {"msgs": varz["out_msgs"], "bytes": varz["out_bytes"]},
        "sent_to_clients": {"msgs": varz["out_client_msgs"], "bytes": varz["out_client_bytes"]},
        "received": {"msgs": varz["in_msgs"], "bytes": varz["in_bytes"]},
        "received_from_clients": {"msgs": varz["in_client_msgs"],
                                  "bytes": varz["in_client_bytes"]},
        "slow_consumers": varz["slow_consumers"],
    }
    if varz["slow_consumers"]:
        stats["slow_consumer_stats"] = varz["slow_consumer_stats"]
    if varz["stale_connections"]:
        stats["stale_connections"] = varz["stale_connections"]
        stats["stale_connection_stats"] = varz["stale_connection_stats"]
    stats["active_servers"] = 1
    if varz.get("jetstream"):
        js = dict(varz["jetstream"])
        if "config" in js:
            js["config"] = {k: v for k, v in js["config"].items() if k != "store_dir"}
        stats["jetstream"] = js
    stats["gomaxprocs"] = varz["gomaxprocs"]
    return stats


def account_stat(name: str, a: dict) -> dict:
    """Go's AccountStat from one account's numbers merged over the workers."""
    zero = {"msgs": 0, "bytes": 0}

    def data(pair):
        return {"msgs": pair[0], "bytes": pair[1], "gateways": dict(zero),
                "routes": dict(zero), "leafs": dict(zero)}
    return {"acc": name, "name": "", "conns": a["conns"], "leafnodes": a["leafnodes"],
            "total_conns": a["conns"] + a["leafnodes"],
            "num_subscriptions": a["num_subscriptions"], "sent": data(a["sent"]),
            "received": data(a["received"]), "slow_consumers": a["slow_consumers"]}


# ---------------------------------------------------------------------------- gathering


class _Pending:
    __slots__ = ("expected", "parts", "chunks", "done")

    def __init__(self, expected: set) -> None:
        self.expected = expected
        self.parts: dict[int, dict] = {}
        self.chunks: dict[int, list] = {}
        self.done = trio.Event()


class WorkerParts:
    """Asks the peer workers for their part of a monitoring answer over the mesh."""

    def __init__(self, server) -> None:
        self.server = server
        self.pending: dict[int, _Pending] = {}
        self._next = 0
        # Requests answered here rather than by natsx.server.monitor: op -> part(request).
        self.ops: dict = {}
        self._beats: dict[int, tuple[int, float]] = {}   # worker -> (heartbeat, seen at)

    def stuck(self, j: int) -> bool:
        """Worker ``j``'s heartbeat (a counter it moves every second in the supervisor's
        table) has not moved for ``BEAT_STALE``: it answers nothing, so it is not asked."""
        mesh = self.server.mesh
        if mesh is None:
            return False
        beat = mesh.table.read(j)[2]
        now = time.monotonic()
        seen = self._beats.get(j)
        if seen is None or seen[0] != beat:
            seen = self._beats[j] = (beat, now)
        return now - seen[1] >= BEAT_STALE

    def part(self, request: dict) -> dict:
        op = self.ops.get(request.get("op"))
        if op is not None:
            return op(request)
        return monitor_part(self.server, request)

    def start(self) -> None:
        s = self.server
        s.internal_subscribe(WORKERS_ACCOUNT, _ASK, self._on_ask)
        s.internal_subscribe(WORKERS_ACCOUNT, b"ans.%d.*" % s.worker_index, self._on_answer)

    def _on_ask(self, subject, reply, headers, payload, publisher) -> None:
        s = self.server
        try:
            request = json.loads(payload)
        except ValueError:
            return
        if not reply or request.pop("_from", None) == s.worker_index:
            return
        try:
            part = self.part(request)
        except Exception as exc:  # the asker must get an answer, never a wait
            log.exception("worker part for %r failed", request.get("op"))
            part = {"error": str(exc)}
        data = json.dumps(part, separators=(",", ":"), default=str).encode()
        n = max(1, math.ceil(len(data) / CHUNK))
        for i in range(n):
            s.internal_publish(WORKERS_ACCOUNT, reply, None, None,
                               b"%d %d %d\n" % (s.worker_index, i, n)
                               + data[i * CHUNK:(i + 1) * CHUNK])

    def _on_answer(self, subject, reply, headers, payload, publisher) -> None:
        try:
            rid = int(subject.rsplit(b".", 1)[1])
            head, _, data = payload.partition(b"\n")
            worker, i, n = (int(x) for x in head.split())
        except ValueError:
            return
        pending = self.pending.get(rid)
        if pending is None or worker not in pending.expected or worker in pending.parts:
            return
        chunks = pending.chunks.setdefault(worker, [None] * n)
        if len(chunks) != n or not 0 <= i < n:
            return
        chunks[i] = data
        if any(c is None for c in chunks):
            return
        del pending.chunks[worker]
        try:
            pending.parts[worker] = json.loads(b"".join(chunks))
        except ValueError:
            pending.parts[worker] = {"error": "unreadable part"}
        if len(pending.parts) == len(pending.expected):
            pending.done.set()

    def _peers_listening(self) -> set:
        mesh = self.server.mesh
        if mesh is None:
            return set()
        key = (WORKERS_ACCOUNT, _ASK, None)
        return {j for j, link in mesh.links.items()
                if link.alive and key in link.remote and not self.stuck(j)}

    async def ask(self, request: dict, timeout: float = GATHER_TIMEOUT) -> list:
        """Every worker's part by worker index (this one's computed here); None where a
        worker did not answer in time or answered with an error."""
        s = self.server
        answers: list = [None] * max(s.worker_count, s.worker_index + 1)
        local = self.part(dict(request))
        answers[s.worker_index] = None if "error" in local else local
        expected = self._peers_listening()
        if not expected:
            return answers
        self._next += 1
        rid = self._next
        pending = self.pending[rid] = _Pending(expected)
        try:
            payload = json.dumps(dict(request, _from=s.worker_index),
                                 separators=(",", ":")).encode()
            s.internal_publish(WORKERS_ACCOUNT, _ASK, b"ans.%d.%d" % (s.worker_index, rid),
                               None, payload)
            with trio.move_on_after(timeout):
                await pending.done.wait()
        finally:
            del self.pending[rid]
        for j, part in pending.parts.items():
            if 0 <= j < len(answers) and "error" not in part:
                answers[j] = part
        return answers


def _worker_monitor(services):
    """natsx.admin.endpoints.Monitor, asking the workers over the mesh."""
    from natsx.admin.endpoints import Monitor

    class WorkerMonitor(Monitor):
        @property
        def options(self):
            return services.server.options

        @options.setter
        def options(self, value) -> None:
            pass

        def count(self, path: str) -> None:
            # Not an HTTP request: Go's http_req_stats does not count it.
            pass

        async def ask(self, request: dict, timeout: float = GATHER_TIMEOUT) -> list:
            return await services.parts.ask(request, min(timeout, GATHER_TIMEOUT))

    s = services.server
    return WorkerMonitor(s.options, s.server_id, list(range(s.worker_count)),
                         services.start_time)


# ---------------------------------------------------------------------------- services


class SystemServices:
    """One worker's part of the system account: request handlers and advisories."""

    def __init__(self, server, *, start_time: float | None = None) -> None:
        from natsx.server.accounts import Account
        from natsx.server.worker import _sublist

        self.server = server
        self.start_time = start_time or server.start_time
        self.seq = 0
        self.parts = WorkerParts(server)
        self._monitor = None
        self._nursery: trio.Nursery | None = None
        self._imported: set[str] = set()
        self._send, self._recv = trio.open_memory_channel(math.inf)
        # The hidden account the workers gather in (see the module docstring). It must
        # exist before the mesh applies a peer's announcements.
        if WORKERS_ACCOUNT not in server.router.sublists:
            server.router.sublists[WORKERS_ACCOUNT] = _sublist.Sublist()
        self._workers_account = Account(WORKERS_ACCOUNT.decode(),
                                        server.router.sublists[WORKERS_ACCOUNT])

    # ------------------------------------------------------------------ names

    @property
    def system_account(self) -> str:
        for name, acc in self.server.accounts.items():
            if acc.is_system:
                return name
        return "$SYS"

    @property
    def enabled(self) -> bool:
        """False with ``no_system_account`` (and none configured): no ``$SYS`` services,
        imports or advisories, as in Go; the workers' gathering still runs."""
        return any(acc.is_system for acc in self.server.accounts.values())

    @property
    def monitor(self):
        if self._monitor is None:
            self._monitor = _worker_monitor(self)
        return self._monitor

    def server_info(self) -> dict:
        s = self.server
        o = s.options
        self.seq += 1
        return server_info(name=s.server_name, host=o.host, server_id=s.server_id,
                           seq=self.seq * max(s.worker_count, 1) + s.worker_index,
                           jetstream=bool(o.jetstream), tags=o.tags)

    # ------------------------------------------------------------------ start / stop

    def start(self, nursery: trio.Nursery) -> None:
        s = self.server
        self._nursery = nursery
        s.internal_client(WORKERS_ACCOUNT).core.account = self._workers_account
        self.parts.start()
        self.parts.ops.update({"nsubs": self._nsubs_part, "kick": self._kick_part,
                               "ldm": self._ldm_part})
        if not self.enabled:
            return
        sys_name = self.system_account
        sub = self._subscribe_local
        sub(sys_name, b"$SYS.REQ.SERVER.PING", self._statsz_handler(sys_name))
        for ep in SERVER_ENDPOINTS:
            handler = (self._statsz_handler(sys_name) if ep == "STATSZ"
                       else self._z_handler(ep, sys_name))
            sub(sys_name, b"$SYS.REQ.SERVER.PING.%s" % ep.encode(), handler)
            sub(sys_name, b"$SYS.REQ.SERVER.%s.%s" % (s.server_id.encode(), ep.encode()),
                handler)
        for ep in ACCOUNT_ENDPOINTS:
            sub(sys_name, b"$SYS.REQ.ACCOUNT.*.%s" % ep.encode(),
                self._account_handler(ep, sys_name))
        sub(sys_name, b"$SYS.REQ.ACCOUNT.PING.STATZ", self._z_handler("ACCSTATZ", sys_name))
        sub(sys_name, b"$SYS.REQ.USER.INFO", self._user_info)
        sub(sys_name, NSUBS_SUBJECT, self._nsubs_handler)
        server_id = s.server_id.encode()
        sub(sys_name, b"$SYS.REQ.SERVER.%s.KICK" % server_id, self._client_op_handler("kick"))
        sub(sys_name, b"$SYS.REQ.SERVER.%s.LDM" % server_id, self._client_op_handler("ldm"))
        sub(sys_name, b"$SYS.REQ.SERVER.%s.RELOAD" % server_id, self._reload_handler)
        # Go's system imports for every other account (registerSystemImports), and for
        # the accounts created later (JWT accounts: account_added).
        for name in list(s.accounts):
            self.account_added(name)
        nursery.start_soon(self._event_loop)
        # Every worker runs the timer; the lowest live one sends (_statsz_sender).
        nursery.start_soon(self._statsz_timer)

    def account_added(self, name: str) -> None:
        """Go's registerSystemImports for account ``name``: ``$SYS.REQ.USER.INFO``, and
        ``CONNZ``/``STATZ`` pings answered for the account's own connections."""
        if self._nursery is None or name in self._imported or name == WORKERS_ACCOUNT.decode() \
                or not self.enabled:
            return
        if name == self.system_account:
            return
        self._imported.add(name)
        sub = self._subscribe_local
        sub(name, b"$SYS.REQ.USER.INFO", self._user_info)
        connz = self._z_handler("CONNZ", name, account=name)
        sub(name, b"$SYS.REQ.ACCOUNT.PING.CONNZ", connz)
        sub(name, b"$SYS.REQ.SERVER.PING.CONNZ", connz)
        sub(name, b"$SYS.REQ.ACCOUNT.PING.STATZ", self._z_handler("STATZ", name, account=name))

    def reloaded(self) -> None:
        """A configuration reload happened: VARZ's ``config_load_time`` moves."""
        self.monitor.config_load_time = time.time()

    def _subscribe_local(self, account: str, subject: bytes, handler) -> None:
        self.server.internal_client(account).subscribe(subject, handler, local=True)

    def shutdown(self, lame_duck: bool = False) -> None:
        """Worker 0 announces the server going away (Go: sendShutdownEvent)."""
        s = self.server
        if s.worker_index != 0 or not self.enabled:
            return
        si = self.server_info()
        kind = b"LAMEDUCK" if lame_duck else b"SHUTDOWN"
        try:
            s.internal_publish(self.system_account, b"$SYS.SERVER.%s.%s"
                               % (s.server_id.encode(), kind), None, None, go_json(si))
        except Exception:
            log.exception("shutdown advisory failed")

    # ------------------------------------------------------------------ publishing

    def _publish(self, account: str, subject: bytes, value) -> None:
        self.server.internal_publish(account, subject, None, None, go_json(value))

    def _interest(self, account: str, subject: bytes) -> bool:
        acc = self.server.accounts.get(account)
        if acc is None:
            return False
        r = acc.sublist.match(subject)
        return bool(r.psubs) or any(len(q) for q in r.qsubs)

    def _spawn(self, fn, *args) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._guarded, fn, *args)

    @staticmethod
    async def _guarded(fn, *args) -> None:
        # A failing request must not take the worker (its nursery) down with it.
        try:
            await fn(*args)
        except Exception:
            log.exception("$SYS request failed")

    async def _event_loop(self) -> None:
        """Publishes the advisories in the order they happened."""
        async for item in self._recv:
            try:
                if callable(item):
                    await item()
                else:
                    self._publish(*item)
            except Exception:
                log.exception("system advisory failed")

    def _queue(self, item) -> None:
        if not self.enabled:
            return   # no system account: no advisories, and no event loop to drain them
        try:
            self._send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    # ------------------------------------------------------------------ advisories

    def client_connected(self, conn) -> None:
        """After authentication (Go: accountConnectEvent, then the account's conns)."""
        try:
            self._client_connected(conn)
        except Exception:
            log.exception("connect advisory failed")

    def client_disconnected(self, conn) -> None:
        try:
            self._client_disconnected(conn)
        except Exception:
            log.exception("disconnect advisory failed")

    def auth_error(self, conn, reason: str = "Authentication Failure") -> None:
        try:
            self._auth_error(conn, reason)
        except Exception:
            log.exception("authentication error advisory failed")

    def _client_connected(self, conn) -> None:
        sys_name = self.system_account
        conn.connect_event_sent = True
        acc = conn.account_name
        subject = b"$SYS.ACCOUNT.%s.CONNECT" % acc.encode()
        self._account_conns_changed(acc)
        if self._interest(sys_name, subject):
            self._queue((sys_name, subject, connect_event(self.server_info(), conn,
                                                          time.time())))

    def _client_disconnected(self, conn) -> None:
        if not getattr(conn, "connect_event_sent", False):
            return
        sys_name = self.system_account
        acc = conn.account_name
        subject = b"$SYS.ACCOUNT.%s.DISCONNECT" % acc.encode()
        self._account_conns_changed(acc)
        if self._interest(sys_name, subject):
            event = disconnect_event(self.server_info(), conn, conn.stop or time.time(),
                                     conn.close_reason or "Client Closed")
            self._queue((sys_name, subject, event))

    def _auth_error(self, conn, reason: str) -> None:
        sys_name = self.system_account
        subject = b"$SYS.SERVER.%s.CLIENT.AUTH.ERR" % self.server.server_id.encode()
        if self._interest(sys_name, subject):
            event = disconnect_event(self.server_info(), conn, time.time(), reason)
            self._queue((sys_name, subject, event))
        # Go 2.10+ (sendAccountAuthErrorEvent): the same event in the account the client
        # was in when it failed (the global account until one was bound), for its owner.
        acc = getattr(conn, "account_name", None) or "$G"
        if acc in self.server.accounts and self._interest(acc, ACCOUNT_AUTH_ERR_SUBJECT):
            event = disconnect_event(self.server_info(), conn, time.time(), reason, account=acc)
            self._queue((acc, ACCOUNT_AUTH_ERR_SUBJECT, event))

    def _conns_subjects(self, acc: str) -> tuple[bytes, bytes]:
        a = acc.encode()
        return b"$SYS.SERVER.ACCOUNT.%s.CONNS" % a, b"$SYS.ACCOUNT.%s.SERVER.CONNS" % a

    def _account_conns_changed(self, acc: str) -> None:
        # Go: accConnsUpdate, never for the global account.
        if acc == "$G":
            return
        sys_name = self.system_account
        if any(self._interest(sys_name, subj) for subj in self._conns_subjects(acc)):
            self._queue(lambda: self._send_account_conns(acc))

    async def _send_account_conns(self, acc: str, reply: bytes | None = None) -> None:
        accounts = await self.monitor._account_parts()
        a = accounts.get(acc)
        if a is None:
            return
        event = account_conns_event(self.server_info(), account_stat(acc, a), time.time())
        if reply is not None:
            self._publish(self.system_account, reply, event)
            return
        for subject in self._conns_subjects(acc):
            self._publish(self.system_account, subject, event)

    # ------------------------------------------------------------------ STATSZ

    async def _statsz_timer(self) -> None:
        """Go's statsz heartbeat: 250ms after start, doubling up to STATSZ_INTERVAL; and
        the accounts' connection counts every CONNS_HB_INTERVAL while they have any."""
        delay = STATSZ_FIRST
        last_conns = time.monotonic()
        sending = self._statsz_sender()
        while True:
            if not sending:
                # Another worker sends; watch for it going away (it died or restarts).
                await trio.sleep(TAKEOVER_CHECK)
                sending = self._statsz_sender()
                if not sending:
                    continue
                # Taking over: announce at once, then Go's start-up schedule.
                delay = STATSZ_FIRST
                last_conns = time.monotonic()
            else:
                await trio.sleep(delay)
                delay = min(delay * 2, STATSZ_INTERVAL)
                if not self._statsz_sender():
                    sending = False
                    continue
            try:
                subject = b"$SYS.SERVER.%s.STATSZ" % self.server.server_id.encode()
                if self._interest(self.system_account, subject):
                    await self._send_statsz_to(self.system_account, subject)
                if time.monotonic() - last_conns >= CONNS_HB_INTERVAL:
                    last_conns = time.monotonic()
                    self._queue(self._conns_heartbeat)
            except Exception:
                log.exception("statsz heartbeat failed")

    def _statsz_sender(self) -> bool:
        """The server sends one STATSZ: the lowest-numbered live worker does (worker 0,
        or the next one while it is down)."""
        s = self.server
        mesh = s.mesh
        if mesh is None:
            return True
        for j, link in mesh.links.items():
            if j >= s.worker_index or not link.alive:
                continue
            # The supervisor's table is ahead of the mesh: a restarted worker has a new
            # generation there before it says HELLO, and sends nothing until it runs; a
            # stuck one (its heartbeat stalled) sends nothing either.
            alive, generation, _beat = mesh.table.read(j)
            if alive and generation == link.generation and not self.parts.stuck(j):
                return False
        return True

    async def _conns_heartbeat(self) -> None:
        """Go re-sends an account's connection count while it has connections."""
        sys_name = self.system_account
        wanted = [name for name in self.server.accounts if name != "$G" and any(
            self._interest(sys_name, subj) for subj in self._conns_subjects(name))]
        if not wanted:
            return
        accounts = await self.monitor._account_parts()
        for name in wanted:
            a = accounts.get(name)
            if a is not None and a["conns"] + a["leafnodes"]:
                event = account_conns_event(self.server_info(), account_stat(name, a),
                                            time.time())
                for subject in self._conns_subjects(name):
                    self._publish(sys_name, subject, event)

    def _statsz_handler(self, account: str):
        def handler(subject, reply, headers, payload, publisher) -> None:
            self._spawn(self._statsz_request, account, reply, payload)
        return handler

    async def _statsz_request(self, account: str, reply: bytes | None, body: bytes) -> None:
        s = self.server
        if not reply:
            reply = b"$SYS.SERVER.%s.STATSZ" % s.server_id.encode()
        try:
            _q, filters = decode_options("STATSZ", body)
        except ApiError as exc:
            self._publish(account, reply, {"server": self.server_info(),
                                           "error": {"code": exc.code,
                                                     "description": exc.description}})
            return
        if self._filtered(filters):
            return
        await self._send_statsz_to(account, reply)

    async def _send_statsz_to(self, account: str, reply: bytes) -> None:
        mon = self.monitor
        varz = await mon.varz_data()
        accounts = await mon._account_parts()
        stats = statsz_data(varz, accounts, rfc3339(self.start_time))
        self._publish(account, reply, {"server": self.server_info(), "statsz": stats})

    def _filtered(self, filters: dict) -> bool:
        o = self.server.options
        return bool(filters) and filtered_out(
            filters, name=self.server.server_name, host=o.host, tags=o.tags,
            domain=(o.jetstream_config or {}).get("domain", "") or "")

    # ------------------------------------------------------------------ z requests

    def _z_handler(self, endpoint: str, reply_account: str, account: str | None = None):
        def handler(subject, reply, headers, payload, publisher) -> None:
            if not reply:
                return
            if endpoint == "IDZ":
                s = self.server
                self._publish(reply_account, reply, {"name": s.server_name,
                                                     "host": s.options.host,
                                                     "id": s.server_id})
                return
            self._spawn(self._z_request, endpoint, reply_account, reply, payload, account,
                        headers)
        return handler

    def _account_handler(self, endpoint: str, reply_account: str):
        def handler(subject, reply, headers, payload, publisher) -> None:
            tokens = subject.split(b".")
            if len(tokens) != 5:
                return
            acc = tokens[3].decode("utf-8", "replace")
            if endpoint == "CONNS":
                self._spawn(self._conns_request, acc, reply, payload)
                return
            if not reply:
                return
            ep = {"SUBSZ": "ACC_SUBSZ", "CONNZ": "CONNZ", "LEAFZ": "LEAFZ", "JSZ": "ACC_JSZ",
                  "INFO": "INFO", "STATZ": "STATZ"}[endpoint]
            self._spawn(self._z_request, ep, reply_account, reply, payload, acc, headers)
        return handler

    async def _conns_request(self, acc: str, reply: bytes | None, body: bytes) -> None:
        # Go: connsRequest. Answers only when this server has connections in the account.
        if body:
            try:
                doc = json.loads(body)
            except ValueError:
                return
            if not isinstance(doc, dict) or doc.get("acc", acc) != acc:
                return
        if not reply or acc not in self.server.accounts:
            return
        accounts = await self.monitor._account_parts()
        a = accounts.get(acc)
        if a is None or not a["conns"]:
            return
        await self._send_account_conns(acc, reply)

    async def _z_request(self, endpoint: str, reply_account: str, reply: bytes, body: bytes,
                         account: str | None, headers: bytes | None = None) -> None:
        opts_kind = {"ACC_SUBSZ": "SUBSZ", "ACC_JSZ": "JSZ", "INFO": "ACCINFO",
                     "ACCSTATZ": "STATZ"}.get(endpoint, endpoint)
        response = {"server": None}
        try:
            q, filters = decode_options(opts_kind, body)
        except ApiError as exc:
            response["server"] = self.server_info()
            response["error"] = {"code": exc.code, "description": exc.description}
            self._publish(reply_account, reply, response)
            return
        if self._filtered(filters):
            return
        try:
            data = await self._data(endpoint, q, account)
        except Skip:
            return
        except ApiError as exc:
            response = {"server": self.server_info(), "data": None,
                        "error": {"code": exc.code, "description": exc.description}}
        except Exception as exc:
            from natsx.admin.gohttp import BadRequest

            if not isinstance(exc, BadRequest):
                log.exception("$SYS %s request failed", endpoint)
            response = {"server": self.server_info(), "data": None,
                        "error": {"code": 500, "description": str(exc)}}
        else:
            response = {"server": self.server_info(), "data": data}
            # Go compresses successful answers only (zReq).
            hdr, payload = encode_response(go_json(response), accept_encoding(headers))
            self.server.internal_publish(reply_account, reply, None, hdr, payload)
            return
        self._publish(reply_account, reply, response)

    async def _data(self, endpoint: str, q: dict, account: str | None):
        mon = self.monitor
        if endpoint == "VARZ":
            return await mon.varz_data()
        if endpoint == "CONNZ":
            if account is not None:
                q["acc"] = account
            return await mon.connz(q)
        if endpoint == "SUBSZ":
            return await mon.subsz(q)
        if endpoint == "ACC_SUBSZ":
            q["subs"], q["acc"] = "true", account
            return await mon.subsz(q)
        if endpoint == "ROUTEZ":
            return await mon.routez(q)
        if endpoint == "GATEWAYZ":
            return await mon.gatewayz(q)
        if endpoint == "LEAFZ":
            return await mon.leafz(q)
        if endpoint == "ACCOUNTZ":
            return await mon.accountz(q)
        if endpoint == "JSZ":
            return await mon.jsz(q)
        if endpoint == "ACC_JSZ":
            return await self._account_jsz(account)
        if endpoint == "HEALTHZ":
            code, body = await mon.healthz(q)
            out = {"status": body.get("status", "ok"), "status_code": code}
            out.update((k, v) for k, v in body.items() if k != "status")
            return out
        if endpoint == "INFO":
            return (await mon.accountz({"acc": account}))["account_detail"]
        if endpoint in ("STATZ", "ACCSTATZ"):
            if account == "PING":
                raise Skip()
            if account is not None:
                q["accs"] = account
            stz = await mon.accstatz(q)
            if not stz["account_statz"] and not q.get("include_unused"):
                raise Skip()
            return stz
        if endpoint == "EXPVARZ":
            return {"memstats": {"Sys": process_usage().rss()}, "cmdline": list(sys.argv)}
        if endpoint == "IPQUEUESZ":
            return {}
        if endpoint == "PROFILEZ":
            name = q.get("name", "")
            error = f"Profile {json.dumps(name)} not found" if name else \
                "Profile name not specified"
            return {"profile": None, "error": error}
        if endpoint == "RAFTZ":
            return None
        raise ApiError(500, f"unknown endpoint {endpoint}")

    async def _account_jsz(self, account: str) -> dict:
        """Go's JszAccount: an error without JetStream, else the account's usage."""
        parts = [p for p in await self.parts.ask({"op": "jsz"}) if p and p.get("enabled")]
        if not parts:
            raise ApiError(500, "jetstream not enabled")
        detail = {"name": account, "id": account, "memory": 0, "storage": 0,
                  "reserved_memory": 0, "reserved_storage": 0, "accounts": 0,
                  "ha_assets": 0, "api": {"level": 0, "total": 0, "errors": 0}}
        for part in parts:
            # Each worker has its share of the account (natsx.jetstream.shards): summed.
            acc = (part.get("owned") or {}).get(account)
            if acc is not None:
                detail["api"]["total"] += acc["api"]["total"]
                detail["api"]["errors"] += acc["api"]["errors"]
                detail["memory"] += acc["memory"]
                detail["storage"] += acc["storage"]
        return detail

    # ------------------------------------------------------------------ NSUBS

    def _nsubs_handler(self, subject, reply, headers, payload, publisher) -> None:
        self._spawn(self._nsubs_request, reply, payload)

    async def _nsubs_request(self, reply: bytes | None, body: bytes) -> None:
        """Go's nsubsRequest: the account's client subscriptions matching a subject (and
        queue group), answered only when the server has connections in the account."""
        req = decode_nsubs(body)
        if req is None or not reply:
            return
        account, subject, queue = req
        if account not in self.server.accounts:
            return
        parts = await self.parts.ask({"op": "nsubs", "acc": account, "subject": subject,
                                      "queue": queue})
        parts = [p for p in parts if p]
        if not sum(p["conns"] for p in parts):
            return
        total = sum(p["nsubs"] for p in parts)
        self.server.internal_publish(self.system_account, reply, None, None, b"%d" % total)

    def _nsubs_part(self, request: dict) -> dict:
        from natsx.sublist import is_subset_match, match_literal, subject_is_literal

        account, subject = request["acc"], request["subject"].encode()
        queue = request.get("queue")
        queue = queue.encode() if queue is not None else None
        literal = subject_is_literal(subject)
        conns = nsubs = 0
        for conn in self.server.connections.values():
            if conn.closed or conn.account_name != account or not conn.connect_received:
                continue
            conns += 1
            for sub in conn.core.subs.values():
                if queue is not None and sub.queue != queue:
                    continue
                if literal:
                    if match_literal(subject, sub.subject):
                        nsubs += 1
                elif is_subset_match(sub.subject, subject):
                    nsubs += 1
        return {"conns": conns, "nsubs": nsubs}

    # ------------------------------------------------------------------ KICK, LDM, RELOAD

    def _client_op_handler(self, op: str):
        def handler(subject, reply, headers, payload, publisher) -> None:
            # Go unmarshals {"cid": N} first: a body that is not one is dropped (logged).
            try:
                doc = json.loads(payload)
                cid = doc.get("cid", 0) if isinstance(doc, dict) else None
                if isinstance(cid, bool) or not isinstance(cid, int) or cid < 0:
                    raise ValueError(f"cannot unmarshal {cid!r} into cid")
            except (ValueError, UnicodeDecodeError) as exc:
                log.error("Error unmarshalling kick client request: %s", exc)
                return
            self._spawn(self._client_op, op, cid, reply, payload, headers)
        return handler

    async def _client_op(self, op: str, cid: int, reply: bytes | None, body: bytes,
                         headers) -> None:
        async def run():
            parts = [p for p in await self.parts.ask({"op": op, "cid": cid}) if p]
            for part in parts:
                if part.get("found"):
                    if part.get("error"):
                        raise ApiError(500, part["error"])
                    return None
            raise ApiError(500, "no such client or leafnode id" if op == "kick"
                           else "no such client id")
        await self._plain_request(reply, body, run)

    def _kick_part(self, request: dict) -> dict:
        conn = self.server.connections.get(request.get("cid"))
        if conn is None or conn.closed:
            return {"found": False}
        conn.close(KICKED)
        return {"found": True}

    def _ldm_part(self, request: dict) -> dict:
        s = self.server
        conn = s.connections.get(request.get("cid"))
        if conn is None or conn.closed:
            return {"found": False}
        if conn.protocol < 1 or not conn.first_pong_sent:
            return {"found": True, "error": "client does not support Lame Duck Mode or is "
                                            "not ready to receive the notification"}
        was, s.lame_duck = s.lame_duck, True
        try:
            info = s.info_bytes(conn)
        finally:
            s.lame_duck = was
        conn.queue(info)
        conn.flush()
        return {"found": True}

    def _reload_handler(self, subject, reply, headers, payload, publisher) -> None:
        self._spawn(self._plain_request, reply, payload, self._reload)

    async def _reload(self):
        """Go's reloadConfig: the server's Reload. The supervisor reloads every process
        (SIGHUP); the checks it makes run here first, so a refusal is answered."""
        import os
        import signal

        from natsx.server.reload import ReloadError, diff_options, read_new_options

        s = self.server
        try:
            diff_options(s.options, read_new_options(s.options))
        except ReloadError as exc:
            raise ApiError(500, str(exc)) from None
        if s.peer_table is not None:
            os.kill(os.getppid(), signal.SIGHUP)
        else:
            from natsx.server.reload import reload_worker

            reload_worker(s)
        return None

    async def _plain_request(self, reply: bytes | None, body: bytes, respond) -> None:
        """Go's zReq with bare EventFilterOptions: filters, then ``respond()``; the
        answer has no ``data`` when it returns None."""
        if not reply:
            return
        try:
            _q, filters = decode_options("FILTER", body)
        except ApiError as exc:
            self._publish(self.system_account, reply, {
                "server": self.server_info(),
                "error": {"code": exc.code, "description": exc.description}})
            return
        if self._filtered(filters):
            return
        response = {"server": None}
        try:
            data = await respond()
        except ApiError as exc:
            response["error"] = {"code": exc.code, "description": exc.description}
        else:
            if data is not None:
                response["data"] = data
        response["server"] = self.server_info()
        self._publish(self.system_account, reply, response)

    # ------------------------------------------------------------------ USER.INFO

    def _user_info(self, subject, reply, headers, payload, publisher) -> None:
        # The requester is on this worker (local subscription): describe it.
        if not reply:
            return
        conn = getattr(publisher, "conn", None)
        account = getattr(conn, "account_name", None)
        if conn is None or account is None or not hasattr(conn, "cid"):
            return
        self._publish(account, reply, {"server": self.server_info(), "data": user_info(conn)})

