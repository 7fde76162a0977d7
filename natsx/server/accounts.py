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

GLOBAL_ACCOUNT = "$G"
DEFAULT_SYSTEM_ACCOUNT = "$SYS"


class Account:
    """An account's name, its sublist and whether it is the system account."""

    __slots__ = ("name", "sublist", "is_system")

    def __init__(self, name: str, sublist, *, is_system: bool = False) -> None:
        self.name = name
        self.sublist = sublist
        self.is_system = is_system


@attrs.frozen
class Export:
    """A stream or service export; ``accounts`` None means public."""

    subject: str
    accounts: frozenset | None = None


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
    """Requests sent here on ``to`` go to ``account`` on ``subject``."""

    account: str
    subject: str
    to: str = ""


@attrs.define
class AccountConfig:
    """An account of the config file's ``accounts`` block."""

    name: str
    stream_exports: list = attrs.Factory(list)
    service_exports: list = attrs.Factory(list)
    stream_imports: list = attrs.Factory(list)
    service_imports: list = attrs.Factory(list)
