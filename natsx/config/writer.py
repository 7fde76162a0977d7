"""Serialise Python values as NATS config text that `parse` reads back unchanged.

Used by the tests' round trip and by the `-t` config check to print a normalised
config. The output is deliberately plain: `key: value` lines, two-space indentation,
every string double-quoted (the lexer's only quoted form with escapes), floats in
positional notation (the lexer has no exponent form), keys bare only when they
cannot be mistaken for anything else.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .parser import Token

__all__ = ["dumps"]

_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_NAMED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def dumps(obj: dict[str, Any], *, indent: int = 2) -> str:
    """Return config text for a dict of str, int, float, bool, datetime, list and dict
    values (`Token`s are unwrapped).

    Raises:
        ValueError: a value the language cannot express (None, NaN, an int outside
            int64, a key holding both quote characters or a NUL, a non-UTC datetime).
    """
    obj = _unwrap(obj)
    if not isinstance(obj, dict):
        raise ValueError("the top level of a config must be a dict")
    lines: list[str] = []
    _write_map_body(obj, lines, 0, indent)
    return "\n".join(lines) + ("\n" if lines else "")


def _unwrap(v: Any) -> Any:
    return v.value if isinstance(v, Token) else v


def _write_map_body(m: dict, lines: list[str], depth: int, indent: int) -> None:
    pad = " " * (depth * indent)
    for k, v in m.items():
        head = f"{pad}{_key(k)}: "
        _write_value(_unwrap(v), head, lines, depth, indent)


def _write_value(v: Any, head: str, lines: list[str], depth: int, indent: int) -> None:
    pad = " " * (depth * indent)
    if isinstance(v, dict):
        if not v:
            lines.append(head + "{}")
            return
        lines.append(head + "{")
        _write_map_body(v, lines, depth + 1, indent)
        lines.append(pad + "}")
    elif isinstance(v, list):
        if not v:
            lines.append(head + "[]")
            return
        lines.append(head + "[")
        inner = " " * ((depth + 1) * indent)
        for item in v:
            _write_value(_unwrap(item), inner, lines, depth + 1, indent)
        lines.append(pad + "]")
    else:
        lines.append(head + _scalar(v))


def _key(k: Any) -> str:
    if not isinstance(k, str):
        raise ValueError(f"config keys are strings, not {type(k).__name__}")
    # "include" followed by a space would be the include keyword.
    if _BARE_KEY.fullmatch(k) and k.lower() != "include":
        return k
    if "\0" in k:
        raise ValueError("a config key cannot hold a NUL character")
    # Quoted keys have no escapes: pick the quote the key does not contain.
    if '"' not in k:
        return f'"{k}"'
    if "'" not in k:
        return f"'{k}'"
    raise ValueError(f"key {k!r} holds both quote characters")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise ValueError(f"integer {v} does not fit in int64")
        return str(v)
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, datetime):
        return _datetime(v)
    raise ValueError(f"cannot write a {type(v).__name__} as a config value")


def _float(v: float) -> str:
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"cannot write {v} as a config value")
    text = format(Decimal(repr(v)), "f")
    return text if "." in text else text + ".0"


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        esc = _NAMED_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " " or ch == "\x7f":
            # NUL would end the input, other controls are kept readable.
            out.append(f"\\x{ord(ch):02x}")
        elif "\udc80" <= ch <= "\udcff":
            # A byte that was not UTF-8 in the source file goes back as that byte.
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _datetime(dt: datetime) -> str:
    if dt.tzinfo is not None:
        if dt.utcoffset() != timezone.utc.utcoffset(None):
            raise ValueError("only UTC datetimes can be written")
    if dt.microsecond or not 1 <= dt.year <= 9999:
        raise ValueError("config datetimes have whole seconds and four-digit years")
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt:%H:%M:%S}Z"
