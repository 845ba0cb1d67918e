"""Shells and commands on edge nodes through real frps/frpc 0.65 to a real OpenSSH sshd.

Each "node" is an frpc exposing the same sshd; the adapter dials frps's port for it.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.peers import FrpSetup, Processes, frp_binaries
from tests.e2e.test_frp_nodes import until_status
from tests.sshd import Sshd, running_sshd
from tests.support import TOKENS, bearer, tokens_file

pytestmark = pytest.mark.e2e

NODES = [f"ssh-node-{i}" for i in range(5)]


@pytest.fixture
async def frp(tmp_path: Path, sshd: Sshd) -> AsyncIterator[FrpSetup]:
    processes = Processes(tmp_path)
    frps, frpc = frp_binaries(tmp_path)
    setup = FrpSetup(processes, frps, frpc, {"FRPA_STORE": f"sqlite:///{tmp_path / 'frpa.db'}"})
    try:
        await setup.start_adapter(
            FRPA_SSH_USER=sshd.user,
            FRPA_SSH_KEY_FILE=str(sshd.user_key),
            FRPA_API_TOKENS_FILE=str(tokens_file(tmp_path)),
            FRPA_WS_HEARTBEAT="5",
            FRPA_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
            FRPA_SHELL_RECORDINGS=str(tmp_path),
        )
        await setup.start_frps()
        for uid in NODES:
            setup.start_frpc(uid, uid, local_port=sshd.port)  # frps picks the remote port
        for uid in NODES:
            await until_status(setup, uid, "online")
        yield setup
    finally:
        await processes.stop_all()


def nm(uid: str) -> str:
    return f"nodemaintenances-{uid}"


async def exec_v1(frp: FrpSetup, uid: str, cmd: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=bearer("admin")) as session,
        session.post(f"{frp.adapter_url}/api/v1/nodes/{nm(uid)}/exec", json={"cmd": cmd}) as resp,
    ):
        return resp.status, await resp.json()


class Screen:
    """What a terminal shows of a shell WebSocket: text frames, or binary ones as UTF-8."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.text = ""
        self.control: list[dict[str, Any]] = []
        self.frames = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    async def until(self, wanted: str, within: float = 20) -> None:
        async with asyncio.timeout(within):
            while wanted not in self.text:
                if not await self.next():
                    raise AssertionError(f"closed before {wanted!r}: {self.text[-500:]!r}")

    async def next(self) -> bool:
        msg = await self.ws.receive()
        self.frames += 1
        if msg.type == aiohttp.WSMsgType.BINARY:
            self.text += self._decoder.decode(msg.data)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            if self.ws._response.url.path.startswith("/api/v1/"):
                self.control.append(json.loads(msg.data))
            else:
                self.text += msg.data
        else:
            return False
        return True


@pytest.mark.parametrize("route", ["/api/v1/nodes/{}/shell", "/reverse_proxy/{}"])
async def test_a_shell_through_frps_runs_resizes_and_exits(frp: FrpSetup, route: str) -> None:
    # As a browser connects: no headers, the token offered as a subprotocol, an Origin.
    token = base64.urlsafe_b64encode(TOKENS["operator"].encode()).decode().rstrip("=")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            frp.adapter_url + route.format(nm(NODES[0])),
            protocols=("frp-adapter.v1", f"base64url.bearer.authorization.k8s.io.{token}"),
            origin=frp.adapter_url,
        ) as ws,
    ):
        assert ws.protocol == "frp-adapter.v1"
        screen = Screen(ws)
        await ws.send_str("echo $((6*7))-$SSH_CONNECTION\r")
        await screen.until("42-127.0.0.1")
        await ws.send_str(json.dumps({"type": "resize", "cols": 111, "rows": 37}))
        await ws.send_str("stty size\r")
        await screen.until("37 111")
        await ws.send_str("exit 4\r")
        while await screen.next():
            pass
        if route.startswith("/api/v1/"):
            assert screen.control == [{"type": "exit", "exit_status": 4}]


async def test_a_shell_session_is_audited_and_recorded(frp: FrpSetup, tmp_path: Path) -> None:
    async with (
        aiohttp.ClientSession(headers=bearer("operator")) as session,
        session.ws_connect(f"{frp.adapter_url}/api/v1/nodes/{nm(NODES[2])}/shell") as ws,
    ):
        screen = Screen(ws)
        await ws.send_str("echo recorded-$((40+2))\r")
        await screen.until("recorded-42")
        await ws.send_str("exit\r")
        while await screen.next():
            pass
    started, record = [
        json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()
    ]
    assert (started["id"], started["result"]) == (record["id"], "started")
    assert record["event"] == "shell"
    assert record["node"] == nm(NODES[2])
    assert (record["user"], record["role"]) == ("operator-user", "operator")
    assert (record["exit_status"], record["result"]) == (0, "exited")
    assert record["bytes_in"] == len("echo recorded-$((40+2))\r") + len("exit\r")
    assert record["bytes_out"] > 0
    name, replay = replayed(tmp_path)
    assert nm(NODES[2]) in name
    assert "recorded-42" in replay


