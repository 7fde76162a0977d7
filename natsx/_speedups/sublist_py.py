"""The sublist: which subscriptions a published subject reaches (pure-Python twin).

Theory of operation
-------------------
This module mirrors ``_sublist.pyx`` name for name and behaviour for behaviour; the compiled
twin is the one the hot path uses, this one is what runs under ``NATSX_NO_EXTENSIONS``. Both
follow the Go server's ``server/sublist.go``.

What it owns. A trie with one *level* per token position. A level maps literal tokens to
*nodes* and has at most one ``*`` node and one ``>`` node; a node holds the subscriptions
whose subject ends there (plain ones in an insertion-ordered dict used as a set, queue ones
grouped by queue name) and the next level, created only when a longer subject needs it.
Removing the last subscription under a node prunes the node and any level left empty, so
the trie never holds more than the live subscriptions need.

What ``match`` guarantees. ``match(subject)`` returns every subscription whose subject
matches the literal ``subject`` (``*`` is one token, ``>`` one or more trailing tokens),
plain ones in ``psubs`` and queue ones in ``qsubs``, one list per queue name. A queue
subscription with ``weight`` n > 1 appears n times in its group, as Go shadows a route's
queue subscription by its member count, so a uniform pick among the group is weighted.
A result is a snapshot: once returned it is never changed, so a caller may deliver from it
while a delivery removes subscriptions. Results share unchanged lists with each other, so
callers must treat them as read-only. Every result with nothing in it is one shared object.

The result cache. Results are cached by subject, as in Go, and kept exact rather than
invalidated wholesale: inserting a literal subscription replaces the one cached entry for
that subject with a copy that includes it; inserting a wildcard one replaces every cached
entry whose subject the wildcard matches. Removing a subscription drops the entries it
could be in. A cache hit is therefore one dict lookup with no generation check. When the
cache grows past ``CACHE_MAX`` entries the oldest are dropped until ``CACHE_SWEEP`` remain.
``genid`` still goes up on every change, for callers that memoise results themselves (a
connection remembering its last subject, as Go's per-client cache does).

What it costs. A hit is a dict lookup. A miss splits the subject and walks the trie,
branching at every ``*`` node on the way. Inserting or removing a literal subscription is a
walk plus at most one cache entry; a wildcard one also scans the cache (at most 1,024
entries). Nothing here is thread-safe: a sublist belongs to one worker's event loop.
"""
from __future__ import annotations

import re
from typing import Iterable

__all__ = [
    "CACHE_MAX",
    "CACHE_SWEEP",
    "Subscription",
    "SublistResult",
    "Sublist",
    "is_valid_subject",
    "is_valid_literal_subject",
    "is_valid_publish_subject",
    "is_valid_queue",
    "subject_is_literal",
    "match_literal",
    "subjects_collide",
    "is_subset_match",
    "num_tokens",
]

#: The cache is swept when it holds more results than this...
CACHE_MAX = 1024
#: ...down to this many, keeping the most recently added.
CACHE_SWEEP = 256

_PWC = b"*"
_FWC = b">"
_SEP = b"."
# Go's IsValidSubject rejects exactly these (not \v).
_WHITESPACE = re.compile(rb"[ \t\n\r\f]")


class Subscription:
    """One subscription: what a SUB (or a remote worker's interest) put in the sublist.

    ``subject`` and ``queue`` must not change while the subscription is in a sublist;
    ``weight`` may, followed by ``Sublist.update_remote_qsub``.
    """

    __slots__ = ("subject", "queue", "sid", "client", "max_msgs", "delivered", "weight", "closed")

    def __init__(self, subject: bytes, sid: bytes, queue: bytes | None = None, client=None,
                 max_msgs: int = 0) -> None:
        self.subject = subject
        self.sid = sid
        self.queue = queue
        self.client = client
        self.max_msgs = max_msgs
        self.delivered = 0
        self.weight = 1
        self.closed = False

    def __repr__(self) -> str:
        queue = f" queue={self.queue!r}" if self.queue is not None else ""
        return f"<Subscription {self.subject!r} sid={self.sid!r}{queue}>"


class SublistResult:
    """What a subject matched: ``psubs`` (plain) and ``qsubs`` (one list per queue group)."""

    __slots__ = ("psubs", "qsubs")

    def __init__(self, psubs: list | None = None, qsubs: list | None = None) -> None:
        self.psubs = [] if psubs is None else psubs
        self.qsubs = [] if qsubs is None else qsubs

    def __repr__(self) -> str:
        return f"<SublistResult psubs={len(self.psubs)} qsubs={[len(g) for g in self.qsubs]}>"


