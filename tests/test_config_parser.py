"""Parser, writer and converter tests.

The first part ports nats-server's conf/parse_test.go (same test names); the rest
covers what natsx adds or relies on: error locations, includes, variable scoping,
the option-layer converters, `dumps` and a round trip through it.
"""

import importlib.util
import io
import os
import pickle
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsx.config import (
    ConfigError,
    Token,
    dumps,
    get_storage_size,
    go_type_name,
    parse,
    parse_bool,
    parse_duration,
    parse_file,
    parse_file_with_positions,
    parse_go_duration,
    parse_size,
    parse_with_positions,
    strip_positions,
    unwrap,
)
from natsx.config.parser import read_text_file

CONFIGS = Path(__file__).parent / "configs"
TOOLS = Path(__file__).parent / "tools"


def same(a, b):
    """Equality that tells 1, 1.0 and True apart, as Go's reflect.DeepEqual does."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def check(text, expected, env=None):
    """parse_test.go `test`: plain and pedantic parses both give `expected`."""
    got = parse(text, env=env or {})
    assert same(got, expected), got
    pedantic = parse_with_positions(text, env=env or {})
    assert same(strip_positions(pedantic), expected), pedantic


def write(directory, files):
    for name, body in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)


# ---- conf/parse_test.go ------------------------------------------------------------------


def test_simple_top_level():
    check("foo='1'; bar=2.2; baz=true; boo=22", {"foo": "1", "bar": 2.2, "baz": True, "boo": 22})


@pytest.mark.parametrize("text", ["foo=true", "foo=TRUE", "foo=yes", "foo=on", "foo=On"])
def test_bools(text):
    check(text, {"foo": True})


@pytest.mark.parametrize("text", ["foo=false", "foo=FALSE", "foo=no", "foo=off", "foo=OFF"])
def test_bools_false(text):
    check(text, {"foo": False})


def test_simple_variable():
    check("\n  index = 22\n  foo = $index\n", {"index": 22, "foo": 22})


def test_nested_variable():
    text = "\n  index = 22\n  nest {\n    index = 11\n    foo = $index\n  }\n  bar = $index\n"
    check(text, {"index": 22, "nest": {"index": 11, "foo": 11}, "bar": 22})


def test_missing_variable():
    with pytest.raises(ConfigError) as e:
        parse("foo=$index", env={})
    assert e.value.reason.startswith("variable reference")


def test_env_variable():
    check("foo = $__UNIQ22__", {"foo": 22}, env={"__UNIQ22__": "22"})


def test_env_variable_from_os_environ(monkeypatch):
    monkeypatch.setenv("__UNIQ22__", "22")
    assert same(parse("foo = $__UNIQ22__"), {"foo": 22})


def test_env_variable_string():
    check("foo = $__UNIQ22__", {"foo": "xyz"}, env={"__UNIQ22__": "xyz"})


def test_env_variable_string_starting_with_number():
    # The Go test parses the unformatted "$%s", which is not a variable name in the env.
    with pytest.raises(ConfigError):
        parse("foo = $%s", env={"__UNIQ22__": "3xyz"})
    check("foo = $__UNIQ22__", {"foo": "3xyz"}, env={"__UNIQ22__": "3xyz"})


def test_env_variable_string_starting_with_number_and_size_unit():
    check("foo = $__UNIQ22__", {"foo": "3Gyz"}, env={"__UNIQ22__": "3Gyz"})


def test_env_variable_string_starting_with_number_using_quotes():
    check("foo = $__UNIQ22__", {"foo": "3xyz"}, env={"__UNIQ22__": "'3xyz'"})


def test_bcrypt_variable():
    check("password: $2a$11$ooo", {"password": "$2a$11$ooo"})


EASYNUM = """
k = 8k
kb = 4kb
ki = 3ki
kib = 4ki
m = 1m
mb = 2MB
mi = 2Mi
mib = 64MiB
g = 2g
gb = 22GB
gi = 22Gi
gib = 22GiB
tb = 22TB
ti = 22Ti
tib = 22TiB
pb = 22PB
pi = 22Pi
pib = 22PiB
"""


def test_convenient_numbers():
    k, m, g = 1024, 1024**2, 1024**3
    check(
        EASYNUM,
        {"k": 8000, "kb": 4 * k, "ki": 3 * k, "kib": 4 * k, "m": 1000**2, "mb": 2 * m,
         "mi": 2 * m, "mib": 64 * m, "g": 2 * 1000**3, "gb": 22 * g, "gi": 22 * g,
         "gib": 22 * g, "tb": 22 * 1024**4, "ti": 22 * 1024**4, "tib": 22 * 1024**4,
         "pb": 22 * 1024**5, "pi": 22 * 1024**5, "pib": 22 * 1024**5},
    )


def test_parse_file_with_checks_digest_preserves_config_key_used_as_variable(tmp_path):
    conf = tmp_path / "nats.conf"
    conf.write_text("\n\t\tport = 4222\n\t\tmonitor_port = $port\n\t")
    m = parse_file_with_positions(str(conf))
    assert "port" in m
    assert m["port"].used_variable and not m["monitor_port"].used_variable


SAMPLE1 = """
foo  {
  host {
    ip   = '127.0.0.1'
    port = 4242
  }
  servers = [ "a.com", "b.com", "c.com"]
}
"""


def test_sample1():
    check(SAMPLE1, {"foo": {"host": {"ip": "127.0.0.1", "port": 4242},
                            "servers": ["a.com", "b.com", "c.com"]}})


CLUSTER = """
cluster {
  port: 4244

  authorization {
    user: route_user
    password: top_secret
    timeout: 1
  }

  # Routes are actively solicited and connected to from this server.
  # Other servers can connect to us if they supply the correct credentials
  # in their routes definitions from above.

  // Test both styles of comments

  routes = [
    nats-route://foo:bar@apcera.me:4245
    nats-route://foo:bar@apcera.me:4246
  ]
}
"""


def test_sample2():
    check(CLUSTER, {"cluster": {
        "port": 4244,
        "authorization": {"user": "route_user", "password": "top_secret", "timeout": 1},
        "routes": ["nats-route://foo:bar@apcera.me:4245", "nats-route://foo:bar@apcera.me:4246"],
    }})


def test_sample3():
    text = "\nfoo  {\n  expr = '(true == \"false\")'\n  text = 'This is a multi-line\ntext block.'\n}\n"
    check(text, {"foo": {"expr": '(true == "false")', "text": "This is a multi-line\ntext block."}})


def test_sample4():
    check("\n  array [\n    { abc: 123 }\n    { xyz: \"word\" }\n  ]\n",
          {"array": [{"abc": 123}, {"xyz": "word"}]})


def test_sample5():
    check("\n  now = 2016-05-04T18:53:41Z\n  gmt = false\n\n",
          {"now": datetime(2016, 5, 4, 18, 53, 41, tzinfo=timezone.utc), "gmt": False})


def test_includes():
    m = parse_file(str(CONFIGS / "main.conf"), env={})
    pw = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
    assert same(m["authorization"], {
        "ALICE_PASS": pw,
        "BOB_PASS": "s3cr3t",
        "users": [
            {"user": "alice", "password": pw,
             "permissions": {"publish": ["orders.>", "audit"], "subscribe": ">"}},
            {"user": "bob", "password": "s3cr3t"},
        ],
        "timeout": 0.5,
    })
    assert m["no_auth_user"] == "alice"
    assert same(m["max_payload"], 1024 * 1024) and same(m["max_pending"], 64 * 1024)
    assert same(m["jetstream"]["max_memory_store"], 1_000_000_000)
    assert same(m["jetstream"]["max_file_store"], 10 * 1024**3)
    assert m["cluster"]["routes"] == ["nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"]
    assert m["ping_interval"] == "2m" and m["debug"] is True and m["logtime"] is True


def test_include_variables_with_checks():
    m = parse_file_with_positions(str(CONFIGS / "main.conf"), env={})
    auth = m["authorization"]
    assert (auth.line, auth.col) == (17, 1)
    alice = auth.value["ALICE_PASS"]
    assert (alice.line, alice.col, alice.used_variable) == (2, 1, True)
    assert alice.filename == str(CONFIGS / "includes" / "passwords.conf")
    bob = auth.value["BOB_PASS"]
    assert (bob.line, bob.col, bob.value) == (3, 1, "s3cr3t")
    # A value in an array keeps its own position, and a map's own position is where
    # it closes (parse.go stores it on the map-end item); under a key it takes the key's.
    first_user = auth.value["users"].value[0]
    assert (first_user.line, first_user.col) == (5, 102)
    assert first_user.value["password"].line == 5
    assert m["no_auth_user"].filename == str(CONFIGS / "main.conf")


@pytest.mark.parametrize("text", ["A@@Føøøø?˛ø:{øøøø˙˙", 'include "9/�'])
def test_parser_no_infinite_loop(text):
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert "Unexpected EOF" in str(e.value)


@pytest.mark.parametrize(
    "text,err",
    [
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "config is invalid (:1:41)"),
        ("              aaaaaaaaaaaaaaaaaaaaaaaaaaa", "config is invalid (:1:41)"),
        ("     aaaaaaaaaaaaaaaaaaaaaaaaaaa         ", "config is invalid (:1:41)"),
        ("\n          \t\t# with comments and no spaces to create key values\n         \t\t"
         "# is also an invalid config.\n         \t\taaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
         "                        ", "config is invalid (:5:25)"),
        ("\n                        a,a,a,a,a,a,a,a,a,a,a\n                        ",
         "config is invalid (:3:25)"),
    ],
)
def test_parse_with_no_values_are_invalid(text, err):
    with pytest.raises(ConfigError) as e:
        parse_with_positions(text)
    assert err in str(e.value)


@pytest.mark.parametrize(
    "text",
    ["", "\n\n\n                        ",
     "\n                        # just comments with no values\n                        # is still valid.\n"],
)
def test_parse_with_no_values_empty_configs_are_valid(text):
    assert parse_with_positions(text) == {}


@pytest.mark.parametrize(
    "text",
    ["{}",
     "\n{\n# comments in the body\n}\n",
     # A stray closing brace lexes as a key; Go allows it for JSON-like configs.
     "\naccounts { users = [{}]}\n}\n",
     "{\n  accounts { users = [{}]}\n}\n"],
)
def test_parse_with_trailing_brackets_are_valid(text):
    parse_with_positions(text)


@pytest.mark.parametrize(
    "includes,err,linepos",
    [
        ({"foo.conf": "", "quux.conf": "?????????????"},
         "error parsing include file 'quux.conf', config is invalid", "quux.conf:1:1"),
        ({"foo.conf": "", "bar.conf": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
          "quux.conf": "\n   # just some comments,\n   # and no key values also ok.\n"},
         "error parsing include file 'bar.conf', config is invalid", "bar.conf:1:34"),
    ],
)
def test_parse_with_no_values_includes(tmp_path, includes, err, linepos):
    main = (
        "# includes\n\t\t\taccounts {\n  foo { include 'foo.conf'}\n"
        + ("  bar { users = [{user = \"bar\"}] }\n" if "bar.conf" not in includes
           else "  bar { include 'bar.conf'}\n")
        + "  quux { include 'quux.conf'}\n}\n"
    )
    write(tmp_path, {"nats.conf": main, **includes})
    with pytest.raises(ConfigError) as e:
        parse_file_with_positions(str(tmp_path / "nats.conf"))
    assert err in str(e.value) and linepos in str(e.value)


JSON_NESTED = """
{
  "http_port": 8227,
  "port": 4227,
  "write_deadline": "1h",
  "cluster": {
    "port": 6222,
    "routes": [
      "nats://127.0.0.1:4222",
      "nats://127.0.0.1:4223",
      "nats://127.0.0.1:4224"
    ]
  }
}
"""


@pytest.mark.parametrize(
    "text,includes,expected",
    [
        (JSON_NESTED, {}, {
            "http_port": 8227, "port": 4227, "write_deadline": "1h",
            "cluster": {"port": 6222, "routes": ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223",
                                                 "nats://127.0.0.1:4224"]}}),
        ('{\n "jetstream": {\n   "store_dir": "/tmp/nats"\n   "max_mem": 1000000,\n },\n'
         ' "port": 4222,\n "server_name": "nats1"\n}\n', {},
         {"jetstream": {"store_dir": "/tmp/nats", "max_mem": 1_000_000}, "port": 4222,
          "server_name": "nats1"}),
        ("{}", {}, {}),
        ("\n{\n}\n", {}, {}),
        ("\naccounts {\n  foo  { include 'foo.json'  }\n  bar  { include 'bar.json'  }\n"
         "  quux { include 'quux.json' }\n}\n",
         {"foo.json": '{ "users": [ {"user": "foo"} ] }',
          "bar.json": '{\n  "users": [ {"user": "bar"} ]\n}',
          "quux.json": "{}"},
         {"accounts": {"foo": {"users": [{"user": "foo"}]}, "bar": {"users": [{"user": "bar"}]},
                       "quux": {}}}),
    ],
)
def test_json_parse_compat(tmp_path, text, includes, expected):
    write(tmp_path, {"nats.conf": text, **includes})
    assert same(parse_file(str(tmp_path / "nats.conf")), expected)


@pytest.mark.parametrize(
    "text",
    ["{ listen: 0.0.0.0:4222 }",
     "{\n\t\t\t\tlisten: 0.0.0.0:4222\n\t\t\t }",
     "\n\t\t\t{\n\t\t\t\tlisten: 0.0.0.0:4222\n\t\t\t}\n\t\t\t# wibble\n\t\t\t",
     "\n\t\t\t{\n\t\t\t\t{\n\t\t\t\t\tlisten: 0.0.0.0:4222 // random comment\n\t\t\t\t}\n"
     "\t\t\t\t# wibble1\n\t\t\t}\n\t\t\t# wibble2\n\t\t\t"],
)
def test_blocks(text):
    assert parse(text) == {"listen": "0.0.0.0:4222"}


def test_blocks_top_line_values_in_block_scope():
    text = ('\n{\n  "debug":              False\n  "prof_port":          8221\n'
            '  "server_name":        "aws-useast2-natscj1-1"\n}\n')
    assert same(parse(text), {"debug": False, "prof_port": 8221, "server_name": "aws-useast2-natscj1-1"})


def test_blocks_comment_in_block_scope_after_value_parse():
    text = ('\n{\n  "debug":              False\n  "server_name":        "gcp-asianortheast3-natscj1-1"'
            '\n\n  # Profile port specification.\n  "prof_port":          8221\n}\n')
    assert same(parse(text), {"debug": False, "prof_port": 8221,
                              "server_name": "gcp-asianortheast3-natscj1-1"})


# ---- values -------------------------------------------------------------------------------


def test_sizes_are_case_insensitive_and_binary_with_b_or_i():
    check("a = 1K; b = 1KB; c = 1kib; d = 2Gi; e = 1e; f = 1EB; g = -1m",
          {"a": 1000, "b": 1024, "c": 1024, "d": 2 * 1024**3, "e": 10**18,
           "f": 1024**6, "g": -1_000_000})


def test_size_overflow_wraps_like_go_int64():
    assert parse("a = 8eb")["a"] == -(2**63)
    assert parse("a = 16eb")["a"] == 0
    assert parse("a = 9223372036854775807")["a"] == 2**63 - 1


def test_integer_out_of_range():
    with pytest.raises(ConfigError) as e:
        parse("a = 9223372036854775808")
    assert e.value.reason == "integer '9223372036854775808' is out of the range"


def test_unknown_size_suffix_leaves_its_key_pending():
    # parse.go stores nothing for `1kbb`; the key stays on the stack and the next
    # map end pops it, so the outer map lands under the inner key.
    assert parse("a { b = 1kbb }") == {"b": {}}
    assert parse("a = 1kbb\nc = 2") == {"c": 2}


def test_integer_before_array_end_is_a_string():
    with pytest.raises(ConfigError):
        parse("a = [1]\nb = 2")
    assert parse("a = [1, 2 ]") == {"a": [1, 2]}


def test_floats_and_datetimes():
    check("a = 1.5; b = -0.25; c = 2016-05-04T18:53:41Z",
          {"a": 1.5, "b": -0.25, "c": datetime(2016, 5, 4, 18, 53, 41, tzinfo=timezone.utc)})
    with pytest.raises(ConfigError) as e:
        parse("c = 2016-02-30T18:53:41Z")
    assert e.value.reason == "expected Zulu formatted DateTime, but got '2016-02-30T18:53:41Z'"


def test_strings_bare_quoted_escaped_and_block():
    check('a = bare\nb = "x\\ty\\x41"\nc = \'raw\\t\'\nd = nats://h:4222\ne = 127.0.0.1\n'
          "f (\n  line one\n  line two\n)\n",
          {"a": "bare", "b": "x\tyA", "c": "raw\\t", "d": "nats://h:4222", "e": "127.0.0.1",
           "f": "\n  line one\n  line two\n"})


def test_durations_stay_strings():
    check('a = "2s"; b = "1m30s"; c = 500ms; d = 2h', {"a": "2s", "b": "1m30s", "c": "500ms", "d": "2h"})
    # A bare `1m` is a size suffix, which is why Go configs quote minutes; a bare
    # `1m30s` lexes as the integer 1m followed by junk, an error in Go too.
    assert parse("a = 1m") == {"a": 1_000_000}
    with pytest.raises(ConfigError):
        parse("b = 1m30s")


def test_comments_everywhere():
    text = """
