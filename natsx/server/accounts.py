"""Accounts: the unit of subject-space isolation. Each account owns one sublist.

Theory of operation
-------------------
Every account has its own sublist, registered in ``Router.sublists`` under its name in every
worker, so the compiled core only ever matches a publish against the publisher's account
and the worker mesh (which names the account in each record) keeps the separation across
workers. ``AccountConfig`` is what the config file's ``accounts`` block declares: its
exports (subjects other accounts may import, optionally only some of them) and its
imports; ``natsx.server.imports`` turns the imports into internal subscriptions.
"""
from __future__ import annotations

import attrs

from natsx._speedups import load

_core = load("core")
_sublist = load("sublist")

GLOBAL_ACCOUNT = "$G"
DEFAULT_SYSTEM_ACCOUNT = "$SYS"


def system_account_name(options) -> str:
    """The system account: the configured one, else ``$SYS`` unless ``no_system_account``
    (then ``""``: no system account, so none of its services, as in Go)."""
    if options.system_account:
        return options.system_account
    return "" if options.no_system_account else DEFAULT_SYSTEM_ACCOUNT


class Account:
    """An account's name, its sublist, whether it is the system account, and its subject
    mappings: ``mappings`` (natsx.server.mapping.Mappings or None) and ``mapper``, the
    compiled core's view of them, shared by the account's client cores (``Client.mapper``)
    so the hot path maps a publish without Python (natsx._speedups._core.Mapper)."""

    __slots__ = ("name", "sublist", "is_system", "mapper", "mappings")

    def __init__(self, name: str, sublist, *, is_system: bool = False) -> None:
        self.name = name
        self.sublist = sublist
        self.is_system = is_system
        self.mapper = _core.Mapper()
        self.mappings = None

    def set_mappings(self, mappings) -> None:
        """Installs ``mappings`` (a natsx.server.mapping.Mappings, or None for none); the
        clients of the account see them from their next publish."""
        self.mappings = mappings or None
        if self.mappings is None:
            self.mapper.set(None)
            return
        self.mapper.set(self.mappings.plan, *compile_mappings(self.mappings))

    def map_subject(self, subject: bytes) -> bytes:
        """The subject a message published on ``subject`` goes to (Go's
        selectMappedSubject), for the server's own publishes that Go maps too (service
        imports)."""
        if self.mappings is None:
            return subject
        return self.mappings.select(subject)[0]


def compile_mappings(mappings) -> tuple:
    """(sources, entries) for ``Mapper.set``: a Sublist of the sources, each subscription's
    weight its position, and, with the compiled core, per mapping (has wildcards,
    cumulative weights, a CTransform or None per destination)."""
    sources = _sublist.Sublist()
    entries = [] if hasattr(_core, "CTransform") else None
    for i, m in enumerate(mappings.mappings):
        sub = _sublist.Subscription(m.src_b, b"%d" % i)
        sub.weight = i
        sources.insert(sub)
        if entries is not None:
            dests = m.destinations(mappings.cluster)
            entries.append((m.wc, tuple(w for w, _t in dests),
                            tuple(None if t is None else _core.CTransform(t)
                                  for _w, t in dests)))
    return sources, entries


@attrs.frozen
class Export:
    """A stream or service export; ``accounts`` None means public."""

    subject: str
    accounts: frozenset | None = None
    # services: Go's response type ("Singleton", "Streamed" or "Chunked") and the time a
    # requester may wait for (each) response, seconds (0: Go's default, 2 minutes)
    response_type: str = "Singleton"
    response_threshold: float = 0.0
    # latency tracking (natsx.server.latency): (sampling percent, 0 for headers; results
    # subject), None when off
    latency: tuple | None = None


@attrs.frozen
class StreamImport:
    """Messages of ``account`` on ``subject``, delivered here on ``to`` (mapped) or with
    ``prefix`` in front."""

    account: str
    subject: str
    prefix: str = ""
    to: str = ""


@attrs.frozen
class ServiceImport:
    """Requests sent here on ``to`` go to ``account`` on ``subject``; ``share``: latency
    events describe the requestor in full (natsx.server.latency)."""

    account: str
    subject: str
    to: str = ""
    share: bool = False


@attrs.define
class AccountConfig:
    """An account of the config file's ``accounts`` block."""

    name: str
    stream_exports: list = attrs.Factory(list)
    service_exports: list = attrs.Factory(list)
    stream_imports: list = attrs.Factory(list)
    service_imports: list = attrs.Factory(list)
    # JetStream limits (Go's JetStreamAccountLimits JSON), None when not enabled
    jetstream: dict | None = None
    # subject mappings (natsx.server.mapping spec: ((source, (MapDest, ...)), ...))
    mappings: tuple = ()
