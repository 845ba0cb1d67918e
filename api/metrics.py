"""Prometheus metrics, on a registry the app owns.

Counts are kept as plain integers by the parts that do the work and read at scrape time
by one collector, so the plugin path pays nothing for them; only the HTTP latency
histogram is observed per request, labelled by route template (never the raw path).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.keys import (
    AUDIT,
    CLOCK,
    EXPIRY,
    FRPS,
    LEADERSHIP,
    NOTIFIER,
    PLUGINS,
    RECONCILERS,
    REGISTRY,
    SETTINGS,
    SLOW_READERS,
    SSH,
    SUPERVISOR,
    WRITER,
)
from api.notifications import RESULTS
from nodes.clock import Clock
from plugin.webhook import UNHANDLED_KINDS
from schemas.settings import KUBERNETES

METRICS = web.AppKey("metrics", CollectorRegistry)


async def serve(request: web.Request) -> web.StreamResponse:
    """`/metrics` on the API's port, unless FRPA_METRICS_ADDRESS serves it alone."""
    if request.app[SETTINGS].metrics_address is not None:
        raise web.HTTPNotFound()
    return await make_aiohttp_handler(request.app[METRICS])(request)


def setup_metrics(app: web.Application) -> RequestTimer:
    """The app's registry, and the timer its routes are wrapped in."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(AdapterCollector(app))
    app[METRICS] = registry
    return RequestTimer(
        Histogram(
            "frpa_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["route", "method"],
            registry=registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5),
        ),
        app[CLOCK],
    )


class RequestTimer:
    """Times each route's answers (requests no route matched are not timed)."""

    def __init__(self, latency: Histogram, clock: Clock) -> None:
        self._latency = latency
        self._clock = clock

    def timed(self, template: str, handler: Handler) -> Handler:
        # `labels()` takes a lock and builds a key on every call: the plugin path, at tens
        # of thousands of requests a second, finds its series by method here instead.
        series: dict[str, Histogram] = {}
        perf_counter = self._clock.perf_counter  # held: the plugin path's cost

        @functools.wraps(handler)
        async def timed(request: web.Request) -> web.StreamResponse:
            start = perf_counter()
            try:
                return await handler(request)
            finally:
                method = request.method
                found = series.get(method)
                if found is None:
                    found = series[method] = self._latency.labels(template, method)
                found.observe(perf_counter() - start)

        return timed


