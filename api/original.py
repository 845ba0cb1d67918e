"""The REST API of the original Go frp_adapter: same routes, parameters and envelopes.

Parameters come from the query string (the original's patched frps sent them that way,
with an empty body labelled application/json), a form body, or a JSON object body.
Answers: `{"code":200,"data":...}`, written as Go's encoding/json writes it (`api.gojson`);
refusals are raised as `AdapterError`s, which `api.errors` answers as the original did,
`{"code":<status>,"error":{"message":...}}`.
Writes return once the change is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from marshmallow import Schema, ValidationError

from api.errors import CommandFailedError
from api.gojson import go_json_response
from api.selection import node_target, original_name
from api.state import STATE
from api.v1 import loaded, node_object, node_state, run_audited, stored
from nodes.errors import InvalidInputError, NodeNotFoundError, NotLoadedError, NotStoredError
from nodes.model import (
    OFFLINE,
    ONLINE,
    InvalidUniqueIdError,
    NodeChange,
    NodeStatus,
    UniqueId,
    nm_name,
    parse_unique_id,
    ssh_endpoint,
)
from schemas import half_surrogate, parse_json
from schemas.rest import FrpCreateSchema, FrpUpdateSchema, OriginalExecSchema
from ssh.connector import SshError, SshTarget

_create_schema = FrpCreateSchema()
_update_schema = FrpUpdateSchema()
_exec_schema = OriginalExecSchema()


def _success(data: object) -> web.Response:
    return go_json_response({"code": 200, "data": data})


async def home(request: web.Request) -> web.Response:
    return _success("Frp Adapter Is Working Now....")


async def frp_fetch(request: web.Request) -> web.Response:
    name = request.match_info["nm_name"]
    await _loaded(request)
    state = node_state(request, name)
    if state is None:
        # Word for word the original's, which quoted the Kubernetes API's NotFound.
        raise NodeNotFoundError(
            "failed to get latest version of nodeMaintenance: "
            f'nodemaintenances.edge.harmonycloud.cn "{name}" not found'
        )
    endpoint = ssh_endpoint(node_object(request, state))
    return _success(
        {
            "frp_server_ip_address": endpoint.frps_address,
            "proxy_port": endpoint.proxy_port,
            "status": endpoint.status,
        }
    )


async def frp_create(request: web.Request) -> web.Response:
    data = _load(
        _create_schema,
        await _params(request),
        "can't create nodemaintenances crd resource in k8s cluster,err is:",
    )
    uid = _unique_id(data["unique_id"])
    await _loaded(request)
    _transition(request, uid, data, reason="FrpCreate", status=ONLINE)
    await _stored(request, [uid])
    return _success(f"create {nm_name(uid)} crd resource in k8s cluster successfully")


async def frp_update(request: web.Request) -> web.Response:
    data = _load(_update_schema, await _params(request), "update failed:")
    uid = _unique_id(data["unique_id"])
    await _loaded(request)
    status: NodeStatus | None = None
    if data["status"] is not None:
        status = ONLINE if data["status"] == ONLINE else OFFLINE
    _transition(request, uid, data, reason="FrpUpdate", status=status)
    await _stored(request, [uid])
    return _success("Update Successfully")


async def nm_useless(request: web.Request) -> web.Response:
    """Mark every NM offline (the original frps called this when it shut down)."""
    registry = request.app[STATE].adapter.registry
    at = request.app[STATE].adapter.clock.now()
    await _loaded(request)
    in_scope = request.app[STATE].access.in_scope
    uids = [
        state.unique_id
        for state in registry.states()
        if in_scope(request, nm_name(state.unique_id))
    ]
    for uid in uids:
        registry.transition(uid, NodeChange(reason="NmUseless", at=at, status=OFFLINE))
    await _stored(request, uids)
    return _success("make all nodemaintenances objects become useless successfully")


async def reverse_proxy_shell(request: web.Request) -> web.Response:
    """Run `cmd` on node `nm_name` (form fields), answering as the original did."""
    return await _exec(request, request.match_info.get("nm_name"))


async def reverse_shell_command(request: web.Request) -> web.Response:
    """The original's earlier exec route: the node in the path, `cmd` in the form."""
    return await _exec(request, request.match_info["nm_name"])


async def _exec(request: web.Request, name: str | None) -> web.Response:
    settings = request.app[STATE].adapter.settings
    data = _load(_exec_schema, await _params(request), "invalid parameters:")
    name = name or data["nm_name"]
    if not name:
        raise InvalidInputError("invalid parameters: nm_name: Missing data")
    name = original_name(request, name)
    cmd = data["cmd"]
    target: SshTarget | None = None
    try:
        target = node_target(request, name)
        result = await run_audited(request, target.name, cmd, settings.exec_timeout)
    except SshError as e:
        # The original answered 400 for every node it could not run on, an offline one too.
        said = f"ssh client create failed, err is: {e}" if target is not None else str(e)
        raise CommandFailedError(said) from e
    if result.timed_out:
        why = f"timed out after {settings.exec_timeout:g} s"
    elif result.exit_signal is not None:
        why = _signalled(*result.exit_signal)
    elif result.exit_status is None:
        why = "wait: remote command exited without exit status or exit signal"
    elif result.exit_status != 0:
        why = f"Process exited with status {result.exit_status}"
    else:
        output = result.stdout.decode(errors="replace").strip()
        if result.truncated:  # the original kept it all; past the limit, say so
            limit = settings.exec_output_limit
            output += f"\n[output cut at {limit} bytes: FRPA_EXEC_OUTPUT_LIMIT]"
        return _success(f"execute shell command {cmd} successfully,the result is: {output}")
    raise CommandFailedError(f"execute shell command {cmd} failed, err is: {why}")


