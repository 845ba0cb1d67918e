"""Plugin endpoint throughput and latency, against a bare aiohttp handler, in the same run.

    python bench/plugin_throughput.py [--seconds 5] [--connections 16]

Each server runs in its own process pinned to one core (core 0); the load generator, a
raw-socket HTTP/1.1 keep-alive client, runs pinned to the other core, so the servers are
what is measured. For each op: requests/s and client-side p50/p99 latency for the
adapter (real app: SQLite store, writer, tracker) and for a bare handler that returns
the same JSON; then the ratio. Last, the adapter's own work per request (parse,
validate, decide), timed in-process without HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.app import create_app
from api.keys import PLUGINS
from api.settings import Settings
from tests.support import free_port, login, new_proxy, ping

ALLOW = b'{"reject":false,"unchange":true}'
BODIES = {"Ping": ping(), "Login": login()}


async def bare_handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ALLOW, content_type="application/json")


def serve(kind: str, port: int, store_dir: str) -> None:
    os.sched_setaffinity(0, {0})
    if kind == "bare":
        app = web.Application()
        app.router.add_post("/frps/handler", bare_handler)
    else:
        app = create_app(Settings(store_url=f"sqlite:///{store_dir}/bench.db"))
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def request_bytes(port: int, op: str) -> bytes:
    body = json.dumps(BODIES[op]).encode()
    head = (
        f"POST /frps/handler?op={op}&version=0.1.0 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-Frp-Reqid: bench\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_connection(port: int, request: bytes, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            assert b'"unchange":true' in body, body
    finally:
        writer.close()


async def load(port: int, op: str, seconds: float, connections: int) -> tuple[float, float, float]:
    request = request_bytes(port, op)
    warm: list[float] = []
    await asyncio.gather(
        *(one_connection(port, request, time.perf_counter() + 0.5, warm) for _ in range(4))
    )
    latencies: list[float] = []
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(
        *(one_connection(port, request, until, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, quantiles[49] * 1000, quantiles[98] * 1000


def wait_listening(port: int) -> None:
    import socket  # noqa: PLC0415

    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


async def own_work_per_request(store_dir: str, n: int = 20000) -> dict[str, float]:
    """Microseconds of the adapter's own work per plugin request: parse, validate, decide."""
    app = create_app(Settings(store_url=f"sqlite:///{store_dir}/own.db"))
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup_ctx: store, writer, tracker
    try:
        endpoint = app[PLUGINS]["default"]
        endpoint.decide(json.dumps(new_proxy()).encode())
        results = {}
        for op, body in BODIES.items():
            raw = json.dumps(body).encode()
            start = time.perf_counter()
            for _ in range(n):
                endpoint.decide(raw)
            results[op] = (time.perf_counter() - start) / n * 1e6
        return results
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", choices=["adapter", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.store_dir)
        return

    os.sched_setaffinity(0, {min(1, (os.cpu_count() or 1) - 1)})
    print(f"plugin endpoint, {args.connections} keep-alive connections, {args.seconds} s per run")
    print(f"{'op':6} {'server':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    with tempfile.TemporaryDirectory() as store_dir:
        results: dict[tuple[str, str], float] = {}
        for kind in ("bare", "adapter"):
            port = free_port()
            command = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
            with subprocess.Popen([*command, "--store-dir", store_dir]) as server:
                try:
                    wait_listening(port)
                    for op in BODIES:
                        rps, p50, p99 = asyncio.run(load(port, op, args.seconds, args.connections))
                        results[(kind, op)] = rps
                        print(f"{op:6} {kind:8} {rps:9.0f} {p50:8.2f} {p99:8.2f}")
                finally:
                    server.terminate()
        for op in BODIES:
            ratio = results[("adapter", op)] / results[("bare", op)]
            print(f"ratio adapter/bare {op}: {ratio:.2f}")
        own = asyncio.run(own_work_per_request(store_dir))
        for op, micros in own.items():
            print(f"adapter's own work per {op}: {micros:.1f} µs")


if __name__ == "__main__":
    main()
