"""Files and ports on a node through real frps and frpc to OpenSSH's sshd (whose files are
this machine's: the node is local)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.client import COPY_CHUNK
from tests.e2e.peers import FrpSetup, node_online, sshd_behind_frps
from tests.support import TOKENS, bearer, eventually, free_port, listening

pytestmark = pytest.mark.e2e
NODE = "nodemaintenances-edge-1"
MB = 1 << 20


@pytest.fixture
async def frp(tmp_path: Path) -> AsyncIterator[FrpSetup]:
    async with sshd_behind_frps(tmp_path) as (setup, sshd):
        setup.start_frpc("edge", "edge-1", local_port=sshd.port)
        await node_online(setup, NODE)
        yield setup


def files_url(frp: FrpSetup, path: Path | str, **query: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return f"{frp.adapter_url}/api/v1/nodes/{NODE}/files?path={path}{extra}"


async def test_100_mb_go_up_and_come_back_identical_and_a_range_resumes(
    frp: FrpSetup, tmp_path: Path
) -> None:
    target = tmp_path / "pushed.bin"
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            chunk = os.urandom(MB)
            sent.update(chunk)
            yield chunk

    async with aiohttp.ClientSession(headers=bearer("operator")) as session:
        async with session.put(files_url(frp, target, mode="0600"), data=body()) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {
                "path": str(target),
                "size": 100 * MB,
                "sha256": sent.hexdigest(),
            }
        assert oct(target.stat().st_mode & 0o777) == "0o600"
        received = hashlib.sha256()
        async with session.get(files_url(frp, target)) as resp:
            assert resp.headers["Content-Length"] == str(100 * MB)
            async for chunk in resp.content.iter_chunked(MB):
                received.update(chunk)
        assert received.hexdigest() == sent.hexdigest()

        whole = target.read_bytes()
        async with session.get(files_url(frp, target), headers={"Range": "bytes=99999-"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 99999-{100 * MB - 1}/{100 * MB}"
            assert await resp.read() == whole[99999:]
        async with session.get(files_url(frp, target), headers={"Range": "bytes=-10"}) as resp:
            assert (resp.status, await resp.read()) == (206, whole[-10:])
        async with session.get(files_url(frp, tmp_path)) as resp:
            listing = await resp.json()
        entry = next(e for e in listing["items"] if e["name"] == "pushed.bin")
        assert (entry["type"], entry["size"], entry["mode"]) == ("file", 100 * MB, 0o600)


async def test_an_upload_broken_off_halfway_leaves_nothing_and_its_record_says_how_far(
    tmp_path: Path,
) -> None:
    audit = tmp_path / "audit.jsonl"
    async with sshd_behind_frps(tmp_path, FRPA_AUDIT_LOG=str(audit)) as (setup, sshd):
        setup.start_frpc("edge", "edge-1", local_port=sshd.port)
        await node_online(setup, NODE)
        directory = tmp_path / "drop"
        directory.mkdir()
        path = f"/api/v1/nodes/{NODE}/files?path={directory / 'half.bin'}"
        _, writer = await asyncio.open_connection("127.0.0.1", setup.adapter_port)
        writer.write(
            f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['operator']}\r\n"
            f"Content-Length: {20 * MB}\r\n\r\n".encode()
        )
        for _ in range(10):
            writer.write(os.urandom(MB))
            await writer.drain()

        def records() -> list[dict[str, Any]]:
            lines = audit.read_text().splitlines() if audit.exists() else []
            return [json.loads(line) for line in lines]

        async def begun() -> bool:
            return len(records()) == 1

        async def ended() -> bool:
            return len(records()) == 2

        await eventually(begun, what="the upload begun")
        writer.transport.abort()  # the client dies, 10 of its 20 MB sent
        await eventually(ended, within=60, what="the upload's record ended")
        record = records()[1]
        assert record["result"] == "client went away"
        assert 0 < record["bytes_in"] <= 10 * MB
        assert list(directory.iterdir()) == []  # no file, no temporary file


@pytest.mark.parametrize(
    ("method", "query", "status", "words"),
    [
        ("GET", {"path": "relative/file"}, 400, "must be absolute"),
        ("GET", {"path": "/tmp/../etc/passwd"}, 400, "'..'"),
        ("GET", {"path": "/nonexistent/file"}, 404, "No such file"),
        ("PUT", {"path": "/tmp"}, 400, "is a directory"),
        ("PUT", {"path": "/nonexistent/dir/file"}, 404, "No such file"),
        ("PUT", {"path": "/tmp/x", "mode": "0999"}, 400, "octal mode"),
    ],
)
async def test_bad_paths_get_a_clear_4xx_with_the_nodes_words(
    frp: FrpSetup, method: str, query: dict[str, str], status: int, words: str
) -> None:
    url = f"{frp.adapter_url}/api/v1/nodes/{NODE}/files"
    async with (
        aiohttp.ClientSession(headers=bearer("operator")) as session,
        session.request(
            method, url, params=query, data=b"data" if method == "PUT" else None
        ) as resp,
    ):
        assert resp.status == status
        assert words in str(await resp.json())


async def test_a_read_only_token_reaches_no_files_and_no_ports(frp: FrpSetup) -> None:
    async with aiohttp.ClientSession(headers=bearer("read")) as session:
        async with session.get(files_url(frp, "/etc/hostname")) as resp:
            assert resp.status == 403
        async with session.get(
            f"{frp.adapter_url}/api/v1/nodes/{NODE}/portforward", params={"port": "22"}
        ) as resp:
            assert resp.status == 403


async def test_port_forward_reaches_the_nodes_sshd_and_a_web_server_20_at_once(
    frp: FrpSetup, tmp_path: Path
) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("served on the node\n")
    web_port = free_port()
    frp.processes.start(
        "web",
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            str(web_port),
            "-d",
            str(tmp_path / "www"),
        ],
    )
    env = {
        **os.environ,
        "FRPA_TOKEN": TOKENS["operator"],
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    local_web, local_ssh = free_port(), free_port()
    for name, ports in (
        ("fwd-web", f"{local_web}:{web_port}"),
        ("fwd-ssh", f"{local_ssh}:{ssh_port(frp)}"),
    ):
        frp.processes.start(
            name,
            [sys.executable, "-m", "cli", "port-forward", "--url", frp.adapter_url, NODE, ports],
            env=env,
        )
    for port in (local_web, local_ssh):
        await eventually(partial(listening, port), what=f"forward on {port}")

    reader, writer = await asyncio.open_connection("127.0.0.1", local_ssh)
    banner = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert banner.startswith(b"SSH-2.0-OpenSSH")

    async def fetch(session: aiohttp.ClientSession) -> str:
        async with session.get(f"http://127.0.0.1:{local_web}/index.html") as resp:
            return await resp.text()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        pages = await asyncio.gather(*(fetch(session) for _ in range(20)))
    assert pages == ["served on the node\n"] * 20

    # A port nothing listens on, on the node: said on the client and in the adapter's log.
    local_closed, closed = free_port(), free_port()
    frp.processes.start(
        "fwd-closed",
        [sys.executable, "-m", "cli", "port-forward", "--url", frp.adapter_url, NODE,
         f"{local_closed}:{closed}"],
        env=env,
    )  # fmt: skip
    await eventually(partial(listening, local_closed), what="forward to a closed port")
    reader, writer = await asyncio.open_connection("127.0.0.1", local_closed)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, as the port is
    writer.close()
    refused = f"frp-adapter: {NODE}:{closed}: {NODE}: port {closed}: Connection refused"

    async def said() -> bool:
        return refused in frp.processes.log("fwd-closed")

    await eventually(said, what="the client saying the port refused")
    assert f"port forward to {NODE} port {closed} for operator-user failed" in (
        frp.processes.log("adapter")
    )


def ssh_port(frp: FrpSetup) -> int:
    """The node's own sshd port, as its frpc exposes it (localPort in its config)."""
    config = (frp.processes.workdir / "frpc-edge.toml").read_text()
    return int(
        next(line for line in config.splitlines() if line.startswith("localPort")).split("=")[1]
    )


