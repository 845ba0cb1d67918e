"""Access rules: every route and every role, tokens on WebSockets, origins, the plugin secret."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.auth import RELOAD_SECONDS, TokensFileError, parse_tokens
from api.callers import Role
from api.routes import ROUTES, Route, rules
from api.state import STATE
from cli.logs import TextLogFormatter
from nodes.model import token_digest
from tests.clock import FakeClock
from tests.support import TOKENS, bearer, clock_of, login, settings_for, tokens_file

Client = TestClient[web.Request, web.Application]
NODE = "nodemaintenances-abc123"
ROLES = {"read": Role.READ, "operator": Role.OPERATOR, "admin": Role.ADMIN}
RULES = {key: rule.role for key, rule in rules().items()}


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    settings = settings_for(tmp_path, api_tokens_file=str(tokens_file(tmp_path)))
    return await aiohttp_client(create_app(settings))


def url_of(template: str) -> str:
    return (
        template.replace("{nm_name}", NODE)
        .replace("{secret}", "x")
        .replace("{server}", "default")
        .replace("{name}", "x")
    )


async def call(client: Client, method: str, template: str, **kwargs: Any) -> int:
    async with client.request(method, url_of(template), **kwargs) as resp:
        return resp.status


@pytest.mark.parametrize(
    ("method", "template"), [key for key, role in RULES.items() if role is not None]
)
async def test_each_role_is_allowed_exactly_what_its_rule_says(
    client: Client, method: str, template: str
) -> None:
    needed = RULES[method, template]
    assert needed is not None
    for name, role in ROLES.items():
        status = await call(client, method, template, headers=bearer(name))
        if role >= needed:
            assert status not in (401, 403), (name, status)
        else:
            assert status == 403, (name, status)
    assert await call(client, method, template) == 401
    assert await call(client, method, template, headers={"Authorization": "Bearer nope"}) == 401


async def test_open_routes_need_no_token(client: Client) -> None:
    for path in ("/", "/healthz", "/readyz", "/metrics"):
        assert await call(client, "GET", path) == 200, path
    resp = await client.post("/frps/handler", json=login())
    assert resp.status == 200


async def test_denials_use_each_api_s_error_shape(client: Client) -> None:
    resp = await client.get(f"/frp_fetch/{NODE}")
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert await resp.json() == {
        "code": 401,
        "error": {"message": "unauthorized: a valid bearer token is required"},
    }
    resp = await client.post(
        f"/api/v1/nodes/{NODE}/exec", json={"cmd": "id"}, headers=bearer("read")
    )
    assert await resp.json() == {
        "error": "forbidden",
        "details": "read-user (read) may not do this: it needs operator",
    }


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer \xff\xfe-not-utf-8",
        b"Sec-WebSocket-Protocol: base64url.bearer.authorization.k8s.io.\xc3\xa9",
        b"Sec-WebSocket-Protocol: base64url.bearer.authorization.k8s.io._-8",
    ],
    ids=["bearer not utf-8", "subprotocol not ascii", "subprotocol not base64"],
)
async def test_a_token_of_bytes_no_token_holds_is_a_401(
    client: Client, caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    """Sent raw, as aiohttp's client would not: they were 500s with a traceback."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(b"GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    assert status.startswith(b"HTTP/1.1 401 "), status
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_refusal_quoting_bytes_that_are_not_utf_8_is_said_in_the_originals_envelope(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Go writes such a byte as U+FFFD; the envelope could not encode it, and was a 500."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"GET /reverse_proxy/nodemaintenances-a1 HTTP/1.1\r\nHost: x\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://\xff\r\n\r\n"
    )
    status = await asyncio.wait_for(reader.readline(), 30)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = json.loads(await asyncio.wait_for(reader.readexactly(length), 30))
    writer.close()
    assert status.startswith(b"HTTP/1.1 403 "), status
    assert "origin http://\ufffd is not allowed" in body["error"]["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_denial_is_logged_on_one_line_whatever_the_path_holds(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A path's `%0a` would otherwise forge a log line of the caller's making."""
    caplog.set_level(logging.WARNING, logger="api.auth")
    headers = {"Authorization": "Bearer not-a-token"}
    path = "/api/v1/nodes/%0aFAKE%20LINE%1b[31m%E2%80%A8%C2%85%C2%9Bé"
    resp = await client.get(path, headers=headers)
    assert resp.status == 401
    (line,) = [TextLogFormatter().format(r) for r in caplog.records]
    assert line.endswith(" WARNING api.auth: denied GET /api/v1/nodes/\\nFAKE LINE"
                         "\\x1b[31m\\u2028\\x85\\x9bé from 127.0.0.1: unknown token")  # fmt: skip
    assert line.splitlines() == [line]


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r.access.role is not None], ids=lambda r: f"{r.method} {r.path}"
)
async def test_without_authentication_anyone_may_do_only_what_the_original_offered(
    tmp_path: Path, aiohttp_client: AiohttpClient, route: Route
) -> None:
    """Reads and the original's state routes stay open; shells, commands, frpc tokens and
    host-key pins answer 503 and change nothing."""
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    form = {"frp_server_ip_address": "1.2.3.4", "unique_id": "abc123", "port": "1"}
    assert (await client.post("/frp_create", data=form)).status == 200
    before = await (await client.get(f"/api/v1/nodes/{NODE}")).json()
    async with client.request(route.method, url_of(route.path), data=form) as resp:
        if (route.method, route.path) in ANONYMOUS_ROUTES:
            assert resp.status not in (401, 403, 503), await resp.text()
            return
        assert resp.status == 503
        body = await resp.json()
    assert "FRPA_API_TOKENS_FILE" in str(body)
    assert await (await client.get(f"/api/v1/nodes/{NODE}")).json() == before


