"""The embedded NodeMaintenance store: one SQLite file, no cluster needed.

Each NM is kept whole, as the JSON a Kubernetes API would return. SQLite calls run in a
thread, one at a time, so a commit or a load of the whole fleet never holds up the event
loop that answers frps; the JSON around them is parsed and rendered on the loop, a few
nodes between yields, because Python work in a thread holds the GIL for up to 5 ms each
time the loop lets go of it (each socket call), which costs the plugin path more than
the work itself. Batches are one transaction each, and WAL mode keeps each commit to a
page append; committed data survives a crash of this process.

One process per file: a second one would judge nodes by heartbeats it never receives.
The database file itself is held (flock) while the store is open, so a hard link or a
symlink to it names the same lock; a second process is told the holder's pid, read from
/proc/locks. flock and SQLite's own fcntl locks do not see each other on Linux, but a
process closing any descriptor of the file drops its fcntl locks, so ours is closed only
after SQLite's connection. A file deleted or replaced under the process would take every
later write with it, so each commit checks the path still names the file open, and is
not acknowledged if not.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from nodes.model import JsonObject, NodeState, compact_json, nm_name, render_nm
from nodes.store import StoreError, StoreObserver
from schemas import parse_json, whole_text

_T = TypeVar("_T")
# Nodes whose JSON is parsed or rendered between two yields to the event loop (~1 ms).
_CHUNK = 50
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
        self._lock = _lock(path)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA busy_timeout=0")
                self._db.execute(_SCHEMA)
            except sqlite3.Error:
                self._db.close()  # before the lock's descriptor: see the module's docstring
                raise
        except sqlite3.Error as e:
            os.close(self._lock)
            raise StoreError(f"cannot open SQLite store {path!r}: {e}") from e
        # The file locked, not whatever the path names by now.
        opened = os.fstat(self._lock)
        self._file = (opened.st_dev, opened.st_ino)
        self._one_at_a_time = asyncio.Lock()
        variables = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._most_values = variables - variables % 3

    def problem(self) -> str | None:
        """Why writes would not last (the file deleted, replaced, or not writable), or None."""
        try:
            now = os.stat(self.path)
        except OSError as e:
            return f"SQLite file {self.path} is gone ({e.strerror}): writes would be lost"
        if (now.st_dev, now.st_ino) != self._file:
            return f"SQLite file {self.path} was replaced: writes would go to the old one"
        if not os.access(self.path, os.W_OK):
            return f"SQLite file {self.path} is not writable"
        return None

    def subscribe(self, observer: StoreObserver) -> None:
        """Nothing to hear of: one process writes the file, and it knows what it wrote."""

    def cached(self, name: str) -> None:
        return None

    async def apply(self, states: Sequence[NodeState]) -> None:
        names = [nm_name(state.unique_id) for state in states]
        async with self._one_at_a_time:
            stored = await self._in_thread(self._read, names)
            rows: list[str | int] = []  # name, version, body: a row's three values
            pairs = list(zip(states, names, strict=True))
            for start in range(0, len(pairs), _CHUNK):
                for state, name in pairs[start : start + _CHUNK]:
                    version, body = stored.get(name, (0, None))
                    obj = render_nm(state, _parsed(body) if body else None)
                    obj["metadata"]["resourceVersion"] = str(version + 1)
                    rows += (name, version + 1, compact_json(obj).decode())
                await asyncio.sleep(0)
            await self._in_thread(self._write, rows)

    def _read(self, names: Sequence[str]) -> dict[str, tuple[int, str]]:
        try:
            found = self._db.execute(
                "SELECT name, resource_version, body FROM nodemaintenances "
                "WHERE name IN (SELECT value FROM json_each(?))",
                (json.dumps(names),),
            ).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"SQLite read of {len(names)} node(s) failed: {e}") from e
        return {name: (version, body) for name, version, body in found}

    def _write(self, values: Sequence[str | int]) -> None:
        count = len(values) // 3
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # As many rows a statement as SQLite takes values, bound at once: the GIL is
                # let go once a statement, not once a row (executemany), so the event loop
                # does not queue behind this thread row after row; and SQLite parses no
                # JSON (rows taken out of one JSON array cost 12 us a node, these 5).
                for start in range(0, len(values), self._most_values):
                    part = values[start : start + self._most_values]
                    placeholders = ",".join(("(?,?,?)",) * (len(part) // 3))
                    self._db.execute(
                        f"INSERT OR REPLACE INTO nodemaintenances VALUES {placeholders}",  # noqa: S608  (placeholders only)
                        part,
                    )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"SQLite write of {count} node(s) to {self.path} failed: {e}") from e
        if problem := self.problem():
            raise StoreError(problem)

    async def get(self, name: str) -> JsonObject | None:
        async with self._one_at_a_time:
            found = await self._in_thread(self._read, [name])
        return _parsed(found[name][1]) if name in found else None

    def _bodies(self) -> list[str]:
        try:
            rows = self._db.execute("SELECT body FROM nodemaintenances ORDER BY name").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"SQLite list failed: {e}") from e
        return [body for (body,) in rows]

    async def list(self) -> AsyncIterator[JsonObject]:
        async with self._one_at_a_time:
            bodies = await self._in_thread(self._bodies)
        for start in range(0, len(bodies), _CHUNK):
            for body in bodies[start : start + _CHUNK]:
                yield _parsed(body)
            await asyncio.sleep(0)

    @staticmethod
    async def _in_thread(work: Callable[..., _T], *args: Any) -> _T:
        """`work(*args)` in a thread; a caller cancelled meanwhile leaves only once the
        thread is done, so nothing closes the database under it."""
        done = asyncio.ensure_future(asyncio.to_thread(work, *args))
        try:
            return await asyncio.shield(done)
        finally:
            await asyncio.wait([done])

    async def close(self) -> None:
        async with self._one_at_a_time:
            self._db.close()
            os.close(self._lock)


def _parsed(body: str) -> JsonObject:
    """A stored NM. Versions before orjson read plugin bodies with `json`, which takes the
    escape of half a surrogate pair (`"\\ud800"`), and stored it so. orjson refuses it, and
    no answer, metric or page could encode it: it is read as U+FFFD, as Go's encoding/json
    reads it."""
    try:
        obj: JsonObject = parse_json(body)
    except ValueError:
        text = json.dumps(json.loads(body), ensure_ascii=False)
        obj = parse_json(whole_text(text))
    return obj


def _lock(path: str) -> int:
    """Hold the database file (its inode, whatever name reached it) for this process;
    StoreError naming the holder if another process does."""
    try:
        # SQLite takes an empty file for a new database, as it would the one it creates.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StoreError(f"cannot open SQLite store {path}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _flock_holder(os.fstat(fd))
        os.close(fd)
        raise StoreError(
            f"{path} is in use by another frp-adapter (pid {holder}): one process per file"
        ) from None
    return fd


def _flock_holder(file: os.stat_result) -> str:
    """The pid holding an flock on `file` as /proc/locks shows it, or "unknown" (no /proc,
    or a holder outside this pid namespace, which /proc/locks leaves out)."""
    # Lines read "3: FLOCK  ADVISORY  WRITE 7408 fe:00:2147823 0 EOF"; waiters add "->".
    where = f"{os.major(file.st_dev):02x}:{os.minor(file.st_dev):02x}:{file.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            for line in locks:
                fields = line.split()
                if fields[1:2] == ["FLOCK"] and fields[5:6] == [where]:
                    return fields[4]
    except OSError:
        pass
    return "unknown"
