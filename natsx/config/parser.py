"""Parser for the NATS configuration language, a port of conf/parse.go.

Theory of operation
-------------------
The parser pulls items from the lexer and keeps, as parse.go does, a stack of
contexts (the dict or list being filled) and a stack of pending keys. A scalar is
stored with `_set_value`: appended to a list context, or stored under the key popped
from the key stack in a dict context. Maps and arrays push a context on their start
item and are stored as a value on their end item. Parse.go's quirks follow from this
and are kept on purpose: a key whose value never comes (`a { b }`, or an integer
with an unknown suffix such as `1kbb`) stays on the key stack and the next stored
value pops it, exactly as the Go server does.

Values: str, int (int64, wrapping on size-suffix overflow as Go's int64 does), float,
bool, datetime (UTC), list, dict. Durations and sizes in strings stay strings; see
`natsx.config.values` for the converters the option layer uses.

Variables (`$name`) resolve against the dict contexts on the stack, innermost first,
then the environment; an environment value is parsed as a config value (`pk=<value>`)
with a shared set of names being expanded, which is how reference cycles are caught.
`$2a$...` is a bcrypt hash, not a variable.

Pedantic mode (`parse.go`'s `ParseWithChecks`, which the server uses) wraps every
value in a `Token` holding its file, line and column; a value stored under a key
takes the key's position, so errors can point at the key.

Only `parse_file*` and the default include reader touch the filesystem; `parse()`
works on text and reads includes only through the `read_file` callable it is given.
"""

from __future__ import annotations

import os
import posixpath
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional

import attrs

from .lexer import Item, ItemType, Lexer

__all__ = [
    "ConfigError",
    "Token",
    "parse",
    "parse_with_positions",
    "parse_file",
    "parse_file_with_positions",
    "unwrap",
    "strip_positions",
    "SIZE_SUFFIXES",
]

ReadFile = Callable[[str], str]

# parse.go's suffix switch; an integer with any other suffix stores nothing.
SIZE_SUFFIXES: dict[str, int] = {"": 1}
for _i, _p in enumerate("kmgtpe", start=1):
    SIZE_SUFFIXES[_p] = 1000**_i
    for _s in ("b", "i", "ib"):
        SIZE_SUFFIXES[_p + _s] = 1024**_i

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_MAX_INCLUDE_DEPTH = 64
_BCRYPT_PREFIX = "2a$"
_ENV_KEY = "pk"


