"""JetStream in a worker: accounts, their streams and consumers on disk, timers, group commit.

Theory of operation
-------------------
``JetStream`` is created by every worker when the server runs with ``-js``; each has every
account with JetStream and runs the streams it owns (natsx.jetstream.shards: a stable hash
of the account and stream names), the account's home vetting creates and answering the
account-wide requests. It owns

* the store directory, laid out as Go's: ``<store_dir>/jetstream/<account>/streams/<name>/``
  holding ``meta.inf`` (the stream's config and creation time, JSON), ``msgs/`` (the LMDB
  environment of a file stream) and ``obs/<consumer>/meta.inf`` (each consumer's config;
  none for ``mem_storage`` consumers, such as ordered consumers, which do not outlive the
  process, as in Go).
  Memory streams keep their config there too and come back empty, as in Go. Meta files are
  written to a temporary name, fsynced and renamed, so a crash leaves the old or the new one;
  with ``jetstream { key }`` they are sealed, and the stream environments encrypted
  (natsx.storage.crypt); a stream whose keys cannot be recovered is left out with Go's
  "Error decrypting our stream metafile" warning;
* one ``Account`` per account with JetStream (its streams, API counters and limits), which
  recovers every stream and consumer on start. As in Go's enableJetStreamAccounts, with no
  accounts configured the global account gets JetStream; otherwise the accounts whose
  config enables it do (``enable_account``, also the entry point for accounts created at
  run time, such as JWT accounts) and every other account answers the API with error 10039
  (``disable_account``). With a ``domain``, ``$JS.<domain>.API.>`` reaches the same API;
* the server-wide settings (natsx.jetstream.settings): the memory and file limits checked
  on stream create (reservations by ``max_bytes``) and on every publish (``used``, error
  10023) against the sum over every worker (natsx.jetstream.serverlimits), the server
  limits on consumers, the sync policy;
* advisories and metrics (natsx.jetstream.events) and snapshots (natsx.jetstream.snapshot);
* the batch machinery. Every internal handler (stream capture, API, acks) runs after a read
  batch; what it wants to send goes to ``outbox`` and the streams it wrote to are in
  ``dirty``. ``flush`` (a worker batch hook) first lets signalled consumers deliver. When
  nothing was written it routes the outbox at once; otherwise it wakes the committer task,
  which trio runs after every reader that was ready in the same scheduling round: it
  commits each dirty stream's transaction — one fsync per stream for everything that
  arrived on every connection meanwhile (group commit) — and only then routes the outbox,
  in order, so no PubAck, delivery or API answer leaves before what it reports is on disk.
  Under the supervisor a raft process is the writer of file streams: a stream's commit is
  then a proposal to it, and the round's outbox waits, in order, until the raft process has
  applied and synced it (natsx.jetstream.raftlink) while the worker goes on reading;
* the clients of the other workers: their publishes, acks and pull requests reach this
  worker's subscriptions through the mesh, and their API requests for the streams this
  worker runs (or the accounts it is home of) are relayed to it with the client's details
  (natsx.jetstream.relay);
* a timer wheel (``call_later``/``call_at``) served by one trio task; each expiry runs as a
  batch of its own (``Server.run_batch``), so its output is committed and flushed the same way.
"""
from __future__ import annotations

import heapq
import json
import logging
import math
import os
import shutil
import time
from itertools import count

import trio

from natsx.jetstream import api, versioning
from natsx.jetstream.consumer import (DELETE_WAIT_DEFAULT, Consumer, filters_of,
                                      new_consumer_name, set_defaults)
from natsx.jetstream.consumer import check_config as check_consumer_config
from natsx.jetstream.consumer import check_update as check_consumer_update
from natsx.jetstream.consumer import ordered as ordered_consumer
from natsx.jetstream.errors import ApiError, error
from natsx.jetstream.events import Events
from natsx.jetstream.queues import ApiQueue, rate_limit_warn
from natsx.jetstream.serverlimits import ServerLimits
from natsx.jetstream.settings import Settings
from natsx.jetstream.shards import home, is_home, runs_stream, sharded
from natsx.jetstream.stream import Stream, store_config
from natsx.jetstream.util import subject_matches, subjects_collide
from natsx.server.runq import tasks_runnable
from natsx.storage import LmdbStore, MemStore
from natsx.storage.crypt import EncryptionError, cipher_name, open_file, seal_file

log = logging.getLogger("natsx")


# ------------------------------------------------------------------------------------- timers

class Timer:
    __slots__ = ("deadline", "fn", "cancelled")

    def __init__(self, deadline: float, fn) -> None:
        self.deadline = deadline
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Deadlines on ``time.monotonic()``, fired by one trio task as worker batches."""

    def __init__(self, server) -> None:
        self.server = server
        self._heap: list = []
        self._seq = count()
        self._wake = trio.Event()

    def call_at(self, deadline: float, fn) -> Timer:
        t = Timer(deadline, fn)
        heapq.heappush(self._heap, (deadline, next(self._seq), t))
        if self._heap[0][2] is t:
            self._wake.set()
        return t

    def call_later(self, delay: float, fn) -> Timer:
        return self.call_at(time.monotonic() + max(delay, 0.0), fn)

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = time.monotonic()
            due = []
            while heap and heap[0][0] <= now:
                t = heapq.heappop(heap)[2]
                if not t.cancelled:
                    due.append(t)
            if due:
                self.server.run_batch(self._fire, due)
                await trio.lowlevel.checkpoint()
                continue
            self._wake = trio.Event()
            timeout = heap[0][0] - now if heap else math.inf
            with trio.move_on_after(timeout):
                await self._wake.wait()

    @staticmethod
    def _fire(due) -> None:
        for t in due:
            if t.cancelled:
                continue
            try:
                t.fn()
            except Exception:
                log.exception("JetStream timer failed")


# ------------------------------------------------------------------------------------- files

def write_meta(path: str, data: dict, keys=None) -> None:
    """Write JSON durably: temp file, fsync, rename, fsync the directory. ``keys``: sealed
    with them (natsx.storage.crypt.seal_file) when the server encrypts at rest."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    raw = json.dumps(data).encode()
    with open(tmp, "wb") as f:
        f.write(raw if keys is None else seal_file(keys, raw))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_meta(path: str, keys=None):
    """The JSON of a meta file, or None; with ``keys``, ``(data, rewrite)``: rewrite when it
    must be sealed again (natsx.storage.crypt.open_file, which raises EncryptionError)."""
    try:
        with open(path, "rb") as f:
            raw, rewrite = open_file(keys, f.read())
        data = json.loads(raw)
    except (OSError, ValueError):
        data = rewrite = None
    return data if keys is None else (data, rewrite)


