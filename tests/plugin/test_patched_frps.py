"""Reconciliation with the original's patched frps, as the original's start-up check did it
(ttlv/frp_adapter `frp_adapter_init/do_some_check.go`, `main/main.go`): the registry on
an SQLite store the adapter left, its dashboard served by a peer of that frps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from nodes.model import OFFLINE, ONLINE, NodeState, NodeStatus, UniqueId, nm_name, ssh_endpoint
from nodes.registry import NodeRegistry
from nodes.sqlite import SqliteStore
from nodes.writer import NodeWriter
from plugin.dashboard import FrpsDashboard
from plugin.reconciler import FrpsReconciler
from tests.clock import FakeClock
from tests.patched_frps import ADDRESS, PatchedFrps, frpc_unique_id
from tests.support import BACKOFF, FakeDashboard, online

N1, N2, N3, N4 = (frpc_unique_id(i) for i in range(1, 5))
AT = datetime(2026, 11, 25, tzinfo=UTC)


def recorded(uid: str, status: NodeStatus, port: int, address: str = ADDRESS) -> NodeState:
    """A node as the original's routes (`/frp_create`, `/frp_update`) record it: no proxy
    name, at the address the patched frps posts."""
    return NodeState(
        unique_id=UniqueId(uid),
        status=status,
        reason="FrpCreate" if status == ONLINE else "FrpUpdate",
        last_transition=AT,
        updated_at=AT,
        frps_address=address,
        remote_port=port,
    )


@dataclass
class Restarted:
    """The adapter after a restart: its nodes read back from the store."""

    registry: NodeRegistry
    writer: NodeWriter
    store: SqliteStore
    reconciler: FrpsReconciler

    async def reconcile(self) -> int:
        corrected = await self.reconciler.reconcile()
        await self.writer.drained()
        return corrected

    async def stored(self, uid: str) -> tuple[str, str, str, str] | None:
        """The node's stored status, port, frps address and reason."""
        obj = await self.store.get(nm_name(UniqueId(uid)))
        if obj is None:
            return None
        endpoint = ssh_endpoint(obj)
        return endpoint.status, endpoint.proxy_port, endpoint.frps_address, obj["status"]["reason"]


Restart = Callable[..., Awaitable[Restarted]]


@pytest.fixture
async def restart(tmp_path: Path, aiohttp_server: AiohttpServer) -> AsyncIterator[Restart]:
    store = SqliteStore(str(tmp_path / "frpa.db"))
    writer = NodeWriter(store)
    writing = asyncio.create_task(writer.run())
    session = aiohttp.ClientSession()

    async def start(
        dashboard: PatchedFrps | FakeDashboard,
        nodes: list[NodeState],
        *,
        frps_address: str = "127.0.0.1",  # FRPA_FRPS_ADDRESS unset: the original had none
        only_frps: bool = True,
    ) -> Restarted:
        await store.apply(nodes)
        registry = NodeRegistry(writer, heartbeat_persist_interval=30)
        await registry.load(store, BACKOFF)
        server = await aiohttp_server(dashboard.app())
        api = FrpsDashboard(session, str(server.make_url("")), user="admin", password="admin")
        reconciler = FrpsReconciler(
            registry,
            api,
            interval=60,
            frps_address=frps_address,
            only_frps=only_frps,
            leading=lambda: True,
            clock=FakeClock(),
        )
        return Restarted(registry, writer, store, reconciler)

    try:
        yield start
    finally:
        await session.close()
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        await store.close()


async def test_a_node_online_in_the_patched_frps_is_online_on_the_port_it_lists(
    restart: Restart,
) -> None:
    frps = PatchedFrps()
    frps.nodes = {N1: 6011}  # it came back while the adapter was down, on another port
    adapter = await restart(frps, [recorded(N1, OFFLINE, 6001)])
    assert await adapter.reconcile() == 1
    assert await adapter.stored(N1) == ("online", "6011", ADDRESS, "Reconciled")


