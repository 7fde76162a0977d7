"""Logging in the Go server's line format: ``[pid] 2006/01/02 15:04:05.000000 [INF] text``."""
from __future__ import annotations

import logging
import os
import sys
import time

_LEVELS = {logging.DEBUG: "DBG", logging.INFO: "INF", logging.WARNING: "WRN",
           logging.ERROR: "ERR", logging.CRITICAL: "FTL", 5: "TRC"}
_state: dict = {}


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


def setup(*, debug: bool = False, trace: bool = False, logtime: bool = True,
          log_file: str = "", logtime_utc: bool = False) -> None:
    """(Re)configures the process's logger; also what a config reload calls."""
    logger = logging.getLogger("natsx")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(GoFormatter(logtime, logtime_utc))
    logger.addHandler(handler)
    logger.setLevel(5 if trace else logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    _state.update(debug=debug, trace=trace, logtime=logtime, log_file=log_file,
                  logtime_utc=logtime_utc)


def setup_from(options) -> None:
    setup(debug=options.debug, trace=options.trace, logtime=options.logtime,
          log_file=options.log_file, logtime_utc=options.logtime_utc)


def reopen() -> None:
    """SIGUSR1: reopen the log file (after rotation)."""
    if _state.get("log_file"):
        setup(**_state)
