"""The TCP connection under asyncssh: the writes of one loop turn leave in one send, in
order; close sends what was written before it; abort drops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ssh.coalescing import DIALER


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


class Peer:
    """A TCP server that records each chunk `recv` returned, as frps would read them."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.read = asyncio.Event()  # set at each read
        self.closed = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 20):
            self.reads.append(data)
            self.read.set()
        self.closed.set()
        writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, int]]:
    peer = Peer()
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    async with server:
        yield peer, server.sockets[0].getsockname()[1]


async def test_the_writes_of_one_turn_leave_together_and_in_order(
    peer: tuple[Peer, int],
) -> None:
    recorder, port = peer
    transport, session = await DIALER.create_connection(Recorder, "127.0.0.1", port)
    assert session.transport is transport
    for i in range(100):
        transport.write(b"%03d," % i)
    assert transport.get_write_buffer_size() == 400  # queued until the loop turns
    await asyncio.wait_for(recorder.read.wait(), 5)  # they left, and arrived
    for i in range(100, 200):
        transport.write(b"%03d," % i)
    transport.close()
    await asyncio.wait_for(recorder.closed.wait(), 5)
    assert b"".join(recorder.reads) == b"".join(b"%03d," % i for i in range(200))
    assert len(recorder.reads) == 2
    assert await asyncio.wait_for(session.lost, 5) is None


async def test_abort_drops_what_was_not_sent(peer: tuple[Peer, int]) -> None:
    recorder, port = peer
    transport, session = await DIALER.create_connection(Recorder, "127.0.0.1", port)
    transport.write(b"never sent")
    transport.abort()
    await asyncio.wait_for(recorder.closed.wait(), 5)
    assert recorder.reads == []
    assert transport.is_closing()
    await asyncio.wait_for(session.lost, 5)
