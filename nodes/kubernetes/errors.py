"""The one place where the client's exceptions become ours, typed by what the API said:
call sites catch `APINotFoundError`, `APIConflictError`, `APIGoneError`, or any `ApiError`,
and never compare statuses (as kopf's `_cogs/clients/errors.py` does)."""

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


class APINotFoundError(ApiError):
    """404: no such object."""


class APIConflictError(ApiError):
    """409: another writer changed the object first (or created it)."""


class APIGoneError(ApiError):
    """410: the resourceVersion asked for is too old: list again."""


_BY_STATUS: dict[int, type[ApiError]] = {
    404: APINotFoundError,
    409: APIConflictError,
    410: APIGoneError,
}


@contextmanager
def api_errors(what: str, time_limit: float) -> Iterator[None]:
    """Raise ApiError (or the subclass for its status), saying `what` failed, for any
    failure of the API calls inside; `time_limit` is theirs (`_request_timeout`), for a
    message if it runs out."""
    try:
        yield
    except ApiException as e:
        # Error bodies can be long (kmock sends tracebacks); the status and reason suffice.
        error = _BY_STATUS.get(e.status, ApiError)
        raise error(f"{what}: HTTP {e.status} {e.reason}", e.status) from e
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ApiError(f"{what}: {cause(e, time_limit)}", None) from e
