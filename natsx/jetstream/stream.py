"""A JetStream stream: its configuration rules, the capture of publishes, PubAcks and limits.

Theory of operation
-------------------
A ``Stream`` owns one store (``LmdbStore`` for file storage, ``MemStore`` for memory) and its
consumers. It subscribes, through the worker's internal client, to its subjects; every
message published on them is checked the way Go's ``processJetStreamMsg`` checks it (sealed,
``Nats-Expected-*`` headers, ``Nats-Msg-Id`` duplicates within ``duplicate_window``, rollups,
sizes), stored, and answered with a PubAck. On a counter stream (``allow_msg_counter``) a
publish is a ``Nats-Incr`` increment, stored as the subject's new total, and so is what a
source copies in (natsx.jetstream.counters). Nothing leaves before it is durable: the first
write of a batch opens a store transaction (``touch``), every PubAck and delivery is queued
in the JetStream outbox, and ``JetStream.flush`` commits (one fsync per stream per batch:
group commit) before it routes the outbox. A refused publish changes nothing and costs no
sync. A publish with ``Nats-Batch-Id`` belongs to an atomic batch (natsx.jetstream.batching):
staged until its commit, then checked as a whole and stored here in one run.

Configurations are plain dicts in their JSON shape; ``check_config`` is Go's
``checkStreamCfg`` (defaults and validation, same errors) and ``check_update`` is
``configUpdateCheck``. Retention: limits (the store enforces them), interest (a message is
removed once every consumer whose filter matches it has acknowledged it; with no interested
consumer a publish only uses up a sequence) and workqueue (removed on the first ack).
"""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from natsx.jetstream import schedules
from natsx.jetstream.counters import BROKEN as COUNTER_BROKEN
from natsx.jetstream.counters import (big_str, counter_payload, counter_sources, counter_value,
                                      lenient_int, marshal_sources, parse_incr)
from natsx.jetstream.errors import ApiError, error
from natsx.jetstream.queues import (TOO_MANY_REQUESTS_HDR, IngestQueue, ingest_limits,
                                    rate_limit_warn)
from natsx.jetstream.util import (NS, SubjectTransform, add_headers, get_header, go_duration,
                                  is_subset_match, is_valid_name, is_valid_subject,
                                  gen_header, parse_message_ttl, remove_header_if_present,
                                  rfc3339, set_header, slice_header, subject_matches,
                                  subjects_collide)
from natsx.storage import (ErrMaxBytes, ErrMaxMsgs, ErrMaxMsgsPerSubject, ErrMsgTooLarge,
                           StoreConfig, StoreError)

if TYPE_CHECKING:
    from natsx.jetstream.manager import Account

log = logging.getLogger("natsx")

MAX_NAME_LEN = 255
MAX_DESCRIPTION_LEN = 4 * 1024
MAX_METADATA_LEN = 128 * 1024
MAX_REPLICAS = 5
DEFAULT_DUPLICATE_WINDOW = 120 * NS
MIN_WINDOW = 100_000_000  # 100ms
MAX_HEADER_SIZE = 65535
SDM_RETRY = 2 * NS      # a refused subject delete marker is tried again after this

RETENTIONS = ("limits", "interest", "workqueue")
DISCARDS = ("old", "new")
STORAGES = ("file", "memory")
COMPRESSIONS = ("none", "s2")

# The fields of Go's StreamConfig in marshalling order, with what an absent one defaults to.
# None marks an omitempty field that is left out when empty.
_FIELDS = (
    ("name", ""), ("description", None), ("subjects", None), ("retention", "limits"),
    ("max_consumers", -1), ("max_msgs", -1), ("max_bytes", -1), ("max_age", 0),
    ("max_msgs_per_subject", -1), ("max_msg_size", -1), ("discard", "old"),
    ("storage", "file"), ("num_replicas", 1), ("no_ack", None), ("template_owner", None),
    ("duplicate_window", None), ("placement", None), ("mirror", None), ("sources", None),
    ("compression", "none"), ("first_seq", None), ("subject_transform", None),
    ("republish", None), ("allow_direct", False), ("mirror_direct", False),
    ("discard_new_per_subject", None), ("sealed", False), ("deny_delete", False),
    ("deny_purge", False), ("allow_rollup_hdrs", False), ("consumer_limits", {}),
    ("allow_msg_ttl", False), ("subject_delete_marker_ttl", None),
    ("allow_msg_counter", None), ("allow_atomic", None), ("allow_msg_schedules", None),
    ("persist_mode", None), ("metadata", None),
)
_INTS = {"max_consumers", "max_msgs", "max_bytes", "max_age", "max_msgs_per_subject",
         "max_msg_size", "num_replicas", "duplicate_window", "first_seq",
         "subject_delete_marker_ttl"}
_BOOLS = {"no_ack", "allow_direct", "mirror_direct", "discard_new_per_subject", "sealed",
          "deny_delete", "deny_purge", "allow_rollup_hdrs", "allow_msg_ttl",
          "allow_msg_counter", "allow_atomic", "allow_msg_schedules"}
_ENUMS = {"retention": RETENTIONS, "discard": DISCARDS, "storage": STORAGES,
          "compression": COMPRESSIONS, "persist_mode": ("default", "async")}


def invalid_json(detail: str) -> ApiError:
    # 2.11+ appends the decoder's error to the description.
    return error("JSInvalidJSONErr", err=detail)


def _invalid(text: str) -> ApiError:
    return error("JSStreamInvalidConfigF", err=text)


def decode_config(raw) -> dict:
    """The StreamConfig JSON as Go's json.Unmarshal accepts it: types checked, enums exact."""
    if not isinstance(raw, dict):
        raise invalid_json("json: cannot unmarshal into Go value of type server.StreamConfig")
    cfg = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in _INTS and (isinstance(value, bool) or not isinstance(value, int)):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise invalid_json(f"json: cannot unmarshal {type(value).__name__} into Go struct "
                                   f"field StreamConfig.{key}")
        elif key in _BOOLS and not isinstance(value, bool):
            raise invalid_json(f"json: cannot unmarshal into Go struct field StreamConfig.{key} "
                               "of type bool")
        elif key in _ENUMS:
            if value == "" and key in ("compression", "persist_mode"):
                continue
            if value not in _ENUMS[key]:
                raise invalid_json(f"can not unmarshal {json.dumps(value)}")
        elif key in ("name", "description", "template_owner") and not isinstance(value, str):
            raise invalid_json(f"json: cannot unmarshal into Go struct field StreamConfig.{key} "
                               "of type string")
        elif key == "subjects":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise invalid_json("json: cannot unmarshal into Go struct field "
                                   "StreamConfig.subjects of type []string")
        elif key == "metadata":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise invalid_json("json: cannot unmarshal into Go struct field "
                                   "StreamConfig.metadata of type map[string]string")
        cfg[key] = value
    return cfg


