"""``write_timeout`` (Go 2.11+ write deadline policy) and ``no_fast_producer_stall``.

The Go oracle here (2.9) predates both keys, so these are checked against Go's source:
/varz's ``write_timeout`` (omitted for the default policy), the reload texts, and the
policy's effect on a client that stops reading.
"""
from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

pytestmark = pytest.mark.server


def _wait_log(srv, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while text not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    return srv.log()


@pytest.mark.parametrize("policy, shown", [("retry", "retry"), ("close", "close"),
                                           ("default", None)])
def test_varz_shows_the_write_timeout_policy(start_natsx, tmp_path, policy, shown):
    conf = tmp_path / "w.conf"
    conf.write_text(f"write_timeout: {policy}\n")
    srv = start_natsx("-c", str(conf))
    varz = httpx.get(f"http://127.0.0.1:{srv.http_port}/varz").json()
    assert varz.get("write_timeout") == shown
    keys = list(varz)
    if shown:
        assert keys.index("write_timeout") == keys.index("write_deadline") + 1


def test_write_timeout_reload_is_refused_as_go_does(start_natsx, tmp_path):
    conf = tmp_path / "w.conf"
    conf.write_text("write_timeout: close\n")
    srv = start_natsx("-c", str(conf))
    conf.write_text("write_timeout: retry\n")
    srv.proc.send_signal(signal.SIGHUP)
    assert "config reload not supported for WriteTimeout: old=close, new=retry" in \
        _wait_log(srv, "WriteTimeout")


@pytest.mark.parametrize("value, text", [("true", "fast producers will not be stalled"),
                                         ("false", "fast producers will be stalled")])
def test_no_fast_producer_stall_reload_is_logged_as_go_does(start_natsx, tmp_path, value, text):
    conf = tmp_path / "s.conf"
    conf.write_text(f"no_fast_producer_stall: {'false' if value == 'true' else 'true'}\n")
    srv = start_natsx("-c", str(conf))
    conf.write_text(f"no_fast_producer_stall: {value}\n")
    srv.proc.send_signal(signal.SIGHUP)
    assert f"[INF] Reloaded: {text}" in _wait_log(srv, "Reloaded server configuration")
