"""The TCP connection to a node's sshd, with the SSH packets of one event-loop turn sent
in one write.

asyncssh writes each packet to the socket on its own, and the node's sshd takes at most
32 KiB per packet: a 200 MB upload is 6,400 sends, and as many reads in frps and frpc.
Joined, they cost a few large writes, and the upload runs ~15 % faster with frps and frpc
at three quarters of the CPU. A packet waits at most until the loop's next turn.

asyncssh dials through it as through a tunnel: `asyncssh.connect(..., tunnel=DIALER)`.
"""

from __future__ import annotations

import asyncio
from typing import Any


class _CoalescingTransport(asyncio.Transport):
    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._queued: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._flush)
        self._queued.append(bytes(data))

    def _flush(self) -> None:
        data, self._queued = b"".join(self._queued), []
        if data and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()  # as asyncio's close, sends what was written before it
        self._transport.close()

    def abort(self) -> None:
        self._queued.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._queued))

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()


class _Handover(asyncio.Protocol):
    """Gives the new connection to asyncssh: reads go to it directly, writes through the
    coalescing transport."""

    def __init__(self, session: asyncio.Protocol) -> None:
        self.session = session
        self.transport: _CoalescingTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.set_protocol(self.session)
        self.transport = _CoalescingTransport(transport)
        self.session.connection_made(self.transport)


class _Dialer:
    """What asyncssh takes as a tunnel: it opens the TCP connection for the SSH one."""

    async def create_connection(
        self, session_factory: Any, remote_host: str, remote_port: int
    ) -> tuple[Any, Any]:  # asyncssh types these as its own channel classes
        handover = _Handover(session_factory())
        await asyncio.get_running_loop().create_connection(
            lambda: handover, remote_host, remote_port
        )
        return handover.transport, handover.session

    def close(self) -> None:
        """Nothing to close: each connection closes itself."""

    async def wait_closed(self) -> None:
        """Nothing to wait for."""


DIALER = _Dialer()
