"""Interactive shells on nodes over WebSocket: the original route and the versioned one.

Client frames are keystrokes, except a text frame holding
`{"type": "resize", "cols": N, "rows": M}`, which resizes the PTY, and, on the versioned
route, `{"type": "eof"}`, which ends the input of a shell opened with `?tty=false`. The
original route (`/reverse_proxy/{nm_name}`) sends the output as text frames; the versioned one
(`/api/v1/nodes/{nm_name}/shell`) as binary frames, as xterm.js's attach addon takes
them, and JSON text frames for control: `{"type": "exit", "exit_status": N}` when the
shell ends, `{"type": "error", "message": ...}` when it cannot start or a frame is bad.

Output is forwarded as soon as it is read, and read only once the previous frame is
written out, so a slow browser holds back the node (through the SSH window) rather than
the adapter's memory; keystrokes likewise wait for the node to take the previous ones.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from marshmallow import ValidationError

from api import audit
from api.auth import WS_PROTOCOL
from api.callers import ANONYMOUS, IDENTITY
from api.errors import TooManyError
from api.selection import original_name
from api.state import STATE
from nodes.clock import Clock
from nodes.errors import AdapterError, InvalidInputError
from nodes.tasks import first_to_end
from schemas import parse_json
from schemas.rest import ResizeSchema, ShellQuerySchema
from ssh.session import Shell, open_shell

logger = logging.getLogger(__name__)

# The original's PTY when no size was given: it passed rows 88, cols 33 to RequestPty.
ORIGINAL_SIZE = (33, 88)
DEFAULT_SIZE = (80, 24)
# Keystrokes and resizes are small; a paste of a few hundred KiB still fits.
MAX_FRAME = 1 << 20
_EXIT_WAIT_SECONDS = 5.0

_query_schema = ShellQuerySchema()
_resize_schema = ResizeSchema()


async def original_shell(request: web.Request) -> web.StreamResponse:
    name = original_name(request, request.match_info["nm_name"])
    return await _serve(request, name, binary=False, default_size=ORIGINAL_SIZE)


async def shell(request: web.Request) -> web.StreamResponse:
    name = request.match_info["nm_name"]
    return await _serve(request, name, binary=True, default_size=DEFAULT_SIZE)


async def _serve(
    request: web.Request, name: str, *, binary: bool, default_size: tuple[int, int]
) -> web.StreamResponse:
    connector = request.app[STATE].adapter.ssh
    try:
        query = _query_schema.load(dict(request.query))
    except ValidationError as e:
        raise InvalidInputError(e.messages, kind="invalid query") from e
    target = connector.target(name)
    settings = request.app[STATE].adapter.settings
    user = request.get(IDENTITY, ANONYMOUS).name
    open_shells = request.app[STATE].shells_by_user
    if open_shells[user] >= settings.max_shells_per_user:
        raise TooManyError(
            f"{user} has {open_shells[user]} shells open "
            f"(FRPA_MAX_SHELLS_PER_USER={settings.max_shells_per_user})",
            kind="too many shells",
        )
    cols = query.get("cols", default_size[0])
    rows = query.get("rows", default_size[1])
    async with request.app[STATE].audit.action(request, "shell", name) as record:
        ws = web.WebSocketResponse(
            heartbeat=settings.ws_heartbeat or None,
            max_msg_size=MAX_FRAME,
            protocols=(WS_PROTOCOL,),
        )
        await request.app[STATE].shutdown.prepare(ws, request)
        open_shells[user] += 1
        bridge: _Bridge | None = None
        recording = None
        try:
            async with open_shell(
                connector, target, cols=cols, rows=rows, tty=query["tty"]
            ) as session:
                logger.info("shell on %s opened for %s (%dx%d)", name, user, cols, rows)
                recording = _recording(
                    settings.shell_recordings, record, cols, rows, request.app[STATE].adapter.clock
                )
                bridge = _Bridge(ws, session, query["encoding"], binary, recording)
                ended = await bridge.run()
                record.result = "exited" if ended else "client closed"
                record.exit_status = bridge.exit_status
                if ended and binary:
                    await _send_control(ws, {"type": "exit", "exit_status": bridge.exit_status})
        except AdapterError as e:  # after the upgrade: an error frame says it
            record.result = f"error: {e.kind}"
            logger.warning("shell on %s failed: %s", name, e)
            with contextlib.suppress(ConnectionError):
                if binary:
                    await _send_control(ws, {"type": "error", "message": str(e)})
                else:
                    await ws.send_str(f"{e}\r\n")
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=e.kind.encode())
        finally:
            open_shells[user] -= 1
            if recording is not None:
                recording.close()
            if bridge is not None:
                record.bytes_in, record.bytes_out = bridge.bytes_in, bridge.bytes_out
    await ws.close()
    logger.info("shell on %s closed", name)
    return ws


def _recording(
    directory: str | None, record: audit.AuditRecord, cols: int, rows: int, clock: Clock
) -> audit.Recording | None:
    if not directory:
        return None
    path = audit.recording_path(directory, record)
    return audit.Recording(
        path, cols=cols, rows=rows, node=record.node, user=record.user, clock=clock
    )


async def _send_control(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    if not ws.closed:
        with contextlib.suppress(ConnectionError):
            await ws.send_str(json.dumps(message))


class _Bridge:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        session: Shell,
        encoding: str,
        binary: bool,
        recording: audit.Recording | None,
    ) -> None:
        self._ws = ws
        self._recording = recording
        self._session = session
        self._encoding = codecs.lookup(encoding).name
        self._binary = binary
        self.exit_status: int | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    async def run(self) -> bool:
        """True when the shell ended (see `exit_status`), False when the client went first."""
        first, error = await first_to_end(
            {"output": self._output(), "keystrokes": self._keystrokes()}
        )
        if first == "keystrokes" or isinstance(error, ConnectionError):
            return False
        if error is not None:
            raise error
        async with asyncio.timeout(_EXIT_WAIT_SECONDS):
            self.exit_status = await self._session.exit_status()
        return True

    async def _output(self) -> None:
        if self._binary and self._encoding == "utf-8":
            while data := await self._session.read():
                self._seen(data)
                await self._ws.send_bytes(data)
            return
        # Decoded incrementally: a multibyte character split between reads waits for its end.
        decoder = codecs.getincrementaldecoder(self._encoding)(errors="replace")
        while data := await self._session.read():
            self._seen(data)
            await self._send_text(decoder.decode(data))
        await self._send_text(decoder.decode(b"", final=True))

    def _seen(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self._recording is not None:
            self._recording.output(data)

    async def _send_text(self, text: str) -> None:
        if not text:
            return
        if self._binary:
            await self._ws.send_bytes(text.encode())
        else:
            await self._ws.send_str(text)

    async def _keystrokes(self) -> None:
        async for msg in self._ws:
            if msg.type == WSMsgType.BINARY and (self._binary or not msg.data.startswith(b"{")):
                await self._write(msg.data)
            elif msg.type == WSMsgType.BINARY:  # the original read every frame alike
                decoded = msg.data.decode(errors="replace")
                text = await self._control(decoded)
                if text is decoded:  # not a control frame: keystrokes, as they came
                    await self._write(msg.data)
                elif text:
                    await self._write(text.encode(self._encoding, errors="replace"))
            elif msg.type == WSMsgType.TEXT:
                text = await self._control(msg.data)
                if text:
                    await self._write(text.encode(self._encoding, errors="replace"))

    async def _write(self, data: bytes) -> None:
        self.bytes_in += len(data)
        await self._session.write(data)

    async def _control(self, text: str) -> str:
        """What of a text frame is keystrokes, after acting on it if it is a control frame.

        As the original: a JSON object with a `type` is a control frame. `resize` resizes
        the PTY, `cmd` types its `cmd` text, `eof` (versioned route) ends the input, any
        other type is dropped; anything else (a
        keystroke, an object without a type) is typed as it is.
        """
        if not text.startswith("{"):
            return text
        try:
            frame = parse_json(text)
        except ValueError:
            return text
        if not isinstance(frame, dict):
            return text
        # Go's encoding/json matched the original's keys without regard to case.
        frame = {str(key).lower(): value for key, value in frame.items()}
        if not isinstance(frame.get("type"), str):
            return text
        if frame["type"] == "cmd":
            return frame["cmd"] if isinstance(frame.get("cmd"), str) else ""
        if frame["type"] == "eof" and self._binary:
            self._session.end_input()
            return ""
        if frame["type"] != "resize":
            return ""
        if not self._binary:  # consoles of the original send sizes as strings too
            frame.update(
                (key, int(value))
                for key, value in frame.items()
                if key in ("cols", "rows") and isinstance(value, str) and value.isdigit()
            )
        try:
            resize = _resize_schema.load(frame)
        except ValidationError as e:
            if self._binary:
                await _send_control(self._ws, {"type": "error", "message": e.messages})
            return ""
        self._session.resize(resize["cols"], resize["rows"])
        if self._recording is not None:
            self._recording.resize(resize["cols"], resize["rows"])
        return ""
