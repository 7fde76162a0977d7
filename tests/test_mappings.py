"""Subject mappings: the transform engine (natsx.server.mapping), the compiled ``Mapper``
and its pure twin, the config's ``mappings`` blocks and their errors, and black-box
routing through the real ``natsx`` command, compared with the Go server (Debian's 2.9.10)
where that release has the same behaviour.

The transform cases are Go's (server/subject_transform_test.go TestSubjectTransforms);
where Go 2.9.10 differs from the current source (which natsx follows), the test names it.
"""
from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import GO_SERVER, NATSX, ROOT, RunningServer, free_port
from natsx._speedups import load
from natsx.server.mapping import (MapDest, Mapping, MappingError, Mappings, new_transform,
                                  validate_mapping)

COMPILED_CORE = "natsx._speedups._core"


# ------------------------------------------------------------------ transforms (Go's cases)

@pytest.mark.parametrize("src,dest,sample,expected", [
    ("", "prefix.>", "foo", ["prefix.foo"]),
    ("foo", "bar", "foo", ["bar"]),
    ("foo.*.bar.*.baz", "req.$2.$1", "foo.A.bar.B.baz", ["req.B.A"]),
    ("foo.*.bar.*.baz", "req.{{wildcard(2)}}.{{wildcard(1)}}", "foo.A.bar.B.baz", ["req.B.A"]),
    ("baz.>", "my.pre.>", "baz.1.2.3", ["my.pre.1.2.3"]),
    ("baz.>", "foo.bar.>", "baz.1.2.3", ["foo.bar.1.2.3"]),
    ("*", "foo.bar.$1", "foo", ["foo.bar.foo"]),
    ("*", "{{splitfromleft(1,3)}}", "12345", ["123.45"]),
    ("*", "{{SplitFromRight(1,3)}}", "12345", ["12.345"]),
    ("*", "{{SliceFromLeft(1,3)}}", "1234567890", ["123.456.789.0"]),
    ("*", "{{SliceFromRight(1,3)}}", "1234567890", ["1.234.567.890"]),
    ("*", "{{split(1,-)}}", "-abc-def--ghi-", ["abc.def.ghi"]),
    ("*", "{{split(1,-)}}", "abc-def--ghi-", ["abc.def.ghi"]),
    ("*.*", "{{split(2,-)}}.{{splitfromleft(1,2)}}", "foo.-abc-def--ghij-",
     ["abc.def.ghij.fo.o"]),
    ("*", "{{right(1,1)}}", "1234", ["4"]),
    ("*", "{{right(1,3)}}", "1234", ["234"]),
    ("*", "{{right(1,6)}}", "1234", ["1234"]),
    ("*", "{{left(1,1)}}", "1234", ["1"]),
    ("*", "{{left(1,3)}}", "1234", ["123"]),
    ("*", "{{left(1,6)}}", "1234", ["1234"]),
    ("*", "bar.{{partition(0)}}", "baz", ["bar.0"]),
    ("*", "bar.{{partition(10, 0)}}", "foo", ["bar.3"]),
    ("*.*", "bar.{{partition(10)}}", "foo.bar", ["bar.6"]),
    ("*", "bar.{{partition(10)}}", "foo", ["bar.3"]),
    ("*", "bar.{{partition(10)}}", "baz", ["bar.0"]),
    ("*", "bar.{{partition(10)}}", "qux", ["bar.9"]),
    ("*", "bar.{{random(0)}}", "qux", ["bar.0"]),
    ("*", "bar.{{random(6)}}", "qux", [f"bar.{i}" for i in range(6)]),
    ("foo.bar", "baz.{{partition(10)}}", "foo.bar", ["baz.6"]),
    ("foo.baz", "qux.{{partition(10)}}", "foo.baz", ["qux.4"]),
    ("test.subject", "result.{{partition(5)}}", "test.subject", ["result.0"]),
])
def test_transform_matches_go(src, dest, sample, expected):
    tr = new_transform(src, dest)
    for _ in range(20 if "random" in dest else 1):
        assert tr.match(sample.encode()).decode() in expected


