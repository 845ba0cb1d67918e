"""The route table is the one source: the router, the access rules and the OpenAPI document
are all made from it, and agree with it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from api import console
from api.app import create_app
from api.auth import Rule
from api.callers import Role
from api.routes import ROUTES, document, rules
from tests.support import settings_for, tokens_file


def test_the_router_serves_exactly_the_table(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))
    served = {
        (route.method, route.resource.canonical): inspect.unwrap(route.handler)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served == {(route.method, route.path): route.handler for route in ROUTES}
    assert rules().keys() == served.keys()


def test_the_document_describes_every_route_with_its_parameters_and_rule() -> None:
    openapi = document()
    described = {
        (method.upper(), path)
        for path, operations in openapi["paths"].items()
        for method in operations
    }
    assert described == {(route.method, route.path) for route in ROUTES}
    for route in ROUTES:
        operation = openapi["paths"][route.path][route.method.lower()]
        in_path = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", route.path)), route.path
        assert ("security" in operation) == (route.access.role is not None), route.path
        assert set(operation["responses"]) == {str(status) for status in route.answers}


def test_a_guarded_route_cannot_be_declared_without_its_kubernetes_verb() -> None:
    with pytest.raises(ValueError, match="Kubernetes verb"):
        Rule(Role.READ)


async def test_an_app_with_a_route_outside_the_table_does_not_start(tmp_path: Path) -> None:
    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="should not be seen")

    app = create_app(settings_for(tmp_path, api_tokens_file=str(tokens_file(tmp_path))))
    app.router.add_get("/not-in-the-table", secret)
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match=r"GET /not-in-the-table is not in api\.routes\.ROUTES"):
        await runner.setup()
    await runner.cleanup()


async def test_without_a_build_the_console_says_how_to_make_one(
    tmp_path: Path, aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "BUILT", tmp_path / "not-built")
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    resp = await client.get("/ui/")
    assert resp.status == 503
    assert "npm --prefix web ci" in await resp.text()
    assert (await client.get("/ui/assets/console.js")).status == 404
