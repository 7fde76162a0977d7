"""The signals a child process holds until it has installed its own handlers.

The supervisor forks with its handled signals blocked and the child keeps ``HELD`` blocked
while it boots: a reload (HUP), log rotation (USR1), lame duck (USR2) or stop (TERM, INT)
sent to the children in that window stays pending instead of killing the child with the
default action. Each kind of child calls ``release()`` once its handlers are in place, and
the pending signal is delivered then.
"""
from __future__ import annotations

import signal

HELD = frozenset((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2))


def hold(previous_mask) -> None:
    """In a new child: restore the mask from before the fork, plus ``HELD``."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set(previous_mask) | HELD)


def release() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
