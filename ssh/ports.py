"""A TCP port on a node, reached as an SSH `direct-tcpip` channel to 127.0.0.1 there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncssh

from ssh.connector import SshConnector, SshError, SshTarget

_READ_SIZE = 1 << 18


class PortStream:
    """Bytes to and from the node's port; b"" from `read` once the node side closed."""

    def __init__(
        self, reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]
    ) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        await asyncio.sleep(0)  # packets that already arrived join this read
        return await self._reader.read(_READ_SIZE)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def write_eof(self) -> None:
        if self._writer.can_write_eof():
            self._writer.write_eof()


@asynccontextmanager
async def node_port(
    connector: SshConnector, target: SshTarget, port: int
) -> AsyncIterator[PortStream]:
    async with connector.connect(target) as conn:
        try:
            reader, writer = await conn.open_connection("127.0.0.1", port, encoding=None)
        except asyncssh.ChannelOpenError as e:
            raise SshError(f"{target.name}: port {port}: {e.reason}") from e
        try:
            yield PortStream(reader, writer)
        finally:
            writer.close()
