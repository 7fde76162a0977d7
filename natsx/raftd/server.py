"""The raft process: the single writer of every JetStream stream environment (LMDB).

Theory of operation
-------------------
The supervisor binds a Unix socket before forking and hands it to this process; workers
connect to it (``natsx.raftd.client``) and the socket stays bound while this process restarts,
so a worker reconnecting after a crash waits in the backlog instead of being refused.

Each open stream environment is a ``Group``: a RAFT group (``natsx.raft.RawNode``) whose only
member is this server, its in-memory raft log, its write-ahead log (wal.py) and the LMDB
environment that is its state machine. The loop is single-threaded (selectors): it reads
every ready connection, queues the proposals per group in arrival order, and then, once per
round, for every group with work:

1. proposes each entry to the group's RawNode and runs the Ready cycle (append to the raft
   log, commit — immediate with one member),
2. appends the committed entries to the write-ahead log and flushes it (``fdatasync``: group
   commit, one flush per group per round, whatever number of proposals arrived meanwhile),
3. answers every proposal ``ok``, and hands the entries to the applier.

The applier thread applies them to LMDB in one write transaction per batch (the physical
operations of each proposal, then the group's ``raft`` meta record: epoch and last applied
index), committed with LMDB's own sync, and then tells the writer ``applied``. It waits
``APPLY_DELAY`` after being woken, so one LMDB commit (two flushes) takes the entries of many
rounds instead of contending with every round's log flush; until ``applied`` the worker
keeps those entries in its store's overlay (natsx.storage.raftlmdb). py-lmdb lets go
of the GIL while it commits, so the loop goes on logging the next rounds meanwhile. A log
flush costs a fraction of an LMDB sync (one sequential write to blocks already allocated,
against pages spread over a growing file and two flushes), and the answer waits for the log
only. Before a (new) writer opens a group, LMDB catches up with its log (``flush``): the writer
reads its state from LMDB.

The raft log is kept in memory and compacted after each round: with a single member the
write-ahead log is the durable point, and the ``applied`` index that LMDB stores tells a
reconnecting worker which proposals to send again (protocol.py). Clustering replaces the
membership, not this code path. With the explicit ``sync_interval`` trade there is no
write-ahead log: the loop applies each round to LMDB itself, synced that often.

Killed with SIGKILL, the process loses nothing that was answered: answers leave only after the
log's flush. The supervisor restarts it; workers reconnect and reopen their groups: opening a
group applies what its log holds beyond LMDB's ``applied`` index first; the workers then
resend what was not yet durable.

Liveness: the loop bumps a heartbeat counter in the supervisor's shared table (``beat``, at
least once a second: the select waits one second at most). A process that stops bumping it
(stopped, or stuck in a call) would hold every publish of every worker; the supervisor kills
it once the counter stalls (natsx.supervisor.arbiter, ``check_heartbeats``) and restarts it,
which is then a crash like any other.
"""
from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import struct
import threading
import time
from collections import deque

import lmdb

from natsx import gctune
from natsx.raft import Config, MemoryStorage, RawNode
from natsx.raftd import protocol as P
from natsx.raftd.wal import MAX_SIZE as WAL_MAX
from natsx.raftd.wal import Wal
from natsx.raftd.wal import record as wal_record
from natsx.supervisor import childsignals
from natsx.storage.lmdbstore import _MAX_DBS, _open_dbs, DEFAULT_MAP_SIZE, FORMAT

log = logging.getLogger("natsx")

_RAFT = struct.Struct("<QQ")      # meta/raft: epoch, last applied proposal index
_INDEX = struct.Struct("<Q")      # a log entry: the proposal index, then its operations' blob
STOP_GRACE = 5.0
# The applier gathers this long before it takes a batch: every LMDB commit is two flushes
# that the log's flush then queues behind, so committing once per round would slow the
# rounds; the log is the durable point, LMDB only has to follow.
APPLY_DELAY = 0.01
WAL_NAME = "raft.wal"


