"""The supervisor: binds the listeners, forks the workers and the admin process, watches them.

Theory of operation
-------------------
In the shape of gunicorn's arbiter. Every listening socket is bound here, before any fork,
so children inherit them and a restarted worker accepts on the same port. Signal handlers
only queue the signal number; the main loop dispatches ``handle_<name>`` and reaps children
with ``waitpid(WNOHANG)``. A worker that dies is restarted; one that dies within
``BOOT_GRACE`` seconds of starting, repeatedly, halts the supervisor instead of
crash-looping. Children ask the kernel for SIGKILL when the supervisor dies
(PR_SET_PDEATHSIG), so a SIGKILLed supervisor never leaves workers holding the ports.
Workers and the raft process bump heartbeat counters in the shared peer table; one whose
counter stalls for ``HEARTBEAT_TIMEOUT`` seconds (stopped, or stuck in a call) is killed
and, reaped, restarted: a stuck raft process would otherwise hold every publish forever.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import socket
import time

from natsx.server.options import Options
from natsx.supervisor import childsignals

log = logging.getLogger("natsx")

BOOT_GRACE = 1.0
MAX_QUICK_DEATHS = 3
STOP_TIMEOUT = 10.0
HEARTBEAT_TIMEOUT = 10.0   # a worker or raft process whose heartbeat stalls this long is killed
_PR_SET_PDEATHSIG = 1
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGQUIT, signal.SIGCHLD)


def die_with_parent(parent_pid: int) -> None:
    """Asks for SIGKILL when the supervisor goes away, and checks it has not already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


class MonitorConfigError(OSError):
    """The monitoring ports cannot be served as configured (Go: StartMonitoring)."""


def bind_tcp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Binds a listening TCP socket; port -1 means any free port, as in the Go server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0 if port < 0 else port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def ring_capacity(o: Options) -> int:
    """Ring size such that the largest message a client may publish fits in one record.

    A ring takes records of up to half its capacity; a forwarded message carries up to
    max_payload bytes of headers and payload, a subject and a reply (each at most a control
    line), and the account with the queue groups to serve.
    """
    from natsx.mesh.ring import DEFAULT_CAPACITY

    largest = 64 + o.max_payload + 3 * o.max_control_line
    capacity = DEFAULT_CAPACITY
    while capacity // 2 < largest:
        capacity *= 2
    return capacity


class Child:
    __slots__ = ("kind", "index", "pid", "started", "quick_deaths", "generation", "beat",
                 "beat_seen")

    def __init__(self, kind: str, index: int) -> None:
        self.kind = kind
        self.index = index
        self.pid = 0
        self.started = 0.0
        self.quick_deaths = 0
        self.generation = 0
        self.beat = -1
        self.beat_seen = 0.0