# ------------------------------------------------------------------------------------- limits

class Limits:
    """An account's JetStream limits (-1 = unlimited), Go's JetStreamAccountLimits."""

    def __init__(self, account: "Account", max_memory=-1, max_storage=-1, max_streams=-1,
                 max_consumers=-1, max_ack_pending=-1, memory_max_stream_bytes=-1,
                 storage_max_stream_bytes=-1, max_bytes_required=False) -> None:
        self.account = account
        self.max_memory = max_memory
        self.max_storage = max_storage
        self.max_streams = max_streams
        self.max_consumers = max_consumers
        self.max_ack_pending = max_ack_pending
        self.memory_max_stream_bytes = memory_max_stream_bytes
        self.storage_max_stream_bytes = storage_max_stream_bytes
        self.max_bytes_required = max_bytes_required

    def set(self, limits: dict | None) -> None:
        """Apply Go's JetStreamAccountLimits JSON (missing keys: unlimited)."""
        limits = limits or {}
        for key in ("max_memory", "max_storage", "max_streams", "max_consumers",
                    "max_ack_pending", "memory_max_stream_bytes", "storage_max_stream_bytes"):
            value = limits.get(key, -1)
            setattr(self, key, -1 if value is None else int(value))
        self.max_bytes_required = bool(limits.get("max_bytes_required", False))

    @property
    def server(self):
        """The server-wide limits (natsx.jetstream.settings.ServerLimits)."""
        return self.account.js.settings.limits

    def to_json(self) -> dict:
        return {"max_memory": self.max_memory, "max_storage": self.max_storage,
                "max_streams": self.max_streams, "max_consumers": self.max_consumers,
                "max_ack_pending": self.max_ack_pending,
                "memory_max_stream_bytes": self.memory_max_stream_bytes,
                "storage_max_stream_bytes": self.storage_max_stream_bytes,
                "max_bytes_required": self.max_bytes_required}

    def check_stream(self, cfg: dict) -> None:
        if self.max_bytes_required and cfg.get("max_bytes", -1) <= 0:
            raise error("JSStreamMaxBytesRequired")
        per = (self.memory_max_stream_bytes if cfg.get("storage") == "memory"
               else self.storage_max_stream_bytes)
        if per > 0 and cfg.get("max_bytes", -1) > per:
            raise error("JSStreamMaxStreamBytesExceeded")

    def check_store(self, stream: Stream, size: int, pending: int = 0):
        """Go's processJetStreamMsg resource checks for a message of ``size`` bytes
        (subject, headers and payload): the server's limit, then the account's.
        ``pending``: bytes about to be stored before it (the rest of an atomic batch,
        natsx.jetstream.batching), counted as stored."""
        storage = stream.cfg["storage"]
        js = self.account.js
        if js.limits_exceeded(storage, pending):
            return error("JSInsufficientResourcesErr")
        limit = self.max_memory if storage == "memory" else self.max_storage
        if limit >= 0:
            # Go's memStoreMsgSize / fileStoreMsgSize; the account's bytes on every worker.
            size += 16 if storage == "memory" else 30
            used = self.account.usage(storage) + pending
            if used + size > limit:
                return error("JSAccountResourcesExceededErr")
        return None

    def check_reservation(self, cfg: dict, exclude: str = "", *, server: bool = True,
                          account_wide: bool = True) -> None:
        """Go's checkBytesLimits on stream create/update: the stream's ``max_bytes`` must fit
        in what the account and the server have not reserved for other streams (the
        account's streams on every worker, unless ``account_wide`` is False: the home
        checked it; ``server``: also the server's limit, which the worker running the
        stream reserves)."""
        storage = cfg.get("storage", "file")
        add = cfg.get("max_bytes", -1)
        if add is None or add < 0:
            add = 1
        account, js = self.account, self.account.js
        limit = self.max_memory if storage == "memory" else self.max_storage
        name = ("JSMemoryResourcesExceededErr" if storage == "memory"
                else "JSStorageResourcesExceededErr")
        if account_wide and limit >= 0:
            mine = account.reserved(storage, exclude)
            if mine > limit or add > limit - mine:
                raise error(name)
        if not server:
            return
        # The server's limit holds for every worker's streams (natsx.jetstream.serverlimits):
        # on success ``add`` stays reserved until the caller publishes the real figures.
        if not js.server_limits.reserve("reserved", storage,
                                        js.reserved(storage, account.name, exclude), add):
            raise error(name)


# ------------------------------------------------------------------------------------- account

