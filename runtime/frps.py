"""The parts each frps served needs: the tracker of its plugin calls, its reconciler and
the watch of its liveness when it can be asked, and its plugin endpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import aiohttp

from nodes.clock import Clock
from nodes.liveness import FrpsLiveness
from nodes.registry import NodeRegistry
from plugin.admission import Admission
from plugin.dashboard import FrpsDashboard
from plugin.liveness import FrpsWatch
from plugin.reconciler import RELOGIN_SETTLE_SECONDS, FrpsReconciler
from plugin.tracker import SshProxyTracker
from plugin.webhook import PluginEndpoint
from schemas.settings import FrpsServer, Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class FrpsParts:
    name: str
    liveness: FrpsLiveness
    tracker: SshProxyTracker
    endpoint: PluginEndpoint
    reconciler: FrpsReconciler | None  # with its dashboard only
    watch: FrpsWatch | None  # None with FRPA_FRPS_DOWN_AFTER=0

    async def close(self) -> None:
        await self.tracker.close()
        if self.reconciler:
            await self.reconciler.close()


def frps_parts(
    settings: Settings,
    registry: NodeRegistry,
    session: aiohttp.ClientSession,
    *,
    liveness: dict[str, FrpsLiveness],
    store_failing: Callable[[], bool],
    leading: Callable[[], bool],
    clock: Clock,
) -> dict[str, FrpsParts]:
    """Per frps, by name, its parts, made (none started)."""
    admission = Admission(
        require_registered=settings.require_registered,
        node_tokens=settings.node_tokens,
        ports=settings.allowed_ports,
    )
    servers = settings.servers()
    parts: dict[str, FrpsParts] = {}
    for server in servers:
        dashboard = _dashboard(settings, server, session)
        reconciler = (
            FrpsReconciler(
                registry,
                dashboard,
                interval=settings.reconcile_interval,
                frps_address=server.address,
                only_frps=len(servers) == 1,
                leading=leading,
                clock=clock,
            )
            if dashboard
            else None
        )
        tracker = SshProxyTracker(
            registry,
            frps_address=server.address,
            unique_id_meta_key=settings.unique_id_meta_key,
            close_grace_period=settings.close_grace_period,
            dashboard=dashboard,
            clock=clock,
            on_relogin=reconciler.relogin_seen if reconciler else None,
            admission=admission,
        )
        watch = (
            FrpsWatch(
                liveness[server.name],
                registry,
                dashboard=dashboard,
                bind_port=server.bind_port,
                down_after=settings.frps_down_after,
                leading=leading,
                # Its nodes log in again as frps comes back; those that do not are found then.
                on_back=(
                    partial(reconciler.reconcile_soon, RELOGIN_SETTLE_SECONDS)
                    if reconciler
                    else None
                ),
                clock=clock,
            )
            if settings.frps_down_after
            else None
        )
        parts[server.name] = FrpsParts(
            name=server.name,
            liveness=liveness[server.name],
            tracker=tracker,
            endpoint=PluginEndpoint(
                tracker,
                liveness=liveness[server.name],
                clock=clock,
                fail_closed=settings.plugin_failure_mode == "closed",
                store_failing=store_failing,
            ),
            reconciler=reconciler,
            watch=watch,
        )
    return parts


def _dashboard(
    settings: Settings, server: FrpsServer, session: aiohttp.ClientSession
) -> FrpsDashboard | None:
    if server.api is None:
        return None
    return FrpsDashboard(
        session, server.api, user=settings.frps_api_user, password=settings.frps_api_password
    )
