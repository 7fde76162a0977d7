"""Protocol tracing (``-V``, ``-DV``, ``-VV``, ``trace``, ``trace_verbose``): Go's [TRC] lines.

Theory of operation
-------------------
The Go server (client.go traceInOp/traceOutOp/traceMsg, parser.go) logs every protocol
operation of a traced client as ``<label> - <<- [OP arg]`` when it arrives and ``<label> -
->> [OP arg]`` when it is queued for the client, ``<<- MSG_PAYLOAD: ["..."]`` (Go's ``%q``)
after each PUB/HPUB, and ``<-> [DELSUB sid]`` when a subscription goes away. The label is
``host:port - cid:N``, followed by ``"v<version>:<lang>:<name>"`` once a CONNECT named the
client. Clients are traced whenever ``trace`` is on; the system account's own client only
with ``trace_verbose`` (``-VV``), as Go's setTraceLevel decides.

natsx keeps the hot path untouched when tracing is off. A connection is traced by setting
its core's ``trace`` flag (at accept, and on every connection at a reload): the compiled
parser then hands PUB/HPUB frames back as events instead of routing them inline, and keeps
each event's op and raw argument (``trace_op``, ``trace_arg``) for the inbound line. The
connection logs the line, then routes the message itself (``publish`` here), one operation
at a time, and the worker flushes after each one. Outbound lines are not produced where the
bytes are queued (the compiled delivery path, permission errors, the system services...):
``outbound`` scans what a traced connection is about to send (``out_ops``, sans-IO) and
logs one line per frame but INFO, which Go does not trace. Because a traced reader flushes
after every operation, the lines come out in Go's order: an operation, then what it made
the server send to each client.

``max_traced_msg_len`` truncates payload lines as Go 2.9.10 does: it quotes the first
``max`` bytes and keeps ``max`` bytes of the quoted text, followed by ``...``.
"""
from __future__ import annotations

import logging
import re

from natsx.protocol import events as ev

log = logging.getLogger("natsx")

TRACE = 5   # the level natsx.logs prints as [TRC]

_OP_NAMES = {ev.PUB: "PUB", -ev.PUB: "HPUB", ev.SUB: "SUB", ev.UNSUB: "UNSUB",
             ev.CONNECT: "CONNECT", ev.PING: "PING", ev.PONG: "PONG"}
_NO_ARG = (ev.PING, ev.PONG)


# ------------------------------------------------------------------ sans-IO text forms

_SPECIAL = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_CTRL = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
         "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def _escape(m: re.Match) -> str:
    c = m.group()
    esc = _CTRL.get(c)
    if esc is not None:
        return esc
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:          # a byte that is not UTF-8 (surrogateescape)
        return "\\x%02x" % (o - 0xDC00)
    if o < 0x80:
        return "\\x%02x" % o
    if c.isprintable():                 # Go's unicode.IsPrint: the same classes
        return c
    if o < 0x10000:
        return "\\u%04x" % o
    return "\\U%08x" % o


def go_quote(data: bytes | str) -> str:
    """Go's ``%q`` of a string or byte slice (strconv.Quote)."""
    s = data.decode("utf-8", "surrogateescape") if isinstance(data, (bytes, bytearray)) else data
    return '"' + _SPECIAL.sub(_escape, s) + '"'


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def payload_line(msg: bytes, max_len: int, prefix: str = "<<-") -> str:
    """The MSG_PAYLOAD line of a message (headers and payload, without the CRLF)."""
    if max_len > 0 and len(msg) > max_len:
        quoted = go_quote(msg[:max_len]).encode("utf-8", "surrogateescape")
        return f'{prefix} MSG_PAYLOAD: ["{_text(quoted[1:max_len + 1])}..."]'
    return f"{prefix} MSG_PAYLOAD: [{go_quote(msg)}]"


_PASS = re.compile(rb'"?\s*pass\S*?"?\s*[:=]\s*"?(([^",\r\n}])*)')


def redact(arg: bytes) -> bytes:
    """Go's removePassFromTrace: the first password value becomes [REDACTED]."""
    if b"pass" not in arg:
        return arg
    m = _PASS.search(arg)
    if m is None:
        return arg
    return arg[:m.start(1)] + b"[REDACTED]" + arg[m.end(1):]


def out_ops(data: bytes) -> list[str]:
    """What Go traces for bytes queued to a client: one text per frame but INFO."""
    ops: list[str] = []
    pos, n = 0, len(data)
    while pos < n:
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            break
        line = data[pos:nl]
        pos = nl + 2
        if line.startswith((b"MSG ", b"HMSG ")):
            try:
                pos += int(line.rsplit(b" ", 1)[1]) + 2
            except ValueError:
                break
            ops.append(_text(line))
        elif line.startswith(b"-ERR "):
            text = line[5:]
            if len(text) >= 2 and text[:1] == b"'" and text[-1:] == b"'":
                text = text[1:-1]
            ops.append("-ERR " + _text(text))
        elif line == b"+OK":
            ops.append("OK")
        elif line in (b"PING", b"PONG"):
            ops.append(line.decode())
    return ops


