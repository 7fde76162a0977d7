"""The server-wide JetStream limits across workers: ``max_memory_store``/``max_file_store``.

Theory of operation
-------------------
Go checks three figures per storage type against the server's ``jetstream`` limits: the
bytes its streams store (``js.memUsed``/``js.storeUsed``: a publish past the limit gets
10023), the bytes its streams' ``max_bytes`` reserve (``js.memReserved``: a stream create or
update that does not fit gets 10028/10047) and, on enabling an account, the accounts'
own ``max_memory``/``max_storage`` (sufficientResources, the same errors). With workers each
running a share of the streams (natsx.jetstream.shards), every one of these is a sum over
the workers, so each worker publishes its own figures in its slot of the supervisor's
shared table (natsx.server.mesh.PeerTable, ``JS_FIELDS``) and checks the sum:

* ``Usage`` is the worker's ``used`` map: a change is written to its slot at the end of
  the batch that made it (``Usage.publish``, from JetStream's batch hook: one store per
  figure and batch, not per stored message) or before the worker sums the slots itself,
  and ``exceeded`` sums the slots. The other workers read the sums once per batch anyway;
* a reservation (``reserve``) publishes the raised figure first, fences and sums, and
  takes it back when the sum passes the limit, as ``max_connections`` does: two workers
  racing for the last bytes each see the other's reservation, so the limit is never
  passed (at worst both refuse where Go's lock would let one in). After the stream
  operation ``publish`` writes the worker's real figures, which then hold the bytes;
* a dead worker's slot is zeroed by the supervisor; its next incarnation publishes its
  figures again as it recovers its accounts;
* the atomic batches open in the worker's streams (natsx.jetstream.batching) are counted the
  same way, so ``max_inflight_total`` limits the server's open batches, as Go's does: a
  batch is reserved when it opens (``reserve_batch``) and released when it ends.

Without a shared table (a worker run on its own) the figures are the worker's alone.

The limits themselves are read from the worker's settings at every check, so a reload that
raises them (natsx.server.reload.apply_jetstream, in every worker) holds from the next one.
"""
from __future__ import annotations

from natsx.jetstream.shards import is_home


def _field(kind: str, storage: str) -> str:
    return f"{kind}_{'memory' if storage == 'memory' else 'file'}"


class Usage(dict):
    """Bytes stored by this worker's streams, by storage type, published to the shared
    table once per batch and before every sum (``publish``)."""

    def __init__(self, table=None, index: int = 0) -> None:
        super().__init__(memory=0, file=0)
        self.table = table
        self.index = index
        self._published = (0, 0)    # (memory, file) as the slot holds them
        if table is not None:
            table.set_js(index, "used_memory", 0)
            table.set_js(index, "used_file", 0)

    def publish(self) -> None:
        """Writes the figures to the worker's slot if they changed since the last call
        (they change by plain dict stores: the stores update them per message)."""
        figures = (self["memory"], self["file"])
        if figures != self._published and self.table is not None:
            self._published = figures
            table, index = self.table, self.index
            table.set_js(index, "used_memory", figures[0])
            table.set_js(index, "used_file", figures[1])

    def total(self, storage: str) -> int:
        """Bytes stored for ``storage`` by the whole server."""
        if self.table is None:
            return self[storage]
        self.publish()
        return self.table.js_total(_field("used", storage))


class ServerLimits:
    """The server's JetStream limits checked on the figures of every worker."""

    def __init__(self, js) -> None:
        self.js = js
        server = js.server
        self.table = getattr(server, "peer_table", None)
        self.index = getattr(server, "worker_index", 0)
        self.used = Usage(self.table, self.index)
        self.batches = 0        # atomic batches open in this worker's streams
        if self.table is not None:
            self.table.set_js(self.index, "batches", 0)

    def _max(self, storage: str) -> int:
        st = self.js.settings
        return st.max_memory if storage == "memory" else st.max_store

    def exceeded(self, storage: str) -> bool:
        """Go's js.limitsExceeded: the server stores more than its limit for ``storage``."""
        return self.used.total(storage) > self._max(storage)

    # -- reservations --------------------------------------------------------------------------

    def _own_accounts(self, storage: str) -> int:
        key = "max_memory" if storage == "memory" else "max_storage"
        # An account's limits are held once, by its home (natsx.jetstream.shards).
        return sum(max(getattr(a.limits, key), 0) for a in self.js.accounts.values()
                   if is_home(self.js.server, a.name))

    def publish(self) -> None:
        """Writes this worker's reservations (streams' ``max_bytes``, accounts' limits)."""
        if self.table is None:
            return
        for storage in ("memory", "file"):
            self.table.set_js(self.index, _field("reserved", storage),
                              self.js.reserved(storage))
            self.table.set_js(self.index, _field("account", storage),
                              self._own_accounts(storage))

    def reserve(self, kind: str, storage: str, held: int, add: int) -> bool:
        """Whether ``add`` more bytes of ``kind`` (``reserved``: streams' ``max_bytes``;
        ``account``: accounts' limits) fit under the server's limit, this worker holding
        ``held``; when they do, they stay reserved until the next ``publish``."""
        limit = self._max(storage)
        if self.table is None:
            return not (held > limit or add > limit - held)
        return self.table.reserve_js(self.index, _field(kind, storage), held, add, limit)

    # -- atomic batches ------------------------------------------------------------------------

    def reserve_batch(self, limit: int) -> bool:
        """Whether one more atomic batch may open under the server's ``limit`` of open batches
        (Go's globalInflightBatches, natsx.jetstream.batching), counted over every worker as
        a reservation: publish, fence, sum. On success it holds until ``release_batch``."""
        if self.table is None:
            if self.batches + 1 > limit:
                return False
        elif not self.table.reserve_js(self.index, "batches", self.batches, 1, limit):
            return False
        self.batches += 1
        return True

    def release_batch(self) -> None:
        """An open batch was committed or abandoned."""
        self.batches -= 1
        if self.table is not None:
            self.table.set_js(self.index, "batches", self.batches)

    def total(self, kind: str, storage: str) -> int:
        """The server's figure of ``kind`` (/jsz reserved_memory, reserved_storage)."""
        if self.table is None:
            return self.js.reserved(storage) if kind == "reserved" else self.used[storage]
        return self.table.js_total(_field(kind, storage))
