"""A worker: a complete NATS server for the connections it accepted.

Theory of operation
-------------------
The worker runs one trio loop. It accepts on a listening socket it inherited from the
supervisor, creates a ``ClientConnection`` per client and keeps the accounts' sublists (a
client moves to its user's account at CONNECT; imports between accounts are internal
subscriptions, natsx.server.imports), the shared ``Router`` and the counters that /varz
and /connz report. The compiled core does the
per-message work; this module runs once per read batch (``after_batch``: flush the
connections the batch touched, apply auto-unsubscribes, dispatch internal deliveries, close
slow consumers) and once per control operation (SUB, UNSUB, CONNECT). It answers the
admin process over its control channel (``natsx.server.control``).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque

import trio

from natsx import SERVER_VERSION, __version__
from natsx._speedups import load
from natsx.auth.nkeys import new_nonce
from natsx.auth.users import Authenticator
from natsx.protocol import encode
from natsx.server.accounts import DEFAULT_SYSTEM_ACCOUNT, Account
from natsx.server.authorization import check_subscribe
from natsx.server.connection import (MAX_CONNECTIONS, SERVER_SHUTDOWN, STALE,
                                     ClientConnection)
from natsx.server.options import Options

log = logging.getLogger("natsx")

_core = load("core")
_sublist = load("sublist")


class Server:
    """The state of one worker."""

    def __init__(self, options: Options, *, server_id: str, worker_index: int = 0,
                 worker_count: int = 1, listener: socket.socket | None = None) -> None:
        self.options = options
        self.server_id = server_id
        self.server_name = options.server_name or server_id
        self.worker_index = worker_index
        self.worker_count = worker_count
        self.listener = listener
        self.start_time = time.time()
        self.router = _core.Router(int.from_bytes(os.urandom(8), "little") | 1)
        self.global_account = Account("$G", _sublist.Sublist(cache=not options.disable_sublist_cache))
        self.router.sublists[b"$G"] = self.global_account.sublist
        self.accounts: dict[str, Account] = {"$G": self.global_account}
        self._create_accounts(options)
        self.mesh = None
        self.auth = Authenticator(options)
        self.connections: dict[int, ClientConnection] = {}
        self.closed: deque = deque(maxlen=max(options.max_closed_clients, 0))
        self.total_connections = 0
        self.slow_consumers = 0
        self.stale_connections = 0
        # Per account, what its closed connections did ([in msgs, in bytes, out msgs, out
        # bytes]) and its slow consumers: /accstatz adds the open connections' counters.
        self.closed_traffic: dict[str, list[int]] = {}
        self.slow_by_account: dict[str, int] = {}
        self.auth_errors = 0
        self.lame_duck = False
        self._next_cid = worker_index + 1
        self._nursery: trio.Nursery | None = None
        # The server's own clients (JetStream), per account, and what runs after a batch.
        self.internal_clients: dict = {}
        self.batch_hooks: list = []
        self.sub_hooks: list = []
        self._in_batch = False
        self.jetstream = None
        self.imports = None
        if any(c.stream_imports or c.service_imports for c in (options.accounts or {}).values()):
            from natsx.server.imports import Imports

            self.imports = Imports(self)
            # Now, before the worker has a mesh: see natsx.server.imports, "Workers".
            self.imports.start(options.accounts)
        self._info_base = self._build_info()
        self.shutdown_event = trio.Event()

    # ------------------------------------------------------------------ INFO

    def _build_info(self) -> dict:
        o = self.options
        info = {
            "server_id": self.server_id,
            "server_name": self.server_name,
            "version": SERVER_VERSION,
            "proto": 1,
            "go": "python",
            "host": o.host,
            "port": o.port,
            "headers": not o.no_header_support,
        }
        # Keys in the order of Go's Info struct; empty omitempty fields (git_commit) left out.
        if self.auth.required:
            info["auth_required"] = True
        info["max_payload"] = o.max_payload
        if o.jetstream:
            info["jetstream"] = True
        return info

    def info_bytes(self, conn: ClientConnection, *, connect_info: bool = False) -> bytes:
        info = dict(self._info_base)
        info["client_id"] = conn.cid
        info["client_ip"] = conn.ip
        if self.auth.nonce_required:
            if not conn.nonce:
                conn.nonce = new_nonce()
            info["nonce"] = conn.nonce
        if self.lame_duck:
            info["ldm"] = True
        if connect_info:
            info["connect_info"] = True
            info["remote_account"] = conn.account_name
            acc = self.accounts.get(conn.account_name)
            info["acc_is_sys"] = bool(acc is not None and acc.is_system)
        return encode.info(info)

    # ------------------------------------------------------------------ clients

    def _create_accounts(self, options: Options) -> None:
        """The configured accounts and the system account (Go creates ``$SYS`` implicitly),
        each with its own sublist, registered for the mesh by name."""
        system = options.system_account or DEFAULT_SYSTEM_ACCOUNT
        for name in list(options.accounts or ()) + [system]:
            if name not in self.accounts:
                acc = Account(name, _sublist.Sublist(cache=not options.disable_sublist_cache),
                              is_system=name == system)
                self.accounts[name] = acc
                self.router.sublists[name.encode()] = acc.sublist
            elif name == system:
                self.accounts[name].is_system = True

    def bind_account(self, conn: ClientConnection, name: str) -> None:
        """Moves a connection (before it has subscriptions) into account ``name``."""
        acc = self.accounts.get(name or "$G", self.global_account)
        core = conn.core
        core.sublist = acc.sublist
        core.account = acc
        core.account_name = acc.name.encode()
        core.reset_match_memo()
        conn.account_name = acc.name

    def sublist_for(self, account: bytes):
        """The sublist of an account named by a peer worker."""
        return self.router.sublists[account]

    def new_client_core(self, cid: int):
        o = self.options
        core = _core.Client(cid, self.router, self.global_account.sublist)
        core.account = self.global_account
        core.account_name = self.global_account.name.encode()
        core.max_payload = o.max_payload
        core.max_control_line = o.max_control_line
        core.max_pending = o.max_pending
        return core

    def skip_client_ids(self, strides: int) -> None:
        self._next_cid += strides * self.worker_count

    def _allocate_cid(self) -> int:
        cid = self._next_cid
        self._next_cid += self.worker_count
        return cid

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.options.jetstream and self.worker_index == 0:
                from natsx.jetstream import JetStream

                self.jetstream = JetStream(self)
                self.jetstream.start(nursery)
            nursery.start_soon(self._accept_loop)
            task_status.started()
            await self.shutdown_event.wait()
            nursery.cancel_scope.cancel()

    async def _accept_loop(self) -> None:
        listener = self.listener
        listener.setblocking(False)
        while True:
            try:
                sock, _addr = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                log.error("accept failed: %s", exc)
                await trio.sleep(0.05)
                continue
            if self.lame_duck:
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.total_connections += 1
            conn = ClientConnection(self, sock, self._allocate_cid())
            if len(self.connections) >= self.options.max_connections:
                # Go sends INFO first, then the error.
                conn.queue(self.info_bytes(conn))
                conn.close(MAX_CONNECTIONS, "maximum connections exceeded")
                sock.close()
                self.closed.append(conn)
                continue
            self.connections[conn.cid] = conn
            self._nursery.start_soon(conn.run)

    def remove_connection(self, conn: ClientConnection) -> None:
        if self.connections.pop(conn.cid, None) is None:
            return
        subs = list(conn.core.subs.values())
        if subs:
            sl = conn.core.sublist
            for sub in subs:
                sub.closed = True
            sl.remove_batch(subs)
        if self.mesh is not None:
            for sub in subs:
                self.mesh.sub_removed(conn.core.account_name, sub)
        conn.final_subs = subs     # /connz?state=closed&subs=detail lists them
        conn.core.subs = {}
        self.closed.append(conn)
        if conn.close_reason == STALE:
            self.stale_connections += 1
        core = conn.core
        traffic = self.closed_traffic.setdefault(conn.account_name, [0, 0, 0, 0])
        traffic[0] += core.in_msgs
        traffic[1] += core.in_bytes
        traffic[2] += core.out_msgs
        traffic[3] += core.out_bytes

    def note_slow_consumer(self, conn: ClientConnection) -> None:
        self.slow_consumers += 1
        self.slow_by_account[conn.account_name] = \
            self.slow_by_account.get(conn.account_name, 0) + 1

    def note_auth_error(self, conn: ClientConnection) -> None:
        self.auth_errors += 1

    # ------------------------------------------------------------------ SUB / UNSUB

    def process_sub(self, conn: ClientConnection, subject: bytes, queue: bytes | None,
                    sid: bytes) -> None:
        core = conn.core
        # Go (processSubEx) checks permissions first, even for a sid already in use.
        if conn.perms is not None and not check_subscribe(self, conn, subject, queue, sid):
            return
        if sid in core.subs:
            # Re-using a sid is ignored: the first SUB wins (Go: processSubEx).
            if core.verbose:
                conn.queue(encode.OK)
                conn._touch()
            return
        o = self.options
        if o.max_sub_tokens and subject.count(b".") + 1 > o.max_sub_tokens:
            conn.queue(encode.err('Permissions Violation for Subscription to "%s", too many tokens'
                                  % subject.decode("utf-8", "replace")))
            conn._touch()
            return
        if o.max_subscriptions and len(core.subs) >= o.max_subscriptions:
            conn.queue(encode.err("maximum subscriptions exceeded"))
            conn._touch()
            return
        sub = _sublist.Subscription(subject, sid, queue, core)
        try:
            core.sublist.insert(sub)
        except ValueError:
            conn.queue(encode.err("Invalid Subject"))
            conn._touch()
            return
        core.subs[sid] = sub
        if self.mesh is not None:
            conn.sub_seq = self.mesh.sub_added(core.account_name, sub)
        for hook in self.sub_hooks:
            hook(core.account_name, sub)
        if core.verbose:
            conn.queue(encode.OK)
            conn._touch()

    def process_unsub(self, conn: ClientConnection, sid: bytes, max_msgs: int) -> None:
        core = conn.core
        sub = core.subs.get(sid)
        if sub is not None:
            if max_msgs > 0 and max_msgs > sub.delivered:
                sub.max_msgs = max_msgs
            else:
                self._unsubscribe(core, sub)
        if core.verbose:
            conn.queue(encode.OK)
            conn._touch()

    def _unsubscribe(self, core, sub) -> None:
        if core.subs.get(sub.sid) is sub:
            del core.subs[sub.sid]
        if not sub.closed:
            sub.closed = True
            core.sublist.remove(sub)
            if self.mesh is not None:
                seq = self.mesh.sub_removed(core.account_name, sub)
                if core.conn is not None:
                    # "UNSUB, flush" promises the peers stopped routing here too.
                    core.conn.sub_seq = seq

    # ------------------------------------------------------------------ batches

    def after_batch(self) -> None:
        """Runs once per read batch: what the compiled core left for Python."""
        router = self.router
        self._in_batch = True
        try:
            # Internal handlers and batch hooks (JetStream's group commit) may publish, and
            # what they publish may reach internal subscribers again: run to a fixed point.
            while True:
                if router.expired:
                    expired, router.expired = router.expired, []
                    for sub in expired:
                        self._unsubscribe(sub.client, sub)
                if router.internal:
                    internal, router.internal = router.internal, []
                    for item in internal:
                        self._dispatch_internal(item)
                for hook in self.batch_hooks:
                    hook()
                if not router.internal and not router.expired:
                    break
        finally:
            self._in_batch = False
        touched = router.touched
        if touched:
            router.touched = []
            for core in touched:
                conn = core.conn
                if conn is not None:
                    conn.flush()
                else:
                    core.flush_pending = False
        if self.mesh is not None:
            self.mesh.after_batch()

    def _dispatch_internal(self, item: tuple) -> None:
        sub = item[0]
        handler = sub.client.conn
        if handler is not None:
            handler.deliver(*item)

    # ------------------------------------------------------------------ internal clients

    def internal_client(self, account_name: str | bytes):
        """The server's own client in an account (natsx.server.internal)."""
        from natsx.server.internal import InternalClient

        name = account_name.encode() if isinstance(account_name, str) else account_name
        client = self.internal_clients.get(name)
        if client is None:
            core = self.new_client_core(0)
            core.sublist = self.sublist_for(name)
            core.account = self.accounts.get(name.decode(), core.account)
            core.account_name = name
            client = self.internal_clients[name] = InternalClient(self, name, core)
        return client

    def internal_subscribe(self, account_name, subject: bytes, handler, queue: bytes | None = None):
        """Subscribes ``handler(subject, reply, headers, payload, publisher_core)``; it runs
        for each delivery after the read batch. Returns the Subscription."""
        return self.internal_client(account_name).subscribe(subject, handler, queue)

    def internal_unsubscribe(self, account_name, sub) -> None:
        self.internal_client(account_name).unsubscribe(sub)

    def internal_publish(self, account_name, subject: bytes, reply: bytes | None,
                         headers: bytes | None, payload: bytes,
                         deliver_as: bytes | None = None) -> bool:
        """Routes a message as if a client of the account published it; True if delivered.
        Outside a read batch (timers) the batch is completed here, so it is flushed."""
        did = self.internal_client(account_name).publish(subject, reply, headers, payload,
                                                          deliver_as)
        if not self._in_batch:
            self.after_batch()
        return did

    def run_batch(self, fn, *args):
        """Runs ``fn`` as part of one batch (timers): its publishes are flushed once, after."""
        if self._in_batch:
            return fn(*args)
        self._in_batch = True
        try:
            result = fn(*args)
        finally:
            self._in_batch = False
        self.after_batch()
        return result

    # ------------------------------------------------------------------ stop

    async def lame_duck_mode(self) -> None:
        """Stops accepting, tells clients, then closes them over the LDM duration."""
        if self.lame_duck:
            return
        self.lame_duck = True
        o = self.options
        for conn in list(self.connections.values()):
            if conn.protocol >= 1 and conn.first_pong_sent:
                conn.queue(self.info_bytes(conn))
                conn.flush()
        await trio.sleep(o.lame_duck_grace_period)
        conns = list(self.connections.values())
        if conns:
            pause = max(o.lame_duck_duration - o.lame_duck_grace_period, 0) / len(conns)
            for i, conn in enumerate(conns):
                conn.close(SERVER_SHUTDOWN)
                # Go: spread over the duration, at most 1s apart, no wait after the last.
                if pause and i < len(conns) - 1:
                    await trio.sleep(min(pause, 1.0))
        self.shutdown_event.set()

    def shutdown(self) -> None:
        for conn in list(self.connections.values()):
            conn.close(SERVER_SHUTDOWN)
        if self.jetstream is not None:
            self.jetstream.stop()
        self.shutdown_event.set()
