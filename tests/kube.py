"""A Kubernetes API peer for tests and benchmarks: kmock's emulator, extended as its
docstring invites where the adapter depends on behaviour kmock does not model.

- kubernetes-asyncio asks for watches with `watch=True`; the API server parses booleans
  leniently, kmock only knows `watch=true`.
- resourceVersion: every write of a NodeMaintenance or a Lease bumps it, a write that
  carries a stale one is refused with 409 Conflict, as the API server does (leader
  election relies on it).
- The status subresource: create and patches of the main resource ignore `status`; a
  patch of `/status` changes only `status`.
- A create is answered 201 Created, as the API server does (clients parse only that).
- kmock matches each request against its reactions by re-scanning its whole request
  history (quadratic in a storm). It matches as the request arrives, before any await,
  so `history_limit` may keep as little as the newest request; `nm_writes` counts the
  NM writes whatever the history keeps. Answers to NM writes look the object up by its
  key rather than scanning every stored object.
- TokenReview and SubjectAccessReview, answered from `users` (token -> username) and
  `grants` ((username, verb, subresource, NM name or None for any)), as RBAC would.
- Faults on demand: `fail_writes` answers the next N writes with 503 and changes nothing;
  `expire_next_watch` ends the next watch with a 410 Gone error event.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonschema
import kmock
import yaml
from kmock._internal import enums, rendering

from nodes.model import GROUP, VERSION

NM_RESOURCE = kmock.resource(GROUP, VERSION, "nodemaintenances")
LEASE_RESOURCE = kmock.resource("coordination.k8s.io", "v1", "leases")
TOKEN_REVIEWS = kmock.resource("authentication.k8s.io", "v1", "tokenreviews")
ACCESS_REVIEWS = kmock.resource("authorization.k8s.io", "v1", "subjectaccessreviews")
CRD = Path(__file__).parents[1] / "manifests" / "crd.yaml"


class NodeMaintenanceEmulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources[NM_RESOURCE] = kmock.ResourceInfo(kind="NodeMaintenance", namespaced=False)
        self.fail_writes = 0
        self.fail_reviews = False
        self.expire_next_watch = False
        self.end_next_watch = False
        self.conflicts = 0
        self.nm_writes = 0
        self.history_limit: int | None = None
        self.users: dict[str, str] = {}
        self.grants: set[tuple[str, str, str, str | None]] = set()
        self._versions = itertools.count(1)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.query.get("watch") == "True":
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        if self.history_limit and len(self._requests) > 2 * self.history_limit:
            del self._requests[: -self.history_limit]
        return await super().__call__(raw_request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource in (TOKEN_REVIEWS, ACCESS_REVIEWS):
            if self.fail_reviews:
                raise kmock.KubernetesError(
                    status=503, reason="ServiceUnavailable", message="injected fault"
                )
            return aiohttp.web.json_response({**request.data, "status": self._review(request)})
        if request.resource == LEASE_RESOURCE and request.action in (
            enums.action.CREATE,
            enums.action.UPDATE,
        ):
            self._as_the_api_server_would(request)
        if request.resource == NM_RESOURCE and request.action in (
            enums.action.CREATE,
            enums.action.UPDATE,
        ):
            if self.fail_writes:
                self.fail_writes -= 1
                raise kmock.KubernetesError(
                    status=503, reason="ServiceUnavailable", message="injected fault"
                )
            self._as_the_api_server_would(request)
            self.nm_writes += 1
        response = await super()._handle(request)
        if request.action == enums.action.CREATE and response.status == 200:
            response.set_status(201)  # what the API server answers, and clients expect
        if request.action == enums.action.LIST and request.params.get("limit"):
            return _page(response, int(request.params["limit"]), request.params.get("continue"))
        return response

    def _as_the_api_server_would(self, request: rendering.Request) -> None:
        data: dict[str, Any] = request.data
        metadata = data.setdefault("metadata", {})
        if request.action == enums.action.CREATE:  # kmock itself refuses an existing name
            data.pop("status", None)
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            assert request.resource is not None  # only NM and Lease writes come here
            key = (request.resource, request.namespace, str(request.name))
            current = self.objects[key].raw if key in self.objects else {}
            current_rv = current.get("metadata", {}).get("resourceVersion")
            sent_rv = metadata.get("resourceVersion")
            if sent_rv is not None and sent_rv != current_rv:
                self.conflicts += 1
                raise kmock.KubernetesError(
                    status=409, reason="Conflict", message="the object has been modified"
                )
            for field in list(data):
                keep = field == "status" if request.subresource == "status" else field != "status"
                if field != "metadata" and not keep:
                    del data[field]
        metadata["resourceVersion"] = str(next(self._versions))

    def _review(self, request: rendering.Request) -> dict[str, Any]:
        spec = request.data["spec"]
        if request.resource == TOKEN_REVIEWS:
            user = self.users.get(spec["token"])
            if user is None:
                return {"authenticated": False}
            who = {"username": user, "uid": f"uid-{user}", "groups": ["system:authenticated"]}
            return {"authenticated": True, "user": who}
        attributes = spec["resourceAttributes"]
        asked = (spec["user"], attributes["verb"], attributes.get("subresource", ""))
        allowed = (*asked, None) in self.grants or (*asked, attributes.get("name")) in self.grants
        return {"allowed": allowed}

    async def _serve_create(self, request: rendering.Request) -> Any:
        if request.resource != NM_RESOURCE:
            return await super()._serve_create(request)
        return self.objects[NM_RESOURCE, None, request.data["metadata"]["name"]].raw

    async def _serve_update(self, request: rendering.Request) -> Any:
        if request.resource != NM_RESOURCE:
            return await super()._serve_update(request)
        return self.objects[NM_RESOURCE, None, str(request.name)].last.raw

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        if self.end_next_watch:  # as the API server ends one at its timeoutSeconds
            self.end_next_watch = False
            yield b""
            return
        if self.expire_next_watch:
            self.expire_next_watch = False
            yield b""
            yield {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "code": 410,
                    "reason": "Expired",
                    "message": "too old resource version",
                },
            }
            return
        async for item in super()._serve_watch(request):
            yield item

    @property
    def requests(self) -> list[rendering.Request]:
        """Every request served so far, parsed."""
        return list(self._requests)

    def lease_holder(self, name: str, namespace: str) -> str | None:
        key = (LEASE_RESOURCE, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        holder: str | None = self.objects[key].raw.get("spec", {}).get("holderIdentity")
        return holder

    def node_maintenances(self) -> dict[str, dict[str, Any]]:
        return {
            name: obj.raw
            for (resource, _, name), obj in self.objects.items()
            if resource == NM_RESOURCE and not obj.deleted
        }


@contextlib.asynccontextmanager
async def running_kube(directory: Path) -> AsyncIterator[tuple[NodeMaintenanceEmulator, Path]]:
    """The emulator served on 127.0.0.1, with a kubeconfig naming it; on exit, every
    NodeMaintenance written must validate against the CRD."""
    async with NodeMaintenanceEmulator() as emulator, kmock.Server(emulator) as server:
        yield emulator, write_kubeconfig(directory / "kubeconfig", str(server.url))
        assert_valid_against_crd(emulator.node_maintenances())


def _page(
    listed: aiohttp.web.StreamResponse, limit: int, after: str | None
) -> aiohttp.web.StreamResponse:
    """A list answer cut to `limit` items after the name `after`, as the API server pages
    one (kmock answers with every item)."""
    assert isinstance(listed, aiohttp.web.Response)
    assert isinstance(listed.body, bytes)
    body = json.loads(listed.body)
    items = sorted(body["items"], key=lambda item: item["metadata"]["name"])
    if after:
        items = [item for item in items if item["metadata"]["name"] > after]
    body["items"] = items[:limit]
    if len(items) > limit:
        body["metadata"]["continue"] = items[limit - 1]["metadata"]["name"]
    return aiohttp.web.json_response(body, status=listed.status)


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


def assert_valid_against_crd(objects: dict[str, dict[str, Any]]) -> None:
    """Every object validates against the openAPIV3Schema of manifests/crd.yaml."""
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.validators.validator_for(schema)(schema)
    for obj in objects.values():
        validator.validate(obj)
