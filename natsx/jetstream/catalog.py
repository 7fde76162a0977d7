"""The streams of an account on every worker, as its home sees them.

Theory of operation
-------------------
An account's streams are spread over the workers (natsx.jetstream.shards) and its home
vets creates and updates and answers ``STREAM.NAMES``/``LIST`` for all of them. It needs no
messages to know them: each stream's owner writes its config durably to the store directory
(``<account>/streams/<name>/meta.inf``, natsx.jetstream.manager) *before* it answers a
create or an update, and removes the directory before it answers a delete, so the directory
is the account's catalog as clients have seen it. ``configs`` reads it, the streams this
worker runs coming from memory.

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

    def _disk(self) -> dict:
        from natsx.jetstream.manager import read_meta

        account = self.account
        root = os.path.join(account.dir, "streams")
        try:
            names = os.listdir(root)
        except OSError:
            names = []
        out = {}
        for name in names:
            stream = account.streams.get(name)
            if stream is not None:
                out[name] = stream.cfg
                continue
            meta = read_meta(os.path.join(root, name, "meta.inf"))
            if meta and isinstance(meta.get("config"), dict):
                out[name] = meta["config"]
        for name, stream in account.streams.items():
            out.setdefault(name, stream.cfg)
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

    def hold(self, name: str, cfg: dict) -> None:
        self.held[name] = (cfg, time.monotonic() + HOLD)