class AdapterCollector(Collector):
    """Reads the app's parts at scrape time; before start-up it yields nothing."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        if PLUGINS not in self._app:
            return
        app = self._app
        settings = app[SETTINGS]
        nodes = GaugeMetricFamily(
            "frpa_nodes",
            "Nodes by status and frps (its name; the address for one this adapter does not serve)",
            labels=["status", "frps"],
        )
        # Every family labels an frps by its name, as FRPA_FRPS_SERVERS gives it.
        names = {server.address: server.name for server in settings.servers()}
        by_status: Counter[tuple[str, str]] = Counter()
        for (status, address), count in app[REGISTRY].counts().items():
            by_status[status, names.get(address or "", address or "")] += count
        for each in ("online", "offline"):
            for name in names.values():
                by_status.setdefault((each, name), 0)
        for (each, frps), count in sorted(by_status.items()):
            nodes.add_metric([each, frps], count)
        yield nodes

        requests = CounterMetricFamily(
            "frpa_plugin_requests", "frps plugin requests by op and result", labels=["op", "result"]
        )
        counts: Counter[tuple[str, str]] = Counter()
        for endpoint in app[PLUGINS].endpoints.values():
            counts.update(endpoint.counts)
        for (op, result), count in sorted(counts.items()):
            requests.add_metric([op, result], count)
        yield requests
        unhandled = CounterMetricFamily(
            "frpa_plugin_unhandled",
            "frps plugin calls allowed without changing a node, by why: unreadable, "
            "unidentified (names no node), not_ssh (not a node's SSH proxy), unrecognised_ssh "
            "(looks like the SSH proxy of a node that has none: frpc.toml misnames it), "
            "error (ours)",
            labels=["kind"],
        )
        kinds: Counter[str] = Counter(dict.fromkeys(UNHANDLED_KINDS, 0))
        for endpoint in app[PLUGINS].endpoints.values():
            kinds.update(endpoint.unhandled)
        for kind, count in sorted(kinds.items()):
            unhandled.add_metric([kind], count)
        yield unhandled

        backend = KUBERNETES if settings.store == KUBERNETES else "sqlite"
        writer = app[WRITER]
        writes = CounterMetricFamily("frpa_store_writes", "Node writes stored", labels=["backend"])
        writes.add_metric([backend], writer.writes)
        yield writes
        failures = CounterMetricFamily(
            "frpa_store_write_failures", "Node writes failed (and queued again)", labels=["backend"]
        )
        failures.add_metric([backend], writer.failures)
        yield failures

        yield GaugeMetricFamily(
            "frpa_leader",
            "1 on the replica that runs reconciliation and heartbeat expiry",
            value=int(app[LEADERSHIP].leading),
        )
        yield CounterMetricFamily(
            "frpa_stalls",
            "Times the adapter itself was stalled (stopped, frozen) long enough to hold off "
            "heartbeat expiry",
            value=app[EXPIRY].stalls,
        )
        supervisor = app[SUPERVISOR]
        restarts = CounterMetricFamily(
            "frpa_task_restarts",
            "Background tasks started again after they failed, by task",
            labels=["task"],
        )
        for task in sorted(set(supervisor.names) | set(supervisor.restarts)):
            restarts.add_metric([task], supervisor.restarts[task])
        yield restarts
        yield CounterMetricFamily(
            "frpa_audit_write_failures",
            "Audit records that could not be written (a start refuses its action)",
            value=app[AUDIT].failures,
        )
        yield GaugeMetricFamily(
            "frpa_expiry_sweep_seconds",
            "How long the last heartbeat expiry sweep took",
            value=app[EXPIRY].last_sweep_seconds,
        )
        yield CounterMetricFamily(
            "frpa_heartbeat_expiries",
            "Nodes set offline because their Pings stopped",
            value=app[REGISTRY].heartbeat_expiries,
        )
        ssh = app[SSH]
        yield GaugeMetricFamily(
            "frpa_ssh_shell_sessions", "Shell sessions open on nodes", value=ssh.shells_active
        )
        execs = CounterMetricFamily(
            "frpa_ssh_exec_calls",
            "Commands run on nodes, by result (ok, failed, timeout, error)",
            labels=["result"],
        )
        for result in ("ok", "failed", "timeout", "error"):
            execs.add_metric([result], ssh.exec_results[result])
        yield execs

        slow = CounterMetricFamily(
            "frpa_slow_readers_dropped",
            "Clients dropped for taking nothing of an answer for FRPA_SLOW_READER_TIMEOUT, "
            "by route template",
            labels=["route"],
        )
        for route, count in sorted(app[SLOW_READERS].items()):
            slow.add_metric([route], count)
        yield slow
        yield _notifications(app)
        yield _frps_up(app)
        yield from _reconciliation(app)


def _notifications(app: web.Application) -> Metric:
    family = CounterMetricFamily(
        "frpa_notifications",
        "Notification messages by destination (dingtalk, webhook) and result: sent, or "
        "failed (tried again)",
        labels=["destination", "result"],
    )
    if NOTIFIER in app:
        for outbox in app[NOTIFIER].outboxes:
            for result in RESULTS:
                family.add_metric([outbox.destination.name, result], outbox.results[result])
    return family


def _frps_up(app: web.Application) -> Metric:
    up = GaugeMetricFamily(
        "frpa_frps_up",
        "1 while frps answers (its dashboard, else its bind port) or calls the plugin, 0 "
        "from the first probe it leaves unanswered (FRPA_FRPS_DOWN_AFTER=0: not watched)",
        labels=["frps"],
    )
    for name, live in sorted(app[FRPS].items()):
        if live.watched:
            up.add_metric([name], int(not live.unreachable))
    return up


def _reconciliation(app: web.Application) -> Iterator[Metric]:
    reconcilers = sorted(app[RECONCILERS].items())
    families: list[tuple[type[CounterMetricFamily | GaugeMetricFamily], str, str, str]] = [
        (CounterMetricFamily, "frpa_reconciliations", "Reconciliations with frps done", "runs"),
        (CounterMetricFamily, "frpa_reconcile_corrections", "Nodes corrected", "corrections"),
        (CounterMetricFamily, "frpa_reconcile_failures", "Reconciliations failed", "failures"),
        (
            GaugeMetricFamily,
            "frpa_reconcile_seconds",
            "How long the last reconciliation took, from asking frps to the last node",
            "last_seconds",
        ),
    ]
    for kind, name, text, attribute in families:
        family = kind(name, text, labels=["frps"])
        for frps, reconciler in reconcilers:
            family.add_metric([frps], getattr(reconciler, attribute))
        yield family
