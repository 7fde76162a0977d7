"""The ``natsx`` command: the nats-server command line, plus ``--workers``.

Flags follow Go's flag package, as nats-server uses it: one or two leading dashes,
``-flag value`` or ``-flag=value``, booleans take no separate value (``-D``, ``-js``,
``--tls=false``). Flags for features this build does not have are refused with a clear
message rather than accepted and ignored. ``-c`` loads a config file under the flags given
(natsx.server.config_options); ``--signal`` sends a signal to a running server instead.
"""
from __future__ import annotations

import os
import sys
import time

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
    -ms,--https_port <port>          Use port for https monitoring
    -c, --config <file>              Configuration file
    -t                               Test configuration and exit
    -sl,--signal <signal>[=<pid>]    Send signal to nats-server process (ldm, stop, quit, term, reopen, reload)
                                     <pid> can be either a PID (e.g. 1) or the path to a PID file (e.g. /var/run/nats-server.pid)
        --client_advertise <string>  Client URL to advertise to other servers
        --ports_file_dir <dir>       Creates a ports file in the specified directory (<executable_name>_<pid>.ports).
        --workers <n>                Worker processes (default: the number of cores)

Logging Options:
    -l, --log <file>                 File to redirect log output
    -T, --logtime                    Timestamp log entries (default: true)
    -s, --syslog                     Log to syslog or windows event log
    -r, --remote_syslog <addr>       Syslog server addr (udp://localhost:514)
    -D, --debug                      Enable debugging output
    -V, --trace                      Trace the raw protocol
    -VV                              Verbose trace (traces system account as well)
    -DV                              Debug and trace
    -DVV                             Debug and verbose trace (traces system account as well)
        --log_size_limit <limit>     Logfile size limit (default: auto)

Authorization Options:
        --user <user>                User required for connections
        --pass <password>            Password required for connections
        --auth <token>               Authorization token required for connections

TLS Options:
        --tls                        Enable TLS, do not verify clients (default: false)
        --tlscert <file>             Server certificate file
        --tlskey <file>              Private key for server certificate
        --tlsverify                  Enable TLS, verify client certificates
        --tlscacert <file>           Client certificate CA for verification

JetStream Options:
    -js, --jetstream                 Enable JetStream functionality
    -sd, --store_dir <dir>           Set the storage directory

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
_flag(["ms", "https_port"], "https_port", "int")
_flag(["c", "config"], "config_file", "str")
_flag(["client_advertise"], "client_advertise", "str")
_flag(["ports_file_dir"], "ports_file_dir", "str")
_flag(["workers"], "workers", "int")
_flag(["l", "log"], "log_file", "str")
_flag(["log_size_limit"], "log_size_limit", "int")
_flag(["s", "syslog"], "syslog", "bool")
_flag(["r", "remote_syslog"], "remote_syslog", "str")
_flag(["T", "logtime"], "logtime", "bool")
_flag(["D", "debug"], "debug", "bool")
_flag(["V", "trace"], "trace", "bool")
_flag(["VV"], "VV", "combo")
_flag(["max_traced_msg_len"], "max_traced_msg_len", "int")
_flag(["DV"], "DV", "combo")
_flag(["DVV"], "DVV", "combo")
_flag(["user"], "username", "str")
_flag(["pass"], "password", "str")
_flag(["auth"], "authorization", "str")
_flag(["h", "help"], "help", "action")
_flag(["v", "version"], "version", "action")
_flag(["t"], "check_config", "action")
_flag(["sl", "signal"], "signal", "command")
_flag(["http_base_path"], "http_base_path", "str")
_flag(["js", "jetstream"], "jetstream", "bool")
_flag(["sd", "store_dir"], "store_dir", "str")
_flag(["tls"], "tls", "bool")
_flag(["tlsverify"], "tls_verify", "bool")
_flag(["tlscert"], "tls_cert", "str")
_flag(["tlskey"], "tls_key", "str")
_flag(["tlscacert"], "tls_ca_cert", "str")

# Flags of the Go server whose features come with later work: refused, never ignored.
_NOT_YET = {
    "routes": "clustering", "cluster": "clustering", "cluster_name": "clustering",
    "no_advertise": "clustering", "cluster_advertise": "clustering",
    "connect_retries": "clustering", "cluster_listen": "clustering",
    "profile": "profiling", "help_tls": "TLS help",
}
_NOT_YET_BOOL = {"help_tls"}

_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[Options, dict[str, object]]:
    """Returns the options and the actions asked for (help, version, check_config, signal).

    ``opts.cli_overrides`` records every option given explicitly: those win over the config
    file, at startup and on reload, as Go's second ``fs.Parse`` makes them win.
    """
    opts = Options()
    actions: dict[str, object] = {}
    explicit = opts.cli_overrides

    def put(attr, value):
        setattr(opts, attr, value)
        explicit[attr] = value
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
                put(attr, flag_value)
            elif kind == "combo":
                # Go: -DV sets debug and trace to its value, -VV trace and verbose trace.
                if "D" in attr:
                    put("debug", flag_value)
                put("trace", flag_value)
                if attr.endswith("VV"):
                    put("trace_verbose", flag_value)
            elif flag_value:
                actions[attr] = True
            continue
        if value is None:
            if i >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            value = argv[i]
            i += 1
        if kind == "int":
            try:
                put(attr, int(value))
            except ValueError:
                raise UsageError(f'invalid value "{value}" for flag -{name}: parse error') from None
        elif kind == "command":
            actions[attr] = value
        elif attr == "config_file":
            opts.config_file = value
        else:
            put(attr, value)
    return opts, actions


# ---------------------------------------------------------------------------- --signal

_SIGNALS = {"stop": "SIGKILL", "quit": "SIGINT", "reopen": "SIGUSR1", "reload": "SIGHUP",
            "ldm": "SIGUSR2", "term": "SIGTERM"}


def _running_servers(program: str) -> list[int]:
    """Pids of running servers started as ``program``: supervisors only, never their
    workers (Go: resolvePids, which asks pgrep)."""
    import subprocess

    try:
        out = subprocess.run(["pgrep", program], capture_output=True, text=True).stdout
    except OSError:
        raise SignalError("unable to resolve pid, try providing one") from None
    pids = []
    for line in out.splitlines():
        if not line.strip():
            continue
        try:
            pids.append(int(line))
        except ValueError:
            raise SignalError("unable to resolve pid, try providing one") from None
    me = os.getpid()
    found = set(pids)

    def parent(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return 0
    return [p for p in pids if p != me and parent(p) not in found]


class SignalError(Exception):
    pass


def send_signal(spec: str, program: str) -> None:
    """``--signal <command>[=<pid|pid file>]``, as Go's processSignal and ProcessSignal.

    Raises:
        SignalError: with Go's message.
    """
    import signal as _signal

    parts = spec.split("=")
    pid_expr = ""
    if len(parts) == 2:
        pid_expr = parts[1]
        try:
            with open(pid_expr) as f:  # a pid file, else the pid itself
                pid_expr = f.read()
        except OSError:
            pass
    elif len(parts) > 2:
        raise SignalError("invalid signal parameters: [" + " ".join(parts[2:]) + "]")
    command = parts[0]
    is_glob = pid_expr.endswith("*")
    pid_str = pid_expr[:-1] if is_glob else pid_expr
    pids = [0]
    if pid_str:
        try:
            pids = [int(pid_str)]
        except ValueError:
            raise SignalError(f"invalid pid: {pid_str}") from None
    if not pid_str or is_glob:
        pids = _running_servers(program)
    if len(pids) > 1 and not is_glob:
        raise SignalError(f"multiple {program} processes running:"
                          + "".join(f"\n{p}" for p in pids))
    if not pids:
        raise SignalError(f"no {program} processes running")
    if command not in _SIGNALS:
        raise SignalError(f'unknown signal "{command}"')
    signum = getattr(_signal, _SIGNALS[command])
    errors = ""
    for pid in pids:
        if pid_str and str(pid) != pid_str and not (is_glob and str(pid).startswith(pid_str)):
            continue
        try:
            os.kill(pid, signum)
        except OSError as exc:
            errors += f'\nsignal "{command}" {pid}: {exc.strerror.lower() if exc.strerror else exc}'
    if errors:
        raise SignalError(errors)


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
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "natsx"
    if program in ("__main__.py", "-c", "-m"):
        program = "natsx"
    if "signal" in actions:
        try:
            send_signal(str(actions["signal"]), program)
        except SignalError as exc:
            print(f"nats-server: {exc}", file=sys.stderr)
            return 1
        return 0

    from natsx.server.config_options import (ConfigProcessError, apply_tls_flags,
                                             load_options, validate_options)
    from natsx.server.tls import TLS_TIMEOUT

    if opts.config_file:
        try:
            opts, warnings = load_options(opts.config_file, opts.cli_overrides)
        except ConfigProcessError as exc:
            print(f"nats-server: {exc}", file=sys.stderr)
            return 1
        if "check_config" in actions:
            if warnings:  # Go's -t fails on warnings too
                print("nats-server: " + "".join(w + "\n" for w in warnings), file=sys.stderr)
                return 1
            print(f"nats-server: configuration file {opts.config_file} is valid "
                  f"({opts.config_digest})", file=sys.stderr)
            return 0
        if warnings:
            sys.stderr.write("".join(w + "\n" for w in warnings))
    elif "check_config" in actions:
        print("nats-server: must specify [-c, --config] option to check configuration file "
              "syntax", file=sys.stderr)
        return 1
    else:
        try:
            apply_tls_flags(opts)
        except ConfigProcessError as exc:
            print(f"nats-server: {exc.errors[0]}", file=sys.stderr)
            return 1
        if opts.tls_timeout == 0:
            opts.tls_timeout = TLS_TIMEOUT
        if opts.tls_config is not None:
            opts.auth_timeout = opts.tls_timeout + 1.0   # Go: getDefaultAuthTimeout
    try:
        validate_options(opts)
    except ConfigProcessError as exc:
        print(f"nats-server: {exc.errors[0]}", file=sys.stderr)
        return 1
    if opts.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 1

    from natsx import logs
    from natsx.supervisor.arbiter import Arbiter, MonitorConfigError

    try:
        logs.setup(debug=opts.debug, trace=opts.trace, logtime=opts.logtime,
                   log_file=opts.log_file, logtime_utc=opts.logtime_utc, syslog=opts.syslog,
                   remote_syslog=opts.remote_syslog, log_size_limit=opts.log_size_limit,
                   log_max_num=opts.log_max_num)
    except ValueError as exc:
        print(time.strftime("%Y/%m/%d %H:%M:%S"), exc, file=sys.stderr)
        return 1
    except OSError as exc:
        # Go's log.Fatalf texts (logger/log.go, logger/syslog.go).
        if opts.log_file:
            why = f"error opening file: open {opts.log_file}: {(exc.strerror or str(exc)).lower()}"
        else:
            why = 'error connecting to syslog: "%s"' % exc
        print(time.strftime("%Y/%m/%d %H:%M:%S"), why, file=sys.stderr)
        return 1
    try:
        return Arbiter(opts, program).run()
    except MonitorConfigError as exc:
        import logging

        logging.getLogger("natsx").critical("Can't start monitoring: %s", exc)
        return 1
    except OSError as exc:
        import logging

        logging.getLogger("natsx").critical("Error listening on port: %s:%d, %s",
                                            opts.host, opts.port, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
