"""Warm SSH connections against a real OpenSSH sshd: what the node sees (its
SSH_CONNECTION names the client's port: one port, one connection) and what the pool holds."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from nodes.model import NodeChange, UniqueId
from ssh.pool import ConnectionPool
from tests.sshd import Sshd
from tests.support import bearer, eventually, settings_for, tokens_file

Client = TestClient[web.Request, web.Application]
NODE = "nodemaintenances-abc123"


async def adapter(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd, **settings: Any
) -> Client:
    app = create_app(
        settings_for(
            tmp_path,
            ssh_user=sshd.user,
            ssh_key_file=str(sshd.user_key),
            api_tokens_file=str(tokens_file(tmp_path)),
            **settings,
        )
    )
    client = await aiohttp_client(app, headers=bearer("admin"))
    form = {"frp_server_ip_address": "127.0.0.1", "unique_id": "abc123", "port": sshd.port}
    assert (await client.post("/frp_create", data=form)).status == 200
    return client


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd) -> Client:
    return await adapter(aiohttp_client, tmp_path, sshd)


def pool_of(client: Client) -> ConnectionPool:
    return client.app[STATE].adapter.ssh.pool


async def run(client: Client, cmd: str, **more: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/nodes/{NODE}/exec", json={"cmd": cmd, **more})
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def client_port(client: Client) -> str:
    """The adapter's end of the connection this exec ran on, as the node sees it."""
    return str((await run(client, "echo $SSH_CONNECTION"))["stdout"].split()[1])


async def test_execs_one_after_another_share_one_connection_and_concurrent_ones_do_not(
    client: Client,
) -> None:
    ports = {await client_port(client) for _ in range(5)}
    assert len(ports) == 1
    pool = pool_of(client)
    assert (pool.opened, pool.reused) == (1, 4)
    # Two at once: each alone on its connection (its timeout kill finds its processes by
    # the connection), the warm one and a new one; both warm after.
    both = await asyncio.gather(*(run(client, "sleep 0.3; echo $SSH_CONNECTION") for _ in "ab"))
    assert len({b["stdout"].split()[1] for b in both}) == 2
    assert pool.counts() == (0, 2)


async def test_shells_and_files_share_a_connection_an_exec_beside_them_its_own(
    client: Client, tmp_path: Path
) -> None:
    pool = pool_of(client)
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell") as ws:
        await ws.send_str("echo ready\r")
        await until(ws, "ready")
        listing = await client.get(f"/api/v1/nodes/{NODE}/files", params={"path": str(tmp_path)})
        assert listing.status == 200
        async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell") as second:
            await second.send_str("echo second\r")
            await until(second, "second")
            assert (pool.opened, pool.counts()) == (1, (1, 0))  # one connection, busy
            await run(client, "true")
            assert pool.opened == 2
    await eventually(lambda: _equal(pool.counts(), (0, 2)), within=10, what="both idle")


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd, ssh_idle_timeout=0.5)
    first = await client_port(client)
    pool = pool_of(client)
    await eventually(lambda: _equal(pool.counts(), (0, 0)), within=15, what="closed when idle")
    assert await client_port(client) != first
    assert pool.opened == 2


async def test_at_most_the_idle_connections_asked_for_are_kept(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd, ssh_max_connections=1)
    await asyncio.gather(*(run(client, "sleep 0.3") for _ in "abc"))
    assert pool_of(client).counts() == (0, 1)


async def test_a_connection_that_died_is_replaced_at_the_next_use(client: Client) -> None:
    first = await client_port(client)
    # The node's end of the connection goes (sshd's process for it): the exec with it.
    died = await client.post(f"/api/v1/nodes/{NODE}/exec", json={"cmd": "kill -KILL $PPID"})
    assert died.status in (200, 502), await died.text()
    assert await client_port(client) != first


async def test_a_node_gone_offline_has_its_connection_closed_at_once(client: Client) -> None:
    await run(client, "true")
    pool = pool_of(client)
    assert pool.counts() == (0, 1)
    resp = await client.put("/frp_update", data={"unique_id": "abc123", "status": "offline"})
    assert resp.status == 200
    await eventually(lambda: _equal(pool.counts(), (0, 0)), within=10, what="dropped")


async def test_a_changed_host_key_is_not_trusted_through_the_warm_connection(
    client: Client,
) -> None:
    await run(client, "true")  # pins the node's key, and leaves the connection warm
    adapter = client.app[STATE].adapter
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    change = NodeChange(reason="HostKeyPinned", at=adapter.clock.now(), ssh_host_key=other)
    adapter.registry.amend(UniqueId("abc123"), change)
    await eventually(lambda: _equal(pool_of(client).counts(), (0, 0)), within=10, what="dropped")
    resp = await client.post(f"/api/v1/nodes/{NODE}/exec", json={"cmd": "true"})
    assert resp.status == 502
    assert (await resp.json())["error"] == "host key not trusted"


async def until(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    seen = ""
    async with asyncio.timeout(15):
        while text not in seen:
            msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), seen
            seen += msg.data.decode() if isinstance(msg.data, bytes) else msg.data


async def _equal(value: object, expected: object) -> bool:
    return value == expected


async def test_files_leave_no_session_open_on_the_warm_connection(
    client: Client, tmp_path: Path
) -> None:
    """More listings in a row than sshd takes sessions at once on one connection
    (MaxSessions, 100 here): each SFTP session is closed after its request."""
    for _ in range(110):
        resp = await client.get(f"/api/v1/nodes/{NODE}/files", params={"path": str(tmp_path)})
        assert resp.status == 200, await resp.text()
    assert pool_of(client).opened == 1


async def test_a_timed_out_exec_kills_its_own_and_spares_what_an_earlier_one_left(
    client: Client, tmp_path: Path
) -> None:
    """Both on one warm connection, so both carry its SSH_CONNECTION: told apart by when
    they started."""
    left = int((await run(client, "sleep 300 >/dev/null 2>&1 & echo $!"))["stdout"])
    await asyncio.sleep(1)  # the next command starts later than the leftover did
    pidfile = tmp_path / "pid"
    body = await run(client, f"sleep 300 & echo $! > {pidfile}; wait", timeout=1)
    assert body["timed_out"] is True
    own = int(await asyncio.to_thread(pidfile.read_text))
    await eventually(lambda: _gone(own), within=15, what="the timed-out exec's child killed")
    try:
        assert not await _gone(left), "what the earlier exec left running was killed"
    finally:
        os.kill(left, signal.SIGKILL)
    assert pool_of(client).opened == 1


async def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = await asyncio.to_thread(Path(f"/proc/{pid}/stat").read_text)
    return stat.split(")")[-1].split()[0] == "Z"  # a zombie is gone, unreaped


async def test_an_exec_whose_connection_is_closed_under_it_is_an_error_not_a_result(
    client: Client,
) -> None:
    """The node went offline while it ran: its connection closed at once, and the exec
    says so (it answered 200 with no exit status)."""
    running = asyncio.ensure_future(
        client.post(f"/api/v1/nodes/{NODE}/exec", json={"cmd": "sleep 5; echo done"})
    )
    await eventually(lambda: _equal(pool_of(client).counts(), (1, 0)), within=10, what="busy")
    resp = await client.put("/frp_update", data={"unique_id": "abc123", "status": "offline"})
    assert resp.status == 200
    answer = await asyncio.wait_for(running, 10)
    assert answer.status == 502
    assert "closed" in (await answer.json())["details"]
