"""Web shell throughput and keystroke latency: the adapter vs webssh vs a direct ssh.

    python bench/ssh_throughput.py [--megabytes 100] [--keystrokes 300] [--sessions 100]

One real OpenSSH sshd on 127.0.0.1; three ways to a shell on it, each on a PTY:
(a) the adapter's versioned WebSocket (`python -m cli serve`, the node registered at
sshd's port), (b) webssh (`wssh`, tornado + paramiko), (c) OpenSSH's `ssh -tt`.
Printed per path: MB/s of a `cat` of a file of printable text, keystroke echo latency
(p50, p99), and, for the two web shells, server memory per idle shell session (one,
then `--sessions` at once). Ratios against the direct ssh and against webssh follow.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.peers import Processes, wait_for_port
from tests.sshd import Sshd, adapter_env, running_sshd
from tests.support import free_port

# Typed with quotes inside so that the echoed command line does not contain the marker.
DONE_COMMAND = "echo __DO''NE__\r"
DONE = b"__DONE__"
PROMPT_WAIT = 1.0


class Shell(ABC):
    """One interactive shell, whatever carries it: bytes in, bytes out."""

    @abstractmethod
    async def send(self, data: bytes) -> None: ...

    @abstractmethod
    async def receive(self) -> bytes: ...

    async def until(self, marker: bytes, within: float = 300) -> int:
        """Bytes read until `marker` has been seen."""
        seen = 0
        tail = b""
        async with asyncio.timeout(within):
            while True:
                data = await self.receive()
                if not data:
                    raise RuntimeError("the shell closed")
                seen += len(data)
                tail = (tail + data)[-64:]
                if marker in tail:
                    return seen

    async def drain(self, quiet: float = PROMPT_WAIT) -> None:
        """Read until nothing more comes for `quiet` seconds (the prompt has been printed)."""
        while True:
            try:
                async with asyncio.timeout(quiet):
                    await self.receive()
            except TimeoutError:
                return


class WebSocketShell(Shell):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, keys_as_json: bool) -> None:
        self._ws = ws
        self._json = keys_as_json

    async def send(self, data: bytes) -> None:
        if self._json:  # webssh takes {"data": "..."} text frames
            await self._ws.send_str(json.dumps({"data": data.decode()}))
        else:
            await self._ws.send_bytes(data)

    async def receive(self) -> bytes:
        msg = await self._ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return str(msg.data).encode()
        return b""


class ProcessShell(Shell):
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin
        assert process.stdout
        self._stdin = process.stdin
        self._stdout = process.stdout

    async def send(self, data: bytes) -> None:
        self._stdin.write(data)
        await self._stdin.drain()

    async def receive(self) -> bytes:
        return await self._stdout.read(1 << 16)


@dataclass
class Figures:
    mb_per_s: float
    echo_p50_ms: float
    echo_p99_ms: float


async def measure(shell: Shell, big_file: Path, size: int, keystrokes: int) -> Figures:
    await shell.drain()
    start = time.perf_counter()
    await shell.send(f"cat {big_file}; {DONE_COMMAND}".encode())
    received = await shell.until(DONE)
    elapsed = time.perf_counter() - start
    assert received >= size, (received, size)
    await shell.drain()

    echoes = []
    for _ in range(keystrokes):
        start = time.perf_counter()
        await shell.send(b"a")
        while (await shell.receive()).count(b"a") == 0:
            pass
        echoes.append(time.perf_counter() - start)
    await shell.send(b"\x15")  # Ctrl-U: clear the typed line
    await shell.drain(0.3)
    echoes.sort()
    return Figures(
        mb_per_s=size / elapsed / 1e6,
        echo_p50_ms=statistics.median(echoes) * 1000,
        echo_p99_ms=echoes[int(len(echoes) * 0.99) - 1] * 1000,
    )


@asynccontextmanager
async def adapter_shells(
    processes: Processes, sshd: Sshd, workdir: Path
) -> AsyncIterator[tuple[Callable[[aiohttp.ClientSession], Awaitable[Shell]], int]]:
    port = free_port()
    await processes.start_adapter(port, adapter_env(sshd, workdir))
    url = f"http://127.0.0.1:{port}"
    form = {"frp_server_ip_address": "127.0.0.1", "unique_id": "bench", "port": sshd.port}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/frp_create", data=form) as resp,
    ):
        assert resp.status == 200, await resp.text()

    async def open_shell(session: aiohttp.ClientSession) -> Shell:
        ws = await session.ws_connect(f"{url}/api/v1/nodes/nodemaintenances-bench/shell")
        return WebSocketShell(ws, keys_as_json=False)

    yield open_shell, processes.running["adapter"].pid


@asynccontextmanager
async def webssh_shells(
    processes: Processes, sshd: Sshd
) -> AsyncIterator[tuple[Callable[[aiohttp.ClientSession], Awaitable[Shell]], int]]:
    port = free_port()
    wssh = Path(sys.executable).parent / "wssh"
    processes.start(
        "webssh",
        [
            str(wssh),
            "--address=127.0.0.1",
            f"--port={port}",
            "--policy=autoadd",
            "--xsrf=False",
            "--maxconn=1000",
            "--logging=warning",
        ],
    )
    await wait_for_port(port, processes.running["webssh"])
    url = f"http://127.0.0.1:{port}"
    key = sshd.user_key.read_text()

    async def open_shell(session: aiohttp.ClientSession) -> Shell:
        form = {
            "hostname": "127.0.0.1",
            "port": str(sshd.port),
            "username": sshd.user,
            "privatekey": key,
            "term": "xterm",
        }
        async with session.post(f"{url}/", data=form) as resp:
            answer = await resp.json(content_type=None)
        assert answer["status"] is None, answer
        ws = await session.ws_connect(f"{url}/ws?id={answer['id']}")
        return WebSocketShell(ws, keys_as_json=True)

    yield open_shell, processes.running["webssh"].pid


async def direct_shell(sshd: Sshd) -> tuple[Shell, asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        "ssh",
        "-tt",
        "-q",
        "-i",
        str(sshd.user_key),
        "-p",
        str(sshd.port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-c",
        "aes128-gcm@openssh.com",  # the cipher the adapter negotiates: same work at sshd
        f"{sshd.user}@127.0.0.1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    return ProcessShell(process), process


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def memory_per_session(
    open_shell: Callable[[aiohttp.ClientSession], Awaitable[Shell]], pid: int, sessions: int
) -> tuple[float, float]:
    """Server RSS added by one idle shell, and per shell with `sessions` open at once (MB)."""
    # Every WebSocket holds a connection: lift aiohttp's default cap of 100 per session.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        base = rss_mb(pid)
        first = await open_shell(session)
        await first.drain(0.5)
        one = rss_mb(pid) - base
        base = rss_mb(pid)
        shells = []
        for _ in range(sessions):  # one at a time: sshd rate-limits unauthenticated startups
            shells.append(await open_shell(session))
        for shell in shells:
            await shell.receive()  # its prompt: the shell is up
        await asyncio.sleep(1)
        many = (rss_mb(pid) - base) / sessions
    return one, many


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        big_file = workdir / "big.txt"
        size = write_text_file(big_file, args.megabytes)
        processes = Processes(workdir)
        results: dict[str, Figures] = {}
        memory: dict[str, tuple[float, float]] = {}
        async with AsyncExitStack() as stack:
            sshd = await stack.enter_async_context(running_sshd(workdir / "ssh"))
            stack.push_async_callback(processes.stop_all)
            adapter = await stack.enter_async_context(adapter_shells(processes, sshd, workdir))
            webssh = await stack.enter_async_context(webssh_shells(processes, sshd))
            for name, (open_shell, pid) in (("adapter", adapter), ("webssh", webssh)):
                async with aiohttp.ClientSession() as session:
                    shell = await open_shell(session)
                    results[name] = await measure(shell, big_file, size, args.keystrokes)
                memory[name] = await memory_per_session(open_shell, pid, args.sessions)
            shell, process = await direct_shell(sshd)
            results["direct ssh"] = await measure(shell, big_file, size, args.keystrokes)
            process.kill()
            await process.wait()

    print(f"cat of {size / 1e6:.0f} MB, {args.keystrokes} keystrokes, on a PTY, same sshd")
    print(f"{'path':<12} {'MB/s':>8} {'echo p50 ms':>12} {'echo p99 ms':>12}")
    for name, f in results.items():
        print(f"{name:<12} {f.mb_per_s:>8.1f} {f.echo_p50_ms:>12.2f} {f.echo_p99_ms:>12.2f}")
    ours, direct, webssh_f = results["adapter"], results["direct ssh"], results["webssh"]
    print(f"throughput adapter/direct ssh: {ours.mb_per_s / direct.mb_per_s:.2f}")
    print(f"throughput adapter/webssh:     {ours.mb_per_s / webssh_f.mb_per_s:.2f}")
    print(f"echo p99 adapter/webssh:       {ours.echo_p99_ms / webssh_f.echo_p99_ms:.2f}")
    for name, (one, many) in memory.items():
        print(
            f"{name} server memory: {one:.2f} MB for one idle shell, "
            f"{many:.3f} MB each with {args.sessions} open"
        )


def write_text_file(path: Path, megabytes: int) -> int:
    """About `megabytes` MB of base64 lines (printable: the PTY passes them unchanged)."""
    with path.open("wb") as f:
        for _ in range(megabytes):
            f.write(base64.encodebytes(os.urandom(750_000)))
    return path.stat().st_size


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=100, help="about this many MB to cat")
    parser.add_argument("--keystrokes", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
