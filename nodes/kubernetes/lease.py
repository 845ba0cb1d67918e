"""Leader election among replicas on a `coordination.k8s.io/v1` Lease, as client-go does it.

The holder renews the Lease every retry period; another replica takes it over once it has
seen the same record, unrenewed, for a whole lease duration by its own clock (no clocks
are compared across machines). Every write carries the resourceVersion it read, so of two
replicas racing for an expired Lease exactly one wins. A leader that cannot renew steps
down before its Lease could have been taken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC

from kubernetes_asyncio import client

from nodes.clock import Clock
from nodes.kubernetes.cache import REQUEST_TIMEOUT
from nodes.kubernetes.errors import APIConflictError, ApiError, APINotFoundError, api_errors
from nodes.kubernetes.writes import MERGE_PATCH
from nodes.model import JsonObject

logger = logging.getLogger(__name__)

LEASE_NAME = "frp-adapter-leader"
LEASE_SECONDS = 15
# Leader election's retry period (client-go's), not the retry policy: the lease's timings
# (when the holder steps down, when another takes over) are built on it being fixed.
RETRY_SECONDS = 2.0


class LeaseLeadership:
    def __init__(
        self, api: client.ApiClient, *, namespace: str, identity: str, clock: Clock
    ) -> None:
        self._leases = client.CoordinationV1Api(api)
        self._namespace = namespace
        self._clock = clock
        self.identity = identity
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None

    @property
    def leading(self) -> bool:
        renewed = self._renewed_at
        # Step down a retry period early: by then another replica may be about to take over.
        margin = LEASE_SECONDS - 2 * RETRY_SECONDS
        return renewed is not None and self._clock.monotonic() - renewed < margin

    async def run(self, on_gain: Callable[[], None]) -> None:
        while True:
            was_leading = self.leading
            try:
                await self._try_to_lead()
            except APIConflictError:
                pass  # another replica wrote first; read again next time
            except ApiError as e:
                logger.warning("%s", e)
            if self.leading and not was_leading:
                logger.info("leading as %s", self.identity)
                on_gain()
            elif was_leading and not self.leading:
                logger.warning("no longer leading (%s)", self.identity)
            await self._clock.sleep(RETRY_SECONDS)

    async def release(self) -> None:
        if not self.leading:
            return
        self._renewed_at = None
        try:
            with api_errors("could not release the leader lease", REQUEST_TIMEOUT):
                await self._leases.patch_namespaced_lease(
                    LEASE_NAME,
                    self._namespace,
                    {"spec": {"holderIdentity": None, "leaseDurationSeconds": 1}},
                    _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # taken, not typed
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except ApiError as e:
            logger.warning("%s", e)

    async def _try_to_lead(self) -> None:
        now = self._clock.monotonic()
        try:
            with api_errors("leader election", REQUEST_TIMEOUT):
                lease = await self._leases.read_namespaced_lease(
                    LEASE_NAME, self._namespace, _request_timeout=REQUEST_TIMEOUT
                )
        except APINotFoundError:
            with api_errors("leader election", REQUEST_TIMEOUT):
                await self._leases.create_namespaced_lease(
                    self._namespace,
                    {  # type: ignore[arg-type]
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": LEASE_NAME},
                        "spec": self._spec(acquired=True, transitions=0),
                    },
                    _request_timeout=REQUEST_TIMEOUT,
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
        with api_errors("leader election", REQUEST_TIMEOUT):
            await self._leases.patch_namespaced_lease(
                LEASE_NAME,
                self._namespace,
                {
                    "metadata": {"resourceVersion": lease.metadata.resource_version},
                    "spec": self._spec(
                        acquired=not mine, transitions=(spec.lease_transitions or 0) + (not mine)
                    ),
                },
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # taken, not typed
                _request_timeout=REQUEST_TIMEOUT,
            )
        self._renewed_at = now

    def _spec(self, *, acquired: bool, transitions: int) -> JsonObject:
        stamp = self._clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec: JsonObject = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }
        if acquired:
            spec["acquireTime"] = stamp
        return spec
