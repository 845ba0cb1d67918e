"""Node state stays true after the faults an operator meets, with real frps and frpc."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.peers import FrpSetup, sqlite_frp
from tests.e2e.test_frp_nodes import fetch, until_status
from tests.support import bearer, eventually, free_port, plugin_body, tokens_file

pytestmark = pytest.mark.e2e
GRACE = 0.5  # FrpSetup's FRPA_CLOSE_GRACE_PERIOD


@pytest.fixture
async def frp(tmp_path: Path) -> AsyncIterator[FrpSetup]:
    async with sqlite_frp(tmp_path) as setup:
        yield setup


async def test_quick_exit_without_a_dashboard_goes_offline_within_grace_plus_2s(
    frp: FrpSetup,
) -> None:
    await frp.start_adapter(FRP_SERVER_API="")
    await frp.start_frps()
    for attempt in range(3):  # each time a fresh frpc process that leaves at once
        frp.start_frpc("quick", "quick-exit", remote_port=free_port())

        async def started(attempt: int = attempt) -> bool:
            return frp.processes.log("quick").count("start proxy success") > attempt

        await eventually(started, what="its proxy started")
        left = time.monotonic()
        await frp.processes.stop("quick", signal.SIGKILL if attempt else signal.SIGTERM)
        await until_status(frp, "quick-exit", "offline")
        assert time.monotonic() - left < GRACE + 2
    assert "has no dashboard configured" in frp.processes.log("adapter")


async def test_a_node_that_logs_in_again_with_its_run_id_stays_online(frp: FrpSetup) -> None:
    """frps restarted under it: the old control's CloseProxy never wins."""
    await frp.start_adapter(FRP_SERVER_API="")
    await frp.start_frps()
    frp.start_frpc("stays", "relogin-node", remote_port=free_port())
    await until_status(frp, "relogin-node", "online")
    await frp.processes.stop("frps", signal.SIGKILL)
    await frp.start_frps()

    async def logged_in_again() -> bool:
        return frp.processes.log("stays").count("start proxy success") >= 2

    await eventually(logged_in_again, within=30, what="frpc back through the new frps")
    await asyncio.sleep(GRACE + 1)
    assert (await fetch(frp, "relogin-node") or {}).get("status") == "online"


async def test_forged_close_and_new_proxy_with_a_dashboard_change_nothing(frp: FrpSetup) -> None:
    await frp.start_adapter()
    await frp.start_frps()
    port = free_port()
    frp.start_frpc("node1", "victim", remote_port=port)
    before = await until_status(frp, "victim", "online")
    forged = [
        plugin_body(
            "CloseProxy",
            {"user": {"user": "", "metas": {"unique_id": "victim"}}, "proxy_name": "ssh"},
        ),
        plugin_body(
            "NewProxy",
            {
                "user": {"user": "", "metas": {"unique_id": "thief"}, "run_id": "x"},
                "proxy_name": "node1.ssh",
                "proxy_type": "tcp",
                "metas": {"role": "ssh"},
                "remote_port": port,
            },
        ),
    ]
    async with aiohttp.ClientSession() as session:
        for body in forged:
            async with session.post(f"{frp.adapter_url}/frps/handler", json=body) as resp:
                assert (await resp.json())["reject"] is False
    await asyncio.sleep(GRACE + 1.5)
    assert await fetch(frp, "victim") == before
    assert await fetch(frp, "thief") is None


async def test_a_restart_with_an_empty_store_recovers_every_connected_node(
    frp: FrpSetup, tmp_path: Path
) -> None:
    """Nodes answered but never stored (a store outage, then kill -9): frps still has them,
    and their Pings bring them back, without any frpc logging in again."""
    await frp.start_adapter()
    await frp.start_frps(ops=("Login", "NewProxy", "CloseProxy", "Ping", "NewWorkConn"))
    ports = {f"kept-{i}": free_port() for i in range(3)}
    for i, (uid, port) in enumerate(ports.items()):
        frp.start_frpc(f"node{i}", uid, remote_port=port, heartbeat=1)  # proxy "ssh"
    for uid in ports:
        await until_status(frp, uid, "online")
    # A Ping frps cannot pass to the adapter is refused, and frpc logs in again on that:
    # the nodes hold their Pings while no adapter listens, however long its start takes.
    for i in range(3):
        frp.processes.running[f"node{i}"].send_signal(signal.SIGSTOP)
    await frp.processes.stop("adapter", signal.SIGKILL)
    await frp.start_adapter(FRPA_STORE=f"sqlite:///{tmp_path / 'empty.db'}")
    for i in range(3):
        frp.processes.running[f"node{i}"].send_signal(signal.SIGCONT)
    for uid, port in ports.items():
        assert (await until_status(frp, uid, "online"))["proxy_port"] == str(port)
    for i in range(3):
        assert frp.processes.log(f"node{i}").count("login to server success") == 1