async def test_a_batch_push_reaches_five_nodes_and_says_why_not_the_sixth(
    frp: FrpSetup, tmp_path: Path
) -> None:
    nodes = [f"edge-{i}" for i in range(1, 6)]
    for node in nodes[1:]:
        frp.start_frpc(node.replace("-", ""), node, local_port=ssh_port(frp))
    async with aiohttp.ClientSession(headers=bearer("admin")) as session:
        form = {"frp_server_ip_address": "127.0.0.1", "unique_id": "gone-1", "port": "1"}
        assert (await session.post(f"{frp.adapter_url}/frp_create", data=form)).status == 200
        form = {"unique_id": "gone-1", "status": "offline"}
        assert (await session.put(f"{frp.adapter_url}/frp_update", data=form)).status == 200

        async def all_online() -> bool:
            async with session.get(f"{frp.adapter_url}/api/v1/nodes?status=online") as resp:
                return len((await resp.json())["items"]) == 5

        await eventually(all_online, within=30, what="five nodes online")
        target = tmp_path / "pushed.conf"
        selected = ",".join([*(f"nodemaintenances-{n}" for n in nodes), "nodemaintenances-gone-1"])
        async with session.put(
            f"{frp.adapter_url}/api/v1/files",
            params={"path": str(target), "nodes": selected, "concurrency": "3"},
            data=b"setting = 1\n" * 1000,
        ) as resp:
            lines = [json.loads(line) async for line in resp.content]
    by_node = {line["node"]: line for line in lines}
    assert len(lines) == 6
    for node in nodes:
        assert by_node[f"nodemaintenances-{node}"]["size"] == 12000
    assert by_node["nodemaintenances-gone-1"]["error"] == "node offline"
    assert target.read_bytes() == b"setting = 1\n" * 1000
    assert temporaries(tmp_path) == []


