"""Lexer tests: the cases of nats-server's conf/lex_test.go, same names, same items.

Items are (type, value, line, pos). As in Go's `expect`, checking stops at the first
EOF or ERROR item, so an expected EOF entry is never compared.
"""

import pytest

from natsx.config.lexer import Item, ItemType, Lexer

ERR = ItemType.ERROR
EOF = ItemType.EOF
KEY = ItemType.KEY
TXT = ItemType.TEXT
STR = ItemType.STRING
BOOL = ItemType.BOOL
INT = ItemType.INTEGER
FLT = ItemType.FLOAT
DT = ItemType.DATETIME
AS = ItemType.ARRAY_START
AE = ItemType.ARRAY_END
MS = ItemType.MAP_START
ME = ItemType.MAP_END
CS = ItemType.COMMENT_START
VAR = ItemType.VARIABLE
INC = ItemType.INCLUDE


def expect(text, items):
    lx = Lexer(text)
    for want in items:
        got = lx.next_item()
        if got.type == EOF:
            break
        assert got == Item(*want), f"lexing {text!r}"
        if got.type == ERR:
            break


def test_plain_value():
    expect("foo", [(KEY, "foo", 1, 0), (EOF, "", 1, 0)])


@pytest.mark.parametrize(
    "text,pos",
    [
        ('foo = "bar"', 7),
        ("foo = 'bar'", 7),
        ("foo='bar'", 5),
        ("foo='bar'\r\n", 5),
        ("foo=\t'bar'\t", 6),
    ],
)
def test_simple_key_string_values(text, pos):
    expect(text, [(KEY, "foo", 1, 0), (STR, "bar", 1, pos), (EOF, "", 1, 0)])


def test_complex_string_values():
    expect("foo = 'bar\\r\\n  \\t'", [(KEY, "foo", 1, 0), (STR, "bar\\r\\n  \\t", 1, 7)])


def test_string_starting_with_number():
    for text in ("foo = 3xyz", "foo = 3xyz,", "foo = 3xyz;"):
        expect(text, [(KEY, "foo", 1, 0), (STR, "3xyz", 1, 6), (EOF, "", 2, 0)])
    expect("\n        foo = 3xyz\n        ", [(KEY, "foo", 2, 9), (STR, "3xyz", 2, 15)])
    expect(
        "\n        map {\n          foo = 3xyz}\n        ",
        [(KEY, "map", 2, 9), (MS, "", 2, 14), (KEY, "foo", 3, 11), (STR, "3xyz", 3, 17),
         (ME, "", 3, 22), (EOF, "", 2, 0)],
    )
    expect(
        "\n        map {\n          foo = 3xyz;\n        }\n        ",
        [(KEY, "map", 2, 9), (MS, "", 2, 14), (KEY, "foo", 3, 11), (STR, "3xyz", 3, 17),
         (ME, "", 4, 10), (EOF, "", 2, 0)],
    )
    expect(
        "\n        map {\n          foo = 3xyz,\n          bar = 4wqs\n        }\n        ",
        [(KEY, "map", 2, 9), (MS, "", 2, 14), (KEY, "foo", 3, 11), (STR, "3xyz", 3, 17),
         (KEY, "bar", 4, 11), (STR, "4wqs", 4, 17), (ME, "", 5, 10), (EOF, "", 2, 0)],
    )


def test_binary_string():
    expect("foo = \\x65", [(KEY, "foo", 1, 0), (STR, "e", 1, 9)])


def test_binary_string_latin1():
    # Go holds the raw byte 0xE9; it comes back as that byte through surrogateescape.
    expect("foo = \\xe9", [(KEY, "foo", 1, 0), (STR, "\udce9", 1, 9)])


def test_binary_string_utf8_bytes_join_into_a_character():
    expect('foo = "\\xc3\\xa9"', [(KEY, "foo", 1, 0), (STR, "é", 1, 13)])


