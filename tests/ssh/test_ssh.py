"""Shell and exec on a node, against a real OpenSSH sshd on 127.0.0.1.

The node is registered with `/frp_create` pointing straight at sshd (the end-to-end tests
put real frps/frpc in between); everything from the HTTP request to sshd is real.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from tests.sshd import Sshd, running_sshd
from tests.support import bearer, eventually, free_port, settings_for, tokens_file

Client = TestClient[web.Request, web.Application]
NODE = "nodemaintenances-abc123"


async def adapter(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd, **settings: Any
) -> Client:
    values: dict[str, Any] = {
        "ssh_user": sshd.user,
        "ssh_key_file": str(sshd.user_key),
        "api_tokens_file": str(tokens_file(tmp_path)),
    }
    app = create_app(settings_for(tmp_path, **{**values, **settings}))
    return await aiohttp_client(app, headers=bearer("admin"))


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd) -> Client:
    client = await adapter(aiohttp_client, tmp_path, sshd)
    await register(client, "abc123", sshd.port)
    return client


async def register(client: Client, uid: str, port: int, status: str = "online") -> None:
    resp = await client.post(
        "/frp_create", data={"frp_server_ip_address": "127.0.0.1", "unique_id": uid, "port": port}
    )
    assert resp.status == 200, await resp.text()
    if status == "offline":
        resp = await client.put("/frp_update", data={"unique_id": uid, "status": "offline"})
        assert resp.status == 200, await resp.text()


async def run(client: Client, cmd: str, node: str = NODE, **extra: Any) -> tuple[int, Any]:
    resp = await client.post(f"/api/v1/nodes/{node}/exec", json={"cmd": cmd, **extra})
    return resp.status, await resp.json()


async def ended(pidfile: Path) -> None:
    """Until the process whose id is in `pidfile` has ended (the node is this machine):
    told by its pidfd, which becomes readable when it ends."""
    try:
        pidfd = os.pidfd_open(int(await asyncio.to_thread(pidfile.read_text)))
    except ProcessLookupError:
        return  # ended already
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(pidfd, readable.set)
    try:
        await asyncio.wait_for(readable.wait(), 15)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def test_exec_returns_exit_status_and_both_streams(client: Client) -> None:
    status, body = await run(client, "echo out; echo err >&2; exit 3")
    assert status == 200, body
    assert body["exit_status"] == 3
    assert body["stdout"] == "out\n"
    assert body["stderr"] == "err\n"
    assert body["truncated"] is False
    assert body["timed_out"] is False
    assert body["duration_ms"] >= 0


async def test_exec_output_is_capped_and_says_so(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd, exec_output_limit=1000)
    await register(client, "abc123", sshd.port)
    status, body = await run(client, "head -c 500000 /dev/zero | tr '\\0' x; echo done >&2")
    assert status == 200, body
    assert body["stdout"] == "x" * 1000
    assert body["stderr"] == "done\n"
    assert body["truncated"] is True
    assert body["exit_status"] == 0


async def test_the_originals_exec_returns_all_output_and_says_when_it_is_cut(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    """app/action/reverse_proxy/reverse_proxy.go returned the whole output: 2 MiB come
    back whole under the default limit; past a limit, the answer says it was cut."""
    command = "head -c 2097152 /dev/zero | tr '\\0' x"
    form = {"nm_name": NODE, "cmd": command}
    client = await adapter(aiohttp_client, tmp_path, sshd)
    await register(client, "abc123", sshd.port)
    body = await (await client.post("/reverse_proxy_shell", data=form)).json()
    said = f"execute shell command {command} successfully,the result is: "
    assert body["data"] == said + "x" * 2097152
    (tmp_path / "small").mkdir()
    small = await adapter(aiohttp_client, tmp_path / "small", sshd, exec_output_limit=1000)
    await register(small, "abc123", sshd.port)
    body = await (await small.post("/reverse_proxy_shell", data=form)).json()
    cut = "\n[output cut at 1000 bytes: FRPA_EXEC_OUTPUT_LIMIT]"
    assert body["data"] == said + "x" * 1000 + cut


async def test_exec_timeout_kills_the_remote_command(client: Client, tmp_path: Path) -> None:
    marker, pidfile = tmp_path / "survived", tmp_path / "pid"
    command = f"echo $$ > {pidfile}; sleep 3 && touch {marker}"
    status, body = await run(client, command, timeout=0.5)
    assert status == 200, body
    assert body["timed_out"] is True
    assert body["exit_status"] is None
    assert body["duration_ms"] < 3000
    await ended(pidfile)  # at once if killed; else after it touched the marker
    assert not marker.exists(), "the command outlived its timeout"


WRAPPER = """#!/bin/sh
# rrsync-style: the key runs only the commands on this list, exactly as they are given;
# the last pattern is the adapter's timeout kill, which the README tells operators to allow.
case "$SSH_ORIGINAL_COMMAND" in
    "echo allowed" | "hostname" | "(sleep 3; touch "*) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;
    "sh -c 'own="*) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac
