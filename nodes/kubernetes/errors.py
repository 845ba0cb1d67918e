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
from schemas import parse_json

# Statuses a later retry may cure; anything else (400, 403, 422) is the request's own fault.
_TRANSIENT = frozenset((429, 500, 502, 503, 504))
# A Status's message is said up to this long: RBAC's names the verb, resource and user
# in ~200 characters; a webhook's may quote a whole object.
_MESSAGE_LIMIT = 500


class ApiError(StoreError):
    """A Kubernetes API call failed; `status` is the HTTP status, None if none came.
    `brief` is the message without the API's own words (`said`), for whom must not read
    them: they may name the adapter's account, or quote what it sent."""

    def __init__(self, message: str, status: int | None, said: str = "") -> None:
        super().__init__(message + said)
        self.status = status
        self.brief = message

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
        error = _BY_STATUS.get(e.status, ApiError)
        raise error(f"{what}: HTTP {e.status} {e.reason}", e.status, _message(e.body)) from e
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ApiError(f"{what}: {cause(e, time_limit)}", None) from e


def refusal(status: int, reason: str | None, body: bytes) -> ApiException:
    """The client's exception for an answer that is not 2xx, with its body, as the client's
    own calls raise it: `api_errors` says the Status's message."""
    e = ApiException(status=status, reason=reason)
    e.body = body
    return e


def _message(body: object) -> str:
    """`: <message>` of a Kubernetes Status body (e.g. "nodemaintenances is forbidden: User
    ... cannot watch resource ..."); "" for any other body: kmock answers tracebacks, a
    proxy its page, and neither says more than the status."""
    if not isinstance(body, (bytes, str)) or not body:
        return ""
    try:
        status = parse_json(body)
    except ValueError:
        return ""
    if not isinstance(status, dict) or status.get("kind") != "Status":
        return ""
    message = status.get("message")
    if not isinstance(message, str) or not message:
        return ""
    said = " ".join(message[:_MESSAGE_LIMIT].split())  # a line of its own could pass for ours
    return f": {said}" + ("..." if len(message) > _MESSAGE_LIMIT else "")
