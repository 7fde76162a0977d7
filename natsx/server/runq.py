"""How many trio tasks are ready to run, cheaply.

``trio.lowlevel.current_statistics().tasks_runnable`` answers the same question but also
walks every file descriptor registered with the I/O manager (its ``io_statistics``): once
per read batch, that is a walk of every connection of the worker. This reads the length of
the run queue of the current run instead, and falls back to the public call if the
runner's shape is not the one expected.
"""
from __future__ import annotations

import trio

try:
    from trio._core._run import GLOBAL_RUN_CONTEXT as _CONTEXT
except ImportError:     # pragma: no cover - another trio layout
    _CONTEXT = None


def tasks_runnable() -> int:
    """The number of tasks on the run queue (call from inside ``trio.run``)."""
    try:
        return len(_CONTEXT.runner.runq)
    except AttributeError:
        return trio.lowlevel.current_statistics().tasks_runnable
