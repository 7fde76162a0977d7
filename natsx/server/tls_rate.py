"""``connection_rate_limit``: how many TLS handshakes the server starts per second.

Theory of operation
-------------------
Go (server/rate_counter.go) counts the client connections that are about to start a TLS
handshake in a one-second window; one over ``connection_rate_limit`` gets
``-ERR 'Connection throttling is active. Please try again later.'`` in the clear and is
closed as "Maximum Connections Exceeded", before any TLS byte is exchanged. Every second a
ticker logs ``Rejected <n> connections due to TLS rate limiting`` (a warning) for the
rejections since the last tick. Nothing of it shows in varz. The limit is fixed when the
server starts: a reload does not change it (Go builds the counter in NewServer only).

The budget is shared, not split: the limit holds for the whole server, as in Go, however
the kernel spreads new connections over the workers. With one worker (or none of the
shared table, as in tests) :class:`RateCounter` is Go's counter exactly: a window opens at
the first handshake after the previous one ended. With several workers the window is the
current second of CLOCK_MONOTONIC (the same clock in every process) and each worker keeps,
in its slot of the supervisor's shared table (natsx.server.mesh.PeerTable), one word:
``second << 24 | handshakes it started in that second``. A worker publishes its count plus
one, fences, and sums the words of the current second; over the limit it takes the
handshake back and refuses. Two workers racing for the last handshake of a second each
see the other's reservation, so the total never passes the limit; at worst both refuse,
where Go's mutex would have let one in. The rejection counts and their log lines are per
worker: with several workers a busy second can give one line per worker, whose counts add
up to Go's single line.

All of this runs once per new TLS connection, never per message.
"""
from __future__ import annotations

import logging
import time

import trio

from natsx.server.tls import THROTTLED_ERR

__all__ = ["RateCounter", "HandshakeRate", "THROTTLED_ERR", "LOG_INTERVAL"]

log = logging.getLogger("natsx.server")

LOG_INTERVAL = 1.0
_COUNT_BITS = 24
_COUNT_MASK = (1 << _COUNT_BITS) - 1


class _Blocked:
    """The rejections a limiter counts, taken by the once-a-second log line."""

    blocked = 0

    def count_blocked(self) -> int:
        """The rejections since the last call."""
        blocked, self.blocked = self.blocked, 0
        return blocked


class RateCounter(_Blocked):
    """Go's rateCounter: at most ``limit`` allowed per window of ``interval`` seconds."""

    def __init__(self, limit: int, interval: float = 1.0) -> None:
        self.limit = limit
        self.interval = interval
        self.count = 0
        self.end = float("-inf")
        self.blocked = 0

    def allow(self, now: float) -> bool:
        if now > self.end:
            self.count = 0
            self.end = now + self.interval
        else:
            self.count += 1
        ok = self.count < self.limit
        if not ok:
            self.blocked += 1
        return ok


def shared_allow(table, index: int, limit: int, now: float) -> bool:
    """One handshake for worker ``index`` against the server-wide ``limit`` in the current
    second, through ``table`` (``tls_rate``/``set_tls_rate`` per worker)."""
    from natsx.server.mesh import _fence

    second = int(now)
    word = table.tls_rate(index)
    own = word & _COUNT_MASK if word >> _COUNT_BITS == second else 0
    if own >= _COUNT_MASK:
        return False
    table.set_tls_rate(index, (second << _COUNT_BITS) | (own + 1))
    _fence()
    total = 0
    for i in range(table.workers):
        w = table.tls_rate(i)
        if w >> _COUNT_BITS == second:
            total += w & _COUNT_MASK
    if total > limit:
        table.set_tls_rate(index, (second << _COUNT_BITS) | own)
        return False
    return True


class HandshakeRate(_Blocked):
    """A worker's side of ``connection_rate_limit``: shared with the other workers when
    the server has its table, Go's counter otherwise."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.local = RateCounter(limit)
        self.blocked = 0

    def allow(self, server, now: float | None = None) -> bool:
        """Whether ``server`` (a worker) may start one more TLS handshake now."""
        table = getattr(server, "peer_table", None)
        if now is None:
            now = time.monotonic()
        if table is None or table.workers <= 1:
            ok = self.local.allow(now)
        else:
            ok = shared_allow(table, server.worker_index, self.limit, now)
        if not ok:
            self.blocked += 1
        return ok

    async def log_loop(self) -> None:
        """Go's logRejectedTLSConns: one warning a second while connections are refused."""
        while True:
            await trio.sleep(LOG_INTERVAL)
            blocked = self.count_blocked()
            if blocked:
                log.warning("Rejected %d connections due to TLS rate limiting", blocked)

    @classmethod
    def for_options(cls, options) -> HandshakeRate | None:
        tc = options.tls_config
        limit = getattr(tc, "rate_limit", 0) if tc is not None else 0
        return cls(limit) if limit > 0 else None
