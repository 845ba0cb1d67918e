"""frps's dashboard client: credentials given in its URL are used, and never shown."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from plugin.dashboard import DashboardError, FrpsDashboard


async def test_credentials_in_the_url_are_sent_and_left_out_of_every_message(
    aiohttp_server: AiohttpServer,
) -> None:
    seen: list[str] = []

    async def proxies(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/api/proxy/tcp", proxies)
    server = await aiohttp_server(app)
    url = f"http://admin:pa55word@127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        dashboard = FrpsDashboard(session, url, user="", password="")
        with pytest.raises(DashboardError) as failure:
            await dashboard.tcp_proxies()
    assert seen == [aiohttp.encode_basic_auth("admin", "pa55word")]
    assert "pa55word" not in str(failure.value)
    assert dashboard.base_url == f"http://127.0.0.1:{server.port}"
