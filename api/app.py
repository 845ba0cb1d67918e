"""`create_app(settings)`: the adapter as one aiohttp app. It only wires: routes and access
rules from `api.routes`, and the lifetimes of the store, writer, trackers and loops.

The plugin route answers as soon as the server listens: nothing here waits on the store
before start-up completes (seeding memory from the store runs behind, as a task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

import aiohttp
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from api import routes
from api.audit import AuditLog, writable_directory
from api.auth import Access
from api.cors import Cors
from api.keys import (
    ACCESS,
    AUDIT,
    CLOCK,
    EXPIRY,
    FORWARDS_BY_USER,
    FRPS,
    LEADERSHIP,
    LISTS,
    LOADED,
    NOTIFIER,
    PLUGINS,
    RECONCILERS,
    REGISTRY,
    SETTINGS,
    SHELLS_BY_USER,
    SHUTDOWN,
    SLOW_READERS,
    SSH,
    STORE,
    SUPERVISOR,
    TLS,
    WRITER,
)
from api.metrics import METRICS, setup_metrics
from api.notifications import Notifier, Outbox, destinations
from api.shutdown import Shutdown
from api.tls import Certificates
from nodes.backend import open_store
from nodes.clock import Clock
from nodes.expiry import HeartbeatExpiry
from nodes.liveness import FrpsLiveness
from nodes.registry import NodeRegistry
from nodes.supervisor import Supervisor
from nodes.writer import NodeWriter
from plugin.admission import Admission
from plugin.dashboard import FrpsDashboard
from plugin.liveness import FrpsWatch
from plugin.reconciler import RELOGIN_SETTLE_SECONDS, FrpsReconciler
from plugin.tracker import SshProxyTracker
from plugin.webhook import FrpsPlugins, PluginEndpoint
from schemas.settings import FrpsServer, Settings, SettingsError
from ssh.connector import ClientKey, SshConnector, read_client_key

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Lists rendering at once: each holds the event loop ~0.4 ms per chunk of nodes, so a
# plugin call waits a few ms at most behind all of them.
CONCURRENT_LISTS = 2
_WRITER = "node-writer"
# Of the shutdown budget, at most this goes to handing the leader lease on.
_RELEASE_SECONDS = 2.0


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Raises SettingsError when a file a setting names cannot be used: they are read here."""
    app = web.Application()
    app[SETTINGS] = settings
    app[CLOCK] = clock or Clock()
    app[SUPERVISOR] = Supervisor(app[CLOCK])
    app[FRPS] = {
        server.name: FrpsLiveness(
            server.name,
            server.address,
            watched=bool(settings.frps_down_after),
        )
        for server in settings.servers()
    }
    app[SHUTDOWN] = Shutdown(settings.shutdown_timeout, app[CLOCK])
    app.on_shutdown.append(app[SHUTDOWN].begin)
    app.on_shutdown.append(_end_watches)
    client_keys = (
        [_at_start("FRPA_SSH_KEY_FILE", partial(read_client_key, settings.ssh_key_file))]
        if settings.ssh_key_file
        else []
    )
    if settings.ssh_known_hosts:
        _at_start("FRPA_SSH_KNOWN_HOSTS", partial(_readable, settings.ssh_known_hosts))
    if settings.shell_recordings:
        _at_start("FRPA_SHELL_RECORDINGS", partial(writable_directory, settings.shell_recordings))
    app[AUDIT] = _at_start(
        "FRPA_AUDIT_LOG", partial(AuditLog, settings.audit_log, clock=app[CLOCK])
    )
    app[ACCESS] = _at_start(
        "FRPA_API_TOKENS_FILE",
        partial(
            Access,
            routes.rules(),
            tokens_file=settings.api_tokens_file,
            insecure=settings.insecure_no_auth,
            allowed_origins=settings.allowed_origins,
            trusted_networks=settings.trusted_networks,
            audit=app[AUDIT],
            clock=app[CLOCK],
        ),
    )
    if settings.tls_cert_file and settings.tls_key_file:
        app[TLS] = Certificates(settings.tls_cert_file, settings.tls_key_file, app[CLOCK])
    app[SHELLS_BY_USER] = Counter()
    app[FORWARDS_BY_USER] = Counter()
    app[LISTS] = asyncio.Semaphore(CONCURRENT_LISTS)
    app[SLOW_READERS] = Counter()
    app.cleanup_ctx.append(_access)
    app.cleanup_ctx.append(partial(_nodes, client_keys=client_keys))
    app.cleanup_ctx.append(_notifications)
    if settings.metrics_address is not None:
        app.cleanup_ctx.append(_metrics_site)
    timer = setup_metrics(app)
    # Each route's handler is timed and guarded on its own (routes.add_routes): a
    # middleware costs every plugin call ~5 us. Only what no route matched needs one.
    app.middlewares.append(routes.redirect_trailing_slash)
    # Without an allowed origin CORS adds nothing, and every plugin call would pay for it.
    if settings.allowed_origins:
        cors = Cors(settings.allowed_origins)
        app.middlewares.append(cors.middleware)
        app.on_response_prepare.append(cors.on_response_prepare)
    routes.add_routes(app, access=app[ACCESS], timer=timer)
    return app


