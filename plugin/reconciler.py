"""Reconciliation with frps's own view: what pushed events missed, frps's dashboard tells.

frps never retries a plugin call, so an event lost while the adapter was down or
restarting is gone. At start-up and then every interval, the SSH proxy each node's
state names is looked up in frps's proxy list and the node corrected through the same
transition as events. A node changed by an event since the list was read is left
alone (the event is newer), and a failing dashboard flips nothing: it is logged,
counted and shown on /readyz.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from nodes.model import OFFLINE, ONLINE, NodeChange
from nodes.registry import NodeRegistry
from plugin.dashboard import DashboardError, FrpsDashboard

logger = logging.getLogger(__name__)

RECONCILED = "Reconciled"


class FrpsReconciler:
    def __init__(
        self,
        registry: NodeRegistry,
        dashboard: FrpsDashboard,
        *,
        interval: float,
        frps_address: str,
    ) -> None:
        self._registry = registry
        self._dashboard = dashboard
        self._interval = interval
        self._frps_address = frps_address
        self._soon: asyncio.Task[int] | None = None
        self.runs = 0
        self.corrections = 0
        self.failures = 0
        self.last_error: str | None = None

    async def run(self, loaded: asyncio.Future[int]) -> None:
        """Reconcile once the stored nodes are in memory, then every interval."""
        await loaded
        while True:
            await self.reconcile()
            await asyncio.sleep(self._interval)

    def reconcile_soon(self, delay: float) -> None:
        """One extra reconciliation `delay` seconds from now, however often asked meanwhile."""
        if self._soon is None or self._soon.done():
            self._soon = asyncio.create_task(self._reconcile_after(delay), name="reconcile-soon")

    async def close(self) -> None:
        if self._soon is not None:
            self._soon.cancel()
            await asyncio.gather(self._soon, return_exceptions=True)

    async def _reconcile_after(self, delay: float) -> int:
        await asyncio.sleep(delay)
        return await self.reconcile()

    async def reconcile(self) -> int:
        """Correct every node frps disagrees with; the number corrected."""
        before = self._registry.changes()
        try:
            proxies = await self._dashboard.tcp_proxies()
        except DashboardError as e:
            self.failures += 1
            self.last_error = str(e)
            logger.warning("reconciliation skipped, frps's dashboard failed: %s", e)
            return 0
        self.runs += 1
        self.last_error = None
        corrected = 0
        after = self._registry.changes()
        for state in self._registry.states():
            # A node changed while the list was read was changed by a newer event: it wins.
            uid = state.unique_id
            if not state.proxy_name or before.get(uid) != after.get(uid):
                continue
            proxy = proxies.get(state.proxy_name)
            at = datetime.now(UTC)
            if proxy is not None and proxy.online:
                port = proxy.remote_port or state.remote_port
                if state.status == ONLINE and port == state.remote_port:
                    continue
                change = NodeChange(
                    reason=RECONCILED,
                    at=at,
                    status=ONLINE,
                    remote_port=port,
                    frps_address=self._frps_address,
                )
            elif state.status == ONLINE:
                change = NodeChange(reason=RECONCILED, at=at, status=OFFLINE)
            else:
                continue
            self._registry.transition(uid, change)
            corrected += 1
        self.corrections += corrected
        if corrected:
            logger.info("reconciliation corrected %d node(s)", corrected)
        return corrected
