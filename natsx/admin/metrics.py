"""/metrics: the /varz counters in the Prometheus text exposition format (version 0.0.4).

Theory of operation
-------------------
The Go server has no /metrics; operators run prometheus-nats-exporter, which polls /varz
and publishes each number as ``gnatsd_varz_<field>{server_id="..."}``. Serving the same
names from the server itself lets the exporter's dashboards and alerts work unchanged. The
per-worker share of the same counters is published under ``natsx_worker_<field>`` with a
``worker`` label, in separate families: mixing labelled and unlabelled samples in one
family would make ``sum()`` count every message twice.

The text is rendered from one merged /varz answer, so a scrape costs one round trip to the
workers, and a worker that does not answer shows up as ``natsx_worker_up 0``.
"""
from __future__ import annotations

from natsx import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (field, type, help): the /varz numbers a scraper wants. Monotonic ones are counters.
_VARZ = (
    ("connections", "gauge", "Client connections open now"),
    ("total_connections", "counter", "Client connections accepted since start"),
    ("subscriptions", "gauge", "Subscriptions of the clients connected now"),
    ("in_msgs", "counter", "Messages received from clients"),
    ("out_msgs", "counter", "Messages delivered to clients"),
    ("in_bytes", "counter", "Payload bytes received from clients"),
    ("out_bytes", "counter", "Payload bytes delivered to clients"),
    ("slow_consumers", "counter", "Clients closed as slow consumers"),
    ("stale_connections", "counter", "Clients closed after unanswered pings"),
    ("mem", "gauge", "Resident memory of all the server's processes, in bytes"),
    ("cpu", "gauge", "CPU use of all the server's processes, in percent of one core"),
    ("cores", "gauge", "CPU cores the server may run on"),
    ("routes", "gauge", "Route connections"),
    ("remotes", "gauge", "Configured route remotes"),
    ("leafnodes", "gauge", "Leaf node connections"),
    ("max_connections", "gauge", "Configured maximum of client connections"),
    ("max_payload", "gauge", "Configured maximum message payload, in bytes"),
)
_WORKER = (
    ("connections", "gauge", "Client connections open now on this worker"),
    ("total_connections", "counter", "Client connections this worker accepted"),
    ("subscriptions", "gauge", "Subscriptions of this worker's clients"),
    ("in_msgs", "counter", "Messages this worker received from its clients"),
    ("out_msgs", "counter", "Messages this worker delivered to its clients"),
    ("in_bytes", "counter", "Payload bytes this worker received from its clients"),
    ("out_bytes", "counter", "Payload bytes this worker delivered to its clients"),
    ("slow_consumers", "counter", "This worker's clients closed as slow consumers"),
    ("stale_connections", "counter", "This worker's clients closed as stale"),
    ("mem", "gauge", "Resident memory of this worker, in bytes"),
    ("cpu", "gauge", "CPU use of this worker, in percent of one core"),
)


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def render(varz: dict, start_time: float) -> str:
    """The exposition text for one merged /varz answer."""
    sid = varz["server_id"]
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {_number(value)}")

    family("gnatsd_varz_info", "gauge", "Server identity; the value is always 1",
           [(_labels(server_id=sid, server_name=varz["server_name"],
                     version=varz["version"], natsx_version=__version__), 1)])
    family("gnatsd_varz_start_time_seconds", "gauge", "Start time, seconds since the epoch",
           [(_labels(server_id=sid), round(start_time, 3))])
    for field, kind, text in _VARZ:
        family(f"gnatsd_varz_{field}", kind, text, [(_labels(server_id=sid), varz[field])])
    family("gnatsd_varz_http_req_stats", "counter", "Monitoring HTTP requests by path",
           [(_labels(server_id=sid, path=p), n) for p, n in varz["http_req_stats"].items()])
    workers = varz["worker_stats"]
    family("natsx_worker_up", "gauge", "1 when the worker answered this scrape",
           [(_labels(server_id=sid, worker=w["worker"]), w["answered"]) for w in workers])
    family("natsx_worker_pid", "gauge", "Process id of the worker (0 when it did not answer)",
           [(_labels(server_id=sid, worker=w["worker"]), w["pid"]) for w in workers])
    for field, kind, text in _WORKER:
        family(f"natsx_worker_{field}", kind, text,
               [(_labels(server_id=sid, worker=w["worker"]), w[field])
                for w in workers if w["answered"]])
    return "\n".join(lines) + "\n"
