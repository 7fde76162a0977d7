"""The control channel between a worker and the admin process.

Frames are a 4-byte big-endian length followed by a JSON document. The admin sends
``{"op": "varz" | "connz" | "subsz" | "healthz", ...params}``; the worker answers with its
part of the answer, which the admin merges across workers. The worker side runs on trio,
the admin side on asyncio (uvicorn's loop); both share the framing below.
"""
from __future__ import annotations

import json
import logging
import socket
import struct
from typing import Callable

import trio

log = logging.getLogger("natsx")

_LEN = struct.Struct(">I")


def encode_frame(obj) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), default=str).encode()
    return _LEN.pack(len(data)) + data


async def serve_worker(sock: socket.socket, handler: Callable[[dict], dict]) -> None:
    """Answers control requests on ``sock`` until the admin closes it."""
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    buf = bytearray()
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buf += chunk
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            request = json.loads(bytes(buf[4:4 + n]))
            del buf[:4 + n]
            try:
                reply = handler(request)
            except Exception as exc:  # the admin must get an answer, never a hang
                log.exception("control request %r failed", request.get("op"))
                reply = {"error": str(exc)}
            if "_id" in request:
                reply = dict(reply, _id=request["_id"])
            await stream.send_all(encode_frame(reply))


class AdminLink:
    """The admin side of one worker's channel (asyncio)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = None
        self._writer = None
        self._lock = None
        self._next_id = 0

    async def request(self, obj: dict, timeout: float = 5.0) -> dict:
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
            self._reader, self._writer = await asyncio.open_connection(sock=self._sock)
        async with self._lock:
            # Requests carry an id: an answer that arrives after its request timed out is
            # skipped instead of being taken for the next request's answer.
            self._next_id += 1
            rid = self._next_id
            self._writer.write(encode_frame(dict(obj, _id=rid)))
            await self._writer.drain()
            while True:
                head = await asyncio.wait_for(self._reader.readexactly(4), timeout)
                (n,) = _LEN.unpack(head)
                body = json.loads(await asyncio.wait_for(self._reader.readexactly(n), timeout))
                if body.get("_id", rid) == rid:
                    body.pop("_id", None)
                    return body
