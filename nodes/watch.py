"""Node changes as a stream, for whoever watches (`GET /api/v1/nodes?watch=true`).

Each watcher has a bounded queue that the registry fills without waiting, so the plugin
path never waits for a reader. A reader that falls a whole queue behind is dropped: its
stream ends with an error and it lists again, as after a Kubernetes watch's 410 Gone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from nodes.model import NodeState

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
QUEUE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class NodeEvent:
    type: EventType
    state: NodeState  # for DELETED, the last state known
    # Made by this replica (`transition`), not adopted from the store (another replica's
    # write, or the nodes read at start-up): each change is notified by its maker only.
    made_here: bool


class WatchEndedError(Exception):
    """The watch is over: `overrun` if its reader fell behind, else the adapter stops."""

    def __init__(self, *, overrun: bool) -> None:
        super().__init__("fell behind" if overrun else "shutting down")
        self.overrun = overrun


class NodeWatch:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[NodeEvent | None] = asyncio.Queue(QUEUE_SIZE + 1)
        self._ended: WatchEndedError | None = None

    def put(self, event: NodeEvent) -> None:
        if self._ended is not None:
            return
        if self._queue.qsize() >= QUEUE_SIZE:
            self.end(overrun=True)
            return
        self._queue.put_nowait(event)

    def end(self, *, overrun: bool) -> None:
        """No more events: the reader is told once it has read those already queued."""
        if self._ended is None:
            self._ended = WatchEndedError(overrun=overrun)
            self._queue.put_nowait(None)  # the one place kept free for it

    async def next(self) -> NodeEvent:
        event = await self._queue.get()
        if event is None:
            assert self._ended is not None
            raise self._ended
        return event
