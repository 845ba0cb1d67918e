"""`GET /api/v1/nodes?watch=true`: every node, then every change, in order, as NDJSON; a
reader that falls too far behind is dropped with an error instead of costing memory."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from nodes.model import NodeChange, UniqueId
from nodes.watch import QUEUE_SIZE
from tests.support import new_proxy, settings_for

Client = TestClient[web.Request, web.Application]


async def next_event(stream: Any) -> dict[str, Any]:
    while True:
        line = await asyncio.wait_for(stream.readline(), 10)
        assert line, "the stream ended"
        event: dict[str, Any] = json.loads(line)
        if event["type"] != "BOOKMARK":
            return event


def change(client: Client, uid: str, port: int) -> None:
    client.app[STATE].adapter.registry.transition(
        UniqueId(uid),
        NodeChange(reason="Test", at=datetime.now(UTC), status="online", remote_port=port),
    )


async def test_a_watch_lists_every_node_then_streams_each_change_in_order(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    await client.post("/frps/handler", json=new_proxy("a", "aaa"))
    async with client.get("/api/v1/nodes", params={"watch": "true"}) as resp:
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        first = await next_event(resp.content)
        assert (first["type"], first["object"]["metadata"]["name"]) == (
            "ADDED",
            "nodemaintenances-aaa",
        )
        await client.post("/frps/handler", json=new_proxy("b", "bbb"))
        added = await next_event(resp.content)
        assert (added["type"], added["object"]["metadata"]["name"]) == (
            "ADDED",
            "nodemaintenances-bbb",
        )
        for port in range(20000, 21000):  # a burst: not one lost, none out of order
            change(client, "aaa", port)
        for port in range(20000, 21000):
            event = await next_event(resp.content)
            assert event["type"] == "MODIFIED"
            assert event["object"]["spec"]["services"][0]["proxyPort"] == str(port)
        # A deletion seen while our own write of the node is queued is ignored, by design.
        await client.app[STATE].adapter.writer.flushed(UniqueId("bbb"))
        client.app[STATE].adapter.registry.observe_deletion("nodemaintenances-bbb")
        deleted = await next_event(resp.content)
        assert (deleted["type"], deleted["object"]["metadata"]["name"]) == (
            "DELETED",
            "nodemaintenances-bbb",
        )


async def test_a_reader_that_falls_behind_is_told_to_list_again_and_costs_no_more(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    registry = client.app[STATE].adapter.registry
    async with client.get("/api/v1/nodes", params={"watch": "true"}) as resp:
        # Changes far beyond the queue and the sockets' buffers, and no reading meanwhile.
        for port in range(10 * QUEUE_SIZE):
            change(client, "busy", 10000 + port % 50000)
            if port % 100 == 0:
                await asyncio.sleep(0)
        lines = (await asyncio.wait_for(resp.content.read(), 30)).splitlines()
    last = json.loads(lines[-1])
    assert last == {
        "type": "ERROR",
        "object": {"code": 410, "reason": "Expired", "message": "fell behind: list again"},
    }
    assert len(lines) < 10 * QUEUE_SIZE
    assert registry.watchers == 0
