"""Property tests: whatever frps (or anyone reaching the plugin port) sends, and whatever a
REST caller sends, the adapter answers with a decision or a validation error, never a crash,
and a rejected plugin call changes no node."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from nodes.clock import Clock
from nodes.liveness import FrpsLiveness
from nodes.registry import NodeRegistry
from nodes.sqlite import SqliteStore
from nodes.writer import NodeWriter
from plugin.admission import Admission
from plugin.tracker import SshProxyTracker
from plugin.webhook import PluginEndpoint
from schemas.rest import (
    BatchExecSchema,
    ExecSchema,
    FrpCreateSchema,
    FrpUpdateSchema,
    OriginalExecSchema,
    ResizeSchema,
    ShellQuerySchema,
)

RUNS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["", "edge", "n1", "Not Valid", "a" * 300, "x.y", "ssh"])
metas = st.dictionaries(
    st.sampled_from(["unique_id", "token", "role", "other"]), names | st.text(max_size=8)
)
frpc_user = st.fixed_dictionaries(
    {"user": names, "metas": metas | json_values, "run_id": st.text(max_size=8) | json_values}
)
contents = st.fixed_dictionaries(
    {},
    optional={
        "user": frpc_user | names | json_values,
        "metas": metas | json_values,
        "proxy_name": st.sampled_from(["ssh", "n1.ssh", "n1.ssh-n1", "", "web"]) | json_values,
        "proxy_type": st.sampled_from(["tcp", "http", ""]) | json_values,
        "remote_port": st.integers(-5, 70000) | json_values,
        "run_id": st.text(max_size=8),
        "client_address": st.text(max_size=20),
        "version": st.text(max_size=8),
    },
)
ops = st.sampled_from(
    ["Login", "NewProxy", "CloseProxy", "Ping", "NewWorkConn", "NewUserConn", "", "Nope"]
)
envelopes = st.fixed_dictionaries(
    {"op": ops | json_values, "content": contents | json_values},
    optional={"version": st.text(max_size=8)},
)


@contextlib.asynccontextmanager
async def endpoint(
    tmp_path: Path, admission: Admission
) -> AsyncIterator[tuple[PluginEndpoint, NodeRegistry]]:
    """An endpoint on a running loop (a CloseProxy starts a task), its tasks ended after."""
    store = SqliteStore(str(tmp_path / "p.db"))
    registry = NodeRegistry(NodeWriter(store), heartbeat_persist_interval=30)
    clock = Clock()
    tracker = SshProxyTracker(
        registry,
        frps_address="203.0.113.7",
        unique_id_meta_key="unique_id",
        close_grace_period=0.1,
        dashboard=None,
        clock=clock,
        admission=admission,
    )
    liveness = FrpsLiveness("default", "203.0.113.7", watched=False)
    try:
        yield (
            PluginEndpoint(
                tracker,
                liveness=liveness,
                clock=clock,
                fail_closed=False,
                store_failing=lambda: False,
            ),
            registry,
        )
    finally:
        await tracker.close()
        await store.close()


async def test_any_plugin_request_gets_a_decision_and_a_refusal_changes_nothing(
    tmp_path: Path,
) -> None:
    strict = Admission(require_registered=True, node_tokens=True, ports=range(16000, 17000))
    async with endpoint(tmp_path, strict) as (plugin, registry):
        decide_any(plugin, registry)


def decide_any(plugin: PluginEndpoint, registry: NodeRegistry) -> None:
    seen = {"rejected": 0, "allowed": 0}

    @RUNS
    @given(body=envelopes | json_values, raw=st.booleans(), junk=st.binary(max_size=64))
    def check(body: Any, raw: bool, junk: bytes) -> None:
        before = registry.states()
        data = junk if raw else json.dumps(body).encode()
        reason = plugin.decide(data)
        assert reason is None or (isinstance(reason, str) and reason)
        if reason is not None:
            assert registry.states() == before
        seen["allowed" if reason is None else "rejected"] += 1

    check()
    assert seen["rejected"] > 0
    assert seen["allowed"] > 0


async def test_plugin_requests_without_admission_checks_never_crash_nor_err(
    tmp_path: Path,
) -> None:
    async with endpoint(tmp_path, Admission()) as (plugin, _):

        @RUNS
        @given(body=envelopes)
        def check(body: Any) -> None:
            reason = plugin.decide(json.dumps(body).encode())
            assert reason is None or isinstance(reason, str)

        check()
        assert plugin.unhandled["error"] == 0


REST_SCHEMAS: list[Schema] = [
    FrpCreateSchema(),
    FrpUpdateSchema(),
    OriginalExecSchema(),
    ExecSchema(),
    BatchExecSchema(),
    ShellQuerySchema(),
    ResizeSchema(),
]
rest_inputs = st.dictionaries(
    st.sampled_from(
        ["unique_id", "port", "status", "cmd", "timeout", "nodes", "concurrency", "cols",
         "rows", "encoding", "type", "frp_server_ip_address", "nm_name", "junk"]
    ),
    json_values,
)  # fmt: skip


@RUNS
@given(data=rest_inputs, which=st.integers(0, len(REST_SCHEMAS) - 1))
def test_rest_input_is_either_valid_or_a_validation_error(data: Any, which: int) -> None:
    try:
        outcome = REST_SCHEMAS[which].load(data)  # the input, valid
    except ValidationError as e:
        outcome = e.messages  # what is wrong with it, by field
    assert isinstance(outcome, dict)