# The shared result for subjects nothing matches (Go's emptyResult).
_EMPTY = SublistResult()


# ---------------------------------------------------------------------------------------
# The trie

class _Node:
    __slots__ = ("next", "psubs", "qsubs")

    def __init__(self) -> None:
        self.next: _Level | None = None
        self.psubs: dict = {}              # Subscription -> None, an ordered set
        self.qsubs: dict | None = None     # queue name -> {Subscription: None}

    def is_empty(self) -> bool:
        return not self.psubs and not self.qsubs and (self.next is None or self.next.is_empty())


class _Level:
    __slots__ = ("nodes", "pwc", "fwc")

    def __init__(self) -> None:
        self.nodes: dict = {}              # literal token -> _Node
        self.pwc: _Node | None = None
        self.fwc: _Node | None = None

    def is_empty(self) -> bool:
        return not self.nodes and self.pwc is None and self.fwc is None

    def child(self, token: bytes) -> _Node | None:
        if token == _PWC:
            return self.pwc
        if token == _FWC:
            return self.fwc
        return self.nodes.get(token)

    def add_child(self, token: bytes) -> _Node:
        node = _Node()
        if token == _PWC:
            self.pwc = node
        elif token == _FWC:
            self.fwc = node
        else:
            self.nodes[token] = node
        return node

    def prune(self, node: _Node, token: bytes) -> None:
        if node is self.fwc:
            self.fwc = None
        elif node is self.pwc:
            self.pwc = None
        else:
            del self.nodes[token]


def _weight(sub: Subscription) -> int:
    return sub.weight if sub.weight > 1 else 1


def _find_group(qsubs: list, queue: bytes) -> list | None:
    # Linear, as Go's findQSlot: a subject rarely has more than a few queue groups.
    for group in qsubs:
        if group[0].queue == queue:
            return group
    return None


def _add_node(node: _Node, result: SublistResult) -> None:
    if node.psubs:
        result.psubs.extend(node.psubs)
    if node.qsubs:
        for queue, members in node.qsubs.items():
            group = _find_group(result.qsubs, queue)
            if group is None:
                group = []
                result.qsubs.append(group)
            for sub in members:
                if sub.weight > 1:
                    group.extend([sub] * sub.weight)
                else:
                    group.append(sub)


def _match_level(level: _Level | None, tokens: list, i: int, result: SublistResult) -> None:
    # Go's matchLevel: walk the literal path, collecting every '>' met on the way and
    # branching into every '*'; the '*' and literal nodes of the last level match too.
    pwc = node = None
    n = len(tokens)
    while i < n:
        if level is None:
            return
        if level.fwc is not None:
            _add_node(level.fwc, result)
        pwc = level.pwc
        if pwc is not None:
            _match_level(pwc.next, tokens, i + 1, result)
        node = level.nodes.get(tokens[i])
        level = node.next if node is not None else None
        i += 1
    if node is not None:
        _add_node(node, result)
    if pwc is not None:
        _add_node(pwc, result)


def _has_subs(node: _Node) -> bool:
    return bool(node.psubs or node.qsubs)


def _any_level(level: _Level | None, tokens: list, i: int) -> bool:
    # Go's matchLevelForAny: _match_level that stops at the first subscription.
    pwc = node = None
    n = len(tokens)
    while i < n:
        if level is None:
            return False
        if level.fwc is not None and _has_subs(level.fwc):
            return True
        pwc = level.pwc
        if pwc is not None and _any_level(pwc.next, tokens, i + 1):
            return True
        node = level.nodes.get(tokens[i])
        level = node.next if node is not None else None
        i += 1
    if node is not None and _has_subs(node):
        return True
    return pwc is not None and _has_subs(pwc)


def _collect(level: _Level, out: list) -> None:
    nodes = list(level.nodes.values())
    if level.pwc is not None:
        nodes.append(level.pwc)
    if level.fwc is not None:
        nodes.append(level.fwc)
    for node in nodes:
        out.extend(node.psubs)
        if node.qsubs:
            for members in node.qsubs.values():
                out.extend(members)
        if node.next is not None:
            _collect(node.next, out)


