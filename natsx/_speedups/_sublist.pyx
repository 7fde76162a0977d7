# cython: language_level=3, boundscheck=False, wraparound=False
"""The sublist: which subscriptions a published subject reaches (compiled twin).

Theory of operation
-------------------
This is the hot-path twin of ``sublist_py.py``: same names, same behaviour, with the trie,
the results and the cache typed so that a cache hit costs no Python-level work. Both follow
the Go server's ``server/sublist.go``.

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

What it costs. A hit is a dict lookup. A miss splits the subject (one bytes object per
token, the keys of the trie's dicts) and walks the trie, branching at every ``*`` node on
the way. Inserting or removing a literal subscription is a walk plus at most one cache
entry; a wildcard one also scans the cache (at most 1,024 entries, compared in C).
Nothing here is thread-safe: a sublist belongs to one worker's event loop.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

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

cdef enum:
    _CACHE_MAX = 1024
    _CACHE_SWEEP = 256
    _SEP = 46   # '.'
    _PWC = 42   # '*'
    _FWC = 62   # '>'

#: The cache is swept when it holds more results than this...
CACHE_MAX = _CACHE_MAX
#: ...down to this many, keeping the most recently added.
CACHE_SWEEP = _CACHE_SWEEP

cdef bytes _PWCS = b"*"
cdef bytes _FWCS = b">"
cdef bytes _SEPS = b"."


cdef class Subscription:
    """One subscription: what a SUB (or a remote worker's interest) put in the sublist.

    ``subject`` and ``queue`` must not change while the subscription is in a sublist;
    ``weight`` may, followed by ``Sublist.update_remote_qsub``.
    """

    def __init__(self, bytes subject, bytes sid, queue=None, client=None,
                 long long max_msgs=0):
        self.subject = subject
        self.sid = sid
        self.queue = queue
        self.client = client
        self.max_msgs = max_msgs
        self.delivered = 0
        self.weight = 1
        self.closed = False

    def __repr__(self):
        queue = f" queue={self.queue!r}" if self.queue is not None else ""
        return f"<Subscription {self.subject!r} sid={self.sid!r}{queue}>"


cdef class SublistResult:
    """What a subject matched: ``psubs`` (plain) and ``qsubs`` (one list per queue group)."""

    def __init__(self, list psubs=None, list qsubs=None):
        self.psubs = [] if psubs is None else psubs
        self.qsubs = [] if qsubs is None else qsubs

    def __repr__(self):
        return f"<SublistResult psubs={len(self.psubs)} qsubs={[len(g) for g in self.qsubs]}>"


# The shared result for subjects nothing matches (Go's emptyResult).
cdef SublistResult _EMPTY = SublistResult()


cdef inline SublistResult _new_result(list psubs, list qsubs):
    cdef SublistResult r = SublistResult.__new__(SublistResult)
    r.psubs = psubs
    r.qsubs = qsubs
    return r


# ---------------------------------------------------------------------------------------
# The trie

cdef class _Node:
    def __cinit__(self):
        self.psubs = {}

    cdef bint has_subs(self):
        return bool(self.psubs) or bool(self.qsubs)

    cdef bint is_empty(self):
        return (not self.psubs and not self.qsubs
                and (self.next is None or self.next.is_empty()))


cdef class _Level:
    def __cinit__(self):
        self.nodes = {}

    cdef bint is_empty(self):
        return not self.nodes and self.pwc is None and self.fwc is None

    cdef _Node child(self, bytes token):
        if PyBytes_GET_SIZE(token) == 1:
            if PyBytes_AS_STRING(token)[0] == _PWC:
                return self.pwc
            if PyBytes_AS_STRING(token)[0] == _FWC:
                return self.fwc
        return self.nodes.get(token)

    cdef _Node add_child(self, bytes token):
        cdef _Node node = _Node()
        if token == _PWCS:
            self.pwc = node
        elif token == _FWCS:
            self.fwc = node
        else:
            self.nodes[token] = node
        return node

    cdef prune(self, _Node node, bytes token):
        if node is self.fwc:
            self.fwc = None
        elif node is self.pwc:
            self.pwc = None
        else:
            del self.nodes[token]

    cdef list children(self):
        cdef list out = list(self.nodes.values())
        if self.pwc is not None:
            out.append(self.pwc)
        if self.fwc is not None:
            out.append(self.fwc)
        return out


cdef list _tokenize(bytes subject):
    # The subject's tokens, or None when one is empty (such a subject reaches nobody).
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(subject)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(subject)
    cdef Py_ssize_t i, start = 0
    cdef list tokens = []
    for i in range(n):
        if p[i] == _SEP:
            if i == start:
                return None
            tokens.append(PyBytes_FromStringAndSize(<const char*>p + start, i - start))
            start = i + 1
    if start >= n:
        return None
    tokens.append(subject if start == 0 else
                  PyBytes_FromStringAndSize(<const char*>p + start, n - start))
    return tokens


cdef list _find_group(list qsubs, object queue):
    # Linear, as Go's findQSlot: a subject rarely has more than a few queue groups.
    cdef list group
    for group in qsubs:
        if (<Subscription>group[0]).queue == queue:
            return group
    return None


cdef int _add_node(_Node node, SublistResult result) except -1:
    cdef Subscription sub
    cdef list group
    cdef int w
    if node.psubs:
        result.psubs.extend(node.psubs)
    if node.qsubs:
        for queue, members in node.qsubs.items():
            group = _find_group(result.qsubs, queue)
            if group is None:
                group = []
                result.qsubs.append(group)
            for sub in <dict>members:
                w = sub.weight
                if w > 1:
                    group.extend([sub] * w)
                else:
                    group.append(sub)
    return 0


cdef int _match_level(_Level level, list tokens, Py_ssize_t i, SublistResult result) except -1:
    # Go's matchLevel: walk the literal path, collecting every '>' met on the way and
    # branching into every '*'; the '*' and literal nodes of the last level match too.
    cdef _Node pwc = None
    cdef _Node node = None
    cdef PyObject* found
    cdef Py_ssize_t n = len(tokens)
    while i < n:
        if level is None:
            return 0
        if level.fwc is not None:
            _add_node(level.fwc, result)
        pwc = level.pwc
        if pwc is not None:
            _match_level(pwc.next, tokens, i + 1, result)
        found = PyDict_GetItem(level.nodes, tokens[i])
        if found is NULL:
            node = None
            level = None
        else:
            node = <_Node>found
            level = node.next
        i += 1
    if node is not None:
        _add_node(node, result)
    if pwc is not None:
        _add_node(pwc, result)
    return 0


cdef bint _any_level(_Level level, list tokens, Py_ssize_t i) except -1:
    # Go's matchLevelForAny: _match_level that stops at the first subscription.
    cdef _Node pwc = None
    cdef _Node node = None
    cdef PyObject* found
    cdef Py_ssize_t n = len(tokens)
    while i < n:
        if level is None:
            return False
        if level.fwc is not None and level.fwc.has_subs():
            return True
        pwc = level.pwc
        if pwc is not None and _any_level(pwc.next, tokens, i + 1):
            return True
        found = PyDict_GetItem(level.nodes, tokens[i])
        if found is NULL:
            node = None
            level = None
        else:
            node = <_Node>found
            level = node.next
        i += 1
    if node is not None and node.has_subs():
        return True
    return pwc is not None and pwc.has_subs()


cdef _collect(_Level level, list out):
    cdef _Node node
    for node in level.children():
        out.extend(node.psubs)
        if node.qsubs:
            for members in node.qsubs.values():
                out.extend(members)
        if node.next is not None:
            _collect(node.next, out)


cdef int _depth(_Level level, int depth):
    # Go's visitLevel.
    cdef _Node node
    cdef int deepest
    if level is None or level.is_empty():
        return depth
    depth += 1
    deepest = depth
    for node in level.children():
        deepest = max(deepest, _depth(node.next, depth))
    return deepest


cdef SublistResult _with_sub(SublistResult result, Subscription sub):
    # Go's addSubToResult. A new snapshot; lists that do not change are shared, which is
    # safe because no snapshot is ever modified.
    cdef list qsubs, group, members
    cdef Py_ssize_t i
    if sub.queue is None:
        return _new_result(result.psubs + [sub], result.qsubs)
    members = [sub] * (sub.weight if sub.weight > 1 else 1)
    qsubs = list(result.qsubs)
    for i in range(len(qsubs)):
        group = qsubs[i]
        if (<Subscription>group[0]).queue == sub.queue:
            qsubs[i] = group + members
            break
    else:
        qsubs.append(members)
    return _new_result(result.psubs, qsubs)


cdef _sweep(dict cache):
    # Dicts keep insertion order, so this keeps the newest entries.
    for key in list(cache)[: len(cache) - _CACHE_SWEEP]:
        del cache[key]


# ---------------------------------------------------------------------------------------
# The sublist

cdef class Sublist:
    """Subscriptions by subject, with Go's bounded result cache.

    Args:
        cache: keep a result cache (Go's ``NewSublist(enableCache)``).
    """

    def __init__(self, bint cache=True):
        self._root = _Level()
        self._cache = {}
        self.cache_enabled = cache

    cpdef insert(self, Subscription sub):
        """Add ``sub``; adding one already present changes nothing.

        Raises:
            ValueError: the subject or queue name is invalid.
        """
        cdef _Level level = self._root
        cdef _Node node = None
        cdef dict members
        if sub is None:
            raise TypeError("insert() needs a Subscription")
        subject = sub.subject
        if subject is None or not _valid_subject(subject):
            raise ValueError(f"invalid subject {subject!r}")
        queue = sub.queue
        if queue is not None and (type(queue) is not bytes or not is_valid_queue(queue)):
            raise ValueError(f"invalid queue group {queue!r}")

        for token in subject.split(_SEPS):
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

    cpdef bint remove(self, Subscription sub):
        """Take ``sub`` out; False when it was not in (or its subject is invalid)."""
        if sub is None or not self._remove(sub):
            return False
        self._remove_from_cache(sub.subject)
        self.genid += 1
        return True

    def remove_batch(self, subs):
        """Remove many subscriptions (a closing connection's); returns how many were in.

        As Go's RemoveBatch, the cache is emptied once instead of being kept exact per
        subscription.
        """
        cdef Py_ssize_t removed = 0
        cdef Subscription sub
        for sub in subs:
            if sub is not None and self._remove(sub):
                removed += 1
        self._cache.clear()
        self.genid += 1
        return removed

    def update_remote_qsub(self, Subscription sub not None):
        """Make results reflect a new ``sub.weight`` (Go's UpdateRemoteQSub)."""
        self._remove_from_cache(sub.subject)
        self.genid += 1

    cpdef SublistResult match(self, bytes subject):
        """The subscriptions a message published on the literal ``subject`` reaches."""
        cdef PyObject* hit
        self.matches += 1
        if self.cache_enabled:
            hit = PyDict_GetItem(self._cache, subject)
            if hit is not NULL:
                self.cache_hits += 1
                return <SublistResult>hit
        return self._match_miss(subject)

    cdef SublistResult _match_miss(self, bytes subject):
        if subject is None:
            raise TypeError("match() needs a bytes subject")
        cdef list tokens = _tokenize(subject)
        # A subject with an empty token reaches nobody, and is not worth caching.
        if tokens is None:
            return _EMPTY
        cdef SublistResult result = _new_result([], [])
        _match_level(self._root, tokens, 0, result)
        if not result.psubs and not result.qsubs:
            result = _EMPTY
        if self.cache_enabled:
            self._cache[subject] = result
            if len(self._cache) > _CACHE_MAX:
                _sweep(self._cache)
        return result

    cpdef bint has_interest(self, bytes subject):
        """Whether anything would receive a message on ``subject``; cheaper than match()."""
        cdef PyObject* hit
        cdef SublistResult result
        if subject is None:
            raise TypeError("has_interest() needs a bytes subject")
        if self.cache_enabled:
            hit = PyDict_GetItem(self._cache, subject)
            if hit is not NULL:
                # Counted as a hit but not as a match, as in Go.
                self.cache_hits += 1
                result = <SublistResult>hit
                return bool(result.psubs) or bool(result.qsubs)
        cdef list tokens = _tokenize(subject)
        if tokens is None:
            return False
        return _any_level(self._root, tokens, 0)

    def cache_count(self):
        return len(self._cache)

    def clear_cache(self):
        self._cache.clear()

    def all_subscriptions(self):
        cdef list out = []
        _collect(self._root, out)
        return out

    def num_levels(self):
        """Depth of the trie (Go's numLevels); 0 when empty."""
        return _depth(self._root, 0)

    def stats(self):
        """Counters under Go's /subsz names (SublistStats)."""
        cdef Py_ssize_t total = 0, most = 0, fanout
        cdef SublistResult result
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
            "cache_hit_rate": <double>self.cache_hits / self.matches if self.matches else 0.0,
            "max_fanout": most,
            "avg_fanout": <double>total / entries if total else 0.0,
        }

    # -- internals ----------------------------------------------------------------------

    cdef bint _remove(self, Subscription sub) except -1:
        cdef _Level level = self._root
        cdef _Node node = None
        cdef list path = []
        cdef Py_ssize_t i, last
        cdef dict members
        subject = sub.subject
        if subject is None:
            return False
        tokens = subject.split(_SEPS)
        last = len(tokens) - 1
        for i in range(last + 1):
            token = tokens[i]
            if not token or (token == _FWCS and i != last) or level is None:
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
        for i in range(last, -1, -1):
            level, node, token = path[i]
            if not node.is_empty():
                break
            level.prune(node, token)
            if i and level.is_empty():
                (<_Node>path[i - 1][1]).next = None
        return True

    cdef int _add_to_cache(self, bytes subject, Subscription sub) except -1:
        # Go's addToCache. Maintained even while caching is off, so turning it back on
        # can never expose a stale entry.
        cdef dict cache = self._cache
        cdef PyObject* hit
        cdef bytes key
        if not cache or subject is None:
            return 0
        if _is_literal(subject):
            hit = PyDict_GetItem(cache, subject)
            if hit is not NULL:
                cache[subject] = _with_sub(<SublistResult>hit, sub)
            return 0
        for key in [key for key in cache if _matches(key, subject)]:
            cache[key] = _with_sub(<SublistResult>cache[key], sub)
        return 0

    cdef int _remove_from_cache(self, bytes subject) except -1:
        # Go's removeFromCache: drop, do not rebuild; the next match recomputes.
        cdef dict cache = self._cache
        cdef bytes key
        if not cache or subject is None:
            return 0
        if _is_literal(subject):
            cache.pop(subject, None)
            return 0
        for key in [key for key in cache if _matches(key, subject)]:
            del cache[key]
        return 0


# ---------------------------------------------------------------------------------------
# Subject helpers (Go's functions of the same names in sublist.go)

cdef inline bint _is_space(unsigned char c) noexcept:
    # Go's IsValidSubject rejects exactly these (not \v).
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 12


cdef bint _valid_subject(bytes subject) noexcept:
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(subject)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(subject)
    cdef Py_ssize_t i, start = 0
    cdef bint sfwc = False
    if n == 0:
        return False
    for i in range(n + 1):
        if i == n or p[i] == _SEP:
            if i == start or sfwc:
                return False
            if i - start == 1 and p[start] == _FWC:
                sfwc = True
            start = i + 1
        elif _is_space(p[i]):
            return False
    return True


cdef bint _is_literal(bytes subject) noexcept:
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(subject)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(subject)
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] == _PWC or p[i] == _FWC:
            if (i == 0 or p[i - 1] == _SEP) and (i + 1 == n or p[i + 1] == _SEP):
                return False
    return True


cdef bint _matches(bytes literal, bytes pattern) noexcept:
    # Go's matchLiteral, byte for byte (its edge cases with empty tokens included).
    cdef const unsigned char* lit = <const unsigned char*>PyBytes_AS_STRING(literal)
    cdef const unsigned char* pat = <const unsigned char*>PyBytes_AS_STRING(pattern)
    cdef Py_ssize_t ll = PyBytes_GET_SIZE(literal)
    cdef Py_ssize_t ls = PyBytes_GET_SIZE(pattern)
    cdef Py_ssize_t li = 0, i = 0
    while i < ls:
        if li >= ll:
            return False
        if pat[i] == _PWC:
            # A wildcard only when it is a whole token.
            if i == 0 or pat[i - 1] == _SEP:
                if i == ls - 1:
                    # Last token: the literal's rest must be one token.
                    while True:
                        if li >= ll:
                            return True
                        if lit[li] == _SEP:
                            return False
                        li += 1
                elif pat[i + 1] == _SEP:
                    while True:
                        if li >= ll:
                            return False
                        if lit[li] == _SEP:
                            break
                        li += 1
                    # Compare the separators below.
                    i += 1
        elif pat[i] == _FWC:
            if (i == 0 or pat[i - 1] == _SEP) and i == ls - 1:
                return True
        if pat[i] != lit[li]:
            return False
        li += 1
        i += 1
    return li >= ll


def is_valid_subject(bytes subject not None, bint check_runes=False):
    """Go's isValidSubject: no empty token, no whitespace, ``>`` only as the last token.

    With ``check_runes``, NUL bytes and anything that is not clean UTF-8 (including
    U+FFFD itself, as Go sees it) are rejected too, as the filestore does.
    """
    if check_runes:
        if b"\x00" in subject:
            return False
        try:
            if "\ufffd" in subject.decode("utf-8"):
                return False
        except UnicodeDecodeError:
            return False
    return _valid_subject(subject)


def is_valid_literal_subject(bytes subject not None):
    """A valid subject without wildcard tokens (what may be published to)."""
    return _valid_subject(subject) and _is_literal(subject)


def is_valid_publish_subject(bytes subject not None):
    """Go's IsValidPublishSubject."""
    return _valid_subject(subject) and _is_literal(subject)


def is_valid_queue(bytes queue not None):
    """A queue group name: non-empty, no whitespace (it is one protocol argument)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(queue)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(queue)
    if n == 0:
        return False
    for i in range(n):
        if _is_space(p[i]):
            return False
    return True


def subject_is_literal(bytes subject not None):
    """Go's subjectIsLiteral: no ``*`` or ``>`` token; validity is not checked."""
    return _is_literal(subject)


def match_literal(bytes literal not None, bytes pattern not None):
    """Go's matchLiteral: whether the literal subject matches the (wildcard) pattern.

    Wildcard characters count only as whole tokens, and ``>`` only at the end; a final
    ``*`` or ``>`` never matches an empty remainder.
    """
    return _matches(literal, pattern)


cdef bint _tokens_can_match(bytes t1, bytes t2):
    # As Go, only the first byte is looked at: a token like "*x" counts as a wildcard.
    cdef unsigned char c1, c2
    if not t1 or not t2:
        return False
    c1 = PyBytes_AS_STRING(t1)[0]
    c2 = PyBytes_AS_STRING(t2)[0]
    if c1 == _PWC or c2 == _PWC or c1 == _FWC or c2 == _FWC:
        return True
    return t1 == t2


def subjects_collide(bytes subj1 not None, bytes subj2 not None):
    """Go's SubjectsCollide: could one literal subject match both?"""
    cdef list toks1, toks2
    cdef Py_ssize_t len1, len2, i
    if subj1 == subj2:
        return True
    toks1 = subj1.split(_SEPS)
    toks2 = subj2.split(_SEPS)
    pwc1, fwc1 = _PWCS in toks1, _FWCS in toks1
    pwc2, fwc2 = _PWCS in toks2, _FWCS in toks2
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
    for i in range(min(len1, len2)):
        if not _tokens_can_match(toks1[i], toks2[i]):
            return False
    return True


cdef bint _is_subset_match_tokens(list tokens, list test):
    # Go's isSubsetMatchTokenized, including its first-byte test of the test token.
    cdef Py_ssize_t i
    cdef bytes t1, t2
    for i in range(len(test)):
        t2 = test[i]
        if i >= len(tokens) or not t2:
            return False
        if t2 == _FWCS:
            return True
        t1 = tokens[i]
        if not t1 or t1 == _FWCS:
            return False
        if t1 == _PWCS:
            if t2 != _PWCS:
                return False
            continue
        if PyBytes_AS_STRING(t2)[0] != _PWC and t1 != t2:
            return False
    return len(tokens) == len(test)


def is_subset_match(bytes subject not None, bytes test not None):
    """Go's subjectIsSubsetMatch: is every subject ``subject`` matches matched by ``test``?"""
    return _is_subset_match_tokens(subject.split(_SEPS), test.split(_SEPS))


def num_tokens(bytes subject not None):
    """Go's numTokens: 0 for the empty subject."""
    return subject.count(_SEPS) + 1 if subject else 0
