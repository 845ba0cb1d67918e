"""Every route, declared once: method, path, handler, access rule, schemas and answers.

The router, the access rules (`api.auth` applies them) and `/api/v1/openapi.json` (apispec,
from the marshmallow schemas that check input) are all built here from `ROUTES`, so a route
cannot exist without its rule or its document entry, and the document cannot drift.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from api import console, files, health, metrics, original, recordings, shell, v1
from api.auth import OPEN, Access, Rule
from api.callers import Role
from api.errors import UnsupportedEncodingError, rendered
from api.metrics import RequestTimer
from api.state import STATE
from runtime.adapter import Adapter
from schemas.rest import (
    BatchExecSchema,
    BatchFileQuerySchema,
    ExecSchema,
    FileQuerySchema,
    FrpCreateSchema,
    FrpUpdateSchema,
    LabelPatchSchema,
    NodeListQuerySchema,
    OriginalExecSchema,
    PathQuerySchema,
    PortForwardQuerySchema,
    RecordQuerySchema,
    ShellQuerySchema,
)

BodyType = Literal["application/json", "application/x-www-form-urlencoded"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Rule
    summary: str
    answers: Mapping[int, str]  # status -> what it means
    query: type[Schema] | None = None
    body: tuple[BodyType, type[Schema]] | None = None


_PARAMETER = re.compile(r"{(\w+)}")


async def _plugin(request: web.Request) -> web.StreamResponse:
    """The plugin on the API's port, unless FRPA_PLUGIN_ADDRESS serves it alone."""
    adapter = request.app[STATE].adapter
    if adapter.settings.plugin_address is not None:
        raise web.HTTPNotFound()
    return await adapter.plugins.handle(request, **request.match_info)


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


_READ = Rule(Role.READ, "get", anonymous=True)
_DENIED = {401: "no valid bearer token", 403: "not allowed to this caller"}
_INVALID = {400: "invalid input", **_DENIED}
_UNKNOWN = {**_INVALID, 404: "no such node"}
_NOT_READ = {503: "the node store is not read yet"}
_NOT_STORED = {503: "the store did not confirm the change in time (it stays queued)"}
_SSH = {
    **_UNKNOWN,
    409: "node offline",
    502: "the node's sshd cannot be reached or is not trusted",
    503: "shell and exec are disabled, SSH is not configured, or the node's frps is unreachable",
}
_SILENT = "the node did not answer an SFTP step in time (FRPA_SFTP_STEP_TIMEOUT)"
_WEBSOCKET = {101: "a WebSocket shell (see README.md)", **_SSH, 429: "too many shells"}
_FORM: BodyType = "application/x-www-form-urlencoded"
_JSON: BodyType = "application/json"

