"""Putting the two sides of a workload on the same server worker or on different ones.

Theory of operation
-------------------
natsx with ``--workers N`` is N processes behind one port; the kernel hands each new
connection to one of them. A publisher and a subscriber on the same worker exchange
messages inside one process, on different workers through the shared-memory mesh, and
the two cost differently, so a benchmark that lets the kernel decide measures a mix.
``--placement`` takes that choice away:

* ``any``   the kernel decides (and the phase does not say where anything went);
* ``same``  every connection of the phase on one worker;
* ``cross`` the receiving side (subscribers, repliers) on one worker and the sending
  side (publishers, requesters) on others.

A worker hands out client ids ``index + 1 + k * workers`` (natsx.server.worker), so the
``client_id`` of the INFO a connection receives names its worker: ``(cid - 1) % workers``.
The worker count is not on the wire; the caller knows it (``--compare`` started the
server, ``--server-workers`` for a URL). A connection that landed on the wrong worker is
closed and opened again, up to ``max_attempts`` times, and then the phase fails with an
error that says where the attempts landed. The first receiving connection fixes the
"home" worker the others are placed against, so the commonest case (1:1) costs no retry
for the first connection.

The JetStream workloads (js-pub, js-pull, kv) have no receiving connection: what receives
their requests is the stream, run by one worker (natsx.jetstream.shards.stream_owner, a hash
of the account and stream names). For them the stream's worker is the home from the start
(``owner``): ``same`` puts the clients on it, ``cross`` on the other workers, where every
publish and its acknowledgement cross the mesh. The owner is computed for the global
account, so these placements refuse credentials (a user may belong to another account).

With one worker (the Go server, natsx ``--workers 1``) every connection is on the same
process: placement is a no-op, and ``describe`` says so in the output.
"""
from __future__ import annotations

from typing import Callable

from natsx.bench.conn import BenchError, Connection

MODES = ("any", "same", "cross")
RECEIVER, SENDER = "receiver", "sender"


def worker_of(info: dict, workers: int) -> int | None:
    """The worker index a connection's INFO names, None when it cannot tell."""
    cid = info.get("client_id")
    if workers <= 1 or not isinstance(cid, int) or cid < 1:
        return None if workers > 1 else 0
    return (cid - 1) % workers


class Placer:
    """Opens a phase's connections where ``mode`` wants them."""

    def __init__(self, mode: str, workers: int, max_attempts: int | None = None,
                 owner: tuple[str, int] | None = None) -> None:
        if mode not in MODES:
            raise BenchError(f"unknown placement {mode!r}; one of {', '.join(MODES)}")
        self.mode = mode
        self.workers = max(int(workers or 1), 1)
        self.max_attempts = max_attempts or max(32, 16 * self.workers)
        # (what, worker): a receiver that is no connection (a stream), fixing the home.
        self.owner = owner
        self.home: int | None = owner[1] if owner is not None else None
        self.placed: dict[str, set[int]] = {RECEIVER: set(), SENDER: set()}

    @property
    def active(self) -> bool:
        return self.mode != "any" and self.workers > 1

    def open(self, opener: Callable[[], Connection], side: str) -> Connection:
        """A connection from ``opener()`` on a worker that fits ``side``.

        Raises:
            BenchError: no attempt landed where wanted, or the INFO names no client id.
        """
        if not self.active:
            return opener()
        landed: dict[int, int] = {}
        for _ in range(self.max_attempts):
            conn = opener()
            w = worker_of(conn.info, self.workers)
            if w is None:
                conn.close()
                raise BenchError("placement: the server's INFO carries no client_id")
            if self._fits(side, w):
                if self.home is None and (side == RECEIVER or self.mode == "same"):
                    self.home = w
                self.placed[side].add(w)
                return conn
            landed[w] = landed.get(w, 0) + 1
            conn.close()
        where = ", ".join(f"worker {w}: {n}" for w, n in sorted(landed.items()))
        raise BenchError(
            f"placement {self.mode}: no {side} connection landed on "
            f"{self._target_text(side)} in {self.max_attempts} attempts ({where})")

    def _fits(self, side: str, w: int) -> bool:
        if self.home is None:
            # The first receiver (or, for "same", the first connection) fixes the home;
            # with "cross", senders opened before any receiver leave their workers to
            # the senders.
            return not (self.mode == "cross" and side == RECEIVER and w in self.placed[SENDER])
        if self.mode == "same" or side == RECEIVER:
            return w == self.home
        return w != self.home

    def _target_text(self, side: str) -> str:
        if self.home is None:
            return "a worker without a sender"
        if self.mode == "cross" and side == SENDER:
            return f"a worker other than {self.home}"
        return f"worker {self.home}"

    def describe(self) -> str:
        """Where the phase's connections went, for the output and the JSON."""
        if self.mode == "any":
            return "any"
        if self.workers <= 1:
            return f"{self.mode} (no-op: one worker)"
        recv = ",".join(str(w) for w in sorted(self.placed[RECEIVER])) or "-"
        send = ",".join(str(w) for w in sorted(self.placed[SENDER])) or "-"
        if self.owner is not None:
            return f"{self.mode} ({self.owner[0]} on worker {self.home}, clients on worker {send})"
        return f"{self.mode} (receivers on worker {recv}, senders on worker {send})"
