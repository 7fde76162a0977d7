"""Service latency tracking: Go's ``latency`` on service exports (accounts.go).

Theory of operation
-------------------
A service export may ask for latency samples: ``latency: "results.subject"`` (every
request) or ``latency: {sampling: 50%, subject: ...}``; ``sampling: headers`` samples the
requests whose tracing headers say so (B3, W3C traceparent, Uber). Go allows it only on
Singleton exports. When the service import forwards a sampled request, it notes the time
and who asked; when the first response comes back it publishes a
``io.nats.server.metric.v1.service_latency`` event in the exporting account on the results
subject (Go: sendTrackingLatency). A request without a reply is reported as 400 Bad
Request, one nobody received as 503 Service Unavailable.

This module builds the decisions and the JSON; natsx.server.imports calls it. Durations
are Go's: integers in nanoseconds; times RFC 3339 in UTC.
"""
from __future__ import annotations

import random
import time

LATENCY_TYPE = "io.nats.server.metric.v1.service_latency"
DEFAULT_SAMPLING = 100
ERR_BAD_SAMPLING = "bad sampling percentage, should be 1-100"


def parse_header_block(headers: bytes | None) -> dict[str, str]:
    """The first value of each header of a ``NATS/1.0`` block, names lower-cased."""
    out: dict[str, str] = {}
    if not headers:
        return out
    for line in headers.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name:
            out.setdefault(name.decode("latin-1").strip().lower(),
                           value.decode("latin-1").strip())
    return out


def should_sample(sampling: int, headers: bytes | None) -> bool:
    """Go's shouldSample (without the header echo)."""
    if sampling < 0:
        return False
    if sampling >= 100:
        return True
    if sampling > 0 and random.randrange(100) <= sampling:
        return True
    h = parse_header_block(headers)
    if not h:
        return False
    uber = h.get("uber-trace-id")
    if uber is not None:
        tk = uber.split(":")
        if len(tk) == 4 and 0 < len(tk[3]) <= 2:
            # Go decodes "0" and the flags' last character: its low bit says "sampled".
            try:
                return bool(int(tk[3][-1], 16) & 1)
            except ValueError:
                return False
        return False
    sampled = h.get("x-b3-sampled")
    if sampled == "1":
        return True
    if sampled == "0":
        return False
    if "x-b3-traceid" in h:
        return True
    b3 = h.get("b3")
    if b3:
        tk = b3.split("-")
        return not ((len(tk) > 2 and tk[2] == "0") or (len(tk) == 1 and tk[0] == "0"))
    ctx = h.get("traceparent")
    if ctx:
        tk = ctx.split("-")
        if len(tk) == 4 and len(tk[3]) == 2:
            try:
                return bool(int(tk[3], 16) & 1)
            except ValueError:
                return False
    return False


def requestor_info(account: str, rtt: float) -> dict:
    """Go's getClientInfo(false): the account and the RTT only."""
    info: dict = {"acc": account}
    if rtt:
        info["rtt"] = int(rtt * 1e9)
    return info


def responder_info(conn, server_name: str) -> dict:
    """Go's getClientInfo(true) of a client connection, keys in ClientInfo order."""
    from natsx.server.system import raw_auth_user, rfc3339

    info: dict = {"start": rfc3339(conn.start)}
    if conn.ip:
        info["host"] = conn.ip
    info["id"] = conn.cid
    info["acc"] = conn.account_name
    user = raw_auth_user(conn)
    if user:
        info["user"] = user
    if conn.name:
        info["name"] = conn.name
    if conn.lang:
        info["lang"] = conn.lang
    if conn.version:
        info["ver"] = conn.version
    if conn.rtt:
        info["rtt"] = int(conn.rtt * 1e9)
    info["server"] = server_name
    info["kind"] = "Client"
    info["client_type"] = "nats"
    return info


def result(status: int, *, requestor: dict | None, responder: dict | None,
           start_ns: int, service_ns: int = 0, system_ns: int = 0, total_ns: int = 0,
           error: str = "") -> dict:
    """Go's ServiceLatency event (TypedEvent first), ready for go_json."""
    from natsx.server.system import event_id, rfc3339

    ev: dict = {"type": LATENCY_TYPE, "id": event_id(), "timestamp": rfc3339(time.time()),
                "status": status}
    if error:
        ev["description"] = error
    if requestor is not None:
        ev["requestor"] = requestor
    if responder is not None:
        ev["responder"] = responder
    ev["start"] = rfc3339(start_ns / 1e9)
    ev["service"] = max(service_ns, 0)
    ev["system"] = max(system_ns, 0)
    ev["total"] = total_ns
    return ev


def measured(requestor: dict, responder: dict | None, request_ns: int, now_ns: int) -> dict:
    """The 200 event of a request sent at ``request_ns`` answered at ``now_ns`` (Go:
    sendTrackingLatency)."""
    req_rtt = requestor.get("rtt", 0)
    resp_rtt = (responder or {}).get("rtt", 0)
    service_rtt = now_ns - request_ns
    total = req_rtt + service_rtt
    system = 0
    if resp_rtt > 0:
        system = time.time_ns() - now_ns
        total += system
    return result(200, requestor=requestor, responder=responder,
                  start_ns=request_ns - req_rtt, service_ns=service_rtt - resp_rtt,
                  system_ns=system, total_ns=total)
