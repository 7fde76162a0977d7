"""Python stacks of one process, for /stacksz.

Theory of operation
-------------------
The Go server answers /stacksz with ``runtime.Stack(buf, true)``: every goroutine. The
Python equivalents are the threads (``sys._current_frames``) and the tasks of the event
loop, which are suspended coroutines that no thread stack shows: asyncio tasks in the
admin process, trio tasks in a worker. A task's stack is found by following the chain of
coroutines it awaits, from its outermost frame to the one that is suspended.

The text is built without taking any lock the server uses, so a stuck process still
answers as long as its event loop runs the control request (a worker whose loop is stuck
cannot answer at all; the admin then says which worker did not).
"""
from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator
from types import FrameType


def _format(frames: Iterable[tuple[FrameType, int]]) -> str:
    return "".join(traceback.StackSummary.extract(frames, lookup_lines=True).format())


def _thread_stacks() -> Iterator[str]:
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        header = f"thread {ident} {names.get(ident, '?')} (most recent call last):\n"
        # walk_stack goes from the innermost frame out; a traceback reads the other way.
        yield header + _format(reversed(list(traceback.walk_stack(frame))))


def _coroutine_frames(coro) -> Iterator[tuple[FrameType, int]]:
    """Frames of a suspended coroutine and of everything it awaits, outermost first."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) \
            or getattr(coro, "ag_frame", None)
        if frame is None:
            return
        yield frame, frame.f_lineno
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) \
            or getattr(coro, "ag_await", None)


def _asyncio_stacks() -> Iterator[str]:
    import asyncio

    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:   # no running loop in this thread
        return
    for task in sorted(tasks, key=lambda t: t.get_name()):
        state = "done" if task.done() else "pending"
        header = f"task {task.get_name()} [asyncio, {state}] (most recent call last):\n"
        yield header + _format(_coroutine_frames(task.get_coro()))


def _trio_tasks(task) -> Iterator:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _trio_tasks(child)


def _trio_stacks() -> Iterator[str]:
    import trio

    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:   # not inside trio.run
        return
    for task in _trio_tasks(root):
        header = f"task {task.name} [trio] (most recent call last):\n"
        yield header + _format(task.iter_await_frames())


def process_stacks(label: str, *, asyncio_tasks: bool = False, trio_tasks: bool = False) -> str:
    """Every thread's stack, then every task's, under a header naming the process."""
    parts = [f"process {label} pid {os.getpid()}\n"]
    parts.extend(_thread_stacks())
    if asyncio_tasks:
        parts.extend(_asyncio_stacks())
    if trio_tasks:
        parts.extend(_trio_stacks())
    return "\n".join(parts)