# hash comment
// slash comment
a = 1 # after a value
b { // after a brace
  c = 2 // after a map value
  # own line in a map
  d = [ 1, # in an array
        2 ]
}
"""
    check(text, {"a": 1, "b": {"c": 2, "d": [1, 2]}})


def test_arrays_of_maps_and_nested_blocks():
    text = """
accounts {
  A {
    users = [
      {user: a1, password: p1}
      {user: a2, password: p2, permissions {publish {allow: ["x.>"], deny: ["x.y"]}}}
    ]
    exports = [ {stream: "s.>"}, {service: "q"} ]
  }
  B: { users: [] }
}
"""
    check(text, {"accounts": {
        "A": {"users": [{"user": "a1", "password": "p1"},
                        {"user": "a2", "password": "p2",
                         "permissions": {"publish": {"allow": ["x.>"], "deny": ["x.y"]}}}],
              "exports": [{"stream": "s.>"}, {"service": "q"}]},
        "B": {"users": []},
    }})


def test_keys_keep_case_and_last_duplicate_wins():
    check("Port = 1\nport = 2\nPort = 3", {"Port": 3, "port": 2})


def test_key_separators():
    check("a = 1\nb: 2\nc 3\nd=4\ne:5\n'f g' 6\n\"h\": 7", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5,
                                                            "f g": 6, "h": 7})


# ---- variables ---------------------------------------------------------------------------------


def test_variable_innermost_scope_first_then_outer_then_env():
    text = """