def client_names(version: str, lang: str, name: str) -> str:
    """Go's ``v<version>:<lang>:<name>`` (processConnect), empty parts left out."""
    return ":".join(p for p in (f"v{version}" if version else "", lang, name) if p)


# ------------------------------------------------------------------ connections

def label(conn) -> str:
    """Go's client String(): ``host:port - cid:N`` [`` - "names"``]."""
    host = f"[{conn.ip}]" if ":" in conn.ip else conn.ip
    kind = "wid" if conn.ws is not None else "cid"
    base = f"{host}:{conn.port} - {kind}:{conn.cid}"
    names = client_names(conn.version, conn.lang, conn.name) if conn.connect_received else ""
    return f"{base} - {go_quote(names)}" if names else base


def _emit(who: str, text: str) -> None:
    log.log(TRACE, f"{who} - {text}")


def inbound(conn, event: tuple) -> None:
    """The ``<<-`` line of a control event, before it is processed (PUBs: ``publish``)."""
    core = conn.core
    op = core.trace_op
    name = _OP_NAMES.get(op)
    if name is None or core.trace_arg is None or op in (ev.PUB, -ev.PUB) and event[0] != ev.CLOSE:
        return
    if op in _NO_ARG:
        _emit(label(conn), f"<<- [{name}]")
        return
    arg = core.trace_arg
    if op == ev.CONNECT:
        arg = redact(arg)
    _emit(label(conn), f"<<- [{name} {_text(arg)}]")


def publish(conn, event: tuple) -> None:
    """A traced client's PUB/HPUB: its lines, then the routing the hot path would do inline."""
    core = conn.core
    _, subject, reply, headers, payload = event
    who = label(conn)
    name = "HPUB" if core.trace_op == -ev.PUB else "PUB"
    _emit(who, f"<<- [{name} {_text(core.trace_arg or b'')}]")
    mapper = core.mapper
    mapped = mapper.map(subject) if mapper is not None and mapper.active else None
    if mapped is not None:
        _emit(who, f"<<- [MAPPING {_text(subject)} -> {_text(mapped)}]")
    msg = headers + payload if headers else payload
    _emit(who, payload_line(msg, conn.server.options.max_traced_msg_len))
    if mapped is None:
        core.route(subject, reply, headers, payload)
        return
    # Route what was traced: a weighted mapping must not draw a second time.
    core.mapper = None
    try:
        core.route(mapped, reply, headers, payload)
    finally:
        core.mapper = mapper


def outbound(conn, data: bytes) -> None:
    """The ``->>`` lines for bytes a traced connection is about to send."""
    if not data:
        return
    ops = out_ops(data)
    if ops:
        who = label(conn)
        for op in ops:
            _emit(who, f"->> [{op}]")


def delsub(conn, sid: bytes) -> None:
    _emit(label(conn), f"<-> [DELSUB {_text(sid)}]")


def unsub(conn, sid: bytes, max_msgs: int) -> None:
    """A traced UNSUB: Go sends the +OK before it removes the subscription."""
    sub = conn.core.subs.get(sid)
    live = sub is not None and not sub.closed
    conn.server.process_unsub(conn, sid, max_msgs)
    if live and sub.closed:
        conn.flush()
        delsub(conn, sid)


def expired(conn, sid: bytes) -> None:
    """An auto-unsubscribe that reached its count: after the last MSG, as in Go."""
    conn.flush()
    delsub(conn, sid)


def closed(conn) -> None:
    """Go removes a closing client's subscriptions one by one, each traced."""
    for sid, sub in list(conn.core.subs.items()):
        if not sub.closed:
            delsub(conn, sid)


def apply(server) -> None:
    """A reload: every connection follows the new ``trace`` setting."""
    on = bool(server.options.trace)
    for conn in list(server.connections.values()):
        conn.core.trace = on


# ------------------------------------------------------------------ the system account

def system_enabled(options) -> bool:
    """Go's setTraceLevel for the SYSTEM client: only with trace_verbose (-VV)."""
    return bool(options.trace and options.trace_verbose)


def system_sub(subject: bytes, queue: bytes | None, sid: bytes) -> None:
    _emit("SYSTEM", f"<<- [SUB {_text(subject)} {_text(queue or b'')} {_text(sid)}]")


def system_pub(options, subject: bytes, reply: bytes | None, headers: bytes | None,
               payload: bytes) -> None:
    _emit("SYSTEM", f"<<- [PUB {_text(subject)} {_text(reply or b'')} {len(payload)}]")
    msg = headers + payload if headers else payload
    _emit("SYSTEM", payload_line(msg, options.max_traced_msg_len))
