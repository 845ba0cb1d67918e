"""The embedded NodeMaintenance store: one SQLite file, no cluster needed.

Each NM is kept whole, as the JSON a Kubernetes API would return. Every SQLite call, with
the rendering and parsing of the JSON around it, runs in a thread, one at a time: a batch
of 500 nodes or a load of the whole fleet must not hold up the event loop that answers
frps. Batches are one transaction each, and WAL mode keeps each commit to a page append;
committed data survives a crash of this process.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from nodes.model import JsonObject, NodeState, nm_name, render_nm
from nodes.store import SoleLeader, StoreError, StoreObserver

_T = TypeVar("_T")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodemaintenances (
    name TEXT PRIMARY KEY,
    resource_version INTEGER NOT NULL,
    body TEXT NOT NULL
)
"""


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=0")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite store {path!r}: {e}") from e
        self._one_at_a_time = asyncio.Lock()

    def subscribe(self, observer: StoreObserver) -> None:
        """Nothing to hear of: one process writes the file, and it knows what it wrote."""

    def cached(self, name: str) -> None:
        return None

    def leadership(self, identity: str) -> SoleLeader:
        return SoleLeader()

    def reviewer(self) -> None:
        return None

    async def apply(self, states: Sequence[NodeState]) -> None:
        await self._in_thread(self._apply, states)

    def _apply(self, states: Sequence[NodeState]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for state in states:
                    name = nm_name(state.unique_id)
                    row = self._db.execute(
                        "SELECT resource_version, body FROM nodemaintenances WHERE name = ?",
                        (name,),
                    ).fetchone()
                    version, existing = (row[0], json.loads(row[1])) if row else (0, None)
                    obj = render_nm(state, existing)
                    obj["metadata"]["resourceVersion"] = str(version + 1)
                    self._db.execute(
                        "INSERT OR REPLACE INTO nodemaintenances VALUES (?, ?, ?)",
                        (name, version + 1, json.dumps(obj, separators=(",", ":"))),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"SQLite write of {len(states)} node(s) failed: {e}") from e

    async def get(self, name: str) -> JsonObject | None:
        return await self._in_thread(self._get, name)

    def _get(self, name: str) -> JsonObject | None:
        try:
            row = self._db.execute(
                "SELECT body FROM nodemaintenances WHERE name = ?", (name,)
            ).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"SQLite read of {name!r} failed: {e}") from e
        return json.loads(row[0]) if row else None

    def _list(self) -> list[JsonObject]:
        try:
            rows = self._db.execute("SELECT body FROM nodemaintenances ORDER BY name").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"SQLite list failed: {e}") from e
        return [json.loads(body) for (body,) in rows]

    async def list(self) -> list[JsonObject]:
        return await self._in_thread(self._list)

    async def _in_thread(self, work: Callable[..., _T], *args: Any) -> _T:
        """`work(*args)` in a thread, one at a time; a caller cancelled meanwhile leaves only
        once the thread is done, so nothing closes the database under it."""
        async with self._one_at_a_time:
            done = asyncio.ensure_future(asyncio.to_thread(work, *args))
            try:
                return await asyncio.shield(done)
            finally:
                await asyncio.wait([done])

    async def close(self) -> None:
        async with self._one_at_a_time:
            self._db.close()
