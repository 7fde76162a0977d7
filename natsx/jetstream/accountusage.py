"""An account's JetStream figures summed over the workers that run its streams.

Theory of operation
-------------------
With streams spread over the workers (natsx.jetstream.shards) an account's figures are a
sum: the bytes its streams store (checked against ``max_memory``/``max_storage`` on every
publish, Go's JSAccountResourcesExceededErr), its streams' ``max_bytes`` reservations, its
stream and consumer counts and its API counters (``$JS.API.INFO``). Each account has a small
file in its store directory, ``natsx-usage.<workers>``, mapped shared by every worker: one
slot of ``FIELDS`` 64-bit integers per worker. A worker writes only its own slot (aligned
stores, so a reader never sees a torn figure) whenever its figures change: after each
round's commit for the accounts whose streams it wrote, after stream and consumer creates
and deletes, after each API answer. A reader sums the other slots and adds its own live
figures. The file outlives the workers: a restarted worker's slot still holds the figures of
the streams it is reopening (the same ones, by the hash), and it rewrites them once it has.
The worker count is in the name, so a server restarted with another count starts afresh.

The home also says whether it let the account have JetStream: it holds the account's limits
against the server's (Go's sufficientResources) and may refuse them (``refuse``); the other
workers then disable the account too (natsx.jetstream.relay). That verdict holds for one
run of the server only: the home stamps it with the relay secret, drawn anew by each
supervisor, so a verdict a previous run left in the file is ignored.

Figures another worker wrote reach a reader at its next read; two workers storing into the
same account in the same instant can each pass the account limit by what the other stores
in that batch, as two Go servers of a cluster can.
"""
from __future__ import annotations

import logging
import mmap
import os
import struct

log = logging.getLogger("natsx")

FIELDS = ("memory", "file", "streams", "consumers", "api_total", "api_errors",
          "reserved_memory", "reserved_file", "home")
HOME_REFUSED = 2    # "home": 1 in the home's slot when it enabled the account, 2 refused
_STAMP = 16         # the file starts with the stamp of the run that wrote the verdict
_INDEX = {name: i for i, name in enumerate(FIELDS)}
_SLOT = struct.Struct("<%dq" % len(FIELDS))


def _stamp() -> bytes:
    from natsx.jetstream.relay import SECRET

    return bytes.fromhex(SECRET)[:_STAMP]


class AccountUsage:
    """The shared figures of one account; ``index`` is this worker's slot."""

    def __init__(self, directory: str, workers: int, index: int) -> None:
        self.workers = workers
        self.index = index
        self.map = None
        path = os.path.join(directory, "natsx-usage.%d" % workers)
        size = _STAMP + _SLOT.size * workers
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)
                self.map = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("JetStream: cannot map the account figures %r: %s", path, exc)

    def write(self, figures: dict) -> None:
        """Writes this worker's figures (missing ones: 0)."""
        if self.map is not None:
            _SLOT.pack_into(self.map, _STAMP + self.index * _SLOT.size,
                            *(int(figures.get(name, 0)) for name in FIELDS))
            if figures.get("home"):
                self.map[:_STAMP] = _stamp()

    def others(self, field: str) -> int:
        """The sum of ``field`` over the other workers' slots."""
        if self.map is None:
            return 0
        i, total, size = _INDEX[field], 0, _SLOT.size
        for w in range(self.workers):
            if w != self.index:
                total += _SLOT.unpack_from(self.map, _STAMP + w * size)[i]
        return total

    def refused(self, home: int) -> bool:
        """Whether the account's home (worker ``home``) refused it JetStream in this run."""
        if self.map is None or self.map[:_STAMP] != _stamp():
            return False
        return _SLOT.unpack_from(self.map, _STAMP + home * _SLOT.size)[
            _INDEX["home"]] == HOME_REFUSED

    def others_all(self) -> dict:
        """Every field summed over the other workers' slots."""
        out = dict.fromkeys(FIELDS, 0)
        if self.map is None:
            return out
        for w in range(self.workers):
            if w != self.index:
                for name, value in zip(FIELDS, _SLOT.unpack_from(self.map,
                                                                  _STAMP + w * _SLOT.size)):
                    out[name] += value
        return out

    def refuse(self) -> None:
        """The home refuses the account JetStream (its slot: no figures, the verdict)."""
        self.write({"home": HOME_REFUSED})

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except (BufferError, ValueError):
                pass
            self.map = None
