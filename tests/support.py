"""What several test modules share: polling, free ports, plugin requests, an app on a temp store."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.app import create_app
from api.state import STATE
from nodes.clock import Clock
from schemas.settings import Settings
from tests.clock import FakeClock


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = "condition"
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        await asyncio.sleep(0.05)


_HANDED_OUT: set[int] = set()


async def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


def free_port() -> int:
    """A port nothing listens on and not handed out before in this run, below the kernel's
    ephemeral range: a port the kernel picked (bind to 0) may be handed out again to an
    outgoing connection before the peer given it binds it, as happened to frps while a test
    opened 1,100 connections; and ports picked before any of them binds (frps's, the
    adapter's) must differ."""
    while True:
        port = random.randrange(10000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def clock_of(client: TestClient[web.Request, web.Application]) -> FakeClock:
    """The fake clock a test app was made with."""
    clock = client.app[STATE].adapter.clock
    assert isinstance(clock, FakeClock)
    return clock


# The process's retry policy as it starts by default (FRPA_RETRY_BACKOFF unset).
BACKOFF = Settings().retry_backoff


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store": f"sqlite:///{tmp_path / 'frpa.db'}",
        "frps_address": "203.0.113.7",
        "close_grace_period": 0.1,
        # frps at 203.0.113.7 is not there: unwatched, unless a test watches it.
        "frps_down_after": 0,
        **overrides,
    }
    return Settings(**values)


def user(name: str = "node1", unique_id: str | None = "abc123", run_id: str = "r1") -> Any:
    metas = {"unique_id": unique_id} if unique_id is not None else {}
    return {"user": name, "metas": metas, "run_id": run_id}


def login(name: str = "node1", unique_id: str | None = "abc123") -> dict[str, Any]:
    metas = {"unique_id": unique_id} if unique_id is not None else {}
    return plugin_body(
        "Login",
        {
            "version": "0.65.0",
            "os": "linux",
            "arch": "amd64",
            "user": name,
            "privilege_key": "x",
            "timestamp": 1795551744,
            "metas": metas,
            "client_spec": {},
            "pool_count": 1,
            "client_address": "198.51.100.9:57098",
        },
    )


def new_proxy(
    name: str = "node1",
    unique_id: str = "abc123",
    proxy: str = "ssh",
    port: int | None = 16022,
    run_id: str = "r1",
    **extra: Any,
) -> dict[str, Any]:
    content: dict[str, Any] = {
        "user": user(name, unique_id, run_id),
        "proxy_name": f"{name}.{proxy}",
        "proxy_type": "tcp",
        **extra,
    }
    if port is not None:
        content["remote_port"] = port
    return plugin_body("NewProxy", content)


def close_proxy(
    name: str = "node1", unique_id: str = "abc123", proxy: str = "ssh", run_id: str = "r1"
) -> dict[str, Any]:
    return plugin_body(
        "CloseProxy", {"user": user(name, unique_id, run_id), "proxy_name": f"{name}.{proxy}"}
    )


def ping(name: str = "node1", unique_id: str = "abc123") -> dict[str, Any]:
    return plugin_body("Ping", {"user": user(name, unique_id)})


def plugin_body(op: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"version": "0.1.0", "op": op, "content": content}


class FakeDashboard:
    """frps's dashboard API (`GET /api/proxy/tcp[/{name}]`) from a dict of proxy states,
    answering as frps 0.65 does: JSON labelled text/plain, 404 "no proxy info found"."""

    def __init__(self) -> None:
        self.proxies: dict[str, dict[str, Any]] = {}
        self.lookups = 0
        self.listings = 0
        self.broken = False
        self.held: asyncio.Event | None = None  # when set, listings wait for it

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/proxy/tcp", self.proxy_list)
        app.router.add_get("/api/proxy/tcp/{name}", self.proxy)
        return app

    async def proxy(self, request: web.Request) -> web.Response:
        self.lookups += 1
        assert request.headers["Authorization"].startswith("Basic ")
        proxy = self.proxies.get(request.match_info["name"])
        if proxy is None:
            return web.Response(status=404, text="no proxy info found")
        return web.json_response(proxy, content_type="text/plain")

    async def proxy_list(self, request: web.Request) -> web.Response:
        self.listings += 1
        proxies = [{"name": name, **proxy} for name, proxy in self.proxies.items()]
        if self.held is not None:  # frps's answer, as it was when asked, is late
            await self.held.wait()
        if self.broken:
            return web.Response(status=500, text="broken")
        return web.json_response({"proxies": proxies}, content_type="text/plain")


def online(port: int) -> dict[str, Any]:
    return {"status": "online", "conf": {"remotePort": port}}


async def app_with_dashboard(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    dashboard: FakeDashboard,
    *,
    clock: Clock | None = None,
    **settings: Any,
) -> TestClient[web.Request, web.Application]:
    """The adapter on a temp store, with `dashboard` served as its frps dashboard API."""
    server = await aiohttp_server(dashboard.app())
    frps_api = str(server.make_url("")).rstrip("/")
    return await aiohttp_client(
        create_app(
            settings_for(
                tmp_path,
                frps_api=frps_api,
                frps_api_user="admin",
                frps_api_password="admin",
                **settings,
            ),
            clock=clock,
        )
    )


# One bearer token per role, as FRPA_API_TOKENS_FILE lists them.
TOKENS = {
    "read": "read-token-0123456789",
    "operator": "operator-token-0123456789",
    "admin": "admin-token-0123456789",
}


def tokens_file(directory: Path) -> Path:
    path = directory / "tokens"
    path.write_text("".join(f"{token} {role}-user {role}\n" for role, token in TOKENS.items()))
    return path


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def node_status(
    client: TestClient[web.Request, web.Application], uid: str
) -> tuple[str, str]:
    """The node's SSH service status and the reason of its last change, as the API shows."""
    resp = await client.get(f"/api/v1/nodes/nodemaintenances-{uid}")
    assert resp.status == 200
    obj: dict[str, Any] = await resp.json()
    return obj["status"]["services"][0]["status"], obj["status"]["reason"]


async def plugin_post(client: TestClient[web.Request, web.Application], body: object) -> None:
    """A plugin call as frps makes it, which the adapter lets in."""
    resp = await client.post("/frps/handler", json=body)
    assert (await resp.json())["reject"] is False
