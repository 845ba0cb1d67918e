"""`GET /api/v1/openapi.json`: the HTTP API described from the marshmallow schemas that
validate it (apispec), so the document cannot drift from what requests are checked
against. The WebSocket shells and the frps plugin endpoint are described in README.md.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from schemas.rest import (
    BatchExecSchema,
    ExecSchema,
    FrpCreateSchema,
    FrpUpdateSchema,
    NodeListQuerySchema,
    OriginalExecSchema,
)

_NAME = {"name": "nm_name", "in": "path", "required": True, "schema": {"type": "string"}}
_ERRORS = {
    "400": {"description": "invalid input"},
    "401": {"description": "no valid bearer token"},
    "403": {"description": "not allowed to this caller"},
}
_ORIGINAL_ERRORS = {**_ERRORS, "404": {"description": "no such node"}}
_SSH_ERRORS = {
    **_ORIGINAL_ERRORS,
    "409": {"description": "node offline"},
    "502": {"description": "the node's sshd cannot be reached or is not trusted"},
    "503": {"description": "shell and exec are disabled, or SSH is not configured"},
}
_OK = {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}}


def _json(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _form(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": schema}},
    }


def build() -> dict[str, Any]:
    spec = APISpec(
        title="frp-adapter",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in (
        ("Exec", ExecSchema),
        ("BatchExec", BatchExecSchema),
        ("FrpCreate", FrpCreateSchema),
        ("FrpUpdate", FrpUpdateSchema),
        ("OriginalExec", OriginalExecSchema),
    ):
        spec.components.schema(name, schema=schema)
    paths: dict[str, dict[str, Any]] = {
        "/api/v1/nodes": {
            "get": {
                "summary": "every NodeMaintenance, optionally by status",
                "parameters": [{"in": "query", "schema": NodeListQuerySchema}],
                "responses": {"200": _OK, **_ERRORS},
            }
        },
        "/api/v1/nodes/{nm_name}": {
            "get": {
                "summary": "one NodeMaintenance",
                "parameters": [_NAME],
                "responses": {"200": _OK, **_ORIGINAL_ERRORS},
            }
        },
        "/api/v1/nodes/{nm_name}/exec": {
            "post": {
                "summary": "run a command on a node",
                "parameters": [_NAME],
                "requestBody": _json("Exec"),
                "responses": {"200": _OK, **_SSH_ERRORS},
            }
        },
        "/api/v1/exec": {
            "post": {
                "summary": "run a command on many nodes; one NDJSON line per node",
                "requestBody": _json("BatchExec"),
                "responses": {
                    "200": {"description": "results", "content": {"application/x-ndjson": {}}},
                    **_SSH_ERRORS,
                },
            }
        },
        "/api/v1/nodes/{nm_name}/host-key": {
            "delete": {
                "summary": "forget the node's pinned sshd host key",
                "parameters": [_NAME],
                "responses": {"200": _OK, **_ORIGINAL_ERRORS},
            }
        },
        "/api/v1/nodes/{nm_name}/frpc-token": {
            "post": {
                "summary": "issue the node's own frpc token (shown once)",
                "parameters": [_NAME],
                "responses": {"200": _OK, **_ERRORS, "503": {"description": "not stored"}},
            }
        },
        "/frp_fetch/{nm_name}": {
            "get": {
                "summary": "the original: where to dial a node, and its status",
                "parameters": [_NAME],
                "responses": {"200": _OK, **_ORIGINAL_ERRORS, "503": {"description": "store"}},
            }
        },
        "/frp_create": {
            "post": {
                "summary": "the original: create a node, or mark it online",
                "requestBody": _form("FrpCreate"),
                "responses": {"200": _OK, **_ERRORS, "503": {"description": "not stored"}},
            }
        },
        "/frp_update": {
            "put": {
                "summary": "the original: update a node",
                "requestBody": _form("FrpUpdate"),
                "responses": {"200": _OK, **_ERRORS, "503": {"description": "not stored"}},
            }
        },
        "/reverse_shell_command/{nm_name}": {
            "post": {
                "summary": "the original's exec, node in the path",
                "parameters": [_NAME],
                "requestBody": _form("OriginalExec"),
                "responses": {"200": _OK, **_SSH_ERRORS},
            }
        },
        "/reverse_proxy_shell": {
            "post": {
                "summary": "the original's exec, node in the form",
                "requestBody": _form("OriginalExec"),
                "responses": {"200": _OK, **_SSH_ERRORS},
            }
        },
    }
    for path, operations in paths.items():
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
        spec.path(path=path, operations=operations)
    document: dict[str, Any] = spec.to_dict()
    return document


OPENAPI = web.AppKey("openapi", dict[str, Any])


def add_routes(app: web.Application) -> None:
    app[OPENAPI] = build()
    app.router.add_get("/api/v1/openapi.json", _serve)


async def _serve(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])
