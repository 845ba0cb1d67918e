"""Who a bearer token is (TokenReview) and whether it may act on NMs (SubjectAccessReview).

Operators are then managed with ordinary RBAC on `nodemaintenances` and its `shell` and
`exec` subresources.
"""

from __future__ import annotations

import logging

from kubernetes_asyncio import client

from nodes.kubernetes.cache import PLURAL, REQUEST_TIMEOUT
from nodes.kubernetes.errors import ApiError, api_errors
from nodes.model import GROUP, JsonObject
from nodes.reviews import ReviewError

logger = logging.getLogger(__name__)

# Failures said in the log, each once: every request is reviewed while the API fails.
_TOLD_MEMORY = 100


class KubernetesReviewer:
    def __init__(self, api: client.ApiClient) -> None:
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
        self._told: set[str] = set()

    def _refused(self, e: ApiError) -> ReviewError:
        """The caller is told the status alone (the API's words may name our account, or
        quote what it was sent); the operator reads them in the log, once each."""
        if str(e) not in self._told and len(self._told) < _TOLD_MEMORY:
            self._told.add(str(e))
            logger.warning("%s; said once", e)
        return ReviewError(e.brief)

    async def user(self, token: str) -> JsonObject | None:
        """The token's user (`username`, `uid`, `groups`), None if the API does not know it."""
        try:
            with api_errors("TokenReview failed", REQUEST_TIMEOUT):
                review = await self._authn.create_token_review(
                    {
                        "apiVersion": "authentication.k8s.io/v1",
                        "kind": "TokenReview",
                        "spec": {"token": token},
                    },  # type: ignore[arg-type]
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except ApiError as e:
            raise self._refused(e) from e
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        return {
            "username": status.user.username or "",
            "uid": status.user.uid or "",
            "groups": list(status.user.groups or []),
        }

    async def allowed(
        self, user: JsonObject, *, verb: str, subresource: str, name: str | None
    ) -> bool:
        attributes: JsonObject = {"group": GROUP, "resource": PLURAL, "verb": verb}
        if subresource:
            attributes["subresource"] = subresource
        if name:
            attributes["name"] = name
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user["username"],
                "uid": user["uid"],
                "groups": user["groups"],
                "resourceAttributes": attributes,
            },
        }
        try:
            with api_errors("SubjectAccessReview failed", REQUEST_TIMEOUT):
                review = await self._authz.create_subject_access_review(
                    body,  # type: ignore[arg-type]
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except ApiError as e:
            raise self._refused(e) from e
        return bool(review.status and review.status.allowed)
