"""`frp-adapter ssh`, `exec` and `cp`, run as processes against an adapter and sshd.

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


async def cli(
    *args: str, token: str = TOKENS["operator"], umask: int = 0o022
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        env={**os.environ, "FRPA_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: os.umask(umask),
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


def deep(root: Path) -> Path:
    """`root` with a file `ok` and, under `deep`, directories nested past PATH_MAX (4096):
    a directory that cannot be listed, to root as to anyone."""
    root.mkdir()
    (root / "ok").write_bytes(b"ok\n")
    (root / "deep").mkdir()
    fd = os.open(root / "deep", os.O_RDONLY)
    for _ in range(18):  # made by descriptor: no path this long can be named
        os.mkdir("d" * 250, dir_fd=fd)
        inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    return root


async def test_cp_r_says_what_it_could_not_read_here_copies_the_rest_and_exits_1(
    url: str, tmp_path: Path
) -> None:
    """As scp -r: a directory that cannot be listed is said, not skipped in silence, the
    rest arrives, and the exit status is 1."""
    source = deep(tmp_path / "source")
    code, _, err = await cli("cp", "-r", "--url", url, str(source), f"{NODE}:{tmp_path}/copy")
    assert code == 1, err
    assert ": File name too long, skipped" in err
    assert (tmp_path / "copy" / "ok").read_bytes() == b"ok\n"


async def test_cp_r_says_what_the_node_refused_copies_the_rest_and_exits_1(
    url: str, tmp_path: Path
) -> None:
    """(OpenSSH's sftp-server leaves out of a listing what it cannot stat, so a directory
    too deep to list is not seen from here: a link to a FIFO is the node's refusal.)"""
    source = tmp_path / "source"
    source.mkdir()
    os.mkfifo(source / "fifo")
    (source / "link").symlink_to(source / "fifo")
    (source / "ok").write_bytes(b"ok\n")
    code, _, err = await cli("cp", "-r", "--url", url, f"{NODE}:{source}", str(tmp_path / "copy"))
    assert code == 1, err
    assert err.splitlines() == [
        f"frp-adapter: {source}/fifo: not a regular file, skipped",
        f"frp-adapter: {source}/link: file error: {source}/link: is a FIFO, not a regular file",
    ]
    assert (tmp_path / "copy" / "ok").read_bytes() == b"ok\n"


async def test_cp_r_gives_downloaded_files_their_modes_under_this_umask(
    url: str, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name, mode in (("run.sh", 0o755), ("secret", 0o600), ("plain", 0o664)):
        (source / name).write_text(name)
        (source / name).chmod(mode)
    for umask, expected in ((0o022, (0o755, 0o600, 0o644)), (0o077, (0o700, 0o600, 0o600))):
        copy = tmp_path / f"copy-{umask:o}"
        code, _, err = await cli(
            "cp", "-r", "--url", url, f"{NODE}:{source}", str(copy), umask=umask
        )
        assert code == 0, err
        modes = tuple(
            (copy / name).stat().st_mode & 0o777 for name in ("run.sh", "secret", "plain")
        )
        assert modes == expected
    # A file there already keeps its own mode, as scp leaves it.
    kept = tmp_path / "again" / "source" / "plain"
    kept.parent.mkdir(parents=True)
    kept.write_text("old")
    kept.chmod(0o640)
    code, _, err = await cli("cp", "-r", "--url", url, f"{NODE}:{source}", str(tmp_path / "again"))
    assert code == 0, err
    assert (kept.read_text(), kept.stat().st_mode & 0o777) == ("plain", 0o640)


async def test_cp_r_names_a_copy_of_dot_dot_by_what_it_is(url: str, tmp_path: Path) -> None:
    """`cp -r conf/sub/.. NODE:/dir/` copies conf into /dir, not into /dir's parent."""
    (tmp_path / "conf" / "sub").mkdir(parents=True)
    (tmp_path / "conf" / "a").write_text("a")
    (tmp_path / "into").mkdir()
    source = str(tmp_path / "conf" / "sub" / "..")
    code, _, err = await cli("cp", "-r", "--url", url, source, f"{NODE}:{tmp_path}/into/")
    assert code == 0, err
    assert (tmp_path / "into" / "conf" / "a").read_text() == "a"
    code, _, err = await cli(
        "cp", "-r", "--url", url, f"{NODE}:{tmp_path}/conf/sub/..", str(tmp_path)
    )
    assert code == 255
    assert "may not hold '..'" in err


async def test_cp_r_to_a_node_nobody_knows_or_onto_a_file_stops_at_once(
    url: str, tmp_path: Path
) -> None:
    """One line: 255 for the adapter's refusal, as ssh's; 1 for the node's refusal of
    where the tree goes, as scp's."""
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "f").write_text("f")
    code, _, err = await cli("cp", "-r", "--url", url, str(tree), "nodemaintenances-nosuch:/x")
    assert (code, err) == (
        255,
        "frp-adapter: /x: not found: nodemaintenance nodemaintenances-nosuch not found\n",
    )
    (tmp_path / "a-file").write_text("")
    code, _, err = await cli("cp", "-r", "--url", url, str(tree), f"{NODE}:{tmp_path}/a-file/x")
    assert code == 1
    assert len(err.splitlines()) == 1, err


async def test_cp_r_skips_names_a_url_cannot_carry_and_says_so(url: str, tmp_path: Path) -> None:
    """A local name that is not UTF-8 would arrive under another name (or over another
    file): it is skipped, and said, as what cannot be read."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "xy").write_bytes(b"AAA")
    odd = os.fsdecode(b"x\xffy")
    (tree / odd).write_bytes(b"BBB")
    (tree / os.fsdecode(b"d\xff")).mkdir()
    (tree / os.fsdecode(b"d\xff") / "inner").write_bytes(b"CCC")
    code, _, err = await cli("cp", "-r", "--url", url, str(tree), f"{NODE}:{tmp_path}/copy")
    assert code == 1, err
    assert sorted(err.splitlines()) == [
        f"frp-adapter: {tree}/d\\xff: a name that is not UTF-8, skipped",
        f"frp-adapter: {tree}/x\\xffy: a name that is not UTF-8, skipped",
    ]
    assert sorted(os.listdir(tmp_path / "copy")) == ["sub", "xy"]
    assert (tmp_path / "copy" / "xy").read_bytes() == b"AAA"
