"""Stream snapshot and restore: ``$JS.API.STREAM.SNAPSHOT.<stream>`` and ``.RESTORE.<stream>``.

Theory of operation
-------------------
The protocol is Go's (server/jetstream_api.go ``jsStreamSnapshotRequest``/``streamSnapshot``
and ``jsStreamRestoreRequest``/``processStreamRestore``), so the ``nats`` CLI and any client
that speaks it can back a stream up and restore it; the bytes inside are natsx's own format
(Go's is an s2-compressed tar of its file store, which natsx does not have).

Snapshot. The request names a ``deliver_subject`` (and optionally ``no_consumers``,
``chunk_size``, ``window_size``). The API response carries the stream's config and state;
then ``SnapshotSender`` publishes chunks of at most ``chunk_size`` bytes (clamped to
1KiB..1MiB, as in Go) to the deliver subject, each with the reply
``$JS.SNAPSHOT.ACK.<stream>.<id>.<len>.<index>``. At most ``window_size // chunk_size``
chunks are unacknowledged: each message on an ack subject frees one slot. The last, short,
chunk has no reply; then an empty message with the header ``NATS/1.0 204`` ends the
transfer (an empty message without headers when everything fit in one short chunk, as in Go).
No ack for 5s ends it with ``408 No Flow Response``; the receiver's subscription going away
ends it with ``408 No Interest``. Sending is driven by acks and timers (worker batches),
never by a loop that blocks the worker, and the data is produced lazily from the store.

Restore. The request carries the stream's ``config`` (and ``state``); it is checked like a
create. The response names ``$JS.SNAPSHOT.RESTORE.<stream>.<id>``: the client publishes the
chunks there, each with a reply, and every chunk is acknowledged with an empty message. An
empty chunk ends the upload: the stream and its consumers are rebuilt and the reply to that
last chunk is a ``stream_create_response`` with the stream's info (or the error). Five
seconds without a chunk abandon the restore. Chunks are spooled to a temporary file.

Format: zlib (deflate) over a sequence of records. The first record is JSON (magic
``natsx-snapshot-v1``, the config, created time, state and, unless ``no_consumers``, each
consumer's config, created time and state); then one record per message: sequence, time,
subject, headers, payload. Records are ``<u32 length><bytes>``; messages are
``<u64 seq><i64 ts><u32 subject len><u32 header len>`` + subject + headers + payload.
Sequences between stored messages are restored as deleted, so sequence numbers, first and
last sequences come back as they were.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
import time
import zlib

from natsx.jetstream.errors import ApiError, error
from natsx.jetstream.util import get_header, random_id
from natsx.storage import StoreError
from natsx.storage.types import ConsumerState, Pending, SequencePair

log = logging.getLogger("natsx")

MAGIC = "natsx-snapshot-v1"
CHUNK_DEFAULT = 128 * 1024
WINDOW_DEFAULT = 8 * 1024 * 1024
ACK_TIMEOUT = 5.0
INTEREST_WAIT = 2.0
RESTORE_IDLE = 5.0
#: How long the home holds a vetted restore's config for the next creates' checks when
#: the upload has not finished (natsx.jetstream.catalog); a finished one shows on disk.
RESTORE_HOLD = 60.0
_MSG = struct.Struct(">QqII")
_LEN = struct.Struct(">I")


# ------------------------------------------------------------------------------------- format

def _consumer_state_json(st: ConsumerState) -> dict:
    return {"delivered": [st.delivered.consumer, st.delivered.stream],
            "ack_floor": [st.ack_floor.consumer, st.ack_floor.stream],
            "pending": [[seq, p.sequence, p.timestamp] for seq, p in st.pending.items()],
            "redelivered": [[seq, n] for seq, n in st.redelivered.items()]}


def _consumer_state(d: dict) -> ConsumerState:
    return ConsumerState(SequencePair(*d.get("delivered", (0, 0))),
                         SequencePair(*d.get("ack_floor", (0, 0))),
                         {int(s): Pending(int(q), int(t)) for s, q, t in d.get("pending", ())},
                         {int(s): int(n) for s, n in d.get("redelivered", ())})


def snapshot_records(stream, consumers: bool):
    """The snapshot's records (uncompressed), produced lazily; the message range is fixed
    when this is called."""
    st = stream.store.state()
    meta = {"magic": MAGIC, "config": stream.cfg, "created": stream.created,
            "state": {"first_seq": st.first_seq, "last_seq": st.last_seq, "msgs": st.msgs},
            "consumers": []}
    if consumers:
        for c in stream.consumers.values():
            if c.cfg.get("mem_storage") or c.cfg.get("direct"):
                continue
            meta["consumers"].append({"name": c.name, "config": c.cfg, "created": c.created,
                                      "state": _consumer_state_json(c.cs.state())})
    last = st.last_seq

    def gen():
        head = json.dumps(meta).encode()
        yield _LEN.pack(len(head)) + head
        seq = st.first_seq if st.msgs else last + 1
        store = stream.store
        while seq <= last:
            try:
                sm, seq = store.load_next_msg("", start=seq)
            except StoreError:
                break
            if sm.seq > last:
                break
            subj = sm.subject.encode("utf-8", "surrogateescape")
            hdr, data = sm.headers or b"", sm.payload or b""
            body = _MSG.pack(sm.seq, sm.ts, len(subj), len(hdr)) + subj + hdr + data
            yield _LEN.pack(len(body)) + body
            seq += 1
    return gen()


class _Records:
    """Parses records out of a decompressed byte stream read from a file."""

    def __init__(self, f) -> None:
        self.f = f
        self.z = zlib.decompressobj()
        self.buf = bytearray()
        self.eof = False

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            if self.eof:
                return False
            data = self.f.read(64 * 1024)
            if not data:
                self.buf += self.z.flush()
                self.eof = True
                continue
            self.buf += self.z.decompress(data)
        return True

    def next(self) -> bytes | None:
        if not self._fill(4):
            if self.buf:
                raise ValueError("truncated snapshot")
            return None
        (n,) = _LEN.unpack_from(self.buf)
        if not self._fill(4 + n):
            raise ValueError("truncated snapshot")
        rec = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        return rec


# ------------------------------------------------------------------------------------- snapshot

class SnapshotSender:
    """Streams one snapshot to its deliver subject under Go's flow control."""

    def __init__(self, stream, deliver: bytes, chunk: int, window: int, consumers: bool,
                 client: dict) -> None:
        chunk = chunk or CHUNK_DEFAULT
        window = window or WINDOW_DEFAULT
        chunk = min(max(1024, chunk), 1024 * 1024)
        window = max(min(max(1024, window), 32 * 1024 * 1024), chunk)
        self.stream = stream
        self.js = stream.js
        self.acc = stream.account.name
        self.deliver = deliver
        self.chunk = chunk
        self.slots = window // chunk
        self.client = client
        self.start_ns = time.time_ns()
        self.records = snapshot_records(stream, consumers)
        self.z = zlib.compressobj(6)
        self.buf = bytearray()
        self.source_done = False
        self.index = 1
        self.sent_acked = False
        self.ack_prefix = b"$JS.SNAPSHOT.ACK.%s.%s" % (stream.name.encode(), random_id(22).encode())
        self.sub = None
        self.timer = None
        self.done = False
        self.had_interest = False

    def start(self) -> None:
        self.sub = self.js.server.internal_subscribe(self.acc, self.ack_prefix + b".>",
                                                     self._on_ack)
        if self.js.has_interest(self.acc, self.deliver):
            self.had_interest = True
            self._pump()
        else:
            # Go waits up to 2s for the receiver's subscription to show up.
            self.timer = self.js.call_later(INTEREST_WAIT, self._interest_waited)

    def _interest_waited(self) -> None:
        self.timer = None
        if not self.done:
            self.had_interest = self.js.has_interest(self.acc, self.deliver)
            self._pump()

    def _on_ack(self, subject, reply, hdr, payload, publisher) -> None:
        if self.done:
            return
        self.slots += 1
        self._pump()

    def _fill(self) -> None:
        """Compress records until a whole chunk is buffered or the source is exhausted."""
        while len(self.buf) < self.chunk and not self.source_done:
            try:
                rec = next(self.records)
            except StopIteration:
                self.buf += self.z.flush()
                self.source_done = True
                break
            self.buf += self.z.compress(rec)

    def _pump(self) -> None:
        if self.done:
            return
        if self.had_interest and not self.js.has_interest(self.acc, self.deliver):
            return self._finish(b"NATS/1.0 408 No Interest\r\n\r\n", "no interest")
        js = self.js
        while self.slots > 0:
            try:
                self._fill()
            except Exception as exc:     # a store failure while reading
                log.exception("JetStream: snapshot of %r failed", self.stream.name)
                return self._finish(b"NATS/1.0 500 %s\r\n\r\n" % str(exc).encode(), str(exc))
            if len(self.buf) < self.chunk:
                # The end: the short last chunk without a reply, then the end marker.
                if self.buf:
                    js.send(self.acc, self.deliver, None, bytes(self.buf))
                    self.buf.clear()
                return self._finish(b"NATS/1.0 204\r\n\r\n" if self.sent_acked else None, "")
            data = bytes(self.buf[:self.chunk])
            del self.buf[:self.chunk]
            js.send(self.acc, self.deliver, self.ack_prefix + b".%d.%d" % (len(data), self.index),
                    data)
            self.sent_acked = True
            self.index += 1
            self.slots -= 1
        self._arm_ack_timer()

    def _arm_ack_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.js.call_later(ACK_TIMEOUT, self._ack_timeout)

    def _ack_timeout(self) -> None:
        self.timer = None
        if not self.done:
            self._finish(b"NATS/1.0 408 No Flow Response\r\n\r\n", "no flow response")

    def _finish(self, hdr: bytes | None, err: str) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sub is not None:
            self.js.server.internal_unsubscribe(self.acc, self.sub)
            self.sub = None
        self.js.send(self.acc, self.deliver, None, b"", hdr=hdr)
        end = time.time_ns()
        self.js.events.snapshot_complete(self.acc, self.stream.name, self.start_ns, end,
                                         self.client, err)
        if err:
            log.warning("Snapshot for stream '%s > %s' failed: %s", self.acc, self.stream.name, err)
        else:
            log.info("Completed snapshot for stream '%s > %s'", self.acc, self.stream.name)


