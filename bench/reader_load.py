"""Plugin latency while a crowd lists nodes: the connect path must not wait behind readers.
With --stalled: a client's list latency while other clients never read their list.

    python bench/reader_load.py [--nodes 5000 50000] [--readers 32 64] [--seconds 8]
    python bench/reader_load.py --stalled 0 2 10 [--nodes 5000] [--seconds 8]

N nodes are stored in SQLite before the adapter (`python -m cli serve`, pinned to core 0)
starts. R clients (one process, core 1) each page through `GET /api/v1/nodes` (default
page, following `continue`) in a loop, while this process sends a plugin Ping every
10 ms on a keep-alive connection, as frps does, and a real frpc 0.65 logs in through a
real frps. Printed per N and R: Ping p50/p99/max, list pages/s and whole lists/s, and
the frpc's time to log in and start its proxy. The peer is the same adapter with no
readers (R = 0), in the same run.

--stalled S: S raw sockets (receive buffer 4 KiB) each ask for a page of every node and
never read, while one aiohttp client in this process lists every node (`limit=N`, one
page) in a loop, from 2 s after they are answered (the adapter renders what fills its
socket buffers first). Printed per S: that client's lists done, list p50/p99 (a list that has
not answered within --seconds counts as blocked), and its watch's time to the first
BOOKMARK (every node in). S = 0 is the peer, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import termios
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.plugin_throughput import wait_listening
from nodes.model import NodeState, UniqueId
from nodes.sqlite import SqliteStore
from tests.e2e.peers import FRP_TOKEN, FrpSetup, Processes, frp_binaries
from tests.support import free_port, ping

ROOT = Path(__file__).resolve().parents[1]
PING = (
    b"POST /frps/handler?op=Ping&version=0.1.0 HTTP/1.1\r\nHost: a\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
)


async def fill(path: Path, nodes: int) -> None:
    store = SqliteStore(str(path))
    now = datetime.now(UTC)
    for start in range(0, nodes, 5000):
        await store.apply(
            [
                NodeState(
                    unique_id=UniqueId(f"bench-{i:06}"),
                    status="online" if i % 4 else "offline",
                    reason="NewProxy",
                    last_transition=now,
                    updated_at=now,
                    frps_address="127.0.0.1",
                    remote_port=10000 + i % 50000,
                    run_id=f"{i:016x}",
                    proxy_name=f"n{i}.ssh",
                    client_address="198.51.100.9:40000",
                    frpc_version="0.65.0",
                )
                for i in range(start, min(start + 5000, nodes))
            ]
        )
    await store.close()


def readers(port: int, count: int, seconds: float) -> None:
    """In its own process: `count` clients paging through the node list until time is up."""
    os.sched_setaffinity(0, {1})
    os.nice(19)  # the Ping client shares this core: it must not wait behind the crowd
    pages = lists = 0

    async def one(session: aiohttp.ClientSession, until: float) -> None:
        nonlocal pages, lists
        while time.monotonic() < until:
            token = None
            while True:
                params: dict[str, str] = {"continue": token} if token else {}
                async with session.get(f"http://127.0.0.1:{port}/api/v1/nodes", params=params) as r:
                    body = await r.read()
                pages += 1
                found = re.search(rb'"continue": ?"([^"]+)"', body[-200:])
                if not found:
                    break
                token = found[1].decode()
            lists += 1

    async def run() -> None:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
        ) as session:
            until = time.monotonic() + seconds
            await asyncio.gather(*(one(session, until) for _ in range(count)))

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    print(f"READERS {pages / elapsed:.1f} {lists / elapsed:.2f}", flush=True)


async def ping_latencies(port: int, seconds: float) -> list[float]:
    body = json.dumps(ping()).encode()
    request = PING % len(body) + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        start = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(0.01)
    writer.close()
    return latencies


async def frpc_login(frp: FrpSetup, name: str) -> tuple[float, float]:
    """Seconds until a fresh frpc logged in, and until its proxy started."""
    start = time.monotonic()
    frp.start_frpc(name, name, remote_port=free_port())
    logged_in = started = 0.0
    while not started and time.monotonic() - start < 30:
        log = frp.processes.log(name)
        if not logged_in and "login to server success" in log:
            logged_in = time.monotonic() - start
        if "start proxy success" in log:
            started = time.monotonic() - start
        await asyncio.sleep(0.005)
    await frp.processes.stop(name)
    return logged_in, started


def quantiles(latencies: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1000, q[98] * 1000, max(latencies) * 1000


def start_adapter(processes: Processes, port: int, db: Path) -> None:
    """The adapter on one core, serving the nodes stored in `db`, once it listens."""
    processes.start(
        "adapter",
        ["taskset", "-c", "0", sys.executable, "-m", "cli", "serve"],
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FRP_ADAPTER_ADDRESS": f"127.0.0.1:{port}",
            "FRPA_STORE": f"sqlite:///{db}",
            "FRPA_LOG_LEVEL": "WARNING",
        },
    )
    wait_listening(port)


async def run(nodes: int, reader_counts: list[int], seconds: float) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        db = Path(workdir) / "frpa.db"
        await fill(db, nodes)
        processes = Processes(Path(workdir))
        frps, frpc = frp_binaries(Path(workdir))
        frp = FrpSetup(processes, frps, frpc, {"FRPA_STORE": f"sqlite:///{db}"})
        try:
            start_adapter(processes, frp.adapter_port, db)
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{frp.adapter_port}/api/v1/nodes?limit=1"
                async with session.get(url) as resp:  # waits for the load
                    assert resp.status == 200, await resp.text()
            await frp.start_frps()
            for count in [0, *reader_counts]:
                crowd = None
                if count:
                    crowd = await asyncio.create_subprocess_exec(
                        *(sys.executable, __file__, "--read", str(frp.adapter_port)),
                        *(str(count), str(seconds + 1)),
                        stdout=asyncio.subprocess.PIPE,
                    )
                    await asyncio.sleep(1)
                pings = asyncio.ensure_future(ping_latencies(frp.adapter_port, seconds - 1))
                await asyncio.sleep(1)
                login, proxy = await frpc_login(frp, f"probe-{count}")
                p50, p99, worst = quantiles(await pings)
                read = "-"
                if crowd is not None:
                    out, _ = await crowd.communicate()
                    pages, lists = out.decode().split()[1:3]
                    read = f"{float(pages):8.1f} {float(lists):8.2f}"
                print(
                    f"{nodes:7} {count:3} {p50:8.2f} {p99:8.2f} {worst:8.1f} "
                    f"{login:7.2f} {proxy:7.2f}   {read}",
                    flush=True,
                )
        finally:
            await processes.stop_all()


def stall(port: int, nodes: int) -> socket.socket:
    """A client that asks for a page of `nodes` nodes and never reads a byte of it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /api/v1/nodes?limit={nodes} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    return sock