def _depth(level: _Level | None, depth: int) -> int:
    # Go's visitLevel.
    if level is None or level.is_empty():
        return depth
    depth += 1
    deepest = depth
    nodes = list(level.nodes.values())
    if level.pwc is not None:
        nodes.append(level.pwc)
    if level.fwc is not None:
        nodes.append(level.fwc)
    for node in nodes:
        deepest = max(deepest, _depth(node.next, depth))
    return deepest


def _with_sub(result: SublistResult, sub: Subscription) -> SublistResult:
    # Go's addSubToResult. A new snapshot; lists that do not change are shared, which is
    # safe because no snapshot is ever modified.
    if sub.queue is None:
        return SublistResult(result.psubs + [sub], result.qsubs)
    members = [sub] * _weight(sub)
    qsubs = list(result.qsubs)
    for i, group in enumerate(qsubs):
        if group[0].queue == sub.queue:
            qsubs[i] = group + members
            break
    else:
        qsubs.append(members)
    return SublistResult(result.psubs, qsubs)


# ---------------------------------------------------------------------------------------
# The sublist

class Sublist:
    """Subscriptions by subject, with Go's bounded result cache.

    Args:
        cache: keep a result cache (Go's ``NewSublist(enableCache)``).
    """

    __slots__ = ("_root", "_cache", "genid", "inserts", "removes", "matches", "cache_hits",
                 "count", "cache_enabled")

    def __init__(self, cache: bool = True) -> None:
        self._root = _Level()
        self._cache: dict = {}
        self.genid = 0
        self.inserts = 0
        self.removes = 0
        self.matches = 0
        self.cache_hits = 0
        self.count = 0
        self.cache_enabled = bool(cache)

    def insert(self, sub: Subscription) -> None:
        """Add ``sub``; adding one already present changes nothing.

        Raises:
            ValueError: the subject or queue name is invalid.
        """
        if sub is None:
            raise TypeError("insert() needs a Subscription")
        subject = sub.subject
        if not isinstance(subject, bytes) or not is_valid_subject(subject):
            raise ValueError(f"invalid subject {subject!r}")
        queue = sub.queue
        if queue is not None and (not isinstance(queue, bytes) or not is_valid_queue(queue)):
            raise ValueError(f"invalid queue group {queue!r}")

        level = self._root
        node = None
        for token in subject.split(_SEP):
            if node is not None:
                if node.next is None:
                    node.next = _Level()
                level = node.next
            node = level.child(token)
            if node is None:
                node = level.add_child(token)

        if queue is None:
            if sub in node.psubs:
                return
            node.psubs[sub] = None
        else:
            if node.qsubs is None:
                node.qsubs = {}
            members = node.qsubs.get(queue)
            if members is None:
                members = node.qsubs[queue] = {}
            elif sub in members:
                return
            members[sub] = None

        self.count += 1
        self.inserts += 1
        self._add_to_cache(subject, sub)
        self.genid += 1

    def remove(self, sub: Subscription) -> bool:
        """Take ``sub`` out; False when it was not in (or its subject is invalid)."""
        if sub is None or not self._remove(sub):
            return False
        self._remove_from_cache(sub.subject)
        self.genid += 1
        return True

    def remove_batch(self, subs: Iterable[Subscription]) -> int:
        """Remove many subscriptions (a closing connection's); returns how many were in.

        As Go's RemoveBatch, the cache is emptied once instead of being kept exact per
        subscription.
        """
        removed = 0
        for sub in subs:
            if sub is not None and self._remove(sub):
                removed += 1
        self._cache.clear()
        self.genid += 1
        return removed

    def update_remote_qsub(self, sub: Subscription) -> None:
        """Make results reflect a new ``sub.weight`` (Go's UpdateRemoteQSub)."""
        self._remove_from_cache(sub.subject)
        self.genid += 1

    def match(self, subject: bytes) -> SublistResult:
        """The subscriptions a message published on the literal ``subject`` reaches."""
        self.matches += 1
        if self.cache_enabled:
            result = self._cache.get(subject)
            if result is not None:
                self.cache_hits += 1
                return result
        tokens = subject.split(_SEP)
        # A subject with an empty token reaches nobody, and is not worth caching.
        if b"" in tokens:
            return _EMPTY
        result = SublistResult()
        _match_level(self._root, tokens, 0, result)
        if not result.psubs and not result.qsubs:
            result = _EMPTY
        if self.cache_enabled:
            cache = self._cache
            cache[subject] = result
            if len(cache) > CACHE_MAX:
                self._sweep()
        return result

    def has_interest(self, subject: bytes) -> bool:
        """Whether anything would receive a message on ``subject``; cheaper than match()."""
        if self.cache_enabled:
            result = self._cache.get(subject)
            if result is not None:
                # Counted as a hit but not as a match, as in Go.
                self.cache_hits += 1
                return bool(result.psubs or result.qsubs)
        tokens = subject.split(_SEP)
        if b"" in tokens:
            return False
        return _any_level(self._root, tokens, 0)

    def cache_count(self) -> int:
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()

    def all_subscriptions(self) -> list:
        out: list = []
        _collect(self._root, out)
        return out

    def num_levels(self) -> int:
        """Depth of the trie (Go's numLevels); 0 when empty."""
        return _depth(self._root, 0)

    def stats(self) -> dict:
        """Counters under Go's /subsz names (SublistStats)."""
        total = most = 0
        for result in self._cache.values():
            fanout = len(result.psubs) + len(result.qsubs)
            total += fanout
            if fanout > most:
                most = fanout
        entries = len(self._cache)
        return {
            "num_subscriptions": self.count,
            "num_cache": entries,
            "num_inserts": self.inserts,
            "num_removes": self.removes,
            "num_matches": self.matches,
            "cache_hit_rate": self.cache_hits / self.matches if self.matches else 0.0,
            "max_fanout": most,
            "avg_fanout": total / entries if total else 0.0,
        }

    # -- internals ----------------------------------------------------------------------

    def _remove(self, sub: Subscription) -> bool:
        subject = sub.subject
        if not isinstance(subject, bytes):
            return False
        tokens = subject.split(_SEP)
        last = len(tokens) - 1
        path = []
        level = self._root
        node = None
        for i, token in enumerate(tokens):
            if not token or (token == _FWC and i != last) or level is None:
                return False
            node = level.child(token)
            if node is None:
                return False
            path.append((level, node, token))
            level = node.next

        queue = sub.queue
        if queue is None:
            if sub not in node.psubs:
                return False
            del node.psubs[sub]
        else:
            members = node.qsubs.get(queue) if node.qsubs else None
            if members is None or sub not in members:
                return False
            del members[sub]
            if not members:
                del node.qsubs[queue]

        self.count -= 1
        self.removes += 1
        # Prune from the leaf up; a node that stays keeps all its ancestors.
        for i in range(len(path) - 1, -1, -1):
            level, node, token = path[i]
            if not node.is_empty():
                break
            level.prune(node, token)
            if i and level.is_empty():
                path[i - 1][1].next = None
        return True

    def _add_to_cache(self, subject: bytes, sub: Subscription) -> None:
        # Go's addToCache. Maintained even while caching is off, so turning it back on
        # can never expose a stale entry.
        cache = self._cache
        if not cache or subject is None:
            return
        if subject_is_literal(subject):
            result = cache.get(subject)
            if result is not None:
                cache[subject] = _with_sub(result, sub)
            return
        for key in [key for key in cache if match_literal(key, subject)]:
            cache[key] = _with_sub(cache[key], sub)

    def _remove_from_cache(self, subject: bytes) -> None:
        # Go's removeFromCache: drop, do not rebuild; the next match recomputes.
        cache = self._cache
        if not cache or subject is None:
            return
        if subject_is_literal(subject):
            cache.pop(subject, None)
            return
        for key in [key for key in cache if match_literal(key, subject)]:
            del cache[key]

    def _sweep(self) -> None:
        # Dicts keep insertion order, so this keeps the newest entries.
        cache = self._cache
        for key in list(cache)[: len(cache) - CACHE_SWEEP]:
            del cache[key]


