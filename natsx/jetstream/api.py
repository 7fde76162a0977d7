"""The JetStream API: ``$JS.API.*`` subjects, request decoding, responses and errors.

Theory of operation
-------------------
Each account with JetStream subscribes (internal client) to the API subjects Go subscribes
to, so a request on a subject that is not part of the API still gets "no responders".
``dispatch`` maps the subject to a handler; a handler returns the response as a dict (its
``type`` is added here) or raises ``ApiError``, which becomes
``{"type":…,"error":{"code":…,"err_code":…,"description":…}}`` plus the fields Go's response
struct always carries (``total``/``offset``/``limit`` for paged ones). Responses go to the
JetStream outbox, so they leave after the batch's commit: a client that saw "created" or
"purged" will find it so after a crash. ``api.total`` and ``api.errors`` count as in Go.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from typing import TYPE_CHECKING

from natsx.jetstream import consumer as consumer_mod
from natsx.jetstream import snapshot as snapshot_mod
from natsx.jetstream import strict
from natsx.jetstream import stream as stream_mod
from natsx.jetstream import versioning
from natsx.jetstream.errors import ApiError, error
from natsx.jetstream.util import add_headers, parse_rfc3339, rfc3339, subjects_collide
from natsx.storage import StoreError

if TYPE_CHECKING:
    from natsx.jetstream.manager import Account

log = logging.getLogger("natsx")

T = "io.nats.jetstream.api.v1."
API_LEVEL = versioning.API_LEVEL
NAMES_LIMIT = 1024
LIST_LIMIT = 256

SUBJECTS = [s.encode() for s in (
    "$JS.API.INFO",
    "$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.UPDATE.*", "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.DELETE.*",
    "$JS.API.STREAM.PURGE.*", "$JS.API.STREAM.MSG.DELETE.*", "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.STREAM.LEADER.STEPDOWN.*", "$JS.API.STREAM.PEER.REMOVE.*",
    "$JS.API.CONSUMER.CREATE.*", "$JS.API.CONSUMER.CREATE.*.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.*.*", "$JS.API.CONSUMER.NAMES.*",
    "$JS.API.CONSUMER.LIST.*", "$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.DELETE.*.*",
    "$JS.API.CONSUMER.PAUSE.*.*", "$JS.API.CONSUMER.UNPIN.*.*",
    "$JS.API.CONSUMER.LEADER.STEPDOWN.*.*",
    "$JS.API.STREAM.SNAPSHOT.*", "$JS.API.STREAM.RESTORE.*",
)]

# The connection whose request is being handled (for advisories' client info), and its subject.
_publisher = None
_subject = ""

_PAGED_ERROR = {"total": 0, "offset": 0, "limit": 0}


_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def _dumps(obj) -> bytes:
    # Go's encoding/json escapes <, > and & (they only occur inside strings here).
    return json.dumps(obj, separators=(",", ":")).translate(_GO_ESCAPES).encode()


def _request(payload: bytes, account=None, kind: str = "") -> dict:
    """The request's JSON object; with ``strict`` (the default) a field Go's request struct
    ``kind`` does not have is refused (natsx.jetstream.strict)."""
    if not payload or not payload.strip():
        return {}
    try:
        req = json.loads(payload)
    except ValueError as exc:
        raise error("JSInvalidJSONErr", err=str(exc)) from None
    if not isinstance(req, dict):
        raise error("JSInvalidJSONErr", err="json: cannot unmarshal into Go value")
    if kind:
        unknown = strict.unknown_field(req, strict.REQUESTS[kind])
        if unknown is not None:
            err = "json: unknown field " + json.dumps(unknown, ensure_ascii=False)
            if account is not None and account.js.settings.strict:
                raise error("JSInvalidJSONErr", err=err)
            _warn_lenient(account, kind, err)
    return req


_warned: set = set()


def _warn_lenient(account, kind: str, err: str) -> None:
    """Go's RateLimitWarnf for a request decoded leniently (``strict: false``): once per
    distinct text (the set is bounded, so odd requests cannot grow it without end)."""
    text = "Invalid JetStream request '%s > %s': %s" % (
        getattr(account, "name", ""), _subject or kind, err)
    if text not in _warned and len(_warned) < 1000:
        _warned.add(text)
        log.warning("%s", text)


def _stream(account: "Account", name: str):
    stream = account.streams.get(name)
    if stream is None:
        raise error("JSStreamNotFoundErr")
    return stream


def _others(account: "Account", name: str) -> list:
    """The configs of the account's other streams, on every worker."""
    return [cfg for n, cfg in account.configs(vetting=True).items() if n != name]