def test_simple_key_integer_values():
    expect("foo = 123", [(KEY, "foo", 1, 0), (INT, "123", 1, 6)])
    expect("foo=123", [(KEY, "foo", 1, 0), (INT, "123", 1, 4)])
    expect("foo=123\r\n", [(KEY, "foo", 1, 0), (INT, "123", 1, 4)])


def test_simple_key_negative_integer_values():
    expect("foo = -123", [(KEY, "foo", 1, 0), (INT, "-123", 1, 6)])
    expect("foo=-123", [(KEY, "foo", 1, 0), (INT, "-123", 1, 4)])
    expect("foo=-123\r\n", [(KEY, "foo", 1, 0), (INT, "-123", 1, 4)])


@pytest.mark.parametrize(
    "text,typ,val",
    [
        ("foo = 1k", INT, "1k"),
        ("foo = 1K", INT, "1K"),
        ("foo = 1m", INT, "1m"),
        ("foo = 1M", INT, "1M"),
        ("foo = 1g", INT, "1g"),
        ("foo = 1G", INT, "1G"),
        ("foo = 1MB", INT, "1MB"),
        ("foo = 1Gb", INT, "1Gb"),
        ("foo = -1m", INT, "-1m"),
        ("foo = -1GB ", INT, "-1GB"),
        ("foo = 1Ghz", STR, "1Ghz"),
        ("foo = 2Pie", STR, "2Pie"),
        ("foo = 3Mbs,", STR, "3Mbs"),
    ],
)
def test_convenient_integer_values(text, typ, val):
    expect(text, [(KEY, "foo", 1, 0), (typ, val, 1, 6), (EOF, "", 1, 0)])


def test_convenient_integer_values_then_non_ascii():
    expect(
        "foo = 4Gb, bar = 5Gø",
        [(KEY, "foo", 1, 0), (INT, "4Gb", 1, 6), (KEY, "bar", 1, 11), (STR, "5Gø", 1, 17)],
    )


def test_simple_key_float_values():
    expect("foo = 22.2", [(KEY, "foo", 1, 0), (FLT, "22.2", 1, 6)])
    expect("foo=22.2", [(KEY, "foo", 1, 0), (FLT, "22.2", 1, 4)])
    expect("foo=22.2\r\n", [(KEY, "foo", 1, 0), (FLT, "22.2", 1, 4)])


def test_bad_binary_string_ending_after_zero_hex_chars():
    expect(
        "foo = xyz\\x\n",
        [(KEY, "foo", 1, 0),
         (ERR, "Expected two hexadecimal digits after '\\x', but hit end of line", 2, 1)],
    )


def test_bad_binary_string_ending_after_one_hex_char():
    expect(
        "foo = xyz\\xF\n",
        [(KEY, "foo", 1, 0),
         (ERR, "Expected two hexadecimal digits after '\\x', but hit end of line", 2, 1)],
    )


def test_bad_binary_string_with_zero_hex_chars():
    expect(
        'foo = "[\\x]"',
        [(KEY, "foo", 1, 0),
         (ERR, "Expected two hexadecimal digits after '\\x', but got ']\"'", 1, 12)],
    )


def test_bad_binary_string_with_one_hex_char():
    expect(
        'foo = "[\\xe]"',
        [(KEY, "foo", 1, 0),
         (ERR, "Expected two hexadecimal digits after '\\x', but got 'e]'", 1, 12)],
    )


def test_bad_float_values():
    expect("foo = .2", [(KEY, "foo", 1, 0), (ERR, "Floats must start with a digit", 1, 7)])


def test_bad_key():
    expect(" :foo = 22", [(ERR, "Unexpected key separator ':'", 1, 1)])


def test_simple_key_bool_values():
    expect("foo = true", [(KEY, "foo", 1, 0), (BOOL, "true", 1, 6)])
    expect("foo=true", [(KEY, "foo", 1, 0), (BOOL, "true", 1, 4)])
    expect("foo=true\r\n", [(KEY, "foo", 1, 0), (BOOL, "true", 1, 4)])