# ---------------------------------------------------------------------------------------
# Subject helpers (Go's functions of the same names in sublist.go)

def is_valid_subject(subject: bytes, check_runes: bool = False) -> bool:
    """Go's isValidSubject: no empty token, no whitespace, ``>`` only as the last token.

    With ``check_runes``, NUL bytes and anything that is not clean UTF-8 (including
    U+FFFD itself, as Go sees it) are rejected too, as the filestore does.
    """
    if not subject:
        return False
    if check_runes:
        if b"\x00" in subject:
            return False
        try:
            if "\ufffd" in subject.decode("utf-8"):
                return False
        except UnicodeDecodeError:
            return False
    if _WHITESPACE.search(subject):
        return False
    tokens = subject.split(_SEP)
    return b"" not in tokens and _FWC not in tokens[:-1]


def is_valid_literal_subject(subject: bytes) -> bool:
    """A valid subject without wildcard tokens (what may be published to)."""
    return is_valid_subject(subject) and subject_is_literal(subject)


def is_valid_publish_subject(subject: bytes) -> bool:
    """Go's IsValidPublishSubject."""
    return is_valid_subject(subject) and subject_is_literal(subject)


def is_valid_queue(queue: bytes) -> bool:
    """A queue group name: non-empty, no whitespace (it is one protocol argument)."""
    return bool(queue) and not _WHITESPACE.search(queue)


