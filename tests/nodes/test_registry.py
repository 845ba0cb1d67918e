"""The registry's memory of a fleet: its indexes, and how CPython's cyclic garbage
collector sees it."""

from __future__ import annotations

import asyncio
import gc
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nodes.model import (
    OFFLINE,
    ONLINE,
    NodeChange,
    NodeState,
    UniqueId,
    nm_name,
    render_nm,
)
from nodes.registry import PAGE_SCAN, NodeRegistry
from nodes.sqlite import SqliteStore
from nodes.writer import NodeWriter
from tests.support import BACKOFF


async def test_a_fleet_in_memory_adds_nothing_a_full_collection_walks(tmp_path: Path) -> None:
    """Each node's objects stay off the collector's list (bench/gc_pause.py: a full
    collection at 100,000 nodes 14 ms, 64 ms with them on it); only the registry's and the
    writer's maps of them are walked, not untracked by hand since they change."""
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
            remote_port=16000 + i,
        )
        registry.transition(UniqueId(f"node-{i}"), change)
    try:
        gc.collect()
        tracked = gc.get_objects()
        assert not [o for o in tracked if isinstance(o, NodeState | tuple) and "node-7" in str(o)]
        holding = [o for o in tracked if isinstance(o, dict) and UniqueId("node-7") in o]
        assert [len(o) for o in holding] == [300, 300]  # the states, and the writes queued
        assert writer.backlog == 300
        assert len(registry.states()) == 300
    finally:
        await store.close()


async def test_between_full_collections_only_the_states_and_the_queue_are_walked(
    tmp_path: Path,
) -> None:
    """A young collection untracks a tuple but not the map holding it: a node's history or
    proxy index, tracked for a moment, would keep its map walked until a full collection."""
    store = SqliteStore(str(tmp_path / "nodes.db"))
    registry = NodeRegistry(NodeWriter(store), heartbeat_persist_interval=60)
    at = datetime.now(UTC)
    gc.disable()  # no collection to untrack what the registry left tracked
    try:
        for i in range(3):
            for second, status in enumerate((ONLINE, OFFLINE, ONLINE)):
                change = NodeChange(
                    reason="NewProxy",
                    at=at + timedelta(seconds=second),
                    status=status,
                    frps_address="127.0.0.1",
                    proxy_name=f"n{i}.ssh",
                    remote_port=16000 + i,
                )
                registry.transition(UniqueId(f"node-{i}"), change)
        tracked = gc.get_objects()
        holding = [o for o in tracked if isinstance(o, dict) and UniqueId("node-1") in o]
        assert [len(o) for o in holding] == [3, 3]  # the states, and the writes queued
        assert len(registry.history(UniqueId("node-1"))) == 3
    finally:
        gc.enable()
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


FRPS = ("198.51.100.1", "198.51.100.2")
PORTS = (16001, 16002, 16003)
NODES = tuple(UniqueId(f"n{i}") for i in range(8))
SILENCE = timedelta(seconds=90)


async def test_the_port_index_names_each_ports_online_nodes_through_every_transition(
    tmp_path: Path,
) -> None:
    """Few nodes on few ports of two frps, changed at random by every writer of node state
    (events, another replica's stored NMs, deletions, heartbeat expiry, start-up load):
    after each change the index names the online nodes a walk of the fleet finds."""
    store = SqliteStore(str(tmp_path / "nodes.db"))
    writer = NodeWriter(store)
    writing = asyncio.create_task(writer.run())
    registry = NodeRegistry(writer, heartbeat_persist_interval=60)
    rng = random.Random(23)
    at = datetime(2026, 11, 25, tzinfo=UTC)
    shared = 0
    try:
        for _ in range(600):
            at += timedelta(seconds=1)
            uid = rng.choice(NODES)
            state = registry.get(uid)
            match rng.randrange(7):
                case 0:  # a NewProxy, of a new run perhaps
                    change = NodeChange(
                        reason="NewProxy",
                        at=at,
                        status=ONLINE,
                        frps_address=rng.choice(FRPS),
                        remote_port=rng.choice(PORTS),
                        run_id=rng.choice(("r1", "r2")),
                    )
                    registry.transition(uid, change)
                case 1:  # a CloseProxy, or reconciliation finding the proxy gone
                    registry.transition(uid, NodeChange(reason="Closed", at=at, status=OFFLINE))
                case 2:  # reconciliation finding the proxy on another port
                    registry.amend(
                        uid, NodeChange(reason="R", at=at, remote_port=rng.choice(PORTS))
                    )
                case 3:
                    registry.heartbeat(uid, at, state.run_id if state else "r1")
                case 4:
                    await registry.expire_heartbeats(at + 2 * SILENCE, SILENCE)
                case 5:  # another replica stored the node
                    await writer.drained()
                    stored = NodeState(
                        unique_id=uid,
                        status=rng.choice((ONLINE, OFFLINE)),
                        reason="Elsewhere",
                        last_transition=at,
                        updated_at=at,
                        frps_address=rng.choice(FRPS),
                        remote_port=rng.choice(PORTS),
                    )
                    registry.observe(render_nm(stored, None))
                case 6:
                    await writer.drained()
                    registry.observe_deletion(nm_name(uid))
            shared = max(shared, assert_port_index_agrees(registry))
        assert shared >= 2  # the walk gave ports to several online nodes at once
        await writer.drained()
        loaded = NodeRegistry(writer, heartbeat_persist_interval=60)
        await loaded.load(store, BACKOFF)
        assert_port_index_agrees(loaded)
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        await store.close()


def assert_port_index_agrees(registry: NodeRegistry) -> int:
    """Assert the index against a walk of the fleet; the most nodes a port has."""
    most = 0
    for frps in FRPS:
        for port in PORTS:
            walked = sorted(
                state.unique_id
                for state in registry.states()
                if state.status == ONLINE
                and state.frps_address == frps
                and state.remote_port == port
            )
            assert sorted(registry.port_holders(frps, port)) == walked
            most = max(most, len(walked))
    return most


async def test_a_selective_page_stops_after_passing_page_scan_nodes_and_goes_on_after(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "nodes.db"))
    registry = NodeRegistry(NodeWriter(store), heartbeat_persist_interval=60)
    at = datetime.now(UTC)
    for i in range(2 * PAGE_SCAN + 10):
        registry.transition(UniqueId(f"n{i:05}"), NodeChange(reason="Test", at=at, status=ONLINE))
    try:
        # Every 1000th node is chosen: a page of 500 cannot fill within one scan.
        chosen = lambda state: state.unique_id.endswith("000")  # noqa: E731
        found: list[str] = []
        pages, after = 0, None
        while True:
            page, after = registry.page(after, 500, chosen)
            pages += 1
            found.extend(state.unique_id for state in page)
            if after is None:
                break
        assert found == [f"n{i:05}" for i in range(0, 2 * PAGE_SCAN + 10, 1000)]
        assert pages == 3
        # Unchosen, a page is its limit, however large.
        assert len(registry.page(None, 3 * PAGE_SCAN, None)[0]) == 2 * PAGE_SCAN + 10
    finally:
        await store.close()
