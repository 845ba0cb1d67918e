"""What operators did, for admins to look back on: the recorded shell sessions and the
audit trail.

`GET /api/v1/sessions[?node=&user=&limit=]` lists the recordings in FRPA_SHELL_RECORDINGS,
latest first: `{"items": [{"name", "node", "user", "start", "cols", "rows", "size"}]}`;
`GET /api/v1/sessions/{name}` is one, asciicast v2, as `asciinema play` and the console's
player read it. `GET /api/v1/audit[?node=&user=&limit=]` is the latest actions of
FRPA_AUDIT_LOG, each as it ended (or started, while it runs), latest first, from the last
AUDIT_TAIL bytes of the file. A scoped token sees only its nodes'. Files are read in a
thread.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from aiohttp import web
from marshmallow import ValidationError

from api.callers import IDENTITY
from api.errors import NotKeptError
from api.state import STATE
from nodes.errors import InvalidInputError
from nodes.model import nm_name
from schemas.rest import RecordQuerySchema

AUDIT_TAIL = 1 << 20
_query_schema = RecordQuerySchema()
_SUFFIX = ".cast"


def _query(request: web.Request) -> dict[str, Any]:
    try:
        query: dict[str, Any] = _query_schema.load(dict(request.query))
    except ValidationError as e:
        raise InvalidInputError(e.messages, kind="invalid query") from e
    return query


def _visible(request: web.Request) -> Collection[str] | None:
    """The NM names the caller may see, None for every one (an unscoped token)."""
    scope = request[IDENTITY].scope
    if not scope.requirements:
        return None
    states = request.app[STATE].adapter.registry.states()
    return {nm_name(s.unique_id) for s in states if scope.matches(s.known_labels)}


def _directory(request: web.Request) -> Path:
    directory = request.app[STATE].adapter.settings.shell_recordings
    if not directory:
        raise NotKeptError("no shell sessions are recorded: FRPA_SHELL_RECORDINGS is not set")
    return Path(directory)


async def list_sessions(request: web.Request) -> web.Response:
    query = _query(request)
    found = await asyncio.to_thread(
        _sessions, _directory(request), query["node"], query["user"], query["limit"],
        _visible(request),
    )  # fmt: skip
    return web.json_response({"items": found})


def _sessions(
    directory: Path, node: str | None, user: str | None, limit: int, visible: Collection[str] | None
) -> list[dict[str, Any]]:
    # Named `<start>-<node>-<user>.cast`: latest first by name, and a node's name in it
    # spares reading the others; the header's title says whose it is for certain.
    names = sorted(
        (e.name for e in os.scandir(directory) if e.name.endswith(_SUFFIX) and e.is_file()),
        reverse=True,
    )
    found = []
    for name in names:
        if node and f"-{node}-" not in name:
            continue
        session = _session(directory / name)
        if session is None or (node and session["node"] != node):
            continue
        if (user and session["user"] != user) or (
            visible is not None and session["node"] not in visible
        ):
            continue
        found.append(session)
        if len(found) == limit:
            break
    return found


def _session(path: Path) -> dict[str, Any] | None:
    """A recording's facts from its header (None: not one of ours, or gone)."""
    try:
        with path.open("rb") as file:
            header = json.loads(file.readline())
            size = os.fstat(file.fileno()).st_size
        node, _, user = header["title"].partition(" (")  # "<node> (<user>)"
        return {
            "name": path.name.removesuffix(_SUFFIX),
            "node": node,
            "user": user.removesuffix(")"),
            "start": header["timestamp"],
            "cols": header["width"],
            "rows": header["height"],
            "size": size,
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


async def get_session(request: web.Request) -> web.StreamResponse:
    directory = _directory(request)
    name = request.match_info["name"]
    path = directory / f"{name}{_SUFFIX}"
    session = await asyncio.to_thread(_session, path) if path.parent == directory else None
    visible = _visible(request)
    if session is None or (visible is not None and session["node"] not in visible):
        raise NotKeptError(f"no recording named {name!r} is kept")
    return web.FileResponse(path, headers={"Content-Type": "application/x-asciicast"})


async def read_audit(request: web.Request) -> web.Response:
    query = _query(request)
    log = request.app[STATE].adapter.settings.audit_log
    if not log or log == "-":
        raise NotKeptError("no audit log is kept in a file: FRPA_AUDIT_LOG names none")
    visible = _visible(request)
    records = await asyncio.to_thread(_audit_tail, Path(log))
    found = []
    for record in records:
        if (query["node"] and record.get("node") != query["node"]) or (
            query["user"] and record.get("user") != query["user"]
        ):
            continue
        if visible is not None and record.get("node") not in visible:
            continue
        found.append(record)
        if len(found) == query["limit"]:
            break
    return web.json_response({"items": found})


def _audit_tail(path: Path) -> list[dict[str, Any]]:
    """The actions of the log's last AUDIT_TAIL bytes, latest first: each by its last
    record (the end, or the start while it runs)."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            file.seek(max(size - AUDIT_TAIL, 0))
            lines = file.read().splitlines()[1 if size > AUDIT_TAIL else 0 :]  # a cut first
    except FileNotFoundError:
        return []
    actions: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            actions.pop(record["id"], None)  # its end replaces its start, in the end's place
            actions[record["id"]] = record
    return list(reversed(actions.values()))
