"""What several test modules share: polling, free ports, plugin requests, an app on a temp store."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from api.settings import Settings


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = "condition"
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "store_url": f"sqlite:///{tmp_path / 'frpa.db'}",
        "frps_address": "203.0.113.7",
        "close_grace_period": 0.1,
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
