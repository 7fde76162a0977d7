"""RaftLink's release of held rounds, without sockets or a raft process: the raft client's
answers are simulated by moving each group's ``confirmed`` and ``errors`` and calling
``release`` as the client's reader does after a read."""
from types import SimpleNamespace

from natsx.jetstream.raftlink import RaftLink
from natsx.storage.raftlmdb import RaftLmdbStore


class _Server:
    def __init__(self):
        self.batches = 0

    def run_batch(self, fn, *args):
        self.batches += 1
        return fn(*args)


class _JS:
    def __init__(self):
        self.server = _Server()
        self.routed: list[list] = []

    def route(self, outbox):
        self.routed.append([m[4] for m in outbox])


def _stream(name, last_proposal, group, cfg=None):
    store = RaftLmdbStore.__new__(RaftLmdbStore)     # only what hold() reads
    store.last_proposal = last_proposal
    store.group = group
    return SimpleNamespace(name=name, store=store, cfg=cfg or {},
                           _pub_ack=b'{"stream":"%s"' % name.encode())


def _group():
    return SimpleNamespace(confirmed=0, closed=False, errors={})


def _ack(stream, seq):
    return ("$G", b"_r", None, None, stream._pub_ack + b',"seq":%d}' % seq, None)


def _link():
    return RaftLink(_JS(), "unused")


def test_rounds_leave_in_order_once_their_proposals_are_durable():
    link = _link()
    g = _group()
    a = _stream("A", 1, g)
    assert link.hold([a], [_ack(a, 1)])
    a.store.last_proposal = 2
    assert link.hold([a], [_ack(a, 2)])
    link.release()
    assert link.js.routed == []                  # nothing durable yet
    g.confirmed = 2                              # both answered in one read
    link.release()
    assert link.js.routed == [[_ack(a, 1)[4], _ack(a, 2)[4]]]    # one batch, in order
    assert not link.rounds


def test_a_later_round_waits_for_an_earlier_one_of_another_stream():
    link = _link()
    ga, gb = _group(), _group()
    a, b = _stream("A", 1, ga), _stream("B", 1, gb)
    assert link.hold([a], [_ack(a, 1)])
    assert link.hold([b], [_ack(b, 1)])
    gb.confirmed = 1
    link.release()
    assert link.js.routed == []                  # B's answer sits behind A's round
    # A round with nothing to wait for still queues behind the earlier ones.
    assert link.hold([], [("$G", b"x", None, None, b"delivery", None)])
    ga.confirmed = 1
    link.release()
    assert link.js.routed == [[_ack(a, 1)[4], _ack(b, 1)[4], b"delivery"]]


def test_an_async_persist_stream_is_not_held():
    # persist_mode "async": its answers leave with its proposal in flight, unless a round
    # before them still waits (order is kept); a default stream in the same batch holds
    # the whole outbox.
    link = _link()
    ga, gd = _group(), _group()
    a = _stream("A", 1, ga, {"persist_mode": "async"})
    d = _stream("D", 1, gd)
    assert not link.hold([a], [_ack(a, 1)])
    assert link.hold([a, d], [_ack(a, 2), _ack(d, 1)])
    a.store.last_proposal = 3
    assert link.hold([a], [_ack(a, 3)])          # behind the held round
    gd.confirmed = 1
    link.release()
    assert link.js.routed == [[_ack(a, 2)[4], _ack(d, 1)[4], _ack(a, 3)[4]]]
    assert not link.rounds


def test_nothing_held_routes_at_once():
    link = _link()
    g = _group()
    a = _stream("A", 3, g)
    g.confirmed = 3                              # already answered
    assert not link.hold([a], [_ack(a, 3)])


def test_a_refused_proposal_drops_only_its_streams_pub_acks():
    link = _link()
    ga, gb = _group(), _group()
    a, b = _stream("A", 1, ga), _stream("B", 1, gb)
    other = ("$G", b"d", None, None, b"a delivery", None)
    assert link.hold([a, b], [_ack(a, 1), _ack(b, 1), other])
    ga.confirmed, ga.errors[1] = 1, "stale epoch"
    gb.confirmed = 1
    link.release()
    assert link.js.routed == [[_ack(b, 1)[4], b"a delivery"]]
    assert ga.errors == {}


def test_a_dropped_group_releases_what_waited_on_it():
    link = _link()
    g = _group()
    a = _stream("A", 1, g)
    assert link.hold([a], [_ack(a, 1)])
    g.closed = True
    link.release()
    assert link.js.routed == [[_ack(a, 1)[4]]]


def test_release_reentered_by_its_own_routing_looks_again():
    link = _link()
    g = _group()
    a = _stream("A", 1, g)
    assert link.hold([a], [_ack(a, 1)])
    js = link.js
    inner = []

    def route(outbox):
        js.routed.append([m[4] for m in outbox])
        if len(js.routed) == 1:
            # Routing made the next round durable and the raft client report it.
            a.store.last_proposal = 2
            assert link.hold([a], [_ack(a, 2)])
            g.confirmed = 2
            link.release()
            inner.append(len(js.routed))

    js.route = route
    g.confirmed = 1
    link.release()
    assert inner == [1]                          # the nested call routed nothing itself
    assert js.routed == [[_ack(a, 1)[4]], [_ack(a, 2)[4]]]
    assert not link.rounds


def test_a_failing_route_is_logged_and_later_rounds_still_leave(caplog):
    link = _link()
    g = _group()
    a = _stream("A", 1, g)
    js = link.js
    calls = []

    def route(outbox):
        calls.append([m[4] for m in outbox])
        if len(calls) == 1:
            raise RuntimeError("a delivery failed")

    js.route = route
    assert link.hold([a], [_ack(a, 1)])
    g.confirmed = 1
    link.release()                               # does not raise
    assert "routing answers after a commit failed" in caplog.text
    a.store.last_proposal = 2
    assert link.hold([a], [_ack(a, 2)])
    g.confirmed = 2
    link.release()
    assert calls == [[_ack(a, 1)[4]], [_ack(a, 2)[4]]]
    assert not link._releasing
