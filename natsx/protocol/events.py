"""Events of the client protocol, as the server-side parser reports them.

The compiled core returns plain tuples, ``(kind, *fields)``, because building objects for
every frame would cost more than parsing it; ``ServerParser`` wraps the same core and turns
the tuples into the frozen classes below for callers that prefer names to positions.
"""
from __future__ import annotations

import attrs

from natsx._speedups import load

_core = load("core")

CONNECT = _core.EV_CONNECT
SUB = _core.EV_SUB
UNSUB = _core.EV_UNSUB
PING = _core.EV_PING
PONG = _core.EV_PONG
INFO = _core.EV_INFO
OK = _core.EV_OK
ERR = _core.EV_ERR
PUB = _core.EV_PUB
CLOSE = _core.EV_CLOSE


@attrs.frozen
class Connect:
    options: bytes            # the JSON text after CONNECT


@attrs.frozen
class Sub:
    subject: bytes
    queue: bytes | None
    sid: bytes


@attrs.frozen
class Unsub:
    sid: bytes
    max_msgs: int             # -1 when absent


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Pong:
    pass


@attrs.frozen
class Info:
    info: bytes


@attrs.frozen
class Ok:
    pass


@attrs.frozen
class Err:
    text: bytes


@attrs.frozen
class Pub:
    subject: bytes
    reply: bytes | None
    headers: bytes | None     # None for PUB; the header block for HPUB
    payload: bytes


@attrs.frozen
class ProtocolError:
    """The connection must close; ``error`` is the -ERR text to send first, if any."""

    error: str | None
    reason: str


def to_event(t: tuple):
    """Converts a core tuple into its event object."""
    kind = t[0]
    if kind == PUB:
        return Pub(t[1], t[2], t[3], t[4])
    if kind == SUB:
        return Sub(t[1], t[2], t[3])
    if kind == UNSUB:
        return Unsub(t[1], t[2])
    if kind == CONNECT:
        return Connect(t[1])
    if kind == PING:
        return Ping()
    if kind == PONG:
        return Pong()
    if kind == INFO:
        return Info(t[1])
    if kind == OK:
        return Ok()
    if kind == ERR:
        return Err(t[1])
    if kind == CLOSE:
        return ProtocolError(t[1], t[2])
    raise ValueError(f"unknown event kind {kind}")
