"""Record what real frps 0.65 sends its plugin for every configuration in FRPC_CONFIGS.

    python -m tests.corpus.capture      # rewrites tests/corpus/frps-0.65.jsonl

A recording plugin answers every call "allow"; frps calls it for all six ops. Each frpc
runs until frps started all its proxies and it sent a few heartbeats; a user connection
to its first tcp proxy adds NewUserConn and NewWorkConn; then frps restarts under it
(the frpc logs in again with its run_id); then it stops (CloseProxy for each proxy).
Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.corpus import CORPUS, FRPC_CONFIGS, FrpcConfig, frpc_toml, frps_extra
from tests.e2e.peers import FRP_TOKEN, Processes, frp_binaries, wait_for_port
from tests.support import free_port

OPS = ["Login", "NewProxy", "CloseProxy", "Ping", "NewWorkConn", "NewUserConn"]
_STARTED = re.compile(r"start proxy success")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.frpc = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.calls.append({"frpc": self.frpc, "op": request.query.get("op", ""), "body": body})
        return web.json_response({"reject": False, "unchange": True})


async def until(check: Any, within: float, what: str) -> None:
    for _ in range(int(within / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} not reached within {within} s")


async def main() -> None:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/handler", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    plugin_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", plugin_port).start()
    with tempfile.TemporaryDirectory() as workdir:
        processes = Processes(Path(workdir))
        frps, frpc = frp_binaries(Path(workdir))
        frps_port = free_port()
        config = Path(workdir) / "frps.toml"
        config.write_text(
            f"""
bindAddr = "127.0.0.1"
bindPort = {frps_port}
auth.token = "{FRP_TOKEN}"
{frps_extra(free_port(), free_port(), free_port())}
[[httpPlugins]]
name = "recorder"
addr = "127.0.0.1:{plugin_port}"
path = "/handler"
ops = {json.dumps(OPS)}
"""
        )

        async def start_frps() -> None:
            processes.start("frps", [str(frps), "-c", str(config)])
            await wait_for_port(frps_port, processes.running["frps"])

        await start_frps()
        try:
            for conf in FRPC_CONFIGS:
                recorder.frpc = conf.name
                await run_frpc(processes, frpc, frps_port, plugin_port, conf, start_frps)
        finally:
            await processes.stop_all()
            await runner.cleanup()
    with CORPUS.open("w") as out:
        for call in recorder.calls:
            out.write(json.dumps(call) + "\n")
    print(f"{len(recorder.calls)} calls written to {CORPUS}")


async def run_frpc(
    processes: Processes,
    frpc: Path,
    frps_port: int,
    local_port: int,
    conf: FrpcConfig,
    start_frps: Any,
) -> None:
    port = free_port()
    body = conf.body.format(port=port, port2=free_port(), local=local_port)
    path = processes.workdir / f"{conf.name}.toml"
    path.write_text(frpc_toml(frps_port, FRP_TOKEN, body))
    processes.start(conf.name, [str(frpc), "-c", str(path)])

    def started(times: int) -> bool:
        return len(_STARTED.findall(processes.log(conf.name))) >= times * conf.proxies

    await until(lambda: started(1), 20, f"{conf.name}: every proxy started")
    await asyncio.sleep(2.5)  # heartbeats, health checks
    if conf.fixed_ssh_port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.5)
        writer.close()
    await processes.stop("frps")
    await start_frps()
    await until(lambda: started(2), 30, f"{conf.name}: every proxy started again")
    await processes.stop(conf.name)
    await asyncio.sleep(1.0)  # CloseProxy calls come from goroutines


if __name__ == "__main__":
    asyncio.run(main())
