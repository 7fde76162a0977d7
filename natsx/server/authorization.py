"""Authentication and permissions applied to live connections, and a reload in a worker.

Theory of operation
-------------------
A worker's ``Server`` holds one ``Authenticator`` (natsx.auth.users), rebuilt from the
options on every reload. At CONNECT, ``authorize`` asks it who the client is and installs
that identity's permissions on the connection: the compiled core's publish hook
(``perm_pub``), the per-connection response tracker for ``allow_responses``
(``perm_replies``) and, once a subscription can overlap a subscribe deny entry, the delivery
filter (``perm_deliver``). ``check_subscribe`` is the SUB-time check, with Go's -ERR texts
(server/client.go processSubEx, subPermissionViolation).

``apply_reload`` puts new options into a running worker without dropping connections
(Go: applyOptions and reloadAuthorization). New limits apply to the next frames of every
client, the new INFO to new clients. Every client is re-checked with the CONNECT it sent:
one whose credentials no longer authenticate is closed with 'Authorization Violation'; the
others get their user's new permissions, and a subscription those no longer allow is
removed with -ERR 'Permissions Violation for Subscription to "<s>" (sid "<sid>")'.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from natsx.auth.permissions import SYS_QUEUE_GROUP, Permissions
from natsx.auth.users import Authenticator
from natsx.protocol import encode

if TYPE_CHECKING:
    from natsx.server.connection import ClientConnection
    from natsx.server.options import Options
    from natsx.server.worker import Server

log = logging.getLogger("natsx")

AUTH_VIOLATION_ERR = "Authorization Violation"
MAX_CONNECTIONS_ERR = "maximum connections exceeded"


def go_quote(value: bytes | str) -> str:
    """Go's %q for subjects, queues and sids in error texts."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{ord(ch):02x}"))
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _send_err(conn: "ClientConnection", text: str) -> None:
    conn.queue(encode.err(text))
    conn._touch()


# ------------------------------------------------------------------ CONNECT

def authorize(server: "Server", conn: "ClientConnection", connect: dict) -> bool:
    """Authenticates a CONNECT and installs the user's permissions; False means violation."""
    if server.operator is not None:
        # Operator mode: user JWTs only (natsx.server.operator).
        return server.operator.authorize_logged(conn, connect)
    identity = server.auth_for(conn).check(connect, conn)
    if identity is None:
        log_auth_violation(conn)
        return False
    conn.user = identity.name
    if identity.account:
        server.bind_account(conn, identity.account)
    set_permissions(server, conn, identity.permissions)
    return True


def set_permissions(server: "Server", conn: "ClientConnection",
                    perms: Permissions | None) -> None:
    """Installs (or, with None, removes) a connection's permissions (Go: setPermissions)."""
    core = conn.core
    pset = server.auth.permission_set(perms) if perms is not None else None
    conn.perms = pset
    core.perm_pub = pset.publish if pset is not None else None
    core.perm_replies = pset.new_response_tracker() if pset is not None else None
    _refresh_deliver_filter(conn)
    # The core caches publish decisions per subject: they belong to the old permissions.
    core.reset_match_memo()


def _refresh_deliver_filter(conn: "ClientConnection") -> None:
    core = conn.core
    pset = conn.perms
    core.perm_deliver = None
    if pset is None or pset.deliver is None:
        return
    for sub in core.subs.values():
        if pset.deliver_filter_needed(sub.subject, sub.queue):
            core.perm_deliver = pset.deliver
            return


# ------------------------------------------------------------------ SUB

def check_subscribe(server: "Server", conn: "ClientConnection", subject: bytes,
                    queue: bytes | None, sid: bytes) -> bool:
    """The SUB permission check; on a violation sends Go's -ERR and returns False."""
    pset = conn.perms
    if pset is None:
        return True
    if (queue is not None and queue == SYS_QUEUE_GROUP) or not pset.can_subscribe(subject, queue):
        user = f"User {go_quote(conn.user)}, " if conn.user else ""
        if queue is not None:
            _send_err(conn, f"Permissions Violation for Subscription to {go_quote(subject)} "
                            f"using queue {go_quote(queue)}")
            log.error("%s - Subscription Violation - %sSubject %s, Queue: %s, SID %s",
                      _who(conn), user, go_quote(subject), go_quote(queue),
                      sid.decode("utf-8", "replace"))
        else:
            _send_err(conn, f"Permissions Violation for Subscription to {go_quote(subject)}")
            log.error("%s - Subscription Violation - %sSubject %s, SID %s",
                      _who(conn), user, go_quote(subject), sid.decode("utf-8", "replace"))
        return False
    core = conn.core
    if core.perm_deliver is None and pset.deliver_filter_needed(subject, queue):
        core.perm_deliver = pset.deliver
    return True


