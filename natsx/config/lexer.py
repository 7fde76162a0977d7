"""Lexer for the NATS configuration language, a state-for-state port of conf/lex.go.

Theory of operation
-------------------
The lexer is Rob Pike's state-function machine, as in the Go server: every state is
a method that looks at the next character(s), may emit items, and returns the next
state. `next_item()` runs states until an item is queued. States that can appear in
several contexts (a value at top level, inside a map, inside an array; a comment
anywhere) return to their caller through an explicit stack (`_push` / `_pop`).

It owns nothing but the text it was given: no files, no environment. It yields
`Item(type, val, line, pos)` records; the parser turns them into values.

Fidelity to lex.go is the point, including its odd corners, because a config that
the Go server accepts (or rejects) must be accepted (or rejected) here too:

* `line` starts at 1 and counts '\\n'. `pos` is computed exactly as Go computes it
  (`pos - ilstart - len(val)` for items, `pos - lstart` for errors), where the line
  start is the offset of the '\\n' itself, so columns are 0-based on line 1 and
  1-based after that. Go counts UTF-8 bytes, so for non-ASCII text the lexer keeps
  a table of byte offsets and reports byte columns too.
* The "end of input" rune is NUL, as in Go: a literal NUL character in the text
  ends the input the same way.
* `\\xNN` escapes produce raw bytes in Go. Here a byte below 0x80 is that character,
  and a run of escaped bytes forming valid UTF-8 decodes to its characters; any other
  byte is kept as a surrogate escape (U+DC80..U+DCFF), so
  `s.encode("utf-8", "surrogateescape")` gives Go's bytes back.
* Character classes are Go's (see items.py).

This module holds the machinery, the top level, `{ ... }` blocks, keys and includes;
the value states live in lexer_values.py as a mixin of the same class.

Cost: one Python call per character, which is fine for files of a few hundred KB.
"""


from __future__ import annotations

from collections import deque
from typing import Callable, Iterator, Optional

from .items import (
    EOF_RUNE,
    Item,
    ItemType,
    State,
    byte_offsets,
    esc,
    is_digit,
    is_nl,
    is_sep,
    is_space,
    is_ws,
    rejoin_bytes,
    utf8_len,
)
from .lexer_values import ValueStates

__all__ = ["ItemType", "Item", "Lexer", "lex"]


