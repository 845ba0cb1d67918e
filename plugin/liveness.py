"""frps liveness: an frps that is gone takes its nodes offline.

frps sends nothing when it dies, and frpc >= 0.58 sends no Pings by default, so without
this every node of a dead frps stays online. Each frps is probed: through its dashboard
when it has one (any HTTP answer, even 500 or 401, is frps alive; no answer, refused or
timed out, is not), else by a TCP connect to its bind port. Any plugin call from it is a
sign of life as well. Unreachable for FRPA_FRPS_DOWN_AFTER, its online nodes go offline
(reason FrpsUnreachable), on the leader only, a chunk at a time; when it answers again
its nodes come back through their logins, and a reconciliation follows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nodes.clock import Clock, cause
from nodes.liveness import FRPS_UNREACHABLE, FrpsLiveness
from nodes.model import OFFLINE, ONLINE, NodeChange
from nodes.registry import NodeRegistry
from plugin.dashboard import DashboardError, FrpsDashboard

logger = logging.getLogger(__name__)

# Probed every third of FRPA_FRPS_DOWN_AFTER, and at least this often: what /readyz, the
# metrics and SSH say of frps is at most this old.
_PERIOD_MOST = 10.0
_PERIOD_LEAST = 0.1
_CONNECT_SECONDS = 5.0  # as the dashboard's own time limit
# Nodes looked at between two yields to the plugin path: about a millisecond's work.
_CHUNK = 1000


class _UnansweredError(Exception):
    pass


class FrpsWatch:
    def __init__(
        self,
        liveness: FrpsLiveness,
        registry: NodeRegistry,
        *,
        dashboard: FrpsDashboard | None,
        bind_port: int,
        down_after: float,
        leading: Callable[[], bool],
        on_back: Callable[[], None] | None,
        clock: Clock,
    ) -> None:
        self._liveness = liveness
        self._registry = registry
        self._dashboard = dashboard
        self._bind_port = bind_port
        self._down_after = down_after
        self._period = min(max(down_after / 3, _PERIOD_LEAST), _PERIOD_MOST)
        self._leading = leading
        self._on_back = on_back
        self._clock = clock

    async def run(self) -> None:
        while True:
            await self._check()
            await self._clock.sleep(self._period)

    async def _check(self) -> None:
        """Probe frps once; past FRPA_FRPS_DOWN_AFTER unreachable, offline its nodes."""
        live, clock = self._liveness, self._clock
        started, started_at = clock.monotonic(), clock.now()
        asked_at = self._registry.sequence
        try:
            await self._probe()
        except _UnansweredError as e:
            # A plugin call within the last period answers for frps as well.
            if not live.unreachable and live.heard_at < started - self._period:
                live.failing_since, live.unreachable_since = started, started_at
                logger.warning("frps %s does not answer: %s", live.name, e)
            live.last_error = str(e)
        else:
            live.failing_since = None
        if not live.unreachable:
            if live.past_down_after:
                logger.warning(
                    "frps %s answers again: its nodes come back as they log in", live.name
                )
                if self._on_back is not None:
                    self._on_back()
            live.failing_since = live.unreachable_since = live.last_error = None
            live.past_down_after = False
            return
        assert live.failing_since is not None
        if not live.past_down_after and clock.monotonic() - live.failing_since >= self._down_after:
            live.past_down_after = True
            logger.warning("%s: its online nodes go offline", live.why())
        if live.down and self._leading():
            await self._offline_nodes(asked_at)

    async def _probe(self) -> None:
        if self._dashboard is not None:
            try:
                await self._dashboard.answers()
            except DashboardError as e:
                raise _UnansweredError(str(e)) from e
            return
        address = self._liveness.address
        try:
            async with asyncio.timeout(_CONNECT_SECONDS):
                _, writer = await asyncio.open_connection(address, self._bind_port)
        except (OSError, TimeoutError) as e:
            raise _UnansweredError(
                f"connect to {address}:{self._bind_port}: {cause(e, _CONNECT_SECONDS)}"
            ) from e
        writer.close()  # accepted: frps is there, whatever becomes of the connection

    async def _offline_nodes(self, asked_at: int) -> None:
        """Offline every online node recorded under this frps; stops once frps is heard
        from again (its nodes are its events' then). A node changed since the probe was
        sent (registry sequence `asked_at`) is left alone: its change is newer than the
        probe's verdict, as a login at another replica while the probe was out."""
        registry, live = self._registry, self._liveness
        if not registry.counts().get((ONLINE, live.address)):
            return
        taken = 0
        for i, state in enumerate(registry.states()):
            if i % _CHUNK == _CHUNK - 1:
                await asyncio.sleep(0)
                if not live.unreachable:
                    break
            if state.frps_address != live.address:
                continue
            uid = state.unique_id
            current = registry.get(uid)  # changed since the list was taken, maybe
            if (
                current is None
                or current.status != ONLINE
                or current.frps_address != live.address
                or registry.changed_since(uid, asked_at)
            ):
                continue
            registry.transition(
                uid, NodeChange(reason=FRPS_UNREACHABLE, at=self._clock.now(), status=OFFLINE)
            )
            taken += 1
        logger.warning("frps %s unreachable: %d node(s) taken offline", live.name, taken)