class Account:
    """JetStream state of one account."""

    def __init__(self, js: "JetStream", name: str, enabled: bool = True) -> None:
        self.js = js
        self.name = name
        self.dir = os.path.join(js.store_dir, name)
        self.streams: dict[str, Stream] = {}
        self.limits = Limits(self)
        self.api_total = 0
        self.api_errors = 0
        self.api_subs: list = []
        self.used = {"memory": 0, "file": 0}
        self.enabled = enabled
        self._feeds_by_origin: dict | None = None
        # With streams spread over the workers (natsx.jetstream.shards): the account's
        # figures on every worker and, in its home, the catalog of its streams.
        self.shared = None
        self.catalog = None
        if js.sharded and enabled:
            from natsx.jetstream.accountusage import AccountUsage
            from natsx.jetstream.catalog import Catalog

            server = js.server
            self.shared = AccountUsage(self.dir, server.worker_count, server.worker_index)
            self.catalog = Catalog(self)

    def local_usage(self, storage: str) -> int:
        """Bytes the account's streams in this worker store (kept up to date by the
        streams' storage updates, as the worker's ``js.used``)."""
        return self.used[storage]

    def usage(self, storage: str) -> int:
        """Bytes the account's streams store (on every worker)."""
        own = self.local_usage(storage)
        if self.shared is None:
            return own
        return own + self.shared.others(storage)

    def reserved_local(self, storage: str, exclude: str = "") -> int:
        """Bytes reserved by the ``max_bytes`` of the account's streams in this worker."""
        return sum(s.cfg.get("max_bytes", -1) for n, s in self.streams.items()
                   if n != exclude and s.cfg["storage"] == storage
                   and s.cfg.get("max_bytes", -1) > 0)

    def reserved(self, storage: str, exclude: str = "") -> int:
        """Bytes reserved by the ``max_bytes`` of the account's streams (Go reservedStorage),
        on every worker."""
        if self.catalog is None:
            return self.reserved_local(storage, exclude)
        return sum(cfg.get("max_bytes", -1) for n, cfg in self.configs(vetting=True).items()
                   if n != exclude and cfg.get("storage", "file") == storage
                   and (cfg.get("max_bytes", -1) or -1) > 0)

    def configs(self, vetting: bool = False) -> dict:
        """The configs of the account's streams by name, on every worker (``vetting``: with
        the creates and updates the home approved that have not reached the disk yet)."""
        if self.catalog is None:
            return {n: s.cfg for n, s in self.streams.items()}
        return self.catalog.configs(vetting)

    def figures(self) -> dict:
        """This worker's figures of the account (natsx.jetstream.accountusage)."""
        return {"memory": self.used["memory"], "file": self.used["file"],
                "streams": len(self.streams),
                "consumers": sum(len(s.public_consumers()) for s in self.streams.values()),
                "api_total": self.api_total, "api_errors": self.api_errors,
                "reserved_memory": self.reserved_local("memory"),
                "reserved_file": self.reserved_local("file"),
                "home": 1 if is_home(self.js.server, self.name) else 0}

    def totals(self) -> dict:
        """The account's figures summed over the workers."""
        mine = self.figures()
        if self.shared is None:
            return mine
        others = self.shared.others_all()
        return {k: v + others.get(k, 0) for k, v in mine.items()}

    def publish(self) -> None:
        """Writes this worker's figures of the account for the other workers."""
        if self.shared is not None:
            self.shared.write(self.figures())

    def stream_dir(self, name: str) -> str:
        return os.path.join(self.dir, "streams", name)

    # -- streams -------------------------------------------------------------------------------

    def meta_keys(self, stream: str, consumer: str = ""):
        """The keys of a stream's or a consumer's meta file (natsx.storage.crypt; Go's
        contexts: the stream name, or stream name + "." + consumer name), or None."""
        keyring = self.js.settings.keyring
        if keyring is None:
            return None
        return keyring.for_stream(self.name, f"{stream}.{consumer}" if consumer else stream)

    def _open_store(self, cfg: dict):
        if cfg["storage"] == "memory":
            return MemStore(store_config(cfg))
        # Encryption at rest (natsx.storage.crypt): file streams only, as in Go.
        keyring = self.js.settings.keyring
        keys = keyring.for_stream(self.name, cfg["name"]) if keyring is not None else None
        if self.js.raft is not None:
            # The raft process writes the environment (natsx.jetstream.raftlink).
            return self.js.raft.open_store(os.path.join(self.stream_dir(cfg["name"]), "msgs"),
                                           store_config(cfg), keys)
        return LmdbStore(os.path.join(self.stream_dir(cfg["name"]), "msgs"), store_config(cfg),
                         sync=self.js.settings.sync_always, keys=keys)

    def create_stream(self, cfg: dict, created: int | None = None, *, persist: bool = True,
                      vetted: bool = False) -> Stream:
        if persist:
            if not vetted and 0 < self.limits.max_streams <= len(self.configs()):
                raise error("JSMaximumStreamsLimitErr")
            path = self.stream_dir(cfg["name"])
            if os.path.exists(path):
                shutil.rmtree(path, ignore_errors=True)
        created = created or time.time_ns()
        store = self._open_store(cfg)
        stream = Stream(self, cfg, store, created)
        if self.js.raft is not None:
            self.js.raft.attach(stream)
        if persist:
            write_meta(os.path.join(self.stream_dir(cfg["name"]), "meta.inf"),
                       {"config": cfg, "created": created}, self.meta_keys(cfg["name"]))
        self.streams[cfg["name"]] = stream
        held = store.state().bytes
        self.js.used[cfg["storage"]] += held
        self.used[cfg["storage"]] += held
        self.js.server_limits.publish()
        self.publish()
        stream.subscribe()
        self.js.subscribe_direct(stream)
        self.js.arm_expiry(stream)
        stream.start_schedules()
        self._start_feeds(stream)
        # Streams that source from this one may have been waiting for it.
        for feed in self.feeds_from(stream.name):
            feed.signal()
        return stream

    def _start_feeds(self, stream: Stream) -> None:
        from natsx.jetstream.sourcing import Feed

        for feed in stream.feeds:
            feed.close()
        cfg = stream.cfg
        specs = [(cfg["mirror"], True)] if cfg.get("mirror") else \
            [(spec, False) for spec in cfg.get("sources") or []]
        stream.feeds = [Feed(stream, spec, mirror) for spec, mirror in specs]
        self._feeds_by_origin = None
        for feed in stream.feeds:
            feed.signal()

    def feeds_from(self, origin: str) -> list:
        """The feeds reading from ``origin`` (an index rebuilt when feeds change)."""
        index = self._feeds_by_origin
        if index is None:
            index = self._feeds_by_origin = {}
            for s in self.streams.values():
                for f in s.feeds:
                    index.setdefault(f.origin, []).append(f)
        return index.get(origin, ())

    def update_stream(self, stream: Stream, cfg: dict) -> None:
        write_meta(os.path.join(self.stream_dir(stream.name), "meta.inf"),
                   {"config": cfg, "created": stream.created}, self.meta_keys(stream.name))
        allow_direct = stream.cfg.get("allow_direct")
        old = stream.cfg
        stream.update_config(cfg)
        if old.get("mirror") != cfg.get("mirror") or old.get("sources") != cfg.get("sources"):
            self._start_feeds(stream)
        if allow_direct != cfg.get("allow_direct"):
            self.js.unsubscribe_direct(stream)
            self.js.subscribe_direct(stream)
        for c in stream.consumers.values():
            c.signal()

    def delete_stream(self, stream: Stream) -> None:
        for name in list(stream.consumers):
            self.delete_consumer(stream, name, remove_files=False)
        stream.closed = True
        stream.discard_batches()
        for feed in stream.feeds:
            feed.close()
        self._feeds_by_origin = None
        stream.unsubscribe()
        self.js.unsubscribe_direct(stream)
        if stream.dirty:
            stream.commit()
            self.js.dirty = [s for s in self.js.dirty if s is not stream]
        stream.stop_timers()
        self.streams.pop(stream.name, None)
        held = stream.store.state().bytes
        self.js.used[stream.cfg["storage"]] -= held
        self.used[stream.cfg["storage"]] -= held
        self.js.server_limits.publish()
        stream.store.delete()
        shutil.rmtree(self.stream_dir(stream.name), ignore_errors=True)
        if self.catalog is not None:
            self.catalog.forget(stream.name)
        self.publish()

    # -- consumers -----------------------------------------------------------------------------

    def add_consumer(self, stream: Stream, raw_cfg: dict, action: str = "",
                     pedantic: bool = False) -> Consumer:
        """Go's addConsumerWithAssignment for a standalone server."""
        cfg = dict(raw_cfg)
        set_defaults(cfg, stream.cfg, self.limits, pedantic)
        check_consumer_config(cfg, stream.cfg, self.limits)
        durable = cfg.get("durable_name", "")
        name = durable or cfg.get("name", "")
        scfg = stream.cfg
        if name and name in stream.consumers:
            existing = stream.consumers[name]
            new = ordered_consumer(cfg)
            if action == "create" and versioning.copy_from(new, existing.cfg) != existing.cfg:
                raise error("JSConsumerAlreadyExists")
            if scfg["retention"] == "workqueue" and not self._partition_unique(
                    stream, name, filters_of(cfg)):
                raise error("JSConsumerWQConsumerNotUniqueErr")
            check_consumer_update(existing.cfg, new,
                                  lambda s: self.js.has_interest(self.name, s.encode()))
            self._update_consumer(existing, new)
            return existing
        if action == "update":
            raise error("JSConsumerDoesNotExist")
        maxc = scfg.get("max_consumers", -1)
        if maxc <= 0 or 0 < self.limits.max_consumers < maxc:
            maxc = self.limits.max_consumers
        if maxc > 0 and len(stream.public_consumers()) >= maxc:
            raise error("JSMaximumConsumersLimitErr")
        if scfg["retention"] == "workqueue" and not cfg.get("direct"):
            # A direct consumer (a mirror's or a source's) is exempt, as in Go.
            if cfg.get("ack_policy") != "explicit":
                raise error("JSConsumerWQRequiresExplicitAckErr")
            if cfg.get("deliver_policy", "all") != "all":
                raise error("JSConsumerWQConsumerNotDeliverAllErr")
            if stream.consumers:
                filters = filters_of(cfg)
                if not filters:
                    raise error("JSConsumerWQMultipleUnfilteredErr")
                if not self._partition_unique(stream, name, filters):
                    raise error("JSConsumerWQConsumerNotUniqueErr")
        if durable and len(durable) > 255:
            raise error("JSConsumerNameTooLongErrF", max=255)
        if not name:
            while True:
                name = new_consumer_name()
                if name not in stream.consumers:
                    break
            cfg["name"] = name
        if not durable and not cfg.get("inactive_threshold"):
            cfg["inactive_threshold"] = DELETE_WAIT_DEFAULT
        if durable and not cfg.get("name"):
            cfg["name"] = durable
        cfg = ordered_consumer(cfg)
        consumer = self._make_consumer(stream, name, cfg, time.time_ns())
        consumer.select_start()
        self._write_consumer_meta(consumer)
        consumer.start()
        self.publish()
        return consumer

    def _partition_unique(self, stream: Stream, name: str, filters: list) -> bool:
        for cname, c in stream.consumers.items():
            if cname == name:
                continue
            if not c.filters:
                return False
            for f in filters:
                if any(subjects_collide(f, g) for g in c.filters):
                    return False
        return True

    def _make_consumer(self, stream: Stream, name: str, cfg: dict, created: int) -> Consumer:
        stream.touch()
        consumer = Consumer(stream, name, cfg, created, None)
        consumer.cs = stream.store.consumer_store(name, consumer.store_config())
        stream.consumers[name] = consumer
        js = self.js
        sname, acc = stream.name.encode(), self.name
        consumer.subs = [
            js.server.internal_subscribe(acc, b"$JS.ACK.%s.%s.*.*.*.*.*" % (sname, name.encode()),
                                         lambda s, r, h, p, pub, c=consumer: js.on_ack(c, s, r, p)),
            js.server.internal_subscribe(acc, b"$JS.API.CONSUMER.MSG.NEXT.%s.%s" % (sname, name.encode()),
                                         lambda s, r, h, p, pub, c=consumer: js.on_next(c, r, p, pub)),
            js.server.internal_subscribe(acc, b"$JS.FC.%s.%s.*" % (sname, name.encode()),
                                         lambda s, r, h, p, pub, c=consumer: c.process_flow_control(s)),
        ]
        return consumer

    def _update_consumer(self, consumer: Consumer, cfg: dict) -> None:
        if consumer.pin_id and (cfg.get("priority_policy") != "pinned_client" or
                                cfg.get("priority_groups") != consumer.cfg.get("priority_groups")):
            consumer.unpin()
        consumer.cfg = cfg
        consumer._configure_pacing()
        consumer.filters = filters_of(cfg)
        consumer.npc_stale = True
        consumer.stream.touch()
        consumer.cs.update_config(consumer.store_config())
        self._write_consumer_meta(consumer)
        if consumer.is_push:
            consumer.active = self.js.has_interest(self.name, cfg["deliver_subject"].encode())
        consumer._arm_inactive()
        consumer.signal()

    def _write_consumer_meta(self, consumer: Consumer) -> None:
        if consumer.cfg.get("mem_storage") or consumer.cfg.get("direct"):
            # A direct consumer (a feed's) is not kept across restarts (Go: no store);
            # its feed creates another.
            return
        write_meta(os.path.join(self.stream_dir(consumer.stream.name), "obs", consumer.name,
                                "meta.inf"), {"config": consumer.cfg, "created": consumer.created},
                   self.meta_keys(consumer.stream.name, consumer.name))

    def delete_consumer(self, stream: Stream, name: str, *, remove_files: bool = True) -> bool:
        consumer = stream.consumers.pop(name, None)
        if consumer is None:
            return False
        for sub in getattr(consumer, "subs", ()):
            self.js.server.internal_unsubscribe(self.name, sub)
        consumer.stop(delete=True)
        if remove_files:
            shutil.rmtree(os.path.join(self.stream_dir(stream.name), "obs", name),
                          ignore_errors=True)
            stream.check_interest_all()
            self.js.events.consumer_action(self.name, stream.name, name, "delete")
        self.publish()
        return True

    # -- recovery ------------------------------------------------------------------------------

    def _recover_meta(self, path: str, keys, what: str):
        """A meta file's JSON (None if missing or bad) on recovery, sealed again when it must
        be (found in clear with a key set, or under the previous key or cipher); False, after
        Go's warning, when it cannot be decrypted (natsx.storage.crypt)."""
        try:
            meta = read_meta(path, keys)
        except EncryptionError as exc:
            log.warning("  Error decrypting our %s metafile: %s", what, exc)
            return False
        if keys is None:
            return meta
        meta, rewrite = meta
        if meta and rewrite:
            # (A file stream's "Encrypting"/"Converting" notice comes from its store.)
            write_meta(path, meta, keys)
        return meta

    def recover(self) -> None:
        root = os.path.join(self.dir, "streams")
        try:
            names = sorted(os.listdir(root))
        except OSError:
            return
        server = self.js.server
        for sname in names:
            if not runs_stream(server, self.name, sname):
                continue    # another worker runs it (natsx.jetstream.shards)
            meta = self._recover_meta(os.path.join(root, sname, "meta.inf"),
                                      self.meta_keys(sname), "stream")
            if meta is False:
                continue
            if not meta or "config" not in meta:
                log.warning("JetStream: skipping stream directory %r without metadata", sname)
                continue
            try:
                stream = self.create_stream(meta["config"], meta.get("created"), persist=False)
            except EncryptionError as exc:
                # Go's text; the stream is left on disk and not loaded.
                log.warning("  Error decrypting our stream metafile: %s", exc)
                continue
            except Exception as exc:
                log.error("JetStream: could not recover stream %r: %s", sname, exc)
                continue
            stream.rebuild_dedupe()
            obs = os.path.join(root, sname, "obs")
            try:
                cnames = sorted(os.listdir(obs))
            except OSError:
                cnames = []
            for cname in cnames:
                cmeta = self._recover_meta(os.path.join(obs, cname, "meta.inf"),
                                           self.meta_keys(sname, cname), "consumer")
                if not cmeta or "config" not in cmeta:
                    continue
                consumer = self._make_consumer(stream, cname, cmeta["config"],
                                               cmeta.get("created") or time.time_ns())
                if consumer.cs.has_state():
                    consumer.restore()
                else:
                    consumer.select_start()
                consumer.start()
            # State left by consumers that were not meant to outlive the process.
            for orphan in set(stream.store.consumer_names()) - set(stream.consumers):
                stream.touch()
                stream.store.consumer_store(orphan).delete()
            state = stream.store.state()
            log.info("  Restored %d messages for stream '%s > %s'", state.msgs, self.name, sname)
        self.publish()


