"""Accounts: the unit of subject-space isolation. Each account owns one sublist."""
from __future__ import annotations


class Account:
    """An account's name, its sublist and whether it is the system account."""

    __slots__ = ("name", "sublist", "is_system")

    def __init__(self, name: str, sublist, *, is_system: bool = False) -> None:
        self.name = name
        self.sublist = sublist
        self.is_system = is_system
