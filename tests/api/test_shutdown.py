"""SIGTERM drains queued writes before the adapter exits (the Deployment gives it time)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.e2e.peers import Processes
from tests.kube import running_kube
from tests.support import free_port, new_proxy


async def test_sigterm_stores_the_writes_still_queued_before_exiting(tmp_path: Path) -> None:
    async with running_kube(tmp_path) as (kube, kubeconfig):
        port = free_port()
        processes = Processes(tmp_path)
        env = {"FRPA_STORE": "kubernetes", "KUBECONFIG": str(kubeconfig)}
        try:
            await processes.start_adapter(port, env)
            kube.fail_writes = 3  # the write is retried with backoff, still queued at SIGTERM
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{port}/frps/handler", json=new_proxy()) as resp,
            ):
                assert (await resp.json())["reject"] is False
        finally:
            exit_code = await processes.stop("adapter")
        assert exit_code == 0, processes.log("adapter")
        assert kube.fail_writes == 0
        stored = kube.node_maintenances()["nodemaintenances-abc123"]
        assert stored["status"]["services"][0]["status"] == "online"
