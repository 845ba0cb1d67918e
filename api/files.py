"""Files on a node and its local ports, through the node's SSH connection via frps.

`PUT /api/v1/nodes/{nm_name}/files?path=` streams the body to the node (under a temporary
name, renamed into place when complete); `GET` streams a file back (`Range` as RFC 9110
has it) or lists a directory; only regular files are read or replaced.
`POST /api/v1/nodes/{nm_name}/directories?path=` makes a directory, as `mkdir -p`.
`GET /api/v1/nodes/{nm_name}/portforward?port=N` is a WebSocket whose binary frames carry
a TCP stream to the node's 127.0.0.1:N. All are audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import IO, Any

from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from marshmallow import Schema, ValidationError

from api import audit
from api.auth import WS_PROTOCOL
from api.callers import ANONYMOUS, IDENTITY
from api.errors import (
    InsufficientStorageError,
    RangeNotSatisfiableError,
    TooLargeError,
    TooManyError,
)
from api.selection import batch_names, node_target
from api.state import STATE
from api.v1 import delivered, node_lines
from nodes.errors import AdapterError, InvalidInputError
from nodes.tasks import first_to_end
from schemas.rest import (
    BatchFileQuerySchema,
    FileQuerySchema,
    PathQuerySchema,
    PortForwardQuerySchema,
)
from ssh.connector import SshTarget
from ssh.files import NodeFiles, checked_path, node_files
from ssh.ports import PortStream, node_port

logger = logging.getLogger(__name__)

_CHUNK = 1 << 18
_FRAME = 1 << 20
_file_query = FileQuerySchema()
_path_query = PathQuerySchema()
_port_query = PortForwardQuerySchema()
_batch_query = BatchFileQuerySchema()
_BYTE_RANGE = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")


def _query(schema: Schema, request: web.Request) -> dict[str, Any]:
    """The request's query, loaded by `schema` (InvalidInputError)."""
    try:
        query: dict[str, Any] = schema.load(dict(request.query))
    except ValidationError as e:
        raise InvalidInputError(e.messages, kind="invalid query") from e
    return query


def _file_input(query: dict[str, Any]) -> tuple[str, int]:
    """The checked path and the mode of a loaded file query."""
    return _checked(query["path"]), int(query["mode"], 8)


def _checked(path: str) -> str:
    try:
        return checked_path(path)
    except ValueError as e:
        raise InvalidInputError({"path": [str(e)]}, kind="invalid query") from e


def _too_large(most: int) -> TooLargeError:
    return TooLargeError(f"at most {most} bytes (FRPA_MAX_UPLOAD_BYTES)")


def _node_files(
    request: web.Request, target: SshTarget
) -> contextlib.AbstractAsyncContextManager[NodeFiles]:
    step_timeout = request.app[STATE].adapter.settings.sftp_step_timeout or None
    return node_files(request.app[STATE].adapter.ssh, target, step_timeout=step_timeout)


async def put_file(request: web.Request) -> web.Response:
    """The body, streamed to the node's file `path`: `{"path", "size", "sha256"}`."""
    name = request.match_info["nm_name"]
    most = request.app[STATE].adapter.settings.max_upload_bytes
    path, mode = _file_input(_query(_file_query, request))
    if request.content_length is not None and request.content_length > most:
        raise _too_large(most)
    target = request.app[STATE].adapter.ssh.target(name)
    async with request.app[STATE].audit.action(request, "upload", name, path) as record:
        with _reading_body(record):
            async with _node_files(request, target) as files:
                stored = await files.write(path, _body(request, most, record), mode=mode)
        record.result = "stored"
    return web.json_response(asdict(stored))


async def make_directory(request: web.Request) -> web.Response:
    """The directory `path` on the node, and those missing on the way: `{"path"}`."""
    name = request.match_info["nm_name"]
    path = _checked(_query(_path_query, request)["path"])
    target = request.app[STATE].adapter.ssh.target(name)
    async with (
        request.app[STATE].audit.action(request, "mkdir", name, path) as record,
        _node_files(request, target) as files,
    ):
        await files.make_directory(path)
        record.result = "made"
    return web.json_response({"path": path})


@contextlib.contextmanager
def _reading_body(record: audit.AuditRecord) -> Iterator[None]:
    """An upload's body read: too large, or broken off by its client, said in `record`
    and in the answer (a 413, a 400)."""
    try:
        yield
    except TooLargeError:
        record.result = "too large"
        raise
    except (ConnectionError, web.RequestPayloadError) as e:
        record.result = "client went away"
        raise web.HTTPBadRequest(text=f"the upload broke off: {e}") from e


