"""Every plugin call real frps 0.65 made for the corpus's frpc configurations, replayed byte
for byte: each is allowed, nothing is logged as unreadable or failed, and exactly the frpc
that name a node with an SSH proxy become nodes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.keys import PLUGINS, REGISTRY, WRITER
from tests import corpus
from tests.support import FakeDashboard, app_with_dashboard, eventually, online

CALLS = corpus.load()


def test_the_corpus_covers_every_op_and_configuration() -> None:
    ops = {call["op"] for call in CALLS}
    assert ops == {"Login", "NewProxy", "CloseProxy", "Ping", "NewWorkConn", "NewUserConn"}
    assert {call["frpc"] for call in CALLS} == {conf.name for conf in corpus.FRPC_CONFIGS}
    assert any('"run_id"' in call["body"] for call in CALLS if call["op"] == "Login")


async def test_every_captured_call_is_allowed_and_none_is_unreadable(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    dashboard = FakeDashboard()  # knows the ports frps chose, as the real one did
    for port, call in enumerate(CALLS, 40000):
        content = json.loads(call["body"])["content"]
        if call["op"] == "NewProxy" and content["proxy_type"] == "tcp":
            dashboard.proxies[content["proxy_name"]] = online(port)
    client = await app_with_dashboard(tmp_path, aiohttp_client, aiohttp_server, dashboard)
    for call in CALLS:
        resp = await client.post(
            f"/frps/handler?version=0.1.0&op={call['op']}",
            data=call["body"].encode(),
            headers={"Content-Type": "application/json", "X-Frp-Reqid": "replay"},
        )
        assert resp.status == 200
        assert await resp.json() == {"reject": False, "unchange": True}, call
    registry = client.app[REGISTRY]
    expected = {conf.ssh_node for conf in corpus.FRPC_CONFIGS if conf.ssh_node}

    async def every_node_with_its_port() -> bool:
        return {s.unique_id for s in registry.states() if s.remote_port} == expected

    await eventually(every_node_with_its_port, what="every SSH node with its port")
    await client.app[WRITER].drained()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "api" not in r.name]
    assert set(client.app[PLUGINS].endpoints["default"].unhandled) <= {"unidentified", "not_ssh"}
    assert {s.unique_id for s in registry.states()} == expected