class Group:
    """One stream environment, its single-member RAFT group and its write-ahead log."""

    def __init__(self, gid: int, path: str, map_size: int, sync_interval: int = 0) -> None:
        self.gid = gid
        self.path = path
        # 0: every commit is durable before it is answered (the default): in the log
        # (wal.py), LMDB following; otherwise the explicit ``sync_interval`` trade: no log,
        # LMDB commits are synced that often (``sync_due``).
        self.sync_interval = sync_interval / 1e9
        self.sync_at = None
        os.makedirs(path, exist_ok=True)
        env = lmdb.open(path, map_size=max(map_size, DEFAULT_MAP_SIZE), max_dbs=_MAX_DBS,
                        sync=not sync_interval, metasync=True, meminit=False)
        env.reader_check()
        with env.begin(write=True) as txn:
            self.dbs = _open_dbs(env, txn, True)
            meta = self.dbs[P.DB_META]
            if txn.get(b"state", db=meta) is None and txn.get(b"format", db=meta) is None:
                txn.put(b"format", FORMAT, db=meta)
            raw = txn.get(b"raft", db=meta)
            self.epoch, self.applied = _RAFT.unpack(raw) if raw else (0, 0)
        self.env = env
        self.lock = threading.Lock()            # pending, applied, durable
        self.writing = threading.Lock()         # one LMDB write transaction at a time
        self.pending: list = []                 # (index, blob) durable, not yet in LMDB
        self.conn = None                        # the writer's channel ("applied" notices)
        self.wal = None
        wal_path = os.path.join(path, WAL_NAME)
        if not sync_interval or os.path.exists(wal_path):
            try:
                self.wal = Wal(wal_path)
                # Entries the log made durable before a crash that LMDB had not taken yet
                # (also when this run trades the log away: they were acknowledged).
                lost = self.wal.recover(self.applied)
                if lost:
                    self._apply([P.decode_ops(blob) for _i, blob in lost], lost[-1][0])
                    env.sync(True)
                if sync_interval:
                    self.wal.close()
                    self.wal = None
            except BaseException:
                if self.wal is not None:
                    self.wal.close()
                env.close()
                raise
        self.durable = self.applied
        self.storage = MemoryStorage()
        self.node = RawNode(Config(id=1), self.storage, peers=[1])
        self._cycle()
        self.queue: list = []           # (conn, epoch, index, blob) in arrival order

    def reopen(self, conn=None) -> tuple[int, int]:
        """A new writer: LMDB catches up with the log (the writer reads its state there),
        and the epoch is bumped (durably) so the old writer's proposals are refused."""
        self.flush()
        with self.writing:
            self.epoch += 1
            # Reader slots of a worker that died would pin old pages until cleared.
            self.env.reader_check()
            with self.env.begin(write=True) as txn:
                txn.put(b"raft", _RAFT.pack(self.epoch, self.applied), db=self.dbs[P.DB_META])
        self.conn = conn
        return self.epoch, self.applied

    def _cycle(self) -> list:
        node, storage, committed = self.node, self.storage, []
        while True:
            rd = node.ready()     # None when there is nothing (it asks has_ready itself)
            if rd is None:
                break
            if rd.snapshot is not None:
                storage.apply_snapshot(rd.snapshot)
            storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
            committed.extend(e for e in rd.committed_entries if e.data)
            node.advance(rd)
        return committed

    def run(self) -> list:
        """Commits the queued proposals (durably); returns the answers to send."""
        queue, self.queue = self.queue, []
        try:
            return self._run(queue)
        except Exception as exc:
            log.exception("raft: committing to %s failed", self.path)
            return [(c, ["err", self.gid, i, str(exc)]) for c, _e, i, _o in queue]

    def _run(self, queue: list) -> list:
        answers = []
        accepted = {}
        durable = self.durable
        for conn, epoch, index, blob in queue:
            if epoch != self.epoch:
                answers.append((conn, ["err", self.gid, index, "stale epoch"]))
            elif index <= durable or index in accepted:
                answers.append((conn, ["ok", self.gid, index]))
            elif index != durable + 1 + len(accepted):
                answers.append((conn, ["err", self.gid, index, "out of order"]))
            else:
                accepted[index] = conn
                # The entry is the proposal itself: what is applied is what was committed.
                self.node.propose(_INDEX.pack(index) + blob)
        if not accepted:
            return answers
        entries = [e.data for e in self._cycle()]
        done = [_INDEX.unpack_from(data)[0] for data in entries]
        if entries:
            blobs = [memoryview(data)[_INDEX.size:] for data in entries]
            if self.wal is not None:
                self._log(done, blobs)
            else:
                self._apply([P.decode_ops(b) for b in blobs], done[-1])
                self.durable = done[-1]
                answers.append((self.conn, ["applied", self.gid, done[-1]]))
        self.storage.compact(self.storage.last_index())
        done = set(done)
        for index, conn in accepted.items():
            answers.append((conn, ["ok", self.gid, index] if index in done
                            else ["err", self.gid, index, "not committed"]))
        return answers

    def _log(self, indexes: list, blobs: list) -> None:
        """Makes entries durable in the log and leaves them to the applier."""
        wal = self.wal
        if wal.offset:
            if wal.offset > WAL_MAX:
                self.flush()    # LMDB catches up, so the log can start over
            with self.lock:
                if self.applied == self.durable:
                    wal.reset()
        start = wal.offset
        try:
            wal.append([wal_record(i, b) for i, b in zip(indexes, blobs)])
            wal.sync()
        except BaseException:
            # Not durable, so refused: the next attempt overwrites them (a scan must not
            # find these records ahead of the ones that replace them).
            wal.offset = start
            raise
        with self.lock:
            self.pending.extend((i, bytes(b)) for i, b in zip(indexes, blobs))
            self.durable = indexes[-1]

    def apply_pending(self) -> int:
        """The applier's step: what the log holds and LMDB not yet, in one synced
        transaction; returns the last index applied (0: nothing to do)."""
        with self.writing:
            with self.lock:
                pending, self.pending = self.pending, []
            if not pending or self.env is None:
                return 0
            try:
                self._apply([P.decode_ops(blob) for _i, blob in pending], pending[-1][0])
            except BaseException:
                with self.lock:
                    self.pending[:0] = pending
                raise
        return pending[-1][0]

    def flush(self) -> None:
        """Until LMDB holds everything the log does: applies what the applier has not
        taken yet, or waits for the batch it is applying."""
        while True:
            with self.lock:
                if self.applied >= self.durable:
                    return
            self.apply_pending()

    def _apply(self, batches: list, last: int) -> None:
        dbs = self.dbs
        OP_PUT, OP_DEL, OP_DEL_DUP, OP_DROP = P.OP_PUT, P.OP_DEL, P.OP_DEL_DUP, P.OP_DROP
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    put, delete = txn.put, txn.delete
                    for ops in batches:
                        if all(op[0] == OP_PUT for op in ops):
                            # Only puts (every publish): database by database, each in one
                            # putmulti (LMDB's loop, not ours). Operations on different
                            # databases commute, and each database's keep their order.
                            for db in sorted({op[1] for op in ops}):
                                txn.cursor(db=dbs[db]).putmulti(
                                    [(op[2], op[3]) for op in ops if op[1] == db])
                            continue
                        for op, db, key, value in ops:
                            d = dbs[db]
                            if op == OP_PUT:
                                put(key, value, db=d)
                            elif op == OP_DEL:
                                delete(key, db=d)
                            elif op == OP_DEL_DUP:
                                delete(key, value, db=d)
                            elif op == OP_DROP:
                                txn.drop(d, delete=False)
                            else:
                                raise ValueError(f"unknown operation {op!r}")
                    txn.put(b"raft", _RAFT.pack(self.epoch, last), db=dbs[P.DB_META])
                if self.sync_interval and self.sync_at is None:
                    self.sync_at = time.monotonic() + self.sync_interval
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
        with self.lock:
            self.applied = last

    def sync_due(self, now: float) -> None:
        if self.sync_at is not None and now >= self.sync_at:
            self.sync_at = None
            self.env.sync(True)

    def close(self) -> None:
        self.flush()
        with self.writing:
            if self.sync_at is not None:
                self.env.sync(True)
            self.env.close()
            self.env = None
            if self.wal is not None:
                self.wal.close()


