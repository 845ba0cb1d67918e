"""Every plugin call real frps 0.65 made for the corpus's frpc configurations, replayed byte
for byte: each is allowed, nothing is logged as unreadable or failed, exactly the frpc
that name a node with an SSH proxy become nodes, and each frpc whose SSH proxy the adapter
does not take is warned of once, with its frpc.toml fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.state import STATE
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
    registry = client.app[STATE].adapter.registry
    expected = {conf.ssh_node for conf in corpus.FRPC_CONFIGS if conf.ssh_node}

    async def every_node_with_its_port() -> bool:
        return {s.unique_id for s in registry.states() if s.remote_port} == expected

    await eventually(every_node_with_its_port, what="every SSH node with its port")
    await client.app[STATE].adapter.writer.drained()
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "api" not in r.name
    ]
    fixes = [conf.fix for conf in corpus.FRPC_CONFIGS if conf.fix]
    assert len(warnings) == len(fixes), warnings
    for fix in fixes:
        assert len([w for w in warnings if fix in w]) == 1, (fix, warnings)
    unhandled = client.app[STATE].adapter.plugins.endpoints["default"].unhandled
    assert set(unhandled) <= {"unidentified", "not_ssh", "unrecognised_ssh"}
    # Each frpc logs in twice with one run_id (frps restarts under it): two calls, one line.
    warned = {conf.name for conf in corpus.FRPC_CONFIGS if conf.fix}
    misnamed = [
        call
        for call in CALLS
        if call["frpc"] in warned and call["op"] == "NewProxy" and '"tcp"' in call["body"]
    ]
    assert unhandled["unrecognised_ssh"] == len(misnamed) == 2 * len(warned)
    metric = client.app[STATE].metrics.get_sample_value(
        "frpa_plugin_unhandled_total", {"kind": "unrecognised_ssh"}
    )
    assert metric == len(misnamed)
    assert {s.unique_id for s in registry.states()} == expected
