"""The streams of an account on every worker, as its home sees them.

Theory of operation
-------------------
An account's streams are spread over the workers (natsx.jetstream.shards) and its home
vets creates and updates and answers ``STREAM.NAMES``/``LIST`` for all of them. It needs no
messages to know them: each stream's owner writes its config durably to the store directory
(``<account>/streams/<name>/meta.inf``, natsx.jetstream.manager) *before* it answers a
create or an update, and removes the directory before it answers a delete, so the directory
is the account's catalog as clients have seen it. ``configs`` reads it, the streams this
worker runs coming from memory; a ``meta.inf`` is parsed again only when its modification
time, size or inode changed (the owner replaces it whole, by a rename). The directory is
read once per batch of the worker (``JetStream.epoch``; a create vets, checks and counts
the catalog several times): within a batch the streams this worker creates or deletes
are taken from memory, the other workers' as they were when the batch first looked.

A create or update the home approved and passed to the owner is not on disk until the
owner has run it: ``hold`` keeps its config for the vetting of the next requests until the
directory shows it (or ``HOLD`` seconds have passed, when the owner refused it or is gone),
so the home serialises the account's creates: two racing creates of overlapping subjects,
or past ``max_streams``, cannot both pass.
"""
from __future__ import annotations

import os
import time

HOLD = 5.0


class Catalog:
    def __init__(self, account) -> None:
        self.account = account
        self.held: dict = {}    # name -> (config, deadline)
        self._parsed: dict = {}  # name -> ((mtime_ns, size, inode), config)
        self._epoch = -1         # the batch ``_files`` was read in
        self._files: dict = {}   # name -> config, from the directory

    def forget(self, name: str) -> None:
        """This worker deleted stream ``name`` (its directory is gone)."""
        self._files.pop(name, None)

    def _disk(self) -> dict:
        account = self.account
        epoch = account.js.epoch
        if epoch != self._epoch:
            self._files = self._read()
            self._epoch = epoch
        streams = account.streams
        out = {name: (streams[name].cfg if name in streams else cfg)
               for name, cfg in self._files.items()}
        for name, stream in streams.items():
            out.setdefault(name, stream.cfg)
        return out

    def _read(self) -> dict:
        from natsx.jetstream.manager import read_meta

        account = self.account
        root = os.path.join(account.dir, "streams")
        try:
            names = os.listdir(root)
        except OSError:
            names = []
        out = {}
        parsed, seen = self._parsed, {}
        for name in names:
            stream = account.streams.get(name)
            if stream is not None:
                out[name] = stream.cfg
                continue
            path = os.path.join(root, name, "meta.inf")
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            known = parsed.get(name)
            if known is not None and known[0] == key:
                cfg = known[1]
            else:
                keys = account.meta_keys(name)
                meta = read_meta(path) if keys is None else read_meta(path, keys)[0]
                cfg = meta.get("config") if isinstance(meta, dict) else None
                if not isinstance(cfg, dict):
                    continue
            seen[name] = (key, cfg)
            out[name] = cfg
        self._parsed = seen
        return out

    def configs(self, vetting: bool = False) -> dict:
        out = self._disk()
        if vetting and self.held:
            now = time.monotonic()
            for name, (cfg, deadline) in list(self.held.items()):
                if deadline < now or out.get(name) == cfg:
                    del self.held[name]
                else:
                    out[name] = cfg
        return out

    def hold(self, name: str, cfg: dict, seconds: float = HOLD) -> None:
        self.held[name] = (cfg, time.monotonic() + seconds)
