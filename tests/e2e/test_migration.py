"""README's "Migrating from the Go frp_adapter", run as written: the adapter started with
the original's variables (and the steps' own), real frps, frpc and sshd, and the calls the
patched frps and the original's consoles make."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.peers import (
    DASHBOARD_PASSWORD,
    DASHBOARD_USER,
    FrpSetup,
    Processes,
    frp_binaries,
    wait_for_port,
)
from tests.sshd import running_sshd
from tests.support import bearer, eventually, free_port, tokens_file

pytestmark = pytest.mark.e2e


async def test_the_migration_steps_give_the_originals_callers_what_they_had(
    tmp_path: Path,
) -> None:
    processes = Processes(tmp_path)
    frps, frpc = frp_binaries(tmp_path)
    port = free_port()
    frp = FrpSetup(processes, frps, frpc, {}, adapter_port=port)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("FRP", "KUBE"))}
    async with running_sshd(tmp_path / "ssh") as sshd:
        try:
            processes.start(
                "adapter",
                [sys.executable, "-m", "cli", "serve"],
                env={
                    **inherited,
                    "PYTHONPATH": str(Path(__file__).parents[2]),
                    # The original's variables: step 1 listens on :$PORT.
                    "PORT": str(port),
                    "FRP_SERVER_API": f"{frp.dashboard_url}/api/proxy/tcp",
                    "FRP_SERVER_HTTPAUTHUSERNAME": DASHBOARD_USER,
                    "FRP_SERVER_HTTPAUTHPASSWORD": DASHBOARD_PASSWORD,
                    # Steps 3, 5 and 7.
                    "FRPA_SSH_USER": sshd.user,
                    "FRPA_SSH_KEY_FILE": str(sshd.user_key),
                    "FRPA_TRUSTED_NETWORKS": "127.0.0.0/8",
                    "FRPA_API_TOKENS_FILE": str(tokens_file(tmp_path)),
                    "FRPA_FRPS_ADDRESS": "127.0.0.1",
                },
            )
            await wait_for_port(port, processes.running["adapter"])
            await frp.start_frps()
            frp.start_frpc("edge-1", "edge-1", local_port=sshd.port)
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/") as resp:
                    assert await resp.read() == (
                        b'{"code":200,"data":"Frp Adapter Is Working Now...."}'
                    )

                async def online() -> bool:
                    async with session.get(f"{url}/frp_fetch/nodemaintenances-edge-1") as resp:
                        body = await resp.json()
                    return bool(resp.status == 200 and body["data"]["status"] == "online")

                await eventually(online, within=30, what="edge-1 online")
                # The patched frps: parameters in the query, an empty JSON body, no token.
                async with session.put(
                    f"{url}/frp_update",
                    params={"unique_id": "edge-2", "status": "offline"},
                    data=b"",
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    assert await resp.read() == b'{"code":200,"data":"Update Successfully"}'
                # An operator's exec as the original's console called it, by `ssh-<uid>`.
                async with session.post(
                    f"{url}/reverse_proxy_shell",
                    data={"nm_name": "ssh-edge-1", "cmd": "echo migrated"},
                    headers=bearer("operator"),
                ) as resp:
                    body = await resp.json()
                assert body == {
                    "code": 200,
                    "data": "execute shell command echo migrated successfully,"
                    "the result is: migrated",
                }
        finally:
            await processes.stop_all()
