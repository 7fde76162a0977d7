"""The server-side parser and the hot-path router, on both twins (``core`` fixture)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsx._speedups import load
from natsx.protocol import encode

EV = None  # event numbers are the same in both twins; read them from the module under test


def parse_all(core, data: bytes, **opts):
    c = core.Client(0, None, None)
    c.headers = True
    c.pedantic = False
    for k, v in opts.items():
        setattr(c, k, v)
    c.feed(data)
    out = []
    while True:
        e = c.next_event()
        if e is None:
            return out, c
        out.append(e)
        if e[0] == core.EV_CLOSE:
            return out, c


def parse_split(core, chunks, **opts):
    c = core.Client(0, None, None)
    c.headers = True
    c.pedantic = False
    for k, v in opts.items():
        setattr(c, k, v)
    out = []
    for chunk in chunks:
        c.feed(chunk)
        while True:
            e = c.next_event()
            if e is None:
                break
            out.append(e)
            if e[0] == core.EV_CLOSE:
                return out
    return out


def test_ops_are_case_insensitive(core):
    evs, _ = parse_all(core, b"pub foo 1\r\na\r\nsub foo 9\r\nping\r\nPoNg\r\nunsub 9\r\n")
    assert evs == [(core.EV_PUB, b"foo", None, None, b"a"), (core.EV_SUB, b"foo", None, b"9"),
                   (core.EV_PING,), (core.EV_PONG,), (core.EV_UNSUB, b"9", -1)]


def test_tabs_and_multiple_spaces_separate_fields(core):
    evs, _ = parse_all(core, b"SUB\tfoo \t q\t 1\r\nPUB  foo\t\treply  3\r\nabc\r\n")
    assert evs == [(core.EV_SUB, b"foo", b"q", b"1"), (core.EV_PUB, b"foo", b"reply", None, b"abc")]


def test_bare_newline_ends_a_control_line(core):
    evs, _ = parse_all(core, b"SUB foo 1\nPING\nPUB foo 2\nhi\r\n")
    assert evs == [(core.EV_SUB, b"foo", None, b"1"), (core.EV_PING,),
                   (core.EV_PUB, b"foo", None, None, b"hi")]


def test_payload_must_end_with_crlf(core):
    evs, _ = parse_all(core, b"PUB foo 2\r\nhello\r\n")
    assert evs == [(core.EV_CLOSE, "Unknown Protocol Operation", "Parse Error")]


def test_unknown_operation(core):
    evs, _ = parse_all(core, b"FOO bar\r\n")
    assert evs == [(core.EV_CLOSE, "Unknown Protocol Operation", "Parse Error")]


@pytest.mark.parametrize("line", [b"RS+ foo 1\r\n", b"RMSG x\r\n", b"LS+ foo\r\n", b"A+ foo\r\n",
                                  b"MSG foo 1 2\r\nhi\r\n", b"PUX foo 1\r\n", b"PUBfoo 1\r\n"])
def test_route_and_leaf_ops_are_parse_errors_for_clients(core, line):
    evs, _ = parse_all(core, line)
    assert evs[-1] == (core.EV_CLOSE, "Unknown Protocol Operation", "Parse Error")


@pytest.mark.parametrize("line", [b"PUB foo\r\n", b"PUB foo bar baz 1\r\n", b"PUB foo x\r\n",
                                  b"PUB foo 1234567890\r\n", b"HPUB foo 5\r\n",
                                  b"HPUB foo 6 5\r\n", b"SUB foo\r\n", b"SUB a b c d\r\n",
                                  b"UNSUB\t\r\n"])
def test_malformed_arguments_close_without_error(core, line):
    evs, _ = parse_all(core, line)
    assert evs[-1][0] == core.EV_CLOSE
    assert evs[-1][1] is None


def test_max_control_line(core):
    evs, _ = parse_all(core, b"SUB " + b"a" * 5000 + b" 1\r\n")
    assert evs == [(core.EV_CLOSE, "maximum control line exceeded", "Maximum Control Line Exceeded")]
    # An incomplete line that is already too long fails before its end arrives.
    evs, _ = parse_all(core, b"PUB " + b"a" * 5000)
    assert evs == [(core.EV_CLOSE, "maximum control line exceeded", "Maximum Control Line Exceeded")]
    # PING's line is not an argument: junk after it is ignored, as in Go's OP_PING state.
    evs, _ = parse_all(core, b"PING " + b"x" * 5000 + b"\r\n")
    assert evs == [(core.EV_PING,)]


def test_max_payload(core):
    evs, _ = parse_all(core, b"PUB foo 11\r\n", max_payload=10)
    assert evs == [(core.EV_CLOSE, "Maximum Payload Violation", "Maximum Payload Exceeded")]


def test_hpub_needs_headers(core):
    evs, _ = parse_all(core, b"HPUB foo 12 12\r\nNATS/1.0\r\n\r\n\r\n", headers=False)
    assert evs == [(core.EV_CLOSE, None, "Protocol Violation")]


def test_hpub_event(core):
    evs, _ = parse_all(core, b"HPUB foo bar 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
    assert evs == [(core.EV_PUB, b"foo", b"bar", b"NATS/1.0\r\n\r\n", b"hi")]


def test_connect_info_err_ok_lines(core):
    evs, _ = parse_all(core, b'CONNECT {"verbose":false}\r\nCONNECT{"x":1}\r\nINFO {}\r\n+OK\r\n-ERR \'x\'\r\n')
    assert evs == [(core.EV_CONNECT, b'{"verbose":false}'), (core.EV_CONNECT, b'{"x":1}'),
                   (core.EV_INFO, b"{}"), (core.EV_OK,), (core.EV_ERR, b"'x'")]


def test_auth_pending_rejects_anything_but_connect(core):
    evs, c = parse_all(core, b"PING\r\n", auth_pending=True)
    assert evs == [(core.EV_CLOSE, "Authorization Violation", "Authentication Failure")]
    evs, c = parse_all(core, b"CONNECT {}\r\n", auth_pending=True)
    assert evs == [(core.EV_CONNECT, b"{}")]


def test_pedantic_invalid_publish_subject_is_reported_not_fatal(core):
    evs, c = parse_all(core, b"PUB foo.* 1\r\na\r\nPING\r\n", pedantic=True)
    assert [e[0] for e in evs] == [core.EV_PUB, core.EV_PING]
    assert c.take_output() == b"-ERR 'Invalid Publish Subject'\r\n"


def test_unsub_max(core):
    evs, _ = parse_all(core, b"UNSUB 1 10\r\nUNSUB 2 x\r\n")
    assert evs == [(core.EV_UNSUB, b"1", 10), (core.EV_UNSUB, b"2", -1)]


def test_nothing_after_a_protocol_error(core):
    c = core.Client(0, None, None)
    c.feed(b"BAD\r\n")
    assert c.next_event()[0] == core.EV_CLOSE
    c.feed(b"PING\r\n")
    assert c.next_event() is None


# ---------------------------------------------------------------------- hypothesis

subjects = st.lists(st.text(alphabet="abcxyz019-_", min_size=1, max_size=6), min_size=1,
                    max_size=4).map(lambda t: ".".join(t).encode())
payloads = st.binary(max_size=300)


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(["pub", "hpub", "sub", "unsub", "ping", "pong", "connect"]))
    subj = draw(subjects)
    reply = draw(st.one_of(st.none(), subjects))
    if kind == "pub":
        pay = draw(payloads)
        return encode.pub(subj, pay, reply), ("pub", subj, reply, None, pay)
    if kind == "hpub":
        hdr = b"NATS/1.0\r\nK: " + draw(st.binary(max_size=20)).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n\r\n"
        pay = draw(payloads)
        return encode.hpub(subj, hdr, pay, reply), ("pub", subj, reply, hdr, pay)
    if kind == "sub":
        sid = str(draw(st.integers(1, 10**6))).encode()
        queue = draw(st.one_of(st.none(), st.sampled_from([b"q1", b"workers"])))
        return encode.sub(subj, sid, queue), ("sub", subj, queue, sid)
    if kind == "unsub":
        sid = str(draw(st.integers(1, 10**6))).encode()
        mx = draw(st.one_of(st.none(), st.integers(1, 1000)))
        return encode.unsub(sid, mx), ("unsub", sid, -1 if mx is None else mx)
    if kind == "connect":
        return encode.connect({"verbose": False, "name": "x"}), ("connect",)
    return (encode.PING, ("ping",)) if kind == "ping" else (encode.PONG, ("pong",))


def _normal(core, e):
    if e[0] == core.EV_PUB:
        return ("pub", e[1], e[2], e[3], e[4])
    if e[0] == core.EV_SUB:
        return ("sub", e[1], e[2], e[3])
    if e[0] == core.EV_UNSUB:
        return ("unsub", e[1], e[2])
    return {core.EV_CONNECT: ("connect",), core.EV_PING: ("ping",), core.EV_PONG: ("pong",)}[e[0]]


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
@settings(max_examples=150, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=12), st.data())
def test_any_split_of_a_stream_yields_the_same_events(pure, fs, data):
    """Round trip: encoders → bytes → any split into reads → parser → the same frames."""
    core = load("core", pure=pure)
    stream = b"".join(f[0] for f in fs)
    expected = [f[1] for f in fs]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks, last = [], 0
    for c in cuts:
        chunks.append(stream[last:c])
        last = c
    chunks.append(stream[last:])
    got = [_normal(core, e) for e in parse_split(core, chunks)]
    assert got == expected
    whole = [_normal(core, e) for e in parse_all(core, stream)[0]]
    assert whole == expected


# ---------------------------------------------------------------------- routing

def routed(core, sublist_mod):
    router = core.Router(7)
    sl = sublist_mod.Sublist()
    return router, sl


def make_client(core, router, sl, cid, **opts):
    c = core.Client(cid, router, sl)
    c.verbose = False
    c.pedantic = False
    c.headers = True
    for k, v in opts.items():
        setattr(c, k, v)
    return c


@pytest.fixture
def sublist_mod(core):
    return load("sublist", pure=core.__name__.endswith("_py"))


def subscribe(sublist_mod, sl, client, subject, sid, queue=None):
    sub = sublist_mod.Subscription(subject, sid, queue, client)
    sl.insert(sub)
    client.subs[sid] = sub
    return sub


def test_router_delivers_ready_msg_frames(core, sublist_mod):
    router, sl = routed(core, sublist_mod)
    pub = make_client(core, router, sl, 1)
    a = make_client(core, router, sl, 2)
    b = make_client(core, router, sl, 3, headers=False)
    subscribe(sublist_mod, sl, a, b"foo.*", b"1")
    subscribe(sublist_mod, sl, b, b"foo.>", b"22")
    pub.feed(b"PUB foo.bar r 5\r\nhello\r\nHPUB foo.baz 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
    assert pub.next_event() is None
    assert a.take_output() == (b"MSG foo.bar 1 r 5\r\nhello\r\n"
                               b"HMSG foo.baz 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
    # A client without headers gets the payload only.
    assert b.take_output() == b"MSG foo.bar 22 r 5\r\nhello\r\nMSG foo.baz 22 2\r\nhi\r\n"
    assert set(router.touched) == {a, b}
    assert (pub.in_msgs, a.out_msgs, router.in_msgs, router.out_msgs) == (2, 2, 2, 4)


def test_router_echo_off(core, sublist_mod):
    router, sl = routed(core, sublist_mod)
    c = make_client(core, router, sl, 1, echo=False)
    subscribe(sublist_mod, sl, c, b"foo", b"1")
    c.feed(b"PUB foo 1\r\na\r\n")
    c.next_event()
    assert c.take_output() == b""


def test_router_queue_group_exactly_one(core, sublist_mod):
    router, sl = routed(core, sublist_mod)
    pub = make_client(core, router, sl, 1)
    members = [make_client(core, router, sl, 10 + i) for i in range(5)]
    for i, m in enumerate(members):
        subscribe(sublist_mod, sl, m, b"work", b"%d" % i, b"q")
    pub.feed(b"PUB work 1\r\nx\r\n" * 500)
    pub.next_event()
    counts = [m.take_output().count(b"MSG ") for m in members]
    assert sum(counts) == 500
    assert all(c > 0 for c in counts)


def test_router_auto_unsubscribe(core, sublist_mod):
    router, sl = routed(core, sublist_mod)
    c = make_client(core, router, sl, 1)
    sub = subscribe(sublist_mod, sl, c, b"foo", b"1")
    sub.max_msgs = 2
    c.feed(b"PUB foo 1\r\na\r\n" * 3)
    c.next_event()
    assert c.take_output().count(b"MSG ") == 2
    assert router.expired == [sub]


def test_router_no_responders(core, sublist_mod):
    router, sl = routed(core, sublist_mod)
    c = make_client(core, router, sl, 1, no_responders=True)
    subscribe(sublist_mod, sl, c, b"_INBOX.>", b"9")
    c.feed(b"PUB svc _INBOX.1 0\r\n\r\n")
    c.next_event()
    assert c.take_output() == (b"HMSG _INBOX.1 9 35 35\r\nNATS/1.0 503\r\nNats-Subject: svc\r\n\r\n\r\n")


@pytest.mark.parametrize("reply", [b"_R_.x.y", b"$JS.ACK.a.b", b"_GR_.x.y"])
def test_router_reserved_reply(core, sublist_mod, reply):
    router, sl = routed(core, sublist_mod)
    c = make_client(core, router, sl, 1)
    c.feed(b"PUB foo %s 0\r\n\r\n" % reply)
    c.next_event()
    assert c.take_output() == b"-ERR 'Permissions Violation for Publish with Reply of \"%s\"'\r\n" % reply


def test_router_slow_consumer(core, sublist_mod):
    router, sl = routed(core, sublist_mod)
    pub = make_client(core, router, sl, 1)
    slow = make_client(core, router, sl, 2, max_pending=100)
    subscribe(sublist_mod, sl, slow, b"foo", b"1")
    pub.feed(b"PUB foo 40\r\n" + b"x" * 40 + b"\r\n" + b"PUB foo 40\r\n" + b"x" * 40 + b"\r\n")
    pub.next_event()
    assert slow.slow
    assert slow.out_len < 100
    assert router.slow_consumers == 1


def peer_ring(core, records):
    """A ring of the core's twin holding MSG records from a peer worker."""
    ring_mod = load("ring", pure=core.__name__.endswith("_py"))
    buf = bytearray(ring_mod.ring_size(1 << 16))
    ring_mod.format_ring(buf, 1 << 16)
    ring = ring_mod.Ring(buf)
    for acc, subject, payload in records:
        assert ring.try_write(1, acc, subject, b"", b"", payload)
    return ring


