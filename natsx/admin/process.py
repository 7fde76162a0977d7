"""Entry point of the admin process: uvicorn serving the monitoring app (natsx.admin.app).

With ``https_port`` the monitor speaks HTTPS with the ``tls`` block's certificate (never
asking for client certificates, as Go's getMonitoringTLSConfig); a reload loads the
reloaded certificate into the same SSL context, so new connections use it.
"""
from __future__ import annotations

import asyncio
import signal
import socket

from natsx.admin.app import Monitor, create_app
from natsx.server.control import AdminLink
from natsx.logs import reopen
from natsx.server.reload import reload_admin
from natsx.supervisor import childsignals


def run_admin(options, *, server_id: str, start_time: float, listener: socket.socket,
              controls: list[str]) -> int:
    import uvicorn

    monitor = Monitor(options, server_id, [AdminLink(s) for s in controls], start_time)
    app = create_app(monitor)
    # No "server: uvicorn" header: the Go server's monitor sends none.
    tls_kw = {}
    if options.https_port and options.tls_config is not None:
        cert, key = options.tls_config.primary_pair   # with ``certs``: the first
        tls_kw = {"ssl_certfile": cert, "ssl_keyfile": key}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            server_header=False, **tls_kw)
    server = uvicorn.Server(config)

    def reload() -> None:
        reload_admin(monitor)
        tc = monitor.options.tls_config
        if tls_kw and tc is not None and config.ssl is not None:
            try:
                config.ssl.load_cert_chain(*tc.primary_pair)
            except (OSError, ValueError):
                pass   # the workers log the bad files; the old certificate stays

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        loop.add_signal_handler(signal.SIGHUP, reload)
        loop.add_signal_handler(signal.SIGUSR2, lambda: None)
        loop.add_signal_handler(signal.SIGUSR1, reopen)
        childsignals.release()
        await server.serve(sockets=[listener])

    asyncio.run(main())
    return 0
