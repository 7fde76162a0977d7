"""The client side of the NATS protocol, with no I/O: server bytes in, events out.

Theory of operation
-------------------
``ClientParser`` owns one buffer of bytes received from a server. ``feed(data)`` appends
to it and returns every event whose frame is now complete; an incomplete frame stays in
the buffer until more bytes arrive, so the events are the same whichever way the stream
was split into reads. A control line is found by its ``\\n`` (a trailing ``\\r`` is
dropped, as the Go client does); a ``MSG``/``HMSG`` frame is complete when its control
line, its payload and the ``\\r\\n`` after the payload are all buffered. Operation names
are case-insensitive.

The events are frozen ``attrs`` classes: ``Info``, ``Msg``, ``HMsg``, ``Ok``, ``Err``,
``Ping``, ``Pong``. Subjects, sids and reply subjects are ``str`` (UTF-8; undecodable
bytes survive as surrogates); headers and payloads are ``bytes``, headers being the raw
block from ``NATS/1.0`` to the blank line (``parse_headers`` splits it).

This is the slow path used by handshakes, JetStream API calls and tests. The benchmark's
hot path counts frames in ``natsx._speedups.benchclient`` instead, and never builds an
event per message. Costs: one ``bytes.find`` per control line and one copy per payload.
"""
from __future__ import annotations

import json
from typing import Union

import attrs

__all__ = [
    "ClientParser",
    "Err",
    "Event",
    "HMsg",
    "Info",
    "Msg",
    "Ok",
    "Ping",
    "Pong",
    "ProtocolError",
    "parse_headers",
]

#: Longest control line accepted before the stream is declared broken. INFO is the long
#: one (connect_urls of a large cluster); the Go client allows 4 KiB by default, the
#: server's own limit is configurable, so this is generous on purpose.
MAX_CONTROL_LINE = 1 << 20


class ProtocolError(Exception):
    """The server sent bytes that are not the NATS protocol."""


@attrs.frozen
class Info:
    info: dict


@attrs.frozen
class Msg:
    subject: str
    sid: str
    reply: str | None
    payload: bytes


@attrs.frozen
class HMsg:
    subject: str
    sid: str
    reply: str | None
    headers: bytes
    payload: bytes


@attrs.frozen
class Ok:
    pass


@attrs.frozen
class Err:
    text: str


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Pong:
    pass


Event = Union[Info, Msg, HMsg, Ok, Err, Ping, Pong]

_OK = Ok()
_PING = Ping()
_PONG = Pong()


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _size(b: bytes) -> int:
    if not b.isdigit():
        raise ProtocolError(f"bad size {b!r}")
    return int(b)


class ClientParser:
    """Incremental parser for the server-to-client byte stream."""

    def __init__(self, max_control_line: int = MAX_CONTROL_LINE) -> None:
        self._buf = bytearray()
        self._max_control_line = max_control_line

    @property
    def buffered(self) -> bytes:
        """Bytes received but not yet part of a complete frame."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        """Append ``data`` and return the events of every frame it completed.

        Raises:
            ProtocolError: the stream is not NATS; the parser should be discarded.
        """
        buf = self._buf
        buf += data
        events: list[Event] = []
        pos = 0
        n = len(buf)
        while pos < n:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if n - pos > self._max_control_line:
                    raise ProtocolError("control line too long")
                break
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            line = bytes(buf[pos:end])
            parts = line.split(None, 1)
            op = parts[0].upper() if parts else b""
            rest = parts[1] if len(parts) > 1 else b""
            if op == b"MSG" or op == b"HMSG":
                args = rest.split()
                try:
                    total = _size(args[-1])
                    if op == b"HMSG":
                        hdr = _size(args[-2])
                        args = args[:-2]
                    else:
                        hdr = 0
                        args = args[:-1]
                except IndexError:
                    raise ProtocolError(f"bad {op.decode()} arguments: {line!r}") from None
                if len(args) == 2:
                    subject, sid, reply = args[0], args[1], None
                elif len(args) == 3:
                    subject, sid, reply = args
                else:
                    raise ProtocolError(f"bad {op.decode()} arguments: {line!r}")
                if hdr > total:
                    raise ProtocolError(f"header size above total: {line!r}")
                start = nl + 1
                stop = start + total
                if stop + 2 > n:
                    break  # payload not complete yet; keep the whole frame buffered
                if buf[stop : stop + 2] != b"\r\n":
                    raise ProtocolError("payload not followed by CRLF")
                reply_s = _text(reply) if reply is not None else None
                if op == b"MSG":
                    events.append(Msg(_text(subject), _text(sid), reply_s, bytes(buf[start:stop])))
                else:
                    events.append(
                        HMsg(
                            _text(subject),
                            _text(sid),
                            reply_s,
                            bytes(buf[start : start + hdr]),
                            bytes(buf[start + hdr : stop]),
                        )
                    )
                pos = stop + 2
                continue
            if op == b"PING":
                events.append(_PING)
            elif op == b"PONG":
                events.append(_PONG)
            elif op == b"+OK":
                events.append(_OK)
            elif op == b"-ERR":
                text = rest.strip()
                if len(text) >= 2 and text[:1] == text[-1:] == b"'":
                    text = text[1:-1]
                events.append(Err(_text(text)))
            elif op == b"INFO":
                try:
                    events.append(Info(json.loads(rest)))
                except ValueError as exc:
                    raise ProtocolError(f"bad INFO: {exc}") from None
            elif not op:
                pass  # a bare CRLF carries nothing; the Go client skips it too
            else:
                raise ProtocolError(f"unknown operation {line[:32]!r}")
            pos = nl + 1
        del buf[:pos]
        return events


def parse_headers(block: bytes) -> tuple[int | None, str, dict[str, list[str]]]:
    """Split a raw header block into (status code or None, description, headers).

    ``NATS/1.0 503\\r\\n\\r\\n`` gives ``(503, "", {})``; header names keep their case
    and repeated names collect every value, as the server keeps them.
    """
    lines = block.decode("utf-8", "surrogateescape").split("\r\n")
    first = lines[0]
    status: int | None = None
    description = ""
    if first.startswith("NATS/1.0"):
        rest = first[8:].strip()
        if rest[:3].isdigit():
            status = int(rest[:3])
            description = rest[3:].strip()
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip(), []).append(value.strip())
    return status, description, headers
