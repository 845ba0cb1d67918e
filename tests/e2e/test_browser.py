"""A real browser (Debian's Chromium, headless, driven by playwright) opens a shell, and
cannot be made to write to the adapter by a page of another origin.

Browsers cannot set headers on a WebSocket: the page offers the token as a subprotocol,
sends an Origin it cannot forge, and must see its offered `frp-adapter.v1` selected, or
Chromium fails the connection. The page is served from an origin of its own.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Response, async_playwright
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.app import create_app
from tests.sshd import Sshd
from tests.support import TOKENS, bearer, settings_for, tokens_file

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What an xterm.js page does with its attach addon, minus the terminal: keystrokes out,
# binary output in (decoded as a stream), JSON control frames apart.
SHELL_IN_THE_PAGE = """
async ({url, token}) => {
  const encoded = btoa(token).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  return await new Promise((resolve) => {
    const ws = new WebSocket(url, ["frp-adapter.v1",
                                   "base64url.bearer.authorization.k8s.io." + encoded]);
    ws.binaryType = "arraybuffer";
    const decoder = new TextDecoder();
    let output = "", control = [];
    ws.onopen = () => {
      ws.send("echo browser-$((6*7))\\r");
      ws.send(JSON.stringify({type: "resize", cols: 101, rows: 41}));
      ws.send("stty size; exit 3\\r");
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") control.push(JSON.parse(event.data));
      else output += decoder.decode(event.data, {stream: true});
    };
    ws.onclose = (event) => resolve({protocol: ws.protocol, output, control, code: event.code});
  });
}
"""


async def _page(request: web.Request) -> web.Response:
    return web.Response(text="<html><body>operations</body></html>", content_type="text/html")


async def page_origin(aiohttp_server: AiohttpServer) -> str:
    """A console's page, served from an origin of its own."""
    page_app = web.Application()
    page_app.router.add_get("/", _page)
    page_server = await aiohttp_server(page_app)
    return str(page_server.make_url("")).rstrip("/")


async def open_shell_from_a_page(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    sshd: Sshd,
    *,
    allow_page: bool,
) -> dict[str, Any]:
    origin = await page_origin(aiohttp_server)
    settings = settings_for(
        tmp_path,
        ssh_user=sshd.user,
        ssh_key_file=str(sshd.user_key),
        api_tokens_file=str(tokens_file(tmp_path)),
        allowed_origins=frozenset({origin} if allow_page else ()),
    )
    adapter = await aiohttp_client(create_app(settings))
    form = {"frp_server_ip_address": "127.0.0.1", "unique_id": "abc123", "port": sshd.port}
    resp = await adapter.post("/frp_create", data=form, headers=bearer("admin"))
    assert resp.status == 200
    shell_url = f"ws://{adapter.host}:{adapter.port}/api/v1/nodes/nodemaintenances-abc123/shell"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(origin)
            result: dict[str, Any] = await page.evaluate(
                SHELL_IN_THE_PAGE, {"url": shell_url, "token": TOKENS["operator"]}
            )
        finally:
            await browser.close()
    return result


async def test_a_browser_opens_a_shell_with_its_token_as_a_subprotocol(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, sshd: Sshd
) -> None:
    result = await open_shell_from_a_page(
        tmp_path, aiohttp_client, aiohttp_server, sshd, allow_page=True
    )
    assert result["protocol"] == "frp-adapter.v1"
    assert "browser-42" in result["output"]
    assert "41 101" in result["output"]
    assert result["control"] == [{"type": "exit", "exit_status": 3}]
    assert result["code"] == 1000


async def test_a_page_from_an_origin_not_allowed_gets_no_shell(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, sshd: Sshd
) -> None:
    result = await open_shell_from_a_page(
        tmp_path, aiohttp_client, aiohttp_server, sshd, allow_page=False
    )
    assert result["protocol"] == ""
    assert result["output"] == ""
    assert result["code"] == 1006  # the handshake was refused (403)


