"""Which worker runs a stream, and which one coordinates an account: JetStream placement.

Theory of operation
-------------------
Every worker of a server started with ``-js`` runs a ``JetStream`` (natsx.jetstream.manager)
with every account that has JetStream enabled, and each *stream* is owned by exactly one
worker: ``stream_owner(account, stream, workers)``, a stable hash (BLAKE2b) of the account
and stream names modulo the number of workers. (Not CRC-32: its low bits are a linear
function of the input bits, so names that differ in one character, ``S1``, ``S2``, ``S3``,
would land together far more often than chance.) The owner opens the stream and its
consumers (from the store directory, through the raft process), captures its publishes,
serves its consumers, acks, pulls and direct gets, and answers every API request that names
the stream (``$JS.API.STREAM.<op>.<stream>``, ``$JS.API.CONSUMER.<op>.<stream>...``). One
busy account's streams therefore spread over the cores. The hash needs no stored
placement: a restarted worker finds its streams again, the other workers' streams are not
touched; a server restarted with another worker count opens each stream in its new owner
(the files are the same).

What spans the streams of an account has one coordinator, the account's *home*:
``home(account, workers)``, a hash of the account name alone. The home answers
``$JS.API.INFO``, ``STREAM.NAMES`` and ``STREAM.LIST`` (with Go's paging, offset and subject
filter) and vets ``STREAM.CREATE``, ``STREAM.UPDATE`` and ``STREAM.RESTORE`` before the owner
runs them:
subject overlap with the account's other streams (10065), ``max_streams``, and the
``max_bytes`` reservations against ``max_memory``/``max_storage``. It reads the account's
stream catalog from the store directory, where every owner writes a stream's ``meta.inf``
(durably) before it answers the create, update or delete; creates the home approved whose
``meta.inf`` has not appeared yet are held in the catalog too (natsx.jetstream.catalog),
so two racing creates cannot both pass. The account's figures (bytes stored, streams,
consumers, API counters) are summed from a small shared file each worker writes its slot
of (natsx.jetstream.accountusage), so the account limits checked on each publish and the
INFO answer are account-wide. ``STREAM.LIST`` needs every listed stream's state: the home
asks the owners (natsx.jetstream.coordinator) and merges their answers.

How requests travel is natsx.jetstream.relay: each worker answers its own clients' requests
when it is the target, and relays the others to the target worker with the client's details.
While a worker restarts, the requests for its streams, and the account-wide requests of the
accounts it is home of, get a ``503`` (no responders); the other streams go on. Mirrors and
sources read a file origin another worker runs from its store, and a memory one through a
consumer on it, as Go sources any stream (natsx.jetstream.sourcing). A restore's config is
held by the home while its upload runs (natsx.jetstream.catalog), so a create racing it
for the same subjects or the last stream of ``max_streams`` is refused.

An account's limits are held against the server's (Go's sufficientResources) by its home
alone; when they do not fit, the home says so in the account's shared file
(natsx.jetstream.accountusage) and the other workers disable the account as well (at
enable time, or at the next API request if they enabled it first), so every worker answers
10039.
"""
from __future__ import annotations

import hashlib
import zlib

#: The API requests the home vets, then passes to the stream's owner.
VETTED_REQUESTS = {("STREAM", "CREATE"), ("STREAM", "UPDATE"), ("STREAM", "RESTORE")}
#: The API requests the home answers (INFO, NAMES, LIST) or vets.
HOME_REQUESTS = {("INFO",), ("STREAM", "NAMES"), ("STREAM", "LIST")} | VETTED_REQUESTS


def home(account: str, workers: int) -> int:
    """The index of the worker that coordinates ``account``'s JetStream."""
    if workers <= 1:
        return 0
    return zlib.crc32(account.encode("utf-8", "surrogateescape")) % workers


#: The name the account-sharding code used; the home is the same hash.
owner = home


def stream_owner(account: str, stream: str, workers: int) -> int:
    """The index of the worker that runs stream ``stream`` of ``account``."""
    if workers <= 1:
        return 0
    key = account.encode("utf-8", "surrogateescape") + b"\0" + \
        stream.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % workers


def sharded(server) -> bool:
    """Whether ``server``'s JetStream is spread over several workers."""
    return server.mesh is not None and server.worker_count > 1


def is_home(server, account: str) -> bool:
    """Whether ``server`` (a worker) coordinates ``account``."""
    if not sharded(server):
        return True
    return home(account, server.worker_count) == server.worker_index


#: Kept for the callers that ask which worker holds an account's account-wide state.
owns = is_home


def runs_stream(server, account: str, stream: str) -> bool:
    """Whether ``server`` (a worker) runs stream ``stream`` of ``account``."""
    if not sharded(server):
        return True
    return stream_owner(account, stream, server.worker_count) == server.worker_index


def target(account: str, tokens: list, workers: int):
    """The worker a request with subject ``tokens`` (``$JS.API...`` split on dots) goes
    to: ``("home", index)`` for the account-wide ones, ``("owner", index)`` for those
    naming a stream, None for what any worker answers (unknown subjects)."""
    if len(tokens) < 3:
        return None
    key = tuple(tokens[2:4]) if len(tokens) > 3 else (tokens[2],)
    if key in HOME_REQUESTS or (len(tokens) == 3 and key == ("INFO",)):
        return "home", home(account, workers)
    name = None
    if tokens[2] == "STREAM":
        if len(tokens) > 5 and tokens[3] in ("MSG", "LEADER", "PEER"):
            name = tokens[5]
        elif len(tokens) > 4:
            name = tokens[4]
    elif tokens[2] == "CONSUMER":
        if len(tokens) > 5 and tokens[3] in ("DURABLE", "LEADER"):
            name = tokens[5]
        elif len(tokens) > 4:
            name = tokens[4]
    if not name:
        return None
    return "owner", stream_owner(account, name, workers)
