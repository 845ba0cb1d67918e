"""FRPA_PLUGIN_ADDRESS: frps's plugin calls on a listener of their own, aiohttp's
low-level server, matched on the paths the route table declares; the API's port then
answers 404 on them."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from nodes.model import UniqueId
from schemas.settings import FrpsServer
from tests.support import free_port, login, new_proxy, settings_for

SECRET = "s3cret-s3cret-s3cret"
ALLOW = {"reject": False, "unchange": True}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def api(tmp_path: Path, port: int, aiohttp_client: AiohttpClient) -> Client:
    settings = settings_for(
        tmp_path,
        plugin_address=("127.0.0.1", port),
        plugin_secret=SECRET,
        frps_servers=(
            FrpsServer("edge", "203.0.113.7", None, 7000),
            FrpsServer("lab", "198.51.100.1", None, 7000),
        ),
        frps_address=None,
    )
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    session: aiohttp.ClientSession, url: str, body: object, method: str = "POST"
) -> tuple[int, str]:
    async with session.request(method, url, data=json.dumps(body)) as resp:
        return resp.status, await resp.text()


async def test_frps_calls_reach_the_adapter_on_the_listener_alone(
    api: Client, port: int, session: aiohttp.ClientSession
) -> None:
    listener = f"http://127.0.0.1:{port}"
    for body in (login(), new_proxy()):
        status, text = await call(session, f"{listener}/frps/handler/{SECRET}?op=x", body)
        assert (status, json.loads(text)) == (200, ALLOW)
    registry = api.app[STATE].adapter.registry
    node = registry.get(UniqueId("abc123"))
    assert node is not None
    assert (node.status, node.frps_address) == ("online", "203.0.113.7")
    # Each frps by its name, as on the API's port.
    status, _ = await call(session, f"{listener}/frps/lab/handler/{SECRET}", new_proxy("n2", "x2"))
    assert status == 200
    other = registry.get(UniqueId("x2"))
    assert other is not None
    assert other.frps_address == "198.51.100.1"
    # The API's port no longer takes them.
    resp = await api.post(f"/frps/handler/{SECRET}", json=new_proxy("n3", "x3"))
    assert resp.status == 404
    assert registry.get(UniqueId("x3")) is None


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/frps/handler/wrong-secret", 404),
        ("POST", "/frps/handler", 404),  # the secret is set: a path without it is unknown
        ("POST", f"/frps/nowhere/handler/{SECRET}", 404),
        ("POST", "/api/v1/nodes", 404),  # nothing of the API is here
        ("POST", f"/frps/handler/{SECRET}/more", 404),
        ("GET", f"/frps/handler/{SECRET}", 405),
    ],
)
async def test_the_listener_answers_nothing_but_the_plugin(
    api: Client,
    port: int,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    expected: int,
) -> None:
    status, _ = await call(session, f"http://127.0.0.1:{port}{path}", new_proxy(), method)
    assert status == expected
    assert api.app[STATE].adapter.registry.get(UniqueId("abc123")) is None


async def test_bad_input_on_the_listener_is_allowed_and_counted(
    api: Client, port: int, session: aiohttp.ClientSession
) -> None:
    url = f"http://127.0.0.1:{port}/frps/handler/{SECRET}"
    for text in ('{"op": "Login", "content": NaN}', "\ud800", "[" * 5000):
        async with session.post(url, data=text.encode(errors="surrogatepass")) as resp:
            assert (resp.status, await resp.json()) == (200, ALLOW)
    plugins = api.app[STATE].adapter.plugins
    assert plugins.endpoints["edge"].unhandled["unreadable"] == 3


async def test_the_listeners_calls_are_timed_by_their_route_template_and_never_logged(
    api: Client, port: int, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await call(session, f"http://127.0.0.1:{port}/frps/handler/{SECRET}", login())
    assert SECRET not in caplog.text  # aiohttp's access log would show the path
    text = await (await api.get("/metrics")).text()
    assert (
        'frpa_http_request_duration_seconds_count{method="POST",route="/frps/handler/{secret}"} 1.0'
        in text
    )
    assert SECRET not in text


async def test_a_compressed_body_on_the_listener_is_allowed_as_unreadable_at_once(
    api: Client, port: int, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The listener decompresses nothing either: a deflate body that was not hung its call."""
    body = b"[" * 100_000 + b"]" * 100_000
    url = f"http://127.0.0.1:{port}/frps/handler/{SECRET}"
    headers, within = {"Content-Encoding": "deflate"}, aiohttp.ClientTimeout(total=60)
    async with session.post(url, data=body, headers=headers, timeout=within) as resp:
        assert (resp.status, await resp.json()) == (200, ALLOW)
    assert api.app[STATE].adapter.plugins.endpoints["edge"].unhandled["unreadable"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
