"""Strict decoding of JetStream API requests: unknown JSON fields are refused, as in Go.

Theory of operation
-------------------
Go (2.11+) decodes every ``$JS.API`` request with ``json.Decoder.DisallowUnknownFields``
(jetstream_api.go ``unmarshalRequest``). When the ``jetstream {}`` block leaves ``strict`` at
its default (true; ``strict: false`` turns it off) a field its request struct does not have
fails the request with error 10025, ``invalid JSON: json: unknown field "<name>"``; with
``strict: false`` the server only warns and decodes leniently, ignoring the field.

The field lists here are those of Go's request structs (``StreamConfigRequest``,
``CreateConsumerRequest``, ``JSApiMsgGetRequest``...), nested as Go's decoder walks them: a
struct field's value is checked against that struct's fields, a list of structs element by
element; maps (``metadata``), times and the enums with their own ``UnmarshalJSON`` take any
content. Go's decoder matches a key to a field case-insensitively, and reports the first
unknown field in document order (depth first), which ``unknown_field`` reproduces.
"""
from __future__ import annotations


def _fields(names: str, **nested) -> dict:
    out = dict.fromkeys(names.split())
    out.update(nested)
    return out


_PLACEMENT = _fields("cluster tags preferred")
_TRANSFORM = _fields("src dest")
_SOURCE = _fields("name opt_start_seq opt_start_time filter_subject",
                  subject_transforms=_TRANSFORM, external=_fields("api deliver"),
                  consumer=_fields("name deliver_subject"))

# Go StreamConfig.
STREAM_CONFIG = _fields(
    "name description subjects retention max_consumers max_msgs max_bytes max_age "
    "max_msgs_per_subject max_msg_size discard storage num_replicas no_ack duplicate_window "
    "compression first_seq allow_direct mirror_direct discard_new_per_subject sealed "
    "deny_delete deny_purge allow_rollup_hdrs allow_msg_ttl subject_delete_marker_ttl "
    "allow_msg_counter allow_atomic allow_msg_schedules persist_mode allow_batched metadata",
    placement=_PLACEMENT, mirror=_SOURCE, sources=_SOURCE, subject_transform=_TRANSFORM,
    republish=_fields("src dest headers_only"),
    consumer_limits=_fields("inactive_threshold max_ack_pending"))

# Go ConsumerConfig.
CONSUMER_CONFIG = _fields(
    "durable_name name description deliver_policy opt_start_seq opt_start_time ack_policy "
    "ack_wait max_deliver backoff filter_subject filter_subjects replay_policy rate_limit_bps "
    "sample_freq max_waiting max_ack_pending flow_control headers_only max_batch max_expires "
    "max_bytes deliver_subject deliver_group idle_heartbeat inactive_threshold num_replicas "
    "mem_storage direct sourcing metadata pause_until priority_groups priority_policy "
    "priority_timeout")

_STREAM_STATE = _fields(
    "messages bytes first_seq first_ts last_seq last_ts num_subjects subjects num_deleted "
    "deleted consumer_count", lost=_fields("msgs bytes"))

# The request structs, by the name api.py gives them.
REQUESTS = {
    "stream_config": dict(STREAM_CONFIG, pedantic=None),         # StreamConfigRequest
    "consumer_create": _fields("stream_name action pedantic",     # CreateConsumerRequest
                               config=CONSUMER_CONFIG),
    "stream_names": _fields("offset subject"),                    # JSApiStreamNamesRequest
    "stream_list": _fields("offset subject"),                     # JSApiStreamListRequest
    "stream_info": _fields("offset deleted_details subjects_filter"),
    "msg_delete": _fields("seq no_erase"),
    "msg_get": _fields("seq last_by_subj next_by_subj batch max_bytes start_time multi_last "
                       "up_to_seq up_to_time no_hdr"),
    "stream_purge": _fields("seq filter keep"),
    "stream_restore": _fields("", config=STREAM_CONFIG, state=_STREAM_STATE),
    "stream_snapshot": _fields("deliver_subject no_consumers chunk_size window_size jsck"),
    "consumers": _fields("offset"),                               # JSApiConsumersRequest
    "consumer_pause": _fields("pause_until"),
}

_folded: dict[int, dict] = {}


def _fold(schema: dict) -> dict:
    """``schema`` keyed by lower-cased names (Go matches keys case-insensitively)."""
    folded = _folded.get(id(schema))
    if folded is None:
        folded = _folded[id(schema)] = {k.lower(): v for k, v in schema.items()}
    return folded


def unknown_field(value, schema: dict | None) -> str | None:
    """The first key of ``value`` (decoded JSON) that ``schema`` does not know, or None."""
    if schema is None:
        return None
    if isinstance(value, list):
        for item in value:
            found = unknown_field(item, schema)
            if found is not None:
                return found
        return None
    if not isinstance(value, dict):
        return None
    fields = _fold(schema)
    for key, item in value.items():
        lower = key.lower() if isinstance(key, str) else key
        if lower not in fields:
            return key
        found = unknown_field(item, fields[lower])
        if found is not None:
            return found
    return None
