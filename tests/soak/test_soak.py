"""Soak: 50 real frpc nodes flap at random for minutes (SOAK_SECONDS, default 180), and
now and then the adapter is killed (SIGKILL) and started again; at the end the state in
the SQLite file equals frps's dashboard for every node, and the last adapter's memory
grew by less than SOAK_MAX_GROWTH_MB (default 50). Run with `tox -e soak`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.peers import FrpSetup, sqlite_frp
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


async def start_adapter(frp: FrpSetup) -> None:
    await frp.start_adapter(FRPA_RECONCILE_INTERVAL="10", FRPA_LOG_LEVEL="WARNING")


@pytest.fixture
async def frp(tmp_path: Path) -> AsyncIterator[FrpSetup]:
    async with sqlite_frp(tmp_path) as setup:
        await start_adapter(setup)
        await setup.start_frps()
        yield setup


def stored(path: Path) -> dict[str, str]:
    """Each node's status as the SQLite file has it, read beside the running adapter."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT name, body FROM nodemaintenances").fetchall()
    return {
        name.removeprefix("nodemaintenances-"): json.loads(body)["status"]["services"][0]["status"]
        for name, body in rows
    }


async def test_flapping_nodes_end_with_the_state_frps_has(frp: FrpSetup, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    ports = {f"soak{i}": free_port() for i in range(NODES)}
    for node, port in ports.items():
        frp.start_frpc(node, node, remote_port=port)
    await asyncio.sleep(5)
    adapter_pid = frp.processes.running["adapter"].pid
    rss_start = rss_mb(adapter_pid)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + SECONDS
    flips = kills = 0
    while loop.time() < deadline:
        if rng.random() < 0.03:  # the adapter dies with answered events not yet stored
            await frp.processes.stop("adapter", signal.SIGKILL)
            kills += 1
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            await start_adapter(frp)
            adapter_pid = frp.processes.running["adapter"].pid
            rss_start = rss_mb(adapter_pid)
            continue
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
        in_file = stored(tmp_path / "frpa.db")
        for node in ports:
            expected = truth.get(f"{node}.ssh", "offline")
            served = await fetch(frp, node)
            if in_file.get(node) != expected or served is None or served["status"] != expected:
                return False
        return True

    await eventually(agrees, within=60, what="stored state equal to frps's dashboard")
    growth = rss_mb(adapter_pid) - rss_start
    running = sum(1 for node in ports if node in frp.processes.running)
    print(
        f"soak: {flips} flips and {kills} adapter kills in {SECONDS:.0f} s, {running} nodes "
        f"up at the end, last adapter's RSS {rss_start:.1f} MB -> +{growth:.1f} MB"
    )
    assert growth < MAX_GROWTH_MB
