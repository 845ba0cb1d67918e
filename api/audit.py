"""The audit trail of what callers do on nodes: one JSON object per line.

Written to `FRPA_AUDIT_LOG` (a file, appended to; `-` for stdout): who (token name and
role), from where, which node, the command (exec) or path, start and end, exit status,
and bytes each way. An action is written twice under one `id`: when it starts
(`"result": "started"`), before it touches the node, and when it ends. If the first
cannot be written the action is refused and nothing runs; the file is opened again when
it was rotated or deleted, as `logging.handlers.WatchedFileHandler` does.
Each node of a batch is its own action. With `FRPA_SHELL_RECORDINGS` set, each shell
session is also recorded there in asciicast v2 (see `Recording`), named by start time,
node and user.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiohttp import web

from api.callers import ANONYMOUS, IDENTITY
from nodes.clock import Clock, cause
from nodes.errors import AdapterError

logger = logging.getLogger(__name__)

# How long an action waits for its record to be written before it is refused: a disk that
# hangs (an NFS server gone, a pipe nobody reads) refuses actions, it does not hold them.
WRITE_SECONDS = 10.0


class AuditUnavailableError(AdapterError):
    """The audit log cannot take a record, so the action it would record is refused."""

    kind = "audit log unavailable"


@dataclass(slots=True, kw_only=True)
class AuditRecord:
    event: str  # shell, exec, upload, download, mkdir, portforward, frpc-token, label, ...
    node: str
    user: str
    role: str
    remote: str
    scope: str = ""  # the caller's label selector, if its token is scoped
    id: str = field(default_factory=lambda: secrets.token_hex(8))  # pairs start and end
    start: str = ""  # stamped by the audit log when the record is begun
    end: str = ""
    command: str | None = None  # the command, path, port or scope the action is on
    exit_status: int | None = None
    result: str = ""  # started, exited, timeout, error: <kind>, client closed, ...
    bytes_in: int = 0  # from the caller, as far as it got: keystrokes, a body; 0 for exec
    bytes_out: int = 0  # from the node: terminal output, or stdout + stderr


def start_record(
    request: web.Request, event: str, node: str, command: str | None = None
) -> AuditRecord:
    identity = request.get(IDENTITY, ANONYMOUS)
    return AuditRecord(
        event=event,
        node=node,
        user=identity.name,
        role=identity.role.name.lower(),
        remote=request.remote or "",
        scope=str(identity.scope),
        command=command,
    )


class _AppendOnly:
    """A file records are appended to, one `write(2)` each, opened again when its name no
    longer leads to it (rotated or deleted), as `logging.handlers.WatchedFileHandler` does.
    Not that handler: its stream keeps a line that failed to write in its buffer and writes
    it with the next one, so an action refused for a full disk would later show as started.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def write(self, line: bytes) -> None:
        self._follow()
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            if written < len(line):
                raise OSError(f"only {written} of {len(line)} bytes written (disk full?)")
        except OSError:
            with suppress(OSError):  # no half line for the next record to follow
                os.ftruncate(self._fd, size)
            raise

    def _follow(self) -> None:
        try:
            named = os.stat(self._path)
        except FileNotFoundError:
            named = None
        held = os.fstat(self._fd)
        if named is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            fd = self._open()
            os.close(self._fd)
            self._fd = fd

    def close(self) -> None:
        os.close(self._fd)