def ordered(cfg: dict) -> dict:
    """The config with Go's field order and omitempty rules applied."""
    out = {}
    for key, default in _FIELDS:
        value = cfg.get(key)
        if default is None:
            if value:
                out[key] = value
        else:
            out[key] = default if value is None else value
    if "metadata" in out:
        out["metadata"] = dict(sorted(out["metadata"].items()))  # Go: sorted keys
    if "consumer_limits" in out:
        out["consumer_limits"] = {k: v for k, v in (out["consumer_limits"] or {}).items() if v}
    return out


def check_config(raw: dict, *, pedantic: bool = False, others=(), limits=None) -> dict:
    """Go's checkStreamCfg: validate and fill defaults. ``others`` are the account's other
    streams' configs (for subject overlaps). Raises ApiError."""
    cfg = dict(raw)
    name = cfg.get("name", "")
    if not is_valid_name(name):
        raise _invalid("stream name is required and can not contain '.', '*', '>', '\\', '/'")
    if len(name) > MAX_NAME_LEN:
        raise _invalid(f"stream name is too long, maximum allowed is {MAX_NAME_LEN}")
    if len(cfg.get("description", "")) > MAX_DESCRIPTION_LEN:
        raise _invalid(f"stream description is too long, maximum allowed is {MAX_DESCRIPTION_LEN}")
    meta = cfg.get("metadata") or {}
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_METADATA_LEN:
        raise _invalid(f"stream metadata exceeds maximum size of {MAX_METADATA_LEN} bytes")

    replicas = cfg.get("num_replicas", 0) or 0
    if replicas == 0:
        replicas = 1
    if replicas > MAX_REPLICAS:
        raise _invalid(f"maximum replicas is {MAX_REPLICAS}")
    if replicas < 0:
        raise error("JSReplicasCountCannotBeNegative")
    cfg["num_replicas"] = replicas
    for key in ("max_msgs", "max_msgs_per_subject", "max_bytes", "max_msg_size", "max_consumers"):
        v = cfg.get(key, 0) or 0
        if v == 0 or v < -1:
            if pedantic and v < -1:
                raise error("JSPedanticErrF", err=f"{key} must be set to -1")
            v = -1
        cfg[key] = v
    max_age = cfg.get("max_age", 0) or 0
    if max_age < 0:
        raise _invalid("max age can not be negative")
    if max_age and max_age < MIN_WINDOW:
        raise _invalid("max age needs to be >= 100ms")
    cfg["max_age"] = max_age
    dup = cfg.get("duplicate_window", 0) or 0
    if dup == 0 and not cfg.get("mirror") and not cfg.get("sources"):
        window = DEFAULT_DUPLICATE_WINDOW
        srv_dup = getattr(getattr(limits, "server", None), "duplicates", 0)
        if 0 < srv_dup < window:
            if pedantic:
                raise error("JSPedanticErrF",
                            err="duplicate window limits are higher than current limits")
            window = srv_dup
        if max_age and max_age < window:
            if pedantic:
                raise error("JSPedanticErrF", err="duplicate window cannot be bigger than max age")
            dup = max_age
        else:
            dup = window
    if dup < 0:
        raise _invalid("duplicates window can not be negative")
    if max_age and dup > max_age:
        raise _invalid("duplicates window can not be larger then max age")
    if 0 < dup < MIN_WINDOW:
        raise _invalid("duplicates window needs to be >= 100ms")
    cfg["duplicate_window"] = dup
    if cfg.get("deny_purge") and cfg.get("allow_rollup_hdrs"):
        raise _invalid("roll-ups require the purge permission")
    if cfg.get("allow_msg_counter"):
        if cfg.get("discard") == "new":
            raise _invalid("counter stream cannot use discard new")
        if cfg.get("allow_msg_ttl"):
            raise _invalid("counter stream cannot use message TTLs")
        if cfg.get("retention", "limits") != "limits":
            raise _invalid("counter stream can only use limits retention")
    if cfg.get("discard_new_per_subject"):
        if cfg.get("discard", "old") != "new":
            raise _invalid("discard new per subject requires discard new policy to be set")
        if cfg["max_msgs_per_subject"] <= 0:
            raise _invalid("discard new per subject requires max msgs per subject > 0")
    sdm = cfg.get("subject_delete_marker_ttl", 0) or 0
    if sdm > 0:
        if sdm < NS:
            raise _invalid("subject delete marker TTL must be at least 1 second")
        cfg["allow_msg_ttl"] = True
        if not cfg.get("allow_rollup_hdrs"):
            cfg["allow_rollup_hdrs"], cfg["deny_purge"] = True, False
    elif sdm < 0:
        raise _invalid("subject delete marker TTL must not be negative")
    if cfg.get("allow_msg_schedules") and not cfg.get("allow_rollup_hdrs"):
        # A schedule rolls up its subject (natsx.jetstream.schedules).
        if pedantic:
            raise _invalid("message scheduling cannot be set if roll-ups are disabled")
        cfg["allow_rollup_hdrs"], cfg["deny_purge"] = True, False
    if cfg.get("persist_mode") == "async":
        if cfg.get("storage", "file") != "file":
            raise _invalid("async persist mode is only supported on file storage")
        if (cfg.get("num_replicas") or 1) > 1:
            raise _invalid("async persist mode is not supported on replicated streams")
        if cfg.get("allow_atomic"):
            raise _invalid("async persist mode is not supported with atomic batch publish")

    mirror = cfg.get("mirror")
    # Go's order: these mirror checks, then the mirror's own, then the sources'.
    if mirror:
        # Go's pre-checks of a mirror, before its filters and those of the sources.
        if cfg.get("first_seq"):
            raise error("JSMirrorWithFirstSeqErr")
        if cfg.get("subjects"):
            raise error("JSMirrorWithSubjectsErr")
        if cfg.get("sources"):
            raise error("JSMirrorWithSourcesErr")
        if cfg.get("allow_msg_counter"):
            raise error("JSMirrorWithCountersErr")
        if cfg.get("allow_atomic"):
            raise error("JSMirrorWithAtomicPublishErr")
        if cfg.get("allow_msg_schedules"):
            raise error("JSMirrorWithMsgSchedulesErr")
    elif cfg.get("sources") and cfg.get("allow_msg_schedules"):
        raise error("JSSourceWithMsgSchedulesErr")
    if mirror or cfg.get("sources"):
        from natsx.jetstream import sourcing

        sourcing.validate(cfg, error)

    subjects = list(cfg.get("subjects") or [])
    if not subjects:
        if not mirror and not cfg.get("sources"):
            subjects = [name]
    else:
        seen = set()
        for i, subj in enumerate(subjects):
            if not is_valid_subject(subj):
                raise _invalid("invalid subject")
            if subj in seen:
                raise _invalid("duplicate subjects detected")
            if subj == ">":
                if not cfg.get("no_ack"):
                    raise _invalid("capturing all subjects requires no-ack to be true")
            if not cfg.get("no_ack"):
                for ns in ("$JS.>", "$JSC.>", "$NRG.>"):
                    if subjects_collide(subj, ns) and not is_subset_match(subj, "$JS.EVENT.>"):
                        raise _invalid("subjects that overlap with jetstream api require no-ack "
                                       "to be true")
                if subjects_collide(subj, "$SYS.>") and not is_subset_match(subj, "$SYS.ACCOUNT.>"):
                    raise _invalid("subjects that overlap with system api require no-ack to be true")
            for other in subjects[i + 1:]:
                if subjects_collide(other, subj):
                    raise _invalid(f'subject "{subj}" overlaps with "{other}"')
            seen.add(subj)
    if subjects:
        cfg["subjects"] = subjects
    if not subjects and not cfg.get("sources") and not mirror:
        raise _invalid("stream needs at least one configured subject or be a source/mirror")
    for other in others:
        if other.get("name") == name:
            continue
        for subj in subjects:
            if any(subjects_collide(subj, o) for o in other.get("subjects") or ()):
                raise error("JSStreamSubjectOverlapErr")
    republish = cfg.get("republish")
    if republish:
        src, dest = republish.get("src") or ">", republish.get("dest", "")
        if any(subjects_collide(dest, s) for s in subjects):
            raise _invalid("stream configuration for republish destination forms a cycle")
        try:
            if not is_valid_subject(dest):
                raise ValueError(dest)
            SubjectTransform(src, dest)
        except ValueError:
            raise _invalid(f"stream configuration for republish with transform from '{src}' "
                           f"to '{dest}' not valid") from None
        cfg["republish"] = dict(republish, src=src)
    transform = cfg.get("subject_transform")
    if transform:
        try:
            SubjectTransform(transform.get("src", ""), transform.get("dest", ""))
        except ValueError as exc:
            raise error("JSStreamTransformInvalidDestination", err=str(exc)) from None
    if limits is not None:
        limits.check_stream(cfg)
    if replicas > 1:
        raise error("JSStreamReplicasNotSupportedErr")
    return ordered(cfg)