def test_transform_missing_token_gives_empty():
    # Go: TestSubjectTransformDoesntPanicTransformingMissingToken
    tr = new_transform("foo.*", "one.two.{{wildcard(1)}}")
    assert tr.transform_tokens([b"foo"]) == b"one.two."


def test_transform_no_match():
    tr = new_transform("foo.*", "bar.$1")
    assert tr.match(b"baz.x") is None
    assert tr.match(b"foo.*") is None


@pytest.mark.parametrize("src,dest,strict", [
    ("foo..", "bar", False),
    ("foo.*", "bar.*", False),
    ("foo.*", "bar.$2", False),
    ("foo.*", "bar.$1.>", False),
    ("foo.>", "bar.baz", False),
    ("foo.*.*", "bar.$2", True),
    ("foo.*", "foo.$foo", True),
    ("foo.*", "bar.{{Partition(2,1)}}", True),
    ("foo.*", "foo.{{wildcard(2)}}", False),
    ("foo.*", "foo.{{unimplemented(1)}}", False),
    ("foo.*", "foo.{{partition()}}", False),
    ("foo.*", "foo.{{random()}}", False),
    ("foo.*", "foo.{{wildcard(foo)}}", False),
    ("foo.*", "foo.{{wildcard()}}", False),
    ("foo.*", "foo.{{wildcard(1,2)}}", False),
    ("foo.*", "foo.{{ wildcard5) }}", False),
    ("foo.*", "foo.{{splitLeft(2,2}}", False),
    ("foo", "bla.{{wildcard(1)}}", False),
    ("foo.*", "foo.{{partition(%d)}}" % (2 ** 31), False),
    ("foo.*", "foo.{{random(%d)}}" % (2 ** 31), False),
])
def test_transform_errors_like_go(src, dest, strict):
    with pytest.raises(MappingError):
        new_transform(src, dest, strict)


@pytest.mark.parametrize("src,dest,strict", [
    ("foo.*", "bar.{{Wildcard(1)}}", True),
    ("foo.*.*", "bar.$2", False),
    ("foo.*.*", "bar.{{wildcard(1)}}", False),
    ("foo.*.*", "bar.{{partition(1)}}", False),
    ("foo.*.*", "bar.{{random(5)}}", False),
    ("foo", "bar", False),
    ("baz.>", "mybaz.>", False),
    ("*", "{{splitfromleft(1,1)}}", False),
    ("", "prefix.>", False),
    ("*.*", "{{partition(10,1,2)}}", False),
    ("foo.*.*", "foo.{{wildcard(1)}}.{{wildcard(2)}}.{{partition(5,1,2)}}", False),
    ("foo.*", "foo.{{partition(%d)}}" % (2 ** 31 - 1), False),
    ("foo.bar", "foo.{{random(%d)}}" % (2 ** 31 - 1), False),
])
def test_transform_ok_like_go(src, dest, strict):
    assert new_transform(src, dest, strict) is not None


@pytest.mark.parametrize("dest,text", [
    ("x.$1", "invalid mapping destination: wildcard index out of range in $1"),
    ("x.>", "invalid subject"),
    ("bar..x", "invalid mapping destination: invalid transform"),
    ("{{nope(1)}}", "invalid mapping destination: unknown function in {{nope(1)}}"),
    # Go's ValidateMapping leaves left() and right() out of its list of functions.
    ("{{left(1,2)}}", "invalid mapping destination: unknown function in {{left(1,2)}}"),
])
def test_validate_mapping_texts(dest, text):
    with pytest.raises(MappingError) as info:
        validate_mapping("foo", dest)
    assert str(info.value) == text


# ------------------------------------------------------------------ weighted mappings

def test_weights_are_cumulative_and_source_fills_the_rest():
    m = Mapping("foo", [MapDest("bar", 50), MapDest("baz", 20)])
    assert [(w, t.dest) for w, t in m.dests] == [(20, "baz"), (50, "foo"), (100, "bar")]


def test_explicit_source_means_the_rest_is_dropped():
    ms = Mappings([Mapping("foo", [MapDest("foo", 10), MapDest("bar", 30)])])
    assert ms.select(b"foo", 5) == (b"foo", True)
    assert ms.select(b"foo", 35) == (b"bar", True)
    assert ms.select(b"foo", 60) == (b"", True)
    assert ms.select(b"other", 5) == (b"other", False)


