"""Bad input gets a clear 4xx on every route that reads a body or a query, never a 500:
bodies nested too deeply, compressed bodies (415), shells in an
encoding a terminal cannot use, commands with a NUL."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from cli.logs import setup_logging
from tests.support import eventually, free_port, settings_for

Client = TestClient[web.Request, web.Application]
_FORM = "application/x-www-form-urlencoded"
DEEP = b"[" * 200_000
ROUTES = [
    ("POST", "/frp_create"),
    ("PUT", "/frp_update"),
    ("POST", "/reverse_proxy_shell"),
    ("POST", "/reverse_shell_command/nodemaintenances-a1"),
    ("POST", "/api/v1/nodes/nodemaintenances-a1/exec"),
    ("POST", "/api/v1/exec"),
]
COMPRESSED = {
    "gzip that is not": (b"not gzip", "application/json", "gzip"),
    "gzip that is": (gzip.compress(b'{"cmd": "id"}'), "application/json", "gzip"),
    "deflate that is not": (b"{}", "application/json", "deflate"),
    "a large deflate that is not": (b"[" * 100_000 + b"]" * 100_000, "application/json", "deflate"),
    "form in gzip that is not": (b"a=b", "application/x-www-form-urlencoded", "gzip"),
}


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(settings_for(tmp_path, insecure_no_auth=True)))


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[p for _, p in ROUTES])
async def test_a_body_nested_too_deeply_is_a_400(client: Client, method: str, path: str) -> None:
    resp = await client.request(
        method, path, data=DEEP, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400, await resp.text()


@pytest.mark.parametrize("body", COMPRESSED.values(), ids=COMPRESSED.keys())
@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[p for _, p in ROUTES])
async def test_a_compressed_body_is_refused_in_words_and_nothing_is_logged_as_an_error(
    client: Client,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: tuple[bytes, str, str],
) -> None:
    """The original (gin) decompressed no body; aiohttp did, before any handler could
    refuse: a deflate body that was not hung its request, and every lie logged an error."""
    data, content_type, encoding = body
    headers = {"Content-Type": content_type, "Content-Encoding": encoding}
    resp = await client.request(method, path, data=data, headers=headers)
    assert resp.status == 415, await resp.text()
    assert f"Content-Encoding '{encoding}': send the body uncompressed" in await resp.text()
    assert resp.headers["Accept-Encoding"] == "identity"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


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


@pytest.mark.parametrize(
    ("codings", "status"),
    [(["identity", "gzip"], 415), (["gzip, identity"], 415), ([" IDENTITY "], 200), ([""], 200)],
)
async def test_every_content_encoding_a_request_names_is_looked_at(
    client: Client, codings: list[str], status: int
) -> None:
    headers = CIMultiDict([("Content-Type", _FORM), *(("Content-Encoding", c) for c in codings)])
    resp = await client.post("/frp_create", data=b"unique_id=ce1&port=22", headers=headers)
    assert resp.status == status, await resp.text()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[web.Application, int]]:
    """The adapter served as `serve` serves it: aiohttp's test server cancels a handler
    whose client goes, where `serve` lets it run on and fail."""
    app = create_app(settings_for(tmp_path, insecure_no_auth=True))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield app, port
    finally:
        await runner.cleanup()


def answered(app: web.Application) -> float:
    """Requests the adapter's routes have ended, however they ended (their timer's count)."""
    return sum(
        sample.value
        for family in app[STATE].metrics.collect()
        if family.name == "frpa_http_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [*ROUTES, ("POST", "/frps/handler")],
    ids=[*(p for _, p in ROUTES), "plugin"],
)
async def test_a_body_broken_off_is_logged_as_no_error(
    served: tuple[web.Application, int],
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
) -> None:
    """Its client stops sending and closes its side: aiohttp raises ConnectionResetError,
    which was an ERROR traceback on every route that reads a body."""
    app, port = served
    before = answered(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    # Its handler called (it is, once aiohttp says to go on), part of the body, and no more.
    assert await asyncio.wait_for(reader.readline(), 30) == b"HTTP/1.1 100 Continue\r\n"
    writer.write(b'20\r\n{"cmd": "id", "ti')
    await writer.drain()
    writer.write_eof()

    async def ended() -> bool:
        return answered(app) > before

    await eventually(ended, within=30, what="the request ended")  # its error, if any, logged
    writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Header: 1\r\n\r\n",
    ],
    ids=["a line too long", "a header that is not one"],
)
async def test_a_request_aiohttp_cannot_read_is_a_400_and_no_error_of_ours(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture, request_head: bytes
) -> None:
    """Anyone may send one: at ERROR with a traceback, the log would be theirs to fill."""
    setup_logging(settings_for(tmp_path))
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(request_head)
    status = await asyncio.wait_for(reader.readline(), 30)  # said (or not) before it
    writer.close()
    assert status.split(b" ")[1] == b"400", status
    assert [r for r in caplog.records if r.name == "aiohttp.server"] == []
