"""JetStream asset versioning: the API level and the ``_nats.*`` metadata of streams and
consumers (Go's server/jetstream_versioning.go, 2.12).

A created or updated stream or consumer stores ``_nats.req.level``: the lowest API level a
server needs to run it (1 for the 2.11 features: per-message TTLs, subject delete markers,
pause, priority groups; 2 for the 2.12 ones: counters, atomic publish, schedules, async
persistence). The create, update and info responses add what this server is
(``_nats.ver``, ``_nats.level``); those two are never stored, and a client that sends them
back has them dropped. Lists answer with the stored metadata only. A request with the
``Nats-Required-Api-Level`` header is refused (412) when this server's level is lower or
the header is not a number.
"""
from __future__ import annotations

import re

from natsx import SERVER_VERSION
from natsx.jetstream.util import get_header

# 2.12.0: counters, atomic batch publish, message schedules, async persistence.
API_LEVEL = 2

REQUIRED = "_nats.req.level"
VERSION = "_nats.ver"
LEVEL = "_nats.level"
_DYNAMIC = (VERSION, LEVEL)
_ATOI = re.compile(rb"[+-]?[0-9]+")    # what Go's strconv.Atoi accepts


def _static(cfg: dict, level: int) -> dict:
    meta = {k: v for k, v in (cfg.get("metadata") or {}).items() if k not in _DYNAMIC}
    meta[REQUIRED] = str(level)
    return dict(cfg, metadata=meta)


def stream_level(cfg: dict) -> int:
    """Go's setStaticStreamMetadata: the level the stream's features require."""
    if cfg.get("allow_msg_counter") or cfg.get("allow_atomic") or \
            cfg.get("allow_msg_schedules") or cfg.get("persist_mode") == "async":
        return 2
    if cfg.get("allow_msg_ttl") or (cfg.get("subject_delete_marker_ttl") or 0) > 0:
        return 1
    return 0


def consumer_level(cfg: dict) -> int:
    """Go's setStaticConsumerMetadata."""
    if cfg.get("pause_until") and cfg["pause_until"] != "0001-01-01T00:00:00Z":
        return 1
    if (cfg.get("priority_policy") or "none") != "none" or cfg.get("priority_timeout") or \
            cfg.get("priority_groups"):
        return 1
    return 0


def static_stream(cfg: dict) -> dict:
    return _static(cfg, stream_level(cfg))


def static_consumer(cfg: dict) -> dict:
    return _static(cfg, consumer_level(cfg))


def copy_from(cfg: dict, prev: dict) -> dict:
    """Go's copyStreamMetadata/copyConsumerMetadata: ``cfg`` with the stored
    ``_nats.req.level`` of ``prev`` (or none), so that comparing a repeated create with
    what exists ignores the versioning fields."""
    meta = {k: v for k, v in (cfg.get("metadata") or {}).items() if k not in _DYNAMIC}
    prev_meta = prev.get("metadata") or {}
    if REQUIRED in prev_meta:
        meta[REQUIRED] = prev_meta[REQUIRED]
    else:
        meta.pop(REQUIRED, None)
    out = dict(cfg)
    if meta:
        out["metadata"] = meta
    else:
        out.pop("metadata", None)
    return out


def dynamic(cfg: dict) -> dict:
    """Go's setDynamic*Metadata: a copy of the config for a response, with this server's
    version and level."""
    meta = dict(cfg.get("metadata") or {})
    meta[VERSION] = SERVER_VERSION
    meta[LEVEL] = str(API_LEVEL)
    return dict(cfg, metadata=sorted_metadata(meta))


def sorted_metadata(meta: dict) -> dict:
    # Go marshals a map with its keys in order.
    return dict(sorted(meta.items()))


def refuses(hdr) -> bool:
    """Go's errorOnRequiredApiLevel: the request asks for a higher API level than ours."""
    if not hdr:
        return False
    value = get_header(hdr, b"Nats-Required-Api-Level")
    if not value:
        return False
    if not _ATOI.fullmatch(value):
        return True
    return API_LEVEL < int(value)
