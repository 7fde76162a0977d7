"""Stream and service imports between accounts, served by the server's internal clients.

Theory of operation
-------------------
As in Go, an import is a subscription the server holds itself (server/accounts.go
addServiceImportSub / addStreamImport):

* A stream import of ``account`` ``subject`` is an internal subscription on ``subject`` in
  the exporting account; each message it receives is published again in the importing
  account, on the subject mapped by ``prefix`` or ``to``, with the same reply and headers.
* A service import is an internal subscription on the import's local subject (``to``) in
  the importing account. A request is published again in the exporting account on the
  exported subject with a generated reply ``_R_.<worker token>.<random>``; an internal
  subscription on ``_R_.<worker token>.>`` in the exporting account catches the response
  and publishes it in the importing account on the requester's reply. The reply map keeps
  each entry until its single response (Go's default Singleton response type) or until
  ``RESPONSE_TTL`` (Go's default response threshold, 2 minutes) passes.

Workers: the import subscriptions are created before the worker joins the mesh, so they
are local to the worker and are not announced to peers. Each worker therefore imports
exactly the messages published by its own clients, and ignores the copies a peer worker
forwards (``publisher.peer``) to its other local subscribers: every message is imported
once. The response subscription is announced (it is created on the first request, after
the mesh started), and its worker token makes the response reach only the worker that
holds the requester's reply.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict

RESPONSE_TTL = 120.0
_R_PREFIX = b"_R_."
_ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _random_token(n: int) -> bytes:
    return bytes(_ALPHABET[b % 62] for b in os.urandom(n))


def map_subject(subject: bytes, src: bytes, dst: bytes) -> bytes:
    """``subject`` (which matches ``src``) rewritten onto ``dst``: each ``*`` and ``>`` of
    ``dst`` takes the tokens the corresponding wildcard of ``src`` matched, in order; a
    literal ``dst`` is used as is."""
    if dst == src:
        return subject
    if b"*" not in dst and b">" not in dst:
        return dst
    s_tokens = subject.split(b".")
    wild: list = []
    for i, t in enumerate(src.split(b".")):
        if t == b"*":
            wild.append(s_tokens[i])
        elif t == b">":
            wild.append(b".".join(s_tokens[i:]))
            break
    out = []
    it = iter(wild)
    for t in dst.split(b"."):
        out.append(next(it, t) if t in (b"*", b">") else t)
    return b".".join(out)


class Imports:
    """One worker's import subscriptions and its service reply map."""

    def __init__(self, server) -> None:
        self.server = server
        self.token = _random_token(6)
        # generated reply -> (importing account, requester's reply, expiry)
        self.responses: OrderedDict = OrderedDict()
        self._response_subs: set[bytes] = set()

    def start(self, accounts: dict) -> None:
        for cfg in accounts.values():
            for imp in cfg.stream_imports:
                self._stream(cfg.name, imp)
            for imp in cfg.service_imports:
                self._service(cfg.name, imp)

    # ---------------------------------------------------------------- streams

    def _stream(self, importer: str, imp) -> None:
        src = imp.subject.encode()
        if imp.prefix:
            prefix = imp.prefix.encode()
            if not prefix.endswith(b"."):
                prefix += b"."
            mapper = lambda s: prefix + s  # noqa: E731
        else:
            dst = imp.to.encode() if imp.to else src
            mapper = lambda s: map_subject(s, src, dst)  # noqa: E731
        dest = importer.encode()
        server = self.server

        def handler(subject, reply, headers, payload, publisher):
            if publisher.peer:
                return
            server.internal_publish(dest, mapper(subject), reply, headers, payload)

        server.internal_subscribe(imp.account, src, handler)

    # ---------------------------------------------------------------- services

    def _service(self, importer: str, imp) -> None:
        local = imp.to.encode()
        remote = imp.subject.encode()
        exporter = imp.account.encode()
        dest = importer.encode()
        server = self.server

        def handler(subject, reply, headers, payload, publisher):
            if publisher.peer:
                return
            target = map_subject(subject, local, remote)
            new_reply = None
            if reply:
                self._ensure_response_sub(exporter)
                new_reply = b"%s%s.%s" % (_R_PREFIX, self.token, _random_token(10))
                self._remember(new_reply, dest, reply)
            server.internal_publish(exporter, target, new_reply, headers, payload)

        server.internal_subscribe(dest, local, handler)

    def _remember(self, new_reply: bytes, account: bytes, reply: bytes) -> None:
        now = time.monotonic()
        responses = self.responses
        while responses:
            first = next(iter(responses.values()))
            if first[2] > now:
                break
            responses.popitem(last=False)
        responses[new_reply] = (account, reply, now + RESPONSE_TTL)

    def _ensure_response_sub(self, exporter: bytes) -> None:
        if exporter in self._response_subs:
            return
        self._response_subs.add(exporter)
        server = self.server

        def on_response(subject, reply, headers, payload, publisher):
            entry = self.responses.pop(subject, None)
            if entry is None:
                return
            account, requester_reply, expiry = entry
            if expiry < time.monotonic():
                return
            server.internal_publish(account, requester_reply, reply, headers, payload)

        server.internal_subscribe(exporter, _R_PREFIX + self.token + b".>", on_response)
