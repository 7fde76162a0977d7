"""Tests of the sublist, run against both twins (compiled and pure-Python).

Most tests are ports of server/sublist_test.go and are named after the Go test they mirror;
Go's pairs (TestSublistX / TestSublistXNoCache) are one test parametrized over ``cache``.
The property tests check ``match`` against a brute-force matcher over the live
subscriptions, with the cache on and off, while subscriptions come and go.
"""
from __future__ import annotations

import importlib
import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import natsx._speedups as speedups
from natsx._speedups import load

COMPILED_NAME = "natsx._speedups._sublist"


@pytest.fixture(scope="module", params=["pure", "compiled"])
def sl_mod(request):
    """The sublist module: each test runs once per twin."""
    if request.param == "pure":
        return load("sublist", pure=True)
    mod = load("sublist", pure=False)
    if mod.__name__ != COMPILED_NAME:
        pytest.skip("compiled sublist not built (test_compiled_twin_loaded reports it)")
    return mod


@pytest.fixture(params=[True, False], ids=["cache", "nocache"])
def sl(request, sl_mod):
    return sl_mod.Sublist(cache=request.param)


_sids = itertools.count(1)


def new_sub(mod, subject: str | bytes, queue: str | bytes | None = None, weight: int = 1):
    if isinstance(subject, str):
        subject = subject.encode()
    if isinstance(queue, str):
        queue = queue.encode()
    sub = mod.Subscription(subject, str(next(_sids)).encode(), queue)
    sub.weight = weight
    return sub


def find_group(result, queue: bytes) -> list:
    for group in result.qsubs:
        if group and group[0].queue == queue:
            return group
    raise AssertionError(f"no queue group {queue!r} in result")


def ids(subs) -> Counter:
    """A multiset of subscriptions by identity."""
    return Counter(id(s) for s in subs)


# ---------------------------------------------------------------------------------------
# The twins and the public package

def test_compiled_twin_loaded():
    # A silent fallback to the pure twin must never pass for the compiled one.
    if speedups.NO_EXTENSIONS:
        pytest.skip("NATSX_NO_EXTENSIONS is set")
    try:
        importlib.import_module(COMPILED_NAME)
    except ImportError as exc:
        pytest.fail(f"the compiled sublist did not import: {exc}")
    import natsx.sublist

    assert natsx.sublist.IMPLEMENTATION == COMPILED_NAME


def test_public_package_exports_each_name_once():
    import natsx.sublist as pkg

    assert len(pkg.__all__) == len(set(pkg.__all__))
    for name in pkg.__all__:
        assert hasattr(pkg, name), name
    for mod in (load("sublist", pure=True), load("sublist")):
        assert set(mod.__all__) <= set(pkg.__all__)
        assert mod.__all__ == load("sublist", pure=True).__all__


def test_subscription_defaults(sl_mod):
    sub = sl_mod.Subscription(b"foo", b"1")
    assert (sub.subject, sub.sid, sub.queue, sub.client, sub.max_msgs) == (b"foo", b"1", None, None, 0)
    assert (sub.weight, sub.delivered, sub.closed) == (1, 0, False)
    sub = sl_mod.Subscription(b"foo", b"2", queue=b"q", client="c", max_msgs=5)
    assert (sub.queue, sub.client, sub.max_msgs) == (b"q", "c", 5)


# ---------------------------------------------------------------------------------------
# Ports of sublist_test.go

def test_sublist_init(sl_mod):
    s = sl_mod.Sublist()
    assert s.count == 0
    assert s.cache_enabled
    assert not sl_mod.Sublist(cache=False).cache_enabled


def test_sublist_insert_count(sl_mod, sl):
    for subject in ("foo", "bar", "foo.bar"):
        sl.insert(new_sub(sl_mod, subject))
    assert sl.count == 3


def test_sublist_simple(sl_mod, sl):
    sub = new_sub(sl_mod, "foo")
    sl.insert(sub)
    assert sl.match(b"foo").psubs == [sub]


def test_sublist_simple_multi_tokens(sl_mod, sl):
    sub = new_sub(sl_mod, "foo.bar.baz")
    sl.insert(sub)
    assert sl.match(b"foo.bar.baz").psubs == [sub]


@pytest.mark.parametrize("wildcard", ["a.*.c", "a.b.*", "*.b.c", "*.*.*", "a.>", ">", "*.>", "a.*.>"])
def test_sublist_partial_wildcard(sl_mod, sl, wildcard):
    # TestSublistPartialWildcard, TestSublistPartialWildcardAtEnd and friends.
    lsub = new_sub(sl_mod, "a.b.c")
    wsub = new_sub(sl_mod, wildcard)
    sl.insert(lsub)
    sl.insert(wsub)
    assert ids(sl.match(b"a.b.c").psubs) == ids([lsub, wsub])


def test_sublist_full_wildcard(sl_mod, sl):
    lsub = new_sub(sl_mod, "a.b.c")
    fsub = new_sub(sl_mod, "a.>")
    sl.insert(lsub)
    sl.insert(fsub)
    assert ids(sl.match(b"a.b.c").psubs) == ids([lsub, fsub])
    assert sl.match(b"a.>").psubs == [fsub]