def test_comments():
    for text in ("# This is a comment", "# This is a comment\r\n"):
        expect(text, [(CS, "", 1, 1), (TXT, " This is a comment", 1, 1)])
    expect("// This is a comment\r\n", [(CS, "", 1, 2), (TXT, " This is a comment", 1, 2)])


def test_top_values_with_comments():
    expect(
        "foo = 123 // This is a comment",
        [(KEY, "foo", 1, 0), (INT, "123", 1, 6), (CS, "", 1, 12),
         (TXT, " This is a comment", 1, 12)],
    )
    expect(
        "foo=123    # This is a comment",
        [(KEY, "foo", 1, 0), (INT, "123", 1, 4), (CS, "", 1, 12),
         (TXT, " This is a comment", 1, 12)],
    )


def test_raw_string():
    expect("foo = bar", [(KEY, "foo", 1, 0), (STR, "bar", 1, 6)])
    expect("foo = bar' ", [(KEY, "foo", 1, 0), (STR, "bar", 1, 6)])


def test_date_values():
    expect(
        "foo = 2016-05-04T18:53:41Z",
        [(KEY, "foo", 1, 0), (DT, "2016-05-04T18:53:41Z", 1, 6)],
    )


def test_variable_values():
    expect("foo = $bar", [(KEY, "foo", 1, 0), (VAR, "bar", 1, 7)])
    expect("foo =$bar", [(KEY, "foo", 1, 0), (VAR, "bar", 1, 6)])
    expect("foo $bar", [(KEY, "foo", 1, 0), (VAR, "bar", 1, 5)])


def test_arrays():
    expect(
        "foo = [1, 2, 3, 'bar']",
        [(KEY, "foo", 1, 0), (AS, "", 1, 7), (INT, "1", 1, 7), (INT, "2", 1, 10),
         (INT, "3", 1, 13), (STR, "bar", 1, 17), (AE, "", 1, 22)],
    )
    expect(
        "foo = [1,2,3,'bar']",
        [(KEY, "foo", 1, 0), (AS, "", 1, 7), (INT, "1", 1, 7), (INT, "2", 1, 9),
         (INT, "3", 1, 11), (STR, "bar", 1, 14), (AE, "", 1, 19)],
    )
    expect(
        "foo = [1, 2,3,'bar']",
        [(KEY, "foo", 1, 0), (AS, "", 1, 7), (INT, "1", 1, 7), (INT, "2", 1, 10),
         (INT, "3", 1, 12), (STR, "bar", 1, 15), (AE, "", 1, 20)],
    )


ML_ARRAY = """
# top level comment
foo = [
 1, # One
 2, // Two
 3 # Three
 'bar'     ,
 "bar"
]
"""


def test_multiline_arrays():
    expect(
        ML_ARRAY,
        [(CS, "", 2, 2), (TXT, " top level comment", 2, 2), (KEY, "foo", 3, 1),
         (AS, "", 3, 8), (INT, "1", 4, 2), (CS, "", 4, 6), (TXT, " One", 4, 6),
         (INT, "2", 5, 2), (CS, "", 5, 7), (TXT, " Two", 5, 7), (INT, "3", 6, 2),
         (CS, "", 6, 5), (TXT, " Three", 6, 5), (STR, "bar", 7, 3), (STR, "bar", 8, 3),
         (AE, "", 9, 2), (EOF, "", 9, 0)],
    )


ML_ARRAY_NO_SEP = """
# top level comment
foo = [
 1 // foo
 2
 3
 'bar'
 "bar"
]
"""


def test_multiline_arrays_no_sep():
    expect(
        ML_ARRAY_NO_SEP,
        [(CS, "", 2, 2), (TXT, " top level comment", 2, 2), (KEY, "foo", 3, 1),
         (AS, "", 3, 8), (INT, "1", 4, 2), (CS, "", 4, 6), (TXT, " foo", 4, 6),
         (INT, "2", 5, 2), (INT, "3", 6, 2), (STR, "bar", 7, 3), (STR, "bar", 8, 3),
         (AE, "", 9, 2)],
    )