# ------------------------------------------------------------------------------------- server

class JetStream:
    """JetStream for the worker that runs it; see the module docstring."""

    def __init__(self, server) -> None:
        self.server = server
        # Streams spread over the workers (natsx.jetstream.shards).
        self.sharded = sharded(server)
        self.epoch = 0
        self.settings = Settings.from_options(server.options)
        self.store_dir = self.settings.store_dir
        self.accounts: dict[str, Account] = {}
        # Accounts that answer the API with "JetStream not enabled for account" (10039).
        self.disabled: dict[str, Account] = {}
        # The server-wide limits over every worker's figures (natsx.jetstream.serverlimits);
        # ``used``: bytes this worker's streams store, by storage type (Go js.memUsed).
        self.server_limits = ServerLimits(self)
        self.used = self.server_limits.used
        self.outbox: list = []
        self.dirty: list = []
        self.signaled: list = []
        # Until every worker's API relay is known here (Server._await_jetstream), requests
        # this worker sends itself (a feed's CONSUMER.CREATE) wait in ``deferred``.
        self.ready = getattr(server, "mesh", None) is None
        self.deferred: list = []
        self._others_used: dict = {}    # storage -> the other workers' bytes, this batch
        self.timers = Timers(server)
        # The API requests of the current round, bounded (natsx.jetstream.queues).
        self.api_queue = ApiQueue(self.settings.request_queue_limit,
                                  self.settings.info_queue_limit)
        self._commit_wakeup: trio.Event | None = None
        self._tasks_scope = trio.CancelScope()
        self.stopped = False            # ``shutdown``: a reload turned JetStream off
        self.domain = self.settings.domain
        self.direct_subs: dict = {}
        self.events = Events(self)
        # The link to the raft process, the writer of file streams, when the supervisor runs one.
        self.raft = None
        address = getattr(server, "raft_address", None)
        if address:
            from natsx.jetstream.raftlink import RaftLink

            self.raft = RaftLink(self, address)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, nursery) -> None:
        os.makedirs(self.store_dir, exist_ok=True)
        st = self.settings
        # The banner once per server, by worker 0; every worker runs its shard of the
        # accounts (natsx.jetstream.shards).
        if getattr(self.server, "worker_index", 0) == 0:
            log.info("Starting JetStream")
            log.info("---------------- JETSTREAM ----------------")
            if st.strict:
                log.info("  Strict:          true")
            log.info("  Max Memory:      %s", friendly_bytes(st.max_memory))
            log.info("  Max Storage:     %s", friendly_bytes(st.max_store))
            log.info('  Store Directory: "%s"', self.store_dir)
            if st.domain:
                log.info("  Domain:          %s", st.domain)
            if st.keyring is not None:
                log.info("  Encryption:      %s", cipher_name(st.keyring.cipher))
            log.info("  API Level:       %d", api.API_LEVEL)
            log.info("-------------------------------------------")
        self.server.batch_hooks.append(self.flush)
        self.server.sub_hooks.append(self.on_sub)
        self._commit_wakeup = trio.Event()
        nursery.start_soon(self._run_tasks)
        if not st.sync_always:
            self.call_later(st.sync_interval / 1e9, self._sync_all)
        self.server.run_batch(self._enable_configured)

    async def _run_tasks(self) -> None:
        """The timers, the committer and the raft link, ended together by ``shutdown``."""
        with self._tasks_scope:
            async with trio.open_nursery() as tasks:
                tasks.start_soon(self.timers.run)
                tasks.start_soon(self._committer)
                if self.raft is not None:
                    self.raft.start(tasks)

    def shutdown(self) -> None:
        """Go's DisableJetStream (a reload turned JetStream off): every stream and consumer
        stops (their files stay), the tasks end, and the API subscriptions stay with nobody
        answering, so requests time out as Go's do."""
        if self.stopped:
            return
        try:
            self.flush()
        except Exception:
            log.exception("JetStream: final flush failed")
        self.stopped = True
        for account in self.accounts.values():
            self._stop_streams(account)
        self.dirty = []
        self.server_limits.publish()
        for hooks, fn in ((self.server.batch_hooks, self.flush),
                          (self.server.sub_hooks, self.on_sub)):
            if fn in hooks:
                hooks.remove(fn)
        self._commit_wakeup = None
        self._tasks_scope.cancel()
        if self.raft is not None:
            self.raft.client.close()    # the next JetStream opens its own channel

    def unsubscribe_api(self) -> None:
        """After ``shutdown``, before another JetStream takes over: the API subscriptions go."""
        for account in list(self.accounts.values()) + list(self.disabled.values()):
            for sub in account.api_subs:
                self.server.internal_unsubscribe(account.name, sub)
            account.api_subs = []

    def _enable_configured(self) -> None:
        """Go's enableJetStreamAccounts: with no accounts configured the global account gets
        JetStream; otherwise the accounts whose config enables it do, and every other one
        (not the system account) answers the API with "not enabled for account"."""
        o = self.server.options
        system = o.system_account or "$SYS"
        configured = {n: c for n, c in (o.accounts or {}).items() if n != system}
        if not configured and not o.operator_mode:
            # (Operator mode: the accounts' JWTs enable it, natsx.server.operator.)
            self.enable_account("$G")
            return
        for name, cfg in configured.items():
            limits = getattr(cfg, "jetstream", None)
            try:
                self.enable_account(name, limits) if limits is not None \
                    else self.disable_account(name)
            except ApiError as exc:
                log.error("Error enabling JetStream for account %r: %s", name, exc)
                self.disable_account(name)
        self.disable_account("$G")

    def enable_account(self, name: str, limits: dict | None = None) -> Account:
        """Turn JetStream on for account ``name`` with Go's JetStreamAccountLimits JSON
        (``max_memory``, ``max_storage``, ``max_streams``, ``max_consumers``,
        ``max_ack_pending``, ``memory_max_stream_bytes``, ``storage_max_stream_bytes``,
        ``max_bytes_required``; missing or None: unlimited), or update the limits of an
        account that has it. Recovers the account's streams from the store directory.
        Raises ``ApiError`` (10028/10047) when the limits exceed what the server has
        (Go sufficientResources). This is the entry point for accounts created at run time
        (JWT claims: see ``limits_from_jwt``)."""
        account = self.accounts.get(name)
        if account is not None:
            account.limits.set(limits)
            self.server_limits.publish()
            return account
        if is_home(self.server, name):
            # Every worker runs some of the account's streams (natsx.jetstream.shards);
            # its home holds its limits against the server's, and tells the others when
            # they do not fit (natsx.jetstream.accountusage).
            try:
                self._check_sufficient(limits or {})
            except ApiError:
                self._shared(name, lambda shared: shared.refuse())
                raise
        elif self._shared(name, lambda shared: shared.refused(
                home(name, self.server.worker_count))):
            raise error("JSNotEnabledForAccountErr")
        self._drop_disabled(name)
        account = self.accounts[name] = Account(self, name)
        account.limits.set(limits)
        try:
            self._subscribe_api(account)
            account.recover()
        finally:
            self.server_limits.publish()
        return account

    def _shared(self, name: str, use):
        """``use(AccountUsage)`` on the shared figures of an account not enabled here."""
        if not self.sharded:
            return None
        from natsx.jetstream.accountusage import AccountUsage

        shared = AccountUsage(os.path.join(self.store_dir, name), self.server.worker_count,
                              self.server.worker_index)
        try:
            return use(shared)
        finally:
            shared.close()

    def refused_by_home(self, account: Account) -> bool:
        """Whether ``account``'s home refused it JetStream (then it is disabled here too)."""
        shared = account.shared
        if shared is None or not shared.refused(home(account.name, self.server.worker_count)):
            return False
        log.error("Error enabling JetStream for account %r: refused by its home worker",
                  account.name)
        self.disable_account(account.name)
        return True

    def disable_account(self, name: str) -> None:
        """Account ``name`` has no JetStream: its API requests get error 10039. Streams of an
        account that had JetStream are stopped (their files stay, as in Go)."""
        account = self.accounts.pop(name, None)
        if account is not None:
            for sub in account.api_subs:
                self.server.internal_unsubscribe(name, sub)
            self._stop_streams(account)
            self.dirty = [s for s in self.dirty if s.account is not account]
            self.server_limits.publish()
        if account is not None and account.shared is not None:
            account.shared.write({})
            account.shared.close()
        if name not in self.disabled:
            stub = self.disabled[name] = Account(self, name, enabled=False)
            self._subscribe_api(stub)

    def _stop_streams(self, account: Account) -> None:
        """Stops the streams and consumers of ``account``; their files stay, as in Go."""
        name = account.name
        for stream in list(account.streams.values()):
            stream.closed = True
            stream.stop_timers()
            stream.discard_batches()
            stream.unsubscribe()
            self.unsubscribe_direct(stream)
            for c in list(stream.consumers.values()):
                for sub in getattr(c, "subs", ()):
                    self.server.internal_unsubscribe(name, sub)
                c.stop(delete=False)
            if stream.dirty:
                stream.commit()
            self.used[stream.cfg["storage"]] -= stream.store.state().bytes
            stream.store.stop()

    def _drop_disabled(self, name: str) -> None:
        stub = self.disabled.pop(name, None)
        if stub is not None:
            for sub in stub.api_subs:
                self.server.internal_unsubscribe(name, sub)

    def _subscribe_api(self, account: Account) -> None:
        name = account.name

        def handler(s, r, h, p, pub, a=account):
            api.dispatch(a, s, r, h, p, pub)
        subjects = list(api.SUBJECTS)
        if self.domain:
            # Go's generateJSMappingTable: $JS.<domain>.API.> reaches the local API.
            subjects.append(b"$JS.%s.API.>" % self.domain.encode())
        if not self.sharded:
            for subject in subjects:
                account.api_subs.append(self.server.internal_subscribe(name, subject, handler))
            return
        # Each request goes to the worker that answers it, the client's details with it
        # (natsx.jetstream.relay): the API subjects stay local to this worker.
        from natsx.jetstream import coordinator, relay

        client = self.server.internal_client(name)
        route = relay.router(account)
        for subject in subjects:
            account.api_subs.append(client.subscribe(subject, route, local=True))
        account.api_subs.append(client.subscribe(relay.inbox(self.server.worker_index),
                                                 relay.receiver(account)))
        if account.enabled:
            account.api_subs.extend(coordinator.subscribe(account))

    def _check_sufficient(self, limits: dict) -> None:
        """Go's sufficientResources: the account's limits must fit beside the streams'
        reservations and the other accounts' limits, on the whole server (every worker's
        figures, natsx.jetstream.serverlimits). What passes stays reserved until the
        account is enabled and ``publish`` writes the real figures."""
        sl = self.server_limits
        mem, store = limits.get("max_memory", -1) or 0, limits.get("max_storage", -1) or 0
        for storage, add, key, err in (
                ("memory", mem, "max_memory", "JSMemoryResourcesExceededErr"),
                ("file", store, "max_storage", "JSStorageResourcesExceededErr")):
            if add <= 0:
                continue
            smax = self.settings.max_memory if storage == "memory" else self.settings.max_store
            own = sum(max(getattr(a.limits, key), 0) for a in self.accounts.values()
                      if is_home(self.server, a.name))
            if sl.total("reserved", storage) + add > smax or \
                    not sl.reserve("account", storage, own, add):
                sl.publish()    # lets go of the memory reservation made just before
                raise error(err)

    def reserved(self, storage: str, account: str = "", exclude: str = "") -> int:
        """Bytes reserved by streams' ``max_bytes`` on this server (one stream excluded)."""
        return sum(a.reserved_local(storage, exclude if a.name == account else "")
                   for a in self.accounts.values())

    def limits_exceeded(self, storage: str, pending: int = 0) -> bool:
        """Go's js.limitsExceeded: the server stores more than its limit for ``storage``
        (summed over the workers). The other workers' figures are read once per batch
        (``flush`` forgets them), this worker's own is always current: a batch of
        publishes costs one walk of the shared table, and is refused exactly where the
        limit falls among them."""
        used = self.used
        others = self._others_used.get(storage)
        if others is None:
            others = self._others_used[storage] = used.total(storage) - used[storage]
        return others + used[storage] + pending > self.server_limits._max(storage)

    def _sync_all(self) -> None:
        """``sync_interval``: flush every file store's commits to disk, then re-arm."""
        for account in self.accounts.values():
            for stream in account.streams.values():
                if stream.cfg["storage"] == "file" and not stream.closed:
                    try:
                        stream.store.sync()
                    except Exception:
                        log.exception("JetStream: sync of stream %r failed", stream.name)
        self.call_later(self.settings.sync_interval / 1e9, self._sync_all)

    def stop(self) -> None:
        self._commit_wakeup = None
        try:
            self.flush()
        except Exception:
            log.exception("JetStream: final flush failed")
        for account in self.accounts.values():
            for stream in account.streams.values():
                try:
                    if stream.cfg["storage"] == "file" and not self.settings.sync_always:
                        stream.store.sync()
                    stream.store.stop()
                except Exception:
                    pass

    # -- batches -------------------------------------------------------------------------------

    def send(self, account: str, subject: bytes, reply, payload: bytes, *, hdr=None,
             deliver_as=None) -> None:
        self.outbox.append((account, subject, reply, hdr, payload, deliver_as))

    def flush(self) -> None:
        """The worker's batch hook: deliver, commit (group commit), then send."""
        self.epoch += 1     # a new batch (natsx.jetstream.catalog)
        if self._others_used:
            self._others_used = {}
        self.used.publish()
        if not (self.signaled or self.dirty or self.outbox):
            return
        while self.signaled:
            signaled, self.signaled = self.signaled, []
            for consumer in signaled:
                try:
                    consumer.deliver()
                except Exception:
                    log.exception("JetStream: delivery for consumer %r failed", consumer.name)
        if self.dirty and self._commit_wakeup is not None and \
                tasks_runnable() and \
                any(s.cfg["storage"] == "file" for s in self.dirty):
            # Other tasks (readers) are ready to run in this round: commit after them, so
            # what they bring shares the sync. A memory stream has no sync to share: its
            # PubAcks leave at once.
            self._commit_wakeup.set()
            return
        self._commit_and_send()

    async def _committer(self) -> None:
        while True:
            await self._commit_wakeup.wait()
            self._commit_wakeup = trio.Event()
            self.server.run_batch(self._commit_and_send)

    def _commit_and_send(self) -> None:
        dirty, self.dirty = self.dirty, []
        for stream in dirty:
            try:
                stream.commit()
            except Exception:
                # Nothing of this batch may be acknowledged if it did not reach the disk.
                log.exception("JetStream: commit of stream %r failed", stream.name)
                self.outbox = [m for m in self.outbox if not _is_pub_ack_for(m, stream)]
        if self.sharded:
            # The account figures the other workers check their publishes against.
            for account in {id(s.account): s.account for s in dirty}.values():
                account.publish()
        outbox, self.outbox = self.outbox, []
        self.api_queue.round_done()
        if self.raft is not None and self.raft.hold(dirty, outbox):
            return
        self.route(outbox)

    def api_limit_reached(self, queue: str, dropped: int) -> None:
        """Go's apiDispatch when a request finds its queue full: warn (rate limited) and
        publish the API limit advisory in the system account."""
        rate_limit_warn("%s limit reached, dropping %d requests" % (queue, dropped),
                        key="%s limit reached, dropping %d requests")
        from natsx.server.accounts import system_account_name

        self.events.publish(system_account_name(self.server.options),
                            "$JS.EVENT.ADVISORY.API.LIMIT_REACHED",
                            "io.nats.jetstream.advisory.v1.api_limit_reached",
                            {"server": self.server.server_name, "dropped": dropped},
                            domain_before="dropped")

    def route(self, outbox: list) -> None:
        server = self.server
        routes = {}     # account -> its internal client's route, looked up once per batch
        for account, subject, reply, hdr, payload, deliver_as in outbox:
            route = routes.get(account)
            if route is None:
                # InternalClient.publish is this call: one Python frame less per message.
                route = routes[account] = server.internal_client(account).core.route
            route(subject, reply, hdr, payload, deliver_as)

    # -- timers --------------------------------------------------------------------------------

    def set_ready(self) -> None:
        self.ready = True
        deferred, self.deferred = self.deferred, []
        for fn in deferred:
            fn()

    def call_later(self, delay: float, fn) -> Timer:
        return self.timers.call_later(delay, fn)

    def call_at(self, deadline: float, fn) -> Timer:
        return self.timers.call_at(deadline, fn)

    def arm_expiry(self, stream: Stream, sooner: int | None = None) -> None:
        """Arm the stream's expiry timer at its next expiry; ``sooner``: a message that
        expires then (Unix ns) was stored, so an armed timer that is later moves up."""
        if stream.closed:
            return
        if stream.expiry_timer is not None:
            if sooner is None or sooner >= stream.expiry_due:
                return
            stream.expiry_timer.cancel()
            stream.expiry_timer = None
        cfg = stream.cfg
        if not cfg.get("max_age") and not cfg.get("allow_msg_ttl"):
            return
        due = stream.store.next_expiry()
        if due is None:
            return
        stream.expiry_due = due
        due = max(due, stream.expiry_hold)     # a refused marker waits (Stream.expire)
        delay = max((due - time.time_ns()) / 1e9, 0.0) + 0.001

        def fire():
            stream.expiry_timer = None
            if not stream.closed:
                stream.expire()
                self.arm_expiry(stream)
        stream.expiry_timer = self.call_later(delay, fire)

    # -- interest ------------------------------------------------------------------------------

    def has_interest(self, account: str, subject) -> bool:
        if isinstance(subject, str):
            subject = subject.encode()
        return self.server.internal_client(account).has_interest(subject)

    def on_sub(self, account_name: bytes, sub) -> None:
        account = self.accounts.get(account_name.decode())
        if account is None:
            return
        subject = sub.subject.decode("utf-8", "replace")
        for stream in account.streams.values():
            for c in stream.consumers.values():
                ds = c.cfg.get("deliver_subject")
                if ds and not c.active and subject_matches(ds, subject):
                    c.on_interest()

    # -- handlers ------------------------------------------------------------------------------

    def on_ack(self, consumer: Consumer, subject: bytes, reply, payload: bytes) -> None:
        if consumer.closed:
            return
        toks = subject.split(b".")
        consumer.process_ack(toks[4:9], reply, payload)

    def on_next(self, consumer: Consumer, reply, payload: bytes, publisher) -> None:
        if consumer.closed or not reply:
            return
        # When the request was read off its connection (this batch started then).
        conn = getattr(publisher, "conn", None)
        read_at = getattr(conn, "last_activity", None)
        received = None
        if isinstance(read_at, float):
            received = time.monotonic() - max(time.time() - read_at, 0.0)
        consumer.process_next_request(reply, payload or b"", received)

    def subscribe_direct(self, stream: Stream) -> None:
        if not stream.cfg.get("allow_direct"):
            return
        acc, name = stream.account.name, stream.name.encode()
        handler = (lambda s, r, h, p, pub, st=stream: api.direct_get(st, s, r, h, p))
        self.direct_subs[id(stream)] = [
            self.server.internal_subscribe(acc, b"$JS.API.DIRECT.GET.%s" % name, handler),
            self.server.internal_subscribe(acc, b"$JS.API.DIRECT.GET.%s.>" % name, handler),
        ]

    def unsubscribe_direct(self, stream: Stream) -> None:
        for sub in self.direct_subs.pop(id(stream), ()):
            self.server.internal_unsubscribe(stream.account.name, sub)

    def advisory(self, consumer: Consumer, kind: str, event: dict) -> None:
        self.events.consumer_event(consumer, kind, event)


