"""The one small async interface every NodeMaintenance backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from nodes.model import JsonObject, NodeState, UniqueId


class StoreError(Exception):
    """A backend could not complete an operation; what was asked may be retried.

    `failed` names the nodes of a write that were not stored (None: all of them).
    """

    def __init__(self, message: str, *, failed: frozenset[UniqueId] | None = None) -> None:
        super().__init__(message)
        self.failed = failed


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

    async def close(self) -> None: ...