def test_simple_map():
    expect(
        "foo = {ip='127.0.0.1', port = 4242}",
        [(KEY, "foo", 1, 0), (MS, "", 1, 7), (KEY, "ip", 1, 7), (STR, "127.0.0.1", 1, 11),
         (KEY, "port", 1, 23), (INT, "4242", 1, 30), (ME, "", 1, 35)],
    )


ML_MAP = """
foo = {
  ip = '127.0.0.1' # the IP
  port= 4242 // the port
}
"""


def test_multiline_map():
    expect(
        ML_MAP,
        [(KEY, "foo", 2, 1), (MS, "", 2, 8), (KEY, "ip", 3, 3), (STR, "127.0.0.1", 3, 9),
         (CS, "", 3, 21), (TXT, " the IP", 3, 21), (KEY, "port", 4, 3),
         (INT, "4242", 4, 9), (CS, "", 4, 16), (TXT, " the port", 4, 16), (ME, "", 5, 2)],
    )


NESTED_MAP = """
foo = {
  host = {
    ip = '127.0.0.1'
    port= 4242
  }
}
"""


def test_nested_maps():
    expect(
        NESTED_MAP,
        [(KEY, "foo", 2, 1), (MS, "", 2, 8), (KEY, "host", 3, 3), (MS, "", 3, 11),
         (KEY, "ip", 4, 5), (STR, "127.0.0.1", 4, 11), (KEY, "port", 5, 5),
         (INT, "4242", 5, 11), (ME, "", 6, 4), (ME, "", 7, 2)],
    )


def test_quoted_keys():
    expect("foo : 123", [(KEY, "foo", 1, 0), (INT, "123", 1, 6)])
    expect("'foo' : 123", [(KEY, "foo", 1, 1), (INT, "123", 1, 8)])
    expect('"foo" : 123', [(KEY, "foo", 1, 1), (INT, "123", 1, 8)])


def test_quoted_keys_with_space():
    expect("' foo' : 123", [(KEY, " foo", 1, 1), (INT, "123", 1, 9)])
    expect('" foo" : 123', [(KEY, " foo", 1, 1), (INT, "123", 1, 9)])


def test_colon_key_sep():
    expect("foo : 123", [(KEY, "foo", 1, 0), (INT, "123", 1, 6)])
    expect("foo:123", [(KEY, "foo", 1, 0), (INT, "123", 1, 4)])
    expect("foo: 123", [(KEY, "foo", 1, 0), (INT, "123", 1, 5)])
    expect("foo:  123\r\n", [(KEY, "foo", 1, 0), (INT, "123", 1, 6)])


def test_whitespace_key_sep():
    expect("foo 123", [(KEY, "foo", 1, 0), (INT, "123", 1, 4)])
    expect("foo\t123", [(KEY, "foo", 1, 0), (INT, "123", 1, 4)])
    expect("foo\t\t123\r\n", [(KEY, "foo", 1, 0), (INT, "123", 1, 5)])


ESC_STRING = """
foo  = \\t
bar  = \\r
baz  = \\n
q    = \\"
bs   = \\\\
"""


def test_escaped_string():
    expect(
        ESC_STRING,
        [(KEY, "foo", 2, 1), (STR, "\t", 2, 9), (KEY, "bar", 3, 1), (STR, "\r", 3, 9),
         (KEY, "baz", 4, 1), (STR, "\n", 4, 9), (KEY, "q", 5, 1), (STR, '"', 5, 9),
         (KEY, "bs", 6, 1), (STR, "\\", 6, 9)],
    )