async def _end_watches(app: web.Application) -> None:
    if REGISTRY in app:
        app[REGISTRY].end_watches()


def _at_start(variable: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except (OSError, ValueError) as e:
        raise SettingsError(f"{variable}: {e}") from e


def _readable(path: str) -> None:
    with open(path, "rb"):
        pass


async def _access(app: web.Application) -> AsyncIterator[None]:
    """What callers present, watched: the tokens file, and the TLS certificate."""
    watches = {"api-tokens-watch": app[ACCESS].watch}
    if TLS in app:
        watches["tls-reload"] = app[TLS].watch
    for name, watch in watches.items():
        app[SUPERVISOR].start(name, watch)
    try:
        yield
    finally:
        await app[SUPERVISOR].stop(*watches)
        app[AUDIT].close()


async def _metrics_site(app: web.Application) -> AsyncIterator[None]:
    """/metrics alone on FRPA_METRICS_ADDRESS, e.g. for a network only Prometheus reaches."""
    address = app[SETTINGS].metrics_address
    assert address is not None
    metrics = web.Application()
    metrics.router.add_get("/metrics", make_aiohttp_handler(app[METRICS]))
    runner = web.AppRunner(metrics, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, address[0] or None, address[1]).start()
        yield
    finally:
        await runner.cleanup()


async def _nodes(app: web.Application, *, client_keys: Sequence[ClientKey]) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    clock = app[CLOCK]
    supervisor = app[SUPERVISOR]
    store = await open_store(
        settings.store,
        event_namespace=settings.event_namespace,
        event_min_interval=settings.event_min_interval,
        supervisor=supervisor,
        clock=clock,
    )
    writer = NodeWriter(store, clock=clock)
    registry = NodeRegistry(
        writer, heartbeat_persist_interval=settings.heartbeat_persist_interval, clock=clock
    )
    # Other replicas' writes, seen through the store, keep this one's memory current.
    store.subscribe(registry)
    if settings.kubernetes_auth:
        app[ACCESS].reviewer = store.reviewer()
    leadership = store.leadership(f"{socket.gethostname()}-{os.getpid()}", clock)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        trackers, reconcilers = _frps_parts(
            settings, registry, session, leading=lambda: leadership.leading, clock=clock
        )
        app[STORE] = store
        app[LEADERSHIP] = leadership
        app[RECONCILERS] = reconcilers
        app[WRITER] = writer
        app[REGISTRY] = registry
        app[SSH] = SshConnector(
            registry,
            user=settings.ssh_user,
            client_keys=client_keys,
            password=settings.ssh_password,
            known_hosts=settings.ssh_known_hosts,
            connect_timeout=settings.ssh_connect_timeout,
            frps={live.address: live for live in app[FRPS].values()},
            clock=clock,
        )
        app[EXPIRY] = expiry = HeartbeatExpiry(
            registry,
            timeout=settings.heartbeat_timeout,
            leading=lambda: leadership.leading,
            clock=clock,
        )
        app[PLUGINS] = FrpsPlugins(
            {
                name: PluginEndpoint(
                    tracker,
                    liveness=app[FRPS][name],
                    clock=clock,
                    fail_closed=settings.plugin_failure_mode == "closed",
                    store_failing=lambda: writer.failing,
                )
                for name, tracker in trackers.items()
            },
            secret=settings.plugin_secret,
        )
        app[LOADED] = loaded = supervisor.start("node-load", partial(registry.load, store))
        supervisor.start(_WRITER, writer.run)

        # A replica that wins the lead checks frps at once: the last leader may have died
        # with answered events it never stored.
        def on_gain() -> None:
            for reconciler in reconcilers.values():
                reconciler.reconcile_soon(0)

        background = ["node-load", "leader-election", "heartbeat-expiry"]
        supervisor.start("leader-election", partial(leadership.run, on_gain))
        supervisor.start("heartbeat-expiry", expiry.run)
        for name, reconciler in reconcilers.items():
            background.append(f"reconciler-{name}")
            supervisor.start(background[-1], partial(reconciler.run, loaded))
        background += _start_frps_watches(
            app, registry, session, reconcilers, leading=lambda: leadership.leading
        )
        try:
            yield
        finally:
            await supervisor.stop(*background)
            try:
                async with asyncio.timeout(min(app[SHUTDOWN].left(), _RELEASE_SECONDS)):
                    await leadership.release()
            except TimeoutError:
                logger.warning("leader lease not released: out of time")
            for tracker in trackers.values():
                await tracker.close()
            for reconciler in reconcilers.values():
                await reconciler.close()
            try:
                async with asyncio.timeout(app[SHUTDOWN].left()):
                    await writer.drained()
            except TimeoutError:
                logger.error("shutting down with %d node write(s) not stored", writer.backlog)
            await supervisor.stop(_WRITER)


async def _notifications(app: web.Application) -> AsyncIterator[None]:
    """Node changes to FRP_SERVER_WEBHOOK and FRPA_NOTIFY_URL, when either is set."""
    settings = app[SETTINGS]
    found = destinations(settings)
    if not found:
        yield
        return
    # Its own session: DingTalk is outside the cluster, often only through HTTPS_PROXY.
    async with aiohttp.ClientSession(trust_env=True) as session:
        outboxes = [
            Outbox(d, session, interval=settings.notify_interval, clock=app[CLOCK]) for d in found
        ]
        app[NOTIFIER] = notifier = Notifier(
            app[REGISTRY],
            outboxes,
            frps_names={server.address: server.name for server in settings.servers()},
        )
        loaded = app[LOADED]
        tasks: dict[str, Callable[[], Awaitable[object]]] = {
            "notifications-watch": partial(notifier.run, loaded)
        }
        tasks |= {f"notifications-{o.destination.name}": o.run for o in outboxes}
        for name, work in tasks.items():
            app[SUPERVISOR].start(name, work)
        try:
            yield
        finally:
            await app[SUPERVISOR].stop(*tasks)
            for outbox in outboxes:
                if outbox.backlog:
                    logger.warning(
                        "shutting down with %d change(s) not notified to %s",
                        outbox.backlog,
                        outbox.destination.name,
                    )


def _frps_parts(
    settings: Settings,
    registry: NodeRegistry,
    session: aiohttp.ClientSession,
    *,
    leading: Callable[[], bool],
    clock: Clock,
) -> tuple[dict[str, SshProxyTracker], dict[str, FrpsReconciler]]:
    """Per frps: the tracker of its events, and its reconciler when it has a dashboard."""
    admission = Admission(
        require_registered=settings.require_registered,
        node_tokens=settings.node_tokens,
        ports=settings.allowed_ports,
    )
    trackers: dict[str, SshProxyTracker] = {}
    reconcilers: dict[str, FrpsReconciler] = {}
    servers = settings.servers()
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
        if reconciler:
            reconcilers[server.name] = reconciler
        trackers[server.name] = SshProxyTracker(
            registry,
            frps_address=server.address,
            unique_id_meta_key=settings.unique_id_meta_key,
            close_grace_period=settings.close_grace_period,
            dashboard=dashboard,
            clock=clock,
            on_relogin=reconciler.relogin_seen if reconciler else None,
            admission=admission,
        )
    return trackers, reconcilers


def _dashboard(
    settings: Settings, server: FrpsServer, session: aiohttp.ClientSession
) -> FrpsDashboard | None:
    if server.api is None:
        return None
    return FrpsDashboard(
        session, server.api, user=settings.frps_api_user, password=settings.frps_api_password
    )


def _start_frps_watches(
    app: web.Application,
    registry: NodeRegistry,
    session: aiohttp.ClientSession,
    reconcilers: dict[str, FrpsReconciler],
    *,
    leading: Callable[[], bool],
) -> list[str]:
    """Per frps, the watch of its liveness (none with FRPA_FRPS_DOWN_AFTER=0), started;
    the names of their tasks."""
    settings = app[SETTINGS]
    if not settings.frps_down_after:
        return []
    names = []
    for server in settings.servers():
        reconciler = reconcilers.get(server.name)
        watch = FrpsWatch(
            app[FRPS][server.name],
            registry,
            dashboard=_dashboard(settings, server, session),
            bind_port=server.bind_port,
            down_after=settings.frps_down_after,
            leading=leading,
            # Its nodes log in again as frps comes back; those that do not are found then.
            on_back=(
                partial(reconciler.reconcile_soon, RELOGIN_SETTLE_SECONDS) if reconciler else None
            ),
            clock=app[CLOCK],
        )
        names.append(f"frps-watch-{server.name}")
        app[SUPERVISOR].start(names[-1], watch.run)
    return names
