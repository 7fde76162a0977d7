"""JetStream API requests of a worker's clients, relayed to the worker that owns the account.

Theory of operation
-------------------
Each account's JetStream runs in one worker, its owner (natsx.jetstream.shards). Publishes to
stream subjects, acks and pull requests reach the owner through the mesh like any message,
because its subscriptions are announced to every worker. API requests are different: the API
answers need the requesting client (the audit advisory's ``client``, Go's
``Nats-Request-Info``), which a message crossing the mesh does not carry. So with several
workers

* the owner subscribes the account's API subjects *locally* (not announced) and announces one
  relay subject in the account, ``$NATSX.JSAPI.>``, accepting on it only what a peer worker
  sent;
* every other worker, once that interest reaches it (a mesh sub hook, or the interest it
  already had when it started), subscribes the API subjects locally in that account; its
  handler republishes each request to ``$NATSX.JSAPI.<subject>`` with the same reply and a
  ``Natsx-Relay-Client`` header describing the client (JSON), which the owner removes before
  answering as if the client were its own. The answer goes straight to the reply subject.
  The header carries ``SECRET``, drawn in the supervisor before it forks (every worker has
  the same): a client publishing to the relay subject itself is ignored. (A client allowed
  to subscribe to ``$NATSX.>`` in the account could read it, and then forge only the
  ``client`` of audit advisories.)

A request relayed while the owner restarts finds no interest: the relay answers it with the
``503`` status the core gives a request nobody receives (to clients that asked for
``no_responders``), so the client fails at once rather than timing out. A request is relayed
after the read batch that carried it, so a publish sent in the same batch as an earlier API
request may reach the owner first; clients wait for API answers before publishing, so none
relies on that order.
"""
from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("natsx")

PREFIX = b"$NATSX.JSAPI."
SUBJECT = PREFIX + b">"
HEADER = b"Natsx-Relay-Client"
_CONN_FIELDS = ("start", "ip", "cid", "user", "name", "lang", "version", "rtt")
#: Drawn at import: the supervisor imports this module before forking (arbiter.py).
SECRET = os.urandom(16).hex()


def api_subjects(domain: str) -> list:
    from natsx.jetstream import api

    subjects = list(api.SUBJECTS)
    if domain:
        subjects.append(b"$JS.%s.API.>" % domain.encode())
    return subjects


# ------------------------------------------------------------------------ the owner: receiving

class _RelayedConn:
    """The requesting client as ``api.client_info`` reads a connection."""

    def __init__(self, fields: dict) -> None:
        for key in _CONN_FIELDS:
            value = fields.get(key)
            if value is not None:
                setattr(self, key, value)


class _RelayedPublisher:
    def __init__(self, fields: dict) -> None:
        self.conn = _RelayedConn(fields)


def split_header(hdr: bytes | None) -> tuple:
    """``hdr`` without the relay header, and the client fields it carried."""
    if not hdr:
        return hdr, {}
    lines = hdr.split(b"\r\n")
    fields: dict = {}
    kept = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == HEADER.lower():
            try:
                fields = json.loads(value.strip())
            except ValueError:
                fields = {}
        else:
            kept.append(line)
    rest = b"\r\n".join(kept)
    if rest in (b"NATS/1.0\r\n\r\n", b"NATS/1.0\r\n"):
        return None, fields
    return rest, fields


def receiver(dispatch):
    """The owner's handler of ``$NATSX.JSAPI.>``: ``dispatch(subject, reply, hdr, payload,
    publisher)`` is the API's."""
    def handler(subject, reply, hdr, payload, pub):
        if not getattr(pub, "peer", False):
            return          # only another worker may relay (clients cannot forge a client)
        hdr, fields = split_header(hdr)
        if fields.pop("secret", None) != SECRET:
            return
        dispatch(subject[len(PREFIX):], reply, hdr, payload, _RelayedPublisher(fields))
    return handler


# ------------------------------------------------------------------------ the other workers: relaying

class Relay:
    """The relay of the accounts whose JetStream another worker runs."""

    def __init__(self, server) -> None:
        from natsx.jetstream.settings import Settings

        self.server = server
        self.domain = Settings.from_options(server.options).domain
        self.accounts: dict[bytes, list] = {}

    def start(self) -> None:
        self.server.sub_hooks.append(self.on_sub)
        mesh = self.server.mesh
        for link in (mesh.links.values() if mesh is not None else ()):
            for (account, subject, _queue) in list(link.remote):
                if subject == SUBJECT:
                    self.enable(account)

    def on_sub(self, account: bytes, sub) -> None:
        if sub.subject == SUBJECT and getattr(sub.client, "peer", False):
            self.enable(account)

    def enable(self, account: bytes) -> None:
        if account in self.accounts:
            return
        server = self.server

        def handler(subject, reply, hdr, payload, pub, acc=account):
            self.relay(acc, subject, reply, hdr, payload, pub)
        self.accounts[account] = [
            server.internal_client(account).subscribe(subject, handler, local=True)
            for subject in api_subjects(self.domain)]

    def relay(self, account: bytes, subject: bytes, reply, hdr, payload: bytes, pub) -> None:
        client = self.server.internal_client(account)
        target = PREFIX + subject
        conn = getattr(pub, "conn", None)
        if not client.has_interest(target):
            # The owner is restarting: what the core answers a request nobody receives.
            if reply and getattr(pub, "no_responders", False):
                client.publish(reply, None, b"NATS/1.0 503\r\nNats-Subject: %s\r\n\r\n"
                               % subject, b"")
            return
        fields: dict = {"secret": SECRET}
        for key in _CONN_FIELDS:
            value = getattr(conn, key, None)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                fields[key] = value
        line = HEADER + b": " + json.dumps(fields, separators=(",", ":")).encode() + b"\r\n"
        if hdr:
            hdr = hdr[:-2] + line + b"\r\n" if hdr.endswith(b"\r\n\r\n") else hdr
        else:
            hdr = b"NATS/1.0\r\n" + line + b"\r\n"
        client.publish(target, reply, hdr, payload)