@pytest.mark.parametrize(
    "pattern, matching, not_matching",
    [
        ("*", ["a", "foo"], ["a.b", "a.b.c"]),
        (">", ["a", "a.b", "a.b.c"], []),
        ("*.b", ["a.b", "x.b"], ["a", "a.c", "a.b.c"]),
        ("a.*", ["a.b", "a.x"], ["a", "b.a", "a.b.c"]),
        ("a.*.c", ["a.b.c", "a.x.c"], ["a.b", "a.b.d", "a.b.c.d"]),
        ("*.*", ["a.b", "x.y"], ["a", "a.b.c"]),
        ("a.>", ["a.b", "a.b.c"], ["a", "b.a"]),
        ("*.>", ["a.b", "a.b.c"], ["a"]),
        ("a.*.>", ["a.b.c", "a.b.c.d"], ["a", "a.b"]),
        ("*.b.>", ["a.b.c", "x.b.c.d"], ["a.b", "a.c.d"]),
        ("*.*.*", ["a.b.c"], ["a.b", "a.b.c.d"]),
    ],
)
def test_sublist_match_wildcard_positions(sl_mod, sl, pattern, matching, not_matching):
    sub = new_sub(sl_mod, pattern)
    sl.insert(sub)
    for subject in matching:
        assert sl.match(subject.encode()).psubs == [sub], subject
        assert sl.has_interest(subject.encode()), subject
    for subject in not_matching:
        assert sl.match(subject.encode()).psubs == [], subject
        assert not sl.has_interest(subject.encode()), subject


def test_sublist_remove(sl_mod, sl):
    sub = new_sub(sl_mod, "a.b.c.d")
    sl.insert(sub)
    assert sl.count == 1
    assert len(sl.match(b"a.b.c.d").psubs) == 1
    assert not sl.remove(new_sub(sl_mod, "a.b.c"))
    assert sl.count == 1
    assert sl.remove(sub)
    assert sl.count == 0
    assert sl.match(b"a.b.c.d").psubs == []
    assert not sl.remove(sub)


def test_sublist_remove_wildcard(sl_mod, sl):
    sub = new_sub(sl_mod, "a.b.c.d")
    psub = new_sub(sl_mod, "a.b.*.d")
    fsub = new_sub(sl_mod, "a.b.>")
    for s in (sub, psub, fsub):
        sl.insert(s)
    assert sl.count == 3
    assert len(sl.match(b"a.b.c.d").psubs) == 3
    assert sl.remove(sub)
    assert sl.count == 2
    assert sl.remove(fsub)
    assert sl.count == 1
    assert sl.remove(psub)
    assert sl.count == 0
    assert sl.match(b"a.b.c.d").psubs == []


@pytest.mark.parametrize("subject", ["a.b.c.d.e.f", "a.b.*.d.e.>"])
def test_sublist_remove_cleanup(sl_mod, sl, subject):
    # TestSublistRemoveCleanup and TestSublistRemoveCleanupWildcards.
    sub = new_sub(sl_mod, subject)
    assert sl.num_levels() == 0
    sl.insert(sub)
    assert sl.num_levels() == len(subject.split("."))
    sl.remove(sub)
    assert sl.num_levels() == 0


def test_sublist_remove_cleanup_keeps_siblings(sl_mod, sl):
    short = new_sub(sl_mod, "a.b")
    deep = new_sub(sl_mod, "a.b.c.d")
    sl.insert(short)
    sl.insert(deep)
    assert sl.num_levels() == 4
    sl.remove(deep)
    assert sl.num_levels() == 2
    assert sl.match(b"a.b").psubs == [short]
    sl.remove(short)
    assert sl.num_levels() == 0