class Conn:
    __slots__ = ("sock", "decoder", "alive")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = P.Decoder()
        self.alive = True

    def send(self, msg: list) -> None:
        self.send_raw(P.frame(msg))

    def send_raw(self, data: bytes) -> None:
        if not self.alive:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.alive = False


class RaftServer:
    def __init__(self, listener: socket.socket, beat=None) -> None:
        self.listener = listener
        self.beat = beat or (lambda: None)
        self.sel = selectors.DefaultSelector()
        self.groups: dict[int, Group] = {}
        self.by_path: dict[str, Group] = {}
        self._next_gid = 1
        self.stopping = False
        self.reopen_logs = False
        # The applier thread: LMDB takes what the logs made durable (Group.apply_pending),
        # and tells the loop, which sends the "applied" notices.
        self._work: set = set()
        self._work_ready = threading.Condition()
        self._applied: deque = deque()          # (group, index) for the loop to announce
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._applier = threading.Thread(target=self._apply_loop, name="raft-applier",
                                         daemon=True)

    def _apply_loop(self) -> None:
        while True:
            with self._work_ready:
                while not self._work:
                    self._work_ready.wait()
                groups, self._work = self._work, set()
            time.sleep(APPLY_DELAY)
            with self._work_ready:
                groups |= self._work
                self._work = set()
            for group in groups:
                try:
                    last = group.apply_pending()
                except Exception:
                    log.exception("raft: applying to %s failed; retrying", group.path)
                    time.sleep(0.1)
                    with self._work_ready:
                        self._work.add(group)
                    continue
                if last:
                    self._applied.append((group, last))
                    try:
                        os.write(self._wake_w, b"\1")
                    except BlockingIOError:
                        pass

    def _announce_applied(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        out: dict = {}
        while self._applied:
            group, last = self._applied.popleft()
            if group.conn is not None and self.groups.get(group.gid) is group:
                out.setdefault(group.conn, []).append(P.frame(["applied", group.gid, last]))
        for conn, frames in out.items():
            conn.send_raw(b"".join(frames))

    def serve(self) -> None:
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "applied")
        self._applier.start()
        deadline = None
        while True:
            self.beat()
            if self.reopen_logs:
                self.reopen_logs = False
                from natsx.logs import reopen

                reopen()
            if self.stopping:
                # A graceful stop: the workers stop too and send their last batches; serve
                # them until every worker has gone (or for STOP_GRACE seconds).
                if deadline is None:
                    deadline = time.monotonic() + STOP_GRACE
                if len(self.sel.get_map()) <= 2 or time.monotonic() > deadline:
                    break
            try:
                events = self.sel.select(0.1 if self.stopping else 1.0)
            except InterruptedError:
                continue
            for key, _ in events:
                if key.data is None:
                    self._accept()
                elif key.data == "applied":
                    self._announce_applied()
                else:
                    self._read(key.data)
            self._run_groups()
            now = time.monotonic()
            for g in self.groups.values():
                g.sync_due(now)
        for g in self.groups.values():
            g.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(True)
            self.sel.register(sock, selectors.EVENT_READ, Conn(sock))

    def _read(self, conn: Conn) -> None:
        try:
            data = P.recv(conn.sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            conn.alive = False
            self.sel.unregister(conn.sock)
            conn.sock.close()
            self._writer_gone(conn)
            return
        try:
            msgs = conn.decoder.feed(data)
        except Exception:
            log.exception("raft: bad frame from a worker; closing its channel")
            conn.alive = False
            self.sel.unregister(conn.sock)
            conn.sock.close()
            return
        for msg in msgs:
            try:
                self._handle(conn, msg)
            except Exception as exc:
                log.exception("raft: request %r failed", msg[:2])
                if msg and msg[0] in ("open", "drop"):
                    conn.send(["opened" if msg[0] == "open" else "dropped", msg[1], 0, 0, 0,
                               str(exc)])

    def _writer_gone(self, conn: Conn) -> None:
        """A worker went away: what it proposed (and was answered) reaches LMDB now, before
        its successor prepares the environment (natsx.storage.crypt) or opens it."""
        self._run_groups()
        for group in list(self.groups.values()):
            if group.conn is conn:
                group.conn = None
                try:
                    group.flush()
                except Exception:
                    log.exception("raft: applying to %s failed", group.path)

    def _handle(self, conn: Conn, msg: list) -> None:
        kind = msg[0]
        if kind == "prop":
            _, gid, epoch, index, ops = msg
            group = self.groups.get(gid)
            if group is None:
                conn.send(["err", gid, index, "unknown group"])
            else:
                if not isinstance(ops, bytes):
                    ops = P.encode_ops(ops)     # a proposal framed as CBOR
                group.queue.append((conn, epoch, index, ops))
        elif kind == "open":
            _, req, path, map_size, sync_interval = msg
            self._run_groups()
            path = os.path.realpath(path)
            group = self.by_path.get(path)
            if group is not None and not os.path.exists(os.path.join(path, "data.mdb")):
                # Its files were removed under it (a stream directory wiped): start afresh.
                self.groups.pop(group.gid, None)
                del self.by_path[path]
                group.close()
                group = None
            if group is None:
                group = Group(self._next_gid, path, map_size, sync_interval)
                self._next_gid += 1
                self.groups[group.gid] = group
                self.by_path[path] = group
            epoch, applied = group.reopen(conn)
            conn.send(["opened", req, group.gid, epoch, applied, ""])
        elif kind == "drop":
            _, req, path, remove = msg
            self._run_groups()
            path = os.path.realpath(path)
            group = self.by_path.pop(path, None)
            if group is not None:
                self.groups.pop(group.gid, None)
                group.close()
            if remove:
                shutil.rmtree(path, ignore_errors=True)
            conn.send(["dropped", req])

    def _run_groups(self) -> None:
        out: dict = {}      # conn -> its answers of this round, sent with one write
        logged = []
        for group in list(self.groups.values()):
            if not group.queue:
                continue
            for conn, answer in group.run():
                if conn is not None:
                    out.setdefault(conn, []).append(P.frame(answer))
            if group.pending:
                logged.append(group)
        if logged:
            with self._work_ready:
                self._work.update(logged)
                self._work_ready.notify()
        for conn, frames in out.items():
            conn.send_raw(b"".join(frames))


def run_raft(listener: socket.socket, beat=None) -> int:
    """Runs the raft process; ``beat`` bumps its heartbeat (the supervisor watches it)."""
    server = RaftServer(listener, beat)

    def stop(signum, frame) -> None:
        server.stopping = True

    def reopen_logs(signum, frame) -> None:
        server.reopen_logs = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The supervisor passes reload and log rotation on to every child: the raft process
    # has nothing to reload, and lame duck mode concerns client listeners only.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, reopen_logs)
    childsignals.release()
    log.info("JetStream raft process ready (pid %d)", os.getpid())
    gctune.tune()
    server.serve()
    return 0
