"""JetStream consumers: configuration rules, pull requests, push delivery, acks and redelivery.

Theory of operation
-------------------
A ``Consumer`` is Go's ``consumer`` reduced to one thread. Its position is ``sseq`` (the next
stream sequence to look at) and ``dseq`` (the next delivery sequence); unacknowledged
deliveries are in ``pending`` (stream seq -> [delivery seq, time]), redelivery counts in
``rdc`` and what must go out again in ``rdq``. Every change is written through to the
stream's ``ConsumerStore`` inside the stream's open transaction, so it commits with the batch
that caused it (see natsx.jetstream.stream).

Delivery runs when something changed (a new message, a pull request, an ack that freed room,
interest on the deliver subject, a timer): the manager calls ``deliver()`` once per batch for
every signalled consumer. It takes redeliveries first, then new messages, stops at
``max_ack_pending``, and hands each message to a waiting pull request (batch, max_bytes,
expiry, idle heartbeats, the 404/408/409 statuses) or to the push deliver subject (flow
control, idle heartbeats). A delivery is matched on the inbox or deliver subject but shows
the message's own subject, with the ack reply
``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>``.

Timers (the manager's ``call_later``) drive ack_wait/backoff redelivery (``check_pending``),
pull request expiry and heartbeats, push idle heartbeats and ``inactive_threshold``.
"""
from __future__ import annotations

import json
import re
import time
from collections import deque
from typing import TYPE_CHECKING

from natsx.jetstream.errors import ApiError, error
from natsx.jetstream.util import (NS, add_headers, go_duration, is_subset_match, is_valid_name,
                                  is_valid_subject, is_literal, parse_go_duration,
                                  parse_rfc3339, random_id, rfc3339, status_headers,
                                  subject_matches, subjects_collide)
from natsx.storage import ConsumerState, ConsumerStoreConfig, Pending, SequencePair, StoreError

if TYPE_CHECKING:
    from natsx.jetstream.stream import Stream

ACK_WAIT_DEFAULT = 30 * NS
DELETE_WAIT_DEFAULT = 5 * NS          # ephemeral inactive_threshold
FLOW_CONTROL_MAX_PENDING = 32 * 1024 * 1024
DEFAULT_MAX_ACK_PENDING = 1000
WAIT_QUEUE_DEFAULT_MAX = 512
PINNED_TTL_DEFAULT = 120 * NS       # Go's JsDefaultPinnedTTL
PRIORITY_POLICIES = ("none", "overflow", "pinned_client", "prioritized")   # Go 2.12
VALID_GROUP = re.compile(r"^[a-zA-Z0-9/_=-]{1,16}$")
MAX_NAME_LEN = 255
MAX_DESCRIPTION_LEN = 4 * 1024
MAX_METADATA_LEN = 128 * 1024

DELIVER_POLICIES = ("all", "last", "new", "by_start_sequence", "by_start_time",
                    "last_per_subject")
ACK_POLICIES = ("none", "all", "explicit")
REPLAY_POLICIES = ("instant", "original")

_FIELDS = (
    ("durable_name", None), ("name", None), ("description", None), ("deliver_policy", "all"),
    ("opt_start_seq", None), ("opt_start_time", None), ("ack_policy", "none"),
    ("ack_wait", None), ("max_deliver", None), ("backoff", None), ("filter_subject", None),
    ("filter_subjects", None), ("replay_policy", "instant"), ("rate_limit_bps", None),
    ("sample_freq", None), ("max_waiting", None), ("max_ack_pending", None),
    ("flow_control", None), ("headers_only", None), ("max_batch", None),
    ("max_expires", None), ("max_bytes", None), ("deliver_subject", None),
    ("deliver_group", None), ("idle_heartbeat", None), ("inactive_threshold", None),
    ("num_replicas", 0), ("mem_storage", None), ("direct", None), ("metadata", None),
    ("pause_until", None), ("priority_groups", None), ("priority_policy", None),
    ("priority_timeout", None),
)
_INTS = {"opt_start_seq", "ack_wait", "max_deliver", "rate_limit_bps", "max_waiting",
         "max_ack_pending", "max_batch", "max_expires", "max_bytes", "idle_heartbeat",
         "inactive_threshold", "num_replicas", "priority_timeout"}
_BOOLS = {"flow_control", "headers_only", "mem_storage", "direct"}
_STRINGS = {"durable_name", "name", "description", "filter_subject", "sample_freq",
            "deliver_subject", "deliver_group", "opt_start_time", "pause_until",
            "priority_policy"}
_ENUMS = {"deliver_policy": DELIVER_POLICIES, "ack_policy": ACK_POLICIES,
          "replay_policy": REPLAY_POLICIES}


def _bad_json(detail: str) -> ApiError:
    return error("JSInvalidJSONErr", err=detail)


def decode_config(raw) -> dict:
    """A ConsumerConfig as Go's json.Unmarshal accepts it."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _bad_json("json: cannot unmarshal into Go value of type server.ConsumerConfig")
    cfg = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in _INTS:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad_json(f"json: cannot unmarshal into Go struct field "
                                f"ConsumerConfig.{key}")
        elif key in _BOOLS and not isinstance(value, bool):
            raise _bad_json(f"json: cannot unmarshal into Go struct field ConsumerConfig.{key} "
                            "of type bool")
        elif key in _ENUMS:
            if value not in _ENUMS[key]:
                raise _bad_json(f"can not unmarshal {json.dumps(value)}")
        elif key in _STRINGS and not isinstance(value, str):
            raise _bad_json(f"json: cannot unmarshal into Go struct field ConsumerConfig.{key} "
                            "of type string")
        elif key == "backoff":
            if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
                raise _bad_json("json: cannot unmarshal into Go struct field ConsumerConfig.backoff")
        elif key == "filter_subjects":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _bad_json("json: cannot unmarshal into Go struct field "
                                "ConsumerConfig.filter_subjects")
        if key in ("opt_start_time", "pause_until") and value:
            try:
                parse_rfc3339(value)
            except ValueError:
                raise _bad_json(f"parsing time {json.dumps(value)} as "
                                "\"2006-01-02T15:04:05Z07:00\": cannot parse") from None
        cfg[key] = value
    return cfg


def ordered(cfg: dict) -> dict:
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
    return out


def filters_of(cfg: dict) -> list[str]:
    if cfg.get("filter_subject"):
        return [cfg["filter_subject"]]
    return list(cfg.get("filter_subjects") or ())


def set_defaults(cfg: dict, stream_cfg: dict, limits, pedantic: bool = False) -> None:
    """Go's setConsumerConfigDefaults."""
    def fix(key, bad, value, text):
        v = cfg.get(key, 0) or 0
        if bad(v):
            if pedantic:
                raise error("JSPedanticErrF", err=text)
            cfg[key] = value

    v = cfg.get("max_deliver", 0) or 0
    if v == 0 or v < -1:
        if pedantic and v < -1:
            raise error("JSPedanticErrF", err="max_deliver must be set to -1")
        cfg["max_deliver"] = -1
    fix("max_waiting", lambda v: v < 0, 0, "max_waiting must not be negative")
    fix("max_ack_pending", lambda v: v < -1, -1, "max_ack_pending must be set to -1")
    fix("max_batch", lambda v: v < 0, 0, "max_batch must not be negative")
    fix("max_expires", lambda v: v < 0, 0, "max_expires must not be negative")
    fix("max_bytes", lambda v: v < 0, 0, "max_bytes must not be negative")
    fix("idle_heartbeat", lambda v: v < 0, 0, "idle_heartbeat must not be negative")
    fix("inactive_threshold", lambda v: v < 0, 0, "inactive_threshold must not be negative")
    fix("priority_timeout", lambda v: v < 0, 0, "priority_timeout must not be negative")
    if cfg.get("priority_policy") == "pinned_client" and not cfg.get("priority_timeout"):
        cfg["priority_timeout"] = PINNED_TTL_DEFAULT
    if not cfg.get("deliver_subject") and not cfg.get("max_waiting"):
        cfg["max_waiting"] = WAIT_QUEUE_DEFAULT_MAX
    ack = cfg.get("ack_policy", "none")
    if not cfg.get("ack_wait") and ack in ("explicit", "all"):
        cfg["ack_wait"] = ACK_WAIT_DEFAULT
    if cfg.get("backoff"):
        if pedantic and cfg.get("ack_wait") != cfg["backoff"][0]:
            raise error("JSPedanticErrF", err="first backoff value has to equal batch AckWait")
        cfg["ack_wait"] = cfg["backoff"][0]
    climits = stream_cfg.get("consumer_limits") or {}
    if not cfg.get("max_ack_pending"):
        cfg["max_ack_pending"] = climits.get("max_ack_pending", 0)
    if not cfg.get("inactive_threshold"):
        cfg["inactive_threshold"] = climits.get("inactive_threshold", 0)
    srv = getattr(limits, "server", None)
    if not cfg.get("max_ack_pending") and ack != "none":
        mp = DEFAULT_MAX_ACK_PENDING
        if srv is not None and 0 < srv.max_ack_pending < mp:
            mp = srv.max_ack_pending
        if limits is not None and 0 < limits.max_ack_pending < mp:
            mp = limits.max_ack_pending
        cfg["max_ack_pending"] = mp
    if srv is not None and not cfg.get("deliver_subject") and not cfg.get("max_batch") \
            and srv.max_request_batch > 0:
        if pedantic:
            raise error("JSPedanticErrF",
                        err="max_request_batch must be set if it's JetStream limits are set")
        cfg["max_batch"] = srv.max_request_batch