@pytest.mark.parametrize("dests,text", [
    ([MapDest("a", 60), MapDest("b", 60)], "total weight needs to be <= 100"),
    ([MapDest("a", 101)], "individual weights need to be <= 100"),
    ([MapDest("a", 10), MapDest("a", 20)], 'duplicate entry for "a"'),
])
def test_weight_errors(dests, text):
    with pytest.raises(MappingError) as info:
        Mapping("foo", dests)
    assert str(info.value) == text


def test_cluster_scoped_entries_fall_back_without_a_cluster():
    m = Mapping("foo", [MapDest("east", 100, "east"), MapDest("any", 100)])
    assert Mappings([m]).select(b"foo") == (b"any", True)
    assert Mappings([m], cluster="east").select(b"foo") == (b"east", True)
    # Only cluster-scoped destinations: without a cluster the subject maps to itself.
    only = Mapping("foo", [MapDest("east", 100, "east")])
    assert Mappings([only]).select(b"foo") == (b"foo", True)


def test_first_matching_mapping_wins_and_literal_partition_quirk():
    ms = Mappings([Mapping("a.*", [MapDest("x.$1")]), Mapping("a.b", [MapDest("y")])])
    assert ms.select(b"a.b") == (b"x.b", True)
    # Go hashes the tokens it has; a literal source taken first has none (empty key).
    lit = Mappings([Mapping("foo.bar", [MapDest("p.{{partition(10)}}")])])
    assert lit.select(b"foo.bar") == (b"p.%d" % (0x811C9DC5 % 10), True)


# ------------------------------------------------------------------ Mapper twins

@pytest.fixture(scope="module", params=["pure", "compiled"])
def core_mod(request):
    if request.param == "pure":
        return load("core", pure=True)
    mod = load("core", pure=False)
    if mod.__name__ != COMPILED_CORE:
        pytest.fail("compiled core not built (python setup.py build_ext --inplace)")
    return mod


SPECS = [
    [("foo", (MapDest("bar"),))],
    [("a.*.*", (MapDest("b.$2.$1"),)), ("a.>", (MapDest("c.>"),))],
    [("p.*", (MapDest("p.{{partition(4,1)}}.$1"),))],
    [("w.*", (MapDest("w1.$1", 30), MapDest("w2.$1", 50)))],
    [("s.*", (MapDest("s.{{splitFromLeft(1,2)}}"),)),
     ("t.*", (MapDest("t.{{sliceFromRight(1,2)}}"),))],
    [("d", (MapDest("d", 10), MapDest("e", 30)))],
    [("foo", (MapDest("p.{{partition(5)}}"),)), ("a.*", (MapDest("q.{{partition(5)}}"),))],
    [("a.*", (MapDest("q.$1"),)), ("foo", (MapDest("p.{{partition(5)}}"),))],
    [("x.>", (MapDest("y.>", 50),)), ("p.*.*", (MapDest("{{sliceFromLeft(1,2)}}.{{splitFromRight(2,1)}}"),))],
]
tokens = st.sampled_from(["a", "b", "foo", "p", "w", "s", "t", "d", "x1", "12345", "zz"])
subjects = st.lists(tokens, min_size=1, max_size=4).map(lambda t: ".".join(t).encode())


@settings(max_examples=200, deadline=None)
@given(spec=st.sampled_from(SPECS), subject=subjects, draw=st.integers(0, 99))
def test_mapper_twins_agree_with_reference(spec, subject, draw):
    ms = Mappings([Mapping(src, dests) for src, dests in spec])
    expected, changed = ms.select(subject, draw)
    for pure in (True, False):
        mod, sl_mod = load("core", pure=pure), load("sublist", pure=pure)
        sources, entries = _compile(ms, mod, sl_mod)
        for args in ((), (sources,), (sources, entries)):
            mapper = mod.Mapper()
            mapper.set(ms.plan, *args)
            for _ in range(2):   # the second call is served from the cache or memo
                assert mapper.map(subject, draw) == (expected if changed else None)


