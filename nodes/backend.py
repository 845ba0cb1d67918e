"""`open_store`: the NodeStore a `FRPA_STORE` value names."""

from __future__ import annotations

from nodes.clock import Clock
from nodes.store import NodeStore
from nodes.supervisor import Supervisor
from schemas.settings import KUBERNETES, sqlite_path


async def open_store(
    url: str,
    *,
    event_namespace: str,
    event_min_interval: float,
    supervisor: Supervisor,
    clock: Clock,
) -> NodeStore:
    """The backend a `FRPA_STORE` value names: `kubernetes`, or a SQLite file."""
    # Only the named backend is imported: kubernetes_asyncio is heavy and unused on SQLite.
    if url == KUBERNETES:
        from nodes.kubernetes.store import KubernetesStore, connect  # noqa: PLC0415

        return KubernetesStore(
            await connect(),
            event_namespace=event_namespace,
            event_min_interval=event_min_interval,
            supervisor=supervisor,
            clock=clock,
        )
    from nodes.sqlite import SqliteStore  # noqa: PLC0415

    return SqliteStore(sqlite_path(url))
