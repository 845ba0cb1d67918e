"""Clients that never read their list or watch: they hold no other reader, and are dropped
once they have taken nothing for FRPA_SLOW_READER_TIMEOUT."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import sys
import termios
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import CONCURRENT_LISTS, create_app
from api.state import STATE
from nodes.model import NodeState, UniqueId
from nodes.sqlite import SqliteStore
from tests.support import eventually, settings_for

Client = TestClient[web.Request, web.Application]
NODES = 5000  # the largest page: megabytes, far beyond what the sockets' buffers hold
LIST = f"limit={NODES}"
WATCH = "watch=true"


async def stored_nodes(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "frpa.db"))
    now = datetime.now(UTC)
    await store.apply(
        [
            NodeState(
                unique_id=UniqueId(f"node-{i:05}"),
                status="online",
                reason="NewProxy",
                last_transition=now,
                updated_at=now,
                frps_address="203.0.113.7",
                remote_port=10000 + i,
                run_id=f"{i:016x}",
                proxy_name=f"n{i}.ssh",
            )
            for i in range(NODES)
        ]
    )
    await store.close()


async def adapter(tmp_path: Path, aiohttp_client: AiohttpClient, **settings: Any) -> Client:
    await stored_nodes(tmp_path)
    return await aiohttp_client(create_app(settings_for(tmp_path, **settings)))


@contextlib.contextmanager
def non_readers(client: Client, query: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` clients that ask `GET /api/v1/nodes?<query>` and never read a byte."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", client.port))
            sock.sendall(f"GET /api/v1/nodes?{query} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            socks.append(sock)
        yield socks


def unread(sock: socket.socket) -> int:
    waiting = bytearray(4)
    fcntl.ioctl(sock, termios.FIONREAD, waiting)
    return int.from_bytes(waiting, sys.byteorder)


async def until_reset(sock: socket.socket) -> bytes:
    """What the client receives until its connection is reset (an end without one fails)."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    received = b""
    try:
        while data := await loop.sock_recv(sock, 65536):
            received += data
    except ConnectionResetError:
        return received
    raise AssertionError("the connection was closed, not reset")


def dropped(client: Client) -> float | None:
    labels = {"route": "/api/v1/nodes"}
    return client.app[STATE].metrics.get_sample_value("frpa_slow_readers_dropped_total", labels)


@pytest.mark.parametrize("query", [LIST, WATCH])
async def test_clients_that_never_read_hold_no_other_list_or_watch(
    tmp_path: Path, aiohttp_client: AiohttpClient, query: str
) -> None:
    client = await adapter(tmp_path, aiohttp_client)
    # As many as lists may render at once: before, each held its render slot while its
    # answer waited on it, and every other list and watch waited behind them.
    with non_readers(client, query, CONCURRENT_LISTS) as socks:

        async def answered() -> bool:
            return all(unread(sock) for sock in socks)

        await eventually(answered, within=60, what="an answer to every non-reader")
        async with asyncio.timeout(60):  # fails the test, never waited for
            resp = await client.get("/api/v1/nodes", params={"limit": NODES})
            assert len((await resp.json())["items"]) == NODES
            async with client.get("/api/v1/nodes", params={"watch": "true"}) as watch:
                added = 0
                while b"BOOKMARK" not in (line := await watch.content.readline()):
                    assert b'"ADDED"' in line
                    added += 1
            assert added == NODES
        assert not dropped(client), "the non-readers were dropped: they held nobody"


@pytest.mark.parametrize("query", [LIST, WATCH])
async def test_a_client_that_takes_nothing_for_the_timeout_is_dropped_and_counted(
    tmp_path: Path, aiohttp_client: AiohttpClient, query: str
) -> None:
    client = await adapter(tmp_path, aiohttp_client, slow_reader_timeout=0.05)
    with non_readers(client, query, 1) as (sock,):

        async def counted() -> bool:
            return dropped(client) == 1

        await eventually(counted, within=60, what="the non-reader dropped")
        async with asyncio.timeout(60):  # fails the test, never waited for
            received = await until_reset(sock)
    assert not received.endswith(b"0\r\n\r\n"), "the answer was whole"
    assert client.app[STATE].adapter.registry.watchers == 0
