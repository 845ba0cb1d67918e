"""A crowd of idle connections must not cut frps off: the adapter's own command, with the
open files limits a fresh machine gives (soft 1024), against 1,100 idle connections."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.app import IDLE_CONNECTION_SECONDS
from cli.limits import raise_file_limit
from tests.e2e.peers import Processes, wait_for_port
from tests.support import free_port, ping

pytestmark = pytest.mark.e2e
IDLE = 1100
BODY = json.dumps(ping()).encode()
PING = b"POST /frps/handler HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture(autouse=True)
def enough_files_for_the_crowd() -> None:
    if raise_file_limit() < 2 * IDLE + 100:
        pytest.skip("this test's own process cannot open the crowd's connections")


async def start_adapter(processes: Processes, port: int, soft: int, hard: int) -> None:
    processes.start(
        "adapter",
        ["prlimit", f"--nofile={soft}:{hard}", sys.executable, "-m", "cli", "serve"],
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parents[2]),
            "FRP_ADAPTER_ADDRESS": f"127.0.0.1:{port}",
            "FRPA_STORE": f"sqlite:///{processes.workdir / 'frpa.db'}",
        },
    )
    await wait_for_port(port, processes.running["adapter"])


async def call(connection: Connection, within: float = 2) -> bytes:
    reader, writer = connection
    writer.write(PING)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head.split(b"\r\n")[0] + await reader.readexactly(length)


async def new_call(port: int, within: float) -> bytes:
    connection = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), within)
    try:
        return await call(connection, within)
    finally:
        connection[1].close()


@pytest.fixture
async def crowd() -> AsyncIterator[list[Connection]]:
    connections: list[Connection] = []
    yield connections
    for _, writer in connections:
        writer.close()


async def open_crowd(port: int, connections: list[Connection]) -> None:
    for _ in range(IDLE):  # the kernel completes them, whether the adapter accepts or not
        connections.append(await asyncio.open_connection("127.0.0.1", port))


ALLOWED = b'HTTP/1.1 200 OK{"reject":false,"unchange":true}'


async def test_at_the_default_soft_limit_a_crowd_leaves_room_for_frps(
    tmp_path: Path, crowd: list[Connection]
) -> None:
    processes, port = Processes(tmp_path), free_port()
    try:
        await start_adapter(processes, port, soft=1024, hard=4096)
        await open_crowd(port, crowd)
        assert await new_call(port, within=2) == ALLOWED
        assert "open files limit: 4096" in processes.log("adapter")
        assert "cannot accept" not in processes.log("adapter")
    finally:
        await processes.stop_all()


async def test_out_of_files_the_plugin_answers_and_the_log_stays_small(
    tmp_path: Path, crowd: list[Connection]
) -> None:
    processes, port = Processes(tmp_path), free_port()
    try:
        await start_adapter(processes, port, soft=1024, hard=1024)
        frps = await asyncio.open_connection("127.0.0.1", port)  # frps's keep-alive connection
        await open_crowd(port, crowd)
        for _ in range(5):
            await asyncio.sleep(1)
            assert await call(frps) == ALLOWED
        log = processes.log("adapter")
        assert log.count("cannot accept connections: [Errno 24]") == 1, log[-2000:]
        assert len(log) < 2000
        # The crowd stays idle: closed by the adapter, it makes room for new connections.
        assert await new_call(port, within=IDLE_CONNECTION_SECONDS + 5) == ALLOWED
        frps[1].close()
    finally:
        await processes.stop_all()
