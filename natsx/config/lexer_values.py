"""The value half of the config lexer: values, arrays, maps, strings, numbers, comments.

A mixin of `Lexer` (see lexer.py for the theory of operation); these states use its
primitives (`_next`, `_backup`, `_emit`, ...) and return to their caller through its
state stack. Each state is the lex.go function of the same name.
"""

from __future__ import annotations

from .items import (
    ItemType,
    State,
    BOOL_WORDS,
    DATE_AFTER_YEAR,
    EOF_RUNE,
    HEX_DIGITS,
    NUMBER_SUFFIX,
    byte_char,
    esc,
    is_digit,
    is_nl,
    is_sep,
    is_space,
    is_ws,
)


class ValueStates:
    # ---- values ----------------------------------------------------------------

    def _value(self) -> State:
        # Whitespace may precede a value but a new line may not; arrays skip their own.
        r = self._next()
        if is_ws(r):
            return self._skip(self._value)
        if r == "[":
            self._ignore()
            self._emit(ItemType.ARRAY_START)
            return self._array_value
        if r == "{":
            self._ignore()
            self._emit(ItemType.MAP_START)
            return self._map_key_start
        if r == "'":
            self._ignore()
            return self._quoted_string
        if r == '"':
            self._ignore()
            self.string_state = self._dub_quoted_string
            return self._dub_quoted_string
        if r == "-":
            return self._neg_number_start
        if r == "(":
            self._ignore()
            return self._block
        if is_digit(r):
            self._backup()
            return self._number_or_date_or_string_or_ip_start
        if r == ".":
            return self._errorf("Floats must start with a digit")
        if is_nl(r):
            return self._errorf("Expected value but found new line")
        self._backup()
        self.string_state = self._string
        return self._string

    def _array_value(self) -> State:
        r = self._next()
        if is_space(r):
            return self._skip(self._array_value)
        if r == "#":
            self._push(self._array_value)
            return self._comment_start
        if r == "/":
            if self._next() == "/":
                self._push(self._array_value)
                return self._comment_start
            self._backup()
            return self._errorf("Unexpected array value terminator ','.")
        if r == ",":
            return self._errorf("Unexpected array value terminator ','.")
        if r == "]":
            return self._array_end
        self._backup()
        self._push(self._array_value_end)
        return self._value

    def _array_value_end(self) -> State:
        r = self._next()
        if is_ws(r):
            return self._skip(self._array_value_end)
        if r == "#":
            self._push(self._array_value_end)
            return self._comment_start
        if r == "/":
            if self._next() == "/":
                self._push(self._array_value_end)
                return self._comment_start
            self._backup()
            return self._skip(self._array_value)
        if r == "," or is_nl(r):
            return self._skip(self._array_value)
        if r == "]":
            return self._array_end
        return self._errorf(
            'Expected an array value terminator "," or an array '
            f"terminator \"]\", but got '{esc(r)}' instead."
        )

    def _array_end(self) -> State:
        self._ignore()
        self._emit(ItemType.ARRAY_END)
        return self._pop()

    # ---- maps ------------------------------------------------------------------

    def _map_key_start(self) -> State:
        r = self._peek()
        if is_sep(r):
            return self._errorf(f"Unexpected key separator '{r}'.")
        if r == "]":
            return self._errorf(f"Unexpected array end '{r}' processing map.")
        if is_space(r):
            self._next()
            return self._skip(self._map_key_start)
        if r == "}":
            self._next()
            return self._skip(self._map_end)
        if r == "#":
            self._next()
            self._push(self._map_key_start)
            return self._comment_start
        if r == "/":
            self._next()
            if self._next() == "/":
                self._push(self._map_key_start)
                return self._comment_start
            # Go drops the lone '/' and starts the key after it.
            self._backup()
        elif r == "'":
            self._next()
            return self._skip(self._map_quoted_key)
        elif r == '"':
            self._next()
            return self._skip(self._map_dub_quoted_key)
        elif r == EOF_RUNE:
            return self._errorf("Unexpected EOF processing map.")
        self._ignore()
        self._next()
        return self._map_key

    def _map_quoted_key(self) -> State:
        r = self._peek()
        if r == EOF_RUNE:
            return self._errorf("Unexpected EOF processing quoted map key.")
        if r == "'":
            self._emit(ItemType.KEY)
            self._next()
            return self._skip(self._map_key_end)
        self._next()
        return self._map_quoted_key

    def _map_dub_quoted_key(self) -> State:
        r = self._peek()
        if r == EOF_RUNE:
            return self._errorf("Unexpected EOF processing double quoted map key.")
        if r == '"':
            self._emit(ItemType.KEY)
            self._next()
            return self._skip(self._map_key_end)
        self._next()
        return self._map_dub_quoted_key

    def _map_key(self) -> State:
        r = self._peek()
        if r == EOF_RUNE:
            return self._errorf("Unexpected EOF processing map key.")
        if is_space(r):
            return self._key_check_keyword(self._map_key_end, self._map_value_end)
        if is_sep(r):
            self._emit(ItemType.KEY)
            return self._map_key_end
        self._next()
        return self._map_key

    def _map_key_end(self) -> State:
        r = self._next()
        if is_space(r):
            return self._skip(self._map_key_end)
        if is_sep(r):
            return self._skip(self._map_value)
        self._backup()
        return self._map_value

    def _map_value(self) -> State:
        r = self._next()
        if is_space(r):
            return self._skip(self._map_value)
        if r == ",":
            return self._errorf('Unexpected map value terminator ",".')
        if r == "}":
            return self._skip(self._map_end)
        self._backup()
        self._push(self._map_value_end)
        return self._value

    def _map_value_end(self) -> State:
        r = self._next()
        if is_ws(r):
            return self._skip(self._map_value_end)
        if r == "#":
            self._push(self._map_value_end)
            return self._comment_start
        if r == "/":
            if self._next() == "/":
                self._push(self._map_value_end)
                return self._comment_start
            self._backup()
            return self._skip(self._map_key_start)
        if r == ";" or r == "," or is_nl(r):
            return self._skip(self._map_key_start)
        if r == "}":
            return self._skip(self._map_end)
        return self._errorf(
            'Expected a map value terminator "," or a map '
            f"terminator \"}}\", but got '{esc(r)}' instead."
        )

    def _map_end(self) -> State:
        self._ignore()
        self._emit(ItemType.MAP_END)
        return self._pop()

    # ---- strings -----------------------------------------------------------------

    def _is_bool(self) -> bool:
        return self.input[self.start : self.pos].lower() in BOOL_WORDS

    def _is_variable(self) -> bool:
        if self.start >= len(self.input):
            return False
        if self.input[self.start] == "$":
            self.start += 1
            return True
        return False

    def _quoted_string(self) -> State:
        r = self._next()
        if r == "'":
            self._backup()
            self._emit(ItemType.STRING)
            self._next()
            self._ignore()
            return self._pop()
        if r == EOF_RUNE:
            return self._eof_or_error()
        return self._quoted_string

    def _dub_quoted_string(self) -> State:
        r = self._next()
        if r == "\\":
            self._add_current_string_part(1)
            return self._string_escape
        if r == '"':
            self._backup()
            self._emit_string()
            self._next()
            self._ignore()
            return self._pop()
        if r == EOF_RUNE:
            return self._eof_or_error()
        return self._dub_quoted_string

    def _string(self) -> State:
        r = self._next()
        if r == "\\":
            self._add_current_string_part(1)
            return self._string_escape
        if is_nl(r) or r == EOF_RUNE or r == ";" or r == "," or r == "]" or r == "}" or is_ws(r):
            self._backup()
            if self.string_parts:
                self._emit_string()
            elif self._is_bool():
                self._emit(ItemType.BOOL)
            elif self._is_variable():
                self._emit(ItemType.VARIABLE)
            else:
                self._emit_string()
            return self._pop()
        if r == "'":
            self._backup()
            self._emit_string()
            self._next()
            self._ignore()
            return self._pop()
        return self._string

    def _block(self) -> State:
        # A block string runs until a ')' alone on its line. The double backup and
        # the zero-width EOF rune are lex.go's; at EOF they leave the ')' in the value.
        r = self._next()
        if r == ")":
            self._backup()
            self._backup()
            if self._next() != "\n":
                self._next()
                return self._block
            self._next()
            n = self._next()
            if n == "\n" or n == EOF_RUNE:
                self._backup()
                self._backup()
                self._emit(ItemType.STRING)
                self._next()
                self._ignore()
                return self._pop()
            self._backup()
        elif r == EOF_RUNE:
            return self._errorf("Unexpected EOF processing block.")
        return self._block

    def _string_escape(self) -> State:
        r = self._next()
        if r == "x":
            return self._string_binary
        if r == "t":
            return self._add_string_part("\t")
        if r == "n":
            return self._add_string_part("\n")
        if r == "r":
            return self._add_string_part("\r")
        if r == '"':
            return self._add_string_part('"')
        if r == "\\":
            return self._add_string_part("\\")
        return self._errorf(
            f"Invalid escape character '{esc(r)}'. Only the following "
            "escape characters are allowed: \\xXX, \\t, \\n, \\r, \\\", \\\\."
        )

    def _string_binary(self) -> State:
        if is_nl(self._next()) or is_nl(self._next()):
            return self._errorf("Expected two hexadecimal digits after '\\x', but hit end of line")
        digits = self._last_two_bytes()
        if len(digits) != 2 or not (digits[0] in HEX_DIGITS and digits[1] in HEX_DIGITS):
            return self._errorf(f"Expected two hexadecimal digits after '\\x', but got '{digits}'")
        self._add_string_part(byte_char(int(digits, 16)))
        self._raw_bytes = True
        return self.string_state

    # ---- numbers, dates, IP addresses ----------------------------------------------

    def _number_or_date_or_string_or_ip_start(self) -> State:
        r = self._next()
        if not is_digit(r):
            if r == ".":
                return self._errorf("Floats must start with a digit, not '.'.")
            return self._errorf(f"Expected a digit but got '{esc(r)}'.")
        return self._number_or_date_or_string_or_ip

    def _number_or_date_or_string_or_ip(self) -> State:
        r = self._next()
        if r == "-":
            if self._bytes_since(self.start) != 5:
                return self._errorf("All ISO8601 dates must be in full Zulu form.")
            return self._date_after_year
        if is_digit(r):
            return self._number_or_date_or_string_or_ip
        if r == ".":
            return self._float_start
        if r in NUMBER_SUFFIX:
            return self._convenient_number
        if not (is_nl(r) or r == EOF_RUNE or r == "}" or r == ";" or r == "," or is_ws(r)):
            # Go does not list ']' here, so `[1]` lexes the value as the string "1]".
            self.string_state = self._string
            return self._string
        self._backup()
        self._emit(ItemType.INTEGER)
        return self._pop()

    def _convenient_number(self) -> State:
        r = self._next()
        if r in "bBiI":
            return self._convenient_number
        self._backup()
        if (
            is_nl(r)
            or r == EOF_RUNE
            or r == "}"
            or r == ";"
            or r == ","
            or is_ws(r)
            or is_digit(r)
        ):
            self._emit(ItemType.INTEGER)
            return self._pop()
        self.string_state = self._string
        return self._string

    def _date_after_year(self) -> State:
        for f in DATE_AFTER_YEAR:
            r = self._next()
            if f == "0":
                if not is_digit(r):
                    return self._errorf(
                        f"Expected digit in ISO8601 datetime, but found '{esc(r)}' instead."
                    )
            elif f != r:
                return self._errorf(
                    f"Expected '{f}' in ISO8601 datetime, but found '{esc(r)}' instead."
                )
        self._emit(ItemType.DATETIME)
        return self._pop()

    def _neg_number_start(self) -> State:
        r = self._next()
        if not is_digit(r):
            if r == ".":
                return self._errorf("Floats must start with a digit, not '.'.")
            return self._errorf(f"Expected a digit but got '{esc(r)}'.")
        return self._neg_number

    def _neg_number(self) -> State:
        r = self._next()
        if is_digit(r):
            return self._neg_number
        if r == ".":
            return self._float_start
        if r in NUMBER_SUFFIX:
            return self._convenient_number
        self._backup()
        self._emit(ItemType.INTEGER)
        return self._pop()

    def _float_start(self) -> State:
        r = self._next()
        if not is_digit(r):
            return self._errorf(
                f"Floats must have a digit after the '.', but got '{esc(r)}' instead."
            )
        return self._float

    def _float(self) -> State:
        r = self._next()
        if is_digit(r):
            return self._float
        if r == ".":
            # A second '.' means this was an IP address all along.
            return self._ip_addr
        self._backup()
        self._emit(ItemType.FLOAT)
        return self._pop()

    def _ip_addr(self) -> State:
        r = self._next()
        if is_digit(r) or r == "." or r == ":" or r == "-":
            return self._ip_addr
        self._backup()
        self._emit(ItemType.STRING)
        return self._pop()

    # ---- comments ------------------------------------------------------------------

    def _comment_start(self) -> State:
        self._ignore()
        self._emit(ItemType.COMMENT_START)
        return self._comment

    def _comment(self) -> State:
        r = self._peek()
        if is_nl(r) or r == EOF_RUNE:
            self._emit(ItemType.TEXT)
            return self._pop()
        self._next()
        return self._comment
