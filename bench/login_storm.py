"""A login storm (an frps restart): N nodes log in and open their SSH proxy at once.

    python bench/login_storm.py [--nodes 1000 10000] [--stores sqlite kubernetes]

The adapter runs as its own process (`python -m cli serve`); this process plays frps
(Login then NewProxy per node, over 64 keep-alive connections) and, for the Kubernetes
backend, serves the Kubernetes API peer (kmock, extended in tests/kube.py). Printed per
store and N: seconds until every NM is online in the store, plugin requests/s, and API
writes per node.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.peers import Processes
from tests.kube import running_kube
from tests.support import free_port, login, new_proxy

CONNECTIONS = 64
GIVE_UP_SECONDS = 300.0


def storm(port: int, nodes: int) -> Iterator[bytes]:
    for i in range(nodes):
        uid = f"storm-{i}"
        for body in (login(f"n{i}", uid), new_proxy(f"n{i}", uid, port=10000 + i % 50000)):
            raw = json.dumps(body).encode()
            yield (
                f"POST /frps/handler?op={body['op']}&version=0.1.0 HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(raw)}\r\n\r\n"
            ).encode() + raw


async def play_frps(port: int, requests: Iterator[bytes]) -> int:
    sent = 0

    async def connection() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in requests:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                assert b'"reject":false' in body, body
                sent += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return sent


async def run_storm(
    nodes: int, env: dict[str, str], workdir: Path, online: Callable[[], Awaitable[int]]
) -> tuple[float, float, float] | None:
    """Seconds until all `nodes` are online, plugin requests/s and the adapter's CPU
    seconds; None if never."""
    port = free_port()
    processes = Processes(workdir)
    try:
        await processes.start_adapter(port, {"FRPA_LOG_LEVEL": "WARNING", **env})
        start = time.perf_counter()
        sent = await play_frps(port, storm(port, nodes))
        answered = time.perf_counter() - start
        while time.perf_counter() - start < GIVE_UP_SECONDS:
            if await online() >= nodes:
                cpu = cpu_seconds(processes.running["adapter"].pid)
                return time.perf_counter() - start, sent / answered, cpu
            await asyncio.sleep(0.1)
        return None
    finally:
        await processes.stop_all()


async def sqlite_storm(nodes: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "storm.db"

        async def online() -> int:
            if not db.exists():
                return 0
            with closing(sqlite3.connect(db, timeout=5)) as conn:
                try:
                    (count,) = conn.execute(
                        "SELECT count(*) FROM nodemaintenances WHERE "
                        "json_extract(body, '$.status.services[0].status') = 'online'"
                    ).fetchone()
                except sqlite3.OperationalError:
                    return 0
            return int(count)

        result = await run_storm(nodes, {"FRPA_STORE": f"sqlite:///{db}"}, Path(tmp), online)
        with closing(sqlite3.connect(db)) as conn:
            (versions,) = conn.execute(
                "SELECT sum(resource_version) FROM nodemaintenances"
            ).fetchone()
        return report(result, (versions or 0) / nodes)


async def kubernetes_storm(nodes: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_kube(Path(tmp)) as (kube, kubeconfig):

            async def online() -> int:
                return sum(
                    1
                    for obj in kube.node_maintenances().values()
                    if obj.get("status", {}).get("services", [{}])[0].get("status") == "online"
                )

            kube.history_limit = 1
            env = {"FRPA_STORE": "kubernetes", "KUBECONFIG": str(kubeconfig)}
            result = await run_storm(nodes, env, Path(tmp), online)
            return report(result, kube.nm_writes / nodes)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(result: tuple[float, float, float] | None, writes_per_node: float) -> str:
    if result is None:
        return f"NOT all online within {GIVE_UP_SECONDS:.0f} s; {writes_per_node:.2f} writes/node"
    seconds, rps, cpu = result
    return (
        f"all online in {seconds:6.1f} s  {rps:7.0f} plugin req/s  "
        f"{writes_per_node:.2f} writes/node  adapter CPU {cpu:5.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "kubernetes"])
    args = parser.parse_args()
    runs = {"sqlite": sqlite_storm, "kubernetes": kubernetes_storm}
    for store, nodes in itertools.product(args.stores, args.nodes):
        print(f"{store:10} {nodes:6} nodes: {asyncio.run(runs[store](nodes))}", flush=True)


if __name__ == "__main__":
    main()
