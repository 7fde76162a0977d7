"""The local channel between the workers and the raft process: frames and messages (sans-IO).

Theory of operation
-------------------
A frame is a 4-byte little-endian length and a CBOR array whose first item names the message,
except for proposals, the bulk of the traffic: their body is a zero byte, the group id, epoch
and index (three little-endian u64) and the operations as one ``marshal`` blob (``encode_ops``;
both ends are the same interpreter, and it encodes and decodes a batch of operations several
times faster than CBOR). The raft process never decodes that blob to queue or commit it: the
group's log entry is the index and the blob as they came, decoded once, when applied.
``Decoder.feed(data)`` returns the complete messages of a byte stream and keeps the rest; a
proposal comes out as ``["prop", gid, epoch, index, blob]``.

Worker -> raft process:

``["open", req, path, map_size, sync_interval]``
                                          open (create if missing) the stream environment at
                                          ``path`` and become its writer (``sync_interval``
                                          ns: 0 syncs every commit before answering, else
                                          commits reach the disk that often): answered by
                                          ``["opened", req, gid, epoch, applied, error]``.
``["prop", gid, epoch, index, ops]``     a proposal (``prop_frame``): the stream group's entry
                                          number ``index`` (1, 2, ... per group, across raft
                                          restarts), made of physical LMDB operations ``ops``
                                          (see OP_*; a blob, or a CBOR list). Answered
                                          by ``["ok", gid, index]`` once committed to the raft
                                          log and durable in its write-ahead log, or by
                                          ``["err", gid, index, text]``; later
                                          ``["applied", gid, index]`` says that LMDB holds
                                          every entry up to ``index``.
``["drop", req, path, remove]``          close the environment (and delete it): ``["dropped", req]``.

Opening a group again (a restarted worker, a reconnect after the raft process restarted)
bumps its ``epoch``: proposals of an older epoch are refused, so a dead writer's frames still
in flight can never land after its successor has read the state. ``applied`` is the last
proposal index applied to LMDB; a reconnecting worker resends only the ones after it, so a
proposal is applied exactly once.
"""
from __future__ import annotations

import marshal
import socket
import struct

import cbor2

_LEN = struct.Struct("<I")
_PROP = struct.Struct("<BQQQ")    # 0, gid, epoch, index
_MARSHAL_VERSION = 4

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


def encode_ops(ops: list) -> bytes:
    """The operations of a proposal (tuples or lists of ints and bytes) as one blob."""
    return marshal.dumps(ops, _MARSHAL_VERSION)


def decode_ops(blob) -> list:
    """The operations of ``encode_ops`` (raises ValueError, EOFError or TypeError if bad)."""
    return marshal.loads(blob)


def prop_frame(gid: int, epoch: int, index: int, blob: bytes) -> bytes:
    """The frame of a proposal whose operations are ``blob`` (``encode_ops``)."""
    return _LEN.pack(_PROP.size + len(blob)) + _PROP.pack(0, gid, epoch, index) + blob


_RECV = memoryview(bytearray(1 << 20))


def recv(sock):
    """What the channel has (non-blocking; BlockingIOError when nothing), as a view of a
    buffer the next call reuses: feed it to a Decoder at once. ``sock.recv(1 << 20)``
    would allocate (mmap) a megabyte per read and shrink it again."""
    n = sock.recv_into(_RECV, len(_RECV), socket.MSG_DONTWAIT)
    return _RECV[:n]


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
            if size and buf[pos + 4] == 0:
                if size < _PROP.size:
                    raise ValueError("short proposal frame")
                _, gid, epoch, index = _PROP.unpack_from(buf, pos + 4)
                out.append(["prop", gid, epoch, index,
                            bytes(buf[pos + 4 + _PROP.size:pos + 4 + size])])
            else:
                out.append(cbor2.loads(bytes(buf[pos + 4:pos + 4 + size])))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out
