"""Logging in the Go server's formats: a file or stderr, local syslog, or a remote syslog.

Theory of operation
-------------------
Every natsx process (the supervisor, its workers, the admin process, the raft daemon) logs
through the ``natsx`` logger, configured here by ``setup`` from the options; workers are
forked with the supervisor's configuration and each process re-runs ``setup_from`` on a
config reload. The destination is chosen as Go's ``ConfigureLogger`` chooses it: a log file
wins over ``remote_syslog``, which wins over ``syslog``, else stderr.

File lines are Go's ``[pid] 2006/01/02 15:04:05.000000 [INF] text``. Syslog lines carry only
the text, sent as Go's log/syslog sends them: ``<PRI>Jan _2 15:04:05 tag[pid]: text\\n`` on
the local socket (/dev/log, facility daemon) and ``<PRI>RFC3339 host tag[pid]: text\\n`` to a
udp/tcp remote one (a unix:// one gets the short form, as in Go), with facility 0 as Go's
``syslog.Dial(..., LOG_DEBUG, ...)`` makes it. Info and trace are notices, debug is debug,
warnings, errors and fatals are warning, err and crit. On a failed send the connection is re-dialled and the line sent once more.

Size-limited log files with several writers
-------------------------------------------
Go has one process and one writer, so its rotation (logger/log.go) is a rename under a
mutex. natsx has several processes appending to the same path, so the rotation here is
made safe for them without a coordinator:

* every process writes with ``O_APPEND`` on its own descriptor (whole lines, one write each,
  so lines of different processes never interleave);
* with a size limit set, before each line a writer compares the inode behind the path with
  the inode of its descriptor; when they differ another process has rotated, and the writer
  reopens the path (one ``stat`` per line, paid only when a limit is configured);
* after a write that takes the file over the limit, the writer takes ``flock`` on a
  descriptor it opens for that (forked writers share their inherited one), re-checks under the lock that the path still names its file and that the file
  is still over the limit, and only then rotates: a fresh file is written with Go's
  ``Rotated log, backup saved as "..."`` line under a temporary name, the old file is
  hard-linked to ``<name>.YYYY.MM.DD.HH.MM.SS.nnnnnnnnn`` (Go's suffix) and the fresh one is
  renamed over the path, so the path never goes missing and the rotation line always comes
  first in the new file; then, with ``logfile_max_num``, the oldest backups beyond
  ``max - 1`` are purged as Go does. A second writer that crossed the limit at the same time waits on the lock, then finds the
  path renamed and just reopens: one rotation per crossing, never two.

A line written by a process in the instant between another's rename and its own next check
lands at the end of the backup (the same inode), so no line is ever lost. SIGUSR1
(``reopen``) still reopens the file for external rotation tools.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from urllib.parse import urlsplit

_LEVELS = {logging.DEBUG: "DBG", logging.INFO: "INF", logging.WARNING: "WRN",
           logging.ERROR: "ERR", logging.CRITICAL: "FTL", 5: "TRC"}
_state: dict = {}

_LOG_PERMS = 0o640
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


class GoFormatter(logging.Formatter):
    def __init__(self, logtime: bool = True, utc: bool = False) -> None:
        super().__init__()
        self.logtime = logtime
        self.utc = utc

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelno, "INF")
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        if self.logtime:
            t = (time.gmtime if self.utc else time.localtime)(record.created)
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", t) + ".%06d" % int((record.created % 1) * 1e6)
            return f"[{os.getpid()}] {stamp} [{level}] {msg}"
        return f"[{os.getpid()}] [{level}] {msg}"


# ------------------------------------------------------------------ log file with rotation

def backup_name(path: str, now_ns: int | None = None) -> str:
    """Go's rotated name: ``<path>.YYYY.MM.DD.HH.MM.SS.nnnnnnnnn`` in local time."""
    ns = time.time_ns() if now_ns is None else now_ns
    t = time.localtime(ns // 1_000_000_000)
    return f"{path}.{time.strftime('%Y.%m.%d.%H.%M.%S', t)}.{ns % 1_000_000_000:09d}"


def _is_backup_stamp(stamp: str) -> bool:
    """Go parses the suffix as ``2006:01:02:15:04:05.999999999`` after its first 5 dots."""
    parts = stamp.split(".")
    if len(parts) not in (6, 7):
        return False
    if len(parts[0]) != 4 or not all(len(x) == 2 for x in parts[1:6]):
        return False
    if not all(x.isdigit() for x in parts):
        return False
    try:
        time.strptime(".".join(parts[:6]), "%Y.%m.%d.%H.%M.%S")
    except ValueError:
        return False
    return len(parts) == 6 or 1 <= len(parts[6]) <= 9


class GoFileHandler(logging.Handler):
    """Appends Go-format lines to ``path``; rotates at ``limit`` bytes (see module doc)."""

    def __init__(self, path: str, *, limit: int = 0, max_num: int = 0,
                 logtime: bool = True) -> None:
        super().__init__()
        self.path = path
        self.limit = limit
        self.max_num = max_num
        self.logtime = logtime
        self.fd = os.open(path, _OPEN_FLAGS, _LOG_PERMS)

    def over_limit(self) -> bool:
        return self.limit > 0 and os.fstat(self.fd).st_size > self.limit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            if self.limit > 0:
                self._follow()
            os.write(self.fd, data)
            if self.limit > 0 and os.fstat(self.fd).st_size > self.limit:
                self._rotate()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        super().close()

    # -------------------------------------------------------------- rotation

    def _reopen(self) -> None:
        fd = os.open(self.path, _OPEN_FLAGS, _LOG_PERMS)
        old, self.fd = self.fd, fd
        os.close(old)

    def _path_is_mine(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self.fd)
        return (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)

    def _follow(self) -> None:
        if not self._path_is_mine():
            self._reopen()

    def _direct(self, label: str, text: str) -> None:
        # Go's logDirect: pid, local time, label, text, CRLF.
        entry = f"[{os.getpid()}] "
        if self.logtime:
            now = time.time()
            entry += time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now)) + \
                ".%06d " % int((now % 1) * 1e6)
        os.write(self.fd, (entry + label + text + "\r\n").encode("utf-8", "replace"))

    def _rotate(self) -> None:
        old = self.fd
        # The lock is taken on a description of our own: forked processes share the
        # inherited one, and flock does not exclude holders of the same description.
        try:
            lock = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            self._reopen()
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            held, mine = os.fstat(lock), os.fstat(old)
            if not self._path_is_mine() or (held.st_ino, held.st_dev) != (mine.st_ino, mine.st_dev):
                self._reopen()   # another writer rotated first
                return
            if os.fstat(old).st_size <= self.limit:
                return
            bak = backup_name(self.path)
            # The new file gets its first line before it takes the name, and the name
            # always points at a file: link the old one to the backup name, then
            # rename the new one over the path.
            tmp = f"{self.path}.rotating.{os.getpid()}"
            fd = os.open(tmp, _OPEN_FLAGS | os.O_TRUNC, _LOG_PERMS)
            self.fd = fd
            self._direct("[INF] ", f"Rotated log, backup saved as {_go_quote(bak)}")
            try:
                os.link(self.path, bak)
            except OSError:   # no hard links here: a plain rename, with a short gap
                os.rename(self.path, bak)
            os.rename(tmp, self.path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.close(lock)
        os.close(old)
        if self.max_num > 0:
            self._purge()

    def _purge(self) -> None:
        directory = os.path.dirname(self.path) or "."
        base = os.path.basename(self.path)
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            self._direct("[ERR] ", f"Unable to read directory {_go_quote(directory)} for log purge "
                                   f"({exc}), will attempt next rotation")
            return
        backups = [n for n in names if n.startswith(base + ".")
                   and _is_backup_stamp(n[len(base) + 1:])
                   and not os.path.isdir(os.path.join(directory, n))]
        extra = len(backups) - (self.max_num - 1)
        for name in backups[:max(extra, 0)]:
            try:
                os.remove(os.path.join(directory, name))
            except FileNotFoundError:
                continue   # another writer purged it first
            except OSError as exc:
                self._direct("[ERR] ", f"Unable to remove backup log file {_go_quote(name)} "
                                       f"({exc}), will attempt next rotation")
                return
            self._direct("[INF] ", f"Purged log file {_go_quote(name)}")


# ------------------------------------------------------------------ syslog

# log/syslog severities and facilities.
_LOG_CRIT, _LOG_ERR, _LOG_WARNING, _LOG_NOTICE, _LOG_DEBUG = 2, 3, 4, 5, 7
_LOG_DAEMON = 3 << 3
_SEVERITY = {logging.CRITICAL: _LOG_CRIT, logging.ERROR: _LOG_ERR,
             logging.WARNING: _LOG_WARNING, logging.INFO: _LOG_NOTICE,
             logging.DEBUG: _LOG_DEBUG, 5: _LOG_NOTICE}
_LOCAL_PATHS = ("/dev/log", "/var/run/syslog", "/var/run/log")


def syslog_tag() -> str:
    """Go's GetSysLoggerTag: the last path element of argv[0]."""
    name = sys.argv[0] if sys.argv and sys.argv[0] else "nats-server"
    parts = [p for p in name.split(os.sep) if p]
    tag = parts[-1] if parts else name
    # ``python -m natsx``: the program's name, as natsx.cli names it.
    return "natsx" if tag in ("__main__.py", "-c", "-m") else tag


def parse_remote_syslog(url: str) -> tuple[str, object]:
    """(network, address) of a remote_syslog URL, as Go's getNetworkAndAddr.

    Raises:
        ValueError: Go's fatal text for an unsupported scheme.
    """
    u = urlsplit(url)
    if u.scheme in ("udp", "tcp"):
        host, _, port = u.netloc.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"dial {u.scheme} {u.netloc}: missing port in address")
        return u.scheme, (host.strip("[]"), int(port))
    if u.scheme == "unix":
        return "unix", u.path
    raise ValueError(f'error invalid network type: "{u.scheme}"')