def check_config(cfg: dict, stream_cfg: dict, limits=None) -> None:
    """Go's checkConsumerCfg. Raises ApiError."""
    name, durable = cfg.get("name", ""), cfg.get("durable_name", "")
    if name and not is_valid_name(name):
        raise error("JSStreamInvalidConfigF",
                    err="consumer name can not contain '.', '*', '>', '\\', '/'")
    if durable and not is_valid_name(durable):
        raise error("JSStreamInvalidConfigF",
                    err="consumer durable name can not contain '.', '*', '>', '\\', '/'")
    replicas = cfg.get("num_replicas", 0) or 0
    if replicas > 0 and replicas > stream_cfg.get("num_replicas", 1):
        raise error("JSConsumerReplicasExceedsStream")
    if replicas < 0:
        raise error("JSReplicasCountCannotBeNegative")
    if stream_cfg["retention"] in ("interest", "workqueue") and replicas not in (0, stream_cfg.get("num_replicas", 1)):
        raise error("JSConsumerReplicasShouldMatchStream")
    for b in cfg.get("backoff") or ():
        if b < 0:
            raise error("JSConsumerBackOffNegativeErr")
    if (cfg.get("ack_wait") or 0) < 0:
        raise error("JSConsumerAckWaitNegativeErr")
    backoff = cfg.get("backoff") or ()
    md = cfg.get("max_deliver", -1)
    if backoff and md != -1 and len(backoff) > md:
        raise error("JSConsumerMaxDeliverBackoffErr")
    if len(cfg.get("description", "")) > MAX_DESCRIPTION_LEN:
        raise error("JSConsumerDescriptionTooLongErrF", max=MAX_DESCRIPTION_LEN)
    dsubj = cfg.get("deliver_subject", "")
    ack = cfg.get("ack_policy", "none")
    if dsubj:
        if not is_literal(dsubj):
            raise error("JSConsumerDeliverToWildcardsErr")
        if not is_valid_subject(dsubj):
            raise error("JSConsumerInvalidDeliverSubject")
        if any(subject_matches(dsubj, s) for s in stream_cfg.get("subjects") or ()):
            raise error("JSConsumerDeliverCycleErr")
        if cfg.get("max_waiting"):
            raise error("JSConsumerPushMaxWaitingErr")
        if (cfg.get("max_ack_pending") or 0) > 0 and ack == "none":
            raise error("JSConsumerMaxPendingAckPolicyRequiredErr")
        hb = cfg.get("idle_heartbeat") or 0
        if 0 < hb < 100_000_000:
            raise error("JSConsumerSmallHeartbeatErr")
    else:
        if ack == "none" and stream_cfg["retention"] == "workqueue":
            raise error("JSConsumerPullRequiresAckErr")
        if cfg.get("rate_limit_bps"):
            raise error("JSConsumerPullWithRateLimitErr")
        if (cfg.get("max_waiting") or 0) < 0:
            raise error("JSConsumerMaxWaitingNegativeErr")
        if cfg.get("idle_heartbeat"):
            raise error("JSConsumerHBRequiresPushErr")
        if cfg.get("flow_control"):
            raise error("JSConsumerFCRequiresPushErr")
        if (cfg.get("max_batch") or 0) < 0:
            raise error("JSConsumerMaxRequestBatchNegativeErr")
        me = cfg.get("max_expires") or 0
        if me and me < 1_000_000:
            raise error("JSConsumerMaxRequestExpiresTooSmall")
    srv = getattr(limits, "server", None)
    if srv is not None:
        if not cfg.get("deliver_subject") and \
                0 < srv.max_request_batch < (cfg.get("max_batch") or 0):
            raise error("JSConsumerMaxRequestBatchExceededF", limit=srv.max_request_batch)
        if 0 < srv.max_ack_pending < (cfg.get("max_ack_pending") or 0):
            raise error("JSConsumerMaxPendingAckExcessErrF", limit=srv.max_ack_pending)
    if limits is not None and 0 < limits.max_ack_pending < (cfg.get("max_ack_pending") or 0):
        raise error("JSConsumerMaxPendingAckExcessErrF", limit=limits.max_ack_pending)
    climits = stream_cfg.get("consumer_limits") or {}
    if 0 < climits.get("max_ack_pending", 0) < (cfg.get("max_ack_pending") or 0):
        raise error("JSConsumerMaxPendingAckExcessErrF", limit=climits["max_ack_pending"])
    if 0 < climits.get("inactive_threshold", 0) < (cfg.get("inactive_threshold") or 0):
        raise error("JSConsumerInactiveThresholdExcess",
                    limit=go_duration(climits["inactive_threshold"]))
    if cfg.get("direct"):
        if not dsubj:
            raise error("JSConsumerDirectRequiresPushErr")
        if durable:
            raise error("JSConsumerDirectRequiresEphemeralErr")
    if cfg.get("filter_subject") and cfg.get("filter_subjects"):
        raise error("JSConsumerDuplicateFilterSubjects")
    if cfg.get("filter_subject") and not is_valid_subject(cfg["filter_subject"]):
        raise error("JSStreamInvalidConfigF", err="invalid subject")
    for f in cfg.get("filter_subjects") or ():
        if not f:
            raise error("JSConsumerEmptyFilter")
    filters = filters_of(cfg)
    for i, f in enumerate(filters):
        if not is_valid_subject(f):
            raise error("JSStreamInvalidConfigF", err="invalid subject")
        for j, g in enumerate(filters):
            if i != j and is_subset_match(f, g):
                raise error("JSConsumerOverlappingSubjectFilters")
    dp = cfg.get("deliver_policy", "all")
    start_seq, start_time = cfg.get("opt_start_seq", 0), cfg.get("opt_start_time")
    names = {"all": "all", "last": "last", "last_per_subject": "last per subject", "new": "new",
             "by_start_sequence": "by start sequence", "by_start_time": "by start time"}
    label = names[dp]

    def bad_start(what):
        return error("JSConsumerInvalidPolicyErrF",
                     err=f"consumer delivery policy is deliver {label}, but optional start "
                         f"{what} is also set")

    def not_set(what):
        return error("JSConsumerInvalidPolicyErrF",
                     err=f"consumer delivery policy is deliver {label}, but optional {what} "
                         "is not set")
    if dp in ("all", "last", "last_per_subject", "new"):
        if start_seq:
            raise bad_start("sequence")
        if start_time:
            raise bad_start("time")
        if dp == "last_per_subject" and not filters:
            raise not_set("filter subject")
    elif dp == "by_start_sequence":
        if not start_seq:
            raise not_set("start sequence")
        if start_time:
            raise bad_start("time")
    elif dp == "by_start_time":
        if not start_time:
            raise not_set("start time")
        if start_seq:
            raise bad_start("start sequence")
    sf = cfg.get("sample_freq")
    if sf:
        try:
            if int(sf.rstrip("%")) < 0:
                raise ValueError
        except ValueError:
            raise error("JSConsumerInvalidSamplingErrF",
                        err=f'strconv.Atoi: parsing "{sf.rstrip("%")}": invalid syntax') from None
    if cfg.get("flow_control") and not cfg.get("idle_heartbeat"):
        raise error("JSConsumerWithFlowControlNeedsHeartbeats")
    if durable and name and durable != name:
        raise error("JSConsumerCreateDurableAndNameMismatch")
    meta = cfg.get("metadata") or {}
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_METADATA_LEN:
        raise error("JSConsumerMetadataLengthErrF", limit=f"{MAX_METADATA_LEN // 1024}KB")
    # Priority groups (Go 2.11: overflow and pinned_client; 2.12: prioritized).
    policy = cfg.get("priority_policy") or "none"
    if policy not in PRIORITY_POLICIES:
        raise error("JSInvalidJSONErr", err=f"unknown priority policy: {json.dumps(policy)}")
    if policy != "none":
        if dsubj:
            raise error("JSConsumerPushWithPriorityGroupErr")
        groups = cfg.get("priority_groups") or []
        if not groups:
            raise error("JSConsumerPriorityPolicyWithoutGroup")
        for group in groups:
            if group == "":
                raise error("JSConsumerEmptyGroupName")
            if not isinstance(group, str) or not VALID_GROUP.match(group):
                raise error("JSConsumerInvalidGroupNameErr")
    else:
        if cfg.get("priority_groups"):
            raise error("JSConsumerPriorityGroupWithPolicyNone")
        if (cfg.get("priority_timeout") or 0) > 0:
            raise error("JSConsumerPinnedTTLWithoutPriorityPolicyNone")
    # Since 2.10 a filter need not be a subset of the stream's subjects (transforms and
    # sources store other subjects): 10093 is no longer returned.