class Lexer(ValueStates):
    """One pass over `text`; call `next_item()` until it returns EOF or ERROR."""

    def __init__(self, text: str) -> None:
        self.input = text
        self.start = 0
        self.pos = 0
        self.width = 0
        self.line = 1
        self.state: State = self._top
        self.items: deque[Item] = deque()
        self.stack: list[Callable[[], State]] = []
        self.string_parts: list[str] = []
        self.string_state: Callable[[], State] = self._string
        self.lstart = 0
        self.ilstart = 0
        self._raw_bytes = False
        self._boff = byte_offsets(text)

    def next_item(self) -> Item:
        while not self.items:
            if self.state is None:
                # Go would call a nil state here; an endless EOF is friendlier.
                return Item(ItemType.EOF, "", self.line, 0)
            self.state = self.state()
        return self.items.popleft()

    # ---- primitives (lexer methods of lex.go) ------------------------------

    def _push(self, state: Callable[[], State]) -> None:
        self.stack.append(state)

    def _pop(self) -> State:
        if not self.stack:
            return self._errorf("BUG in lexer: no states to pop.")
        return self.stack.pop()

    def _value_text(self) -> tuple[str, int]:
        raw = "".join(self.string_parts) + self.input[self.start : self.pos]
        # Go's len() counts bytes; an escaped byte is one character of raw.
        n = len(raw) if self._boff is None else sum(map(utf8_len, raw))
        if self._raw_bytes:
            raw = rejoin_bytes(raw)
        return raw, n

    def _emit(self, typ: ItemType) -> None:
        val, n = self._value_text()
        self.items.append(Item(typ, val, self.line, self._bytes_since(self.ilstart) - n))
        self.start = self.pos
        self.ilstart = self.lstart

    def _bytes_since(self, offset: int) -> int:
        if self._boff is None:
            return self.pos - offset
        return self._boff[self.pos] - self._boff[offset]

    def _last_two_bytes(self) -> str:
        # lex.go slices input[pos-2:pos] in bytes, which may be one non-ASCII character.
        tail = self.input[max(self.pos - 2, 0) : self.pos]
        if self._boff is None:
            return tail
        try:
            return tail.encode("utf-8", "surrogateescape")[-2:].decode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return tail

    def _emit_string(self) -> None:
        val, n = self._value_text()
        self.string_parts = []
        self._raw_bytes = False
        pos = self._bytes_since(self.ilstart) - n
        self.items.append(Item(ItemType.STRING, val, self.line, pos))
        self.start = self.pos
        self.ilstart = self.lstart

    def _add_current_string_part(self, offset: int) -> None:
        self.string_parts.append(self.input[self.start : self.pos - offset])
        self.start = self.pos

    def _add_string_part(self, s: str) -> State:
        self.string_parts.append(s)
        self.start = self.pos
        return self.string_state

    def _next(self) -> str:
        if self.pos >= len(self.input):
            self.width = 0
            return EOF_RUNE
        r = self.input[self.pos]
        if r == "\n":
            self.line += 1
            self.lstart = self.pos
        self.width = 1
        self.pos += 1
        return r

    def _ignore(self) -> None:
        self.start = self.pos
        self.ilstart = self.lstart

    def _backup(self) -> None:
        self.pos -= self.width
        if self.pos < len(self.input) and self.input[self.pos] == "\n":
            self.line -= 1

    def _peek(self) -> str:
        r = self._next()
        self._backup()
        return r

    def _errorf(self, msg: str) -> State:
        self.items.append(Item(ItemType.ERROR, msg, self.line, self._bytes_since(self.lstart)))
        return None

    def _skip(self, next_state: Callable[[], State]) -> Callable[[], State]:
        def skip() -> State:
            self._ignore()
            return next_state

        return skip

    def _eof_or_error(self) -> State:
        if self.pos > self.start:
            return self._errorf("Unexpected EOF.")
        self._emit(ItemType.EOF)
        return None

    # ---- top level and `{ ... }` blocks ------------------------------------

    def _top(self) -> State:
        r = self._next()
        if is_space(r):
            return self._skip(self._top)
        if r == "{":
            self._push(self._top)
            return self._skip(self._block_start)
        if r == "#":
            self._push(self._top)
            return self._comment_start
        if r == "/":
            if self._next() == "/":
                self._push(self._top)
                return self._comment_start
            self._backup()
            return self._eof_or_error()
        if r == EOF_RUNE:
            return self._eof_or_error()
        self._backup()
        self._push(self._top_value_end)
        return self._key_start

    def _top_value_end(self) -> State:
        r = self._next()
        if r == "#":
            self._push(self._top)
            return self._comment_start
        if r == "/":
            if self._next() == "/":
                self._push(self._top)
                return self._comment_start
            self._backup()
            return self._top_value_end
        if is_ws(r):
            return self._top_value_end
        if is_nl(r) or r == EOF_RUNE or r == ";" or r == "," or r == "}":
            self._ignore()
            return self._top
        return self._errorf(
            "Expected a top-level value to end with a new line, "
            f"comment or EOF, but got '{esc(r)}' instead."
        )

    def _block_start(self) -> State:
        r = self._next()
        if is_space(r):
            return self._skip(self._block_start)
        if r == "{":
            self._push(self._block_end)
            return self._skip(self._block_start)
        if r == "}":
            self._ignore()
            return self._pop()
        if r == "#":
            self._push(self._block_start)
            return self._comment_start
        if r == "/":
            if self._next() == "/":
                self._push(self._block_start)
                return self._comment_start
            self._backup()
            return self._eof_or_error()
        if r == EOF_RUNE:
            return self._eof_or_error()
        self._backup()
        self._push(self._block_value_end)
        return self._key_start

    def _block_value_end(self) -> State:
        r = self._next()
        if r == "#":
            self._push(self._block_value_end)
            return self._comment_start
        if r == "/":
            if self._next() == "/":
                self._push(self._block_value_end)
                return self._comment_start
            self._backup()
            return self._block_value_end
        if is_ws(r):
            return self._block_value_end
        if is_nl(r) or r == ";" or r == ",":
            self._ignore()
            return self._block_start
        if r == "}":
            self._backup()
            return self._block_end
        return self._errorf(
            "Expected a block-level value to end with a new line, "
            f"comment or EOF, but got '{esc(r)}' instead."
        )

    def _block_end(self) -> State:
        r = self._next()
        if r == "#":
            self._push(self._block_start)
            return self._comment_start
        if r == "/":
            if self._next() == "/":
                self._push(self._block_start)
                return self._comment_start
            self._backup()
            return self._block_end
        if is_nl(r) or is_ws(r):
            return self._block_end
        if r == ";" or r == ",":
            self._ignore()
            return self._block_start
        if r == "}":
            self._ignore()
            return self._pop()
        return self._errorf(
            f"Expected a block-level to end with a '}}', but got '{esc(r)}' instead."
        )

    # ---- keys ----------------------------------------------------------------

    def _key_start(self) -> State:
        r = self._peek()
        if is_sep(r):
            return self._errorf(f"Unexpected key separator '{r}'")
        if is_space(r):
            self._next()
            return self._skip(self._key_start)
        if r == '"':
            self._next()
            return self._skip(self._dub_quoted_key)
        if r == "'":
            self._next()
            return self._skip(self._quoted_key)
        self._ignore()
        self._next()
        return self._key

    def _dub_quoted_key(self) -> State:
        return self._quoted_key_body('"', self._dub_quoted_key)

    def _quoted_key(self) -> State:
        return self._quoted_key_body("'", self._quoted_key)

    def _quoted_key_body(self, quote: str, again: Callable[[], State]) -> State:
        r = self._peek()
        if r == quote:
            self._emit(ItemType.KEY)
            self._next()
            return self._skip(self._key_end)
        if r == EOF_RUNE:
            return self._eof_or_error()
        self._next()
        return again

    def _key_check_keyword(
        self, fall_through: Callable[[], State], push: Optional[Callable[[], State]]
    ) -> State:
        # Go lower-cases with unicode.ToLower, which maps U+0130 to a plain 'i'.
        key = self.input[self.start : self.pos].replace("\u0130", "i").lower()
        if key == "include":
            self._ignore()
            if push is not None:
                self._push(push)
            return self._include_start
        self._emit(ItemType.KEY)
        return fall_through

    def _key(self) -> State:
        r = self._peek()
        if is_space(r):
            return self._key_check_keyword(self._key_end, None)
        if is_sep(r) or r == EOF_RUNE:
            self._emit(ItemType.KEY)
            return self._key_end
        self._next()
        return self._key

    def _key_end(self) -> State:
        r = self._next()
        if is_space(r):
            return self._skip(self._key_end)
        if is_sep(r):
            return self._skip(self._value)
        if r == EOF_RUNE:
            self._emit(ItemType.EOF)
            return None
        self._backup()
        return self._value

    # ---- include -------------------------------------------------------------

    def _include_start(self) -> State:
        r = self._next()
        if is_ws(r):
            return self._skip(self._include_start)
        self._backup()
        return self._include

    def _include(self) -> State:
        r = self._next()
        if r == "'":
            self._ignore()
            return self._include_quoted_string
        if r == '"':
            self._ignore()
            return self._include_dub_quoted_string
        if r == "[":
            return self._errorf("Expected include value but found start of an array")
        if r == "{":
            return self._errorf("Expected include value but found start of a map")
        if r == "(":
            return self._errorf("Expected include value but found start of a block")
        if is_digit(r) or r == "-":
            return self._errorf("Expected include value but found start of a number")
        if r == "\\":
            return self._errorf("Expected include value but found escape sequence")
        if is_nl(r):
            return self._errorf("Expected include value but found new line")
        self._backup()
        return self._include_string

    def _include_quoted_string(self) -> State:
        r = self._next()
        if r == "'":
            return self._include_close()
        if r == EOF_RUNE:
            return self._errorf("Unexpected EOF in quoted include")
        return self._include_quoted_string

    def _include_dub_quoted_string(self) -> State:
        r = self._next()
        if r == '"':
            return self._include_close()
        if r == EOF_RUNE:
            return self._errorf("Unexpected EOF in double quoted include")
        return self._include_dub_quoted_string

    def _include_close(self) -> State:
        self._backup()
        self._emit(ItemType.INCLUDE)
        self._next()
        self._ignore()
        return self._pop()

    def _include_string(self) -> State:
        r = self._next()
        if is_nl(r) or r == EOF_RUNE or r == ";" or r == "}" or is_ws(r):
            self._backup()
            self._emit(ItemType.INCLUDE)
            return self._pop()
        if r == "'":
            return self._include_close()
        return self._include_string


def lex(text: str) -> Iterator[Item]:
    """Yield the items of `text`, ending with (and including) an EOF or ERROR item."""
    lx = Lexer(text)
    while True:
        item = lx.next_item()
        yield item
        if item.type in (ItemType.EOF, ItemType.ERROR):
            return
