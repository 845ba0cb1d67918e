"""`frp-adapter ssh` and `frp-adapter exec`, run as processes against an adapter and sshd.

`ssh` runs on a real pseudo-terminal, as an operator's terminal would drive it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from api.app import create_app
from schemas.settings import Settings
from tests.sshd import Sshd, running_sshd
from tests.support import TOKENS, bearer, settings_for, tokens_file

NODE = "nodemaintenances-abc123"


@pytest.fixture
async def url(tmp_path: Path, aiohttp_server: AiohttpServer) -> AsyncIterator[str]:
    async with running_sshd(tmp_path / "ssh") as sshd:
        server = await aiohttp_server(create_app(settings(tmp_path, sshd)))
        url = str(server.make_url("")).rstrip("/")
        await register(url, sshd)
        yield url


def settings(tmp_path: Path, sshd: Sshd) -> Settings:
    return settings_for(
        tmp_path,
        ssh_user=sshd.user,
        ssh_key_file=str(sshd.user_key),
        api_tokens_file=str(tokens_file(tmp_path)),
    )


async def register(url: str, sshd: Sshd) -> None:
    form = {"frp_server_ip_address": "127.0.0.1", "unique_id": "abc123", "port": sshd.port}
    async with (
        aiohttp.ClientSession(headers=bearer("admin")) as session,
        session.post(f"{url}/frp_create", data=form) as resp,
    ):
        assert resp.status == 200


async def cli(*args: str, token: str = TOKENS["operator"]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        env={**os.environ, "FRPA_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_exec_prints_both_streams_and_exits_with_the_remote_status(url: str) -> None:
    code, out, err = await cli(
        "exec", "--url", url, NODE, "--", "echo", "out;", "echo err >&2;", "exit 3"
    )
    assert (code, out, err) == (3, "out\n", "err\n")


async def test_exec_says_why_a_node_cannot_run_it(url: str) -> None:
    code, _, err = await cli("exec", "--url", url, NODE, "--", "true", token=TOKENS["read"])
    assert code == 255
    assert "read-user (read) may not do this" in err
    code, _, err = await cli("exec", "--url", url, "nodemaintenances-nosuch", "--", "true")
    assert code == 255
    assert "not found" in err
    code, _, err = await cli("ssh", "--url", url, "nodemaintenances-nosuch")
    assert code == 255
    assert err == (
        "frp-adapter: nodemaintenances-nosuch: 404 not found: "
        "nodemaintenance nodemaintenances-nosuch not found\n"
    )
    code, _, err = await cli("exec", "--url", url, "--timeout", "0.3", NODE, "--", "sleep 5")
    assert code == 124
    assert "timed out" in err


@pytest.mark.parametrize(
    ("cols", "rows", "size"), [(100, 30, b"30 100"), (0, 0, b"24 80")], ids=["100x30", "0x0"]
)
async def test_ssh_drives_a_remote_shell_from_a_terminal(
    url: str, cols: int, rows: int, size: bytes
) -> None:
    """A terminal that tells no size (a fresh pty, some CI runners) gets 80 x 24."""
    primary, secondary = pty.openpty()
    set_size(secondary, cols=cols, rows=rows)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "ssh",
        "--url",
        url,
        NODE,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
        env={**os.environ, "FRPA_TOKEN": TOKENS["operator"]},
    )
    os.close(secondary)
    seen = b""

    async def until(text: bytes, after: int = 0) -> None:
        """Until the terminal has shown `text` (past its first `after` bytes)."""
        nonlocal seen
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(15):
            while text not in seen[after:]:
                readable = asyncio.Event()
                loop.add_reader(primary, readable.set)
                try:
                    await readable.wait()
                finally:
                    loop.remove_reader(primary)
                seen += os.read(primary, 65536)

    try:
        prompt = b"# " if os.getuid() == 0 else b"$ "
        await until(prompt)  # the remote prompt: raw mode is on
        os.write(primary, b"stty size\r")
        await until(size)
        set_size(primary, cols=120, rows=40)
        process.send_signal(signal.SIGWINCH)
        # The client may read the keys typed next before it handles the signal: the shell is
        # asked again, once it has answered, until it has the new size.
        for _ in range(20):
            asked = len(seen)
            os.write(primary, b"stty size\r")
            await until(prompt, after=asked)
            if b"40 120" in seen[asked:]:
                break
        else:
            raise AssertionError(f"the terminal was not resized: {seen!r}")
        os.write(primary, b"exit 5\r")
        assert await asyncio.wait_for(process.wait(), 15) == 5
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(primary)


def set_size(fd: int, *, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
