"""The versioned read API: whole NodeMaintenance objects. Errors: `{"error", "details"}`."""

from __future__ import annotations

from aiohttp import web
from marshmallow import ValidationError

from api.keys import STORE
from nodes.model import ssh_endpoint
from nodes.store import StoreError
from schemas.rest import NodeListQuerySchema

_list_query = NodeListQuerySchema()


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/nodes", list_nodes)
    router.add_get("/api/v1/nodes/{nm_name}", get_node)


def _error(status: int, error: str, details: object) -> web.Response:
    return web.json_response({"error": error, "details": details}, status=status)


async def list_nodes(request: web.Request) -> web.Response:
    """`GET /api/v1/nodes[?status=online|offline]` -> `{"items": [NM, ...]}`."""
    try:
        query = _list_query.load(dict(request.query))
    except ValidationError as e:
        return _error(400, "invalid query", e.messages)
    try:
        items = await request.app[STORE].list()
    except StoreError as e:
        return _error(503, "store unavailable", str(e))
    if query["status"]:
        items = [obj for obj in items if ssh_endpoint(obj).status == query["status"]]
    return web.json_response({"items": items})


async def get_node(request: web.Request) -> web.Response:
    name = request.match_info["nm_name"]
    try:
        obj = await request.app[STORE].get(name)
    except StoreError as e:
        return _error(503, "store unavailable", str(e))
    if obj is None:
        return _error(404, "not found", {"name": name})
    return web.json_response(obj)
