"""What a fleet costs the adapter, at 10,000 to 100,000 nodes, on SQLite and on a fast
Kubernetes API peer.

    python bench/scale.py [--nodes 10000 50000 100000] [--stores sqlite kubernetes]

For each store and N, the adapter runs as its own process (`python -m cli serve`), its
plugin on a listener of its own (FRPA_PLUGIN_ADDRESS); wrk (Debian's package) plays
frps; this process plays frps's dashboard; `bench/kube_peer.py`, in its own process,
plays the Kubernetes API (kmock costs ~10 ms per write: it would measure itself). Printed per run:

- storm: wrk sends each node's NewProxy over 64 connections (as the first wave's storm
  measurement did; each frpc's Login before it would add as many requests again);
  seconds until every NM is online in the store; writes per node; the adapter's peak
  RSS and its growth per node. The peer, in the same run: the same calls answered by a
  bare aiohttp handler (no parsing, no state, no store), and the ratio of the two times.
- restart: the adapter starts again on the same store, now with frps's dashboard, which
  lists the N proxies (1 % of them gone): seconds until the nodes are read; the startup
  reconciliation's time (`frpa_reconcile_seconds`, less the second the dashboard waits
  before answering so that the Pings are already going) and the p99 of Pings sent
  meanwhile at 200/s by a process of their own (how long the pass held the plugin path).
- lists: the first page (`limit=500`), and every node page by page (`limit=5000`).
- expiry: every node pings once (wrk); the time of the next sweep
  (`frpa_expiry_sweep_seconds`), which finds none due.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.peers import Processes, wait_for_port
from tests.kube import write_kubeconfig
from tests.support import free_port, new_proxy, ping

CONNECTIONS = 64
GIVE_UP_SECONDS = 300.0
GONE = 100  # one proxy in this many is missing from frps's list: the pass corrects them
PING_RATE = 200
ANSWER_DELAY = 1.0  # the dashboard's, so that the Pings go out before the pass begins
# One proxy of frps 0.65's `GET /api/proxy/tcp`, as a real frps answered.
FRPS_ENTRY = (
    '{"name":"%s","conf":{"name":"%s","type":"tcp","transport":{"bandwidthLimit":"",'
    '"bandwidthLimitMode":"client"},"loadBalancer":{"group":""},"healthCheck":{"type":"",'
    '"intervalSeconds":0},"localIP":"127.0.0.1","plugin":null,"remotePort":%d},'
    '"clientVersion":"0.65.0","todayTrafficIn":0,"todayTrafficOut":0,"curConns":0,'
    '"lastStartTime":"11-26 02:01:42","lastCloseTime":"","status":"online"}'
)
# Each thread takes every `threads`-th line; a line's requests go out pipelined, in order.
WRK_SCRIPT = """
local lines = {}
for line in io.lines("LINES") do lines[#lines + 1] = line end
local started = 0
function setup(thread)
  started = started + 1
  thread:set("first", started)
end
local function requests(line)
  local out = {}
  for op, body in line:gmatch("(%w+)\\t([^\\t]+)") do
    out[#out + 1] = wrk.format("POST", "/frps/handler?op=" .. op .. "&version=0.1.0",
      {["Content-Type"] = "application/json"}, body)
  end
  return out
end
local at, sent, answered = nil, 0, 0
function request()
  if at == nil and first == 1 then
    -- wrk calls thread 1's request() once to see how many requests it pipelines, and
    -- sends nothing: as many, sent to no one.
    at = first
    return table.concat(requests(lines[1]))
  end
  at = at or first
  if at > #lines then return "" end  -- nothing left: the connection idles
  local out = requests(lines[at])
  at = at + THREADS
  sent = sent + #out
  return table.concat(out)
end
local done = false
function response(status, headers, body)
  if status ~= 200 or body:find('"reject":true') then
    io.stderr:write("refused: " .. status .. " " .. body .. "\\n")
  end
  answered = answered + 1
  if not done and at > #lines and answered == sent then
    done = true
    io.stderr:write("done\\n")
    io.stderr:flush()
    wrk.thread:stop()
  end
end
"""
WRK_THREADS = 2


def uid(i: int) -> str:
    return f"scale-{i}"


async def send_with_wrk(port: int, workdir: Path, lines: list[str]) -> None:
    """wrk sends every line's requests once. Its threads say so on stderr when done (wrk
    itself runs for its whole duration, unless interrupted)."""
    (workdir / "lines").write_text("\n".join(lines) + "\n")
    script = workdir / "send.lua"
    lua = WRK_SCRIPT.replace("LINES", str(workdir / "lines"))
    script.write_text(lua.replace("THREADS", str(WRK_THREADS)))
    wrk = await asyncio.create_subprocess_exec(
        "wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{GIVE_UP_SECONDS:.0f}s",
        f"--timeout={GIVE_UP_SECONDS:.0f}s",
        "-s", str(script), f"http://127.0.0.1:{port}/",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert wrk.stderr is not None
    done = 0
    while done < WRK_THREADS and (said := await wrk.stderr.readline()):
        if said.startswith(b"refused"):
            raise RuntimeError(said.decode())
        done += said == b"done\n"
    wrk.send_signal(signal.SIGINT)
    await wrk.wait()


def line(*bodies: dict[str, Any]) -> str:
    return "\t".join(f"{b['op']}\t{json.dumps(b, separators=(',', ':'))}" for b in bodies)


def memory(pid: int) -> tuple[int, int]:
    """(resident, peak resident) bytes of process `pid`."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) << 10, int(fields["VmHWM"].split()[0]) << 10


