"""`Stats`: the adapter's counts and states at one moment, as `/metrics` and `/readyz`
show them (both read this one snapshot, so they cannot tell different stories)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from nodes.supervisor import TaskStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class FrpsStats:
    watched: bool  # its liveness is probed (FRPA_FRPS_DOWN_AFTER > 0)
    reachable: bool
    unreachable_since: datetime | None
    down: bool  # unreachable past FRPA_FRPS_DOWN_AFTER: its nodes offline
    probe_error: str | None
    # With a dashboard only: its reconciliations.
    reconciliation: ReconcileStats | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileStats:
    runs: int
    corrections: int
    failures: int
    last_error: str | None
    last_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    nodes: Counter[tuple[str, str]]  # (status, frps name) -> nodes; every frps served listed
    # (label key, value, status) -> nodes, for FRPA_METRIC_LABELS' keys; None without them.
    nodes_by_label: Mapping[tuple[str, str, str], int] | None
    plugin_requests: Counter[tuple[str, str]]  # (op, result)
    plugin_unhandled: Counter[str]  # kind; every kind listed
    backend: str  # kubernetes or sqlite
    loaded: bool  # the stored nodes are in memory
    store_writes: int
    store_write_failures: int
    store_failing: bool
    store_backlog: int
    store_problem: str | None  # why writes would not last: not ready
    leading: bool
    stalls: int
    expiry_sweep_seconds: float
    heartbeat_expiries: int
    transitions: Counter[tuple[str, str]]  # (status to, reason) -> changes made here
    labels_skipped: int  # malformed labels frpc declared
    tasks: Mapping[str, TaskStatus]
    task_restarts: Counter[str]  # every task that ran listed
    shells_active: int
    exec_results: Counter[str]  # ok, failed, timeout, error
    ssh_connections: tuple[int, int]  # (busy, idle) warm connections
    ssh_dials: tuple[int, int]  # (opened, reused) since start
    notifications: Counter[tuple[str, str]]  # (destination, result)
    frps: Mapping[str, FrpsStats]  # by name, in name order
