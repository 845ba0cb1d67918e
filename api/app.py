"""`create_app(settings)`: wires routes and the lifetimes of the store, writer and tracker.

The plugin route answers as soon as the server listens: nothing here waits on the store
before start-up completes (seeding memory from the store runs behind, as a task).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial

import aiohttp
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from api import openapi, original, shell, v1
from api.audit import AuditLog
from api.auth import Access
from api.keys import (
    ACCESS,
    AUDIT,
    EXPIRY,
    LEADERSHIP,
    LISTS,
    LOADED,
    PLUGINS,
    RECONCILERS,
    REGISTRY,
    SETTINGS,
    SHELLS_BY_USER,
    SSH,
    STORE,
    WRITER,
)
from api.limits import AcceptErrors
from api.metrics import METRICS, setup_metrics
from api.settings import Settings
from nodes.expiry import HeartbeatExpiry
from nodes.registry import NodeRegistry
from nodes.store import NodeStore, StoreError, open_store
from nodes.writer import NodeWriter
from plugin.admission import Admission
from plugin.dashboard import FrpsDashboard
from plugin.reconciler import FrpsReconciler
from plugin.tracker import SshProxyTracker
from plugin.webhook import PluginEndpoint
from ssh.connector import SshConnector

logger = logging.getLogger(__name__)

_LOAD_RETRY_SECONDS = 2.0
# After a node logs in again with its old run_id (frps restarted), the nodes frps served
# get this long to come back before frps's view decides who is offline.
RELOGIN_SETTLE_SECONDS = 20.0
# Lists rendering at once: each holds the event loop ~0.4 ms per chunk of nodes, so a
# plugin call waits a few ms at most behind all of them.
CONCURRENT_LISTS = 2


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[ACCESS] = Access(
        tokens_file=settings.api_tokens_file,
        insecure=settings.insecure_no_auth,
        allowed_origins=settings.allowed_origins,
    )
    app[SHELLS_BY_USER] = Counter()
    app[LISTS] = asyncio.Semaphore(CONCURRENT_LISTS)
    app.cleanup_ctx.append(_accept_errors)
    app.cleanup_ctx.append(_access)
    app.cleanup_ctx.append(_nodes)
    # The secret, when set, is a path segment: frps can send no header. The first frps
    # also answers at the original path.
    app.router.add_post("/frps/handler", _frps_handler)
    app.router.add_post("/frps/handler/{secret}", _frps_handler)
    app.router.add_post("/frps/{server}/handler", _frps_handler)
    app.router.add_post("/frps/{server}/handler/{secret}", _frps_handler)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    setup_metrics(app)
    app.middlewares.append(app[ACCESS].middleware)
    if settings.metrics_address is None:
        app.router.add_get("/metrics", make_aiohttp_handler(app[METRICS]))
    else:
        app.cleanup_ctx.append(_metrics_site)
    original.add_routes(app.router)
    v1.add_routes(app.router)
    shell.add_routes(app.router)
    openapi.add_routes(app)
    return app


async def _frps_handler(request: web.Request) -> web.Response:
    plugins = request.app[PLUGINS]
    server = request.match_info.get("server")
    # The original path serves the first frps (dicts keep their order).
    endpoint = plugins.get(server) if server else next(iter(plugins.values()))
    secret = request.app[SETTINGS].plugin_secret.encode()
    given = request.match_info.get("secret", "").encode()
    if endpoint is None or not hmac.compare_digest(given, secret):
        next(iter(plugins.values())).counts["unauthorized", "rejected"] += 1
        raise web.HTTPNotFound()
    return await endpoint.handle(request)


async def _access(app: web.Application) -> AsyncIterator[None]:
    access = app[ACCESS]
    if access.insecure:
        logger.warning(
            "FRPA_INSECURE_NO_AUTH=1: anyone who reaches this port can open shells and run "
            "commands on every node, and change every node's state"
        )
    elif not app[SETTINGS].api_tokens_file and not app[SETTINGS].kubernetes_auth:
        logger.warning(
            "no FRPA_API_TOKENS_FILE: node reads and writes are open to anyone who reaches "
            "this port; shell and exec are disabled"
        )
    app[AUDIT] = AuditLog(app[SETTINGS].audit_log)
    watcher = asyncio.create_task(access.watch(), name="api-tokens-watch")
    try:
        yield
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        app[AUDIT].close()


async def _accept_errors(app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrors())
    try:
        yield
    finally:
        loop.set_exception_handler(before)


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


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """Ready while the plugin path answers, which needs no store, and the store can keep
    what it is given: a deleted or unwritable SQLite file fails readiness (503)."""
    writer = request.app[WRITER]
    problem = request.app[STORE].problem()
    frps = {
        name: {
            "reconciliations": reconciler.runs,
            "corrections": reconciler.corrections,
            "failures": reconciler.failures,
            "last_error": reconciler.last_error,
        }
        for name, reconciler in request.app[RECONCILERS].items()
    }
    return web.json_response(
        {
            "status": "not ready" if problem else "ready",
            "leading": request.app[LEADERSHIP].leading,
            "store": {
                "loaded": request.app[LOADED].done(),
                "failing": writer.failing,
                "backlog": writer.backlog,
                "problem": problem,
            },
            "frps": frps,
        },
        status=503 if problem else 200,
    )


async def _nodes(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = await open_store(
        settings.store_url,
        event_namespace=settings.event_namespace,
        event_min_interval=settings.event_min_interval,
    )
    writer = NodeWriter(store)
    registry = NodeRegistry(writer, heartbeat_persist_interval=settings.heartbeat_persist_interval)
    # Other replicas' writes, seen through the store, keep this one's memory current.
    store.subscribe(registry)
    if settings.kubernetes_auth:
        app[ACCESS].reviewer = store.reviewer()
    leadership = store.leadership(f"{socket.gethostname()}-{os.getpid()}")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        admission = Admission(
            require_registered=settings.require_registered,
            node_tokens=settings.node_tokens,
            ports=settings.allowed_ports,
        )
        reconcilers: dict[str, FrpsReconciler] = {}
        trackers: dict[str, SshProxyTracker] = {}
        for server in settings.servers():
            dashboard = (
                FrpsDashboard(
                    session,
                    server.api,
                    user=settings.frps_api_user,
                    password=settings.frps_api_password,
                )
                if server.api
                else None
            )
            reconciler = (
                FrpsReconciler(
                    registry,
                    dashboard,
                    interval=settings.reconcile_interval,
                    frps_address=server.address,
                    leading=lambda: leadership.leading,
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
                on_relogin=(
                    partial(reconciler.reconcile_soon, RELOGIN_SETTLE_SECONDS)
                    if reconciler
                    else None
                ),
                admission=admission,
            )
        _say_what_cannot_be_known(settings)
        app[STORE] = store
        app[LEADERSHIP] = leadership
        app[RECONCILERS] = reconcilers
        app[WRITER] = writer
        app[REGISTRY] = registry
        app[SSH] = SshConnector(
            registry,
            user=settings.ssh_user,
            key_file=settings.ssh_key_file,
            password=settings.ssh_password,
            known_hosts=settings.ssh_known_hosts,
            connect_timeout=settings.ssh_connect_timeout,
        )
        app[EXPIRY] = expiry = HeartbeatExpiry(
            registry, timeout=settings.heartbeat_timeout, leading=lambda: leadership.leading
        )
        app[PLUGINS] = {
            name: PluginEndpoint(
                tracker,
                fail_closed=settings.plugin_failure_mode == "closed",
                store_failing=lambda: writer.failing,
            )
            for name, tracker in trackers.items()
        }
        app[LOADED] = loaded = asyncio.create_task(_load(registry, store), name="node-load")
        writer_task = asyncio.create_task(writer.run(), name="node-writer")

        # A replica that wins the lead checks frps at once: the last leader may have died
        # with answered events it never stored.
        def on_gain() -> None:
            for reconciler in reconcilers.values():
                reconciler.reconcile_soon(0)

        background = [
            loaded,
            asyncio.create_task(leadership.run(on_gain), name="leader-election"),
            asyncio.create_task(expiry.run(), name="heartbeat-expiry"),
        ]
        background.extend(
            asyncio.create_task(reconciler.run(loaded), name=f"reconciler-{name}")
            for name, reconciler in reconcilers.items()
        )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await leadership.release()
            for tracker in trackers.values():
                await tracker.close()
            for reconciler in reconcilers.values():
                await reconciler.close()
            try:
                async with asyncio.timeout(settings.shutdown_timeout):
                    await writer.drained()
            except TimeoutError:
                logger.error("shutting down with %d node write(s) not stored", writer.backlog)
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)


def _say_what_cannot_be_known(settings: Settings) -> None:
    if not settings.plugin_secret:
        logger.warning(
            "no FRPA_PLUGIN_SECRET: anyone who reaches this port can send plugin calls as "
            "if from frps (`frp-adapter frps-config` prints a plugin block with a secret)"
        )
    for server in settings.servers():
        if server.api is None:
            logger.warning(
                "frps %s has no dashboard configured: remote ports frps picks at random stay "
                "unknown, nothing missed while the adapter was down is corrected, and a "
                "CloseProxy is judged by its run_id and session alone",
                server.name,
            )


async def _load(registry: NodeRegistry, store: NodeStore) -> int:
    while True:
        try:
            loaded = await registry.load(store)
        except StoreError as e:
            logger.warning("cannot read stored nodes yet, retrying: %s", e)
            await asyncio.sleep(_LOAD_RETRY_SECONDS)
            continue
        logger.info("loaded %d stored node(s)", loaded)
        return loaded
