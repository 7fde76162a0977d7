"""The inter-worker mesh: shared-memory rings between every ordered pair of workers.

``natsx.mesh.ring`` holds the theory of operation; this package re-exports its names.
"""
from natsx.mesh.ring import (
    COMPILED,
    DEFAULT_BATCH,
    DEFAULT_CAPACITY,
    HEADER_SIZE,
    MAX_CAPACITY,
    MIN_CAPACITY,
    RECORD_HEADER_SIZE,
    Inbox,
    Outbox,
    RecordKind,
    Ring,
    RingCorruptError,
    RingSet,
    Wakeup,
    format_ring,
    record_size,
    ring_size,
)

__all__ = [
    "COMPILED",
    "DEFAULT_BATCH",
    "DEFAULT_CAPACITY",
    "HEADER_SIZE",
    "MAX_CAPACITY",
    "MIN_CAPACITY",
    "RECORD_HEADER_SIZE",
    "Inbox",
    "Outbox",
    "RecordKind",
    "Ring",
    "RingCorruptError",
    "RingSet",
    "Wakeup",
    "format_ring",
    "record_size",
    "ring_size",
]
