"""frps's dashboard client: credentials given in its URL are used, and never shown."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from plugin.dashboard import DashboardError, FrpsDashboard, ProxyInfo
from tests.patched_frps import ADDRESS, PatchedFrps, frpc_unique_id


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


async def test_a_dashboard_that_never_answers_is_reported_as_timed_out_after_the_limit() -> None:
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _, w: accepted.append(w), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    try:
        async with aiohttp.ClientSession() as session:
            dashboard = FrpsDashboard(session, url, user="", password="", timeout=0.2)
            with pytest.raises(DashboardError) as failure:
                await dashboard.tcp_proxies()
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert str(failure.value) == f"GET {url}/api/proxy/tcp: timed out after 0.2 s"


# One entry of frps 0.65's `GET /api/proxy/tcp`, as a real frps answered for one frpc.
FRPS_0_65_ENTRY = (
    '{"name":"n1.ssh","conf":{"name":"n1.ssh","type":"tcp","transport":{"bandwidthLimit":"",'
    '"bandwidthLimitMode":"client"},"loadBalancer":{"group":""},"healthCheck":{"type":"",'
    '"intervalSeconds":0},"localIP":"127.0.0.1","plugin":null,"remotePort":6388},'
    '"clientVersion":"0.65.0","todayTrafficIn":0,"todayTrafficOut":0,"curConns":0,'
    '"lastStartTime":"11-26 02:01:42","lastCloseTime":"","status":"online"}'
)


async def listing_of(aiohttp_server: AiohttpServer, body: bytes, piece: int) -> object:
    """What `tcp_proxies` makes of `body`, sent `piece` bytes at a time."""

    async def proxies(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        for start in range(0, len(body), piece):
            await response.write(body[start : start + piece])
        return response

    app = web.Application()
    app.router.add_get("/api/proxy/tcp", proxies)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        dashboard = FrpsDashboard(session, str(server.make_url("")), user="", password="")
        try:
            return await dashboard.tcp_proxies()
        except DashboardError as e:
            return e


@pytest.mark.parametrize("piece", [1, 333, 1 << 20])
async def test_a_large_listing_is_read_one_proxy_at_a_time_as_it_arrives(
    aiohttp_server: AiohttpServer, piece: int
) -> None:
    entries = [
        FRPS_0_65_ENTRY.replace("n1.ssh", f"n{i}.ssh")
        .replace("6388", str(10000 + i))
        .replace('"online"', '"offline"' if i % 7 == 0 else '"online"')
        for i in range(300 if piece == 1 else 3000)
    ]
    body = ('{"proxies":[' + ",\n ".join(entries) + "]}\n").encode()
    proxies = await listing_of(aiohttp_server, body, piece)
    assert isinstance(proxies, dict)
    assert len(proxies) == len(entries)
    assert proxies["n8.ssh"] == ProxyInfo(online=True, remote_port=10008)
    assert proxies["n7.ssh"] == ProxyInfo(online=False, remote_port=10007)


@pytest.mark.parametrize("piece", [7, 1 << 20])
async def test_the_patched_frps_s_listing_tells_each_proxy_s_node_port_and_frps_address(
    aiohttp_server: AiohttpServer, piece: int
) -> None:
    frps = PatchedFrps()
    frps.nodes = {frpc_unique_id(i): None if i % 7 == 0 else 10000 + i for i in range(300)}
    proxies = await listing_of(aiohttp_server, frps.listing().encode(), piece)
    assert isinstance(proxies, dict)
    assert len(proxies) == 300
    n7, n8 = frpc_unique_id(7), frpc_unique_id(8)
    assert proxies[f"ssh-{n8}"] == ProxyInfo(
        online=True, remote_port=10008, unique_id=n8, frps_address=ADDRESS
    )
    assert proxies[f"ssh-{n7}"] == ProxyInfo(
        online=False, remote_port=None, unique_id=n7, frps_address=ADDRESS
    )


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"proxies":null}', "no proxies list"),
        ("404 page not found", "no proxies list"),
        ('{"proxies":[' + FRPS_0_65_ENTRY + "," + FRPS_0_65_ENTRY[:100], "the list broke off"),
        ('{"proxies":[' + FRPS_0_65_ENTRY + " " + FRPS_0_65_ENTRY + "]}", "',' or ']' expected"),
        ('{"proxies":[{"name":"a",}]}', "the list broke off"),
    ],
)
async def test_a_listing_that_is_not_frps_s_whole_answer_is_an_error_not_a_short_list(
    aiohttp_server: AiohttpServer, body: str, why: str
) -> None:
    failure = await listing_of(aiohttp_server, body.encode(), 50)
    assert isinstance(failure, DashboardError)
    assert why in str(failure)
