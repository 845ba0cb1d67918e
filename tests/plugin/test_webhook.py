"""The frps plugin endpoint, driven with the payloads frps 0.65 sends, on a real SQLite store.

Where frps's dashboard matters, a small aiohttp server on 127.0.0.1 plays it, answering
as frps 0.65 does (JSON labelled text/plain, 404 "no proxy info found").
"""

from __future__ import annotations

import copy
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.app import create_app
from api.state import STATE
from plugin.tracker import (
    _PORT_LOOKUP_ATTEMPTS,
    _PORT_LOOKUP_DELAY,
    _RECOVERY_RETRY_SECONDS,
    LOGIN_MEMORY_SECONDS,
)
from tests.clock import FakeClock
from tests.support import (
    FakeDashboard,
    app_with_dashboard,
    clock_of,
    close_proxy,
    eventually,
    login,
    new_proxy,
    online,
    ping,
    plugin_body,
    settings_for,
    user,
)

Client = TestClient[web.Request, web.Application]
NM = "nodemaintenances-abc123"
GRACE = settings_for(Path()).close_grace_period


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
def dashboard() -> FakeDashboard:
    return FakeDashboard()


@pytest.fixture
async def client(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> Client:
    return await aiohttp_client(create_app(settings_for(tmp_path), clock=FakeClock()))


@pytest.fixture
async def client_with_dashboard(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    dashboard: FakeDashboard,
) -> Client:
    # Reconciliation runs once, at start-up: these tests are about events.
    return await app_with_dashboard(
        tmp_path,
        aiohttp_client,
        aiohttp_server,
        dashboard,
        clock=FakeClock(),
        reconcile_interval=86400,
    )


async def send(client: Client, body: object) -> dict[str, Any]:
    resp = await client.post("/frps/handler", json=body, params={"version": "0.1.0"})
    assert resp.status == 200
    answer: dict[str, Any] = await resp.json()
    assert answer["unchange"] is True
    return answer


async def allowed(client: Client, body: object) -> None:
    assert await send(client, body) == {"reject": False, "unchange": True}


async def nm(client: Client, name: str = NM) -> dict[str, Any] | None:
    resp = await client.get(f"/api/v1/nodes/{name}")
    if resp.status == 404:
        return None
    assert resp.status == 200
    obj: dict[str, Any] = await resp.json()
    return obj


def status_of(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else str(obj["status"]["services"][0]["status"])


def becomes(client: Client, status: str, name: str = NM) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return status_of(await nm(client, name)) == status

    return check


async def settled(client: Client) -> None:
    await client.app[STATE].adapter.writer.drained()


async def test_ssh_new_proxy_makes_the_node_online_with_its_port_and_login_details(
    client: Client,
) -> None:
    await allowed(client, login())
    await allowed(client, new_proxy(port=16022))
    await eventually(becomes(client, "online"))
    obj = await nm(client)
    assert obj is not None
    assert obj["spec"]["services"] == [
        {
            "name": "ssh-abc123",
            "type": "ssh",
            "uniqueID": "abc123",
            "proxyPort": "16022",
            "frpServerIpAddress": "203.0.113.7",
        }
    ]
    assert obj["spec"]["nodeName"] == "node-abc123"
    assert obj["status"]["conditions"][0]["status"] is True
    assert obj["status"]["bindStatus"] == {
        "phase": "Unbound",
        "nodeDeploymentReference": "",
        "timeStamp": "",
    }
    assert obj["status"]["clientAddress"] == "198.51.100.9:57098"
    assert obj["status"]["frpcVersion"] == "0.65.0"
    assert obj["status"]["runId"] == "r1"


async def test_what_a_login_told_is_forgotten_after_a_while(client: Client) -> None:
    await allowed(client, login())
    await clock_of(client).advance(LOGIN_MEMORY_SECONDS)
    await allowed(client, login(name="n2", unique_id="def456"))  # prunes the first
    await allowed(client, new_proxy())
    await eventually(becomes(client, "online"))
    obj = await nm(client)
    assert obj is not None
    assert obj["status"]["clientAddress"] == ""


async def test_login_alone_stores_nothing(client: Client) -> None:
    await allowed(client, login())
    await settled(client)
    assert await nm(client) is None


async def test_close_proxy_makes_the_node_offline_after_the_grace_period(client: Client) -> None:
    await allowed(client, new_proxy())
    await eventually(becomes(client, "online"))
    await clock_of(client).advance(GRACE)  # past the grace period since the NewProxy
    await allowed(client, close_proxy())
    assert status_of(await nm(client)) == "online"
    await clock_of(client).advance(GRACE)
    await eventually(becomes(client, "offline"))
    obj = await nm(client)
    assert obj is not None
    assert obj["status"]["reason"] == "CloseProxy"
    assert obj["status"]["conditions"][0] == {
        "name": "unmaintainable",
        "status": False,
        "timeStamp": obj["status"]["lastTransitionTime"],
    }


async def test_a_new_proxy_within_the_grace_period_keeps_the_node_online(client: Client) -> None:
    await allowed(client, new_proxy(run_id="r1"))
    await clock_of(client).advance(GRACE)
    await allowed(client, close_proxy(run_id="r1"))
    await allowed(client, new_proxy(run_id="r1", port=16023))
    await clock_of(client).advance(3 * GRACE)
    await settled(client)
    obj = await nm(client)
    assert status_of(obj) == "online"
    assert obj is not None
    assert obj["spec"]["services"][0]["proxyPort"] == "16023"
    assert client.app[STATE].adapter.writer.writes == 2  # never written offline in between


def relogin(run_id: str) -> dict[str, Any]:
    """frpc logging in again after its control was cut: it keeps its run_id."""
    body = login()
    body["content"]["run_id"] = run_id
    return body


async def test_without_a_dashboard_a_close_right_behind_a_relogins_new_proxy_is_stale(
    client: Client,
) -> None:
    await allowed(client, relogin("r1"))
    await allowed(client, new_proxy(run_id="r1"))
    await allowed(client, close_proxy(run_id="r1"))  # the replaced control's, late
    await clock_of(client).advance(3 * GRACE)
    await settled(client)
    assert status_of(await nm(client)) == "online"


async def test_without_a_dashboard_a_fresh_frpc_that_leaves_at_once_goes_offline(
    client: Client,
) -> None:
    await allowed(client, login())  # a new frpc process: no run_id yet
    await allowed(client, new_proxy(run_id="r1"))
    await allowed(client, close_proxy(run_id="r1"))  # within the grace period
    await clock_of(client).advance(GRACE)
    await eventually(becomes(client, "offline"), what="offline after the grace")


async def test_without_a_dashboard_a_close_of_an_earlier_run_is_stale(client: Client) -> None:
    await allowed(client, login())
    await allowed(client, new_proxy(run_id="r2"))
    await clock_of(client).advance(GRACE)  # past the grace period: only the run_id can tell
    await allowed(client, close_proxy(run_id="r1"))  # the old process's, very late
    await clock_of(client).advance(3 * GRACE)
    await settled(client)
    assert status_of(await nm(client)) == "online"


async def test_a_close_that_frps_contradicts_leaves_the_node_online(
    client_with_dashboard: Client, dashboard: FakeDashboard
) -> None:
    client = client_with_dashboard
    dashboard.proxies["node1.ssh"] = online(16022)
    await allowed(client, new_proxy(run_id="r1"))
    await allowed(client, close_proxy(run_id="r1"))
    await clock_of(client).advance(3 * GRACE)
    await settled(client)
    assert dashboard.lookups == 2  # the NewProxy's port, the CloseProxy's confirmation
    assert status_of(await nm(client)) == "online"


async def test_a_close_that_frps_confirms_makes_the_node_offline(
    client_with_dashboard: Client, dashboard: FakeDashboard
) -> None:
    client = client_with_dashboard
    dashboard.proxies["node1.ssh"] = online(16022)
    await allowed(client, new_proxy())
    await eventually(becomes(client, "online"))
    dashboard.proxies["node1.ssh"] = {"status": "offline", "conf": None}
    await allowed(client, close_proxy())
    await clock_of(client).advance(GRACE)
    await eventually(becomes(client, "offline"))


async def test_a_random_remote_port_is_read_from_the_dashboard(
    client_with_dashboard: Client, dashboard: FakeDashboard
) -> None:
    client = client_with_dashboard
    await allowed(client, new_proxy(port=None))
    await eventually(lambda: _true(dashboard.lookups == 1))
    await clock_of(client).advance(2.5 * _PORT_LOOKUP_DELAY)  # frps binds after we answer
    assert dashboard.lookups == 3  # 404 meanwhile
    assert await nm(client) is None
    dashboard.proxies["node1.ssh"] = online(34567)
    await clock_of(client).advance(_PORT_LOOKUP_DELAY)
    await eventually(becomes(client, "online"))
    obj = await nm(client)
    assert obj is not None
    assert obj["spec"]["services"][0]["proxyPort"] == "34567"


async def test_proxies_other_than_ssh_are_ignored(client: Client) -> None:
    await allowed(client, new_proxy(proxy="web", port=18080))
    await allowed(client, new_proxy(proxy="ssh", port=16022, proxy_type="udp"))
    await settled(client)
    assert await nm(client) is None


async def test_an_ssh_proxy_is_recognised_by_its_role_meta_and_by_ssh_unique_id(
    client: Client,
) -> None:
    await allowed(client, new_proxy(proxy="shell", metas={"role": "ssh"}))
    await eventually(becomes(client, "online"))
    await clock_of(client).advance(GRACE)
    await allowed(client, close_proxy(proxy="shell"))
    await clock_of(client).advance(GRACE)
    await eventually(becomes(client, "offline"))
    await allowed(client, new_proxy(name="n2", unique_id="def456", proxy="ssh-def456"))
    await eventually(becomes(client, "online", "nodemaintenances-def456"))


def frpc_role_ssh(body: dict[str, Any]) -> dict[str, Any]:
    """`metadatas.role = "ssh"` at the top of frpc.toml: frps sends it in the user's metas."""
    body["content"]["user"]["metas"]["role"] = "ssh"
    return body


MISSED_SSH = [
    ("named sshd", new_proxy(proxy="sshd"), 'write name = "ssh" (or "ssh-abc123")'),
    ("named node1-sshd", new_proxy(proxy="node1-sshd"), 'write name = "ssh" (or "ssh-abc123")'),
    ("on remote port 22", new_proxy(proxy="shell", port=22), 'write name = "ssh"'),
    (
        "with role SSH",
        new_proxy(proxy="shell", metas={"role": "SSH"}),
        'write metadatas.role = "ssh" (not "SSH")',
    ),
    (
        "of a frpc whose role is ssh",
        frpc_role_ssh(new_proxy(proxy="shell")),
        'move metadatas.role = "ssh" from the top',
    ),
]


@pytest.mark.parametrize(
    ("body", "fix"), [(b, f) for _, b, f in MISSED_SSH], ids=[i for i, _, _ in MISSED_SSH]
)
async def test_a_proxy_that_looks_like_ssh_but_is_not_says_the_fix_once_per_frpc_run(
    client: Client, caplog: pytest.LogCaptureFixture, body: dict[str, Any], fix: str
) -> None:
    caplog.set_level(logging.INFO, logger="plugin.webhook")
    body = copy.deepcopy(body)
    name = body["content"]["proxy_name"].removeprefix("node1.")
    await allowed(client, body)
    await allowed(client, body)  # a re-login keeps the run_id
    body["content"]["user"]["run_id"] = "r2"  # frpc restarted
    await allowed(client, body)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    for warning in warnings:
        assert f'the [[proxies]] entry with name = "{name}"' in warning
        assert fix in warning
    assert "run r1" in warnings[0]
    assert "run r2" in warnings[1]
    assert client.app[STATE].adapter.plugins.endpoints["default"].unhandled == {
        "unrecognised_ssh": 3
    }
    metric = client.app[STATE].metrics.get_sample_value(
        "frpa_plugin_unhandled_total", {"kind": "unrecognised_ssh"}
    )
    assert metric == 3
    await settled(client)
    assert await nm(client) is None  # frpc-level role is not taken: it names no proxy


async def test_proxies_that_do_not_look_like_a_missing_ssh_proxy_are_not_warned_of(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plugin.webhook")
    await allowed(client, new_proxy(proxy="web", port=18080))
    await allowed(client, new_proxy(proxy="ssh", port=16022, proxy_type="udp"))
    await allowed(client, new_proxy())  # the node's SSH proxy, then another of this run
    await allowed(client, new_proxy(proxy="ssh-admin", port=16023))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert client.app[STATE].adapter.plugins.endpoints["default"].unhandled == {"not_ssh": 3}


async def test_without_a_unique_id_meta_the_frps_user_is_the_unique_id(client: Client) -> None:
    body = new_proxy(name="edge-7")
    body["content"]["user"]["metas"] = {}
    await allowed(client, body)
    await eventually(becomes(client, "online", "nodemaintenances-edge-7"))


async def test_work_and_user_connections_are_accepted_without_a_store_write(
    client: Client,
) -> None:
    await allowed(client, plugin_body("NewWorkConn", {"user": {}, "run_id": "r1"}))
    await allowed(client, plugin_body("NewUserConn", {"user": {}, "proxy_name": "node1.ssh"}))
    await settled(client)
    assert client.app[STATE].adapter.writer.writes == 0


async def test_pings_persist_the_heartbeat_at_most_once_per_interval(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(
        create_app(settings_for(tmp_path, heartbeat_persist_interval=3600))
    )
    await allowed(client, new_proxy())
    await settled(client)
    for _ in range(20):
        await allowed(client, ping())
    await settled(client)
    obj = await nm(client)
    assert obj is not None
    assert obj["status"]["lastHeartbeatTime"] != ""
    assert (
        client.app[STATE].adapter.writer.writes == 2
    )  # the NewProxy, then the first heartbeat only


async def test_repeated_identical_pings_each_reach_the_node(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path, heartbeat_persist_interval=0)))
    await allowed(client, new_proxy())
    await settled(client)
    writes = client.app[STATE].adapter.writer.writes
    for _ in range(3):
        await allowed(client, ping())  # the same bytes each time, as frps sends them
        await settled(client)
    assert client.app[STATE].adapter.writer.writes == writes + 3


def metas_null(op: str) -> dict[str, Any]:
    """What frps sends for a frpc without `metadatas` (frp's default): `"metas": null`."""
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "Login": login,
        "NewProxy": new_proxy,
        "Ping": ping,
    }
    body = makers[op]()
    content = body["content"]
    holder: dict[str, Any] = content if op == "Login" else content["user"]
    holder["metas"] = None
    holder["user"] = "abc123"
    if op == "NewProxy":
        content["proxy_name"] = "abc123.ssh"
        content["metas"] = None
    return body


UNHANDLED: list[tuple[str, object, str]] = [
    ("malformed JSON", b"{not json", "unreadable"),
    ("deep nesting", b"[" * 200_000, "unreadable"),
    ("a JSON array", [1, 2], "unreadable"),
    ("unknown op", plugin_body("Logout", {}), "unreadable"),
    ("no content", {"version": "0.1.0", "op": "Login"}, "unreadable"),
    ("wrong type", plugin_body("Ping", {"user": {"user": 5}}), "unreadable"),
    ("metas not strings", plugin_body("Ping", {"user": {"metas": {"a": 1}}}), "unreadable"),
    ("port out of range", new_proxy(port=70000), "unreadable"),
    ("NewProxy of nobody", plugin_body("NewProxy", {"user": {}}), "unidentified"),
    ("CloseProxy of nobody", plugin_body("CloseProxy", {"proxy_name": "a"}), "unidentified"),
    ("invalid unique_id", login(unique_id="Not_Valid"), "unidentified"),
    ("no user, no unique_id", login(name="", unique_id=None), "unidentified"),
    ("too long unique_id", new_proxy(unique_id="a" * 240), "unidentified"),
    ("an http proxy", new_proxy(proxy="web", proxy_type="http"), "not_ssh"),
    ("a misnamed SSH proxy", new_proxy("node2", "def456", proxy="sshd"), "unrecognised_ssh"),
]


@pytest.mark.parametrize(
    ("body", "kind"), [(b, k) for _, b, k in UNHANDLED], ids=[i for i, _, _ in UNHANDLED]
)
async def test_what_the_adapter_cannot_use_is_allowed_counted_and_logged_once(
    client: Client, caplog: pytest.LogCaptureFixture, body: object, kind: str
) -> None:
    caplog.set_level(logging.INFO, logger="plugin.webhook")
    await allowed(client, new_proxy())
    await settled(client)
    before = await nm(client)
    endpoint = client.app[STATE].adapter.plugins.endpoints["default"]
    for _ in range(3):
        if isinstance(body, bytes):
            resp = await client.post("/frps/handler", data=body)
            assert await resp.json() == {"reject": False, "unchange": True}
        else:
            await allowed(client, body)
    assert endpoint.unhandled[kind] == 3
    said = [r for r in caplog.records if r.name == "plugin.webhook"]
    assert len(said) == 1, said
    assert kind in said[0].getMessage()
    await settled(client)
    assert await nm(client) == before
    await allowed(client, ping())  # still serving


@pytest.mark.parametrize("op", ["Login", "NewProxy", "Ping"])
async def test_metas_null_is_a_frpc_without_metadatas(client: Client, op: str) -> None:
    await allowed(client, metas_null(op))
    assert client.app[STATE].adapter.plugins.endpoints["default"].unhandled == {}


async def test_a_frpc_without_metadatas_is_identified_by_its_user(client: Client) -> None:
    await allowed(client, metas_null("NewProxy"))
    await eventually(becomes(client, "online"), what="node named by its user online")


@pytest.mark.parametrize(
    ("body", "encoding"),
    [(b"not gzip at all", "gzip"), (b"[" * 100_000 + b"]" * 100_000, "deflate")],
    ids=["gzip", "a large deflate"],
)
async def test_a_compressed_body_is_allowed_as_unreadable_at_once_and_logged_as_no_error(
    client: Client, caplog: pytest.LogCaptureFixture, body: bytes, encoding: str
) -> None:
    """frps sends bodies as they are; aiohttp decompressing one hung it, or logged an
    error for each."""
    resp = await client.post("/frps/handler", data=body, headers={"Content-Encoding": encoding})
    assert resp.status == 200
    assert await resp.json() == {"reject": False, "unchange": True}
    assert client.app[STATE].adapter.plugins.endpoints["default"].unhandled["unreadable"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def lock_database(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / "frpa.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    return db


@pytest.mark.parametrize(("mode", "rejected"), [("open", False), ("closed", True)])
async def test_the_failure_mode_decides_whether_a_failing_store_rejects_nodes(
    tmp_path: Path, aiohttp_client: AiohttpClient, mode: str, rejected: bool
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path, plugin_failure_mode=mode)))
    await client.app[STATE].adapter.writer.drained()
    lock = lock_database(tmp_path)
    try:
        await allowed(client, new_proxy())
        writer = client.app[STATE].adapter.writer

        async def failing() -> bool:
            return writer.failing

        await eventually(failing, what="store failure noticed")
        answer = await send(client, login(name="n2", unique_id="def456"))
        assert answer["reject"] is rejected
        if rejected:
            assert "cannot store node state" in answer["reject_reason"]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    await eventually(becomes(client, "online"), what="queued write stored after recovery")


async def test_forged_calls_change_nothing_frps_does_not_back(
    client_with_dashboard: Client, dashboard: FakeDashboard
) -> None:
    """Without a plugin secret anyone may post plugin calls; frps's dashboard is the truth."""
    client = client_with_dashboard
    dashboard.proxies["node1.ssh"] = online(16022)
    await allowed(client, new_proxy())
    await eventually(becomes(client, "online"), what="node1 confirmed")
    before = await nm(client)

    forged_closes = [close_proxy(name="", proxy="ssh"), close_proxy(proxy="gone")]
    for body in forged_closes:
        body["content"]["proxy_name"] = body["content"]["proxy_name"].removeprefix(".")
        await allowed(client, body)
    # Another "node" claims node1's SSH proxy (by its role), or one frps never had.
    thief = new_proxy("evil", "evil", proxy="x", port=16022, metas={"role": "ssh"})
    thief["content"]["proxy_name"] = "node1.ssh"
    await allowed(client, thief)
    await allowed(client, new_proxy("ghost", "ghost", port=16099))
    # Every port lookup runs out; every close is judged.
    await clock_of(client).advance(_PORT_LOOKUP_ATTEMPTS * _PORT_LOOKUP_DELAY + GRACE)
    await settled(client)
    assert await nm(client) == before
    assert await nm(client, "nodemaintenances-evil") is None
    assert await nm(client, "nodemaintenances-ghost") is None


@pytest.mark.parametrize("sign", ["Ping", "NewWorkConn", "an http NewProxy"])
async def test_a_sign_of_life_from_a_node_not_held_online_asks_frps_and_recovers_it(
    client_with_dashboard: Client,
    dashboard: FakeDashboard,
    sign: str,
) -> None:
    client = client_with_dashboard
    bodies = {
        "Ping": ping(),
        "NewWorkConn": plugin_body("NewWorkConn", {"user": user(), "run_id": "r1"}),
        "an http NewProxy": new_proxy(proxy="web", proxy_type="http", port=None),
    }
    await allowed(client, bodies[sign])  # frps does not have its SSH proxy: nothing
    await eventually(lambda: _true(dashboard.lookups == 2))  # node1.ssh, node1.ssh-abc123
    await settled(client)
    assert await nm(client) is None
    lookups = dashboard.lookups
    await allowed(client, bodies[sign])
    assert dashboard.lookups == lookups  # not asked again so soon

    dashboard.proxies["node1.ssh-abc123"] = online(16030)
    await clock_of(client).advance(_RECOVERY_RETRY_SECONDS)
    await allowed(client, bodies[sign])
    await eventually(becomes(client, "online"), what="recovered from frps's view")
    obj = await nm(client)
    assert obj is not None
    assert obj["status"]["reason"] == "Recovered"
    assert obj["status"]["proxyName"] == "node1.ssh-abc123"
    assert obj["spec"]["services"][0]["proxyPort"] == "16030"
