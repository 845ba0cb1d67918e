"""Writing nodes' NMs: a read-modify-write against the cached object, guarded by its
resourceVersion. A 409 Conflict re-reads the object and tries again, a bounded number of
times. A new NM costs two writes (create, then its status: the status subresource ignores
status on create); a status change costs one merge-patch of `/status`.

The writes go out on the client's own session, with its configuration and credentials
(refreshed as it refreshes them), but not through its model layer: the body is encoded
once and the answer parsed once, by orjson. The client's `sanitize_for_serialization`,
`json.dumps` and `json.loads` took 27% of the adapter's CPU in a 100,000-node storm
(bench/scale.py: 88 s of CPU before, 65 s after)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from nodes.kubernetes.cache import PLURAL, REQUEST_TIMEOUT, NodeCache
from nodes.kubernetes.errors import APIConflictError, ApiError, api_errors, refusal
from nodes.kubernetes.events import TransitionEvents
from nodes.model import (
    GROUP,
    VERSION,
    JsonObject,
    NodeState,
    UniqueId,
    compact_json,
    nm_name,
    render_nm,
)
from nodes.store import StoreError
from schemas import parse_json

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# Tried again at once, not after the retry policy's wait: a conflict is cured by reading
# the NM afresh (the reread), not by time.
_CONFLICT_ATTEMPTS = 5
# Each answer costs the loop ~0.3 ms (the client's work, then keeping the NM): 16 writers'
# answers filled its turns with ~5 ms each, and a Ping waited three turns. 8 keep the same
# pace against an API server that answers in a few ms.
_CONCURRENT_WRITES = 8
_TIMEOUT = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)


class NodeWrites:
    def __init__(self, api: client.ApiClient, cache: NodeCache, events: TransitionEvents) -> None:
        self._api = api
        self._cache = cache
        self._events = events
        self._path = f"{api.configuration.host}/apis/{GROUP}/{VERSION}/{PLURAL}"

    async def apply(self, states: Sequence[NodeState]) -> None:
        failed: dict[UniqueId, str] = {}
        queue = iter(states)

        async def write_each() -> None:
            for state in queue:
                if error := await self._apply_one(state):
                    failed[state.unique_id] = error

        # A few writers take the nodes in turn: a task per node, all readied at once,
        # held the plugin path while each ran its first step.
        await asyncio.gather(*(write_each() for _ in range(min(_CONCURRENT_WRITES, len(states)))))
        if failed:
            first = next(iter(failed.values()))
            raise StoreError(
                f"{len(failed)} of {len(states)} node(s) not written, e.g. {first}",
                failed=frozenset(failed),
            )

    async def _apply_one(self, state: NodeState) -> str | None:
        """None once the node's NM matches `state`, else why it does not (yet)."""
        name = nm_name(state.unique_id)
        try:
            for attempt in range(_CONFLICT_ATTEMPTS):
                try:
                    await self._write(state, name, reread=attempt > 0)
                except APIConflictError:
                    continue  # someone else wrote it first: read it afresh
                return None
            return f"{name}: still conflicting after {_CONFLICT_ATTEMPTS} attempts"
        except ApiError as e:
            if not e.transient:
                logger.error("the API refused the write: %s", e)
            return str(e)

    async def _write(self, state: NodeState, name: str, *, reread: bool) -> None:
        cache = self._cache
        if reread or not cache.synced.is_set():
            existing = await cache.fetch(name)
        else:
            existing = cache.get(name)
        with api_errors(f"{name}: writing failed", REQUEST_TIMEOUT):
            if existing is None:
                await self._create(state)
                return
            desired = render_nm(state, existing)
            rv = {"resourceVersion": existing["metadata"].get("resourceVersion")}
            labels = desired["metadata"].get("labels", {})
            had = existing["metadata"].get("labels") or {}
            if desired["spec"] != existing.get("spec") or labels != had:
                # A merge patch removes a label only when it names it with null.
                gone = dict.fromkeys(had.keys() - labels.keys())
                metadata = {**rv, "labels": {**gone, **labels}} if labels != had else rv
                existing = cache.keep(
                    await self._call(
                        "PATCH",
                        f"{self._path}/{name}",
                        {"metadata": metadata, "spec": desired["spec"]},
                    )
                )
                rv = {"resourceVersion": existing["metadata"].get("resourceVersion")}
            before: JsonObject = existing.get("status") or {}
            status = desired["status"]
            if "bindStatus" in before:
                del status["bindStatus"]  # another controller owns it once it exists
            if any(before.get(key) != value for key, value in status.items()):
                cache.keep(
                    await self._call(
                        "PATCH", f"{self._path}/{name}/status", {"metadata": rv, "status": status}
                    )
                )
                self._events.record(state, existing, before)

    async def _create(self, state: NodeState) -> None:
        """A new NM, then its status, rendered once. Each answer is kept: the watch's
        echo of a write kept costs a comparison, of another a parse."""
        desired = render_nm(state, None)
        status = desired.pop("status")
        created = self._cache.keep(await self._call("POST", self._path, desired))
        metadata = created["metadata"]
        self._cache.keep(
            await self._call(
                "PATCH",
                f"{self._path}/{metadata['name']}/status",
                {
                    "metadata": {"resourceVersion": metadata.get("resourceVersion")},
                    "status": status,
                },
            )
        )
        self._events.record(state, created, {})

    async def _call(self, method: str, url: str, body: JsonObject) -> JsonObject:
        """The object the API answers `body` with (a merge patch, when patching); raises
        the client's ApiException for any other answer than 2xx, as its own calls do."""
        api = self._api
        headers = {
            **api.default_headers,  # its User-Agent
            "Accept": "application/json",
            "Content-Type": MERGE_PATCH if method == "PATCH" else "application/json",
        }
        await api.update_params_for_auth(headers, [], ["BearerToken"])
        rest = api.rest_client
        async with rest.pool_manager.request(
            method,
            url,
            data=compact_json(body),
            headers=headers,
            timeout=_TIMEOUT,
            proxy=rest.proxy,
            proxy_headers=rest.proxy_headers,
            server_hostname=rest.server_hostname,
        ) as answer:
            data = await answer.read()
            if not 200 <= answer.status <= 299:
                raise refusal(answer.status, answer.reason, data)
        try:
            obj: JsonObject = parse_json(data)
        except ValueError as e:  # a proxy's page, say: no write of ours is known to be done
            raise ApiException(status=answer.status, reason=f"the answer is not JSON: {e}") from e
        return obj
