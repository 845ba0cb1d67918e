"""Which replica runs the cluster-wide chores (reconciliation, heartbeat expiry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Leadership(Protocol):
    """Whether this process is the one replica that runs the cluster-wide chores."""

    @property
    def leading(self) -> bool: ...

    async def run(self, on_gain: Callable[[], None]) -> None:
        """Keep trying to lead, and keep leading once it does; `on_gain` on each win."""

    async def release(self) -> None:
        """Step down, so another replica takes over at once rather than after a timeout."""


class SoleLeader:
    """A store only one process writes (an SQLite file) needs no election: it leads."""

    leading = True

    async def run(self, on_gain: Callable[[], None]) -> None:
        on_gain()

    async def release(self) -> None:
        pass