def replayed(directory: Path) -> tuple[str, str]:
    """The one recording's file name, and what asciinema's own player shows of it."""
    (cast,) = directory.glob("*.cast")
    replay = subprocess.run(
        [sys.executable, "-m", "asciinema", "cat", str(cast)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return cast.name, replay.stdout


async def test_exec_on_both_original_routes_and_the_versioned_one(frp: FrpSetup) -> None:
    status, body = await exec_v1(frp, NODES[1], "hostname >/dev/null && echo fine")
    assert (status, body["stdout"], body["exit_status"]) == (200, "fine\n", 0)
    async with aiohttp.ClientSession(headers=bearer("admin")) as session:
        for url, form in (
            ("/reverse_proxy_shell", {"nm_name": nm(NODES[1]), "cmd": "echo a b"}),
            (f"/reverse_shell_command/{nm(NODES[2])}", {"cmd": "echo a b"}),
        ):
            async with session.post(frp.adapter_url + url, data=form) as resp:
                assert await resp.json() == {
                    "code": 200,
                    "data": "execute shell command echo a b successfully,the result is: a b",
                }


async def test_batch_exec_reports_the_offline_node_and_runs_on_the_others(
    frp: FrpSetup, sshd: Sshd
) -> None:
    frp.start_frpc("leaver", "leaver", local_port=sshd.port)
    await until_status(frp, "leaver", "online")
    await frp.processes.stop("leaver")
    await until_status(frp, "leaver", "offline")
    names = [nm(uid) for uid in [*NODES, "leaver"]]
    async with (
        aiohttp.ClientSession(headers=bearer("admin")) as session,
        session.post(
            f"{frp.adapter_url}/api/v1/exec", json={"cmd": "uptime", "nodes": names}
        ) as resp,
    ):
        lines = [json.loads(line) async for line in resp.content]
    results = {line["node"]: line for line in lines}
    assert sorted(results) == sorted(names)
    assert results[nm("leaver")]["error"] == "node offline"
    for uid in NODES:
        assert results[nm(uid)]["exit_status"] == 0
        assert "load average" in results[nm(uid)]["stdout"]


async def test_a_changed_host_key_is_refused(frp: FrpSetup, sshd: Sshd, tmp_path: Path) -> None:
    assert (await exec_v1(frp, NODES[3], "true"))[0] == 200  # pins the key
    await frp.processes.stop("adapter")  # restarted below: the pin must come from the store
    # Another sshd, with a new host key, behind the same frpc (a reinstalled node).
    async with running_sshd(tmp_path / "ssh", name="reinstalled") as other:
        frp.start_frpc("moved", "moved", local_port=other.port)
        await frp.start_adapter(
            FRPA_SSH_USER=sshd.user,
            FRPA_SSH_KEY_FILE=str(sshd.user_key),
            FRPA_API_TOKENS_FILE=str(tokens_file(tmp_path)),
        )
        await until_status(frp, "moved", "online")
        # The stored pin survives the restart; point NODES[3]'s NM at the reinstalled sshd.
        port = (await until_status(frp, "moved", "online"))["proxy_port"]
        async with (
            aiohttp.ClientSession(headers=bearer("admin")) as session,
            session.put(
                f"{frp.adapter_url}/frp_update",
                data={"unique_id": NODES[3], "status": "online", "port": port},
            ) as resp,
        ):
            assert resp.status == 200
        status, body = await exec_v1(frp, NODES[3], "true")
        assert (status, body["error"]) == (502, "host key not trusted")
        assert (await exec_v1(frp, "moved", "true"))[0] == 200


async def test_chinese_text_survives_frame_boundaries(frp: FrpSetup) -> None:
    line = "边缘节点中文输出测试" * 20
    # Typed as octal escapes: the remote shell's line editing (C locale, 33 columns) would
    # wrap an echoed Chinese command line mid-character, which is not what is tested here.
    escaped = "".join(f"\\{byte:03o}" for byte in line.encode())
    command = f"for i in $(seq 2000); do printf '{escaped}\\n'; done; echo END-$((1+1))\r"
    async with (
        aiohttp.ClientSession(headers=bearer("admin")) as session,
        session.ws_connect(f"{frp.adapter_url}/reverse_proxy/{nm(NODES[4])}") as ws,
    ):
        screen = Screen(ws)
        await ws.send_str(command)
        await screen.until("END-2")  # not in the echoed command line
        assert screen.frames > 5  # 1.2 MB in 64 KiB reads: boundaries fall mid-character
    assert "\ufffd" not in screen.text
    assert screen.text.count(line) == 2000


async def test_50_mb_through_a_shell_with_a_slow_reader_stays_bounded(frp: FrpSetup) -> None:
    """The client stops reading for a while: the adapter must hold the node back, not
    buffer the stream (its peak RSS must stay far below the 50 MB that pass)."""
    pid = frp.processes.running["adapter"].pid
    before = peak_rss_mb(pid)
    total = 50_000_000
    async with (
        aiohttp.ClientSession(headers=bearer("admin")) as session,
        session.ws_connect(f"{frp.adapter_url}/api/v1/nodes/{nm(NODES[0])}/shell") as ws,
    ):
        # Q, written as \121 so that the echoed command line holds none.
        await ws.send_str(f"head -c {total} /dev/zero | tr '\\0' '\\121'; echo; exit\r")
        await asyncio.sleep(3)  # a stalled browser tab
        received = 0
        async with asyncio.timeout(120):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    received += msg.data.count(b"Q")
    growth = peak_rss_mb(pid) - before
    assert received == total
    assert growth < 25, f"adapter peak RSS grew by {growth:.1f} MB"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")