def test_sublist_remove_with_large_subs(sl_mod, sl):
    n = 512  # Go's plistMin * 2
    for _ in range(n):
        sl.insert(new_sub(sl_mod, "foo"))
    r = sl.match(b"foo")
    assert len(r.psubs) == n
    sl.remove(r.psubs[n // 2])
    sl.remove(r.psubs[0])
    sl.remove(r.psubs[-1])
    assert len(sl.match(b"foo").psubs) == n - 3


@pytest.mark.parametrize("subject", [".foo", "foo.", "foo..bar", "foo.bar..baz", "foo.>.bar", "", ".", "foo bar", "foo.\tx"])
def test_sublist_invalid_subjects_insert(sl_mod, sl, subject):
    with pytest.raises(ValueError):
        sl.insert(new_sub(sl_mod, subject))
    assert sl.count == 0
    assert sl.genid == 0


@pytest.mark.parametrize("queue", [b"", b"a b", b"a\tb", b"q\r\n"])
def test_sublist_invalid_queue_insert(sl_mod, sl, queue):
    with pytest.raises(ValueError):
        sl.insert(new_sub(sl_mod, "foo", queue))
    assert sl.count == 0


def test_sublist_no_cache_remove_batch(sl_mod):
    s = sl_mod.Sublist(cache=False)
    s.insert(new_sub(sl_mod, "foo"))
    sub = new_sub(sl_mod, "bar")
    s.insert(sub)
    assert s.remove_batch([sub]) == 1
    for _ in range(10):
        s.match(b"foo")
    assert not s.cache_enabled
    assert s.cache_count() == 0


def test_sublist_remove_batch_with_error(sl_mod, sl):
    sub1, sub2, sub3 = (new_sub(sl_mod, s) for s in ("foo", "bar", "baz"))
    for s in (sub1, sub2, sub3):
        sl.insert(s)
    for subject in ("foo", "bar", "baz"):
        sl.match(subject.encode())
    genid = sl.genid
    # A subscription that is not in does not stop the others from being removed.
    assert sl.remove_batch([new_sub(sl_mod, "not.inserted"), sub1, sub3]) == 2
    assert sl.genid > genid
    assert sl.count == 1
    assert sl.match(b"bar").psubs == [sub2]
    assert sl.match(b"foo").psubs == []
    assert sl.match(b"baz").psubs == []


def test_sublist_cache(sl_mod):
    s = sl_mod.Sublist()
    subject = b"a.b.c.d"
    sub = new_sub(sl_mod, subject)
    psub = new_sub(sl_mod, "a.b.*.d")
    fsub = new_sub(sl_mod, "a.b.>")
    s.insert(sub)
    assert len(s.match(subject).psubs) == 1
    s.insert(psub)
    s.insert(fsub)
    assert s.count == 3
    assert len(s.match(subject).psubs) == 3
    s.remove(sub)
    assert s.count == 2
    s.remove(fsub)
    assert s.count == 1
    s.remove(psub)
    assert s.count == 0
    # Every entry those subscriptions were in has been dropped.
    assert s.cache_count() == 0
    assert s.match(subject).psubs == []

    for i in range(2 * sl_mod.CACHE_MAX):
        s.match(f"foo-{i}\n".encode())
    assert s.cache_count() <= sl_mod.CACHE_MAX

    # Adding to a wildcard updates the cached results it matches.
    s = sl_mod.Sublist()
    s.insert(new_sub(sl_mod, "foo.*"))
    s.insert(new_sub(sl_mod, "foo.bar"))
    assert len(s.match(b"foo.baz").psubs) == 1
    assert len(s.match(b"foo.bar").psubs) == 2
    s.insert(new_sub(sl_mod, "foo.>"))
    assert len(s.match(b"foo.bar").psubs) == 3
    assert len(s.match(b"foo.baz").psubs) == 2
    assert s.cache_hits == 2


def test_sublist_cache_sweep(sl_mod):
    s = sl_mod.Sublist()
    sub = new_sub(sl_mod, "s.>")
    s.insert(sub)
    for i in range(sl_mod.CACHE_MAX):
        s.match(b"s.%d" % i)
    assert s.cache_count() == sl_mod.CACHE_MAX
    # One more than the maximum sweeps down to CACHE_SWEEP, keeping the newest.
    s.match(b"s.last")
    assert s.cache_count() == sl_mod.CACHE_SWEEP
    hits = s.cache_hits
    s.match(b"s.last")
    s.match(b"s.%d" % (sl_mod.CACHE_MAX - 1))
    assert s.cache_hits == hits + 2
    s.match(b"s.0")
    assert s.cache_hits == hits + 2
    # What survived the sweep is still kept exact.
    s.remove(sub)
    assert s.cache_count() == 0
    assert s.match(b"s.last").psubs == []


def test_sublist_cache_results_are_snapshots(sl_mod):
    s = sl_mod.Sublist()
    a = new_sub(sl_mod, "foo.bar")
    s.insert(a)
    r1 = s.match(b"foo.bar")
    assert s.match(b"foo.bar") is r1
    w = new_sub(sl_mod, "foo.*")
    q = new_sub(sl_mod, "foo.bar", "q")
    s.insert(w)
    s.insert(q)
    r2 = s.match(b"foo.bar")
    assert r2 is not r1
    assert r1.psubs == [a] and r1.qsubs == []
    assert ids(r2.psubs) == ids([a, w]) and r2.qsubs == [[q]]
    s.remove(a)
    assert ids(r2.psubs) == ids([a, w])
    assert s.match(b"foo.bar").psubs == [w]


def test_sublist_cache_off_does_not_go_stale(sl_mod):
    s = sl_mod.Sublist()
    s.insert(new_sub(sl_mod, "foo"))
    assert len(s.match(b"foo").psubs) == 1
    s.cache_enabled = False
    late = new_sub(sl_mod, "foo")
    s.insert(late)
    s.cache_enabled = True
    assert len(s.match(b"foo").psubs) == 2
    s.remove(late)
    assert len(s.match(b"foo").psubs) == 1


def test_sublist_clear_cache(sl_mod):
    s = sl_mod.Sublist()
    s.insert(new_sub(sl_mod, "foo"))
    r = s.match(b"foo")
    s.clear_cache()
    assert s.cache_count() == 0
    assert s.match(b"foo").psubs == r.psubs


def test_sublist_basic_queue_results(sl_mod, sl):
    subject = b"foo"
    sub = new_sub(sl_mod, subject)
    sub1 = new_sub(sl_mod, subject, "bar")
    sub2 = new_sub(sl_mod, subject, "baz")

    sl.insert(sub1)
    r = sl.match(subject)
    assert r.psubs == [] and r.qsubs == [[sub1]]

    sl.insert(sub2)
    r = sl.match(subject)
    assert r.psubs == []
    assert len(r.qsubs) == 2
    assert find_group(r, b"bar") == [sub1] and find_group(r, b"baz") == [sub2]

    sl.insert(sub)
    r = sl.match(subject)
    assert r.psubs == [sub]
    assert find_group(r, b"bar") == [sub1] and find_group(r, b"baz") == [sub2]

    sub3 = new_sub(sl_mod, subject, "bar")
    sub4 = new_sub(sl_mod, subject, "baz")
    sl.insert(sub3)
    sl.insert(sub4)
    r = sl.match(subject)
    assert r.psubs == [sub]
    assert len(r.qsubs) == 2
    assert ids(find_group(r, b"bar")) == ids([sub1, sub3])
    assert ids(find_group(r, b"baz")) == ids([sub2, sub4])

    sl.remove(sub)
    r = sl.match(subject)
    assert r.psubs == [] and len(r.qsubs) == 2

    sl.remove(sub1)
    r = sl.match(subject)
    assert find_group(r, b"bar") == [sub3]
    assert ids(find_group(r, b"baz")) == ids([sub2, sub4])

    sl.remove(sub3)  # the last of "bar"
    r = sl.match(subject)
    assert len(r.qsubs) == 1
    assert ids(find_group(r, b"baz")) == ids([sub2, sub4])

    sl.remove(sub2)
    sl.remove(sub4)
    r = sl.match(subject)
    assert r.psubs == [] and r.qsubs == []


def test_sublist_valid_literal_subjects(sl_mod):
    check = sl_mod.is_valid_literal_subject
    for subject in [b"foo", b"foo*", b"foo**", b"foo.**", b"foo*bar", b"foo.*bar", b"foo*.bar",
                    b"*bar", b"foo>", b"foo>>", b"foo.>>", b"foo>bar", b"foo.>bar", b"foo>.bar",
                    b">bar"]:
        assert check(subject), subject
        assert sl_mod.is_valid_publish_subject(subject), subject
    for subject in [b".foo", b"foo.", b"foo..bar", b"foo.bar.*", b"foo.bar.>", b"*", b">", b"",
                    b"foo bar"]:
        assert not check(subject), subject
        assert not sl_mod.is_valid_publish_subject(subject), subject


def test_sublist_valid_subjects(sl_mod):
    check = sl_mod.is_valid_subject
    for subject in [b".", b".foo", b"foo.", b"foo..bar", b">.bar", b"foo.>.bar", b"",
                    b"foo bar", b"foo\t", b"\n", b"a.\r.b", b"a.\x0c"]:
        assert not check(subject), subject
    for subject in [b"foo", b"foo.bar.*", b"foo.bar.>", b"*", b">", b"foo*", b"foo**",
                    b"foo.**", b"foo*bar", b"foo.*bar", b"foo*.bar", b"*bar", b"foo>",
                    b"foo.>>", b"foo>bar", b"foo.>bar", b"foo>.bar", b">bar", b"a.\x0b"]:
        assert check(subject), subject
    # Embedded NULs and broken UTF-8 only with check_runes, as Go's isValidSubject(s, true).
    assert check(b"foo.bar.baz.\x00")
    assert not check(b"foo.bar.baz.\x00", check_runes=True)
    assert not check(b"foo.\xff", check_runes=True)
    assert not check("foo.\ufffd".encode(), check_runes=True)
    assert check("foo.bär".encode(), check_runes=True)


def test_sublist_match_literals(sl_mod):
    m = sl_mod.match_literal
    for literal, pattern, want in [
        ("foo", "foo", True),
        ("foo", "bar", False),
        ("foo", "*", True),
        ("foo", ">", True),
        ("foo.bar", ">", True),
        ("foo.bar", "foo.>", True),
        ("foo.bar", "bar.>", False),
        ("stats.test.22", "stats.>", True),
        ("stats.test.22", "stats.*.*", True),
        ("foo.bar", "foo", False),
        ("stats.test.foos", "stats.test.foos", True),
        ("stats.test.foos", "stats.test.foo", False),
        ("stats.test", "stats.test.*", False),
        ("stats.test.foos", "stats.*", False),
        ("stats.test.foos", "stats.*.*.foos", False),
        # Wildcard characters that are not whole tokens are literal.
        ("*bar", "*bar", True),
        ("foo*", "foo*", True),
        ("foo*bar", "foo*bar", True),
        ("foo.***.bar", "foo.***.bar", True),
        (">bar", ">bar", True),
        ("foo>", "foo>", True),
        ("foo>bar", "foo>bar", True),
        ("foo.>>>.bar", "foo.>>>.bar", True),
        # Go's edge cases with empty tokens.
        ("a.", "a.*", False),
        ("a.", "a.>", False),
        ("a..", "a.>", True),
        ("a..b", "a.*.b", True),
        ("", "*", False),
        ("", "", True),
    ]:
        assert m(literal.encode(), pattern.encode()) is want, (literal, pattern)


def test_subject_is_literal(sl_mod):
    for subject, want in [("foo", True), ("foo.bar", True), ("foo*.bar", True), ("*", False),
                          (">", False), ("foo.*", False), ("foo.>", False), ("foo.*.>", False),
                          ("foo.*.bar", False), ("foo.bar.>", False)]:
        assert sl_mod.subject_is_literal(subject.encode()) is want, subject


def test_sublist_none_subscription(sl_mod, sl):
    with pytest.raises(TypeError):
        sl.insert(None)
    assert not sl.remove(None)
    assert sl.remove_batch([None]) == 0
    sub = sl_mod.Subscription(b"foo", b"1")
    sl.insert(sub)
    sl.match(b"foo")
    sub.subject = None  # a caller bug must not crash the compiled twin
    assert not sl.remove(sub)
    sl.update_remote_qsub(sub)


def test_sublist_bad_subject_on_remove(sl_mod, sl):
    bad = new_sub(sl_mod, "a.b..d")
    with pytest.raises(ValueError):
        sl.insert(bad)
    assert not sl.remove(bad)
    assert not sl.remove(new_sub(sl_mod, "a.>.b"))
    assert not sl.remove(new_sub(sl_mod, ""))


def test_sublist_two_token_pub_match_single_token_sub(sl_mod, sl):
    sub = new_sub(sl_mod, "foo")
    sl.insert(sub)
    assert sl.match(b"foo").psubs == [sub]
    assert sl.match(b"foo.bar").psubs == []


def test_sublist_insert_with_wildcards_as_literals(sl_mod, sl):
    for subject in (b"foo.*-", b"foo.>-"):
        sl.insert(new_sub(sl_mod, subject))
        assert sl.match(b"foo.bar").psubs == []
        assert len(sl.match(subject).psubs) == 1


def test_sublist_remove_with_wildcards_as_literals(sl_mod, sl):
    for subject in (b"foo.*-", b"foo.>-"):
        sub = new_sub(sl_mod, subject)
        sl.insert(sub)
        assert not sl.remove(new_sub(sl_mod, "foo.bar"))
        assert sl.count == 1
        assert sl.remove(sub)
        assert sl.count == 0


@pytest.mark.parametrize("queue", [None, "bar"])
def test_sublist_race_on_remove(sl_mod, sl, queue):
    # Go's version races a goroutine; here a delivery loop removes what it iterates, which
    # is what happens when a subscription hits its auto-unsubscribe maximum.
    subs = [new_sub(sl_mod, "foo", queue) for _ in range(100)]
    for rnd in range(2):
        for sub in subs:
            sl.insert(sub)
        if rnd == 1:
            sl.match(b"foo")  # the next match comes from the cache, when there is one
        r = sl.match(b"foo")
        seen = []
        for group in [r.psubs] + r.qsubs:
            for sub in group:
                seen.append(sub)
                assert sl.remove(sub)
        assert ids(seen) == ids(subs)
        assert sl.count == 0
        assert sl.match(b"foo").psubs == [] and sl.match(b"foo").qsubs == []


@pytest.mark.parametrize("queue", [None, "bar"])
def test_sublist_race_on_insert(sl_mod, sl, queue):
    subs = [new_sub(sl_mod, "foo", queue) for _ in range(100)]
    held = []
    for sub in subs:
        held.append(sl.match(b"foo"))
        sl.insert(sub)
    # Every result still shows the subscriptions that were in when it was returned.
    for n, r in enumerate(held):
        got = r.psubs if queue is None else [s for g in r.qsubs for s in g]
        assert ids(got) == ids(subs[:n])


def test_sublist_race_on_match(sl_mod):
    s = sl_mod.Sublist(cache=False)
    s.insert(new_sub(sl_mod, "foo.*", "workers"))
    s.insert(new_sub(sl_mod, "foo.bar", "workers"))
    s.insert(new_sub(sl_mod, "foo.*"))
    s.insert(new_sub(sl_mod, "foo.bar"))
    for _ in range(10):
        r = s.match(b"foo.bar")
        assert all(sub.subject.startswith(b"foo.") for sub in r.psubs)
        assert len(r.qsubs) == 1
        assert all(sub.queue == b"workers" for sub in r.qsubs[0])


def test_sublist_remote_queue_subscriptions(sl_mod, sl):
    s1 = new_sub(sl_mod, "foo", "bar")
    s2 = new_sub(sl_mod, "foo", "bar")
    sl.insert(s1)
    sl.insert(s2)
    sl.match(b"foo")
    # Remote interest carries its member count as a weight, shadowed in results.
    rs1 = new_sub(sl_mod, "foo", "bar", weight=10)
    rs2 = new_sub(sl_mod, "foo", "bar", weight=10)
    sl.insert(rs1)
    sl.insert(rs2)
    assert sl.count == 4

    r = sl.match(b"foo")
    assert r.psubs == [] and len(r.qsubs) == 1
    assert len(r.qsubs[0]) == 22
    assert Counter(r.qsubs[0])[rs1] == 10

    sl.remove(s1)
    sl.remove(rs1)
    assert sl.count == 2
    r = sl.match(b"foo")
    assert len(r.qsubs) == 1 and len(r.qsubs[0]) == 11

    genid = sl.genid
    rs2.weight = 1
    sl.update_remote_qsub(rs2)
    assert sl.genid > genid
    r = sl.match(b"foo")
    assert len(r.qsubs) == 1 and len(r.qsubs[0]) == 2


def test_sublist_shared_empty_result(sl_mod):
    s = sl_mod.Sublist()
    r1 = s.match(b"foo")
    assert r1.psubs == [] and r1.qsubs == []
    r2 = s.match(b"bar")
    assert r2.psubs == [] and r2.qsubs == []
    assert r1 is r2


def test_sublist_no_cache_stats(sl_mod):
    s = sl_mod.Sublist(cache=False)
    for subject in ("foo", "bar", "baz", "foo.bar.baz"):
        s.insert(new_sub(sl_mod, subject))
    s.match(b"a.b.c")
    s.match(b"bar")
    assert s.stats()["num_cache"] == 0


def test_sublist_stats(sl_mod):
    s = sl_mod.Sublist()
    s.insert(new_sub(sl_mod, "foo"))
    s.insert(new_sub(sl_mod, "foo", "q"))
    s.insert(new_sub(sl_mod, "*"))
    sub = new_sub(sl_mod, "bar")
    s.insert(sub)
    s.remove(sub)
    s.match(b"foo")
    s.match(b"foo")
    s.match(b"baz")
    assert s.stats() == {
        "num_subscriptions": 3,
        "num_cache": 2,
        "num_inserts": 4,
        "num_removes": 1,
        "num_matches": 3,
        "cache_hit_rate": 1 / 3,
        "max_fanout": 3,  # foo: two plain subscriptions and one queue group
        "avg_fanout": 2.0,
    }


def test_sublist_all(sl_mod):
    s = sl_mod.Sublist(cache=False)
    subs = [new_sub(sl_mod, "foo.bar.baz"), new_sub(sl_mod, "foo"), new_sub(sl_mod, "baz"),
            new_sub(sl_mod, "foo.*", "q"), new_sub(sl_mod, ">")]
    for sub in subs:
        s.insert(sub)
    assert ids(s.all_subscriptions()) == ids(subs)


@pytest.mark.parametrize(
    "subject, test, want",
    [
        ("foo.bar", "foo.bar", True),
        ("foo.*", ">", True),
        ("foo.*", "*.*", True),
        ("foo.*", "foo.*", True),
        ("foo.*", "foo.bar", False),
        ("foo.>", ">", True),
        ("foo.>", "*.>", True),
        ("foo.>", "foo.>", True),
        ("foo.>", "foo.bar", False),
        ("foo..bar", "foo.*", False),
        ("foo.*", "foo..bar", False),
    ],
)
def test_is_subset_match(sl_mod, subject, test, want):
    assert sl_mod.is_subset_match(subject.encode(), test.encode()) is want


@pytest.mark.parametrize("cache", [True, False])
def test_sublist_match_with_empty_tokens(sl_mod, cache):
    s = sl_mod.Sublist(cache=cache)
    s.insert(new_sub(sl_mod, ">"))
    s.insert(new_sub(sl_mod, ">", "queue"))
    for subject in (b".foo", b"..foo", b"foo..", b"foo.", b"foo..bar", b"foo...bar", b"", b"."):
        r = s.match(subject)
        assert r.psubs == [] and r.qsubs == [], subject
        assert not s.has_interest(subject)
    assert s.cache_count() == 0


def test_sublist_subject_collide(sl_mod):
    c = sl_mod.subjects_collide
    assert not c(b"foo.*", b"foo.*.bar.>")
    assert not c(b"foo.*.bar.>", b"foo.*")
    assert c(b"foo.*", b"foo.foo")
    assert c(b"foo.*", b"*.foo")
    assert c(b"foo.bar.>", b"*.bar.foo")
    assert c(b"foo", b"foo")
    assert not c(b"foo", b"bar")
    assert not c(b"foo.>", b"foo")
    assert c(b"*.>", b"a.>")


def test_sublist_add_cache_hit_rate(sl_mod):
    s = sl_mod.Sublist()
    s.insert(new_sub(sl_mod, "foo"))
    for _ in range(4):
        s.match(b"foo")
    assert s.stats()["cache_hit_rate"] == 0.75


def test_sublist_has_interest(sl_mod):
    s = sl_mod.Sublist()
    foo = new_sub(sl_mod, "foo")
    s.insert(foo)
    assert s.has_interest(b"foo")
    assert not s.has_interest(b"bar")
    assert s.cache_hits == 0
    s.match(b"foo")
    assert s.cache_hits == 0
    for i in range(1, 6):
        assert s.has_interest(b"foo")
        assert s.cache_hits == i
    hits = s.cache_hits
    s.match(b"bar")
    assert not s.has_interest(b"bar")
    # Negative results are cached too.
    assert s.cache_hits == hits + 1

    s.remove(foo)
    assert not s.has_interest(b"foo")

    def check(pattern, queue, yes, no):
        sub = new_sub(sl_mod, pattern, queue)
        s.insert(sub)
        for subject in yes:
            assert s.has_interest(subject.encode()), (pattern, subject)
        for subject in no:
            assert not s.has_interest(subject.encode()), (pattern, subject)
        return sub

    for queue in (None, "bar"):
        s.remove(check("foo.*", queue, ["foo.bar"], ["foo", "foo.bar.baz"]))
        s.remove(check("foo.>", queue, ["foo.bar", "foo.bar.baz"], ["foo"]))
        s.remove(check("*.>", queue, ["foo.bar", "foo.baz"], ["foo"]))
        s.remove(check("*.bar", queue, ["foo.bar"], ["foo", "foo.baz"]))
        s.remove(check("*", queue, ["foo"], ["foo.bar"]))
    for subject in (b"foo", b"foo.bar", b"foo.bar.baz"):
        assert not s.has_interest(subject)

    q1 = check("foo", "bar", ["foo"], ["foo.bar"])
    q2 = check("foo", "baz", ["foo"], ["foo.bar"])
    s.remove(q1)
    assert s.has_interest(b"foo")
    s.remove(q2)
    assert not s.has_interest(b"foo")


def test_sublist_has_interest_overlapping(sl_mod, sl):
    sl.insert(new_sub(sl_mod, "stream.A.child"))
    sl.insert(new_sub(sl_mod, "stream.*"))
    assert sl.has_interest(b"stream.A.child")
    assert sl.has_interest(b"stream.A")


def test_sublist_utf8_subjects(sl_mod, sl):
    subject = "ünïcödé.主题.🚀".encode()
    lit = new_sub(sl_mod, subject)
    pwc = new_sub(sl_mod, "ünïcödé.*.🚀".encode())
    fwc = new_sub(sl_mod, "ünïcödé.>".encode())
    for sub in (lit, pwc, fwc):
        sl.insert(sub)
    assert ids(sl.match(subject).psubs) == ids([lit, pwc, fwc])
    assert ids(sl.match("ünïcödé.x.🚀".encode()).psubs) == ids([pwc, fwc])
    assert sl.match("ünïcödé".encode()).psubs == []
    assert sl_mod.is_valid_subject(subject, check_runes=True)
    assert sl_mod.is_valid_literal_subject(subject)
    assert sl_mod.match_literal(subject, "*.主题.>".encode())
    assert sl_mod.num_tokens(subject) == 3
    sl.remove(lit)
    assert ids(sl.match(subject).psubs) == ids([pwc, fwc])


def test_sublist_genid(sl_mod, sl):
    sub = new_sub(sl_mod, "foo.*")
    sl.insert(sub)
    assert sl.genid == 1
    sl.match(b"foo.bar")
    assert sl.genid == 1
    assert not sl.remove(new_sub(sl_mod, "nope"))
    assert sl.genid == 1
    assert sl.remove(sub)
    assert sl.genid == 2
    assert (sl.inserts, sl.removes) == (1, 1)


def test_sublist_duplicate_insert(sl_mod, sl):
    plain = new_sub(sl_mod, "foo")
    queued = new_sub(sl_mod, "foo", "q")
    for _ in range(2):
        sl.insert(plain)
        sl.insert(queued)
    assert sl.count == 2
    r = sl.match(b"foo")
    assert r.psubs == [plain] and r.qsubs == [[queued]]


def test_num_tokens(sl_mod):
    assert [sl_mod.num_tokens(s) for s in (b"", b"foo", b"foo.bar", b"a.b.*.>", b".")] == [0, 1, 2, 4, 2]


def test_is_valid_queue(sl_mod):
    assert sl_mod.is_valid_queue(b"workers")
    assert sl_mod.is_valid_queue(b"q.1.*")
    assert not sl_mod.is_valid_queue(b"")
    assert not sl_mod.is_valid_queue(b"a b")


# ---------------------------------------------------------------------------------------
# Properties

_TOKENS = [b"a", b"b", b"c"]
literals = st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=4).map(b".".join)
patterns = st.builds(
    lambda toks, fwc: b".".join(toks + [b">"] if fwc else toks),
    st.lists(st.sampled_from(_TOKENS + [b"*"]), min_size=0, max_size=3),
    st.booleans(),
).filter(bool)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), patterns, st.sampled_from([None, b"q1", b"q2"]),
                  st.integers(1, 3)),
        st.tuples(st.just("remove"), st.integers(0, 64)),
        st.tuples(st.just("batch"), st.integers(0, 64), st.integers(0, 3)),
        st.tuples(st.just("match"), literals),
        st.tuples(st.just("wild"), patterns),
    ),
    max_size=40,
)


