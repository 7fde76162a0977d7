"""Account connection limits held for the whole server, across its workers.

Theory of operation
-------------------
An account JWT's ``max_connections`` (``limits.conn``) bounds the account's clients on
the whole server. Each worker only sees its own clients, so, as Go servers do between
themselves (events.go: ``$SYS.ACCOUNT.<acc>.SERVER.CONNS`` updates, handled by
accounts.go ``updateRemoteServer``), every worker tells its peers how many connections it
holds in each limited account, and enforces the limit on the sum:

* CONNECT: a client is refused with Go's ``maximum account active connections exceeded``
  when the account's local plus remote connections already reach the limit
  (``MaxTotalConnectionsReached``).
* An update from a peer (or a new JWT lowering the limit): when the sum is over the
  limit, connections are closed. Go closes the newest of its own clients on every server
  that sees the excess, so several servers may close more than needed ("clients will
  reconnect if we over compensate"). natsx is one server, so it does better: an update
  also carries the accept times of the worker's oldest connections in the account, and
  every worker keeps exactly the connections whose rank in the server-wide order
  ``(start, worker, cid)`` is below the limit. All workers rank the same way, so the
  server ends with exactly ``limit`` connections, and the ones closed are the newest.

The updates travel on the mesh in the hidden workers' account (natsx.server.system,
``WORKERS_ACCOUNT``), subject ``conns``, as JSON ``{"w": worker, "acc": name, "n": count,
"t": claims id, "k": [[start, cid], ...]}``: the worker's ``n`` connections, of which the
``k`` oldest (at most ``limit``, capped at ``KEYS_CAP``) are listed, under the account JWT
``t``. Only reports under the claims in force close connections: a worker that applies a
new JWT first closes on its own count alone, then on each peer's report under that JWT. A worker sends one when a
connection of a limited account opens or closes, when the account's claims change, and
to a peer that (re)starts (its ``conns`` interest appears on the mesh). A dead peer's
counts stop counting as soon as the mesh marks it dead. ``ConnCounts`` is the sans-IO
bookkeeping; ``AccountConnLimits`` wires it to the worker.
"""
from __future__ import annotations

import bisect
import json
import logging

log = logging.getLogger("natsx")

SUBJECT = b"conns"
#: At most this many connection keys per update; past it, ranks are estimated as Go
#: does (the unlisted remote connections count as older than ours).
KEYS_CAP = 1024


class ConnCounts:
    """The other workers' connection counts (and oldest keys) per account."""

    def __init__(self, index: int) -> None:
        self.index = index
        # account -> worker -> (count, sorted keys (start, worker, cid), claims tag)
        self.remote: dict[str, dict[int, tuple[int, list, str]]] = {}

    def update(self, account: str, worker: int, count: int, keys, tag: str = "") -> None:
        """Worker ``worker`` holds ``count`` connections in ``account``, the oldest
        ``keys`` [(start, cid)], under the claims ``tag`` (the account JWT's id)."""
        if worker == self.index:
            return
        ordered = sorted((float(s), worker, int(c)) for s, c in keys)
        if count <= 0:
            by_worker = self.remote.get(account)
            if by_worker is not None:
                by_worker.pop(worker, None)
                if not by_worker:
                    del self.remote[account]
            return
        self.remote.setdefault(account, {})[worker] = (count, ordered, tag)

    def forget_worker(self, worker: int) -> None:
        for account in list(self.remote):
            self.remote[account].pop(worker, None)
            if not self.remote[account]:
                del self.remote[account]

    def remote_count(self, account: str, alive=None) -> int:
        by_worker = self.remote.get(account)
        if not by_worker:
            return 0
        return sum(e[0] for w, e in by_worker.items() if alive is None or w in alive)

    def excess(self, account: str, limit: int, local: list, alive=None,
               tag: str | None = None) -> list:
        """The local connections to close: ``local`` is [(start, cid, conn)], ``limit``
        the account's (-1: none). A connection stays when fewer than ``limit``
        connections server-wide come before it in (start, worker, cid) order. With
        ``tag``, only what peers reported under the same claims counts: a report from
        before a limit existed may be stale, and closing is not undone."""
        if limit < 0:
            return []
        others = [(n, keys) for w, (n, keys, t) in self.remote.get(account, {}).items()
                  if (alive is None or w in alive) and (tag is None or t == tag)]
        if len(local) + sum(n for n, _k in others) <= limit:
            return []
        mine = sorted(((s, self.index, cid), conn) for s, cid, conn in local)
        out = []
        for rank_local, (key, conn) in enumerate(mine):
            rank = rank_local
            for n, keys in others:
                before = bisect.bisect_left(keys, key)
                if before == len(keys) and n > len(keys):
                    before = n          # unlisted connections: counted as older (Go)
                rank += before
            if rank >= limit:
                out.append(conn)
        return out


