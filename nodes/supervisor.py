"""The one guard every long-running background task runs under.

A task that raises is logged with its traceback, counted, and started again after a
backoff (1 s, doubling up to a minute; back to 1 s once it has run steadily). From its
failure until it has run steadily again it is down, and `/healthz` says so: a loop that
dies silently would otherwise leave node state unjudged while every probe stays green.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from nodes.clock import Clock

logger = logging.getLogger(__name__)

_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 60.0
# A task restarted that has run this long without failing is up again.
STEADY_SECONDS = 30.0


class Supervisor:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # name -> (its last error, when it was started again; None: not yet)
        self._failures: dict[str, tuple[str, float | None]] = {}
        self.restarts: Counter[str] = Counter()

    def start(self, name: str, work: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
        """Run `work()` under the guard until it returns or the task is stopped."""
        task = asyncio.create_task(self._guard(name, work), name=name)
        self._tasks[name] = task
        return task

    @property
    def names(self) -> list[str]:
        """The tasks started and not stopped."""
        return list(self._tasks)

    def down(self) -> dict[str, str]:
        """Each task down now, with its last error."""
        now = self._clock.monotonic()
        return {
            name: error
            for name, (error, restarted) in self._failures.items()
            if restarted is None or now - restarted < STEADY_SECONDS
        }

    async def stop(self, *names: str) -> None:
        """Cancel these tasks (all, when none are named) and wait for them to end."""
        tasks = [self._tasks.pop(name) for name in names or list(self._tasks)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _guard(self, name: str, work: Callable[[], Awaitable[object]]) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            started = self._clock.monotonic()
            try:
                await work()
            except Exception as e:
                self.restarts[name] += 1
                if self._clock.monotonic() - started >= STEADY_SECONDS:
                    backoff = _BACKOFF_FIRST
                self._failures[name] = (f"{type(e).__name__}: {e}", None)
                logger.exception("%s failed; starting it again in %g s", name, backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                self._failures[name] = (self._failures[name][0], self._clock.monotonic())
                continue
            self._failures.pop(name, None)
            return