def check_update(old: dict, new: dict, has_interest) -> None:
    """Go's checkNewConsumerConfig; raises ApiError 10012 with Go's text."""
    if old == new:
        return

    def fail(text):
        raise error("JSConsumerCreateErrF", err=text)
    for key, text in (("deliver_policy", "deliver policy can not be updated"),
                      ("mem_storage", "storage type can not be updated"),
                      ("direct", "direct can not be updated"),
                      ("opt_start_seq", "start sequence can not be updated"),
                      ("opt_start_time", "start time can not be updated"),
                      ("ack_policy", "ack policy can not be updated"),
                      ("replay_policy", "replay policy can not be updated"),
                      ("idle_heartbeat", "heart beats can not be updated"),
                      ("flow_control", "flow control can not be updated")):
        if old.get(key) != new.get(key):
            fail(text)
    od, nd = old.get("deliver_subject", ""), new.get("deliver_subject", "")
    if od != nd:
        if not od:
            fail("can not update pull consumer to push based")
        if not nd:
            fail("can not update push consumer to pull based")
        if has_interest(od):
            raise error("JSConsumerNameExistErr")
    if old.get("max_waiting") != new.get("max_waiting"):
        fail("max waiting can not be updated")
    if (old.get("deliver_group") or "") != (new.get("deliver_group") or "") and od == nd:
        pass
    if old.get("headers_only") != new.get("headers_only"):
        fail("headers only can not be updated")


def new_consumer_name() -> str:
    return random_id(8)


def _priority(wr) -> int:
    return wr.pg.priority if wr.pg is not None else 0x7FFFFFFF


def _insert_by_priority(waiting: deque, wr) -> None:
    """Go's insertAtPosition for the prioritized policy: after every waiting request of a
    lower or the same priority (0 first; a request without a priority group last), so
    requests of one priority are served in turn."""
    mine = _priority(wr)
    for i, other in enumerate(waiting):
        if _priority(other) > mine:
            waiting.insert(i, wr)
            return
    waiting.append(wr)


class PriorityGroup:
    """The priority group fields of a JSON pull request (Go PriorityGroup)."""

    __slots__ = ("group", "min_pending", "min_ack_pending", "id", "priority")

    def __init__(self, d: dict) -> None:
        self.group = d.get("group") or ""
        self.min_pending = d.get("min_pending") or 0
        self.min_ack_pending = d.get("min_ack_pending") or 0
        self.id = d.get("id") or ""
        self.priority = d.get("priority") or 0
        if not (isinstance(self.group, str) and isinstance(self.id, str) and
                all(isinstance(v, int) and not isinstance(v, bool)
                    for v in (self.min_pending, self.min_ack_pending, self.priority))):
            raise ValueError("json: cannot unmarshal into Go struct field")


class PullRequest:
    """One waiting pull request (Go waitingRequest)."""

    __slots__ = ("reply", "n", "d", "b", "expires", "no_wait", "hb", "hbt", "received", "pg")

    def __init__(self, reply: bytes, n: int, b: int, expires: float, no_wait: bool, hb: float,
                 pg: PriorityGroup | None = None):
        self.pg = pg
        self.reply = reply
        self.n = n
        self.d = 0
        self.b = b
        self.expires = expires          # monotonic deadline, 0 = none
        self.no_wait = no_wait
        self.hb = hb                    # seconds
        now = time.monotonic()
        self.hbt = now + hb if hb else 0.0
        self.received = now


def parse_pull_request(payload: bytes):
    """Go's nextReqFromMsg: (expires_s, batch, max_bytes, no_wait, hb_s, priority group or
    None) or raises ValueError. Only a JSON request has a priority group."""
    req = payload.strip()
    if not req:
        return 0.0, 1, 0, False, 0.0, None
    if req[:1] == b"{":
        try:
            d = json.loads(req)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(d, dict):
            raise ValueError("json: cannot unmarshal into Go value")
        expires = d.get("expires") or 0
        batch = d.get("batch") or 0
        max_bytes = d.get("max_bytes") or 0
        hb = d.get("idle_heartbeat") or 0
        if not all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (expires, batch, max_bytes, hb)):
            raise ValueError("json: cannot unmarshal into Go struct field")
        if hb > 0 and hb * 2 > expires:
            raise ValueError("heartbeat value too large")
        return (expires / NS, batch, max_bytes, bool(d.get("no_wait")), hb / NS,
                PriorityGroup(d))
    try:
        return 0.0, int(req), 0, False, 0.0, None
    except ValueError:
        return 0.0, 1, 0, False, 0.0, None


