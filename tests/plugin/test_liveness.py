"""frps liveness, through the app on SQLite, on a clock the tests move: an frps that stops
answering takes its nodes offline after FRPA_FRPS_DOWN_AFTER, one that answers (even
with an error) or calls the plugin does not."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.app import create_app
from api.state import STATE
from nodes.model import NodeState, UniqueId, render_nm
from plugin.reconciler import RELOGIN_SETTLE_SECONDS
from tests.clock import FakeClock
from tests.support import (
    FakeDashboard,
    bearer,
    clock_of,
    eventually,
    free_port,
    new_proxy,
    node_status,
    online,
    ping,
    plugin_post,
    settings_for,
    tokens_file,
)

Client = TestClient[web.Request, web.Application]
DOWN_AFTER = 3.0
PERIOD = DOWN_AFTER / 3  # how often frps is probed


async def frps_on_readyz(client: Client) -> dict[str, Any]:
    resp = await client.get("/readyz")
    assert resp.status == 200  # an frps gone leaves the adapter ready
    found: dict[str, Any] = (await resp.json())["frps"]["default"]
    return found


def up(client: Client) -> float | None:
    return client.app[STATE].metrics.get_sample_value("frpa_frps_up", {"frps": "default"})


async def exec_on(client: Client, uid: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/api/v1/nodes/nodemaintenances-{uid}/exec", json={"cmd": "true"})
    return resp.status, await resp.json()


class Dashboard:
    """frps's dashboard on a port of its own, stopped and started again there."""

    def __init__(self, aiohttp_server: AiohttpServer, fake: FakeDashboard) -> None:
        self._serve = aiohttp_server
        self.fake = fake
        self.port = free_port()
        self._server: TestServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, app: web.Application | None = None) -> None:
        self._server = await self._serve(app or self.fake.app(), port=self.port)

    async def stop(self) -> None:
        assert self._server is not None
        await self._server.close()


@pytest.fixture
async def dashboard(aiohttp_server: AiohttpServer) -> Dashboard:
    served = Dashboard(aiohttp_server, FakeDashboard())
    served.fake.proxies = {"n1.ssh": online(16001), "n2.ssh": online(16002)}
    await served.start()
    return served


async def watched_app(
    tmp_path: Path, aiohttp_client: AiohttpClient, dashboard: Dashboard
) -> Client:
    settings = settings_for(
        tmp_path,
        frps_api=dashboard.url,
        frps_api_user="admin",
        frps_api_password="admin",
        frps_down_after=DOWN_AFTER,
        ssh_password="unused",
        api_tokens_file=str(tokens_file(tmp_path)),
    )
    return await aiohttp_client(create_app(settings, clock=FakeClock()), headers=bearer("admin"))


async def online_nodes(client: Client, *uids: str) -> None:
    for uid in uids:
        await plugin_post(client, new_proxy(uid, uid, port=16000 + int(uid[1:])))

    async def confirmed() -> bool:
        states = [client.app[STATE].adapter.registry.get(UniqueId(uid)) for uid in uids]
        return all(state is not None and state.status == "online" for state in states)

    await eventually(confirmed, what="nodes confirmed by frps")


async def test_an_frps_that_stops_answering_takes_its_nodes_offline_and_back_when_it_returns(
    tmp_path: Path, aiohttp_client: AiohttpClient, dashboard: Dashboard
) -> None:
    client = await watched_app(tmp_path, aiohttp_client, dashboard)
    clock = clock_of(client)
    await online_nodes(client, "n1", "n2")
    assert up(client) == 1
    assert (await frps_on_readyz(client))["reachable"] is True

    await dashboard.stop()  # refused from now on
    await clock.advance(2 * PERIOD)  # the NewProxy answered for frps at the first probe
    assert up(client) == 0
    seen = await frps_on_readyz(client)
    assert seen["reachable"] is False
    assert seen["down"] is False
    assert seen["unreachable_since"] == clock.now().isoformat()
    assert seen["probe_error"].endswith("/api/serverinfo: cannot connect: Connection refused")
    assert await node_status(client, "n1") == ("online", "NewProxy")  # not for long enough yet

    await clock.advance(DOWN_AFTER)
    assert await node_status(client, "n1") == ("offline", "FrpsUnreachable")
    assert await node_status(client, "n2") == ("offline", "FrpsUnreachable")
    assert (await frps_on_readyz(client))["down"] is True
    answer, body = await exec_on(client, "n1")
    assert answer == 503
    assert body["error"] == "frps unreachable"
    assert body["details"].startswith(f"frps default unreachable since {seen['unreachable_since']}")

    listings = dashboard.fake.listings
    await dashboard.start()
    await clock.advance(PERIOD)
    assert up(client) == 1
    assert (await frps_on_readyz(client))["reachable"] is True
    # No frpc logs in here: the reconciliation that follows its return brings them back.
    await clock.advance(RELOGIN_SETTLE_SECONDS)

    async def back() -> bool:
        return await node_status(client, "n1") == ("online", "Reconciled")

    await eventually(back, what="n1 back through the reconciliation after frps returned")
    assert dashboard.fake.listings == listings + 1


async def test_a_dashboard_that_answers_with_an_error_is_an_frps_alive(
    tmp_path: Path, aiohttp_client: AiohttpClient, dashboard: Dashboard
) -> None:
    client = await watched_app(tmp_path, aiohttp_client, dashboard)
    await online_nodes(client, "n1")
    await dashboard.stop()
    for status_code in (500, 401):
        failing = web.Application()

        async def fail(_: web.Request, status_code: int = status_code) -> web.Response:
            return web.Response(status=status_code, text="broken")

        failing.router.add_route("*", "/{tail:.*}", fail)
        await dashboard.start(failing)
        await clock_of(client).advance(3 * DOWN_AFTER)
        assert up(client) == 1
        assert (await frps_on_readyz(client))["reachable"] is True
        assert await node_status(client, "n1") == ("online", "NewProxy")
        await dashboard.stop()


