"""Admission of frpc: registered nodes only, per-node tokens, allowed SSH ports."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from tests.support import bearer, login, new_proxy, settings_for, tokens_file

Client = TestClient[web.Request, web.Application]


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
    tmp_path: Path, aiohttp_client: AiohttpClient, rule: str
) -> None:
    anonymous = login(name="", unique_id=None)
    (tmp_path / "open").mkdir()
    assert await answer(await adapter(aiohttp_client, tmp_path / "open"), anonymous) is None
    client = await adapter(aiohttp_client, tmp_path, **{rule: True})
    assert await answer(client, anonymous) == (
        "Login refused: only registered nodes may log in, this frpc names none: unique_id is empty"
    )
