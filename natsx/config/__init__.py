"""The NATS config file language: the lexer and parser of the Go server's `conf`
package, a writer for the same language, and the value converters of opts.go.

`parse_file_with_positions` is what the server uses (Go's `ParseFileWithChecks`):
values come wrapped in `Token`s so the option layer can report `file:line:col` of a
bad key. `parse` / `parse_file` give plain values. Keys keep their case; the option
layer lower-cases when it matches them. A repeated key keeps its last value.
"""

from .lexer import Item, ItemType, lex
from .parser import (
    ConfigError,
    Token,
    parse,
    parse_file,
    parse_file_with_positions,
    parse_with_positions,
    strip_positions,
    unwrap,
)
from .values import (
    get_storage_size,
    go_type_name,
    parse_bool,
    parse_duration,
    parse_go_duration,
    parse_size,
)
from .writer import dumps

__all__ = [
    "ConfigError",
    "Item",
    "ItemType",
    "Token",
    "dumps",
    "get_storage_size",
    "go_type_name",
    "lex",
    "parse",
    "parse_bool",
    "parse_duration",
    "parse_file",
    "parse_file_with_positions",
    "parse_go_duration",
    "parse_size",
    "parse_with_positions",
    "strip_positions",
    "unwrap",
]
