"""frps's dashboard API (`webServer` in frps.toml): frps's own view of its proxies."""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from nodes.clock import cause
from nodes.model import untrack
from schemas.settings import redacted

_OPENING = re.compile(r'\s*\{\s*"proxies"\s*:\s*\[')
_OPENING_MOST = 256  # characters before the list: more means it is not frps's answer
_NEXT = re.compile(r"\s*([,\]])")
_VALUE = re.compile(r"\S")
_DECODER = json.JSONDecoder()
_PIECE = 1 << 16  # parsed between two yields: ~150 proxies, about a millisecond


class DashboardError(Exception):
    """frps's dashboard did not answer usefully; what frps knows stays unknown."""


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    online: bool
    remote_port: int | None
    # Only the original's patched frps (ttlv/frp v0.33) tells whose a proxy is: the
    # `unique_id` its frpc logged in with, and the address it posts for such nodes to
    # `/frp_create` (`public_ip_address`). None from frps 0.65.
    unique_id: str | None = None
    frps_address: str | None = None

    def __post_init__(self) -> None:
        untrack(self)  # a reconciliation holds one per proxy frps lists


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
        self._time_limit = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def tcp_proxies(self) -> dict[str, ProxyInfo]:
        """Every tcp proxy frps knows (online, or offline since it last started), by name;
        parsed as it arrives, yielding to the plugin path after each piece."""
        url = f"{self.base_url}/api/proxy/tcp"
        proxies: dict[str, ProxyInfo] = {}
        listing = _ProxyListing()
        try:
            async with self._get(url) as resp:
                if resp is None:
                    raise DashboardError(f"GET {url}: no proxies list")
                async for data in resp.content.iter_chunked(_PIECE):
                    for proxy in listing.feed(data):
                        if isinstance(proxy, dict) and proxy.get("name"):
                            proxies[str(proxy["name"])] = _proxy_info(proxy)
                    await asyncio.sleep(0)
            listing.close()
        except ValueError as e:
            raise DashboardError(f"GET {url}: {e}") from e
        return proxies

    async def tcp_proxy(self, name: str) -> ProxyInfo | None:
        """frps's record of one tcp proxy; None if frps has never seen it."""
        url = f"{self.base_url}/api/proxy/tcp/{name}"
        try:
            async with self._get(url) as resp:
                body: Any = None if resp is None else json.loads(await resp.read())
        except ValueError as e:
            raise DashboardError(f"GET {url}: not JSON: {e}") from e
        if body is not None and not isinstance(body, dict):
            raise DashboardError(f"GET {url}: not a JSON object")
        return None if body is None else _proxy_info(body)

    @asynccontextmanager
    async def _get(self, url: str) -> AsyncIterator[aiohttp.ClientResponse | None]:
        """The answer at `url` (frps labels its JSON text/plain); None for 404. A network
        failure, while asking or while the body is read, is a DashboardError."""
        try:
            async with self._session.get(url, headers=self._headers, timeout=self._timeout) as resp:
                if resp.status == 404:
                    yield None
                    return
                if resp.status != 200:
                    raise DashboardError(f"GET {url}: HTTP {resp.status}")
                yield resp
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DashboardError(f"GET {url}: {cause(e, self._time_limit)}") from e

    async def answers(self) -> None:
        """Returns once frps answers at all: an error status (500, 401) is frps alive too.
        A DashboardError when no answer came (refused, timed out, cut off)."""
        url = f"{self.base_url}/api/serverinfo"
        try:
            async with self._session.get(url, headers=self._headers, timeout=self._timeout):
                pass
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DashboardError(f"GET {url}: {cause(e, self._time_limit)}") from e


class _ProxyListing:
    """frps's `{"proxies":[...]}`, one proxy at a time as the bytes arrive. With 100,000
    proxies the answer is ~40 MB: one `json.loads` would hold the loop (or, in a thread,
    the GIL) for most of a second. Not ijson: bench/dashboard_json.py, 100,000 proxies,
    0.45 s in all and 3 ms at most per 64 KiB piece, against ijson's C backend's 1.4 s
    and 7.6 ms."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._opened = False
        self._closed = False

    def feed(self, data: bytes) -> list[Any]:
        text = self._text + self._utf8.decode(data)
        items: list[Any] = []
        at = 0
        if not self._opened:
            opening = _OPENING.match(text)
            if opening is None:
                if len(text) > _OPENING_MOST:
                    raise ValueError("no proxies list")
                self._text = text
                return items
            self._opened, at = True, opening.end()
        while not self._closed:
            start = _VALUE.search(text, at)
            at = start.start() if start else len(text)
            if text.startswith("]", at):
                self._closed = True
                break
            try:
                item, end = _DECODER.raw_decode(text, at)
            except ValueError:
                break  # not all here yet; `close` says if it never came
            separator = _NEXT.match(text, end)
            if separator is None:
                if text[end:].strip():
                    raise ValueError(f"',' or ']' expected after proxy {item!r:.80}")
                break
            items.append(item)
            at = separator.end() if separator[1] == "," else separator.start(1)
        self._text = text[at:]
        return items

    def close(self) -> None:
        if not self._opened:
            raise ValueError("no proxies list")
        if not self._closed:
            raise ValueError(f"the list broke off at {self._text[:80]!r}")


def _proxy_info(body: dict[str, Any]) -> ProxyInfo:
    conf = body.get("conf") or {}
    # frps 0.65 names it `remotePort`; the patched frps's Go struct tags `remote_port`.
    port = conf.get("remotePort", conf.get("remote_port")) if isinstance(conf, dict) else None
    unique_id = body.get("unique_id")
    address = body.get("public_ip_address")
    return ProxyInfo(
        online=body.get("status") == "online",
        remote_port=port if isinstance(port, int) and port > 0 else None,
        unique_id=unique_id if isinstance(unique_id, str) else None,
        # Every proxy of an frps gives the same address: one string, not one per proxy.
        frps_address=sys.intern(address) if isinstance(address, str) and address else None,
    )