@pytest.mark.parametrize("mode", ["unpaced", "paced", "pushed"])
def test_drain_peer_stops_at_a_receiver_that_fell_behind(core, sublist_mod, mode):
    # A peer's messages for a receiver over 3/4 of its max_pending: a paced drain stops
    # after the delivery that crossed the mark and leaves the rest in the ring; an
    # unpaced one, or a paced one that gave up on (pushed) this receiver, delivers the
    # whole batch, and the receiver becomes a slow consumer.
    router, sl = routed(core, sublist_mod)
    router.sublists[b"$G"] = sl
    peer = make_client(core, router, sl, -1)
    peer.peer = True
    slow = make_client(core, router, sl, 2, max_pending=2000)
    subscribe(sublist_mod, sl, slow, b"foo", b"1")
    ring = peer_ring(core, [(b"$G", b"foo", b"x" * 300)] * 8)
    pushed = slow if mode == "pushed" else None
    assert peer.drain_peer(ring, 512, mode != "unpaced", pushed) is None
    delivered = slow.take_output().count(b"MSG foo 1 300")
    if mode == "paced":
        assert (delivered, slow.slow, peer.stall_target is slow) == (6, False, True)
        assert ring.pending_bytes() > 0
        peer.stall_target = None
        assert peer.drain_peer(ring, 512, True) is None   # the receiver drained meanwhile
        assert slow.take_output().count(b"MSG foo 1 300") == 2
    else:
        assert (delivered, slow.slow) == (6, True)
    assert ring.pending_bytes() == 0


