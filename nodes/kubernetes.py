"""NodeMaintenance custom resources in a Kubernetes cluster, and leader election among
replicas on a Lease: the one module that imports kubernetes_asyncio.

Reads come from a cache fed by list + watch (re-listed on 410 Gone), so REST reads and
writes do not cost an API request each; the cache also sees what others change (a
`kubectl edit`). A write is a read-modify-write against the cached object, guarded by its
resourceVersion: a 409 Conflict re-reads the object and tries again, a bounded number of
times. A new NM costs two writes (create, then its status: the status subresource ignores
status on create); a status change costs one merge-patch of `/status`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from nodes.model import GROUP, KIND, VERSION, JsonObject, NodeState, UniqueId, nm_name, render_nm
from nodes.store import ReviewError, StoreError, StoreObserver

logger = logging.getLogger(__name__)

PLURAL = "nodemaintenances"
_MERGE_PATCH = "application/merge-patch+json"
_REQUEST_TIMEOUT = 10.0
_WATCH_SECONDS = 300
_CONFLICT_ATTEMPTS = 5
_CONCURRENT_WRITES = 64
_RELIST_BACKOFF_MAX = 30.0
# Errors a later retry may cure; anything else (400, 403, 422) is this write's own fault.
_TRANSIENT = (429, 500, 502, 503, 504)


async def connect() -> client.ApiClient:
    """In-cluster config first, else the kubeconfig (`KUBECONFIG` or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        try:
            # Read KUBECONFIG now: the library reads it once, when it is imported.
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        except (ConfigException, OSError) as e:
            raise StoreError(f"no in-cluster config and no usable kubeconfig: {e}") from e
    return client.ApiClient(configuration)


def _api_error(e: ApiException) -> str:
    # Error bodies can be long (kmock sends tracebacks); the status and reason suffice.
    return f"HTTP {e.status} {e.reason}"


class KubernetesStore:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        event_namespace: str,
        event_min_interval: float,
    ) -> None:
        self._api = api
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._event_namespace = event_namespace
        self._event_min_interval = event_min_interval
        self._cache: dict[str, JsonObject] = {}
        self._synced = asyncio.Event()
        self._last_event: dict[UniqueId, float] = {}
        self._writes = asyncio.Semaphore(_CONCURRENT_WRITES)
        self._event_tasks: set[asyncio.Task[None]] = set()
        self._observers: list[StoreObserver] = []
        self._watcher = asyncio.create_task(self._watch_forever(), name="nm-watch")

    def subscribe(self, observer: StoreObserver) -> None:
        self._observers.append(observer)

    def cached(self, name: str) -> JsonObject | None:
        return self._cache.get(name)

    def problem(self) -> None:
        """A failing API server shows as failing writes, which are retried: nothing lost."""

    def leadership(self, identity: str) -> LeaseLeadership:
        return LeaseLeadership(self._api, namespace=self._event_namespace, identity=identity)

    def reviewer(self) -> KubernetesReviewer:
        return KubernetesReviewer(self._api)

    async def close(self) -> None:
        tasks = [self._watcher, *self._event_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._api.close()

    async def get(self, name: str) -> JsonObject | None:
        if self._synced.is_set():
            return self._cache.get(name)
        return await self._fetch(name)

    async def list(self) -> list[JsonObject]:
        if self._synced.is_set():
            return [self._cache[name] for name in sorted(self._cache)]
        try:
            listing = await self._objects.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _request_timeout=_REQUEST_TIMEOUT
            )
        except ApiException as e:
            raise StoreError(f"listing {PLURAL} failed: {_api_error(e)}") from e
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StoreError(f"listing {PLURAL} failed: {e!r}") from e
        return sorted(listing["items"], key=lambda obj: obj["metadata"]["name"])

    async def apply(self, states: Sequence[NodeState]) -> None:
        results = await asyncio.gather(*(self._apply_one(s) for s in states))
        failed = {s.unique_id: error for s, error in zip(states, results, strict=True) if error}
        if failed:
            first = next(iter(failed.values()))
            raise StoreError(
                f"{len(failed)} of {len(states)} node(s) not written, e.g. {first}",
                failed=frozenset(failed),
            )

    async def _apply_one(self, state: NodeState) -> str | None:
        """None once the node's NM matches `state`, else why it does not (yet)."""
        name = nm_name(state.unique_id)
        async with self._writes:
            try:
                for attempt in range(_CONFLICT_ATTEMPTS):
                    try:
                        await self._write(state, name, reread=attempt > 0)
                    except ApiException as e:
                        if e.status != 409:
                            raise
                        continue  # someone else wrote it first: read it afresh
                    return None
                return f"{name}: still conflicting after {_CONFLICT_ATTEMPTS} attempts"
            except ApiException as e:
                if e.status not in _TRANSIENT:
                    logger.error("%s: the API refused the write: %s", name, _api_error(e))
                return f"{name}: {_api_error(e)}"
            except (aiohttp.ClientError, TimeoutError) as e:
                return f"{name}: {e!r}"
            except StoreError as e:  # the re-read failed
                return str(e)

    async def _write(self, state: NodeState, name: str, *, reread: bool) -> None:
        if reread or not self._synced.is_set():
            existing = await self._fetch(name)
        else:
            existing = self._cache.get(name)
        if existing is None:
            desired = render_nm(state, None)
            existing = await self._call(
                self._objects.create_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                {key: value for key, value in desired.items() if key != "status"},
            )
        desired = render_nm(state, existing)
        rv = {"resourceVersion": existing["metadata"].get("resourceVersion")}
        if desired["spec"] != existing.get("spec"):
            existing = await self._call(
                self._objects.patch_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                name,
                {"metadata": rv, "spec": desired["spec"]},
                _content_type=_MERGE_PATCH,
            )
            rv = {"resourceVersion": existing["metadata"].get("resourceVersion")}
        before = existing.get("status") or {}
        status = desired["status"]
        if "bindStatus" in before:
            del status["bindStatus"]  # another controller owns it once it exists
        if any(before.get(key) != value for key, value in status.items()):
            await self._call(
                self._objects.patch_cluster_custom_object_status,
                GROUP,
                VERSION,
                PLURAL,
                name,
                {"metadata": rv, "status": status},
                _content_type=_MERGE_PATCH,
            )
            self._record_transition(state, existing, before)

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> JsonObject:
        obj: JsonObject = await method(*args, _request_timeout=_REQUEST_TIMEOUT, **kwargs)
        self._cache[obj["metadata"]["name"]] = obj
        return obj

    async def _fetch(self, name: str) -> JsonObject | None:
        try:
            obj: JsonObject = await self._objects.get_cluster_custom_object(
                GROUP, VERSION, PLURAL, name, _request_timeout=_REQUEST_TIMEOUT
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise StoreError(f"reading {name} failed: {_api_error(e)}") from e
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StoreError(f"reading {name} failed: {e!r}") from e
        return obj

    def _record_transition(self, state: NodeState, obj: JsonObject, before: JsonObject) -> None:
        """A Kubernetes Event per online/offline change, at most one per node per interval."""
        services = before.get("services") or [{}]
        if services[0].get("status") == state.status:
            return
        now = time.monotonic()
        last = self._last_event.get(state.unique_id)
        if last is not None and now - last < self._event_min_interval:
            return
        self._last_event[state.unique_id] = now
        online = state.status == "online"
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        name = obj["metadata"]["name"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}"},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": name,
                "uid": obj["metadata"].get("uid", ""),
            },
            "reason": "FrpConnected" if online else "FrpDisconnected",
            "message": f"node {state.unique_id} is {state.status} ({state.reason})",
            "type": "Normal" if online else "Warning",
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": "frp-adapter"},
        }
        self._spawn_event(event)

    def _spawn_event(self, event: JsonObject) -> None:
        task = asyncio.create_task(self._post_event(event))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _post_event(self, event: JsonObject) -> None:
        try:
            # The client serialises a plain dict as it is, like the custom objects.
            await self._core.create_namespaced_event(
                self._event_namespace,
                event,  # type: ignore[arg-type]
                _request_timeout=_REQUEST_TIMEOUT,
            )
        except (ApiException, aiohttp.ClientError, TimeoutError) as e:
            # Events are a convenience for `kubectl describe`; the NM's status is the record.
            logger.warning("event for %s not recorded: %s", event["involvedObject"]["name"], e)

    async def _watch_forever(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._list_and_watch()
                backoff = 1.0
            except ApiException as e:
                if e.status == 410:
                    logger.info("watch of %s expired (410 Gone): listing again", PLURAL)
                    continue
                logger.warning("watching %s failed: %s", PLURAL, _api_error(e))
            except (aiohttp.ClientError, TimeoutError) as e:
                logger.warning("watching %s failed: %r", PLURAL, e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RELIST_BACKOFF_MAX)

    async def _list_and_watch(self) -> None:
        listing = await self._objects.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=_REQUEST_TIMEOUT
        )
        gone = self._cache.keys() - {obj["metadata"]["name"] for obj in listing["items"]}
        self._cache = {obj["metadata"]["name"]: obj for obj in listing["items"]}
        self._synced.set()
        for name in gone:  # deleted while no watch was open
            self._notify_deletion(name)
        for obj in listing["items"]:
            self._notify(obj)
        async with watch.Watch().stream(
            self._objects.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            resource_version=listing["metadata"].get("resourceVersion"),
            timeout_seconds=_WATCH_SECONDS,
            _request_timeout=_WATCH_SECONDS + 30,
        ) as stream:
            async for event in stream:
                obj = event["raw_object"]
                name = obj.get("metadata", {}).get("name")
                if event["type"] in ("ADDED", "MODIFIED") and name:
                    self._cache[name] = obj
                    self._notify(obj)
                elif event["type"] == "DELETED" and name:
                    self._cache.pop(name, None)
                    self._notify_deletion(name)

    def _notify(self, obj: JsonObject) -> None:
        for observer in self._observers:
            observer.observe(obj)

    def _notify_deletion(self, name: str) -> None:
        for observer in self._observers:
            observer.observe_deletion(name)