async def _body(request: web.Request, most: int, record: audit.AuditRecord) -> AsyncIterator[bytes]:
    """The body as it comes, counted in `record` (an upload broken off says how far)."""
    async for chunk in request.content.iter_chunked(_CHUNK):
        record.bytes_in += len(chunk)
        if record.bytes_in > most:
            raise _too_large(most)
        yield chunk


async def put_files(request: web.Request) -> web.StreamResponse:
    """The body, spooled once on the adapter, written to `path` on every node selected:
    one NDJSON line per node as it is done (`{"node", "path", "size", "sha256"}` or
    `{"node", "error", "details"}`); one node's failure, whatever it is, is its own line."""
    query = _query(_batch_query, request)
    path, mode = _file_input(query)
    names = batch_names(request, query)
    # Refused whole (503) when its record cannot be written.
    async with request.app[STATE].audit.action(
        request, "upload batch", f"{len(names)} nodes", path
    ) as batch:
        return await _put_spooled(
            request, batch, names, path=path, mode=mode, concurrency=query["concurrency"]
        )


async def _put_spooled(
    request: web.Request,
    batch: audit.AuditRecord,
    names: list[str],
    *,
    path: str,
    mode: int,
    concurrency: int,
) -> web.StreamResponse:
    most = request.app[STATE].adapter.settings.max_upload_bytes
    try:
        with _reading_body(batch):
            spool = await _spool(request, most, batch)
    except OSError as e:
        batch.result = "error: insufficient storage"
        raise _unspooled(e) from e
    with spool:
        limit = asyncio.Semaphore(concurrency)

        async def one(name: str) -> dict[str, Any]:
            try:
                async with (
                    request.app[STATE].audit.action(request, "upload", name, path) as record,
                    limit,
                    _node_files(request, node_target(request, name)) as files,
                ):
                    stored = await files.write(path, _spooled(spool), mode=mode)
                    record.result, record.bytes_in = "stored", stored.size
            except AdapterError as e:  # the node's, or its record's: its own line
                return {"node": name, "error": e.kind, "details": str(e)}
            except Exception as e:  # a fault of ours on one node leaves the others going
                logger.exception("batch upload to %s failed", name)
                return {
                    "node": name,
                    "error": "internal error",
                    "details": f"{type(e).__name__}: {e}",
                }
            return {"node": name, **asdict(stored)}

        return await node_lines(request, batch, names, one)


async def _spool(request: web.Request, most: int, batch: audit.AuditRecord) -> IO[bytes]:
    """The body in a temporary file, all of it on the descriptor the nodes read by."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115  (the caller closes it, once filled)
    try:
        async for chunk in _body(request, most, batch):
            await asyncio.to_thread(spool.write, chunk)
        await asyncio.to_thread(spool.flush)
    except BaseException:
        spool.close()
        raise
    return spool


def _unspooled(error: OSError) -> InsufficientStorageError:
    """The adapter's own disk could not keep the body (full, or refusing): its words."""
    return InsufficientStorageError(
        f"the adapter cannot spool the body in {tempfile.gettempdir()}: {error}"
    )


async def _spooled(spool: IO[bytes]) -> AsyncIterator[bytes]:
    """The spooled body from its start, for one node (reads in a thread, each at its
    own offset, so nodes written at once do not share a file position)."""
    offset = 0
    while chunk := await asyncio.to_thread(os.pread, spool.fileno(), _CHUNK, offset):
        offset += len(chunk)
        yield chunk


async def get_file(request: web.Request) -> web.StreamResponse:
    """The node's file `path` (a `Range` of it, if asked), or a directory's listing."""
    name = request.match_info["nm_name"]
    path, _ = _file_input(_query(_file_query, request))
    target = request.app[STATE].adapter.ssh.target(name)
    response = web.StreamResponse()
    async with request.app[STATE].audit.action(request, "download", name, path) as record:
        try:
            async with _node_files(request, target) as files:
                if await files.is_directory(path):
                    items = [asdict(entry) for entry in await files.listing(path)]
                    record.result = "listed"
                    return web.json_response({"path": path, "items": items})
                reading = await files.reading(path)
                size = reading.size
                wanted = _wanted(request.headers.get(hdrs.RANGE), size)
                if wanted is None:
                    raise RangeNotSatisfiableError(path, size)
                start, length = wanted
                response.set_status(206 if length < size else 200)
                response.headers.update(
                    {
                        "Content-Type": "application/octet-stream",
                        "Accept-Ranges": "bytes",
                        "Content-Length": str(length),
                        **(
                            {"Content-Range": f"bytes {start}-{start + length - 1}/{size}"}
                            if length < size
                            else {}
                        ),
                    }
                )
                await response.prepare(request)
                async with contextlib.aclosing(reading.chunks(start, length)) as chunks:
                    async for chunk in chunks:
                        record.bytes_out += len(chunk)
                        await delivered(request, response.write(chunk))
                if record.bytes_out < length:  # the file shrank: only a cut body can say so
                    response.force_close()
                await response.write_eof()
                record.result = "sent"
                return response
        except ConnectionError:  # the client went away mid-download: nothing more to send
            record.result = "client went away"
            return response
        except RangeNotSatisfiableError:
            record.result = "range not satisfiable"
            raise
        except AdapterError as e:
            if not response.prepared:
                raise
            record.result = f"error: {e.kind}"
            response.force_close()  # the status is sent: only a cut body can say so
            return response


