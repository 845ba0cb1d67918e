"""The one small async interface every NodeMaintenance backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from nodes.clock import Clock
from nodes.model import JsonObject, NodeState, UniqueId


class StoreError(Exception):
    """A backend could not complete an operation; what was asked may be retried.

    `failed` names the nodes of a write that were not stored (None: all of them).
    """

    def __init__(self, message: str, *, failed: frozenset[UniqueId] | None = None) -> None:
        super().__init__(message)
        self.failed = failed


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


class ReviewError(Exception):
    """The cluster could not answer a review; the caller is neither let in nor refused."""


class Reviewer(Protocol):
    """Authentication and authorization by the cluster (TokenReview, SubjectAccessReview);
    both raise ReviewError when the API cannot answer."""

    async def user(self, token: str) -> JsonObject | None: ...

    async def allowed(
        self, user: JsonObject, *, verb: str, subresource: str, name: str | None
    ) -> bool: ...


class StoreObserver(Protocol):
    """Hears of every NM that changes in the store, whoever changed it."""

    def observe(self, obj: JsonObject) -> None: ...

    def observe_deletion(self, name: str) -> None: ...


class NodeStore(Protocol):
    async def apply(self, states: Sequence[NodeState]) -> None:
        """Create or update the NM of every state, keeping what others own; raises StoreError."""

    async def get(self, name: str) -> JsonObject | None: ...

    def list(self) -> AsyncIterator[JsonObject]:
        """Every NM, in name order, read a piece at a time, yielding to the loop between
        pieces: a fleet's worth of parsed objects is never alive at once, and whoever
        loads them need not yield too."""

    def subscribe(self, observer: StoreObserver) -> None: ...

    def problem(self) -> str | None:
        """Why writes would not last, where the backend can tell (a deleted SQLite file)."""

    def cached(self, name: str) -> JsonObject | None:
        """The NM as last stored or seen, without I/O; None where the backend keeps no copy
        in memory (SQLite: this process wrote it, and knows what it wrote)."""

    def leadership(self, identity: str, clock: Clock) -> Leadership: ...

    def reviewer(self) -> Reviewer | None:
        """The cluster's reviewer of API tokens, if the store lives in one."""

    async def close(self) -> None: ...
