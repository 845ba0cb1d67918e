"""Heartbeat expiry, through the app on SQLite, on a clock the tests move: a node whose
Pings stop goes offline; a pause of the adapter itself is not a silence of the nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.keys import EXPIRY
from tests.clock import FakeClock
from tests.support import clock_of, new_proxy, ping, settings_for

Client = TestClient[web.Request, web.Application]
TIMEOUT = settings_for(Path()).heartbeat_timeout
PERIOD = TIMEOUT / 3  # how often silence is judged


async def status(client: Client, uid: str) -> tuple[str, str]:
    resp = await client.get(f"/api/v1/nodes/nodemaintenances-{uid}")
    assert resp.status == 200
    obj: dict[str, Any] = await resp.json()
    return obj["status"]["services"][0]["status"], obj["status"]["reason"]


async def post(client: Client, body: object) -> None:
    resp = await client.post("/frps/handler", json=body)
    assert (await resp.json())["reject"] is False


async def app(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    settings = settings_for(tmp_path, heartbeat_persist_interval=0)
    return await aiohttp_client(create_app(settings, clock=FakeClock()))


async def test_a_node_whose_pings_stop_goes_offline_and_its_next_ping_brings_it_back(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await app(tmp_path, aiohttp_client)
    await post(client, new_proxy("pinger", "pinger"))
    await post(client, new_proxy("quiet", "quiet"))  # frpc without a heartbeat: no Pings
    await post(client, ping("pinger", "pinger"))
    await clock_of(client).advance(TIMEOUT)
    assert await status(client, "pinger") == ("online", "NewProxy")
    await clock_of(client).advance(PERIOD)  # judged every third of the timeout
    assert await status(client, "pinger") == ("offline", "HeartbeatTimeout")
    assert (await status(client, "quiet"))[0] == "online"
    await post(client, ping("pinger", "pinger"))
    assert await status(client, "pinger") == ("online", "Ping")


async def test_a_frpc_whose_only_ping_came_before_its_new_proxy_still_expires(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """frpc pings from its Login on; a host that dies right after its NewProxy sent its
    last Ping before it. A Ping from an earlier frpc process (another run_id) does not
    make a node without a heartbeat a pinging one."""
    client = await app(tmp_path, aiohttp_client)
    await post(client, ping("early", "early"))
    await post(client, new_proxy("early", "early"))
    await post(client, ping("restarted", "restarted"))  # run_id r1, then no heartbeat
    await post(client, new_proxy("restarted", "restarted", run_id="r2"))
    await clock_of(client).advance(TIMEOUT + PERIOD)
    assert await status(client, "early") == ("offline", "HeartbeatTimeout")
    assert (await status(client, "restarted"))[0] == "online"


async def test_a_stalled_adapter_hears_the_pings_held_meanwhile_before_judging(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await app(tmp_path, aiohttp_client)
    clock = clock_of(client)
    await post(client, new_proxy("pinger", "pinger"))
    await post(client, ping("pinger", "pinger"))
    await clock.advance(2 * PERIOD)
    clock.stall(2 * TIMEOUT)  # SIGSTOP, a VM frozen: time passes, nothing runs
    await clock.advance(0)  # the loop wakes late, and knows it
    await post(client, ping("pinger", "pinger"))  # what frps held meanwhile
    assert await status(client, "pinger") == ("online", "NewProxy")
    await clock.advance(PERIOD)
    assert await status(client, "pinger") == ("online", "NewProxy")
    assert client.app[EXPIRY].stalls == 1
    await clock.advance(TIMEOUT + PERIOD)  # and a real silence is still judged
    assert await status(client, "pinger") == ("offline", "HeartbeatTimeout")


async def test_a_node_that_keeps_pinging_stays_online_for_as_long_as_it_pings(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """Each sweep looks only at nodes whose Ping it knows is a timeout old, and looks
    again at the latest Ping of those that pinged since."""
    client = await app(tmp_path, aiohttp_client)
    await post(client, new_proxy("steady", "steady"))
    await post(client, new_proxy("stops", "stops"))
    for _ in range(12):  # four timeouts
        await post(client, ping("steady", "steady"))
        await post(client, ping("stops", "stops"))
        await clock_of(client).advance(PERIOD)
    for _ in range(6):
        await post(client, ping("steady", "steady"))
        await clock_of(client).advance(PERIOD)
    assert await status(client, "steady") == ("online", "NewProxy")
    assert await status(client, "stops") == ("offline", "HeartbeatTimeout")
