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
  and publishes it in the importing account on the requester's reply. The export's
  ``response_type`` decides how long the reply map keeps an entry: Singleton (Go's
  default) until its one response; Streamed and Chunked for any number of responses, each
  restarting the export's ``response_threshold`` (2 minutes by default, also the limit for
  a Singleton), an empty message ending the exchange early; an undelivered response ends
  it too (Go: processServiceImport's shouldRemove). The request itself is routed through
  the exporting account's subject mappings, as Go does (selectMappedSubject). An export
  with ``latency`` gets its samples published (natsx.server.latency). When the responder
  is a client of another worker, that worker sends its description on the reply subject
  plus ``.ri`` (each worker holds a local subscription on the exporter's ``_R_.>`` for
  this); the requester's worker sends the event when it arrives, as Go merges the
  responder server's measurement. A sampled request that gets no answer is reported too:
  504 when its threshold passes (a timer task of the worker, armed only while such
  requests are pending), 408 when the requester's worker sees the last subscription on
  its reply go (an unsubscribe or a disconnect: ``interest_removed``, a worker unsub hook).

Workers: the import subscriptions are created before the worker joins the mesh, so they
are local to the worker and are not announced to peers. Each worker therefore imports
exactly the messages published by its own clients, and ignores the copies a peer worker
forwards (``publisher.peer``) to its other local subscribers: every message is imported
once. The response subscription is announced (it is created on the first request, after
the mesh started), and its worker token makes the response reach only the worker that
holds the requester's reply.

A reload rebuilds the config's imports (``rebuild``): the old subscriptions go, the new
ones are installed local to the worker (not announced), exactly like the ones made at
startup before the mesh; pending replies stay valid until their threshold.

Accounts from JWTs (natsx.server.operator) are created while the worker runs, so their
import subscriptions are announced, and a peer may not have the importing account at all.
Those imports are ``shared``: each is a queue subscription in a group named after the
import, the same name in every worker, so each message is imported exactly once across the
workers that have the import (the mesh keeps queue groups exactly-once), whichever worker
its publisher is on.
"""
from __future__ import annotations

import hashlib
import heapq
import logging
import os
import time
from collections import OrderedDict

import trio

from natsx.server import latency

log = logging.getLogger("natsx")

RESPONSE_TTL = 120.0
# Go's ServiceRespType names (accounts.go), as the config's response_type gives them.
SINGLETON = "Singleton"
STREAMED = "Streamed"
CHUNKED = "Chunked"
_R_PREFIX = b"_R_."
# a responder's description sent by its worker for a sampled request (see latency)
_RI_SUFFIX = b".ri"
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


def exports_from_jwt(claims_exports) -> list:
    """An account JWT's service exports as the config's (natsx.server.accounts.Export):
    the response type ("Stream" is Go's Streamed), threshold and latency sampling."""
    from natsx.server.accounts import Export

    out = []
    for e in claims_exports:
        if e.type != "service":
            continue
        rtype = {"Stream": STREAMED, "Chunked": CHUNKED}.get(e.response_type, SINGLETON)
        lat = e.service_latency
        out.append(Export(e.subject, None, rtype, e.response_threshold / 1e9,
                          (lat.sampling, lat.results) if lat is not None and lat.results
                          else None))
    return out


class Imports:
    """One worker's import subscriptions and its service reply map."""

    def __init__(self, server) -> None:
        self.server = server
        self.token = _random_token(6)
        # generated reply -> (importing account, requester's reply, expiry, threshold,
        # single response)
        self.responses: OrderedDict = OrderedDict()
        self._response_subs: dict[bytes, object] = {}
        self._config_subs: list = []     # (account, subscription) of the config's imports
        self.exports: dict = {}          # account name -> its service exports (config)
        # JWT accounts: name -> their service exports (natsx.server.operator)
        self.export_source = None
        # sampled responses that came from a peer worker: reply -> (track, time, expiry)
        self._awaiting: OrderedDict = OrderedDict()
        # sampled requests not answered yet: generated reply -> expiry (monotonic), and
        # the exporting account to report in; importing account -> requester's reply ->
        # generated replies (for 408); the sweeper's deadlines (a heap) and its wake-up
        self._tracked: dict[bytes, float] = {}
        self._tracked_exporter: dict[bytes, bytes] = {}
        self._by_reply: dict[bytes, dict[bytes, set]] = {}
        self._deadlines: list = []
        self._sweeper_wake = None
        self._sweeper_at = 0.0
        hooks = getattr(server, "unsub_hooks", None)
        if hooks is not None:
            hooks.append(self.interest_removed)

    def start(self, accounts: dict, *, local: bool = False) -> None:
        """Installs the config's imports (``local``: see rebuild)."""
        self.exports = {name: list(cfg.service_exports) for name, cfg in accounts.items()}
        for name, exports in self.exports.items():
            if any(getattr(e, "latency", None) for e in exports):
                self._config_subs.append((name, self._describe_responders(name)))
        for cfg in accounts.values():
            for imp in cfg.stream_imports:
                self._config_subs.append(
                    (imp.account, self._stream(cfg.name, imp, local=local)))
            for imp in cfg.service_imports:
                self._config_subs.append((cfg.name, self._service(cfg.name, imp, local=local)))

    def stop(self, keep: set | dict = ()) -> None:
        """Removes the config's import subscriptions, and the response subscriptions of
        the accounts not in ``keep`` (a reload: ``start(..., local=True)`` follows)."""
        server = self.server
        for account, sub in self._config_subs:
            server.internal_client(account).unsubscribe(sub)
        self._config_subs = []
        for exporter in [e for e in self._response_subs if e.decode() not in keep]:
            server.internal_client(exporter).unsubscribe(self._response_subs.pop(exporter))

    def rebuild(self, accounts: dict) -> None:
        """A reload: the config's imports replaced by ``accounts``' (see the module
        docstring)."""
        self.stop(accounts)
        self.start(accounts, local=True)

    def add(self, importer: str, kind: str, imp, *, shared: bool = False):
        """Installs one import of ``importer`` ("stream" or "service"); returns the
        internal subscription (``shared``: see the module docstring)."""
        if kind == "stream":
            return self._stream(importer, imp, shared)
        return self._service(importer, imp, shared)

    @staticmethod
    def _group(importer: str, kind: str, imp) -> bytes:
        digest = hashlib.sha256(repr((importer, kind, imp)).encode()).hexdigest()[:20]
        return b"_imp_" + digest.encode()

    # ---------------------------------------------------------------- streams

    def _stream(self, importer: str, imp, shared: bool = False, local: bool = False):
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

        def handler(subject, reply, headers, payload, publisher, routed=None):
            if publisher.peer and not shared:
                return
            if routed is not None:
                # A JetStream delivery: routed on its deliver subject, shown with the
                # message's own; the import maps the first and keeps the second.
                server.internal_publish(dest, mapper(routed), reply, headers, payload,
                                        deliver_as=subject)
                return
            server.internal_publish(dest, mapper(subject), reply, headers, payload)

        queue = self._group(importer, "stream", imp) if shared else None
        return server.internal_client(imp.account).subscribe(src, handler, queue, local=local,
                                                             routed=True)

    # ---------------------------------------------------------------- services

    def _service(self, importer: str, imp, shared: bool = False, local: bool = False):
        to = imp.to.encode()
        remote = imp.subject.encode()
        exporter = imp.account.encode()
        dest = importer.encode()
        share = getattr(imp, "share", False)
        server = self.server

        def handler(subject, reply, headers, payload, publisher):
            if publisher.peer and not shared:
                return
            target = map_subject(subject, to, remote)
            account = server.accounts.get(imp.account)
            if account is not None and account.mappings is not None:
                target = account.map_subject(target)
            new_reply = None
            exp = self._export_of(imp.account, remote)
            track = None
            lat = getattr(exp, "latency", None)
            if lat is not None:
                sampled, header = latency.sample(lat[0], headers)
                if sampled:
                    track = self._track(importer, publisher, share, lat[1], header)
            if reply:
                self._ensure_response_sub(exporter)
                new_reply = b"%s%s.%s" % (_R_PREFIX, self.token, _random_token(10))
                rtype = getattr(exp, "response_type", SINGLETON)
                threshold = getattr(exp, "response_threshold", 0.0) or RESPONSE_TTL
                single = rtype == SINGLETON
                # Go measures Singleton exchanges only (addRespServiceImport).
                self._remember(new_reply, dest, reply, threshold, single,
                               track if single else None, exporter)
            elif track is not None:
                self._latency_event(exporter, track, 400, "Bad Request")
            did = server.internal_publish(exporter, target, new_reply, headers, payload)
            if not did and new_reply is not None:
                entry = self._forget(new_reply)
                if entry is not None and entry[5] is not None:
                    self._latency_event(exporter, entry[5], 503, "Service Unavailable")

        queue = self._group(importer, "service", imp) if shared else None
        if local:
            return server.internal_client(dest).subscribe(to, handler, queue, local=True)
        return server.internal_subscribe(dest, to, handler, queue)

    def _export_of(self, exporter: str, subject: bytes):
        """The config's service export of ``exporter`` that ``subject`` falls under."""
        from natsx.sublist import is_subset_match

        exports = self.exports.get(exporter)
        if exports is None and self.export_source is not None:
            exports = self.export_source(exporter)
        for exp in exports or ():
            if is_subset_match(subject, exp.subject.encode()):
                return exp
        return None

    def _track(self, importer: str, publisher, share: bool, results: str,
               header: dict | None) -> latency.Track:
        """A sampled request's Track: the requestor in full when the import shares it and
        it is a client of this worker, else its account and RTT (Go: getClientInfo)."""
        conn = publisher.conn if not publisher.peer else None
        if share and hasattr(conn, "cid"):
            requestor = latency.client_detail(conn, self.server.server_name)
        else:
            requestor = latency.requestor_info(importer, getattr(conn, "rtt", 0.0) or 0.0)
        return latency.Track(requestor, time.time_ns(), results.encode(), header)

    def _latency_event(self, exporter: bytes, track: latency.Track, status: int,
                       error: str) -> None:
        requestor = track.requestor
        ev = latency.result(status, requestor=requestor, responder=None,
                            start_ns=track.start_ns - requestor.get("rtt", 0), error=error,
                            header=track.header)
        self._send_latency(exporter, track.results, ev)

    # ------------------------------------------------- unanswered sampled requests

    def _forget(self, new_reply: bytes):
        """Drops a reply map entry (and its tracking); returns it, or None."""
        entry = self.responses.pop(new_reply, None)
        if entry is not None and entry[5] is not None:
            self._untrack(new_reply, entry)
        return entry

    def _untrack(self, new_reply: bytes, entry: tuple) -> bytes:
        """Ends the tracking of a sampled request; returns its exporting account."""
        self._tracked.pop(new_reply, None)
        exporter = self._tracked_exporter.pop(new_reply, b"")
        replies = self._by_reply.get(entry[0])
        if replies is not None:
            keys = replies.get(entry[1])
            if keys is not None:
                keys.discard(new_reply)
                if not keys:
                    del replies[entry[1]]
                    if not replies:
                        del self._by_reply[entry[0]]
        return exporter

    def _timed_out(self, new_reply: bytes, entry: tuple) -> None:
        """An entry past its threshold: dropped, and a sampled one reported as 504
        (Go: checkExpiredResponses, sendBackendErrorTrackingLatency with rsiTimeout)."""
        if entry[5] is not None:
            self._latency_event(self._untrack(new_reply, entry), entry[5], 504,
                                "Service Timeout")

    def interest_removed(self, account: bytes, sub) -> None:
        """A client of this worker unsubscribed (or disconnected) in ``account``: each
        sampled request whose reply nobody listens to any more is dropped and reported as
        408 (Go: checkForReverseEntry, sendReplyInterestLostTrackLatency)."""
        replies = self._by_reply.get(account)
        if not replies:
            return
        subject = sub.subject
        if b"*" in subject or b">" in subject:
            from natsx.sublist import is_subset_match

            lost = [r for r in replies if is_subset_match(r, subject)]
        else:
            lost = [subject] if subject in replies else []
        if not lost:
            return
        client = self.server.internal_client(account)
        for reply in lost:
            if client.has_interest(reply):
                continue
            for new_reply in list(replies.get(reply, ())):
                entry = self.responses.pop(new_reply, None)
                if entry is not None and entry[5] is not None:
                    self._latency_event(self._untrack(new_reply, entry), entry[5], 408,
                                        "Request Timeout")

    def _arm_sweeper(self, new_reply: bytes, expiry: float) -> None:
        """Makes sure a sampled request is reported when its threshold passes, even if
        nothing else happens (Go: the export's response threshold timer)."""
        heapq.heappush(self._deadlines, (expiry, new_reply))
        if self._sweeper_wake is not None:
            if expiry < self._sweeper_at:
                self._sweeper_wake.set()
            return
        nursery = getattr(self.server, "_nursery", None)
        if nursery is not None:
            self._sweeper_wake = trio.Event()
            self._sweeper_at = expiry
            nursery.start_soon(self._sweep_loop)

    async def _sweep_loop(self) -> None:
        deadlines = self._deadlines
        try:
            while deadlines:
                now = time.monotonic()
                due = []
                while deadlines and deadlines[0][0] <= now:
                    expiry, new_reply = heapq.heappop(deadlines)
                    if self._tracked.get(new_reply) == expiry:
                        due.append(new_reply)
                if due:
                    try:
                        self.server.run_batch(self._expire_due, due)
                    except Exception:
                        # A failed report must not take the worker down with it.
                        log.exception("service latency: reporting timed out requests failed")
                if not deadlines:
                    break
                self._sweeper_at = deadlines[0][0]
                self._sweeper_wake = trio.Event()
                with trio.move_on_after(max(self._sweeper_at - now, 0.001)):
                    await self._sweeper_wake.wait()
        finally:
            self._sweeper_wake = None
            deadlines.clear()

    def _expire_due(self, due: list) -> None:
        for new_reply in due:
            entry = self.responses.pop(new_reply, None)
            if entry is None:
                self._tracked.pop(new_reply, None)
                self._tracked_exporter.pop(new_reply, None)
            else:
                self._timed_out(new_reply, entry)

    def _describe_responders(self, exporter: str):
        """A local subscription on the exporter's reply subjects: when one of this worker's
        clients answers a request another worker forwarded, it sends that worker the
        responder's description (Go: the responder's server sends its measurement)."""
        server = self.server
        token = self.token

        def described(subject, reply, headers, payload, publisher):
            if publisher.peer or publisher.internal or subject.endswith(_RI_SUFFIX):
                return
            parts = subject.split(b".", 2)
            if len(parts) < 3 or parts[1] == token:
                return
            from natsx.server.system import go_json

            conn = publisher.conn
            if hasattr(conn, "cid"):
                info = latency.responder_info(conn, server.server_name)
                server.internal_publish(exporter, subject + _RI_SUFFIX, None, None,
                                        go_json(info))

        return server.internal_client(exporter).subscribe(_R_PREFIX + b">", described,
                                                          local=True)

    def _responder_described(self, exporter: bytes, reply: bytes, payload: bytes) -> None:
        import json

        now = time.monotonic()
        while self._awaiting:
            first = next(iter(self._awaiting.values()))
            if first[2] > now:
                break
            self._awaiting.popitem(last=False)
        pending = self._awaiting.pop(reply, None)
        if pending is None:
            return
        track, now_ns, _expiry = pending
        try:
            responder = json.loads(payload)
        except ValueError:
            responder = None
        self._send_latency(exporter, track.results,
                           latency.measured(track.requestor, responder, track.start_ns, now_ns,
                                            track.header))

    def _send_latency(self, exporter: bytes, results: bytes, ev: dict) -> None:
        from natsx.server.system import go_json

        self.server.internal_publish(exporter, results, None, None, go_json(ev))

    def _remember(self, new_reply: bytes, account: bytes, reply: bytes,
                  threshold: float = RESPONSE_TTL, single: bool = True,
                  track: latency.Track | None = None, exporter: bytes = b"") -> None:
        now = time.monotonic()
        responses = self.responses
        while responses:
            key, first = next(iter(responses.items()))
            if first[2] > now:
                break
            responses.popitem(last=False)
            self._timed_out(key, first)
        responses[new_reply] = (account, reply, now + threshold, threshold, single, track)
        if track is not None:
            self._tracked[new_reply] = now + threshold
            self._tracked_exporter[new_reply] = exporter
            self._by_reply.setdefault(account, {}).setdefault(reply, set()).add(new_reply)
            self._arm_sweeper(new_reply, now + threshold)

    def _ensure_response_sub(self, exporter: bytes) -> None:
        if exporter in self._response_subs:
            return
        server = self.server

        def on_response(subject, reply, headers, payload, publisher):
            if subject.endswith(_RI_SUFFIX):
                self._responder_described(exporter, subject[:-len(_RI_SUFFIX)], payload)
                return
            entry = self.responses.get(subject)
            if entry is None:
                return
            account, requester_reply, expiry, threshold, single, track = entry
            now = time.monotonic()
            if expiry < now:
                del self.responses[subject]
                self._timed_out(subject, entry)
                return
            now_ns = time.time_ns()
            did = server.internal_publish(account, requester_reply, reply, headers, payload)
            if track is not None:
                # The first response of a sampled request (Go: sendTrackingLatency).
                self._untrack(subject, entry)
                if publisher.peer:
                    # The responder's worker describes it next, on this ring (see
                    # _describe_responders): the event waits for that.
                    self._awaiting[subject] = (track, now_ns, time.monotonic() + 5.0)
                else:
                    conn = publisher.conn
                    responder = (latency.client_detail(conn, server.server_name)
                                 if hasattr(conn, "cid") else None)
                    self._send_latency(exporter, track.results,
                                       latency.measured(track.requestor, responder,
                                                        track.start_ns, now_ns, track.header))
                track = None
            if single or not did or (not payload and not headers):
                self.responses.pop(subject, None)
            else:
                # Streamed and chunked: each delivered response restarts the threshold.
                self.responses[subject] = (account, requester_reply, now + threshold,
                                           threshold, single, track)
                self.responses.move_to_end(subject)

        self._response_subs[exporter] = server.internal_subscribe(
            exporter, _R_PREFIX + self.token + b".>", on_response)
