#!/usr/bin/env python3
"""Parse every config file of the Go server's test suite with natsx's parser.

Usage: check_go_configs.py NATS_SERVER_GIT_DIR [--rev REV] [--quiet]

The files under server/configs/ of a nats-server checkout (a bare git dir is enough)
are extracted with `git archive` into a temporary directory, so includes resolve as
they do for the Go tests, and each `.conf` is parsed the way the server parses it
(`parse_file_with_positions`, Go's ParseFileWithChecks), with no environment
variables set. One line per file, OK or ERROR(message), then a total. Files that
Go tests create at run time before parsing (FIXTURES) are written first.

Some of those files are broken on purpose; EXPECTED_FAILURES names them with the Go
test that relies on the failure. The exit status is 1 if any other file fails, or
if an expected failure now parses (the list has gone stale).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from natsx.config import ConfigError, parse_file_with_positions  # noqa: E402

CONFIG_DIR = "server/configs"

# path under server/configs -> why the Go server fails on it too
EXPECTED_FAILURES: dict[str, str] = {
    "malformed_cluster_address.conf": (
        "`listen: 266.0.0.1:foo` in a map: the IP-address lexer stops at 'f' and Go's"
        " lexer rejects the rest the same way; TestMalformedClusterAddress expects the error"
    ),
    "malformed_listen_address.conf": (
        "`listen: 10.0.1.22:foo` at top level, the same lexer error;"
        " TestMalformedListenAddress expects it"
    ),
    "reload/invalid.conf": (
        "`trace:` with no value, 'Expected value but found new line';"
        " TestConfigReloadInvalidConfig expects the reload to fail"
    ),
}

# Files that the Go tests write next to the configs before parsing them.
FIXTURES: dict[str, str] = {
    # TestConfigReload writes platform.conf (syslog settings, or nothing) for reload.conf.
    "reload/platform.conf": "",
}


def extract_configs(git_dir: str, rev: str, dest: str, config_dir: str = CONFIG_DIR) -> Path:
    """Write `rev:config_dir` of `git_dir` under `dest`; return the extracted directory."""
    tar_bytes = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", "--format=tar", rev, config_dir],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        tar.extractall(dest, filter="data")
    return Path(dest) / config_dir


def check(configs: Path) -> list[tuple[str, str | None]]:
    """Parse each .conf under `configs`; return (relative path, error or None) in path order."""
    paths = sorted(configs.rglob("*.conf"))
    for rel, text in FIXTURES.items():
        fixture = configs / rel
        if fixture.parent.is_dir() and not fixture.exists():
            fixture.write_text(text)
    results = []
    for path in paths:
        rel = path.relative_to(configs).as_posix()
        try:
            parse_file_with_positions(str(path), env={})
        except ConfigError as e:
            results.append((rel, str(e).replace(f"{configs}/", "")))
        else:
            results.append((rel, None))
    return results


def report(results: list[tuple[str, str | None]], out=sys.stdout, quiet: bool = False) -> int:
    """Print the per-file lines and the total; return the exit status."""
    unexpected = stale = 0
    for rel, err in results:
        expected = rel in EXPECTED_FAILURES
        if err is None:
            if expected:
                stale += 1
                print(f"OK    {rel}  (listed as an expected failure)", file=out)
            elif not quiet:
                print(f"OK    {rel}", file=out)
        else:
            note = "expected: " + EXPECTED_FAILURES[rel] if expected else "UNEXPECTED"
            unexpected += not expected
            print(f"ERROR {rel}: {err}  [{note}]", file=out)
    failed = sum(1 for _, err in results if err is not None)
    print(
        f"total: {len(results)} files, {len(results) - failed} parsed, {failed} failed "
        f"({failed - unexpected} expected, {unexpected} unexpected)",
        file=out,
    )
    return 1 if unexpected or stale else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("git_dir", help="a nats-server git directory (bare is fine)")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--path", default=CONFIG_DIR, help="folder of the checkout to check")
    ap.add_argument("--quiet", action="store_true", help="print only failures and the total")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="natsx-go-configs-") as tmp:
        configs = extract_configs(os.path.abspath(args.git_dir), args.rev, tmp, args.path)
        return report(check(configs), quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
