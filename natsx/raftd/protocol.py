"""The local channel between the workers and the raft process: frames and messages (sans-IO).

Theory of operation
-------------------
A frame is a 4-byte little-endian length and a CBOR array whose first item names the message.
``Decoder.feed(data)`` returns the complete messages of a byte stream and keeps the rest.

Worker -> raft process:

``["open", req, path, map_size, sync_interval]``
                                          open (create if missing) the stream environment at
                                          ``path`` and become its writer (``sync_interval``
                                          ns: 0 syncs every commit before answering, else
                                          commits reach the disk that often): answered by
                                          ``["opened", req, gid, epoch, applied, error]``.
``["prop", gid, epoch, index, ops]``     a proposal: the stream group's entry number ``index``
                                          (1, 2, ... per group, across raft restarts), made of
                                          physical LMDB operations ``ops`` (see OP_*). Answered
                                          by ``["ok", gid, index]`` once committed to the raft
                                          log, applied to LMDB and synced, or by
                                          ``["err", gid, index, text]``.
``["drop", req, path, remove]``          close the environment (and delete it): ``["dropped", req]``.

Opening a group again (a restarted worker, a reconnect after the raft process restarted)
bumps its ``epoch``: proposals of an older epoch are refused, so a dead writer's frames still
in flight can never land after its successor has read the state. ``applied`` is the last
proposal index applied to LMDB; a reconnecting worker resends only the ones after it, so a
proposal is applied exactly once.
"""
from __future__ import annotations

import struct

import cbor2

_LEN = struct.Struct("<I")

# Operations of a proposal: [op, db, key, value].
OP_PUT = 0        # put key -> value
OP_DEL = 1        # delete key (every duplicate)
OP_DEL_DUP = 2    # delete the duplicate value of key (dupsort databases)
OP_DROP = 3       # empty the database

# Databases of a stream environment (natsx.storage.lmdbstore).
DB_MSGS, DB_SUBJ, DB_TTL, DB_META, DB_CONSUMERS = range(5)


def frame(msg: list) -> bytes:
    body = cbor2.dumps(msg)
    return _LEN.pack(len(body)) + body


class Decoder:
    """Splits a byte stream into messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            size = _LEN.unpack_from(buf, pos)[0]
            if n - pos - 4 < size:
                break
            out.append(cbor2.loads(bytes(buf[pos + 4:pos + 4 + size])))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out