def _compile(ms: Mappings, mod, sl_mod) -> tuple:
    """natsx.server.accounts.compile_mappings, for the given twins."""
    sources = sl_mod.Sublist()
    entries = [] if hasattr(mod, "CTransform") else None
    for i, m in enumerate(ms.mappings):
        sub = sl_mod.Subscription(m.src_b, b"%d" % i)
        sub.weight = i
        sources.insert(sub)
        if entries is not None:
            entries.append((m.wc, tuple(w for w, _t in m.dests),
                            tuple(None if t is None else mod.CTransform(t) for _w, t in m.dests)))
    return sources, entries


_DESTS = ["$1", "{{wildcard(2)}}", "{{partition(7,1,2)}}", "{{partition(3)}}",
          "{{splitFromLeft(1,2)}}", "{{splitFromRight(2,3)}}", "{{sliceFromLeft(1,2)}}",
          "{{sliceFromRight(2,3)}}", "{{split(1,-)}}", "{{split(2,ab)}}", "{{left(1,2)}}",
          "{{right(2,1)}}", "lit", "{{partition(0)}}"]
_TOKEN = st.text(alphabet="ab-c1.", min_size=1, max_size=9).filter(
    lambda t: "." not in t)


@settings(max_examples=300, deadline=None)
@given(dest=st.lists(st.sampled_from(_DESTS), min_size=1, max_size=4),
       fwc=st.booleans(), toks=st.lists(_TOKEN, min_size=2, max_size=5))
def test_compiled_transform_agrees_with_its_twin(dest, fwc, toks):
    core = load("core", pure=False)
    src = "x.*.*" + (".>" if fwc else "")
    tr = new_transform(src, ".".join(["y"] + dest + ([">"] if fwc else [])))
    subject = ".".join(["x"] + toks[:2] + (toks[2:] or ["z"] if fwc else [])).encode()
    if not fwc and len(toks) > 2:
        subject = ".".join(["x"] + toks[:2]).encode()
    expected = tr.match(subject)
    assert expected is not None
    assert core.CTransform(tr).apply(subject) == expected


def test_compiled_transform_literal_source_quirk():
    core = load("core", pure=False)
    tr = new_transform("foo.bar", "p.{{partition(10)}}")
    assert core.CTransform(tr).apply(b"foo.bar", True) == tr.transform_tokens([])
    assert core.CTransform(tr).apply(b"foo.bar") == tr.transform(b"foo.bar")


def test_mapper_sources_keep_unmapped_subjects_out_of_python(core_mod):
    pure = core_mod.__name__ != COMPILED_CORE
    sl_mod = load("sublist", pure=pure)
    calls = []
    ms = Mappings([Mapping("a.*", [MapDest("b.$1")])])

    def resolve(subject):
        calls.append(subject)
        return ms.plan(subject)

    sources = sl_mod.Sublist()
    sources.insert(sl_mod.Subscription(b"a.*", b"1"))
    mapper = core_mod.Mapper()
    mapper.set(resolve, sources)
    assert [mapper.map(b"_INBOX.%d" % i) for i in range(50)] == [None] * 50
    assert mapper.map(b"a.x") == b"b.x" and mapper.map(b"a.x") == b"b.x"
    assert calls == [b"a.x"]
    if pure:
        return
    # Compiled transforms: no subject, mapped or not, runs Python.
    calls.clear()
    sources, entries = _compile(ms, core_mod, sl_mod)
    mapper.set(resolve, sources, entries)
    assert [mapper.map(b"a.%d" % i) for i in range(50)] == [b"b.%d" % i for i in range(50)]
    assert mapper.map(b"_INBOX.1") is None and calls == []


def test_mapper_inactive_and_reset(core_mod):
    mapper = core_mod.Mapper()
    assert not mapper.active and mapper.map(b"foo") is None
    mapper.set(Mappings([Mapping("foo", [MapDest("bar")])]).plan)
    assert mapper.map(b"foo") == b"bar" and mapper.cache_count() == 1
    mapper.set(None)
    assert not mapper.active and mapper.map(b"foo") is None and mapper.cache_count() == 0