echo "refused: $SSH_ORIGINAL_COMMAND" >&2
exit 1
"""


async def test_a_command_runs_verbatim_past_a_validating_forced_command(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    async with running_sshd(tmp_path / "forced", forced_command=wrapper) as sshd:
        client = await adapter(aiohttp_client, tmp_path, sshd)
        await register(client, "abc123", sshd.port)
        resp = await client.post(
            "/reverse_proxy_shell", data={"nm_name": NODE, "cmd": "echo allowed"}
        )
        assert await resp.json() == {
            "code": 200,
            "data": "execute shell command echo allowed successfully,the result is: allowed",
        }
        status, body = await run(client, "id")
        assert (status, body["exit_status"], body["stderr"]) == (200, 1, "refused: id\n")
        # sshd refuses to signal a forced command; the kill script still ends the whole
        # process group, or the background subshell would touch the marker
        marker, pidfile = tmp_path / "survived", tmp_path / "pid"
        command = f"(sleep 3; touch {marker}) & echo $! > {pidfile}; sleep 3"
        status, body = await run(client, command, timeout=0.5)
        assert (status, body["timed_out"]) == (200, True), body
        await ended(pidfile)  # the background subshell: at once if killed
        assert not marker.exists(), "the command's process group outlived its timeout"
        assert "refusing to send signal" in (tmp_path / "forced" / "sshd.log").read_text()


async def test_exec_refuses_unknown_and_offline_nodes_before_dialling(
    client: Client, sshd: Sshd
) -> None:
    status, body = await run(client, "true", node="nodemaintenances-nosuch")
    assert (status, body["error"]) == (404, "not found")
    await register(client, "gone", sshd.port, status="offline")
    status, body = await run(client, "true", node="nodemaintenances-gone")
    assert (status, body["error"]) == (409, "node offline")
    assert client.app[STATE].adapter.ssh.exec_results["error"] == 0  # refused before any dial


@pytest.mark.parametrize(
    "body",
    [{}, {"cmd": ""}, {"cmd": "true", "timeout": 0}, {"cmd": "true", "extra": 1}, [1], "x"],
)
async def test_exec_rejects_bad_input_clearly(client: Client, body: Any) -> None:
    resp = await client.post(f"/api/v1/nodes/{NODE}/exec", json=body)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid input"


async def test_original_exec_routes_answer_with_the_original_envelope(client: Client) -> None:
    resp = await client.post("/reverse_proxy_shell", data={"nm_name": NODE, "cmd": "echo  hi "})
    assert await resp.json() == {
        "code": 200,
        "data": "execute shell command echo  hi  successfully,the result is: hi",
    }
    resp = await client.post(f"/reverse_shell_command/{NODE}", data={"cmd": "uname"})
    assert (await resp.json())["data"].endswith("the result is: Linux")
    resp = await client.post(f"/reverse_shell_command/{NODE}", data={"cmd": "exit 2"})
    assert resp.status == 400
    assert await resp.json() == {
        "code": 400,
        "error": {
            "message": "execute shell command exit 2 failed, err is: Process exited with status 2"
        },
    }
    resp = await client.post(f"/reverse_shell_command/{NODE}", data={"cmd": "kill -KILL $$"})
    assert await resp.json() == {
        "code": 400,
        "error": {
            "message": "execute shell command kill -KILL $$ failed, err is: "
            "Process exited with status 137 from signal KILL"
        },
    }
    resp = await client.post("/reverse_proxy_shell", data={"cmd": "true"})
    assert resp.status == 400
    resp = await client.post("/reverse_proxy_shell", data={"nm_name": "nodemaintenances-x"})
    assert resp.status == 400
    resp = await client.post(
        "/reverse_proxy_shell", data={"nm_name": "nodemaintenances-x", "cmd": "true"}
    )
    assert resp.status == 404


async def test_first_host_key_is_pinned_and_a_changed_one_refused_until_unpinned(
    client: Client, sshd: Sshd, tmp_path: Path
) -> None:
    assert (await run(client, "true"))[0] == 200
    resp = await client.get(f"/api/v1/nodes/{NODE}")
    assert (await resp.json())["status"]["sshHostKey"] == sshd.host_public_key()

    async with running_sshd(tmp_path / "ssh", name="reinstalled") as other:
        await register(client, "abc123", other.port)
        status, body = await run(client, "true")
        assert (status, body["error"]) == (502, "host key not trusted")
        assert "DELETE /api/v1/nodes/nodemaintenances-abc123/host-key" in body["details"]
        ws_status = (await client.get(f"/api/v1/nodes/{NODE}")).status
        assert ws_status == 200

        resp = await client.delete(f"/api/v1/nodes/{NODE}/host-key")
        assert resp.status == 200
        status, body = await run(client, "echo again")
        assert (status, body["stdout"]) == (200, "again\n")
        resp = await client.get(f"/api/v1/nodes/{NODE}")
        assert (await resp.json())["status"]["sshHostKey"] == other.host_public_key()


async def test_known_hosts_file_names_nodes_by_nm_name(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{NODE} {sshd.host_public_key()}\n")
    client = await adapter(aiohttp_client, tmp_path, sshd, ssh_known_hosts=str(known_hosts))
    await register(client, "abc123", sshd.port)
    await register(client, "other", sshd.port)
    assert (await run(client, "true"))[0] == 200
    status, body = await run(client, "true", node="nodemaintenances-other")
    assert (status, body["error"]) == (502, "host key not trusted")
    resp = await client.get(f"/api/v1/nodes/{NODE}")
    assert (await resp.json())["status"]["sshHostKey"] == ""  # nothing pinned with a file


async def test_without_credentials_exec_says_what_to_set(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd, ssh_key_file=None)
    await register(client, "abc123", sshd.port)
    status, body = await run(client, "true")
    assert status == 503
    assert "FRPA_SSH_KEY_FILE" in body["details"]


async def test_batch_exec_streams_each_node_as_it_finishes(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd, ssh_connect_timeout=3)
    for i in range(5):
        await register(client, f"n{i}", sshd.port)
    await register(client, "down", sshd.port, status="offline")
    # A node whose port accepts but never speaks SSH: it hangs until the connect timeout.
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _, w: accepted.append(w), "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    await register(client, "hung", silent_port)
    nodes = [f"nodemaintenances-{u}" for u in ("hung", "n0", "n1", "n2", "n3", "n4", "down")]
    try:
        resp = await client.post("/api/v1/exec", json={"cmd": "echo $((6*7))", "nodes": nodes})
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        lines = [json.loads(line) async for line in resp.content]
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    by_node = {line["node"]: line for line in lines}
    assert sorted(by_node) == sorted(nodes)
    for i in range(5):
        assert by_node[f"nodemaintenances-n{i}"]["stdout"] == "42\n"
    assert by_node["nodemaintenances-down"]["error"] == "node offline"
    assert by_node["nodemaintenances-hung"]["error"] == "ssh failed"
    assert lines[-1]["node"] == "nodemaintenances-hung", "the hung node held the others back"


async def test_batch_exec_on_every_online_node(client: Client, sshd: Sshd) -> None:
    await register(client, "second", sshd.port)
    await register(client, "off", sshd.port, status="offline")
    resp = await client.post("/api/v1/exec", json={"cmd": "echo ok", "status": "online"})
    lines = [json.loads(line) async for line in resp.content]
    assert sorted(line["node"] for line in lines) == [NODE, "nodemaintenances-second"]
    resp = await client.post("/api/v1/exec", json={"cmd": "true", "status": "online", "nodes": []})
    assert resp.status == 400


async def test_exec_calls_are_counted_in_metrics(client: Client) -> None:
    await run(client, "true")
    await run(client, "false")
    await run(client, "sleep 5", timeout=0.2)
    metrics = client.app[STATE].metrics
    for result, count in (("ok", 1), ("failed", 1), ("timeout", 1), ("error", 0)):
        value = metrics.get_sample_value("frpa_ssh_exec_calls_total", {"result": result})
        assert value == count, result


async def read_until(ws: aiohttp.ClientWebSocketResponse, text: str, within: float = 10) -> str:
    """Output up to `text`; binary frames are a byte stream (as xterm.js decodes them)."""
    seen = ""
    decoder = codecs.getincrementaldecoder("utf-8")()
    async with asyncio.timeout(within):
        while text not in seen:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                seen += decoder.decode(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                seen += msg.data
            else:
                raise AssertionError(f"closed before {text!r}: {seen!r}")
    return seen


async def test_versioned_shell_runs_resizes_and_reports_the_exit_status(client: Client) -> None:
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell") as ws:
        await ws.send_bytes(b"stty size\r")
        await read_until(ws, "24 80")
        await ws.send_str(json.dumps({"type": "resize", "cols": 132, "rows": 43}))
        await ws.send_str("stty size\r")
        await read_until(ws, "43 132")
        await ws.send_str(json.dumps({"type": "resize", "cols": 0, "rows": 43}))
        msg = await ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.BINARY:  # the prompt may still be on its way
            msg = await ws.receive(timeout=5)
        assert json.loads(msg.data)["type"] == "error"
        await ws.send_str("exit 7\r")
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT:
                assert json.loads(msg.data) == {"type": "exit", "exit_status": 7}
                break
            assert msg.type == aiohttp.WSMsgType.BINARY
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE


async def test_a_shell_without_a_tty_reads_its_input_to_the_end(client: Client) -> None:
    """`?tty=false`, as `ssh -T`: no PTY (no echo, no prompt), errors with the output, and
    the `eof` frame ends the shell's input: it exits with what it ran last."""
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell?tty=false") as ws:
        await ws.send_bytes(b"tty || echo no-tty; echo to-stderr >&2\n")
        await ws.send_bytes(b"(exit 5)\n")
        await ws.send_str(json.dumps({"type": "eof"}))
        output = b""
        while (msg := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.BINARY:
            output += msg.data
        assert output == b"not a tty\nno-tty\nto-stderr\n"
        assert json.loads(msg.data) == {"type": "exit", "exit_status": 5}


async def test_a_shell_without_a_tty_takes_what_it_runs_along_when_the_client_goes(
    client: Client, tmp_path: Path
) -> None:
    """Without a PTY no SIGHUP comes when the channel closes: what the shell was running
    is killed as exec's timeout kills, not left running on the node."""
    marker, pidfile = tmp_path / "survived", tmp_path / "pid"
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell?tty=false") as ws:
        await ws.send_bytes(f"sh -c 'echo $$ > {pidfile}; sleep 3 && touch {marker}'\n".encode())
        await eventually(lambda: _exists(pidfile), within=10, what="the command started")
    await ended(pidfile)  # at once if killed; else after it touched the marker
    assert not marker.exists(), "the command outlived its shell"


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


async def test_an_eof_frame_on_a_pty_shell_is_not_the_end_of_its_input(client: Client) -> None:
    """A terminal's input ends when its user types ^D: the frame means nothing there."""
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell") as ws:
        await ws.send_str(json.dumps({"type": "eof"}))
        await ws.send_bytes(b"echo still-$((40 + 2))\r")
        await read_until(ws, "still-42")


async def test_original_shell_sends_text_with_the_original_default_size(client: Client) -> None:
    async with client.ws_connect(f"/reverse_proxy/{NODE}") as ws:
        await ws.send_str("stty size\r")
        await read_until(ws, "88 33")
        await ws.send_str('{"type":"resize","cols":100,"rows":30}')
        await ws.send_str("stty size; exit\r")
        await read_until(ws, "30 100")
        msg = await ws.receive(timeout=10)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE


async def test_the_original_shells_frames_are_read_as_the_original_read_them(
    client: Client,
) -> None:
    """Unknown query parameters are ignored; a resize may leave out a size (50 rows, 180
    columns); a `cmd` frame types its text; a frame of any other type is dropped."""
    async with client.ws_connect(f"/reverse_proxy/{NODE}?cols=100&rows=30&_=1700000000") as ws:
        await ws.send_str("stty size\r")
        await read_until(ws, "30 100")
        await ws.send_str('{"type":"resize","cols":120}')
        await ws.send_str('{"type":"cmd","cmd":"stty size\\r"}')
        await read_until(ws, "50 120")
        await ws.send_str('{"type":"heartbeat","data":"DROPPED"}')
        await ws.send_str("echo after\r")
        seen = await read_until(ws, "after\r\n")
        assert "DROPPED" not in seen
        assert "heartbeat" not in seen


async def test_the_original_shell_reads_frames_as_go_unmarshalled_them(client: Client) -> None:
    """app/action/reverse_proxy/core/ssh/ssh_shell_conn.go:119-160: every frame, text or
    binary, is unmarshalled into wsMsg (keys matched without regard to case); the PTY has
    the modes of lines 86-90; reverse_proxy.go:38-75 took no size from the query; and
    :63 found the node by the part of its name after the first `-`."""
    uid = NODE.removeprefix("nodemaintenances-")
    route = f"/reverse_proxy/ssh-{uid}?cols=undefined&rows=undefined"
    async with client.ws_connect(route) as ws:
        await ws.send_str("stty size; stty -a | grep -o 'speed [0-9]* baud'\r")
        # Linux has no 14400 baud: sshd (ttymodes.c) sets the next lower, 9600; a PTY no
        # speed is asked for has 38400.
        await read_until(ws, "88 33\r\nspeed 9600 baud")
        await ws.send_bytes(b'{"Type":"resize","Cols":"105","ROWS":40}')
        await ws.send_bytes(b"stty size\r")
        await read_until(ws, "40 105")
        await ws.send_str('{"TYPE":"RESIZE","cols":1}')  # not a type it knows: dropped
        await ws.send_bytes('{"type":"cmd","cmd":"echo \u4e2d\u6587!\r"}'.encode())
        await read_until(ws, "中文!")


@pytest.mark.parametrize("route", ["/reverse_proxy/{}", "/api/v1/nodes/{}/shell"])
async def test_a_character_split_between_reads_arrives_whole(client: Client, route: str) -> None:
    # 中文 in UTF-8 is e4 b8 ad e6 96 87: the node writes it in two pieces, 0.3 s apart.
    split = "printf '\\344\\270'; sleep 0.3; printf '\\255\\346\\226\\207!\\n'"
    async with client.ws_connect(route.format(NODE)) as ws:
        await ws.send_str(f"{split}\r")
        seen = await read_until(ws, "中文!")
        assert "\ufffd" not in seen


async def test_a_gbk_terminal_is_transcoded(client: Client) -> None:
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell?encoding=gbk") as ws:
        await ws.send_str("printf '\\326\\320\\316\\304!\\n'\r")  # 中文 in GBK
        await read_until(ws, "中文!")


async def test_shell_refusals_come_before_the_upgrade(client: Client) -> None:
    resp = await client.get("/api/v1/nodes/nodemaintenances-nosuch/shell")
    assert resp.status == 404
    resp = await client.get(f"/api/v1/nodes/{NODE}/shell?cols=0")
    assert resp.status == 400
    resp = await client.get(f"/api/v1/nodes/{NODE}/shell?encoding=base64")
    assert resp.status == 400
    resp = await client.get("/reverse_proxy/nodemaintenances-nosuch")
    assert (await resp.json())["code"] == 404


async def test_closing_the_websocket_closes_the_ssh_session(client: Client) -> None:
    connector = client.app[STATE].adapter.ssh
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell") as ws:
        await ws.send_str("echo ready\r")
        await read_until(ws, "ready")
        assert connector.shells_active == 1
    await eventually(lambda: _zero(connector.shells_active), within=5, what="session closed")


async def _zero(value: int) -> bool:
    return value == 0


async def test_an_unreachable_node_is_reported_on_the_socket(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd)
    await register(client, "abc123", free_port())  # nothing listens there
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell") as ws:
        message = await ws.receive_json(timeout=10)
        assert message["type"] == "error"
        assert "cannot reach sshd" in message["message"]
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == aiohttp.WSCloseCode.INTERNAL_ERROR


async def test_a_node_that_never_speaks_ssh_is_reported_as_timed_out_after_the_limit(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd, ssh_connect_timeout=0.3)
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _, w: accepted.append(w), "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    await register(client, "abc123", silent_port)
    try:
        status, body = await run(client, "true")
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert status == 502
    assert body["details"] == (
        f"{NODE}: cannot reach sshd at 127.0.0.1:{silent_port}: timed out after 0.3 s"
    )


async def test_exec_and_shell_leave_audit_records(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    log = tmp_path / "audit.jsonl"
    client = await adapter(aiohttp_client, tmp_path, sshd, audit_log=str(log))
    await register(client, "abc123", sshd.port)
    await run(client, "printf hello; exit 2")
    await run(client, "true", node="nodemaintenances-nosuch")
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell") as ws:
        await ws.send_str("echo typed\r")
        await read_until(ws, "typed\r\n")
        await ws.send_str("exit 3\r")
        while (await ws.receive(timeout=10)).type != aiohttp.WSMsgType.CLOSE:
            pass
    records = [json.loads(line) for line in log.read_text().splitlines()]
    started = [r for r in records if r["result"] == "started"]
    assert [r["event"] for r in started] == ["exec", "exec", "shell"]
    executed, refused, shell = [r for r in records if r["result"] != "started"]
    assert [r["id"] for r in started] == [executed["id"], refused["id"], shell["id"]]
    assert all(r["end"] == "" for r in started)
    assert executed["event"] == "exec"
    assert executed["command"] == "printf hello; exit 2"
    assert (executed["user"], executed["role"]) == ("admin-user", "admin")
    assert (executed["exit_status"], executed["result"], executed["bytes_out"]) == (2, "exited", 5)
    assert executed["remote"] == "127.0.0.1"
    assert executed["start"] <= executed["end"]
    assert refused["result"] == "error: not found"
    assert shell["event"] == "shell"
    assert (shell["node"], shell["exit_status"], shell["result"]) == (NODE, 3, "exited")
    assert shell["bytes_in"] == len("echo typed\r") + len("exit 3\r")
    assert shell["bytes_out"] > len("typed")


async def test_a_listing_the_node_refuses_is_audited_as_refused(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    """Not as "listed": a name that is not UTF-8 makes the listing fail midway."""
    log = tmp_path / "audit.jsonl"
    client = await adapter(aiohttp_client, tmp_path, sshd, audit_log=str(log))
    await register(client, "abc123", sshd.port)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / os.fsdecode(b"x\xffy")).write_bytes(b"")
    resp = await client.get(f"/api/v1/nodes/{NODE}/files", params={"path": str(odd)})
    assert resp.status == 400, await resp.text()
    ended = [json.loads(line) for line in log.read_text().splitlines()][-1]
    assert (ended["event"], ended["result"]) == ("download", "error: file error")


async def test_a_shell_without_a_tty_takes_along_what_outlives_it_when_the_client_goes(
    client: Client, tmp_path: Path
) -> None:
    """The shell exited, but what it started holds its output open: the session has not
    ended, so the client's going kills it."""
    pidfile = tmp_path / "pid"
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell?tty=false") as ws:
        await ws.send_bytes(f"sh -c 'echo $$ > {pidfile}; exec sleep 60' & exit 0\n".encode())
        await eventually(lambda: _exists(pidfile), within=10, what="the command started")
    await ended(pidfile)


async def test_limits_answer_with_a_clear_4xx(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(
        aiohttp_client, tmp_path, sshd, max_shells_per_user=1, exec_timeout_max=10
    )
    await register(client, "abc123", sshd.port)
    status, body = await run(client, "true", timeout=11)
    assert status == 400
    assert "FRPA_EXEC_TIMEOUT_MAX" in json.dumps(body)
    async with client.ws_connect(f"/api/v1/nodes/{NODE}/shell") as ws:
        await ws.send_str("echo one\r")
        await read_until(ws, "one\r\n")
        resp = await client.get(f"/api/v1/nodes/{NODE}/shell")
        assert resp.status == 429
        assert (await resp.json())["error"] == "too many shells"
        await ws.send_bytes(b"x" * (2 << 20))  # a frame over the 1 MiB limit
        closing = await ws.receive(timeout=5)
        while closing.type == aiohttp.WSMsgType.BINARY:  # output still on its way
            closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    resp = await client.post(f"/api/v1/nodes/{NODE}/exec", data=io.BytesIO(b"x" * (2 << 20)))
    assert resp.status == 413


async def test_a_node_at_an_address_no_resolver_takes_is_a_502_that_says_so(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd)
    address = "a" * 64 + ".example"  # a DNS label of 64 characters: IDNA refuses it
    resp = await client.post(
        "/frp_create",
        data={"frp_server_ip_address": address, "unique_id": "abc123", "port": sshd.port},
    )
    assert resp.status == 200
    status, body = await run(client, "true")
    assert status == 502, body
    assert f"cannot reach sshd at {address}:{sshd.port}" in body["details"]
    resp = await client.get(f"/api/v1/nodes/{NODE}/files", params={"path": "/tmp"})
    assert resp.status == 502
