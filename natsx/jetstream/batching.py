"""Atomic batch publish (ADR-50, Go 2.12 ``allow_atomic``): staged, checked, stored at once.

Theory of operation
-------------------
A publish carrying a non-empty ``Nats-Batch-Id`` header belongs to an atomic batch; the stream's
``process_msg`` hands it to its ``Batches`` before anything else, as Go's internalLoop hands it
to ``processJetStreamBatchMsg`` (server/stream.go). Each message of a batch carries
``Nats-Batch-Sequence`` (1, 2, ... N) and the last one ``Nats-Batch-Commit: 1``.

* Every message is first checked as Go checks it on arrival, in Go's order: sealed, the
  server's and the account's storage limits (``Limits.check_store``), ``max_msg_size``,
  ``allow_atomic`` (10174), the batch id's length (at most 64 bytes, 10179) and the sequence
  header (10175). A message refused here gets its error but leaves its batch as it was.
* The first message (sequence 1) opens the batch, within the limits: at most
  ``max_inflight_per_stream`` open batches on the stream (default 50) and
  ``max_inflight_total`` on the server (default 1000; every worker publishes its count in the
  shared table, natsx.jetstream.serverlimits, so the limit holds for the server as in Go).
  Past either, and for a batch whose first message is not sequence 1, the answer is 10176
  "atomic publish batch is incomplete" (Go has no other error for these); a first message
  with a sequence above ``max_msgs`` gets 10199 instead.
* A ``Nats-Batch-Commit`` other than ``1`` abandons the batch (10200); a sequence that does not
  follow the previous one abandons it (10176, advisory ``incomplete``), and so does a
  sequence above ``max_msgs`` (default 1000; 10199, advisory ``large``).
* Messages before the commit are only staged here, in the owner worker's memory (a stream runs
  in one worker, natsx.jetstream.shards, and the other workers' publishes reach it in order
  over the rings): nothing is stored or visible. Each is answered with an empty message when
  it has a reply subject, as Go's flow control does. A staged batch does not outlive its
  worker (Go keeps an R1 file stream's on disk); its commit after a restart gets 10176.
* A batch not committed within ``timeout`` of its first message (default 10 s, Go's
  ``streamMaxBatchTimeout``) is discarded, with a ``stream_batch_abandoned`` advisory
  (reason ``timeout``); its commit, arriving later, finds no batch (10176).
* The commit checks every staged message in order with Go's checkMsgHeadersPreClusteredProposal
  against the stream as the batch would leave it: ``Nats-Expected-Last-Sequence`` is checked
  against the last sequence plus the messages before it in the batch (10071 naming that
  sequence), and only the first message may carry it at all (10164),
  ``Nats-Expected-Last-Subject-Sequence`` may not name a subject
  the batch already wrote, a ``Nats-Msg-Id`` may appear once in the batch and not within the
  duplicate window (10201), a rollup ``all`` only on the first message and a rollup ``sub``
  only on its subject's first, discard new counts the batch's messages and bytes with the
  stored ones, ``Nats-Expected-Last-Msg-Id`` is refused (10177, naming the header), and the
  account's and the server's limits take the whole batch into account (natsx: so that
  storing cannot stop half way). The first failure abandons the batch: the commit gets its
  error, the stream is unchanged.
* Then every message is stored by ``process_msg`` without its consistency checks (done),
  in one go: all of them land in the stream's open store transaction, committed by
  ``JetStream.flush`` as one write (with the raft process: one proposal), before any other
  publish; the commit's PubAck is Go's with ``"batch":"<id>","count":<n>`` after the sequence.

The batch state goes with the stream: deleted with it, stopped with it, and dropped when an
update turns ``allow_atomic`` off (Go's deleteInflightBatches, no advisory).

Go 2.12.0 itself differs on points fixed later in the 2.12 series, where natsx follows the
fixes: 2.12.0 took any non-empty ``Nats-Batch-Commit`` as a commit, refused every
``Nats-Msg-Id`` in a batch (10177), checked every staged message against the commit's subject
(untransformed), only the commit for ``Nats-Expected-Last-Msg-Id``, and counted only the
batch's messages against a discard-new-per-subject limit.
"""
from __future__ import annotations

