"""The original frp_adapter REST API and the versioned read API, on a real SQLite store."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from tests.support import settings_for

Client = TestClient[web.Request, web.Application]
CREATE = {"frp_server_ip_address": "198.51.100.1", "unique_id": "abc123", "port": "16022"}


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(settings_for(tmp_path)))


async def fetch(client: Client, name: str = "nodemaintenances-abc123") -> tuple[int, Any]:
    resp = await client.get(f"/frp_fetch/{name}")
    return resp.status, await resp.json()


async def everything(client: Client) -> Any:
    resp = await client.get("/api/v1/nodes")
    assert resp.status == 200
    return await resp.json()


async def test_home_answers_as_the_original(client: Client) -> None:
    resp = await client.get("/")
    assert await resp.json() == {"code": 200, "data": "Frp Adapter Is Working Now...."}


async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200


@pytest.mark.parametrize("how", ["query", "form", "json", "query with empty json body"])
async def test_frp_create_takes_its_parameters_every_way_the_original_was_called(
    client: Client, how: str
) -> None:
    if how == "query":
        resp = await client.post("/frp_create", params=CREATE)
    elif how == "form":
        resp = await client.post("/frp_create", data=CREATE)
    elif how == "json":
        resp = await client.post("/frp_create", json={**CREATE, "port": 16022})
    else:
        resp = await client.post(
            "/frp_create", params=CREATE, headers={"Content-Type": "application/json"}
        )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "code": 200,
        "data": "create nodemaintenances-abc123 successfully",
    }
    assert await fetch(client) == (
        200,
        {
            "code": 200,
            "data": {
                "frp_server_ip_address": "198.51.100.1",
                "proxy_port": "16022",
                "status": "online",
            },
        },
    )


async def test_frp_create_records_mac_address_and_host_name(client: Client) -> None:
    params = {**CREATE, "mac_address": "52:54:00:12:34:56", "host_name": "edge-1"}
    resp = await client.post("/frp_create", data=params)
    assert resp.status == 200
    resp = await client.get("/api/v1/nodes/nodemaintenances-abc123")
    spec = (await resp.json())["spec"]
    assert (spec["macAddress"], spec["hostName"]) == ("52:54:00:12:34:56", "edge-1")


async def test_frp_update_creates_a_missing_node_then_updates_it(client: Client) -> None:
    resp = await client.put("/frp_update", params={**CREATE, "status": "offline"})
    assert await resp.json() == {"code": 200, "data": "Update Successfully"}
    assert (await fetch(client))[1]["data"]["status"] == "offline"
    resp = await client.put(
        "/frp_update", data={"unique_id": "abc123", "status": "online", "port": "16030"}
    )
    assert resp.status == 200
    data = (await fetch(client))[1]["data"]
    assert data == {
        "frp_server_ip_address": "198.51.100.1",
        "proxy_port": "16030",
        "status": "online",
    }


async def test_frp_update_never_overwrites_the_bind_status_another_controller_owns(
    client: Client, tmp_path: Path
) -> None:
    await client.post("/frp_create", data=CREATE)
    with closing(sqlite3.connect(tmp_path / "frpa.db", isolation_level=None)) as other_controller:
        (body,) = other_controller.execute("SELECT body FROM nodemaintenances").fetchone()
        obj = json.loads(body)
        obj["status"]["bindStatus"] = {"phase": "Bound", "nodeDeploymentReference": "nd-1"}
        other_controller.execute("UPDATE nodemaintenances SET body = ?", (json.dumps(obj),))
    await client.put("/frp_update", data={"unique_id": "abc123", "status": "offline"})
    with closing(sqlite3.connect(tmp_path / "frpa.db", isolation_level=None)) as db:
        (body,) = db.execute("SELECT body FROM nodemaintenances").fetchone()
    status = json.loads(body)["status"]
    assert status["bindStatus"]["phase"] == "Bound"
    assert status["services"][0]["status"] == "offline"


async def test_nm_useless_marks_every_node_offline(client: Client) -> None:
    for uid in ("a1", "b2", "c3"):
        await client.post("/frp_create", data={**CREATE, "unique_id": uid})
    resp = await client.put("/nm_useless")
    assert await resp.json() == {"code": 200, "data": "3 nodemaintenances are offline now"}
    resp = await client.get("/api/v1/nodes", params={"status": "online"})
    assert (await resp.json())["items"] == []
    resp = await client.get("/api/v1/nodes", params={"status": "offline"})
    assert len((await resp.json())["items"]) == 3


async def test_frp_fetch_of_an_unknown_node_is_404_as_the_original(client: Client) -> None:
    status, body = await fetch(client, "nodemaintenances-nope")
    assert status == 404
    assert body["code"] == 404
    assert "not found" in body["error"]["message"]


BAD_CREATES: list[tuple[str, dict[str, str], str]] = [
    ("missing unique_id", {"frp_server_ip_address": "1.2.3.4", "port": "1"}, "unique_id"),
    ("port not a number", {**CREATE, "port": "ssh"}, "port"),
    ("port out of range", {**CREATE, "port": "70000"}, "port"),
    ("invalid unique_id", {**CREATE, "unique_id": "UPPER_case"}, "unique_id"),
    ("unknown key", {**CREATE, "colour": "red"}, "colour"),
]


@pytest.mark.parametrize(
    ("params", "word"), [(p, w) for _, p, w in BAD_CREATES], ids=[i for i, _, _ in BAD_CREATES]
)
async def test_bad_rest_input_is_a_400_and_stores_nothing(
    client: Client, params: dict[str, str], word: str
) -> None:
    await client.post("/frp_create", data={**CREATE, "unique_id": "keep"})
    before = await everything(client)
    resp = await client.post("/frp_create", data=params)
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == 400
    assert word in body["error"]["message"]
    assert await everything(client) == before


@pytest.mark.parametrize(
    ("body", "headers", "word"),
    [
        (b"{broken", {"Content-Type": "application/json"}, "not valid JSON"),
        (b"[1]", {"Content-Type": "application/json"}, "must be an object"),
        (b"x=1", {"Content-Type": "text/plain"}, "unsupported Content-Type"),
    ],
)
async def test_bad_rest_bodies_are_a_400(
    client: Client, body: bytes, headers: dict[str, str], word: str
) -> None:
    resp = await client.put("/frp_update", data=body, headers=headers)
    assert resp.status == 400
    assert word in (await resp.json())["error"]["message"]
    assert (await everything(client))["items"] == []


async def test_frp_update_needs_a_valid_status(client: Client) -> None:
    resp = await client.put("/frp_update", data={**CREATE, "status": "sleeping"})
    assert resp.status == 400
    assert "status" in (await resp.json())["error"]["message"]


async def test_v1_rejects_an_unknown_status_filter(client: Client) -> None:
    resp = await client.get("/api/v1/nodes", params={"status": "maybe"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid query"
    assert "status" in body["details"]


async def test_v1_unknown_node_is_404(client: Client) -> None:
    resp = await client.get("/api/v1/nodes/nodemaintenances-nope")
    assert resp.status == 404
    assert await resp.json() == {"error": "not found", "details": {"name": "nodemaintenances-nope"}}