async def test_an_online_node_the_patched_frps_lists_offline_or_not_at_all_goes_offline(
    restart: Restart,
) -> None:
    frps = PatchedFrps()
    frps.nodes = {N1: 6001, N2: None}  # N2's proxy closed; N3 is not listed
    nodes = [recorded(uid, ONLINE, 6000 + i) for i, uid in enumerate((N1, N2, N3), 1)]
    adapter = await restart(frps, nodes)
    assert await adapter.reconcile() == 2
    assert await adapter.stored(N1) == ("online", "6001", ADDRESS, "FrpCreate")
    assert await adapter.stored(N2) == ("offline", "6002", ADDRESS, "Reconciled")
    assert await adapter.stored(N3) == ("offline", "6003", ADDRESS, "Reconciled")


async def test_a_node_the_patched_frps_lists_online_and_nothing_records_is_created(
    restart: Restart,
) -> None:
    frps = PatchedFrps()
    frps.nodes = {N1: 6001, N4: 6004, N3: None}
    adapter = await restart(frps, [recorded(N1, ONLINE, 6001)])
    assert await adapter.reconcile() == 1
    assert await adapter.stored(N4) == ("online", "6004", ADDRESS, "Reconciled")
    assert await adapter.stored(N3) is None  # gone before the restart: nothing to create


async def test_a_node_is_judged_by_its_ssh_proxy_not_another_proxy_of_its_frpc(
    restart: Restart,
) -> None:
    frps = PatchedFrps()
    frps.nodes = {N1: 6011}
    frps.other_proxies = {"web": (N1, 8080)}  # the same unique_id: the frpc's Login's
    adapter = await restart(frps, [recorded(N1, OFFLINE, 6001)])
    assert await adapter.reconcile() == 1
    assert await adapter.stored(N1) == ("online", "6011", ADDRESS, "Reconciled")


async def test_an_empty_list_takes_every_node_of_the_only_frps_offline(
    restart: Restart,
) -> None:
    """As the original's `MakeAllNMUseless` when frps answered `{"proxies":[]}`: it had one
    frps, and this adapter has no address of it (FRPA_FRPS_ADDRESS unset)."""
    frps = PatchedFrps()
    nodes = [recorded(N1, ONLINE, 6001), recorded(N2, ONLINE, 6002, "10.1.11.39")]
    adapter = await restart(frps, [*nodes, recorded(N3, OFFLINE, 6003)])
    assert await adapter.reconcile() == 2
    assert await adapter.stored(N1) == ("offline", "6001", ADDRESS, "Reconciled")
    assert await adapter.stored(N2) == ("offline", "6002", "10.1.11.39", "Reconciled")
    assert await adapter.stored(N3) == ("offline", "6003", ADDRESS, "FrpUpdate")


async def test_with_several_frps_a_patched_one_judges_the_nodes_under_its_addresses(
    restart: Restart,
) -> None:
    """Its address as configured, or as it lists itself (and posted to `/frp_create`)."""
    frps = PatchedFrps()
    frps.nodes = {N4: 6004}
    nodes = [
        recorded(N1, ONLINE, 6001),
        recorded(N2, ONLINE, 6002, "frps-east.example"),
        recorded(N3, ONLINE, 6003, "10.9.9.9"),  # another frps's
    ]
    adapter = await restart(frps, nodes, frps_address="frps-east.example", only_frps=False)
    assert await adapter.reconcile() == 3
    assert (await adapter.stored(N1) or ("",))[0] == "offline"
    assert (await adapter.stored(N2) or ("",))[0] == "offline"
    assert await adapter.stored(N3) == ("online", "6003", "10.9.9.9", "FrpCreate")
    assert await adapter.stored(N4) == ("online", "6004", ADDRESS, "Reconciled")


async def test_frps_0_65_s_list_leaves_the_nodes_the_original_s_routes_recorded_alone(
    restart: Restart,
) -> None:
    """Its proxies carry no unique_id, and such a node names no proxy to look up."""
    dashboard = FakeDashboard()
    dashboard.proxies = {"n9.ssh": online(16009)}
    adapter = await restart(dashboard, [recorded(N1, ONLINE, 6001, "127.0.0.1")])
    assert await adapter.reconcile() == 0
    assert await adapter.stored(N1) == ("online", "6001", "127.0.0.1", "FrpCreate")