FETCH_IN_THE_PAGE = """
async ({url, token}) => {
  try {
    const answer = await fetch(url, {headers: {Authorization: "Bearer " + token}});
    return {status: answer.status, body: await answer.json()};
  } catch (error) {
    return {refused: String(error)};
  }
}
"""


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed origin", "other origin"])
async def test_a_console_on_another_origin_calls_the_api_only_if_its_origin_is_allowed(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, allowed: bool
) -> None:
    """The bearer token makes the call non-simple: Chromium sends a preflight first."""
    origin = await page_origin(aiohttp_server)
    settings = settings_for(
        tmp_path,
        api_tokens_file=str(tokens_file(tmp_path)),
        allowed_origins=frozenset({origin} if allowed else {"http://elsewhere.example"}),
    )
    adapter = await aiohttp_client(create_app(settings))
    form = {"frp_server_ip_address": "192.0.2.1", "unique_id": "abc123", "port": "16022"}
    resp = await adapter.post("/frp_create", data=form, headers=bearer("admin"))
    assert resp.status == 200
    url = f"http://{adapter.host}:{adapter.port}/frp_fetch/nodemaintenances-abc123"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(origin)
            result = await page.evaluate(FETCH_IN_THE_PAGE, {"url": url, "token": TOKENS["read"]})
        finally:
            await browser.close()
    if allowed:
        assert result == {
            "status": 200,
            "body": {
                "code": 200,
                "data": {
                    "frp_server_ip_address": "192.0.2.1",
                    "proxy_port": "16022",
                    "status": "online",
                },
            },
        }
    else:
        assert result == {"refused": "TypeError: Failed to fetch"}


# A page of any origin, opened in a browser that can reach the adapter: it posts to
# /frp_create with a no-cors fetch, then with a form it submits itself. CORS lets a page
# send both without the adapter's consent; it only hides the answers from the page.
ATTACKER_PAGE = """<html><body>
<form id="form" method="POST" action="{adapter}/frp_create">
  <input name="frp_server_ip_address" value="198.51.100.66">
  <input name="unique_id" value="by-form">
  <input name="port" value="22">
</form>
<script>
  const body = new URLSearchParams(
    {{frp_server_ip_address: "198.51.100.66", unique_id: "by-fetch", port: "22"}});
  fetch("{adapter}/frp_create", {{method: "POST", mode: "no-cors", body}})
    .finally(() => document.getElementById("form").submit());
</script>
</body></html>"""


@pytest.mark.parametrize("caller", ["anonymous", "trusted network"])
async def test_a_page_of_another_origin_cannot_have_a_browser_create_a_node(
    tmp_path: Path, aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, caller: str
) -> None:
    settings = settings_for(
        tmp_path,
        api_tokens_file=None if caller == "anonymous" else str(tokens_file(tmp_path)),
        trusted_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    adapter = await aiohttp_client(create_app(settings))
    adapter_url = f"http://{adapter.host}:{adapter.port}"

    async def attacker(request: web.Request) -> web.Response:
        page = ATTACKER_PAGE.format(adapter=adapter_url)
        return web.Response(text=page, content_type="text/html")

    attacker_app = web.Application()
    attacker_app.router.add_get("/", attacker)
    attacker_url = str((await aiohttp_server(attacker_app)).make_url("/"))
    create_url = f"{adapter_url}/frp_create"
    answers: list[Response] = []

    def seen(answer: Response) -> None:
        if answer.url == create_url:
            answers.append(answer)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page()
            page.on("response", seen)
            async with page.expect_navigation(url=create_url) as submitted:
                await page.goto(attacker_url)
            form_answer = await submitted.value
            assert form_answer is not None
            assert form_answer.status == 403
            assert "is not allowed" in await form_answer.text()
        finally:
            await browser.close()
    assert sorted((a.request.resource_type, a.status) for a in answers) == [
        ("document", 403),
        ("fetch", 403),
    ]
    for node in ("by-form", "by-fetch"):
        resp = await adapter.get(f"/frp_fetch/nodemaintenances-{node}", headers=bearer("read"))
        assert resp.status == 404, f"{node} was created"
    # The same call as the patched frps makes it: no Origin, no Sec-Fetch-*.
    form = {"frp_server_ip_address": "198.51.100.66", "unique_id": "by-form", "port": "22"}
    assert (await adapter.post("/frp_create", data=form)).status == 200
    resp = await adapter.get("/frp_fetch/nodemaintenances-by-form", headers=bearer("read"))
    assert resp.status == 200
