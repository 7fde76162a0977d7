"""The control channel between a worker and the admin process.

Frames are a 4-byte big-endian length followed by a JSON document. The admin sends
``{"op": ..., "_id": n, ...params}`` (the ops are ``natsx.server.monitor.handle``'s); the
worker answers with its part of the answer, carrying the same ``_id``, and the admin
merges the parts across workers. The id lets the admin drop a late answer to a request it
gave up on (a worker that was busy or restarting) instead of taking it for the answer to
the next one. The worker side runs on trio, the admin side on asyncio (uvicorn's loop);
both share the framing below.
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
    """The admin side of one worker's channel (asyncio).

    One reader task takes every answer off the socket and hands it to the request waiting
    for its ``_id``, so requests may overlap, and a request that timed out leaves nothing
    half-read behind: its answer, if it ever comes, finds no one waiting and is dropped.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._writer = None
        self._reader_task = None
        self._waiting: dict = {}
        self._next_id = 0
        self._start_lock = None

    async def _start(self) -> None:
        import asyncio

        reader, self._writer = await asyncio.open_connection(sock=self._sock)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader) -> None:
        import asyncio

        try:
            while True:
                (n,) = _LEN.unpack(await reader.readexactly(4))
                reply = json.loads(await reader.readexactly(n))
                future = self._waiting.pop(reply.pop("_id", None), None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("control channel closed"))
            self._waiting.clear()

    async def request(self, obj: dict, timeout: float = 5.0) -> dict:
        """The worker's answer to ``obj``.

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
            ConnectionError: the channel is closed.
        """
        import asyncio

        if self._writer is None:
            # Overlapping first requests must wrap the socket once.
            if self._start_lock is None:
                self._start_lock = asyncio.Lock()
            async with self._start_lock:
                if self._writer is None:
                    await self._start()
        if self._reader_task.done():
            raise ConnectionError("control channel closed")
        self._next_id += 1
        rid = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        try:
            self._writer.write(encode_frame(dict(obj, _id=rid)))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(rid, None)
