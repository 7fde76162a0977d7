"""The ``natsx`` command line: nats-server's flags, files and program name.

Flags follow Go's flag package as nats-server uses it (server/opts.go ConfigureOptions):
one or two dashes, ``-flag value`` or ``-flag=value``, booleans without a value. Servers
started here are checked through what a client sees (INFO, /varz) and the files the
server writes (pid file, ports file, log file).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import NATSX, RunningServer, free_port

pytestmark = pytest.mark.server

CONSOLE_SCRIPT = Path(sys.executable).with_name("natsx")


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(NATSX + list(args), capture_output=True, text=True, timeout=timeout)


def info_of(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        line = b""
        while not line.endswith(b"\r\n"):
            line += s.recv(4096)
    return json.loads(line[5:])


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def launch(tmp_path):
    """Starts a server command with exactly the given argv; stopped after the test."""
    servers = []

    def start(cmd: list[str], port: int, http_port: int | None = None) -> RunningServer:
        srv = RunningServer(cmd, port, http_port, tmp_path / f"cli-{len(servers)}.log",
                            dict(os.environ))
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.stop()


# ---------------------------------------------------------------------------- actions

@pytest.mark.parametrize("flag", ["-h", "--help", "-help"])
def test_help_prints_usage_and_exits_zero(flag):
    r = run_cli(flag)
    assert r.returncode == 0
    assert "Usage: nats-server [options]" in r.stdout
    for option in ("--port", "--http_port", "--user", "--pass", "--auth", "--ports_file_dir",
                   "--pid", "--log", "-DV"):
        assert option in r.stdout


@pytest.mark.parametrize("flag", ["-v", "--version", "-version"])
def test_version_prints_the_nats_server_version(flag):
    r = run_cli(flag)
    assert r.returncode == 0
    assert r.stdout.startswith("nats-server: v2.")


@pytest.mark.parametrize("argv, message", [
    (["--foo"], "flag provided but not defined: -foo"),
    (["-foo=1"], "flag provided but not defined: -foo"),
    (["-p", "x"], 'invalid value "x" for flag -p'),
    (["--port=abc"], 'invalid value "abc" for flag -port'),
    (["-p"], "flag needs an argument: -p"),
    (["-D=maybe"], 'invalid boolean value "maybe" for -D'),
    (["extra"], "extra"),
])
def test_bad_command_line_prints_usage_and_fails(argv, message):
    # Go's flag package prints the error and the usage (nats-server then exits 0; natsx
    # exits non-zero so scripts notice the mistake).
    r = run_cli(*argv)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Usage: nats-server [options]" in r.stderr


# ---------------------------------------------------------------------------- flag forms

@pytest.mark.parametrize("form", ["-p {p}", "--port {p}", "-p={p}", "--port={p}", "-port {p}"])
def test_port_flag_forms(launch, form):
    port = free_port()
    srv = launch(NATSX + ["-a", "127.0.0.1"] + form.format(p=port).split(), port)
    assert info_of(srv.port)["port"] == port


@pytest.mark.parametrize("form", ["-a", "--addr", "--net", "-addr=", "--net="])
def test_address_flag_forms(launch, form):
    port = free_port()
    flag = [form + "127.0.0.1"] if form.endswith("=") else [form, "127.0.0.1"]
    srv = launch(NATSX + flag + ["-p", str(port)], port)
    assert info_of(srv.port)["host"] == "127.0.0.1"


@pytest.mark.parametrize("form", ["-m", "--http_port", "-http_port=", "--http_port="])
def test_monitoring_port_flag_forms(launch, form):
    port, http_port = free_port(), free_port()
    flag = [f"{form}{http_port}"] if form.endswith("=") else [form, str(http_port)]
    srv = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port)] + flag, port, http_port)
    varz = httpx.get(f"http://127.0.0.1:{http_port}/varz", timeout=5).json()
    assert varz["http_port"] == http_port and varz["port"] == srv.port


@pytest.mark.parametrize("form", ["-n", "--name", "--server_name", "-server_name="])
def test_server_name_flag_forms(launch, form):
    port = free_port()
    flag = [form + "alpha-1"] if form.endswith("=") else [form, "alpha-1"]
    srv = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port)] + flag, port)
    info = info_of(srv.port)
    assert info["server_name"] == "alpha-1"
    assert info["server_id"].startswith("N") and info["server_id"] != "alpha-1"


@pytest.mark.parametrize("flags", [["--user", "u1", "--pass", "p1"], ["-user=u1", "-pass=p1"]])
def test_user_and_password_flags(launch, flags):
    port = free_port()
    srv = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port)] + flags, port)
    assert info_of(srv.port)["auth_required"] is True
    for creds, answer in (({"user": "u1", "pass": "p1"}, b"PONG\r\n"),
                          ({"user": "u1", "pass": "no"}, b"-ERR 'Authorization Violation'\r\n")):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.recv(4096)
            s.sendall(b"CONNECT " + json.dumps({"verbose": False, **creds}).encode() + b"\r\nPING\r\n")
            assert s.recv(4096) == answer


@pytest.mark.parametrize("flag", [["--auth", "t0k"], ["-auth=t0k"]])
def test_auth_token_flag(launch, flag):
    port = free_port()
    srv = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port)] + flag, port)
    assert info_of(srv.port)["auth_required"] is True
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(4096)
        s.sendall(b'CONNECT {"verbose":false,"auth_token":"t0k"}\r\nPING\r\n')
        assert s.recv(4096) == b"PONG\r\n"


@pytest.mark.parametrize("flags", [["-D"], ["-V"], ["-DV"], ["--debug", "--trace"],
                                   ["-D=true", "-V=false"], ["-DVV"], ["-T=false"]])
def test_logging_flags_are_accepted(launch, flags):
    port = free_port()
    srv = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port)] + flags, port)
    assert info_of(srv.port)["port"] == port
    assert "Server is ready" in wait_for(lambda: srv.log() if "ready" in srv.log() else None,
                                         what="the banner")


def test_log_file_flag(launch, tmp_path):
    log = tmp_path / "natsx.log"
    port = free_port()
    srv = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port), "-l", str(log)], port)
    text = wait_for(lambda: log.exists() and "Server is ready" in log.read_text() and log.read_text(),
                    what="the log file")
    assert f"Listening for client connections on 127.0.0.1:{port}" in text
    assert f"[{srv.proc.pid}]" in text          # Go's "[pid] date [INF] text" lines
    assert "Server is ready" not in srv.log()   # nothing on stderr


# ---------------------------------------------------------------------------- files

@pytest.mark.parametrize("form", ["-P", "--pid", "-pid="])
def test_pid_file_is_written_and_removed(launch, tmp_path, form):
    pid_file = tmp_path / "natsx.pid"
    port = free_port()
    flag = [form + str(pid_file)] if form.endswith("=") else [form, str(pid_file)]
    srv = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port)] + flag, port)
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text()) == str(srv.proc.pid)
    srv.stop()
    assert not pid_file.exists()


def _ports_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.ports"))


@pytest.mark.parametrize("form", ["--ports_file_dir", "-ports_file_dir="])
def test_ports_file_appears_and_disappears(launch, tmp_path, form):
    port, http_port = free_port(), free_port()
    flag = [form + str(tmp_path)] if form.endswith("=") else [form, str(tmp_path)]
    srv = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port), "-m", str(http_port)] + flag,
                 port, http_port)
    path = tmp_path / f"natsx_{srv.proc.pid}.ports"
    wait_for(path.exists, what=str(path))
    assert _ports_files(tmp_path) == [path]
    assert json.loads(path.read_text()) == {"nats": [f"nats://127.0.0.1:{port}"],
                                            "monitoring": [f"http://127.0.0.1:{http_port}"]}
    srv.stop()
    assert _ports_files(tmp_path) == []


def test_ports_file_reports_a_random_port(tmp_path):
    # -p -1 picks a free port (server.go); the ports file is how a harness finds it.
    proc = subprocess.Popen(NATSX + ["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir",
                                     str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        path = tmp_path / f"natsx_{proc.pid}.ports"
        wait_for(lambda: path.exists() and path.read_text(), what=str(path))
        url = json.loads(path.read_text())["nats"][0]
        port = int(url.rsplit(":", 1)[1])
        assert port > 0 and info_of(port)["port"] == port
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert not path.exists()


def test_symlink_named_nats_server_names_the_ports_file(launch, tmp_path):
    # Files named after the program use the name it was started as, as Go's does.
    link = tmp_path / "bin" / "nats-server"
    link.parent.mkdir()
    link.symlink_to(CONSOLE_SCRIPT)
    ports_dir = tmp_path / "ports"
    ports_dir.mkdir()
    port = free_port()
    srv = launch([str(link), "-a", "127.0.0.1", "-p", str(port), "--ports_file_dir",
                  str(ports_dir)], port)
    path = ports_dir / f"nats-server_{srv.proc.pid}.ports"
    wait_for(path.exists, what=str(path))
    assert _ports_files(ports_dir) == [path]
    r = subprocess.run([str(link), "--version"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout.startswith("nats-server: v2.")
    srv.stop()
    assert _ports_files(ports_dir) == []


def test_console_script_names_the_ports_file_natsx(launch, tmp_path):
    port = free_port()
    srv = launch([str(CONSOLE_SCRIPT), "-a", "127.0.0.1", "-p", str(port), "--ports_file_dir",
                  str(tmp_path)], port)
    wait_for((tmp_path / f"natsx_{srv.proc.pid}.ports").exists, what="natsx_<pid>.ports")


def test_port_of_a_running_natsx_is_refused(launch):
    # The workers share the port with SO_REUSEPORT; a second server must still fail to
    # bind it, as the Go server does, rather than take half of the first one's clients.
    port = free_port()
    first = launch(NATSX + ["-a", "127.0.0.1", "-p", str(port), "--workers", "2"], port)
    r = run_cli("-a", "127.0.0.1", "-p", str(port), "--workers", "2")
    assert r.returncode != 0
    assert "Address already in use" in r.stderr
    assert first.proc.poll() is None


def test_port_in_use_fails_to_start(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("-a", "127.0.0.1", "-p", str(port))
    assert r.returncode != 0
    assert f"127.0.0.1:{port}" in r.stderr