ANONYMOUS_ROUTES = {
    ("GET", "/api/v1/access"),
    ("GET", "/frp_fetch/{nm_name}"),
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/nodes/{nm_name}"),
    ("GET", "/api/v1/nodes/{nm_name}/history"),  # the reads' state, over time
    ("POST", "/frp_create"),
    ("PUT", "/frp_update"),
    ("PUT", "/nm_useless"),
}


async def test_insecure_mode_opens_commands_without_a_token(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path, insecure_no_auth=True)))
    # Unknown node: 404 from the handler itself, so the request got past access control.
    resp = await client.post(f"/api/v1/nodes/{NODE}/exec", json={"cmd": "id"})
    assert resp.status == 404


def websocket_token(token: str) -> str:
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"base64url.bearer.authorization.k8s.io.{encoded}"


async def test_a_websocket_token_travels_as_a_subprotocol(client: Client, tmp_path: Path) -> None:
    resp = await client.post(
        "/frp_create",
        data={"frp_server_ip_address": "127.0.0.1", "unique_id": "abc123", "port": 1},
        headers=bearer("admin"),
    )
    assert resp.status == 200
    # Accepted: the handshake completes (the shell then fails: nothing listens on port 1).
    async with client.ws_connect(
        f"/api/v1/nodes/{NODE}/shell",
        protocols=("frp-adapter.v1", websocket_token(TOKENS["operator"])),
    ) as ws:
        assert ws.protocol == "frp-adapter.v1"
        assert (await ws.receive_json(timeout=15))["type"] == "error"
    for token, status in ((TOKENS["read"], 403), ("wrong-token-0123456789", 401), ("", 401)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(
                f"/api/v1/nodes/{NODE}/shell", protocols=("frp-adapter.v1", websocket_token(token))
            )
        assert refused.value.status == status


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://evil.example", False),
        ("https://ops.example", True),  # in FRPA_ALLOWED_ORIGINS
        (None, True),  # not a browser
        ("same", True),  # this host
    ],
)
async def test_websocket_origins_are_checked(
    tmp_path: Path, aiohttp_client: AiohttpClient, origin: str | None, allowed: bool
) -> None:
    settings = settings_for(
        tmp_path,
        api_tokens_file=str(tokens_file(tmp_path)),
        allowed_origins=frozenset({"https://ops.example"}),
    )
    client = await aiohttp_client(create_app(settings))
    if origin == "same":
        origin = f"http://{client.host}:{client.port}"
    headers = {**bearer("operator"), "Upgrade": "websocket", "Connection": "Upgrade"}
    if origin:
        headers["Origin"] = origin
    # The unknown node answers 404 once access control let the upgrade through.
    status = await call(client, "GET", "/api/v1/nodes/{nm_name}/shell", headers=headers)
    assert status == (404 if allowed else 403)


