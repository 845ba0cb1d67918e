"""`uptime` on N nodes: the adapter's batch exec vs parallel-ssh vs ssh one node at a time.

    python bench/batch_exec.py [--nodes 50 200] [--concurrency 100]

N nodes are N NodeMaintenances pointing at one real OpenSSH sshd on 127.0.0.1 (each a
separate SSH connection, as N edge nodes would be). Printed per N: seconds until every
node's output is in, for (a) `POST /api/v1/exec` on the adapter (`python -m cli serve`),
timed in this process until the last NDJSON line; (b) parallel-ssh's ParallelSSHClient,
in a process and a virtualenv of its own (`bench/parallel_ssh.py`); (c) `ssh` run once
per node, one after another. Ratios against the adapter follow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import parallel_ssh
from tests.e2e.peers import Processes
from tests.sshd import Sshd, adapter_env, running_sshd
from tests.support import free_port


async def adapter_batch(url: str, nodes: int, concurrency: int) -> float:
    names = [f"nodemaintenances-batch-{i}" for i in range(nodes)]
    body = {"cmd": "uptime", "nodes": names, "concurrency": concurrency}
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        async with session.post(f"{url}/api/v1/exec", json=body) as resp:
            lines = [json.loads(line) async for line in resp.content]
        elapsed = time.perf_counter() - start
    failed = [line for line in lines if line.get("exit_status") != 0]
    assert len(lines) == nodes
    assert not failed, failed[:3]
    return elapsed


async def sequential_ssh(sshd: Sshd, nodes: int) -> float:
    start = time.perf_counter()
    for _ in range(nodes):
        process = await asyncio.create_subprocess_exec(
            "ssh", "-q", "-i", str(sshd.user_key), "-p", str(sshd.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            f"{sshd.user}@127.0.0.1", "uptime",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        assert b"load average" in out
    return time.perf_counter() - start


async def main(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        processes = Processes(workdir)
        async with AsyncExitStack() as stack:
            sshd = await stack.enter_async_context(running_sshd(workdir / "ssh"))
            stack.push_async_callback(processes.stop_all)
            port = free_port()
            await processes.start_adapter(port, adapter_env(sshd, workdir))
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                for i in range(max(args.nodes)):
                    form = {
                        "frp_server_ip_address": "127.0.0.1",
                        "unique_id": f"batch-{i}",
                        "port": sshd.port,
                    }
                    async with session.post(f"{url}/frp_create", data=form) as resp:
                        assert resp.status == 200, await resp.text()
            await adapter_batch(url, 5, 5)  # first dials pin each node's host key
            for nodes in args.nodes:
                ours = await adapter_batch(url, nodes, args.concurrency)
                theirs = parallel_ssh.uptime(sshd, [sshd.port] * nodes, args.concurrency)
                one_by_one = await sequential_ssh(sshd, nodes)
                rows.append((nodes, ours, theirs, one_by_one))

    print(f"uptime on N nodes, concurrency {args.concurrency}; seconds until all output is in")
    print(f"{'N':>5} {'adapter':>9} {'parallel-ssh':>13} {'sequential ssh':>15} "
          f"{'pssh/adapter':>13} {'seq/adapter':>12}")  # fmt: skip
    for nodes, ours, theirs, one_by_one in rows:
        print(
            f"{nodes:>5} {ours:>9.2f} {theirs:>13.2f} {one_by_one:>15.2f} "
            f"{theirs / ours:>13.2f} {one_by_one / ours:>12.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--concurrency", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