ROUTES: tuple[Route, ...] = (
    # Open: probes, metrics, this document, and frps (it can send no header: the plugin
    # secret, when set, is a path segment; the first frps also answers at the original path).
    Route(
        method="GET",
        path="/",
        handler=original.home,
        access=OPEN,
        summary="the original's greeting",
        answers={200: "it is running"},
    ),
    Route(
        method="GET",
        path="/apis/edge.harmonycloud.cn/v1alpha1",
        handler=original.home,
        access=OPEN,
        summary="the original's greeting, where Kubernetes clients look for the API group",
        answers={200: "it is running"},
    ),
    Route(
        method="GET",
        path="/healthz",
        handler=health.healthz,
        access=OPEN,
        summary="liveness",
        answers={200: "alive", 503: "a background task is down: ended, or failing again and again"},
    ),
    Route(
        method="GET",
        path="/readyz",
        handler=health.readyz,
        access=OPEN,
        summary="readiness, with the state of the store, of each frps (reachable, reconciliation) "
        "and of each background task",
        answers={200: "ready", 503: "the store cannot keep writes"},
    ),
    Route(
        method="GET",
        path="/metrics",
        handler=metrics.serve,
        access=OPEN,
        summary="Prometheus metrics (404 when served on FRPA_METRICS_ADDRESS instead)",
        answers={200: "metrics", 404: "served on FRPA_METRICS_ADDRESS"},
    ),
    Route(
        method="GET",
        path="/api/v1/openapi.json",
        handler=_openapi,
        access=OPEN,
        summary="this document",
        answers={200: "the OpenAPI document"},
    ),
    *(
        Route(
            method="POST",
            path=path,
            handler=_plugin,
            access=OPEN,
            summary="the frps server-plugin endpoint: always 200, `reject` or `unchange` "
            "(404 when served on FRPA_PLUGIN_ADDRESS instead)",
            answers={
                200: "the plugin's answer",
                404: "unknown frps or wrong secret, or served on FRPA_PLUGIN_ADDRESS",
            },
        )
        for path in (
            "/frps/handler",
            "/frps/handler/{secret}",
            "/frps/{server}/handler",
            "/frps/{server}/handler/{secret}",
        )
    ),
    # The web console's page and files: they hold no data, the API calls they make do.
    *(
        Route(
            method="GET",
            path=path,
            handler=console.page,
            access=OPEN,
            summary="the web console",
            answers={200: "the console's page", 503: "the console is not built"},
        )
        for path in (
            "/ui",
            "/ui/",
            "/ui/shell/{nm_name}",
            "/ui/nodes/{nm_name}",
            "/ui/sessions",
            "/ui/sessions/{name}",
            "/ui/audit",
        )
    ),
    Route(
        method="GET",
        path="/ui/assets/{name}",
        handler=console.asset,
        access=OPEN,
        summary="the web console's script and styles",
        answers={200: "the file", 404: "no such file"},
    ),
    # Read.
    Route(
        method="GET",
        path="/api/v1/access",
        handler=v1.caller_access,
        access=Rule(Role.READ, "list", anonymous=True),
        summary="who the caller is, and whether it may list nodes, open shells, run commands",
        answers={200: "the caller and what it may do", **_DENIED},
    ),
    Route(
        method="GET",
        path="/frp_fetch/{nm_name}",
        handler=original.frp_fetch,
        access=_READ,
        summary="the original: where to dial a node, and its status",
        answers={200: "found", **_UNKNOWN, **_NOT_READ},
    ),
    Route(
        method="GET",
        path="/api/v1/nodes",
        handler=v1.list_nodes,
        access=Rule(Role.READ, "list", anonymous=True),
        summary="NodeMaintenances a page at a time, in name order, optionally by status",
        query=NodeListQuerySchema,
        answers={200: "a page of nodes", **_INVALID, **_NOT_READ},
    ),
    Route(
        method="GET",
        path="/api/v1/nodes/{nm_name}",
        handler=v1.get_node,
        access=_READ,
        summary="one NodeMaintenance",
        answers={200: "found", **_UNKNOWN, **_NOT_READ},
    ),
    Route(
        method="GET",
        path="/api/v1/sessions",
        handler=recordings.list_sessions,
        access=Rule(Role.ADMIN, "get", "sessions"),
        summary="recorded shell sessions, latest first, by node and user",
        query=RecordQuerySchema,
        answers={200: "the sessions", **_INVALID, 404: "none are recorded"},
    ),
    Route(
        method="GET",
        path="/api/v1/sessions/{name}",
        handler=recordings.get_session,
        access=Rule(Role.ADMIN, "get", "sessions"),
        summary="one recorded shell session, asciicast v2",
        answers={200: "the recording", **_DENIED, 404: "no such recording"},
    ),
    Route(
        method="GET",
        path="/api/v1/audit",
        handler=recordings.read_audit,
        access=Rule(Role.ADMIN, "get", "audit"),
        summary="the latest audited actions, latest first, by node and user",
        query=RecordQuerySchema,
        answers={200: "the actions", **_INVALID, 404: "no audit file is kept"},
    ),
    Route(
        method="GET",
        path="/api/v1/nodes/{nm_name}/history",
        handler=v1.node_history,
        access=_READ,
        summary="a node's recent status changes, latest first, with their reasons",
        answers={200: "found", **_UNKNOWN, **_NOT_READ},
    ),
    # Operate: shells and commands.
    Route(
        method="GET",
        path="/reverse_proxy/{nm_name}",
        handler=shell.original_shell,
        access=Rule(Role.OPERATOR, "create", "shell"),
        summary="the original's WebSocket shell: output as text frames",
        query=ShellQuerySchema,
        answers=_WEBSOCKET,
    ),
    Route(
        method="GET",
        path="/api/v1/nodes/{nm_name}/shell",
        handler=shell.shell,
        access=Rule(Role.OPERATOR, "create", "shell"),
        summary="WebSocket shell for xterm.js's attach addon: output as binary frames",
        query=ShellQuerySchema,
        answers=_WEBSOCKET,
    ),
    Route(
        method="POST",
        path="/reverse_proxy_shell",
        handler=original.reverse_proxy_shell,
        access=Rule(Role.OPERATOR, "create", "exec"),
        summary="the original's exec, node in the form",
        body=(_FORM, OriginalExecSchema),
        answers={200: "the command exited 0", **_SSH},
    ),
    Route(
        method="POST",
        path="/reverse_shell_command/{nm_name}",
        handler=original.reverse_shell_command,
        access=Rule(Role.OPERATOR, "create", "exec"),
        summary="the original's exec, node in the path",
        body=(_FORM, OriginalExecSchema),
        answers={200: "the command exited 0", **_SSH},
    ),
    Route(
        method="POST",
        path="/api/v1/nodes/{nm_name}/exec",
        handler=v1.exec_node,
        access=Rule(Role.OPERATOR, "create", "exec"),
        summary="run a command on a node",
        body=(_JSON, ExecSchema),
        answers={200: "the command ran", **_SSH},
    ),
    Route(
        method="PUT",
        path="/api/v1/nodes/{nm_name}/files",
        handler=files.put_file,
        access=Rule(Role.OPERATOR, "create", "files"),
        summary="write the request body to a file on the node (streamed; renamed into place)",
        query=FileQuerySchema,
        answers={200: "stored: path, size, sha256", **_SSH, 413: "too large", 504: _SILENT},
    ),
    Route(
        method="GET",
        path="/api/v1/nodes/{nm_name}/files",
        handler=files.get_file,
        access=Rule(Role.OPERATOR, "create", "files"),
        summary="a file on the node (Range supported), or a directory's listing",
        query=FileQuerySchema,
        answers={
            200: "the file, or the listing",
            206: "part of the file",
            **_SSH,
            416: "no such range",
            504: _SILENT,
        },
    ),
    Route(
        method="POST",
        path="/api/v1/nodes/{nm_name}/directories",
        handler=files.make_directory,
        access=Rule(Role.OPERATOR, "create", "files"),
        summary="make a directory on the node, and those missing on the way (mkdir -p)",
        query=PathQuerySchema,
        answers={200: "the directory is there: path", **_SSH, 504: _SILENT},
    ),
    Route(
        method="PUT",
        path="/api/v1/files",
        handler=files.put_files,
        access=Rule(Role.OPERATOR, "create", "files"),
        summary="write the request body to a file on many nodes; one NDJSON line per node",
        query=BatchFileQuerySchema,
        answers={
            200: "NDJSON results",
            **_SSH,
            413: "too large",
            507: "the adapter's disk cannot hold the body",
        },
    ),
    Route(
        method="GET",
        path="/api/v1/nodes/{nm_name}/portforward",
        handler=files.port_forward,
        access=Rule(Role.OPERATOR, "create", "portforward"),
        summary="WebSocket: binary frames carry a TCP stream to the node's 127.0.0.1:port",
        query=PortForwardQuerySchema,
        answers={**_WEBSOCKET, 429: "too many forwards"},
    ),
    Route(
        method="POST",
        path="/api/v1/exec",
        handler=v1.exec_batch,
        access=Rule(Role.OPERATOR, "create", "exec"),
        summary="run a command on many nodes; one NDJSON line per node",
        body=(_JSON, BatchExecSchema),
        answers={200: "NDJSON results", **_SSH},
    ),
    # Administer.
    Route(
        method="POST",
        path="/frp_create",
        handler=original.frp_create,
        access=Rule(Role.ADMIN, "create", anonymous=True),
        summary="the original: create a node, or mark it online",
        body=(_FORM, FrpCreateSchema),
        answers={200: "stored", **_INVALID, **_NOT_STORED},
    ),
    Route(
        method="PUT",
        path="/frp_update",
        handler=original.frp_update,
        access=Rule(Role.ADMIN, "update", anonymous=True),
        summary="the original: update a node",
        body=(_FORM, FrpUpdateSchema),
        answers={200: "stored", **_INVALID, **_NOT_STORED},
    ),
    Route(
        method="PUT",
        path="/nm_useless",
        handler=original.nm_useless,
        access=Rule(Role.ADMIN, "update", anonymous=True),
        summary="the original: mark every node offline",
        answers={200: "stored", **_DENIED, **_NOT_STORED},
    ),
    Route(
        method="PATCH",
        path="/api/v1/nodes/{nm_name}",
        handler=v1.label_node,
        access=Rule(Role.ADMIN, "patch"),
        summary="change a node's labels: a JSON merge patch of metadata.labels",
        body=(_JSON, LabelPatchSchema),
        answers={200: "the NM, its labels stored", **_UNKNOWN, **_NOT_READ, **_NOT_STORED},
    ),
    Route(
        method="DELETE",
        path="/api/v1/nodes/{nm_name}/host-key",
        handler=v1.unpin_host_key,
        access=Rule(Role.ADMIN, "update", "status"),
        summary="forget the node's pinned sshd host key",
        answers={200: "unpinned", **_UNKNOWN},
    ),
    Route(
        method="POST",
        path="/api/v1/nodes/{nm_name}/frpc-token",
        handler=v1.issue_frpc_token,
        access=Rule(Role.ADMIN, "update", "status"),
        summary="issue the node's own frpc token (shown once)",
        answers={200: "the new token", **_INVALID, **_NOT_STORED},
    ),
)