async def test_the_plugin_secret_hides_the_endpoint_from_anyone_without_it(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    secret = "s3cret-path-0123456789"
    client = await aiohttp_client(create_app(settings_for(tmp_path, plugin_secret=secret)))
    assert (await client.post("/frps/handler", json=login())).status == 404
    assert (await client.post("/frps/handler/wrong-secret-000000", json=login())).status == 404
    resp = await client.post(f"/frps/handler/{secret}", json=login())
    assert await resp.json() == {"reject": False, "unchange": True}
    wrong = client.app[STATE].metrics.get_sample_value(
        "frpa_plugin_requests_total", {"op": "unauthorized", "result": "rejected"}
    )
    assert wrong == 2


async def test_the_tokens_file_is_reloaded_when_it_changes(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    settings = settings_for(tmp_path, api_tokens_file=str(tokens_file(tmp_path)))
    client = await aiohttp_client(create_app(settings, clock=FakeClock()))
    path = tmp_path / "tokens"
    fresh = "fresh-token-0123456789"
    path.write_text(f"{fresh} newcomer read\n")

    async def fresh_works() -> bool:
        return (
            await call(client, "GET", "/api/v1/nodes", headers={"Authorization": f"Bearer {fresh}"})
            == 200
        )

    assert not await fresh_works()
    await clock_of(client).advance(RELOAD_SECONDS)
    assert await fresh_works()
    assert await call(client, "GET", "/api/v1/nodes", headers=bearer("read")) == 401
    path.write_text("garbage\n")
    await clock_of(client).advance(RELOAD_SECONDS)
    assert await fresh_works(), "a broken edit must keep the previous tokens"


def test_tokens_file_lines_are_checked_and_may_hold_digests() -> None:
    digest = hashlib.sha256(b"long-enough-token-0123").hexdigest()
    tokens = parse_tokens(f"# ops\nsha256:{digest} alice operator  # comment\n", "t")
    assert tokens[digest].name == "alice"
    assert tokens[digest].role == Role.OPERATOR
    assert str(tokens[digest].scope) == ""
    scoped = parse_tokens("long-enough-token-0123 sh read site = sh, env in (a, b)\n", "t")
    assert str(scoped[token_digest("long-enough-token-0123")].scope) == "site = sh, env in (a, b)"
    for text, message in (
        ("only-two fields\n", r"expected `token name role \[selector\]`"),
        (
            "long-enough-token-0123 bob read site in (a\n",
            r"scope of 'bob': at character 11 \(the end\)",
        ),
        ("long-enough-token-0123 bob root\n", "role must be read, operator or admin"),
        ("short bob read\n", "shorter than 16"),
        ("sha256:abc bob read\n", "64 hex digits"),
        ("# nothing\n", "no tokens"),
        ("long-enough-token-0123 a read\nlong-enough-token-0123 b read\n", "given twice"),
    ):
        with pytest.raises(TokensFileError, match=message):
            parse_tokens(text, "t")


@pytest.mark.parametrize(("trusted", "let_in"), [("127.0.0.0/8", True), ("10.0.0.0/8", False)])
async def test_a_trusted_network_calls_the_state_routes_without_a_token_and_is_audited(
    tmp_path: Path, aiohttp_client: AiohttpClient, trusted: str, let_in: bool
) -> None:
    """The patched frps sends no token: its network may be trusted for what it calls."""
    audit = tmp_path / "audit.log"
    settings = settings_for(
        tmp_path,
        api_tokens_file=str(tokens_file(tmp_path)),
        trusted_networks=(ipaddress.ip_network(trusted),),
        audit_log=str(audit),
    )
    client = await aiohttp_client(create_app(settings))
    # As the patched frps calls it: parameters in the query, an empty JSON body.
    params = {"frp_server_ip_address": "192.0.2.1", "unique_id": "abc123", "port": "16022"}
    resp = await client.post(
        "/frp_create", params=params, headers={"Content-Type": "application/json"}
    )
    assert resp.status == (200 if let_in else 401)
    assert await call(client, "POST", f"/api/v1/nodes/{NODE}/exec", json={"cmd": "id"}) == 401
    assert await call(client, "POST", f"/api/v1/nodes/{NODE}/frpc-token") == 401
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    if not let_in:
        assert records == []
        return
    (record,) = records
    assert record["event"] == "trusted"
    assert record["user"] == "trusted network 127.0.0.1"
    assert record["command"].startswith("/frp_create?frp_server_ip_address=192.0.2.1")
    assert record["result"] == "POST let in without a token"


SAME = "same origin"  # stands for http://<the test server's host:port>
CREATE = {"frp_server_ip_address": "192.0.2.1", "unique_id": "abc123", "port": "16022"}


@pytest.mark.parametrize("caller", ["anonymous", "trusted network", "token"])
@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        pytest.param({}, True, id="no headers: frps, curl"),
        pytest.param({"Origin": SAME, "Sec-Fetch-Site": "same-origin"}, True, id="own origin"),
        pytest.param(
            {"Origin": "https://ops.example", "Sec-Fetch-Site": "cross-site"},
            True,
            id="allowed origin",
        ),
        pytest.param({"Sec-Fetch-Site": "same-site"}, True, id="same site"),
        pytest.param({"Sec-Fetch-Site": "none"}, True, id="typed in by the user"),
        pytest.param({"Origin": "https://evil.example"}, False, id="other origin"),
        pytest.param(
            {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},
            False,
            id="same host, other port",
        ),
        pytest.param({"Origin": "null"}, False, id="sandboxed frame"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, False, id="cross-site"),
        pytest.param(
            {"Origin": SAME, "Sec-Fetch-Site": "cross-site"},
            False,
            id="own host and port, other scheme",
        ),
    ],
)
async def test_a_browser_write_without_a_token_is_refused_from_another_origin(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    caller: str,
    headers: dict[str, str],
    allowed: bool,
) -> None:
    """A page anywhere can have a browser post a form; frps and scripts send no Origin."""
    settings = settings_for(
        tmp_path,
        api_tokens_file=None if caller == "anonymous" else str(tokens_file(tmp_path)),
        trusted_networks=(ipaddress.ip_network("127.0.0.0/8"),),
        allowed_origins=frozenset({"https://ops.example"}),
    )
    client = await aiohttp_client(create_app(settings))
    sent = {
        k: f"http://{client.host}:{client.port}" if v == SAME else v for k, v in headers.items()
    }
    if caller == "token":
        sent.update(bearer("admin"))
    resp = await client.post("/frp_create", data=CREATE, headers=sent)
    fetched = await client.get(f"/frp_fetch/{NODE}", headers=bearer("read"))
    if allowed or caller == "token":
        assert resp.status == 200, await resp.text()
        assert fetched.status == 200
        return
    assert resp.status == 403
    origin = sent.get("Origin", "of another site")
    assert await resp.json() == {
        "code": 403,
        "error": {"message": f"forbidden: origin {origin} is not allowed"},
    }
    assert fetched.status == 404, "no node may be created"


async def test_from_another_origin_reads_and_the_plugin_pass_and_versioned_writes_are_refused(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """Reads stay open (CORS keeps their answers from the page); the plugin route is not
    guarded at all; a versioned write answers in the versioned envelope."""
    client = await aiohttp_client(create_app(settings_for(tmp_path, insecure_no_auth=True)))
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert (await client.get(f"/frp_fetch/{NODE}", headers=evil)).status == 404
    assert (await client.post("/frps/handler", json=login(), headers=evil)).status == 200
    resp = await client.post(f"/api/v1/nodes/{NODE}/exec", json={"cmd": "id"}, headers=evil)
    assert resp.status == 403
    assert await resp.json() == {
        "error": "forbidden",
        "details": "origin https://evil.example is not allowed",
    }
