from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nodes.model import NodeChange, NodeState, UniqueId, apply_change
from nodes.sqlite import SqliteStore
from nodes.store import StoreError
from nodes.writer import NodeWriter
from schemas.settings import Backoff
from tests.clock import FakeClock

T0 = datetime(2026, 11, 25, tzinfo=UTC)


class FlakySqliteStore(SqliteStore):
    """A real SQLite store whose next `fail` writes fail, and which records every batch;
    with a `gate`, each write is held until it is set (`entered` is set meanwhile)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.fail = 0
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def apply(self, states: Sequence[NodeState]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append([s.unique_id for s in states])
        if self.fail:
            self.fail -= 1
            raise StoreError("injected failure")
        await super().apply(states)


def state(uid: str, port: int) -> NodeState:
    return apply_change(
        None, UniqueId(uid), NodeChange(reason="t", at=T0, status="online", remote_port=port)
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FlakySqliteStore]:
    store = FlakySqliteStore(str(tmp_path / "w.db"))
    yield store
    await store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def writer(store: FlakySqliteStore, clock: FakeClock) -> NodeWriter:
    # No jitter: the tests count writes by the time they take.
    return NodeWriter(store, retry=Backoff(0.01, 0.05, jitter=0), clock=clock)


@pytest.fixture
async def writing(writer: NodeWriter) -> AsyncIterator[asyncio.Task[None]]:
    """The writer's task, running."""
    task = asyncio.create_task(writer.run())
    yield task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def port_of(store: SqliteStore, uid: str) -> str:
    obj = await store.get(f"nodemaintenances-{uid}")
    assert obj is not None
    return str(obj["spec"]["services"][0]["proxyPort"])


async def test_changes_while_a_write_is_pending_coalesce_into_the_newest(
    store: FlakySqliteStore, writer: NodeWriter, writing: asyncio.Task[None]
) -> None:
    store.gate = asyncio.Event()
    writer.submit(state("a1", 1))
    await store.entered.wait()  # a1@1 is now in flight, held at the gate
    for port in range(2, 100):
        writer.submit(state("a1", port))
    store.gate.set()
    await writer.drained()
    assert store.batches == [["a1"], ["a1"]]
    assert await port_of(store, "a1") == "99"


async def test_failed_writes_are_retried_with_a_bounded_backoff_until_stored(
    store: FlakySqliteStore, writer: NodeWriter, writing: asyncio.Task[None], clock: FakeClock
) -> None:
    store.fail = 5
    for i in range(10):
        writer.submit(state(f"n{i}", 1000 + i))
    await clock.settle(writing)  # asleep after the first failure
    # Waits of 0.01, 0.02, 0.04, then 0.05 (the bound) twice: the sixth write at 0.17 s
    # (unbounded, at 0.31 s; without a backoff, by 0.05 s).
    await clock.advance(0.16)
    assert len(store.batches) == 5
    assert writer.failing
    await clock.advance(0.02)
    await asyncio.wait_for(writer.drained(), 5)
    assert not writer.failing
    assert len([o async for o in store.list()]) == 10
    assert len(store.batches) == 6


async def test_a_newer_state_submitted_during_a_failing_write_wins(
    store: FlakySqliteStore, writer: NodeWriter, writing: asyncio.Task[None], clock: FakeClock
) -> None:
    store.fail = 1
    store.gate = asyncio.Event()
    writer.submit(state("a1", 1))
    await store.entered.wait()  # a1@1 is in flight, held at the gate
    writer.submit(state("a1", 2))
    store.gate.set()
    await clock.settle(writing)  # a1@1 failed: asleep before the retry
    await clock.advance(0.01)
    await asyncio.wait_for(writer.drained(), 5)
    assert store.batches == [["a1"], ["a1"]]
    assert await port_of(store, "a1") == "2"


async def test_flushed_returns_once_the_nodes_change_is_stored(
    store: FlakySqliteStore, writer: NodeWriter, writing: asyncio.Task[None], clock: FakeClock
) -> None:
    store.fail = 2
    writer.submit(state("a1", 7))
    flushed = asyncio.create_task(writer.flushed(UniqueId("a1")))
    await clock.settle(writing)
    await clock.advance(0.05)  # two failed writes, waits of 0.01 and 0.02
    await asyncio.wait_for(flushed, 5)
    assert await port_of(store, "a1") == "7"
