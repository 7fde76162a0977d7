"""The home of an account asking the owners of its streams for their state (STREAM.LIST).

Theory of operation
-------------------
``STREAM.LIST`` answers each listed stream's info, state included, and with streams spread
over the workers (natsx.jetstream.shards) only a stream's owner has its state. The home
pages the names from the account's catalog (natsx.jetstream.catalog) as Go does, takes the
info of the streams it runs itself and asks each other owner for the rest in one request,
``$NATSX.JSQ.<worker>`` in the account, with a reply subject of its own,
``$NATSX.JSQR.<home>.<id>``; requests and answers carry the relay secret
(natsx.jetstream.relay) and are taken only from a peer worker. The answer to the client
leaves when every owner has answered, or after ``TIMEOUT`` seconds with the streams of the
owners that did not (a worker restarting) under ``missing``, as Go lists the streams whose
cluster did not answer in time.
"""
from __future__ import annotations

import itertools
import json
import logging

from natsx.jetstream.api import Deferred
from natsx.jetstream.shards import stream_owner

log = logging.getLogger("natsx")

TIMEOUT = 2.0
QUERY = b"$NATSX.JSQ.%d"
ANSWER = b"$NATSX.JSQR.%d.%d"
ANSWERS = b"$NATSX.JSQR.%d.*"

_ids = itertools.count(1)
_pending: dict = {}


class _Infos(Deferred):
    def __init__(self, account, page: list, body: dict) -> None:
        self.account = account
        self.page = page
        self.body = body
        self.infos: dict = {}
        self.waiting: set = set()
        self.timer = None
        self.done = False
        self.id = next(_ids)

    def ready(self) -> None:
        from natsx.jetstream.relay import SECRET

        account = self.account
        js = account.js
        server = js.server
        me, workers = server.worker_index, server.worker_count
        asks: dict = {}
        for name in self.page:
            stream = account.streams.get(name)
            if stream is not None:
                self.infos[name] = stream.info()
            else:
                asks.setdefault(stream_owner(account.name, name, workers), []).append(name)
        if not asks:
            self.finish()
            return
        _pending[self.id] = self
        client = server.internal_client(account.name)
        for worker, names in asks.items():
            self.waiting.add(worker)
            client.publish(QUERY % worker, ANSWER % (me, self.id), None,
                           json.dumps({"secret": SECRET, "names": names}).encode())
        self.timer = js.call_later(TIMEOUT, self.finish)

    def answer(self, worker: int, infos: dict) -> None:
        if self.done:
            return
        self.waiting.discard(worker)
        self.infos.update(infos)
        if not self.waiting:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        _pending.pop(self.id, None)
        if self.timer is not None:
            self.timer.cancel()
        body = self.body
        body["streams"] = [self.infos[n] for n in self.page if n in self.infos]
        missing = [n for n in self.page if n not in self.infos]
        body["missing"] = missing or None
        try:
            self.then(body)
        except Exception:
            log.exception("JetStream: STREAM.LIST answer failed")


def gather_infos(account, page: list, body: dict) -> Deferred:
    """The STREAM.LIST ``body`` completed with the infos of the streams of ``page``."""
    return _Infos(account, page, body)


def _authentic(pub, payload: bytes):
    from natsx.jetstream.relay import SECRET

    if not getattr(pub, "peer", False):
        return None
    try:
        msg = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("secret") != SECRET:
        return None
    return msg


def subscribe(account) -> list:
    """The account's subscriptions for the queries of homes and the answers of owners."""
    from natsx.jetstream.relay import SECRET

    server = account.js.server
    me = server.worker_index
    client = server.internal_client(account.name)

    def on_query(subject, reply, hdr, payload, pub):
        msg = _authentic(pub, payload)
        if msg is None or not reply:
            return
        infos = {}
        for name in msg.get("names") or ():
            stream = account.streams.get(name) if isinstance(name, str) else None
            if stream is not None:
                infos[name] = stream.info()
        account.js.send(account.name, reply, None,
                        json.dumps({"secret": SECRET, "worker": me, "infos": infos}).encode())

    def on_answer(subject, reply, hdr, payload, pub):
        msg = _authentic(pub, payload)
        if msg is None:
            return
        try:
            gid = int(subject.rsplit(b".", 1)[1])
        except ValueError:
            return
        gather = _pending.get(gid)
        if gather is not None and gather.account is account:
            gather.answer(msg.get("worker"), msg.get("infos") or {})

    return [client.subscribe(QUERY % me, on_query),
            client.subscribe(ANSWERS % me, on_answer)]