def _wanted(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) of what to send, as RFC 9110 (14.2) has it: a Range this server does
    not serve (another unit, several ranges, bad syntax) is ignored, and the whole file sent;
    None when the one byte range asked is not in the file."""
    whole = 0, size
    unit, equals, ranges = (header or "").partition("=")
    specs = [spec.strip() for spec in ranges.split(",") if spec.strip()]
    if not equals or unit.lower() != "bytes" or len(specs) != 1:
        return whole
    found = _BYTE_RANGE.fullmatch(specs[0])
    if found is None:
        return whole
    first, last, suffix = found.groups()
    if suffix is not None:  # the last `suffix` bytes
        if int(suffix) == 0:
            return None
        return max(size - int(suffix), 0), min(int(suffix), size)
    start = int(first)
    if last and int(last) < start:
        return whole  # invalid: its end before its start
    if start >= size:
        return None
    stop = min(int(last) + 1, size) if last else size
    return start, stop - start


async def port_forward(request: web.Request) -> web.StreamResponse:
    """A WebSocket to the node's 127.0.0.1:`port`: binary frames both ways."""
    name = request.match_info["nm_name"]
    settings = request.app[STATE].adapter.settings
    port = _query(_port_query, request)["port"]
    connector = request.app[STATE].adapter.ssh
    target = connector.target(name)
    user = request.get(IDENTITY, ANONYMOUS).name
    forwards = request.app[STATE].forwards_by_user
    if forwards[user] >= settings.max_forwards_per_user:
        raise TooManyError(
            f"{user} has {forwards[user]} open "
            f"(FRPA_MAX_FORWARDS_PER_USER={settings.max_forwards_per_user})",
            kind="too many forwards",
        )
    async with request.app[STATE].audit.action(
        request, "portforward", name, f"port {port}"
    ) as record:
        ws = web.WebSocketResponse(
            heartbeat=settings.ws_heartbeat or None, max_msg_size=_FRAME, protocols=(WS_PROTOCOL,)
        )
        await request.app[STATE].shutdown.prepare(ws, request)
        forwards[user] += 1
        try:
            async with node_port(connector, target, port) as stream:
                record.result = await _carry(request, ws, stream, record)
        except AdapterError as e:  # after the upgrade: the close frame says it
            logger.warning("port forward to %s port %d for %s failed: %s", name, port, user, e)
            record.result = f"error: {e.kind}"
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=str(e)[:120].encode())
        finally:
            forwards[user] -= 1
    await ws.close()
    return ws


async def _carry(
    request: web.Request, ws: web.WebSocketResponse, stream: PortStream, record: audit.AuditRecord
) -> str:
    """Both ways until either side closes, or nothing moved for the idle timeout."""
    clock = request.app[STATE].adapter.clock
    idle = request.app[STATE].adapter.settings.forward_idle_timeout
    moved = clock.monotonic()

    async def to_node() -> None:
        nonlocal moved
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                record.bytes_in += len(msg.data)
                moved = clock.monotonic()
                await stream.write(msg.data)
        stream.write_eof()

    async def from_node() -> None:
        nonlocal moved
        while data := await stream.read():
            record.bytes_out += len(data)
            moved = clock.monotonic()
            await ws.send_bytes(data)

    async def watch_idle() -> None:
        while clock.monotonic() - moved < idle:
            await clock.sleep(max(idle - (clock.monotonic() - moved), 0.05))

    first, error = await first_to_end(
        {"client closed": to_node(), "node closed": from_node(), "idle": watch_idle()}
    )
    if error is not None and not isinstance(error, ConnectionError):
        raise error
    return first