x = outer
a { x = inner; y = $x }
b { y = $x }
c { y = $ONLY_IN_ENV }
"""
    check(text, {"x": "outer", "a": {"x": "inner", "y": "inner"}, "b": {"y": "outer"},
                 "c": {"y": "from-env"}}, env={"ONLY_IN_ENV": "from-env", "x": "ignored"})


def test_variable_must_be_defined_earlier():
    with pytest.raises(ConfigError):
        parse("a = $b\nb = 1", env={})


def test_variable_referencing_a_block():
    check("base { port: 1 }\ncopy = $base\nlist = [ $base ]",
          {"base": {"port": 1}, "copy": {"port": 1}, "list": [{"port": 1}]})


def test_variable_in_array_is_not_an_array_scope():
    with pytest.raises(ConfigError):
        parse("a = [ 1, 2 ]\nb = [ $a ]\nc = $0", env={})


def test_env_variable_values_are_parsed_as_config_values():
    env = {"SZ": "1kb", "B": "yes", "M": "{ a: 1, b: [x, y] }", "L": "[1, 2 ]", "Q": '"a b"'}
    check("sz = $SZ\nb = $B\nm = $M\nl = $L\nq = $Q",
          {"sz": 1024, "b": True, "m": {"a": 1, "b": ["x", "y"]}, "l": [1, 2], "q": "a b"}, env=env)


def test_env_variable_referencing_env_variable():
    check("a = $A", {"a": 5}, env={"A": "$B", "B": "5"})


def test_env_variable_cycle():
    with pytest.raises(ConfigError) as e:
        parse("a = $A", env={"A": "$B", "B": "$A"})
    # Every lookup on the way wraps the error, the one that meets A again included.
    assert e.value.reason == (
        "variable reference for 'A' on line 1 could not be parsed: "
        "variable reference for 'B' on line 1 could not be parsed: "
        "variable reference for 'A' on line 1 could not be parsed: "
        "variable reference cycle for 'A'"
    )


def test_env_variable_that_does_not_parse():
    with pytest.raises(ConfigError) as e:
        parse("a = $A", env={"A": "two words"})
    assert e.value.reason.startswith("variable reference for 'A' on line 1 could not be parsed: ")


# ---- errors and their locations ---------------------------------------------------------------


def test_missing_variable_error_names_file_line_col_and_key():
    path = str(CONFIGS / "bad_variable.conf")
    with pytest.raises(ConfigError) as e:
        parse_file(path, env={})
    err = e.value
    assert err.reason == "variable reference for 'NATSX_UNDEFINED_VARIABLE' on line 3 can not be found"
    assert (err.filename, err.line, err.col, err.key) == (path, 3, 16, "no_auth_user")
    assert str(err) == f"{path}:3:16: {err.reason}"


def test_lexer_error_location():
    with pytest.raises(ConfigError) as e:
        parse("a = 1\ncluster {\n  listen: 10.0.0.1:foo\n}\n", filename="x.conf")
    assert e.value.reason == ("Parse error on line 3: 'Expected a map value terminator \",\" or a "
                              "map terminator \"}\", but got 'f' instead.'")
    # The lexer runs one value ahead, so `listen` is already stored when it fails.
    assert (e.value.line, e.value.col, e.value.key) == (3, 21, "cluster")
    assert str(e.value).startswith("x.conf:3:21: Parse error on line 3:")


def test_error_in_included_file_points_into_it():
    with pytest.raises(ConfigError) as e:
        parse_file(str(CONFIGS / "bad_include.conf"))
    err = e.value
    assert err.reason.startswith("error parsing include file 'includes/broken.conf', Parse error on line 3:")
    assert err.filename == str(CONFIGS / "includes" / "broken.conf")
    assert (err.line, err.col) == (3, 21)


def test_missing_include(tmp_path):
    write(tmp_path, {"a.conf": "include nope.conf\n"})
    path = str(tmp_path / "a.conf")
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    assert e.value.reason == (f"error parsing include file 'nope.conf', error opening config file: "
                              f"open {tmp_path}/nope.conf: no such file or directory")
    with pytest.raises(ConfigError) as e:
        parse_file_with_positions(path)
    assert e.value.reason == (f"error parsing include file 'nope.conf', "
                              f"open {tmp_path}/nope.conf: no such file or directory")
    assert (e.value.filename, e.value.line) == (path, 1)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_file_with_positions(str(tmp_path / "none.conf"))
    assert e.value.reason == f"open {tmp_path}/none.conf: no such file or directory"
    with pytest.raises(ConfigError) as e:
        parse_file(str(tmp_path))
    assert e.value.reason == f"error opening config file: read {tmp_path}: is a directory"


def test_config_error_pickles_with_its_location():
    err = ConfigError("boom", filename="a.conf", line=3, col=4, key="x.y")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.reason, back.key) == ("a.conf:3:4: boom", "boom", "x.y")


# ---- includes ---------------------------------------------------------------------------------


def test_nested_includes_resolve_against_the_including_file(tmp_path):
    write(tmp_path, {
        "main.conf": "include 'sub/one.conf'\ntop = $from_two\n",
        "sub/one.conf": "include two.conf\none = 1\n",
        "sub/two.conf": "from_two = 2\nnested { include '../leaf.conf' }\n",
        "leaf.conf": "leaf = true\n",
    })
    assert same(parse_file(str(tmp_path / "main.conf")),
                {"from_two": 2, "nested": {"leaf": True}, "one": 1, "top": 2})


def test_included_file_does_not_see_the_includers_variables(tmp_path):
    write(tmp_path, {"main.conf": "x = 1\ninclude inc.conf\n", "inc.conf": "y = $x\n"})
    with pytest.raises(ConfigError) as e:
        parse_file(str(tmp_path / "main.conf"), env={})
    assert "variable reference for 'x' on line 1 can not be found" in e.value.reason


def test_include_cycle_is_an_error_not_a_crash(tmp_path):
    write(tmp_path, {"a.conf": "include b.conf\n", "b.conf": "include a.conf\n"})
    with pytest.raises(ConfigError) as e:
        parse_file(str(tmp_path / "a.conf"))
    assert "include cycle" in e.value.reason


def test_parse_reads_includes_only_through_read_file():
    files = {"inc.conf": "a = 1\n"}
    assert parse("include inc.conf", read_file=files.__getitem__) == {"a": 1}
    with pytest.raises(ConfigError) as e:
        parse("include inc.conf")
    assert "includes need a file reader" in e.value.reason


def test_read_text_file_keeps_invalid_utf8_bytes(tmp_path):
    path = tmp_path / "latin1.conf"
    path.write_bytes(b"pass = \"caf\xe9\"\n")
    value = parse_file(str(path))["pass"]
    assert value.encode("utf-8", "surrogateescape") == b"caf\xe9"
    assert read_text_file(str(path)).endswith('"\n')


# ---- positions -----------------------------------------------------------------------------------


def test_positions_of_keys_and_array_elements():
    m = parse_with_positions("a = 1\nb {\n  c = [ x, y ]\n}\n", filename="f.conf")
    assert (m["a"].line, m["a"].col, m["a"].filename) == (1, 0, "f.conf")
    b = m["b"]
    assert (b.line, b.col) == (2, 1)
    c = b.value["c"]
    assert (c.line, c.col) == (3, 3)
    assert [(t.value, t.line, t.col) for t in c.value] == [("x", 3, 9), ("y", 3, 12)]
    assert unwrap(c)[0] is c and unwrap(5) == (None, 5)
    assert strip_positions(m) == {"a": 1, "b": {"c": ["x", "y"]}}


# ---- converters for the option layer ---------------------------------------------------------


@pytest.mark.parametrize(
    "value,seconds",
    [("2s", 2.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1.5h", 5400.0),
     ("-1s", -1.0), ("0", 0.0), ("1us", 1e-6), ("1µs", 1e-6), ("2h45m0.5s", 9900.5),
     (5, 5.0), (Token(7, 1, 0), 7.0)],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value,message",
    [("", 'time: invalid duration ""'),
     ("1", 'time: missing unit in duration "1"'),
     ("1x", 'time: unknown unit "x" in duration "1x"'),
     (".s", 'time: invalid duration ".s"'),
     ("9999999999h", 'time: invalid duration "9999999999h"')],
)
def test_parse_duration_errors_are_go_errors(value, message):
    with pytest.raises(ValueError) as e:
        parse_duration(value)
    assert str(e.value) == message


def test_parse_duration_rejects_other_types_as_go_panics():
    with pytest.raises(TypeError) as e:
        parse_duration(True)
    assert str(e.value) == "interface conversion: interface {} is bool, not int64"
    assert parse_go_duration("1m") == 60_000_000_000


@pytest.mark.parametrize(
    "value,size",
    [(1024, 1024), ("", 0), ("1K", 1024), ("1M", 1 << 20), ("2G", 2 << 30), ("1T", 1 << 40),
     ("1MB", 1 << 20), ("64KB", 64 << 10), ("1GB", 1 << 30), ("1gib", 1 << 30), ("1k", 1000),
     ("0MB", 0), (Token("1G", 1, 0), 1 << 30)],
)
def test_parse_size(value, size):
    assert parse_size(value) == size


def test_get_storage_size_is_go_exact():
    assert get_storage_size("10G") == 10 << 30
    with pytest.raises(ValueError) as e:
        get_storage_size("1MB")
    assert str(e.value) == 'strconv.ParseInt: parsing "1M": invalid syntax'
    with pytest.raises(ValueError) as e:
        get_storage_size("10X")
    assert str(e.value) == "sizes defined as strings must end in K, M, G, T"
    with pytest.raises(TypeError):
        get_storage_size(1.5)
    with pytest.raises(ValueError):
        parse_size("lots")


def test_parse_bool():
    assert parse_bool(True) is True and parse_bool("Off") is False and parse_bool("yes") is True
    assert parse_bool(Token(False, 1, 0)) is False
    with pytest.raises(ValueError):
        parse_bool("maybe")
    with pytest.raises(TypeError) as e:
        parse_bool(1)
    assert str(e.value) == "interface conversion: interface {} is int64, not bool"


def test_go_type_names():
    assert [go_type_name(v) for v in ("s", 1, 1.0, True, [], {})] == [
        "string", "int64", "float64", "bool", "[]interface {}", "map[string]interface {}"]


# ---- writer ------------------------------------------------------------------------------


def test_dumps_shape():
    text = dumps({"port": 4222, "include": "x", "a b": [1, {"k": "v"}], "m": {}, "f": 1e-7})
    assert text == (
        'port: 4222\n"include": "x"\n"a b": [\n  1\n  {\n    k: "v"\n  }\n]\nm: {}\n'
        "f: 0.0000001\n"
    )


def test_dumps_refuses_what_the_language_cannot_hold():
    for bad in ({"a": None}, {"a": float("nan")}, {"a": 2**63}, {"'\"": 1}, {"a": object()}):
        with pytest.raises(ValueError):
            dumps(bad)


def test_dumps_round_trips_the_sample_config():
    m = parse_file(str(CONFIGS / "main.conf"), env={})
    assert same(parse(dumps(m)), m)
    assert same(parse(dumps(parse_file_with_positions(str(CONFIGS / "main.conf"), env={}))), m)


def test_json_style_sample():
    m = parse_file(str(CONFIGS / "json_style.conf"))
    assert same(m, {"port": 4222, "jetstream": {"max_mem": 1000000, "store_dir": "/tmp/natsx-js"},
                    "accounts": {"A": {"users": [{"user": "a", "password": "p"}]}}})


_keys = st.text(max_size=10).filter(lambda k: "\0" not in k and not ('"' in k and "'" in k))
_scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
    .map(lambda d: d.replace(microsecond=0, tzinfo=timezone.utc))
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=5))
def test_dumps_parse_round_trip(config):
    assert same(parse(dumps(config), env={}), config)


# ---- the Go server's own test configs ------------------------------------------------------------


def test_go_server_configs_parse():
    git_dir = os.environ.get("NATSX_GO_CONFIGS_GITDIR")
    if not git_dir:
        pytest.skip("set NATSX_GO_CONFIGS_GITDIR to a nats-server git dir to parse its server/configs")
    spec = importlib.util.spec_from_file_location("check_go_configs", TOOLS / "check_go_configs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with tempfile.TemporaryDirectory() as tmp:
        results = tool.check(tool.extract_configs(git_dir, "HEAD", tmp))
    out = io.StringIO()
    assert tool.report(results, out=out) == 0, out.getvalue()
    assert len(results) > 50
