"""A mirror or source fed through a push consumer on its origin, created over the API.

Theory of operation
-------------------
This is how Go feeds every mirror and source; natsx uses it where a feed cannot read the
origin's store: an origin in another account or domain (``external``: the API reached
under ``external.api``, the messages delivered under ``external.deliver``), and a memory
origin that another worker runs (its messages live in that worker's process only).

``ConsumerLink.start`` subscribes the target's account to a deliver subject
(``$JS.M.<id>`` for a mirror, ``$JS.S.<id>`` for a source, or ``<deliver>.M.<id>`` /
``<deliver>.S.<id>``) and sends ``CONSUMER.CREATE`` for an ephemeral push consumer with
Go's sourcing settings: ack none, one delivery, flow control, a one-second idle heartbeat,
an inactivity threshold, starting after what the target already holds. Each delivery's ack
reply (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>``) gives
the origin sequence, the consumer sequence and the lag; the link checks them as Go's
processInboundMirrorMsg/processInboundSourceMsg do (older messages ignored, a gap in the
consumer sequence means something was missed: the consumer is made again from the last
origin sequence taken) and queues what to store. The feed stores the queue in the batch
(``Feed.deliver``), then answers the flow-control requests that came behind it, so the
origin never runs further ahead than the consumer's window. A heartbeat whose
``Nats-Last-Consumer`` differs from the last consumer sequence seen, an error creating the
consumer, or three heartbeat intervals of silence make the link start over (Go's retries).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING

from natsx.jetstream.util import _ALPHANUM, get_header, random_id
from natsx.storage import StoredMsg

if TYPE_CHECKING:
    from natsx.jetstream.sourcing import Feed

log = logging.getLogger("natsx")

NS = 1_000_000_000
HEARTBEAT = 1.0          # Go's sourceHealthHB
INACTIVE = 10.0          # Go's sourceHealthCheckInterval: the consumer's inactive_threshold
RETRY = 2.0              # Go's sourceConsumerRetryThreshold
FLOW = b"flow"           # a queued flow-control answer


def go_hash(text: str, size: int = 8) -> str:
    """Go's getHashSize: the first ``size`` bytes of SHA-256, each as a base-62 digit."""
    return "".join(_ALPHANUM[b % 62] for b in hashlib.sha256(text.encode()).digest()[:size])


def external_label(name: str, api: str) -> str:
    """Go's composeIName for an external origin: ``name:`` and the hash of its API prefix."""
    return f"{name}:{go_hash(api)}"


def ack_reply_info(reply: bytes):
    """Go's ackReplyInfo: (consumer, delivered, sseq, dseq, ts, pending), or None."""
    tokens = reply.split(b".")
    if len(tokens) != 9 and len(tokens) < 11 or tokens[0] != b"$JS" or tokens[1] != b"ACK":
        return None
    off = 4 if len(tokens) >= 11 else 2
    try:
        nums = [int(t) for t in tokens[off + 2:off + 7]]
    except ValueError:
        return None
    return (tokens[off + 1],) + tuple(nums)


