"""`open_backend`: what a `FRPA_STORE` value names, the store and what comes with it."""

from __future__ import annotations

from dataclasses import dataclass

from nodes.clock import Clock
from nodes.leadership import Leadership, SoleLeader
from nodes.reviews import Reviewer
from nodes.store import NodeStore
from nodes.supervisor import Supervisor
from schemas.settings import KUBERNETES, sqlite_path


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    store: NodeStore
    # Who runs the cluster-wide chores: decided in the store's cluster when it has one.
    leadership: Leadership
    # The cluster's reviewer of API tokens, when the store lives in one.
    reviewer: Reviewer | None


async def open_backend(
    url: str,
    *,
    identity: str,
    event_namespace: str,
    event_min_interval: float,
    supervisor: Supervisor,
    clock: Clock,
) -> Backend:
    """The backend a `FRPA_STORE` value names: `kubernetes`, or a SQLite file. `identity`
    names this replica in a leader election."""
    # Only the named backend is imported: kubernetes_asyncio is heavy and unused on SQLite.
    if url == KUBERNETES:
        from nodes.kubernetes.lease import LeaseLeadership  # noqa: PLC0415
        from nodes.kubernetes.reviews import KubernetesReviewer  # noqa: PLC0415
        from nodes.kubernetes.store import KubernetesStore, connect  # noqa: PLC0415

        api = await connect()
        return Backend(
            store=KubernetesStore(
                api,
                event_namespace=event_namespace,
                event_min_interval=event_min_interval,
                supervisor=supervisor,
                clock=clock,
            ),
            leadership=LeaseLeadership(
                api, namespace=event_namespace, identity=identity, clock=clock
            ),
            reviewer=KubernetesReviewer(api),
        )
    from nodes.sqlite import SqliteStore  # noqa: PLC0415

    return Backend(store=SqliteStore(sqlite_path(url)), leadership=SoleLeader(), reviewer=None)