def format_syslog(priority: int, text: str, *, tag: str, local: bool, hostname: str = "",
                  now: float | None = None, pid: int | None = None) -> bytes:
    """One datagram/stream record exactly as Go's log/syslog writes it."""
    t = time.localtime(time.time() if now is None else now)
    pid = os.getpid() if pid is None else pid
    nl = "" if text.endswith("\n") else "\n"
    if local:
        stamp = time.strftime("%b ", t) + f"{t.tm_mday:2d}" + time.strftime(" %H:%M:%S", t)
        return f"<{priority}>{stamp} {tag}[{pid}]: {text}{nl}".encode("utf-8", "replace")
    off = time.strftime("%z", t)
    zone = "Z" if off in ("+0000", "-0000", "") else f"{off[:3]}:{off[3:]}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + zone
    return f"<{priority}>{stamp} {hostname} {tag}[{pid}]: {text}{nl}".encode("utf-8", "replace")


class GoSyslogHandler(logging.Handler):
    """Go's SysLogger: local syslog when ``url`` is empty, else the remote one it names."""

    def __init__(self, url: str = "") -> None:
        super().__init__()
        self.url = url
        self.tag = syslog_tag()
        self.local = not url
        # Go writes the short local form (no hostname) on any unix socket.
        self.short_form = self.local
        self.hostname = socket.gethostname() or "localhost"
        if self.local:
            self.facility = _LOG_DAEMON
        else:
            self.facility = 0
            self.network, self.addr = parse_remote_syslog(url)
            self.short_form = self.network == "unix"
        self.sock: socket.socket | None = None
        self._connect()

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.local:
            last: OSError | None = None
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                for path in _LOCAL_PATHS:
                    s = socket.socket(socket.AF_UNIX, kind)
                    try:
                        s.connect(path)
                    except OSError as exc:
                        s.close()
                        last = exc
                        continue
                    self.sock = s
                    return
            raise OSError("Unix syslog delivery error") from last
        try:
            self.sock = self._dial()
        except OSError as exc:
            addr = self.addr if isinstance(self.addr, str) else \
                (f"[{self.addr[0]}]:{self.addr[1]}" if ":" in self.addr[0] else "%s:%d" % self.addr)
            why = (exc.strerror or str(exc)).lower()
            raise OSError(f"dial {self.network} {addr}: connect: {why}") from None

    def _dial(self) -> socket.socket:
        if self.network == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.addr)
        else:
            kind = socket.SOCK_DGRAM if self.network == "udp" else socket.SOCK_STREAM
            s = socket.create_connection(self.addr) if kind == socket.SOCK_STREAM else None
            if s is None:
                host, port = self.addr
                info = socket.getaddrinfo(host or None, port, 0, kind)[0]
                s = socket.socket(info[0], kind)
                s.connect(info[4])
        return s

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        pri = self.facility | _SEVERITY.get(record.levelno, _LOG_NOTICE)
        data = format_syslog(pri, text, tag=self.tag, local=self.short_form, hostname=self.hostname)
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self._connect()
                self.sock.sendall(data)
                return
            except OSError:
                if attempt:
                    return
                try:
                    self._connect()
                except OSError:
                    return

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        super().close()