class Dashboard:
    """frps's dashboard: `GET /api/proxy/tcp` lists every node's SSH proxy but one in
    `GONE`; single lookups answer from the same list. While `listed` is unset it has not
    been asked; the answer starts `delay` after the question (a pinger gets going)."""

    def __init__(self, nodes: int) -> None:
        entries = [
            FRPS_ENTRY % (f"n{i}.ssh", f"n{i}.ssh", 10000 + i % 50000)
            for i in range(nodes)
            if i % GONE != GONE - 1
        ]
        self.body = ('{"proxies":[' + ",".join(entries) + "]}").encode()
        self.ports = {f"n{i}.ssh": 10000 + i % 50000 for i in range(nodes) if i % GONE != GONE - 1}
        self.asked = asyncio.Event()
        self.answered_at = 0.0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/proxy/tcp", self.listing)
        app.router.add_get("/api/proxy/tcp/{name}", self.proxy)
        return app

    async def listing(self, request: web.Request) -> web.StreamResponse:
        self.asked.set()
        await asyncio.sleep(ANSWER_DELAY)
        self.answered_at = time.perf_counter()
        return web.Response(body=self.body, content_type="text/plain")

    async def proxy(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.ports:
            return web.Response(status=404, text="no proxy info found")
        entry = FRPS_ENTRY % (name, name, self.ports[name])
        return web.Response(text=entry, content_type="text/plain")


async def pings(port: int, nodes: int, seconds: float) -> list[tuple[float, float]]:
    """(sent at, seconds to answer) of Pings at `PING_RATE`/s to random known nodes."""
    results: list[tuple[float, float]] = []
    url = f"http://127.0.0.1:{port}/frps/handler?op=Ping&version=0.1.0"
    bodies = [json.dumps(ping(f"n{i}", uid(i))).encode() for i in range(0, nodes, 97)]
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        for n in range(int(seconds * PING_RATE)):
            await asyncio.sleep(max(0.0, start + n / PING_RATE - time.perf_counter()))
            sent = time.perf_counter()
            body = bodies[n % len(bodies)]
            async with session.post(url, data=body, headers=headers) as resp:
                assert b'"reject":false' in await resp.read()
            results.append((sent, time.perf_counter() - sent))
    return results


async def metric(port: int, name: str) -> float | None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else None


async def until(check: Callable[[], Awaitable[bool]], what: str) -> float:
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > GIVE_UP_SECONDS:
            raise RuntimeError(f"{what}: not within {GIVE_UP_SECONDS:.0f} s")
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


async def lists(port: int, nodes: int) -> tuple[float, float]:
    """Seconds for the first page, and for every node page by page."""
    base = f"http://127.0.0.1:{port}/api/v1/nodes"
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(base, params={"limit": "500"}) as resp:
            assert len((await resp.json())["items"]) == 500
        first = time.perf_counter() - started
        started, seen, token = time.perf_counter(), 0, None
        while True:
            params = {"limit": "5000", **({"continue": token} if token else {})}
            async with session.get(base, params=params) as resp:
                page = await resp.json()
            seen += len(page["items"])
            token = page["metadata"].get("continue")
            if not token:
                break
        assert seen == nodes, seen
        return first, time.perf_counter() - started


class Store:
    """Where the NMs live, and how this process reads them."""

    env: dict[str, str]

    async def online(self) -> int:
        raise NotImplementedError

    async def writes(self) -> int:
        raise NotImplementedError


class SqliteStore(Store):
    def __init__(self, directory: Path) -> None:
        self.db = directory / "scale.db"
        self.env = {"FRPA_STORE": f"sqlite:///{self.db}"}

    def _query(self, sql: str) -> int:
        if not self.db.exists():
            return 0
        with closing(sqlite3.connect(self.db, timeout=5)) as conn:
            try:
                (value,) = conn.execute(sql).fetchone()
            except sqlite3.OperationalError:
                return 0
        return int(value or 0)

    async def online(self) -> int:
        return await asyncio.to_thread(
            self._query,
            "SELECT count(*) FROM nodemaintenances WHERE "
            "json_extract(body, '$.status.services[0].status') = 'online'",
        )

    async def writes(self) -> int:
        return await asyncio.to_thread(
            self._query, "SELECT sum(resource_version) FROM nodemaintenances"
        )


class PeerStore(Store):
    def __init__(self, directory: Path, processes: Processes) -> None:
        self.port = free_port()
        processes.start("peer", [sys.executable, str(Path(__file__).with_name("kube_peer.py")),
                                 str(self.port)])  # fmt: skip
        config = write_kubeconfig(directory / "kubeconfig", f"http://127.0.0.1:{self.port}")
        self.env = {"FRPA_STORE": "kubernetes", "KUBECONFIG": str(config)}
        self._processes = processes

    async def ready(self) -> None:
        await wait_for_port(self.port, self._processes.running["peer"])

    async def _stats(self) -> dict[str, int]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/stats") as resp,
        ):
            stats: dict[str, int] = await resp.json()
        return stats

    async def online(self) -> int:
        return (await self._stats())["online"]

    async def writes(self) -> int:
        return (await self._stats())["nm_writes"]


