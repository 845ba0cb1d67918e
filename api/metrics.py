"""Prometheus metrics, on a registry the app owns.

Counts are kept as plain integers by the parts that do the work and read at scrape time
by one collector, so the plugin path pays nothing for them; only the HTTP latency
histogram is observed per request, labelled by route template (never the raw path).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterator, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.state import STATE, State
from nodes.clock import Clock
from runtime.stats import Stats

logger = logging.getLogger(__name__)
# Values of one FRPA_METRIC_LABELS key shown as series of their own: a key with a value per
# node (a serial number) would otherwise make a series per node.
LABEL_VALUES = 100


async def serve(request: web.Request) -> web.StreamResponse:
    """`/metrics` on the API's port, unless FRPA_METRICS_ADDRESS serves it alone."""
    state = request.app[STATE]
    if state.adapter.settings.metrics_address is not None:
        raise web.HTTPNotFound()
    return await make_aiohttp_handler(state.metrics)(request)


def setup_metrics(clock: Clock) -> tuple[CollectorRegistry, RequestTimer]:
    """The app's registry, and the timer its routes are wrapped in; the app's own
    `AdapterCollector` is registered once its state is made."""
    registry = CollectorRegistry(auto_describe=True)
    return registry, RequestTimer(
        Histogram(
            "frpa_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["route", "method"],
            registry=registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5),
        ),
        clock,
    )


class RequestTimer:
    """Times each route's answers (requests no route matched are not timed)."""

    def __init__(self, latency: Histogram, clock: Clock) -> None:
        self._latency = latency
        self.perf_counter = clock.perf_counter
        self._series: dict[tuple[str, str], Histogram] = {}

    def timed(self, template: str, handler: Handler) -> Handler:
        perf_counter = self.perf_counter  # held: the plugin path's cost

        @functools.wraps(handler)
        async def timed(request: web.Request) -> web.StreamResponse:
            start = perf_counter()
            try:
                return await handler(request)
            finally:
                self.observe(template, request.method, perf_counter() - start)

        return timed

    def observe(self, template: str, method: str, seconds: float) -> None:
        # `labels()` takes a lock and builds a key on every call: the plugin path, at tens
        # of thousands of requests a second, finds its series here instead.
        found = self._series.get((template, method))
        if found is None:
            found = self._series[template, method] = self._latency.labels(template, method)
        found.observe(seconds)


