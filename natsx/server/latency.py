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
Request, one nobody received as 503 Service Unavailable, one whose requestor stopped
listening on its reply (unsubscribed, disconnected) before the answer as 408 Request
Timeout, one not answered within the export's ``response_threshold`` as 504 Service
Timeout.

The requestor is described by its account and RTT only, unless the import says ``share:
true``: then it gets the same description as the responder (Go: getClientInfo(share)).
When tracing headers decided the sampling, the ones that did are in the event's ``header``
(Go: shouldSample's header, as an http.Header: canonical names, lists of values).

This module builds the decisions and the JSON; natsx.server.imports calls it. Durations
are Go's: integers in nanoseconds; times RFC 3339 in UTC.
"""
from __future__ import annotations

import random
import time

LATENCY_TYPE = "io.nats.server.metric.v1.service_latency"
DEFAULT_SAMPLING = 100
ERR_BAD_SAMPLING = "bad sampling percentage, should be 1-100"


class Track:
    """One sampled request: who asked (``requestor``, Go's getClientInfo(share)), when
    (``start_ns``, wall clock), where the event goes (``results``) and the tracing headers
    that decided the sampling (``header``, Go's trackingHdr; None when the percentage did)."""

    __slots__ = ("requestor", "start_ns", "results", "header")

    def __init__(self, requestor: dict, start_ns: int, results: bytes,
                 header: dict | None = None) -> None:
        self.requestor = requestor
        self.start_ns = start_ns
        self.results = results
        self.header = header


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def canonical_key(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: ``x-b3-traceid`` is ``X-B3-Traceid``; a name
    with a character outside the HTTP token set is left as it is."""
    if not name or any(c not in _TOKEN_CHARS for c in name):
        return name
    out = []
    upper = True
    for c in name:
        out.append(c.upper() if upper else c.lower())
        upper = c == "-"
    return "".join(out)


def parse_headers(headers: bytes | None) -> dict[str, list[str]]:
    """A ``NATS/1.0`` block as Go's http.Header: canonical names, every value in order."""
    out: dict[str, list[str]] = {}
    if not headers:
        return out
    for line in headers.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name:
            key = canonical_key(name.decode("latin-1").strip())
            out.setdefault(key, []).append(value.decode("latin-1").strip())
    return out


def parse_header_block(headers: bytes | None) -> dict[str, str]:
    """The first value of each header of a ``NATS/1.0`` block, names lower-cased."""
    return {k.lower(): v[0] for k, v in parse_headers(headers).items()}


_UBER, _CTX, _CTX_STATE, _B3 = "Uber-Trace-Id", "Traceparent", "Tracestate", "B3"
_B3_SAMPLED, _B3_TRACE = "X-B3-Sampled", "X-B3-Traceid"
_B3_KEPT = (_B3_SAMPLED, _B3_TRACE, "X-B3-Parentspanid", "X-B3-Spanid")
_UBER_CTX_PREFIX = "Uberctx-"


def sample(sampling: int, headers: bytes | None) -> tuple[bool, dict | None]:
    """Go's shouldSample: whether to measure this request, and the tracing headers that
    decided it (kept in the event's ``header``), None when the percentage decided."""
    if sampling < 0:
        return False, None
    if sampling >= 100:
        return True, None
    if sampling > 0 and random.randrange(100) <= sampling:
        return True, None
    h = parse_headers(headers)
    if not h:
        return False, None
    uber = h.get(_UBER)
    if uber:
        tk = uber[0].split(":")
        if len(tk) == 4 and 0 < len(tk[3]) <= 2:
            # Go hex-decodes "0" and the flags' last character: its low bit says "sampled".
            try:
                sampled = bool(int(tk[3][-1], 16) & 1)
            except ValueError:
                sampled = False
            if sampled:
                kept = {_UBER: uber}
                kept.update((k, v) for k, v in h.items() if k.startswith(_UBER_CTX_PREFIX))
                return True, kept
        return False, None
    sampled = h.get(_B3_SAMPLED)
    if sampled and sampled[0] == "1":
        return True, {k: h[k] for k in _B3_KEPT if k in h}
    if sampled and sampled[0] == "0":
        return False, None
    if _B3_TRACE in h:
        return True, {k: h[k] for k in _B3_KEPT if k in h}
    b3 = h.get(_B3)
    if b3:
        tk = b3[0].split("-")
        if (len(tk) > 2 and tk[2] == "0") or (len(tk) == 1 and tk[0] == "0"):
            return False, None
        return True, {_B3: b3}
    ctx = h.get(_CTX)
    if ctx:
        tk = ctx[0].split("-")
        if len(tk) == 4 and len(tk[3].encode()) == 2:
            try:
                flags = int(tk[3], 16)
            except ValueError:
                flags = 0
            if flags & 1:
                kept = {_CTX: ctx}
                if _CTX_STATE in h:
                    kept[_CTX_STATE] = h[_CTX_STATE]
                return True, kept
        return False, None
    return False, None


def should_sample(sampling: int, headers: bytes | None) -> bool:
    """Whether ``sample`` measures this request."""
    return sample(sampling, headers)[0]


def requestor_info(account: str, rtt: float) -> dict:
    """Go's getClientInfo(false): the account and the RTT only."""
    info: dict = {"acc": account}
    if rtt:
        info["rtt"] = int(rtt * 1e9)
    return info


def client_detail(conn, server_name: str) -> dict:
    """Go's getClientInfo(true) of a client connection: the responder always, the
    requestor when its import ``share``s it."""
    from natsx.server.system import client_info

    return client_info(conn, rtt=True, server=server_name, jwt=True)


responder_info = client_detail


def result(status: int, *, requestor: dict | None, responder: dict | None,
           start_ns: int, service_ns: int = 0, system_ns: int = 0, total_ns: int = 0,
           error: str = "", header: dict | None = None) -> dict:
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
    if header:
        ev["header"] = header
    ev["start"] = rfc3339(start_ns / 1e9)
    ev["service"] = max(service_ns, 0)
    ev["system"] = max(system_ns, 0)
    ev["total"] = total_ns
    return ev


def measured(requestor: dict, responder: dict | None, request_ns: int, now_ns: int,
             header: dict | None = None) -> dict:
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
                  system_ns=system, total_ns=total, header=header)
