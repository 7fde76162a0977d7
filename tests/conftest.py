"""Shared fixtures: twins of the compiled modules, and real servers started as commands."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from natsx._speedups import NO_EXTENSIONS, load
# A free loopback port below the kernel's ephemeral range: a bind(0) port may be taken by a
# client's outgoing connection before the server under test binds it.
from natsx.bench.servers import free_port  # noqa: F401  (the tests import it from here)

ROOT = Path(__file__).resolve().parent.parent
NATSX = [sys.executable, "-m", "natsx"]
GO_SERVER = shutil.which("nats-server", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
if GO_SERVER and os.path.realpath(GO_SERVER).startswith(str(ROOT)):
    GO_SERVER = None


def pytest_configure(config):
    config.addinivalue_line("markers", "server: black-box test against a running natsx")




def wait_port(port: int, timeout: float = 10.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not accepting")


class RunningServer:
    """A server process started for a test, with its ports."""

    def __init__(self, cmd: list[str], port: int, http_port: int | None, log_path: Path,
                 env: dict | None = None) -> None:
        self.port = port
        self.http_port = http_port
        self.log_path = log_path
        self.cmd = cmd
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        try:
            wait_port(port, proc=self.proc)
            if http_port:
                wait_port(http_port, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"server did not start: {log_path.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_natsx(tmp_path):
    """Starts ``natsx`` with extra flags; returns the RunningServer. Stopped after the test."""
    servers = []

    def start(*args: str, monitor: bool = True, env: dict | None = None) -> RunningServer:
        port = free_port()
        http_port = free_port() if monitor else None
        cmd = NATSX + ["-a", "127.0.0.1", "-p", str(port)]
        if http_port:
            cmd += ["-m", str(http_port)]
        cmd += list(args)
        full_env = dict(os.environ, **(env or {}))
        srv = RunningServer(cmd, port, http_port, tmp_path / f"natsx-{len(servers)}.log", full_env)
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def natsx_server(start_natsx):
    return start_natsx()


@pytest.fixture
def start_go(tmp_path):
    """Starts the Go nats-server (Debian's) with extra flags."""
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    servers = []

    def start(*args: str, monitor: bool = True) -> RunningServer:
        port = free_port()
        http_port = free_port() if monitor else None
        cmd = [GO_SERVER, "-a", "127.0.0.1", "-p", str(port)]
        if http_port:
            cmd += ["-m", str(http_port)]
        cmd += list(args)
        srv = RunningServer(cmd, port, http_port, tmp_path / f"go-{len(servers)}.log")
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(params=["compiled", "pure"])
def core(request):
    """The hot-path core module: compiled and pure twins."""
    if request.param == "compiled" and NO_EXTENSIONS:
        pytest.skip("NATSX_NO_EXTENSIONS is set: the compiled twin is not under test")
    return load("core", pure=request.param == "pure")