class ConfigError(Exception):
    """A config file that cannot be read, lexed or parsed.

    `reason` is the Go server's message for the same failure, word for word, so the
    command line can print what `nats-server` prints. `filename`, `line` and `col`
    locate it (inside the included file when the failure is there); `key` is the
    dotted path of the keys being parsed at the time, if any. `str()` puts
    `file:line:col: ` in front of the reason when the file is known.
    """

    def __init__(
        self,
        reason: str,
        *,
        filename: Optional[str] = None,
        line: int = 0,
        col: int = 0,
        key: Optional[str] = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.filename = filename
        self.line = line
        self.col = col
        self.key = key

    def __str__(self) -> str:
        if self.filename:
            return f"{self.filename}:{self.line}:{self.col}: {self.reason}"
        return self.reason

    def __reduce__(self):  # the supervisor gets errors from other processes
        return (_rebuild_error, (self.reason, self.filename, self.line, self.col, self.key))


def _rebuild_error(reason, filename, line, col, key) -> ConfigError:
    return ConfigError(reason, filename=filename, line=line, col=col, key=key)


@attrs.define(slots=True)
class Token:
    """A value with the place it was defined (parse.go's `token`).

    `line`/`col` are those of the key when the value sits under a key, else of the
    value itself (array elements). `used_variable` is set on a token that a `$name`
    reference resolved to.
    """

    value: Any
    line: int
    col: int
    filename: Optional[str] = None
    used_variable: bool = False


def unwrap(v: Any) -> tuple[Optional[Token], Any]:
    """Split a possibly wrapped value into (token or None, plain value); opts.go's unwrapValue."""
    if isinstance(v, Token):
        return v, v.value
    return None, v


def strip_positions(v: Any) -> Any:
    """Return a copy of a pedantic parse tree with every `Token` replaced by its value."""
    if isinstance(v, Token):
        v = v.value
    if isinstance(v, dict):
        return {k: strip_positions(x) for k, x in v.items()}
    if isinstance(v, list):
        return [strip_positions(x) for x in v]
    return v


# ---- Go path semantics (path/filepath on Unix) -----------------------------------


def _go_clean(path: str) -> str:
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _go_dir(path: str) -> str:
    return _go_clean(path[: path.rfind("/") + 1])


def _go_join(directory: str, name: str) -> str:
    parts = [p for p in (directory, name) if p]
    return _go_clean("/".join(parts)) if parts else ""


def _os_error_text(op_path: str, exc: OSError) -> str:
    """Format an OSError as Go's *PathError does ("open x: no such file or directory")."""
    if isinstance(exc, IsADirectoryError):
        return f"read {op_path}: is a directory"
    text = exc.strerror or str(exc)
    return f"open {op_path}: {text[:1].lower()}{text[1:]}"


def read_text_file(path: str) -> str:
    """Read a config file as Go does: any bytes, invalid UTF-8 kept as surrogate escapes."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


# ---- the parser ------------------------------------------------------------------------


class _Parser:
    def __init__(
        self,
        text: str,
        filename: Optional[str],
        pedantic: bool,
        env: Mapping[str, str],
        read_file: Optional[ReadFile],
        env_refs: Optional[set[str]] = None,
        include_chain: tuple[str, ...] = (),
    ) -> None:
        self.mapping: dict[str, Any] = {}
        self.lx = Lexer(text)
        self.ctx: Any = None
        self.ctxs: list[Any] = []
        self.keys: list[str] = []
        self.ikeys: list[tuple[int, int]] = []
        self.filename = filename
        self.fp = filename or ""
        self.dir = _go_dir(self.fp)
        self.pedantic = pedantic
        self.env = env
        self.read_file = read_file
        self.env_refs: set[str] = set() if env_refs is None else env_refs
        self.include_chain = include_chain

    def error(self, reason: str, it: Optional[Item] = None) -> ConfigError:
        return ConfigError(
            reason,
            filename=self.filename,
            line=it.line if it else 0,
            col=it.pos if it else 0,
            key=".".join(self.keys) or None,
        )

    def run(self) -> dict[str, Any]:
        self._push_context(self.mapping)
        prev: Optional[Item] = None
        while True:
            it = self.lx.next_item()
            if it.type == ItemType.EOF:
                # A trailing '}' lexes as a key; allowing it is what makes JSON-like
                # configs wrapped in braces work.
                if prev is not None and prev.type == ItemType.KEY and prev.val != "}":
                    raise self.error(f"config is invalid ({self.fp}:{it.line}:{it.pos})", it)
                return self.mapping
            prev = it
            self._process_item(it)

    # -- stacks

    def _push_context(self, ctx: Any) -> None:
        self.ctxs.append(ctx)
        self.ctx = ctx

    def _pop_context(self) -> Any:
        last = self.ctxs.pop()
        self.ctx = self.ctxs[-1]
        return last

    def _pop_key(self) -> str:
        if not self.keys:
            raise self.error("BUG in parser, keys stack empty")
        return self.keys.pop()

    def _pop_item_key(self) -> tuple[int, int]:
        if not self.ikeys:
            raise self.error("BUG in parser, item keys stack empty")
        return self.ikeys.pop()

    def _set_value(self, val: Any) -> None:
        ctx = self.ctx
        if isinstance(ctx, list):
            ctx.append(val)
        elif isinstance(ctx, dict):
            key = self._pop_key()
            if self.pedantic:
                if isinstance(val, Token):
                    val.line, val.col = self._pop_item_key()
                    ctx[key] = val
            else:
                ctx[key] = val

    def _store(self, it: Item, v: Any) -> None:
        if self.pedantic:
            self._set_value(Token(v, it.line, it.pos, self.filename))
        else:
            self._set_value(v)

    # -- items

    def _process_item(self, it: Item) -> None:
        t = it.type
        if t == ItemType.ERROR:
            raise self.error(f"Parse error on line {it.line}: '{it.val}'", it)
        if t == ItemType.KEY:
            self.keys.append(it.val)
            if self.pedantic:
                self.ikeys.append((it.line, it.pos))
        elif t == ItemType.MAP_START:
            self._push_context({})
        elif t == ItemType.MAP_END or t == ItemType.ARRAY_END:
            self._store(it, self._pop_context())
        elif t == ItemType.ARRAY_START:
            self._push_context([])
        elif t == ItemType.STRING:
            self._store(it, it.val)
        elif t == ItemType.INTEGER:
            self._integer(it)
        elif t == ItemType.FLOAT:
            self._float(it)
        elif t == ItemType.BOOL:
            self._bool(it)
        elif t == ItemType.DATETIME:
            self._datetime(it)
        elif t == ItemType.VARIABLE:
            self._variable(it)
        elif t == ItemType.INCLUDE:
            self._include(it)

    def _integer(self, it: Item) -> None:
        val = it.val
        last = 0
        for ch in val:
            if not (ch.isdecimal() or ch == "-"):
                break
            last += 1
        digits = val[:last]
        body = digits[1:] if digits.startswith("-") else digits
        # strconv.ParseInt takes ASCII digits only; Python's int() would take any.
        if not body or not body.isascii() or not body.isdigit():
            raise self.error(f"expected integer, but got '{val}'", it)
        num = int(digits)
        if not _INT64_MIN <= num <= _INT64_MAX:
            raise self.error(f"integer '{val}' is out of the range", it)
        mult = SIZE_SUFFIXES.get(val[last:].strip().lower())
        if mult is not None:
            self._store(it, _wrap_int64(num * mult))

    def _float(self, it: Item) -> None:
        if not it.val.isascii():
            raise self.error(f"expected float, but got '{it.val}'", it)
        try:
            num = float(it.val)
        except ValueError:
            raise self.error(f"expected float, but got '{it.val}'", it) from None
        if num in (float("inf"), float("-inf")):
            raise self.error(f"float '{it.val}' is out of the range", it)
        self._store(it, num)

    def _bool(self, it: Item) -> None:
        word = it.val.lower()
        if word in ("true", "yes", "on"):
            self._store(it, True)
        elif word in ("false", "no", "off"):
            self._store(it, False)
        else:
            raise self.error(f"expected boolean value, but got '{it.val}'", it)

    def _datetime(self, it: Item) -> None:
        try:
            if not it.val.isascii():
                raise ValueError
            dt = datetime.strptime(it.val, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise self.error(f"expected Zulu formatted DateTime, but got '{it.val}'", it) from None
        self._store(it, dt.replace(tzinfo=timezone.utc))

    def _variable(self, it: Item) -> None:
        try:
            value, found = self._lookup_variable(it.val)
        except ConfigError as e:
            raise self.error(
                f"variable reference for '{it.val}' on line {it.line} could not be parsed: "
                f"{e.reason}",
                it,
            ) from None
        if not found:
            raise self.error(
                f"variable reference for '{it.val}' on line {it.line} can not be found", it
            )
        if self.pedantic:
            if isinstance(value, Token):
                value.used_variable = True
                value = value.value
            self._set_value(Token(value, it.line, it.pos, self.filename))
        else:
            self._set_value(value)

    def _lookup_variable(self, name: str) -> tuple[Any, bool]:
        if name.startswith(_BCRYPT_PREFIX):
            return "$" + name, True
        for ctx in reversed(self.ctxs):
            if isinstance(ctx, dict) and name in ctx:
                return ctx[name], True
        if name in self.env_refs:
            raise ConfigError(f"variable reference cycle for '{name}'")
        self.env_refs.add(name)
        try:
            raw = self.env.get(name)
            if raw is None:
                return None, False
            sub = _Parser(
                f"{_ENV_KEY}={raw}", None, False, self.env, self.read_file, self.env_refs
            )
            mapping = sub.run()
            return mapping.get(_ENV_KEY), _ENV_KEY in mapping
        finally:
            self.env_refs.discard(name)

    def _include(self, it: Item) -> None:
        path = _go_join(self.dir, it.val)
        prefix = f"error parsing include file '{it.val}', "
        if path in self.include_chain or len(self.include_chain) >= _MAX_INCLUDE_DEPTH:
            # Go recurses until its stack overflows; a message is kinder.
            raise self.error(prefix + f"include cycle through '{path}'", it)
        if self.read_file is None:
            raise self.error(prefix + "includes need a file reader (use parse_file)", it)
        try:
            text = self.read_file(path)
        except OSError as e:
            opened = _os_error_text(path, e)
            raise self.error(
                prefix + (opened if self.pedantic else f"error opening config file: {opened}"), it
            ) from None
        sub = _Parser(
            text,
            path,
            self.pedantic,
            self.env,
            self.read_file,
            include_chain=self.include_chain + (path,),
        )
        try:
            mapping = sub.run()
        except ConfigError as e:
            raise ConfigError(
                prefix + e.reason, filename=e.filename, line=e.line, col=e.col, key=e.key
            ) from None
        for k, v in mapping.items():
            self.keys.append(k)
            if self.pedantic and isinstance(v, Token):
                self.ikeys.append((v.line, v.col))
            self._set_value(v)


def _wrap_int64(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >> 63 else n


# ---- public entry points -------------------------------------------------------------------


def _parse(
    text: str,
    filename: Optional[str],
    pedantic: bool,
    env: Optional[Mapping[str, str]],
    read_file: Optional[ReadFile],
) -> dict[str, Any]:
    chain = (_go_clean(filename),) if filename else ()
    return _Parser(
        text,
        filename,
        pedantic,
        os.environ if env is None else env,
        read_file,
        include_chain=chain,
    ).run()


def parse(
    text: str,
    *,
    filename: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    read_file: Optional[ReadFile] = None,
) -> dict[str, Any]:
    """Parse config text into plain Python values (Go: `conf.Parse`).

    Args:
        text: the config source.
        filename: where the text came from; names it in errors and is the base
            directory of relative includes.
        env: the environment for `$VAR` lookups (default: `os.environ`).
        read_file: `path -> text` used for includes; without it an include is an error.

    Raises:
        ConfigError: on any lexing, parsing, variable or include failure.
    """
    return _parse(text, filename, False, env, read_file)


def parse_with_positions(
    text: str,
    *,
    filename: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    read_file: Optional[ReadFile] = None,
) -> dict[str, Any]:
    """Like `parse`, but every value is a `Token` (Go: `conf.ParseWithChecks`)."""
    return _parse(text, filename, True, env, read_file)


def _read_top(path: str, pedantic: bool) -> str:
    try:
        return read_text_file(path)
    except OSError as e:
        opened = _os_error_text(path, e)
        raise ConfigError(
            opened if pedantic else f"error opening config file: {opened}", filename=path
        ) from None


def parse_file(path: str, *, env: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """Read and parse a config file and its includes (Go: `conf.ParseFile`).

    Raises:
        ConfigError: the file or an include cannot be read or parsed.
    """
    return _parse(_read_top(path, False), path, False, env, read_text_file)


def parse_file_with_positions(
    path: str, *, env: Optional[Mapping[str, str]] = None
) -> dict[str, Any]:
    """Like `parse_file`, with `Token`-wrapped values (Go: `conf.ParseFileWithChecks`,
    which is what the server itself uses)."""
    return _parse(_read_top(path, True), path, True, env, read_text_file)