class Consumer:
    """One consumer of a stream; see the module docstring."""

    def __init__(self, stream: "Stream", name: str, cfg: dict, created_ns: int, cs) -> None:
        self.stream = stream
        self.js = stream.js
        self.name = name
        self.cfg = cfg
        self.created = created_ns
        self.cs = cs
        self.closed = False
        self.filters = filters_of(cfg)
        self.sseq = 1
        self.dseq = 1
        self.adflr = 0
        self.asflr = 0
        self.pending: dict[int, list] = {}
        self.rdc: dict[int, int] = {}
        self.rdq: deque = deque()
        self.rdq_set: set = set()
        self.waiting: deque = deque()
        self.npc = 0
        self.npc_stale = True
        self.lss: deque | None = None
        self.lss_resume = 0
        self.active = True
        self.pbytes = 0
        self.pblimit = FLOW_CONTROL_MAX_PENDING if cfg.get("flow_control") else 0
        self.maxpb = self.pblimit // 16 if self.pblimit else 0
        self.fcid = b""
        self.fcsz = 0
        self.last_delivered = 0.0
        self.last_active = time.monotonic()
        self.delivered_ts = 0
        self.ack_ts = 0
        self.ptmr = None
        self.ptmr_at = 0.0
        self.hb_timer = None
        self.wait_timer = None
        self.wait_timer_at = 0.0
        self.inactive_timer = None
        self.signaled = False
        acc = stream.account.name
        self.ack_prefix = b"$JS.ACK.%s.%s." % (stream.name.encode(), name.encode())
        self.account_name = acc
        # Pacing (Go: o.replay with lts, o.rlimit): replay_policy "original" delays each
        # message by the time between it and the previous one when they were stored, until
        # the consumer has caught up with the stream as it was at start; rate_limit_bps is a
        # token bucket in bytes. A message held back waits in ``held`` for ``pace_timer``.
        self.replay = cfg.get("replay_policy") == "original"
        self.replay_lseq = 0
        self.lts = 0
        self.held = None
        self.pace_until = 0.0
        self.pace_timer = None
        self.rl_rate = 0.0
        self.rl_burst = 0
        self.rl_tokens = 0.0
        self.rl_at = 0.0
        self.sfreq = 0
        # Priority groups: the pinned client's id, when it was pinned, the pin's timer.
        self.pin_id = ""
        self.pinned_ts = 0
        self.pin_timer = None
        self._configure_pacing()

    # ------------------------------------------------------------------ pacing

    def _configure_pacing(self) -> None:
        """Go's setRateLimit (bits per second; burst: the stream's max message size, else
        the server's max payload) and the ack sampling frequency."""
        from natsx.jetstream.events import sample_freq

        self.sfreq = sample_freq(self.cfg)
        bps = self.cfg.get("rate_limit_bps") or 0
        if bps <= 0:
            self.rl_rate = 0.0
            return
        self.rl_rate = bps / 8
        mms = self.stream.cfg.get("max_msg_size", -1) or -1
        self.rl_burst = mms if mms > 0 else self.js.server.options.max_payload
        self.rl_tokens = float(self.rl_burst)
        self.rl_at = time.monotonic()

    def _pace(self, sm) -> float:
        """How long ``sm`` must wait before delivery (0: now)."""
        now = time.monotonic()
        if self.pace_until:
            if now < self.pace_until:
                return self.pace_until - now
            self.pace_until = 0.0
            return 0.0
        delay = 0.0
        if self.replay and self.lts > 0:
            d = (sm.ts - self.lts) / 1e9
            if d > 0.001:
                delay = d
        if self.rl_rate:
            size = len(sm.subject) + len(sm.headers or b"") + len(sm.payload or b"")
            self.rl_tokens = min(float(self.rl_burst),
                                 self.rl_tokens + (now - self.rl_at) * self.rl_rate)
            self.rl_at = now
            self.rl_tokens -= size
            if self.rl_tokens < 0:
                delay = max(delay, -self.rl_tokens / self.rl_rate)
        if delay > 0:
            self.pace_until = now + delay
        return delay

    def _hold(self, item, delay: float) -> None:
        self.held = item
        if self.pace_timer is not None:
            self.pace_timer.cancel()
        self.pace_timer = self.js.call_later(delay, self._pace_fired)

    def _pace_fired(self) -> None:
        self.pace_timer = None
        self.signal()

    # ------------------------------------------------------------------ config helpers

    @property
    def is_push(self) -> bool:
        return bool(self.cfg.get("deliver_subject"))

    @property
    def durable(self) -> bool:
        return bool(self.cfg.get("durable_name"))

    @property
    def max_ack_pending(self) -> int:
        return self.cfg.get("max_ack_pending", 0) if self.cfg.get("ack_policy") != "none" else 0

    def matches(self, subject: str) -> bool:
        if not self.filters:
            return True
        return any(subject_matches(subject, f) for f in self.filters)

    def overlaps(self, subject: str) -> bool:
        if not self.filters:
            return True
        return any(is_subset_match(f, subject) or subjects_collide(f, subject)
                   for f in self.filters)

    def needs_ack(self, seq: int) -> bool:
        """Interest retention: this consumer has not acknowledged ``seq`` yet."""
        if seq >= self.sseq:
            return True
        if self.cfg.get("ack_policy") == "none":
            return False
        return seq in self.pending or seq in self.rdq_set

    def store_config(self) -> ConsumerStoreConfig:
        return ConsumerStoreConfig(self.cfg.get("ack_policy", "none"),
                                   self.cfg.get("max_deliver", -1))

    # ------------------------------------------------------------------ start

    def select_start(self) -> None:
        """Go's selectStartingSeqNo for a consumer without stored state."""
        store = self.stream.store
        state = store.state()
        cfg = self.cfg
        dp = cfg.get("deliver_policy", "all")
        if dp == "all":
            self.sseq = state.first_seq
        elif dp == "last":
            if self.filters:
                last = 0
                for f in self.filters:
                    try:
                        last = max(last, store.load_last_msg(f).seq)
                    except StoreError:
                        pass
                self.sseq = last or state.last_seq + 1
            else:
                self.sseq = state.last_seq if state.msgs else state.last_seq + 1
        elif dp == "last_per_subject":
            seqs = store.multi_last_seqs(self.filters or [">"])
            if seqs:
                self.lss = deque(seqs)
                self.lss_resume = state.last_seq + 1
                self.sseq = seqs[0]
            else:
                self.sseq = state.last_seq + 1
        elif dp == "new":
            self.sseq = state.last_seq + 1
        elif dp == "by_start_sequence":
            self.sseq = cfg.get("opt_start_seq", 1)
        elif dp == "by_start_time":
            self.sseq = store.get_seq_from_time(parse_rfc3339(cfg["opt_start_time"]))
        if state.first_seq and self.sseq < state.first_seq and dp != "by_start_sequence":
            self.sseq = state.first_seq
        if self.sseq == 0:
            self.sseq = 1
        self.adflr = self.dseq - 1
        self.asflr = self.sseq - 1
        self.stream.touch()
        self.cs.set_starting(self.sseq - 1)
        self.npc_stale = True

    def restore(self) -> None:
        """Recover the position from the stored consumer state."""
        st = self.cs.state()
        self.sseq = st.delivered.stream + 1
        self.dseq = st.delivered.consumer + 1
        self.adflr, self.asflr = st.ack_floor.consumer, st.ack_floor.stream
        now = time.time_ns()
        # Pending deliveries get a fresh ack_wait: the clients that had them are gone.
        self.pending = {seq: [p.sequence, now] for seq, p in st.pending.items()}
        self.rdc = dict(st.redelivered)
        self.npc_stale = True
        if self.pending:
            self._arm_pending(self.cfg.get("ack_wait", ACK_WAIT_DEFAULT) / NS)

    def start(self) -> None:
        if self.replay:
            self.replay_lseq = self.stream.store.state().last_seq
        if self.is_push:
            self.active = self.js.has_interest(self.account_name, self.cfg["deliver_subject"])
            if self.cfg.get("idle_heartbeat"):
                self._arm_hb()
        self._arm_inactive()
        self.signal()

    def stop(self, *, delete: bool) -> None:
        if self.closed:
            return
        self.closed = True
        for t in (self.ptmr, self.hb_timer, self.wait_timer, self.inactive_timer,
                  self.pace_timer, self.pin_timer):
            if t is not None:
                t.cancel()
        if not self.is_push:
            # Go: pull requests still waiting learn that their consumer went away.
            hdr = status_headers(409, "Consumer Deleted") if delete else None
            if hdr is not None:
                for wr in self.waiting:
                    self.js.send(self.account_name, wr.reply, None, b"", hdr=hdr)
        self.waiting.clear()
        self.stream.touch()
        if delete:
            self.cs.delete()
        else:
            self.cs.stop()

    # ------------------------------------------------------------------ signals

    def signal(self) -> None:
        if not self.signaled and not self.closed:
            self.signaled = True
            self.js.signaled.append(self)

    def on_new_msg(self, seq: int, subject: str) -> None:
        if not self.npc_stale and seq >= self.sseq and self.matches(subject):
            self.npc += 1
        self.signal()

    def on_removed(self, seq: int, subject: str) -> None:
        if seq == 0:
            self.npc_stale = True
        elif not self.npc_stale and seq >= self.sseq and self.matches(subject):
            self.npc = max(self.npc - 1, 0)

    def on_purge(self, fseq: int) -> None:
        """Go's consumer.purge: skip what was purged, forget its pending acks."""
        if self.sseq < fseq:
            self.sseq = fseq
            if self.lss is not None:
                self.lss = None
        for seq in [s for s in self.pending if s < fseq]:
            del self.pending[seq]
            self.rdc.pop(seq, None)
        for seq in [s for s in self.rdq_set if s < fseq]:
            self.rdq_set.discard(seq)
        self.rdq = deque(s for s in self.rdq if s >= fseq)
        if not self.pending:
            self.adflr, self.asflr = self.dseq - 1, self.sseq - 1
        self.npc_stale = True
        self._write_state()
        self.signal()

    def on_interest(self) -> None:
        """Someone subscribed on the deliver subject."""
        if self.is_push and not self.active:
            self.active = True
            self.signal()

    def _write_state(self) -> None:
        state = ConsumerState(SequencePair(self.dseq - 1, self.sseq - 1),
                              SequencePair(self.adflr, self.asflr),
                              {s: Pending(p[0], p[1]) for s, p in self.pending.items()},
                              dict(self.rdc))
        self.stream.touch()
        try:
            self.cs.force_update(state)
        except StoreError:
            pass

    # ------------------------------------------------------------------ num pending

    def num_pending(self) -> int:
        if self.npc_stale:
            store = self.stream.store
            lps = self.cfg.get("deliver_policy") == "last_per_subject"
            if self.lss is not None:
                n = len(self.lss)
                for f in self.filters or [""]:
                    n += store.num_pending(self.lss_resume, f)[0]
                self.npc = n
            elif not self.filters:
                self.npc = store.num_pending(self.sseq, "", lps and False)[0]
            else:
                self.npc = sum(store.num_pending(self.sseq, f)[0] for f in self.filters)
            self.npc_stale = False
        return max(self.npc, 0)

    # ------------------------------------------------------------------ delivery

    def _load_next(self, start: int):
        store = self.stream.store
        if len(self.filters) <= 1:
            f = self.filters[0] if self.filters else ""
            try:
                return store.load_next_msg(f, start=start)
            except StoreError:
                return None, 0
        best = None
        for f in self.filters:
            try:
                sm, seq = store.load_next_msg(f, start=start)
            except StoreError:
                continue
            if best is None or seq < best[1]:
                best = (sm, seq)
        return best if best is not None else (None, 0)

    def _next_msg(self):
        """Go's getNextMsg: (stored message, delivery count, stalled on max ack pending)."""
        store = self.stream.store
        md = self.cfg.get("max_deliver", -1)
        while self.rdq:
            seq = self.rdq.popleft()
            self.rdq_set.discard(seq)
            if seq not in self.pending:
                continue
            dc = self.rdc.get(seq, 0) + 2
            if md > 0 and dc > md:
                self._max_deliveries_reached(seq, dc - 1)
                continue
            try:
                sm = store.load_msg(seq)
            except StoreError:
                p = self.pending.get(seq)
                if p is not None:
                    self._ack_one(seq, p[0])
                continue
            self.rdc[seq] = dc - 1
            return sm, dc, False
        mp = self.max_ack_pending
        if mp > 0 and len(self.pending) >= mp:
            return None, 0, True
        if self.lss is not None:
            while self.lss:
                seq = self.lss.popleft()
                try:
                    sm = store.load_msg(seq)
                except StoreError:
                    continue
                self.sseq = seq + 1
                if not self.lss:
                    self.sseq = self.lss_resume
                    self.lss = None
                return sm, 1, False
            self.sseq = self.lss_resume
            self.lss = None
        sm, seq = self._load_next(self.sseq)
        if sm is None:
            last = store.state().last_seq
            if last + 1 > self.sseq:
                self.sseq = last + 1
            return None, 0, False
        self.sseq = seq + 1
        return sm, 1, False

    def _max_deliveries_reached(self, seq: int, dc: int) -> None:
        p = self.pending.pop(seq, None)
        self.rdc[seq] = dc
        if p is not None:
            self.stream.touch()
            try:
                self.cs.update_delivered(p[0], seq, dc + 1, p[1])
            except StoreError:
                pass
        self.js.advisory(self, "MAX_DELIVERIES", {
            "type": "io.nats.jetstream.advisory.v1.max_deliver",
            "stream": self.stream.name, "consumer": self.name,
            "stream_seq": seq, "deliveries": dc})

    def deliver(self) -> None:
        """Deliver what can be delivered now; called once per batch when signalled."""
        self.signaled = False
        if self.closed:
            return
        stalled = False
        delivered = 0
        if self._paused():
            return
        while True:
            if self.is_push:
                if not self.active:
                    break
                if not self.js.has_interest(self.account_name, self.cfg["deliver_subject"]):
                    self.active = False
                    break
                if self.maxpb and self.pbytes > self.maxpb:
                    break
            elif not self.waiting:
                break
            if self.held is not None:
                (sm, dc, stalled), self.held = self.held, None
            else:
                sm, dc, stalled = self._next_msg()
            if sm is None:
                if self.replay and self.sseq > self.replay_lseq:
                    self.replay = False
                break
            if (self.replay and self.lts) or self.rl_rate or self.pace_until:
                wait = self._pace(sm)
                if wait > 0:
                    self._hold((sm, dc, stalled), wait)
                    break
            self.lts = sm.ts
            if dc == 1 and not self.npc_stale:
                self.npc -= 1
            ack_reply = self.ack_prefix + b"%d.%d.%d.%d.%d" % (
                dc, sm.seq, self.dseq, sm.ts, self.num_pending())
            hdr, payload = sm.headers or None, sm.payload
            if self.cfg.get("headers_only"):
                hdr = add_headers(hdr, [(b"Nats-Msg-Size", b"%d" % len(payload))])
                payload = b""
            subject = sm.subject.encode("utf-8", "surrogateescape")
            size = len(subject) + len(ack_reply) + (len(hdr) if hdr else 0) + len(payload)
            wr = None
            if self.is_push:
                dsubj = self.cfg["deliver_subject"].encode()
            else:
                wr = self._next_waiting(size)
                if wr is None:
                    # Nobody to take it: put it back.
                    if dc == 1 and sm.seq == self.sseq - 1:
                        self.sseq -= 1
                        if not self.npc_stale:
                            self.npc += 1
                    else:
                        self.rdc[sm.seq] = self.rdc.get(sm.seq, 1) - 1
                        if self.rdc[sm.seq] <= 0:
                            del self.rdc[sm.seq]
                        if sm.seq not in self.rdq_set:
                            self.rdq.appendleft(sm.seq)
                            self.rdq_set.add(sm.seq)
                    break
                dsubj = wr.reply
                if self.cfg.get("priority_policy") == "pinned_client":
                    hdr = add_headers(hdr, [(b"Nats-Pin-Id", self.pin_id.encode())])
                    size = len(subject) + len(ack_reply) + len(hdr) + len(payload)
            self._deliver_msg(dsubj, ack_reply, sm, dc, hdr, payload, subject, size)
            delivered += 1
            if wr is not None:
                if wr.n <= 0 and wr.b > 0:
                    self.js.send(self.account_name, dsubj, None, b"", hdr=status_headers(
                        409, "Batch Completed",
                        [(b"Nats-Pending-Messages", b"%d" % wr.n),
                         (b"Nats-Pending-Bytes", b"%d" % wr.b)]))
        if not self.is_push:
            self._process_waiting(eos=not stalled)
            self._arm_waiting()
        elif delivered and self.cfg.get("idle_heartbeat"):
            self._arm_hb()

    def _deliver_msg(self, dsubj, ack_reply, sm, dc, hdr, payload, subject, size) -> None:
        dseq = self.dseq
        self.dseq += 1
        seq = sm.seq
        now = time.time_ns()
        if self.maxpb:
            self.pbytes += size
        self.stream.touch()
        try:
            self.cs.update_delivered(dseq, seq, dc, now)
        except StoreError:
            pass
        self.delivered_ts = now
        self.last_delivered = self.last_active = time.monotonic()
        ack = self.cfg.get("ack_policy", "none")
        if ack == "none":
            self.adflr, self.asflr = dseq, seq
        else:
            self._track_pending(seq, dseq, now)
        self.js.send(self.account_name, dsubj, ack_reply, payload, hdr=hdr, deliver_as=subject)
        if self.maxpb and self._need_flow_control(size):
            self._send_flow_control()
        if ack == "none" and self.stream.cfg["retention"] != "limits":
            self.stream.ack_msg(self, seq, sm.subject)

    def _track_pending(self, seq: int, dseq: int, now: int) -> None:
        p = self.pending.get(seq)
        if p is not None:
            p[1] = now
        else:
            self.pending[seq] = [dseq, now]
        wait = self.cfg.get("ack_wait", ACK_WAIT_DEFAULT)
        backoff = self.cfg.get("backoff")
        if backoff:
            bi = min(max(self.rdc.get(seq, 0), 0), len(backoff) - 1)
            wait = backoff[bi]
        deadline = time.monotonic() + wait / NS
        if self.ptmr is None or self.ptmr_at > deadline:
            self._arm_pending(wait / NS)

    # ------------------------------------------------------------------ pull requests

    def process_next_request(self, reply: bytes, payload: bytes,
                             received: float | None = None) -> None:
        """Go's processNextMsgRequest. ``received``: when it was read (monotonic)."""
        if not reply:
            return
        send = self.js.send
        acc = self.account_name

        def send_err(code: int, text: str):
            send(acc, reply, None, b"", hdr=status_headers(code, text))
        if self.is_push:
            return send_err(409, "Consumer is push based")
        try:
            expires, batch, max_bytes, no_wait, hb, pg = parse_pull_request(payload)
        except ValueError as exc:
            return send_err(400, f"Bad Request - {exc}")
        cfg = self.cfg
        if cfg.get("max_batch") and batch > cfg["max_batch"]:
            return send_err(409, f"Exceeded MaxRequestBatch of {cfg['max_batch']}")
        if expires and cfg.get("max_expires") and expires * NS > cfg["max_expires"]:
            return send_err(409, f"Exceeded MaxRequestExpires of {go_duration(cfg['max_expires'])}")
        if max_bytes > 0 and cfg.get("max_bytes") and max_bytes > cfg["max_bytes"]:
            return send_err(409, f"Exceeded MaxRequestMaxBytes of {cfg['max_bytes']}")
        policy = cfg.get("priority_policy") or "none"
        if pg is not None:
            if (pg.min_pending or pg.min_ack_pending) and policy != "overflow":
                return send_err(400, "Bad Request - Not a Overflow Priority consumer")
            if pg.id and policy != "pinned_client":
                return send_err(400, "Bad Request - Not a Pinned Client Priority consumer")
            if not 0 <= pg.priority <= 9:
                return send_err(400, "Bad Request - Priority must be between 0 and 9")
            if policy != "none":
                if not pg.group:
                    return send_err(400, "Bad Request - Priority Group missing")
                if pg.group not in (cfg.get("priority_groups") or ()):
                    return send_err(400, "Bad Request - Invalid Priority Group")
                if self.pin_id:
                    if pg.id == self.pin_id:
                        self._set_pin_timer(pg.group)
                    elif pg.id:
                        return send_err(423, "Nats-Pin-Id mismatch")
        if batch <= 0:
            batch = 1
        self.last_active = time.monotonic()
        if len(self.waiting) >= cfg.get("max_waiting", WAIT_QUEUE_DEFAULT_MAX):
            self._process_waiting(eos=False)
        if no_wait:
            pending = self.num_pending() + len(self.rdq)
            if pending == 0 and not expires:
                return send_err(404, "No Messages")
            if pending > 0:
                queued = sum(wr.n for wr in self.waiting)
                if pending < queued:
                    return send_err(408, "Requests Pending")
        if len(self.waiting) >= cfg.get("max_waiting", WAIT_QUEUE_DEFAULT_MAX):
            if not hb:
                send_err(409, "Exceeded MaxWaiting")
            return
        # Expiry counts from when the request was read, as in Go: counting from now would
        # add our processing delay and keep a request alive after its fetch gave up.
        start = received if received is not None else time.monotonic()
        wr = PullRequest(reply, batch, max_bytes, start + expires if expires else 0.0, no_wait, hb,
                         pg)
        if policy == "prioritized":
            _insert_by_priority(self.waiting, wr)
        else:
            self.waiting.append(wr)
        self.signal()

    def _has_interest(self, subject: bytes) -> bool:
        return self.js.has_interest(self.account_name, subject)

    def _next_waiting(self, size: int):
        """Go's nextWaiting: the request that takes the next message, or None."""
        now = time.monotonic()
        policy = self.cfg.get("priority_policy")
        need_pin = policy == "pinned_client" and not self.pin_id
        cycled = 0
        while self.waiting:
            wr = self.waiting[0]
            if wr.expires and now >= wr.expires:
                self.waiting.popleft()
                self._send_status(wr, 408, "Request Timeout")
                continue
            if policy == "pinned_client":
                pin = wr.pg.id if wr.pg is not None else ""
                if need_pin:
                    if not pin:
                        # The first request without an id is pinned (Go: assignNewPinId).
                        self._assign_pin(wr)
                        need_pin = False
                    else:
                        # An old pin's request.
                        self.waiting.popleft()
                        self._send_status(wr, 423, "Nats-Wrong-Pin-Id")
                        continue
                elif pin != self.pin_id:
                    if not pin:
                        # Waits its turn, for when the pin goes.
                        self.waiting.rotate(-1)
                        cycled += 1
                        if cycled >= len(self.waiting):
                            return None
                        continue
                    self.waiting.popleft()
                    self._send_status(wr, 423, "Nats-Wrong-Pin-Id")
                    continue
            elif policy == "overflow" and wr.pg is not None and \
                    (wr.pg.min_pending > 0 or wr.pg.min_ack_pending > 0) and not (
                        (0 < wr.pg.min_pending <= self.num_pending() + 1) or
                        (0 < wr.pg.min_ack_pending <= len(self.pending))):
                # Served only once the consumer is that far behind (Go: PriorityOverflow).
                self.waiting.rotate(-1)
                cycled += 1
                if cycled >= len(self.waiting):
                    return None
                continue
            if wr.b > 0:
                if size <= wr.b:
                    wr.b -= size
                    if wr.b == 0:
                        wr.n = 1
                else:
                    self.waiting.popleft()
                    self._send_status(wr, 409, "Message Size Exceeds MaxBytes")
                    continue
            if self._has_interest(wr.reply):
                wr.n -= 1
                wr.d += 1
                if wr.n <= 0:
                    self.waiting.popleft()
                else:
                    if wr.hb:
                        wr.hbt = now + wr.hb
                    # Go's popOrPopAndRequeue: round-robin among the waiting requests
                    # (prioritized: among those of the same priority).
                    if policy == "prioritized":
                        if len(self.waiting) > 1:
                            _insert_by_priority(self.waiting, self.waiting.popleft())
                    else:
                        self.waiting.rotate(-1)
                return wr
            self.waiting.popleft()
        return None

    # ------------------------------------------------------------------ priority groups

    def _assign_pin(self, wr: PullRequest) -> None:
        if wr.pg is None or not wr.pg.group:
            return
        self.pin_id = random_id(22)
        self.pinned_ts = time.time_ns()
        wr.pg.id = self.pin_id
        self._set_pin_timer(wr.pg.group)
        self.js.events.consumer_pinned(self, wr.pg.group)

    def _set_pin_timer(self, group: str) -> None:
        """(Re)starts the pin's lease: ``priority_timeout`` without a request from the
        pinned client ends it (Go: setPinnedTimer)."""
        if self.pin_timer is not None:
            self.pin_timer.cancel()

        def expired():
            self.pin_timer = None
            if self.closed or not self.pin_id:
                return
            self.unpin()
            self.js.events.consumer_unpinned(self, group, "timeout")
            self.signal()
        self.pin_timer = self.js.call_later((self.cfg.get("priority_timeout") or 0) / NS,
                                            expired)

    def unpin(self) -> None:
        self.pin_id = ""
        self.pinned_ts = 0
        if self.pin_timer is not None:
            self.pin_timer.cancel()
            self.pin_timer = None

    def _send_status(self, wr: PullRequest, code: int, text: str) -> None:
        self.js.send(self.account_name, wr.reply, None, b"", hdr=status_headers(
            code, text, [(b"Nats-Pending-Messages", b"%d" % wr.n),
                         (b"Nats-Pending-Bytes", b"%d" % wr.b)]))

    def _process_waiting(self, eos: bool) -> None:
        """Go's processWaiting: expire requests, end no_wait ones, send their heartbeats."""
        if not self.waiting:
            return
        now = time.monotonic()
        keep = deque()
        for wr in self.waiting:
            expired = bool(wr.expires) and now >= wr.expires
            if (eos and wr.no_wait) or expired:
                if expired:
                    self._send_status(wr, 408, "Request Timeout")
                    continue
                if not wr.expires or wr.d > 0:
                    self.js.send(self.account_name, wr.reply, None, b"",
                                 hdr=status_headers(404, "No Messages"))
                    continue
            if not self._has_interest(wr.reply):
                continue
            if wr.hbt and now >= wr.hbt:
                self._send_heartbeat(wr.reply)
                wr.hbt = now + wr.hb
            keep.append(wr)
        self.waiting = keep

    def _arm_waiting(self) -> None:
        nxt = 0.0
        for wr in self.waiting:
            for t in (wr.expires, wr.hbt):
                if t and (not nxt or t < nxt):
                    nxt = t
        if not nxt:
            if self.wait_timer is not None:
                self.wait_timer.cancel()
                self.wait_timer = None
            return
        if self.wait_timer is not None:
            if self.wait_timer_at <= nxt:
                return
            self.wait_timer.cancel()
        self.wait_timer_at = nxt
        self.wait_timer = self.js.call_at(nxt, self._on_wait_timer)

    def _on_wait_timer(self) -> None:
        self.wait_timer = None
        if self.closed:
            return
        # Go (loopAndGatherMsgs, the request timer): a timer tick ends one-shot (no_wait)
        # requests that already got something, even when stalled on max_ack_pending.
        self._process_waiting(eos=True)
        self.signal()

    # ------------------------------------------------------------------ heartbeats, flow control

    def _send_heartbeat(self, subject: bytes) -> None:
        pairs = [(b"Nats-Last-Consumer", b"%d" % (self.dseq - 1)),
                 (b"Nats-Last-Stream", b"%d" % (self.sseq - 1))]
        if self.fcid:
            pairs.append((b"Nats-Consumer-Stalled", self.fcid))
        self.js.send(self.account_name, subject, None, b"",
                     hdr=status_headers(100, "Idle Heartbeat", pairs))

    def _arm_hb(self) -> None:
        hb = self.cfg.get("idle_heartbeat", 0) / NS
        if not hb:
            return
        if self.hb_timer is not None:
            self.hb_timer.cancel()
        self.hb_timer = self.js.call_later(hb, self._on_hb)

    def _on_hb(self) -> None:
        self.hb_timer = None
        if self.closed:
            return
        hb = self.cfg.get("idle_heartbeat", 0) / NS
        if self.is_push and self._has_interest(self.cfg["deliver_subject"].encode()):
            self._send_heartbeat(self.cfg["deliver_subject"].encode())
        self.hb_timer = self.js.call_later(hb, self._on_hb)

    def _need_flow_control(self, size: int) -> bool:
        if not self.fcid and self.pbytes > self.maxpb // 2:
            return True
        if self.fcid and self.pbytes - self.fcsz >= self.maxpb:
            self.fcsz += size
        return False

    def _send_flow_control(self) -> None:
        reply = b"$JS.FC.%s.%s.%s" % (self.stream.name.encode(), self.name.encode(),
                                     random_id(4).encode())
        self.fcsz, self.fcid = self.pbytes, reply
        self.js.send(self.account_name, self.cfg["deliver_subject"].encode(), reply, b"",
                     hdr=b"NATS/1.0 100 FlowControl Request\r\n\r\n")

    def process_flow_control(self, subject: bytes) -> None:
        if subject != self.fcid:
            return
        if self.maxpb < self.pblimit:
            self.maxpb = min(self.maxpb * 2, self.pblimit)
        self.pbytes = max(self.pbytes - self.fcsz, 0)
        self.fcid, self.fcsz = b"", 0
        self.signal()

    # ------------------------------------------------------------------ acks

    def process_ack(self, tokens: list, reply, payload: bytes) -> None:
        """An ack on ``$JS.ACK...``; ``tokens`` are dc, sseq, dseq, ts, pending."""
        try:
            dc, sseq, dseq = int(tokens[0]), int(tokens[1]), int(tokens[2])
        except (ValueError, IndexError):
            return
        self.last_active = time.monotonic()
        msg = payload
        skip_reply = sseq == 0
        if not msg or msg in (b"+ACK", b"+OK"):
            if not self._ack(sseq, dseq, dc):
                skip_reply = True
        elif msg.startswith(b"+NXT"):
            self._ack(sseq, dseq, dc)
            rest = msg[4:].strip()
            if reply:
                self.process_next_request(reply, rest)
            skip_reply = True
        elif msg.startswith(b"-NAK"):
            self._nak(sseq, dseq, dc, msg[4:])
        elif msg == b"+WPI":
            self._progress(sseq)
        elif msg.startswith(b"+TERM"):
            self._term(sseq, dseq, dc, msg[5:].strip().decode("utf-8", "replace"))
        if reply and not skip_reply:
            self.js.send(self.account_name, reply, None, b"")

    def _ack(self, sseq: int, dseq: int, dc: int) -> bool:
        """Go's processAckMsg; True when the ack counted."""
        if sseq >= self.sseq and not self.cfg.get("flow_control"):
            return False
        ack = self.cfg.get("ack_policy", "none")
        mp = self.max_ack_pending
        need_signal = False
        if ack == "explicit":
            p = self.pending.get(sseq)
            if p is not None:
                if mp > 0 and len(self.pending) >= mp:
                    need_signal = True
                if self.sfreq:
                    self.js.events.ack_sample(self, sseq, dseq, dc, p[1])
                del self.pending[sseq]
                self._move_ack_floor(p[0], sseq)
                self._store_ack(p[0], sseq)
                self.stream.ack_msg(self, sseq)
                self.ack_ts = time.time_ns()
            self.rdc.pop(sseq, None)
            self._rdq_remove(sseq)
        elif ack == "all":
            if dseq <= self.adflr or sseq <= self.asflr:
                return True
            if mp > 0 and len(self.pending) >= mp:
                need_signal = True
            if self.sfreq and sseq in self.pending:
                self.js.events.ack_sample(self, sseq, dseq, dc, self.pending[sseq][1])
            acked = sorted(s for s in self.pending if s <= sseq)
            self.adflr, self.asflr = dseq, sseq
            for s in acked:
                del self.pending[s]
                self.rdc.pop(s, None)
                self._rdq_remove(s)
            self._store_ack(dseq, sseq)
            for s in acked:
                self.stream.ack_msg(self, s)
            self.ack_ts = time.time_ns()
        else:
            return False
        if not self.pending and self.ptmr is not None:
            self.ptmr.cancel()
            self.ptmr = None
        if need_signal:
            self.signal()
        return True

    def _store_ack(self, dseq: int, sseq: int) -> None:
        self.stream.touch()
        try:
            self.cs.update_acks(dseq, sseq)
        except StoreError:
            pass

    def _move_ack_floor(self, dseq: int, sseq: int) -> None:
        if not self.pending:
            self.adflr, self.asflr = self.dseq - 1, self.sseq - 1
        elif dseq == self.adflr + 1:
            self.adflr, self.asflr = dseq, sseq
            # The floor stops just below the oldest delivery still pending.
            if self.pending:
                nxt = min(self.pending)
                p = self.pending[nxt]
                if p[0] > 0:
                    self.adflr, self.asflr = p[0] - 1, nxt - 1

    def _ack_one(self, sseq: int, dseq: int) -> None:
        # A pending message that is gone from the stream counts as acknowledged.
        self.pending.pop(sseq, None)
        self.rdc.pop(sseq, None)
        self._rdq_remove(sseq)
        self._move_ack_floor(dseq, sseq)
        self._store_ack(dseq, sseq)

    def _rdq_remove(self, seq: int) -> None:
        if seq in self.rdq_set:
            self.rdq_set.discard(seq)
            try:
                self.rdq.remove(seq)
            except ValueError:
                pass

    def _nak(self, sseq: int, dseq: int, dc: int, arg: bytes) -> None:
        if dseq <= self.adflr or dseq > self.dseq:
            return
        p = self.pending.get(sseq)
        if p is None:
            return
        self.js.advisory(self, "MSG_NAKED", {
            "type": "io.nats.jetstream.advisory.v1.nak", "stream": self.stream.name,
            "consumer": self.name, "consumer_seq": dseq, "stream_seq": sseq,
            "deliveries": dc})
        arg = arg.strip()
        if arg:
            delay = None
            try:
                if arg[:1] == b"{":
                    d = json.loads(arg).get("delay", 0)
                    delay = int(d) if isinstance(d, (int, float)) else None
                else:
                    delay = parse_go_duration(arg.decode())
            except (ValueError, AttributeError):
                delay = None
            if delay is not None:
                self._rdq_remove(sseq)
                wait = self.cfg.get("ack_wait", ACK_WAIT_DEFAULT)
                p[1] = time.time_ns() - wait + delay
                self.stream.touch()
                try:
                    self.cs.update_delivered(p[0], sseq, dc, p[1])
                except StoreError:
                    pass
                self._arm_pending(0.01)
                return
        if sseq not in self.rdq_set:
            self.rdq.append(sseq)
            self.rdq_set.add(sseq)
        self.signal()

    def _progress(self, sseq: int) -> None:
        p = self.pending.get(sseq)
        if p is not None:
            p[1] = time.time_ns()
            self.stream.touch()
            try:
                self.cs.update_delivered(p[0], sseq, 1, p[1])
            except StoreError:
                pass

    def _term(self, sseq: int, dseq: int, dc: int, reason: str) -> None:
        if sseq not in self.pending:
            return
        self._ack(sseq, dseq, dc)
        event = {"type": "io.nats.jetstream.advisory.v1.terminated", "stream": self.stream.name,
                 "consumer": self.name, "consumer_seq": dseq, "stream_seq": sseq,
                 "deliveries": dc}
        if reason:
            event["reason"] = reason
        self.js.advisory(self, "MSG_TERMINATED", event)

    # ------------------------------------------------------------------ redelivery

    def _arm_pending(self, delay: float) -> None:
        if self.ptmr is not None:
            self.ptmr.cancel()
        self.ptmr_at = time.monotonic() + delay
        self.ptmr = self.js.call_later(delay, self.check_pending)

    def check_pending(self) -> None:
        """Go's checkPending: queue what outlived ack_wait (or its backoff) for redelivery."""
        self.ptmr = None
        if self.closed or not self.pending:
            return
        wait = self.cfg.get("ack_wait", ACK_WAIT_DEFAULT)
        backoff = self.cfg.get("backoff") or []
        md = self.cfg.get("max_deliver", -1)
        now = time.time_ns()
        nxt = backoff[-1] if backoff else wait
        first = self.stream.store.state().first_seq
        expired = []
        changed = False
        for seq, p in list(self.pending.items()):
            if seq < first or seq <= self.asflr:
                del self.pending[seq]
                self.rdc.pop(seq, None)
                self._rdq_remove(seq)
                self.asflr = max(self.asflr, seq)
                self.adflr = max(self.adflr, p[0])
                changed = True
                continue
            elapsed, deadline = now - p[1], wait
            if backoff:
                dc = max(self.rdc.get(seq, 0), 0)
                nbi = dc + 1
                if dc + 1 >= len(backoff):
                    dc = nbi = len(backoff) - 1
                deadline = backoff[dc]
                nxt = min(nxt, backoff[nbi])
            if elapsed >= deadline:
                if seq in self.rdq_set:
                    continue
                deliveries = self.rdc.get(seq, 0) + 1
                if md > 0 and deliveries >= md:
                    self._max_deliveries_reached(seq, deliveries)
                    changed = True
                    continue
                expired.append(seq)
            elif deadline - elapsed < nxt:
                nxt = deadline - elapsed
        if expired:
            expired.sort()
            for seq in expired:
                self.rdq.append(seq)
                self.rdq_set.add(seq)
            off = now - self.pending[expired[0]][1]
            for seq in expired:
                self.pending[seq][1] += off
            self.signal()
        if self.pending:
            self._arm_pending(max(nxt, 1_000_000) / NS)
        else:
            self.rdq.clear()
            self.rdq_set.clear()
            self.adflr, self.asflr = self.dseq - 1, self.sseq - 1
        if changed:
            self._write_state()
            if self.max_ack_pending:
                self.signal()

    # ------------------------------------------------------------------ inactivity, pause

    def _arm_inactive(self) -> None:
        thr = self.cfg.get("inactive_threshold", 0)
        if not thr:
            return
        if self.inactive_timer is not None:
            self.inactive_timer.cancel()
        self.inactive_timer = self.js.call_later(min(thr / NS, 1.0), self._on_inactive_check)

    def _is_inactive(self) -> bool:
        if self.is_push:
            return not self._has_interest(self.cfg["deliver_subject"].encode())
        return not self.waiting

    def _on_inactive_check(self) -> None:
        self.inactive_timer = None
        if self.closed:
            return
        thr = self.cfg.get("inactive_threshold", 0) / NS
        now = time.monotonic()
        if not self._is_inactive():
            self.last_active = now
        elif now - self.last_active >= thr:
            self.stream.account.delete_consumer(self.stream, self.name)
            return
        self.inactive_timer = self.js.call_later(min(thr, 1.0), self._on_inactive_check)

    def _paused(self) -> bool:
        pu = self.cfg.get("pause_until")
        if not pu:
            return False
        until = parse_rfc3339(pu)
        now = time.time_ns()
        if now < until:
            self.js.call_later((until - now) / NS, self.signal)
            return True
        return False

    # ------------------------------------------------------------------ info

    def info(self) -> dict:
        delivered = {"consumer_seq": self.dseq - 1, "stream_seq": self.sseq - 1}
        if self.delivered_ts:
            delivered["last_active"] = rfc3339(self.delivered_ts)
        ack_floor = {"consumer_seq": self.adflr, "stream_seq": self.asflr}
        if self.ack_ts:
            ack_floor["last_active"] = rfc3339(self.ack_ts)
        out = {
            "stream_name": self.stream.name,
            "name": self.name,
            "created": rfc3339(self.created),
            "config": self.cfg,
            "delivered": delivered,
            "ack_floor": ack_floor,
            "num_ack_pending": len(self.pending),
            "num_redelivered": len(self.rdc),
            "num_waiting": len(self.waiting),
            "num_pending": self.num_pending(),
        }
        if self.is_push and self._has_interest(self.cfg["deliver_subject"].encode()):
            out["push_bound"] = True
        pu = self.cfg.get("pause_until")
        if pu:
            remaining = parse_rfc3339(pu) - time.time_ns()
            if remaining > 0:
                out["paused"] = True
                out["pause_remaining"] = remaining
        out["ts"] = rfc3339(time.time_ns())
        groups = self.cfg.get("priority_groups")
        if groups:
            # Go's PriorityGroupState; its zero time is not omitted.
            state = {"group": groups[0]}
            if self.pin_id:
                state["pinned_client_id"] = self.pin_id
            state["pinned_ts"] = rfc3339(self.pinned_ts) if self.pinned_ts \
                else "0001-01-01T00:00:00Z"
            out["priority_groups"] = [state]
        return out
