"""Plugin endpoint throughput and latency, against a bare aiohttp handler, in the same run.

    python bench/plugin_throughput.py [--seconds 5] [--connections 16] [--nodes 20000]
                                      [--rounds 3]

Each server runs in its own process pinned to core 0; wrk (Debian's package), pinned to
core 1, sends each op over keep-alive connections, cycling through `--nodes` distinct
nodes as frps would (each node its own body). For each op, `--rounds` times, alternating:
requests/s and wrk's p50/p99 for the adapter (real app: SQLite store, writer, tracker)
and for a bare handler that reads the body and returns the same JSON; then the ratio of
the medians. Last, the adapter's own work
per request (parse, read, decide), timed in-process without HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.app import create_app
from api.keys import PLUGINS
from schemas.settings import Settings
from tests.support import free_port, login, new_proxy, ping

ALLOW = b'{"reject":false,"unchange":true}'
OPS = ("Ping", "Login", "NewProxy")
# wrk cycles through the bodies in a file, one per line, starting each thread elsewhere.
WRK_SCRIPT = """
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
function init(args) i = math.random(#bodies) end
function request()
  i = i %% #bodies + 1
  return wrk.format("POST", "/frps/handler?op=%s&version=0.1.0",
    {["Content-Type"] = "application/json", ["X-Frp-Reqid"] = "bench"}, bodies[i])
end
"""


def body(op: str, i: int) -> dict[str, Any]:
    name, uid = f"n{i}", f"bench-{i}"
    if op == "Ping":
        return ping(name, uid)
    if op == "Login":
        return login(name, uid)
    return new_proxy(name, uid, port=10000 + i % 50000)


async def bare_handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ALLOW, content_type="application/json")


def serve(kind: str, port: int, store_dir: str) -> None:
    os.sched_setaffinity(0, {0})
    if kind == "bare":
        app = web.Application()
        app.router.add_post("/frps/handler", bare_handler)
    else:
        app = create_app(Settings(store=f"sqlite:///{store_dir}/bench.db"))
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def wait_listening(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def wrk(port: int, script: Path, seconds: float, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{round(seconds)}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/frps/handler",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return rps, _millis(out, "50%"), _millis(out, "99%")


def _millis(out: str, quantile: str) -> float:
    value, unit = re.search(rf"{quantile}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def own_work_per_request(store_dir: str, nodes: int) -> dict[str, float]:
    """Microseconds of the adapter's own work per plugin request: parse, read, decide."""
    app = create_app(Settings(store=f"sqlite:///{store_dir}/own.db"))
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup_ctx: store, writer, tracker
    try:
        endpoint = app[PLUGINS].endpoints["default"]
        results = {}
        for op in OPS:
            raws = [json.dumps(body(op, i)).encode() for i in range(nodes)]
            start = time.perf_counter()
            for raw in raws:
                assert endpoint.decide(raw) is None
            results[op] = (time.perf_counter() - start) / nodes * 1e6
        return results
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["adapter", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.store_dir)
        return

    print(
        f"plugin endpoint, wrk with {args.connections} keep-alive connections, "
        f"{args.nodes} distinct nodes, {args.seconds} s per run"
    )
    print(f"{'op':8} {'server':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    with tempfile.TemporaryDirectory() as workdir:
        scripts = {}
        for op in OPS:
            bodies = Path(workdir) / f"{op}.jsonl"
            bodies.write_text("".join(json.dumps(body(op, i)) + "\n" for i in range(args.nodes)))
            scripts[op] = Path(workdir) / f"{op}.lua"
            scripts[op].write_text(WRK_SCRIPT % (bodies, op))
        results: dict[tuple[str, str], list[float]] = {}
        ports = {kind: free_port() for kind in ("bare", "adapter")}
        servers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    kind,
                    "--port",
                    str(port),
                    "--store-dir",
                    tempfile.mkdtemp(dir=workdir),
                ]
            )
            for kind, port in ports.items()
        ]
        try:
            for port in ports.values():
                wait_listening(port)
            for op in OPS:
                for _ in range(args.rounds):  # alternating, so drift hits both alike
                    for kind, port in ports.items():
                        rps, p50, p99 = wrk(port, scripts[op], args.seconds, args.connections)
                        results.setdefault((kind, op), []).append(rps)
                        print(f"{op:8} {kind:8} {rps:9.0f} {p50:8.2f} {p99:8.2f}", flush=True)
        finally:
            for server in servers:
                server.terminate()
                server.wait()
        for op in OPS:
            adapter, bare = (statistics.median(results[kind, op]) for kind in ("adapter", "bare"))
            print(f"ratio adapter/bare {op} (medians): {adapter / bare:.2f}")
        own = asyncio.run(own_work_per_request(workdir, args.nodes))
        for op, micros in own.items():
            print(f"adapter's own work per {op}: {micros:.1f} µs")


if __name__ == "__main__":
    main()
