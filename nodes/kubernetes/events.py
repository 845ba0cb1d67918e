"""A Kubernetes Event per online/offline change of a node, for `kubectl describe`; at most
one per node per interval, so a flapping node does not flood the namespace, and at most
`_EVENTS_PER_SECOND` (bursts of `_EVENT_BURST`) for the whole fleet, as kubelet limits its
own: a login storm of 100,000 nodes would otherwise post 100,000 Events to etcd."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from datetime import UTC

from cachetools import TTLCache
from kubernetes_asyncio import client

from nodes.clock import Clock
from nodes.kubernetes.cache import REQUEST_TIMEOUT
from nodes.kubernetes.errors import ApiError, api_errors
from nodes.model import GROUP, KIND, VERSION, JsonObject, NodeState, UniqueId
from nodes.tasks import Tasks

logger = logging.getLogger(__name__)

_EVENTS_PER_SECOND = 50.0
_EVENT_BURST = 100.0
_CONCURRENT_POSTS = 2
# Transitions dropped are said at most this often, with their count: said at every drop
# after the bucket refilled a token, a storm logged ~50 lines a second.
_SAY_INTERVAL = 60.0


class TransitionEvents:
    def __init__(
        self,
        core: client.CoreV1Api,
        *,
        namespace: str,
        min_interval: float,
        clock: Clock | None = None,
    ) -> None:
        self._core = core
        self._clock = clock or Clock()
        self._namespace = namespace
        self._min_interval = min_interval
        # The nodes that had an Event within the interval: a storm's are let go with it.
        self._recent: TTLCache[UniqueId, bool] = TTLCache(
            math.inf, min_interval, timer=self._clock.monotonic
        )
        self._tasks = Tasks("Kubernetes Event")
        self._sent = 0
        # A burst's posts one after another: all at once, their steps (the client's work
        # on each request and answer) ran in the same turns of the loop, which took 8-12 ms
        # each while a reconciliation corrected 500 nodes, and a Ping took three of them.
        self._posting = asyncio.Semaphore(_CONCURRENT_POSTS)
        # A token bucket of our own, not aiolimiter's: this decides at once, to post or
        # drop, on the process's clock; aiolimiter waits for capacity, on the loop's.
        self._tokens = _EVENT_BURST
        self._filled_at = self._clock.monotonic()
        self._dropped = 0
        self._said_at = -math.inf

    def record(self, state: NodeState, obj: JsonObject, before: JsonObject) -> None:
        """Post an Event if `state` changes the status `before` had (in the background)."""
        services = before.get("services") or [{}]
        if services[0].get("status") == state.status:
            return
        if state.unique_id in self._recent:
            return
        now = self._clock.monotonic()
        elapsed, self._filled_at = now - self._filled_at, now
        self._tokens = min(_EVENT_BURST, self._tokens + elapsed * _EVENTS_PER_SECOND)
        if self._tokens < 1:
            self._dropped += 1
            if now - self._said_at >= _SAY_INTERVAL:
                logger.warning(
                    "more than %.0f node transitions a second: the rest get no Kubernetes "
                    "Event (their NMs' status records them); %d since last said, said at "
                    "most once a minute",
                    _EVENTS_PER_SECOND,
                    self._dropped,
                )
                self._said_at, self._dropped = now, 0
            return
        self._tokens -= 1
        # Only a posted Event counts: a node whose Event a storm dropped gets its next one.
        self._recent[state.unique_id] = True
        online = state.status == "online"
        stamp = self._clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
        self._sent += 1
        self._tasks.spawn(self._sent, self._post(event))

    async def posted(self) -> None:
        """Return once every Event recorded so far is posted, or given up."""
        await self._tasks.wait()

    async def close(self) -> None:
        await self._tasks.close()

    async def _post(self, event: JsonObject) -> None:
        name = event["involvedObject"]["name"]
        try:
            with api_errors(f"event for {name} not recorded", REQUEST_TIMEOUT):
                async with self._posting:
                    # The client serialises a plain dict as it is, like the custom objects.
                    await self._core.create_namespaced_event(
                        self._namespace,
                        event,  # type: ignore[arg-type]
                        _request_timeout=REQUEST_TIMEOUT,
                    )
        except ApiError as e:
            # Events are a convenience for `kubectl describe`; the NM's status is the record.
            logger.warning("%s", e)
