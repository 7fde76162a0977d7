"""natsx.server.runq: the run-queue length JetStream's group commit asks for once a batch."""
import socket

import trio

from natsx.server import runq


def test_tasks_runnable_is_what_trio_reports():
    seen = []

    async def main():
        a, b = socket.socketpair()
        try:
            async with trio.open_nursery() as nursery:
                # Tasks blocked on I/O are registered with the I/O manager, not runnable.
                nursery.start_soon(trio.lowlevel.wait_readable, a)
                await trio.sleep(0.01)
                seen.append((runq.tasks_runnable(),
                             trio.lowlevel.current_statistics().tasks_runnable))
                for _ in range(3):
                    nursery.start_soon(trio.sleep, 0)
                seen.append((runq.tasks_runnable(),
                             trio.lowlevel.current_statistics().tasks_runnable))
                b.send(b"x")
                await trio.sleep(0.01)
        finally:
            a.close()
            b.close()

    trio.run(main)
    assert seen == [(0, 0), (3, 3)]


def test_tasks_runnable_falls_back_to_the_public_call(monkeypatch):
    class Elsewhere:
        pass    # a run context without the runner attribute this module reads

    monkeypatch.setattr(runq, "_CONTEXT", Elsewhere())
    seen = []

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0)
            nursery.start_soon(trio.sleep, 0)
            seen.append(runq.tasks_runnable())

    trio.run(main)
    assert seen == [2]
