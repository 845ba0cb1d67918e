"""Real frps and frpc 0.65 drive the adapter, started with its own command; REST reads back."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from schemas.settings import sqlite_path
from tests.e2e.peers import FrpSetup, Processes, frp_binaries
from tests.kube import running_kube
from tests.support import bearer, eventually, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "kubernetes"])
async def store_env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    """The adapter's store: an SQLite file, or NodeMaintenances on a Kubernetes API peer."""
    if request.param == "sqlite":
        yield {"FRPA_STORE": f"sqlite:///{tmp_path / 'frpa.db'}"}
        return
    async with running_kube(tmp_path) as (_, kubeconfig):
        yield {"FRPA_STORE": "kubernetes", "KUBECONFIG": str(kubeconfig)}


@pytest.fixture
async def frp(tmp_path: Path, store_env: dict[str, str]) -> AsyncIterator[FrpSetup]:
    processes = Processes(tmp_path)
    frps, frpc = frp_binaries(tmp_path)
    setup = FrpSetup(processes, frps, frpc, store_env)
    try:
        await setup.start_adapter()
        await setup.start_frps()
        yield setup
    finally:
        await processes.stop_all()


async def fetch(frp: FrpSetup, unique_id: str) -> dict[str, Any] | None:
    async with (
        aiohttp.ClientSession(headers=bearer("read")) as session,  # in case tokens are on
        session.get(f"{frp.adapter_url}/frp_fetch/nodemaintenances-{unique_id}") as resp,
    ):
        if resp.status == 404:
            return None
        assert resp.status == 200
        body: dict[str, Any] = (await resp.json())["data"]
        return body


