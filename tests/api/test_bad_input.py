"""Bad input gets a clear 4xx on every route that reads a body or a query, never a 500:
bodies nested too deeply, bodies that do not match their Content-Encoding, shells in an
encoding a terminal cannot use, commands with a NUL."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from tests.support import settings_for

Client = TestClient[web.Request, web.Application]
DEEP = b"[" * 200_000
ROUTES = [
    ("POST", "/frp_create"),
    ("PUT", "/frp_update"),
    ("POST", "/reverse_proxy_shell"),
    ("POST", "/reverse_shell_command/nodemaintenances-a1"),
    ("POST", "/api/v1/nodes/nodemaintenances-a1/exec"),
    ("POST", "/api/v1/exec"),
]
BODIES = {
    "nested too deeply": (DEEP, {"Content-Type": "application/json"}),
    "gzip that is not": (
        b"not gzip",
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    ),
    "deflate that is not": (
        b"{}",
        {"Content-Type": "application/json", "Content-Encoding": "deflate"},
    ),
    "form in gzip that is not": (
        b"a=b",
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
    ),
}


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(settings_for(tmp_path, insecure_no_auth=True)))


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[p for _, p in ROUTES])
async def test_an_unreadable_body_is_a_400(
    client: Client, method: str, path: str, body: tuple[bytes, dict[str, str]]
) -> None:
    resp = await client.request(method, path, data=body[0], headers=body[1])
    assert resp.status == 400, await resp.text()


@pytest.mark.parametrize("encoding", ["utf-16", "utf_32_le", "cp500", "rot13", "nope"])
@pytest.mark.parametrize("path", ["/api/v1/nodes/nodemaintenances-a1/shell", "/reverse_proxy/x"])
async def test_a_shell_in_an_encoding_a_terminal_cannot_use_is_a_400_before_the_upgrade(
    client: Client, path: str, encoding: str
) -> None:
    resp = await client.get(
        path,
        params={"encoding": encoding},
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert resp.status == 400
    assert "encoding" in await resp.text()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/nodes/nodemaintenances-a1/exec", {"json": {"cmd": "ls\0 -l"}}),
        ("/api/v1/exec", {"json": {"cmd": "id\0", "status": "online"}}),
        ("/reverse_proxy_shell", {"data": {"nm_name": "nodemaintenances-a1", "cmd": "ls\0"}}),
    ],
)
async def test_a_command_with_a_nul_is_a_400(
    client: Client, path: str, body: dict[str, object]
) -> None:
    resp = await client.post(path, **body)  # type: ignore[arg-type]
    assert resp.status == 400
    assert "NUL" in await resp.text()