def brute_matches(pattern: bytes, literal: bytes) -> bool:
    pat, lit = pattern.split(b"."), literal.split(b".")
    for i, tok in enumerate(pat):
        if tok == b">":
            return len(lit) > i
        if i >= len(lit) or (tok != b"*" and tok != lit[i]):
            return False
    return len(pat) == len(lit)


def summary(result):
    """(plain sids, {queue: sids}) as multisets; checks the grouping on the way."""
    plain = Counter(sub.sid for sub in result.psubs)
    queues = {}
    for group in result.qsubs:
        assert group, "empty queue group"
        name = group[0].queue
        assert all(sub.queue == name for sub in group)
        assert name not in queues, "queue group split in two"
        queues[name] = Counter(sub.sid for sub in group)
    return plain, queues


def expected(live, subject):
    plain, queues = Counter(), {}
    for sub in live:
        if brute_matches(sub.subject, subject):
            if sub.queue is None:
                plain[sub.sid] += 1
            else:
                queues.setdefault(sub.queue, Counter())[sub.sid] += sub.weight
    return plain, queues


@settings(max_examples=200, deadline=None)
@given(program=ops)
def test_match_equals_brute_force(sl_mod, program):
    cached = sl_mod.Sublist(cache=True)
    uncached = sl_mod.Sublist(cache=False)
    live = []
    held = []  # (result, its summary when returned): results must never change
    for sid, op in enumerate(program):
        if op[0] == "insert":
            _, pattern, queue, weight = op
            sub = sl_mod.Subscription(pattern, b"%d" % sid, queue)
            sub.weight = weight if queue is not None else 1
            cached.insert(sub)
            uncached.insert(sub)
            live.append(sub)
        elif op[0] == "remove":
            sub = live.pop(op[1] % len(live)) if live else sl_mod.Subscription(b"x", b"none")
            want = sub.sid != b"none"
            assert cached.remove(sub) is want
            assert uncached.remove(sub) is want
        elif op[0] == "batch":
            victims = [live.pop(op[1] % len(live)) for _ in range(min(op[2], len(live)))]
            assert cached.remove_batch(victims) == len(victims)
            assert uncached.remove_batch(victims) == len(victims)
        elif op[0] == "match":
            subject = op[1]
            want = expected(live, subject)
            for s in (cached, uncached):
                r = s.match(subject)
                assert summary(r) == want, subject
                assert s.has_interest(subject) == bool(want[0] or want[1])
                held.append((r, summary(r)))
        else:
            # A subject holding wildcard characters is matched token by token as a
            # literal; the cache must agree with the trie on it too.
            assert summary(cached.match(op[1])) == summary(uncached.match(op[1]))
        assert cached.count == uncached.count == len(live)
        assert cached.cache_count() <= sl_mod.CACHE_MAX
    for r, seen in held:
        assert summary(r) == seen
    assert {id(s) for s in cached.all_subscriptions()} == {id(s) for s in live}
    for sub in live:
        assert cached.remove(sub) and uncached.remove(sub)
    assert cached.num_levels() == uncached.num_levels() == 0
    for s in (cached, uncached):
        for subject in (b"a", b"a.b.c"):
            assert summary(s.match(subject)) == (Counter(), {})


