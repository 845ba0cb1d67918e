"""Reconciliation with frps's dashboard, through the app on SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.app import create_app
from api.state import STATE
from nodes.model import UniqueId
from plugin.reconciler import RELOGIN_SETTLE_SECONDS
from schemas.settings import FrpsServer
from tests.clock import FakeClock
from tests.support import (
    FakeDashboard,
    app_with_dashboard,
    clock_of,
    eventually,
    login,
    new_proxy,
    online,
    ping,
    plugin_post,
    settings_for,
)

Client = TestClient[web.Request, web.Application]
INTERVAL = settings_for(Path()).reconcile_interval


async def nm(client: Client, uid: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/nodes/nodemaintenances-{uid}")
    assert resp.status == 200
    obj: dict[str, Any] = await resp.json()
    return obj


async def status(client: Client, uid: str) -> tuple[str, str]:
    obj = await nm(client, uid)
    return obj["status"]["services"][0]["status"], obj["status"]["reason"]


async def confirmed(client: Client, uid: str) -> None:
    """With a dashboard, a NewProxy is recorded once frps shows the proxy online."""

    async def online() -> bool:
        state = client.app[STATE].adapter.registry.get(UniqueId(uid))
        return state is not None and state.status == "online"

    await eventually(online, what=f"{uid} confirmed by frps")


async def test_a_restarted_adapter_corrects_what_frps_says_changed_while_it_was_down(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    dashboard = FakeDashboard()
    dashboard.proxies = {"n1.ssh": online(16001), "n2.ssh": online(16002)}
    first = await app_with_dashboard(tmp_path, aiohttp_client, aiohttp_server, dashboard)
    await plugin_post(first, new_proxy("n1", "n1", port=16001))
    await plugin_post(first, new_proxy("n2", "n2", port=16002))
    await first.app[STATE].adapter.writer.drained()
    await first.close()

    # While the adapter is down, n2 leaves (its CloseProxy is lost) and n1's port moves.
    dashboard.proxies = {"n1.ssh": online(16011), "n2.ssh": {"status": "offline", "conf": None}}
    second = await app_with_dashboard(tmp_path, aiohttp_client, aiohttp_server, dashboard)

    async def corrected() -> bool:
        return await status(second, "n2") == ("offline", "Reconciled")

    await eventually(corrected, what="n2 offline after the first reconciliation")
    await second.app[STATE].adapter.writer.drained()
    assert await status(second, "n1") == ("online", "Reconciled")
    assert (await nm(second, "n1"))["spec"]["services"][0]["proxyPort"] == "16011"
    reconciler = second.app[STATE].adapter.reconcilers["default"]
    assert reconciler is not None
    assert reconciler.corrections == 2


async def test_a_failing_dashboard_flips_nothing_and_shows_on_readyz(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    dashboard = FakeDashboard()
    dashboard.proxies = {"n1.ssh": online(16001)}
    client = await app_with_dashboard(
        tmp_path, aiohttp_client, aiohttp_server, dashboard, clock=FakeClock()
    )
    await plugin_post(client, new_proxy("n1", "n1", port=16001))
    await confirmed(client, "n1")
    dashboard.broken = True
    dashboard.proxies = {}
    await clock_of(client).advance(2 * INTERVAL)

    async def counted() -> bool:
        body = await (await client.get("/readyz")).json()
        return bool(
            (frps := body["frps"]["default"])["failures"] >= 2 and "HTTP 500" in frps["last_error"]
        )

    await eventually(counted, what="failures visible on /readyz")
    assert await status(client, "n1") == ("online", "NewProxy")


async def test_a_relogin_with_an_old_run_id_rechecks_the_nodes_soon(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
) -> None:
    dashboard = FakeDashboard()
    dashboard.proxies = {"n1.ssh": online(16001), "n2.ssh": online(16002)}
    client = await app_with_dashboard(
        tmp_path, aiohttp_client, aiohttp_server, dashboard, clock=FakeClock()
    )
    await plugin_post(client, new_proxy("n1", "n1", port=16001, run_id="r1"))
    await plugin_post(client, new_proxy("n2", "n2", port=16002, run_id="r2"))
    await confirmed(client, "n1")
    await confirmed(client, "n2")
    await client.app[STATE].adapter.writer.drained()
    listings = dashboard.listings

    # frps restarted (no CloseProxy); n1 comes back with its old run_id, n2 does not.
    dashboard.proxies = {"n1.ssh": online(16001)}
    relogin = login("n1", "n1")
    relogin["content"]["run_id"] = "r1"
    await plugin_post(client, relogin)
    await plugin_post(client, new_proxy("n1", "n1", port=16001, run_id="r1"))
    await clock_of(client).advance(RELOGIN_SETTLE_SECONDS)  # well within the interval

    async def n2_offline() -> bool:
        return await status(client, "n2") == ("offline", "Reconciled")

    await eventually(n2_offline, what="n2 offline soon after the relogin")
    assert dashboard.listings == listings + 1
    assert await status(client, "n1") == ("online", "NewProxy")


async def test_an_online_proxy_named_after_its_node_is_recovered_if_nothing_stored_it(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """A replica killed between answering NewProxy and storing it: frps has the proxy."""
    dashboard = FakeDashboard()
    dashboard.proxies = {
        "edge7.ssh-node-7": online(16007),  # <user>.ssh-<unique_id>
        "ssh-node-8": online(16008),  # no user
        "edge9.ssh": online(16009),  # names only a user: its node after an interval unclaimed
        "edge10.ssh-Not_An_Id": online(16010),
    }
    client = await app_with_dashboard(tmp_path, aiohttp_client, aiohttp_server, dashboard)
    reconciler = client.app[STATE].adapter.reconcilers["default"]
    assert reconciler is not None
    await eventually(lambda: _ran(reconciler.runs), what="the start-up reconciliation")
    await client.app[STATE].adapter.writer.drained()
    assert await status(client, "node-7") == ("online", "Reconciled")
    assert (await nm(client, "node-7"))["status"]["proxyName"] == "edge7.ssh-node-7"
    assert (await nm(client, "node-8"))["spec"]["services"][0]["proxyPort"] == "16008"
    resp = await client.get("/api/v1/nodes")
    assert len((await resp.json())["items"]) == 2


async def _ran(runs: int) -> bool:
    return runs > 0


async def test_each_frps_reconciles_only_the_nodes_it_served(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    dashboards = {"east": FakeDashboard(), "west": FakeDashboard()}
    servers = []
    for i, (name, dashboard) in enumerate(dashboards.items()):
        served = await aiohttp_server(dashboard.app())
        api = str(served.make_url("")).rstrip("/")
        servers.append(FrpsServer(name, f"198.51.100.{i + 1}", api))
    dashboards["east"].proxies = {"n1.ssh": online(16001)}
    dashboards["west"].proxies = {"n2.ssh": online(16002)}
    settings = settings_for(
        tmp_path,
        frps_servers=tuple(servers),
        frps_api_user="admin",
        frps_api_password="admin",
    )
    client = await aiohttp_client(create_app(settings, clock=FakeClock()))
    resp = await client.post("/frps/east/handler", json=new_proxy("n1", "n1", port=16001))
    assert (await resp.json())["reject"] is False
    resp = await client.post("/frps/west/handler", json=new_proxy("n2", "n2", port=16002))
    assert (await resp.json())["reject"] is False
    assert (await client.post("/frps/north/handler", json=login())).status == 404
    await confirmed(client, "n1")
    await confirmed(client, "n2")
    await client.app[STATE].adapter.writer.drained()
    addresses = {
        uid: (await nm(client, uid))["spec"]["services"][0]["frpServerIpAddress"]
        for uid in ("n1", "n2")
    }
    assert addresses == {"n1": "198.51.100.1", "n2": "198.51.100.2"}

    # west loses n2; east never listed n2 and must not judge it.
    dashboards["west"].proxies = {"n2.ssh": {"status": "offline", "conf": None}}
    await clock_of(client).advance(3 * INTERVAL)  # three rounds of both reconcilers
    assert (await status(client, "n2"))[0] == "offline"
    assert await status(client, "n1") == ("online", "NewProxy")
    assert sorted(client.app[STATE].adapter.reconcilers.keys()) == ["east", "west"]


async def test_an_unclaimed_user_ssh_proxy_is_the_users_node_until_its_node_claims_it(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    dashboard = FakeDashboard()
    dashboard.proxies = {"n5.ssh": online(16005), "ssh": online(16006)}
    client = await app_with_dashboard(
        tmp_path, aiohttp_client, aiohttp_server, dashboard, clock=FakeClock()
    )
    clock = clock_of(client)
    await eventually(lambda: _ran(client.app[STATE].adapter.reconcilers["default"].runs))
    assert (
        client.app[STATE].adapter.registry.get(UniqueId("n5")) is None
    )  # not before a whole interval
    await clock.advance(INTERVAL)
    state = client.app[STATE].adapter.registry.get(UniqueId("n5"))
    assert state is not None
    assert (state.status, state.reason) == ("online", "ReconciledByUser")
    assert [s.unique_id for s in client.app[STATE].adapter.registry.states()] == [
        "n5"
    ]  # "ssh": whose?

    await plugin_post(client, ping("n5", "real5"))  # the frpc names itself by its unique-id meta
    await confirmed(client, "real5")
    await clock.advance(INTERVAL)  # another reconciliation: the node that claimed it keeps it
    assert await status(client, "n5") == ("offline", "ClaimedByItsNode")
    assert await status(client, "real5") == ("online", "Recovered")


async def test_an_event_that_lands_while_frps_answers_wins_over_the_answer(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    dashboard = FakeDashboard()
    dashboard.proxies = {"n1.ssh": online(16001), "n2.ssh": online(16002)}
    client = await app_with_dashboard(
        tmp_path, aiohttp_client, aiohttp_server, dashboard, clock=FakeClock()
    )
    await plugin_post(client, new_proxy("n1", "n1", port=16001))
    await plugin_post(client, new_proxy("n2", "n2", port=16002))
    await confirmed(client, "n1")
    await confirmed(client, "n2")
    reconciler = client.app[STATE].adapter.reconcilers["default"]
    assert reconciler is not None

    dashboard.proxies = {}  # frps's list, read before n1 came back; n2 is gone
    dashboard.held = asyncio.Event()
    asked = dashboard.listings + 1
    pass_ = asyncio.create_task(reconciler.reconcile())

    async def frps_asked() -> bool:
        return dashboard.listings >= asked

    async def n1_moved() -> bool:
        state = client.app[STATE].adapter.registry.get(UniqueId("n1"))
        return state is not None and state.remote_port == 16011

    await eventually(frps_asked, what="frps asked")
    dashboard.proxies = {"n1.ssh": online(16011)}
    await plugin_post(client, new_proxy("n1", "n1", port=16011))
    await eventually(n1_moved, what="n1's NewProxy confirmed")
    dashboard.held.set()
    assert await pass_ == 1
    assert await status(client, "n1") == ("online", "NewProxy")
    assert await status(client, "n2") == ("offline", "Reconciled")
