"""A clock tests move by hand: `await clock.advance(90)` passes 90 s at once for every part
that took it (tracker, expiry, reconciliation, leader election), and nothing else."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.clock import Clock

# How long, in real time, a part woken by `advance` may take to reach its next sleep (its
# dashboard or API calls are real ones) before the test is failed as stuck.
_SETTLE_SECONDS = 10.0


class FakeClock(Clock):
    def __init__(self) -> None:
        self._seconds = 1000.0
        self._epoch = datetime(2026, 11, 25, tzinfo=UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None], asyncio.Task[Any]]] = []
        self._order = itertools.count()
        self._asleep: set[asyncio.Task[Any]] = set()

    def monotonic(self) -> float:
        return self._seconds

    def now(self) -> datetime:
        return self._epoch + timedelta(seconds=self._seconds)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:  # as asyncio's: a yield, not a wait for time to pass
            await asyncio.sleep(0)
            return
        task = asyncio.current_task()
        assert task is not None
        wake = asyncio.get_running_loop().create_future()
        at = self._seconds + seconds
        heapq.heappush(self._sleepers, (at, next(self._order), wake, task))
        self._asleep.add(task)
        try:
            await wake
        finally:
            self._asleep.discard(task)

    async def wait(self, event: asyncio.Event) -> None:
        """Idle until `event` is set: as asleep, for `settle`, as a sleeper is."""
        task = asyncio.current_task()
        assert task is not None
        self._asleep.add(task)
        try:
            await event.wait()
        finally:
            self._asleep.discard(task)

    def stall(self, seconds: float) -> None:
        """Pass `seconds` with nothing running, as for a process stopped or frozen: every
        sleeper due meanwhile wakes late, at the next `advance`."""
        self._seconds += seconds

    async def advance(self, seconds: float) -> None:
        """Pass `seconds`, waking each sleeper at its time, in order; each woken part runs
        until it sleeps again or ends before time moves on."""
        until = self._seconds + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= until:
            at = self._sleepers[0][0]
            self._seconds = max(self._seconds, at)
            woken = set()
            while self._sleepers and self._sleepers[0][0] <= at:
                _, _, wake, task = heapq.heappop(self._sleepers)
                if not wake.done():  # not cancelled meanwhile
                    wake.set_result(None)
                    self._asleep.discard(task)  # awake from now, though not yet run
                    woken.add(task)
            await self.settle(*woken)
        self._seconds = until
        await self.settle()

    async def settle(self, *tasks: asyncio.Task[Any]) -> None:
        """Let the loop run until each of `tasks` is asleep on this clock, or done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SETTLE_SECONDS
        for _ in range(5):
            await asyncio.sleep(0)
        while any(not t.done() and t not in self._asleep for t in tasks):
            assert loop.time() < deadline, f"tasks did not get to sleep: {tasks}"
            await asyncio.sleep(0.001)
