"""What runs on a node once connected: an interactive shell on a PTY, or one command.

Both read the node's output only as fast as the caller consumes it, so SSH flow control
(the channel window) holds a fast node back instead of the adapter buffering for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import asyncssh

from ssh.connector import SshConnector, SshError, SshTarget

_READ_SIZE = 1 << 16
_ANNOUNCE_PID = "printf 'frpa-exec-pgid=%s\\n' \"$$\" >&2\n"
_PID_LINE = re.compile(rb"frpa-exec-pgid=(\d+)\n")
_HEAD_LIMIT = 4096
_KILL_SECONDS = 5.0


class Shell:
    """A login shell on a PTY: bytes in, bytes out, resizable."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._process = process

    async def read(self) -> bytes:
        """The next output the node sent, b"" once the shell ended."""
        return await self._process.stdout.read(_READ_SIZE)

    async def write(self, data: bytes) -> None:
        self._process.stdin.write(data)
        await self._process.stdin.drain()

    def resize(self, cols: int, rows: int) -> None:
        self._process.change_terminal_size(cols, rows)

    async def exit_status(self) -> int | None:
        """The shell's exit status once it ended (None if it was killed by a signal)."""
        completed = await self._process.wait(check=False)
        return completed.exit_status if completed.exit_signal is None else None


@asynccontextmanager
async def open_shell(
    connector: SshConnector, target: SshTarget, *, cols: int, rows: int
) -> AsyncIterator[Shell]:
    async with connector.connect(target) as conn:
        process = await conn.create_process(
            term_type="xterm", term_size=(cols, rows), encoding=None
        )
        connector.shells_active += 1
        try:
            yield Shell(process)
        finally:
            connector.shells_active -= 1
            process.close()


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_status: int | None  # None: killed by a signal or by the timeout
    stdout: bytes
    stderr: bytes
    duration_ms: int
    truncated: bool
    timed_out: bool


async def run_command(
    connector: SshConnector,
    target: SshTarget,
    command: str,
    *,
    time_limit: float,
    output_limit: int,
) -> ExecResult:
    """Run `command` without a PTY; keep the first `output_limit` bytes of stdout and of stderr.

    After `time_limit` seconds (counted from the start of the command, once logged in) the
    result is reported as timed out and the command's process group is killed. A command
    without a PTY outlives its channel, and sshd refuses SSH signal requests from a root
    login, so the command's shell first reports its pid on stderr (sshd starts every
    session with setsid(), so that pid is also the process group) and the kill is a
    `kill -KILL -- -<pgid>` on a second channel. That report is removed from stderr.
    """
    try:
        result = await _run(connector.connect(target), command, time_limit, output_limit)
    except SshError:
        connector.exec_results["error"] += 1
        raise
    outcome = "timeout" if result.timed_out else "ok" if result.exit_status == 0 else "failed"
    connector.exec_results[outcome] += 1
    return result


async def _run(
    connection: AbstractAsyncContextManager[asyncssh.SSHClientConnection],
    command: str,
    time_limit: float,
    output_limit: int,
) -> ExecResult:
    loop = asyncio.get_running_loop()
    started = loop.time()
    timed_out = False
    exit_status: int | None = None
    out = _Capture(output_limit)
    err = _Capture(output_limit, announced=True)
    async with connection as conn:
        process = await conn.create_process(_ANNOUNCE_PID + command, encoding=None)
        process.stdin.write_eof()
        try:
            async with asyncio.timeout(time_limit):
                await asyncio.gather(out.drain(process.stdout), err.drain(process.stderr))
                completed = await process.wait(check=False)
            exit_status = completed.exit_status if completed.exit_signal is None else None
        except TimeoutError:
            timed_out = True
            process.close()
            if err.pgid is not None:
                await _kill_group(conn, err.pgid)
    return ExecResult(
        exit_status=exit_status,
        stdout=out.data(),
        stderr=err.data(),
        duration_ms=round((loop.time() - started) * 1000),
        truncated=out.truncated or err.truncated,
        timed_out=timed_out,
    )


async def _kill_group(conn: asyncssh.SSHClientConnection, pgid: int) -> None:
    with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
        async with asyncio.timeout(_KILL_SECONDS):
            await conn.run(f"kill -KILL -- -{pgid}", check=False)


class _Capture:
    """Keeps the first `limit` bytes of a stream, reading (and dropping) the rest.

    When `announced`, the stream starts with the line `_ANNOUNCE_PID` prints (possibly
    after the login shell's own warnings): it is taken out, and its pid kept as `pgid`.
    """

    def __init__(self, limit: int, *, announced: bool = False) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._head: bytes | None = b"" if announced else None
        self.truncated = False
        self.pgid: int | None = None

    async def drain(self, reader: asyncssh.SSHReader[bytes]) -> None:
        while data := await reader.read(_READ_SIZE):
            self._keep(self._take_pid(data) if self._head is not None else data)
        self._release()

    def _release(self) -> None:
        """Keep what was held back for an announcement that never came."""
        if self._head:
            self._keep(self._head)
        self._head = None

    def _take_pid(self, data: bytes) -> bytes:
        head = (self._head or b"") + data
        if match := _PID_LINE.search(head):
            self.pgid = int(match[1])
            self._head = None
            return head[: match.start()] + head[match.end() :]
        if len(head) > _HEAD_LIMIT:
            self._head = None
            return head
        self._head = head
        return b""

    def _keep(self, data: bytes) -> None:
        room = self._limit - self._size
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def data(self) -> bytes:
        self._release()
        return b"".join(self._chunks)