def snapshot_request(account, stream, req: dict, client: dict) -> dict:
    """Check a snapshot request and start the transfer; returns the API response body."""
    deliver = req.get("deliver_subject", "") or ""
    if not isinstance(deliver, str) or not _valid_publish_subject(deliver):
        raise error("JSSnapshotDeliverSubjectInvalidErr")
    for key in ("chunk_size", "window_size"):
        if not isinstance(req.get(key, 0) or 0, int):
            raise error("JSInvalidJSONErr", err=f"json: cannot unmarshal into {key}")
    sender = SnapshotSender(stream, deliver.encode(), req.get("chunk_size", 0) or 0,
                            req.get("window_size", 0) or 0, not req.get("no_consumers"), client)
    state = stream.state()
    state.pop("consumer_count", None)
    state["consumer_count"] = len(stream.public_consumers())
    log.info("Starting snapshot for stream '%s > %s'", account.name, stream.name)
    js = account.js
    # After the API response has been queued (the caller queues it when this returns).
    js.call_later(0, sender.start)
    js.events.snapshot_create(account.name, stream.name, state, client)
    return {"config": stream.cfg, "state": state}


def _valid_publish_subject(subject: str) -> bool:
    if not subject or " " in subject or "\t" in subject:
        return False
    toks = subject.split(".")
    return all(t and t not in ("*", ">") for t in toks)


