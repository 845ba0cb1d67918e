"""The one guard every long-running background task runs under.

A task that raises is logged with its traceback, counted, and started again after the
process's backoff (FRPA_RETRY_BACKOFF: by default 1 s doubling with each failure in a row,
up to a minute, each wait cut by up to a fifth at random). `/healthz` fails only for a
task that is not running: one that ended without returning, or one waiting to be started
again after failing `FAILURES_DOWN` times in a row. A task that failed and runs again is
up: a liveness probe would restart the pod, and with it the plugin path every frpc login
waits on, for an error already recovered from. Its restarts and last error show on `/readyz`
and in the metrics instead. tests/test_manifests.py holds these timings against the
Deployment's liveness probe.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from nodes.clock import Clock
from nodes.tasks import stop
from schemas.settings import Backoff

logger = logging.getLogger(__name__)

# A failure after a run this long is not one in a row: it waits the first backoff again.
# Longer than the loops' own rounds (heartbeat expiry's, reconciliation's, by default), so
# a loop that fails at every round is failing again and again, not recovering each time.
STEADY_SECONDS = 300.0
# Failures in a row after which a task is down while it waits to be started again.
FAILURES_DOWN = 3

# running; waiting to be started again; ended (its work returned); dead (ended otherwise)
TaskState = Literal["running", "waiting", "ended", "dead"]


@dataclass(frozen=True, kw_only=True)
class TaskStatus:
    state: TaskState
    down: bool
    restarts: int
    last_error: str | None


class Supervisor:
    def __init__(self, clock: Clock, backoff: Backoff) -> None:
        self._clock = clock
        # The one retry policy of the process's background work, handed on from here.
        self.backoff = backoff
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # name -> its failures in a row, while it waits to be started again
        self._waiting: dict[str, int] = {}
        self.restarts: Counter[str] = Counter()
        self._last_errors: dict[str, str] = {}

    def start(self, name: str, work: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
        """Run `work()` under the guard until it returns or the task is stopped."""
        task = asyncio.create_task(self._guard(name, work), name=name)
        task.add_done_callback(partial(self._ended, name))
        self._tasks[name] = task
        return task

    @property
    def names(self) -> list[str]:
        """The tasks started and not stopped."""
        return list(self._tasks)

    def tasks(self) -> dict[str, TaskStatus]:
        """Each task started and not stopped, as it is now."""
        statuses = {}
        for name, task in self._tasks.items():
            death = _death(task)
            state: TaskState
            if death is not None:
                state = "dead"
            elif task.done():
                state = "ended"
            else:
                state = "waiting" if name in self._waiting else "running"
            statuses[name] = TaskStatus(
                state=state,
                down=death is not None or self._waiting.get(name, 0) >= FAILURES_DOWN,
                restarts=self.restarts[name],
                last_error=death or self._last_errors.get(name),
            )
        return statuses

    def down(self) -> dict[str, str | None]:
        """Each task down now, with its last error."""
        return {name: status.last_error for name, status in self.tasks().items() if status.down}

    async def stop(self, *names: str) -> None:
        """Cancel these tasks (all, when none are named) and wait for them to end."""
        await stop(
            [self._tasks.pop(name) for name in names or list(self._tasks)], title="background tasks"
        )

    async def _guard(self, name: str, work: Callable[[], Awaitable[object]]) -> None:
        failures_in_a_row = 0
        while True:
            started = self._clock.monotonic()
            try:
                await work()
                return
            except Exception as e:
                if self._clock.monotonic() - started >= STEADY_SECONDS:
                    failures_in_a_row = 0
                failures_in_a_row += 1
                self.restarts[name] += 1
                self._last_errors[name] = f"{type(e).__name__}: {e}"
                wait = self.backoff.delay(failures_in_a_row)
                logger.exception("%s failed; starting it again in %g s", name, wait)
                self._waiting[name] = failures_in_a_row
                try:
                    await self._clock.sleep(wait)
                finally:
                    del self._waiting[name]

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        # `stop` forgets a task before it cancels it: one still known ended on its own.
        death = _death(task)
        if self._tasks.get(name) is task and death is not None:
            logger.error("%s ended (%s); it is not started again", name, death)


def _death(task: asyncio.Task[None]) -> str | None:
    """Why `task` ended other than by its work returning; None if it did not."""
    if not task.done():
        return None
    if task.cancelled():
        # Not an Exception, so the guard lets it through: something the work awaited was
        # cancelled, and would be again.
        return "CancelledError: something it awaited was cancelled"
    error = task.exception()
    return None if error is None else f"{type(error).__name__}: {error}"