async def dashboard(frp: FrpSetup, path: str) -> Any:
    """JSON from frps's dashboard API (labelled text/plain, as frps does)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{frp.dashboard_url}{path}",
            headers={"Authorization": aiohttp.encode_basic_auth("admin", "admin")},
        ) as resp,
    ):
        return await resp.json(content_type=None)


async def dashboard_port(frp: FrpSetup, proxy: str) -> str:
    return str((await dashboard(frp, f"/api/proxy/tcp/{proxy}"))["conf"]["remotePort"])


async def until_status(frp: FrpSetup, unique_id: str, status: str) -> dict[str, Any]:
    seen: dict[str, Any] | None = None

    async def check() -> bool:
        nonlocal seen
        seen = await fetch(frp, unique_id)
        return seen is not None and seen["status"] == status

    try:
        await eventually(check, within=20, what=f"{unique_id} {status}")
    except AssertionError:
        raise AssertionError(
            f"last seen {seen}\nadapter log:\n{frp.processes.log('adapter')}"
        ) from None
    assert seen is not None
    return seen


async def test_nodes_go_online_and_offline_with_their_frpc(frp: FrpSetup) -> None:
    port1 = free_port()
    frp.start_frpc("node1", "e2e-node-1", remote_port=port1)
    frp.start_frpc("node2", "e2e-node-2", remote_port=0)

    node1 = await until_status(frp, "e2e-node-1", "online")
    assert node1 == {
        "frp_server_ip_address": "127.0.0.1",
        "proxy_port": str(port1),
        "status": "online",
    }
    node2 = await until_status(frp, "e2e-node-2", "online")
    assert node2["proxy_port"] == await dashboard_port(frp, "node2.ssh")

    await frp.processes.stop("node1")
    await until_status(frp, "e2e-node-1", "offline")
    assert (await fetch(frp, "e2e-node-2")) == node2

    frp.start_frpc("node1", "e2e-node-1", remote_port=port1)
    assert (await until_status(frp, "e2e-node-1", "online"))["proxy_port"] == str(port1)
    assert (await fetch(frp, "e2e-node-2")) == node2

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{frp.adapter_url}/metrics") as resp,
    ):
        metrics = await resp.text()
    assert 'frpa_nodes{frps="default",status="online"} 2.0' in metrics
    assert 'frpa_plugin_requests_total{op="CloseProxy",result="allowed"} 1.0' in metrics


async def test_frps_can_call_the_plugin_on_a_listener_of_its_own(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    frps, frpc = frp_binaries(tmp_path)
    setup = FrpSetup(processes, frps, frpc, {"FRPA_STORE": f"sqlite:///{tmp_path / 'a.db'}"})
    plugin_port = free_port()
    try:
        await setup.start_adapter(FRPA_PLUGIN_ADDRESS=f"127.0.0.1:{plugin_port}")
        await setup.start_frps(plugin_port=plugin_port)
        port = free_port()
        setup.start_frpc("node1", "e2e-node-1", remote_port=port)
        assert (await until_status(setup, "e2e-node-1", "online"))["proxy_port"] == str(port)
        await setup.processes.stop("node1")
        await until_status(setup, "e2e-node-1", "offline")
    finally:
        await processes.stop_all()


async def test_a_frpc_whose_unique_id_cannot_name_a_node_still_connects(frp: FrpSetup) -> None:
    frp.start_frpc("bad", "Not_A_Name", remote_port=0)

    async def started() -> bool:
        return "start proxy success" in frp.processes.log("bad")

    await eventually(started, within=15, what="its proxy started")
    assert await fetch(frp, "Not_A_Name") is None
    assert frp.processes.log("adapter").count("cannot form the object name") == 1


async def test_a_node_that_left_while_the_adapter_was_down_is_offline_after_restart(
    frp: FrpSetup,
) -> None:
    frp.start_frpc("node1", "stays", remote_port=free_port())
    frp.start_frpc("node2", "leaves", remote_port=0)
    await until_status(frp, "stays", "online")
    await until_status(frp, "leaves", "online")

    await frp.processes.stop("adapter")
    await frp.processes.stop("node2")  # frps's CloseProxy finds no adapter: it is lost
    await frp.start_adapter()

    await until_status(frp, "leaves", "offline")
    assert (await fetch(frp, "stays") or {}).get("status") == "online"


async def test_after_an_frps_restart_every_node_is_online_again_without_flapping(
    frp: FrpSetup,
) -> None:
    nodes = [(f"node{i}", f"restart-{i}", free_port()) for i in range(10)]
    for node, uid, port in nodes:
        frp.start_frpc(node, uid, remote_port=port)
    for _, uid, _ in nodes:
        await until_status(frp, uid, "online")
    before = await stored_versions(frp)

    await frp.processes.stop("frps", signal.SIGKILL)  # no CloseProxy at all
    await frp.start_frps()  # every frpc logs in again, with its old run_id

    async def reconnected() -> bool:
        proxies = await dashboard_proxies(frp)
        if any(f"{node}.ssh" not in proxies for node, _, _ in nodes):
            return False
        for _, uid, _ in nodes:
            if (await fetch(frp, uid) or {}).get("status") != "online":
                return False
        return True

    await eventually(reconnected, within=60, what="all 10 nodes back through the new frps")
    await asyncio.sleep(1.5)  # past the grace period: nothing may flip afterwards
    for _, uid, port in nodes:
        assert await fetch(frp, uid) == {
            "frp_server_ip_address": "127.0.0.1",
            "proxy_port": str(port),
            "status": "online",
        }
    after = await stored_versions(frp)
    if after is not None and before is not None:
        assert all(after[uid] - before[uid] <= 2 for _, uid, _ in nodes), (before, after)


async def test_a_frozen_frpc_with_a_heartbeat_goes_offline_then_online_when_thawed(
    frp: FrpSetup,
) -> None:
    await frp.processes.stop("adapter")
    await frp.processes.stop("frps")
    await frp.start_adapter(FRPA_HEARTBEAT_TIMEOUT="3")
    await frp.start_frps(ops=("Login", "NewProxy", "CloseProxy", "Ping"))
    frp.start_frpc("frozen", "frozen-node", remote_port=free_port(), heartbeat=1)
    await until_status(frp, "frozen-node", "online")

    frp.processes.running["frozen"].send_signal(signal.SIGSTOP)  # a dead host, as frps sees it
    try:
        await until_status(frp, "frozen-node", "offline")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{frp.adapter_url}/api/v1/nodes/nodemaintenances-frozen-node") as resp,
        ):
            assert (await resp.json())["status"]["reason"] == "HeartbeatTimeout"
    finally:
        frp.processes.running["frozen"].send_signal(signal.SIGCONT)
    await until_status(frp, "frozen-node", "online")


async def dashboard_proxies(frp: FrpSetup) -> set[str]:
    try:
        body = await dashboard(frp, "/api/proxy/tcp")
    except aiohttp.ClientError:
        return set()  # frps is still starting
    return {p["name"] for p in body["proxies"] if p["status"] == "online"}


async def stored_versions(frp: FrpSetup) -> dict[str, int] | None:
    """Each NM's resourceVersion in the SQLite file: how many writes it took."""
    if not frp.store_env["FRPA_STORE"].startswith("sqlite"):
        return None
    path = sqlite_path(frp.store_env["FRPA_STORE"])
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT name, resource_version FROM nodemaintenances").fetchall()
    return {name.removeprefix("nodemaintenances-"): version for name, version in rows}
