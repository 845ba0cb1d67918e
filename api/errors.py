"""Every refusal's HTTP answer, decided here alone: its status, its envelope, its words.

Handlers and the access guard raise `AdapterError`s (`nodes.errors`, `ssh`, `api.audit`,
and the refusals of HTTP itself below); `rendered`, the wrapper `api.routes` puts around
every guarded route, turns one into its answer: `{"error", "details"}` under `/api/`,
the original's `{"code", "error": {"message"}}` on the original's routes. `ANSWERS` gives
each class its status, the same in both envelopes. Open routes (the frps plugin, probes,
metrics) are not wrapped, so the plugin path pays nothing for this, and raise none.

A WebSocket route refuses with these before its upgrade; after it, it sends its own error
frame.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from api.audit import AuditUnavailableError
from api.gojson import go_json_response
from nodes.errors import (
    AdapterError,
    InvalidInputError,
    NodeNotFoundError,
    NotLoadedError,
    NotStoredError,
)
from ssh.connector import (
    FrpsUnreachableError,
    HostKeyMismatchError,
    NodeOfflineError,
    NodeTimeoutError,
    NotConfiguredError,
    SshError,
)
from ssh.files import FileError, NoSuchFileError


class UnauthorizedError(AdapterError):
    """No token, or one nobody issued."""

    kind = "unauthorized"


class ForbiddenError(AdapterError):
    """The caller, or the page that made a browser call, may not do this."""

    kind = "forbidden"


class AuthNotConfiguredError(AdapterError):
    """A guarded route while no authentication is configured."""

    kind = "disabled without authentication"


class TokenUncheckedError(AdapterError):
    """The Kubernetes API could not say who a token belongs to, or what it may do."""

    kind = "cannot check the token"


class TooLargeError(AdapterError):
    """A body over FRPA_MAX_UPLOAD_BYTES."""

    kind = "too large"


class UnsupportedEncodingError(AdapterError):
    """A body in a Content-Encoding: the adapter takes bodies as sent, as the original did."""

    kind = "unsupported content encoding"


class TooManyError(AdapterError):
    """The caller has as many shells or forwards open as it may; `kind` says which."""

    kind = "too many"


class InsufficientStorageError(AdapterError):
    """The adapter's own disk cannot hold what it must keep."""

    kind = "insufficient storage"


class RangeNotSatisfiableError(AdapterError):
    """The one byte range asked for is not in the file of `size` bytes."""

    kind = "range not satisfiable"

    def __init__(self, path: str, size: int) -> None:
        super().__init__(f"{path} has {size} bytes")
        self.size = size


class NotKeptError(AdapterError):
    """What was asked for is not kept here: a recording, or a log the settings keep none of."""

    kind = "not kept"


class CommandFailedError(AdapterError):
    """The original's exec: the command could not run, or did not exit 0 (the original
    answered 400 for both, an offline node's too)."""

    kind = "command failed"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    # The original's envelope says "<kind>: <details>" (else the details alone).
    kind_first: bool = False
    headers: Callable[[AdapterError], Mapping[str, str]] | None = None


def _content_range(error: AdapterError) -> Mapping[str, str]:
    assert isinstance(error, RangeNotSatisfiableError)
    return {hdrs.CONTENT_RANGE: f"bytes */{error.size}"}


# Every class, its own line (tests/api/test_errors.py fails for a class without one).
ANSWERS: Mapping[type[AdapterError], Answer] = {
    InvalidInputError: Answer(400),
    FileError: Answer(400),
    CommandFailedError: Answer(400),
    UnauthorizedError: Answer(401, True, lambda _: {hdrs.WWW_AUTHENTICATE: "Bearer"}),
    ForbiddenError: Answer(403, True),
    NodeNotFoundError: Answer(404),
    NoSuchFileError: Answer(404),
    NotKeptError: Answer(404),
    NodeOfflineError: Answer(409),
    TooLargeError: Answer(413),
    UnsupportedEncodingError: Answer(415, headers=lambda _: {hdrs.ACCEPT_ENCODING: "identity"}),
    RangeNotSatisfiableError: Answer(416, headers=_content_range),
    TooManyError: Answer(429),
    AdapterError: Answer(500),
    SshError: Answer(502),
    HostKeyMismatchError: Answer(502),
    NotLoadedError: Answer(503),
    NotStoredError: Answer(503),
    FrpsUnreachableError: Answer(503),
    NotConfiguredError: Answer(503),
    AuthNotConfiguredError: Answer(503, True),
    TokenUncheckedError: Answer(503, True),
    AuditUnavailableError: Answer(503, True),
    NodeTimeoutError: Answer(504),
    InsufficientStorageError: Answer(507),
}


def answer_of(error: AdapterError) -> Answer:
    """The answer of `error`'s class, or of its nearest ancestor that has one."""
    for cls in type(error).__mro__:
        found = ANSWERS.get(cls)
        if found is not None:
            return found
    raise AssertionError("AdapterError is in ANSWERS")  # pragma: no cover


def answer(request: web.Request, error: AdapterError) -> web.Response:
    """`error` as the route of `request` answers it."""
    how = answer_of(error)
    headers = how.headers(error) if how.headers is not None else None
    if is_original(request):
        if how.kind_first:
            message = f"{error.kind}: {error}"
        elif isinstance(error.details, str):
            message = error.details
        else:
            message = f"{error.kind}: {json.dumps(error.details)}"
        original = {"code": how.status, "error": {"message": message}}
        return go_json_response(original, status=how.status, headers=headers)
    body = {"error": error.kind, "details": error.details}
    return web.json_response(body, status=how.status, headers=headers)


def is_original(request: web.Request) -> bool:
    """Whether `request` is to one of the original's routes (those not under `/api/`)."""
    return not request.path.startswith("/api/")


def rendered(handler: Handler) -> Handler:
    """`handler`, its AdapterErrors answered as `answer` has them."""

    @functools.wraps(handler)
    async def rendering(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except AdapterError as e:
            return answer(request, e)

    return rendering
