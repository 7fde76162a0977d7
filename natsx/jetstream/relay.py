"""JetStream API requests routed to the worker that answers them, with the client's details.

Theory of operation
-------------------
Each stream runs in one worker, its owner, and each account has a home that answers or vets
its account-wide requests (natsx.jetstream.shards). Publishes to stream subjects, acks,
pull requests and direct gets reach the owner through the mesh like any message, because
its subscriptions are announced to every worker. API requests are different: the answers
need the requesting client (the audit advisory's ``client``, Go's ``Nats-Request-Info``),
which a message crossing the mesh does not carry. So with several workers

* every worker subscribes the API subjects of every account *locally* (not announced), and
  one relay subject per account, ``$NATSX.JSAPI.<its index>.>``, announced, accepting on it
  only what a peer worker sent;
* ``route`` sends a request to its target (``shards.target``): the stream's owner for a
  request naming a stream, the account's home for INFO, STREAM.NAMES, LIST, CREATE and
  UPDATE. When the target is another worker the request is republished to
  ``$NATSX.JSAPI.<target>.<subject>`` with the same reply and a ``Natsx-Relay-Client``
  header describing the client (JSON), which the target removes before answering as if
  the client were its own. The answer goes straight to the reply subject. The header also
  says the *stage*: a home that vetted a CREATE or UPDATE passes it on to the stream's
  owner with stage ``owner``, which runs it without routing it again.
  The header carries ``SECRET``, drawn in the supervisor before it forks (every worker has
  the same): a client publishing to the relay subject itself is ignored. (A client allowed
  to subscribe to ``$NATSX.>`` in the account could read it, and then forge only the
  ``client`` of audit advisories.)

A request relayed to a worker that is restarting finds no interest: the relay answers it
with the ``503`` status the core gives a request nobody receives (to clients that asked for
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
HEADER = b"Natsx-Relay-Client"
_CONN_FIELDS = ("start", "ip", "cid", "user", "name", "lang", "version", "rtt")
#: Drawn at import: the supervisor imports this module before forking (arbiter.py).
SECRET = os.urandom(16).hex()


def inbox(worker: int) -> bytes:
    """The relay subject of ``worker``."""
    return PREFIX + b"%d.>" % worker


def api_subjects(domain: str) -> list:
    from natsx.jetstream import api

    subjects = list(api.SUBJECTS)
    if domain:
        subjects.append(b"$JS.%s.API.>" % domain.encode())
    return subjects


# ------------------------------------------------------------------------ receiving

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
        self.no_responders = bool(fields.get("nr"))


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
            if not isinstance(fields, dict):
                fields = {}
        else:
            kept.append(line)
    rest = b"\r\n".join(kept)
    if rest in (b"NATS/1.0\r\n\r\n", b"NATS/1.0\r\n"):
        return None, fields
    return rest, fields


def receiver(account):
    """The handler of ``account``'s relay subject in this worker."""
    skip = len(PREFIX) + len(b"%d." % account.js.server.worker_index)

    def handler(subject, reply, hdr, payload, pub):
        if not getattr(pub, "peer", False):
            return          # only another worker may relay (clients cannot forge a client)
        hdr, fields = split_header(hdr)
        if fields.pop("secret", None) != SECRET:
            return
        stage = fields.get("stage")
        route(account, subject[skip:], reply, hdr, payload, _RelayedPublisher(fields),
              stage=stage if stage in ("home", "owner") else "owner")
    return handler


# ------------------------------------------------------------------------ routing

def router(account):
    """The handler of ``account``'s API subjects in this worker (its clients' requests)."""
    def handler(subject, reply, hdr, payload, pub):
        route(account, subject, reply, hdr, payload, pub)
    return handler


def _api_tokens(account, subject: bytes):
    """The request's ``$JS.API`` tokens (a ``$JS.<domain>.API`` subject mapped), or None."""
    tokens = subject.decode("utf-8", "surrogateescape").split(".")
    if len(tokens) > 3 and tokens[1] != "API" and tokens[2] == "API":
        if tokens[1] != account.js.domain:
            return None
        tokens = [tokens[0]] + tokens[2:]
    return tokens


def route(account, subject: bytes, reply, hdr, payload, pub, stage=None) -> None:
    """Answers a request here or relays it to its target (see the module docstring);
    ``stage``: None for a request of this worker's client, else what the sender asked."""
    from natsx.jetstream import api, shards

    js = account.js
    if account.enabled and js.refused_by_home(account):
        # The home found the account's limits do not fit the server's: 10039 here too.
        account = js.disabled.get(account.name, account)
    if stage == "owner" or not account.enabled:
        # (A create or update the home passed on was vetted there.)
        api.dispatch(account, subject, reply, hdr, payload, pub, vetted=stage == "owner")
        return
    tokens = _api_tokens(account, subject)
    target = None
    if tokens is not None and api._handler(tokens) is not None:
        server = account.js.server
        target = shards.target(account.name, tokens, server.worker_count)
    if target is None:
        api.dispatch(account, subject, reply, hdr, payload, pub)
        return
    kind, worker = target
    me = server.worker_index
    if worker != me:
        forward(account, worker, kind, subject, reply, hdr, payload, pub)
        return
    if kind == "home" and tuple(tokens[2:4]) in shards.VETTED_REQUESTS:
        # The home vets it against the account's streams on every worker, then its owner
        # runs it.
        if not api.dispatch(account, subject, reply, hdr, payload, pub, vet=True):
            return
        owner = shards.stream_owner(account.name, tokens[4], server.worker_count)
        if owner != me:
            forward(account, owner, "owner", subject, reply, hdr, payload, pub)
            return
        api.dispatch(account, subject, reply, hdr, payload, pub, vetted=True)
        return
    api.dispatch(account, subject, reply, hdr, payload, pub)


def forward(account, worker: int, stage: str, subject: bytes, reply, hdr, payload,
            pub) -> None:
    """Relays a request to ``worker`` with the client's details."""
    client = account.js.server.internal_client(account.name)
    target = PREFIX + b"%d." % worker + subject
    if not client.has_interest(target):
        # The worker is restarting: what the core answers a request nobody receives.
        if reply and getattr(pub, "no_responders", False):
            client.publish(reply, None, b"NATS/1.0 503\r\nNats-Subject: %s\r\n\r\n"
                           % subject, b"")
        return
    conn = getattr(pub, "conn", None)
    fields: dict = {"secret": SECRET, "stage": stage}
    if getattr(pub, "no_responders", False):
        fields["nr"] = 1
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