def unread(sock: socket.socket) -> int:
    """Bytes the adapter sent that wait, unread, in the socket."""
    waiting = bytearray(4)
    fcntl.ioctl(sock, termios.FIONREAD, waiting)
    return int.from_bytes(waiting, sys.byteorder)


async def list_latencies(
    session: aiohttp.ClientSession, url: str, seconds: float
) -> tuple[list[float], bool]:
    """Seconds per whole list, listed one after another for `seconds`; and whether a list
    did not answer within `seconds` (blocked)."""
    latencies: list[float] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(seconds):
                async with session.get(url) as resp:
                    await resp.read()
        except TimeoutError:
            return latencies, True
        latencies.append(time.perf_counter() - start)
    return latencies, False


async def watch_dump(session: aiohttp.ClientSession, url: str, seconds: float) -> float | None:
    """Seconds until a watch has every node in (its first BOOKMARK); None: not within
    `seconds`."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(seconds), session.get(url, params={"watch": "true"}) as resp:
            while b"BOOKMARK" not in await resp.content.readline():
                pass
    except TimeoutError:
        return None
    return time.perf_counter() - start


async def run_stalled(nodes: int, stalled_counts: list[int], seconds: float) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        db = Path(workdir) / "frpa.db"
        await fill(db, nodes)
        processes = Processes(Path(workdir))
        port = free_port()
        try:
            start_adapter(processes, port, db)
            url = f"http://127.0.0.1:{port}/api/v1/nodes"
            async with aiohttp.ClientSession() as session:
                async with session.get(url, params={"limit": "1"}) as resp:  # waits for the load
                    assert resp.status == 200, await resp.text()
                for count in stalled_counts:
                    socks = [stall(port, nodes) for _ in range(count)]
                    # Each is stalled once the adapter's answer fills its buffers (or
                    # waits behind the others for its turn, before the change).
                    for _ in range(40):
                        if all(unread(sock) for sock in socks):
                            break
                        await asyncio.sleep(0.05)
                    answering = sum(1 for sock in socks if unread(sock))
                    # Before they stall, their answers fill the adapter's socket buffers
                    # (~2.8 MB of a 4.3 MB page each, on loopback): measured after that.
                    await asyncio.sleep(2)
                    latencies, blocked = await list_latencies(
                        session, f"{url}?limit={nodes}", seconds
                    )
                    dumped = await watch_dump(session, url, seconds)
                    for sock in socks:
                        sock.close()
                    p50 = p99 = f"{'-':>8}"
                    if len(latencies) > 1:
                        q = statistics.quantiles(latencies, n=100)
                        p50, p99 = f"{q[49] * 1000:8.1f}", f"{q[98] * 1000:8.1f}"
                    watch = f"{dumped:8.2f}" if dumped is not None else f"{'blocked':>8}"
                    print(
                        f"{nodes:7} {count:3} {answering:9} {len(latencies):6} {p50} {p99} "
                        f"{'blocked' if blocked else '':>8} {watch}",
                        flush=True,
                    )
        finally:
            await processes.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+")
    parser.add_argument("--readers", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--stalled", type=int, nargs="+")
    parser.add_argument("--read", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        readers(int(args.read[0]), int(args.read[1]), float(args.read[2]))
        return
    os.sched_setaffinity(0, {1})
    if args.stalled:
        print(f"S clients never read a page; one client lists every node for {args.seconds:g} s")
        print(
            f"{'nodes':>7} {'S':>3} {'answering':>9} {'lists':>6} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'':>8} {'watch s':>8}"
        )
        for nodes in args.nodes or [5000]:
            asyncio.run(run_stalled(nodes, args.stalled, args.seconds))
        return
    print(f"frp token {FRP_TOKEN!r}; Ping every 10 ms; R = 0 is the peer (no readers)")
    print(
        f"{'nodes':>7} {'R':>3} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'login s':>7} {'proxy s':>7}   {'pages/s':>8} {'lists/s':>8}"
    )
    for nodes in args.nodes or [5000, 50000]:
        asyncio.run(run(nodes, args.readers, args.seconds))


if __name__ == "__main__":
    main()