def check_update(old: dict, raw: dict, *, pedantic: bool = False, others=(), limits=None) -> dict:
    """Go's configUpdateCheck: the new config, or ApiError."""
    cfg = check_config(raw, pedantic=pedantic, others=others, limits=limits)
    if cfg["name"] != old["name"]:
        raise _invalid("stream configuration name must match original")
    if cfg["storage"] != old["storage"]:
        raise _invalid("stream configuration update can not change storage type")
    if cfg["retention"] != old["retention"] and "workqueue" in (cfg["retention"], old["retention"]):
        raise _invalid("stream configuration update can not change retention policy to/from "
                       "workqueue")
    if old.get("sealed") and not cfg.get("sealed"):
        raise _invalid("stream configuration update can not unseal a sealed stream")
    if old.get("deny_delete") and not cfg.get("deny_delete"):
        raise _invalid("stream configuration update can not cancel deny message deletes")
    if old.get("deny_purge") and not cfg.get("deny_purge"):
        raise _invalid("stream configuration update can not cancel deny purge")
    if cfg.get("mirror") and cfg.get("mirror") != old.get("mirror"):
        raise error("JSStreamMirrorNotUpdatableErr")
    if old.get("allow_msg_ttl") and not cfg.get("allow_msg_ttl"):
        raise _invalid("message TTL status can not be disabled")
    if bool(cfg.get("allow_msg_counter")) != bool(old.get("allow_msg_counter")):
        raise _invalid("stream configuration update can not change message counter setting")
    if old.get("allow_msg_schedules") and not cfg.get("allow_msg_schedules"):
        raise _invalid("message schedules can not be disabled")
    if (cfg.get("persist_mode") or "default") != (old.get("persist_mode") or "default"):
        raise _invalid("stream configuration update can not change persist mode")
    if cfg.get("sealed"):
        cfg.update(max_age=0, discard="new", deny_delete=True, deny_purge=True,
                   allow_rollup_hdrs=False)
    return ordered(cfg)


# process_msg: a Nats-Msg-Id seen within the duplicate window (Go's errMsgIdDuplicate).
DUPLICATE = "msgid is duplicate"


def check_incr(cfg: dict, hdr: bytes, payload: bytes, sourced: bool = False) -> int | None:
    """A publish's counter increment (Go's getMessageIncr and its checks): None without
    ``Nats-Incr``; only on counter streams, with no payload and none of the headers that
    would make it conditional. A sourced message is taken as it comes. Raises ApiError."""
    incr_hdr = slice_header(hdr, b"Nats-Incr")
    if not incr_hdr:
        return None
    incr = parse_incr(incr_hdr)
    if incr is None:
        raise error("JSMessageIncrInvalidErr")
    if not sourced:
        if not cfg.get("allow_msg_counter"):
            raise error("JSMessageIncrDisabledErr")
        if payload:
            raise error("JSMessageIncrPayloadErr")
        if _incr_conflicts(hdr):
            raise error("JSMessageIncrInvalidErr")
    return incr