@pytest.mark.parametrize(
    "name,text,val,pos",
    [
        ("ES", 'foo = "\\\\end"', "\\end", 8),
        ("SE", 'foo = "start\\\\"', "start\\", 8),
        ("EE", "foo = \\x45\\x71", "Eq", 12),
        ("SEE", "foo = start\\x45\\x71", "startEq", 12),
        ("SES", "foo = start\\x7Cend", "start|end", 9),
        ("EES", "foo = \\x3c\\x3eend", "<>end", 12),
        ("ESE", "foo = \\x3cmiddle\\x3E", "<middle>", 12),
    ],
)
def test_compound_string(name, text, val, pos):
    expect(text, [(KEY, "foo", 1, 0), (STR, val, 1, pos)])


def test_bad_string_escape():
    expect(
        "foo = \\y",
        [(KEY, "foo", 1, 0),
         (ERR, "Invalid escape character 'y'. Only the following escape characters are "
               'allowed: \\xXX, \\t, \\n, \\r, \\", \\\\.', 1, 8)],
    )


def test_non_bool():
    expect("foo = \\\\true", [(KEY, "foo", 1, 0), (STR, "\\true", 1, 7)])


def test_non_variable():
    expect("foo = \\\\$var", [(KEY, "foo", 1, 0), (STR, "\\$var", 1, 7)])


def test_empty_string_dq():
    expect('foo = ""', [(KEY, "foo", 1, 0), (STR, "", 1, 7)])


def test_empty_string_sq():
    expect("foo = ''", [(KEY, "foo", 1, 0), (STR, "", 1, 7)])


NESTED_WHITESPACE_MAP = """
foo  {
  host  {
    ip = '127.0.0.1'
    port= 4242
  }
}
"""


def test_nested_whitespace_maps():
    expect(
        NESTED_WHITESPACE_MAP,
        [(KEY, "foo", 2, 1), (MS, "", 2, 7), (KEY, "host", 3, 3), (MS, "", 3, 10),
         (KEY, "ip", 4, 5), (STR, "127.0.0.1", 4, 11), (KEY, "port", 5, 5),
         (INT, "4242", 5, 11), (ME, "", 6, 4), (ME, "", 7, 2)],
    )


SEMICOLONS = """
foo = 123;
bar = 'baz';
baz = 'boo'
map {
 id = 1;
}
"""


def test_optional_semicolons():
    expect(
        SEMICOLONS,
        [(KEY, "foo", 2, 1), (INT, "123", 2, 7), (KEY, "bar", 3, 1), (STR, "baz", 3, 8),
         (KEY, "baz", 4, 1), (STR, "boo", 4, 8), (KEY, "map", 5, 1), (MS, "", 5, 6),
         (KEY, "id", 6, 2), (INT, "1", 6, 7), (ME, "", 7, 2)],
    )


def test_semicolon_chaining():
    expect(
        "foo='1'; bar=2.2; baz=true;",
        [(KEY, "foo", 1, 0), (STR, "1", 1, 5), (KEY, "bar", 1, 9), (FLT, "2.2", 1, 13),
         (KEY, "baz", 1, 18), (BOOL, "true", 1, 22)],
    )


NOQUOTES = """
foo = 123
bar = baz
baz=boo
map {
 id:one
 id2 : onetwo
}
t true
f false
tstr "true"
tkey = two
fkey = five # This should be a string
"""


def test_non_quoted_strings():
    expect(
        NOQUOTES,
        [(KEY, "foo", 2, 1), (INT, "123", 2, 7), (KEY, "bar", 3, 1), (STR, "baz", 3, 7),
         (KEY, "baz", 4, 1), (STR, "boo", 4, 5), (KEY, "map", 5, 1), (MS, "", 5, 6),
         (KEY, "id", 6, 2), (STR, "one", 6, 5), (KEY, "id2", 7, 2), (STR, "onetwo", 7, 8),
         (ME, "", 8, 2), (KEY, "t", 9, 1), (BOOL, "true", 9, 3), (KEY, "f", 10, 1),
         (BOOL, "false", 10, 3), (KEY, "tstr", 11, 1), (STR, "true", 11, 7),
         (KEY, "tkey", 12, 1), (STR, "two", 12, 8), (KEY, "fkey", 13, 1),
         (STR, "five", 13, 8), (CS, "", 13, 14), (TXT, " This should be a string", 13, 14)],
    )


