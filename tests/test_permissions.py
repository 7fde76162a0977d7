"""Permission matching (natsx.auth.permissions) and the core's permission hooks, both twins.

The matching rules are server/client.go canSubscribeInternal, checkDenySub, queueMatches and
pubAllowedFullCheck; the hook tests drive the compiled and the pure core the way a worker
does, with ``perm_pub``, ``perm_deliver`` and ``perm_replies`` installed.
"""
from __future__ import annotations

import time

import pytest

from natsx._speedups import load
from natsx.auth.nkeys import PREFIX_BYTE_USER, KeyPair
from natsx.auth.permissions import (
    PermissionSet,
    Permissions,
    ResponsePermission,
    SubjectPermission,
    check_subject_list,
)
from natsx.auth.users import Authenticator, NkeyUser, User, compare_passwords
from natsx.server.options import Options


def pset(pub=None, sub=None, resp=None) -> PermissionSet:
    return PermissionSet(Permissions(pub, sub, resp))


# ---------------------------------------------------------------------------- publish

def test_publish_allow_and_deny():
    p = pset(pub=SubjectPermission(("foo.>", "bar"), ("foo.secret",))).publish
    assert p.allowed(b"foo.a") and p.allowed(b"foo.a.b") and p.allowed(b"bar")
    assert not p.allowed(b"foo.secret") and not p.allowed(b"baz") and not p.allowed(b"foo")


def test_publish_deny_only_allows_everything_else():
    p = pset(pub=SubjectPermission(None, ("$SYS.>",))).publish
    assert p.allowed(b"anything") and not p.allowed(b"$SYS.REQ.X")


def test_no_publish_restriction_means_no_hook():
    assert pset(sub=SubjectPermission(("a",))).publish is None


def test_allow_responses_turns_off_the_blanket_publish_allow():
    p = pset(resp=ResponsePermission())
    assert p.publish is not None and not p.publish.allowed(b"anything")


# ---------------------------------------------------------------------------- subscribe

@pytest.mark.parametrize("subject, queue, ok", [
    (b"foo.a", None, True),
    (b"foo.*", None, True),      # a wildcard allow entry covers the same wildcard
    (b"foo.>", None, True),      # Go's match: "*" in the list matches the ">" token too
    (b"foo.a.b", None, False),
    (b"grp.a", b"q1", True),
    (b"grp.a", b"q3", False),
    (b"grp.a", None, False),     # a queue-only entry does not allow a plain subscription
    (b"grp.x", b"q1", True),
    (b"grp.x", b"q2", False),
    (b"v.a", b"v.1", True),      # wildcard queue names match as subjects
    (b"v.a", b"w.1", False),
    (b"foo.secret", None, False),
    (b"bar", b"any", True),      # a plain entry allows any queue
])
def test_subscribe_rules(subject, queue, ok):
    p = pset(sub=SubjectPermission(("foo.*", "bar", "grp.* q1", "grp.x q2", "v.* v.*"),
                                   ("foo.secret", "grp.x q2")))
    assert p.can_subscribe(subject, queue) is ok


def test_deliver_filter_for_wildcards_and_queues_overlapping_a_deny():
    p = pset(sub=SubjectPermission(None, ("foo.secret", "jobs.x q2")))
    assert p.deliver_filter_needed(b"foo.*", None)
    assert p.deliver_filter_needed(b">", None)
    assert not p.deliver_filter_needed(b"foo.open", None)
    assert not p.deliver_filter_needed(b"bar.*", None)
    assert p.deliver_filter_needed(b"jobs.x", b"q2")
    d = p.deliver
    assert not d.allowed(b"foo.secret", None) and d.allowed(b"foo.open", None)
    assert not d.allowed(b"jobs.x", b"q2") and d.allowed(b"jobs.x", b"q1")
    assert d.allowed(b"jobs.x", None)


@pytest.mark.parametrize("entries, queue, message", [
    (["foo bar"], False, 'subject "foo bar" is not a valid subject'),
    (["foo bar baz"], True, 'subject "foo bar baz" is not a valid subject'),
    (["foo. q"], True, 'subject "foo." is not a valid subject'),
    (["foo q.."], True, 'queue "q.." is not a valid queue'),
])
def test_subject_lists_are_validated(entries, queue, message):
    with pytest.raises(ValueError, match=message):
        check_subject_list(entries, queue)


# ---------------------------------------------------------------------------- responses

def test_response_tracker_counts_and_expires():
    p = pset(resp=ResponsePermission(max_msgs=2, expires=0.2))
    t = p.new_response_tracker()
    assert not t.allowed(b"_INBOX.1")
    t.add(b"_INBOX.1")
    assert t.allowed(b"_INBOX.1") and t.allowed(b"_INBOX.1") and not t.allowed(b"_INBOX.1")
    t.add(b"_INBOX.2")
    time.sleep(0.25)
    assert not t.allowed(b"_INBOX.2")


def test_response_tracker_unlimited():
    t = pset(resp=ResponsePermission(max_msgs=-1, expires=-1)).new_response_tracker()
    t.add(b"r")
    assert all(t.allowed(b"r") for _ in range(10))


def test_replies_already_allowed_are_not_tracked():
    t = pset(pub=SubjectPermission(("_INBOX.>",)), resp=ResponsePermission()).new_response_tracker()
    t.add(b"_INBOX.x")
    assert len(t) == 0


# ---------------------------------------------------------------------------- users