# ------------------------------------------------------------------------------------- account

def account_info(account, tokens, reply, hdr, payload):
    # The account's figures on every worker (natsx.jetstream.accountusage).
    t = account.totals()
    out = {
        "memory": t["memory"],
        "storage": t["file"],
        "reserved_memory": t["reserved_memory"],
        "reserved_storage": t["reserved_file"],
        "streams": t["streams"],
        "consumers": t["consumers"],
        "limits": account.limits.to_json(),
    }
    if account.js.domain:
        out["domain"] = account.js.domain
    # Level 2 is the 2.12 API (natsx.jetstream.versioning).
    out["api"] = {"level": API_LEVEL, "total": t["api_total"], "errors": t["api_errors"]}
    return "account_info_response", out


# ------------------------------------------------------------------------------------- streams

def stream_create(account, tokens, reply, hdr, payload, vet=False, vetted=False):
    """With ``vet`` (the account's home, natsx.jetstream.shards): only the checks against
    the account's streams on every worker; None when the stream's owner may create it.
    ``vetted``: the home made those checks, the owner makes the others."""
    req = _request(payload, account, "stream_config")
    pedantic = bool(req.pop("pedantic", False))
    cfg = versioning.static_stream(stream_mod.decode_config(req))
    name = tokens[4]
    if cfg.get("name", "") != name:
        raise error("JSStreamMismatchErr")
    if "/" in name or "\\" in name:
        raise error("JSStreamNameContainsPathSeparatorsErr")
    if cfg.get("sealed"):
        raise error("JSStreamInvalidConfigF",
                    err="stream configuration for create can not be sealed")
    if cfg.get("mirror_direct") and not cfg.get("mirror"):
        raise error("JSStreamInvalidConfigF",
                    err="stream has no mirror but does have mirror direct")
    cfg = stream_mod.check_config(cfg, pedantic=pedantic,
                                  others=[] if vetted else _others(account, name),
                                  limits=account.limits)
    if vet:
        configs = account.configs(vetting=True)
        if name not in configs:
            if 0 < account.limits.max_streams <= len(configs):
                raise error("JSMaximumStreamsLimitErr")
            account.limits.check_reservation(cfg, server=False)
            account.catalog.hold(name, cfg)
        return None
    existing = account.streams.get(name)
    if existing is not None:
        if versioning.copy_from(cfg, existing.cfg) != existing.cfg:
            raise error("JSStreamNameExistErr")
        stream = existing
    else:
        if not vetted and 0 < account.limits.max_streams <= len(account.configs()):
            raise error("JSMaximumStreamsLimitErr")
        account.limits.check_reservation(cfg, account_wide=not vetted)
        try:
            stream = account.create_stream(cfg, vetted=vetted)
        except ApiError:
            raise
        except Exception as exc:
            raise error("JSStreamCreateErrF", err=str(exc)) from None
        account.js.events.stream_action(account.name, name, "create")
    info = _with_versions(stream.info())
    info["did_create"] = True
    return "stream_create_response", info


def stream_update(account, tokens, reply, hdr, payload, vet=False, vetted=False):
    req = _request(payload, account, "stream_config")
    pedantic = bool(req.pop("pedantic", False))
    cfg = versioning.static_stream(stream_mod.decode_config(req))
    name = tokens[4]
    if cfg.get("name", "") != name:
        raise error("JSStreamMismatchErr")
    if vet:
        # The home: the checks against the account's other streams (see stream_create).
        current = account.configs(vetting=True).get(name)
        if current is None:
            raise error("JSStreamNotFoundErr")
        new = stream_mod.check_update(current, cfg, pedantic=pedantic,
                                      others=_others(account, name), limits=account.limits)
        if new.get("max_bytes", -1) != current.get("max_bytes", -1):
            account.limits.check_reservation(new, exclude=name, server=False)
        account.catalog.hold(name, new)
        return None
    stream = _stream(account, name)
    new = stream_mod.check_update(stream.cfg, cfg, pedantic=pedantic,
                                  others=[] if vetted else _others(account, name),
                                  limits=account.limits)
    if new.get("max_bytes", -1) != stream.cfg.get("max_bytes", -1):
        account.limits.check_reservation(new, exclude=name, account_wide=not vetted)
    account.update_stream(stream, new)
    account.js.events.stream_action(account.name, name, "modify")
    return "stream_update_response", _with_versions(stream.info())


