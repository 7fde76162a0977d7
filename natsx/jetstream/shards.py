"""Which worker runs the JetStream of an account: the placement of JetStream shards.

Theory of operation
-------------------
Every worker of a server started with ``-js`` runs a ``JetStream`` (natsx.jetstream.manager),
and each account with JetStream is owned by exactly one of them: ``owner(account, workers)``,
a stable hash of the account name (CRC-32) modulo the number of workers. The owner opens the
account's streams and consumers (from its store directory, through the raft process), answers
its API requests, captures its publishes and serves its consumers; its shard is the set of
accounts it owns. The hash needs no stored placement: a restarted worker, or a whole server
restarted with the same ``--workers``, finds its accounts again; a server restarted with a
different worker count simply opens each account in its new owner (the files are the same).

The unit is the account, not the stream, because everything that spans streams stays inside
an account: subject overlap between streams, the account's limits (``max_streams``,
``max_storage``...), ``$JS.API.INFO``, ``STREAM.NAMES``/``LIST`` with their paging, and
mirrors and sources (which read their origin's store directly, natsx.jetstream.sourcing). An
owner therefore answers every request of the account on its own, with Go's exact answers,
and no request needs a coordinator or a merge. (Spreading one account's streams over
several workers needs those: gathering account-wide answers, serialising creates, sourcing
over the API; it is not done.)

How the other workers reach the owner: the owner's subscriptions on the account's stream
subjects, ``$JS.ACK``, pull and direct-get subjects are announced to every worker, so their
clients' publishes, acks and pulls arrive over the rings; API requests are relayed with the
requesting client's details (natsx.jetstream.relay), each worker relaying an account's
requests once the owner's relay interest in that account has reached it. While the owner
restarts the relay finds no interest and answers the request itself with a ``503`` status
(no responders), which clients report at once instead of timing out; publishes to the
account's streams meet no interest either and get the same status from the core.

The server-wide limits (``max_memory_store``, ``max_file_store``) are checked on the sum of
every worker's figures, which each publishes in the supervisor's shared table
(natsx.jetstream.serverlimits); the account limits are exact, as each account is whole in
one worker.
"""
from __future__ import annotations

import zlib


def owner(account: str, workers: int) -> int:
    """The index of the worker that runs ``account``'s JetStream."""
    if workers <= 1:
        return 0
    return zlib.crc32(account.encode("utf-8", "surrogateescape")) % workers


def owns(server, account: str) -> bool:
    """Whether ``server`` (a worker) runs the JetStream of ``account``."""
    if server.mesh is None:
        return True
    return owner(account, server.worker_count) == server.worker_index
