"""JetStream's bounded queues: a stream's ingest and the API requests, with Go's limits.

Theory of operation
-------------------
Go hands what JetStream receives to queues served by other goroutines, and bounds them:

* each stream's inbound queue (server/stream.go ``mset.msgs``) holds the publishes captured
  for the stream and not yet stored, at most ``max_buffered_msgs`` messages (default
  100,000) and ``max_buffered_size`` bytes (default 128 MiB; a message counts its subject,
  reply, headers and payload). A publish beyond either is dropped: the publisher gets a
  PubAck error 10167 "too many requests" with a ``429 Too Many Requests`` status header,
  and the server warns "Dropping messages due to excessive stream ingest rate", rate
  limited (``queueInbound``);
* the API queues (``jsAPIRoutedReqs``, and ``jsAPIRoutedInfoReqs`` for the info requests)
  hold the ``$JS.API`` requests not yet handled. When a push finds ``request_queue_limit``
  (default 10,000; ``info_queue_limit`` for the info queue, default the former) requests
  pending, every pending request is dropped unanswered, the server warns "<queue> limit
  reached, dropping N requests" and publishes a ``$JS.EVENT.ADVISORY.API.LIMIT_REACHED``
  advisory (``apiDispatch``).

natsx stores a stream's publishes in the read batch that captured them, so its ingest queue
is what was captured and is not yet committed: the open batch of the stream, and, when the
raft process writes the stream, the proposals it has not yet applied and synced.
``IngestQueue`` counts both; ``admit`` first lets go of what the raft process has confirmed
since (proposal indexes are confirmed in order), ``committed`` moves the open batch onto the
proposal that carries it (index 0: committed already, as a local store's commit is).

natsx handles API requests as the read batch that carried them is processed, and their
answers leave with the round's commit (natsx.jetstream.manager), so its API queue is the
requests of the current round: ``ApiQueue`` counts them by queue and is emptied by
``round_done`` when the round's outbox is handed on. A request that brings its queue to
the limit is dropped unanswered and empties the queue, as Go's drain does; the requests
handled before it in the round cannot be taken back, so only that one is reported dropped.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("natsx")

STREAM_DEFAULT_MAX_QUEUE_MSGS = 100_000          # Go streamDefaultMaxQueueMsgs
STREAM_DEFAULT_MAX_QUEUE_BYTES = 128 * 1024 * 1024  # Go streamDefaultMaxQueueBytes
API_DEFAULT_QUEUE_LIMIT = 10_000                 # Go JSDefaultRequestQueueLimit

TOO_MANY_REQUESTS_HDR = b"NATS/1.0 429 Too Many Requests\r\n\r\n"

API_QUEUE = "JetStream API queue"
API_INFO_QUEUE = "JetStream API info queue"
# Go's infopairs (jetstream_api.go): the requests served by the info queue.
INFO_REQUESTS = frozenset((
    ("INFO",), ("STREAM", "INFO"), ("STREAM", "NAMES"), ("STREAM", "LIST"),
    ("CONSUMER", "NAMES"), ("CONSUMER", "LIST"), ("CONSUMER", "INFO"),
))

_RATE_WINDOW = 1.0   # Go startRateLimitLogExpiration: a statement is logged once a second
_rate_logged: dict[str, float] = {}


def rate_limit_warn(text: str, key: str = "") -> None:
    """Go's RateLimitWarnf: the same statement (or, with ``key``, the same format, as
    rateLimitFormatWarnf) at most once a second."""
    now = time.monotonic()
    key = key or text
    last = _rate_logged.get(key)
    if last is not None and now - last < _RATE_WINDOW:
        return
    if len(_rate_logged) > 1000:
        for k in [k for k, t in _rate_logged.items() if now - t >= _RATE_WINDOW]:
            del _rate_logged[k]
    _rate_logged[key] = now
    log.warning("%s", text)


def ingest_limits(settings) -> tuple[int, int]:
    """(messages, bytes) a stream may hold captured and not stored (0: no limit), from the
    ``jetstream`` block as Go reads it: 0 takes the default, a negative value no limit."""
    mlen = getattr(settings, "max_buffered_msgs", 0) or STREAM_DEFAULT_MAX_QUEUE_MSGS
    msz = getattr(settings, "max_buffered_size", 0) or STREAM_DEFAULT_MAX_QUEUE_BYTES
    return max(mlen, 0), max(msz, 0)


class IngestQueue:
    """The messages of one stream captured and not yet committed; see the module docstring."""

    __slots__ = ("max_msgs", "max_bytes", "msgs", "bytes", "batch_msgs", "batch_bytes",
                 "inflight")

    def __init__(self, max_msgs: int, max_bytes: int) -> None:
        self.max_msgs = max_msgs
        self.max_bytes = max_bytes
        self.msgs = self.bytes = 0              # open batch + proposals in flight
        self.batch_msgs = self.batch_bytes = 0  # the open batch
        self.inflight: list = []                # [index, msgs, bytes], oldest first

    def admit(self, size: int, confirmed: int = 0) -> bool:
        """Whether one more message of ``size`` bytes fits (then it is counted);
        ``confirmed``: the last proposal the raft process has applied."""
        inflight = self.inflight
        if inflight and inflight[0][0] <= confirmed:
            self.release(confirmed)
        if (self.max_msgs and self.msgs >= self.max_msgs) or \
                (self.max_bytes and self.bytes + size > self.max_bytes):
            return False
        self.msgs += 1
        self.bytes += size
        self.batch_msgs += 1
        self.batch_bytes += size
        return True

    def committed(self, index: int = 0, confirmed: int = 0) -> None:
        """The open batch was committed as proposal ``index`` (0: durable already)."""
        if not self.batch_msgs:
            return
        if index <= confirmed:
            self.msgs -= self.batch_msgs
            self.bytes -= self.batch_bytes
        elif self.inflight and self.inflight[-1][0] == index:
            self.inflight[-1][1] += self.batch_msgs
            self.inflight[-1][2] += self.batch_bytes
        else:
            self.inflight.append([index, self.batch_msgs, self.batch_bytes])
        self.batch_msgs = self.batch_bytes = 0

    def release(self, confirmed: int) -> None:
        """Lets go of the proposals up to ``confirmed``."""
        inflight = self.inflight
        while inflight and inflight[0][0] <= confirmed:
            _index, msgs, nbytes = inflight.pop(0)
            self.msgs -= msgs
            self.bytes -= nbytes


class ApiQueue:
    """The JetStream API requests of the current round, by queue; see the module docstring."""

    def __init__(self, limit: int = 0, info_limit: int = 0) -> None:
        self.set_limits(limit, info_limit)
        self.pending = {API_QUEUE: 0, API_INFO_QUEUE: 0}

    def set_limits(self, limit: int, info_limit: int) -> None:
        # Go setBaselineOptions: <= 0 takes the default; the info queue defaults to the other.
        self.limit = limit if limit > 0 else API_DEFAULT_QUEUE_LIMIT
        self.info_limit = info_limit if info_limit > 0 else self.limit

    @staticmethod
    def queue_of(tokens: list) -> str:
        """The queue Go puts a request on: ``$JS.API.<tokens...>``."""
        return API_INFO_QUEUE if tuple(tokens[2:4]) in INFO_REQUESTS else API_QUEUE

    def admit(self, tokens: list) -> str:
        """Counts one request: "" when it may be handled, else the name of its queue, which
        reached the limit (the request is dropped, the queue drained)."""
        name = self.queue_of(tokens)
        pending = self.pending[name] + 1
        limit = self.info_limit if name == API_INFO_QUEUE else self.limit
        if pending >= limit:
            # Go: the push that brings the queue to the limit drains it, itself included.
            self.pending[name] = 0
            return name
        self.pending[name] = pending
        return ""

    def round_done(self) -> None:
        """The round's answers are handed on: the queues are empty again."""
        for k in self.pending:
            self.pending[k] = 0