def _with_versions(info: dict) -> dict:
    """A stream or consumer info as a create, update or info response carries it: with
    this server's version and API level in the config's metadata."""
    info["config"] = versioning.dynamic(info["config"])
    return info


def _filtered_names(account, req):
    offset = req.get("offset", 0) or 0
    subject = req.get("subject", "") or ""
    configs = account.configs()
    names = sorted(configs)
    if subject:
        names = [n for n in names
                 if any(subjects_collide(subject, s)
                        for s in configs[n].get("subjects") or [n])]
    return max(offset, 0), names


def stream_names(account, tokens, reply, hdr, payload):
    offset, names = _filtered_names(account, _request(payload, account, "stream_names"))
    total = len(names)
    offset = min(offset, total)
    return "stream_names_response", {
        "total": total, "offset": offset, "limit": NAMES_LIMIT,
        "streams": names[offset:offset + NAMES_LIMIT] or None}


def stream_list(account, tokens, reply, hdr, payload):
    offset, names = _filtered_names(account, _request(payload, account, "stream_list"))
    total = len(names)
    offset = min(offset, total)
    page = names[offset:offset + LIST_LIMIT]
    body = {"total": total, "offset": offset, "limit": LIST_LIMIT, "streams": [],
            "missing": None}
    if account.catalog is not None and any(n not in account.streams for n in page):
        # Streams other workers run: their owners tell their state (the answer leaves
        # when they have, natsx.jetstream.coordinator).
        from natsx.jetstream.coordinator import gather_infos

        return "stream_list_response", gather_infos(account, page, body)
    body["streams"] = [account.streams[n].info() for n in page]
    return "stream_list_response", body


def stream_info(account, tokens, reply, hdr, payload):
    req = _request(payload, account, "stream_info")
    stream = _stream(account, tokens[4])
    deleted = bool(req.get("deleted_details"))
    subjects_filter = req.get("subjects_filter", "") or ""
    info = _with_versions(stream.info(deleted=deleted, subjects_filter=subjects_filter))
    out = {"total": 0, "offset": 0, "limit": 0}
    subjects = info["state"].get("subjects")
    if subjects is not None:
        offset = req.get("offset", 0) or 0
        keys = sorted(subjects)
        out["total"] = len(keys)
        out["offset"] = offset
        out["limit"] = 100_000
        info["state"]["subjects"] = {k: subjects[k] for k in keys[offset:offset + 100_000]}
    out.update(info)
    return "stream_info_response", out


def stream_delete(account, tokens, reply, hdr, payload):
    stream = _stream(account, tokens[4])
    account.delete_stream(stream)
    account.js.events.stream_action(account.name, stream.name, "delete")
    return "stream_delete_response", {"success": True}


def stream_purge(account, tokens, reply, hdr, payload):
    req = _request(payload, account, "stream_purge")
    stream = _stream(account, tokens[4])
    if stream.cfg.get("sealed"):
        raise error("JSStreamSealedErr")
    if stream.cfg.get("deny_purge"):
        raise error("JSStreamPurgeFailedF", err="stream purge not permitted")
    seq, keep = req.get("seq", 0) or 0, req.get("keep", 0) or 0
    if seq and keep:
        raise error("JSBadRequestErr")
    purged = stream.purge(req.get("filter", "") or "", seq, keep)
    return "stream_purge_response", {"success": True, "purged": purged}


