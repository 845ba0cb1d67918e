"""SIGTERM's one budget: `FRPA_SHUTDOWN_TIMEOUT` is spent once, from the signal to exit.

On shutdown every WebSocket is closed first, with 1001 (going away), so no shell holds
the process; requests still in flight then get half the budget (aiohttp's own
`shutdown_timeout`, given by the CLI), and what follows (the lease, then the writes to
drain) whatever is left of it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from aiohttp import WSCloseCode, web

from runtime.adapter import Adapter

logger = logging.getLogger(__name__)


class Shutdown:
    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter  # it keeps the budget
        # Forgotten once their handlers are done with them.
        self._websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    async def prepare(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        """`ws.prepare(request)`, and `ws` is closed first when shutdown begins."""
        await ws.prepare(request)
        self._websockets.add(ws)

    async def begin(self, app: web.Application) -> None:
        """An `on_shutdown` handler: start the clock, end node watches, and close every
        WebSocket."""
        self._adapter.begin_shutdown()
        open_now = [ws for ws in self._websockets if not ws.closed]
        if open_now:
            logger.info("closing %d WebSocket(s): shutting down", len(open_now))
        try:
            async with asyncio.timeout(self._adapter.time_left()):
                await asyncio.gather(
                    *(
                        ws.close(code=WSCloseCode.GOING_AWAY, message=b"frp-adapter shutting down")
                        for ws in open_now
                    )
                )
        except TimeoutError:
            logger.warning("WebSockets still closing when the shutdown budget ran out")