import json

from natsx.jetstream import schedules
from natsx.jetstream.errors import ApiError, error
from natsx.jetstream.stream import MAX_HEADER_SIZE, check_incr
from natsx.jetstream.util import get_header, parse_message_ttl
from natsx.server.trace import go_quote
from natsx.storage import ErrMaxBytes, ErrMaxMsgs, ErrMaxMsgsPerSubject, ErrMsgTooLarge, StoreError
from natsx.storage.base import subject_len
from natsx.storage.types import FILE_STORE_MAX_RECORD

# Go's streamDefaultMaxBatch* (server/stream.go); ``jetstream { limits { batch {} } }``
# overrides each with a value > 0 (natsx.jetstream.settings.ServerLimits).
MAX_BATCH_ID_LEN = 64
DEFAULT_MAX_INFLIGHT_PER_STREAM = 50
DEFAULT_MAX_INFLIGHT_TOTAL = 1000
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_TIMEOUT_NS = 10 * 1_000_000_000

# BatchAbandonReason (server/jetstream_events.go).
ABANDONED_TIMEOUT = "timeout"
ABANDONED_LARGE = "large"
ABANDONED_INCOMPLETE = "incomplete"

_U64 = (1 << 64) - 1


def go_uint(value: bytes) -> int:
    """Go's ``uint64(parseInt64(v))``: the decimal value, or 2^64-1 for anything else."""
    if not value.isdigit():
        return _U64
    return int(value) & _U64


def limits_of(js) -> tuple[int, int, int, int]:
    """(per stream, per server, messages per batch, timeout in ns): Go's defaults, or the
    configured value where it is > 0."""
    lim = js.settings.limits
    return (lim.max_batch_inflight_per_stream if lim.max_batch_inflight_per_stream > 0
            else DEFAULT_MAX_INFLIGHT_PER_STREAM,
            lim.max_batch_inflight_total if lim.max_batch_inflight_total > 0
            else DEFAULT_MAX_INFLIGHT_TOTAL,
            lim.max_batch_size if lim.max_batch_size > 0 else DEFAULT_MAX_BATCH_SIZE,
            lim.max_batch_timeout if lim.max_batch_timeout > 0 else DEFAULT_TIMEOUT_NS)


def fields_of(hdr) -> tuple[int, str, bytes]:
    """(TTL, message id, rollup) of a message the commit checked, for ``process_msg``."""
    ttl = 0
    ttl_hdr = get_header(hdr, b"Nats-TTL")
    if ttl_hdr:
        try:
            ttl = parse_message_ttl(ttl_hdr)
        except ValueError:
            ttl = 0
    mid = get_header(hdr, b"Nats-Msg-Id")
    rollup = (get_header(hdr, b"Nats-Rollup") or b"").lower()
    return ttl, mid.decode("utf-8", "replace") if mid else "", rollup


class _Group:
    """One open batch: the messages staged so far, in order."""

    __slots__ = ("id", "lseq", "msgs", "timer")

    def __init__(self, batch_id: bytes) -> None:
        self.id = batch_id
        self.lseq = 0
        self.msgs: list[tuple[str, bytes, bytes]] = []    # (subject, headers, payload)
        self.timer = None


