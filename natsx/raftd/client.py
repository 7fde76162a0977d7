"""The worker's end of the channel to the raft process (see protocol.py and server.py).

Theory of operation
-------------------
One ``RaftClient`` per worker, one ``RaftGroup`` per file stream the worker owns. Opening and
dropping a group are rare (stream create, delete, recovery) and synchronous: a blocking round
trip. Proposals are asynchronous: ``propose`` numbers the group's next entry, keeps it in
``inflight`` and sends it; the reader task (``run``) takes the answers (moving the group's
``confirmed``, and ``errors`` for a refused entry) and calls ``on_progress`` once per read that
moved anything (natsx.jetstream.raftlink releases what waited). Durable is not yet in
LMDB: the raft process's applier follows its log and says so (``applied``); the store keeps
what LMDB does not show yet in its overlay until then (natsx.storage.raftlmdb).

When the raft process dies, the reader sees the channel close and reconnects (the supervisor
keeps the socket bound and restarts the process). It reopens every group, learns from each the
last applied index, forgets the in-flight entries up to it (they are durable: the answer was
lost, not the write) and sends the others again under the new epoch. Nothing waiting is
answered meanwhile, so no acknowledgement leaves for a write that might be lost.
"""
from __future__ import annotations

import logging
import select
import socket
import time

import trio

from natsx.raftd import protocol as P

log = logging.getLogger("natsx")

CALL_TIMEOUT = 30.0


class RaftError(Exception):
    pass


class RaftGroup:
    __slots__ = ("client", "path", "map_size", "sync_interval", "gid", "epoch", "next_index", "confirmed",
                 "inflight", "errors", "refused", "applied", "closed")

    def __init__(self, client: "RaftClient", path: str, map_size: int,
                 sync_interval: int = 0) -> None:
        self.client = client
        self.path = path
        self.map_size = map_size
        self.sync_interval = sync_interval
        self.gid = 0
        self.epoch = 0
        self.next_index = 1
        self.confirmed = 0
        self.inflight: dict[int, bytes] = {}     # index -> its operations (encode_ops)
        self.errors: dict[int, str] = {}
        self.refused = 0        # how many entries were refused so far
        self.applied = 0        # entries up to this one are in LMDB (confirmed: durable)
        self.closed = False

    def propose(self, ops: list) -> int:
        return self.client.propose(self, ops)