def update_payload(worker: int, account: str, conns: list, limit: int, tag: str = "") -> bytes:
    """The ``conns`` message for this worker's ``conns`` [(start, cid, conn)]."""
    cap = KEYS_CAP if limit < 0 else min(limit, KEYS_CAP)
    oldest = sorted((s, cid) for s, cid, _c in conns)[:cap]
    return json.dumps({"w": worker, "acc": account, "n": len(conns), "t": tag,
                       "k": [[s, cid] for s, cid in oldest]},
                      separators=(",", ":")).encode()


class AccountConnLimits:
    """One worker's part: sends its counts, applies its peers', closes the excess."""

    def __init__(self, server, operator) -> None:
        self.server = server
        self.operator = operator
        self.counts = ConnCounts(server.worker_index)

    def start(self) -> None:
        from natsx.server.system import WORKERS_ACCOUNT

        s = self.server
        if s.worker_count <= 1:
            return
        s.internal_subscribe(WORKERS_ACCOUNT, SUBJECT, self._on_update)
        s.sub_hooks.append(self._on_sub)

    # ------------------------------------------------------------------ queries

    def _alive(self) -> set | None:
        mesh = self.server.mesh
        if mesh is None:
            return None
        return {j for j, link in mesh.links.items() if link.alive}

    def remote_count(self, account: str) -> int:
        return self.counts.remote_count(account, self._alive())

    @staticmethod
    def _local(jacc) -> list:
        return [(c.start, c.cid, c) for c in jacc.conns if not c.closed]

    # ------------------------------------------------------------------ sending

    def changed(self, jacc, force: bool = False) -> None:
        """A connection of ``jacc`` opened or closed (``force``: its claims changed)."""
        s = self.server
        if s.worker_count <= 1 or s.mesh is None:
            return
        limit = jacc.claims.limits.conn if jacc.claims is not None else -1
        if limit < 0 and not force:
            return
        from natsx.server.system import WORKERS_ACCOUNT

        tag = jacc.claims.id if jacc.claims is not None else ""
        s.internal_publish(WORKERS_ACCOUNT, SUBJECT, None, None,
                           update_payload(s.worker_index, jacc.name, self._local(jacc), limit,
                                          tag))

    def _resend_all(self) -> None:
        for jacc in list(self.operator.accounts.values()):
            if jacc.claims is not None and jacc.claims.limits.conn >= 0:
                self.changed(jacc)

    # ------------------------------------------------------------------ receiving

    def _on_sub(self, account: bytes, sub) -> None:
        from natsx.server.system import WORKERS_ACCOUNT

        core = sub.client
        if account != WORKERS_ACCOUNT or sub.subject != SUBJECT or not core.peer:
            return
        # A (re)started peer: what we knew of it is gone; tell it what we hold.
        self.counts.forget_worker(-core.cid - 1)
        self._resend_all()

    def _on_update(self, subject, reply, headers, payload, publisher) -> None:
        try:
            doc = json.loads(payload)
            worker, account, count = int(doc["w"]), str(doc["acc"]), int(doc["n"])
            keys = [(float(s), int(c)) for s, c in doc.get("k") or ()]
            tag = str(doc.get("t") or "")
        except (ValueError, KeyError, TypeError):
            return
        if worker == self.server.worker_index:
            return
        self.counts.update(account, worker, count, keys, tag)
        jacc = self.operator.accounts.get(account)
        if jacc is not None and jacc.claims is not None:
            self.enforce(jacc)

    def enforce(self, jacc) -> int:
        """Closes this worker's share of the account's excess; how many it closed."""
        from natsx.server.operator import ACCOUNT_CONNS_ERR, MAX_ACCOUNT_CONNECTIONS

        limit = jacc.claims.limits.conn
        over = self.counts.excess(jacc.name, limit, self._local(jacc), self._alive(),
                                  tag=jacc.claims.id)
        for conn in over:
            log.error("%s:%d - cid:%d - %s", conn.ip, conn.port, conn.cid, ACCOUNT_CONNS_ERR)
            conn.close(MAX_ACCOUNT_CONNECTIONS, ACCOUNT_CONNS_ERR)
        if over and not self.server._in_batch:
            self.server.after_batch()     # flush the -ERRs (a handler's batch does it)
        return len(over)
