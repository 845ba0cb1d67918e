"""Heartbeat expiry: a node whose Pings stopped goes offline; a pause of the adapter is not
a silence of the nodes.

Pings are stamped when handled. While the adapter itself is stopped (SIGSTOP, a VM
freeze, a long GC) frps holds its calls, and on resuming they are still queued behind
whatever woke first. So each round measures the adapter's own stall (the loop woke late,
or the wall clock jumped against the monotonic one) and, after one, judges no node until
a heartbeat interval (a third of the timeout) has passed with the loop running; start-up
counts as such a resume, since stored heartbeats are as old as the adapter's absence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from nodes.clock import Clock
from nodes.registry import NodeRegistry

logger = logging.getLogger(__name__)


class HeartbeatExpiry:
    def __init__(
        self,
        registry: NodeRegistry,
        *,
        timeout: float,
        leading: Callable[[], bool],
        clock: Clock,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._limit = timedelta(seconds=timeout)
        self._leading = leading
        self._period = max(timeout / 3, 0.05)
        self.stalls = 0
        self.last_sweep_seconds = 0.0  # measured, not clocked: what a sweep costs the loop

    async def run(self) -> None:
        """Judge every period, on the leader only: a replica hears only some of the Pings."""
        clock = self._clock
        wall, awake = clock.now().timestamp(), clock.monotonic()
        judge_from = awake + self._period
        while True:
            await clock.sleep(self._period)
            now_wall, now = clock.now().timestamp(), clock.monotonic()
            late = now - awake - self._period
            jump = (now_wall - wall) - (now - awake)
            if late > self._period / 2 or abs(jump) > self._period / 2:
                self.stalls += 1
                logger.warning(
                    "frp-adapter was stalled for %.1f s: no node is judged silent until "
                    "%.0f s from now, so the Pings held meanwhile are heard first",
                    max(late, abs(jump)),
                    self._period,
                )
                judge_from = now + self._period
            wall, awake = now_wall, now
            if now >= judge_from and self._leading():
                started = clock.perf_counter()
                await self._registry.expire_heartbeats(clock.now(), self._limit)
                self.last_sweep_seconds = clock.perf_counter() - started
