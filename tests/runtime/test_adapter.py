"""The process's owner without HTTP: what it opens, and what it keeps when it closes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nodes.model import NodeChange, UniqueId
from nodes.store import StoreError
from runtime.adapter import Adapter
from schemas.settings import FrpsServer
from tests.support import settings_for


async def test_a_change_made_just_before_it_closes_is_stored_and_no_task_is_left(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    adapter = Adapter(settings)
    async with adapter:
        await adapter.loaded
        assert {"node-load", "node-writer", "leader-election", "heartbeat-expiry"} <= set(
            adapter.supervisor.names
        )
        adapter.registry.transition(
            UniqueId("abc123"),
            NodeChange(reason="NewProxy", at=datetime.now(UTC), status="online"),
        )
    # Closed: the write queued last was drained into the store before it closed.
    assert adapter.supervisor.names == []
    async with Adapter(settings) as reopened:
        await reopened.loaded
        state = reopened.registry.get(UniqueId("abc123"))
        assert state is not None
        assert state.status == "online"


async def test_its_stats_list_every_frps_served_before_any_node_comes(tmp_path: Path) -> None:
    servers = (
        FrpsServer("east", "192.0.2.1", None, 7000),
        FrpsServer("west", "192.0.2.2", None, 7000),
    )
    async with Adapter(settings_for(tmp_path, frps_servers=servers, frps_address=None)) as a:
        stats = a.stats()
    assert stats.nodes == {
        ("online", "east"): 0,
        ("online", "west"): 0,
        ("offline", "east"): 0,
        ("offline", "west"): 0,
    }
    assert list(stats.frps) == ["east", "west"]
    assert stats.backend == "sqlite"
    assert stats.store_problem is None


async def test_a_store_that_cannot_open_leaves_nothing_running(tmp_path: Path) -> None:
    adapter = Adapter(settings_for(tmp_path, store=f"sqlite:///{tmp_path}/missing/frpa.db"))
    with pytest.raises(StoreError):
        async with adapter:
            pass
    assert adapter.supervisor.names == []
    assert not adapter.opened