async def run(store_kind: str, nodes: int) -> dict[str, float]:
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        processes = Processes(directory)
        dashboard = Dashboard(nodes)
        runner = web.AppRunner(dashboard.app(), access_log=None)
        await runner.setup()
        dashboard_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", dashboard_port).start()
        try:
            store: Store
            if store_kind == "sqlite":
                store = SqliteStore(directory)
            else:
                store = PeerStore(directory, processes)
                await store.ready()
            env = {"FRPA_LOG_LEVEL": "WARNING", "FRPA_HEARTBEAT_TIMEOUT": "30", **store.env}

            # 1. The storm, with no dashboard: nothing but the plugin calls; first to the
            # peer, a bare aiohttp handler that answers each call as the adapter does.
            lines = [line(new_proxy(f"n{i}", uid(i), port=10000 + i % 50000))
                     for i in range(nodes)]  # fmt: skip
            port = free_port()
            processes.start("bare", [sys.executable, __file__, "--serve-bare", str(port)])
            await wait_for_port(port, processes.running["bare"])
            started = time.perf_counter()
            await send_with_wrk(port, directory, lines)
            result["bare"] = time.perf_counter() - started
            await processes.stop("bare")
            port, plugin_port = free_port(), free_port()
            env["FRPA_PLUGIN_ADDRESS"] = f"127.0.0.1:{plugin_port}"
            await processes.start_adapter(port, env)
            await wait_for_port(plugin_port, processes.running["adapter"])
            pid = processes.running["adapter"].pid
            before, _ = memory(pid)
            started = time.perf_counter()
            await send_with_wrk(plugin_port, directory, lines)

            async def all_online() -> bool:
                return await store.online() >= nodes

            await until(all_online, "all online")
            result["storm"] = time.perf_counter() - started
            result["writes"] = await store.writes() / nodes
            await asyncio.sleep(1)  # what settles after the last write
            after, peak = memory(pid)
            result["peak_mb"] = peak / 2**20
            result["per_node_kb"] = (after - before) / nodes / 1024
            await processes.stop("adapter")

            # 2. Again on the same store, with frps's dashboard: load, then reconcile.
            port, plugin_port = free_port(), free_port()
            env["FRPA_PLUGIN_ADDRESS"] = f"127.0.0.1:{plugin_port}"
            started = time.perf_counter()
            env["FRP_SERVER_API"] = f"http://127.0.0.1:{dashboard_port}"
            env["FRPA_RECONCILE_INTERVAL"] = "3600"  # the startup pass only
            await processes.start_adapter(port, env)
            await dashboard.asked.wait()
            result["load"] = time.perf_counter() - started
            # Its own process: this one serves the dashboard's answer meanwhile. Nothing else
            # asks the adapter anything until the Pings are done.
            pinger = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--ping", str(plugin_port), str(nodes),
                str(4.0 + nodes / 20000), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            sent_pings = json.loads((await pinger.communicate())[0])

            async def reconciled() -> bool:
                return bool(await metric(port, "frpa_reconcile_seconds"))

            await until(reconciled, "reconciled")
            result["reconcile"] = (await metric(port, "frpa_reconcile_seconds") or 0) - ANSWER_DELAY
            if sent_pings[0][0] > dashboard.answered_at:
                raise RuntimeError("the Pings began after the dashboard answered")
            held = [
                latency
                for sent, latency in sent_pings
                if dashboard.answered_at <= sent <= dashboard.answered_at + result["reconcile"]
            ]
            result["ping_p99_ms"] = 1000 * statistics.quantiles(held, n=100)[98]
            result["pings"] = len(held)

            # 3. Lists, 4. an expiry sweep once every node pinged.
            result["first_page_ms"], result["full_list"] = (
                x * f for x, f in zip(await lists(port, nodes), (1000, 1), strict=True)
            )
            sweeps = await metric(port, "frpa_expiry_sweep_seconds")
            pinged = [line(ping(f"n{i}", uid(i))) for i in range(nodes)]
            await send_with_wrk(plugin_port, directory, pinged)

            async def swept() -> bool:
                return await metric(port, "frpa_expiry_sweep_seconds") != sweeps

            await until(swept, "an expiry sweep")
            result["sweep_ms"] = 1000 * (await metric(port, "frpa_expiry_sweep_seconds") or 0)
        finally:
            await processes.stop_all()
            await runner.cleanup()
    return result