def add_routes(app: web.Application, *, access: Access, timer: RequestTimer) -> None:
    """Every route on `app`'s router, timed and behind its rule (a guarded route's refusals
    answered by `api.errors.rendered`); the app refuses to start if its router holds any
    other route."""
    for route in ROUTES:
        handler = route.handler
        if route.access.role is not None:  # open routes (the frps plugin's) stay bare
            handler = rendered(access.guard(route.access, _as_sent(handler)))
        handler = timer.timed(route.path, handler)
        if route.method == "GET":  # and HEAD
            app.router.add_get(route.path, handler)
        else:
            app.router.add_route(route.method, route.path, handler)
    app.on_startup.insert(0, _only_the_table)  # before anything starts


def _as_sent(handler: Handler) -> Handler:
    """`handler` for bodies as sent: the servers decompress nothing (`auto_decompress`), as
    gin did not, so a compressed body is refused, never taken for what it holds."""

    @functools.wraps(handler)
    async def as_sent(request: web.Request) -> web.StreamResponse:
        codings = request.headers.getall(hdrs.CONTENT_ENCODING, ())
        if any(coding.strip().lower() not in ("", "identity") for coding in codings):
            raise UnsupportedEncodingError(
                f"Content-Encoding {', '.join(codings)!r}: send the body uncompressed"
            )
        return await handler(request)

    return as_sent


