"""The server's own clients: subscriptions served by Python handlers, publishes routed in-process.

Theory of operation
-------------------
One ``InternalClient`` per account wraps a compiled ``Client`` core marked ``internal``: the
hot path does not write its deliveries to a socket but queues them in ``Router.internal``,
and the worker hands each one to ``deliver`` after the read batch, which calls the handler
registered for the subscription. Publishing goes through ``Client.route``, the same match
and fan-out as a client's PUB, so permissions of the receivers, queue groups, peer workers
and no-responders behave as for any publisher. The core never parses anything and has no
pending-bytes limit: it has no socket to fall behind on.
"""
from __future__ import annotations

import logging
from typing import Callable

from natsx.server import trace

log = logging.getLogger("natsx")

#: handler(subject, reply, headers, payload, publisher_core)
Handler = Callable[[bytes, "bytes | None", "bytes | None", bytes, object], None]


class InternalClient:
    """The server acting as a client inside one account."""

    def __init__(self, server, account_name: bytes, core) -> None:
        self.server = server
        self.account_name = account_name
        self.core = core
        core.conn = self
        core.internal = True
        core.headers = True
        core.verbose = False
        core.pedantic = False
        core.echo = True
        core.max_pending = 1 << 62
        self.handlers: dict[bytes, Handler] = {}
        self.local_sids: set[bytes] = set()
        self.routed_sids: set[bytes] = set()
        self._next_sid = 1

    def subscribe(self, subject: bytes, handler: Handler, queue: bytes | None = None,
                  local: bool = False, routed: bool = False, batch=None):
        """``local``: the interest is not announced to the peer workers, so only this
        worker's clients reach the handler (Go: sysSubscribeInternal). ``routed``: the
        handler takes a sixth argument, the routed subject (see ``deliver``). ``batch``:
        called instead of ``handler`` with each run of consecutive deliveries of one read
        batch, a list of ``(sub, subject, reply, headers, payload, publisher, routed)``;
        it handles its own failures item by item."""
        from natsx.server.worker import _sublist

        sid = b"%d" % self._next_sid
        self._next_sid += 1
        core = self.core
        sub = _sublist.Subscription(subject, sid, queue, core)
        core.sublist.insert(sub)
        core.subs[sid] = sub
        self.handlers[sid] = handler
        if self._traced():
            trace.system_sub(subject, queue, sid)
        if routed:
            self.routed_sids.add(sid)
        if batch is not None:
            self.server.batch_handlers[sub] = batch
        if local:
            self.local_sids.add(sid)
        elif self.server.mesh is not None:
            self.server.mesh.sub_added(self.account_name, sub)
        return sub

    def unsubscribe(self, sub) -> None:
        self.handlers.pop(sub.sid, None)
        self.server.batch_handlers.pop(sub, None)
        self.routed_sids.discard(sub.sid)
        if sub.sid in self.local_sids:
            self.local_sids.discard(sub.sid)
            if self.core.subs.get(sub.sid) is sub:
                del self.core.subs[sub.sid]
            if not sub.closed:
                sub.closed = True
                self.core.sublist.remove(sub)
            return
        self.server._unsubscribe(self.core, sub)

    def deliver(self, sub, subject, reply, headers, payload, publisher, routed=None) -> None:
        """``routed``: the subject the message was routed on when it is delivered under
        another (a JetStream delivery); handlers subscribed with ``routed=True`` get it."""
        handler = self.handlers.get(sub.sid)
        if handler is None:
            return
        try:
            if sub.sid in self.routed_sids:
                handler(subject, reply, headers, payload, publisher, routed)
            else:
                handler(subject, reply, headers, payload, publisher)
        except Exception:
            # A failing service must not take the worker's read loop down with it.
            log.exception("internal subscription %s on %r failed", sub.sid, subject)

    def publish(self, subject: bytes, reply: bytes | None, headers: bytes | None,
                payload: bytes, deliver_as: bytes | None = None) -> bool:
        if self._traced():
            trace.system_pub(self.server.options, subject, reply, headers, payload)
        return self.core.route(subject, reply, headers, payload, deliver_as)

    def _traced(self) -> bool:
        # Go traces its SYSTEM client only with trace_verbose (-VV).
        return getattr(self.core.account, "is_system", False) and \
            trace.system_enabled(self.server.options)

    def flush(self) -> None:
        # Only errors the hot path addressed to this "connection" (a refused publish) land
        # here; there is no socket, so they are logged.
        self.core.flush_pending = False
        out = self.core.take_output()
        if out:
            log.warning("internal client of account %s: %s", self.account_name.decode(),
                        out.decode("utf-8", "replace").strip())

    def has_interest(self, subject: bytes) -> bool:
        r = self.core.sublist.match(subject)
        return bool(r.psubs) or any(len(q) for q in r.qsubs)
