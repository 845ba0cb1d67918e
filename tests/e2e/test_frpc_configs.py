"""frpc set-ups as people write them, against real frps 0.65 calling the adapter: every
proxy of every frpc starts (frpc logs `start proxy success` for each), edge node or not,
each frpc that names a node with an SSH proxy is online with the port frps bound, and
each whose SSH proxy the adapter does not take is warned of once, with its fix."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.corpus import FRPC_CONFIGS, FrpcConfig, frpc_toml, frps_extra
from tests.e2e.peers import FRP_TOKEN, FrpSetup, sqlite_frp
from tests.e2e.test_frp_nodes import dashboard_port, until_status
from tests.support import eventually, free_port

pytestmark = pytest.mark.e2e
CONFIGS = {conf.name: conf for conf in FRPC_CONFIGS}


@pytest.fixture
async def frp(tmp_path: Path) -> AsyncIterator[FrpSetup]:
    async with sqlite_frp(tmp_path) as setup:
        await setup.start_adapter()
        # Every op, so every call of every frpc goes through the adapter.
        await setup.start_frps(
            ops=("Login", "NewProxy", "CloseProxy", "Ping", "NewWorkConn", "NewUserConn"),
            extra=frps_extra(free_port(), free_port(), free_port()),
        )
        yield setup


def start(frp: FrpSetup, conf: FrpcConfig) -> int:
    """Start frpc with `conf`; the remote port its fixed-port SSH proxy asks for."""
    port = free_port()
    body = conf.body.format(port=port, port2=free_port(), local=frp.adapter_port)
    path = frp.processes.workdir / f"{conf.name}.toml"
    path.write_text(frpc_toml(frp.frps_port, FRP_TOKEN, body))
    frp.processes.start(conf.name, [str(frp.frpc), "-c", str(path)])
    return port


async def every_proxy_started(frp: FrpSetup, conf: FrpcConfig) -> None:
    async def started() -> bool:
        return len(re.findall("start proxy success", frp.processes.log(conf.name))) >= conf.proxies

    try:
        await eventually(started, within=20, what=f"{conf.name}: every proxy started")
    except AssertionError:
        raise AssertionError(frp.processes.log(conf.name)) from None
    assert "error" not in frp.processes.log(conf.name).lower()


async def warned_once(frp: FrpSetup, fix: str) -> None:
    async def warned() -> bool:
        return fix in frp.processes.log("adapter")

    await eventually(warned, what=f"the adapter's warning naming {fix}")
    lines = [line for line in frp.processes.log("adapter").splitlines() if fix in line]
    assert len(lines) == 1, lines
    assert "WARNING" in lines[0]


async def test_every_proxy_of_every_frpc_starts_and_ssh_nodes_are_online(frp: FrpSetup) -> None:
    # Both name a proxy "ssh" with no user prefix, so frps takes one at a time.
    first = [conf for conf in FRPC_CONFIGS if conf.name != "no-user-no-metas"]
    ports = {conf.name: start(frp, conf) for conf in first}
    for conf in first:
        await every_proxy_started(frp, conf)
        if conf.fix is not None:
            await warned_once(frp, conf.fix)
        if conf.ssh_node is None:
            continue
        node = await until_status(frp, conf.ssh_node, "online")
        user = re.search(r'^user = "(.*)"', conf.body, re.MULTILINE)
        proxy = re.search(r'name = "(.*)"', conf.body)
        assert proxy is not None
        name = f"{user[1]}.{proxy[1]}" if user else proxy[1]
        expected = str(ports[conf.name]) if conf.fixed_ssh_port else None
        assert node["proxy_port"] == (expected or await dashboard_port(frp, name))

    misnamed = sum(1 for conf in first if conf.fix)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{frp.adapter_url}/metrics") as resp,
    ):
        metrics = await resp.text()
    assert f'frpa_plugin_unhandled_total{{kind="unrecognised_ssh"}} {misnamed}.0' in metrics

    await frp.processes.stop("metas-without-user")
    anonymous = CONFIGS["no-user-no-metas"]
    start(frp, anonymous)
    await every_proxy_started(frp, anonymous)
    assert "Traceback" not in frp.processes.log("adapter")