def msg_delete(account, tokens, reply, hdr, payload):
    req = _request(payload, account, "msg_delete")
    stream = _stream(account, tokens[5])
    if stream.cfg.get("sealed"):
        raise error("JSStreamSealedErr")
    if stream.cfg.get("deny_delete"):
        raise error("JSStreamMsgDeleteFailedF", err="message delete not permitted")
    seq = req.get("seq", 0) or 0
    removed = stream.delete_msg(seq, erase=not req.get("no_erase"))
    if not removed:
        raise error("JSStreamMsgDeleteFailedF", err="no message found")
    return "stream_msg_delete_response", {"success": True}


def _lookup(stream, req):
    """The message a MSG.GET / DIRECT.GET request names (StoreError when none)."""
    store = stream.store
    seq = req.get("seq", 0) or 0
    last_for = req.get("last_by_subj", "") or ""
    next_for = req.get("next_by_subj", "") or ""
    if last_for:
        return store.load_last_msg(last_for)
    if next_for:
        return store.load_next_msg(next_for, start=seq)[0]
    return store.load_msg(seq)


def msg_get(account, tokens, reply, hdr, payload):
    req = _request(payload, account, "msg_get")
    stream = _stream(account, tokens[5])
    seq = req.get("seq", 0) or 0
    last_for, next_for = req.get("last_by_subj", ""), req.get("next_by_subj", "")
    if (seq and last_for) or (last_for and next_for) or (not seq and not last_for and not next_for):
        raise error("JSBadRequestErr")
    try:
        sm = _lookup(stream, req)
    except StoreError:
        raise error("JSNoMessageFoundErr") from None
    message = {"subject": sm.subject, "seq": sm.seq}
    if sm.headers:
        message["hdrs"] = base64.b64encode(sm.headers).decode()
    if sm.payload:
        message["data"] = base64.b64encode(sm.payload).decode()
    message["time"] = rfc3339(sm.ts)
    return "stream_msg_get_response", {"message": message}


def direct_get(stream, subject: bytes, reply, hdr, payload: bytes) -> None:
    """``$JS.API.DIRECT.GET.<stream>[.<subject>]``: the stored message itself, with headers."""
    if not reply or stream.closed:
        return
    js, acc = stream.js, stream.account.name

    def status(text: bytes):
        js.send(acc, reply, None, b"", hdr=b"NATS/1.0 " + text + b"\r\n\r\n")
    toks = subject.split(b".", 5)
    req: dict = {}
    if payload:
        try:
            req = json.loads(payload)
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            return status(b"408 Malformed Request")
    if len(toks) == 6:
        if req:
            return status(b"408 Bad Request")
        req = {"last_by_subj": toks[5].decode("utf-8", "surrogateescape")}
    else:
        seq, last_for, next_for = req.get("seq", 0), req.get("last_by_subj"), req.get("next_by_subj")
        if not seq and not last_for and not next_for:
            return status(b"408 Empty Request")
        if (seq and last_for) or (last_for and next_for) or (last_for and req.get("batch")):
            return status(b"408 Bad Request")
    batch = req.get("batch", 0) or 0
    store = stream.store
    name = stream.name.encode()
    sent = 0
    seq = req.get("seq", 0) or 0
    for i in range(max(batch, 1)):
        try:
            if batch and i > 0 or (batch and not req.get("next_by_subj")):
                sm, seq = store.load_next_msg(req.get("next_by_subj", "") or "", start=seq)
            else:
                sm = _lookup(stream, dict(req, seq=seq))
                seq = sm.seq
        except StoreError:
            if sent:
                break
            return status(b"404 Message Not Found")
        seq += 1
        pairs = [(b"Nats-Stream", name), (b"Nats-Subject", sm.subject.encode("utf-8", "surrogateescape")),
                 (b"Nats-Sequence", b"%d" % sm.seq), (b"Nats-Time-Stamp", rfc3339(sm.ts).encode())]
        js.send(acc, reply, None, sm.payload, hdr=add_headers(sm.headers or None, pairs))
        sent += 1


# ------------------------------------------------------------------------------------- consumers

