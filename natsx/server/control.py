"""The control channel between a worker and the admin process.

Theory of operation
-------------------
Frames are a 4-byte big-endian length followed by a JSON document. The admin sends
``{"op": ..., "_id": n, ...params}`` (the ops are ``natsx.server.monitor.handle``'s); the
worker answers with its part of the answer, carrying the same ``_id``, and the admin
merges the parts across workers. The id lets the admin drop a late answer to a request it
gave up on (a worker that was busy) instead of taking it for the answer to the next one.
The worker side runs on trio, the admin side on asyncio (uvicorn's loop); both share the
framing below.

One connection per worker incarnation. Each worker listens on a Unix socket in the
abstract namespace, named after the server id and its index (``control_address``); a
restarted worker binds the same name again. The admin connects when it first needs a
worker and keeps the connection. A length-prefixed stream cannot be resynchronised once
a writer dies in the middle of a frame (the next bytes would be read as the rest of it),
so no stream outlives its worker: the kernel closes the connection when the worker dies,
the admin fails that worker's waiting requests at once (their part is left out of the
merged answer: ``Monitor.ask`` gives None) and connects afresh, to the new incarnation,
on the next request. Until the new worker listens, connecting fails at once and the part
is left out again. Every request has a timeout, connecting included, so an HTTP request
never hangs on a worker.

Bad input never takes a worker down: a frame longer than ``MAX_FRAME`` or one that is not
a JSON object closes that connection (the admin reconnects); a failing handler answers
``{"error": ...}``. The socket is reachable by any local user (abstract names have no
file permissions), so the worker serves only peers running under its own uid.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from typing import Callable

import trio

log = logging.getLogger("natsx")

_LEN = struct.Struct(">I")
_PEERCRED = struct.Struct("3i")   # struct ucred: pid, uid, gid
MAX_FRAME = 256 * 1024 * 1024     # a /connz of every connection with every subscription
CONNECT_TIMEOUT = 1.0
#: How often a request retries a worker that has not bound its control socket yet.
STARTUP_RETRY = 0.02


class FrameError(ValueError):
    """A frame that cannot be a control message (too long, not a JSON object)."""


def control_address(server_id: str, index: int) -> str:
    """The abstract Unix socket name of worker ``index``'s control channel."""
    return f"\0natsx-control-{server_id}-{index}"


def encode_frame(obj) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), default=str).encode()
    return _LEN.pack(len(data)) + data


def frame_length(head: bytes) -> int:
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise FrameError(f"control frame of {n} bytes")
    return n


def decode_body(body: bytes) -> dict:
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise FrameError(f"control frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError("control frame is not a JSON object")
    return obj


# ---------------------------------------------------------------------- worker side (trio)

def listen(address: str) -> socket.socket:
    """Binds the worker's control socket (before trio runs, so a failure is a boot error)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen(16)
    return sock


def _same_user(sock: socket.socket) -> bool:
    try:
        _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     _PEERCRED.size))
    except OSError:
        return False
    return uid == os.getuid()


async def serve_worker(listener: socket.socket, handler: Callable[[dict], dict]) -> None:
    """Accepts the admin's connections on ``listener`` and answers each one's requests."""
    tsock = trio.socket.from_stdlib_socket(listener)
    async with trio.open_nursery() as nursery:
        while True:
            conn, _ = await tsock.accept()
            if not _same_user(conn):
                conn.close()
                continue
            nursery.start_soon(_serve_connection, conn, handler)


async def _serve_connection(conn, handler: Callable[[dict], dict]) -> None:
    stream = trio.SocketStream(conn)
    buf = bytearray()
    try:
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 4:
                n = frame_length(buf[:4])
                if len(buf) < 4 + n:
                    break
                request = decode_body(bytes(buf[4:4 + n]))
                del buf[:4 + n]
                try:
                    reply = handler(request)
                except Exception as exc:  # the admin must get an answer, never a hang
                    log.exception("control request %r failed", request.get("op"))
                    reply = {"error": str(exc)}
                if "_id" in request:
                    reply = dict(reply, _id=request["_id"])
                await stream.send_all(encode_frame(reply))
    except FrameError as exc:
        log.error("control channel: %s; closing it", exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


# ---------------------------------------------------------------------- admin side (asyncio)

class AdminLink:
    """The admin side of one worker's channel (asyncio).

    ``target`` is the worker's ``control_address`` (connected to on demand, again after
    every close) or an already connected socket (used once). One reader task per
    connection takes every answer off the socket and hands it to the request waiting for
    its ``_id``, so requests may overlap, and a request that timed out leaves nothing
    half-read behind: its answer, if it ever comes, finds no one waiting and is dropped.
    """

    def __init__(self, target: str | socket.socket) -> None:
        self._address = target if isinstance(target, str) else None
        self._sock = None if isinstance(target, str) else target
        self._writer = None
        self._reader_task = None
        self._waiting: dict = {}
        self._next_id = 0
        self._connect_lock: asyncio.Lock | None = None
        self.connects = 0     # connections made so far (one per worker incarnation)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._reader_task.done()

    async def _connect(self) -> None:
        if self._address is not None:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self._address, limit=2 ** 20), CONNECT_TIMEOUT)
        elif self._sock is not None:
            sock, self._sock = self._sock, None
            reader, writer = await asyncio.open_connection(sock=sock, limit=2 ** 20)
        else:
            raise ConnectionError("control channel closed")
        self.connects += 1
        self._writer = writer
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, writer))

    async def _read(self, reader, writer) -> None:
        error: Exception = ConnectionError("control channel closed")
        try:
            while True:
                n = frame_length(await reader.readexactly(4))
                reply = decode_body(await reader.readexactly(n))
                future, _ = self._waiting.pop(reply.pop("_id", None), (None, None))
                if future is not None and not future.done():
                    future.set_result(reply)
        except FrameError as exc:
            log.error("control channel: %s; reconnecting", exc)
            error = ConnectionError(str(exc))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            # The worker (this incarnation of it) is gone: every request still waiting
            # on this connection fails now, not at its timeout.
            if self._writer is writer:
                self._writer = None
            writer.close()
            for future, on in list(self._waiting.values()):
                if on is writer and not future.done():
                    future.set_exception(error)

    async def request(self, obj: dict, timeout: float = 5.0) -> dict:
        """The worker's answer to ``obj``.

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
            ConnectionError: the worker cannot be reached, or it went away before answering.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self.connected:
            if self._connect_lock is None:
                self._connect_lock = asyncio.Lock()
            # Overlapping first requests must connect once.
            async with self._connect_lock:
                while not self.connected:
                    try:
                        await asyncio.wait_for(self._connect(),
                                               max(deadline - loop.time(), 0.001))
                    except (OSError, asyncio.TimeoutError) as exc:
                        # A worker still starting has not bound its socket yet: until it
                        # first answers, the request waits for it (as a client's connection
                        # waits in the listener's backlog). Later a refusal means the worker
                        # went away, and fails at once.
                        if self.connects == 0 and self._address is not None and \
                                isinstance(exc, (FileNotFoundError, ConnectionRefusedError)) \
                                and loop.time() + STARTUP_RETRY < deadline:
                            await asyncio.sleep(STARTUP_RETRY)
                            continue
                        raise ConnectionError(f"control channel: {exc!r}") from None
        writer = self._writer
        self._next_id += 1
        rid = self._next_id
        future = loop.create_future()
        self._waiting[rid] = (future, writer)
        try:
            writer.write(encode_frame(dict(obj, _id=rid)))
            return await asyncio.wait_for(future, max(deadline - loop.time(), 0.001))
        finally:
            self._waiting.pop(rid, None)
