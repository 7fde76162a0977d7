"""Config file to Options (server/opts.go processConfigFileLine), -t, flags over the file.

The mapping tests parse small files written to tmp_path; the error tests check Go's text and
the ``file:line:col`` of the offending key. ``-t`` and startup failures run the real
command; a few cases are compared with Debian's Go nats-server (2.9.10), where its text is
the same as the newer release natsx follows.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import GO_SERVER, NATSX
from natsx.auth.nkeys import PREFIX_BYTE_USER, KeyPair
from natsx.auth.permissions import Permissions, ResponsePermission, SubjectPermission
from natsx.auth.users import NkeyUser, User
from natsx.cli import SignalError, parse_args, send_signal
from natsx.server import options as defaults
from natsx.server.config_options import (
    ConfigProcessError,
    go_duration_string,
    load_options,
    process_config_file,
    validate_options,
)
from natsx.server.reload import ReloadError, diff_options, read_new_options

NKEY = KeyPair.create(PREFIX_BYTE_USER).public_key


@pytest.fixture
def conf(tmp_path):
    """Writes a config file; returns its path."""
    n = [0]

    def write(text: str, name: str | None = None) -> str:
        n[0] += 1
        path = tmp_path / (name or f"c{n[0]}.conf")
        path.write_text(text)
        return str(path)
    return write


def load(path: str, **overrides):
    return load_options(path, overrides)[0]


def errors_of(path: str) -> list[str]:
    with pytest.raises(ConfigProcessError) as info:
        process_config_file(path)
    return info.value.errors


# ---------------------------------------------------------------------------- mapping

@pytest.mark.parametrize("text, expected", [
    ("port: 4333", {"port": 4333}),
    ("host: 127.0.0.2", {"host": "127.0.0.2"}),
    ("net: 127.0.0.3", {"host": "127.0.0.3"}),
    ("listen: 127.0.0.1:4334", {"host": "127.0.0.1", "port": 4334}),
    ("listen: 4335", {"host": defaults.DEFAULT_HOST, "port": 4335}),
    ('listen: "[::1]:4336"', {"host": "::1", "port": 4336}),
    ("server_name: edge-1", {"server_name": "edge-1"}),
    ("client_advertise: 'nats.example.com:4222'", {"client_advertise": "nats.example.com:4222"}),
    ("http: 8223", {"http_port": 8223}),
    ("http: 127.0.0.1:8224", {"http_host": "127.0.0.1", "http_port": 8224}),
    ("http_port: 8225", {"http_port": 8225}),
    ("monitor_port: 8226", {"http_port": 8226}),
    ("http_base_path: /nats", {"http_base_path": "/nats"}),
    ("max_payload: 1KB", {"max_payload": 1024}),
    ("max_payload: 65536", {"max_payload": 65536}),
    ("max_pending: 10MB", {"max_pending": 10 * 1024 * 1024}),
    ("max_control_line: 2048", {"max_control_line": 2048}),
    ("max_connections: 100", {"max_connections": 100}),
    ("max_conn: 101", {"max_connections": 101}),
    ("max_connections: 0", {"max_connections": -1}),   # Go: 0 in the file refuses everyone
    ("max_subscriptions: 10", {"max_subscriptions": 10}),
    ("max_subs: 11", {"max_subscriptions": 11}),
    ("max_sub_tokens: 5", {"max_sub_tokens": 5}),
    ("max_subscription_tokens: 6", {"max_sub_tokens": 6}),
    ('ping_interval: "30s"', {"ping_interval": 30.0}),
    ('ping_interval: "1m30s"', {"ping_interval": 90.0}),
    ("ping_max: 5", {"max_pings_out": 5}),
    ('write_deadline: "500ms"', {"write_deadline": 0.5}),
    ("write_timeout: retry", {"write_timeout": "retry"}),
    ("write_timeout: close", {"write_timeout": "close"}),
    ("write_timeout: default", {"write_timeout": ""}),
    ("no_fast_producer_stall: true", {"no_fast_producer_stall": True}),
    ("no_system_account: true", {"no_system_account": True}),
    ("syslog: true", {"syslog": True}),
    ("remote_syslog: 'udp://127.0.0.1:514'", {"remote_syslog": "udp://127.0.0.1:514"}),
    ("logfile_size_limit: 1MB", {"log_size_limit": 1 << 20}),
    ("logfile_max_num: 4", {"log_max_num": 4}),
    ('lame_duck_duration: "45s"', {"lame_duck_duration": 45.0}),
    ('lame_duck_grace_period: "3s"', {"lame_duck_grace_period": 3.0}),
    ("debug: true", {"debug": True}),
    ("trace: true", {"trace": True}),
    ("trace_verbose: true", {"trace": True, "trace_verbose": True}),
    ("logtime: false", {"logtime": False}),
    ("logtime_utc: true", {"logtime_utc": True}),
    ("log_file: /tmp/x.log", {"log_file": "/tmp/x.log"}),
    ("logfile: /tmp/y.log", {"log_file": "/tmp/y.log"}),
    ("pid_file: /tmp/n.pid", {"pid_file": "/tmp/n.pid"}),
    ("pidfile: /tmp/m.pid", {"pid_file": "/tmp/m.pid"}),
    ("ports_file_dir: /tmp", {"ports_file_dir": "/tmp"}),
    ("disable_sublist_cache: true", {"disable_sublist_cache": True}),
    ("no_sublist_cache: true", {"disable_sublist_cache": True}),
    ("no_header_support: true", {"no_header_support": True}),
    ("max_closed_clients: 50", {"max_closed_clients": 50}),
    ("server_tags: [a, 'b:c']", {"tags": ["a", "b:c"]}),
    ("PORT: 4337\nMax_Payload: 2048", {"port": 4337, "max_payload": 2048}),
])
def test_top_level_keys_map_to_options(conf, text, expected):
    o = load(conf(text + "\n"))
    for attr, value in expected.items():
        assert getattr(o, attr) == value, attr


def test_untouched_options_keep_the_go_defaults(conf):
    o = load(conf("port: 4333\n"))
    fresh = defaults.Options()
    for attr in ("host", "max_payload", "max_pending", "max_control_line", "max_connections",
                 "ping_interval", "max_pings_out", "write_deadline", "auth_timeout",
                 "lame_duck_duration", "lame_duck_grace_period", "logtime"):
        assert getattr(o, attr) == getattr(fresh, attr), attr


def test_zero_means_the_default_as_in_setBaselineOptions(conf):
    o = load(conf('port: 0\nping_interval: "0s"\nping_max: 0\nmax_payload: 0\n'))
    assert (o.port, o.ping_interval, o.max_pings_out, o.max_payload) == (
        defaults.DEFAULT_PORT, defaults.PING_INTERVAL, defaults.MAX_PINGS_OUT, defaults.MAX_PAYLOAD)


def test_includes_and_variables(conf, tmp_path):
    conf("debug: true\nmax_payload: 4KB\n", name="inc.conf")
    o = load(conf('LIMIT = 77\nmax_connections: $LIMIT\ninclude "inc.conf"\n'))
    assert (o.max_connections, o.debug, o.max_payload) == (77, True, 4096)


def test_a_variable_definition_is_not_an_unknown_field(conf):
    # Go skips a top-level key whose value a $reference used.
    o = load(conf('PASS = "sec"\nauthorization { user: a, password: $PASS }\n'))
    assert (o.username, o.password) == ("a", "sec")


def test_integer_duration_is_seconds_with_a_warning(conf):
    path = conf("port: 4333\nping_interval: 60\n")
    o, warnings = load_options(path)
    assert o.ping_interval == 60.0
    assert warnings == [f'{path}:2:1: invalid use of field "ping_interval": '
                        "ping_interval should be converted to a duration"]


# ---------------------------------------------------------------------------- authorization

def test_single_user_and_timeout(conf):
    o = load(conf("authorization { user: derek, password: s3cr3t, timeout: 1 }\n"))
    assert (o.username, o.password, o.auth_timeout, o.auth_required) == ("derek", "s3cr3t", 1.0, True)


@pytest.mark.parametrize("value, seconds", [("1", 1.0), ("0.5", 0.5), ('"3s"', 3.0)])
def test_auth_timeout_forms(conf, value, seconds):
    assert load(conf(f"authorization {{ token: t, timeout: {value} }}\n")).auth_timeout == seconds


def test_token(conf):
    o = load(conf('authorization { token: "$2a$11$abcdefghijklmnopqrstuu" }\n'))
    assert o.authorization.startswith("$2a$") and o.auth_required


def test_users_nkeys_and_permissions(conf):
    o = load(conf(f"""