class AdapterCollector(Collector):
    """Reads the adapter's one snapshot (`Adapter.stats`) and the HTTP layer's counts at
    scrape time; before start-up it yields nothing."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._capped: set[str] = set()  # label keys whose values passed the cap, once said

    def _by_label(self, counts: Mapping[tuple[str, str, str], int]) -> Metric:
        """FRPA_METRIC_LABELS' gauge: the LABEL_VALUES values of each key with the most
        nodes; the nodes of the others summed under `value="__other__"`."""
        gauge = GaugeMetricFamily(
            "frpa_nodes_by_label",
            "Nodes by status and the value of a label key of FRPA_METRIC_LABELS",
            labels=["key", "value", "status"],
        )
        by_key: dict[str, Counter[str]] = {}
        for (key, value, _), count in counts.items():
            by_key.setdefault(key, Counter())[value] += count
        for key, values in sorted(by_key.items()):
            kept = {value for value, _ in values.most_common(LABEL_VALUES)}
            if len(values) > LABEL_VALUES and key not in self._capped:
                self._capped.add(key)
                logger.warning(
                    "label %s has %d values: the metric shows the %d with the most nodes, "
                    'the others as value="__other__"',
                    key,
                    len(values),
                    LABEL_VALUES,
                )
            shown: Counter[tuple[str, str]] = Counter()
            for (each, value, status), count in counts.items():
                if each == key:
                    shown[value if value in kept else "__other__", status] += count
            for (value, status), count in sorted(shown.items()):
                gauge.add_metric([key, value, status], count)
        return gauge

    def _readiness(self, stats: Stats) -> Iterator[Metric]:
        """What the alerts on readiness read."""
        yield GaugeMetricFamily(
            "frpa_store_backlog",
            "Node changes waiting to be stored",
            value=stats.store_backlog,
        )
        yield GaugeMetricFamily(
            "frpa_ready",
            "1 while /readyz answers 200: the store keeps what is written",
            value=int(stats.store_problem is None),
        )
        if (tls := self._state.tls) is not None:
            yield GaugeMetricFamily(
                "frpa_tls_certificate_expiry_timestamp_seconds",
                "When the HTTPS certificate served stops being valid, Unix time",
                value=tls.expires_at,
            )

    def collect(self) -> Iterator[Metric]:
        if not self._state.adapter.opened:
            return
        stats = self._state.adapter.stats()
        nodes = GaugeMetricFamily(
            "frpa_nodes",
            "Nodes by status and frps (its name; the address for one this adapter does not serve)",
            labels=["status", "frps"],
        )
        for (status, name), count in sorted(stats.nodes.items()):
            nodes.add_metric([status, name], count)
        yield nodes
        if stats.nodes_by_label is not None:
            yield self._by_label(stats.nodes_by_label)
        requests = CounterMetricFamily(
            "frpa_plugin_requests", "frps plugin requests by op and result", labels=["op", "result"]
        )
        for (op, result), count in sorted(stats.plugin_requests.items()):
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
        for kind, count in sorted(stats.plugin_unhandled.items()):
            unhandled.add_metric([kind], count)
        yield unhandled
        writes = CounterMetricFamily("frpa_store_writes", "Node writes stored", labels=["backend"])
        writes.add_metric([stats.backend], stats.store_writes)
        yield writes
        failures = CounterMetricFamily(
            "frpa_store_write_failures", "Node writes failed (and queued again)", labels=["backend"]
        )
        failures.add_metric([stats.backend], stats.store_write_failures)
        yield failures
        yield from self._readiness(stats)
        yield GaugeMetricFamily(
            "frpa_leader",
            "1 on the replica that runs reconciliation and heartbeat expiry",
            value=int(stats.leading),
        )
        yield CounterMetricFamily(
            "frpa_stalls",
            "Times the adapter itself was stalled (stopped, frozen) long enough to hold off "
            "heartbeat expiry",
            value=stats.stalls,
        )
        restarts = CounterMetricFamily(
            "frpa_task_restarts",
            "Background tasks started again after they failed, by task",
            labels=["task"],
        )
        for task, count in sorted(stats.task_restarts.items()):
            restarts.add_metric([task], count)
        yield restarts
        yield CounterMetricFamily(
            "frpa_audit_write_failures",
            "Audit records that could not be written (a start refuses its action)",
            value=self._state.audit.failures,
        )
        yield GaugeMetricFamily(
            "frpa_expiry_sweep_seconds",
            "How long the last heartbeat expiry sweep took",
            value=stats.expiry_sweep_seconds,
        )
        yield CounterMetricFamily(
            "frpa_heartbeat_expiries",
            "Nodes set offline because their Pings stopped",
            value=stats.heartbeat_expiries,
        )
        transitions = CounterMetricFamily(
            "frpa_node_transitions",
            "Nodes' status changes made by this replica, by the status reached and why",
            labels=["status", "reason"],
        )
        for (status, reason), count in sorted(stats.transitions.items()):
            transitions.add_metric([status, reason], count)
        yield transitions
        yield CounterMetricFamily(
            "frpa_node_labels_skipped",
            "Malformed labels in frpc's metadatas.labels, skipped (the node is let in)",
            value=stats.labels_skipped,
        )
        yield from _ssh(stats)
        slow = CounterMetricFamily(
            "frpa_slow_readers_dropped",
            "Clients dropped for taking nothing of an answer for FRPA_SLOW_READER_TIMEOUT, "
            "by route template",
            labels=["route"],
        )
        for route, count in sorted(self._state.slow_readers.items()):
            slow.add_metric([route], count)
        yield slow
        notifications = CounterMetricFamily(
            "frpa_notifications",
            "Notification messages by destination (dingtalk, webhook) and result: sent, or "
            "failed (tried again)",
            labels=["destination", "result"],
        )
        for (destination, result), count in stats.notifications.items():
            notifications.add_metric([destination, result], count)
        yield notifications
        up = GaugeMetricFamily(
            "frpa_frps_up",
            "1 while frps answers (its dashboard, else its bind port) or calls the plugin, 0 "
            "from the first probe it leaves unanswered (FRPA_FRPS_DOWN_AFTER=0: not watched)",
            labels=["frps"],
        )
        for name, frps in stats.frps.items():
            if frps.watched:
                up.add_metric([name], int(frps.reachable))
        yield up
        yield from _reconciliation(stats)


def _ssh(stats: Stats) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "frpa_ssh_shell_sessions", "Shell sessions open on nodes", value=stats.shells_active
    )
    execs = CounterMetricFamily(
        "frpa_ssh_exec_calls",
        "Commands run on nodes, by result (ok, failed, timeout, error)",
        labels=["result"],
    )
    for result in ("ok", "failed", "timeout", "error"):
        execs.add_metric([result], stats.exec_results[result])
    yield execs
    connections = GaugeMetricFamily(
        "frpa_ssh_connections",
        "SSH connections to nodes kept open, by state (busy: a channel on it; idle)",
        labels=["state"],
    )
    for state, count in zip(("busy", "idle"), stats.ssh_connections, strict=True):
        connections.add_metric([state], count)
    yield connections
    leases = CounterMetricFamily(
        "frpa_ssh_connection_uses",
        "Uses of an SSH connection by an exec, a file, a shell or a forward, by whether it "
        "was dialled for it or warm already",
        labels=["connection"],
    )
    for kind, count in zip(("dialled", "warm"), stats.ssh_dials, strict=True):
        leases.add_metric([kind], count)
    yield leases


def _reconciliation(stats: Stats) -> Iterator[Metric]:
    reconciled = [(name, frps.reconciliation) for name, frps in stats.frps.items()]
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
        for frps, reconciliation in reconciled:
            if reconciliation:
                family.add_metric([frps], getattr(reconciliation, attribute))
        yield family
