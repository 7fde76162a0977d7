"""The WebSocket listener of a worker: accept, TLS, the HTTP upgrade, then a client.

Theory of operation
-------------------
The supervisor binds the ``websocket`` port like the client port (one SO_REUSEPORT
listener per worker) and each worker accepts on its own here. Every accepted socket gets a
task that does what Go's ``net/http`` server and ``wsUpgrade`` do before a client exists:
the TLS handshake when the block has ``tls {}``, then HTTP requests read under
``handshake_timeout`` (none when 0, as in Go) and answered with natsx.server.websocket's
responses, until one upgrades. Only then is a ``ClientConnection`` created, counted (total
connections, max_connections) and run, with the upgrade's ``Codec`` as its ``ws``: the
connection passes what it reads through ``ws.decode`` and what it writes through
``ws.frame``. A socket that never upgrades is never a client, so it shows in no counter
and in no /connz, as in Go.

WebSocket clients differ from the others in what the server tells and asks them, also
decided here: their INFO (``ws_info``: the websocket host and port, ``tls_required`` of the
websocket listener, ``auth_required`` when the block overrides authentication) and the
``Authenticator`` that checks their CONNECT (``authenticator``: the block's
``authorization`` and ``no_auth_user`` replace the server's single user, token and
no-auth user, and its ``timeout`` the auth timeout; the users and nkeys stay the server's,
Go's ``processClientOrLeafAuthentication``).
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs
import trio

from natsx.auth.users import Authenticator
from natsx.server import websocket as wsp
from natsx.server.connection import MAX_CONNECTIONS, ClientConnection

if TYPE_CHECKING:
    from natsx.server.worker import Server

log = logging.getLogger("natsx")

_RECV = 65536

# Go's Info struct order, for the INFO sent to WebSocket clients.
_INFO_ORDER = {k: i for i, k in enumerate((
    "server_id", "server_name", "version", "proto", "git_commit", "go", "host", "port",
    "headers", "auth_required", "tls_required", "tls_verify", "tls_available", "max_payload",
    "jetstream", "ip", "client_id", "client_ip", "nonce", "cluster", "cluster_dynamic",
    "domain", "connect_urls", "ws_connect_urls", "ldm", "compression", "connect_info",
    "remote_account", "acc_is_sys", "api_lvl"))}


# ------------------------------------------------------------------ per worker

def settings(server: "Server") -> wsp.Settings:
    """The handshake settings for the options in force (rebuilt after a reload)."""
    cached = getattr(server, "_ws_settings", None)
    if cached is None or cached[0] is not server.options:
        cached = server._ws_settings = (server.options, wsp.Settings(server.options.websocket))
    return cached[1]


def authenticator(server: "Server") -> Authenticator:
    """The Authenticator for WebSocket clients (see the module docstring)."""
    cached = getattr(server, "_ws_auth", None)
    if cached is not None and cached[0] is server.auth and cached[1] is server.options:
        return cached[2]
    o = server.options
    wo = o.websocket
    changes: dict = {}
    if wo.auth_timeout:
        changes["auth_timeout"] = wo.auth_timeout
    if wo.auth_override:
        changes.update(username=wo.username, password=wo.password, authorization=wo.token,
                       no_auth_user=wo.no_auth_user)
    auth = Authenticator(attrs.evolve(o, **changes)) if changes else server.auth
    server._ws_auth = (server.auth, o, auth)
    return auth


def ws_info(server: "Server", conn: ClientConnection, info: dict) -> dict:
    """The INFO for a WebSocket client (Go: generateClientInfoJSON)."""
    wo = server.options.websocket
    tls = wo.tls is not None
    info["host"] = wo.host
    info["port"] = wo.port
    info.pop("tls_required", None)
    info.pop("tls_available", None)
    if tls:
        info["tls_required"] = info["tls_available"] = True
    # A WebSocket client reconnects to WebSocket URLs, which a lone server has none of.
    info.pop("connect_urls", None)
    info.pop("ws_connect_urls", None)
    if authenticator(server).required:
        info["auth_required"] = True
    return dict(sorted(info.items(), key=lambda kv: _INFO_ORDER.get(kv[0], len(_INFO_ORDER))))


def _tls_context(server: "Server"):
    cached = getattr(server, "_ws_tls", None)
    tls_opts = server.options.websocket.tls
    if cached is None or cached[0] is not tls_opts:
        from natsx.server.tls import server_context

        cached = server._ws_tls = (tls_opts, server_context(tls_opts))
    return cached[1]


# ------------------------------------------------------------------ accepting

async def accept_loop(server: "Server") -> None:
    await server.accept_from(server.ws_listener, "websocket ",
                             lambda sock: server._nursery.start_soon(_serve, server, sock))


async def _serve(server: "Server", sock) -> None:
    try:
        peer = sock.getpeername()
        addr = f"{peer[0]}:{peer[1]}" if ":" not in peer[0] else f"[{peer[0]}]:{peer[1]}"
    except OSError:
        addr = "?"
    up = None
    try:
        wo = server.options.websocket
        timeout = wo.handshake_timeout if wo.handshake_timeout > 0 else math.inf
        with trio.move_on_after(timeout):
            if wo.tls is not None:
                from natsx.server import tls as tlsmod

                sock = tlsmod.wrap_server(_tls_context(server), sock)
                try:
                    await tlsmod.handshake(sock, wo.tls.timeout or tlsmod.TLS_TIMEOUT)
                    if not tlsmod.pinned(sock, wo.tls.pinned_certs):
                        raise tlsmod.HandshakeError("peer certificate not pinned")
                    await tlsmod.check_ocsp_peer(sock, _tls_context(server), wo.tls)
                except (tlsmod.HandshakeError, OSError) as exc:
                    log.error("websocket: http: TLS handshake error from %s: %s", addr, exc)
                    return
            up = await _upgrade(server, sock, addr, wo.tls is not None)
    except Exception:
        log.exception("websocket handshake failed for %s", addr)
        up = None
    finally:
        if up is None:
            _close(sock)
    if up is None:
        return
    if up.kind == "LEAF":
        log.error("Not configured to accept leaf node connections")
        _close(sock)
        return
    server.total_connections += 1
    conn = ClientConnection(server, sock, server._allocate_cid(), ws=up.codec)
    if server.options.websocket.tls is not None:
        from natsx.server import tls as tlsmod

        conn.tls = True
        conn.tls_version, conn.tls_cipher = tlsmod.connection_state(sock)
        conn.tls_peer_certs = tlsmod.peer_certificates(sock)
    if server.lame_duck or not server._admit(conn):
        conn.queue(server.info_bytes(conn))
        if server.lame_duck:
            conn.close("Server Shutdown")
        else:
            conn.close(MAX_CONNECTIONS, "maximum connections exceeded")
            server.closed.append(conn)
        _close(sock)
        return
    server.connections[conn.cid] = conn
    await conn.run()


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


async def _recv(sock) -> bytes:
    from natsx.server.tls import WANT_IO

    while True:
        try:
            return sock.recv(_RECV)
        except WANT_IO as exc:
            if _wants_write(exc):
                await trio.lowlevel.wait_writable(sock)
            else:
                await trio.lowlevel.wait_readable(sock)
        except OSError:
            return b""


async def _send_all(sock, data: bytes) -> bool:
    from natsx.server.tls import WANT_IO

    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except WANT_IO as exc:
            if _wants_write(exc) or isinstance(exc, BlockingIOError):
                await trio.lowlevel.wait_writable(sock)
            else:
                await trio.lowlevel.wait_readable(sock)
            continue
        except OSError:
            return False
        view = view[n:]
    return True


def _wants_write(exc: Exception) -> bool:
    import ssl

    return isinstance(exc, ssl.SSLWantWriteError)


async def _upgrade(server: "Server", sock, addr: str, tls: bool) -> wsp.Upgraded | None:
    """Reads requests until one upgrades (the Upgraded) or the connection must end (None)."""
    buf = b""
    skip = 0
    while True:
        if skip:
            n = min(skip, len(buf))
            buf, skip = buf[n:], skip - n
            if skip:
                data = await _recv(sock)
                if not data:
                    return None
                buf += data
                continue
        req, used = wsp.read_request(buf)
        if req is None:
            if used:
                buf = buf[used:]
                continue
            data = await _recv(sock)
            if not data:
                return None
            buf += data
            continue
        buf = buf[used:]
        if isinstance(req, wsp.HttpError):
            await _send_all(sock, req.response)
            return None
        result = wsp.upgrade(settings(server), req, tls=tls, early_data=bool(buf))
        if result is None:
            log.error("%s - websocket handshake error: client sent data before handshake "
                      "is complete", addr)
            return None
        if isinstance(result, wsp.HttpError):
            log.error("%s - websocket handshake error: %s", addr, result.reason)
            if not await _send_all(sock, result.response) or result.close:
                return None
            skip = req.body_length
            continue
        if not await _send_all(sock, result.response):
            return None
        return result