def test_mapper_weighted_distribution(core_mod):
    mapper = core_mod.Mapper()
    mapper.set(Mappings([Mapping("w", [MapDest("w1", 30), MapDest("w2", 70)])]).plan)
    counts = collections.Counter(mapper.map(b"w") for _ in range(20000))
    assert set(counts) == {b"w1", b"w2"}
    assert abs(counts[b"w1"] / 20000 - 0.30) < 0.03


def test_client_core_routes_mapped_subject(core_mod):
    sl_mod = load("sublist", pure=core_mod.__name__ != COMPILED_CORE)
    router = core_mod.Router()
    sl = sl_mod.Sublist()
    pub = core_mod.Client(1, router, sl)
    sub_client = core_mod.Client(2, router, sl)
    pub.verbose = sub_client.verbose = False
    for i, subject in enumerate((b"foo", b"bar")):
        sub = sl_mod.Subscription(subject, b"%d" % i, None, sub_client)
        sl.insert(sub)
    mapper = core_mod.Mapper()
    mapper.set(Mappings([Mapping("foo", [MapDest("bar")])]).plan)
    pub.mapper = mapper
    pub.feed(b"PUB foo 2\r\nhi\r\n")
    assert pub.next_event() is None
    # Only the destination's subscriber gets it, under the mapped subject.
    assert sub_client.take_output() == b"MSG bar 1 2\r\nhi\r\n"


# ------------------------------------------------------------------ config

