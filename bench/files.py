"""Files through the adapter against scp, both through the same frps port to one sshd.

    python bench/files.py [--megabytes 200] [--rounds 3]

A real frps and frpc expose a real OpenSSH sshd; the adapter (`python -m cli serve`)
reaches it through frps as it would any node. Each round uploads, then downloads, a
random file of N MB (a) through the adapter's files API (PUT, then GET) with curl and (b)
with OpenSSH's scp to the same frps remote port. Printed: MB/s each way for each, their
ratios (medians), and how much the adapter's resident memory grew during its transfers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.peers import FrpSetup, node_online, sshd_behind_frps
from tests.sshd import Sshd
from tests.support import TOKENS

NODE = "nodemaintenances-bench"
CHUNK = 1 << 20


def rss(pid: int) -> int:
    """Resident memory of process `pid`, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """The highest resident memory of a process while the block runs, sampled."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak = rss(pid)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PeakRss:
        async def sample() -> None:
            while True:
                self.peak = max(self.peak, rss(self._pid))
                await asyncio.sleep(0.02)

        self._task = asyncio.create_task(sample())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def through_adapter(
    frp: FrpSetup, local: Path, remote: Path, back: Path
) -> tuple[float, float]:
    """With curl as the client, as scp is OpenSSH's: the adapter is what is measured."""
    url = f"{frp.adapter_url}/api/v1/nodes/{NODE}/files?path={remote}"
    token = ["-H", f"Authorization: Bearer {TOKENS['operator']}", "-sS", "--fail"]
    times = []
    for transfer in (["-T", str(local), url], ["-o", str(back), url]):
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            "curl", *token, *transfer, stdout=asyncio.subprocess.DEVNULL
        )
        assert await process.wait() == 0
        times.append(time.perf_counter() - started)
    return times[0], times[1]


async def through_scp(
    sshd: Sshd, port: int, local: Path, remote: Path, back: Path
) -> tuple[float, float]:
    options = [
        "-q", "-P", str(port), "-i", str(sshd.user_key),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    ]  # fmt: skip
    times = []
    for source, destination in (
        (str(local), f"{sshd.user}@127.0.0.1:{remote}"),
        (f"{sshd.user}@127.0.0.1:{remote}", str(back)),
    ):
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec("scp", *options, source, destination)
        assert await process.wait() == 0
        times.append(time.perf_counter() - started)
    return times[0], times[1]


def same(a: Path, b: Path) -> bool:
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    return digests[0] == digests[1]


async def run(megabytes: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        local = directory / "source.bin"
        with local.open("wb") as file:
            for _ in range(megabytes):
                file.write(os.urandom(CHUNK))
        async with sshd_behind_frps(directory, FRPA_LOG_LEVEL="WARNING") as (frp, sshd):
            frp.start_frpc("bench", "bench", local_port=sshd.port)
            port = await node_online(frp, NODE)
            pid = frp.processes.running["adapter"].pid
            baseline = rss(pid)
            adapter_times, scp_times, peak = [], [], baseline
            for _ in range(rounds):
                async with PeakRss(pid) as memory:
                    adapter_times.append(
                        await through_adapter(
                            frp, local, directory / "a.bin", directory / "a-back.bin"
                        )
                    )
                peak = max(peak, memory.peak)
                assert same(local, directory / "a-back.bin")
                scp_times.append(
                    await through_scp(
                        sshd, port, local, directory / "s.bin", directory / "s-back.bin"
                    )
                )
                assert same(local, directory / "s-back.bin")
    print(f"{megabytes} MB through one frps port to one sshd, {rounds} rounds")
    for i, ((a_up, a_down), (s_up, s_down)) in enumerate(
        zip(adapter_times, scp_times, strict=True)
    ):
        ours = f"up {megabytes / a_up:6.1f} MB/s down {megabytes / a_down:6.1f} MB/s"
        theirs = f"up {megabytes / s_up:6.1f} MB/s down {megabytes / s_down:6.1f} MB/s"
        print(f"round {i + 1}: adapter {ours}; scp {theirs}")
    for way, index in (("up", 0), ("down", 1)):
        adapter = statistics.median(megabytes / t[index] for t in adapter_times)
        scp = statistics.median(megabytes / t[index] for t in scp_times)
        print(f"ratio adapter/scp {way} (medians): {adapter / scp:.2f}")
    growth = (peak - baseline) >> 20
    print(f"adapter RSS: {baseline >> 20} MB before, at most {peak >> 20} MB during (+{growth} MB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.megabytes, args.rounds))


if __name__ == "__main__":
    main()