# ------------------------------------------------------------------ configuration

def _make_handler(log_file: str, logtime: bool, logtime_utc: bool, syslog: bool,
                  remote_syslog: str, log_size_limit: int, log_max_num: int) -> logging.Handler:
    if log_file:
        handler: logging.Handler = GoFileHandler(log_file, limit=max(log_size_limit, 0),
                                                 max_num=max(log_max_num, 0), logtime=logtime)
    elif remote_syslog:
        return GoSyslogHandler(remote_syslog)
    elif syslog:
        return GoSyslogHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(GoFormatter(logtime, logtime_utc))
    return handler


def setup(*, debug: bool = False, trace: bool = False, logtime: bool = True,
          log_file: str = "", logtime_utc: bool = False, syslog: bool = False,
          remote_syslog: str = "", log_size_limit: int = 0, log_max_num: int = 0) -> None:
    """(Re)configures the process's logger; also what a config reload calls.

    Raises:
        OSError, ValueError: the log file or syslog cannot be opened (Go exits on these).
    """
    handler = _make_handler(log_file, logtime, logtime_utc, syslog, remote_syslog,
                            log_size_limit, log_max_num)
    logger = logging.getLogger("natsx")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.addHandler(handler)
    logger.setLevel(5 if trace else logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    _state.update(debug=debug, trace=trace, logtime=logtime, log_file=log_file,
                  logtime_utc=logtime_utc, syslog=syslog, remote_syslog=remote_syslog,
                  log_size_limit=log_size_limit, log_max_num=log_max_num)
    _state.setdefault("owner_pid", os.getpid())
    if isinstance(handler, GoFileHandler) and handler.over_limit() \
            and _state["owner_pid"] == os.getpid():
        # Go's setLimit: a file already over the new limit is rotated by this notice.
        logger.info("Rotating logfile...")


def setup_from(options) -> None:
    """The reload path: a destination that cannot be opened leaves the old one in place."""
    try:
        setup(debug=options.debug, trace=options.trace, logtime=options.logtime,
              log_file=options.log_file, logtime_utc=options.logtime_utc,
              syslog=options.syslog, remote_syslog=options.remote_syslog,
              log_size_limit=options.log_size_limit, log_max_num=options.log_max_num)
    except (OSError, ValueError) as exc:
        logging.getLogger("natsx").error("error configuring logger: %s", exc)


def reopen() -> None:
    """SIGUSR1: reopen the log file (after rotation)."""
    if _state.get("log_file"):
        setup(**{k: v for k, v in _state.items() if k != "owner_pid"})