class AuditLog:
    """Appends records to a file (or stdout for `-`); with no destination, drops them.
    Writes go to a thread (asyncio's), one at a time, within WRITE_SECONDS: a full, slow or
    hung disk holds neither the event loop nor more than one of the threads the store's
    writes also run in."""

    def __init__(self, destination: str | None, *, clock: Clock) -> None:
        self._destination = destination
        self._clock = clock
        self._file = _AppendOnly(destination) if destination not in (None, "-") else None
        # Held from a write's start until its thread returns, even after its caller gave up
        # waiting: a write that hangs then holds one thread, and the next ones time out
        # before they start (never to say later that a refused action started).
        self._writing = asyncio.Lock()
        self.failures = 0  # records that could not be written

    async def begin(self, record: AuditRecord) -> None:
        """Writes that `record`'s action starts (or, given a result, that it happens);
        AuditUnavailableError if it cannot be written."""
        record.result = record.result or "started"
        record.start = record.start or self._clock.now().isoformat()
        try:
            await self._write(record)
        except (OSError, TimeoutError) as e:
            self.failures += 1
            why = cause(e, WRITE_SECONDS)
            logger.error(
                "refused %s on %s: the audit log cannot be written: %s",
                record.event,
                record.node,
                why,
            )
            raise AuditUnavailableError(
                f"the audit log {self._destination} cannot be written ({why}): "
                f"{record.event} refused, nothing was done"
            ) from e

    @asynccontextmanager
    async def action(
        self, request: web.Request, event: str, node: str, command: str | None = None
    ) -> AsyncIterator[AuditRecord]:
        """The record of the caller's action, begun before it runs (AuditUnavailableError:
        it does not run) and ended however it ends; the action sets its result, else an
        error that ends it does: its kind, a cancellation, or a fault of ours by name."""
        record = start_record(request, event, node, command)
        await self.begin(record)
        try:
            yield record
        except BaseException as e:
            if record.result == "started":
                record.result = (
                    f"error: {e.kind}"
                    if isinstance(e, AdapterError)
                    else "cancelled"
                    if isinstance(e, asyncio.CancelledError)
                    else f"error: {type(e).__name__}"
                )
            raise
        finally:
            await self.end(record)

    async def end(self, record: AuditRecord) -> None:
        """Writes how `record`'s action ended. Its start is already written and the action
        done, so a failure here is logged and counted, not the caller's."""
        record.end = self._clock.now().isoformat()
        record.start = record.start or record.end
        try:
            await self._write(record)
        except (OSError, TimeoutError) as e:
            self.failures += 1
            logger.error(
                "the end of %s %s on %s (%s) is not in the audit log: %s",
                record.event,
                record.id,
                record.node,
                record.result,
                cause(e, WRITE_SECONDS),
            )

    async def _write(self, record: AuditRecord) -> None:
        # Unencodable text (lone surrogates) is written escaped, never lost with its record.
        line = (json.dumps(asdict(record), ensure_ascii=False) + "\n").encode(
            errors="backslashreplace"
        )
        if self._file is not None:
            write = self._file.write
        elif self._destination == "-":
            write = _to_stdout
        else:
            return
        async with asyncio.timeout(WRITE_SECONDS):
            await self._writing.acquire()
            try:
                done = asyncio.get_running_loop().run_in_executor(None, write, line)
            except BaseException:
                self._writing.release()
                raise
            done.add_done_callback(lambda _: self._writing.release())
            await asyncio.shield(done)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _to_stdout(line: bytes) -> None:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


class Recording:
    """A shell session in asciicast v2 (`asciinema play` replays it): output and resizes."""

    def __init__(
        self, path: Path, *, cols: int, rows: int, node: str, user: str, clock: Clock
    ) -> None:
        self.path = path
        self._monotonic = clock.monotonic
        self._started = self._monotonic()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Buffered: a chunk of output costs a memory copy, not a write(2).
        self._file = path.open("x", encoding="utf-8")
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(clock.now().timestamp()),
            "env": {"TERM": "xterm"},
            "title": f"{node} ({user})",
        }
        self._file.write(json.dumps(header) + "\n")

    def output(self, data: bytes) -> None:
        if text := self._decoder.decode(data):
            self._event("o", text)

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")

    def _event(self, kind: str, data: str) -> None:
        elapsed = round(self._monotonic() - self._started, 6)
        self._file.write(json.dumps([elapsed, kind, data], ensure_ascii=False) + "\n")

    def close(self) -> None:
        if tail := self._decoder.decode(b"", final=True):
            self._event("o", tail)
        self._file.close()


def writable_directory(path: str) -> None:
    """Raises ValueError unless shell recordings can be written in `path`."""
    if not (os.path.isdir(path) and os.access(path, os.W_OK)):
        raise ValueError(f"{path!r} is not a writable directory")


def recording_path(directory: str, record: AuditRecord) -> Path:
    stamp = record.start.replace(":", "").replace("+0000", "Z")
    return Path(directory) / f"{stamp}-{record.node}-{record.user}.cast"
