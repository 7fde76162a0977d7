"""What the config lexer emits, and the character classes of lex.go it tests with.

Shared by the two halves of the lexer (`lexer`: keys, top level, includes;
`lexer_values`: values). Character tests follow Go exactly: `unicode.IsSpace`,
`unicode.IsDigit` (the Nd category), and lex.go's own `isWhitespace` (tab, space)
and `isNL` (LF, CR). The end of input is the NUL rune, as in lex.go.
"""

from __future__ import annotations

import enum
from typing import Callable, Optional

import attrs

__all__ = ["ItemType", "Item"]


class ItemType(enum.IntEnum):
    ERROR = 0
    NIL = 1
    EOF = 2
    KEY = 3
    TEXT = 4
    STRING = 5
    BOOL = 6
    INTEGER = 7
    FLOAT = 8
    DATETIME = 9
    ARRAY_START = 10
    ARRAY_END = 11
    MAP_START = 12
    MAP_END = 13
    COMMENT_START = 14
    VARIABLE = 15
    INCLUDE = 16


@attrs.frozen(slots=True)
class Item:
    type: ItemType
    val: str
    line: int
    pos: int


EOF_RUNE = "\0"

# unicode.IsSpace: Latin-1 spaces plus the White_Space property.
GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
NUMBER_SUFFIX = frozenset("kKmMgGtTpPeE")
BOOL_WORDS = frozenset(("true", "false", "on", "off", "yes", "no"))
DATE_AFTER_YEAR = "00-00T00:00:00Z"

State = Optional[Callable[[], "State"]]


def is_space(r: str) -> bool:
    return r in GO_SPACE


def is_digit(r: str) -> bool:
    # unicode.IsDigit is the Nd category, which is what str.isdecimal tests.
    return r.isdecimal()


def is_ws(r: str) -> bool:
    return r == "\t" or r == " "


def is_nl(r: str) -> bool:
    return r == "\n" or r == "\r"


def is_sep(r: str) -> bool:
    return r == "=" or r == ":"


def esc(r: str) -> str:
    # lex.go escapeSpecial: only a newline is made visible in messages.
    return "\\n" if r == "\n" else r


def byte_char(b: int) -> str:
    return chr(b) if b < 0x80 else chr(0xDC00 + b)


def utf8_len(ch: str) -> int:
    c = ord(ch)
    if c < 0x80 or 0xDC80 <= c <= 0xDCFF:  # a surrogate escape stands for one byte
        return 1
    return 2 if c < 0x800 else 3 if c < 0x10000 else 4


def byte_offsets(text: str) -> Optional[list[int]]:
    if text.isascii():
        return None
    offsets = [0]
    total = 0
    for ch in text:
        total += utf8_len(ch)
        offsets.append(total)
    return offsets


def rejoin_bytes(s: str) -> str:
    """Decode runs of escaped bytes that form valid UTF-8 into characters."""
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s