def test_dangling_quoted_string():
    expect(
        '\nlisten: "localhost:4242\n\nhttp: localhost:8222\n',
        [(KEY, "listen", 2, 1), (ERR, "Unexpected EOF.", 5, 1)],
    )


def test_key_dangling_quoted_string():
    expect(
        '\nfoo = "\nlisten: "\n\nhttp: localhost:8222\n\n"\n',
        [(KEY, "foo", 2, 1), (STR, "\nlisten: ", 3, 8), (KEY, "http", 5, 1),
         (STR, "localhost:8222", 5, 7), (ERR, "Unexpected EOF.", 8, 1)],
    )


def test_dangling_single_quoted_string():
    expect(
        "\nlisten: 'localhost:4242\n\nhttp: localhost:8222\n",
        [(KEY, "listen", 2, 1), (ERR, "Unexpected EOF.", 5, 1)],
    )


def test_key_dangling_single_quoted_string():
    expect(
        "\nfoo = '\nlisten: '\n\nhttp: localhost:8222\n\n'\n",
        [(KEY, "foo", 2, 1), (STR, "\nlisten: ", 3, 8), (KEY, "http", 5, 1),
         (STR, "localhost:8222", 5, 7), (ERR, "Unexpected EOF.", 8, 1)],
    )


def test_map_dangling_bracket():
    expect(
        "\nlisten = 4222\n\ncluster = {\n\n  foo = bar\n\n",
        [(KEY, "listen", 2, 1), (INT, "4222", 2, 10), (KEY, "cluster", 4, 1),
         (MS, "", 4, 12), (KEY, "foo", 6, 3), (STR, "bar", 6, 9),
         (ERR, "Unexpected EOF processing map.", 8, 1)],
    )


def test_block_dangling_parens():
    expect(
        "\nlisten = 4222\n\nquote = (\n\n  foo = bar\n\n",
        [(KEY, "listen", 2, 1), (INT, "4222", 2, 10), (KEY, "quote", 4, 1),
         (ERR, "Unexpected EOF processing block.", 8, 1)],
    )


def test_map_quoted_keys():
    for text in ("foo = {'bar' = 4242}", 'foo = {"bar" = 4242}'):
        expect(
            text,
            [(KEY, "foo", 1, 0), (MS, "", 1, 7), (KEY, "bar", 1, 8), (INT, "4242", 1, 15),
             (ME, "", 1, 20)],
        )


def test_special_chars_map_quoted_keys():
    for text in ("foo = {'bar-1.2.3' = { port:4242 }}", 'foo = {"bar-1.2.3" = { port:4242 }}'):
        expect(
            text,
            [(KEY, "foo", 1, 0), (MS, "", 1, 7), (KEY, "bar-1.2.3", 1, 8), (MS, "", 1, 22),
             (KEY, "port", 1, 23), (INT, "4242", 1, 28), (ME, "", 1, 34), (ME, "", 1, 35)],
        )


def test_double_nested_maps_new_lines():
    expect(
        '\nsystems {\n  allinone {\n    description: "This is a description."\n  }\n}\n',
        [(KEY, "systems", 2, 1), (MS, "", 2, 10), (KEY, "allinone", 3, 3), (MS, "", 3, 13),
         (KEY, "description", 4, 5), (STR, "This is a description.", 4, 19),
         (ME, "", 5, 4), (ME, "", 6, 2)],
    )


BLOCK_EXAMPLE = "\nnumbers (\n1234567890\n)\n"


def test_block_string():
    expect(BLOCK_EXAMPLE, [(KEY, "numbers", 2, 1), (STR, "\n1234567890\n", 4, 10)])


def test_block_string_eof():
    # A NUL is end-of-input to the lexer, as in Go.
    expect(BLOCK_EXAMPLE[:-1] + "\0", [(KEY, "numbers", 2, 1), (STR, "\n1234567890\n", 4, 10)])


