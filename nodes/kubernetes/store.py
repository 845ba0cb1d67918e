"""`KubernetesStore`: the NodeStore of NMs in a cluster, composed of the watch cache, the
writes and their Events."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from nodes.clock import Clock
from nodes.kubernetes.cache import NodeCache
from nodes.kubernetes.events import TransitionEvents
from nodes.kubernetes.writes import NodeWrites
from nodes.model import JsonObject, NodeState
from nodes.store import StoreError, StoreObserver
from nodes.supervisor import Supervisor

_WATCH = "nm-watch"


async def connect() -> client.ApiClient:
    """In-cluster config first, else the kubeconfig (`KUBECONFIG` or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        try:
            # Read KUBECONFIG now: the library reads it once, when it is imported.
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        except (ConfigException, OSError) as e:
            raise StoreError(f"no in-cluster config and no usable kubeconfig: {e}") from e
    # kubernetes-asyncio opens its session with trust_env=True, so aiohttp looks up the
    # proxy and ~/.netrc in a thread for every request: in a storm, six threads and most
    # of the adapter's CPU. The environment's proxy is read once, here, instead.
    server = urlsplit(configuration.host)
    proxies = urllib.request.getproxies()
    if server.scheme in proxies and not urllib.request.proxy_bypass(server.hostname or ""):
        configuration.proxy = proxies[server.scheme]
    api = client.ApiClient(configuration)
    api.rest_client.pool_manager._trust_env = False
    return api


class KubernetesStore:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        event_namespace: str,
        event_min_interval: float,
        supervisor: Supervisor,
        clock: Clock,
    ) -> None:
        self._api = api
        self._supervisor = supervisor
        objects = client.CustomObjectsApi(api)
        self._cache = NodeCache(objects, backoff=supervisor.backoff, clock=clock)
        self._events = TransitionEvents(
            client.CoreV1Api(api),
            namespace=event_namespace,
            min_interval=event_min_interval,
            clock=clock,
        )
        self._writes = NodeWrites(api, self._cache, self._events)
        supervisor.start(_WATCH, self._cache.watch_forever)

    def subscribe(self, observer: StoreObserver) -> None:
        self._cache.subscribe(observer)

    def cached(self, name: str) -> JsonObject | None:
        return self._cache.get(name)

    def problem(self) -> None:
        """A failing API server shows as failing writes, which are retried: nothing lost."""

    async def get(self, name: str) -> JsonObject | None:
        if self._cache.synced.is_set():
            return self._cache.get(name)
        return await self._cache.fetch(name)

    def list(self) -> AsyncIterator[JsonObject]:
        return self._cache.list()

    async def apply(self, states: Sequence[NodeState]) -> None:
        await self._writes.apply(states)

    async def close(self) -> None:
        await self._supervisor.stop(_WATCH)
        await self._events.close()
        await self._api.close()
