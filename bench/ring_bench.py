"""Ring micro-benchmark: records per second with 64-byte payloads, for both ring twins.

Single process: the time spent in ``try_write`` and in ``read_batch``/``drain``, measured
separately over laps that fill the ring and drain it. Two processes: a forked producer
writes batches and signals once per batch; the parent sleeps on its eventfd through
trio and drains with ``read_into``; the rate is end to end.

    python bench/ring_bench.py [--seconds 0.5]

Numbers on a shared machine are noisy; compare twins within one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import trio  # noqa: E402

from natsx._speedups import load  # noqa: E402
from natsx.mesh import RecordKind, RingSet  # noqa: E402

ACCOUNT = b"$G"
SUBJECT = b"bench.ring.subject"
PAYLOAD = bytes(range(64))
MSG = int(RecordKind.MSG)
CAPACITY = 1 << 20


def _ignore(*record) -> None:
    pass


def one_process(impl, seconds: float) -> dict[str, float]:
    with RingSet(2, CAPACITY, impl=impl) as rs:
        ring = rs.rings_to(0, 1)
        write = ring.try_write
        written = read = drained = 0
        t_write = t_read = t_drain = 0.0
        deadline = time.perf_counter() + seconds
        lap = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            n = 0
            while write(MSG, ACCOUNT, SUBJECT, b"", b"", PAYLOAD):
                n += 1
            t1 = time.perf_counter()
            if lap % 2:
                read += len(ring.read_batch(1 << 30))
                t_read += time.perf_counter() - t1
            else:
                drained += ring.drain(_ignore, 1 << 30)
                t_drain += time.perf_counter() - t1
            t_write += t1 - t0
            written += n
            lap += 1
        return {
            "try_write": written / t_write,
            "read_batch": read / t_read if t_read else 0.0,
            "drain": drained / t_drain if t_drain else 0.0,
        }


def two_processes(impl, seconds: float) -> float:
    """End-to-end records/s from a forked producer to a trio consumer."""
    with RingSet(2, CAPACITY, impl=impl) as rs:
        stop_at = time.monotonic() + seconds
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                outbox = rs.outbox(0)
                write = outbox.rings[1].try_write
                seq = 0
                while time.monotonic() < stop_at:
                    for _ in range(256):
                        if not write(MSG, ACCOUNT, SUBJECT, b"", b"", PAYLOAD, aux=1):
                            outbox.notify()
                            time.sleep(0.00005)
                            break
                        seq += 1
                    outbox.notify()
                while not write(MSG, ACCOUNT, SUBJECT, b"", b"", b"", aux=0):
                    time.sleep(0.00005)             # the end marker: aux 0
                outbox.notify()
                code = 0
            finally:
                os._exit(code)

        async def consume() -> tuple[int, float]:
            inbox = rs.inbox(1)
            ring = inbox.rings[0]
            out: list = []
            count = 0
            start = time.perf_counter()
            while True:
                out.clear()
                n = ring.read_into(out)
                if n and out[-1][1] == 0:
                    return count + n - 1, time.perf_counter() - start
                count += n
                if not n:
                    await inbox.wait()

        count, elapsed = trio.run(consume)
        os.waitpid(pid, 0)
        return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    args = parser.parse_args()
    twins = [("pure", load("ring", pure=True))]
    compiled = load("ring", pure=False)
    if compiled.__name__.endswith("._ring"):
        twins.insert(0, ("compiled", compiled))
    else:
        print("compiled ring not built: pure twin only", file=sys.stderr)
    print(f"payload {len(PAYLOAD)} B, subject {len(SUBJECT)} B, ring {CAPACITY >> 10} KiB")
    for name, impl in twins:
        rates = one_process(impl, args.seconds)
        for what, rate in rates.items():
            print(f"BenchmarkRing_{name:<9} {what:<12} {rate / 1e6:8.2f} M records/s")
        rate = two_processes(impl, args.seconds)
        print(f"BenchmarkRing_{name:<9} {'2 processes':<12} {rate / 1e6:8.2f} M records/s")


if __name__ == "__main__":
    main()
