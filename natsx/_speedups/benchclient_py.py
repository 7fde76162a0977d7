"""The benchmark client's hot path — pure-Python twin of ``_benchclient``.

Theory of operation
-------------------
Two objects per connection, so Python runs once per socket read or write, never once
per message:

``PubBuilder`` turns "the next ``count`` messages" into one buffer of ``PUB``/``HPUB``
frames to hand to a single ``sendall``. Every payload of 8 bytes or more starts with
its *tag*, a little-endian u64 holding the publisher index in the top 16 bits and the
publisher's own message sequence (from 0) in the low 48; with ``stamp`` and 16 bytes or
more the next u64 is the send time in ``perf_counter_ns`` units (CLOCK_MONOTONIC), taken
once per buffer. With ``reply_seq`` the reply subject is ``<reply>.<sequence>`` and, with
``ring``, the send time is also stored at ``ring[sequence % ring]``: replies that do not
echo the request (JetStream acks, KV gets) are timed by the sequence in their subject.
With ``keys`` the subject is ``<subject><sequence % keys>`` (KV keys).

``FrameCounter`` takes the bytes read from a connection and counts complete frames. A
frame split across reads (inside its control line, its payload or its final CRLF) is
carried over and counted once, when its last byte arrives. Per frame it can:

* count data messages and their payload bytes (``msgs``, ``nbytes``); an ``HMSG`` whose
  header block carries a status (``NATS/1.0 404``...) and no payload is a status message
  instead (``statuses``, ``last_status``);
* with ``track=N`` (the number of publishers), set the tag's bit in a bitmap, counting a
  bit already set as a duplicate (``dups``);
* with ``scan_errors``, count payloads containing ``"error"`` (JetStream API errors);
* with ``latency=LAT_PAYLOAD`` take the send time from the payload, with
  ``latency=LAT_RING`` from ``source``'s ring by the subject's last token, and record the
  round trip into a log-linear histogram (``histogram()``);
* with ``echo``, queue ``PUB <reply>`` carrying the same payload; with ``ack=b"+ACK"``,
  queue that payload instead (JetStream acks);
* answer ``PING`` with ``PONG``, count ``PONG``/``+OK``/``INFO``, and keep the text of the
  last ``-ERR`` (``err_count``, ``last_err``).

Queued output is taken with ``take_output()``. Histogram buckets: values below 2**7 have
their own bucket; above, each power of two is split into 64 buckets, so a bucket is
never wider than 1/64 of its values (the same layout as ``natsx.bench.histogram``).
"""
from __future__ import annotations

import struct
import time

LAT_NONE = 0
LAT_PAYLOAD = 1
LAT_RING = 2

SUB_BITS = 7
HALF = 1 << (SUB_BITS - 1)
NBUCKETS = (64 - SUB_BITS + 2) * HALF
SEQ_MASK = (1 << 48) - 1
#: Tags at or above this sequence (or with a publisher index >= track) are counted as
#: ``foreign`` instead of tracked: they would need a bitmap of gigabytes, and can only
#: come from a publisher that is not this benchmark.
MAX_TRACK_SEQ = 1 << 28
MAX_CONTROL_LINE = 1 << 20

_U64 = struct.Struct("<Q")
_U64x2 = struct.Struct("<QQ")


class ProtocolError(Exception):
    """The byte stream is not the NATS protocol."""


def bucket_index(v: int) -> int:
    """Histogram bucket of ``v`` (negative values count as 0)."""
    if v < (1 << SUB_BITS):
        return v if v > 0 else 0
    e = v.bit_length() - SUB_BITS
    return e * HALF + (v >> e)


def now_ns() -> int:
    """The clock both twins stamp with (CLOCK_MONOTONIC)."""
    return time.perf_counter_ns()