def _who(conn: "ClientConnection") -> str:
    return f"{conn.ip}:{conn.port} - cid:{conn.cid}"


def _auth_user(conn: "ClientConnection") -> str:
    # Go: getAuthUser, from what the CONNECT named (or the user it was bound to).
    opts = conn.connect_opts
    if opts.get("nkey"):
        return f"Nkey {go_quote(opts['nkey'])}"
    name = opts.get("user") or conn.user
    return f"User {go_quote(name)}" if name else 'User "N/A"'


def log_auth_violation(conn: "ClientConnection") -> None:
    """Go's authViolation log line."""
    opts = conn.connect_opts
    if opts.get("nkey") or opts.get("user") or opts.get("auth_token") or conn.user:
        log.error("%s - authentication error - %s", _who(conn), _auth_user(conn))
    else:
        log.error("%s - authentication error", _who(conn))


# ------------------------------------------------------------------ reload

def apply_reload(server: "Server", new: "Options") -> None:
    """Installs reloaded options in a running worker (see the module docstring)."""
    from natsx.server.connection import AUTH_VIOLATION, CLIENT_CLOSED, MAX_CONNECTIONS
    from natsx.server.reload import apply_accounts

    old = server.options
    server.options = new
    apply_accounts(server, old, new)
    server.auth = Authenticator(new)
    server._info_base = server._build_info()
    server.reload_tls(old)
    if server.operator is not None:
        server.operator.reload(new)
    for conn in list(server.connections.values()):
        if conn.closed:
            continue
        core = conn.core
        core.max_payload = new.max_payload
        core.max_control_line = new.max_control_line
        if server.operator is not None:
            server.operator.recheck(conn)
            continue
        identity = server.auth_for(conn).check(conn.connect_opts, conn)
        if identity is None:
            log_auth_violation(conn)
            server.note_auth_error(conn)
            conn.close(AUTH_VIOLATION, AUTH_VIOLATION_ERR)
            continue
        if (identity.account or "$G") != conn.account_name and conn.connect_received:
            # A user moved to another account: its subscriptions live in the old one. Go
            # closes it without an error (clientHasMovedToDifferentAccount), to reconnect.
            conn.close(CLIENT_CLOSED)
            continue
        if not conn.connect_received:
            continue
        conn.user = identity.name
        set_permissions(server, conn, identity.permissions)
        _remove_forbidden_subscriptions(server, conn)
    limit = new.max_connections
    live = [c for c in server.connections.values() if not c.closed]
    if server.peer_table is not None:
        # The limit is the server's: this worker closes its share of the excess
        # (PeerTable.excess_share), the others theirs.
        n = min(server.peer_table.excess_share(server.worker_index, limit), len(live))
    else:
        n = max(len(live) - max(limit, 0), 0)
    if n:
        excess = live[:n]
        for conn in excess:
            conn.close(MAX_CONNECTIONS, MAX_CONNECTIONS_ERR)
            server.uncount_connection(conn)
        log.info("Closed %d connections to fall within max_connections", len(excess))
    # Flush the -ERRs and propagate the removed subscriptions to the other workers.
    server.after_batch()


def _remove_forbidden_subscriptions(server: "Server", conn: "ClientConnection") -> None:
    """Go: processSubsOnConfigReload."""
    pset = conn.perms
    if pset is None:
        return
    core = conn.core
    for sub in list(core.subs.values()):
        queue = sub.queue
        if pset.can_subscribe(sub.subject, queue):
            continue
        server._unsubscribe(core, sub)
        sid = sub.sid
        if queue:
            _send_err(conn, f"Permissions Violation for Subscription to {go_quote(sub.subject)} "
                            f"using queue {go_quote(queue)} (sid {go_quote(sid)})")
            log.info("Removed sub %s using queue %s (sid %s) for %s - not authorized",
                     go_quote(sub.subject), go_quote(queue), go_quote(sid), _auth_user(conn))
        else:
            _send_err(conn, f"Permissions Violation for Subscription to {go_quote(sub.subject)} "
                            f"(sid {go_quote(sid)})")
            log.info("Removed sub %s (sid %s) for %s - not authorized",
                     go_quote(sub.subject), go_quote(sid), _auth_user(conn))
    _refresh_deliver_filter(conn)
