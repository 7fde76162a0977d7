"""The systemd unit and the example configuration in deploy/ are valid."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "natsx.service"
CONF = ROOT / "deploy" / "natsx.conf"


def test_example_config_passes_the_config_check():
    out = subprocess.run([sys.executable, "-m", "natsx", "-t", "-c", str(CONF)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "is valid" in out.stdout + out.stderr


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # Point ExecStart at this checkout's natsx so verify can check the binary exists.
    natsx = Path(sys.executable).with_name("natsx")
    assert natsx.exists(), "the natsx console script is not installed in this environment"
    unit = tmp_path / "natsx.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/natsx", str(natsx)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 0 and problems == [], problems


def test_unit_runs_the_supervisor_and_reloads_with_hup():
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/natsx -c /etc/natsx/natsx.conf" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "KillSignal=SIGTERM" in text
    assert "Restart=on-failure" in text
