"""`GET /api/v1/nodes` in pages, as Kubernetes lists are: `limit`, then `continue`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from tests.support import new_proxy, settings_for

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    # 25 nodes, every third offline; created out of name order.
    for i in reversed(range(25)):
        await client.post("/frps/handler", json=new_proxy(f"n{i:02}", f"n{i:02}", port=20000 + i))
        if i % 3 == 0:
            status = {"unique_id": f"n{i:02}", "status": "offline"}
            await client.put("/frp_update", data=status)
    await client.app[STATE].adapter.writer.drained()
    return client


async def pages(client: Client, **query: Any) -> list[list[str]]:
    """The names on each page, following `continue` to the end."""
    found: list[list[str]] = []
    while True:
        resp = await client.get("/api/v1/nodes", params=query)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        found.append([obj["metadata"]["name"] for obj in body["items"]])
        if "continue" not in body["metadata"]:
            return found
        query["continue"] = body["metadata"]["continue"]


async def test_pages_follow_each_other_in_name_order_to_the_last(client: Client) -> None:
    found = await pages(client, limit=10)
    assert [len(page) for page in found] == [10, 10, 5]
    names = [name for page in found for name in page]
    assert names == [f"nodemaintenances-n{i:02}" for i in range(25)]


async def test_a_page_holds_only_the_status_asked_for(client: Client) -> None:
    found = await pages(client, limit=4, status="offline")
    assert [len(page) for page in found] == [4, 4, 1]
    names = [name for page in found for name in page]
    assert names == [f"nodemaintenances-n{i:02}" for i in range(0, 25, 3)]


async def test_an_exact_last_page_says_there_is_no_more(client: Client) -> None:
    assert [len(page) for page in await pages(client, limit=25)] == [25]


async def test_without_a_limit_a_page_holds_up_to_500(client: Client) -> None:
    (page,) = await pages(client)
    assert len(page) == 25


async def test_a_node_created_between_pages_is_listed_in_its_place(client: Client) -> None:
    resp = await client.get("/api/v1/nodes", params={"limit": 10})
    token = (await resp.json())["metadata"]["continue"]
    await client.post("/frps/handler", json=new_proxy("n15a", "n15a", port=21000))
    resp = await client.get("/api/v1/nodes", params={"limit": 10, "continue": token})
    names = [obj["metadata"]["name"] for obj in (await resp.json())["items"]]
    assert names[5:7] == ["nodemaintenances-n15", "nodemaintenances-n15a"]


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "5001"}, {"limit": "x"}, {"continue": "%%%"}, {"continue": "QUJD"}],
)
async def test_a_bad_limit_or_token_is_a_400(client: Client, query: dict[str, str]) -> None:
    resp = await client.get("/api/v1/nodes", params=query)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid query"