def friendly_bytes(n: int) -> str:
    """Go's friendlyBytes: ``512 B``, ``1.00 GB``..."""
    if n < 1024:
        return f"{n} B"
    value, unit = float(n), ""
    for unit in "KMGTPE":
        value /= 1024
        if value < 1024:
            break
    return f"{value:.2f} {unit}B"


def limits_from_jwt(js_claims: dict | None) -> dict | None:
    """An account JWT's ``nats.limits`` JetStream fields (jwt.JetStreamLimits) as the
    limits ``JetStream.enable_account`` takes; None when the JWT leaves JetStream off
    (Go: both mem_storage and disk_storage zero)."""
    if not js_claims:
        return None
    mem, disk = js_claims.get("mem_storage", 0), js_claims.get("disk_storage", 0)
    if not mem and not disk:
        return None
    return {"max_memory": mem, "max_storage": disk,
            "max_streams": js_claims.get("streams", -1),
            "max_consumers": js_claims.get("consumer", -1),
            "max_ack_pending": js_claims.get("max_ack_pending", -1),
            "memory_max_stream_bytes": js_claims.get("mem_max_stream_bytes", -1),
            "storage_max_stream_bytes": js_claims.get("disk_max_stream_bytes", -1),
            "max_bytes_required": bool(js_claims.get("max_bytes_required", False))}


def _is_pub_ack_for(message, stream: Stream) -> bool:
    payload = message[4]
    return payload.startswith(stream._pub_ack)
