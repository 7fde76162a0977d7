"""Publish and subscribe permissions of a user, enforced as the Go server enforces them.

Theory of operation
-------------------
``Permissions`` is what the config file says (server/auth.go ``Permissions``): for publish
and for subscribe an optional allow list and a deny list, plus ``allow_responses``. It is a
frozen value, so a reload can compare the old and the new one.

``PermissionSet`` is its compiled form, built once per ``Permissions`` and shared by every
connection of the user (server/client.go ``setPermissions`` builds one per client; the
sublists are immutable after construction here, so sharing is safe). Each list is a small
sublist, as in Go, so wildcards in the list and in the subject match with the same trie
rules as message routing:

* publish: allowed when the allow list (if any) matches and the deny list does not. The
  compiled core asks ``PermissionSet.publish.allowed(subject)`` once per distinct subject
  and caches the answer (``core.perm_pub``).
* subscribe: the same on the SUB subject, where a ``"subject queue"`` entry allows or denies
  only that queue group (``canSubscribeInternal``).
* deliveries: a deny entry must also hold back messages that reach a wildcard (or queue)
  subscription the allow list let through — ``SUB foo.*`` must not deliver ``foo.secret``
  when ``foo.secret`` is denied. ``deliver_filter_needed`` says when a subscription can
  overlap a deny entry; the server then installs ``PermissionSet.deliver`` as the core's
  ``perm_deliver`` hook (``loadMsgDenyFilterIfNeeded`` / ``checkDenySub``).
* responses: ``allow_responses`` lets a client publish to the reply subject of a request it
  received, at most ``max_msgs`` times within ``expires``. That state is per connection
  (``ResponseTracker``, the core's ``perm_replies`` hook): the core records the reply of
  every message it delivers to the client and consults the tracker when the static publish
  check says no, without caching that answer (``pubAllowedFullCheck``).

Costs: a permission check is one sublist match with that sublist's own result cache; the
core's per-subject cache means a steady publisher pays it once per subject.
"""
from __future__ import annotations

import time

import attrs

from natsx import sublist as _sl

# Go: DEFAULT_ALLOW_RESPONSE_MAX_MSGS, DEFAULT_ALLOW_RESPONSE_EXPIRATION.
DEFAULT_RESPONSE_MAX_MSGS = 1
DEFAULT_RESPONSE_EXPIRES = 120.0
# Go: replyPermLimit, replyPruneTime, maxDenyPermCacheSize.
REPLY_PRUNE_COUNT = 4096
REPLY_PRUNE_INTERVAL = 1.0
DENY_CACHE_MAX = 4096
# A queue group reserved for the server's own services (Go: sysGroup).
SYS_QUEUE_GROUP = b"_sys_"


@attrs.frozen
class SubjectPermission:
    """One direction's lists. ``allow`` None means no allow list (everything allowed)."""

    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()


@attrs.frozen
class ResponsePermission:
    """``allow_responses``: replies per request and how long a reply subject stays open.

    A negative value means unlimited, as in Go.
    """

    max_msgs: int = DEFAULT_RESPONSE_MAX_MSGS
    expires: float = DEFAULT_RESPONSE_EXPIRES


@attrs.frozen
class Permissions:
    publish: SubjectPermission | None = None
    subscribe: SubjectPermission | None = None
    response: ResponsePermission | None = None

    def effective(self) -> "Permissions":
        """Go's validateResponsePermissions: ``allow_responses`` turns off the blanket
        publish allow, so such a user may publish only where an allow entry says so."""
        if self.response is None:
            return self
        pub = self.publish or SubjectPermission()
        if pub.allow is None:
            pub = attrs.evolve(pub, allow=())
        return attrs.evolve(self, publish=pub)


def split_subject_queue(entry: str) -> tuple[bytes, bytes | None]:
    """``"subject"`` or ``"subject queue"`` (Go: splitSubjectQueue)."""
    parts = entry.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"invalid subject-queue {entry!r}")
    subject = parts[0].encode()
    queue = parts[1].encode() if len(parts) == 2 else None
    if not _sl.is_valid_subject(subject) or (queue is not None and not _sl.is_valid_subject(queue)):
        raise ValueError(f"invalid subject-queue {entry!r}")
    return subject, queue


def check_subject_list(entries, allow_queue: bool) -> None:
    """Validates permission subjects with Go's error texts (checkPermSubjectArray).

    Raises:
        ValueError: an entry is not a subject (or, for subscribe, a subject and a queue).
    """
    for s in entries:
        if _sl.is_valid_subject(s.encode()):
            continue
        if not allow_queue:
            raise ValueError(f"subject {_goq(s)} is not a valid subject")
        parts = s.split()
        if len(parts) != 2:
            raise ValueError(f"subject {_goq(s)} is not a valid subject")
        if not _sl.is_valid_subject(parts[0].encode()):
            raise ValueError(f"subject {_goq(parts[0])} is not a valid subject")
        if not _sl.is_valid_subject(parts[1].encode()):
            raise ValueError(f"queue {_goq(parts[1])} is not a valid queue")


def _goq(s: str) -> str:
    # Go's %q for the printable strings that reach these messages.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _build(entries, with_queue: bool):
    sl = _sl.Sublist(cache=True)
    for entry in entries:
        if with_queue:
            subject, queue = split_subject_queue(entry)
        else:
            subject, queue = entry.encode(), None
        sl.insert(_sl.Subscription(subject, b"", queue, None))
    return sl