def test_block_string_multi_line():
    expect(
        "\nnumbers (\n  12(34)56\n  (\n    7890\n  )\n)\n",
        [(KEY, "numbers", 2, 1), (STR, "\n  12(34)56\n  (\n    7890\n  )\n", 7, 10)],
    )


def test_block_string_at_real_eof_keeps_the_paren():
    # lex.go backs up over a zero-width EOF rune, so the ')' stays in the value.
    expect("numbers (\n12\n)", [(KEY, "numbers", 1, 0), (STR, "\n12\n)", 3, 9)])


@pytest.mark.parametrize(
    "text,typ,val,pos",
    [
        ("listen: 127.0.0.1:4222", STR, "127.0.0.1:4222", 8),
        ("listen: 127.0.0.1", STR, "127.0.0.1", 8),
        ("listen: apcera.me:80", STR, "apcera.me:80", 8),
        ("listen: nats.io:-1", STR, "nats.io:-1", 8),
        ("listen: -1", INT, "-1", 8),
        ("listen: :-1", STR, ":-1", 8),
        ("listen = :80", STR, ":80", 9),
    ],
)
def test_unquoted_ip_addr(text, typ, val, pos):
    expect(text, [(KEY, "listen", 1, 0), (typ, val, 1, pos)])


def test_unquoted_ip_addr_array():
    expect(
        "listen = [localhost:4222, localhost:4333]",
        [(KEY, "listen", 1, 0), (AS, "", 1, 10), (STR, "localhost:4222", 1, 10),
         (STR, "localhost:4333", 1, 26), (AE, "", 1, 41)],
    )


ARRAY_OF_MAPS = """
authorization {
    users = [
      {user: alice, password: foo}
      {user: bob,   password: bar}
    ]
    timeout: 0.5
}
"""


def test_array_of_maps():
    expect(
        ARRAY_OF_MAPS,
        [(KEY, "authorization", 2, 1), (MS, "", 2, 16), (KEY, "users", 3, 5),
         (AS, "", 3, 14), (MS, "", 4, 8), (KEY, "user", 4, 8), (STR, "alice", 4, 14),
         (KEY, "password", 4, 21), (STR, "foo", 4, 31), (ME, "", 4, 35), (MS, "", 5, 8),
         (KEY, "user", 5, 8), (STR, "bob", 5, 14), (KEY, "password", 5, 21),
         (STR, "bar", 5, 31), (ME, "", 5, 35), (AE, "", 6, 6), (KEY, "timeout", 7, 5),
         (FLT, "0.5", 7, 14), (ME, "", 8, 2)],
    )


def test_include():
    expect('include "users.conf"', [(INC, "users.conf", 1, 9)])
    expect("include 'users.conf'", [(INC, "users.conf", 1, 9)])
    expect("include users.conf", [(INC, "users.conf", 1, 8)])


@pytest.mark.parametrize(
    "text,pos,end",
    [
        ("foo { include users.conf }", 14, 26),
        ("foo {include users.conf}", 13, 24),
        ("foo { include 'users.conf' }", 15, 28),
        ('foo { include "users.conf"}', 15, 27),
    ],
)
def test_map_include(text, pos, end):
    expect(text, [(KEY, "foo", 1, 0), (MS, "", 1, 5), (INC, "users.conf", 1, pos), (ME, "", 1, end)])


