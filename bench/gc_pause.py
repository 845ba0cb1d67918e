"""What taking nodes' states off CPython's cyclic collector buys: a full collection with a
fleet in memory, with `nodes.model.untrack` as it is and with it doing nothing, each in a
process of its own, in the same run.

    python bench/gc_pause.py [--nodes 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nodes.model


async def pause(fleet: int, rounds: int) -> tuple[float, int]:
    """The median full collection, in ms, with `fleet` nodes online; objects tracked."""
    from nodes.registry import NodeRegistry  # noqa: PLC0415  (after `untrack` is chosen)
    from nodes.sqlite import SqliteStore  # noqa: PLC0415
    from nodes.writer import NodeWriter  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(str(Path(directory) / "nodes.db"))
        registry = NodeRegistry(NodeWriter(store), heartbeat_persist_interval=60)
        at = datetime.now(UTC)
        for i in range(fleet):
            change = nodes.model.NodeChange(
                reason="NewProxy",
                at=at,
                status=nodes.model.ONLINE,
                frps_address="127.0.0.1",
                proxy_name=f"node{i}.ssh",
                remote_port=10000 + i % 50000,
                run_id=f"run{i}",
            )
            registry.transition(nodes.model.UniqueId(f"node-{i}"), change)
        gc.collect()
        took = []
        for _ in range(rounds):
            start = time.perf_counter()
            gc.collect()
            took.append(time.perf_counter() - start)
        tracked = len(gc.get_objects())
        await store.close()
    return statistics.median(took) * 1000, tracked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--untrack", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.untrack:
        if args.untrack == "off":
            nodes.model.untrack.__code__ = (lambda obj: None).__code__
        took, tracked = asyncio.run(pause(args.nodes, args.rounds))
        print(f"{took:.1f} {tracked}")
        return
    figures = {}
    for mode in ("on", "off"):
        answer = subprocess.run(
            [
                sys.executable,
                __file__,
                "--nodes",
                str(args.nodes),
                "--rounds",
                str(args.rounds),
                "--untrack",
                mode,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        figures[mode] = float(answer[0]), int(answer[1])
        print(
            f"untrack {mode:>3}: full collection {figures[mode][0]:6.1f} ms, "
            f"{figures[mode][1]} objects tracked, {args.nodes} nodes"
        )
    print(f"ratio on / off: {figures['on'][0] / figures['off'][0]:.2f}")


if __name__ == "__main__":
    main()
