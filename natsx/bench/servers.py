"""Starting and stopping the servers that ``--compare`` measures side by side.

Theory of operation
-------------------
A ``ServerProcess`` is one server command on a free loopback port, with its own
temporary directory holding its log and, for JetStream workloads, its store. It is
started in a new session so that the terminal's Ctrl-C reaches only the benchmark, which
then stops the server itself: SIGTERM to the server's process group, SIGKILL after a
grace period. Every started server is also registered for an ``atexit`` stop, so an
unexpected exit path cannot leave one running. Readiness is the server's ``INFO`` on a
fresh TCP connection, not just an open port.
"""
from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs

from natsx.bench.conn import BenchError

GO_DEFAULT = "/usr/sbin/nats-server"

_RUNNING: set[ServerProcess] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS: list[int] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, below the kernel's ephemeral
    range: a port the kernel hands out for ``bind(0)`` comes from that range, so an
    outgoing connection may take it as its local port before the server binds it
    ("Address already in use"). Ports are handed out in a shuffled order, none twice
    until every one was."""
    if not _PORTS:
        low = _ephemeral_low()
        _PORTS.extend(range(max(10000, low - 12000), low))
        random.shuffle(_PORTS)
    while _PORTS:
        port = _PORTS.pop()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_natsx(explicit: str | None = None) -> list[str]:
    """The natsx command: ``--natsx``, the script next to this Python, PATH, ``-m natsx``."""
    if explicit:
        return [explicit]
    beside = Path(sys.executable).parent / "natsx"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("natsx")
    if found:
        return [found]
    return [sys.executable, "-m", "natsx"]


def find_go(explicit: str | None = None) -> str | None:
    """The Go nats-server: ``--go``, the Debian binary, else ``nats-server`` on PATH.

    The Debian path comes before PATH because a ``nats-server`` on PATH may be a natsx
    shim, which would make the comparison compare natsx with itself.
    """
    if explicit:
        return explicit
    if os.path.exists(GO_DEFAULT):
        return GO_DEFAULT
    return shutil.which("nats-server")


def server_argv(
    command: list[str], port: int, *, store_dir: str | None = None, workers: int | None = None,
    config: str | None = None,
) -> list[str]:
    """The command line shared by both servers (natsx takes the nats-server flags).
    ``config``: a configuration file enabling JetStream in place of ``-js -sd``."""
    argv = [*command, "-p", str(port), "-a", "127.0.0.1"]
    if config is not None:
        argv += ["-c", config]
    elif store_dir is not None:
        argv += ["-js", "-sd", store_dir]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv


def wait_ready(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until a NATS server on host:port sends INFO.

    Raises:
        BenchError: the process exited, or no INFO within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"server exited with status {proc.returncode} before accepting")
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                if s.recv(5) == b"INFO ":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"no server on {host}:{port} after {timeout:g} s")
        time.sleep(0.05)


@attrs.define(eq=False)
class ServerProcess:
    """One server process on a free port; a context manager that always stops it."""

    name: str
    command: list[str]
    jetstream: bool = False
    workers: int | None = None
    #: JetStream syncs every write before acknowledging it (``sync_interval: always``, the
    #: natsx default; the Go server's default syncs every two minutes).
    sync_always: bool = False
    port: int = 0
    workdir: str = ""
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "server.log")

    @property
    def store_dir(self) -> str | None:
        return os.path.join(self.workdir, "store") if self.jetstream else None

    @property
    def config_path(self) -> str | None:
        if not (self.jetstream and self.sync_always):
            return None
        return os.path.join(self.workdir, "server.conf")

    def argv(self) -> list[str]:
        return server_argv(self.command, self.port, store_dir=self.store_dir,
                           workers=self.workers, config=self.config_path)

    def _write_config(self) -> None:
        conf = self.config_path
        if conf is not None:
            with open(conf, "w") as f:
                f.write(f'jetstream {{\n  store_dir: "{self.store_dir}"\n'
                        '  sync_interval: always\n}\n')

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start on a free port and wait until it accepts clients.

        Raises:
            BenchError: the server did not come up; the error carries its log's tail.
        """
        self.workdir = tempfile.mkdtemp(prefix=f"natsx-bench-{self.name}-")
        self.port = free_port()
        self._write_config()
        argv = self.argv()
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            except OSError as exc:
                self.cleanup()
                raise BenchError(f"cannot start {self.name} ({argv[0]}): {exc}") from None
        _RUNNING.add(self)
        try:
            wait_ready("127.0.0.1", self.port, timeout, self.proc)
        except BenchError as exc:
            tail = self.log_tail()
            self.stop()
            raise BenchError(f"{self.name} did not start: {exc}\n  command: {' '.join(argv)}\n{tail}") from None
        return self

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read()[-8192:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join("  | " + line for line in text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
        proc = self.proc
        if proc is not None:
            if proc.returncode is None:
                self._signal(signal.SIGTERM)
                deadline = time.monotonic() + grace
                while not self._exited() and time.monotonic() < deadline:
                    time.sleep(0.02)
                # The leader is not reaped yet, so its process group id cannot have been
                # reused: this reaches only processes this server started (workers that
                # ignored SIGTERM or outlived it).
                self._signal(signal.SIGKILL)
            proc.wait()
            self.proc = None
        _RUNNING.discard(self)
        self.cleanup()

    def _exited(self) -> bool:
        assert self.proc is not None
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        if self.workdir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(grace=2.0)