authorization {{
  default_permissions: {{ publish: "pub.>" }}
  users: [
    {{user: alice, password: pw, permissions: {{
        publish: {{allow: ["foo.>", "_INBOX.>"], deny: "foo.secret"}},
        subscribe: {{allow: ["foo.*", "grp.* q1"], deny: ["foo.secret"]}}}}}}
    {{user: bob, password: pw2}}
    {{user: old, password: x, permissions: {{pub: ["a", "b"], sub: "c"}}}}
    {{user: resp, password: x, permissions: {{allow_responses: true}}}}
    {{user: resp2, password: x, permissions: {{sub: "svc", allow_responses: {{max: 3, expires: "5s"}}}}}}
    {{nkey: {NKEY}, allowed_connection_types: ["standard", "WEBSOCKET"]}}
  ]
}}
"""))
    users = {u.username: u for u in o.users}
    assert users["alice"].permissions == Permissions(
        SubjectPermission(("foo.>", "_INBOX.>"), ("foo.secret",)),
        SubjectPermission(("foo.*", "grp.* q1"), ("foo.secret",)))
    # default_permissions go to the users that have none
    assert users["bob"].permissions == Permissions(SubjectPermission(("pub.>",), ()))
    assert users["old"].permissions == Permissions(SubjectPermission(("a", "b")),
                                                   SubjectPermission(("c",)))
    # allow_responses turns off the blanket publish allow (Go: parseUserPermissions)
    assert users["resp"].permissions == Permissions(SubjectPermission((), ()), None,
                                                    ResponsePermission(1, 120.0))
    assert users["resp2"].permissions.response == ResponsePermission(3, 5.0)
    assert o.nkeys == [NkeyUser(NKEY, Permissions(SubjectPermission(("pub.>",), ())),
                                frozenset({"STANDARD", "WEBSOCKET"}))]
    assert isinstance(users["bob"], User) and o.auth_required


def test_empty_users_array_leaves_auth_off(conf):
    # Go keeps the users only when there are some.
    o = load(conf("authorization { users: [] }\n"))
    assert o.users is None and not o.auth_required


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize("text, line, col, reason", [
    ("foo: 1\n", 1, 0, 'unknown field "foo"'),
    ("port: 4333\nauthorization {\n  user: a\n  bar: 2\n}\n", 4, 3, 'unknown field "bar"'),
    ("port: 4333\nmax_payload: \"x\"\n", 2, 1, "interface conversion: interface {} is string, not int64"),
    ("debug: 1\n", 1, 0, "interface conversion: interface {} is int64, not bool"),
    ("port: 1\nlame_duck_duration: \"5s\"\n", 2, 1,
     "invalid lame_duck_duration of 5s, minimum is 30 seconds"),
    ("lame_duck_duration: 40\n", 1, 0, "interface conversion: interface {} is int64, not string"),
    ('lame_duck_grace_period: "-1s"\n', 1, 0, "invalid lame_duck_grace_period, needs to be positive"),
    ('write_deadline: "zz"\n', 1, 0, 'error parsing write_deadline: time: invalid duration "zz"'),
    ("write_timeout: later\n", 1, 0, "write_timeout must be 'default', 'close' or 'retry'"),
    ("syslog: 1\n", 1, 0, "interface conversion: interface {} is int64, not bool"),
    ("max_sub_tokens: 300\n", 1, 0, "max_sub_tokens value is too big"),
    ("max_sub_tokens: 0\n", 1, 0, "max_sub_tokens value can not be negative"),
    ("max_payload: 3000000000\n", 1, 0, "max_payload value is too big"),
    ('listen: "foo"\n', 1, 0, 'could not parse address string "foo"'),
    ('listen: "1.2.3.4:x"\n', 1, 0, 'could not parse port "x"'),
    ("listen: true\n", 1, 0, "expected port or host:port, got bool"),
    ('server_name: "a b"\n', 1, 0, "server name cannot contain spaces"),
    ("authorization { user: a, token: b }\n", 1, 0, "Cannot have a user/pass and token"),
    ("authorization { user: a, users: [] }\n", 1, 0,
     "Can not have a single user/pass and a users array"),
    ("authorization { token: a, users: [] }\n", 1, 0, "Can not have a token and a users array"),
    ("authorization { users: [{user: a}, {user: a}] }\n", 1, 0, 'Duplicate user "a" detected'),
    ("authorization { users: [{nkey: foo}] }\n", 1, 25, "Not a valid public nkey for a user"),
    ("authorization { users: [{password: x}] }\n", 1, 25, "User entry requires a user"),
    ("authorization { users: \"x\" }\n", 1, 16, "Expected users field to be an array, got x"),
    ("authorization { users: [\"x\"] }\n", 1, 25, "Expected user entry to be a map/struct, got x"),
    ("authorization { users: [{user: a, permissions: {pub: {allow: \"a\", nope: \"b\"}}}] }\n",
     1, 66, "Unknown field name \"nope\" parsing subject permissions, only 'allow' or 'deny' "
            "are permitted"),
    ("authorization { users: [{user: a, permissions: {wat: 1}}] }\n", 1, 48,
     'Unknown field "wat" parsing permissions'),
    ("authorization { users: [{user: a, permissions: {allow_responses: 3}}] }\n", 1, 48,
     "error parsing response permissions, expected a boolean or a map"),
    ("authorization { users: [{user: a, permissions: {allow_responses: {expires: 5}}}] }\n",
     1, 66, "error parsing expires, not a duration string"),
    ('authorization { users: [{user: a, permissions: {allow_responses: {expires: "5x"}}}] }\n',
     1, 66, 'error parsing expires: time: unknown unit "x" in duration "5x"'),
    ('authorization { users: [{user: a, allowed_connection_types: ["FOO"]}] }\n', 1, 34,
     'invalid connection types ["FOO"]'),
])
def test_errors_name_file_line_col_and_reason(conf, text, line, col, reason):
    path = conf(text)
    assert errors_of(path) == [f"{path}:{line}:{col}: {reason}"]


@pytest.mark.parametrize("subjects, reason", [
    ('{publish: "foo bar"}', 'subject "foo bar" is not a valid subject'),
    ('{subscribe: "foo bar baz"}', 'subject "foo bar baz" is not a valid subject'),
    ('{subscribe: "foo.. q"}', 'subject "foo.." is not a valid subject'),
    ('{publish: 3}', "Expected subject permissions to be a subject, or array of subjects, got int64"),
])
def test_permission_subjects_are_validated(conf, subjects, reason):
    path = conf(f"authorization {{ users: [{{user: a, permissions: {subjects}}}] }}\n")
    (err,) = errors_of(path)
    assert err.endswith(": " + reason) and err.startswith(path + ":1:")


@pytest.mark.parametrize("key, feature", [
    ("ocsp_cache", "OCSP stapling"), ("cluster", "clustering"), ("gateway", "gateways"),
    ("leafnodes", "leaf nodes"), ("mqtt", "MQTT"),
    ("default_js_domain", "JetStream domains"),
    ("prof_port", "profiling"),
])
def test_features_natsx_lacks_are_refused_with_their_position(conf, key, feature):
    path = conf(f"port: 4333\n{key}: {{}}\n" if key != "prof_port"
                else f"port: 4333\n{key}: 1\n")
    assert errors_of(path) == [f"{path}:2:1: {key}: {feature} is not supported by this "
                               "natsx build yet"]


def test_jetstream_block_sets_store_dir(conf):
    path = conf('jetstream {\n  store_dir: "/data/js"\n}\n')
    opts, _warnings = load_options(path)
    assert (opts.jetstream, opts.store_dir) == (True, "/data/js")
    opts, _warnings = load_options(conf("jetstream: disabled\n"))
    assert opts.jetstream is False


def test_jetstream_limits_and_encryption_keys_apply(conf):
    opts, _warnings = load_options(conf('jetstream {\n  max_memory_store: 1GB\n}\n'))
    assert opts.jetstream_config["max_memory"] == 1 << 30
    opts, _warnings = load_options(conf('jetstream {\n  store_dir: "/data/js"\n'
                                        '  ek: "s3cr3t"\n  prev_encryption_key: "old"\n'
                                        '  cipher: aes\n}\n'))
    cfg = opts.jetstream_config
    assert (cfg["key"], cfg["prev_key"], cfg["cipher"]) == ("s3cr3t", "old", "aes")


def test_auth_callout_is_refused_inside_authorization(conf):
    path = conf("authorization {\n  auth_callout { issuer: x }\n}\n")
    assert errors_of(path) == [f"{path}:2:3: auth_callout: auth callout is not supported by "
                               "this natsx build yet"]


def test_all_errors_are_reported_together_in_file_order(conf):
    path = conf("foo: 1\nport: x\ntls {bad: 1}\nbar: 2\n")
    assert errors_of(path) == [
        f'{path}:1:0: unknown field "foo"',
        f"{path}:2:1: interface conversion: interface {{}} is string, not int64",
        f'{path}:3:6: error parsing tls config, unknown field "bad"',
        f'{path}:4:1: unknown field "bar"',
    ]


def test_error_in_an_included_file_names_that_file(conf, tmp_path):
    inc = conf("wat: 1\n", name="inc.conf")
    path = conf('port: 4333\ninclude "inc.conf"\n')
    assert errors_of(path) == [f'{inc}:1:0: unknown field "wat"']


def test_parse_errors_are_the_parsers_text(conf):
    path = conf("port: 4333\nfoo {\n")
    assert errors_of(path) == ["Parse error on line 3: 'Unexpected EOF processing map.'"]


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.conf")
    assert errors_of(path) == [f"open {path}: no such file or directory"]


# ---------------------------------------------------------------------------- validation

@pytest.mark.parametrize("text, message", [
    ("max_payload: 100\nmax_pending: 50\n", "max_payload (100) cannot be higher than max_pending (50)"),
    ('lame_duck_duration: "30s"\nlame_duck_grace_period: "30s"\n',
     "lame duck grace period (30s) should be strictly lower than lame duck duration (30s)"),
    ("no_auth_user: x\n", 'no_auth_user: "x" present, but users/nkeys are not defined'),
    ("authorization { users: [{user: a, password: b}] }\nno_auth_user: x\n",
     'no_auth_user: "x" not present as user or nkey in authorization block or account '
     "configuration"),
])
def test_validate_options(conf, text, message):
    o = load(conf(text))
    with pytest.raises(ConfigProcessError) as info:
        validate_options(o)
    assert info.value.errors == [message]


# ---------------------------------------------------------------------------- precedence

def test_explicit_flags_win_over_the_file(conf):
    path = conf("port: 4333\ndebug: true\nmax_payload: 2048\nserver_name: file\n")
    flags, _ = parse_args(["-c", path, "-p", "5555", "-D=false", "-n", "cli"])
    o = load_options(path, flags.cli_overrides)[0]
    assert (o.port, o.debug, o.server_name, o.max_payload) == (5555, False, "cli", 2048)
    assert o.config_file == path


def test_flags_not_given_leave_the_file_alone(conf):
    path = conf("logtime: false\ntrace: true\n")
    flags, _ = parse_args(["-c", path])
    assert flags.cli_overrides == {}
    o = load_options(path, flags.cli_overrides)[0]
    assert (o.logtime, o.trace) == (False, True)


def test_combined_debug_trace_flags_are_recorded(conf):
    flags, _ = parse_args(["-DV"])
    assert flags.cli_overrides == {"debug": True, "trace": True}
    flags, _ = parse_args(["-VV"])
    assert flags.cli_overrides == {"trace": True, "trace_verbose": True}


def test_cli_auth_flags_override_the_authorization_block(conf):
    path = conf("authorization { user: a, password: b }\n")
    flags, _ = parse_args(["-c", path, "--user", "x", "--pass", "y"])
    o = load_options(path, flags.cli_overrides)[0]
    assert (o.username, o.password) == ("x", "y")


# ---------------------------------------------------------------------------- reload diff

def test_reload_diff_lists_the_changes_in_go_order(conf):
    path = conf("authorization { users: [{user: a, password: b}] }\n")
    old = load(path)
    conf('debug: true\nmax_payload: 2000\nping_interval: "30s"\n'
         "authorization { users: [{user: a, password: c}], timeout: 3 }\n", name=os.path.basename(path))
    new = read_new_options(old)
    assert diff_options(old, new) == [
        "debug = true", "authorization users", "accounts", "ping_interval = 30s",
        "authorization timeout = 3", "max_payload = 2000"]


@pytest.mark.parametrize("change, message", [
    ("port: 4999", "config reload not supported for Port: old=4222, new=4999"),
    ("server_name: b", "config reload not supported for ServerName: old=, new=b"),
    ("no_header_support: true", "config reload not supported for NoHeaderSupport: old=false, new=true"),
    ('lame_duck_duration: "1m"', "config reload not supported for LameDuckDuration: old=2m0s, new=1m0s"),
])
def test_reload_refuses_options_that_cannot_change(conf, change, message):
    path = conf("debug: false\n")
    old = load(path)
    conf(change + "\n", name=os.path.basename(path))
    with pytest.raises(ReloadError) as info:
        diff_options(old, read_new_options(old))
    assert str(info.value) == message


def test_reload_keeps_the_command_line_flags(conf):
    path = conf("port: 4333\n")
    flags, _ = parse_args(["-c", path, "-p", "6000"])
    old = load_options(path, flags.cli_overrides)[0]
    conf("port: 4444\ndebug: true\n", name=os.path.basename(path))
    new = read_new_options(old)
    assert new.port == 6000 and diff_options(old, new) == ["debug = true", "authorization users",
                                                      "accounts"]


def test_reload_without_a_config_file():
    with pytest.raises(ReloadError) as info:
        read_new_options(defaults.Options())
    assert str(info.value) == "can only reload config when a file is provided using -c or --config"


def test_reload_of_a_broken_file_is_refused(conf):
    path = conf("port: 4333\n")
    old = load(path)
    conf("port: 4333\nwat: 1\n", name=os.path.basename(path))
    with pytest.raises(ReloadError) as info:
        read_new_options(old)
    assert str(info.value) == f'{path}:2:1: unknown field "wat"'


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.5, "500ms"), (1.5, "1.5s"), (30, "30s"), (90, "1m30s"), (120, "2m0s"),
    (3600, "1h0m0s"), (0.000001, "1µs"), (2.25e-7, "225ns"),
])
def test_go_duration_string(seconds, text):
    assert go_duration_string(seconds) == text


# ---------------------------------------------------------------------------- command line

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(NATSX + list(args), capture_output=True, text=True, timeout=30)


def test_check_config_valid(conf):
    path = conf("port: 4333\nauthorization { token: x }\n")
    r = run_cli("-c", path, "-t")
    assert r.returncode == 0
    assert r.stderr.startswith(f"nats-server: configuration file {path} is valid (sha256:")


def test_check_config_invalid_prints_every_error(conf):
    path = conf("port: 4333\nfoo: 1\nauthorization {\n  user: a\n  bar: 2\n}\n")
    r = run_cli("-t", "-c", path)
    assert r.returncode == 1
    assert r.stderr == (f'nats-server: {path}:2:1: unknown field "foo"\n'
                        f'{path}:5:3: unknown field "bar"\n\n')


def test_check_config_fails_on_warnings(conf):
    path = conf("ping_interval: 60\n")
    r = run_cli("-c", path, "-t")
    assert r.returncode == 1
    assert "ping_interval should be converted to a duration" in r.stderr


def test_check_config_needs_a_config_file():
    r = run_cli("-t")
    assert r.returncode == 1
    assert r.stderr == ("nats-server: must specify [-c, --config] option to check "
                        "configuration file syntax\n")


@pytest.mark.server
def test_server_refuses_to_start_on_a_bad_config(conf):
    path = conf("port: 4333\ncluster { port: 6222 }\n")
    r = run_cli("-c", path)
    assert r.returncode == 1
    assert r.stderr == (f"nats-server: {path}:2:1: cluster: clustering is not supported by "
                        "this natsx build yet\n\n")


@pytest.mark.server
def test_server_refuses_to_start_on_invalid_options(conf):
    r = run_cli("-c", conf("max_payload: 100\nmax_pending: 50\n"))
    assert r.returncode == 1
    assert r.stderr == "nats-server: max_payload (100) cannot be higher than max_pending (50)\n"


@pytest.mark.differential
@pytest.mark.parametrize("text", [
    "port: 4333\nfoo: 1\nauthorization {\n  user: a\n  bar: 2\n}\n",
    'port: 1\nlame_duck_duration: "5s"\n',
    "max_sub_tokens: 300\n",
    'listen: "1.2.3.4:x"\n',
    "authorization { user: a, token: b }\n",
    "authorization { users: [{nkey: foo}] }\n",
    "authorization { users: [{user: a, permissions: {wat: 1}}] }\n",
    'authorization { users: [{user: a, permissions: {allow_responses: {expires: "5x"}}}] }\n',
    "ping_interval: 60\n",
])
def test_check_config_errors_match_the_go_server(conf, text):
    if GO_SERVER is None:
        pytest.fail("the Go nats-server is not installed (apt-get install nats-server)")
    path = conf(text)
    go = subprocess.run([GO_SERVER, "-c", path, "-t"], capture_output=True, text=True, timeout=30)
    ours = run_cli("-c", path, "-t")
    assert ours.returncode == go.returncode == 1
    # Go reports several errors in map order (the program name prefixes the first one):
    # compare them as a set.
    def lines(text: str) -> list[str]:
        return sorted(line.removeprefix("nats-server: ") for line in text.splitlines())
    assert lines(ours.stderr) == lines(go.stderr)


# ---------------------------------------------------------------------------- --signal

def test_signal_to_a_pid_and_to_a_pid_file(tmp_path):
    victim = subprocess.Popen(["sleep", "30"])
    try:
        send_signal(f"term={victim.pid}", "natsx")
        assert victim.wait(5) == -signal.SIGTERM
    finally:
        victim.kill()
    victim = subprocess.Popen(["sleep", "30"])
    pid_file = tmp_path / "v.pid"
    pid_file.write_text(str(victim.pid))
    try:
        r = run_cli("--signal", f"stop={pid_file}")
        assert r.returncode == 0, r.stderr
        assert victim.wait(5) == -signal.SIGKILL
    finally:
        victim.kill()


@pytest.mark.parametrize("spec, message", [
    ("reload=abc", "invalid pid: abc"),
    ("bogus=1", 'unknown signal "bogus"'),
    ("reload=1=2", "invalid signal parameters: [2]"),
    ("reload", "no natsx-test-nothing processes running"),
])
def test_signal_errors(spec, message):
    with pytest.raises(SignalError) as info:
        send_signal(spec, "natsx-test-nothing")
    assert str(info.value) == message


def test_signal_without_pid_finds_the_one_supervisor(tmp_path):
    # A supervisor and its forked children share a name: only the parent is signalled.
    script = tmp_path / "natsx-sigtest"
    script.write_text("#!/bin/sh\n( sleep 30; true ) &\nwait\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script)], start_new_session=True)
    try:
        time.sleep(0.3)
        send_signal("term", "natsx-sigtest")
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