class PubBuilder:
    """Builds batches of PUB/HPUB frames; see the module header."""

    def __init__(
        self,
        subject: bytes,
        size: int,
        *,
        reply: bytes | None = None,
        reply_seq: bool = False,
        headers: bytes | None = None,
        pub_id: int = 0,
        stamp: bool = False,
        ring: int = 0,
        keys: int = 0,
        payload: bytes | None = None,
    ) -> None:
        if payload is not None:
            size = len(payload)
        self.subject = bytes(subject)
        self.size = size
        self.reply = bytes(reply) if reply is not None else None
        self.reply_seq = reply_seq and reply is not None
        self.headers = bytes(headers) if headers else b""
        self.pub_id = pub_id
        self.tagged = size >= 8 and payload is None
        self.stamp = stamp and self.tagged and size >= 16
        self.keys = keys
        self.seq = 0
        self._ring = [0] * ring
        self._payload = payload if payload is not None else b"x" * size
        op = b"HPUB " if self.headers else b"PUB "
        hl = len(self.headers)
        self._sizes = (b" %d %d\r\n" % (hl, hl + size)) if self.headers else (b" %d\r\n" % size)
        self._head = op + self.subject
        if self.reply is not None and not self.keys:
            self._head += b" " + self.reply
            if self.reply_seq:
                self._head += b"."
        extra = 0
        if self.keys:
            extra += 20
            if self.reply is not None:
                extra += len(self.reply) + 22
        elif self.reply_seq:
            extra += 20
        self.frame_size = len(self._head) + len(self._sizes) + hl + size + 2 + extra

    def ring_get(self, seq: int) -> int:
        return self._ring[seq % len(self._ring)] if self._ring else 0

    def build(self, count: int) -> bytes:
        """The next ``count`` frames, as one buffer."""
        ts = now_ns()
        seq0 = self.seq
        self.seq += count
        ring = self._ring
        if ring:
            n = len(ring)
            for s in range(seq0, seq0 + count):
                ring[s % n] = ts
        if not (self.tagged or self.reply_seq or self.keys):
            return (self._head + self._sizes + self.headers + self._payload + b"\r\n") * count
        out = []
        head, sizes, hdrs = self._head, self._sizes, self.headers
        tail = self._payload[16 if self.stamp else 8 :] + b"\r\n" if self.tagged else self._payload + b"\r\n"
        tag_hi = self.pub_id << 48
        for s in range(seq0, seq0 + count):
            if self.keys:
                out.append(head + b"%d" % (s % self.keys))
                if self.reply is not None:
                    out.append(b" " + self.reply + (b".%d" % s if self.reply_seq else b""))
            elif self.reply_seq:
                out.append(head + b"%d" % s)
            else:
                out.append(head)
            out.append(sizes)
            out.append(hdrs)
            if self.tagged:
                tag = tag_hi | (s & SEQ_MASK)
                out.append(_U64x2.pack(tag, ts) if self.stamp else _U64.pack(tag))
            out.append(tail)
        return b"".join(out)


