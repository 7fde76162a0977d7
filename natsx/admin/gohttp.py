"""The Go monitor's HTTP conventions: query decoding, JSON rendering and responses.

A client written against the Go server parses these answers, and some compare bodies or
error texts, so this module reproduces what net/http and encoding/json do there:

* parameters are decoded by monitor.go's ``decodeBool``/``decodeInt``/``decodeUint64``,
  and a bad one is a 400 whose plain-text body quotes strconv's error;
* JSON is ``json.MarshalIndent(v, "", "  ")`` (``json.Marshal`` for /healthz): UTF-8,
  ``<``, ``>`` and ``&`` escaped as ``\\u003c`` and so on, integral floats without a
  fraction;
* every JSON answer carries ``Content-Type: application/json`` and
  ``Access-Control-Allow-Origin: *`` (monitor.go ``handleResponse``);
* an unknown path is Go's ``404 page not found``.
"""
from __future__ import annotations

import json

from starlette.responses import Response

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


class BadRequest(Exception):
    """A request the Go server refuses with 400 and this text."""


def _decode_error(kind: str, name: str, func: str, value: str, reason: str) -> BadRequest:
    return BadRequest(f"Error decoding {kind} for '{name}': strconv.{func}: parsing "
                      f"{json.dumps(value, ensure_ascii=False)}: {reason}")


def go_bool(q, name: str) -> bool:
    """monitor.go decodeBool: empty is false, otherwise strconv.ParseBool."""
    v = q.get(name)
    if not v:
        return False
    if v in _GO_TRUE:
        return True
    if v in _GO_FALSE:
        return False
    raise _decode_error("boolean", name, "ParseBool", v, "invalid syntax")


def _go_integer(v: str, signed: bool) -> int | None:
    body = v[1:] if signed and v[:1] in "+-" else v
    if not body or not all("0" <= c <= "9" for c in body):
        return None
    return int(v, 10)


def go_int(q, name: str) -> int:
    """monitor.go decodeInt: strconv.Atoi (64-bit)."""
    v = q.get(name)
    if not v:
        return 0
    n = _go_integer(v, signed=True)
    if n is None:
        raise _decode_error("int", name, "Atoi", v, "invalid syntax")
    if not -_INT64_MAX - 1 <= n <= _INT64_MAX:
        raise _decode_error("int", name, "Atoi", v, "value out of range")
    return n


def go_uint(q, name: str) -> int:
    """monitor.go decodeUint64: strconv.ParseUint(v, 10, 64)."""
    v = q.get(name)
    if not v:
        return 0
    n = _go_integer(v, signed=False)
    if n is None:
        raise _decode_error("uint64", name, "ParseUint", v, "invalid syntax")
    if n > _UINT64_MAX:
        raise _decode_error("uint64", name, "ParseUint", v, "value out of range")
    return n


def go_subs(q) -> tuple[bool, bool]:
    """monitor.go decodeSubs: ``subs=detail`` (any case), else a boolean."""
    if (q.get("subs") or "").lower() == "detail":
        return False, True
    return go_bool(q, "subs"), False


def _integral_floats(value):
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _integral_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats(v) for v in value]
    return value


def go_json(value, *, indent: bool = True) -> bytes:
    """``value`` as Go's encoding/json writes it (MarshalIndent with two spaces, or Marshal)."""
    text = json.dumps(_integral_floats(value), ensure_ascii=False,
                      indent=2 if indent else None,
                      separators=None if indent else (",", ":"))
    # These characters only occur inside strings, so replacing them keeps the JSON valid.
    text = (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return text.encode("utf-8", "replace")


def json_response(value, status_code: int = 200, *, indent: bool = True) -> Response:
    return Response(go_json(value, indent=indent), status_code=status_code,
                    headers={"Content-Type": "application/json",
                             "Access-Control-Allow-Origin": "*"})


def text_response(text: str, status_code: int) -> Response:
    """What Go's ``w.WriteHeader(code); w.Write(text)`` sends: sniffed as plain text."""
    return Response(text.encode(), status_code=status_code,
                    headers={"Content-Type": "text/plain; charset=utf-8"})


def not_found() -> Response:
    """net/http's NotFound."""
    return Response(b"404 page not found\n", status_code=404,
                    headers={"Content-Type": "text/plain; charset=utf-8",
                             "X-Content-Type-Options": "nosniff"})
