"""The quickstart, with real frps, frpc and sshd: the adapter's `frps-config` and
`frpc-config` output, pasted into frps.toml and frpc.toml as a person would (their own
ports filled in), gets a node online and a command run on it."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.peers import frp_binaries, sqlite_frp, wait_for_port
from tests.sshd import running_sshd
from tests.support import TOKENS, eventually, free_port, tokens_file

pytestmark = pytest.mark.e2e
SECRET = "quickstart-secret-0123456789"
PASSWORD = "dashboard-pass-01"


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[2]), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def filled(text: str, **values: object) -> str:
    """`text` with each `key = ...` line's value replaced, as a person edits a pasted block."""
    for key, value in values.items():
        text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert count == 1, (key, text)
    return text


async def test_three_pasted_blocks_take_a_node_from_nothing_to_a_command_run(
    tmp_path: Path,
) -> None:
    frps_bin, frpc_bin = frp_binaries(tmp_path)
    async with running_sshd(tmp_path) as sshd, sqlite_frp(tmp_path) as frp:
        adapter, frps_port, dashboard = free_port(), free_port(), free_port()
        url = f"http://127.0.0.1:{adapter}"
        env = {
            "FRPA_STORE": f"sqlite:///{tmp_path / 'frpa.db'}",
            "FRPA_PLUGIN_SECRET": SECRET,
            "FRP_SERVER_API": f"http://127.0.0.1:{dashboard}",
            "FRP_SERVER_HTTPAUTHUSERNAME": "admin",
            "FRP_SERVER_HTTPAUTHPASSWORD": PASSWORD,
            "FRPA_API_TOKENS_FILE": str(tokens_file(tmp_path)),
            "FRPA_NODE_TOKENS": "1",
            "FRPA_SSH_USER": sshd.user,
            "FRPA_SSH_KEY_FILE": str(sshd.user_key),
            "FRP_ADAPTER_ADDRESS": f"127.0.0.1:{adapter}",
        }
        await frp.processes.start_adapter(adapter, env)

        # Block 1: frps.toml.
        code, frps_block, err = await cli("frps-config", env=env)
        assert code == 0, err
        assert SECRET in frps_block
        frps_toml = tmp_path / "frps.toml"
        frps_toml.write_text(
            f'bindAddr = "127.0.0.1"\nbindPort = {frps_port}\n'
            + filled(frps_block, password=f'"{PASSWORD}"')
        )
        assert 'addr = "127.0.0.1"  # where FRP_SERVER_API reaches it' in frps_block
        frp.processes.start("frps", [str(frps_bin), "-c", str(frps_toml)])
        await wait_for_port(frps_port, frp.processes.running["frps"])

        # Block 2: the node's frpc.toml, with its own frpc token issued on the way.
        client_env = {**env, "FRPA_URL": url, "FRPA_TOKEN": TOKENS["admin"]}
        code, frpc_block, err = await cli(
            "frpc-config", "--local-port", str(sshd.port), "edge-7", env=client_env
        )
        assert code == 0, err
        assert "metadatas.token" in frpc_block
        assert f"localPort = {sshd.port}  # the node's sshd" in frpc_block
        frpc_toml = tmp_path / "frpc.toml"
        frpc_toml.write_text(filled(frpc_block, serverPort=frps_port))
        # Run again by mistake, it keeps the node's token: a new one needs --force.
        code, _, err = await cli("frpc-config", "edge-7", env=client_env)
        assert code != 0
        assert "nodemaintenances-edge-7 has a token already" in err
        frp.processes.start("edge-7", [str(frpc_bin), "-c", str(frpc_toml)])

        # Block 3: a command on the node.
        async def runs() -> bool:
            code, out, _ = await cli(
                "exec", "nodemaintenances-edge-7", "--", "echo", "hello", env=client_env
            )
            return code == 0 and out == "hello\n"

        await eventually(runs, within=30, what="a command run on the node")


@pytest.mark.parametrize("password", [None, "", 'with "quotes" and \\ and spaces'])
async def test_frps_reads_the_dashboard_password_from_its_environment_or_does_not_start(
    tmp_path: Path, password: str | None
) -> None:
    """frps-config's `[webServer]` as pasted: frps takes the password from its own
    environment whatever it holds, and refuses to start without one (frp's templates
    render an unset variable as "<no value>": a password anyone could guess)."""
    frps_bin, _ = frp_binaries(tmp_path)
    env = {"FRP_SERVER_API": "http://127.0.0.1:7500", "FRP_SERVER_HTTPAUTHUSERNAME": "admin"}
    code, block, err = await cli("frps-config", env=env)
    assert code == 0, err
    frps_toml = tmp_path / "frps.toml"
    frps_toml.write_text(f"bindPort = 7000\n{block}")
    frps_env = {} if password is None else {"FRP_SERVER_HTTPAUTHPASSWORD": password}
    checking = await asyncio.create_subprocess_exec(
        str(frps_bin), "verify", "-c", str(frps_toml), env=frps_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    said, _ = await asyncio.wait_for(checking.communicate(), 30)
    assert (checking.returncode == 0) == bool(password), said.decode()
    if password:  # frps's dashboard takes exactly that password
        dashboard = free_port()
        frps_toml.write_text(
            f'bindAddr = "127.0.0.1"\nbindPort = {free_port()}\n'
            + block.replace("port = 7500", f"port = {dashboard}")
        )
        async with sqlite_frp(tmp_path) as frp:
            frp.processes.start("frps", [str(frps_bin), "-c", str(frps_toml)], env=frps_env)
            await wait_for_port(dashboard, frp.processes.running["frps"])
            async with aiohttp.ClientSession() as session:
                for given, status in ((password, 200), ("<no value>", 401)):
                    auth = base64.b64encode(f"admin:{given}".encode()).decode()
                    url = f"http://127.0.0.1:{dashboard}/api/serverinfo"
                    async with session.get(url, headers={"Authorization": f"Basic {auth}"}) as resp:
                        assert resp.status == status
