"""Log destinations: syslog (local and remote) and size-limited log files with rotation.

The remote syslog records are compared with what the Go server sends to a UDP socket the
test binds; rotation is checked on the files (backups, their count, Go's rotation line),
with several writers appending to the same file as natsx's processes do.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from natsx import logs
from natsx.cli import parse_args
from natsx.server.config_options import load_options

GO_RECORD = re.compile(rb"<(\d+)>(\S+) (\S+) (\S+)\[(\d+)\]: (.*)\n", re.S)


def udp_sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.3)
    return s


def drain(sock: socket.socket, until: bytes, timeout: float = 15.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(65536))
        except socket.timeout:
            continue
        if until in got[-1]:
            break
    return got


# ---------------------------------------------------------------------------- options

def test_config_keys_and_aliases_set_the_logging_options(tmp_path):
    path = tmp_path / "a.conf"
    path.write_text('syslog: true\nremote_syslog: "udp://127.0.0.1:514"\n'
                    "logfile_size_limit: 1KB\nlogfile_max_num: 3\n")
    opts, _ = load_options(str(path))
    assert (opts.syslog, opts.remote_syslog, opts.log_size_limit, opts.log_max_num) == \
        (True, "udp://127.0.0.1:514", 1024, 3)
    path.write_text("log_size_limit: 100\nlog_max_num: 2\n")
    opts, _ = load_options(str(path))
    assert (opts.log_size_limit, opts.log_max_num) == (100, 2)


def test_cli_flags_set_the_logging_options():
    opts, _ = parse_args(["-s", "-r", "tcp://h:1", "--log_size_limit", "500"])
    assert (opts.syslog, opts.remote_syslog, opts.log_size_limit) == (True, "tcp://h:1", 500)
    opts, _ = parse_args(["--syslog", "--remote_syslog=udp://h:2"])
    assert (opts.syslog, opts.remote_syslog) == (True, "udp://h:2")


# ---------------------------------------------------------------------------- syslog format

def test_syslog_records_are_go_log_syslog_bytes():
    now = time.mktime((2026, 3, 5, 7, 8, 9, 0, 0, -1))
    local = logs.format_syslog(29, "hello", tag="natsx", local=True, now=now, pid=42)
    assert local == b"<29>Mar  5 07:08:09 natsx[42]: hello\n"
    remote = logs.format_syslog(5, "x\n", tag="t", local=False, hostname="h", now=now, pid=1)
    assert re.fullmatch(rb"<5>2026-03-05T07:08:09(Z|[+-]\d\d:\d\d) h t\[1\]: x\n", remote)


def test_remote_syslog_urls_are_parsed_as_go_does():
    assert logs.parse_remote_syslog("udp://127.0.0.1:514") == ("udp", ("127.0.0.1", 514))
    assert logs.parse_remote_syslog("tcp://[::1]:6514") == ("tcp", ("::1", 6514))
    assert logs.parse_remote_syslog("unix:///dev/log") == ("unix", "/dev/log")
    with pytest.raises(ValueError, match='error invalid network type: "http"'):
        logs.parse_remote_syslog("http://x:1")


def test_local_syslog_uses_the_daemon_facility_and_the_short_form(tmp_path, monkeypatch):
    path = str(tmp_path / "log.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(2)
    monkeypatch.setattr(logs, "_LOCAL_PATHS", (path,))
    h = logs.GoSyslogHandler()
    try:
        for level, pri in ((logging.INFO, 29), (logging.WARNING, 28), (logging.ERROR, 27),
                           (logging.CRITICAL, 26), (logging.DEBUG, 31), (5, 29)):
            h.emit(logging.LogRecord("natsx", level, "", 0, "m %d", (level,), None))
            data = sink.recv(1000)
            assert re.fullmatch(rb"<%d>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+\[%d\]: m %d\n"
                                % (pri, os.getpid(), level), data), data
    finally:
        h.close()
        sink.close()


# ---------------------------------------------------------------------------- remote syslog

def _normalized(records: list[bytes]) -> list[tuple]:
    out = []
    for r in records:
        m = GO_RECORD.fullmatch(r)
        assert m, r
        pri, stamp, host, tag, _pid, text = m.groups()
        assert tag in (b"natsx", b"nats-server")   # argv[0]'s last element
        assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", stamp)
        out.append((int(pri), host, text))
    return out


@pytest.mark.server
def test_remote_syslog_udp_sends_what_go_sends(start_natsx, start_go):
    go_sink, sink = udp_sink(), udp_sink()
    go = start_go("-r", f"udp://127.0.0.1:{go_sink.getsockname()[1]}")
    ours = start_natsx("--remote_syslog", f"udp://127.0.0.1:{sink.getsockname()[1]}")
    go_recs = _normalized(drain(go_sink, b"Server is ready"))
    our_recs = _normalized(drain(sink, b"Server is ready"))
    go.stop(), ours.stop()
    assert go_recs[0] == our_recs[0] == (5, socket.gethostname().encode(), b"Starting nats-server")
    ready = [r for r in our_recs if r[2] == b"Server is ready"]
    assert ready == [r for r in go_recs if r[2] == b"Server is ready"] != []
    listening = [r for r in our_recs if r[2].startswith(b"Listening for client connections")]
    assert listening and listening[0][0] == 5
    # stderr gets nothing when syslog is the destination, as with Go
    assert "Starting nats-server" not in ours.log()
    assert "Starting nats-server" not in go.log()


@pytest.mark.server
def test_remote_syslog_from_the_config(start_natsx, tmp_path):
    sink = udp_sink()
    conf = tmp_path / "s.conf"
    conf.write_text(f'remote_syslog: "udp://127.0.0.1:{sink.getsockname()[1]}"\n')
    start_natsx("-c", str(conf))
    recs = _normalized(drain(sink, b"Server is ready"))
    assert (5, socket.gethostname().encode(), f"Using configuration file: {conf}".encode()) in recs


@pytest.mark.server
def test_remote_syslog_tcp_sends_newline_terminated_records(start_natsx):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(15)
    start_natsx("-r", f"tcp://127.0.0.1:{lsock.getsockname()[1]}")
    conn, _ = lsock.accept()
    conn.settimeout(15)
    buf = b""
    while b"Server is ready" not in buf:
        chunk = conn.recv(65536)
        assert chunk
        buf += chunk
    lines = buf.split(b"\n")
    assert re.fullmatch(rb"<5>\S+ \S+ \S+\[\d+\]: Starting nats-server", lines[0])
    conn.close()
    lsock.close()


@pytest.mark.server
def test_reload_switches_to_remote_syslog(start_natsx, tmp_path):
    sink = udp_sink()
    conf = tmp_path / "r.conf"
    conf.write_text("debug: false\n")
    srv = start_natsx("-c", str(conf))
    url = f"udp://127.0.0.1:{sink.getsockname()[1]}"
    conf.write_text(f'remote_syslog: "{url}"\n')
    srv.proc.send_signal(signal.SIGHUP)
    recs = drain(sink, b"Reloaded server configuration")
    assert f"Reloaded: remote_syslog = {url}" in srv.log()
    assert any(b"Reloaded server configuration" in r for r in recs)


# ---------------------------------------------------------------------------- rotation

def _record(i: int) -> logging.LogRecord:
    return logging.LogRecord("natsx", logging.INFO, "", 0, "line %04d %s", (i, "x" * 40), None)


def _handler(path: Path, **kw) -> logs.GoFileHandler:
    h = logs.GoFileHandler(str(path), **kw)
    h.setFormatter(logs.GoFormatter())
    return h


def _backups(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + "."))


def test_rotation_renames_with_go_suffix_and_starts_with_the_rotation_line(tmp_path):
    path = tmp_path / "n.log"
    h = _handler(path, limit=300)
    for i in range(20):
        h.emit(_record(i))
    h.close()
    baks = _backups(path)
    assert len(baks) >= 3
    for b in baks:
        assert re.fullmatch(r"n\.log\.\d{4}(\.\d\d){5}\.\d{9}", b.name)
        # a backup is closed right after the write that took it over the limit
        assert b.stat().st_size <= 300 + 200
    first = path.read_bytes().decode().split("\r\n")[0]
    assert re.fullmatch(r"\[\d+\] \S+ \S+ \[INF\] Rotated log, backup saved as \"%s\""
                        % re.escape(str(baks[-1])), first)
    text = "".join(p.read_text() for p in baks + [path])
    assert all(f"line {i:04d}" in text for i in range(20))


def test_max_num_keeps_that_many_files_and_logs_the_purge(tmp_path):
    path = tmp_path / "m.log"
    h = _handler(path, limit=200, max_num=3)
    for i in range(40):
        h.emit(_record(i))
    h.close()
    assert len(_backups(path)) == 2
    purged = [ln for p in _backups(path) + [path] for ln in p.read_text().splitlines()
              if "Purged log file" in ln]
    assert purged and all(re.search(r'Purged log file "m\.log\.\d{4}', ln) for ln in purged)
    # files not named like backups are left alone
    (tmp_path / "m.log.keep").write_text("x")
    h = _handler(path, limit=200, max_num=2)
    for i in range(20):
        h.emit(_record(i))
    h.close()
    assert len(_backups(path)) == 2 and (tmp_path / "m.log.keep").exists()


def test_several_writers_rotate_once_per_crossing_and_lose_no_line(tmp_path):
    path = tmp_path / "w.log"
    # Like the supervisor's forked workers, the first writers inherit one open descriptor.
    inherited = _handler(path, limit=2000)
    pids = []
    for w in range(4):
        pid = os.fork()
        if pid == 0:   # a writer process, as a worker is
            try:
                h = inherited if w < 2 else _handler(path, limit=2000)
                for i in range(150):
                    h.emit(logging.LogRecord("natsx", logging.INFO, "", 0, "w%d l%04d %s",
                                             (w, i, "y" * 30), None))
                h.close()
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    inherited.close()
    files = _backups(path) + [path]
    lines = [ln for p in files for ln in p.read_text().splitlines()]
    for w in range(4):
        assert sum(1 for ln in lines if f" w{w} l" in ln) == 150
    rotated = [ln for ln in lines if "Rotated log, backup saved as" in ln]
    # one rotation line per backup, each at the top of the file that followed it
    assert len(rotated) == len(_backups(path)) >= 5
    for p in files[1:]:
        assert "Rotated log, backup saved as" in p.read_text().splitlines()[0]


def test_a_file_already_over_the_limit_is_rotated_at_setup(tmp_path):
    path = tmp_path / "o.log"
    path.write_text("z" * 500 + "\n")
    try:
        logs.setup(log_file=str(path), log_size_limit=100)
        assert len(_backups(path)) == 1
        assert "Rotating logfile..." in _backups(path)[0].read_text()
    finally:
        logs.setup()


@pytest.mark.server
@pytest.mark.parametrize("server", ["natsx", "go"])
def test_server_rotates_its_log_file(server, start_natsx, start_go, tmp_path):
    path = tmp_path / f"{server}.log"
    conf = tmp_path / f"{server}.conf"
    conf.write_text(f'log_file: "{path}"\nlogfile_size_limit: 600\n')
    srv = (start_natsx if server == "natsx" else start_go)("-c", str(conf))
    deadline = time.monotonic() + 20
    while len(_backups(path)) < 2 and time.monotonic() < deadline:
        srv.proc.send_signal(signal.SIGHUP)   # each reload logs a few lines
        time.sleep(0.3)
    srv.stop()
    baks = _backups(path)
    assert len(baks) >= 2
    for p in baks[1:] + [path]:
        assert re.fullmatch(r"\[\d+\] \S+ \S+ \[INF\] Rotated log, backup saved as \"\S+\"\r",
                            p.read_bytes().decode().split("\n")[0])


@pytest.mark.server
def test_server_log_max_num_from_the_command_line_config(start_natsx, tmp_path):
    path = tmp_path / "k.log"
    conf = tmp_path / "k.conf"
    conf.write_text("log_max_num: 2\n")
    srv = start_natsx("-c", str(conf), "-l", str(path), "--log_size_limit", "300")
    for _ in range(10):
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
    srv.stop()
    assert len(_backups(path)) == 1
    assert "Purged log file" in path.read_text() + _backups(path)[0].read_text()


@pytest.mark.server
def test_reloading_the_size_limit_is_refused_as_go_does(start_natsx, tmp_path):
    path = tmp_path / "q.log"
    conf = tmp_path / "q.conf"
    conf.write_text(f'log_file: "{path}"\nlog_size_limit: 100000\n')
    srv = start_natsx("-c", str(conf))
    conf.write_text(f'log_file: "{path}"\nlog_size_limit: 200000\n')
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    want = "config reload not supported for LogSizeLimit: old=100000, new=200000"
    while want not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert want in path.read_text()


@pytest.mark.server
@pytest.mark.parametrize("flags", [["-r", "tcp://127.0.0.1:1"], ["-r", "http://x:1"],
                                   ["-l", "/nonexistent-dir/x.log"]])
def test_unusable_log_destinations_fail_as_go_does(flags):
    import subprocess

    from conftest import GO_SERVER, NATSX

    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")

    def run(cmd):
        r = subprocess.run(cmd + ["-p", "0"] + flags, capture_output=True, text=True, timeout=20)
        return r.returncode, r.stderr.strip().split(" ", 2)[2]   # without Go's date and time
    assert run(NATSX) == run([GO_SERVER])
