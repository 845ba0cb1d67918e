"""What the adapter refuses or fails to do for a caller, as typed errors, and nothing of HTTP.

Raised where the cause is known (`nodes`, `ssh`, `api`); rendered in one place,
`api.errors`, which alone decides each class's HTTP status and the envelope each route
answers in. `kind` names the error in a few words (the versioned API's `"error"`, an audit
record's `error: <kind>`, a batch's per-node line); `details` says why, in words or as
field -> messages.
"""

from __future__ import annotations

import json


class AdapterError(Exception):
    """A request the adapter cannot carry out; subclasses say which kind of failure."""

    kind = "failed"

    def __init__(self, details: object, *, kind: str | None = None) -> None:
        super().__init__(details if isinstance(details, str) else json.dumps(details))
        self.details = details
        if kind is not None:
            self.kind = kind  # this one's own wording of its class


class InvalidInputError(AdapterError):
    """What the caller sent cannot be used: bad syntax, a bad field, a bad name."""

    kind = "invalid input"


class NodeNotFoundError(AdapterError):
    """No node of that name is known."""

    kind = "not found"


class NotLoadedError(AdapterError):
    """The stored nodes are not in memory yet: try again."""

    kind = "not loaded yet"


class NotStoredError(AdapterError):
    """The store did not confirm a change in time; it stays queued."""

    kind = "not stored yet"
