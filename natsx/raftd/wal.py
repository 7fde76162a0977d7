"""A stream group's write-ahead log: where the raft process makes a proposal durable.

Theory of operation
-------------------
Syncing an LMDB commit costs two flushes of pages spread over a growing file; appending to a
log file and flushing it once costs far less. So a group's committed entries are first
appended to ``raft.wal`` in the stream's directory and flushed (``fdatasync``): that is the
point a proposal is durable and may be answered. LMDB takes them afterwards (the raft
process's applier thread, still one synced transaction per batch), and its ``raft`` meta record
says up to which index it has them.

A record is ``<u32 length><u32 crc32><u64 index>`` and the proposal's operations blob; the
CRC covers the index and the blob. Records follow each other with consecutive indexes. Once
LMDB holds everything the log holds, the next record is written at offset 0 again (``reset``):
the file is reused, not truncated, so it does not grow and shrink with every round, and
overwriting already allocated blocks makes the flush cheaper than appending (the file's size
does not change). The file grows in zero-filled chunks, doubling from 64 KiB up to 1 MiB at
a time, so a stream that stores little keeps a small log.

``scan`` (recovery) reads records from the start while they are whole, their CRC matches and
their indexes are consecutive; what LMDB already has is skipped. A torn last record, the
zeros of a chunk and what is left of an older cycle after the newest records all end the scan:
an older cycle's records have lower indexes than the newest, so they can never continue the
sequence.
"""
from __future__ import annotations

import os
import struct
import zlib

_REC = struct.Struct("<IIQ")     # blob length, crc32 of (index, blob), index
_INDEX = struct.Struct("<Q")
FIRST_CHUNK = 64 << 10           # the file grows (zero-filled) by its own size, from this
CHUNK = 1 << 20                  # up to this much at a time
MAX_SIZE = 64 << 20              # past this, LMDB catches up and the log starts over


def record(index: int, blob) -> bytes:
    crc = zlib.crc32(blob, zlib.crc32(_INDEX.pack(index)))
    return _REC.pack(len(blob), crc, index) + blob


def scan(data, applied: int) -> list:
    """The ``(index, blob)`` records of ``data`` after index ``applied``, in order; raises
    ValueError when the log does not continue from ``applied`` (a gap: entries are missing)."""
    out = []
    pos, prev, n = 0, None, len(data)
    view = memoryview(data)
    while pos + _REC.size <= n:
        size, crc, index = _REC.unpack_from(data, pos)
        end = pos + _REC.size + size
        if index == 0 or end > n:
            break
        blob = view[pos + _REC.size:end]
        if zlib.crc32(blob, zlib.crc32(_INDEX.pack(index))) != crc:
            break
        if prev is not None and index != prev + 1:
            break
        prev = index
        if index > applied:
            out.append((index, bytes(blob)))
        pos = end
    if out and out[0][0] != applied + 1:
        raise ValueError(f"the log starts at entry {out[0][0]}, after entry {applied}")
    return out


class Wal:
    """The log file of one group (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        created = not os.path.exists(path)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if created:
            # The file's name must outlive a crash as well as what is written into it.
            dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.size = os.fstat(self.fd).st_size
        self.offset = 0

    def recover(self, applied: int) -> list:
        """The records after ``applied`` (``scan``); the next write starts over at 0."""
        data = os.pread(self.fd, self.size, 0) if self.size else b""
        self.offset = 0
        return scan(data, applied)

    def append(self, records: list) -> None:
        data = b"".join(records)
        end = self.offset + len(data)
        if end > self.size:
            grow = max(min(max(self.size, FIRST_CHUNK), CHUNK), end - self.size)
            os.pwrite(self.fd, bytes(grow), self.size)
            self.size += grow
        os.pwrite(self.fd, data, self.offset)
        self.offset = end

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def reset(self) -> None:
        self.offset = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
