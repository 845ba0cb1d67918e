"""A port forward through the adapter against `ssh -L`, both through the same frps port.

    python bench/portforward.py [--megabytes 200] [--rounds 3]

A real frps and frpc expose a real OpenSSH sshd; on the "node" (this machine) a TCP
server sends N MB to whoever connects. Each round reads them (a) through
`frp-adapter port-forward` (the adapter's WebSocket to an SSH direct-tcpip channel) and
(b) through `ssh -N -L` to the same frps remote port. Printed: MB/s for each, and their
ratio (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.files import NODE
from tests.e2e.peers import node_online, sshd_behind_frps
from tests.support import TOKENS, eventually, free_port, listening

CHUNK = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


async def read_all(port: int) -> float:
    """Seconds to read everything the node's server sends, through 127.0.0.1:`port`."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while await reader.read(CHUNK):
        pass
    writer.close()
    return time.perf_counter() - started


async def run(megabytes: int, rounds: int) -> None:
    block = os.urandom(CHUNK)

    async def source(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):  # the readiness probes hang up at once
            for _block in range(megabytes):
                writer.write(block)
                await writer.drain()
        writer.close()

    server_port = free_port()
    server = await asyncio.start_server(source, "127.0.0.1", server_port)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        async with (
            server,
            sshd_behind_frps(directory, FRPA_LOG_LEVEL="WARNING") as (frp, sshd),
        ):
            frp.start_frpc("bench", "bench", local_port=sshd.port)
            frps_port = await node_online(frp, NODE)
            through_adapter, through_ssh = free_port(), free_port()
            env = {**os.environ, "FRPA_TOKEN": TOKENS["operator"]}
            frp.processes.start(
                "forward",
                [sys.executable, "-m", "cli", "port-forward", "--url", frp.adapter_url,
                 NODE, f"{through_adapter}:{server_port}"],
                env={**env, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            frp.processes.start(
                "ssh",
                ["ssh", "-N", "-p", str(frps_port), "-i", str(sshd.user_key),
                 "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-L", f"{through_ssh}:127.0.0.1:{server_port}", f"{sshd.user}@127.0.0.1"],
            )  # fmt: skip
            for port in (through_adapter, through_ssh):
                await eventually(partial(listening, port), what=f"{port} listening")
            adapter_times, ssh_times = [], []
            for _ in range(rounds):
                adapter_times.append(await read_all(through_adapter))
                ssh_times.append(await read_all(through_ssh))
    print(f"{megabytes} MB from a node's port, through one frps port, {rounds} rounds")
    for i, (a, s) in enumerate(zip(adapter_times, ssh_times, strict=True)):
        print(f"round {i + 1}: adapter {megabytes / a:6.1f} MB/s; ssh -L {megabytes / s:6.1f} MB/s")
    ratio = statistics.median(ssh_times) / statistics.median(adapter_times)
    print(f"ratio adapter/ssh -L (medians): {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.megabytes, args.rounds))


if __name__ == "__main__":
    main()
