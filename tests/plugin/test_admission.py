"""Admission of frpc: registered nodes only, per-node tokens, allowed SSH ports."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.app import create_app
from api.state import STATE
from nodes.model import OFFLINE, ONLINE, UniqueId
from nodes.registry import NodeRegistry
from plugin import webhook
from tests.clock import FakeClock
from tests.support import (
    FakeDashboard,
    app_with_dashboard,
    bearer,
    clock_of,
    close_proxy,
    eventually,
    login,
    new_proxy,
    online,
    ping,
    settings_for,
    tokens_file,
)

Client = TestClient[web.Request, web.Application]
GRACE = settings_for(Path()).close_grace_period
TIMEOUT = settings_for(Path()).heartbeat_timeout
INTERVAL = settings_for(Path()).reconcile_interval


async def adapter(aiohttp_client: AiohttpClient, tmp_path: Path, **settings: Any) -> Client:
    app = create_app(settings_for(tmp_path, api_tokens_file=str(tokens_file(tmp_path)), **settings))
    return await aiohttp_client(app, headers=bearer("admin"))


async def answer(client: Client, body: dict[str, Any]) -> str | None:
    """None when frps may go on, else the reject reason."""
    resp = await client.post("/frps/handler", json=body)
    reply = await resp.json()
    return reply["reject_reason"] if reply["reject"] else None


def login_with_token(unique_id: str, token: str) -> dict[str, Any]:
    body = login("edge", unique_id)
    body["content"]["metas"]["token"] = token
    return body


async def test_only_registered_nodes_may_log_in(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await adapter(aiohttp_client, tmp_path, require_registered=True)
    reason = await answer(client, login("edge", "newcomer"))
    assert reason == (
        "Login refused: node newcomer is not registered: an administrator must create its "
        "NodeMaintenance first"
    )
    form = {"frp_server_ip_address": "198.51.100.1", "unique_id": "newcomer", "port": 16022}
    assert (await client.post("/frp_create", data=form)).status == 200
    assert await answer(client, login("edge", "newcomer")) is None


async def test_a_node_logs_in_only_with_its_own_token(
    tmp_path: Path, aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await adapter(aiohttp_client, tmp_path, node_tokens=True)
    assert await answer(client, login_with_token("edge-1", "guess")) == (
        "Login refused: node edge-1 has no frpc token issued"
    )
    resp = await client.post("/api/v1/nodes/nodemaintenances-edge-1/frpc-token")
    assert resp.status == 200
    token = (await resp.json())["token"]
    other = (await (await client.post("/api/v1/nodes/nodemaintenances-edge-2/frpc-token")).json())[
        "token"
    ]
    assert await answer(client, login_with_token("edge-1", token)) is None
    assert await answer(client, login_with_token("edge-1", other)) == (
        "Login refused: node edge-1: metadatas.token is not this node's token"
    )
    assert await answer(client, login("edge", "edge-1")) is not None  # no token at all

    resp = await client.get("/api/v1/nodes/nodemaintenances-edge-1")
    stored = await resp.json()
    assert stored["status"]["frpcTokenHash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(stored)
    assert token not in caplog.text

    # A new token replaces the old one.
    resp = await client.post("/api/v1/nodes/nodemaintenances-edge-1/frpc-token")
    assert await answer(client, login_with_token("edge-1", token)) is not None
    assert await answer(client, login_with_token("edge-1", (await resp.json())["token"])) is None
    resp = await client.post(
        "/api/v1/nodes/nodemaintenances-edge-1/frpc-token", headers=bearer("operator")
    )
    assert resp.status == 403


async def test_ssh_ports_stay_in_range_and_with_their_node(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await adapter(aiohttp_client, tmp_path, allowed_ports=range(16000, 17000))
    assert await answer(client, new_proxy("a", "a", port=22)) == (
        "NewProxy refused: remote port 22 is outside the allowed 16000-16999"
    )
    assert await answer(client, new_proxy("a", "a", port=16001)) is None
    assert await answer(client, new_proxy("b", "b", port=16001)) == (
        "NewProxy refused: remote port 16001 is held by node a"
    )
    assert await answer(client, new_proxy("a", "a", port=16001, run_id="r2")) is None  # its own
    assert await answer(client, new_proxy("b", "b", port=None)) is None  # frps picks
    # Not the SSH proxy: not ours to judge.
    assert await answer(client, new_proxy("b", "b", proxy="web", port=80)) is None


@pytest.mark.parametrize("rule", ["require_registered", "node_tokens"])
async def test_a_frpc_that_names_no_node_is_refused_only_where_registration_is_required(
    tmp_path: Path, aiohttp_client: AiohttpClient, rule: str, caplog: pytest.LogCaptureFixture
) -> None:
    anonymous = login(name="", unique_id=None)
    (tmp_path / "open").mkdir()
    assert await answer(await adapter(aiohttp_client, tmp_path / "open"), anonymous) is None
    client = await adapter(aiohttp_client, tmp_path, **{rule: True})
    refusal = (
        "Login refused: only registered nodes may log in, this frpc names none: unique_id is empty"
    )
    with caplog.at_level(logging.WARNING, logger="plugin.webhook"):
        for _ in range(3):  # it tries again and again: said once
            assert await answer(client, anonymous) == refusal
    assert [r.getMessage() for r in caplog.records if refusal in r.getMessage()] == [
        f"frpc unknown: {refusal}; said once per frpc and reason"
    ]


async def test_what_is_said_once_is_said_again_once_the_memory_of_it_is_full(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fleet of refused frpc cannot grow the memory: it starts over when full."""
    monkeypatch.setattr(webhook, "_TOLD_MEMORY", 2)
    client = await adapter(aiohttp_client, tmp_path, require_registered=True)
    with caplog.at_level(logging.WARNING, logger="plugin.webhook"):
        for name in ("a", "b", "a", "b", "c", "a"):
            assert await answer(client, login(name=name, unique_id=None)) is not None
    said = [r.getMessage().partition(":")[0] for r in caplog.records]
    assert said == ["a", "b", "c", "a"]