async def test_a_paused_adapter_judges_no_node_silent_when_it_resumes(frp: FrpSetup) -> None:
    await frp.start_adapter(FRPA_HEARTBEAT_TIMEOUT="3")
    await frp.start_frps(ops=("Login", "NewProxy", "CloseProxy", "Ping"))
    uids = [f"paused-{i}" for i in range(3)]
    for i, uid in enumerate(uids):
        frp.start_frpc(f"node{i}", uid, remote_port=free_port(), heartbeat=1)
    for uid in uids:
        await until_status(frp, uid, "online")
    await asyncio.sleep(3)  # Pings flow, expiry runs
    adapter = frp.processes.running["adapter"]
    adapter.send_signal(signal.SIGSTOP)  # longer than the heartbeat timeout
    await asyncio.sleep(5)
    adapter.send_signal(signal.SIGCONT)
    await asyncio.sleep(4)
    log = frp.processes.log("adapter")
    assert "was stalled for" in log
    assert "-> offline" not in log, log
    for uid in uids:
        assert (await fetch(frp, uid) or {}).get("status") == "online"


async def test_a_killed_frps_takes_its_nodes_offline_and_they_return_with_it(
    frp: FrpSetup, tmp_path: Path
) -> None:
    down_after = 3
    messages: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        messages.append(await request.json())
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    receiver_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
    try:
        await _frps_killed_and_back(frp, tmp_path, down_after, receiver_port, messages)
    finally:
        await runner.cleanup()


async def _frps_killed_and_back(
    frp: FrpSetup, tmp_path: Path, down_after: int, receiver_port: int, messages: list[Any]
) -> None:
    await frp.start_adapter(
        FRPA_FRPS_DOWN_AFTER=str(down_after),
        FRPA_API_TOKENS_FILE=str(tokens_file(tmp_path)),
        FRPA_SSH_PASSWORD="unused",
        FRPA_NOTIFY_URL=f"http://127.0.0.1:{receiver_port}/hook",
        FRPA_NOTIFY_INTERVAL="2",
    )
    await frp.start_frps()
    uids = [f"behind-{i}" for i in range(12)]
    for i, uid in enumerate(uids):
        frp.start_frpc(f"node{i}", uid, remote_port=free_port())
    for uid in uids:
        await until_status(frp, uid, "online")

    await frp.processes.stop("frps", signal.SIGKILL)  # no CloseProxy, no word at all
    killed = time.monotonic()
    for uid in uids:
        await until_status(frp, uid, "offline")
    assert time.monotonic() - killed < down_after + 10
    async with aiohttp.ClientSession(frp.adapter_url, headers=bearer("admin")) as session:
        for uid in uids:
            async with session.get(f"/api/v1/nodes/nodemaintenances-{uid}") as resp:
                assert (await resp.json())["status"]["reason"] == "FrpsUnreachable"
        async with session.get("/readyz") as resp:
            assert resp.status == 200
            seen = (await resp.json())["frps"]["default"]
        assert seen["reachable"] is False
        assert seen["down"] is True
        assert seen["unreachable_since"]

        def told_offline() -> list[tuple[int, dict[str, Any]]]:
            return [
                (i, change)
                for i, message in enumerate(messages)
                for change in message["changes"]
                if change["to"] == "offline"
            ]

        async def all_told() -> bool:
            return {c["unique_id"] for _, c in told_offline()} == set(uids)

        await eventually(all_told, within=30, what="the receiver told of all 12 nodes offline")
        assert {c["reason"] for _, c in told_offline()} == {"FrpsUnreachable"}
        assert len({i for i, _ in told_offline()}) <= 3  # summarised, not one per node
        node = f"/api/v1/nodes/nodemaintenances-{uids[0]}"
        async with session.post(f"{node}/exec", json={"cmd": "true"}) as resp:
            assert resp.status == 503
            assert (await resp.json())["details"].startswith("frps default unreachable since")
        async with session.get(f"{node}/shell") as resp:
            assert resp.status == 503
            assert "frps default unreachable" in await resp.text()

        await frp.start_frps()  # the same ports: every frpc logs in again

        async def all_online() -> bool:
            for uid in uids:
                if (await fetch(frp, uid) or {}).get("status") != "online":
                    return False
            return True

        await eventually(all_online, within=60, what="all 12 nodes back with their frps")
        async with session.get("/readyz") as resp:
            assert (await resp.json())["frps"]["default"]["reachable"] is True
