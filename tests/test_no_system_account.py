"""``no_system_account``: no ``$SYS`` account and none of its services, as in Go.

Each check runs against natsx and the Go server with the same config file: the system
imports given to the other accounts (``$SYS.REQ.ACCOUNT.PING.CONNZ``) stop answering, the
monitoring endpoints stop naming a system account, and without the option both servers
answer as before.
"""
from __future__ import annotations

import asyncio

import httpx
import nats
import pytest

from natsx.cli import parse_args
from natsx.server.config_options import load_options

pytestmark = pytest.mark.server


@pytest.mark.parametrize("key", ["no_system_account", "no_system", "no_sys_acc"])
def test_keys_set_the_option(tmp_path, key):
    path = tmp_path / "n.conf"
    path.write_text(f"{key}: true\n")
    assert load_options(str(path))[0].no_system_account is True
    assert parse_args([])[0].no_system_account is False


async def _connz_ping_answered(url: str) -> bool:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        await nc.request("$SYS.REQ.ACCOUNT.PING.CONNZ", b"", timeout=2)
        return True
    except nats.errors.NoRespondersError:
        return False
    finally:
        await nc.close()


@pytest.mark.parametrize("server", ["natsx", "go"])
@pytest.mark.parametrize("disabled", [True, False])
def test_no_system_account_removes_its_services(server, disabled, start_natsx, start_go,
                                                  tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text(f"no_system_account: {str(disabled).lower()}\n")
    srv = (start_natsx if server == "natsx" else start_go)("-c", str(conf))
    answered = asyncio.run(asyncio.wait_for(_connz_ping_answered(srv.url), 20))
    assert answered is not disabled
    base = f"http://127.0.0.1:{srv.http_port}"
    varz = httpx.get(f"{base}/varz").json()
    accountz = httpx.get(f"{base}/accountz").json()
    if disabled:
        assert "system_account" not in varz and "system_account" not in accountz
        assert "$SYS" not in accountz["accounts"]
    else:
        assert varz["system_account"] == accountz["system_account"] == "$SYS"
        assert "$SYS" in accountz["accounts"]


@pytest.mark.parametrize("server", ["natsx", "go"])
def test_a_configured_system_account_wins_over_the_option(server, start_natsx, start_go,
                                                          tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text("no_system_account: true\nsystem_account: SYS\n"
                    "accounts { SYS { users [{user: s, password: s}] } }\n")
    srv = (start_natsx if server == "natsx" else start_go)("-c", str(conf))
    varz = httpx.get(f"http://127.0.0.1:{srv.http_port}/varz").json()
    assert varz["system_account"] == "SYS"