def _incr_conflicts(hdr: bytes) -> bool:
    """Go's check of the headers an increment cannot come with (any of them with a value):
    a rollup, an expected stream, last message id, last sequence, or last subject sequence
    (with or without its subject)."""
    return any(slice_header(hdr, key) for key in (
        b"Nats-Rollup", b"Nats-Expected-Stream", b"Nats-Expected-Last-Msg-Id",
        b"Nats-Expected-Last-Subject-Sequence-Subject", b"Nats-Expected-Last-Sequence",
        b"Nats-Expected-Last-Subject-Sequence"))


def store_config(cfg: dict) -> StoreConfig:
    return StoreConfig(
        subjects=tuple(cfg.get("subjects") or ()),
        storage=cfg["storage"],
        max_msgs=cfg["max_msgs"],
        max_bytes=cfg["max_bytes"],
        max_age=cfg["max_age"],
        max_msgs_per_subject=cfg["max_msgs_per_subject"],
        max_msg_size=cfg["max_msg_size"],
        discard=cfg["discard"],
        discard_new_per_subject=bool(cfg.get("discard_new_per_subject")),
        first_seq=cfg.get("first_seq", 0) or 0,
        allow_msg_ttl=bool(cfg.get("allow_msg_ttl")),
    )


class Stream:
    """One stream of an account; see the module docstring."""

    def __init__(self, account: "Account", cfg: dict, store, created_ns: int) -> None:
        self.account = account
        self.js = account.js
        self.cfg = cfg
        self.name = cfg["name"]
        self.store = store
        self.created = created_ns
        self.consumers: dict = {}
        self.subs: list = []
        self.closed = False
        self.dirty = False              # a store transaction is open in this batch
        self.ddmap: dict[str, tuple[int, int]] = {}   # msg id -> (seq, ts), oldest first
        self.lmsgid = ""
        self.expiry_timer = None
        self.expiry_due = 0             # Unix ns the expiry timer fires for
        # Pending message schedules (natsx.jetstream.schedules), with allow_msg_schedules.
        self.scheduling: schedules.MsgScheduling | None = None
        self.expiry_hold = 0            # no expiry before this (ns): a marker was refused
        self.feeds: list = []           # mirror/sources copying into this stream
        # Go's mset.pubAck prefix (with the domain when the server has one).
        if self.js.domain:
            self._pub_ack = b'{"stream":%s,"domain":%s,"seq":' % (
                json.dumps(self.name).encode(), json.dumps(self.js.domain).encode())
        else:
            self._pub_ack = b'{"stream":%s,"seq":' % json.dumps(self.name).encode()
        self._compile_transforms()
        store.register_storage_updates(self._on_storage_update)
        # What was captured and is not yet committed, bounded as Go bounds mset.msgs
        # (natsx.jetstream.queues; ``group``: the raft group confirming the commits).
        self.ingest = IngestQueue(*ingest_limits(self.js.settings))
        self._group = getattr(store, "group", None)
        # The open atomic batches (natsx.jetstream.batching), made by the first one.
        self.batches = None

    # ------------------------------------------------------------------ lifecycle

    def _compile_transforms(self) -> None:
        cfg = self.cfg
        st, rp = cfg.get("subject_transform"), cfg.get("republish")
        self.itr = SubjectTransform(st.get("src", ""), st.get("dest", "")) if st else None
        self.rtr = SubjectTransform(rp.get("src", ""), rp.get("dest", "")) if rp else None
        # A publish with no Nats- header is stored by ``_on_publish_run`` itself on a
        # stream where process_msg would only check sizes and store: nothing to transform,
        # republish or test for interest, not sealed, not a counter (which refuses it).
        self._plain = (self.itr is None and self.rtr is None and not cfg.get("sealed")
                       and cfg["retention"] != "interest" and not cfg.get("allow_msg_counter"))
        self._max_msg_size = cfg.get("max_msg_size", -1)
        self._acks = not cfg.get("no_ack")
        self._expires = bool(cfg.get("max_age") or cfg.get("allow_msg_ttl"))

    def subscribe(self) -> None:
        server = self.js.server
        for subject in self.cfg.get("subjects") or ():
            self.subs.append(server.internal_subscribe(self.account.name, subject.encode(),
                                                       self._on_publish,
                                                       batch=self._on_publish_run))

    def unsubscribe(self) -> None:
        server = self.js.server
        for sub in self.subs:
            server.internal_unsubscribe(self.account.name, sub)
        self.subs = []

    def public_consumers(self) -> list:
        """The consumers but the direct ones (mirrors' and sources' feeds), which Go
        neither lists nor counts."""
        return [name for name, c in self.consumers.items() if not c.cfg.get("direct")]

    def batching(self):
        """The stream's atomic batches (natsx.jetstream.batching)."""
        if self.batches is None:
            from natsx.jetstream.batching import Batches

            self.batches = Batches(self)
        return self.batches

    def discard_batches(self) -> None:
        """Drops every open atomic batch (the stream stops, or no longer allows them)."""
        if self.batches is not None:
            self.batches.discard_all()

    def touch(self) -> None:
        """Called before any write: opens this batch's store transaction."""
        if not self.dirty:
            self.store.begin_batch()
            self.dirty = True
            self.js.dirty.append(self)

    def commit(self) -> None:
        if self.dirty:
            self.dirty = False
            self.store.commit_batch()
        group = self._group
        if group is None:
            self.ingest.committed()
        else:
            self.ingest.committed(self.store.last_proposal, group.confirmed)

    def rebuild_dedupe(self) -> None:
        """After recovery: the message ids still inside the window (Go rebuildDedupe)."""
        window = self.cfg.get("duplicate_window", 0)
        state = self.store.state()
        if not window or not state.msgs:
            return
        for sm in self.store.scan(self.store.get_seq_from_time(time.time_ns() - window),
                                  state.last_seq):
            msgid = get_header(sm.headers, b"Nats-Msg-Id")
            if msgid:
                self.ddmap[msgid.decode("utf-8", "replace")] = (sm.seq, sm.ts)
                self.lmsgid = msgid.decode("utf-8", "replace")

    def start_schedules(self) -> None:
        """With ``allow_msg_schedules``: the pending schedules, rebuilt from the stored
        messages when the stream starts or an update turns them on, and their timer
        (natsx.jetstream.schedules)."""
        if self.cfg.get("allow_msg_schedules") and self.scheduling is None and not self.closed:
            self.scheduling = schedules.MsgScheduling(self)
            self.scheduling.recover()

    def rebuild_schedules(self) -> None:
        """After messages were loaded behind the stream's back (a snapshot restore)."""
        if self.scheduling is not None:
            self.scheduling.stop()
            self.scheduling = None
        self.start_schedules()

    def stop_timers(self) -> None:
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None
        if self.scheduling is not None:
            self.scheduling.stop()

    # ------------------------------------------------------------------ publishing

    def _respond(self, reply, body: bytes) -> None:
        if reply and not self.cfg.get("no_ack"):
            self.js.send(self.account.name, reply, None, body)

    def _respond_error(self, reply, err: ApiError) -> ApiError:
        if reply and not self.cfg.get("no_ack"):
            body = json.dumps({"error": err.to_json(), "stream": self.name, "seq": 0},
                              separators=(",", ":")).encode()
            self.js.send(self.account.name, reply, None, body)
        return err

    def _on_publish(self, subject: bytes, reply, hdr, payload: bytes, publisher) -> None:
        self._on_publish_run(((None, subject, reply, hdr, payload, publisher, None),))

    def _on_publish_run(self, items) -> None:
        """The publishes of one read batch on the stream's subjects, in order
        (Server._dispatch_runs; ``_on_publish`` for one). A publish with no Nats- header on
        a ``_plain`` stream is stored here, with process_msg's checks and answers and with
        every lookup made once per run: this loop is the stream owner's per-message path.
        Anything else takes process_msg."""
        if self.closed:
            return
        ingest = self.ingest
        admit = ingest.admit
        group = self._group
        plain = self._plain
        max_size = self._max_msg_size
        check_store = self.account.limits.check_store
        store = self.store
        acks = self._acks
        account_name = self.account.name
        pub_ack = self._pub_ack
        outbox = self.js.outbox
        time_ns = time.time_ns
        # What notify_stored would do for each message: nothing, on a stream no consumer
        # and no other stream reads and whose messages do not expire (none of that changes
        # while publishes are stored).
        quiet = not (self.consumers or self._expires or
                     self.account.feeds_from(self.name))
        for item in items:
            try:
                subject, reply, hdr, payload = item[1], item[2], item[3], item[4]
                hl = len(hdr) if hdr else 0
                if not admit(len(subject) + len(reply or b"") + hl + len(payload),
                             group.confirmed if group is not None else 0):
                    self._too_many_requests(reply)
                    continue
                subject = subject.decode("utf-8", "surrogateescape")
                if not plain or (hl and b"Nats-" in hdr):
                    self.process_msg(subject, reply, hdr, payload)
                elif max_size >= 0 and (hl > max_size or len(payload) > max_size - hl):
                    self._respond_error(reply, error("JSStreamMessageExceedsMaximumErr"))
                elif hl > MAX_HEADER_SIZE:
                    self._respond_error(reply, error("JSStreamHeaderExceedsMaximumErr"))
                else:
                    err = check_store(self, len(subject) + hl + len(payload))
                    if err is not None:
                        self._respond_error(reply, err)
                    else:
                        if not self.dirty:
                            self.touch()
                        try:
                            seq = store.append(subject, hdr or b"", payload, time_ns())
                        except StoreError as exc:
                            self._respond_error(reply, error("JSStreamStoreFailedF", err=str(exc)))
                        else:
                            self.lmsgid = ""
                            if reply and acks:
                                outbox.append((account_name, reply, None, None,
                                               pub_ack + b"%d}" % seq, None))
                            if not quiet:
                                self.notify_stored(seq, subject)
                            continue
                if not self.dirty:
                    ingest.committed()     # refused: nothing of it waits for a commit
            except Exception:
                # One bad publish must not drop the rest of the run.
                log.exception("JetStream: a publish to stream %r failed", self.name)

    def _too_many_requests(self, reply) -> None:
        """Go's queueInbound when the ingest queue is full: the publish is dropped."""
        rate_limit_warn("Dropping messages due to excessive stream ingest rate on '%s' > '%s': "
                        "%s" % (self.account.name, self.name,
                                "IPQ len limit reached" if self.ingest.max_msgs and
                                self.ingest.msgs >= self.ingest.max_msgs
                                else "IPQ size limit reached"))
        if reply:
            body = json.dumps({"error": error("JSStreamTooManyRequests").to_json(),
                               "stream": self.name, "seq": 0}, separators=(",", ":")).encode()
            self.js.send(self.account.name, reply, None, body, hdr=TOO_MANY_REQUESTS_HDR)

    def process_msg(self, subject: str, reply, hdr, payload: bytes, batch=None, *,
                    produced: bool = False, sourced: bool = False):
        """Go's processJetStreamMsg for a publish on one of the stream's subjects, or
        (``sourced``) a message a source copies in (natsx.jetstream.sourcing, for counter
        streams). Returns None when the message was stored (or used up a sequence), else
        what refused it (an ApiError, or DUPLICATE).
        ``batch``: a message of a committed atomic batch (natsx.jetstream.batching), whose
        consistency checks are done (a counter's increment applied too); the PubAck's tail
        (``,"batch":...,"count":...}``).
        ``produced``: a message the stream makes itself (a schedule's), which Go hands to
        processJetStreamMsg directly: batch headers it copied do not open a batch."""
        cfg = self.cfg
        if batch is None and not produced and hdr and b"Nats-Batch-Id:" in hdr:
            batch_id = get_header(hdr, b"Nats-Batch-Id")
            if batch_id:
                return self.batching().process(batch_id, subject, reply, hdr, payload)
        if cfg.get("sealed"):
            return self._respond_error(reply, error("JSStreamSealedErr"))
        if self.itr is not None:
            subject = self.itr.apply(subject) or subject
        store = self.store
        counter = cfg.get("allow_msg_counter")
        msgid = ""
        rollup = b""
        ttl = 0
        schedule = None
        scheduler = ""
        incr = None
        if hdr and batch is not None:
            # Checked with the whole batch at its commit (natsx.jetstream.batching).
            from natsx.jetstream.batching import fields_of

            ttl, msgid, rollup = fields_of(hdr)
            if b"Nats-Schedule" in hdr:
                schedule = schedules.get_schedule(hdr)[1]
                scheduler = schedules.scheduler_to_purge(hdr)
        elif hdr:
            if b"Nats-" in hdr:
                try:
                    incr = check_incr(cfg, hdr, payload, sourced)
                except ApiError as exc:
                    return self._respond_error(reply, exc)
                expected = get_header(hdr, b"Nats-Expected-Stream")
                if expected is not None and expected and expected.decode() != self.name:
                    return self._respond_error(reply, error("JSStreamNotMatchErr"))
                ttl_hdr = get_header(hdr, b"Nats-TTL")
                if ttl_hdr:     # an empty one is none (Go getMessageTTL)
                    try:
                        ttl = parse_message_ttl(ttl_hdr)
                    except ValueError:
                        ttl = None      # refused below, after the limits (as Go does)
                    if not sourced and ttl and not cfg.get("allow_msg_ttl"):
                        return self._respond_error(reply, error("JSMessageTTLDisabledErr"))
                last_subj_seq = get_header(hdr, b"Nats-Expected-Last-Subject-Sequence")
                if last_subj_seq is not None:
                    seq_subject = get_header(hdr, b"Nats-Expected-Last-Subject-Sequence-Subject")
                    seq_subject = seq_subject.decode() if seq_subject else subject
                    try:
                        want = int(last_subj_seq)
                    except ValueError:
                        want = -1
                    try:
                        have = store.load_last_msg(seq_subject).seq
                    except StoreError:
                        have = 0
                    if have != want:
                        return self._respond_error(
                            reply, error("JSStreamWrongLastSequenceErrF", seq=have))
                elif get_header(hdr, b"Nats-Expected-Last-Subject-Sequence-Subject"):
                    return self._respond_error(
                        reply, error("JSStreamExpectedLastSeqPerSubjectInvalid"))
                last_seq = get_header(hdr, b"Nats-Expected-Last-Sequence")
                if last_seq is not None:
                    have = store.state().last_seq
                    try:
                        want = int(last_seq)
                    except ValueError:
                        want = -1
                    if want != have:
                        return self._respond_error(
                            reply, error("JSStreamWrongLastSequenceErrF", seq=have))
                if b"Nats-Schedule" in hdr:
                    # Message scheduling (natsx.jetstream.schedules): a schedule gains
                    # "Nats-Rollup: sub"; a produced message purges its schedule once stored.
                    try:
                        hdr, schedule = schedules.check_publish(cfg, subject, hdr)
                    except ApiError as exc:
                        return self._respond_error(reply, exc)
                    scheduler = schedules.scheduler_to_purge(hdr)
                mid = get_header(hdr, b"Nats-Msg-Id")
                if mid:
                    msgid = mid.decode("utf-8", "replace")
                    dde = self._check_msgid(msgid)
                    if dde is not None:
                        if reply and not cfg.get("no_ack"):
                            self._respond(reply, self._pub_ack + b"%d,\"duplicate\": true}" % dde)
                        return DUPLICATE
                last_id = get_header(hdr, b"Nats-Expected-Last-Msg-Id")
                if last_id is not None and last_id and last_id.decode() != self.lmsgid:
                    return self._respond_error(
                        reply, error("JSStreamWrongLastMsgIDErrF", id=self.lmsgid))
                rollup = (get_header(hdr, b"Nats-Rollup") or b"").lower()
                if rollup:
                    if not cfg.get("allow_rollup_hdrs") or cfg.get("deny_purge"):
                        return self._respond_error(
                            reply, error("JSStreamRollupFailedF", err="rollup not permitted"))
                    if rollup not in (b"sub", b"all"):
                        return self._respond_error(reply, error(
                            "JSStreamRollupFailedF",
                            err=f"rollup value invalid: {json.dumps(rollup.decode())}"))
        val = None
        if counter and batch is None:
            if incr is None:
                return self._respond_error(reply, error("JSMessageIncrMissingErr"))
            applied = self._apply_incr(subject, hdr, payload, incr)
            if isinstance(applied, ApiError):
                return self._respond_error(reply, applied)
            hdr, payload, val = applied
        max_size = cfg.get("max_msg_size", -1)
        hl = len(hdr) if hdr else 0
        if max_size >= 0 and (hl > max_size or len(payload) > max_size - hl):
            return self._respond_error(reply, error("JSStreamMessageExceedsMaximumErr"))
        if hl > MAX_HEADER_SIZE:
            return self._respond_error(reply, error("JSStreamHeaderExceedsMaximumErr"))
        err = self.account.limits.check_store(self, len(subject) + hl + len(payload))
        if err is not None:
            return self._respond_error(reply, err)

        self.touch()
        republish_last = 0
        if self.rtr is not None:
            try:
                republish_last = store.load_last_msg(subject).seq
            except StoreError:
                pass
        if cfg["retention"] == "interest" and not self._has_interest(subject):
            # No consumer wants it: the sequence is used up, nothing is stored.
            seq = store.skip_msg(no_interest=True)
            self._after_store(subject, seq, time.time_ns(), msgid, rollup, reply, stored=False,
                              ack_tail=batch)
            return None
        if ttl is None:
            return self._respond_error(reply, error("JSMessageTTLInvalidErr"))
        sdm = cfg.get("subject_delete_marker_ttl") or 0
        if ttl and ttl > 0 and sdm > 0 and cfg["max_msgs_per_subject"] != 1 and ttl < sdm // NS:
            # A message must outlive the subject's delete markers (Go: else a marker already
            # there could be missed); with one message a subject there is nothing to miss.
            ttl = sdm // NS
            hdr = gen_header(remove_header_if_present(hdr, b"Nats-TTL"), b"Nats-TTL",
                             b"%d" % ttl)
        try:
            seq, ts = store.store_msg(subject, hdr or b"", payload, None, ttl or 0)
        except (ErrMaxMsgs, ErrMaxBytes, ErrMaxMsgsPerSubject, ErrMsgTooLarge) as exc:
            return self._respond_error(reply, error("JSStreamStoreFailedF", err=str(exc)))
        except StoreError as exc:
            return self._respond_error(reply, error("JSStreamStoreFailedF", err=str(exc)))
        self._after_store(subject, seq, ts, msgid, rollup, reply, stored=True, val=val,
                          scheduler=scheduler, ack_tail=batch)
        if schedule is not None and self.scheduling is not None:
            self.scheduling.add(seq, subject, schedule)
        if ttl and ttl > 0 and self.expiry_timer is not None:
            # A per-message TTL may expire before what the timer is armed for.
            self.js.arm_expiry(self, ts + ttl * NS)
        if self.rtr is not None:
            self._republish(subject, seq, ts, hdr, payload, republish_last)
        return None

    def _apply_incr(self, subject: str, hdr: bytes, payload: bytes, incr: int,
                    staged=None):
        """The counter message to store for increment ``incr`` on ``subject`` (Go's
        processJetStreamMsg, "Apply increment for counter"): (headers, payload, total text),
        or the ApiError refusing it. A sourced message (it has ``Nats-Stream-Source``)
        carries its origin's total instead: what is added is its difference with the last
        total taken from that origin and subject, kept in ``Nats-Counter-Sources``.
        ``staged``: ``(headers, payload)`` of an atomic batch's earlier message on the
        subject, which counts as its last (Go's running total of a batch)."""
        total = 0
        sources = None
        if staged is not None:
            last_hdr, last_payload = staged
        else:
            try:
                last = self.store.load_last_msg(subject)
                last_hdr, last_payload = last.headers, last.payload
            except StoreError:
                last_hdr = last_payload = None
        if last_payload is not None:
            text = counter_value(last_payload)
            if text is None:
                return error("JSMessageCounterBrokenErr")
            ncs = slice_header(last_hdr, b"Nats-Counter-Sources")
            if ncs:
                sources = counter_sources(ncs)
                if sources is COUNTER_BROKEN:
                    return error("JSMessageCounterBrokenErr")
            total = lenient_int(text)
        src = slice_header(hdr, b"Nats-Stream-Source")
        if src:
            fields = src.decode("utf-8", "surrogateescape").split(" ")
            origin = fields[0]
            origin_subject = fields[4] if len(fields) >= 5 else subject
            text = counter_value(payload)
            if text is None:
                return error("JSMessageCounterBrokenErr")
            value = lenient_int(text)
            if sources is None:
                sources = {}
            per_subject = sources.get(origin)
            if per_subject is None:
                per_subject = sources[origin] = {}
            previous = per_subject.get(origin_subject, "")
            per_subject[origin_subject] = big_str(value)
            incr = value - lenient_int(previous)
            hdr = set_header(hdr, b"Nats-Incr", big_str(incr).encode())
        total += incr
        val = big_str(total)
        payload = counter_payload(val)
        if sources:
            hdr = set_header(hdr, b"Nats-Counter-Sources", marshal_sources(sources))
        max_payload = self.js.server.options.max_payload
        if len(hdr) > max_payload or len(payload) > max_payload - len(hdr):
            return error("JSStreamMessageExceedsMaximumErr")
        return hdr, payload, val

    def _republish(self, subject, seq, ts, hdr, payload, last) -> None:
        dest = self.rtr.apply(subject)
        if not dest:
            return
        pairs = [(b"Nats-Stream", self.name.encode()), (b"Nats-Subject", subject.encode()),
                 (b"Nats-Sequence", b"%d" % seq), (b"Nats-Time-Stamp", rfc3339(ts).encode()),
                 (b"Nats-Last-Sequence", b"%d" % last)]
        if self.cfg["republish"].get("headers_only"):
            pairs.append((b"Nats-Msg-Size", b"%d" % len(payload)))
            payload = b""
        self.js.send(self.account.name, dest.encode(), None, payload,
                     hdr=add_headers(hdr or None, pairs))

    def _after_store(self, subject, seq, ts, msgid, rollup, reply, *, stored: bool,
                     val: str | None = None, scheduler: str = "",
                     ack_tail: bytes | None = None) -> None:
        self.lmsgid = msgid
        if msgid:
            self.ddmap[msgid] = (seq, ts)
            self._prune_dedupe(ts)
        if rollup and stored:
            self.purge(subject if rollup == b"sub" else "", seq, 0)
        elif scheduler and stored:
            # A scheduled message was stored: purge its schedule (Go: any message carrying
            # "Nats-Schedule-Next: purge" purges its Nats-Scheduler subject).
            try:
                self.purge(scheduler)
            except (StoreError, ValueError):
                log.warning("JetStream: could not purge schedule %r of stream %r",
                            scheduler, self.name)
        if reply and not self.cfg.get("no_ack"):
            # JetStream.send, inlined: this runs for every publish. A counter's PubAck
            # adds its new total (Go: fmt.Sprintf(",\"val\":%q}", ...)); a batch's commit
            # its id and size.
            if ack_tail is not None:
                ack = self._pub_ack + b"%d" % seq + ack_tail
            elif val is not None:
                ack = self._pub_ack + b'%d,"val":"%s"}' % (seq, val.encode("ascii"))
            else:
                ack = self._pub_ack + b"%d}" % seq
            self.js.outbox.append((self.account.name, reply, None, None, ack, None))
        if stored:
            self.notify_stored(seq, subject)

    def notify_stored(self, seq: int, subject: str) -> None:
        """A message was stored: wake the consumers and the streams sourcing from us."""
        if self.consumers:
            for c in self.consumers.values():
                c.on_new_msg(seq, subject)
        for feed in self.account.feeds_from(self.name):
            feed.signal()
        if self.expiry_timer is None and self._expires:
            self.js.arm_expiry(self)

    def store_sourced(self, subject: str, hdr: bytes, payload: bytes) -> StoreError | None:
        """Append a message copied from a source stream (natsx.jetstream.sourcing); the
        store's refusal (the feed then tries the message again, as Go's does)."""
        self.touch()
        try:
            seq, _ts = self.store.store_msg(subject, hdr, payload)
        except StoreError as exc:
            return exc
        self.notify_stored(seq, subject)
        return None

    def _check_msgid(self, msgid: str):
        entry = self.ddmap.get(msgid)
        if entry is None:
            return None
        if time.time_ns() - entry[1] > self.cfg.get("duplicate_window", 0):
            return None
        return entry[0]

    def _prune_dedupe(self, now: int) -> None:
        window = self.cfg.get("duplicate_window", 0)
        dd = self.ddmap
        while dd:
            key = next(iter(dd))
            if now - dd[key][1] <= window:
                break
            del dd[key]

    def _has_interest(self, subject: str) -> bool:
        return any(c.matches(subject) for c in self.consumers.values())

    # ------------------------------------------------------------------ store events

    def _on_storage_update(self, msgs: int, nbytes: int, seq: int, subject: str) -> None:
        storage = self.cfg["storage"]
        self.js.used[storage] += nbytes
        self.account.used[storage] += nbytes
        if msgs < 0:
            for c in self.consumers.values():
                c.on_removed(seq, subject)

    # ------------------------------------------------------------------ operations

    def purge(self, subject: str = "", seq: int = 0, keep: int = 0) -> int:
        """Go's purgeLocked: purge the store, then move consumers past what was removed."""
        self.touch()
        purged = self.store.purge_ex(subject, seq, keep)
        state = self.store.state()
        fseq = state.first_seq
        if subject:
            fs = self.store.filtered_state(fseq, subject)
            fseq = fs.first or state.last_seq + 1
        for c in self.consumers.values():
            if not subject or c.overlaps(subject):
                c.on_purge(fseq)
        return purged

    def delete_msg(self, seq: int, erase: bool = True) -> bool:
        self.touch()
        removed = self.store.erase_msg(seq) if erase else self.store.remove_msg(seq)
        return removed

    def ack_msg(self, consumer, seq: int, subject: str | None = None) -> None:
        """A consumer acknowledged ``seq``: interest and workqueue streams may drop it."""
        retention = self.cfg["retention"]
        if retention == "limits":
            return
        if retention == "interest":
            if subject is None:
                try:
                    subject = self.store.subject_for_seq(seq)
                except StoreError:
                    return
            for c in self.consumers.values():
                if c is not consumer and c.matches(subject) and c.needs_ack(seq):
                    return
        self.touch()
        self.store.remove_msg(seq)

    def check_interest_all(self) -> None:
        """An interest stream lost a consumer: drop what no remaining consumer needs."""
        if self.cfg["retention"] == "limits":
            return
        victims = [sm.seq for sm in self.store.scan()
                   if not any(c.matches(sm.subject) and c.needs_ack(sm.seq)
                              for c in self.consumers.values())]
        if victims:
            self.touch()
            for s in victims:
                self.store.remove_msg(s)

    def update_config(self, cfg: dict) -> None:
        old = self.cfg
        if not cfg.get("allow_atomic"):
            # Go's update: turning atomic publish off deletes the batches in progress.
            self.discard_batches()
        self.touch()
        self.store.update_config(store_config(cfg), time.time_ns())
        self.cfg = cfg
        self._compile_transforms()
        if old.get("subjects") != cfg.get("subjects"):
            self.unsubscribe()
            self.subscribe()
        self.js.arm_expiry(self)
        self.start_schedules()

    def expire(self) -> None:
        now = time.time_ns()
        self.touch()
        sdm = self.cfg.get("subject_delete_marker_ttl") or 0
        if not sdm:
            self.store.expire(now)
            return
        # ADR-43: the last message of a subject is replaced by a delete marker (a rollup
        # that removes it) instead of vanishing; everything else simply goes.
        marker = (b"NATS/1.0\r\nNats-Marker-Reason: MaxAge\r\nNats-TTL: %s\r\n"
                  b"Nats-Rollup: sub\r\n\r\n" % go_duration(sdm).encode())
        refused = False
        for seq, subject, is_marker in self._due(now):
            try:
                last = self.store.load_last_msg(subject).seq
            except StoreError:
                continue
            if last == seq and not is_marker:
                # A refused marker (a counter stream refuses it, as Go's does: it has no
                # Nats-Incr) leaves the message in place; Go proposes it again at most
                # every two seconds (fileStore.shouldProcessSdm), so the expiry waits.
                if self.process_msg(subject, None, marker, b"") is not None:
                    refused = True
            else:
                self.store.remove_msg(seq)
        self.expiry_hold = now + SDM_RETRY if refused else 0

    def _due(self, now: int) -> list:
        """Messages past max_age or their Nats-TTL (a scan: streams with markers only)."""
        max_age = self.cfg.get("max_age", 0)
        due = []
        for sm in self.store.scan():
            ttl_hdr = get_header(sm.headers, b"Nats-TTL")
            ttl = 0
            if ttl_hdr is not None:
                try:
                    ttl = parse_message_ttl(ttl_hdr)
                except ValueError:
                    ttl = 0
            expired = (ttl > 0 and sm.ts + ttl * NS <= now) or \
                (max_age and ttl >= 0 and sm.ts + max_age <= now)
            if expired:
                due.append((sm.seq, sm.subject,
                            get_header(sm.headers, b"Nats-Marker-Reason") is not None))
        return due

    # ------------------------------------------------------------------ info

    def state(self, *, deleted: bool = False, subjects_filter: str = "") -> dict:
        st = self.store.state(deleted=deleted)
        out = {
            "messages": st.msgs,
            "bytes": st.bytes,
            "first_seq": st.first_seq,
            "first_ts": rfc3339(st.first_ts),
            "last_seq": st.last_seq,
            "last_ts": rfc3339(st.last_ts),
        }
        if st.num_subjects:
            out["num_subjects"] = st.num_subjects
        if subjects_filter:
            subjects = self.store.subjects_totals(subjects_filter)
            if subjects:
                out["subjects"] = subjects
        if st.num_deleted:
            out["num_deleted"] = st.num_deleted
        if deleted and st.deleted:
            out["deleted"] = list(st.deleted)
        out["consumer_count"] = len(self.public_consumers())
        return out

    def info(self, **state_opts) -> dict:
        out = {
            "config": self.cfg,
            "created": rfc3339(self.created),
            "state": self.state(**state_opts),
        }
        if self.cfg.get("mirror"):
            out["mirror"] = next((f.info() for f in self.feeds if f.mirror), None)
        elif self.feeds:
            out["sources"] = [f.info() for f in self.feeds]
        out["ts"] = rfc3339(time.time_ns())
        return out

    def subject_matches(self, subject: str) -> bool:
        return any(subject_matches(subject, s) for s in self.cfg.get("subjects") or ())
