"""The audit trail of shells and commands on nodes: one JSON object per line.

Written to `FRPA_AUDIT_LOG` (a file, appended to; `-` for stdout): who (token name and
role), from where, which node, the command (exec), start and end, exit status, and
bytes each way. A shell session is one record when it ends; each node of a batch exec
is one record. With `FRPA_SHELL_RECORDINGS` set, each shell session is also recorded
there in asciicast v2 (see `Recording`), named by start time, node and user.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from aiohttp import web

from api.callers import ANONYMOUS, IDENTITY


@dataclass(slots=True, kw_only=True)
class AuditRecord:
    event: str  # "shell" or "exec"
    node: str
    user: str
    role: str
    remote: str
    start: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    end: str = ""
    command: str | None = None
    exit_status: int | None = None
    result: str = ""  # exited, timeout, error: <kind>, client closed
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


class AuditLog:
    """Appends records to a file (or stdout for `-`); with no destination, drops them."""

    def __init__(self, destination: str | None) -> None:
        self._file: TextIO | None = None
        if destination == "-":
            self._file = sys.stdout
        elif destination is not None:
            # Line-buffered: a record is on disk as soon as it is written.
            self._file = open(destination, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._owned = destination not in (None, "-")

    def write(self, record: AuditRecord) -> None:
        record.end = datetime.now(UTC).isoformat()
        if self._file is not None:
            self._file.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None and self._owned:
            self._file.close()


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
