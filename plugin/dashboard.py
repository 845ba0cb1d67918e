"""frps's dashboard API (`webServer` in frps.toml): frps's own view of its proxies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from schemas.settings import redacted


class DashboardError(Exception):
    """frps's dashboard did not answer usefully; what frps knows stays unknown."""


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    online: bool
    remote_port: int | None


class FrpsDashboard:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        user: str,
        password: str,
        timeout: float = 5.0,
    ) -> None:
        # Credentials may come in the URL (`http://user:pass@frps:7500`): they are used, and
        # the URL kept for messages loses them.
        url = urlsplit(base_url)
        user = user or unquote(url.username or "")
        password = password or unquote(url.password or "")
        self.base_url = redacted(base_url)
        self._session = session
        self._headers = (
            {"Authorization": aiohttp.encode_basic_auth(user, password)} if user or password else {}
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def tcp_proxy(self, name: str) -> ProxyInfo | None:
        """frps's record of one tcp proxy; None if frps has never seen it."""
        body = await self._get(f"/api/proxy/tcp/{name}")
        return None if body is None else _proxy_info(body)

    async def tcp_proxies(self) -> dict[str, ProxyInfo]:
        """Every tcp proxy frps knows (online, or offline since it last started), by name."""
        body = await self._get("/api/proxy/tcp")
        proxies = body.get("proxies") if body else None
        if not isinstance(proxies, list):
            raise DashboardError("GET /api/proxy/tcp: no proxies list")
        return {
            str(proxy["name"]): _proxy_info(proxy)
            for proxy in proxies
            if isinstance(proxy, dict) and proxy.get("name")
        }

    async def _get(self, path: str) -> dict[str, Any] | None:
        """The JSON object at `path`; None for 404."""
        url = f"{self.base_url}{path}"
        try:
            async with self._session.get(url, headers=self._headers, timeout=self._timeout) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise DashboardError(f"GET {url}: HTTP {resp.status}")
                # frps answers JSON labelled text/plain.
                body: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise DashboardError(f"GET {url}: {e!r}") from e
        if not isinstance(body, dict):
            raise DashboardError(f"GET {url}: not a JSON object")
        return body


def _proxy_info(body: dict[str, Any]) -> ProxyInfo:
    conf = body.get("conf") or {}
    port = conf.get("remotePort") if isinstance(conf, dict) else None
    return ProxyInfo(
        online=body.get("status") == "online",
        remote_port=port if isinstance(port, int) and port > 0 else None,
    )