def test_drain_peer_stops_once_enough_internal_deliveries_wait(core, sublist_mod):
    # A peer's publishes for a server subscription (a stream's) interleaved with messages
    # for a client: a drain bounded by max_internal stops once that many internal
    # deliveries wait in Router.internal, and leaves the rest in the ring; the client's
    # messages do not count; an unbounded drain takes everything.
    router, sl = routed(core, sublist_mod)
    router.sublists[b"$G"] = sl
    peer = make_client(core, router, sl, -1)
    peer.peer = True
    stream = make_client(core, router, sl, 2, internal=True)
    reader = make_client(core, router, sl, 3)
    subscribe(sublist_mod, sl, stream, b"js", b"1")
    subscribe(sublist_mod, sl, reader, b"core", b"2")
    records = [(b"$G", b"js" if i % 2 else b"core", b"%d" % i) for i in range(20)]
    ring = peer_ring(core, records)
    assert peer.drain_peer(ring, 512, False, None, 4) is None
    assert [item[4] for item in router.internal] == [b"1", b"3", b"5", b"7"]
    assert reader.take_output().count(b"MSG core 2") == 4
    assert ring.pending_bytes() > 0
    router.internal = []
    assert peer.drain_peer(ring, 512) is None
    assert [item[4] for item in router.internal] == [b"%d" % i for i in range(9, 20, 2)]
    assert reader.take_output().count(b"MSG core 2") == 6
    assert ring.pending_bytes() == 0


