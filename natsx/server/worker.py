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

from natsx import SERVER_VERSION
from natsx._speedups import load
from natsx.auth.nkeys import new_nonce
from natsx.auth.users import Authenticator
from natsx.protocol import encode
from natsx.server import trace
from natsx.server.accounts import Account, system_account_name
from natsx.server.authorization import check_subscribe
from natsx.server.connection import (MAX_CONNECTIONS, SERVER_SHUTDOWN, STALE,
                                     ClientConnection)
from natsx.server.options import Options

log = logging.getLogger("natsx")

_core = load("core")
_sublist = load("sublist")


def _with_tls_required(info: dict) -> dict:
    out = {}
    for key, value in info.items():
        if key in ("tls_verify", "tls_available", "max_payload") and "tls_required" not in out:
            out["tls_required"] = True
        out[key] = value
    return out


class Server:
    """The state of one worker."""

    def __init__(self, options: Options, *, server_id: str, worker_index: int = 0,
                 worker_count: int = 1, listener: socket.socket | None = None,
                 ws_listener: socket.socket | None = None) -> None:
        self.options = options
        self.server_id = server_id
        self.server_name = options.server_name or server_id
        self.worker_index = worker_index
        self.worker_count = worker_count
        self.listener = listener
        self.ws_listener = ws_listener   # the websocket port (natsx.server.wsaccept)
        self.start_time = time.time()
        self.router = _core.Router(int.from_bytes(os.urandom(8), "little") | 1)
        self.global_account = Account("$G", _sublist.Sublist(cache=not options.disable_sublist_cache))
        self.router.sublists[b"$G"] = self.global_account.sublist
        self.accounts: dict[str, Account] = {"$G": self.global_account}
        self._create_accounts(options)
        self.apply_mappings(options)
        self.mesh = None
        # The supervisor's shared table (natsx.server.mesh.PeerTable): it counts every
        # worker's connections, so max_connections holds for the server as in Go.
        self.peer_table = None
        self._counted: set[int] = set()   # cids this worker counts as open in the table
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
        # Subscription -> handler of a run of its deliveries (InternalClient.subscribe).
        self.batch_handlers: dict = {}
        self.sub_hooks: list = []
        # hook(account, sub) after a client of this worker unsubscribed or disconnected
        self.unsub_hooks: list = []
        self._in_batch = False
        self.jetstream = None
        self.imports = None
        if any(c.stream_imports or c.service_imports for c in (options.accounts or {}).values()):
            from natsx.server.imports import Imports

            self.imports = Imports(self)
            # Now, before the worker has a mesh: see natsx.server.imports, "Workers".
            self.imports.start(options.accounts)
        self.operator = None
        if options.operator_mode:
            from natsx.server.operator import Operator

            self.operator = Operator(self)
        self._info_base = self._build_info()
        self.tls_context = None
        self.setup_tls(options)
        # connection_rate_limit, fixed at startup as in Go (natsx.server.tls_rate)
        from natsx.server.tls_rate import HandshakeRate

        self.tls_rate = HandshakeRate.for_options(options)
        self.shutdown_event = trio.Event()
        from natsx.server.system import SystemServices

        # The $SYS services and advisories (natsx.server.system); Go always runs them.
        self.system = SystemServices(self)

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
        tls = o.tls_config is not None
        # Go: TLSRequired unless allow_non_tls, TLSAvailable when TLS is optional.
        if tls and not o.allow_non_tls:
            info["tls_required"] = True
        if tls and o.tls_config.verify:
            info["tls_verify"] = True
        if tls and o.allow_non_tls:
            info["tls_available"] = True
        info["max_payload"] = o.max_payload
        if o.jetstream:
            info["jetstream"] = True
        return info

    def info_bytes(self, conn: ClientConnection, *, connect_info: bool = False,
                   tls_first: bool = False) -> bytes:
        info = dict(self._info_base)
        if tls_first and "tls_required" not in info:
            # Go forces TLSRequired in the INFO that follows a "TLS first" handshake.
            info = _with_tls_required(info)
        info["client_id"] = conn.cid
        info["client_ip"] = conn.ip
        if self.auth.nonce_required:
            if not conn.nonce:
                conn.nonce = new_nonce()
            info["nonce"] = conn.nonce
        if self.lame_duck:
            info["ldm"] = True
        if connect_info:
            # Go: the client's own limit (applyAccountLimits may have lowered it).
            info["max_payload"] = conn.core.max_payload
            info["connect_info"] = True
            info["remote_account"] = conn.account_name
            acc = self.accounts.get(conn.account_name)
            info["acc_is_sys"] = bool(acc is not None and acc.is_system)
        if conn.ws is not None:
            from natsx.server.wsaccept import ws_info

            info = ws_info(self, conn, info)
        return encode.info(info)

    def auth_for(self, conn: ClientConnection):
        """The Authenticator deciding ``conn``: WebSocket clients may have their own."""
        if getattr(conn, "ws", None) is None:
            return self.auth
        from natsx.server.wsaccept import authenticator

        return authenticator(self)

    def setup_tls(self, options: Options) -> None:
        """The SSL context for new client connections, from ``options.tls_config``
        (natsx.server.tls); rebuilt on a reload, so replaced certificates are used."""
        if options.tls_config is None:
            self.tls_context = None
            return
        from natsx.server.tls import server_context

        self.tls_context = server_context(options.tls_config)

    def reload_tls(self, old: Options) -> None:
        """A reload: the new context for new connections (the old one if the files went
        bad meanwhile), and the clients whose key is no longer pinned closed (Go:
        recheckPinnedCerts)."""
        from natsx.server.connection import TLS_HANDSHAKE_ERROR
        from natsx.server.tls import TLSSetupError, pinned

        try:
            self.setup_tls(self.options)
        except TLSSetupError as exc:
            log.error("TLS configuration not reloaded: %s", exc)
        pins = self.options.tls_pinned_certs
        if pins == old.tls_pinned_certs:
            return
        gone = [c for c in self.connections.values()
                if not c.closed and c.tls and not pinned(c.sock, pins)]
        if gone:
            log.info("Disconnect %d clients due to pinned certs reload", len(gone))
            for conn in gone:
                conn.close(TLS_HANDSHAKE_ERROR)

    # ------------------------------------------------------------------ clients

    def _create_accounts(self, options: Options) -> None:
        """The configured accounts and the system account (Go creates ``$SYS`` implicitly),
        each with its own sublist, registered for the mesh by name."""
        system = system_account_name(options)
        for name in list(options.accounts or ()) + ([system] if system else []):
            if name not in self.accounts:
                acc = Account(name, _sublist.Sublist(cache=not options.disable_sublist_cache),
                              is_system=name == system)
                self.accounts[name] = acc
                self.router.sublists[name.encode()] = acc.sublist
            elif name == system:
                self.accounts[name].is_system = True

    def apply_mappings(self, options: Options) -> None:
        """Installs the configured subject mappings (the top-level block is the global
        account's) in every configured account; at startup and on reload."""
        from natsx.server.mapping import build

        configs = options.accounts or {}
        for name, acc in self.accounts.items():
            if name == "$G":
                spec = (options.mappings or ()) + tuple(
                    getattr(configs.get("$G"), "mappings", ()) or ())
            elif name in configs:
                spec = configs[name].mappings
            else:
                continue   # JWT accounts: natsx.server.operator
            try:
                acc.set_mappings(build(spec))
            except ValueError as exc:   # checked when the config was read
                log.error("account %s: mappings not applied: %s", name, exc)

    def bind_account(self, conn: ClientConnection, name: str) -> None:
        """Moves a connection (before it has subscriptions) into account ``name``."""
        acc = self.accounts.get(name or "$G", self.global_account)
        core = conn.core
        core.sublist = acc.sublist
        core.account = acc
        core.mapper = acc.mapper
        core.account_name = acc.name.encode()
        core.reset_match_memo()
        conn.account_name = acc.name

    def sublist_for(self, account: bytes):
        """The sublist of an account named by a peer worker."""
        sl = self.router.sublists.get(account)
        if sl is None and self.operator is not None:
            # A JWT account a peer worker resolved: bare here until a client of ours needs it.
            sl = self.ensure_account(account.decode("utf-8", "replace")).sublist
        if sl is None:
            raise KeyError(account)
        return sl

    def ensure_account(self, name: str) -> Account:
        """The account ``name``, created empty (its sublist registered for the mesh) if new."""
        acc = self.accounts.get(name)
        if acc is None:
            acc = Account(name, _sublist.Sublist(cache=not self.options.disable_sublist_cache),
                          is_system=name == system_account_name(self.options))
            self.accounts[name] = acc
            self.router.sublists[name.encode()] = acc.sublist
        return acc

    def new_client_core(self, cid: int):
        o = self.options
        core = _core.Client(cid, self.router, self.global_account.sublist)
        core.account = self.global_account
        core.mapper = self.global_account.mapper
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
            if self.options.jetstream:
                # Every worker runs the streams it owns (natsx.jetstream.shards) and
                # relays the requests for the others (natsx.jetstream.relay).
                from natsx.jetstream import JetStream

                self.jetstream = JetStream(self)
                self.jetstream.start(nursery)
            if self.operator is not None:
                self.operator.start(nursery)
            if self.system is not None:
                self.system.start(nursery)
            if self.options.jetstream and self.mesh is not None:
                await self._await_jetstream()
                self.run_batch(self.jetstream.set_ready)
            nursery.start_soon(self._accept_loop)
            if self.tls_rate is not None:
                nursery.start_soon(self.tls_rate.log_loop)
            if self.ws_listener is not None:
                from natsx.server.wsaccept import accept_loop

                nursery.start_soon(accept_loop, self)
            task_status.started()
            await self.shutdown_event.wait()
            nursery.cancel_scope.cancel()

    async def _await_jetstream(self, timeout: float = 10.0) -> None:
        """Each stream runs in one worker and serves the clients of every worker through the
        mesh (natsx.jetstream.shards): a worker accepts clients once the relay interest of
        every other worker in the configured accounts has reached it, so a client's first
        request finds a responder, as it would on a server that started JetStream before
        listening. Connections wait in the backlog meanwhile. (Accounts created at run
        time, JWT ones, are relayed as soon as the other workers have loaded them.)"""
        o = self.options
        system = system_account_name(o)
        names = ["$G"] + [n for n in (o.accounts or ()) if n != system]
        waits = [(self.accounts[n].sublist, b"$NATSX.JSAPI.%d.INFO" % w)
                 for n in names if n in self.accounts
                 for w in range(self.worker_count) if w != self.worker_index]
        with trio.move_on_after(timeout):
            for sublist, subject in waits:
                while not sublist.match(subject).psubs:
                    await trio.sleep(0.01)
            return
        log.warning("JetStream did not answer within %.0fs; accepting clients anyway", timeout)

    async def accept_from(self, listener: socket.socket, what: str, handle) -> None:
        """Accepts on ``listener`` for ever, handing each new non-blocking socket to
        ``handle``; in lame duck mode new connections are closed at once."""
        listener.setblocking(False)
        while True:
            try:
                sock, _addr = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                log.error("%saccept failed: %s", what, exc)
                await trio.sleep(0.05)
                continue
            if self.lame_duck:
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handle(sock)

    async def _accept_loop(self) -> None:
        await self.accept_from(self.listener, "", self._accept_client)

    def _accept_client(self, sock: socket.socket) -> None:
        self.total_connections += 1
        conn = ClientConnection(self, sock, self._allocate_cid())
        if not self._admit(conn):
            # Go sends INFO first, then the error.
            conn.queue(self.info_bytes(conn))
            conn.close(MAX_CONNECTIONS, "maximum connections exceeded")
            sock.close()
            self.closed.append(conn)
            return
        self.connections[conn.cid] = conn
        self._nursery.start_soon(conn.run)

    def _admit(self, conn: ClientConnection) -> bool:
        """Counts ``conn`` against max_connections, across workers when there are several
        (Go: ``len(s.clients) >= opts.MaxConn`` under the server lock)."""
        limit = self.options.max_connections
        table = self.peer_table
        if table is None:
            if limit < 0 or len(self.connections) >= limit:
                return False
        elif not table.reserve_connection(self.worker_index, len(self._counted), limit):
            return False
        self._counted.add(conn.cid)
        return True

    def uncount_connection(self, conn: ClientConnection) -> None:
        """``conn`` no longer counts against max_connections (closed, or about to be)."""
        if conn.cid in self._counted:
            self._counted.discard(conn.cid)
            if self.peer_table is not None:
                self.peer_table.set_connections(self.worker_index, len(self._counted))

    def remove_connection(self, conn: ClientConnection) -> None:
        self.uncount_connection(conn)
        if self.connections.pop(conn.cid, None) is None:
            return
        if self.operator is not None:
            self.operator.connection_closed(conn)
        subs = list(conn.core.subs.values())
        if subs:
            sl = conn.core.sublist
            for sub in subs:
                sub.closed = True
            sl.remove_batch(subs)
        if self.mesh is not None:
            for sub in subs:
                self.mesh.sub_removed(conn.core.account_name, sub)
        for hook in self.unsub_hooks:
            for sub in subs:
                hook(conn.core.account_name, sub)
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
        if self.system is not None:
            self.system.client_disconnected(conn)

    def note_slow_consumer(self, conn: ClientConnection) -> None:
        self.slow_consumers += 1
        self.slow_by_account[conn.account_name] = \
            self.slow_by_account.get(conn.account_name, 0) + 1

    def note_auth_error(self, conn: ClientConnection) -> None:
        self.auth_errors += 1
        if self.system is not None:
            self.system.auth_error(conn)

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
        # A JWT user's limit (natsx.server.operator) replaces the server's; -1 is unlimited.
        limit = conn.max_subs if conn.max_subs is not None else (o.max_subscriptions or -1)
        if limit != -1 and len(core.subs) >= limit:
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
            for hook in self.unsub_hooks:
                hook(core.account_name, sub)

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
                        if sub.client.trace:
                            trace.expired(sub.client.conn, sub.sid)
                if router.internal:
                    internal, router.internal = router.internal, []
                    if self.batch_handlers:
                        self._dispatch_runs(internal)
                    else:
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

    def _dispatch_runs(self, internal: list) -> None:
        """Hands each run of consecutive deliveries to a subscription with a batch handler
        to that handler in one call, the others one by one, in order."""
        batch_handlers = self.batch_handlers
        n = len(internal)
        i = 0
        while i < n:
            item = internal[i]
            sub = item[0]
            batch = batch_handlers.get(sub)
            if batch is None:
                self._dispatch_internal(item)
                i += 1
                continue
            j = i + 1
            while j < n and internal[j][0] is sub:
                j += 1
            try:
                batch(internal[i:j])
            except Exception:
                log.exception("internal subscription %s on %r failed", sub.sid, sub.subject)
            i = j

    # ------------------------------------------------------------------ internal clients

    def internal_client(self, account_name: str | bytes):
        """The server's own client in an account (natsx.server.internal)."""
        name = account_name.encode() if isinstance(account_name, str) else account_name
        client = self.internal_clients.get(name)
        if client is None:
            from natsx.server.internal import InternalClient

            core = self.new_client_core(0)
            core.sublist = self.sublist_for(name)
            core.account = self.accounts.get(name.decode(), core.account)
            core.mapper = None   # the server's own publishes are not mapped (Go)
            core.account_name = name
            client = self.internal_clients[name] = InternalClient(self, name, core)
        return client

    def internal_subscribe(self, account_name, subject: bytes, handler, queue: bytes | None = None,
                           batch=None):
        """Subscribes ``handler(subject, reply, headers, payload, publisher_core)``; it runs
        for each delivery after the read batch (``batch``: see InternalClient.subscribe).
        Returns the Subscription."""
        return self.internal_client(account_name).subscribe(subject, handler, queue,
                                                            batch=batch)

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
        if self.system is not None:
            self.system.shutdown(lame_duck=True)
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
        if self.system is not None:
            self.system.shutdown()
        for conn in list(self.connections.values()):
            conn.close(SERVER_SHUTDOWN)
        if self.jetstream is not None:
            self.jetstream.stop()
        self.shutdown_event.set()