class ConsumerLink:
    """The consumer side of one feed; see the module docstring."""

    def __init__(self, feed: "Feed") -> None:
        self.feed = feed
        ext = feed.spec.get("external") or {}
        self.api = (ext.get("api") or "$JS.API").rstrip(".")
        self.deliver_prefix = (ext.get("deliver") or "").rstrip(".")
        self.subs: list = []
        self.cname: bytes | None = None
        self.sseq = 0               # last origin sequence taken
        self.dseq = 0               # last consumer sequence seen
        self.lag = 0
        self.queue: list = []       # StoredMsg or (FLOW, reply), in arrival order
        self.last = 0.0             # monotonic time of the last delivery or heartbeat
        self.timer = None
        self.asked = -RETRY         # monotonic time of the last CONSUMER.CREATE
        self.error: dict | None = None
        self.closed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def _js(self):
        return self.feed.target.js

    @property
    def _account(self):
        return self.feed.target.account.name

    def start(self, start_seq: int, start_time: str | None) -> None:
        """Subscribe and ask the origin for a consumer from ``start_seq`` (0: from its
        first message, or from ``start_time``)."""
        self._cancel()
        if self.closed:
            return
        if not self._js.ready:
            self._js.deferred.append(lambda: self.start(start_seq, start_time))
            return
        feed = self.feed
        server = self._js.server
        uid = random_id(8)
        kind = "M" if feed.mirror else "S"
        if self.deliver_prefix:
            deliver = f"{self.deliver_prefix}.{kind}.{uid}"
        else:
            deliver = f"$JS.{kind}.{uid}"
        reply = f"$JSC.R.{uid}"
        self.subs = [server.internal_subscribe(self._account, deliver.encode(), self._on_msg),
                     server.internal_subscribe(self._account, reply.encode(), self._on_created)]
        self.cname = None
        self.sseq = max(start_seq - 1, 0)
        self.dseq = 0
        cfg = {"deliver_subject": deliver, "ack_policy": "none", "ack_wait": 22 * 3600 * NS,
               "max_deliver": 1, "idle_heartbeat": int(HEARTBEAT * NS), "flow_control": True,
               "direct": True, "inactive_threshold": int(INACTIVE * NS)}
        if start_seq:
            cfg["deliver_policy"], cfg["opt_start_seq"] = "by_start_sequence", start_seq
        elif start_time:
            cfg["deliver_policy"], cfg["opt_start_time"] = "by_start_time", start_time
        else:
            cfg["deliver_policy"] = "all"
        filters = [t.get("src") or ">" for t in feed.spec.get("subject_transforms") or []]
        if feed.spec.get("filter_subject"):
            cfg["filter_subject"] = feed.spec["filter_subject"]
        elif len(filters) == 1:
            cfg["filter_subject"] = filters[0]
        elif filters:
            cfg["filter_subjects"] = filters
        subject = f"{self.api}.CONSUMER.CREATE.{feed.origin}"
        body = json.dumps({"stream_name": feed.origin, "config": cfg}).encode()
        self.last = self.asked = time.monotonic()
        self._js.send(self._account, subject.encode(), reply.encode(), body)
        self._arm(RETRY)    # no answer: ask again (Go waits srcConsumerWaitTime, over a network)

    def close(self) -> None:
        self.closed = True
        self._cancel()
        self.queue = []

    def _cancel(self) -> None:
        server = self._js.server
        for sub in self.subs:
            server.internal_unsubscribe(self._account, sub)
        self.subs = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _arm(self, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self._js.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed or self.feed.target.closed:
            return
        if self.cname is None or time.monotonic() - self.last > 3 * HEARTBEAT:
            self.retry()
        else:
            self._arm(HEARTBEAT)

    def retry(self, delay: float = 0.0) -> None:
        """Start over after the last origin sequence taken (Go's retry*Consumer)."""
        self._cancel()
        if self.closed:
            return
        # At most one request per RETRY seconds (Go's sourceConsumerRetryThreshold).
        delay = max(delay, self.asked + RETRY - time.monotonic())
        if delay > 0:
            self.timer = self._js.call_later(delay, self.retry)
            return
        self.feed.restart_link(self.sseq + 1 if self.sseq else 0)

    # ------------------------------------------------------------------ inbound

    def _on_created(self, subject, reply, hdr, payload, publisher) -> None:
        try:
            resp = json.loads(payload)
        except ValueError:
            resp = {"error": {"code": 500, "err_code": 10025, "description": "invalid JSON"}}
        if self.closed:
            return
        if resp.get("error") or not resp.get("name"):
            self.error = resp.get("error") or {"code": 500, "description": "no consumer"}
            log.warning("JetStream: %s could not create its consumer on %r: %s",
                        self.feed.name, self.feed.origin, self.error.get("description"))
            self.retry(RETRY)
            return
        self.error = None
        self.cname = resp["name"].encode()
        self.last = time.monotonic()
        self._arm(HEARTBEAT)

    def _on_msg(self, subject, reply, hdr, payload, publisher) -> None:
        if self.closed:
            return
        self.last = time.monotonic()
        if hdr and hdr.startswith(b"NATS/1.0 100"):
            if reply:                           # a flow-control request
                self.queue.append((FLOW, reply))
                self.feed.signal()
                return
            last = get_header(hdr, b"Nats-Last-Consumer")
            if last and last.isdigit() and int(last) and int(last) != self.dseq:
                self.retry()                    # something was missed
                return
            stalled = get_header(hdr, b"Nats-Consumer-Stalled")
            if stalled:
                self.queue.append((FLOW, stalled))
                self.feed.signal()
            return
        info = ack_reply_info(reply or b"")
        if info is None:
            return
        cname, dc, sseq, dseq, ts, pending = info
        if self.cname is not None and cname != self.cname:
            return                              # from a consumer given up on
        if dc > 1:
            return
        if sseq <= self.sseq:
            if dseq == self.dseq + 1:
                self.dseq += 1
            return
        # Go's sequence checks: the first delivery of this consumer sets the pace; then a
        # gap in the consumer sequence means a lost delivery (start over), while a mirror
        # takes a gap in the origin sequence alone (messages deleted there) as skipped.
        if not (self.dseq == 0 or dseq == self.dseq + 1 or
                (self.feed.mirror and sseq == self.sseq + 1)):
            self.retry()
            return
        self.dseq = dseq
        self.sseq = sseq
        self.lag = pending - 1 if pending else 0
        self.queue.append(StoredMsg(subject=subject.decode(), headers=hdr or b"",
                                    payload=payload, seq=sseq, ts=ts))
        self.feed.signal()

    def hold(self, seq: int) -> None:
        """The target refused origin message ``seq``: drop this consumer and make a new one
        from ``seq`` in RETRY seconds."""
        self.queue = []
        self.sseq = max(seq - 1, 0)
        self.retry(RETRY)

    def take(self) -> list:
        queue, self.queue = self.queue, []
        return queue

    def answer(self, reply: bytes) -> None:
        self._js.send(self._account, reply, None, b"")
