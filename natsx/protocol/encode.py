"""Encoders for protocol frames (both directions), byte-exact with the Go server."""
from __future__ import annotations

import json


def info(fields: dict) -> bytes:
    """``INFO {json} \\r\\n``: note the space before CRLF, as the Go server sends it."""
    return b"INFO " + json.dumps(fields, separators=(",", ":")).encode() + b" \r\n"


def err(text: str) -> bytes:
    return b"-ERR '" + text.encode() + b"'\r\n"


OK = b"+OK\r\n"
PING = b"PING\r\n"
PONG = b"PONG\r\n"


def msg(subject: bytes, sid: bytes, payload: bytes, reply: bytes | None = None) -> bytes:
    mid = b" " + reply if reply else b""
    return b"MSG %s %s%s %d\r\n%s\r\n" % (subject, sid, mid, len(payload), payload)


def hmsg(subject: bytes, sid: bytes, headers: bytes, payload: bytes,
         reply: bytes | None = None) -> bytes:
    mid = b" " + reply if reply else b""
    return b"HMSG %s %s%s %d %d\r\n%s%s\r\n" % (
        subject, sid, mid, len(headers), len(headers) + len(payload), headers, payload)


def pub(subject: bytes, payload: bytes, reply: bytes | None = None) -> bytes:
    mid = b" " + reply if reply else b""
    return b"PUB %s%s %d\r\n%s\r\n" % (subject, mid, len(payload), payload)


def hpub(subject: bytes, headers: bytes, payload: bytes, reply: bytes | None = None) -> bytes:
    mid = b" " + reply if reply else b""
    return b"HPUB %s%s %d %d\r\n%s%s\r\n" % (
        subject, mid, len(headers), len(headers) + len(payload), headers, payload)


def sub(subject: bytes, sid: bytes, queue: bytes | None = None) -> bytes:
    mid = b" " + queue if queue else b""
    return b"SUB %s%s %s\r\n" % (subject, mid, sid)


def unsub(sid: bytes, max_msgs: int | None = None) -> bytes:
    if max_msgs is None:
        return b"UNSUB %s\r\n" % sid
    return b"UNSUB %s %d\r\n" % (sid, max_msgs)


def connect(fields: dict) -> bytes:
    return b"CONNECT " + json.dumps(fields, separators=(",", ":")).encode() + b"\r\n"