async def test_plugin_calls_keep_an_frps_alive_whose_dashboard_cannot_be_reached(
    tmp_path: Path, aiohttp_client: AiohttpClient, dashboard: Dashboard
) -> None:
    client = await watched_app(tmp_path, aiohttp_client, dashboard)
    await online_nodes(client, "n1")
    await dashboard.stop()
    for _ in range(int(3 * DOWN_AFTER / PERIOD)):
        await plugin_post(client, ping("n2", "n2"))  # any frpc of that frps
        await clock_of(client).advance(PERIOD)
    assert await node_status(client, "n1") == ("online", "NewProxy")
    assert up(client) == 1


async def test_only_the_leader_takes_the_nodes_of_an_frps_gone_offline(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    dashboard: Dashboard,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await watched_app(tmp_path, aiohttp_client, dashboard)
    await online_nodes(client, "n1")
    monkeypatch.setattr(client.app[STATE].adapter.leadership, "leading", False)
    await dashboard.stop()
    await clock_of(client).advance(DOWN_AFTER + 2 * PERIOD)
    assert (await frps_on_readyz(client))["down"] is True
    assert await node_status(client, "n1") == ("online", "NewProxy")

    monkeypatch.setattr(client.app[STATE].adapter.leadership, "leading", True)
    await clock_of(client).advance(PERIOD)
    assert await node_status(client, "n1") == ("offline", "FrpsUnreachable")


async def test_without_a_dashboard_frps_is_watched_at_its_bind_port(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    port = free_port()

    async def frps() -> asyncio.Server:
        return await asyncio.start_server(lambda _, writer: writer.close(), "127.0.0.1", port)

    server = await frps()
    settings = settings_for(
        tmp_path, frps_address="127.0.0.1", frps_bind_port=port, frps_down_after=DOWN_AFTER
    )
    client = await aiohttp_client(create_app(settings, clock=FakeClock()))
    await plugin_post(client, new_proxy("n1", "n1"))
    await clock_of(client).advance(3 * DOWN_AFTER)
    assert await node_status(client, "n1") == ("online", "NewProxy")

    server.close()
    await server.wait_closed()
    await clock_of(client).advance(DOWN_AFTER + PERIOD)
    assert await node_status(client, "n1") == ("offline", "FrpsUnreachable")
    assert f"connect to 127.0.0.1:{port}" in (await frps_on_readyz(client))["probe_error"]

    server = await frps()
    try:
        await clock_of(client).advance(PERIOD)
        assert up(client) == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_a_dial_that_fails_while_frps_does_not_answer_names_frps_not_sshd(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    port = free_port()  # nothing listens: neither frps nor the node's proxy port
    settings = settings_for(
        tmp_path,
        frps_address="127.0.0.1",
        frps_bind_port=port,
        frps_down_after=DOWN_AFTER,
        ssh_password="unused",
        api_tokens_file=str(tokens_file(tmp_path)),
    )
    client = await aiohttp_client(create_app(settings, clock=FakeClock()), headers=bearer("admin"))
    await plugin_post(client, new_proxy("n1", "n1", port=free_port()))
    await clock_of(client).advance(2 * PERIOD)  # the NewProxy answered for frps at first
    assert client.app[STATE].adapter.frps["default"].unreachable
    assert not client.app[STATE].adapter.frps["default"].down
    answer, body = await exec_on(client, "n1")
    assert (answer, body["error"]) == (503, "frps unreachable"), body
    assert body["details"].startswith("frps default unreachable since ")
    assert await node_status(client, "n1") == ("online", "NewProxy")


async def test_a_node_another_replica_brings_online_while_a_probe_is_out_is_left_online(
    tmp_path: Path, aiohttp_client: AiohttpClient, dashboard: Dashboard
) -> None:
    """HA: frps comes back, its frpc logs in at the other replica (no plugin call here), and
    this replica's probe, sent before, fails after: the newer login wins, as it does over a
    reconciliation's older view."""
    client = await watched_app(tmp_path, aiohttp_client, dashboard)
    clock = clock_of(client)
    await online_nodes(client, "n1", "n2")
    await dashboard.stop()
    await clock.advance(DOWN_AFTER + 2 * PERIOD)
    assert await node_status(client, "n1") == ("offline", "FrpsUnreachable")

    asked, answer = asyncio.Event(), asyncio.Event()
    slow = web.Application()

    async def late_failure(request: web.Request) -> web.Response:
        asked.set()
        await answer.wait()
        assert request.transport is not None
        request.transport.abort()  # no answer: the probe fails
        return web.Response()

    slow.router.add_route("*", "/{tail:.*}", late_failure)
    await dashboard.start(slow)
    probing = asyncio.ensure_future(clock.advance(PERIOD))

    async def sent() -> bool:
        return asked.is_set()

    await eventually(sent, what="the probe sent")
    at = clock.now()
    theirs = NodeState(
        unique_id=UniqueId("n1"),
        status="online",
        reason="NewProxy",
        last_transition=at,
        updated_at=at,
        frps_address="203.0.113.7",
        remote_port=16001,
        proxy_name="n1.ssh",
    )
    client.app[STATE].adapter.registry.observe(render_nm(theirs, None))  # the other replica's write
    answer.set()
    await probing
    await clock.advance(0)
    assert (await frps_on_readyz(client))["down"] is True
    assert await node_status(client, "n1") == ("online", "NewProxy")