def consumer_create(account, tokens, reply, hdr, payload):
    req = _request(payload, account, "consumer_create")
    ccfg = consumer_mod.decode_config(req.get("config"))
    n = len(tokens)
    filtered = ""
    legacy_ephemeral = legacy_durable = False
    if n == 5:
        legacy_ephemeral = True
        stream_name = tokens[4]
        consumer_name = ccfg.get("name", "")
    elif tokens[3] == "DURABLE":
        legacy_durable = True
        if n != 7:
            raise error("JSConsumerDurableNameNotInSubjectErr")
        stream_name, consumer_name = tokens[5], tokens[6]
    else:
        stream_name, consumer_name = tokens[4], tokens[5]
        if n > 6:
            filtered = ".".join(tokens[6:])
    if stream_name != req.get("stream_name", ""):
        raise error("JSStreamMismatchErr")
    if consumer_name and ("/" in consumer_name or "\\" in consumer_name):
        raise error("JSConsumerNameContainsPathSeparatorsErr")
    if legacy_durable:
        if not ccfg.get("durable_name"):
            raise error("JSConsumerDurableNameNotSetErr")
        if consumer_name != ccfg["durable_name"]:
            raise error("JSConsumerDurableNameNotMatchSubjectErr")
        ccfg["name"] = consumer_name
    elif not legacy_ephemeral:
        if ccfg.get("durable_name") and consumer_name != ccfg["durable_name"]:
            raise error("JSConsumerDurableNameNotMatchSubjectErr")
        ccfg["name"] = consumer_name
    if legacy_ephemeral and ccfg.get("durable_name"):
        raise error("JSConsumerEphemeralWithDurableNameErr")
    if filtered and ccfg.get("filter_subjects"):
        raise error("JSConsumerMultipleFiltersNotAllowed")
    if filtered and ccfg.get("filter_subject", "") != filtered:
        raise error("JSConsumerCreateFilterSubjectMismatchErr")
    if (ccfg.get("num_replicas") or 0) > 1:
        raise error("JSStreamReplicasNotSupportedErr")
    stream = _stream(account, stream_name)
    action = req.get("action", "") or ""
    if action not in ("", "create", "update"):
        raise error("JSInvalidJSONErr", err=f"unknown consumer action: {json.dumps(action)}")
    existing = stream.consumers.get(ccfg.get("durable_name") or ccfg.get("name") or "")
    if existing is not None and existing.cfg.get("pause_until") and "pause_until" not in ccfg:
        ccfg["pause_until"] = existing.cfg["pause_until"]
    ccfg = versioning.static_consumer(ccfg)
    try:
        consumer = account.add_consumer(stream, ccfg, action, bool(req.get("pedantic")))
    except ApiError:
        raise
    except Exception as exc:
        raise error("JSConsumerCreateErrF", err=str(exc)) from None
    if existing is None:
        account.js.events.consumer_action(account.name, stream.name, consumer.name, "create")
    return "consumer_create_response", _with_versions(consumer.info())


def _consumer(stream, name):
    c = stream.consumers.get(name)
    if c is None:
        raise error("JSConsumerNotFoundErr")
    return c


def consumer_info(account, tokens, reply, hdr, payload):
    stream = _stream(account, tokens[4])
    return "consumer_info_response", _with_versions(_consumer(stream, tokens[5]).info())


def consumer_delete(account, tokens, reply, hdr, payload):
    stream = _stream(account, tokens[4])
    if not account.delete_consumer(stream, tokens[5]):
        raise error("JSConsumerNotFoundErr")
    return "consumer_delete_response", {"success": True}


def consumer_names(account, tokens, reply, hdr, payload):
    req = _request(payload, account, "consumers")
    stream = _stream(account, tokens[4])
    names = sorted(stream.public_consumers())
    offset = min(max(req.get("offset", 0) or 0, 0), len(names))
    return "consumer_names_response", {"total": len(names), "offset": offset,
                                       "limit": NAMES_LIMIT,
                                       "consumers": names[offset:offset + NAMES_LIMIT]}


def consumer_list(account, tokens, reply, hdr, payload):
    req = _request(payload, account, "consumers")
    stream = _stream(account, tokens[4])
    names = sorted(stream.public_consumers())
    offset = min(max(req.get("offset", 0) or 0, 0), len(names))
    infos = [stream.consumers[n].info() for n in names[offset:offset + LIST_LIMIT]]
    return "consumer_list_response", {"total": len(names), "offset": offset,
                                      "limit": LIST_LIMIT, "consumers": infos, "missing": None}


