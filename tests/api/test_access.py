"""`Access.may` (what `/api/v1/access` tells the console) agrees with what every route does.

Each caller below calls every route of `api.routes.ROUTES` on a real app; a middleware
asks `may` about that same request before the route decides it. A route refuses when it
answers 401 or 403, or 503 because no authentication is configured or the cluster could not
review the token; `may` must say False then, and True otherwise.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.errors import AuthNotConfiguredError, TokenUncheckedError
from api.routes import ROUTES
from api.state import STATE
from schemas.settings import Settings
from tests.kube import NodeMaintenanceEmulator
from tests.support import TOKENS, bearer, settings_for, tokens_file

NODE = "nodemaintenances-abc123"
SAME = "same origin"  # stands for http://<the test server's host:port>
FOREIGN = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
TRUSTED = (ipaddress.ip_network("127.0.0.0/8"),)
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
REFUSALS_OF_503 = (AuthNotConfiguredError.kind, TokenUncheckedError.kind)


@dataclass(frozen=True)
class Caller:
    # FRPA_API_TOKENS_FILE is set unless `tokens` is False (and always with Kubernetes).
    tokens: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def websocket_token(token: str) -> str:
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"base64url.bearer.authorization.k8s.io.{encoded}"


CALLERS = {
    "anonymous, no authentication configured": Caller(tokens=False),
    "anonymous, insecure mode": Caller(tokens=False, settings={"insecure_no_auth": True}),
    "no token": Caller(),
    "read token": Caller(headers=bearer("read")),
    "operator token": Caller(headers=bearer("operator")),
    "admin token": Caller(headers=bearer("admin")),
    "unknown token": Caller(headers={"Authorization": "Bearer unknown-token-0123456789"}),
    "trusted network, no token": Caller(settings={"trusted_networks": TRUSTED}),
    "trusted network, read token": Caller(
        settings={"trusted_networks": TRUSTED}, headers=bearer("read")
    ),
    "trusted network, unknown token": Caller(
        settings={"trusted_networks": TRUSTED},
        headers={"Authorization": "Bearer unknown-token-0123456789"},
    ),
    "foreign page, no authentication configured": Caller(tokens=False, headers=FOREIGN),
    "foreign page, insecure mode": Caller(
        tokens=False, settings={"insecure_no_auth": True}, headers=FOREIGN
    ),
    "foreign page, trusted network": Caller(
        settings={"trusted_networks": TRUSTED}, headers=FOREIGN
    ),
    "foreign page, admin token": Caller(headers={**FOREIGN, **bearer("admin")}),
    "own page, trusted network": Caller(
        settings={"trusted_networks": TRUSTED},
        headers={"Origin": SAME, "Sec-Fetch-Site": "same-origin"},
    ),
    "allowed page, insecure mode": Caller(
        tokens=False,
        settings={"insecure_no_auth": True},
        headers={"Origin": "https://ops.example", "Sec-Fetch-Site": "cross-site"},
    ),
    "WebSocket from another origin, operator token": Caller(
        headers={**UPGRADE, "Origin": "https://evil.example", **bearer("operator")}
    ),
    "WebSocket from another origin, insecure mode": Caller(
        tokens=False,
        settings={"insecure_no_auth": True},
        headers={**UPGRADE, "Origin": "https://evil.example"},
    ),
    "WebSocket from an allowed origin, operator token as subprotocol": Caller(
        headers={
            **UPGRADE,
            "Origin": "https://ops.example",
            "Sec-WebSocket-Protocol": f"frp-adapter.v1, {websocket_token(TOKENS['operator'])}",
        }
    ),
}

KUBERNETES_CALLERS = {
    "Kubernetes: no token": Caller(),
    "Kubernetes: alice, who may get and list": Caller(headers={"Authorization": f"Bearer {ALICE}"}),
    "Kubernetes: bob, who may exec on one node and open any shell": Caller(
        headers={"Authorization": f"Bearer {BOB}"}
    ),
    "Kubernetes: a token the cluster does not know": Caller(
        headers={"Authorization": "Bearer stranger-0123456789"}
    ),
    "Kubernetes: trusted network, no token": Caller(settings={"trusted_networks": TRUSTED}),
    "Kubernetes: bob's WebSocket from another origin": Caller(
        headers={**UPGRADE, "Origin": "https://evil.example", "Authorization": f"Bearer {BOB}"}
    ),
}


def url_of(template: str) -> str:
    for name, value in {
        "nm_name": NODE,
        "secret": "x",
        "server": "default",
        "name": "x.css",
    }.items():
        template = template.replace(f"{{{name}}}", value)
    return template


def settings_of(tmp_path: Path, caller: Caller, **kubernetes: Any) -> Settings:
    return settings_for(
        tmp_path,
        api_tokens_file=str(tokens_file(tmp_path)) if caller.tokens and not kubernetes else None,
        allowed_origins=frozenset({"https://ops.example"}),
        **caller.settings,
        **kubernetes,
    )


def headers_of(client: TestClient[web.Request, web.Application], caller: Caller) -> dict[str, str]:
    same = f"http://{client.host}:{client.port}"
    return {k: same if v == SAME else v for k, v in caller.headers.items()}


async def refused(resp: ClientResponse) -> bool:
    """Whether access control refused the call `resp` answers."""
    if resp.status == 503:
        text = await resp.text()
        return any(kind in text for kind in REFUSALS_OF_503)
    return resp.status in (401, 403)


async def disagreements(
    aiohttp_client: AiohttpClient, settings: Settings, caller: Caller
) -> list[str]:
    """Each route where `may` and the route itself disagree about `caller`."""
    told: dict[tuple[str, str], bool] = {}

    @web.middleware
    async def ask_may(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is not None:
            key = (request.method, resource.canonical)
            told[key] = await request.app[STATE].access.may(request, *key)
        return await handler(request)

    app = create_app(settings)
    app.middlewares.append(ask_may)
    client = await aiohttp_client(app)
    found = []
    for route in ROUTES:
        async with client.request(
            route.method, url_of(route.path), headers=headers_of(client, caller)
        ) as resp:
            let_through = not await refused(resp)
        may = told.pop((route.method, route.path))
        if may != let_through:
            found.append(f"{route.method} {route.path}: may says {may}, answered {resp.status}")
    return found


@pytest.mark.parametrize("name", CALLERS)
async def test_may_answers_for_each_caller_what_every_route_does(
    tmp_path: Path, aiohttp_client: AiohttpClient, name: str
) -> None:
    caller = CALLERS[name]
    assert await disagreements(aiohttp_client, settings_of(tmp_path, caller), caller) == []


@pytest.mark.parametrize("name", KUBERNETES_CALLERS)
async def test_may_answers_for_each_caller_what_every_route_does_under_kubernetes_rbac(
    tmp_path: Path, kube: NodeMaintenanceEmulator, aiohttp_client: AiohttpClient, name: str
) -> None:
    # `kube` before `aiohttp_client`: the app must stop before its API peer does.
    kube.users = {ALICE: "alice", BOB: "bob"}
    kube.grants = {
        ("alice", "get", "", None),
        ("alice", "list", "", None),
        ("bob", "create", "exec", NODE),
        ("bob", "create", "shell", None),
    }
    caller = KUBERNETES_CALLERS[name]
    settings = settings_of(tmp_path, caller, store="kubernetes", kubernetes_auth=True)
    assert await disagreements(aiohttp_client, settings, caller) == []


# What the console asks `/api/v1/access` about; the routes it then calls.
CONSOLE = {
    "list": ("GET", "/api/v1/nodes"),
    "shell": ("GET", "/api/v1/nodes/{nm_name}/shell"),
    "exec": ("POST", "/api/v1/exec"),
    "files": ("GET", "/api/v1/nodes/{nm_name}/files"),
    "sessions": ("GET", "/api/v1/sessions"),
    "audit": ("GET", "/api/v1/audit"),
}


@pytest.mark.parametrize(
    "name",
    [
        "anonymous, no authentication configured",
        "anonymous, insecure mode",
        "read token",
        "operator token",
        "admin token",
        "trusted network, no token",
        "trusted network, read token",
        "foreign page, no authentication configured",
        "foreign page, insecure mode",
        "foreign page, trusted network",
        "foreign page, admin token",
        "own page, trusted network",
        "allowed page, insecure mode",
    ],
)
async def test_the_console_is_told_what_its_calls_would_get(
    tmp_path: Path, aiohttp_client: AiohttpClient, name: str
) -> None:
    """`/api/v1/access` is a GET; what it says of the console's writes is what they get."""
    caller = CALLERS[name]
    client = await aiohttp_client(create_app(settings_of(tmp_path, caller)))
    headers = headers_of(client, caller)
    resp = await client.get("/api/v1/access", headers=headers)
    assert resp.status == 200
    told = (await resp.json())["may"]
    got = {}
    for what, (method, path) in CONSOLE.items():
        async with client.request(method, url_of(path), headers=headers) as called:
            got[what] = not await refused(called)
    assert told == got
