"""`GET /api/v1/openapi.json`: every route of `api.routes`, described from its declaration
and the marshmallow schemas that validate its input (apispec), so the document cannot
drift from the router or from what requests are checked against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

if TYPE_CHECKING:
    from api.routes import Route

OPENAPI = web.AppKey("openapi", dict[str, Any])
_PARAMETER = re.compile(r"{(\w+)}")


def build(routes: Iterable[Route]) -> dict[str, Any]:
    spec = APISpec(
        title="frp-adapter",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "responses": {
                str(status): {"description": text} for status, text in route.answers.items()
            },
        }
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAMETER.findall(route.path)
        ]
        if route.query is not None:
            parameters.append({"in": "query", "schema": route.query})
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            content_type, schema = route.body
            name = schema.__name__.removesuffix("Schema")
            if name not in spec.components.schemas:
                spec.components.schema(name, schema=schema)
            operation["requestBody"] = {
                "required": True,
                "content": {content_type: {"schema": name}},
            }
        if route.access.role is not None:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document: dict[str, Any] = spec.to_dict()
    return document


async def serve(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])
