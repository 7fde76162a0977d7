"""Entry point of a worker process: runs a ``Server`` on trio until told to stop."""
from __future__ import annotations

import errno
import logging
import signal
import socket
import time

import trio

from natsx import gctune
from natsx.server import control, monitor
from natsx.server.options import Options
from natsx.server.reload import reload_worker
from natsx.server.worker import Server
from natsx.supervisor import childsignals

log = logging.getLogger("natsx")


async def _signals(server: Server, nursery: trio.Nursery) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR2,
                                   signal.SIGHUP, signal.SIGUSR1) as signals:
        childsignals.release()   # what arrived while the worker booted is delivered now
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


def _control_listener(address: str) -> socket.socket:
    """Binds this worker's control socket. The name frees up when the previous
    incarnation's process is gone, which the supervisor saw before it forked this one, so
    a busy name is retried only briefly."""
    for _ in range(50):
        try:
            return control.listen(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            time.sleep(0.02)
    return control.listen(address)


async def _main(server: Server, control_sock: socket.socket | None, peer_table) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, server, nursery)
        if peer_table is not None:
            nursery.start_soon(_heartbeat, peer_table, server.worker_index)
        if server.mesh is not None:
            server.mesh.start()
            nursery.start_soon(server.mesh.run)
            nursery.start_soon(server.mesh.settle_loop)
            nursery.start_soon(server.mesh.retry_overflow)
        if control_sock is not None:
            nursery.start_soon(control.serve_worker, control_sock,
                               lambda req: monitor.handle(server, req))
        await server.serve()
        nursery.cancel_scope.cancel()


def run_worker(options: Options, *, server_id: str, index: int, listener: socket.socket,
               control: str | None, ringset=None, peer_table=None,
               ws_listener: socket.socket | None = None, raft_address=None,
               start_time: float | None = None) -> int:
    server = Server(options, server_id=server_id, worker_index=index,
                    worker_count=options.workers, listener=listener, ws_listener=ws_listener)
    if start_time is not None and server.system is not None:
        # The server's start (the supervisor's), not this worker's: $SYS STATSZ/VARZ.
        server.system.start_time = start_time
    # JetStream's file streams are written by the raft process at this address.
    server.raft_address = raft_address
    if peer_table is not None:
        server.peer_table = peer_table
        peer_table.set_connections(index, 0)
        # A restarted worker must not hand out the client ids of its previous life:
        # each generation starts its ids a million strides further on.
        generation = peer_table.read(index)[1]
        server.skip_client_ids(max(generation - 1, 0) * 1_000_000)
    if ringset is not None:
        from natsx.server.mesh import Mesh

        server.mesh = Mesh(server, ringset, peer_table, index)
    control_sock = _control_listener(control) if control is not None else None
    gctune.tune()
    trio.run(_main, server, control_sock, peer_table)
    return 0
