"""Small helpers shared by the JetStream modules: times, headers, subjects, names.

Times on the wire are RFC 3339 with nanoseconds in UTC, formatted as Go's
``time.RFC3339Nano`` does (trailing zeros trimmed, ``Z`` for UTC, ``0001-01-01T00:00:00Z``
for the zero time); durations are integer nanoseconds. Header lookups follow Go's
``getHeader``: an exact, case-sensitive key at the start of a line of the header block.
"""
from __future__ import annotations

import datetime as _dt
import os
import re

NS = 1_000_000_000
ZERO_TIME = "0001-01-01T00:00:00Z"
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


# ---------------------------------------------------------------------------------- times

def rfc3339(ns: int) -> str:
    """Unix nanoseconds as Go's RFC3339Nano in UTC; 0 is Go's zero time."""
    if not ns:
        return ZERO_TIME
    secs, frac = divmod(ns, NS)
    base = _dt.datetime.fromtimestamp(secs, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        base += "." + ("%09d" % frac).rstrip("0")
    return base + "Z"


_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
                      r"(Z|z|[+-]\d{2}:\d{2})$")


def parse_rfc3339(text: str) -> int:
    """RFC 3339 (any offset, up to nanoseconds) to Unix nanoseconds; ValueError if invalid."""
    m = _TIME_RE.match(text or "")
    if not m:
        raise ValueError(f"invalid time {text!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if tz in ("Z", "z"):
        off = 0
    else:
        sign = -1 if tz[0] == "-" else 1
        off = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    if int(y) == 1 and int(mo) == 1 and int(d) == 1 and not off:
        return 0
    dt = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=_dt.timezone.utc)
    secs = int((dt - _EPOCH).total_seconds()) - off
    nanos = int((frac or "0")[:9].ljust(9, "0"))
    return secs * NS + nanos


