"""The Kubernetes backend against a Kubernetes API peer (kmock, extended in tests/kube.py)."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kmock._internal import enums
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from nodes.backend import Backend, open_backend
from nodes.clock import Clock
from nodes.kubernetes import cache, lease
from nodes.kubernetes.errors import (
    APIConflictError,
    ApiError,
    APIGoneError,
    APINotFoundError,
    api_errors,
)
from nodes.kubernetes.events import TransitionEvents
from nodes.kubernetes.store import KubernetesStore, connect
from nodes.kubernetes.writes import NodeWrites
from nodes.model import NAME_PREFIX, NodeChange, NodeState, UniqueId, apply_change
from nodes.registry import NodeRegistry
from nodes.store import NodeStore, StoreError
from nodes.supervisor import Supervisor
from nodes.writer import NodeWriter
from schemas.settings import Backoff
from tests.clock import FakeClock
from tests.kube import NM_RESOURCE, NodeMaintenanceEmulator, write_kubeconfig
from tests.support import BACKOFF, eventually

NM = "nodemaintenances-abc123"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def state(uid: str = "abc123", status: str = "online", port: int = 16022) -> NodeState:
    return apply_change(
        None,
        UniqueId(uid),
        NodeChange(
            reason="NewProxy" if status == "online" else "CloseProxy",
            at=datetime.now(UTC),
            status="online" if status == "online" else "offline",
            frps_address="203.0.113.7",
            remote_port=port,
        ),
    )


async def open_replica(
    *, event_min_interval: float = 30, clock: Clock | None = None
) -> KubernetesStore:
    """A store on the emulated API, as each adapter replica opens one."""
    backend = await open_kubernetes(event_min_interval=event_min_interval, clock=clock)
    assert isinstance(backend.store, KubernetesStore)
    return backend.store


async def open_kubernetes(
    *, identity: str = "replica", event_min_interval: float = 30, clock: Clock | None = None
) -> Backend:
    clock = clock or Clock()
    return await open_backend(
        "kubernetes",
        identity=identity,
        event_namespace="frp-adapter",
        event_min_interval=event_min_interval,
        supervisor=Supervisor(clock, BACKOFF),
        clock=clock,
    )


@pytest.fixture
async def store(kube: NodeMaintenanceEmulator) -> AsyncIterator[KubernetesStore]:
    store = await open_replica()
    yield store
    await store.close()


def nm_writes(kube: NodeMaintenanceEmulator) -> list[Any]:
    return [
        r
        for r in kube.requests
        if r.resource == NM_RESOURCE and r.action in (enums.action.CREATE, enums.action.UPDATE)
    ]


def events(kube: NodeMaintenanceEmulator) -> list[dict[str, Any]]:
    return [
        r.data
        for r in kube.requests
        if r.method == enums.method.POST and r.url.path.endswith("/events")
    ]


async def test_a_new_node_is_created_then_its_status_set_in_two_writes(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    await store.apply([state()])
    obj = kube.node_maintenances()[NM]
    assert obj["spec"]["services"][0]["proxyPort"] == "16022"
    assert obj["status"]["services"][0]["status"] == "online"
    assert obj["status"]["bindStatus"]["phase"] == "Unbound"
    create, status = nm_writes(kube)
    assert create.action == enums.action.CREATE
    assert "status" not in create.data
    assert status.url.path.endswith(f"/nodemaintenances/{NM}/status")
    for write in (create, status):  # made without the client's model layer, as it makes them
        assert write.headers["Authorization"] == "Bearer test-token"  # the kubeconfig's
        assert write.headers["User-Agent"].startswith("OpenAPI-Generator/")
        assert write.headers["Accept"] == "application/json"


async def test_a_create_the_api_refuses_fails_its_node_and_the_next_try_writes_it(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    kube.fail_writes = 1
    with pytest.raises(StoreError, match="HTTP 503") as raised:
        await store.apply([state()])
    assert raised.value.failed == frozenset([UniqueId("abc123")])
    await store.apply([state()])  # the next try writes it
    assert kube.node_maintenances()[NM]["status"]["services"][0]["status"] == "online"


async def test_a_status_change_is_one_merge_patch_of_the_status_subresource(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    await store.apply([state()])
    before = len(nm_writes(kube))
    await store.apply([state(status="offline")])
    (patch,) = nm_writes(kube)[before:]
    assert patch.url.path.endswith(f"/nodemaintenances/{NM}/status")
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    body = json.loads(patch.body)
    assert set(body) == {"metadata", "status"}
    assert body["metadata"]["resourceVersion"]
    assert "bindStatus" not in body["status"]  # another controller owns it once it exists
    assert body["status"]["conditions"][0]["status"] is False
    assert kube.node_maintenances()[NM]["status"]["services"][0]["status"] == "offline"


async def test_an_unchanged_state_costs_no_write(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    online = state()
    await store.apply([online])
    before = len(nm_writes(kube))
    await store.apply([online])
    assert len(nm_writes(kube)) == before


async def test_a_conflict_rereads_the_object_and_keeps_what_others_wrote(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    await store.apply([state()])
    # Another controller binds the node; our cache has not seen it (no watch event).
    obj = kube.objects[NM_RESOURCE, None, NM]
    obj.patch(
        {"metadata": {"resourceVersion": "999"}, "status": {"bindStatus": {"phase": "Bound"}}}
    )
    await store.apply([state(status="offline")])
    assert kube.conflicts == 1
    assert kube.node_maintenances()[NM]["status"]["bindStatus"]["phase"] == "Bound"
    assert kube.node_maintenances()[NM]["status"]["services"][0]["status"] == "offline"


@pytest.mark.parametrize("version", [None, "", "7" * 300])
def test_an_nm_kept_without_a_usable_resource_version_never_reads_as_our_echo(
    version: str | None,
) -> None:
    obj = {"metadata": {"name": NM, "resourceVersion": version}, "spec": {"hostName": "h"}}
    entry = cache._entry(obj)
    assert cache._parsed(entry) == obj
    assert cache._version(entry) is None
    assert cache._version_of(obj) is None  # the watch then keeps and tells what it saw
    kept = {"metadata": {"name": NM, "resourceVersion": "41"}}
    assert cache._version(cache._entry(kept)) == b"41" == cache._version_of(kept)


def test_an_nm_is_kept_without_the_api_servers_managed_fields() -> None:
    """More than half an NM's JSON, and nothing reads them."""
    fields = [{"manager": "frp-adapter", "fieldsV1": {"f:spec": {"f:hostName": {}}}}]
    metadata = {"name": NM, "resourceVersion": "7", "uid": "u", "managedFields": fields}
    kept = cache._parsed(cache._entry({"metadata": metadata, "spec": {"hostName": "h"}}))
    assert kept == {
        "metadata": {"name": NM, "resourceVersion": "7", "uid": "u"},
        "spec": {"hostName": "h"},
    }


