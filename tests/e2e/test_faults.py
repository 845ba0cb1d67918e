"""Faults around the store: nothing frps was told is lost."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.peers import Processes, kubernetes_frp
from tests.e2e.test_frp_nodes import until_status
from tests.kube import running_kube
from tests.support import eventually, free_port, new_proxy

pytestmark = pytest.mark.e2e


async def test_nodes_that_connect_while_the_api_server_fails_are_stored_once_it_recovers(
    tmp_path: Path,
) -> None:
    async with kubernetes_frp(tmp_path) as (kube, frp):
        await frp.start_adapter()
        await frp.start_frps()
        kube.fail_writes = 12  # the API server answers 503 for a while
        for i in range(3):
            frp.start_frpc(f"node{i}", f"flaky-{i}", remote_port=free_port())
        for i in range(3):
            await until_status(frp, f"flaky-{i}", "online")  # answered from memory

        async def stored() -> bool:
            return all(
                obj.get("status", {}).get("services", [{}])[0].get("status") == "online"
                for obj in (
                    kube.node_maintenances().get(f"nodemaintenances-flaky-{i}", {})
                    for i in range(3)
                )
            )

        await eventually(stored, within=30, what="every node stored once writes work")
        assert kube.fail_writes == 0


async def test_every_answered_new_proxy_is_stored_across_a_sigterm_mid_storm(
    tmp_path: Path,
) -> None:
    """The API server fails writes as SIGTERM arrives, so writes are still queued then."""
    answered: set[str] = set()
    numbers = iter(range(1_000_000))
    port = free_port()

    async def frps_like(session: aiohttp.ClientSession) -> None:
        """Open nodes one after another until the adapter stops answering."""
        for i in numbers:
            body = new_proxy(f"n{i}", f"storm-{i}", port=10000 + i % 50000)
            try:
                async with session.post(f"http://127.0.0.1:{port}/frps/handler", json=body) as resp:
                    if (await resp.json())["reject"] is False:
                        answered.add(f"storm-{i}")
            except (aiohttp.ClientError, ValueError):
                return  # cut off by the shutdown: frpc would log in again

    async with running_kube(tmp_path) as (kube, kubeconfig):
        kube.history_limit = 1  # a storm: keep kmock linear (see tests/kube.py)
        processes = Processes(tmp_path)
        env = {"FRPA_STORE": "kubernetes", "KUBECONFIG": str(kubeconfig)}
        try:
            await processes.start_adapter(port, env)
            async with aiohttp.ClientSession() as session:
                storm = asyncio.gather(*(frps_like(session) for _ in range(16)))
                await asyncio.sleep(0.5)
                kube.fail_writes = 20
                processes.running["adapter"].send_signal(signal.SIGTERM)
                await asyncio.wait_for(storm, 30)
            assert await processes.wait("adapter") == 0, processes.log("adapter")
            assert len(answered) > 20
            assert kube.fail_writes == 0
            stored = {
                name
                for name, obj in kube.node_maintenances().items()
                if obj.get("status", {}).get("services", [{}])[0].get("status") == "online"
            }
            assert {f"nodemaintenances-{uid}" for uid in answered} <= stored

            await processes.start_adapter(port, env)  # and a restart starts from there
            listed: list[Any] = []
            query = {"limit": "500"}
            async with aiohttp.ClientSession() as session:
                while True:  # page by page: a fast storm stores more than a page of nodes
                    url = f"http://127.0.0.1:{port}/api/v1/nodes"
                    async with session.get(url, params=query) as resp:
                        page = await resp.json()
                    listed += page["items"]
                    if not page["metadata"].get("continue"):
                        break
                    query["continue"] = page["metadata"]["continue"]
            assert len(listed) == len(kube.node_maintenances())
        finally:
            await processes.stop_all()