async def test_frp_adapter_cp_copies_both_ways(frp: FrpSetup, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(3 * MB + 17))
    (tmp_path / "remote").mkdir()
    (tmp_path / "back").mkdir()
    env = {
        **os.environ,
        "FRPA_TOKEN": TOKENS["operator"],
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }

    async def cp(source: str, destination: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "cp", "--url", frp.adapter_url, source, destination,
            env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, err.decode()

    assert await cp(str(local), f"{NODE}:{tmp_path / 'remote'}/") == (0, "")
    assert (tmp_path / "remote" / "local.bin").read_bytes() == local.read_bytes()
    assert await cp(f"{NODE}:{tmp_path / 'remote' / 'local.bin'}", str(tmp_path / "back")) == (
        0,
        "",
    )
    assert (tmp_path / "back" / "local.bin").read_bytes() == local.read_bytes()
    # As scp: 1 for what was not copied (the node's refusal, this machine's), said in words.
    code, err = await cp(f"{NODE}:/nonexistent/file", str(tmp_path / "back"))
    assert code == 1
    assert "no such file" in err
    code, err = await cp(str(tmp_path / "missing"), f"{NODE}:{tmp_path / 'remote'}/")
    assert (code, err.strip()) == (
        1,
        f"frp-adapter: {tmp_path / 'missing'}: No such file or directory",
    )
    # As scp: into a directory named without its slash; a directory is not a file to copy;
    # a path relative to nothing is explained.
    (tmp_path / "into").mkdir()
    assert await cp(str(local), f"{NODE}:{tmp_path / 'into'}") == (0, "")
    assert (tmp_path / "into" / "local.bin").read_bytes() == local.read_bytes()
    code, err = await cp(f"{NODE}:{tmp_path / 'into'}", str(tmp_path / "listing"))
    assert (code, err.strip()) == (
        1,
        f"frp-adapter: {tmp_path / 'into'} is a directory: cp -r copies directories",
    )
    assert not (tmp_path / "listing").exists()
    code, err = await cp(str(local), f"{NODE}:rel.bin")
    assert code == 255
    assert f"a path on a node is absolute, from its root: {NODE}:/home/<user>/rel.bin" in err


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """Each file and directory under `root`: its sha256 (or "dir") and mode bits."""
    return {
        str(path.relative_to(root)): (
            "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mode & 0o777,
        )
        for path in sorted(root.rglob("*"))
        if not path.is_symlink() and (path.is_dir() or path.is_file())
    }


async def test_frp_adapter_cp_r_copies_directories_both_ways(frp: FrpSetup, tmp_path: Path) -> None:
    """As scp -r: the tree arrives whole (empty files and directories, modes), into a
    directory that exists or as one that does not; links to directories and special files
    are skipped, and said to be."""
    env = {
        **os.environ,
        "FRPA_TOKEN": TOKENS["operator"],
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }

    async def cp(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "cp", "--url", frp.adapter_url, *args,
            env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return process.returncode, err.decode()

    conf = tmp_path / "conf"
    (conf / "sub" / "deeper").mkdir(parents=True)
    (conf / "empty-dir").mkdir()
    (conf / "empty").write_bytes(b"")
    (conf / "one").write_bytes(b"x")
    (conf / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (conf / "sub" / "run.sh").chmod(0o755)
    (conf / "sub" / "secret").write_bytes(os.urandom(COPY_CHUNK + 1))
    (conf / "sub" / "secret").chmod(0o600)
    (conf / "sub" / "deeper" / "big").write_bytes(os.urandom(2 * MB - 1))
    (conf / "link-to-one").symlink_to(conf / "one")
    (conf / "link-to-sub").symlink_to(conf / "sub")
    os.mkfifo(conf / "fifo")
    sent = tree(conf)
    sent["link-to-one"] = sent["one"]  # followed, as scp -r follows it

    code, err = await cp(str(conf), f"{NODE}:{tmp_path / 'remote'}")
    assert code == 1
    assert f"{conf} is a directory: cp -r copies directories" in err
    (tmp_path / "remote").mkdir()
    code, err = await cp("-r", str(conf), f"{NODE}:{tmp_path / 'remote'}")
    assert code == 1, err  # as scp's, for what it did not copy
    assert err.splitlines() == [
        f"frp-adapter: {conf / 'fifo'}: not a regular file, skipped",
        f"frp-adapter: {conf / 'link-to-sub'}: a link to a directory, skipped",
    ]
    assert tree(tmp_path / "remote" / "conf") == sent
    assert temporaries(tmp_path / "remote" / "conf") == []

    # Back, as a directory that does not exist yet: it becomes the copy.
    code, err = await cp("-r", f"{NODE}:{tmp_path / 'remote' / 'conf'}", str(tmp_path / "back"))
    assert code == 0, err
    assert tree(tmp_path / "back") == sent
    # A file with -r is a file; a directory on the node without -r is refused in words.
    code, err = await cp("-r", f"{NODE}:{tmp_path / 'remote' / 'conf' / 'one'}", str(tmp_path))
    assert (code, (tmp_path / "one").read_bytes()) == (0, b"x")
    code, err = await cp(f"{NODE}:{tmp_path / 'remote' / 'conf'}", str(tmp_path / "nope"))
    assert code == 1
    assert "is a directory: cp -r copies directories" in err
    assert not (tmp_path / "nope").exists()


def temporaries(directory: Path) -> list[Path]:
    """Files an upload writes before renaming them into place: none once it is done."""
    return list(directory.glob(".*.frpa-*"))


async def test_a_download_the_client_abandons_is_no_error(frp: FrpSetup, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as file:
        file.write(os.urandom(32 * MB))
    _, writer = await asyncio.open_connection("127.0.0.1", frp.adapter_port)
    writer.write(
        f"GET /api/v1/nodes/{NODE}/files?path={big} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKENS['operator']}\r\n\r\n".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.transport.abort()  # gone after the first bytes
    await asyncio.sleep(1)
    assert "Error handling request" not in frp.processes.log("adapter")


async def test_a_batch_body_the_adapters_disk_cannot_hold_is_a_507_that_says_so(
    frp: FrpSetup, tmp_path: Path
) -> None:
    # The adapter may write files of at most 8 MiB from now on: its spool runs out there,
    # as on a full disk (EFBIG rather than ENOSPC; both are the disk refusing).
    adapter = frp.processes.running["adapter"].pid
    resource.prlimit(adapter, resource.RLIMIT_FSIZE, (8 * MB, resource.RLIM_INFINITY))
    target = tmp_path / "pushed.bin"
    async with (
        aiohttp.ClientSession(headers=bearer("operator")) as session,
        session.put(
            f"{frp.adapter_url}/api/v1/files",
            params={"path": str(target), "nodes": NODE},
            data=io.BytesIO(os.urandom(16 * MB)),
        ) as resp,
    ):
        assert resp.status == 507
        answer = await resp.json()
    assert answer["error"] == "insufficient storage"
    assert "the adapter cannot spool the body" in answer["details"]
    assert not target.exists()


async def test_a_node_gone_silent_mid_download_is_given_up_after_the_step_timeout(
    tmp_path: Path,
) -> None:
    audit = tmp_path / "audit.jsonl"
    env = {"FRPA_SFTP_STEP_TIMEOUT": "3", "FRPA_AUDIT_LOG": str(audit)}
    async with sshd_behind_frps(tmp_path, **env) as (setup, sshd):
        setup.start_frpc("edge", "edge-1", local_port=sshd.port)
        await node_online(setup, NODE)
        big = tmp_path / "big.bin"
        with big.open("wb") as file:
            file.truncate(1 << 30)  # sparse

        async def given_up() -> bool:
            return audit.exists() and "node timed out" in audit.read_text()

        frpc = setup.processes.running["edge"]
        try:
            async with (
                aiohttp.ClientSession(headers=bearer("operator")) as session,
                session.get(files_url(setup, big)) as resp,
            ):
                assert resp.status == 200
                await resp.content.readexactly(MB)
                frpc.send_signal(signal.SIGSTOP)  # the node answers nothing more
                # The adapter's own verdict, not the SSH keepalive's (90 s) or frps's.
                await eventually(given_up, within=60, what="the download given up")
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()  # what was sent, then the cut
        finally:
            frpc.send_signal(signal.SIGCONT)


async def test_ssh_with_its_input_from_a_pipe_a_file_or_nothing_runs_it_and_ends(
    frp: FrpSetup, tmp_path: Path
) -> None:
    """As `ssh -T`: no PTY, the node's shell reads the input to its end and exits with the
    status of what it ran last; its output and errors come back, the input not echoed."""
    env = {
        **os.environ,
        "FRPA_TOKEN": TOKENS["operator"],
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }

    async def ssh(stdin: bytes | Path | None) -> tuple[int | None, str, str]:
        with contextlib.ExitStack() as files:
            source: Any = asyncio.subprocess.DEVNULL
            if isinstance(stdin, Path):
                source = files.enter_context(stdin.open("rb"))
            elif stdin is not None:
                source = asyncio.subprocess.PIPE
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli", "ssh", "--url", frp.adapter_url, NODE, env=env,
                stdin=source, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            piped = stdin if isinstance(stdin, bytes) else None
            out, err = await asyncio.wait_for(process.communicate(piped), 60)
        return process.returncode, out.decode(errors="replace"), err.decode()

    code, out, err = await ssh(b"echo piped-$((6*7)); exit 3\n")
    assert (code, out, err) == (3, "piped-42\n", "")
    script = tmp_path / "script.sh"
    script.write_text("echo from-a-file >&2\nno-such-command-vm\n")
    code, out, err = await ssh(script)
    assert (code, err) == (127, "")  # the shell's status for a command not found
    assert out.startswith("from-a-file\n")
    assert "no-such-command-vm" in out
    assert await ssh(None) == (0, "", "")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert await ssh(empty) == (0, "", "")
    # Many small pieces, more than a window's worth, in order and whole.
    lines = b"".join(b"echo line-%d\n" % i for i in range(20000))
    code, out, _ = await ssh(lines)
    assert (code, hashlib.sha256(out.encode()).hexdigest()) == (
        0,
        hashlib.sha256("".join(f"line-{i}\n" for i in range(20000)).encode()).hexdigest(),
    )


async def test_ctrl_c_ends_a_piped_ssh_as_it_ends_a_command(frp: FrpSetup, tmp_path: Path) -> None:
    """Input from a pipe, so Ctrl-C is this process's, not the node's: 130, no traceback."""
    env = {
        **os.environ,
        "FRPA_TOKEN": TOKENS["operator"],
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "ssh", "--url", frp.adapter_url, NODE, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Ctrl-C as a terminal's: a suite started in the background (`nohup ... &`) has
        # SIGINT ignored, and an ignored signal is inherited, so the CLI never got it.
        preexec_fn=partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(b"echo started; sleep 60\n")
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"started\n"
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert (process.returncode, err.decode()) == (130, "")