async def api_answered_by(
    handler: Handler, tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> client.ApiClient:
    """A client of an API server that answers every request with `handler`."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    server = await aiohttp_server(app)
    monkeypatch.setenv(
        "KUBECONFIG", str(write_kubeconfig(tmp_path / "k", str(server.make_url(""))))
    )
    return await connect()


async def watch_failure(
    handler: Handler, tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> ApiError:
    """How a watch fails against an API server that answers with `handler`."""
    api = await api_answered_by(handler, tmp_path, aiohttp_server, monkeypatch)
    try:
        node_cache = cache.NodeCache(client.CustomObjectsApi(api), backoff=BACKOFF)
        with pytest.raises(ApiError) as failure:
            await node_cache._watch_from("1")
    finally:
        await api.close()
    return failure.value


async def test_an_answer_that_is_not_json_fails_the_write_as_an_api_error(
    tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def page(request: web.Request) -> web.Response:
        if request.method == "GET":  # the NM is looked up first: there is none
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.Response(text="<html>a proxy's page</html>", content_type="text/html")

    api = await api_answered_by(page, tmp_path, aiohttp_server, monkeypatch)
    objects = client.CustomObjectsApi(api)
    node_cache = cache.NodeCache(objects, backoff=BACKOFF)
    events_of = TransitionEvents(client.CoreV1Api(api), namespace="ns", min_interval=30)
    try:
        with pytest.raises(StoreError, match="not JSON") as raised:
            await NodeWrites(api, node_cache, events_of).apply([state()])
        assert raised.value.failed == frozenset([UniqueId("abc123")])
    finally:
        await events_of.close()
        await api.close()


@pytest.mark.parametrize(
    "line",
    [b"<html>a proxy's page</html>", b'{"type":"ADDED","object":"' + b"a" * 5 * 2**20],
    ids=["not JSON", "past the line limit"],
)
async def test_a_watch_line_that_cannot_be_read_fails_the_watch_as_an_api_error(
    tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch, line: bytes
) -> None:
    """Not JSON, or longer than the client reads as a line: the watch lists again, its
    task does not die."""

    async def watch(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse()
        await answer.prepare(request)
        await answer.write(line + b"\n")
        return answer

    failure = await watch_failure(watch, tmp_path, aiohttp_server, monkeypatch)
    assert str(failure).startswith(f"watching {cache.PLURAL} failed")


async def test_5xx_answers_are_retried_and_nothing_is_lost(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    writer = NodeWriter(store, retry=Backoff(0.01, 0.05))
    task = asyncio.create_task(writer.run())
    try:
        kube.fail_writes = 7
        for i in range(10):
            writer.submit(state(f"n{i}", port=20000 + i))
        await asyncio.wait_for(writer.drained(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    stored = kube.node_maintenances()
    assert sorted(stored) == sorted(f"nodemaintenances-n{i}" for i in range(10))
    assert all(o["status"]["services"][0]["status"] == "online" for o in stored.values())


async def test_a_failing_write_names_the_nodes_it_did_not_store(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    await store.apply([state("a1")])
    kube.fail_writes = 1
    with pytest.raises(StoreError) as failure:
        await store.apply([state("a1", status="offline")])
    assert failure.value.failed == frozenset([UniqueId("a1")])


async def edit_and_see(kube: NodeMaintenanceEmulator, store: NodeStore, *, what: str) -> None:
    """Edit NM's spec as `kubectl edit` would, and wait until `store` shows the edit."""
    async with kube.patch(
        f"/apis/edge.harmonycloud.cn/v1alpha1/nodemaintenances/{NM}",
        json={"spec": {"hostName": "edited-by-kubectl"}},
        headers={"Content-Type": "application/merge-patch+json"},
    ) as resp:
        assert resp.status == 200

    async def seen() -> bool:
        obj = await store.get(NM)
        return obj is not None and obj["spec"]["hostName"] == "edited-by-kubectl"

    await eventually(seen, what=what)


async def test_the_cache_sees_changes_made_by_others(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    await store.apply([state()])
    fetches = len([r for r in kube.requests if r.action == enums.action.FETCH])
    await edit_and_see(kube, store, what="watch event in the cache")
    list_requests = [r for r in kube.requests if r.action == enums.action.LIST]
    assert len(list_requests) == 1
    assert len([r for r in kube.requests if r.action == enums.action.FETCH]) == fetches


async def test_an_expired_watch_is_followed_by_a_fresh_list(
    kube: NodeMaintenanceEmulator,
) -> None:
    kube.expire_next_watch = True
    store = await open_replica()
    try:

        async def listed_twice() -> bool:
            return len([r for r in kube.requests if r.action == enums.action.LIST]) >= 2

        await eventually(listed_twice, what="a re-list after 410 Gone")
        await store.apply([state()])

        async def cached() -> bool:
            return await store.get(NM) is not None

        await eventually(cached)
    finally:
        await store.close()


async def test_the_fleet_is_listed_a_page_at_a_time(
    kube: NodeMaintenanceEmulator, store: KubernetesStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.apply([state(f"n{i}") for i in range(5)])
    monkeypatch.setattr(cache, "_PAGE", 2)
    listed = len([r for r in kube.requests if r.action == enums.action.LIST])
    another = await open_replica()
    try:
        names = [obj["metadata"]["name"] async for obj in another.list()]
        assert names == [f"{NAME_PREFIX}n{i}" for i in range(5)]
        # The watch lists, a page at a time; this list waits for it, and reads its pages.
        pages = [r for r in kube.requests if r.action == enums.action.LIST][listed:]
        assert [(r.params["limit"], r.params["continue"]) for r in pages] == [
            ("2", ""),  # none: from the first
            ("2", f"{NAME_PREFIX}n1"),
            ("2", f"{NAME_PREFIX}n3"),
        ]
    finally:
        await another.close()


async def test_the_cached_fleet_adds_nothing_a_full_collection_walks(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    await store.apply([state(f"n{i}") for i in range(3)])
    gc.collect()  # untracks what holds only untracked objects, for now
    await store.apply([state("n3")])  # a collection has not seen what this keeps
    assert store.cached(f"{NAME_PREFIX}n3") is not None
    assert not [o for o in gc.get_objects() if isinstance(o, dict) and f"{NAME_PREFIX}n1" in o]


async def test_a_list_the_watch_does_not_serve_in_time_reads_the_api_itself(
    kube: NodeMaintenanceEmulator, store: KubernetesStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.apply([state(f"n{i}") for i in range(3)])
    monkeypatch.setattr(cache, "_SYNC_WAIT_SECONDS", 0.1)
    api = await connect()
    unwatched = cache.NodeCache(client.CustomObjectsApi(api), backoff=BACKOFF)  # no watch feeds it
    try:
        names = [obj["metadata"]["name"] async for obj in unwatched.list()]
        assert names == [f"{NAME_PREFIX}n{i}" for i in range(3)]
    finally:
        await api.close()


async def test_a_watch_that_ends_is_opened_again_where_it_stopped_without_a_list(
    kube: NodeMaintenanceEmulator,
) -> None:
    kube.end_next_watch = True
    store = await open_replica()
    try:
        await store.apply([state()])

        def watches() -> list[Any]:
            return [r for r in kube.requests if r.action == enums.action.WATCH]

        async def watched_twice() -> bool:
            return len(watches()) >= 2

        await eventually(watched_twice, what="a second watch")
        first, second = watches()[:2]
        assert second.params["resourceVersion"] == first.params["resourceVersion"]
        assert len([r for r in kube.requests if r.action == enums.action.LIST]) == 1
        await edit_and_see(kube, store, what="a change seen through the second watch")
    finally:
        await store.close()


async def test_each_transition_records_an_event_but_a_flapping_node_only_one(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    await store.apply([state()])
    await eventually(_count(kube, 1), what="FrpConnected event")
    (connected,) = events(kube)
    assert connected["reason"] == "FrpConnected"
    assert connected["type"] == "Normal"
    assert connected["involvedObject"]["name"] == NM
    assert connected["involvedObject"]["uid"]
    for status in ["offline", "online"] * 5:
        await store.apply([state(status=status)])
    await store._events.posted()
    assert len(events(kube)) == 1


async def test_events_follow_every_transition_when_they_are_far_apart(
    kube: NodeMaintenanceEmulator,
) -> None:
    store = await open_replica(event_min_interval=0)
    try:
        await store.apply([state()])
        await store.apply([state(status="offline")])
        await eventually(_count(kube, 2), what="two events")
        assert [e["reason"] for e in events(kube)] == ["FrpConnected", "FrpDisconnected"]
        assert events(kube)[1]["type"] == "Warning"
    finally:
        await store.close()


def _count(kube: NodeMaintenanceEmulator, n: int) -> Any:
    async def check() -> bool:
        return len(events(kube)) >= n

    return check


async def test_without_any_cluster_config_the_store_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(StoreError, match="no in-cluster config and no usable kubeconfig"):
        await open_kubernetes()


def test_an_api_call_that_runs_out_of_time_says_after_how_long() -> None:
    with pytest.raises(ApiError) as failure, api_errors("reading x failed", cache.REQUEST_TIMEOUT):
        raise TimeoutError  # as aiohttp raises it when `_request_timeout` runs out: no text
    assert str(failure.value) == "reading x failed: timed out after 10 s"


@pytest.mark.parametrize(
    ("status", "typed"),
    [(404, APINotFoundError), (409, APIConflictError), (410, APIGoneError), (422, ApiError)],
)
def test_an_api_refusal_is_raised_as_the_class_of_its_status(
    status: int, typed: type[ApiError]
) -> None:
    with pytest.raises(ApiError) as failure, api_errors("writing x failed", 1.0):
        raise ApiException(status=status, reason="Refused")
    assert type(failure.value) is typed
    assert str(failure.value) == f"writing x failed: HTTP {status} Refused"


FORBIDDEN = (
    'nodemaintenances.edge.harmonycloud.cn is forbidden: User "system:serviceaccount:edge:'
    'frp-adapter" cannot watch resource "nodemaintenances" in API group '
    '"edge.harmonycloud.cn" at the cluster scope'
)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (json.dumps({"kind": "Status", "code": 403, "message": FORBIDDEN}), f": {FORBIDDEN}"),
        (json.dumps({"kind": "Status", "message": "x" * 600}).encode(), f": {'x' * 500}..."),
        (b"Traceback (most recent call last):\n  ...", ""),
        (json.dumps({"kind": "Status", "code": 403}), ""),
        (json.dumps({"kind": "NodeMaintenance", "message": "not a Status"}), ""),
        (None, ""),
    ],
    ids=["a Status", "a long Status", "a traceback", "no message", "not a Status", "no body"],
)
def test_an_api_refusal_says_the_message_of_its_status_only(body: Any, said: str) -> None:
    refused = ApiException(status=403, reason="Forbidden")
    refused.body = body
    with pytest.raises(ApiError) as failure, api_errors("watching x failed", 1.0):
        raise refused
    assert str(failure.value) == f"watching x failed: HTTP 403 Forbidden{said}"


async def test_every_kind_of_api_call_says_why_the_api_refused_it(
    tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch and the writes read their answers themselves; a fetch goes through the
    client: each says the Status's message, not only "403 Forbidden"."""

    async def refuse(request: web.Request) -> web.Response:
        status = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": FORBIDDEN}
        return web.json_response(status, status=403)

    api = await api_answered_by(refuse, tmp_path, aiohttp_server, monkeypatch)
    objects = client.CustomObjectsApi(api)
    node_cache = cache.NodeCache(objects, backoff=BACKOFF)
    events_of = TransitionEvents(client.CoreV1Api(api), namespace="ns", min_interval=30)
    writes = NodeWrites(api, node_cache, events_of)
    try:
        with pytest.raises(ApiError, match=f"watching {cache.PLURAL} failed") as watching:
            await node_cache._watch_from("1")
        with pytest.raises(ApiError, match=f"reading {NM} failed") as reading:
            await node_cache.fetch(NM)
        with (
            pytest.raises(ApiError, match="writing failed") as writing,
            api_errors("writing failed", 1.0),  # as the writes wrap their calls
        ):
            await writes._call("POST", writes._path, {"metadata": {"name": NM}})
    finally:
        await events_of.close()
        await api.close()
    for failure in (watching, reading, writing):
        assert str(failure.value).endswith(f"HTTP 403 Forbidden: {FORBIDDEN}")


async def test_a_watch_refused_in_small_pieces_still_says_why(
    tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        status = {"kind": "Status", "code": 403, "message": FORBIDDEN}
        answer = web.StreamResponse(status=403, reason="Forbidden")
        await answer.prepare(request)
        body = json.dumps(status).encode()
        for i in range(0, len(body), 7):
            await answer.write(body[i : i + 7])
            await asyncio.sleep(0)  # each piece its own chunk on the wire
        await answer.write_eof()
        return answer

    failure = await watch_failure(refuse, tmp_path, aiohttp_server, monkeypatch)
    assert str(failure).endswith(f"HTTP 403 Forbidden: {FORBIDDEN}")


@pytest.mark.parametrize("ending", ["stalls", "breaks off"])
async def test_a_watch_refused_with_a_body_that_never_comes_whole_says_its_status(
    tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The status is said at once, not after the watch's own time limit (335 s), and not
    as a failure without one (a broken body is a ClientPayloadError)."""
    monkeypatch.setattr(cache, "_REFUSAL_SECONDS", 0.1)
    done = asyncio.Event()

    async def refuse(request: web.Request) -> web.StreamResponse:
        body = json.dumps({"kind": "Status", "code": 403, "message": FORBIDDEN}).encode()
        answer = web.StreamResponse(
            status=403, reason="Forbidden", headers={"Content-Length": str(len(body))}
        )
        await answer.prepare(request)
        await answer.write(body[:40])
        if ending == "breaks off":
            assert request.transport is not None
            request.transport.close()
        await done.wait()
        return answer

    try:
        failure = await watch_failure(refuse, tmp_path, aiohttp_server, monkeypatch)
    finally:
        done.set()
    assert failure.status == 403
    assert str(failure) == f"watching {cache.PLURAL} failed: HTTP 403 Forbidden"


def test_a_status_message_is_said_on_one_line() -> None:
    refused = ApiException(status=400, reason="Bad Request")
    refused.body = json.dumps(
        {"kind": "Status", "message": "denied\n2026-12-04 ERROR forged"}
    ).encode()
    with pytest.raises(ApiError) as failure, api_errors("writing x failed", 1.0):
        raise refused
    assert (
        str(failure.value)
        == "writing x failed: HTTP 400 Bad Request: denied 2026-12-04 ERROR forged"
    )


async def test_a_failing_reread_fails_only_its_own_node(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    await store.apply([state("a1"), state("b2")])
    # b2 conflicts (changed behind our cache); its re-read then meets a failing API.
    obj = kube.objects[NM_RESOURCE, None, "nodemaintenances-b2"]
    obj.patch({"metadata": {"resourceVersion": "999"}})
    kube["get", "/apis/edge.harmonycloud.cn/v1alpha1/nodemaintenances/nodemaintenances-b2"] << 503
    with pytest.raises(StoreError) as failure:
        await store.apply([state("a1", status="offline"), state("b2", status="offline")])
    assert failure.value.failed == frozenset([UniqueId("b2")])
    assert kube.node_maintenances()["nodemaintenances-a1"]["status"]["reason"] == "CloseProxy"


async def test_one_replica_leads_and_another_takes_over_when_it_stops_renewing(
    kube: NodeMaintenanceEmulator,
) -> None:
    clock = FakeClock()
    first = await open_kubernetes(identity="replica-a", clock=clock)
    second = await open_kubernetes(identity="replica-b", clock=clock)
    a, b = first.leadership, second.leadership
    gains: list[str] = []
    run_a = asyncio.create_task(a.run(lambda: gains.append("a")))
    try:
        await clock.settle(run_a)
        assert a.leading
        run_b = asyncio.create_task(b.run(lambda: gains.append("b")))
        try:
            await clock.settle(run_b)
            await clock.advance(2 * lease.LEASE_SECONDS)  # a renews; b waits
            assert (a.leading, b.leading) == (True, False)
            assert kube.lease_holder(lease.LEASE_NAME, "frp-adapter") == "replica-a"
            run_a.cancel()  # a dies without releasing: b waits out the lease
            await asyncio.gather(run_a, return_exceptions=True)
            await clock.advance(lease.LEASE_SECONDS - lease.RETRY_SECONDS)
            assert not b.leading  # the lease a renewed last is not over yet
            await clock.advance(3 * lease.RETRY_SECONDS)
            assert b.leading
            assert not a.leading  # a stepped down on its own: it could not renew
            assert kube.lease_holder(lease.LEASE_NAME, "frp-adapter") == "replica-b"
            await b.release()
            assert kube.lease_holder(lease.LEASE_NAME, "frp-adapter") is None
            assert gains == ["a", "b"]
        finally:
            run_b.cancel()
            await asyncio.gather(run_b, return_exceptions=True)
    finally:
        run_a.cancel()
        await asyncio.gather(run_a, return_exceptions=True)
        await first.store.close()
        await second.store.close()


async def _true(value: bool) -> bool:
    return value


async def test_a_replica_adopts_what_another_stored_but_not_over_its_own_pending_write(
    kube: NodeMaintenanceEmulator,
) -> None:
    first, second = await open_replica(), await open_replica()
    try:
        writer_a, writer_b = NodeWriter(first), NodeWriter(second)
        registry_a = NodeRegistry(writer_a, heartbeat_persist_interval=60)
        registry_b = NodeRegistry(writer_b, heartbeat_persist_interval=60)
        second.subscribe(registry_b)
        tasks = [asyncio.create_task(w.run()) for w in (writer_a, writer_b)]
        try:
            uid = UniqueId("abc123")
            registry_a.transition(
                uid,
                NodeChange(
                    reason="NewProxy", at=datetime.now(UTC), status="online", remote_port=7001
                ),
            )
            await writer_a.flushed(uid)

            async def b_sees(port: int, status: str) -> bool:
                seen = registry_b.get(uid)
                return seen is not None and (seen.remote_port, seen.status) == (port, status)

            await eventually(lambda: b_sees(7001, "online"), what="b adopts a's write")
            assert not writer_b.pending(uid)  # adopted, not written again
            assert kube.nm_writes == 2

            # The store keeps times to the second: this change is a second later.
            later = datetime.now(UTC) + timedelta(seconds=1)
            registry_a.transition(uid, NodeChange(reason="CloseProxy", at=later, status="offline"))
            await writer_a.flushed(uid)
            await eventually(lambda: b_sees(7001, "offline"), what="b adopts the offline")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await first.close()
        await second.close()


async def test_a_node_deleted_in_the_cluster_is_forgotten_unless_being_written(
    kube: NodeMaintenanceEmulator, store: KubernetesStore
) -> None:
    writer = NodeWriter(store)
    registry = NodeRegistry(writer, heartbeat_persist_interval=60)
    store.subscribe(registry)
    uid = UniqueId("abc123")
    registry.transition(uid, NodeChange(reason="NewProxy", at=datetime.now(UTC), status="online"))
    writing = asyncio.create_task(writer.run())
    try:
        await writer.flushed(uid)
        await eventually(lambda: _true(store.cached(NM) is not None), what="cached")
        path = f"/apis/edge.harmonycloud.cn/v1alpha1/nodemaintenances/{NM}"
        async with kube.delete(path) as resp:
            assert resp.status == 200
        await eventually(lambda: _true(registry.get(uid) is None), what="deletion observed")
        assert registry.page(None, 10) == ([], None)
        registry.transition(uid, NodeChange(reason="Ping", at=datetime.now(UTC), status="online"))
        registry.observe_deletion(NM)  # a deletion seen while our write is pending
        assert registry.get(uid) is not None
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)


@pytest.mark.parametrize(
    ("no_proxy", "proxy"), [("", "http://proxy.example:3128"), ("api.example", None)]
)
async def test_the_environments_proxy_is_read_once_not_looked_up_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: str, proxy: str | None
) -> None:
    """kubectl's rules (HTTPS_PROXY unless NO_PROXY names the server), decided at connect:
    aiohttp's own per-request lookup runs in a thread each time."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "https://api.example:6443")
    for name in ("KUBERNETES_SERVICE_HOST", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    api = await connect()
    try:
        assert api.configuration.proxy == proxy
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()


async def test_nodes_past_the_event_interval_are_not_remembered(
    kube: NodeMaintenanceEmulator,
) -> None:
    api = await connect()
    clock = FakeClock()
    events_of = TransitionEvents(
        client.CoreV1Api(api), namespace="ns", min_interval=0.05, clock=clock
    )
    try:
        for i in range(300):
            events_of.record(state(f"storm-{i}"), {"metadata": {"name": f"storm-{i}"}}, {})
        assert len(events_of._recent) == 100  # those posted (the burst); not those dropped
        await clock.advance(0.1)
        events_of.record(state("later"), {"metadata": {"name": "later"}}, {})
        assert list(events_of._recent) == ["later"]
    finally:
        await events_of.close()
        await api.close()


async def test_a_storm_of_new_nodes_posts_a_burst_of_events_not_one_per_node(
    kube: NodeMaintenanceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    api = await connect()
    clock = FakeClock()
    events_of = TransitionEvents(
        client.CoreV1Api(api), namespace="ns", min_interval=30, clock=clock
    )
    try:

        def storm(first: int, nodes: int) -> None:
            for i in range(first, first + nodes):  # nodes come online at once
                new = state(f"storm-{i}")
                events_of.record(new, {"metadata": {"name": f"nodemaintenances-storm-{i}"}}, {})

        storm(0, 300)
        await events_of.posted()
        assert len(events(kube)) == 100  # the burst
        assert "get no Kubernetes Event" in caplog.text
        await clock.advance(1)
        storm(300, 300)
        await events_of.posted()
        assert len(events(kube)) == 150  # and 50 a second after it
        # Said once, not at each drop after a token came back: a storm's log stays small.
        assert caplog.text.count("get no Kubernetes Event") == 1
        await clock.advance(60)
        storm(600, 300)
        assert caplog.text.count("get no Kubernetes Event") == 2
        assert "; 450 since last said" in caplog.text  # 250 of the second storm, 200 now
    finally:
        await events_of.close()
        await api.close()
