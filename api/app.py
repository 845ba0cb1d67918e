"""`create_app(settings)`: the adapter served over HTTP. It only wires: routes and access
rules from `api.routes`, the HTTP layer's own parts, and the adapter's lifetime
(`runtime.Adapter` owns every other part of the process).

The plugin route answers as soon as the server listens: nothing here waits on the store
before start-up completes (seeding memory from the store runs behind, as a task).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TypeVar

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from api import routes
from api.audit import AuditLog, writable_directory
from api.auth import Access
from api.cors import Cors
from api.metrics import AdapterCollector, RequestTimer, setup_metrics
from api.shutdown import Shutdown
from api.state import STATE, State
from api.tls import Certificates
from nodes.clock import Clock
from runtime.adapter import Adapter
from schemas.settings import Settings, SettingsError

T = TypeVar("T")
# Lists rendering at once: each holds the event loop ~0.4 ms per chunk of nodes, so a
# plugin call waits a few ms at most behind all of them.
CONCURRENT_LISTS = 2
# Idle keep-alive connections are closed after this long; frps's carry on (Go reconnects
# when an idle one was closed).
IDLE_CONNECTION_SECONDS = 15.0


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Raises SettingsError when a file a setting names cannot be used: they are read here."""
    adapter = Adapter(settings, clock=clock)
    clock = adapter.clock
    if settings.shell_recordings:
        _at_start("FRPA_SHELL_RECORDINGS", partial(writable_directory, settings.shell_recordings))
    audit = _at_start("FRPA_AUDIT_LOG", partial(AuditLog, settings.audit_log, clock=clock))
    access = _at_start(
        "FRPA_API_TOKENS_FILE",
        partial(
            Access,
            routes.rules(),
            tokens_file=settings.api_tokens_file,
            insecure=settings.insecure_no_auth,
            allowed_origins=settings.allowed_origins,
            trusted_networks=settings.trusted_networks,
            audit=audit,
            clock=clock,
            node_labels=adapter.node_labels,
        ),
    )
    metrics, timer = setup_metrics(clock)
    state = State(
        adapter=adapter,
        access=access,
        audit=audit,
        shutdown=Shutdown(adapter),
        metrics=metrics,
        tls=(
            Certificates(settings.tls_cert_file, settings.tls_key_file, clock)
            if settings.tls_cert_file and settings.tls_key_file
            else None
        ),
        lists=asyncio.Semaphore(CONCURRENT_LISTS),
        slow_readers=Counter(),
        shells_by_user=Counter(),
        forwards_by_user=Counter(),
    )
    metrics.register(AdapterCollector(state))
    # Bodies as sent (routes._as_sent): aiohttp decompresses as data arrives, before any
    # handler can refuse, and a body that lies about its encoding hangs or logs an error.
    app = web.Application(handler_args={"auto_decompress": False})
    app[STATE] = state
    app.on_shutdown.append(state.shutdown.begin)
    app.cleanup_ctx.append(_served)
    if settings.metrics_address is not None:
        app.cleanup_ctx.append(_metrics_site)
    if settings.plugin_address is not None:
        app.cleanup_ctx.append(partial(_plugin_site, timer=timer))
    # Each route's handler is timed and guarded on its own (routes.add_routes): a
    # middleware costs every plugin call ~5 us. Only what no route matched needs one.
    app.middlewares.append(routes.redirect_trailing_slash)
    # Without an allowed origin CORS adds nothing, and every plugin call would pay for it.
    if settings.allowed_origins:
        cors = Cors(settings.allowed_origins)
        app.middlewares.append(cors.middleware)
        app.on_response_prepare.append(cors.on_response_prepare)
    routes.add_routes(app, access=access, timer=timer)
    return app


def _at_start(variable: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except (OSError, ValueError) as e:
        raise SettingsError(f"{variable}: {e}") from e


async def _served(app: web.Application) -> AsyncIterator[None]:
    """The adapter open while the app serves, and what callers present watched: the tokens
    file, and the TLS certificate."""
    state = app[STATE]
    async with state.adapter as adapter:
        state.access.reviewer = adapter.reviewer
        watches = {"api-tokens-watch": state.access.watch}
        if state.tls:
            watches["tls-reload"] = state.tls.watch
        for name, watch in watches.items():
            adapter.supervisor.start(name, watch)
        try:
            yield
        finally:
            await adapter.supervisor.stop(*watches)
    state.audit.close()


async def _metrics_site(app: web.Application) -> AsyncIterator[None]:
    """/metrics alone on FRPA_METRICS_ADDRESS, e.g. for a network only Prometheus reaches."""
    state = app[STATE]
    address = state.adapter.settings.metrics_address
    assert address is not None
    metrics = web.Application()
    metrics.router.add_get("/metrics", make_aiohttp_handler(state.metrics))
    runner = web.AppRunner(metrics, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, address[0] or None, address[1]).start()
        yield
    finally:
        await runner.cleanup()


async def _plugin_site(app: web.Application, *, timer: RequestTimer) -> AsyncIterator[None]:
    """frps's plugin calls alone on FRPA_PLUGIN_ADDRESS, e.g. on a network only frps
    reaches; over TLS when the API is. No access log: its paths carry the plugin secret."""
    state = app[STATE]
    settings = state.adapter.settings
    assert settings.plugin_address is not None
    host, port = settings.plugin_address
    server = routes.plugin_server(
        state.adapter, timer, keepalive_timeout=IDLE_CONNECTION_SECONDS, access_log=None
    )
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(
        runner, host or None, port, ssl_context=state.tls.served if state.tls else None
    )
    try:
        await site.start()
        yield
    finally:
        await site.stop()
        # Calls in flight get what is left of the budget's first half, as the API's did
        # (aiohttp's shutdown_timeout); the writes drain in the rest.
        await server.shutdown(max(state.adapter.time_left() - settings.shutdown_timeout / 2, 0))
        await runner.cleanup()
