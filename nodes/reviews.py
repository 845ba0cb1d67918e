"""Authentication and authorization of API callers by the cluster the NMs live in."""

from __future__ import annotations

from typing import Protocol

from nodes.model import JsonObject


class ReviewError(Exception):
    """The cluster could not answer a review; the caller is neither let in nor refused."""


class Reviewer(Protocol):
    """TokenReview and SubjectAccessReview; both raise ReviewError when the API cannot
    answer."""

    async def user(self, token: str) -> JsonObject | None: ...

    async def allowed(
        self, user: JsonObject, *, verb: str, subresource: str, name: str | None
    ) -> bool: ...