JSON_CASES = [
    (
        "\n                        {\n                          \"http_port\": 8223\n"
        "                        }\n                        ",
        [(KEY, "http_port", 3, 28), (INT, "8223", 3, 40), (KEY, "}", 4, 25)],
    ),
    (
        '{"http_port": 8224,"port": 4224}\n                        ',
        [(KEY, "http_port", 1, 2), (INT, "8224", 1, 14), (KEY, "port", 1, 20),
         (INT, "4224", 1, 27), (EOF, "", 0, 0)],
    ),
    (
        '{"http_port": 8225,"port": 4225\n                        }\n                        ',
        [(KEY, "http_port", 1, 2), (INT, "8225", 1, 14), (KEY, "port", 1, 20),
         (INT, "4225", 1, 27), (KEY, "}", 2, 25)],
    ),
    (
        '{"http_port": 8227,"port": 4227,"write_deadline": "1h","cluster": {"port": 6222,'
        '"routes": ["nats://127.0.0.1:4222","nats://127.0.0.1:4223","nats://127.0.0.1:4224"]}}\n'
        "                        ",
        [(KEY, "http_port", 1, 2), (INT, "8227", 1, 14), (KEY, "port", 1, 20),
         (INT, "4227", 1, 27), (KEY, "write_deadline", 1, 33), (STR, "1h", 1, 51),
         (KEY, "cluster", 1, 56), (MS, "", 1, 67), (KEY, "port", 1, 68),
         (INT, "6222", 1, 75), (KEY, "routes", 1, 81), (AS, "", 1, 91),
         (STR, "nats://127.0.0.1:4222", 1, 92), (STR, "nats://127.0.0.1:4223", 1, 116),
         (STR, "nats://127.0.0.1:4224", 1, 140), (AE, "", 1, 163), (ME, "", 1, 164),
         (EOF, "", 0, 0)],
    ),
    (
        '{\n                          "jetstream": {\n                            "store_dir": '
        '"/tmp/nats"\n                            "max_mem": 1000000,\n                          },'
        '\n                          "port": 4222,\n                          "server_name": '
        '"nats1"\n                        }\n                        ',
        [(KEY, "jetstream", 2, 28), (MS, "", 2, 41), (KEY, "store_dir", 3, 30),
         (STR, "/tmp/nats", 3, 43), (KEY, "max_mem", 4, 30), (INT, "1000000", 4, 40),
         (ME, "", 5, 28), (KEY, "port", 6, 28), (INT, "4222", 6, 35),
         (KEY, "server_name", 7, 28), (STR, "nats1", 7, 43), (KEY, "}", 8, 25)],
    ),
]


@pytest.mark.parametrize("text,items", JSON_CASES)
def test_json_compat(text, items):
    expect(text, items)


# ---- corners of lex.go that the tests above do not reach ------------------------------


def test_integer_before_array_end_lexes_as_a_string():
    # lexNumberOrDateOrStringOrIP does not stop at ']', so Go reads `[1]` as "1]".
    expect("a = [1]", [(KEY, "a", 1, 0), (AS, "", 1, 5), (STR, "1]", 1, 5)])


def test_short_year_is_an_error():
    expect("d = 12-01", [(KEY, "d", 1, 0), (ERR, "All ISO8601 dates must be in full Zulu form.", 1, 7)])


def test_number_suffix_followed_by_digit_ends_the_integer():
    expect("a = 1k5", [(KEY, "a", 1, 0), (INT, "1k", 1, 4),
                       (ERR, "Expected a top-level value to end with a new line, comment or EOF, "
                             "but got '5' instead.", 1, 7)])


def test_positions_count_utf8_bytes_like_go():
    expect("é = 1; b = 2", [(KEY, "é", 1, 0), (INT, "1", 1, 5), (KEY, "b", 1, 8), (INT, "2", 1, 12)])


def test_map_value_terminator_error():
    expect("a = {b = 1 c}", [(KEY, "a", 1, 0), (MS, "", 1, 5), (KEY, "b", 1, 5), (INT, "1", 1, 9),
                             (ERR, 'Expected a map value terminator "," or a map terminator "}", '
                                   "but got 'c' instead.", 1, 12)])


def test_error_message_shows_newline_escaped():
    expect("d = 2016-\n", [(KEY, "d", 1, 0),
                           (ERR, "Expected digit in ISO8601 datetime, but found '\\n' instead.", 2, 1)])


def test_include_of_a_number_is_an_error():
    expect("include 5", [(ERR, "Expected include value but found start of a number", 1, 9)])
