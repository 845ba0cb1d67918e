"""SIGTERM: WebSockets closed first, queued writes drained, all within one budget."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp

from tests.e2e.peers import Processes, wait_for_port
from tests.kube import running_kube
from tests.sshd import adapter_env, running_sshd
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


async def test_sigterm_with_an_open_shell_and_a_failing_store_exits_within_its_budget(
    tmp_path: Path,
) -> None:
    """The shell is closed with 1001 at once; the write the store refuses waits out what
    is left of FRPA_SHUTDOWN_TIMEOUT, and no more: the budget is spent once."""
    budget = 4.0
    async with running_kube(tmp_path) as (kube, kubeconfig), running_sshd(tmp_path) as sshd:
        port = free_port()
        processes = Processes(tmp_path)
        env = {
            **adapter_env(sshd, tmp_path),
            "FRPA_STORE": "kubernetes",
            "KUBECONFIG": str(kubeconfig),
            "FRPA_SHUTDOWN_TIMEOUT": str(budget),
            "FRPA_LOG_LEVEL": "INFO",
        }
        url = f"http://127.0.0.1:{port}"
        form = {"frp_server_ip_address": "127.0.0.1", "unique_id": "abc123", "port": sshd.port}
        try:
            await processes.start_adapter(port, env)
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url}/frp_create", data=form) as resp:
                    assert resp.status == 200, await resp.text()
                ws = await session.ws_connect(f"{url}/api/v1/nodes/nodemaintenances-abc123/shell")
                await ws.send_bytes(b"echo ready\n")
                seen = b""
                while b"ready\r\n" not in seen:
                    msg = await ws.receive(timeout=10)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    seen += msg.data
                kube.fail_writes = 10**6  # from now on the store refuses every write
                # Another node's: the shell's node moving port would close its connection.
                refused = new_proxy("node2", "other")
                async with session.post(f"{url}/frps/handler", json=refused) as resp:
                    assert (await resp.json())["reject"] is False
                started = time.monotonic()
                processes.running["adapter"].send_signal(signal.SIGTERM)
                while (msg := await ws.receive(timeout=budget)).type != aiohttp.WSMsgType.CLOSE:
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                closed = time.monotonic() - started
                assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
                exit_code = await processes.wait("adapter")
                took = time.monotonic() - started
        finally:
            await processes.stop_all()
    log = processes.log("adapter")
    assert exit_code == 0, log
    assert closed < 1.0
    assert budget - 0.5 < took < budget + 1.0, (took, log)
    assert "node write(s) not stored" in log


async def test_a_plugin_call_stuck_on_its_own_listener_holds_the_exit_only_its_budget(
    tmp_path: Path,
) -> None:
    """A caller that sends half a body keeps its call in flight: it is cut when what is left
    of the budget's first half runs out, not after aiohttp's own minute."""
    budget = 4.0
    port, plugin_port = free_port(), free_port()
    processes = Processes(tmp_path)
    env = {
        "FRPA_STORE": f"sqlite:///{tmp_path / 'a.db'}",
        "FRPA_PLUGIN_ADDRESS": f"127.0.0.1:{plugin_port}",
        "FRPA_SHUTDOWN_TIMEOUT": str(budget),
    }
    try:
        await processes.start_adapter(port, env)
        await wait_for_port(plugin_port, processes.running["adapter"])
        reader, writer = await asyncio.open_connection("127.0.0.1", plugin_port)
        whole = json.dumps(new_proxy()).encode()
        writer.write(
            b"POST /frps/handler HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
            % (len(whole), whole)
        )
        assert b'"reject":false' in await reader.readuntil(b"}")  # the connection is served
        writer.write(b"POST /frps/handler HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        started = time.monotonic()
        processes.running["adapter"].send_signal(signal.SIGTERM)
        exit_code = await processes.wait("adapter")
        took = time.monotonic() - started
        writer.close()
    finally:
        await processes.stop_all()
    assert exit_code == 0, processes.log("adapter")
    assert took < budget + 1.0, took