_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DUR_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": NS,
              "m": 60 * NS, "h": 3600 * NS}


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` ("1.5s", "300ms", "1h2m") to nanoseconds."""
    s = text.strip()
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    pos, total = 0, 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    while pos < len(s):
        m = _DUR_RE.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return sign * int(total)


def parse_message_ttl(value: bytes) -> int:
    """Go's parseMessageTTL (``Nats-TTL``, ``Nats-Schedule-TTL``): seconds, -1 for ``never`` (any case); a Go duration of at least
    a second, or a plain number of seconds. Raises ValueError."""
    text = value.decode("utf-8", "replace")
    if text.lower() == "never":
        return -1
    try:
        if text.strip() != text:
            raise ValueError(text)
        dur = parse_go_duration(text)
    except ValueError:
        if text and text.isascii() and text.isdigit():
            return int(text)
        raise ValueError("invalid per-message TTL") from None
    if dur < NS:
        raise ValueError("invalid per-message TTL")
    return dur // NS


def go_duration(ns: int) -> str:
    """Nanoseconds as Go's ``Duration.String()`` (used in a few status texts)."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < 1_000:
        out = f"{ns}ns"
    elif ns < 1_000_000:
        out = _trim(ns / 1_000) + "µs"
    elif ns < NS:
        out = _trim(ns / 1_000_000) + "ms"
    else:
        h, rest = divmod(ns, 3600 * NS)
        m, rest = divmod(rest, 60 * NS)
        out = _trim(rest / NS) + "s"
        if h:
            out = f"{h}h{m}m" + out
        elif m:
            out = f"{m}m" + out
    return "-" + out if neg else out


def _trim(x: float) -> str:
    text = ("%.9f" % x).rstrip("0").rstrip(".")
    return text or "0"


_ALPHANUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_id(n: int) -> str:
    """``n`` random base-62 characters (consumer names: 8, event ids: 22 like a NUID)."""
    return "".join(_ALPHANUM[b % 62] for b in os.urandom(n))


# ---------------------------------------------------------------------------------- headers

def get_header(hdr: bytes | None, key: bytes) -> bytes | None:
    """The value of ``key`` in a NATS/1.0 header block, trimmed; None when absent."""
    if not hdr:
        return None
    i = hdr.find(b"\r\n" + key + b":")
    if i < 0:
        return None
    start = i + len(key) + 3
    end = hdr.find(b"\r\n", start)
    if end < 0:
        end = len(hdr)
    return hdr[start:end].strip()


def add_headers(hdr: bytes | None, pairs) -> bytes:
    """``hdr`` (or an empty NATS/1.0 block) with ``(key, value)`` lines appended."""
    base = hdr[:-2] if hdr and hdr.endswith(b"\r\n\r\n") else (hdr or b"NATS/1.0\r\n")
    if not base.endswith(b"\r\n"):
        base += b"\r\n"
    return base + b"".join(k + b": " + v + b"\r\n" for k, v in pairs) + b"\r\n"


def slice_header(hdr: bytes | None, key: bytes) -> bytes | None:
    """Go's sliceHeader: the value of the *first* ``key:`` in the block (which must start a
    line), leading spaces skipped, nothing trimmed at its end; None when absent."""
    if not hdr:
        return None
    i = hdr.find(key + b":")
    if i < 2 or i >= len(hdr) - 1 or hdr[i - 2:i] != b"\r\n":
        return None
    i += len(key) + 1
    if i >= len(hdr):
        return None
    while i < len(hdr) and hdr[i] == 0x20:
        i += 1
    end = hdr.find(b"\r\n", i)
    return hdr[i:] if end < 0 else hdr[i:end]


def set_header(hdr: bytes | None, key: bytes, value: bytes) -> bytes:
    """Go's setHeader: replace the value after the first ``key: `` (up to its ``\\r``), or
    append ``key: value`` before the block's final CRLF."""
    hdr = hdr or b""
    prefix = key + b": "
    start = hdr.find(prefix)
    if start >= 0:
        vstart = start + len(prefix)
        vend = hdr.find(b"\r", vstart)
        if vend < 0:
            return hdr      # malformed
        return hdr[:vstart] + value + hdr[vend:]
    if hdr.endswith(b"\r\n"):
        return hdr[:-2] + prefix + value + b"\r\n\r\n"
    return hdr + prefix + value + b"\r\n"


_EMPTY_HDR = b"NATS/1.0\r\n\r\n"


def remove_header_if_present(hdr: bytes | None, key: bytes) -> bytes | None:
    """Go's removeHeaderIfPresent: drop the line of the first ``key:`` when it starts a
    line; None when nothing but the empty block is left."""
    if not hdr:
        return hdr
    start = hdr.find(key + b":")
    if start < 1 or hdr[start - 1] != 0x0A:
        return hdr
    end = hdr.find(b"\r\n", start)
    if end < 0:
        return hdr
    hdr = hdr[:start] + hdr[end + 2:]
    return None if len(hdr) <= len(_EMPTY_HDR) else hdr


def remove_header_if_prefix_present(hdr: bytes | None, prefix: bytes) -> bytes | None:
    """Go's removeHeaderIfPrefixPresent: drop the lines starting with ``prefix``, from the
    first one on, until an occurrence that does not start a line."""
    index = 0
    while hdr:
        if index >= len(hdr):
            return hdr
        start = hdr.find(prefix, index)
        if start < 0:
            return hdr
        index = start
        if index < 1 or hdr[index - 1] != 0x0A:
            return hdr
        end = hdr.find(b"\r\n", index + len(prefix))
        if end < 0:
            return hdr
        hdr = hdr[:index] + hdr[end + 2:]
        if len(hdr) <= len(_EMPTY_HDR):
            return None
    return hdr


def gen_header(hdr: bytes | None, key: bytes, value: bytes) -> bytes:
    """Go's genHeader: ``key: value`` appended to the block (or to a new one)."""
    base = hdr[:-2] if hdr and len(hdr) > 2 else b"NATS/1.0\r\n"
    return base + key + b": " + value.strip() + b"\r\n\r\n"


def status_headers(code: int, description: str, pairs=()) -> bytes:
    out = b"NATS/1.0 %d %s\r\n" % (code, description.encode())
    return out + b"".join(k + b": " + v + b"\r\n" for k, v in pairs) + b"\r\n"


# ---------------------------------------------------------------------------------- subjects

def tokens(subject: str) -> list[str]:
    return subject.split(".")


def is_valid_subject(subject: str) -> bool:
    """Go's IsValidSubject: non-empty tokens, no whitespace, ``>`` only last."""
    if not subject or any(c in subject for c in " \t\r\n\f"):
        return False
    toks = subject.split(".")
    for i, t in enumerate(toks):
        if not t:
            return False
        if t == ">" and i != len(toks) - 1:
            return False
    return True


def is_literal(subject: str) -> bool:
    return all(t not in ("*", ">") for t in subject.split("."))


def is_valid_literal_subject(subject: str) -> bool:
    return is_valid_subject(subject) and is_literal(subject)


def subject_matches(subject: str, filter_subject: str) -> bool:
    """A literal ``subject`` matches a (wildcard) ``filter_subject``."""
    st, ft = subject.split("."), filter_subject.split(".")
    for i, f in enumerate(ft):
        if f == ">":
            return len(st) > i
        if i >= len(st):
            return False
        if f != "*" and f != st[i]:
            return False
    return len(st) == len(ft)


def is_subset_match(subject: str, test: str) -> bool:
    """Go's subjectIsSubsetMatch: every subject ``subject`` matches also matches ``test``."""
    st, tt = subject.split("."), test.split(".")
    for i, t in enumerate(tt):
        if i >= len(st):
            return False
        s = st[i]
        if t == ">":
            return True
        if s == ">":
            return False
        if t == "*":
            continue
        if s == "*" or s != t:
            return False
    return len(st) == len(tt)


def subjects_collide(a: str, b: str) -> bool:
    """Go's SubjectsCollide: some literal subject matches both."""
    at, bt = a.split("."), b.split(".")
    la, lb = len(at), len(bt)
    for i in range(min(la, lb)):
        x, y = at[i], bt[i]
        if x == ">" or y == ">":
            return True
        if x != y and x != "*" and y != "*":
            return False
    # Past the shorter one without a ">": only equal lengths can match the same subject.
    return la == lb


def is_valid_name(name: str) -> bool:
    """Go's isValidAssetName: stream and consumer names."""
    if not name:
        return False
    return not any(c in name for c in ".*> \t\r\n\f/\\")


class SubjectTransform:
    """Go's subject transform for stream ``subject_transform``, ``republish`` and source
    ``subject_transforms``: the engine of account mappings (natsx.server.mapping,
    Go's NewSubjectTransform), on str subjects. An empty ``dest`` keeps the subject.
    Raises ValueError (natsx.server.mapping.MappingError, with Go's text) for a
    destination it cannot fill."""

    def __init__(self, src: str, dest: str) -> None:
        from natsx.server.mapping import new_transform

        self.src = src or ">"
        self._tr = new_transform(self.src, dest)

    def apply(self, subject: str) -> str | None:
        """The mapped subject, or None when ``subject`` does not match the source."""
        if self._tr is None:
            return subject if subject_matches(subject, self.src) else None
        out = self._tr.match(subject.encode())
        return None if out is None else out.decode()
