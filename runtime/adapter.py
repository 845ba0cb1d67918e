"""`Adapter`: the one owner of the process's parts.

Built from `Settings`, opened with `async with`: it opens the store and what comes with it
(the leader lease, the cluster's reviewer), the writer and the registry, each frps's
tracker, reconciler and liveness watch, heartbeat expiry, SSH and notifications; starts
their tasks under its supervisor; and closes them in the one order that loses nothing:
tasks first, then the lease (so another replica takes over at once), then the writes
left, drained within what is left of `FRPA_SHUTDOWN_TIMEOUT`, then the store.

The HTTP layer (`api/`) holds an adapter and reaches nodes, SSH and the plugin endpoints
through it only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from types import TracebackType
from typing import Self

import aiohttp

from nodes.backend import open_backend
from nodes.clock import Clock
from nodes.expiry import HeartbeatExpiry
from nodes.leadership import Leadership
from nodes.liveness import FrpsLiveness
from nodes.model import (
    InvalidUniqueIdError,
    JsonObject,
    NodeState,
    UniqueId,
    nm_name,
    render_nm,
    unique_id_of,
)
from nodes.registry import NodeRegistry
from nodes.reviews import Reviewer
from nodes.store import NodeStore
from nodes.supervisor import Supervisor
from nodes.writer import NodeWriter
from plugin.reconciler import FrpsReconciler
from plugin.webhook import UNHANDLED_KINDS, FrpsPlugins
from runtime.frps import FrpsParts, frps_parts
from runtime.notifications import RESULTS, Notifier, Outbox, destinations
from runtime.stats import FrpsStats, ReconcileStats, Stats
from schemas.labels import Labels
from schemas.settings import KUBERNETES, Settings, SettingsError
from ssh.connector import ClientKey, SshConnector, read_client_key

logger = logging.getLogger(__name__)

_WRITER = "node-writer"
# Of the shutdown budget, at most this goes to handing the leader lease on.
_RELEASE_SECONDS = 2.0


class Adapter:
    """Raises SettingsError when made if a file a setting names cannot be used."""

    # Opened by `async with`:
    store: NodeStore
    writer: NodeWriter
    registry: NodeRegistry
    leadership: Leadership
    reviewer: Reviewer | None  # with FRPA_KUBERNETES_AUTH only
    plugins: FrpsPlugins
    servers: dict[str, FrpsParts]  # by name, every frps served
    expiry: HeartbeatExpiry
    ssh: SshConnector
    notifier: Notifier | None  # with FRP_SERVER_WEBHOOK or FRPA_NOTIFY_URL only
    loaded: asyncio.Task[None]  # done once the stored nodes are in memory

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.supervisor = Supervisor(self.clock, settings.retry_backoff)
        self.frps = {
            server.name: FrpsLiveness(
                server.name, server.address, watched=bool(settings.frps_down_after)
            )
            for server in settings.servers()
        }
        self.opened = False
        self._client_keys: list[ClientKey] = []
        if settings.ssh_key_file:
            try:
                self._client_keys.append(read_client_key(settings.ssh_key_file))
            except (OSError, ValueError) as e:
                raise SettingsError(f"FRPA_SSH_KEY_FILE: {e}") from e
        if settings.ssh_known_hosts:
            try:
                with open(settings.ssh_known_hosts, "rb"):
                    pass
            except OSError as e:
                raise SettingsError(f"FRPA_SSH_KNOWN_HOSTS: {e}") from e
        self._stack = contextlib.AsyncExitStack()
        self._deadline: float | None = None

    @property
    def reconcilers(self) -> dict[str, FrpsReconciler]:
        """By frps name, those with a dashboard."""
        return {name: parts.reconciler for name, parts in self.servers.items() if parts.reconciler}

    async def __aenter__(self) -> Self:
        try:
            await self._open(self._stack)
        except BaseException:
            await self._stack.aclose()
            raise
        self.opened = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def begin_shutdown(self) -> None:
        """Starts the one budget of FRPA_SHUTDOWN_TIMEOUT, and ends every node watch."""
        self._deadline = self.clock.monotonic() + self.settings.shutdown_timeout
        if self.opened:
            self.registry.end_watches()

    def time_left(self) -> float:
        """Seconds of the shutdown budget left; all of it before shutdown begins."""
        if self._deadline is None:
            return self.settings.shutdown_timeout
        return max(self._deadline - self.clock.monotonic(), 0.0)

    def node_object(self, state: NodeState) -> JsonObject:
        """The node's NM as the API shows it: its state in memory, over what others own in
        the stored object (labels, bindStatus...) where the store keeps a copy in memory."""
        return render_nm(state, self.store.cached(nm_name(state.unique_id)))

    def node_labels(self, name: str) -> Labels | None:
        """The labels of the node NM `name` names; None for a node not known."""
        try:
            state = self.registry.get(unique_id_of(name))
        except InvalidUniqueIdError:
            return None
        return None if state is None else state.known_labels

    async def stored(self, uids: Iterable[UniqueId], within: float) -> bool:
        """Whether the store confirms these nodes' changes within `within` seconds; either
        way they stay queued until stored."""
        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*(self.writer.flushed(uid) for uid in uids))
        except TimeoutError:
            return False
        return True

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        settings, clock, supervisor = self.settings, self.clock, self.supervisor
        backend = await open_backend(
            settings.store,
            identity=f"{socket.gethostname()}-{os.getpid()}",
            event_namespace=settings.event_namespace,
            event_min_interval=settings.event_min_interval,
            supervisor=supervisor,
            clock=clock,
        )
        stack.push_async_callback(backend.store.close)
        self.store = store = backend.store
        self.leadership = leadership = backend.leadership
        self.reviewer = backend.reviewer if settings.kubernetes_auth else None
        self.writer = writer = NodeWriter(store, clock=clock)
        self.registry = registry = NodeRegistry(
            writer,
            heartbeat_persist_interval=settings.heartbeat_persist_interval,
            clock=clock,
            label_keys=settings.metric_labels,
        )
        # Other replicas' writes, seen through the store, keep this one's memory current.
        # Subscribed before anything awaits: the store's watch may not run before it.
        store.subscribe(registry)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        self.servers = frps_parts(
            settings,
            registry,
            session,
            liveness=self.frps,
            store_failing=lambda: writer.failing,
            leading=lambda: leadership.leading,
            clock=clock,
        )
        self.plugins = FrpsPlugins(
            {name: parts.endpoint for name, parts in self.servers.items()},
            secret=settings.plugin_secret,
        )
        self.ssh = SshConnector(
            registry,
            user=settings.ssh_user,
            client_keys=self._client_keys,
            password=settings.ssh_password,
            known_hosts=settings.ssh_known_hosts,
            connect_timeout=settings.ssh_connect_timeout,
            frps={live.address: live for live in self.frps.values()},
            idle_timeout=settings.ssh_idle_timeout,
            most_idle=settings.ssh_max_connections,
            clock=clock,
        )
        self.expiry = HeartbeatExpiry(
            registry,
            timeout=settings.heartbeat_timeout,
            leading=lambda: leadership.leading,
            clock=clock,
        )
        stack.push_async_callback(self._drain)
        self.loaded = supervisor.start(
            "node-load", partial(registry.load, store, supervisor.backoff)
        )
        supervisor.start(_WRITER, writer.run)
        for parts in self.servers.values():
            stack.push_async_callback(parts.close)
        stack.push_async_callback(self._release_lease)

        # A replica that wins the lead checks frps at once: the last leader may have died
        # with answered events it never stored.
        def on_gain() -> None:
            for reconciler in self.reconcilers.values():
                reconciler.reconcile_soon(0)

        background: dict[str, Callable[[], Awaitable[object]]] = {
            "leader-election": partial(leadership.run, on_gain),
            "heartbeat-expiry": self.expiry.run,
            "ssh-connections": self.ssh.pool.run,
        }
        for name, parts in self.servers.items():
            if parts.reconciler:
                background[f"reconciler-{name}"] = partial(parts.reconciler.run, self.loaded)
            if parts.watch:
                background[f"frps-watch-{name}"] = parts.watch.run
        stack.push_async_callback(supervisor.stop, "node-load", *background)
        for name, work in background.items():
            supervisor.start(name, work)
        self.notifier = await self._notifications(stack)

    async def _notifications(self, stack: contextlib.AsyncExitStack) -> Notifier | None:
        """Node changes to FRP_SERVER_WEBHOOK and FRPA_NOTIFY_URL, when either is set."""
        settings = self.settings
        found = destinations(settings)
        if not found:
            return None
        # Its own session: DingTalk is outside the cluster, often only through HTTPS_PROXY.
        session = await stack.enter_async_context(aiohttp.ClientSession(trust_env=True))
        outboxes = [
            Outbox(
                d,
                session,
                interval=settings.notify_interval,
                backoff=settings.retry_backoff,
                clock=self.clock,
            )
            for d in found
        ]
        notifier = Notifier(
            self.registry,
            outboxes,
            frps_names={server.address: server.name for server in settings.servers()},
        )
        tasks: dict[str, Callable[[], Awaitable[object]]] = {
            "notifications-watch": partial(notifier.run, self.loaded)
        }
        tasks |= {f"notifications-{o.destination.name}": o.run for o in outboxes}

        async def stop() -> None:
            await self.supervisor.stop(*tasks)
            for outbox in outboxes:
                if outbox.backlog:
                    logger.warning(
                        "shutting down with %d change(s) not notified to %s",
                        outbox.backlog,
                        outbox.destination.name,
                    )

        stack.push_async_callback(stop)
        for name, work in tasks.items():
            self.supervisor.start(name, work)
        return notifier

    async def _release_lease(self) -> None:
        try:
            async with asyncio.timeout(min(self.time_left(), _RELEASE_SECONDS)):
                await self.leadership.release()
        except TimeoutError:
            logger.warning("leader lease not released: out of time")

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.time_left()):
                await self.writer.drained()
        except TimeoutError:
            logger.error("shutting down with %d node write(s) not stored", self.writer.backlog)
        await self.supervisor.stop(_WRITER)

    def stats(self) -> Stats:
        """Counts and states now; the adapter must be open."""
        settings = self.settings
        names = {server.address: server.name for server in settings.servers()}
        nodes: Counter[tuple[str, str]] = Counter()
        for (status, address), count in self.registry.counts().items():
            nodes[status, names.get(address or "", address or "")] += count
        for each in ("online", "offline"):
            for name in names.values():
                nodes.setdefault((each, name), 0)
        requests: Counter[tuple[str, str]] = Counter()
        unhandled: Counter[str] = Counter(dict.fromkeys(UNHANDLED_KINDS, 0))
        for endpoint in self.plugins.endpoints.values():
            requests.update(endpoint.counts)
            unhandled.update(endpoint.unhandled)
        supervisor = self.supervisor
        restarts = Counter(dict.fromkeys(supervisor.names, 0))
        restarts.update(supervisor.restarts)
        notifications: Counter[tuple[str, str]] = Counter()
        for outbox in self.notifier.outboxes if self.notifier else ():
            for result in RESULTS:
                notifications[outbox.destination.name, result] = outbox.results[result]
        return Stats(
            nodes=nodes,
            nodes_by_label=self.registry.label_counts() if settings.metric_labels else None,
            plugin_requests=requests,
            plugin_unhandled=unhandled,
            backend=KUBERNETES if settings.store == KUBERNETES else "sqlite",
            loaded=self.loaded.done(),
            store_writes=self.writer.writes,
            store_write_failures=self.writer.failures,
            store_failing=self.writer.failing,
            store_backlog=self.writer.backlog,
            store_problem=self.store.problem(),
            leading=self.leadership.leading,
            stalls=self.expiry.stalls,
            expiry_sweep_seconds=self.expiry.last_sweep_seconds,
            heartbeat_expiries=self.registry.heartbeat_expiries,
            transitions=Counter(self.registry.transitions),
            labels_skipped=sum(parts.tracker.labels_skipped for parts in self.servers.values()),
            tasks=supervisor.tasks(),
            task_restarts=restarts,
            shells_active=self.ssh.shells_active,
            ssh_connections=self.ssh.pool.counts(),
            ssh_dials=(self.ssh.pool.opened, self.ssh.pool.reused),
            exec_results=Counter(self.ssh.exec_results),
            notifications=notifications,
            frps={name: _frps_stats(self.servers[name]) for name in sorted(self.servers)},
        )


def _frps_stats(parts: FrpsParts) -> FrpsStats:
    live, reconciler = parts.liveness, parts.reconciler
    unreachable = live.unreachable
    return FrpsStats(
        watched=live.watched,
        reachable=not unreachable,
        unreachable_since=live.unreachable_since if unreachable else None,
        down=live.down,
        probe_error=live.last_error if unreachable else None,
        reconciliation=ReconcileStats(
            runs=reconciler.runs,
            corrections=reconciler.corrections,
            failures=reconciler.failures,
            last_error=reconciler.last_error,
            last_seconds=reconciler.last_seconds,
        )
        if reconciler
        else None,
    )