def consumer_pause(account, tokens, reply, hdr, payload):
    req = _request(payload, account, "consumer_pause")
    stream = _stream(account, tokens[4])
    c = _consumer(stream, tokens[5])
    until = req.get("pause_until") or ""
    try:
        until_ns = parse_rfc3339(until) if until else 0
    except ValueError:
        raise error("JSInvalidJSONErr", err="invalid pause_until") from None
    cfg = dict(c.cfg)
    if until_ns and until_ns > time.time_ns():
        cfg["pause_until"] = rfc3339(until_ns)
    else:
        cfg.pop("pause_until", None)
    account._update_consumer(c, consumer_mod.ordered(versioning.static_consumer(cfg)))
    out = {"paused": "pause_until" in cfg}
    out["pause_until"] = cfg.get("pause_until", rfc3339(0))
    account.js.events.consumer_pause(account.name, stream.name, c.name, out["paused"],
                                     out["pause_until"])
    if out["paused"]:
        out["pause_remaining"] = until_ns - time.time_ns()
    return "consumer_pause_response", out


def consumer_unpin(account, tokens, reply, hdr, payload):
    """Go's jsConsumerUnpinRequest: ends the pin of a priority group (reason "admin")."""
    try:
        req = json.loads(payload or b"")
    except ValueError as exc:
        raise error("JSInvalidJSONErr", err=str(exc) or "unexpected end of JSON input") from None
    if not isinstance(req, dict):
        raise error("JSInvalidJSONErr", err="json: cannot unmarshal into Go value")
    group = req.get("group") or ""
    if not group:
        raise error("JSInvalidJSONErr", err="consumer group not specified")
    if not isinstance(group, str) or not consumer_mod.VALID_GROUP.match(group):
        raise error("JSConsumerInvalidGroupNameErr")
    stream = _stream(account, tokens[4])
    c = _consumer(stream, tokens[5])
    if group not in (c.cfg.get("priority_groups") or ()):
        raise error("JSConsumerInvalidPriorityGroupErr")
    c.unpin()
    account.js.events.consumer_unpinned(c, group, "admin")
    c.signal()
    return "consumer_unpin_response", {}


def _client(account) -> dict:
    return client_info(_publisher, account.name, account.js.server.server_name)


def stream_snapshot(account, tokens, reply, hdr, payload):
    if not payload or not payload.strip():
        raise error("JSBadRequestErr")
    stream = _stream(account, tokens[4])
    req = _request(payload, account, "stream_snapshot")
    return "stream_snapshot_response", snapshot_mod.snapshot_request(
        account, stream, req, _client(account))


def stream_restore(account, tokens, reply, hdr, payload, vet=False, vetted=False):
    """``vet`` and ``vetted`` as for ``stream_create``: the home checks the restored
    config against the account's streams on every worker and holds it while the upload
    runs; the owner then opens the upload."""
    if not payload or not payload.strip():
        raise error("JSBadRequestErr")
    req = _request(payload, account, "stream_restore")
    name = tokens[4]
    others = [] if vetted else _others(account, name)

    def check(cfg):
        cfg = stream_mod.check_config(stream_mod.decode_config(cfg), others=others,
                                      limits=account.limits)
        if vetted:
            account.limits.check_reservation(cfg, account_wide=False)
            return cfg
        configs = account.configs(vetting=vet)
        if name not in configs:
            if 0 < account.limits.max_streams <= len(configs):
                raise error("JSMaximumStreamsLimitErr")
            account.limits.check_reservation(cfg, server=not vet)
            if vet:
                account.catalog.hold(name, cfg, snapshot_mod.RESTORE_HOLD)
        return cfg
    if vet:
        snapshot_mod.restore_config(account, tokens, req, check)
        return None
    return "stream_restore_response", snapshot_mod.restore_request(
        account, tokens, req, _client(account), check)


def not_clustered(account, tokens, reply, hdr, payload):
    raise error("JSClusterRequiredErr")


