"""JetStream asset versioning (Go 2.12, server/jetstream_versioning.go): the API level, the
``_nats.*`` metadata of streams and consumers, and the ``Nats-Required-Api-Level`` header.

Black-box against ``natsx -js --workers 2`` with raw ``$JS.API`` requests, so the metadata
is checked as it is on the wire (Go marshals the map with its keys in order).
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from natsx import SERVER_VERSION
from test_jetstream import async_test, connect, name, start

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jsv")
    srv = start(tmp, str(tmp / "store"), "--workers", "2")
    yield srv
    srv.stop()


async def raw(nc, subject: str, body=None, headers=None) -> tuple[bytes, dict]:
    data = b"" if body is None else json.dumps(body).encode()
    msg = await nc.request(subject, data, timeout=3, headers=headers)
    return msg.data, json.loads(msg.data)


def dynamic(req_level: str, **user) -> dict:
    return {"_nats.level": "2", "_nats.req.level": req_level, "_nats.ver": SERVER_VERSION,
            **user}


@async_test
async def test_account_info_reports_api_level_2(server):
    nc = await connect(server)
    try:
        _, info = await raw(nc, "$JS.API.INFO")
        assert info["api"]["level"] == 2
    finally:
        await nc.close()


@pytest.mark.parametrize("extra, level", [
    ({}, "0"),
    ({"allow_msg_ttl": True}, "1"),
    ({"subject_delete_marker_ttl": 2_000_000_000}, "1"),
    ({"allow_msg_counter": True}, "2"),
    ({"allow_msg_schedules": True}, "2"),
    ({"allow_atomic": True}, "2"),
    ({"persist_mode": "async"}, "2"),
])
@async_test
async def test_stream_metadata_names_the_level_its_features_require(server, extra, level):
    nc = await connect(server)
    s = name()
    try:
        body = {"name": s, "subjects": [s], "metadata": {"team": "a"}, **extra}
        data, created = await raw(nc, f"$JS.API.STREAM.CREATE.{s}", body)
        assert "error" not in created, created
        assert created["config"]["metadata"] == dynamic(level, team="a")
        # Go's map marshalling: keys in order.
        assert b'"metadata":{"_nats.level":"2","_nats.req.level":"%s","_nats.ver":"%s",' \
               b'"team":"a"}' % (level.encode(), SERVER_VERSION.encode()) in data
        _, info = await raw(nc, f"$JS.API.STREAM.INFO.{s}")
        assert info["config"]["metadata"] == dynamic(level, team="a")
        # A list answers with what is stored: no server version or level.
        _, listed = await raw(nc, "$JS.API.STREAM.LIST", {"subject": s})
        assert [st["config"]["metadata"] for st in listed["streams"]] == \
            [{"_nats.req.level": level, "team": "a"}]
    finally:
        await nc.close()


@async_test
async def test_dynamic_fields_sent_by_a_client_are_not_stored(server):
    nc = await connect(server)
    s = name()
    try:
        meta = {"_nats.ver": "9.9.9", "_nats.level": "99", "_nats.req.level": "7"}
        _, created = await raw(nc, f"$JS.API.STREAM.CREATE.{s}",
                               {"name": s, "subjects": [s], "metadata": meta})
        assert created["config"]["metadata"] == dynamic("0")
        _, listed = await raw(nc, "$JS.API.STREAM.LIST", {"subject": s})
        assert listed["streams"][0]["config"]["metadata"] == {"_nats.req.level": "0"}
    finally:
        await nc.close()


@async_test
async def test_a_repeated_create_ignores_the_versioning_fields(server):
    nc = await connect(server)
    s = name()
    try:
        body = {"name": s, "subjects": [s]}
        _, first = await raw(nc, f"$JS.API.STREAM.CREATE.{s}", body)
        # What the create answered, sent back as is (with this server's version and
        # level in it), is the same stream: no error.
        _, again = await raw(nc, f"$JS.API.STREAM.CREATE.{s}", first["config"])
        assert "error" not in again, again
        _, other = await raw(nc, f"$JS.API.STREAM.CREATE.{s}", dict(body, max_msgs=5))
        assert other["error"]["err_code"] == 10058
        # An update raises the stored level with the features.
        _, updated = await raw(nc, f"$JS.API.STREAM.UPDATE.{s}",
                               dict(body, allow_msg_ttl=True))
        assert updated["config"]["metadata"]["_nats.req.level"] == "1"
    finally:
        await nc.close()


@async_test
async def test_consumer_metadata_create_info_list_and_pause(server):
    nc = await connect(server)
    s = name()
    try:
        await raw(nc, f"$JS.API.STREAM.CREATE.{s}", {"name": s, "subjects": [s]})
        _, c = await raw(nc, f"$JS.API.CONSUMER.CREATE.{s}.D",
                         {"stream_name": s, "config": {"durable_name": "D",
                                                       "ack_policy": "explicit",
                                                       "metadata": {"k": "v"}}})
        assert c["config"]["metadata"] == dynamic("0", k="v")
        _, p = await raw(nc, f"$JS.API.CONSUMER.CREATE.{s}.P",
                         {"stream_name": s, "config": {
                             "durable_name": "P", "ack_policy": "explicit",
                             "priority_policy": "overflow", "priority_groups": ["g"]}})
        assert p["config"]["metadata"] == dynamic("1")
        # Paused: the consumer needs level 1.
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        _, paused = await raw(nc, f"$JS.API.CONSUMER.PAUSE.{s}.D", {"pause_until": until})
        assert paused["paused"] is True
        _, info = await raw(nc, f"$JS.API.CONSUMER.INFO.{s}.D")
        assert info["config"]["metadata"] == dynamic("1", k="v")
        _, listed = await raw(nc, f"$JS.API.CONSUMER.LIST.{s}")
        assert {ci["name"]: ci["config"]["metadata"] for ci in listed["consumers"]} == \
            {"D": {"_nats.req.level": "1", "k": "v"}, "P": {"_nats.req.level": "1"}}
        # Resumed: back to 0.
        await raw(nc, f"$JS.API.CONSUMER.PAUSE.{s}.D", {})
        _, info = await raw(nc, f"$JS.API.CONSUMER.INFO.{s}.D")
        assert info["config"]["metadata"]["_nats.req.level"] == "0"
        # A repeated create with the answered config is the same consumer.
        cfg = dict(c["config"])
        _, again = await raw(nc, f"$JS.API.CONSUMER.CREATE.{s}.D",
                             {"stream_name": s, "config": cfg, "action": "create"})
        assert "error" not in again, again
    finally:
        await nc.close()


@pytest.mark.parametrize("level, refused", [
    ("1", False), ("2", False), ("+2", False), ("3", True), ("x", True), ("2.0", True),
])
@async_test
async def test_required_api_level_header(server, level, refused):
    nc = await connect(server)
    try:
        for subject, body in (("$JS.API.INFO", None), ("$JS.API.STREAM.NAMES", {})):
            _, resp = await raw(nc, subject, body, headers={"Nats-Required-Api-Level": level})
            if refused:
                assert resp["error"] == {"code": 412, "err_code": 10185,
                                         "description": "JetStream minimum api level required"}
            else:
                assert "error" not in resp, resp
        s = name()
        _, created = await raw(nc, f"$JS.API.STREAM.CREATE.{s}", {"name": s, "subjects": [s]},
                               headers={"Nats-Required-Api-Level": level})
        _, names = await raw(nc, "$JS.API.STREAM.NAMES", {"subject": s})
        assert (names["streams"] is None) == refused
    finally:
        await nc.close()


def test_stored_level_survives_a_restart(tmp_path):
    store = str(tmp_path / "store")
    s = name()

    async def create(srv):
        nc = await connect(srv)
        try:
            await raw(nc, f"$JS.API.STREAM.CREATE.{s}",
                      {"name": s, "subjects": [s], "allow_msg_ttl": True})
        finally:
            await nc.close()

    async def listed(srv):
        nc = await connect(srv)
        try:
            _, out = await raw(nc, "$JS.API.STREAM.LIST", {"subject": s})
            return out["streams"][0]["config"]["metadata"]
        finally:
            await nc.close()

    srv = start(tmp_path, store)
    try:
        asyncio.run(create(srv))
    finally:
        srv.stop()
    srv = start(tmp_path, store)
    try:
        assert asyncio.run(listed(srv)) == {"_nats.req.level": "1"}
    finally:
        srv.stop()
