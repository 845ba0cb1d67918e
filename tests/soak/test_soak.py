"""Soak: 50 real frpc nodes flap at random for minutes (SOAK_SECONDS, default 180); at
the end the stored state equals frps's dashboard for every node, and the adapter's
memory grew by less than SOAK_MAX_GROWTH_MB (default 50). Run with `tox -e soak`.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.peers import FrpSetup, Processes, frp_binaries
from tests.e2e.test_frp_nodes import dashboard, fetch
from tests.support import eventually, free_port

pytestmark = pytest.mark.soak

NODES = 50
SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
MAX_GROWTH_MB = float(os.environ.get("SOAK_MAX_GROWTH_MB", "50"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def frp(tmp_path: Path) -> AsyncIterator[FrpSetup]:
    processes = Processes(tmp_path)
    frps, frpc = frp_binaries(tmp_path)
    setup = FrpSetup(processes, frps, frpc, {"FRPA_STORE": f"sqlite:///{tmp_path / 'frpa.db'}"})
    try:
        await setup.start_adapter(FRPA_RECONCILE_INTERVAL="10", FRPA_LOG_LEVEL="WARNING")
        await setup.start_frps()
        yield setup
    finally:
        await processes.stop_all()


async def test_flapping_nodes_end_with_the_state_frps_has(frp: FrpSetup) -> None:
    rng = random.Random(20261125)
    ports = {f"soak{i}": free_port() for i in range(NODES)}
    for node, port in ports.items():
        frp.start_frpc(node, node, remote_port=port)
    await asyncio.sleep(5)
    adapter_pid = frp.processes.running["adapter"].pid
    rss_start = rss_mb(adapter_pid)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + SECONDS
    flips = 0
    while loop.time() < deadline:
        node = rng.choice(list(ports))
        if node in frp.processes.running:
            await frp.processes.stop(node, rng.choice([signal.SIGTERM, signal.SIGKILL]))
        else:
            frp.start_frpc(node, node, remote_port=ports[node])
        flips += 1
        await asyncio.sleep(rng.uniform(0.0, 0.4))

    async def agrees() -> bool:
        proxies = await dashboard(frp, "/api/proxy/tcp")
        truth = {p["name"]: p["status"] for p in proxies["proxies"]}
        for node in ports:
            stored = await fetch(frp, node)
            expected = truth.get(f"{node}.ssh", "offline")
            if stored is None or stored["status"] != expected:
                return False
        return True

    await eventually(agrees, within=60, what="stored state equal to frps's dashboard")
    growth = rss_mb(adapter_pid) - rss_start
    running = sum(1 for node in ports if node in frp.processes.running)
    print(
        f"soak: {flips} flips in {SECONDS:.0f} s, {running} nodes up at the end, "
        f"adapter RSS {rss_start:.1f} MB -> +{growth:.1f} MB"
    )
    assert growth < MAX_GROWTH_MB