_HANDLERS = {
    ("INFO",): account_info,
    ("STREAM", "CREATE"): stream_create,
    ("STREAM", "UPDATE"): stream_update,
    ("STREAM", "NAMES"): stream_names,
    ("STREAM", "LIST"): stream_list,
    ("STREAM", "INFO"): stream_info,
    ("STREAM", "DELETE"): stream_delete,
    ("STREAM", "PURGE"): stream_purge,
    ("STREAM", "MSG"): None,
    ("STREAM", "SNAPSHOT"): stream_snapshot,
    ("STREAM", "RESTORE"): stream_restore,
    ("CONSUMER", "CREATE"): consumer_create,
    ("CONSUMER", "DURABLE"): consumer_create,
    ("CONSUMER", "NAMES"): consumer_names,
    ("CONSUMER", "LIST"): consumer_list,
    ("CONSUMER", "INFO"): consumer_info,
    ("CONSUMER", "DELETE"): consumer_delete,
    ("CONSUMER", "PAUSE"): consumer_pause,
    ("CONSUMER", "UNPIN"): consumer_unpin,
    ("STREAM", "LEADER"): not_clustered,
    ("STREAM", "PEER"): not_clustered,
    ("CONSUMER", "LEADER"): not_clustered,
}

_RESPONSE_TYPES = {
    stream_create: "stream_create_response", stream_update: "stream_update_response",
    stream_names: "stream_names_response", stream_list: "stream_list_response",
    stream_info: "stream_info_response", stream_delete: "stream_delete_response",
    stream_purge: "stream_purge_response", msg_delete: "stream_msg_delete_response",
    msg_get: "stream_msg_get_response", consumer_create: "consumer_create_response",
    consumer_names: "consumer_names_response", consumer_list: "consumer_list_response",
    consumer_info: "consumer_info_response", consumer_delete: "consumer_delete_response",
    consumer_pause: "consumer_pause_response", account_info: "account_info_response",
    consumer_unpin: "consumer_unpin_response",
    stream_snapshot: "stream_snapshot_response", stream_restore: "stream_restore_response",
}
_STEPDOWN_TYPES = {"STREAM": "stream_leader_stepdown_response",
                   "CONSUMER": "consumer_leader_stepdown_response"}
_RESERVING = {stream_create, stream_update, stream_delete, stream_restore}
_PAGED = {stream_info, stream_names, stream_list, consumer_names, consumer_list}
_PAGED_LIST = {stream_names: "streams", stream_list: "streams", consumer_names: "consumers",
               consumer_list: "consumers"}


def _handler(tokens):
    if len(tokens) < 3:
        return None
    key = tuple(tokens[2:4]) if len(tokens) > 3 else (tokens[2],)
    if key == ("STREAM", "MSG") and len(tokens) > 4:
        return {"GET": msg_get, "DELETE": msg_delete}.get(tokens[4])
    return _HANDLERS.get(key)


def client_info(publisher, account: str, server_name: str) -> dict:
    """Go's ClientInfo.forAdvisory of the connection that sent a request."""
    conn = getattr(publisher, "conn", None)
    ci: dict = {}
    start = getattr(conn, "start", None)
    if isinstance(start, float):
        ci["start"] = rfc3339(int(start * 1e9))
    if getattr(conn, "ip", ""):
        ci["host"] = conn.ip
    if isinstance(getattr(conn, "cid", None), int):
        ci["id"] = conn.cid
    ci["acc"] = account
    for key, attr in (("user", "user"), ("name", "name"), ("lang", "lang"), ("ver", "version")):
        value = getattr(conn, attr, "")
        if isinstance(value, str) and value:
            ci[key] = value
    rtt = getattr(conn, "rtt", 0.0)
    if isinstance(rtt, float) and rtt:
        ci["rtt"] = int(rtt * 1e9)
    ci["server"] = server_name
    if isinstance(getattr(conn, "cid", None), int):
        ci["kind"] = "Client"
        ci["client_type"] = "nats"
    return ci


