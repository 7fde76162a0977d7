"""The ``natsx`` command: the nats-server command line, plus ``--workers``.

Flags follow Go's flag package, as nats-server uses it: one or two leading dashes,
``-flag value`` or ``-flag=value``, booleans take no separate value (``-D``, ``-js``,
``--tls=false``). Flags for features this build does not have are refused with a clear
message rather than accepted and ignored.
"""
from __future__ import annotations

import os
import sys

from natsx import SERVER_VERSION, __version__
from natsx.server.options import Options

USAGE = """\
Usage: nats-server [options]

Server Options:
    -a, --addr, --net <host>         Bind to host address (default: 0.0.0.0)
    -p, --port <port>                Use port for clients (default: 4222)
    -n, --name
        --server_name <server_name>  Server name (default: auto)
    -P, --pid <file>                 File to store PID
    -m, --http_port <port>           Use port for http monitoring
    -c, --config <file>              Configuration file
    -t                               Test configuration and exit
        --client_advertise <string>  Client URL to advertise to other servers
        --ports_file_dir <dir>       Creates a ports file in the specified directory (<executable_name>_<pid>.ports).
        --workers <n>                Worker processes (default: the number of cores)

Logging Options:
    -l, --log <file>                 File to redirect log output
    -T, --logtime                    Timestamp log entries (default: true)
    -D, --debug                      Enable debugging output
    -V, --trace                      Trace the raw protocol
    -VV                              Verbose trace (traces system account as well)
    -DV                              Debug and trace
    -DVV                             Debug and verbose trace (traces system account as well)

Authorization Options:
        --user <user>                User required for connections
        --pass <password>            Password required for connections
        --auth <token>               Authorization token required for connections

Common Options:
    -h, --help                       Show this message
    -v, --version                    Show version
"""

# name -> (attribute, kind); kind: str, int, bool, or a special marker
_FLAGS: dict[str, tuple[str, str]] = {}


def _flag(names, attr, kind):
    for n in names:
        _FLAGS[n] = (attr, kind)


_flag(["a", "addr", "net"], "host", "str")
_flag(["p", "port"], "port", "int")
_flag(["n", "name", "server_name"], "server_name", "str")
_flag(["P", "pid"], "pid_file", "str")
_flag(["m", "http_port"], "http_port", "int")
_flag(["c", "config"], "config_file", "str")
_flag(["client_advertise"], "client_advertise", "str")
_flag(["ports_file_dir"], "ports_file_dir", "str")
_flag(["workers"], "workers", "int")
_flag(["l", "log"], "log_file", "str")
_flag(["T", "logtime"], "logtime", "bool")
_flag(["D", "debug"], "debug", "bool")
_flag(["V", "trace"], "trace", "bool")
_flag(["VV"], "VV", "combo")
_flag(["DV"], "DV", "combo")
_flag(["DVV"], "DVV", "combo")
_flag(["user"], "username", "str")
_flag(["pass"], "password", "str")
_flag(["auth"], "authorization", "str")
_flag(["h", "help"], "help", "action")
_flag(["v", "version"], "version", "action")
_flag(["t"], "check_config", "action")
_flag(["http_base_path"], "http_base_path", "str")

# Flags of the Go server whose features come with later work: refused, never ignored.
_NOT_YET = {
    "ms": "HTTPS monitoring", "https_port": "HTTPS monitoring",
    "sl": "sending signals", "signal": "sending signals",
    "s": "syslog", "syslog": "syslog", "r": "remote syslog", "remote_syslog": "remote syslog",
    "log_size_limit": "log size limits", "max_traced_msg_len": "trace length limits",
    "js": "JetStream", "jetstream": "JetStream", "sd": "JetStream", "store_dir": "JetStream",
    "tls": "TLS", "tlscert": "TLS", "tlskey": "TLS", "tlsverify": "TLS", "tlscacert": "TLS",
    "routes": "clustering", "cluster": "clustering", "cluster_name": "clustering",
    "no_advertise": "clustering", "cluster_advertise": "clustering",
    "connect_retries": "clustering", "cluster_listen": "clustering",
    "profile": "profiling", "help_tls": "TLS",
}
_NOT_YET_BOOL = {"js", "jetstream", "tls", "tlsverify", "s", "syslog", "help_tls"}

_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[Options, set[str]]:
    """Returns the options and the set of actions asked for (help, version, check_config)."""
    opts = Options()
    actions: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            if arg == "--":
                break
            raise UsageError(f"unexpected argument: {arg}")
        name = arg.lstrip("-")
        if arg.startswith("---"):
            raise UsageError(f"bad flag syntax: {arg}")
        value = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in _NOT_YET:
            raise UsageError(f"{_NOT_YET[name]} (flag -{name}) is not supported by this natsx build yet")
        if name not in _FLAGS:
            raise UsageError(f"flag provided but not defined: -{name}")
        attr, kind = _FLAGS[name]
        if kind in ("bool", "combo", "action"):
            flag_value = True
            if value is not None:
                if value in _TRUE:
                    flag_value = True
                elif value in _FALSE:
                    flag_value = False
                else:
                    raise UsageError(f'invalid boolean value "{value}" for -{name}')
            if kind == "bool":
                setattr(opts, attr, flag_value)
            elif kind == "combo":
                opts.debug = opts.debug or "D" in attr and flag_value
                opts.trace = opts.trace or flag_value
            elif flag_value:
                actions.add(attr)
            continue
        if value is None:
            if i >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            value = argv[i]
            i += 1
        if kind == "int":
            try:
                setattr(opts, attr, int(value))
            except ValueError:
                raise UsageError(f'invalid value "{value}" for flag -{name}: parse error') from None
        else:
            setattr(opts, attr, value)
    return opts, actions


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        opts, actions = parse_args(argv)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        print(file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 1
    if "help" in actions:
        print(USAGE)
        return 0
    if "version" in actions:
        print(f"nats-server: v{SERVER_VERSION} (natsx {__version__})")
        return 0
    if opts.config_file:
        print("configuration files are not supported by this natsx build yet "
              f"(-c {opts.config_file})", file=sys.stderr)
        return 1
    if "check_config" in actions:
        print("nats-server: configuration file is valid")
        return 0
    if opts.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 1

    from natsx import logs
    from natsx.supervisor.arbiter import Arbiter

    logs.setup(debug=opts.debug, trace=opts.trace, logtime=opts.logtime, log_file=opts.log_file)
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "natsx"
    if program in ("__main__.py", "-c", "-m"):
        program = "natsx"
    try:
        return Arbiter(opts, program).run()
    except OSError as exc:
        import logging

        logging.getLogger("natsx").critical("Error listening on port: %s:%d, %s",
                                            opts.host, opts.port, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
