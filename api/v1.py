"""The versioned API: whole NodeMaintenance objects, and exec. Refusals are raised as
`AdapterError`s, which `api.errors` answers as `{"error", "details"}`.

The shell WebSocket of this API is in `api.shell`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from functools import partial
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

from api import audit
from api.callers import IDENTITY
from api.selection import Choice, batch_names, choice, node_target
from api.state import STATE
from nodes.errors import (
    AdapterError,
    InvalidInputError,
    NodeNotFoundError,
    NotLoadedError,
    NotStoredError,
)
from nodes.model import (
    InvalidUniqueIdError,
    JsonObject,
    NodeChange,
    NodeState,
    UniqueId,
    format_time,
    parse_unique_id,
    token_digest,
    unique_id_of,
)
from nodes.watch import WatchEndedError
from schemas import parse_json
from schemas.labels import labels_of
from schemas.rest import BatchExecSchema, ExecSchema, LabelPatchSchema, NodeListQuerySchema
from ssh.session import ExecResult, run_command

logger = logging.getLogger(__name__)
# How long a write waits for the store to confirm it before answering 503 (it stays queued).
STORE_WAIT_SECONDS = 10.0
# Nodes a list renders between two yields to the event loop (~0.4 ms of work).
_RENDER_CHUNK = 20
# A quiet watch says so this often: below the idle timeouts of proxies on the way.
_BOOKMARK_SECONDS = 10.0
_BOOKMARK = b'{"type":"BOOKMARK"}\n'
_NOT_LOADED = "the node store is not read yet; try again"
_list_query = NodeListQuerySchema()
_exec_schema = ExecSchema()
_batch_schema = BatchExecSchema()
_label_schema = LabelPatchSchema()


async def list_nodes(request: web.Request) -> web.StreamResponse:
    """`GET /api/v1/nodes[?labelSelector=S][&fieldSelector=S][&limit=N][&continue=TOKEN]`
    -> `{"items": [NM, ...], "metadata": {"continue": TOKEN}}` (no token on the last page;
    a page may hold fewer than `limit` nodes when a selector passes over many). `status=`
    is `fieldSelector=status=`. A token's scope leaves out every node outside it.

    Answered from memory, a page at a time: a few lists render at once (the rest queue behind
    them), and each yields to the plugin path after every few nodes it renders. A client
    that takes nothing of its answer for FRPA_SLOW_READER_TIMEOUT is dropped.
    """
    try:
        query = _list_query.load(dict(request.query))
        after = _after(query["continue_"])
    except ValidationError as e:
        raise InvalidInputError(e.messages, kind="invalid query") from e
    chosen = choice(
        request, query["label_selector"], query["field_selector"], status=query["status"]
    )
    if not await loaded(request):
        raise NotLoadedError(_NOT_LOADED)
    if query["watch"]:
        return await _watch(request, chosen)
    async with request.app[STATE].lists:
        states, last = request.app[STATE].adapter.registry.page(after, query["limit"], chosen)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    try:
        await response.prepare(request)
        await delivered(request, response.write(b'{"items":['))
        await _send_rendered(request, response, states, partial(_node_json, request), b",")
        metadata = {"continue": _continue_token(last)} if last else {}
        tail = b'],"metadata":' + json.dumps(metadata).encode() + b"}"
        await delivered(request, response.write(tail))
        await delivered(request, response.write_eof())
    except ConnectionError:  # the client went away, or was dropped
        pass
    return response


async def caller_access(request: web.Request) -> web.Response:
    """`{"user", "may": {"list", "shell", "exec", "files", "sessions", "audit"}}`: what the
    console may offer this caller
    (the rules decide each call anyway)."""
    access = request.app[STATE].access
    may = {
        what: await access.may(request, method, path)
        for what, (method, path) in {
            "list": ("GET", "/api/v1/nodes"),
            "shell": ("GET", "/api/v1/nodes/{nm_name}/shell"),
            "exec": ("POST", "/api/v1/exec"),
            "files": ("GET", "/api/v1/nodes/{nm_name}/files"),
            "sessions": ("GET", "/api/v1/sessions"),
            "audit": ("GET", "/api/v1/audit"),
        }.items()
    }
    return web.json_response({"user": request[IDENTITY].name, "may": may})


async def get_node(request: web.Request) -> web.Response:
    name = request.match_info["nm_name"]
    state = await known_node(request, name)
    return web.json_response(node_object(request, state))


async def node_history(request: web.Request) -> web.Response:
    """The node's recent status changes, latest first: `{"name", "items": [{"time",
    "status", "reason"}]}`, as many as the registry keeps (HISTORY), since this process
    started and the one stored before."""
    name = request.match_info["nm_name"]
    state = await known_node(request, name)
    changes = request.app[STATE].adapter.registry.history(state.unique_id)
    items = [
        {"time": format_time(at), "status": status, "reason": reason}
        for at, status, reason in reversed(changes)
    ]
    return web.json_response({"name": name, "items": items})


async def _watch(request: web.Request, chosen: Choice) -> web.StreamResponse:
    """`?watch=true`: NDJSON events `{"type": "ADDED" | "MODIFIED" | "DELETED", "object":
    NM}`, every node first as ADDED, then each change; `{"type": "BOOKMARK"}` once every
    node is in, and again when quiet (so a dead reader is noticed, and proxies keep the
    stream). A reader too slow to keep
    up gets `{"type": "ERROR", "object": {"code": 410, ...}}` and the stream ends: list
    again; one that takes nothing for FRPA_SLOW_READER_TIMEOUT is dropped. The stream also
    ends when the adapter shuts down. With selectors, only the nodes they choose: a node
    that comes to be chosen is ADDED, one that no longer is DELETED, as Kubernetes does."""
    registry = request.app[STATE].adapter.registry
    states, watch = registry.watch()
    states = [state for state in states if chosen(state)]
    shown = {state.unique_id for state in states}
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await _send_rendered(request, response, states, partial(_event, request, "ADDED"), b"")
        await delivered(request, response.write(_BOOKMARK))  # every node is in: changes follow
        while True:
            try:
                async with asyncio.timeout(_BOOKMARK_SECONDS):
                    event = await watch.next()
            except TimeoutError:
                await delivered(request, response.write(_BOOKMARK))
                continue
            except WatchEndedError as e:
                if e.overrun:
                    gone = {"code": 410, "reason": "Expired", "message": "fell behind: list again"}
                    error = json.dumps({"type": "ERROR", "object": gone}).encode()
                    await delivered(request, response.write(error))
                break
            kind = _seen_as(event.type, event.state, chosen, shown)
            if kind is not None:
                await delivered(request, response.write(_event(request, kind, event.state)))
        await delivered(request, response.write_eof())
    except ConnectionError:  # the reader went away, or was dropped
        pass
    finally:
        registry.unwatch(watch)
    return response


def _seen_as(kind: str, state: NodeState, chosen: Choice, shown: set[UniqueId]) -> str | None:
    """What a watch of `chosen` nodes, which has `shown` its reader, tells of a change."""
    uid = state.unique_id
    if kind != "DELETED" and chosen(state):
        if uid in shown:
            return kind
        shown.add(uid)
        return "ADDED"
    if uid in shown:
        shown.discard(uid)
        return "DELETED"
    return None


def _event(request: web.Request, kind: str, state: NodeState) -> bytes:
    obj = node_object(request, state)
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _node_json(request: web.Request, state: NodeState) -> bytes:
    return json.dumps(node_object(request, state), separators=(",", ":")).encode()


async def _send_rendered(
    request: web.Request,
    response: web.StreamResponse,
    states: list[NodeState],
    render: Callable[[NodeState], bytes],
    separator: bytes,
) -> None:
    """`states` to the client, rendered a few at a time, each piece under a render slot
    (LISTS): the slots bound the CPU readers take, and are free again before a piece is
    written, so a client slow to read holds up no other reader."""
    for start in range(0, len(states), _RENDER_CHUNK):
        async with request.app[STATE].lists:
            piece = separator.join(render(s) for s in states[start : start + _RENDER_CHUNK])
            # Yielded with the slot held: between two plugin calls the loop renders at most
            # as many pieces as there are slots, however many lists are open.
            await asyncio.sleep(0)
        await delivered(request, response.write(separator + piece if start else piece))


async def delivered(request: web.Request, writing: Awaitable[None]) -> None:
    """Awaits a write to the client, which waits for as long as the client reads nothing:
    one that takes nothing for FRPA_SLOW_READER_TIMEOUT is dropped, counted, and
    ConnectionResetError raised, so no answer waits on a client for ever."""
    seconds = request.app[STATE].adapter.settings.slow_reader_timeout
    try:
        async with asyncio.timeout(seconds or None):
            await writing
    except TimeoutError:
        resource = request.match_info.route.resource
        assert resource is not None  # a route answers: it has a resource
        route = resource.canonical
        request.app[STATE].slow_readers[route] += 1
        _reset(request)
        logger.info("dropped a client of %s that took nothing for %g s", route, seconds)
        raise ConnectionResetError(f"the client took nothing for {seconds:g} s") from None


def _reset(request: web.Request) -> None:
    """Close the client's connection at once with a reset: a plain close would leave its
    unread answer for the kernel to keep offering it, buffers and all, for minutes."""
    transport = request.transport
    if transport is None:  # already closed
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def node_object(request: web.Request, state: NodeState) -> JsonObject:
    """The node's NM as the API shows it: its state in memory, over what others own in the
    stored object (labels, bindStatus...) where the store keeps a copy in memory."""
    return request.app[STATE].adapter.node_object(state)


async def known_node(request: web.Request, name: str) -> NodeState:
    """The node NM `name` names, once the stored nodes are read (NotLoadedError before);
    NodeNotFoundError for one nobody knows."""
    if not await loaded(request):
        raise NotLoadedError(_NOT_LOADED)
    state = node_state(request, name)
    if state is None:
        raise NodeNotFoundError({"name": name})
    return state


def node_state(request: web.Request, name: str) -> NodeState | None:
    """The node an NM name names, if known; None also for names not of ours."""
    try:
        return request.app[STATE].adapter.registry.get(unique_id_of(name))
    except InvalidUniqueIdError:
        return None


def _continue_token(last: UniqueId) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode()


def _after(token: str | None) -> UniqueId | None:
    if token is None:
        return None
    try:
        return parse_unique_id(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, InvalidUniqueIdError) as e:
        raise ValidationError({"continue": ["not a token this API gave"]}) from e


async def loaded(request: web.Request) -> bool:
    """Whether the stored nodes are in memory, waiting up to STORE_WAIT_SECONDS for them."""
    try:
        async with asyncio.timeout(STORE_WAIT_SECONDS):
            await asyncio.shield(request.app[STATE].adapter.loaded)
    except TimeoutError:
        return False
    return True


async def exec_node(request: web.Request) -> web.Response:
    """`{"cmd", "timeout"?}` -> `{"exit_status", "stdout", "stderr", "duration_ms", ...}`."""
    data = await _exec_input(request, _exec_schema)
    return web.json_response(await _run(request, request.match_info["nm_name"], data))


async def exec_batch(request: web.Request) -> web.StreamResponse:
    """`{"cmd", "nodes": [...] | "status": "online", "concurrency"?, "timeout"?}` -> NDJSON.

    One line per node as soon as that node is done: a hung node delays only its own line
    (bounded by the connect timeout plus the command's timeout).
    """
    data = await _exec_input(request, _batch_schema)
    names = batch_names(request, data)
    limit = asyncio.Semaphore(data["concurrency"])

    async def one(name: str) -> dict[str, Any]:
        async with limit:
            try:
                return {"node": name, **await _run(request, name, data)}
            except AdapterError as e:  # the node's, or its audit record's
                return {"node": name, "error": e.kind, "details": str(e)}
            except Exception as e:  # one node's fault is its own line; the others go on
                logger.exception("exec on %s failed", name)
                return {
                    "node": name,
                    "error": "internal error",
                    "details": f"{type(e).__name__}: {e}",
                }

    # Refused whole (503) when its record cannot be written.
    async with request.app[STATE].audit.action(
        request, "exec batch", f"{len(names)} nodes", data["cmd"]
    ) as batch:
        return await node_lines(request, batch, names, one)


async def node_lines(
    request: web.Request,
    batch: audit.AuditRecord,
    names: Iterable[str],
    one: Callable[[str], Coroutine[Any, Any, dict[str, Any]]],
) -> web.StreamResponse:
    """A batch's answer: `one(name)` for each node at once, one NDJSON line per node as soon
    as it is done (a hung node delays only its own); `batch.result` says how it ended."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    try:
        await response.prepare(request)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(name)) for name in dict.fromkeys(names)]
            for done in asyncio.as_completed(tasks):
                line = json.dumps(await done, ensure_ascii=False) + "\n"
                await delivered(request, response.write(line.encode()))
        await delivered(request, response.write_eof())
        batch.result = "done"
    except ConnectionError:  # the caller went away: the nodes' own records say what ran
        batch.result = "client went away"
    return response


async def unpin_host_key(request: web.Request) -> web.Response:
    """Forget a node's pinned sshd host key (after a reinstall): the next dial pins anew."""
    name = request.match_info["nm_name"]
    async with request.app[STATE].audit.action(request, "unpin", name) as record:
        request.app[STATE].adapter.ssh.unpin(name)
        record.result = "unpinned"
    return web.json_response({"unpinned": name})


async def issue_frpc_token(request: web.Request) -> web.Response:
    """A new token for the node's frpc (`metadatas.token`); the previous one stops working.

    Shown once: the NM keeps only its SHA-256 digest. Creates the node when it is not known
    yet, so a node can be admitted before its first Login (FRPA_REQUIRE_REGISTERED).
    """
    name = request.match_info["nm_name"]
    try:
        uid = unique_id_of(name)
    except InvalidUniqueIdError as e:
        raise InvalidInputError(str(e), kind="invalid name") from e
    async with request.app[STATE].audit.action(request, "frpc-token", name) as record:
        token = secrets.token_urlsafe(32)
        request.app[STATE].adapter.registry.amend(
            uid,
            NodeChange(
                reason="FrpcTokenIssued",
                at=request.app[STATE].adapter.clock.now(),
                frpc_token_hash=token_digest(token),
            ),
        )
        record.result = "issued" if await stored(request, [uid]) else "not stored yet"
    if record.result != "issued":
        raise NotStoredError("the store did not confirm the token in time")
    logger.info("issued a new frpc token for %s", name)
    return web.json_response({"node": name, "token": token, "frpc": {"metadatas.token": token}})


async def stored(request: web.Request, uids: Iterable[UniqueId]) -> bool:
    """Whether the store confirms these nodes' changes within STORE_WAIT_SECONDS; either
    way they stay queued until stored."""
    return await request.app[STATE].adapter.stored(uids, STORE_WAIT_SECONDS)


async def label_node(request: web.Request) -> web.Response:
    """Change a node's labels with a JSON merge patch of `metadata.labels`; the NM once
    stored. Labels its frpc declares change again only when its declaration does."""
    name = request.match_info["nm_name"]
    patch: dict[str, str | None] = (await _input(request, _label_schema))["metadata"]["labels"]
    state = await known_node(request, name)
    labels = dict(state.known_labels)
    for key, value in patch.items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    adapter = request.app[STATE].adapter
    async with request.app[STATE].audit.action(
        request, "label", name, json.dumps(patch, ensure_ascii=False)
    ) as record:
        state = adapter.registry.amend(
            state.unique_id,
            NodeChange(reason="Labelled", at=adapter.clock.now(), labels=labels_of(labels)),
        )
        record.result = "stored" if await stored(request, [state.unique_id]) else "not stored yet"
    if record.result != "stored":
        raise NotStoredError("the store did not confirm the labels in time")
    return web.json_response(node_object(request, state))


async def _input(request: web.Request, schema: Schema) -> dict[str, Any]:
    """The JSON object body of `request`, loaded by `schema`."""
    try:
        body = parse_json(await request.read())
    except (ConnectionError, web.RequestPayloadError) as e:  # a body broken off
        raise InvalidInputError(f"the body cannot be read: {e}") from e
    except ValueError as e:
        raise InvalidInputError(f"the body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    try:
        data: dict[str, Any] = schema.load(body)
    except ValidationError as e:
        raise InvalidInputError(e.messages) from e
    return data


async def _exec_input(request: web.Request, schema: Schema) -> dict[str, Any]:
    data = await _input(request, schema)
    ceiling = request.app[STATE].adapter.settings.exec_timeout_max
    if data.get("timeout") and data["timeout"] > ceiling:
        raise InvalidInputError({"timeout": [f"at most {ceiling:g} s (FRPA_EXEC_TIMEOUT_MAX)"]})
    return data


async def _run(request: web.Request, name: str, data: dict[str, Any]) -> dict[str, Any]:
    time_limit = data["timeout"] or request.app[STATE].adapter.settings.exec_timeout
    return _result(await run_audited(request, name, data["cmd"], time_limit))


async def run_audited(
    request: web.Request, name: str, command: str, time_limit: float
) -> ExecResult:
    """Run `command` on node `name` for the caller of `request`, recorded in the audit log
    before it runs (AuditUnavailableError: it does not run) and when it ends."""
    async with request.app[STATE].audit.action(request, "exec", name, command) as record:
        result = await run_command(
            request.app[STATE].adapter.ssh,
            node_target(request, name),
            command,
            time_limit=time_limit,
            output_limit=request.app[STATE].adapter.settings.exec_output_limit,
        )
        record.result = "timeout" if result.timed_out else "exited"
        record.exit_status = result.exit_status
        record.bytes_out = len(result.stdout) + len(result.stderr)
    return result


def _result(result: ExecResult) -> dict[str, Any]:
    return {
        "exit_status": result.exit_status,
        "exit_signal": result.exit_signal[0] if result.exit_signal else None,
        "stdout": result.stdout.decode(errors="replace"),
        "stderr": result.stderr.decode(errors="replace"),
        "duration_ms": result.duration_ms,
        "truncated": result.truncated,
        "timed_out": result.timed_out,
    }