class FrameCounter:
    """Counts complete frames in a server byte stream; see the module header."""

    def __init__(
        self,
        *,
        track: int = 0,
        scan_errors: bool = False,
        latency: int = LAT_NONE,
        source: PubBuilder | None = None,
        echo: bool = False,
        ack: bytes | None = None,
    ) -> None:
        if latency == LAT_RING and source is None:
            raise ValueError("LAT_RING needs the PubBuilder whose ring holds the send times")
        self.track = track
        self.scan_errors = scan_errors
        self.latency = latency
        self.source = source
        self.echo = echo
        self.ack = bytes(ack) if ack is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget every count, the bitmap, the histogram and any carried partial frame."""
        self.msgs = 0
        self.nbytes = 0
        self.pings = 0
        self.pongs = 0
        self.oks = 0
        self.infos = 0
        self.statuses = 0
        self.last_status = 0
        self.errors = 0
        self.first_error = b""
        self.err_count = 0
        self.last_err = ""
        self.dups = 0
        self.foreign = 0
        self.lat_count = 0
        self.lat_min = 0
        self.lat_max = 0
        self.lat_sum = 0
        self._hist: dict[int, int] = {}
        self._bits = bytearray()
        self._pend = bytearray()
        self._out: list[bytes] = []
        self._out_len = 0

    # -- results -----------------------------------------------------------------------

    @property
    def pending_output(self) -> int:
        return self._out_len

    def take_output(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        self._out_len = 0
        return out

    def histogram(self) -> list[tuple[int, int]]:
        """Non-empty buckets as (bucket index, count), in index order."""
        return sorted(self._hist.items())

    def bitmap(self) -> bytes:
        """The tag bitmap: bit ``sequence * track + publisher`` is set per message seen."""
        return bytes(self._bits)

    @property
    def buffered(self) -> int:
        """Bytes of a split frame carried to the next ``feed``."""
        return len(self._pend)

    # -- parsing ---------------------------------------------------------------------

    def feed(self, data, n: int = -1) -> int:
        """Count the frames completed by ``data[:n]``; returns the data messages counted.

        Raises:
            ProtocolError: the stream is not NATS.
        """
        if n < 0:
            n = len(data)
        before = self.msgs
        self._now = now_ns()
        pend = self._pend
        if pend:
            pend += memoryview(data)[:n]
            buf = pend
        else:
            buf = bytes(memoryview(data)[:n])
        n = len(buf)
        pos = 0
        while pos < n:
            used = self._frame(buf, pos, n)
            if used == 0:
                break
            pos += used
        if buf is pend:
            del pend[:pos]
        else:
            self._pend = bytearray(buf[pos:])
        if len(self._pend) > MAX_CONTROL_LINE and self._pend.find(b"\n", 0, MAX_CONTROL_LINE) < 0:
            raise ProtocolError("control line too long")
        return self.msgs - before

    def _frame(self, buf, pos: int, n: int) -> int:
        nl = buf.find(b"\n", pos, n)
        if nl < 0:
            return 0
        le = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        c = buf[pos] | 0x20
        if c == 0x6D or c == 0x68:  # 'm', 'h'
            hmsg = c == 0x68
            args = bytes(buf[pos:le]).split()
            try:
                if hmsg:
                    hdr = int(args[-2])
                    total = int(args[-1])
                    a = args[1:-2]
                else:
                    hdr = 0
                    total = int(args[-1])
                    a = args[1:-1]
            except (IndexError, ValueError):
                raise ProtocolError(f"bad frame {bytes(buf[pos:le])[:64]!r}") from None
            if len(a) not in (2, 3) or hdr > total or total < 0:
                raise ProtocolError(f"bad frame {bytes(buf[pos:le])[:64]!r}")
            start = nl + 1
            if start + total + 2 > n:
                return 0
            if buf[start + total] != 13 or buf[start + total + 1] != 10:
                raise ProtocolError("payload not followed by CRLF")
            self._message(a[0], a[2] if len(a) == 3 else None, buf, start, hdr, total)
            return start + total + 2 - pos
        op = bytes(buf[pos : pos + 4]).upper()
        if op == b"PING":
            self.pings += 1
            self._queue(b"PONG\r\n")
        elif op == b"PONG":
            self.pongs += 1
        elif op[:3] == b"+OK":
            self.oks += 1
        elif op == b"INFO":
            self.infos += 1
        elif op == b"-ERR":
            self.err_count += 1
            text = bytes(buf[pos + 4 : le]).strip()
            if len(text) >= 2 and text[:1] == text[-1:] == b"'":
                text = text[1:-1]
            self.last_err = text[:256].decode("utf-8", "replace")
        elif le > pos:
            raise ProtocolError(f"unknown operation {bytes(buf[pos:le])[:32]!r}")
        return nl + 1 - pos

    def _message(self, subject, reply, buf, start: int, hdr: int, total: int) -> None:
        plen = total - hdr
        if hdr >= 12 and plen == 0 and buf[start : start + 9] == b"NATS/1.0 ":
            code = bytes(buf[start + 9 : start + 12])
            if code.isdigit():
                self.statuses += 1
                self.last_status = int(code)
                return
        self.msgs += 1
        self.nbytes += plen
        p = start + hdr
        if self.track and plen >= 8:
            tag = _U64.unpack_from(buf, p)[0]
            if (tag >> 48) >= self.track or (tag & SEQ_MASK) >= MAX_TRACK_SEQ:
                self.foreign += 1
            else:
                bit = (tag & SEQ_MASK) * self.track + (tag >> 48)
                byte = bit >> 3
                bits = self._bits
                if byte >= len(bits):
                    bits.extend(bytes(byte + 1 - len(bits)))
                mask = 1 << (bit & 7)
                if bits[byte] & mask:
                    self.dups += 1
                else:
                    bits[byte] |= mask
        if self.scan_errors and buf.find(b'"error"', p, p + plen) >= 0:
            self.errors += 1
            if not self.first_error:
                self.first_error = bytes(buf[p : p + min(plen, 512)])
        if self.latency == LAT_PAYLOAD:
            if plen >= 16:
                self._record(self._now - _U64.unpack_from(buf, p + 8)[0])
        elif self.latency == LAT_RING and self.source._ring:
            tok = subject.rpartition(b".")[2]
            if tok.isdigit():
                self._record(self._now - self.source.ring_get(int(tok)))
        if reply is not None and (self.echo or self.ack is not None):
            body = bytes(buf[p : p + plen]) if self.echo else self.ack
            self._queue(b"PUB %s %d\r\n%s\r\n" % (reply, len(body), body))

    def _record(self, v: int) -> None:
        if v < 0:
            v = 0
        if self.lat_count == 0 or v < self.lat_min:
            self.lat_min = v
        if v > self.lat_max:
            self.lat_max = v
        self.lat_count += 1
        self.lat_sum += v
        i = bucket_index(v)
        self._hist[i] = self._hist.get(i, 0) + 1

    def _queue(self, b: bytes) -> None:
        self._out.append(b)
        self._out_len += len(b)