def serve_bare(port: int) -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            body=b'{"reject":false,"unchange":true}', content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/frps/handler", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[10000, 50000, 100000])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "kubernetes"])
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ping", nargs=3, help=argparse.SUPPRESS)  # port, nodes, seconds
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    if args.ping:
        port, nodes, seconds = args.ping
        print(json.dumps(asyncio.run(pings(int(port), int(nodes), float(seconds)))))
        return
    print(
        f"{'store':10} {'nodes':>7} {'bare s':>7} {'storm s':>8} {'ratio':>6} {'writes':>6} "
        f"{'peak MB':>8} {'KB/node':>8} "
        f"{'load s':>7} {'recon s':>8} {'ping p99':>9} {'page ms':>8} {'list s':>7} "
        f"{'sweep ms':>9}"
    )
    for store in args.stores:
        for nodes in args.nodes:
            r = asyncio.run(run(store, nodes))
            print(
                f"{store:10} {nodes:7} {r['bare']:7.1f} {r['storm']:8.1f} "
                f"{r['storm'] / r['bare']:6.2f} {r['writes']:6.2f} {r['peak_mb']:8.0f} "
                f"{r['per_node_kb']:8.2f} {r['load']:7.1f} {r['reconcile']:8.2f} "
                f"{r['ping_p99_ms']:7.1f}ms {r['first_page_ms']:8.1f} {r['full_list']:7.2f} "
                f"{r['sweep_ms']:9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