def _witnesses(n: int):
    for size in range(1, n + 2):
        for toks in itertools.product(_TOKENS + [b"z"], repeat=size):
            yield b".".join(toks)


@settings(max_examples=200, deadline=None)
@given(p1=patterns, p2=patterns)
def test_subjects_collide_and_subset_brute_force(sl_mod, p1, p2):
    # A literal of at most one token more than the longer pattern shows any difference.
    lits = list(_witnesses(max(p1.count(b"."), p2.count(b".")) + 1))
    in1 = [lit for lit in lits if brute_matches(p1, lit)]
    both = any(brute_matches(p2, lit) for lit in in1)
    assert sl_mod.subjects_collide(p1, p2) is both
    assert sl_mod.subjects_collide(p2, p1) is both
    assert sl_mod.is_subset_match(p1, p2) is all(brute_matches(p2, lit) for lit in in1)
    assert {lit for lit in lits if sl_mod.match_literal(lit, p1)} == set(in1)


_odd_bytes = st.lists(st.sampled_from([b"a", b"b", b".", b"*", b">", b" ", b"\t", b"\xc3\xa9"]),
                      max_size=8).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(x=_odd_bytes, y=_odd_bytes)
def test_twins_agree_on_subject_helpers(x, y):
    pure = load("sublist", pure=True)
    comp = load("sublist", pure=False)
    if comp.__name__ != COMPILED_NAME:
        pytest.skip("compiled sublist not built")
    for name in ("is_valid_subject", "is_valid_literal_subject", "is_valid_publish_subject",
                 "is_valid_queue", "subject_is_literal", "num_tokens"):
        assert getattr(pure, name)(x) == getattr(comp, name)(x), (name, x)
    for name in ("match_literal", "subjects_collide", "is_subset_match"):
        assert getattr(pure, name)(x, y) == getattr(comp, name)(x, y), (name, x, y)
    assert pure.is_valid_subject(x, check_runes=True) == comp.is_valid_subject(x, check_runes=True)