LEASE_NAME = "frp-adapter-leader"
LEASE_SECONDS = 15
_LEASE_RETRY_SECONDS = 2.0


class LeaseLeadership:
    """Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it.

    The holder renews the Lease every retry period; another replica takes it over once
    it has seen the same record, unrenewed, for a whole lease duration by its own clock
    (no clocks are compared across machines). Every write carries the resourceVersion
    it read, so of two replicas racing for an expired Lease exactly one wins. A leader
    that cannot renew steps down before its Lease could have been taken.
    """

    def __init__(self, api: client.ApiClient, *, namespace: str, identity: str) -> None:
        self._leases = client.CoordinationV1Api(api)
        self._namespace = namespace
        self.identity = identity
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None

    @property
    def leading(self) -> bool:
        renewed = self._renewed_at
        # Step down a retry period early: by then another replica may be about to take over.
        margin = LEASE_SECONDS - 2 * _LEASE_RETRY_SECONDS
        return renewed is not None and time.monotonic() - renewed < margin

    async def run(self, on_gain: Callable[[], None]) -> None:
        while True:
            was_leading = self.leading
            try:
                await self._try_to_lead()
            except ApiException as e:
                if e.status != 409:  # 409: another replica wrote first; read again next time
                    logger.warning("leader election: %s", _api_error(e))
            except (aiohttp.ClientError, TimeoutError) as e:
                logger.warning("leader election: %r", e)
            if self.leading and not was_leading:
                logger.info("leading as %s", self.identity)
                on_gain()
            elif was_leading and not self.leading:
                logger.warning("no longer leading (%s)", self.identity)
            await asyncio.sleep(_LEASE_RETRY_SECONDS)

    async def release(self) -> None:
        if not self.leading:
            return
        self._renewed_at = None
        try:
            await self._leases.patch_namespaced_lease(
                LEASE_NAME,
                self._namespace,
                {"spec": {"holderIdentity": None, "leaseDurationSeconds": 1}},
                _content_type=_MERGE_PATCH,  # type: ignore[call-arg]  # taken, not typed
                _request_timeout=_REQUEST_TIMEOUT,
            )
        except (ApiException, aiohttp.ClientError, TimeoutError) as e:
            logger.warning("could not release the leader lease: %s", e)

    async def _try_to_lead(self) -> None:
        now = time.monotonic()
        try:
            lease = await self._leases.read_namespaced_lease(
                LEASE_NAME, self._namespace, _request_timeout=_REQUEST_TIMEOUT
            )
        except ApiException as e:
            if e.status != 404:
                raise
            await self._leases.create_namespaced_lease(
                self._namespace,
                {  # type: ignore[arg-type]
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": LEASE_NAME},
                    "spec": self._spec(acquired=True, transitions=0),
                },
                _request_timeout=_REQUEST_TIMEOUT,
            )
            self._renewed_at = now
            return
        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time, lease.metadata.resource_version)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.lease_duration_seconds or LEASE_SECONDS
        mine = spec.holder_identity == self.identity
        if not mine and spec.holder_identity and now - self._observed_at < duration:
            self._renewed_at = None
            return
        await self._leases.patch_namespaced_lease(
            LEASE_NAME,
            self._namespace,
            {
                "metadata": {"resourceVersion": lease.metadata.resource_version},
                "spec": self._spec(
                    acquired=not mine, transitions=(spec.lease_transitions or 0) + (not mine)
                ),
            },
            _content_type=_MERGE_PATCH,  # type: ignore[call-arg]  # taken, not typed
            _request_timeout=_REQUEST_TIMEOUT,
        )
        self._renewed_at = now

    def _spec(self, *, acquired: bool, transitions: int) -> JsonObject:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec: JsonObject = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }
        if acquired:
            spec["acquireTime"] = stamp
        return spec