def test_router_verbose_ok(core, sublist_mod):
    router, sl = routed(core, sublist_mod)
    c = make_client(core, router, sl, 1, verbose=True)
    c.feed(b"PUB foo 0\r\n\r\n")
    c.next_event()
    assert c.take_output() == b"+OK\r\n"


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 70000), min_size=1, max_size=6), st.integers(1, 9000))
def test_large_payloads_read_in_fixed_chunks(pure, sizes, chunk):
    """Payloads split over many reads arrive whole, with frames after them intact."""
    core = load("core", pure=pure)
    stream = b"".join(encode.pub(b"big.%d" % i, bytes([i % 251]) * n) + encode.PING
                      for i, n in enumerate(sizes))
    chunks = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
    got = parse_split(core, chunks)
    expected = []
    for i, n in enumerate(sizes):
        expected += [(core.EV_PUB, b"big.%d" % i, None, None, bytes([i % 251]) * n), (core.EV_PING,)]
    assert got == expected


def test_route_matches_one_subject_and_shows_another(core, sublist_mod):
    # JetStream deliveries: matched on the inbox, delivered with the message's own subject.
    router, sl = routed(core, sublist_mod)
    server = make_client(core, router, sl, 0, internal=True)
    inbox = make_client(core, router, sl, 1)
    subscribe(sublist_mod, sl, inbox, b"_INBOX.x", b"4")
    assert server.route(b"_INBOX.x", b"$JS.ACK.S.C.1.1.1.0.0", b"NATS/1.0\r\n\r\n", b"hi",
                        b"orders.new")
    assert inbox.take_output() == (b"HMSG orders.new 4 $JS.ACK.S.C.1.1.1.0.0 12 14\r\n"
                                   b"NATS/1.0\r\n\r\nhi\r\n")
    assert not server.route(b"nobody", None, None, b"x")


def test_route_reserved_replies_only_for_internal_clients(core, sublist_mod):
    router, sl = routed(core, sublist_mod)
    client = make_client(core, router, sl, 1)
    sink = make_client(core, router, sl, 2)
    subscribe(sublist_mod, sl, sink, b"foo", b"1")
    assert not client.route(b"foo", b"$JS.ACK.S.C.1.1.1.0.0", None, b"x")
    assert b"Permissions Violation for Publish with Reply" in client.take_output()
    assert sink.take_output() == b""
