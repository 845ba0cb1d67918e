"""Prometheus metrics on the app's own registry, after real plugin traffic."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from tests.support import free_port, login, new_proxy, plugin_body, settings_for


async def test_plugin_traffic_shows_in_the_metrics(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    for body in (
        login(),
        new_proxy(),
        new_proxy("n2", "n2"),
        login(unique_id="Bad_Id"),
        plugin_body("Whatever-an-attacker-sends", {}),
    ):
        await client.post("/frps/handler", json=body)
    await client.app[STATE].adapter.writer.drained()
    registry = client.app[STATE].metrics

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("frpa_plugin_requests_total", op="Login", result="allowed") == 2
    assert sample("frpa_plugin_requests_total", op="NewProxy", result="allowed") == 2
    assert sample("frpa_plugin_requests_total", op="invalid", result="allowed") == 1
    assert sample("frpa_plugin_unhandled_total", kind="unidentified") == 1
    assert sample("frpa_plugin_unhandled_total", kind="unreadable") == 1
    assert sample("frpa_plugin_unhandled_total", kind="error") == 0
    assert sample("frpa_nodes", status="online", frps="default") == 2
    assert sample("frpa_nodes", status="offline", frps="default") == 0
    assert sample("frpa_store_writes_total", backend="sqlite") == 2
    assert sample("frpa_store_write_failures_total", backend="sqlite") == 0
    assert sample("frpa_heartbeat_expiries_total") == 0
    assert (
        sample("frpa_http_request_duration_seconds_count", route="/frps/handler", method="POST")
        == 5
    )

    await client.get("/api/v1/nodes/nodemaintenances-abc123")
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200
    assert 'route="/api/v1/nodes/{nm_name}"' in text  # the template, never the raw path
    assert "nodemaintenances-abc123" not in text
    assert "Whatever-an-attacker-sends" not in text


async def test_metrics_can_have_a_port_of_their_own(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    port = free_port()
    client = await aiohttp_client(
        create_app(settings_for(tmp_path, metrics_address=("127.0.0.1", port)))
    )
    assert (await client.get("/metrics")).status == 404
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        assert "frpa_plugin_requests_total" in await resp.text()