def check(tmp_path, text: str, head=None) -> tuple[int, str]:
    path = tmp_path / "m.conf"
    path.write_text(text)
    cmd = (head or NATSX) + ["-c", str(path), "-t"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
    return r.returncode, (r.stdout + r.stderr).replace(str(path), "CONF")


SAME_IN_GO_2_9 = [
    'bad2: [{destination: y, weight: 120}]',
    'bad4: {destination: q}',
    '"bad..5": q',
    'bad6: "{{left(1,2)}}"',
    'b7: "x.>"',
    'b8: [{destination: y, weight: "abc"}]',
    'b9: [{dest: y, weight: 10, foo: 1}]',
    'b10: 5',
    '"b.*": "{{splitfromleft(1)}}"',
    '"b.*": "{{wildcard(1,2)}}"',
]


@pytest.mark.parametrize("entry", SAME_IN_GO_2_9)
def test_config_errors_match_go(tmp_path, entry):
    text = "mappings {\n  %s\n}\n" % entry
    rc, out = check(tmp_path, text)
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    grc, gout = check(tmp_path, text, head=[GO_SERVER])
    assert rc != 0 and grc != 0
    assert out.strip().splitlines()[0] == gout.strip().splitlines()[0]


@pytest.mark.parametrize("entry,text", [
    # Go 2.9.10 panics on these (a type assertion on the list); the current source says:
    ('a: [{destination: y, weight: 60}, {destination: z, weight: 60}]',
     'CONF:2:3: Error adding mapping for "a" : total weight needs to be <= 100'),
    ('a: [{destination: b, weight: 50}, {destination: b, weight: 10}]',
     'CONF:2:3: Error adding mapping for "a" : duplicate entry for "b"'),
    # A literal source has no wildcard to refer to (2.9.10 accepted it).
    ('a: "x.$1"', 'CONF:2:3: Error adding mapping for "a" to "x.$1" : invalid mapping '
                  'destination: wildcard index out of range in $1'),
])
def test_config_errors_current_go(tmp_path, entry, text):
    rc, out = check(tmp_path, "mappings {\n  %s\n}\n" % entry)
    assert rc != 0
    assert out.strip() == "nats-server: " + text


def test_config_account_mappings_accepted(tmp_path):
    rc, out = check(tmp_path, """
mappings { foo: bar, "a.*": [{destination: "b.$1", weight: 40%}, {destination: "c.$1", weight: 60}] }
accounts { A { users [{user: a, password: a}], maps { x: y, z: {destination: q, weight: 100} } } }
""")
    assert rc == 0, out


# ------------------------------------------------------------------ black box

MAPCONF = """
mappings {
  foo: bar
  "a.*.*": "b.$2.$1"
  "p.*": "p.{{partition(3,1)}}.{{wildcard(1)}}"
  "s.*": "s.{{splitFromLeft(1,2)}}.{{sliceFromRight(1,2)}}.{{split(1,-)}}"
  "r.*": "r.{{splitFromRight(1,1)}}.{{sliceFromLeft(1,2)}}"
  "g.>": "h.>"
  w: [{destination: w1, weight: 30%}, {destination: w2, weight: 70}]
}
accounts {
  A { users [{user: a, password: a}], mappings { "in.*": "out.$1" } }
  B { users [{user: b, password: b}] }
}
no_auth_user: g
authorization { users [{user: g, password: g}] }
"""

SAMPLES = ["foo", "a.1.2", "p.k1", "p.k2", "p.k3", "p.k4", "s.ab-cd-e", "r.12345",
           "g.x.y.z", "unmapped"]


def start(tmp_path, text: str, *flags: str, head=None, name="server") -> RunningServer:
    path = tmp_path / f"{name}.conf"
    path.write_text(text)
    port = free_port()
    cmd = (head or NATSX) + ["-c", str(path), "-a", "127.0.0.1", "-p", str(port), *flags]
    return RunningServer(cmd, port, None, tmp_path / f"{name}.log", dict(os.environ))


async def exchange(port: int, user: str = "g", weighted: int = 2000) -> dict:
    nc = await nats.connect(f"nats://{user}:{user}@127.0.0.1:{port}")
    sub_nc = await nats.connect(f"nats://{user}:{user}@127.0.0.1:{port}")
    got: collections.Counter = collections.Counter()

    async def cb(m):
        got[m.subject] += 1

    await sub_nc.subscribe(">", cb=cb)
    await sub_nc.flush()
    for s in SAMPLES:
        await nc.publish(s, b"x")
    for _ in range(weighted):
        await nc.publish("w", b"")
    await nc.flush()
    deadline = time.monotonic() + 10
    while sum(got.values()) < len(SAMPLES) + weighted and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await nc.close()
    await sub_nc.close()
    return dict(got)


def _split_weighted(got: dict) -> tuple[dict, dict]:
    weighted = {k: v for k, v in got.items() if k in ("w", "w1", "w2")}
    rest = {k: v for k, v in got.items() if k not in weighted}
    return rest, weighted


@pytest.mark.server
@pytest.mark.parametrize("workers", ["1", "2"])
def test_routing_matches_go(tmp_path, workers):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    go = start(tmp_path, MAPCONF, head=[GO_SERVER], name="go")
    try:
        go_got = asyncio.run(exchange(go.port))
    finally:
        go.stop()
    srv = start(tmp_path, MAPCONF, "--workers", workers)
    try:
        got = asyncio.run(exchange(srv.port))
    finally:
        srv.stop()
    rest, weighted = _split_weighted(got)
    go_rest, go_weighted = _split_weighted(go_got)
    assert rest == go_rest
    assert "foo" not in rest and "bar" in rest      # the source's subscribers get nothing
    assert set(weighted) == set(go_weighted) == {"w1", "w2"}
    assert sum(weighted.values()) == 2000
    assert abs(weighted["w1"] / 2000 - 0.30) < 0.05


async def _account_exchange(port: int) -> tuple[list, list]:
    a = await nats.connect(f"nats://a:a@127.0.0.1:{port}")
    b = await nats.connect(f"nats://b:b@127.0.0.1:{port}")
    got_a, got_b = [], []

    async def cb_a(m):
        got_a.append(m.subject)

    async def cb_b(m):
        got_b.append(m.subject)

    await a.subscribe(">", cb=cb_a)
    await b.subscribe(">", cb=cb_b)
    await a.flush()
    await b.flush()
    await a.publish("in.1", b"")
    await b.publish("in.2", b"")
    await a.publish("foo", b"")      # the global account's mapping does not apply in A
    await a.flush()
    await b.flush()
    await asyncio.sleep(0.3)
    await a.close()
    await b.close()
    return sorted(got_a), sorted(got_b)


@pytest.mark.server
@pytest.mark.parametrize("head", ["natsx", "go"])
def test_account_mappings_are_per_account(tmp_path, head):
    if head == "go" and GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    srv = start(tmp_path, MAPCONF, *(["--workers", "2"] if head == "natsx" else []),
                head=[GO_SERVER] if head == "go" else None)
    try:
        got_a, got_b = asyncio.run(_account_exchange(srv.port))
    finally:
        srv.stop()
    assert got_a == ["foo", "out.1"]
    assert got_b == ["in.2"]


RELOAD_BEFORE = "mappings { foo: bar }\n"
RELOAD_AFTER = "mappings { foo: baz }\n"


async def _one(port: int, subject: str) -> list:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    got = []

    async def cb(m):
        got.append(m.subject)

    await nc.subscribe(">", cb=cb)
    await nc.flush()
    await nc.publish(subject, b"")
    await nc.flush()
    await asyncio.sleep(0.3)
    await nc.close()
    return got


def _settles(port: int, subject: str, expected: list, timeout: float = 10.0) -> bool:
    """Every one of several connections (some on each worker) sees ``expected`` once the
    workers applied the reload."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(asyncio.run(_one(port, subject)) == expected for _ in range(4)):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.server
def test_mappings_reload(tmp_path):
    srv = start(tmp_path, RELOAD_BEFORE, "--workers", "2")
    try:
        assert asyncio.run(_one(srv.port, "foo")) == ["bar"]
        (tmp_path / "server.conf").write_text(RELOAD_AFTER)
        srv.proc.send_signal(signal.SIGHUP)
        assert _settles(srv.port, "foo", ["baz"])
        (tmp_path / "server.conf").write_text("port: %d\n" % srv.port)
        srv.proc.send_signal(signal.SIGHUP)
        assert _settles(srv.port, "foo", ["foo"])
        assert "Reloaded: accounts" in srv.log()
    finally:
        srv.stop()


# ------------------------------------------------------------------ JWT accounts

async def _jwt_exchange(url: str, creds_file: str) -> list:
    nc = await nats.connect(url, user_credentials=creds_file)
    got = []

    async def cb(m):
        got.append(m.subject)

    await nc.subscribe(">", cb=cb)
    await nc.flush()
    for s in ("foo", "a.1.2", "other"):
        await nc.publish(s, b"")
    await nc.flush()
    await asyncio.sleep(0.3)
    await nc.close()
    return sorted(got)


@pytest.mark.server
@pytest.mark.parametrize("head", ["natsx", "go"])
def test_jwt_account_mappings_claim(tmp_path, head):
    """Go's updateAccountClaimsWithRefresh installs the account JWT's mappings (a weight
    of 0 meaning 100)."""
    from natsx.auth import jwt
    from test_operator import World, creds

    w = World()
    claims = jwt.AccountClaims(subject=w.a.public_key, name="A", mappings={
        "foo": (jwt.WeightedMapping(subject="bar", weight=100),),
        "a.*.*": (jwt.WeightedMapping(subject="b.$2.$1"),)})
    w.accounts[w.a.public_key] = jwt.encode(claims, w.op)
    ukp, token = w.user(w.a)
    conf = w.config(tmp_path)
    if head == "go" and GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    cmd = ([GO_SERVER] if head == "go" else NATSX + ["--workers", "2"])
    port = free_port()
    srv = RunningServer(cmd + ["-c", conf, "-a", "127.0.0.1", "-p", str(port)], port, None,
                        tmp_path / f"{head}.log", dict(os.environ))
    try:
        got = asyncio.run(_jwt_exchange(srv.url, creds(tmp_path, ukp, token)))
    finally:
        srv.stop()
    assert got == ["b.2.1", "bar", "other"]


# ------------------------------------------------------------------ JetStream

async def _js_exchange(url: str) -> tuple:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="S", subjects=["bar.>"])
    ack = await js.publish("foo.1", b"mapped")
    msg = await js.get_msg("S", ack.seq)
    await nc.close()
    return ack.stream, ack.seq, msg.subject, msg.data


@pytest.mark.server
@pytest.mark.parametrize("head", ["natsx", "go"])
def test_jetstream_captures_the_mapped_subject(tmp_path, head):
    if head == "go" and GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    text = 'mappings { "foo.*": "bar.$1" }\njetstream { store_dir: "%s" }\n' % (tmp_path / "js")
    srv = start(tmp_path, text, *([] if head == "go" else ["--workers", "2"]),
                head=[GO_SERVER] if head == "go" else None)
    try:
        got = asyncio.run(_js_exchange(srv.url))
    finally:
        srv.stop()
    assert got == ("S", 1, "bar.1", b"mapped")


# ------------------------------------------------------------------ service imports

SVCCONF = """
accounts {
  A: {
    users: [ {user: a, password: a} ]
    exports: [ {service: "svc.>"} ]
    mappings: { "svc.echo": "svc.real" }
  }
  B: {
    users: [ {user: b, password: b} ]
    imports: [ {service: {account: A, subject: "svc.echo"}, to: "echo"} ]
  }
}
"""


async def _svc_exchange(port: int) -> list:
    a = [await nats.connect(f"nats://a:a@127.0.0.1:{port}") for _ in range(2)]
    b = [await nats.connect(f"nats://b:b@127.0.0.1:{port}") for _ in range(2)]
    for nc in a:
        async def handler(m, nc=nc):
            await nc.publish(m.reply, m.subject.encode())
        await nc.subscribe("svc.*", cb=handler, queue="q")
        await nc.flush()
    await asyncio.sleep(0.2)
    out = [(await nc.request("echo", b"", timeout=3)).data for nc in b]
    for nc in a + b:
        await nc.close()
    return out


@pytest.mark.server
@pytest.mark.parametrize("head", ["natsx", "go"])
def test_service_import_goes_through_the_exporters_mappings(tmp_path, head):
    if head == "go" and GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    srv = start(tmp_path, SVCCONF, *([] if head == "go" else ["--workers", "2"]),
                head=[GO_SERVER] if head == "go" else None)
    try:
        got = asyncio.run(_svc_exchange(srv.port))
    finally:
        srv.stop()
    assert got == [b"svc.real"] * 2


async def _stream_transform(url: str) -> tuple:
    from nats.js.api import StreamConfig, SubjectTransform

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(
        name="T", subjects=["in.>"],
        subject_transform=SubjectTransform(src="in.*.*", dest="out.$2.{{partition(3,1)}}")))
    ack = await js.publish("in.a.b", b"x")
    stored = (await js.get_msg("T", ack.seq)).subject
    try:
        await js.add_stream(StreamConfig(name="U", subjects=["u.>"], subject_transform=
                                         SubjectTransform(src="u.*", dest="v.{{wildcard(2)}}")))
        error = None
    except nats.js.errors.BadRequestError as exc:
        error = exc.description
    await nc.close()
    return stored, error


@pytest.mark.server
def test_stream_subject_transform_uses_the_mapping_engine(tmp_path):
    """Go 2.9.10 has no stream subject_transform (2.10+): checked against the engine."""
    srv = start(tmp_path, 'jetstream { store_dir: "%s" }\n' % (tmp_path / "js"))
    try:
        stored, error = asyncio.run(_stream_transform(srv.url))
    finally:
        srv.stop()
    expected = new_transform("in.*.*", "out.$2.{{partition(3,1)}}").match(b"in.a.b").decode()
    assert stored == expected
    assert error is not None and "wildcard index out of range in {{wildcard(2)}}" in error


# ------------------------------------------------------------------ monitoring

AZCONF = """
mappings { foo: bar, "a.*": [{destination: "b.$1", weight: 40%}, {destination: "c.$1", weight: 20}] }
accounts { A { users [{user: a, password: a}], mappings { x: y } } }
"""


@pytest.mark.server
def test_accountz_lists_mappings_like_go(tmp_path):
    import httpx

    got = {}
    for head in ("natsx", "go"):
        if head == "go" and GO_SERVER is None:
            pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
        http_port = free_port()
        srv = start(tmp_path, AZCONF, "-m", str(http_port),
                    head=[GO_SERVER] if head == "go" else None, name=head)
        try:
            from conftest import wait_port

            wait_port(http_port)
            got[head] = [httpx.get(f"http://127.0.0.1:{http_port}/accountz?acc={acc}")
                         .json()["account_detail"].get("mappings") for acc in ("$G", "A")]
        finally:
            srv.stop()
    assert got["natsx"] == got["go"]
    assert got["go"][1] == {"x": [{"subject": "y", "weight": 100}]}
