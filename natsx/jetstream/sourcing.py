"""Mirrors and sources between streams of the same account.

Theory of operation
-------------------
A ``Feed`` copies messages from an origin stream into a target stream: a mirror keeps the
origin's sequence numbers (gaps become skipped sequences) and takes everything; a source
appends what matches its ``filter_subject``/``subject_transforms``, mapped to the
destination subject, with a ``Nats-Stream-Source: <origin> <seq> <filter> <dest>`` header
as Go writes it. Go runs these through internal consumers over the network; here both
streams live in the same process, so a feed reads the origin's store directly. The origin
signals its feeds when it stores a message; a feed then runs in the batch like a consumer
(``deliver``), so what it copies is committed with that batch. On restart a feed resumes
after the last origin sequence found in the target (the mirror's last sequence, or the
newest ``Nats-Stream-Source`` header for that origin). Sources in other domains or accounts
(``external``) are not supported.

With streams spread over the workers (natsx.jetstream.shards) the origin may run in another
worker. A file origin is then read from its environment directly (``LmdbReader``: read
transactions beside the raft process writing it, so only what was applied and acknowledged
is copied), and since the origin's stores do not signal this worker the feed polls it every
``POLL`` seconds. A memory origin in another worker cannot be read from here: such a feed
copies nothing (a known limit of the placement; Go would source it over the network).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from natsx.jetstream.util import (SubjectTransform, add_headers, get_header, parse_rfc3339,
                                  subject_matches)
from natsx.storage import ErrSequenceMismatch, StoreError, crypt
from natsx.storage.lmdbstore import LmdbReader

if TYPE_CHECKING:
    from natsx.jetstream.stream import Stream

log = logging.getLogger("natsx")

BATCH = 4096    # messages copied per batch before yielding to the next one
POLL = 0.05     # seconds between reads of an origin run by another worker


class _RemoteOrigin:
    """A file stream another worker runs, as a feed reads it. LMDB allows one open of an
    environment per process, so the feeds of a worker share one per origin (``_readers``),
    reopened when the origin was deleted and created again."""

    def __init__(self, path: str, created, keys) -> None:
        self.path = path
        self.created = created
        self.keys = keys
        self.store = self._open()

    def _open(self) -> "_Reader":
        store = _Reader(self.path)
        try:
            # An encrypted origin (natsx.storage.crypt): its stream key opens its records.
            store._use_codec(crypt.reader_codec(store._env, self.keys))
        except Exception:
            store.close()
            raise
        return store

    def renew(self, created) -> None:
        if created != self.created:
            self.store.close()
            self.store = self._open()
            self.created = created


_readers: dict = {}


class _Reader(LmdbReader):
    """``LmdbReader`` with the one more read a feed makes on its origin."""

    def get_seq_from_time(self, ts_ns: int) -> int:
        """The first sequence stored at or after ``ts_ns``; ``last_seq + 1`` if none (the
        store's answer, found by scanning: a feed asks once, when it starts)."""
        seq = 0
        while True:
            try:
                sm, seq = self.load_next_msg("", start=seq + 1)
            except StoreError:
                return self.state().last_seq + 1
            if sm.ts >= ts_ns:
                return seq


def _stream_keys(account, name: str):
    """The keys of stream ``name``'s records (not its meta file), or None."""
    keyring = account.js.settings.keyring
    return keyring.for_stream(account.name, name) if keyring is not None else None


def _remote_origin(target: "Stream", name: str):
    """The origin ``name`` when another worker runs it and it is a file stream."""
    import os

    from natsx.jetstream.manager import read_meta

    account = target.account
    if account.catalog is None:
        return None
    keys = account.meta_keys(name)
    meta_path = os.path.join(account.stream_dir(name), "meta.inf")
    meta = read_meta(meta_path) if keys is None else read_meta(meta_path, keys)[0]
    if not meta or (meta.get("config") or {}).get("storage", "file") != "file":
        return None
    path = os.path.join(account.stream_dir(name), "msgs")
    try:
        origin = _readers.get(path)
        if origin is None:
            origin = _readers[path] = _RemoteOrigin(path, meta.get("created"),
                                                    _stream_keys(account, name))
        else:
            origin.renew(meta.get("created"))
        return origin
    except Exception as exc:
        log.debug("JetStream: cannot read origin %r yet: %s", name, exc)
        return None


def iname(spec: dict) -> str:
    """Go's StreamSource.composeIName: name, filter(s) and destination(s)."""
    transforms = spec.get("subject_transforms") or []
    if transforms:
        src = "\f".join(t.get("src") or ">" for t in transforms)
        dest = "\f".join(t.get("dest") or ">" for t in transforms)
    else:
        src, dest = spec.get("filter_subject") or ">", ">"
    return f"{spec['name']} {src} {dest}"


class Feed:
    """One mirror or source of a target stream; see the module docstring."""

    def __init__(self, target: "Stream", spec: dict, mirror: bool) -> None:
        self.target = target
        self.spec = spec
        self.mirror = mirror
        self.origin = spec["name"]
        self.name = f"{target.name} <- {self.origin}"
        self.iname = iname(spec)
        parts = self.iname.split(" ")
        self.hdr_tail = f" {parts[1]} {parts[2]}"
        transforms = spec.get("subject_transforms") or []
        self.transforms = [SubjectTransform(t.get("src") or ">", t.get("dest") or "")
                           for t in transforms]
        self.filter = spec.get("filter_subject") or ""
        self.next_seq = 0           # 0 until the position is known
        self.signaled = False
        self.closed = False
        self.last_active = 0
        self.remote = None          # the origin's reader when another worker runs it
        self.poll_timer = None

    # ------------------------------------------------------------------ position

    def _resume(self, origin: "Stream") -> int:
        store = self.target.store
        state = store.state()
        if self.mirror:
            if state.last_seq:
                return state.last_seq + 1
        else:
            seq = state.last_seq
            while state.msgs and seq >= state.first_seq:
                try:
                    sm, seq = store.load_prev_msg("", start=seq)
                except StoreError:
                    break
                hdr = get_header(sm.headers, b"Nats-Stream-Source")
                if hdr:
                    fields = hdr.decode("utf-8", "replace").split(" ")
                    if fields[0] == self.origin and len(fields) > 1 and fields[1].isdigit():
                        return int(fields[1]) + 1
                seq -= 1
        if self.spec.get("opt_start_seq"):
            return int(self.spec["opt_start_seq"])
        if self.spec.get("opt_start_time"):
            return origin.store.get_seq_from_time(parse_rfc3339(self.spec["opt_start_time"]))
        return max(origin.store.state().first_seq, 1)

    # ------------------------------------------------------------------ copying

    def signal(self) -> None:
        if not self.signaled and not self.closed:
            self.signaled = True
            self.target.js.signaled.append(self)

    def _map(self, subject: str) -> str | None:
        if self.mirror:
            return subject
        if self.transforms:
            for t in self.transforms:
                mapped = t.apply(subject)
                if mapped is not None:
                    return mapped
            return None
        if self.filter and not subject_matches(subject, self.filter):
            return None
        return subject

    def deliver(self) -> None:
        """Copy what the origin has beyond our position (at most BATCH messages)."""
        self.signaled = False
        target = self.target
        if self.closed or target.closed:
            return
        origin = self._origin()
        if origin is None:
            return
        if not self.next_seq:
            self.next_seq = self._resume(origin)
        ostore = origin.store
        copied = 0
        while copied < BATCH:
            try:
                sm, seq = ostore.load_next_msg("", start=self.next_seq)
            except StoreError:
                break
            self.next_seq = seq + 1
            subject = self._map(sm.subject)
            if subject is None:
                continue
            target.touch()
            if self.mirror:
                self._store_mirrored(sm)
            else:
                hdr = add_headers(sm.headers or None, [(
                    b"Nats-Stream-Source",
                    f"{self.origin} {sm.seq}{self.hdr_tail}".encode())])
                target.store_sourced(subject, hdr, sm.payload)
            copied += 1
        if copied:
            self.last_active = time.time_ns()
        if copied >= BATCH:
            self.signal()
        elif isinstance(origin, _RemoteOrigin):
            self._poll()

    def _origin(self):
        """The origin stream, or a reader of it when another worker runs it."""
        local = self.target.account.streams.get(self.origin)
        if local is not None:
            self.remote = None
            return local
        if self.remote is None:
            self.remote = _remote_origin(self.target, self.origin)
            if self.remote is None:
                self._poll()    # not created yet, or another worker is restarting
        return self.remote

    def _poll(self) -> None:
        if self.poll_timer is None and not self.closed and \
                self.target.account.catalog is not None:
            def fire():
                self.poll_timer = None
                if not self.closed and not self.target.closed:
                    self.signal()
            self.poll_timer = self.target.js.call_later(POLL, fire)

    def _store_mirrored(self, sm) -> None:
        target = self.target
        store = target.store
        last = store.state().last_seq
        if sm.seq <= last:
            return
        if sm.seq > last + 1:
            store.skip_msgs(last + 1, sm.seq - last - 1)
        try:
            store.store_raw(sm.seq, sm.ts, sm.subject, sm.headers, sm.payload)
        except ErrSequenceMismatch:
            return
        except StoreError as exc:
            log.warning("JetStream: mirror %s could not store %d: %s", self.name, sm.seq, exc)
            return
        target.notify_stored(sm.seq, sm.subject)

    # ------------------------------------------------------------------ info

    def info(self) -> dict:
        origin = self.target.account.streams.get(self.origin) or self.remote
        lag = 0
        if origin is not None and self.next_seq:
            lag = max(origin.store.state().last_seq - self.next_seq + 1, 0)
        out = {"name": self.origin}
        if self.filter:
            out["filter_subject"] = self.filter
        if self.spec.get("subject_transforms"):
            out["subject_transforms"] = self.spec["subject_transforms"]
        out["lag"] = lag
        out["active"] = time.time_ns() - self.last_active if self.last_active else -1
        return out


def validate(cfg: dict, error) -> None:
    """Go's checkStreamCfg rules for mirrors and sources (raises through ``error``)."""
    from natsx.jetstream.util import is_subset_match, is_valid_name, is_valid_subject

    mirror = cfg.get("mirror")
    specs = [mirror] if mirror else []
    seen = set()
    for spec in cfg.get("sources") or []:
        if not isinstance(spec, dict) or not is_valid_name(spec.get("name", "")):
            raise error("JSSourceInvalidStreamName")
        key = iname(spec)
        if key in seen:
            raise error("JSSourceDuplicateDetected")
        seen.add(key)
        specs.append(spec)
    if mirror and not is_valid_name(mirror.get("name", "")):
        raise error("JSMirrorInvalidStreamName")
    for spec in specs:
        is_mirror = spec is mirror
        transforms = spec.get("subject_transforms") or []
        if spec.get("filter_subject") and transforms:
            raise error("JSMirrorMultipleFiltersNotAllowed" if is_mirror
                        else "JSSourceMultipleFiltersNotAllowed")
        if spec.get("external"):
            raise error("JSStreamInvalidConfigF",
                        err="sources and mirrors in other domains are not supported")
        for i, t in enumerate(transforms):
            src = t.get("src") or ">"
            if not is_valid_subject(src):
                raise error("JSMirrorInvalidSubjectFilter" if is_mirror
                            else "JSSourceInvalidSubjectFilter", err=f"invalid subject {src}")
            try:
                SubjectTransform(src, t.get("dest") or "")
            except ValueError as exc:
                raise error("JSMirrorInvalidTransformDestination" if is_mirror
                            else "JSSourceInvalidTransformDestination", err=str(exc)) from None
            for j, u in enumerate(transforms):
                if i != j and is_subset_match(src, u.get("src") or ">"):
                    raise error("JSMirrorOverlappingSubjectFilters" if is_mirror
                                else "JSSourceOverlappingSubjectFilters")
        if spec.get("opt_start_time"):
            try:
                parse_rfc3339(spec["opt_start_time"])
            except ValueError:
                raise error("JSInvalidJSONErr", err="invalid opt_start_time") from None

