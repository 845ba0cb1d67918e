"""`frp-adapter port-forward`'s pump, in process: a connection that breaks either way is
said to have broken, where it was cut silently."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from pytest_aiohttp import AiohttpServer

from cli.client import _both_ways


async def forwarded(aiohttp_server: AiohttpServer, node_end: Handler) -> None:
    """The pump between a local connection and a WebSocket served by `node_end`."""
    app = web.Application()
    app.router.add_get("/", node_end)
    server = await aiohttp_server(app)
    theirs, ours = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    async with aiohttp.ClientSession() as session, session.ws_connect(server.make_url("/")) as ws:
        await asyncio.wait_for(_both_ways(reader, writer, ws, "node-1:80"), 30)
    theirs.close()


async def test_an_adapter_gone_without_a_close_frame_is_said(
    aiohttp_server: AiohttpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async def vanishing(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(b"first bytes")
        assert request.transport is not None
        request.transport.abort()
        return ws

    await forwarded(aiohttp_server, vanishing)
    err = capsys.readouterr().err
    assert err.startswith("frp-adapter: node-1:80: the connection broke off: ")


async def test_the_adapters_words_are_said_and_a_plain_end_is_silent(
    aiohttp_server: AiohttpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async def refusing(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close(code=aiohttp.WSCloseCode.INTERNAL_ERROR, message=b"port 80 refused")
        return ws

    await forwarded(aiohttp_server, refusing)
    assert capsys.readouterr().err == "frp-adapter: node-1:80: port 80 refused\n"

    async def ending(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    await forwarded(aiohttp_server, ending)
    assert capsys.readouterr().err == ""
