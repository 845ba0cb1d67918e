"""The audit trail of what callers do on nodes: one JSON object per line.

Written to `FRPA_AUDIT_LOG` (a file, appended to; `-` for stdout): who (token name and
role), from where, which node, the command (exec) or path, start and end, exit status,
and bytes each way. An action is written twice under one `id`: when it starts
(`"result": "started"`), before it touches the node, and when it ends. If the first
cannot be written the action is refused and nothing runs; the file is opened again when
it was rotated or deleted, as `logging.handlers.WatchedFileHandler` does (it is one).
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
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from logging.handlers import WatchedFileHandler
from pathlib import Path

from aiohttp import web

from api.callers import ANONYMOUS, IDENTITY

logger = logging.getLogger(__name__)


class AuditUnavailableError(Exception):
    """The audit log cannot take a record, so the action it would record is refused."""


@dataclass(slots=True, kw_only=True)
class AuditRecord:
    event: str  # shell, exec, upload, download, portforward, frpc-token, unpin, trusted
    node: str
    user: str
    role: str
    remote: str
    id: str = field(default_factory=lambda: secrets.token_hex(8))  # pairs start and end
    start: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    end: str = ""
    command: str | None = None  # the command, path, port or scope the action is on
    exit_status: int | None = None
    result: str = ""  # started, exited, timeout, error: <kind>, client closed, ...
    bytes_in: int = 0  # to the node: keystrokes, or 0 for exec
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
        command=command,
    )


class _Strict:
    """A handler that lets a record it could not write fail the caller: logging's own
    `handleError` prints to stderr and carries on, which would let an action go unrecorded."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        raise  # noqa: PLE0704 (logging calls this inside its except block)


class _File(_Strict, WatchedFileHandler):
    pass


class _Stream(_Strict, logging.StreamHandler):  # type: ignore[type-arg]
    pass


class AuditLog:
    """Appends records to a file (or stdout for `-`); with no destination, drops them.
    Writes go to a thread: a full or slow disk must not hold the event loop."""

    def __init__(self, destination: str | None) -> None:
        self._destination = destination
        self._handler: logging.Handler | None = None
        if destination == "-":
            self._handler = _Stream(sys.stdout)
        elif destination is not None:
            # Unencodable text (lone surrogates) is written escaped, never lost with its record.
            self._handler = _File(destination, encoding="utf-8", errors="backslashreplace")
        self.failures = 0  # records that could not be written

    async def begin(self, record: AuditRecord) -> None:
        """Writes that `record`'s action starts (or, given a result, that it happens);
        AuditUnavailableError if it cannot be written."""
        record.result = record.result or "started"
        try:
            await self._write(record)
        except (OSError, ValueError) as e:  # ValueError: a file closed under the handler
            self.failures += 1
            logger.error(
                "refused %s on %s: the audit log cannot be written: %s",
                record.event,
                record.node,
                e,
            )
            raise AuditUnavailableError(
                f"the audit log {self._destination} cannot be written ({e}): "
                f"{record.event} refused, nothing was done"
            ) from e

    async def end(self, record: AuditRecord) -> None:
        """Writes how `record`'s action ended. Its start is already written and the action
        done, so a failure here is logged and counted, not the caller's."""
        record.end = datetime.now(UTC).isoformat()
        try:
            await self._write(record)
        except (OSError, ValueError) as e:
            self.failures += 1
            logger.error(
                "the end of %s %s on %s (%s) is not in the audit log: %s",
                record.event,
                record.id,
                record.node,
                record.result,
                e,
            )

    async def _write(self, record: AuditRecord) -> None:
        if self._handler is not None:
            line = json.dumps(asdict(record), ensure_ascii=False)
            await asyncio.to_thread(self._handler.emit, logging.makeLogRecord({"msg": line}))

    def close(self) -> None:
        if self._handler is not None and self._destination != "-":
            self._handler.close()


class Recording:
    """A shell session in asciicast v2 (`asciinema play` replays it): output and resizes."""

    def __init__(self, path: Path, *, cols: int, rows: int, node: str, user: str) -> None:
        self.path = path
        self._started = time.monotonic()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Buffered: a chunk of output costs a memory copy, not a write(2).
        self._file = path.open("x", encoding="utf-8")
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(time.time()),
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
        elapsed = round(time.monotonic() - self._started, 6)
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