class Arbiter:
    """Runs the supervisor until a stop signal or a boot failure."""

    def __init__(self, options: Options, program: str) -> None:
        self.options = options
        self.program = program
        self.children: dict[int, Child] = {}
        self.signals: list[int] = []
        self.stopping = False
        self.exit_code = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        from natsx.auth.nkeys import new_server_id

        o = self.options
        self.server_id = new_server_id()
        self.start_time = time.time()
        n = max(int(o.workers), 1)
        # One SO_REUSEPORT listener per worker: the kernel spreads connections over the
        # workers, and a dead worker's listener stays open here, so connections that
        # arrive while it restarts wait in its backlog instead of being refused.
        if n > 1 and o.port > 0:
            # With SO_REUSEPORT this group would silently join another process's group on
            # the same port (same user) and share its clients: a plain bind refuses a busy
            # port, as the Go server's does.
            bind_tcp(o.host, o.port).close()
        shared = os.environ.get("NATSX_ACCEPT") == "shared"
        first = bind_tcp(o.host, o.port, reuse_port=n > 1 and not shared)
        o.port = first.getsockname()[1]
        if shared:
            # One accept socket for every worker: kept to measure against SO_REUSEPORT
            # (docs/architecture.md has the figures).
            self.client_listeners = [first] * n
        else:
            self.client_listeners = [first] + [bind_tcp(o.host, o.port, reuse_port=True)
                                               for _ in range(n - 1)]
        self.client_listener = first
        # The WebSocket port, bound the same way: one listener per worker.
        self.ws_listeners: list = []
        wo = o.websocket
        if wo.port:
            if n > 1 and wo.port > 0:
                bind_tcp(wo.host, wo.port).close()
            ws_first = bind_tcp(wo.host, wo.port, reuse_port=n > 1 and not shared)
            wo.port = ws_first.getsockname()[1]
            self.ws_listeners = [ws_first] * n if shared else [ws_first] + [
                bind_tcp(wo.host, wo.port, reuse_port=True) for _ in range(n - 1)]
        self.http_listener = None
        if o.http_port and o.https_port:
            # Go (StartMonitoring): a misconfiguration, fatal at startup.
            raise MonitorConfigError(f"can't specify both HTTP ({o.http_port}) and HTTPs "
                                     f"({o.https_port}) ports")
        if o.https_port and o.tls_config is None:
            raise MonitorConfigError("TLS cert and key required for HTTPS")
        if o.http_port:
            self.http_listener = bind_tcp(o.http_host or o.host, o.http_port)
            o.http_port = self.http_listener.getsockname()[1]
        elif o.https_port:
            self.http_listener = bind_tcp(o.http_host or o.host, o.https_port)
            o.https_port = self.http_listener.getsockname()[1]
        o.workers = n
        from natsx.mesh import RingSet
        from natsx.server.mesh import PeerTable

        self.ringset = RingSet(n, ring_capacity(o)) if n > 1 else None
        self.peer_table = PeerTable(n)
        # One control channel per worker, between that worker and the admin process: the
        # worker listens on this address, the admin connects (natsx.server.control).
        from natsx.server.control import control_address

        self.control_addresses = [control_address(self.server_id, i) for i in range(n)]
        self.workers = [Child("worker", i) for i in range(n)]
        self.admin = Child("admin", 0) if self.http_listener else None
        # JetStream's raft process: the single LMDB writer (natsx.raftd). Its socket is bound
        # here, so workers reconnect to the same address while it restarts; also without
        # JetStream, which a reload may turn on (the process is started then).
        self.raft = None
        # Draws the secret every worker's JetStream relay shares (before any fork; also
        # without JetStream, which a reload may turn on).
        import natsx.jetstream.relay  # noqa: F401

        self.raft_address = "\0natsx-raft-%d-%s" % (os.getpid(), self.server_id[:8])
        self.raft_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.raft_listener.bind(self.raft_address)
        self.raft_listener.listen(128)
        if o.jetstream:
            self.raft = Child("raft", 0)

    def _log_banner(self) -> None:
        from natsx import SERVER_VERSION, __version__

        o = self.options
        log.info("Starting nats-server")
        log.info("  Version:  %s (natsx %s)", SERVER_VERSION, __version__)
        log.info("  Name:     %s", o.server_name or self.server_id)
        log.info("  ID:       %s", self.server_id)
        log.info("  Workers:  %d", o.workers)
        from natsx.server.reload import log_startup_notes

        log_startup_notes(o)
        if self.http_listener:
            log.info("Starting %s monitor on %s:%d", "https" if o.https_port else "http",
                     o.http_host or o.host, o.http_port or o.https_port)
        if self.ws_listeners:
            wo = o.websocket
            log.info("Listening for websocket clients on %s://%s:%d",
                     "wss" if wo.tls is not None else "ws", wo.host, wo.port)
            if wo.tls is None:
                log.warning("Websocket not configured with TLS. DO NOT USE IN PRODUCTION!")
        log.info("Listening for client connections on %s:%d", o.host, o.port)
        if o.tls_config is not None:
            # Go: "TLS first" without a fallback delay requires TLS even with allow_non_tls.
            first_only = o.tls_handshake_first and not o.tls_handshake_first_fallback
            log.info("TLS %s for client connections",
                     "available" if o.allow_non_tls and not first_only else "required")
            if first_only:
                log.warning('Clients that are not using "TLS Handshake First" option will '
                            "fail to connect")
        log.info("Server is ready")

    # ------------------------------------------------------------------ children

    def spawn(self, child: Child) -> None:
        parent = os.getpid()
        if child.kind == "worker":
            child.generation += 1
            self.peer_table.set_alive(child.index, True, child.generation)
        child.beat = -1
        child.beat_seen = time.monotonic()
        # Signals stay blocked across the fork until the child has reset its handlers:
        # a SIGTERM landing in between would run the supervisor's handler in the child,
        # which only queues it, and the child would ignore it until the stop timeout.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            child.pid = pid
            child.started = time.monotonic()
            self.children[pid] = child
            return
        # In the child.
        code = 0
        try:
            die_with_parent(parent)
            for sig in _HANDLED_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            childsignals.hold(mask)   # released by the child once its handlers are set
            os.close(self._wake_r)
            os.close(self._wake_w)
            if child.kind == "worker":
                code = self._run_worker(child.index)
            elif child.kind == "raft":
                code = self._run_raft()
            else:
                code = self._run_admin()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("%s %d failed", child.kind, child.index)
            code = 3
        finally:
            logging.shutdown()
            os._exit(code)

    def _run_worker(self, index: int) -> int:
        from natsx.server.process import run_worker

        for i, listener in enumerate(self.client_listeners):
            if i != index and listener is not self.client_listeners[index]:
                listener.close()
        for i, listener in enumerate(self.ws_listeners):
            if i != index and listener is not self.ws_listeners[index]:
                listener.close()
        if self.http_listener:
            self.http_listener.close()
        self.raft_listener.close()   # a worker connects to it (raft_address), never accepts
        return run_worker(self.options, server_id=self.server_id, index=index,
                          listener=self.client_listeners[index],
                          ws_listener=self.ws_listeners[index] if self.ws_listeners else None,
                          control=self.control_addresses[index],
                          ringset=self.ringset, peer_table=self.peer_table,
                          raft_address=self.raft_address, start_time=self.start_time)

    def _run_raft(self) -> int:
        from natsx.raftd.server import run_raft

        for listener in set(self.client_listeners + self.ws_listeners):
            listener.close()
        if self.http_listener:
            self.http_listener.close()
        return run_raft(self.raft_listener, self.peer_table.raft_beat)

    def _run_admin(self) -> int:
        from natsx.admin.process import run_admin

        for listener in self.client_listeners + self.ws_listeners:
            listener.close()
        self.raft_listener.close()
        return run_admin(self.options, server_id=self.server_id, start_time=self.start_time,
                         listener=self.http_listener,
                         controls=self.control_addresses)

    # ------------------------------------------------------------------ loop

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    def run(self) -> int:
        # Handlers first: the port accepts connections as soon as setup() binds it, and a
        # signal sent from then on (a reload, a stop) must be queued, not kill us.
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)
        self.setup()
        self.write_pid_file()
        self.write_ports_file()
        if self.raft is not None:
            self.spawn(self.raft)
        for w in self.workers:
            self.spawn(w)
        if self.admin:
            self.spawn(self.admin)
        self._log_banner()
        try:
            while True:
                self.reap()
                while self.signals:
                    sig = self.signals.pop(0)
                    name = signal.Signals(sig).name.lower()
                    handler = getattr(self, "handle_" + name, None)
                    if handler:
                        handler()
                if self.stopping and not self.children:
                    break
                if self.stopping and time.monotonic() > self.stop_deadline:
                    self.signal_children(signal.SIGKILL)
                if not self.stopping:
                    self.check_heartbeats()
                try:
                    import select

                    select.select([self._wake_r], [], [], 1.0)
                    os.read(self._wake_r, 4096)
                except (BlockingIOError, InterruptedError):
                    pass
        finally:
            self.cleanup()
        return self.exit_code

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if child.kind == "worker":
                self.peer_table.set_alive(child.index, False, child.generation)
                self.wake_workers()
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if child.kind == "worker" and code == 0:
                # A worker leaves by itself only after lame duck mode: stop everything.
                log.info("worker %d finished; stopping", child.index)
                self.stop(signal.SIGTERM)
                continue
            lived = time.monotonic() - child.started
            child.quick_deaths = child.quick_deaths + 1 if lived < BOOT_GRACE else 0
            if child.quick_deaths >= MAX_QUICK_DEATHS:
                log.error("%s %d keeps failing at boot (exit %s); halting", child.kind,
                          child.index, code)
                self.exit_code = 1
                self.stop(signal.SIGTERM)
                continue
            log.warning("%s %d (pid %d) exited with %s; restarting", child.kind, child.index,
                        pid, code)
            self.spawn(child)

    def wake_workers(self) -> None:
        """Makes every worker look at the peer table (a peer died or came back)."""
        if self.ringset is not None:
            for i in range(self.options.workers):
                self.ringset.wakeup(i).signal()

    def check_heartbeats(self) -> None:
        now = time.monotonic()
        for pid, child in list(self.children.items()):
            if child.kind == "worker":
                beat = self.peer_table.read(child.index)[2]
            elif child.kind == "raft":
                beat = self.peer_table.raft_heartbeat()
            else:
                continue
            if beat != child.beat:
                child.beat = beat
                child.beat_seen = now
            elif now - child.beat_seen > HEARTBEAT_TIMEOUT:
                if child.kind == "raft":
                    log.error("JetStream raft process (pid %d) stopped its heartbeat; "
                              "killing it", pid)
                else:
                    log.error("worker %d (pid %d) stopped its heartbeat; killing it",
                              child.index, pid)
                child.beat_seen = now
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def signal_children(self, sig: int, kind: str | None = None) -> None:
        for pid, child in list(self.children.items()):
            if kind is None or child.kind == kind:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def stop(self, sig: int) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + STOP_TIMEOUT
            self.signal_children(sig)

    # ------------------------------------------------------------------ signals

    def handle_sigterm(self) -> None:
        log.info("Trapped \"terminated\" signal")
        self.stop(signal.SIGTERM)

    def handle_sigint(self) -> None:
        log.info("Trapped \"interrupt\" signal")
        self.stop(signal.SIGTERM)

    def handle_sigquit(self) -> None:
        self.stop(signal.SIGKILL)

    def handle_sigusr2(self) -> None:
        log.info("Entering lame duck mode, stop accepting new clients")
        self.signal_children(signal.SIGUSR2, "worker")

    def handle_sighup(self) -> None:
        from natsx.server.reload import reload_supervisor

        # Children reload only what the supervisor accepted (natsx.server.reload).
        if reload_supervisor(self):
            if self.options.jetstream and self.raft is None and not self.stopping:
                # JetStream turned on: its writer first; the workers' links to it wait in
                # the listener's backlog until it accepts.
                self.raft = Child("raft", 0)
                self.spawn(self.raft)
            self.signal_children(signal.SIGHUP)

    def handle_sigusr1(self) -> None:
        self.signal_children(signal.SIGUSR1)

    def handle_sigchld(self) -> None:
        self.reap()
        if self.stopping and self.children and time.monotonic() > self.stop_deadline:
            self.signal_children(signal.SIGKILL)

    # ------------------------------------------------------------------ files

    def write_pid_file(self) -> None:
        if self.options.pid_file:
            with open(self.options.pid_file, "w") as f:
                f.write(str(os.getpid()))

    def ports_file_path(self) -> str:
        base = os.path.basename(self.program) or "natsx"
        return os.path.join(self.options.ports_file_dir, f"{base}_{os.getpid()}.ports")

    def write_ports_file(self) -> None:
        o = self.options
        if not o.ports_file_dir:
            return
        from natsx.supervisor.ports import ports_json

        with open(self.ports_file_path(), "w") as f:
            f.write(ports_json(self.client_listener, self.http_listener,
                               websocket=self.ws_listeners[0] if self.ws_listeners else None,
                               wss=o.websocket.tls is not None,
                               tls=o.tls_config is not None and not o.allow_non_tls,
                               https=bool(o.https_port)))

    def cleanup(self) -> None:
        if self.children:
            self.signal_children(signal.SIGKILL)
            deadline = time.monotonic() + 2
            while self.children and time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(-1, 0)
                    self.children.pop(pid, None)
                except ChildProcessError:
                    break
        for path in (self.options.pid_file, self.ports_file_path() if self.options.ports_file_dir else ""):
            if path:
                try:
                    os.unlink(path)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        log.warning("cannot remove %s: %s", path, exc)
