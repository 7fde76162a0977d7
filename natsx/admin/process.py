"""Entry point of the admin process: uvicorn serving the monitoring app (natsx.admin.app)."""
from __future__ import annotations

import asyncio
import signal
import socket

from natsx.admin.app import Monitor, create_app
from natsx.server.control import AdminLink
from natsx.server.reload import reload_admin


def run_admin(options, *, server_id: str, start_time: float, listener: socket.socket,
              controls: list[socket.socket]) -> int:
    import uvicorn

    monitor = Monitor(options, server_id, [AdminLink(s) for s in controls], start_time)
    app = create_app(monitor)
    # No "server: uvicorn" header: the Go server's monitor sends none.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            server_header=False)
    server = uvicorn.Server(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        loop.add_signal_handler(signal.SIGHUP, reload_admin, monitor)
        loop.add_signal_handler(signal.SIGUSR2, lambda: None)
        await server.serve(sockets=[listener])

    asyncio.run(main())
    return 0