class RaftClient:
    def __init__(self, address) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.decoder = P.Decoder()
        self.groups: dict[int, RaftGroup] = {}     # by gid of the current connection
        self.all: list[RaftGroup] = []
        self._replies: dict[int, list] = {}
        self._req = 0
        #: Called when entries became durable or were refused (natsx.jetstream.raftlink):
        #: once per read of the channel, or at once outside the reader.
        self.on_progress = None
        self._feeding = False
        self._progressed = False

    # -- connection ------------------------------------------------------------------------

    def _disconnect(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                trio.lowlevel.notify_closing(sock)
            except RuntimeError:
                pass
            sock.close()
        self.decoder = P.Decoder()
        self.groups = {}
        for group in self.all:
            group.gid = 0

    def _connect(self, deadline: float) -> None:
        """Connects and reopens every group, blocking; raises OSError after ``deadline``."""
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.address)
                break
            except OSError:
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        self.sock = sock
        for group in self.all:
            self._reopen(group, deadline)

    async def _reconnect(self) -> None:
        """The reader's reconnect: the same as ``_connect`` but waiting on trio, so the worker
        keeps serving while the raft process restarts."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        reqs = {}
        for group in self.all:
            self._req += 1
            reqs[self._req] = group
            sock.sendall(P.frame(["open", self._req, group.path, group.map_size,
                                  group.sync_interval]))
        while reqs:
            with trio.fail_after(CALL_TIMEOUT):
                await trio.lowlevel.wait_readable(sock)
            if sock is not self.sock:
                return
            try:
                data = P.recv(sock)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                raise OSError("the raft process closed the channel")
            for msg in self.decoder.feed(data):
                self._dispatch(msg)
            for req in [r for r in reqs if r in self._replies]:
                reply = self._replies.pop(req)
                if reply[5]:
                    raise RaftError(reply[5])
                self._adopt(reqs.pop(req), reply[2], reply[3], reply[4])

    def _reopen(self, group: RaftGroup, deadline: float) -> None:
        self._adopt(group, *self._open_raw(group, deadline))

    def _adopt(self, group: RaftGroup, gid: int, epoch: int, applied: int) -> None:
        group.gid, group.epoch = gid, epoch
        self.groups[gid] = group
        # The raft process answers "opened" once LMDB holds every durable entry.
        group.applied = max(group.applied, applied)
        if group.next_index == 1 and not group.inflight:
            group.next_index = applied + 1
            group.confirmed = applied
            return
        for index in [i for i in group.inflight if i <= applied]:
            del group.inflight[index]
            group.confirmed = max(group.confirmed, index)
        for index, blob in group.inflight.items():
            if not isinstance(blob, bytes):
                blob = group.inflight[index] = P.encode_ops(blob)
            self._send_raw(P.prop_frame(gid, epoch, index, blob))
        self._notify()

    def _open_raw(self, group: RaftGroup, deadline: float) -> tuple[int, int, int]:
        self._req += 1
        req = self._req
        self.sock.sendall(P.frame(["open", req, group.path, group.map_size,
                                   group.sync_interval]))
        reply = self._await_reply(req, deadline)
        if reply[5]:
            raise RaftError(reply[5])
        return reply[2], reply[3], reply[4]

    def _await_reply(self, req: int, deadline: float) -> list:
        while req not in self._replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError("the raft process did not answer")
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            data = P.recv(self.sock)
            if not data:
                raise OSError("the raft process closed the channel")
            for msg in self.decoder.feed(data):
                self._dispatch(msg)
        return self._replies.pop(req)

    def _send(self, msg: list) -> None:
        self._send_raw(P.frame(msg))

    def _send_raw(self, data: bytes) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self._disconnect()

    def _call(self, fn, *args):
        """Runs a synchronous exchange, reconnecting (and retrying) until CALL_TIMEOUT."""
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            try:
                if self.sock is None:
                    self._connect(deadline)
                return fn(deadline, *args)
            except OSError:
                self._disconnect()
                if time.monotonic() >= deadline:
                    raise RaftError("the raft process is unreachable") from None

    # -- groups ----------------------------------------------------------------------------

    def open(self, path: str, map_size: int, sync_interval: int = 0) -> RaftGroup:
        """Opens (creating) the environment at ``path`` in the raft process; blocking.
        ``sync_interval`` (ns) other than 0 lets commits reach the disk lazily."""
        group = RaftGroup(self, path, map_size, sync_interval)
        self._call(lambda deadline: self._reopen(group, deadline))
        self.all.append(group)
        return group

    def drop(self, group: RaftGroup, remove: bool) -> None:
        """Closes the group's environment in the raft process (deleting it); blocking."""
        group.closed = True
        if group in self.all:
            self.all.remove(group)

        if self.groups.get(group.gid) is group:
            del self.groups[group.gid]

        def exchange(deadline):
            self._req += 1
            req = self._req
            self.sock.sendall(P.frame(["drop", req, group.path, remove]))
            self._await_reply(req, deadline)
        try:
            self._call(exchange)
        finally:
            self._notify()     # what waited on the group's entries may go

    def propose(self, group: RaftGroup, ops: list) -> int:
        index = group.next_index
        group.next_index += 1
        blob = group.inflight[index] = P.encode_ops(ops)
        if self.sock is not None and self.groups.get(group.gid) is group:
            self._send_raw(P.prop_frame(group.gid, group.epoch, index, blob))
        return index

    def _notify(self) -> None:
        if self._feeding:
            self._progressed = True
        elif self.on_progress is not None:
            self.on_progress()

    # -- answers ---------------------------------------------------------------------------

    def _dispatch(self, msg: list) -> None:
        kind = msg[0]
        if kind in ("ok", "err"):
            group = self.groups.get(msg[1])
            if group is None:
                return
            index = msg[2]
            if group.inflight.pop(index, None) is None:
                return
            if kind == "err":
                log.error("JetStream: raft refused entry %d of %s: %s", index, group.path,
                          msg[3])
                group.errors[index] = msg[3]
                group.refused += 1
            if index > group.confirmed:
                group.confirmed = index
            self._notify()
        elif kind == "applied":
            group = self.groups.get(msg[1])
            if group is not None and msg[2] > group.applied:
                group.applied = msg[2]
        elif kind in ("opened", "dropped"):
            self._replies[msg[1]] = msg

    async def run(self) -> None:
        """Reads answers; reconnects after the raft process went away."""
        while True:
            if self.sock is None:
                try:
                    await self._reconnect()
                except (OSError, trio.TooSlowError, trio.ClosedResourceError):
                    self._disconnect()
                    await trio.sleep(0.05)
                    continue
                except RaftError as exc:
                    log.error("JetStream: reopening a stream in the raft process: %s", exc)
                    self._disconnect()
                    await trio.sleep(0.5)
                    continue
                log.info("JetStream: connected to the raft process")
            sock = self.sock
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                continue
            if sock is not self.sock:
                continue
            try:
                data = P.recv(sock)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                log.warning("JetStream: lost the raft process; reconnecting")
                self._disconnect()
                continue
            self._feeding = True
            try:
                for msg in self.decoder.feed(data):
                    self._dispatch(msg)
            finally:
                self._feeding = False
            if self._progressed:
                self._progressed = False
                if self.on_progress is not None:
                    self.on_progress()

    def close(self) -> None:
        self._disconnect()