# x/crypto/ssh's numbers for the signals it names: a status of 128 + the number.
_SIGNALS = {
    "ABRT": 6, "ALRM": 14, "FPE": 8, "HUP": 1, "ILL": 4, "INT": 2,
    "KILL": 9, "PIPE": 13, "QUIT": 3, "SEGV": 11, "TERM": 15,
}  # fmt: skip


def _signalled(name: str, message: str) -> str:
    """A command killed by a signal, in the words of x/crypto/ssh's ExitError."""
    said = f"Process exited with status {128 + _SIGNALS.get(name, 0)} from signal {name}"
    return f"{said}. Reason was: {message}" if message else said


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return params
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.post()
        # Multipart without a boundary, a charset Python lacks, a part's unknown transfer
        # encoding or too many headers, a `_charset_` part past a long boundary (aiohttp
        # asserts), a body broken off: each is the sender's, and aiohttp's own class.
        except (
            ValueError,
            LookupError,
            RuntimeError,
            AssertionError,
            ConnectionError,
            web.RequestPayloadError,
            HttpProcessingError,
        ) as e:
            raise InvalidInputError(f"the form body cannot be read: {e}") from e
        fields: dict[str, str] = {}
        for key, value in form.items():
            if not isinstance(value, str):
                raise InvalidInputError("file uploads are not accepted")
            fields.setdefault(_unicode(key), _unicode(value))  # the first, as gin's PostForm
        return {**params, **fields}
    try:
        body = await request.read()
    except (ConnectionError, web.RequestPayloadError) as e:  # a body broken off
        raise InvalidInputError(f"the body cannot be read: {e}") from e
    if not body.strip():
        return params
    if request.content_type != "application/json":
        raise InvalidInputError(f"unsupported Content-Type {request.content_type!r}")
    try:
        parsed = parse_json(body)
    except ValueError as e:
        raise InvalidInputError(f"the body is not valid JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise InvalidInputError("the JSON body must be an object")
    return {**params, **parsed}


def _unicode(text: str) -> str:
    """Form text in a charset such as UTF-7 may decode to half of a surrogate pair, which
    nothing can encode again: stored, it would break every answer that shows it."""
    if half := half_surrogate(text):
        raise InvalidInputError(f"the form is not valid Unicode text: {half}")
    return text


def _load(schema: Schema, params: dict[str, Any], failed: str) -> dict[str, Any]:
    """`params` as `schema` reads them; refused in the words the original's route failed
    with, `failed`."""
    try:
        data: dict[str, Any] = schema.load(params)
    except ValidationError as e:
        details = "; ".join(f"{field}: {' '.join(map(str, msgs))}" for field, msgs in _items(e))
        raise InvalidInputError(f"{failed} {details}") from e
    return data


def _items(error: ValidationError) -> Iterable[tuple[str, list[Any]]]:
    messages = error.messages if isinstance(error.messages, dict) else {"_": error.messages}
    return ((str(k), v if isinstance(v, list) else [v]) for k, v in messages.items())


def _unique_id(value: str) -> UniqueId:
    try:
        return parse_unique_id(value)
    except InvalidUniqueIdError as e:
        raise InvalidInputError(str(e)) from e


def _transition(
    request: web.Request,
    uid: UniqueId,
    data: dict[str, Any],
    *,
    reason: str,
    status: NodeStatus | None,
) -> None:
    """Record what the call says; without a status, the node's status stays as it is. A
    caller whose token is scoped changes only the known nodes of its scope."""
    if not request.app[STATE].access.in_scope(request, nm_name(uid)):
        raise NodeNotFoundError(f"nodemaintenance {nm_name(uid)} not found")
    registry = request.app[STATE].adapter.registry
    record = registry.transition if status is not None else registry.amend
    record(
        uid,
        NodeChange(
            reason=reason,
            at=request.app[STATE].adapter.clock.now(),
            status=status,
            frps_address=data["frp_server_ip_address"],
            remote_port=data["port"],
            host_name=data["host_name"],
            mac_address=data["mac_address"],
        ),
    )


async def _loaded(request: web.Request) -> None:
    if not await loaded(request):
        raise NotLoadedError("the node store is not readable yet; try again")


async def _stored(request: web.Request, uids: list[UniqueId]) -> None:
    if not await stored(request, uids):
        raise NotStoredError("the change is queued but the store did not confirm it in time")
