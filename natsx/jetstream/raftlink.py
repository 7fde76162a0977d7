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
The sender task awaits each round's proposals in turn and routes the outbox as a batch of
its own, minus the PubAcks of a stream whose proposal was refused. A worker therefore never
acknowledges a write before the raft process has applied and synced it, and keeps reading and
capturing meanwhile (proposals of the next rounds go out while earlier ones are synced).
"""
from __future__ import annotations

import logging
from collections import deque

import trio

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
        self._wake = trio.Event()

    def start(self, nursery) -> None:
        nursery.start_soon(self.client.run)
        nursery.start_soon(self._sender)

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
        rounds); False when it may be routed at once."""
        waits = []
        for stream in committed:
            store = stream.store
            if isinstance(store, RaftLmdbStore) and store.last_proposal > store.group.confirmed:
                waits.append((stream, store.group, store.last_proposal))
        if not waits and not self.rounds:
            return False
        self.rounds.append((outbox, waits))
        self._wake.set()
        return True

    async def _sender(self) -> None:
        rounds = self.rounds
        while True:
            if not rounds:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            outbox, waits = rounds[0]
            failed = []
            for stream, group, index in waits:
                if not await self.client.wait(group, index):
                    failed.append(stream)
            rounds.popleft()
            if failed:
                from natsx.jetstream.manager import _is_pub_ack_for

                outbox = [m for m in outbox if not any(_is_pub_ack_for(m, s) for s in failed)]
            if outbox:
                self.js.server.run_batch(self.js.route, outbox)