def test_password_comparison():
    import bcrypt

    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(4, prefix=b"2a")).decode()
    assert compare_passwords(h, "pw") and compare_passwords(h, "pw")   # second: remembered
    assert not compare_passwords(h, "px") and not compare_passwords(h, h)
    assert compare_passwords("plain", "plain") and not compare_passwords("plain", "plainer")


class _Conn:
    def __init__(self, nonce: str = "") -> None:
        self.nonce = nonce


def test_authenticator_order_and_no_auth_user():
    key = KeyPair.create(PREFIX_BYTE_USER)
    perms = Permissions(SubjectPermission(("a",)))
    o = Options(users=[User("alice", "pw", perms), User("guest", "")],
                nkeys=[NkeyUser(key.public_key)], no_auth_user="guest")
    auth = Authenticator(o)
    assert auth.required and auth.nonce_required
    assert auth.check({"user": "alice", "pass": "pw"}, _Conn()).permissions == perms
    assert auth.check({"user": "alice", "pass": "no"}, _Conn()) is None
    assert auth.check({}, _Conn()).name == "guest"
    nonce = "abcdefghijklmno"
    sig = __import__("base64").urlsafe_b64encode(key.sign(nonce.encode())).decode().rstrip("=")
    assert auth.check({"nkey": key.public_key, "sig": sig}, _Conn(nonce)).name == key.public_key
    assert auth.check({"nkey": key.public_key, "sig": sig}, _Conn("other-nonce-xyz")) is None


def test_connection_types_restrict_users():
    o = Options(users=[User("ws", "pw", None, frozenset({"WEBSOCKET"})),
                       User("std", "pw", None, frozenset({"STANDARD"}))])
    auth = Authenticator(o)
    assert auth.check({"user": "ws", "pass": "pw"}, _Conn()) is None
    assert auth.check({"user": "std", "pass": "pw"}, _Conn()) is not None


# ---------------------------------------------------------------------------- core hooks

@pytest.fixture
def sublist_mod(core):
    return load("sublist", pure=core.__name__.endswith("_py"))


def client(core, router, sl, cid):
    c = core.Client(cid, router, sl)
    c.verbose = False
    c.pedantic = False
    return c


def subscribe(sublist_mod, sl, c, subject, sid, queue=None):
    sub = sublist_mod.Subscription(subject, sid, queue, c)
    sl.insert(sub)
    c.subs[sid] = sub
    return sub


def publish(c, data: bytes) -> None:
    c.feed(data)
    assert c.next_event() is None


def test_core_publish_hook_and_its_cache(core, sublist_mod):
    router, sl = core.Router(1), sublist_mod.Sublist()
    pub = client(core, router, sl, 1)
    sink = client(core, router, sl, 2)
    subscribe(sublist_mod, sl, sink, b">", b"1")
    p = pset(pub=SubjectPermission(("ok.>",)))
    pub.perm_pub = p.publish
    publish(pub, b"PUB ok.1 1\r\na\r\nPUB no 1\r\nb\r\nPUB no 1\r\nc\r\n")
    assert sink.take_output() == b"MSG ok.1 1 1\r\na\r\n"
    assert pub.take_output() == (b"-ERR 'Permissions Violation for Publish to \"no\"'\r\n" * 2)
    # New permissions: the cached answers go with reset_match_memo.
    pub.perm_pub = pset(pub=SubjectPermission(("no",))).publish
    pub.reset_match_memo()
    publish(pub, b"PUB no 1\r\nd\r\nPUB ok.1 1\r\ne\r\n")
    assert sink.take_output() == b"MSG no 1 1\r\nd\r\n"


def test_core_deliver_hook(core, sublist_mod):
    router, sl = core.Router(1), sublist_mod.Sublist()
    pub = client(core, router, sl, 1)
    sink = client(core, router, sl, 2)
    subscribe(sublist_mod, sl, sink, b"foo.*", b"7")
    sink.perm_deliver = pset(sub=SubjectPermission(None, ("foo.secret",))).deliver
    publish(pub, b"PUB foo.secret 1\r\nx\r\nPUB foo.open 1\r\ny\r\n")
    assert sink.take_output() == b"MSG foo.open 7 1\r\ny\r\n"


def test_core_reply_hook_allows_counted_responses(core, sublist_mod):
    router, sl = core.Router(1), sublist_mod.Sublist()
    requester = client(core, router, sl, 1)
    responder = client(core, router, sl, 2)
    subscribe(sublist_mod, sl, responder, b"svc", b"1")
    subscribe(sublist_mod, sl, requester, b"inbox.>", b"9")
    p = pset(resp=ResponsePermission(max_msgs=1))
    responder.perm_pub = p.publish
    responder.perm_replies = p.new_response_tracker()
    publish(requester, b"PUB svc inbox.1 1\r\nq\r\n")
    assert responder.take_output() == b"MSG svc 1 inbox.1 1\r\nq\r\n"
    # The first answer passes; the same subject again is neither cached nor memoised.
    publish(responder, b"PUB inbox.1 1\r\na\r\nPUB inbox.1 1\r\nb\r\nPUB inbox.2 1\r\nc\r\n")
    assert requester.take_output() == b"MSG inbox.1 9 1\r\na\r\n"
    assert responder.take_output() == (b"-ERR 'Permissions Violation for Publish to \"inbox.1\"'\r\n"
                                       b"-ERR 'Permissions Violation for Publish to \"inbox.2\"'\r\n")
