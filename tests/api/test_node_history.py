"""`GET /api/v1/nodes/{nm_name}/history`: a node's recent status changes, latest first,
made here or read from the store, at most HISTORY of them."""

from __future__ import annotations

from pathlib import Path

from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from nodes.registry import HISTORY
from tests.support import bearer, new_proxy, settings_for, tokens_file

NODE = "nodemaintenances-abc123"


async def test_the_latest_changes_come_first_and_only_as_many_as_are_kept(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    settings = settings_for(tmp_path, api_tokens_file=str(tokens_file(tmp_path)))
    client = await aiohttp_client(create_app(settings), headers=bearer("admin"))
    for run in range(HISTORY):  # each login a new frpc process, each then set offline
        resp = await client.post("/frps/handler", json=new_proxy(run_id=f"run-{run}"))
        assert resp.status == 200
        resp = await client.put("/frp_update", data={"unique_id": "abc123", "status": "offline"})
        assert resp.status == 200
    # Heartbeats and labels change no status: no entry of their own.
    resp = await client.patch(
        f"/api/v1/nodes/{NODE}",
        json={"metadata": {"labels": {"site": "sh"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resp.status == 200, await resp.text()
    resp = await client.get(f"/api/v1/nodes/{NODE}/history")
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == NODE
    items = body["items"]
    assert len(items) == HISTORY
    assert [(i["status"], i["reason"]) for i in items[:2]] == [
        ("offline", "FrpUpdate"),
        ("online", "NewProxy"),
    ]
    times = [item["time"] for item in items]
    assert times == sorted(times, reverse=True)
    node = await (await client.get(f"/api/v1/nodes/{NODE}")).json()
    assert items[0]["time"] == node["status"]["lastTransitionTime"]

    # Unknown, and a name that is no node's: 404, as the node itself.
    for name in ("nodemaintenances-nope", "not-ours"):
        resp = await client.get(f"/api/v1/nodes/{name}/history")
        assert resp.status == 404


async def test_after_a_restart_the_stored_change_is_the_first(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    assert (await client.post("/frps/handler", json=new_proxy())).status == 200
    await client.app[STATE].adapter.writer.drained()
    stored = (await (await client.get(f"/api/v1/nodes/{NODE}")).json())["status"]
    await client.close()

    again = await aiohttp_client(create_app(settings_for(tmp_path)))
    resp = await again.get(f"/api/v1/nodes/{NODE}/history")
    assert resp.status == 200
    assert (await resp.json())["items"] == [
        {"time": stored["lastTransitionTime"], "status": "online", "reason": "NewProxy"}
    ]
