"""A Kubernetes API stand-in fast enough to measure the adapter rather than the peer.

    python bench/kube_peer.py PORT

kmock models the API server's behaviour for the tests, and costs ~10 ms per write: a
100,000-node storm would measure kmock. This answers from a dict, in its own process,
only the calls the adapter's Kubernetes store makes: NodeMaintenance create, get,
merge-patch of the object or its `/status` (resourceVersion checked: 409 on a stale one),
list (in pages, with `limit` and `continue`) and watch; Lease get, create and
merge-patch for leader election; Events accepted and dropped. An NM comes back with what
the API server adds (uid, creationTimestamp, generation, and managedFields: a field set
per writer and subresource, more than half an NM's JSON). It is for `bench/scale.py`
only; the tests keep kmock.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

NMS = "/apis/edge.harmonycloud.cn/v1alpha1/nodemaintenances"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


class Peer:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # by path
        self.versions = itertools.count(1)
        self.watchers: set[asyncio.Queue[bytes]] = set()
        self.nm_writes = 0
        # NMs whose SSH service is online, kept as they are written: counting them over
        # 100,000 NMs for every poll of /stats took the peer tens of ms each time.
        self.online: set[str] = set()
        self.names: list[str] | None = None  # NM paths in name order, for list pages

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 24)
        app.router.add_get(NMS, self.list_or_watch)
        app.router.add_post(NMS, self.create)
        app.router.add_get(NMS + "/{name}", self.get)
        app.router.add_patch(NMS + "/{name}", self.patch)
        app.router.add_patch(NMS + "/{name}/status", self.patch)
        app.router.add_get(LEASES + "/{name}", self.get)
        app.router.add_post(LEASES, self.create)
        app.router.add_patch(LEASES + "/{name}", self.patch)
        app.router.add_post("/api/v1/namespaces/{namespace}/events", self.event)
        app.router.add_get("/stats", self.stats)
        return app

    def _store(self, path: str, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        if path.startswith(NMS):
            _manage(obj)
        self.objects[path] = obj
        if path.startswith(NMS):
            self.nm_writes += 1
            if (obj.get("status", {}).get("services") or [{}])[0].get("status") == "online":
                self.online.add(path)
            else:
                self.online.discard(path)
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            for queue in self.watchers:
                queue.put_nowait(line)
        return obj

    async def create(self, request: web.Request) -> web.Response:
        obj = await request.json()
        path = f"{request.path}/{obj['metadata']['name']}"
        if path in self.objects:
            return _status(409, "AlreadyExists")
        obj.pop("status", None)  # the status subresource: ignored on create
        self.names = None
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        obj["metadata"].update(uid=f"uid-{len(self.objects)}", creationTimestamp=now, generation=1)
        return web.json_response(self._store(path, obj, "ADDED"), status=201)

    async def get(self, request: web.Request) -> web.Response:
        obj = self.objects.get(request.path)
        return _status(404, "NotFound") if obj is None else web.json_response(obj)

    async def patch(self, request: web.Request) -> web.Response:
        on_status = request.path.startswith(NMS) and request.path.endswith("/status")
        path = request.path.removesuffix("/status") if on_status else request.path
        current = self.objects.get(path)
        if current is None:
            return _status(404, "NotFound")
        patch = await request.json()
        sent = patch.get("metadata", {}).get("resourceVersion")
        if sent is not None and sent != current["metadata"]["resourceVersion"]:
            return _status(409, "Conflict")
        new = json.loads(json.dumps(current))
        for field, value in patch.items():
            if field != "metadata" and (field == "status") == on_status:
                new[field] = _merge(new.get(field), value)
        return web.json_response(self._store(path, new, "MODIFIED"))

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch", "").lower() != "true":
            return self._list(request)
        response = web.StreamResponse()
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.watchers.add(queue)
        try:
            timeout = float(request.query.get("timeoutSeconds", 300))
            async with asyncio.timeout(timeout):
                while True:
                    await response.write(await queue.get())
        except (TimeoutError, ConnectionResetError):  # the watch's end, or its reader left
            pass
        finally:
            self.watchers.discard(queue)
        return response

    def _list(self, request: web.Request) -> web.Response:
        """Every NM, or `limit` of them after the name `continue` names, in name order."""
        if self.names is None:  # sorted once per new NM, not once per page
            self.names = sorted(path for path in self.objects if path.startswith(NMS + "/"))
        after = request.query.get("continue")
        start = bisect.bisect_right(self.names, f"{NMS}/{after}") if after else 0
        limit = int(request.query.get("limit") or len(self.names) or 1)
        paths = self.names[start : start + limit]
        metadata = {"resourceVersion": str(next(self.versions))}
        if start + limit < len(self.names):
            metadata["continue"] = paths[-1].rsplit("/", 1)[1]
        items = [self.objects[path] for path in paths]
        return web.json_response({"metadata": metadata, "items": items})

    async def event(self, request: web.Request) -> web.Response:
        return web.json_response(await request.json(), status=201)

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response({"online": len(self.online), "nm_writes": self.nm_writes})


def _manage(obj: dict[str, Any]) -> None:
    """managedFields as the API server keeps them: the main resource's and the status
    subresource's fields, each an entry of the writer's (the root has no `.`)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    main = {key: obj[key] for key in ("spec",) if key in obj}
    main["metadata"] = {"labels": obj["metadata"].get("labels") or {}}
    parts = [(None, main), ("status", {"status": obj.get("status") or {}})]
    obj["metadata"]["managedFields"] = [
        {
            "apiVersion": "edge.harmonycloud.cn/v1alpha1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {key: item for key, item in _field_set(fields).items() if key != "."},
            "manager": "OpenAPI-Generator",
            "operation": "Update",
            **({"subresource": subresource} if subresource else {}),
            "time": now,
        }
        for subresource, fields in parts
    ]


def _field_set(value: Any) -> Any:
    """The FieldsV1 form of a JSON value: `f:<key>` for keys, `k:{"name":...}` for the
    items of a list of named objects, `{}` for a leaf."""
    if isinstance(value, dict):
        inner = {f"f:{key}": _field_set(item) for key, item in value.items()}
        return {".": {}, **inner} if inner else {}
    if isinstance(value, list) and all(isinstance(item, dict) and "name" in item for item in value):
        return {f'k:{{"name":"{item["name"]}"}}': _field_set(item) for item in value}
    return {}


def _merge(current: Any, patch: Any) -> Any:
    """RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(current) if isinstance(current, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


def _status(code: int, reason: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason}
    return web.json_response({**body, "code": code, "message": reason.lower()}, status=code)


if __name__ == "__main__":
    # Open watches would hold a graceful stop for a minute.
    web.run_app(
        Peer().app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, shutdown_timeout=1
    )
