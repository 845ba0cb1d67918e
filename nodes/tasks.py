"""The task toolkit: short-lived tasks each with an owner, and one way to run the two (or
three) directions of a stream until the first ends. Long-lived background work is the
`Supervisor`'s.

As kopf's `aiokits/aiotasks.py` guards its tasks, a task made here has its failure logged
when it ends (not left for the event loop to report at exit, or never), and its owner
cancels and awaits every one it still has when it closes (`stop`, the `Supervisor`'s too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine, Hashable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# Every task here ends at once when cancelled (it awaits sockets, sleeps and events); one
# that has not by then (it waits on a thread, or holds its cancellation off) is logged and
# left, so the close goes on to hand the lease on and drain the writes within the shutdown
# budget (FRPA_SHUTDOWN_TIMEOUT, 10 s by default).
STOP_SECONDS = 2.0


class Tasks:
    """An owner's tasks, one per key: `spawn` one, ask whether a key has one, `cancel` it;
    `close` cancels and awaits them all."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    def spawn(self, key: Hashable, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """`work` as a task under `key` (which must not have one running)."""
        task = asyncio.create_task(work, name=f"{self._owner}: {key}")
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._ended(key, done))
        return task

    def __contains__(self, key: Hashable) -> bool:
        return key in self._tasks

    def cancel(self, key: Hashable) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def wait(self) -> None:
        """Until every task spawned so far has ended, however it ends."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        await stop(self._tasks.values(), title=self._owner)

    def _ended(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("%s failed", task.get_name(), exc_info=error)


async def stop(tasks: Collection[asyncio.Task[Any]], *, title: str) -> None:
    """Cancel `tasks` and wait for them to end, `STOP_SECONDS` at most; log those that have
    not by then, and leave them."""
    tasks, within = list(tasks), STOP_SECONDS
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, left = await asyncio.wait(tasks, timeout=within)
    if left:
        logger.error(
            "%s: %d task(s) still running %g s after being cancelled, left behind: %s",
            title,
            len(left),
            within,
            ", ".join(sorted(task.get_name() for task in left)),
        )


async def first_to_end(
    ways: Mapping[str, Coroutine[Any, Any, None]],
) -> tuple[str, BaseException | None]:
    """Run every coroutine of `ways` at once until the first ends; cancel the others and
    wait for them. The name of the first to end and what it raised (None: it returned).
    The pump of every bidirectional stream: a shell, a port forward, the CLI's ends."""
    tasks = {asyncio.create_task(work): name for name, work in ways.items()}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(task for task in tasks if task in done)  # in the order of `ways` on a tie
    return tasks[first], None if first.cancelled() else first.exception()
