"""The registry's memory of a fleet, as CPython's cyclic garbage collector sees it."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path

from nodes.model import ONLINE, NodeChange, NodeState, UniqueId, render_nm
from nodes.registry import NodeRegistry
from nodes.sqlite import SqliteStore
from nodes.writer import NodeWriter


async def test_a_fleet_in_memory_adds_nothing_a_full_collection_walks(tmp_path: Path) -> None:
    """A tracked map of every node is walked, item by item, by each full collection: at
    50,000 nodes a few ms apiece, on the plugin path."""
    store = SqliteStore(str(tmp_path / "nodes.db"))
    writer = NodeWriter(store)  # not running: every state stays queued in it
    registry = NodeRegistry(writer, heartbeat_persist_interval=60)
    at = datetime.now(UTC)
    for i in range(300):
        change = NodeChange(
            reason="NewProxy",
            at=at,
            status=ONLINE,
            frps_address="127.0.0.1",
            proxy_name=f"n{i}.ssh",
        )
        registry.transition(UniqueId(f"node-{i}"), change)
    try:
        gc.collect()
        holding = [
            type(o).__name__
            for o in gc.get_objects()
            if isinstance(o, dict) and ("node-7" in o or ("127.0.0.1", "n7.ssh") in o)
        ]
        assert holding == []
        assert writer.backlog == 300
        assert len(registry.states()) == 300
    finally:
        await store.close()


async def test_a_watch_tells_the_changes_made_here_from_those_adopted_from_the_store(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "nodes.db"))
    registry = NodeRegistry(NodeWriter(store), heartbeat_persist_interval=60)
    at = datetime.now(UTC)
    theirs = NodeState(
        unique_id=UniqueId("theirs"),
        status=ONLINE,
        reason="NewProxy",
        last_transition=at,
        updated_at=at,
    )
    _, watch = registry.watch()
    try:
        registry.observe(render_nm(theirs, None))  # another replica's write
        registry.transition(UniqueId("mine"), NodeChange(reason="NewProxy", at=at, status=ONLINE))
        events = [await watch.next(), await watch.next()]
        assert [(e.state.unique_id, e.made_here) for e in events] == [
            ("theirs", False),
            ("mine", True),
        ]
    finally:
        registry.unwatch(watch)
        await store.close()
