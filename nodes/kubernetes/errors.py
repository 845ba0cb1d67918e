"""The one place where the client's exceptions become ours: call sites catch `ApiError`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from nodes.clock import cause
from nodes.store import StoreError

# Statuses a later retry may cure; anything else (400, 403, 422) is the request's own fault.
_TRANSIENT = frozenset((429, 500, 502, 503, 504))


class ApiError(StoreError):
    """A Kubernetes API call failed; `status` is the HTTP status, None if none came."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in _TRANSIENT


@contextmanager
def api_errors(what: str, time_limit: float) -> Iterator[None]:
    """Raise ApiError, saying `what` failed, for any failure of the API calls inside;
    `time_limit` is theirs (`_request_timeout`), for a message if it runs out."""
    try:
        yield
    except ApiException as e:
        # Error bodies can be long (kmock sends tracebacks); the status and reason suffice.
        raise ApiError(f"{what}: HTTP {e.status} {e.reason}", e.status) from e
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ApiError(f"{what}: {cause(e, time_limit)}", None) from e
