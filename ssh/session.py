"""What runs on a node once connected: an interactive shell on a PTY, or one command.

Both read the node's output only as fast as the caller consumes it, so SSH flow control
(the channel window) holds a fast node back instead of the adapter buffering for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import asyncssh

from nodes.clock import Clock
from ssh.connector import NodeTimeoutError, SshConnector, SshError, SshTarget

_READ_SIZE = 1 << 16
_KILL_SECONDS = 5.0


class Shell:
    """A login shell, on a PTY (resizable) or reading its input as a pipe: bytes in, bytes
    out."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes], *, tty: bool) -> None:
        self._process = process
        self._tty = tty

    async def read(self) -> bytes:
        """The next output the node sent, b"" once the shell ended."""
        return await self._process.stdout.read(_READ_SIZE)

    async def write(self, data: bytes) -> None:
        self._process.stdin.write(data)
        await self._process.stdin.drain()

    def end_input(self) -> None:
        """The input has ended: a shell without a PTY reads its end and exits. A PTY's
        input ends only when its user types it (^D), so there it means nothing."""
        if not self._tty:
            self._process.stdin.write_eof()

    def resize(self, cols: int, rows: int) -> None:
        self._process.change_terminal_size(cols, rows)

    async def exit_status(self) -> int | None:
        """The shell's exit status once it ended (None if it was killed by a signal)."""
        completed = await self._process.wait(check=False)
        return completed.exit_status if completed.exit_signal is None else None


# The PTY modes the original asked for (app/action/reverse_proxy/core/ssh/
# ssh_shell_conn.go:86-90): echo, and 14.4 kbaud both ways.
_TERM_MODES = {asyncssh.PTY_ECHO: 1, asyncssh.PTY_OP_ISPEED: 14400, asyncssh.PTY_OP_OSPEED: 14400}


@asynccontextmanager
async def open_shell(
    connector: SshConnector, target: SshTarget, *, cols: int, rows: int, tty: bool
) -> AsyncIterator[Shell]:
    # Without a PTY, what it runs is killed by the connection's mark when the client goes.
    async with connector.connect(target, alone=not tty) as conn:
        opened = connector.clock.perf_counter()
        if tty:
            process = await conn.create_process(
                term_type="xterm", term_size=(cols, rows), term_modes=_TERM_MODES, encoding=None
            )
        else:  # as `ssh -T`: the errors come back with the output, as on a terminal
            process = await conn.create_process(stderr=asyncssh.STDOUT, encoding=None)
        connector.shells_active += 1
        try:
            yield Shell(process, tty=tty)
        finally:
            connector.shells_active -= 1
            if not tty and not process.stdout.at_eof():
                # Its client went first. No PTY, so no SIGHUP when the channel closes: what it
                # runs (the shell, or what holds its output after the shell exited) would
                # outlive it.
                await _kill(conn, process, connector.clock.perf_counter() - opened)
            process.close()


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_status: int | None  # None: killed by a signal or by the timeout
    exit_signal: tuple[str, str] | None  # the signal's name and sshd's message, if killed
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
    """Run `command` as it is, without a PTY; keep the first `output_limit` bytes of
    stdout and of stderr.

    After `time_limit` seconds (from the start of the command, once logged in) the result
    is reported as timed out and the command's process groups are killed. A command
    without a PTY outlives its channel, so: sshd is asked for the signal (it sends it to
    the session's process group, but refuses for root logins and forced commands), and a
    second channel kills every process group whose processes carry this connection's
    SSH_CONNECTION (an exec holds its connection alone) and started since the command
    did, but its own.
    """
    try:
        result = await _run(
            connector.connect(target, alone=True),
            command,
            time_limit,
            output_limit,
            clock=connector.clock,
            open_within=min(time_limit, connector.connect_timeout),
        )
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
    *,
    clock: Clock,
    open_within: float,
) -> ExecResult:
    started = clock.monotonic()
    timed_out = False
    exit_status: int | None = None
    exit_signal: tuple[str, str] | None = None
    out, err = _Capture(output_limit), _Capture(output_limit)
    async with connection as conn:
        opened = clock.perf_counter()
        try:  # a warm connection to a node gone silent answers nothing
            async with asyncio.timeout(open_within):
                process = await conn.create_process(command, encoding=None)
        except TimeoutError as e:
            raise NodeTimeoutError(
                f"the node did not start the command in {open_within:g} s"
            ) from e
        try:
            process.stdin.write_eof()
            async with asyncio.timeout(time_limit):
                await asyncio.gather(out.drain(process.stdout), err.drain(process.stderr))
                completed = await process.wait(check=False)
            if completed.exit_signal is not None:
                name, _, message, _ = completed.exit_signal
                exit_signal = (name, message)
            elif completed.exit_status is None:  # its connection closed under it
                raise SshError("the connection to the node closed before the command ended")
            else:
                exit_status = completed.exit_status
        except TimeoutError:
            timed_out = True
            await _kill(conn, process, clock.perf_counter() - opened)
        finally:
            process.close()  # a cancelled exec leaves no channel behind on the connection
    return ExecResult(
        exit_status=exit_status,
        exit_signal=exit_signal,
        stdout=out.data(),
        stderr=err.data(),
        duration_ms=round((clock.monotonic() - started) * 1000),
        truncated=out.truncated or err.truncated,
        timed_out=timed_out,
    )


# POSIX sh, without quotes of its own: it runs under `sh -c '...'` from any login shell
# (fish included). For each process of this connection's sessions but the script's own,
# started in the last SINCE hundredths of a second (an earlier user of the warm connection
# may have left something running): its process group. Fields after the `(comm)` of
# /proc/PID/stat: state ppid pgrp sid ... starttime (the 20th, in clock ticks since boot);
# /proc/uptime has hundredths.
_KILL_SCRIPT = (
    "own=$(cat /proc/$$/stat); own=${own##*)}; set -- $own; own=$4; "
    "read up _ < /proc/uptime; hz=$(getconf CLK_TCK 2>/dev/null || echo 100); "
    "after=$(( (${up%.*}${up#*.} - SINCE) * hz / 100 )); "
    "for d in /proc/[0-9]*; do "
    'tr "\\0" "\\n" 2>/dev/null < $d/environ | grep -qxF "SSH_CONNECTION=$SSH_CONNECTION" '
    "|| continue; "
    "s=$(cat $d/stat 2>/dev/null) || continue; s=${s##*)}; set -- $s; "
    '[ "$4" = "$own" ] || [ "${20}" -lt "$after" ] || kill -KILL -$3 2>/dev/null; '
    "done; true"
)


async def _kill(
    conn: asyncssh.SSHClientConnection, process: asyncssh.SSHClientProcess[bytes], running: float
) -> None:
    """Kill what `process` started, `running` seconds ago (and half a second before: the
    request to start it took time to arrive)."""
    script = _KILL_SCRIPT.replace("SINCE", str(math.ceil((running + 0.5) * 100)))
    with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
        async with asyncio.timeout(_KILL_SECONDS):
            process.send_signal("KILL")
            await conn.run(f"sh -c '{script}'", check=False)
    process.close()


class _Capture:
    """Keeps the first `limit` bytes of a stream, reading (and dropping) the rest."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.truncated = False

    async def drain(self, reader: asyncssh.SSHReader[bytes]) -> None:
        while data := await reader.read(_READ_SIZE):
            self._keep(data)

    def _keep(self, data: bytes) -> None:
        room = self._limit - self._size
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def data(self) -> bytes:
        return b"".join(self._chunks)