class Batches:
    """The open atomic batches of one stream; see the module docstring."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.groups: dict[bytes, _Group] = {}

    # ------------------------------------------------------------------ lifecycle

    def _open(self, batch_id: bytes, timeout_ns: int) -> _Group:
        group = self.groups[batch_id] = _Group(batch_id)

        def fire():
            if self.groups.get(batch_id) is group:
                self._close(group)
                self._advisory(batch_id, ABANDONED_TIMEOUT)
        group.timer = self.stream.js.call_later(timeout_ns / 1e9, fire)
        return group

    def _close(self, group: _Group) -> None:
        """Go's cleanupLocked: the batch is gone and frees its place in the limits."""
        if self.groups.get(group.id) is group:
            del self.groups[group.id]
            self.stream.js.server_limits.release_batch()
        if group.timer is not None:
            group.timer.cancel()
            group.timer = None
        group.msgs = []

    def discard_all(self) -> None:
        """Every open batch goes, without an advisory (Go's deleteInflightBatches)."""
        for group in list(self.groups.values()):
            self._close(group)

    def _advisory(self, batch_id: bytes, reason: str) -> None:
        stream = self.stream
        stream.js.events.batch_abandoned(stream.account.name, stream.name,
                                         batch_id.decode("utf-8", "replace"), reason)

    # ------------------------------------------------------------------ publishing

    def _fail(self, reply, err: ApiError) -> None:
        self.stream._respond_error(reply, err)

    def process(self, batch_id: bytes, subject: str, reply, hdr: bytes, payload: bytes) -> None:
        """Go's processJetStreamBatchMsg for one message of a batch (R1)."""
        stream = self.stream
        cfg = stream.cfg
        js = stream.js
        hl = len(hdr)
        if cfg.get("sealed"):
            # Go answers this one even on a no-ack stream.
            if reply:
                body = json.dumps({"error": error("JSStreamSealedErr").to_json(),
                                   "stream": stream.name, "seq": 0}, separators=(",", ":"))
                js.send(stream.account.name, reply, None, body.encode())
            return
        err = stream.account.limits.check_store(stream, len(subject) + hl + len(payload))
        if err is not None:
            return self._fail(reply, err)
        max_size = cfg.get("max_msg_size", -1)
        if max_size >= 0 and (hl > max_size or len(payload) > max_size - hl):
            return self._fail(reply, error("JSStreamMessageExceedsMaximumErr"))
        if not cfg.get("allow_atomic"):
            return self._fail(reply, error("JSAtomicPublishDisabledErr"))
        if len(batch_id) > MAX_BATCH_ID_LEN:
            return self._fail(reply, error("JSAtomicPublishInvalidBatchIDErr"))
        seq_hdr = get_header(hdr, b"Nats-Batch-Sequence")
        if not seq_hdr:
            return self._fail(reply, error("JSAtomicPublishMissingSeqErr"))
        seq = go_uint(seq_hdr)
        per_stream, total, max_msgs, timeout_ns = limits_of(js)

        group = self.groups.get(batch_id)
        if group is None:
            if seq != 1:
                if seq > max_msgs:
                    return self._fail(reply, error("JSAtomicPublishTooLargeBatchErrF",
                                                   size=max_msgs))
                return self._fail(reply, error("JSAtomicPublishIncompleteBatchErr"))
            if len(self.groups) + 1 > per_stream or \
                    not js.server_limits.reserve_batch(total):
                return self._fail(reply, error("JSAtomicPublishIncompleteBatchErr"))
            group = self._open(batch_id, timeout_ns)

        commit = get_header(hdr, b"Nats-Batch-Commit")
        if commit is not None and commit != b"1":
            self._close(group)
            return self._fail(reply, error("JSAtomicPublishInvalidBatchCommitErr"))
        group.lseq += 1
        if group.lseq != seq:
            self._close(group)
            self._advisory(batch_id, ABANDONED_INCOMPLETE)
            return self._fail(reply, error("JSAtomicPublishIncompleteBatchErr"))
        if seq > max_msgs:
            self._close(group)
            self._advisory(batch_id, ABANDONED_LARGE)
            return self._fail(reply, error("JSAtomicPublishTooLargeBatchErrF", size=max_msgs))
        group.msgs.append((subject, hdr, payload))
        if commit is None:
            # Go's flow control: the message is staged.
            if reply and not cfg.get("no_ack"):
                js.send(stream.account.name, reply, None, b"")
            return
        self._commit(group, reply)

    def _commit(self, group: _Group, reply) -> None:
        """Check the whole batch, then store it (or nothing of it)."""
        stream = self.stream
        msgs = group.msgs
        self._close(group)     # whatever comes of it, the batch is over
        err = self._check(msgs)
        if err is not None:
            return self._fail(reply, err)
        tail = b',"batch":%s,"count":%d}' % (
            go_quote(group.id).encode("utf-8", "surrogateescape"), len(msgs))
        last = len(msgs) - 1
        for i, (subject, hdr, payload) in enumerate(msgs):
            stream.process_msg(subject, reply if i == last else None, hdr, payload, batch=tail)

    def _check(self, msgs) -> ApiError | None:
        """Go's commit-time checks (checkMsgHeadersPreClusteredProposal for each message, in
        order, on the stream as the batch leaves it): the first error, or None."""
        stream = self.stream
        cfg = stream.cfg
        store = stream.store
        state = store.state()
        lseq = state.last_seq          # Go's clseq: the last sequence, then one per message
        itr = stream.itr
        msg_size = store.cfg.msg_size
        file_store = cfg["storage"] == "file"
        allow_ttl = cfg.get("allow_msg_ttl")
        allow_rollup = cfg.get("allow_rollup_hdrs") and not cfg.get("deny_purge")
        discard_new = cfg.get("discard") == "new"
        max_msgs, max_bytes = cfg.get("max_msgs", -1), cfg.get("max_bytes", -1)
        max_per = cfg.get("max_msgs_per_subject", -1)
        per_subject_new = discard_new and cfg.get("discard_new_per_subject") and max_per > 0
        check_store = stream.account.limits.check_store
        msgids: set = set()
        counter = cfg.get("allow_msg_counter")
        counters: dict[str, tuple] = {}    # subject -> the batch's last counter message on it
        inflight: dict[str, list] = {}     # subject -> [bytes, messages] of the batch so far
        expected: dict[str, int] = {}      # Nats-Expected-Last-Subject-Sequence checked
        pending = 0                        # bytes of the batch before this message
        for i, (raw_subject, hdr, payload) in enumerate(msgs):
            subject = raw_subject
            if itr is not None:
                subject = itr.apply(subject) or subject
            hl = len(hdr)
            size = msg_size(subject_len(subject), hl, len(payload))
            if get_header(hdr, b"Nats-Expected-Last-Msg-Id"):
                return error("JSAtomicPublishUnsupportedHeaderBatchErr",
                             header="Nats-Expected-Last-Msg-Id")
            if file_store and size > FILE_STORE_MAX_RECORD:
                return error("JSStreamStoreFailedF", err=str(ErrMsgTooLarge()))
            if hl > MAX_HEADER_SIZE:
                return error("JSStreamHeaderExceedsMaximumErr")
            try:
                incr = check_incr(cfg, hdr, payload)
            except ApiError as exc:
                return exc
            sname = get_header(hdr, b"Nats-Expected-Stream")
            if sname and sname.decode("utf-8", "surrogateescape") != stream.name:
                return error("JSStreamNotMatchErr")
            ttl_hdr = get_header(hdr, b"Nats-TTL")
            if ttl_hdr:
                try:
                    ttl = parse_message_ttl(ttl_hdr)
                except ValueError:
                    ttl = None
                if ttl != 0:
                    if not allow_ttl:
                        return error("JSMessageTTLDisabledErr")
                    if ttl is None:
                        return error("JSMessageTTLInvalidErr")
            mid = get_header(hdr, b"Nats-Msg-Id")
            if mid:
                if mid in msgids or \
                        stream._check_msgid(mid.decode("utf-8", "replace")) is not None:
                    return error("JSAtomicPublishContainsDuplicateMessageErr")
                msgids.add(mid)
            if counter:
                # The increment is applied here, on the running total of the batch's earlier
                # messages on the subject, and the message stored as it then is (Go's
                # checkMsgHeadersPreClusteredProposal).
                if incr is None:
                    return error("JSMessageIncrMissingErr")
                applied = stream._apply_incr(subject, hdr, payload, incr,
                                             staged=counters.get(subject))
                if isinstance(applied, ApiError):
                    return applied
                hdr, payload, _total = applied
                counters[subject] = (hdr, payload)
                msgs[i] = (raw_subject, hdr, payload)
                hl = len(hdr)
                size = msg_size(subject_len(subject), hl, len(payload))

            els = get_header(hdr, b"Nats-Expected-Last-Sequence")
            if els:
                if go_uint(els) != lseq:
                    return error("JSStreamWrongLastSequenceErrF", seq=lseq)
                if inflight:
                    # Only the first message of a batch may carry it.
                    return error("JSStreamWrongLastSequenceConstantErr")
            elss = get_header(hdr, b"Nats-Expected-Last-Subject-Sequence")
            opt = get_header(hdr, b"Nats-Expected-Last-Subject-Sequence-Subject")
            if elss:
                want = go_uint(elss)
                seq_subj = opt.decode("utf-8", "surrogateescape") if opt else subject
                if seq_subj in inflight:
                    # The batch wrote it already: the check could not hold.
                    return error("JSStreamWrongLastSequenceConstantErr")
                if seq_subj in expected:
                    if expected[seq_subj] != want:
                        return error("JSStreamWrongLastSequenceErrF", seq=expected[seq_subj])
                else:
                    try:
                        have = store.load_last_msg(seq_subj).seq
                    except StoreError:
                        have = 0
                    if have != want:
                        return error("JSStreamWrongLastSequenceErrF", seq=have)
                    expected[seq_subj] = have
            elif opt:
                return error("JSStreamExpectedLastSeqPerSubjectInvalid")
            if b"Nats-Schedule" in hdr:
                # A schedule gains "Nats-Rollup: sub", stored so (natsx.jetstream.schedules).
                try:
                    hdr, _when = schedules.check_publish(cfg, subject, hdr)
                except ApiError as exc:
                    return exc
                msgs[i] = (raw_subject, hdr, payload)
                hl = len(hdr)
                size = msg_size(subject_len(subject), hl, len(payload))
            rollup = (get_header(hdr, b"Nats-Rollup") or b"").lower()
            if rollup:
                if not allow_rollup:
                    return error("JSStreamRollupFailedF", err="rollup not permitted")
                if rollup == b"sub":
                    if subject in inflight:
                        return error("JSStreamRollupFailedF", err="batch rollup sub invalid")
                elif rollup == b"all":
                    if inflight:
                        return error("JSStreamRollupFailedF", err="batch rollup all invalid")
                else:
                    return error("JSStreamRollupFailedF",
                                 err=f"rollup value invalid: {go_quote(rollup)}")

            entry = inflight.get(subject)
            if entry is None:
                entry = inflight[subject] = [0, 0]
            entry[0] += size
            entry[1] += 1
            if discard_new:
                if max_msgs > 0 or max_bytes > 0:
                    total_msgs = state.msgs + sum(e[1] for e in inflight.values())
                    total_bytes = state.bytes + sum(e[0] for e in inflight.values())
                    if max_msgs > 0 and total_msgs > max_msgs:
                        return error("JSStreamStoreFailedF", err=str(ErrMaxMsgs()))
                    if max_bytes > 0 and total_bytes > max_bytes:
                        return error("JSStreamStoreFailedF", err=str(ErrMaxBytes()))
                if per_subject_new:
                    stored = store.subjects_totals(subject).get(subject, 0)
                    if stored + entry[1] > max_per:
                        return error("JSStreamStoreFailedF", err=str(ErrMaxMsgsPerSubject()))
            # natsx: the limits the store checks message by message, for the whole batch.
            err = check_store(stream, len(subject) + hl + len(payload), pending=pending)
            if err is not None:
                return err
            pending += size
            lseq += 1
        return None
