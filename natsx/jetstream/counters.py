"""Distributed counters (ADR-49, Go 2.12 ``allow_msg_counter``): the values and headers.

Theory of operation
-------------------
On a counter stream every message of a subject holds that subject's running total as its
payload, ``{"val":"<total>"}``; a publish carries no payload, only ``Nats-Incr: <signed
integer>``, and the stream stores the previous total (its last message on the subject) plus
the increment. Totals are arbitrary-precision integers, as Go's ``big.Int`` (Python ints; the
text conversions here step around CPython's 4300-digit guard, so a total as long as a header
allows converts like any other). Stream.process_msg does the checks in Go's order; this
module holds the parsing and formatting, each as Go does it:

* ``parse_incr``: Go's getMessageIncr, ``big.Int.SetString(v, 10)``: an optional sign and
  ASCII digits, nothing else (no spaces, no underscores).
* ``lenient_int``: what ``SetString`` leaves in a fresh ``big.Int`` when its result is
  ignored, which is how Go reads a stored total: the leading sign and digits.
* ``counter_value``/``counter_sources``: ``json.Unmarshal`` into Go's ``CounterValue`` and
  ``CounterSources`` (None when Go's decoder returns an error: the counter is broken).
* ``marshal_sources``: ``json.Marshal`` of the ``Nats-Counter-Sources`` map (keys sorted,
  HTML characters escaped).

A stream that sources counters keeps, per origin stream and origin subject, the last total
it took from there in ``Nats-Counter-Sources`` (carried on every message it stores), and
adds the difference between a sourced total and that one: a resent or re-sourced total
never counts twice.
"""
from __future__ import annotations

import json
import re

# CPython refuses int<->str conversions of more digits than this (sys.int_info); longer
# numbers are converted in pieces.
_CHUNK = 4000
_INCR = re.compile(rb"[+-]?[0-9]+")
_LEADING = re.compile(r"([+-]?)([0-9]*)")


def _digits_to_int(digits: str) -> int:
    if len(digits) <= _CHUNK:
        return int(digits) if digits else 0
    half = len(digits) // 2
    return _digits_to_int(digits[:-half]) * 10 ** half + _digits_to_int(digits[-half:])


def big_str(n: int) -> str:
    """``big.Int.String()``: decimal, ``-`` for negatives."""
    if n < 0:
        return "-" + big_str(-n)
    if n.bit_length() <= _CHUNK * 3:         # fewer than _CHUNK digits
        return str(n)
    half = int(n.bit_length() * 0.30103) // 2
    high, low = divmod(n, 10 ** half)
    return big_str(high) + big_str(low).zfill(half)


def parse_incr(value: bytes) -> int | None:
    """Go's getMessageIncr for a non-empty ``Nats-Incr`` value; None when it is invalid."""
    if not _INCR.fullmatch(value):
        return None
    text = value.decode("ascii")
    n = _digits_to_int(text.lstrip("+-"))
    return -n if text[0] == "-" else n


def lenient_int(text: str) -> int:
    """A fresh ``big.Int`` after ``SetString(text, 10)`` whatever it returned: the sign and
    the digits that lead the text (0 when none)."""
    m = _LEADING.match(text)
    sign, digits = m.group(1), m.group(2)
    # Go only scans ASCII digits; re's [0-9] is ASCII.
    n = _digits_to_int(digits)
    return -n if sign == "-" else n


def _no_constants(name: str):
    raise ValueError(name)


class _Object(list):
    """A JSON object as its (key, value) pairs in order (a JSON array stays a list)."""


def _loads_pairs(data: bytes):
    """JSON as Go's decoder accepts it (no NaN/Infinity), objects as ``_Object``."""
    return json.loads(data.decode("utf-8", "replace"), object_pairs_hook=_Object,
                      parse_constant=_no_constants)


def counter_value(data: bytes) -> str | None:
    """``json.Unmarshal(data, &CounterValue{})``: the ``val`` text ("" when absent or null),
    or None where Go returns an error. Go matches the key without regard to case and lets
    the last one win."""
    try:
        doc = _loads_pairs(data)
    except ValueError:
        return None
    if doc is None:
        return ""
    if not isinstance(doc, _Object):
        return None
    val, ok = "", True
    for key, value in doc:
        if len(key) == 3 and key.lower() == "val":
            if isinstance(value, str):
                val = value
            elif value is not None:
                ok = False
    return val if ok else None


BROKEN = object()     # counter_sources: Go's decoder returned an error


def counter_sources(data: bytes):
    """``json.Unmarshal`` into ``map[string]map[string]string``: a dict (None for JSON
    null), or ``BROKEN``."""
    try:
        doc = _loads_pairs(data)
    except ValueError:
        return BROKEN
    if doc is None:
        return None
    if not isinstance(doc, _Object):
        return BROKEN
    out: dict = {}
    for stream, inner in doc:
        if inner is None:
            out[stream] = None
            continue
        if not isinstance(inner, _Object):
            return BROKEN
        subjects = out[stream] = {}     # a repeated key replaces the map, as in Go
        for subject, value in inner:
            if value is None:
                value = ""
            elif not isinstance(value, str):
                return BROKEN
            subjects[subject] = value
    return out

_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
         "\u2029": "\\u2029"}
_HTML_RE = re.compile("[<>&\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def marshal_sources(sources: dict) -> bytes:
    """Go's ``json.Marshal`` of ``CounterSources``: compact, keys sorted, <>& escaped."""
    text = json.dumps(sources, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    text = _HTML_RE.sub(lambda m: _HTML[m.group()], text)
    # Invalid UTF-8 (kept as surrogates when decoded) becomes U+FFFD, as Go marshals it.
    return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def counter_payload(total: str) -> bytes:
    """``fmt.Appendf("{%q:%q}", "val", total)``: the stored body of a counter message."""
    return b'{"val":"%s"}' % total.encode("ascii")