async def _only_the_table(app: web.Application) -> None:
    declared = rules()
    for route in app.router.routes():
        method = "GET" if route.method == "HEAD" else route.method
        if route.resource is not None and (method, route.resource.canonical) not in declared:
            raise RuntimeError(
                f"{method} {route.resource.canonical} is not in api.routes.ROUTES: "
                "it would have no access rule"
            )


@web.middleware
async def redirect_trailing_slash(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/frp_fetch/x/` answers as gin answered it: a redirect to the route without the
    slash, 301 for GET and 307 (which keeps the method and body) for the others."""
    if isinstance(request.match_info.http_exception, web.HTTPNotFound) and request.path.endswith(
        "/"
    ):
        path = request.path.rstrip("/") or "/"
        bare = request.rel_url.with_path(path).with_query(request.rel_url.query)
        match = await request.app.router.resolve(request.clone(rel_url=bare))
        if match.http_exception is None:
            redirect = (
                web.HTTPMovedPermanently if request.method == "GET" else web.HTTPTemporaryRedirect
            )
            raise redirect(location=str(bare))
    return await handler(request)


def plugin_server(adapter: Adapter, timer: RequestTimer, **kwargs: Any) -> web.Server:
    """The plugin's routes alone (FRPA_PLUGIN_ADDRESS), on aiohttp's low-level server:
    matched on the paths ROUTES declares and timed as on the API's port, with no
    application, router, middleware or signal around them (bench/plugin_throughput.py)."""
    paths = [
        (re.compile(_PARAMETER.sub(r"(?P<\1>[^/]+)", route.path)).fullmatch, route.path)
        for route in ROUTES
        if route.handler is _plugin
    ]
    plugins = adapter.plugins
    perf_counter = timer.perf_counter

    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        found = next(((m, template) for match, template in paths if (m := match(path))), None)
        if found is None:
            raise web.HTTPNotFound()
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        start = perf_counter()
        try:
            return await plugins.handle(request, **found[0].groupdict())
        finally:
            timer.observe(found[1], "POST", perf_counter() - start)

    return web.Server(serve, auto_decompress=False, **kwargs)


def rules() -> dict[tuple[str, str], Rule]:
    return {(route.method, route.path): route.access for route in ROUTES}


@functools.cache  # the same for every app: built once, read by every request for it
def document() -> dict[str, Any]:
    """The OpenAPI 3 document of every route, with the schemas that check their input."""
    spec = APISpec(
        title="frp-adapter",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "responses": {
                str(status): {"description": text} for status, text in route.answers.items()
            },
        }
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAMETER.findall(route.path)
        ]
        if route.query is not None:
            parameters.append({"in": "query", "schema": route.query})
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            content_type, schema = route.body
            name = schema.__name__.removesuffix("Schema")
            if name not in spec.components.schemas:
                spec.components.schema(name, schema=schema)
            operation["requestBody"] = {
                "required": True,
                "content": {content_type: {"schema": name}},
            }
        if route.access.role is not None:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    built: dict[str, Any] = spec.to_dict()
    return built