class KubernetesReviewer:
    """Who a bearer token is (TokenReview) and whether it may act on NMs (SubjectAccessReview).

    Operators are then managed with ordinary RBAC on `nodemaintenances` and its
    `shell` and `exec` subresources.
    """

    def __init__(self, api: client.ApiClient) -> None:
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)

    async def user(self, token: str) -> JsonObject | None:
        """The token's user (`username`, `uid`, `groups`), None if the API does not know it."""
        review = await self._authn.create_token_review(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },  # type: ignore[arg-type]
            _request_timeout=_REQUEST_TIMEOUT,
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        return {
            "username": status.user.username or "",
            "uid": status.user.uid or "",
            "groups": list(status.user.groups or []),
        }

    async def allowed(
        self, user: JsonObject, *, verb: str, subresource: str, name: str | None
    ) -> bool:
        attributes: JsonObject = {"group": GROUP, "resource": PLURAL, "verb": verb}
        if subresource:
            attributes["subresource"] = subresource
        if name:
            attributes["name"] = name
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user["username"],
                "uid": user["uid"],
                "groups": user["groups"],
                "resourceAttributes": attributes,
            },
        }
        try:
            review = await self._authz.create_subject_access_review(
                body,  # type: ignore[arg-type]
                _request_timeout=_REQUEST_TIMEOUT,
            )
        except (ApiException, aiohttp.ClientError, TimeoutError) as e:
            raise ReviewError(f"SubjectAccessReview failed: {e}") from e
        return bool(review.status and review.status.allowed)
