"""JetStream's link to the raft process: file stores written through it, answers held for it.

Theory of operation
-------------------
When the supervisor runs a raft process (natsx.raftd), the worker's ``JetStream`` gets a
``RaftLink``. File streams then use ``RaftLmdbStore``: their environment is opened (created)
by the raft process, read here through LMDB read transactions, and every commit of a batch is
a proposal to the stream's RAFT group instead of a local LMDB transaction.

The manager's group commit still commits every dirty stream once per round; what changes is
when the round's outbox (PubAcks, deliveries, API answers) may leave. ``hold`` queues the
outbox with the proposals of that round when there are any, or when an earlier round is still
queued (rounds leave in order: a delivery of a message stored in round 1 may sit in round 2).
The raft client calls ``release`` whenever entries became durable or were refused (after each
read of the channel, in the reader's own task step: no task switch between the raft process's
answer and the PubAck): it routes, as one batch, the outboxes of the rounds at the front whose
proposals are all answered, minus the PubAcks of a stream whose proposal was refused. A worker
therefore never acknowledges a write before the raft process has applied and synced it, and
keeps reading and capturing meanwhile (proposals of the next rounds go out while earlier ones
are synced).
"""
from __future__ import annotations

import logging
from collections import deque

from natsx.raftd.client import RaftClient
from natsx.storage.crypt import prepare_path
from natsx.storage.lmdbstore import DEFAULT_MAP_SIZE
from natsx.storage.raftlmdb import RaftLmdbStore

log = logging.getLogger("natsx")


class RaftLink:
    def __init__(self, js, address) -> None:
        self.js = js
        self.client = RaftClient(address)
        self.rounds: deque = deque()
        self._releasing = False
        self._again = False

    def start(self, nursery) -> None:
        self.client.on_progress = self.release
        nursery.start_soon(self.client.run)

    def open_store(self, path: str, cfg, keys=None) -> RaftLmdbStore:
        """``keys``: the stream's encryption keys (natsx.storage.crypt), set up (or the
        environment converted) before the raft process opens it."""
        codec = prepare_path(path, keys)
        st = self.js.settings
        group = self.client.open(path, DEFAULT_MAP_SIZE,
                                 0 if st.sync_always else max(int(st.sync_interval), 1))
        return RaftLmdbStore(path, cfg, group, codec)

    def attach(self, stream) -> None:
        """Writes of ``stream`` made outside a batch join the round's commit."""
        store = stream.store
        if isinstance(store, RaftLmdbStore):
            store.on_dirty = stream.touch
            if store._has_changes():
                stream.touch()

    def hold(self, committed: list, outbox: list) -> bool:
        """Queues ``outbox`` behind the proposals of ``committed`` streams (and earlier
        rounds); False when it may be routed at once. A stream with ``persist_mode``
        "async" (Go 2.12: flushed asynchronously) does not hold its answers: they leave
        once its proposal is on the way to the raft process, before the log's sync."""
        waits = []
        for stream in committed:
            store = stream.store
            if isinstance(store, RaftLmdbStore) and store.last_proposal > store.group.confirmed \
                    and stream.cfg.get("persist_mode") != "async":
                waits.append((stream, store.group, store.last_proposal))
        if not waits and not self.rounds:
            return False
        self.rounds.append((outbox, waits))
        return True

    def release(self) -> None:
        """Routes the outboxes of the rounds at the front whose proposals are all answered
        (durable, refused, or of a dropped group). Re-entered (a routed answer made the raft
        client dispatch again), it only asks the running call to look once more."""
        if self._releasing:
            self._again = True
            return
        rounds = self.rounds
        self._releasing = True
        try:
            again = True
            while again:
                self._again = False
                out = []
                while rounds:
                    outbox, waits = rounds[0]
                    if any(group.confirmed < index and not group.closed
                           for _stream, group, index in waits):
                        break
                    rounds.popleft()
                    failed = [stream for stream, group, index in waits
                              if group.errors.pop(index, None) is not None]
                    if failed:
                        from natsx.jetstream.manager import _is_pub_ack_for

                        outbox = [m for m in outbox
                                  if not any(_is_pub_ack_for(m, s) for s in failed)]
                    out += outbox
                if out:
                    try:
                        self.js.server.run_batch(self.js.route, out)
                    except Exception:
                        # The raft client's reader (or a stream delete) called us: a failed
                        # delivery must not take the channel, or the worker, down with it.
                        log.exception("JetStream: routing answers after a commit failed")
                again = self._again
        finally:
            self._releasing = False
