"""Heartbeat expiry, through the app on SQLite, on a clock the tests move: a node whose
Pings stop goes offline; a pause of the adapter itself is not a silence of the nodes."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from tests.clock import FakeClock
from tests.support import clock_of, new_proxy, node_status, ping, plugin_post, settings_for

Client = TestClient[web.Request, web.Application]
TIMEOUT = settings_for(Path()).heartbeat_timeout
PERIOD = TIMEOUT / 3  # how often silence is judged


async def app(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    settings = settings_for(tmp_path, heartbeat_persist_interval=0)
    return await aiohttp_client(create_app(settings, clock=FakeClock()))


async def test_a_node_whose_pings_stop_goes_offline_and_its_next_ping_brings_it_back(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await app(tmp_path, aiohttp_client)
    await plugin_post(client, new_proxy("pinger", "pinger"))
    await plugin_post(client, new_proxy("quiet", "quiet"))  # frpc without a heartbeat: no Pings
    await plugin_post(client, ping("pinger", "pinger"))
    await clock_of(client).advance(TIMEOUT)
    assert await node_status(client, "pinger") == ("online", "NewProxy")
    await clock_of(client).advance(PERIOD)  # judged every third of the timeout
    assert await node_status(client, "pinger") == ("offline", "HeartbeatTimeout")
    assert (await node_status(client, "quiet"))[0] == "online"
    await plugin_post(client, ping("pinger", "pinger"))
    assert await node_status(client, "pinger") == ("online", "Ping")


async def test_a_frpc_whose_only_ping_came_before_its_new_proxy_still_expires(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """frpc pings from its Login on; a host that dies right after its NewProxy sent its
    last Ping before it. A Ping from an earlier frpc process (another run_id) does not
    make a node without a heartbeat a pinging one."""
    client = await app(tmp_path, aiohttp_client)
    await plugin_post(client, ping("early", "early"))
    await plugin_post(client, new_proxy("early", "early"))
    await plugin_post(client, ping("restarted", "restarted"))  # run_id r1, then no heartbeat
    await plugin_post(client, new_proxy("restarted", "restarted", run_id="r2"))
    await clock_of(client).advance(TIMEOUT + PERIOD)
    assert await node_status(client, "early") == ("offline", "HeartbeatTimeout")
    assert (await node_status(client, "restarted"))[0] == "online"


async def test_a_stalled_adapter_hears_the_pings_held_meanwhile_before_judging(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await app(tmp_path, aiohttp_client)
    clock = clock_of(client)
    await plugin_post(client, new_proxy("pinger", "pinger"))
    await plugin_post(client, ping("pinger", "pinger"))
    await clock.advance(2 * PERIOD)
    clock.stall(2 * TIMEOUT)  # SIGSTOP, a VM frozen: time passes, nothing runs
    await clock.advance(0)  # the loop wakes late, and knows it
    await plugin_post(client, ping("pinger", "pinger"))  # what frps held meanwhile
    assert await node_status(client, "pinger") == ("online", "NewProxy")
    await clock.advance(PERIOD)
    assert await node_status(client, "pinger") == ("online", "NewProxy")
    assert client.app[STATE].adapter.expiry.stalls == 1
    await clock.advance(TIMEOUT + PERIOD)  # and a real silence is still judged
    assert await node_status(client, "pinger") == ("offline", "HeartbeatTimeout")


async def test_a_node_that_keeps_pinging_stays_online_for_as_long_as_it_pings(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """Each sweep looks only at nodes whose Ping it knows is a timeout old, and looks
    again at the latest Ping of those that pinged since."""
    client = await app(tmp_path, aiohttp_client)
    await plugin_post(client, new_proxy("steady", "steady"))
    await plugin_post(client, new_proxy("stops", "stops"))
    for _ in range(12):  # four timeouts
        await plugin_post(client, ping("steady", "steady"))
        await plugin_post(client, ping("stops", "stops"))
        await clock_of(client).advance(PERIOD)
    for _ in range(6):
        await plugin_post(client, ping("steady", "steady"))
        await clock_of(client).advance(PERIOD)
    assert await node_status(client, "steady") == ("online", "NewProxy")
    assert await node_status(client, "stops") == ("offline", "HeartbeatTimeout")