# ------------------------------------------------------------------------------------- restore

class Restore:
    """One upload in progress: chunks spooled to a file, then the stream rebuilt."""

    def __init__(self, account, cfg: dict, client: dict) -> None:
        self.account = account
        self.js = account.js
        self.cfg = cfg
        self.client = client
        self.name = cfg["name"]
        self.subject = b"$JS.SNAPSHOT.RESTORE.%s.%s" % (self.name.encode(), random_id(22).encode())
        os.makedirs(self.js.store_dir, exist_ok=True)
        self.file = tempfile.TemporaryFile(dir=self.js.store_dir, prefix=".restore-")
        self.total = 0
        self.start_ns = time.time_ns()
        self.sub = None
        self.timer = None
        self.done = False

    def start(self) -> None:
        self.sub = self.js.server.internal_subscribe(self.account.name, self.subject,
                                                     self._on_chunk)
        self._arm()
        self.js.events.restore_create(self.account.name, self.name, self.client)
        log.info("Starting restore for stream '%s > %s'", self.account.name, self.name)

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.js.call_later(RESTORE_IDLE, self._stalled)

    def _stalled(self) -> None:
        self.timer = None
        if not self.done:
            log.warning("restore for stream '%s > %s' is stalled", self.account.name, self.name)
            self._close()

    def _close(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sub is not None:
            self.js.server.internal_unsubscribe(self.account.name, self.sub)
            self.sub = None
        try:
            self.file.close()
        except OSError:
            pass

    def _on_chunk(self, subject, reply, hdr, payload, publisher) -> None:
        if self.done:
            return
        acc = self.account.name
        if not reply:
            log.warning("restore for stream '%s > %s' requires reply subject for each chunk",
                        acc, self.name)
            return self._close()
        if payload:
            try:
                self.file.write(payload)
            except OSError as exc:
                self._respond(reply, error("JSStreamRestoreErrF", err=str(exc)))
                return self._close()
            self.total += len(payload)
            self._arm()
            self.js.send(acc, reply, None, b"")
            return
        # The end of the upload.
        try:
            stream = self._rebuild()
            err = None
        except ApiError as exc:
            stream, err = None, exc
        except Exception as exc:
            log.exception("JetStream: restore of %r failed", self.name)
            stream, err = None, error("JSStreamRestoreErrF", err=str(exc))
        end = time.time_ns()
        self.js.events.restore_complete(acc, self.name, self.start_ns, end, self.total,
                                        self.client)
        self._respond(reply, err, stream)
        self._close()

    def _respond(self, reply, err: ApiError | None, stream=None) -> None:
        from natsx.jetstream.api import T, _dumps, _with_versions

        body: dict = {"type": T + "stream_create_response"}
        if err is not None:
            body["error"] = err.to_json()
            self.account.api_errors += 1
        else:
            body.update(_with_versions(stream.info()))
        self.js.send(self.account.name, reply, None, _dumps(body))

    def _rebuild(self):
        account = self.account
        if self.name in account.streams:
            raise error("JSStreamNameExistRestoreFailedErr")
        self.file.seek(0)
        records = _Records(self.file)
        try:
            head = records.next()
            meta = json.loads(head) if head else None
        except (ValueError, zlib.error) as exc:
            raise error("JSStreamRestoreErrF", err=f"invalid snapshot: {exc}") from None
        if not isinstance(meta, dict) or meta.get("magic") != MAGIC:
            raise error("JSStreamRestoreErrF", err="invalid snapshot: unknown format")
        stream = account.create_stream(self.cfg, meta.get("created") or None)
        try:
            self._load_messages(stream, records, meta.get("state") or {})
            self._load_consumers(stream, meta.get("consumers") or [])
        except Exception as exc:
            account.delete_stream(stream)
            if isinstance(exc, ApiError):
                raise
            raise error("JSStreamRestoreErrF", err=str(exc)) from None
        stream.rebuild_dedupe()
        account.js.arm_expiry(stream)
        stream.rebuild_schedules()
        log.info("Completed restore of %d bytes for stream '%s > %s'", self.total,
                 account.name, self.name)
        return stream

    @staticmethod
    def _load_messages(stream, records: _Records, state: dict) -> None:
        from natsx.jetstream.util import parse_message_ttl

        store = stream.store
        stream.touch()
        last = 0
        while True:
            try:
                rec = records.next()
            except zlib.error as exc:
                raise ValueError(f"invalid snapshot: {exc}") from None
            if rec is None:
                break
            seq, ts, sl, hl = _MSG.unpack_from(rec)
            off = _MSG.size
            subject = rec[off:off + sl].decode("utf-8", "surrogateescape")
            hdr = rec[off + sl:off + sl + hl]
            payload = rec[off + sl + hl:]
            if seq <= last:
                raise ValueError("invalid snapshot: sequences out of order")
            if seq > last + 1:
                store.skip_msgs(last + 1, seq - last - 1)
            ttl = 0
            raw_ttl = get_header(hdr, b"Nats-TTL") if hdr else None
            if raw_ttl:
                try:
                    ttl = parse_message_ttl(raw_ttl)
                except ValueError:
                    ttl = 0
            store.store_raw(seq, ts, subject, hdr, payload, ttl)
            last = seq
        want = state.get("last_seq", 0) or 0
        if want > last:
            store.skip_msgs(last + 1, want - last)

    def _load_consumers(self, stream, consumers: list) -> None:
        account = self.account
        for entry in consumers:
            name, cfg = entry.get("name"), entry.get("config")
            if not name or not isinstance(cfg, dict):
                continue
            consumer = account._make_consumer(stream, name, cfg,
                                              entry.get("created") or time.time_ns())
            account._write_consumer_meta(consumer)
            stream.touch()
            consumer.cs.force_update(_consumer_state(entry.get("state") or {}))
            consumer.restore()
            consumer.start()


def restore_request(account, tokens, req: dict, client: dict, check_config) -> dict:
    """Check a restore request and open the upload; returns the API response body."""
    cfg = restore_config(account, tokens, req, check_config)
    if tokens[4] in account.streams:
        raise error("JSStreamNameExistRestoreFailedErr")
    restore = Restore(account, cfg, client)
    restore.start()
    return {"deliver_subject": restore.subject.decode()}


def restore_config(account, tokens, req: dict, check_config) -> dict:
    """The checked config of a restore request (the home vets with this alone)."""
    name = tokens[4]
    cfg = req.get("config")
    if not isinstance(cfg, dict):
        cfg = {}
    cfg = dict(cfg)
    if not cfg.get("name"):
        cfg["name"] = name
    if cfg["name"] != name:
        raise error("JSStreamMismatchErr")
    if "/" in name or "\\" in name:
        raise error("JSStreamNameContainsPathSeparatorsErr")
    return check_config(cfg)