def queue_matches(queue: bytes, qsubs) -> bool:
    """Go's queueMatches: the group is named literally, or by a wildcard queue entry."""
    if not qsubs:
        return True
    for group in qsubs:
        name = group[0].queue
        if queue == name or (not _sl.subject_is_literal(name) and _sl.is_subset_match(queue, name)):
            return True
    return False


class PublishPermission:
    """The core's ``perm_pub`` hook."""

    __slots__ = ("_allow", "_deny")

    def __init__(self, allow, deny) -> None:
        self._allow = allow
        self._deny = deny

    def allowed(self, subject: bytes) -> bool:
        if self._allow is not None and not self._allow.has_interest(subject):
            return False
        return self._deny is None or not self._deny.has_interest(subject)


class DeliverFilter:
    """The core's ``perm_deliver`` hook: holds back deliveries of denied subjects."""

    __slots__ = ("_deny", "_cache")

    def __init__(self, deny) -> None:
        self._deny = deny
        self._cache: dict = {}

    def allowed(self, subject: bytes, queue: bytes | None) -> bool:
        key = (subject, queue)
        ok = self._cache.get(key)
        if ok is None:
            r = self._deny.match(subject)
            denied = bool(r.psubs)
            if not denied and queue and r.qsubs:
                denied = queue_matches(queue, r.qsubs)
            ok = not denied
            if len(self._cache) >= DENY_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = ok
        return ok


class PermissionSet:
    """The compiled form of one ``Permissions``; shared by the connections of its user."""

    def __init__(self, perms: Permissions) -> None:
        perms = perms.effective()
        self.permissions = perms
        pub = perms.publish
        pub_allow = pub_deny = None
        if pub is not None:
            if pub.allow is not None:
                pub_allow = _build(pub.allow, False)
            if pub.deny:
                pub_deny = _build(pub.deny, False)
        #: None when publishing is unrestricted: the core then skips the check entirely.
        self.publish = (PublishPermission(pub_allow, pub_deny)
                        if pub_allow is not None or pub_deny is not None else None)
        sub = perms.subscribe
        self._sub_allow = _build(sub.allow, True) if sub is not None and sub.allow else None
        self._sub_deny = _build(sub.deny, True) if sub is not None and sub.deny else None
        self._deny_entries = ([split_subject_queue(e) for e in sub.deny]
                              if sub is not None and sub.deny else [])
        self.deliver = DeliverFilter(self._sub_deny) if self._sub_deny is not None else None
        self.response = perms.response

    def can_subscribe(self, subject: bytes, queue: bytes | None = None) -> bool:
        """Go's canSubscribeInternal for a client connection."""
        allowed = True
        if self._sub_allow is not None:
            r = self._sub_allow.match(subject)
            allowed = bool(r.psubs)
            if queue and r.qsubs:
                allowed = queue_matches(queue, r.qsubs)
        if allowed and self._sub_deny is not None:
            r = self._sub_deny.match(subject)
            allowed = not r.psubs
            if allowed and queue and r.qsubs:
                allowed = not queue_matches(queue, r.qsubs)
        return allowed

    def deliver_filter_needed(self, subject: bytes, queue: bytes | None) -> bool:
        """True when this subscription may receive a subject the deny list names
        (Go: loadMsgDenyFilterIfNeeded)."""
        if self.deliver is None:
            return False
        if not queue and _sl.subject_is_literal(subject):
            return False
        return any(_sl.subjects_collide(deny_subject, subject)
                   for deny_subject, _ in self._deny_entries)

    def new_response_tracker(self) -> "ResponseTracker | None":
        if self.response is None:
            return None
        return ResponseTracker(self.response, self.publish)


class ResponseTracker:
    """Reply subjects a client may answer (the core's ``perm_replies`` hook); per connection."""

    __slots__ = ("_max", "_expires", "_pub", "_replies", "_since_prune", "_last_prune")

    def __init__(self, perm: ResponsePermission, publish: PublishPermission | None) -> None:
        self._max = perm.max_msgs
        self._expires = perm.expires
        self._pub = publish
        self._replies: dict[bytes, list] = {}
        self._since_prune = 0
        self._last_prune = time.monotonic()

    def add(self, reply: bytes) -> None:
        """A message with this reply subject was delivered to the client."""
        if self._pub is None or self._pub.allowed(reply):
            return  # publishing there is allowed anyway: nothing to track
        now = time.monotonic()
        self._replies[reply] = [now, 0]
        self._since_prune += 1
        if self._since_prune > REPLY_PRUNE_COUNT or now - self._last_prune > REPLY_PRUNE_INTERVAL:
            self._prune(now)

    def allowed(self, subject: bytes) -> bool:
        """May the client publish to ``subject`` as a response? Counts the response."""
        entry = self._replies.get(subject)
        if entry is None:
            return False
        entry[1] += 1
        if self._max > 0 and entry[1] > self._max:
            del self._replies[subject]
            return False
        if self._expires > 0 and time.monotonic() - entry[0] > self._expires:
            del self._replies[subject]
            return False
        return True

    def _prune(self, now: float) -> None:
        mm, ttl = self._max, self._expires
        for reply, (t, n) in list(self._replies.items()):
            if (mm > 0 and n >= mm) or (ttl > 0 and now - t > ttl):
                del self._replies[reply]
        self._since_prune = 0
        self._last_prune = now

    def __len__(self) -> int:
        return len(self._replies)
