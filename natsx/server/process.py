"""Entry point of a worker process: runs a ``Server`` on trio until told to stop."""
from __future__ import annotations

import logging
import signal
import socket

import trio

from natsx.server import control, monitor
from natsx.server.options import Options
from natsx.server.reload import reload_worker
from natsx.server.worker import Server

log = logging.getLogger("natsx")


async def _signals(server: Server, nursery: trio.Nursery) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR2,
                                   signal.SIGHUP, signal.SIGUSR1) as signals:
        async for sig in signals:
            if sig in (signal.SIGTERM, signal.SIGINT):
                server.shutdown()
            elif sig == signal.SIGUSR2:
                nursery.start_soon(server.lame_duck_mode)
            elif sig == signal.SIGHUP:
                reload_worker(server)
            elif sig == signal.SIGUSR1:
                from natsx.logs import reopen

                reopen()


async def _heartbeat(table, index: int) -> None:
    # The supervisor kills a worker whose counter stops moving: a stuck loop, not just a
    # dead process.
    while True:
        table.beat(index)
        await trio.sleep(1.0)


async def _main(server: Server, control_sock: socket.socket | None, peer_table) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, server, nursery)
        if peer_table is not None:
            nursery.start_soon(_heartbeat, peer_table, server.worker_index)
        if server.mesh is not None:
            server.mesh.start()
            nursery.start_soon(server.mesh.run)
        if control_sock is not None:
            nursery.start_soon(control.serve_worker, control_sock,
                               lambda req: monitor.handle(server, req))
        await server.serve()
        nursery.cancel_scope.cancel()


def run_worker(options: Options, *, server_id: str, index: int, listener: socket.socket,
               control: socket.socket | None, ringset=None, peer_table=None) -> int:
    server = Server(options, server_id=server_id, worker_index=index,
                    worker_count=options.workers, listener=listener)
    if peer_table is not None:
        # A restarted worker must not hand out the client ids of its previous life:
        # each generation starts its ids a million strides further on.
        generation = peer_table.read(index)[1]
        server.skip_client_ids(max(generation - 1, 0) * 1_000_000)
    if ringset is not None:
        from natsx.server.mesh import Mesh

        server.mesh = Mesh(server, ringset, peer_table, index)
    trio.run(_main, server, control, peer_table)
    return 0
