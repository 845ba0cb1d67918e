"""Plugin endpoint throughput and latency, against a bare aiohttp handler, in the same run.

    python bench/plugin_throughput.py [--seconds 5] [--connections 16] [--nodes 20000]
                                      [--rounds 3]

Each server runs in its own process pinned to core 0; wrk (Debian's package), pinned to
core 1, sends each op over keep-alive connections, cycling through `--nodes` distinct
nodes as frps would (each node its own body). For each op, `--rounds` times, alternating:
requests/s and wrk's p50/p99 for the adapter (real app: SQLite store, writer, tracker),
for the same with its plugin on a listener of its own (`listener`: FRPA_PLUGIN_ADDRESS,
aiohttp's low-level server), for the adapter with FRPA_ALLOWED_PORTS (`ports`: every SSH
proxy's port is checked against the fleet's), and for a bare handler that reads the body
and returns the same JSON; then the ratios of the medians. The adapters start with every
node online, each on a port of its own (at most 50,000 nodes), as their NewProxy left
them. Last, each adapter's own work per request (parse, read, decide), timed in-process
without HTTP.
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
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.app import create_app
from api.state import STATE
from schemas.settings import Settings
from tests.support import free_port, login, new_proxy, ping

ALLOW = b'{"reject":false,"unchange":true}'
OPS = ("Ping", "Login", "NewProxy")
SERVERS = ("bare", "adapter", "listener", "ports")
PORTS = range(10000, 60000)  # the bench's NewProxy bodies ask for these, one a node
# Pings come only in the Ping rounds: the fleet must not fall silent, offline, mid-run.
NO_EXPIRY_SECONDS = 86400.0
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
    return new_proxy(name, uid, port=PORTS[i % len(PORTS)])


def adapter_settings(kind: str, store: str, plugin_port: int | None = None) -> Settings:
    return Settings(
        store=f"sqlite:///{store}",
        plugin_address=("127.0.0.1", plugin_port) if plugin_port else None,
        allowed_ports=PORTS if kind == "ports" else None,
        heartbeat_timeout=NO_EXPIRY_SECONDS,
    )


async def bare_handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ALLOW, content_type="application/json")


async def bring_online(app: web.Application, *, nodes: int) -> None:
    """Every node's NewProxy, before the server listens: NewProxy is measured at a fleet
    of `nodes`, not at one growing from none."""
    endpoint = app[STATE].adapter.plugins.endpoints["default"]
    for i in range(nodes):
        endpoint.decide(json.dumps(body("NewProxy", i)).encode())
    await app[STATE].adapter.writer.drained()


def serve(kind: str, port: int, api_port: int, store_dir: str, nodes: int) -> None:
    """`port` takes the plugin calls; the adapters' API listens on `api_port` once their
    fleet is online (a listener of its own listens before)."""
    os.sched_setaffinity(0, {0})
    if kind == "bare":
        app = web.Application()
        app.router.add_post("/frps/handler", bare_handler)
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
        return
    plugin_port = port if kind == "listener" else None
    app = create_app(adapter_settings(kind, f"{store_dir}/bench.db", plugin_port))
    app.on_startup.append(partial(bring_online, nodes=nodes))
    web.run_app(app, host="127.0.0.1", port=api_port, access_log=None, print=None)


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 300  # the adapters store their fleet first
    while time.monotonic() < deadline:
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


async def own_work_per_request(kind: str, store_dir: str, nodes: int) -> dict[str, float]:
    """Microseconds of the adapter's own work per plugin request: parse, read, decide."""
    app = create_app(adapter_settings(kind, f"{store_dir}/{kind}-own.db"))
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup_ctx: store, writer, tracker
    try:
        endpoint = app[STATE].adapter.plugins.endpoints["default"]
        results = {}
        for op in OPS:
            raws = [json.dumps(body(op, i)).encode() for i in range(nodes)]
            start = time.perf_counter()
            for raw in raws:
                endpoint.decide(raw)
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
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.api_port, args.store_dir, args.nodes)
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
        ports = {kind: free_port() for kind in SERVERS}
        api_ports = {kind: free_port() if kind == "listener" else ports[kind] for kind in SERVERS}
        servers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    kind,
                    "--port",
                    str(port),
                    "--api-port",
                    str(api_ports[kind]),
                    "--store-dir",
                    tempfile.mkdtemp(dir=workdir),
                    "--nodes",
                    str(args.nodes),
                ]
            )
            for kind, port in ports.items()
        ]
        try:
            for port in api_ports.values():
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
        medians = {key: statistics.median(rps) for key, rps in results.items()}
        for op in OPS:
            adapter = medians["adapter", op]
            print(f"ratio adapter/bare {op} (medians): {adapter / medians['bare', op]:.2f}")
            listener = medians["listener", op] / medians["bare", op]
            print(f"ratio listener/bare {op} (medians): {listener:.2f}")
            print(f"ratio ports/adapter {op} (medians): {medians['ports', op] / adapter:.2f}")
        print(
            f"NewProxy at {args.nodes} nodes: {medians['adapter', 'NewProxy']:.0f} req/s "
            f"without FRPA_ALLOWED_PORTS, {medians['ports', 'NewProxy']:.0f} with"
        )
        for kind in ("adapter", "ports"):
            own = asyncio.run(own_work_per_request(kind, workdir, args.nodes))
            for op, micros in own.items():
                print(f"{kind}'s own work per {op}: {micros:.1f} µs")


if __name__ == "__main__":
    main()
