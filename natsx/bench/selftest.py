"""How fast the benchmark client itself can produce and consume frames, with no server.

A benchmark is only meaningful while the server, not the client, is the bottleneck. This
measures the client's ceiling on this machine, for the twin in use:

* ``build``: ``PubBuilder.build`` alone, frames per second;
* ``count``: ``FrameCounter.feed`` over 256 KiB reads of MSG frames, each read ending in
  the middle of a frame so the carry-over path is part of the cost;
* ``send``: build + ``sendall`` into a socketpair whose other end discards;
* ``recv``: a socketpair fed with ready MSG frames, read and counted by the subscriber
  loop's code path.

Rates here are upper bounds for one publisher or one subscriber thread; anything a run
reports well below them was limited by the server.
"""
from __future__ import annotations

import socket
import threading
import time

from natsx._speedups import load
from natsx.bench.loops import BATCH_BYTES, RECV_BYTES


def _msg_stream(bc, size: int, nbytes: int) -> bytes:
    frame = bc.PubBuilder(b"bench", size).build(1).replace(b"PUB bench", b"MSG bench 1", 1)
    return frame * max(1, nbytes // len(frame))


def measure(size: int = 16, seconds: float = 1.0, pure: bool | None = None) -> dict:
    """Rates (per second) of the four paths described in the module header."""
    bc = load("benchclient", pure=pure)
    out: dict = {"client": bc.__name__, "size": size}

    b = bc.PubBuilder(b"bench", size)
    k = max(1, BATCH_BYTES // b.frame_size)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b.build(k)
        n += k
    out["build_msgs_per_sec"] = n / (time.perf_counter() - t0)

    stream = _msg_stream(bc, size, 4 * RECV_BYTES)
    cut = len(stream) // 4 * 3 + 7  # reads end mid-frame, as real ones do
    chunks = [stream[:cut], stream[cut:]]
    fc = bc.FrameCounter(track=1)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for c in chunks:
            fc.feed(c)
    out["count_msgs_per_sec"] = fc.msgs / (time.perf_counter() - t0)

    out["send_msgs_per_sec"] = _socket_send(bc, size, seconds)
    out["recv_msgs_per_sec"] = _socket_recv(bc, size, seconds, stream)
    return out


def _socket_send(bc, size: int, seconds: float) -> float:
    a, z = socket.socketpair()
    stop = threading.Event()

    def drain() -> None:
        buf = bytearray(RECV_BYTES)
        while not stop.is_set():
            if z.recv_into(buf) == 0:
                return

    th = threading.Thread(target=drain, daemon=True)
    th.start()
    b = bc.PubBuilder(b"bench", size)
    k = max(1, BATCH_BYTES // b.frame_size)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a.sendall(b.build(k))
        n += k
    rate = n / (time.perf_counter() - t0)
    stop.set()
    a.close()
    th.join(2)
    z.close()
    return rate


def _socket_recv(bc, size: int, seconds: float, stream: bytes) -> float:
    a, z = socket.socketpair()
    stop = threading.Event()

    def feed() -> None:
        try:
            while not stop.is_set():
                a.sendall(stream)
        except OSError:
            pass

    th = threading.Thread(target=feed, daemon=True)
    th.start()
    fc = bc.FrameCounter()
    buf = bytearray(RECV_BYTES)
    mv = memoryview(buf)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n = z.recv_into(mv)
        fc.feed(mv, n)
    rate = fc.msgs / (time.perf_counter() - t0)
    stop.set()
    z.close()
    th.join(2)
    a.close()
    return rate