def subject_is_literal(subject: bytes) -> bool:
    """Go's subjectIsLiteral: no ``*`` or ``>`` token; validity is not checked."""
    tokens = subject.split(_SEP)
    return _PWC not in tokens and _FWC not in tokens


def match_literal(literal: bytes, pattern: bytes) -> bool:
    """Go's matchLiteral: whether the literal subject matches the (wildcard) pattern.

    Wildcard characters count only as whole tokens, and ``>`` only at the end. Go walks
    bytes; this walks tokens and reproduces its edge cases with empty tokens: a final
    ``*`` or ``>`` never matches an empty remainder.
    """
    lits = literal.split(_SEP)
    pats = pattern.split(_SEP)
    last = len(pats) - 1
    if pats[last] == _FWC:
        if len(lits) < len(pats) or (len(lits) == len(pats) and not lits[last]):
            return False
    elif len(lits) != len(pats):
        return False
    for i in range(last):
        if pats[i] != _PWC and pats[i] != lits[i]:
            return False
    if pats[last] == _PWC:
        return bool(lits[last])
    return pats[last] == _FWC or pats[last] == lits[last]


def _analyze(tokens: list) -> tuple[bool, bool]:
    return _PWC in tokens, _FWC in tokens


def _tokens_can_match(t1: bytes, t2: bytes) -> bool:
    # As Go, only the first byte is looked at: a token like "*x" counts as a wildcard.
    if not t1 or not t2:
        return False
    if t1[:1] in (_PWC, _FWC) or t2[:1] in (_PWC, _FWC):
        return True
    return t1 == t2


def subjects_collide(subj1: bytes, subj2: bytes) -> bool:
    """Go's SubjectsCollide: could one literal subject match both?"""
    if subj1 == subj2:
        return True
    toks1 = subj1.split(_SEP)
    toks2 = subj2.split(_SEP)
    pwc1, fwc1 = _analyze(toks1)
    pwc2, fwc2 = _analyze(toks2)
    lit1 = not (pwc1 or fwc1)
    lit2 = not (pwc2 or fwc2)
    if lit1 and lit2:
        return False
    if lit1:
        return _is_subset_match_tokens(toks1, toks2)
    if lit2:
        return _is_subset_match_tokens(toks2, toks1)
    len1, len2 = len(toks1), len(toks2)
    if len1 != len2:
        # Only a '>' can make up for missing tokens, and only on the shorter side.
        if (len1 < len2 and not fwc1) or (len2 < len1 and not fwc2):
            return False
    for t1, t2 in zip(toks1, toks2):
        if not _tokens_can_match(t1, t2):
            return False
    return True


def _is_subset_match_tokens(tokens: list, test: list) -> bool:
    # Go's isSubsetMatchTokenized, including its first-byte test of the test token.
    for i, t2 in enumerate(test):
        if i >= len(tokens) or not t2:
            return False
        if t2 == _FWC:
            return True
        t1 = tokens[i]
        if not t1 or t1 == _FWC:
            return False
        if t1 == _PWC:
            if t2 != _PWC:
                return False
            continue
        if t2[:1] != _PWC and t1 != t2:
            return False
    return len(tokens) == len(test)


def is_subset_match(subject: bytes, test: bytes) -> bool:
    """Go's subjectIsSubsetMatch: is every subject ``subject`` matches matched by ``test``?"""
    return _is_subset_match_tokens(subject.split(_SEP), test.split(_SEP))


def num_tokens(subject: bytes) -> int:
    """Go's numTokens: 0 for the empty subject."""
    return subject.count(_SEP) + 1 if subject else 0
