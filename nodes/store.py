"""The one small async interface every NodeMaintenance backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from nodes.model import JsonObject, NodeState


class StoreError(Exception):
    """A backend could not complete an operation; what was asked may be retried."""


class InvalidStoreUrlError(ValueError):
    pass


class NodeStore(Protocol):
    async def apply(self, states: Sequence[NodeState]) -> None:
        """Create or update the NM of every state, keeping what others own; raises StoreError."""

    async def get(self, name: str) -> JsonObject | None: ...

    async def list(self) -> list[JsonObject]: ...

    async def close(self) -> None: ...


def open_store(url: str) -> NodeStore:
    """The backend a `FRPA_STORE` URL names (see `check_store_url`)."""
    from nodes.sqlite import SqliteStore  # noqa: PLC0415  (only the named backend is loaded)

    return SqliteStore(check_store_url(url))


def check_store_url(url: str) -> str:
    """The SQLite path of `sqlite:///relative.db` or `sqlite:////absolute.db`."""
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and sep and rest.startswith("/") and rest != "/":
        return rest[1:]
    raise InvalidStoreUrlError(
        f"unsupported store {url!r}: use sqlite:///relative/file.db or sqlite:////absolute/file.db"
    )
