"""The server-side parser of the client protocol, sans I/O.

``ServerParser`` follows h11's shape: ``receive_data(bytes)``, then ``next_event()`` until
it returns ``NEED_DATA``. It applies the Go server's framing rules (case-insensitive ops,
spaces or tabs between fields, a bare ``\\n`` ending a control line, a payload followed by
exactly ``\\r\\n``, max_control_line, max_payload, frames split across reads).
"""
from __future__ import annotations

from natsx._speedups import load
from natsx.protocol import events as ev


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class ServerParser:
    """Parses what a client sends. After a ``ProtocolError`` everything else is ignored."""

    def __init__(self, *, headers: bool = True, max_payload: int = 1048576,
                 max_control_line: int = 4096, pedantic: bool = False,
                 auth_pending: bool = False, pure: bool | None = None) -> None:
        core = load("core", pure=pure)
        self._client = core.Client(0, None, None)
        self._client.headers = headers
        self._client.max_payload = max_payload
        self._client.max_control_line = max_control_line
        self._client.pedantic = pedantic
        self._client.auth_pending = auth_pending

    @property
    def headers(self) -> bool:
        return self._client.headers

    @headers.setter
    def headers(self, value: bool) -> None:
        self._client.headers = value

    @property
    def auth_pending(self) -> bool:
        return self._client.auth_pending

    @auth_pending.setter
    def auth_pending(self, value: bool) -> None:
        self._client.auth_pending = value

    def receive_data(self, data: bytes) -> None:
        self._client.feed(data)

    def next_event(self):
        t = self._client.next_event()
        if t is None:
            return NEED_DATA
        return ev.to_event(t)

    def events(self, data: bytes = b"") -> list:
        """Feeds ``data`` and returns every complete event."""
        if data:
            self.receive_data(data)
        out = []
        while True:
            e = self.next_event()
            if e is NEED_DATA:
                return out
            out.append(e)
            if isinstance(e, ev.ProtocolError):
                return out

    def take_output(self) -> bytes:
        """Bytes the parser itself wants sent (``-ERR 'Invalid Publish Subject'``)."""
        return self._client.take_output()