async def test_a_port_is_free_again_once_its_node_moves_closes_it_or_falls_silent(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    settings = settings_for(
        tmp_path, allowed_ports=range(16000, 17000), heartbeat_persist_interval=0
    )
    client = await aiohttp_client(create_app(settings, clock=FakeClock()))
    registry, clock = client.app[STATE].adapter.registry, clock_of(client)
    assert await answer(client, new_proxy("a", "a", port=16001)) is None
    # frpc logs in again, a new process, and asks for another port.
    assert await answer(client, new_proxy("a", "a", port=16002, run_id="r2")) is None
    assert await answer(client, new_proxy("b", "b", port=16001)) is None
    assert await answer(client, new_proxy("c", "c", port=16002)) == (
        "NewProxy refused: remote port 16002 is held by node a"
    )

    await clock.advance(GRACE)
    assert await answer(client, close_proxy("a", "a", run_id="r2")) is None
    await clock.advance(GRACE)
    await eventually(status_is(registry, "a", OFFLINE), what="a offline after its CloseProxy")
    assert await answer(client, new_proxy("c", "c", port=16002)) is None

    assert await answer(client, ping("b", "b")) is None
    await clock.advance(TIMEOUT + TIMEOUT / 3)  # silence is judged every third of it
    await eventually(status_is(registry, "b", OFFLINE), what="b offline once silent")
    assert await answer(client, new_proxy("d", "d", port=16001)) is None


async def test_a_restarted_adapter_knows_the_ports_its_stored_nodes_hold_until_one_is_deleted(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    first = await adapter(aiohttp_client, tmp_path, allowed_ports=range(16000, 17000))
    assert await answer(first, new_proxy("a", "a", port=16001)) is None
    await first.app[STATE].adapter.writer.drained()
    await first.close()

    second = await adapter(aiohttp_client, tmp_path, allowed_ports=range(16000, 17000))
    await second.app[STATE].adapter.loaded
    assert await answer(second, new_proxy("b", "b", port=16001)) == (
        "NewProxy refused: remote port 16001 is held by node a"
    )
    second.app[STATE].adapter.registry.observe_deletion(
        "nodemaintenances-a"
    )  # as a store's watch tells
    assert await answer(second, new_proxy("b", "b", port=16001)) is None


async def test_a_port_reconciliation_moved_or_freed_is_judged_as_frps_has_it(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    dashboard = FakeDashboard()
    dashboard.proxies = {"a.ssh": online(16001)}
    client = await app_with_dashboard(
        tmp_path,
        aiohttp_client,
        aiohttp_server,
        dashboard,
        clock=FakeClock(),
        allowed_ports=range(16000, 17000),
    )
    registry, clock = client.app[STATE].adapter.registry, clock_of(client)
    assert await answer(client, new_proxy("a", "a", port=16001)) is None
    await eventually(status_is(registry, "a", ONLINE), what="a confirmed by frps")

    # frps moved a's proxy while its events were lost.
    dashboard.proxies = {"a.ssh": online(16011), "b.ssh": online(16001)}
    await clock.advance(INTERVAL)
    await eventually(port_is(registry, "a", 16011), what="a's port reconciled")
    assert await answer(client, new_proxy("b", "b", port=16001)) is None
    assert await answer(client, new_proxy("c", "c", port=16011)) == (
        "NewProxy refused: remote port 16011 is held by node a"
    )

    dashboard.proxies = {"a.ssh": {"status": "offline", "conf": None}, "b.ssh": online(16001)}
    await clock.advance(INTERVAL)
    await eventually(status_is(registry, "a", OFFLINE), what="a offline as frps has it")
    assert await answer(client, new_proxy("c", "c", port=16011)) is None


def status_is(registry: NodeRegistry, uid: str, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        state = registry.get(UniqueId(uid))
        return state is not None and state.status == status

    return check


def port_is(registry: NodeRegistry, uid: str, port: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        state = registry.get(UniqueId(uid))
        return state is not None and state.remote_port == port

    return check
