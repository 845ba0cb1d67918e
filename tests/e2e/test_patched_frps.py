"""The adapter's own process, restarted, against the original's patched frps: its nodes,
recorded through the original's routes, take that frps's view, as the original's start-up
check gave them (ttlv/frp_adapter `main/main.go`, `frp_adapter_init/do_some_check.go`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.e2e.peers import Processes
from tests.patched_frps import ADDRESS, PatchedFrps, frpc_unique_id
from tests.support import eventually, free_port

pytestmark = pytest.mark.e2e

N1, N2, N3, N4 = (frpc_unique_id(i) for i in range(1, 5))


async def test_a_restarted_adapter_takes_the_patched_frps_s_view_of_its_nodes(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    frps = PatchedFrps()
    dashboard = await aiohttp_server(frps.app())
    processes, port = Processes(tmp_path), free_port()
    env = {
        "FRPA_STORE": f"sqlite:///{tmp_path / 'frpa.db'}",
        "FRP_SERVER_API": str(dashboard.make_url("/api/proxy/tcp")),  # as the original took it
        "FRP_SERVER_HTTPAUTHUSERNAME": "admin",
        "FRP_SERVER_HTTPAUTHPASSWORD": "admin",
    }
    url = f"http://127.0.0.1:{port}"
    session = aiohttp.ClientSession()

    async def as_listed(expected: dict[str, tuple[str, str]]) -> bool:
        """Whether /frp_fetch shows each node with that status and port."""
        for uid, (status, proxy_port) in expected.items():
            async with session.get(f"{url}/frp_fetch/nodemaintenances-{uid}") as resp:
                if resp.status != 200:
                    return False
                data: dict[str, Any] = (await resp.json())["data"]
            if (data["status"], data["proxy_port"], data["frp_server_ip_address"]) != (
                status,
                proxy_port,
                ADDRESS,
            ):
                return False
        return True

    try:
        # The patched frps records its nodes through the original's routes.
        frps.nodes = {N1: None, N2: 6002, N3: 6003}
        await processes.start_adapter(port, env)
        for uid, remote_port in ((N1, 6001), (N2, 6002), (N3, 6003)):
            form = {"frp_server_ip_address": ADDRESS, "unique_id": uid, "port": str(remote_port)}
            async with session.post(f"{url}/frp_create", data=form) as resp:
                assert resp.status == 200
        form = {"unique_id": N1, "status": "offline"}
        async with session.put(f"{url}/frp_update", data=form) as resp:
            assert resp.status == 200
        await processes.stop("adapter")

        # While the adapter is down, nothing the patched frps posts arrives.
        frps.nodes = {N1: 6011, N3: None, N4: 6004}
        await processes.start_adapter(port, {**env, "FRPA_RECONCILE_INTERVAL": "1"})
        expected = {N1: ("online", "6011"), N2: ("offline", "6002")}
        expected |= {N3: ("offline", "6003"), N4: ("online", "6004")}
        await eventually(lambda: as_listed(expected), what="the patched frps's view")

        frps.nodes = {}
        expected = {N1: ("offline", "6011"), N4: ("offline", "6004")}
        await eventually(lambda: as_listed(expected), what="an empty list taking them offline")
    finally:
        await session.close()
        await processes.stop_all()
