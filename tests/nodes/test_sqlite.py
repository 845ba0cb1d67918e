from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nodes.model import NodeChange, NodeState, UniqueId, apply_change
from nodes.sqlite import SqliteStore
from nodes.store import StoreError

T0 = datetime(2026, 11, 25, tzinfo=UTC)


def online(uid: str, port: int = 16022) -> NodeState:
    return apply_change(
        None, UniqueId(uid), NodeChange(reason="t", at=T0, status="online", remote_port=port)
    )


async def test_apply_creates_then_updates_and_counts_resource_versions(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.apply([online("a1"), online("b2")])
    await store.apply([online("a1", 17000)])
    obj = await store.get("nodemaintenances-a1")
    assert obj is not None
    assert obj["metadata"]["resourceVersion"] == "2"
    assert obj["spec"]["services"][0]["proxyPort"] == "17000"
    assert [o["metadata"]["name"] async for o in store.list()] == [
        "nodemaintenances-a1",
        "nodemaintenances-b2",
    ]
    await store.close()


@pytest.mark.parametrize("batch", [0, 1, 2, 3, 4, 7])
async def test_a_batch_past_what_one_statement_binds_is_written_whole(
    tmp_path: Path, batch: int
) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    # Three rows' values a statement (9 of them): batches of 0 to 7 rows fill none, part
    # of one, exactly one, and several statements with a part left over.
    store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 10)
    store._most_values = 9
    await store.apply([online(f"n{i}", 20000 + i) for i in range(batch)])
    listed = [o async for o in store.list()]
    assert [o["spec"]["services"][0]["proxyPort"] for o in listed] == [
        str(20000 + i) for i in range(batch)
    ]
    await store.close()


async def test_what_is_stored_reads_back_as_written_whatever_its_characters(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    name = 'høst-名前-"quoted"-\\-\u2028'
    await store.apply([online("a1")._replace(host_name=name, run_id="")])
    obj = await store.get("nodemaintenances-a1")
    assert obj is not None
    assert obj["spec"]["hostName"] == name
    await store.close()


async def test_half_a_surrogate_pair_an_older_version_stored_is_read_as_go_reads_it(
    tmp_path: Path,
) -> None:
    """Before orjson, a plugin body's `"\\ud800"` was read and stored as that escape; no
    answer could encode it."""
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.apply([online("a1")])
    await store.close()
    with closing(sqlite3.connect(path)) as db, db:
        (body,) = db.execute("SELECT body FROM nodemaintenances").fetchone()
        body = body.replace('"hostName":""', '"hostName":"x\\ud800\\ud83d\\ude00"')
        db.execute("UPDATE nodemaintenances SET body = ?", (body,))
    store = SqliteStore(str(path))
    assert [o["spec"]["hostName"] async for o in store.list()] == ["x\ufffd\U0001f600"]
    await store.apply([online("a1", 17000)])  # keeps the stored hostName
    obj = await store.get("nodemaintenances-a1")
    assert obj is not None
    assert (obj["spec"]["hostName"], obj["spec"]["services"][0]["proxyPort"]) == (
        "x\ufffd\U0001f600",
        "17000",
    )
    await store.close()


async def test_a_locked_database_fails_the_whole_batch_and_changes_nothing(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.apply([online("a1")])
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreError, match="locked"):
        await store.apply([online("a1", 1), online("b2")])
    other.execute("ROLLBACK")
    other.close()
    assert [o["spec"]["services"][0]["proxyPort"] async for o in store.list()] == ["16022"]
    await store.close()


def test_an_acknowledged_write_survives_a_kill_9_of_the_process(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    writer = f"""
import asyncio, signal, sys
from datetime import datetime, UTC
from nodes.model import NodeChange, NodeState, UniqueId, apply_change
from nodes.sqlite import SqliteStore
async def main():
    store = SqliteStore({str(path)!r})
    for i in range(200):
        state = apply_change(None, UniqueId(f"n{{i}}"),
                             NodeChange(reason="t", at=datetime.now(UTC), status="online"))
        await store.apply([state])
        print(i, flush=True)
    signal.pause()  # until killed
asyncio.run(main())
"""
    with subprocess.Popen(
        [sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        acknowledged = [proc.stdout.readline() for _ in range(200)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert acknowledged[-1].strip() == "199"
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT body FROM nodemaintenances").fetchall()
    assert len(rows) == 200
    assert all(json.loads(body)["kind"] == "NodeMaintenance" for (body,) in rows)


@pytest.mark.parametrize("name", ["same name", "hard link", "symlink"])
async def test_one_process_per_file_however_named_the_second_learns_who_holds_it(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / "s.db"
    first = SqliteStore(str(path))
    await first.apply([online("a1")])
    other = tmp_path / "other.db"
    if name == "hard link":
        other.hardlink_to(path)
    elif name == "symlink":
        other.symlink_to(path)
    else:
        other = path
    second = await asyncio.create_subprocess_exec(
        *(
            sys.executable,
            "-c",
            f"from nodes.sqlite import SqliteStore; SqliteStore({str(other)!r})",
        ),
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    _, stderr = await second.communicate()
    assert second.returncode != 0
    assert f"{other} is in use by another frp-adapter (pid {os.getpid()})" in stderr.decode()
    await first.close()
    again = SqliteStore(str(other))  # free once closed
    assert await again.get("nodemaintenances-a1") is not None
    await again.close()


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
async def test_a_write_to_a_file_deleted_or_replaced_under_it_is_not_acknowledged(
    tmp_path: Path, fault: str
) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.apply([online("a1")])
    assert store.problem() is None
    path.unlink()
    if fault == "replaced":
        path.write_bytes(b"")
    with pytest.raises(StoreError, match=f"SQLite file {path} (is gone|was replaced)"):
        await store.apply([online("a1", 17000)])
    assert store.problem() is not None
    await store.close()
