"""Converters from parsed config values to what the option layer stores.

The config language leaves durations as strings ("2s") and quoted sizes as strings
("1G"); nats-server converts them per option in opts.go. These functions reproduce
those conversions and their error texts, so the option layer can wrap a failure as
opts.go does (`error parsing <field>: <reason>`). All accept a `Token` too.

Errors are `ValueError` (bad text) or `TypeError` (wrong kind of value); the message
is Go's, e.g. `time: invalid duration "2x"` or, where Go's type assertion would
panic, `interface conversion: interface {} is bool, not int64`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .parser import SIZE_SUFFIXES, Token

__all__ = [
    "go_type_name",
    "parse_go_duration",
    "parse_duration",
    "get_storage_size",
    "parse_size",
    "parse_bool",
]

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_U63 = 1 << 63
_INT64_MAX = _U63 - 1
_GO_INT = re.compile(r"[+-]?[0-9]+")
_LANG_SIZE = re.compile(r"(-?[0-9]+)\s*([kKmMgGtTpPeE][bBiI]*)?")
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, Token) else v


def go_type_name(v: Any) -> str:
    """The `%T` of a parsed value as the Go server would print it in an error."""
    if isinstance(v, Token):
        return "*conf.token"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int64"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, datetime):
        return "time.Time"
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return type(v).__name__


def _conversion_error(v: Any, want: str) -> TypeError:
    return TypeError(f"interface conversion: interface {{}} is {go_type_name(v)}, not {want}")


def _time_quote(s: str) -> str:
    # time.quote: ASCII printable kept, '"' and '\' escaped, anything else as \x bytes.
    out = ['"']
    for ch in s:
        if ch < " " or ord(ch) >= 0x80:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
        else:
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def parse_go_duration(s: str) -> int:
    """Go's `time.ParseDuration`, returning nanoseconds."""
    orig = s
    invalid = ValueError(f"time: invalid duration {_time_quote(orig)}")
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        i = 0
        v = 0
        while i < len(s) and "0" <= s[i] <= "9":
            v = v * 10 + ord(s[i]) - 48
            if v > _U63:
                raise invalid
            i += 1
        pre = i > 0
        s = s[i:]
        frac, scale, post = 0, 1.0, False
        if s and s[0] == ".":
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    y = frac * 10 + ord(s[i]) - 48
                    if frac > _INT64_MAX // 10 or y > _U63:
                        overflow = True
                    else:
                        frac = y
                        scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_time_quote(orig)}")
        unit_name, s = s[:i], s[i:]
        unit = _NS_PER_UNIT.get(unit_name)
        if unit is None:
            raise ValueError(
                f"time: unknown unit {_time_quote(unit_name)} in duration {_time_quote(orig)}"
            )
        if v > _U63 // unit:
            raise invalid
        v *= unit
        if frac > 0:
            v += int(float(frac) * (float(unit) / scale))
            if v > _U63:
                raise invalid
        total += v
        if total > _U63:
            raise invalid
    if neg:
        return -total
    if total > _INT64_MAX:
        raise invalid
    return total


def parse_duration(v: Any) -> float:
    """A duration option in seconds, as opts.go's parseDuration computes it.

    A string is a Go duration ("1m30s", "500ms"); an integer is a number of
    seconds, which the Go server accepts with the warning
    "<field> should be converted to a duration" (the caller emits it).
    """
    v = _plain(v)
    if isinstance(v, str):
        return parse_go_duration(v) / 1e9
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    raise _conversion_error(v, "int64")


def _go_parse_int(s: str) -> int:
    # strconv.ParseInt(s, 10, 64) and its error texts.
    if not _GO_INT.fullmatch(s):
        raise ValueError(f'strconv.ParseInt: parsing "{s}": invalid syntax')
    n = int(s)
    if not -_U63 <= n <= _INT64_MAX:
        raise ValueError(f'strconv.ParseInt: parsing "{s}": value out of range')
    return n


def get_storage_size(v: Any) -> int:
    """opts.go getStorageSize: an int as is, or a string ending in K, M, G or T (powers of 1024)."""
    v = _plain(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if not isinstance(v, str):
        raise TypeError("must be int64 or string")
    if v == "":
        return 0
    num = _go_parse_int(v[:-1])
    shift = {"K": 10, "M": 20, "G": 30, "T": 40}.get(v[-1])
    if shift is None:
        raise ValueError("sizes defined as strings must end in K, M, G, T")
    n = (num << shift) & ((1 << 64) - 1)
    return n - (1 << 64) if n >> 63 else n


def parse_size(v: Any) -> int:
    """A size in bytes: `get_storage_size`, and failing that the config language's own
    suffixes ("64KB", "1MB", "1gib", "1k" = 1000) for strings Go would reject."""
    try:
        return get_storage_size(v)
    except ValueError:
        m = _LANG_SIZE.fullmatch(str(_plain(v)).strip())
        mult = SIZE_SUFFIXES.get((m.group(2) or "").lower()) if m else None
        if mult is None:
            raise
        size = int(m.group(1)) * mult
        if not -_U63 <= size <= _INT64_MAX:
            raise ValueError(f"size {_plain(v)!r} does not fit in int64") from None
        return size


def parse_bool(v: Any) -> bool:
    """A boolean option: a bool, or a string spelled as the config language spells booleans
    (true/false/yes/no/on/off, any case). Go accepts only the bool."""
    v = _plain(v)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[v.lower()]
    if isinstance(v, str):
        raise ValueError(f"expected boolean value, but got '{v}'")
    raise _conversion_error(v, "bool")
