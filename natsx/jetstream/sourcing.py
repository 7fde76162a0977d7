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
newest ``Nats-Stream-Source`` header for that origin).

With streams spread over the workers (natsx.jetstream.shards) the origin may run in another
worker. A file origin is then read from its environment directly (``LmdbReader``: read
transactions beside the raft process writing it, so only what was applied and acknowledged
is copied), and since the origin's stores do not signal this worker the feed polls it every
``POLL`` seconds. A memory origin in another worker, and an origin in another account or
domain (``external``), are fed as Go feeds every origin: through a push consumer created on
it over the JetStream API (natsx.jetstream.sourcefeed); the feed stores what that consumer
delivers, in the batch like the rest.
"""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from natsx.jetstream.errors import ApiError
from natsx.jetstream.queues import rate_limit_warn
from natsx.jetstream.sourcefeed import RETRY, ConsumerLink, external_label
from natsx.jetstream.util import (SubjectTransform, add_headers, get_header, parse_rfc3339,
                                  remove_header_if_prefix_present, remove_header_if_present,
                                  subject_matches)
from natsx.storage import ErrMaxBytes, ErrMaxMsgs, ErrSequenceMismatch, StoreError, crypt
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


MEMORY = "memory"   # _remote_origin: the origin is a memory stream another worker runs


def _remote_origin(target: "Stream", name: str):
    """The origin ``name`` when another worker runs it and it is a file stream, MEMORY when
    it is a memory stream, None when it does not exist (yet)."""
    import os

    from natsx.jetstream.manager import read_meta

    account = target.account
    if account.catalog is None:
        return None
    keys = account.meta_keys(name)
    meta_path = os.path.join(account.stream_dir(name), "meta.inf")
    meta = read_meta(meta_path) if keys is None else read_meta(meta_path, keys)[0]
    if not meta:
        return None
    if (meta.get("config") or {}).get("storage", "file") != "file":
        return MEMORY
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
    name = origin_label(spec)
    if transforms:
        src = "\f".join(t.get("src") or ">" for t in transforms)
        dest = "\f".join(t.get("dest") or ">" for t in transforms)
    else:
        src, dest = spec.get("filter_subject") or ">", ">"
    return f"{name} {src} {dest}"


def origin_label(spec: dict) -> str:
    """The origin as ``Nats-Stream-Source`` names it: ``name``, or ``name:<hash of the API
    prefix>`` for an external one (the same name may exist in several domains)."""
    ext = spec.get("external")
    if ext and ext.get("api"):
        return external_label(spec["name"], ext["api"])
    return spec["name"]


class Feed:
    """One mirror or source of a target stream; see the module docstring."""

    def __init__(self, target: "Stream", spec: dict, mirror: bool) -> None:
        self.target = target
        self.spec = spec
        self.mirror = mirror
        self.origin = spec["name"]
        self.label = origin_label(spec)
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
        self.link = None            # a ConsumerLink when fed through a consumer
        self.external = spec.get("external") or None
        self.held_until = 0.0       # monotonic time a refused message is retried (_hold)

    def close(self) -> None:
        self.closed = True
        if self.poll_timer is not None:
            self.poll_timer.cancel()
            self.poll_timer = None
        if self.link is not None:
            self.link.close()

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
                    if fields[0] == self.label and len(fields) > 1 and fields[1].isdigit():
                        return int(fields[1]) + 1
                seq -= 1
        if self.spec.get("opt_start_seq"):
            return int(self.spec["opt_start_seq"])
        if origin is None:
            return 0    # a linked feed: the consumer starts by time, or at the first message
        if self.spec.get("opt_start_time"):
            return origin.store.get_seq_from_time(parse_rfc3339(self.spec["opt_start_time"]))
        return max(origin.store.state().first_seq, 1)

    def restart_link(self, seq: int) -> None:
        """(Re)create the origin consumer from ``seq``, or from where the target stands."""
        if self.closed or self.target.closed:
            return
        if not seq:
            seq = self._resume(None)
        self.link.start(seq, None if seq else self.spec.get("opt_start_time"))

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
        if self.link is not None:
            self._take_linked()
            return
        origin = None if self.external else self._origin()
        if origin is MEMORY or self.external:
            # Fed from now on through a consumer on the origin (natsx.jetstream.sourcefeed).
            self.link = ConsumerLink(self)
            self.remote = None
            self.restart_link(0)
            return
        if origin is None:
            return
        if not self.next_seq:
            self.next_seq = self._resume(origin)
        if self.held_until:
            return      # a refused message waits for its retry (_hold)
        ostore = origin.store
        copied = 0
        while copied < BATCH:
            try:
                sm, seq = ostore.load_next_msg("", start=self.next_seq)
            except StoreError:
                break
            done = self._copy(sm)
            if done < 0:
                self._hold(seq)
                break
            self.next_seq = seq + 1
            copied += done
        if copied:
            self.last_active = time.time_ns()
        if self.held_until:
            return
        if copied >= BATCH:
            self.signal()
        elif isinstance(origin, _RemoteOrigin):
            self._poll()

    def _copy(self, sm) -> int:
        """Store one origin message in the target (mapped): 1, 0 when filtered out, -1 when
        the target refused it (the feed then holds there, see _hold)."""
        subject = self._map(sm.subject)
        if subject is None:
            return 0
        self.target.touch()
        if self.mirror:
            self._store_mirrored(sm)
        elif not self._store_sourced(subject, sm):
            return -1
        return 1

    def _store_sourced(self, subject: str, sm) -> bool:
        """Go's processInboundSourceMsg: a daisy-chained message loses its previous
        ``Nats-Stream-Source``, ``Nats-Expected-*`` and ``Nats-Batch-*``; the new source
        header names the origin, its sequence, the filter, the destination and (2.12) the
        origin subject. A counter stream takes it through its publish checks
        (Stream.process_msg, ``sourced``: Go's path, which adds up the totals); False when
        it refused it; any other stream stores it as it is, and a refusal of the store (a
        full stream with discard new) holds the feed as well, nothing is skipped."""
        hdr = sm.headers or None
        if hdr:
            hdr = remove_header_if_present(hdr, b"Nats-Stream-Source")
            hdr = remove_header_if_prefix_present(hdr, b"Nats-Expected-")
            hdr = remove_header_if_prefix_present(hdr, b"Nats-Batch-")
        hdr = add_headers(hdr, [(b"Nats-Stream-Source",
                                 f"{self.label} {sm.seq}{self.hdr_tail} {sm.subject}".encode())])
        target = self.target
        if not target.cfg.get("allow_msg_counter"):
            err = target.store_sourced(subject, hdr, sm.payload)
        else:
            err = target.process_msg(subject, None, hdr, sm.payload, sourced=True)
        if err is None:
            return True
        if isinstance(err, (ErrMaxMsgs, ErrMaxBytes)):
            # A full stream with discard new: Go tries the same message again, quietly.
            return False
        if isinstance(err, ApiError):
            err = f"{err.description} ({err.err_code})"     # Go's ApiError.Error()
        rate_limit_warn("Error processing inbound source %s for '%s' > '%s': %s" % (
            json.dumps(self.iname), target.account.name, target.name, err))
        return False

    def _hold(self, seq: int) -> None:
        """The target refused origin message ``seq``: copy nothing more, and try it again in
        RETRY seconds (Go retries the source consumer from the last message it stored)."""
        if self.link is not None:
            self.link.hold(seq)
            return
        self.held_until = time.monotonic() + RETRY
        self.next_seq = seq

        def fire():
            self.held_until = 0.0
            if not self.closed and not self.target.closed:
                self.signal()
        self.target.js.call_later(RETRY, fire)

    def _take_linked(self) -> None:
        """Store what the origin's consumer delivered, then answer its flow control."""
        link = self.link
        copied = 0
        for item in link.take():
            if type(item) is tuple:
                link.answer(item[1])
                continue
            done = self._copy(item)
            if done < 0:
                self._hold(item.seq)    # the rest comes again from the new consumer
                break
            self.next_seq = item.seq + 1
            copied += done
        if copied:
            self.last_active = time.time_ns()

    def _origin(self):
        """The origin stream, or a reader of it when another worker runs it (MEMORY when
        that worker holds it in memory)."""
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
        # Go: a mirror does not check the Nats-Expected- headers (they go) nor carry
        # batching over (nor its headers).
        headers = remove_header_if_prefix_present(sm.headers, b"Nats-Expected-")
        headers = remove_header_if_prefix_present(headers, b"Nats-Batch-") or b""
        try:
            store.store_raw(sm.seq, sm.ts, sm.subject, headers, sm.payload)
        except ErrSequenceMismatch:
            return
        except StoreError as exc:
            log.warning("JetStream: mirror %s could not store %d: %s", self.name, sm.seq, exc)
            return
        target.notify_stored(sm.seq, sm.subject)

    # ------------------------------------------------------------------ info

    def info(self) -> dict:
        lag = 0
        if self.link is not None:
            lag = self.link.lag
        else:
            origin = self.target.account.streams.get(self.origin) or self.remote
            if origin is not None and self.next_seq:
                lag = max(origin.store.state().last_seq - self.next_seq + 1, 0)
        out = {"name": self.origin}
        if self.filter:
            out["filter_subject"] = self.filter
        if self.spec.get("subject_transforms"):
            out["subject_transforms"] = self.spec["subject_transforms"]
        if self.external:
            out["external"] = {"api": self.external.get("api", ""),
                               "deliver": self.external.get("deliver", "")}
        out["lag"] = lag
        out["active"] = time.time_ns() - self.last_active if self.last_active else -1
        if self.link is not None and self.link.error:
            out["error"] = self.link.error
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
        ext = spec.get("external")
        if ext:
            _check_external(cfg, ext, error)
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



def _check_external(cfg: dict, ext: dict, error) -> None:
    """Go's checks of an ``external`` block's delivery and API prefixes."""
    from natsx.jetstream.util import is_valid_literal_subject, subjects_collide

    if not isinstance(ext, dict):
        raise error("JSInvalidJSONErr", err="invalid external")
    deliver, api = ext.get("deliver") or "", ext.get("api") or ""
    if deliver:
        if not is_valid_literal_subject(deliver):
            raise error("JSStreamInvalidExternalDeliverySubjErrF", prefix=deliver)
        for sub in cfg.get("subjects") or []:
            if subjects_collide(sub, f"{deliver}.{sub}"):
                raise error("JSStreamExternalDelPrefixOverlapsErrF", prefix=deliver, subject=sub)
    if api:
        if not is_valid_literal_subject(api):
            raise error("JSStreamInvalidConfigF", err=f"stream external api prefix {json.dumps(api)} "
                        "must be a valid subject without wildcards")
        if subjects_collide(api, "$JS.API"):
            raise error("JSStreamExternalApiOverlapErrF", prefix=api, subject="$JS.API")
