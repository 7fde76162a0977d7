"""Garbage-collector settings of the long-running processes: workers and the raft process.

Reference counting frees almost everything these processes allocate; the cyclic collector
only matters for cycles. Yet its young collections are triggered by allocation counts, and
the hot paths allocate a few tracked containers per message (the tuples of an outbox and of
a proposal, a sublist result for each new reply subject), so at the default threshold (700)
a young collection ran every hundred messages or so, and every older collection walked again
the tens of thousands of objects that startup leaves for good (modules, options, the
sublists). ``tune`` runs once a process is set up: it collects, moves what survived out of
the collector's sight (``gc.freeze``), and raises the young threshold, so collections are
rarer and cover only what the process made since.
"""
from __future__ import annotations

import gc

#: Allocations (of tracked objects, net of deallocations) between young collections.
YOUNG_THRESHOLD = 20_000


def tune() -> None:
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
