"""The raft process: the single writer of every JetStream stream environment (LMDB).

Theory of operation
-------------------
The supervisor binds a Unix socket before forking and hands it to this process; workers
connect to it (``natsx.raftd.client``) and the socket stays bound while this process restarts,
so a worker reconnecting after a crash waits in the backlog instead of being refused.

Each open stream environment is a ``Group``: a RAFT group (``natsx.raft.RawNode``) whose only
member is this server, its in-memory raft log, and the LMDB environment that is its state
machine. The loop is single-threaded (selectors): it reads every ready connection, queues the
proposals per group in arrival order, and then, once per round, for every group with work:

1. proposes each entry to the group's RawNode and runs the Ready cycle (append to the raft
   log, commit — immediate with one member),
2. applies the committed entries to LMDB in one write transaction (the physical operations of
   each proposal, then the group's ``raft`` meta record: epoch and last applied index),
3. commits that transaction with an fsync (group commit: one sync per group per round,
   whatever number of proposals arrived meanwhile), and only then
4. answers every proposal ``ok``.

The raft log is kept in memory and compacted after each apply: with a single member the LMDB
commit is the durable point, and the ``applied`` index stored in the same transaction tells a
reconnecting worker which proposals to send again (protocol.py). Clustering replaces the
membership and gives the log a disk, not this code path.

Killed with SIGKILL, the process loses nothing that was answered: answers leave only after the
sync. The supervisor restarts it; workers reconnect, reopen their groups and resend what was not
yet applied.

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
import time

import cbor2
import lmdb

from natsx.raft import Config, MemoryStorage, RawNode
from natsx.raftd import protocol as P
from natsx.supervisor import childsignals
from natsx.storage.lmdbstore import _MAX_DBS, _open_dbs, DEFAULT_MAP_SIZE, FORMAT

log = logging.getLogger("natsx")

_RAFT = struct.Struct("<QQ")      # meta/raft: epoch, last applied proposal index
STOP_GRACE = 5.0


class Group:
    """One stream environment and its single-member RAFT group."""

    def __init__(self, gid: int, path: str, map_size: int, sync_interval: int = 0) -> None:
        self.gid = gid
        self.path = path
        # 0: every commit is synced before it is answered (the default); otherwise the
        # explicit ``sync_interval`` trade: commits are synced that often (``sync_due``).
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
        self.storage = MemoryStorage()
        self.node = RawNode(Config(id=1), self.storage, peers=[1])
        self._cycle()
        self.queue: list = []           # (conn, epoch, index, ops) in arrival order

    def reopen(self) -> tuple[int, int]:
        """A new writer: bump the epoch (durably) so the old one's proposals are refused."""
        self.epoch += 1
        # Reader slots of a worker that died would pin old pages until cleared.
        self.env.reader_check()
        with self.env.begin(write=True) as txn:
            txn.put(b"raft", _RAFT.pack(self.epoch, self.applied), db=self.dbs[P.DB_META])
        return self.epoch, self.applied

    def _cycle(self) -> list:
        node, storage, committed = self.node, self.storage, []
        while node.has_ready():
            rd = node.ready()
            if rd.snapshot is not None:
                storage.apply_snapshot(rd.snapshot)
            storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
            committed.extend(e for e in rd.committed_entries if e.data)
            node.advance(rd)
        return committed

    def run(self) -> list:
        """Commits and applies the queued proposals; returns the answers to send."""
        queue, self.queue = self.queue, []
        try:
            return self._run(queue)
        except Exception as exc:
            log.exception("raft: applying to %s failed", self.path)
            return [(c, ["err", self.gid, i, str(exc)]) for c, _e, i, _o in queue]

    def _run(self, queue: list) -> list:
        answers = []
        accepted = {}
        for conn, epoch, index, ops in queue:
            if epoch != self.epoch:
                answers.append((conn, ["err", self.gid, index, "stale epoch"]))
            elif index <= self.applied or index in accepted:
                answers.append((conn, ["ok", self.gid, index]))
            elif index != self.applied + 1 + len(accepted):
                answers.append((conn, ["err", self.gid, index, "out of order"]))
            else:
                accepted[index] = conn
                # The entry is the proposal itself: what is applied is what was committed.
                self.node.propose(cbor2.dumps([index, ops]))
        if not accepted:
            return answers
        entries = [cbor2.loads(e.data) for e in self._cycle()]
        if entries:
            self._apply([ops for _index, ops in entries], entries[-1][0])
        self.storage.compact(self.storage.last_index())
        done = {index for index, _ops in entries}
        for index, conn in accepted.items():
            answers.append((conn, ["ok", self.gid, index] if index in done
                            else ["err", self.gid, index, "not committed"]))
        return answers

    def _apply(self, batches: list, last: int) -> None:
        dbs = self.dbs
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for ops in batches:
                        for op, db, key, value in ops:
                            d = dbs[db]
                            if op == P.OP_PUT:
                                txn.put(key, value, db=d)
                            elif op == P.OP_DEL:
                                txn.delete(key, db=d)
                            elif op == P.OP_DEL_DUP:
                                txn.delete(key, value, db=d)
                            elif op == P.OP_DROP:
                                txn.drop(d, delete=False)
                    txn.put(b"raft", _RAFT.pack(self.epoch, last), db=dbs[P.DB_META])
                if self.sync_interval and self.sync_at is None:
                    self.sync_at = time.monotonic() + self.sync_interval
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
        self.applied = last

    def sync_due(self, now: float) -> None:
        if self.sync_at is not None and now >= self.sync_at:
            self.sync_at = None
            self.env.sync(True)

    def close(self) -> None:
        if self.sync_at is not None:
            self.env.sync(True)
        self.env.close()


class Conn:
    __slots__ = ("sock", "decoder", "alive")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = P.Decoder()
        self.alive = True

    def send(self, msg: list) -> None:
        if not self.alive:
            return
        try:
            self.sock.sendall(P.frame(msg))
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

    def serve(self) -> None:
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
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
                if len(self.sel.get_map()) <= 1 or time.monotonic() > deadline:
                    break
            try:
                events = self.sel.select(0.1 if self.stopping else 1.0)
            except InterruptedError:
                continue
            for key, _ in events:
                if key.data is None:
                    self._accept()
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
            data = conn.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            conn.alive = False
            self.sel.unregister(conn.sock)
            conn.sock.close()
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

    def _handle(self, conn: Conn, msg: list) -> None:
        kind = msg[0]
        if kind == "prop":
            _, gid, epoch, index, ops = msg
            group = self.groups.get(gid)
            if group is None:
                conn.send(["err", gid, index, "unknown group"])
            else:
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
            epoch, applied = group.reopen()
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
        for group in list(self.groups.values()):
            if not group.queue:
                continue
            for conn, answer in group.run():
                conn.send(answer)


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
    server.serve()
    return 0