def dispatch(account: "Account", subject: bytes, reply, hdr, payload: bytes,
             publisher=None, vet: bool = False, vetted: bool = False) -> bool:
    """Run one API request and queue its response. With ``vet``, for a STREAM.CREATE or
    UPDATE, only the account-wide checks: True when they passed and nothing was
    answered; ``vetted``: the account's home made those checks already."""
    if account.js.stopped:
        return False    # JetStream was turned off by a reload: Go leaves requests unanswered
    tokens = subject.decode("utf-8", "surrogateescape").split(".")
    if len(tokens) > 3 and tokens[1] != "API" and tokens[2] == "API":
        # $JS.<domain>.API.> (Go maps it onto $JS.API.>).
        domain = account.js.domain
        if tokens[1] != domain:
            return False
        tokens = [tokens[0]] + tokens[2:]
        subject = ".".join(tokens).encode("utf-8", "surrogateescape")
        if _handler(tokens) is None and account.enabled:
            # Not a request this module answers (MSG.NEXT, DIRECT.GET...): route it on.
            account.js.send(account.name, subject, reply, payload or b"", hdr=hdr)
            return False
    handler = _handler(tokens)
    if handler is None:
        return False
    if account.enabled:
        # Go queues the request (a disabled account is answered at once): a full queue
        # drops it unanswered (natsx.jetstream.queues). Each worker's queue counts what
        # it handles, relayed requests included.
        full = account.js.api_queue.admit(tokens)
        if full:
            account.js.api_limit_reached(full, 1)
            return False
    global _publisher, _subject
    _publisher = publisher
    _subject = subject.decode("utf-8", "replace")
    if handler is not_clustered:
        rtype = _STEPDOWN_TYPES[tokens[2]]
        if tokens[3] == "PEER":
            rtype = "stream_remove_peer_response"
    else:
        rtype = _RESPONSE_TYPES[handler]
    try:
        if versioning.refuses(hdr):
            raise error("JSRequiredApiLevelErr")
        if not account.enabled:
            raise error("JSNotEnabledForAccountErr")
        if vet:
            # The home vetting a create or update (natsx.jetstream.shards): None when the
            # owner may run it; a refusal is answered here.
            if handler(account, tokens, reply, hdr, payload or b"", vet=True) is None:
                return True
        if vetted and handler in (stream_create, stream_update, stream_restore):
            rtype, body = handler(account, tokens, reply, hdr, payload or b"", vetted=True)
        else:
            rtype, body = handler(account, tokens, reply, hdr, payload or b"")
        if isinstance(body, Deferred):
            body.then = lambda body: _respond(account, handler, subject, reply, payload,
                                              publisher, {"type": T + rtype, **body})
            body.ready()
            return False
        response = {"type": T + rtype}
        response.update(body)
    except ApiError as exc:
        account.api_errors += 1
        response = {"type": T + rtype, "error": exc.to_json()}
        if handler in _PAGED:
            response.update(_PAGED_ERROR)
            # Go's response structs: these lists have no omitempty.
            extra = _PAGED_LIST.get(handler)
            if extra:
                response[extra] = None
    _respond(account, handler, subject, reply, payload, publisher, response)
    return False


class Deferred:
    """A response body that other workers complete: ``ready`` (once the handler returned)
    then, when complete, ``then(body)`` answers (natsx.jetstream.coordinator)."""

    then = None

    def ready(self) -> None:
        pass


def _respond(account, handler, subject: bytes, reply, payload, publisher,
             response: dict) -> None:
    if handler in _RESERVING:
        # What the stream's max_bytes reserves now, for every worker to see (a reservation
        # that failed half way, or a create that failed, is let go of here).
        account.js.server_limits.publish()
    # Counted as the response goes out (Go: sendAPIResponse), so INFO does not count itself.
    account.api_total += 1
    account.publish()
    data = _dumps(response)
    if reply:
        account.js.send(account.name, reply, None, data)
    send_audit(account, subject, payload, data, publisher)


def send_audit(account, subject: bytes, request: bytes, response: bytes, publisher) -> None:
    """Go's sendJetStreamAPIAuditAdvisory (only built when someone listens)."""
    js = account.js
    if js.has_interest(account.name, b"$JS.EVENT.ADVISORY.API"):
        js.events.api_audit(account.name, subject.decode("utf-8", "replace"), request or b"",
                            response, client_info(publisher, account.name,
                                                  js.server.server_name))
