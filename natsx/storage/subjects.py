"""Subject filters as the stores apply them: literal stored subjects against filters that may
hold ``*`` (one token) and ``>`` (one or more trailing tokens).

Stored subjects are always literal, so matching is a token walk (Go ``matchLiteral``); the
empty filter and ``>`` match everything and are reported as ``None`` so callers can skip
matching altogether. Compiled matchers are cached because a consumer asks with the same filter
for every message.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Optional

__all__ = ["FWC", "PWC", "is_literal", "matcher", "subject_matches"]

FWC = ">"
PWC = "*"


def is_literal(subject: str) -> bool:
    """True when no token of ``subject`` is a wildcard (Go ``subjectIsLiteral``)."""
    if PWC not in subject and FWC not in subject:
        return True
    for token in subject.split("."):
        if token == PWC or token == FWC:
            return False
    return True


@lru_cache(maxsize=1024)
def matcher(filter_subject: str) -> Optional[Callable[[str], bool]]:
    """A predicate for literal subjects matching ``filter_subject``; ``None`` when all match."""
    if filter_subject == "" or filter_subject == FWC:
        return None
    if is_literal(filter_subject):
        return filter_subject.__eq__
    ftokens = tuple(filter_subject.split("."))
    nf = len(ftokens)
    tail = ftokens[-1] == FWC

    def match(subject: str) -> bool:
        stokens = subject.split(".")
        ns = len(stokens)
        if ns < nf if tail else ns != nf:
            return False
        for ft, st in zip(ftokens, stokens):
            if ft == FWC:
                return True
            if ft != PWC and ft != st:
                return False
        return True

    return match


def subject_matches(subject: str, filter_subject: str) -> bool:
    """True when the literal ``subject`` matches ``filter_subject``."""
    m = matcher(filter_subject)
    return m is None or m(subject)
