"""The web console in Debian's Chromium, against real frps, frpc and sshd: the live node
list, a batch run, the xterm.js shell, what a read-only token is not offered, the list
without a token where anonymous reads are allowed, the sign-in kept into shells, and the
layout from 400 px wide, light and dark.

Screenshots go to `$CONSOLE_SCREENSHOTS` when it names a directory (else the test's own),
for a person to look at; they are not compared."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from tests.e2e.peers import FrpSetup, node_online, sshd_behind_frps
from tests.support import TOKENS, bearer

pytestmark = pytest.mark.e2e
NODES = ("edge-1", "edge-2", "edge-3")


@pytest.fixture
async def fleet(tmp_path: Path, console_built: None) -> AsyncIterator[FrpSetup]:
    """An adapter, frps, and three nodes whose frpc expose one real sshd."""
    async with sshd_behind_frps(tmp_path) as (frp, sshd):
        for node in NODES:
            frp.start_frpc(node, node, local_port=sshd.port)
        yield frp


async def signed_in(
    browser: Browser, frp: FrpSetup, role: str, path: str = "/ui/", **options: Any
) -> Page:
    # Playwright polls its predicates with eval, which the console's CSP forbids.
    page = await browser.new_page(
        **{"viewport": {"width": 1200, "height": 800}, "bypass_csp": True, **options}
    )
    await page.goto(f"{frp.adapter_url}{path}")
    await page.fill("#token", TOKENS[role])
    await page.click("#sign-in button")
    return page


async def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    directory = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=directory / f"{name}.png", full_page=True)


def row(node: str, state: str = "online") -> str:
    return f'.row.{state}[data-node="nodemaintenances-{node}"]'


async def test_the_list_is_live_and_a_batch_runs_on_three_nodes(
    fleet: FrpSetup, browser: Browser
) -> None:
    page = await signed_in(browser, fleet, "operator")
    for node in NODES:
        await page.wait_for_selector(row(node), timeout=30000)
    assert await page.locator(f"{row('edge-1')} a.shell").count() == 1
    # Each node by its unique id (the NM name on hover), the reason of its last change
    # before its time, relative (exact on hover).
    cells = page.locator(f"{row('edge-1')} .cell")
    assert await cells.nth(0).inner_text() == "edge-1"
    assert await cells.nth(0).get_attribute("title") == "nodemaintenances-edge-1"
    change = await cells.nth(3).inner_text()
    assert re.fullmatch(r"NewProxy · \d+ s ago", change), change
    title = await cells.nth(3).get_attribute("title") or ""
    assert re.fullmatch(r"NewProxy at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", title), title
    for node in NODES:
        await page.check(f"{row(node)} input.pick")
    await page.fill("#command", "echo from-$((6*7))")
    await page.press("#command", "Enter")  # Enter runs it
    await page.wait_for_selector("#summary:text('3 ok · 0 failed · 0 unreachable · 0 timed out')")
    results = await page.locator("#results .result").all_inner_texts()
    assert sorted(r.split()[0] for r in results) == [f"nodemaintenances-{n}" for n in NODES]
    assert all("exit 0" in r and "from-42" in r for r in results)
    # Output and errors apart; a failure counted as one.
    await page.fill("#command", "echo out; echo err >&2; exit 3")
    await page.click("#run")
    await page.wait_for_selector("#summary:text('0 ok · 3 failed · 0 unreachable')")
    assert await page.locator("#results pre.stdout").all_inner_texts() == ["out\n"] * 3
    assert await page.locator("#results pre.stderr").all_inner_texts() == ["err\n"] * 3

    await page.wait_for_selector("#total:text('3 online 0 offline')")
    await fleet.processes.stop("edge-3")  # its frpc goes: the row follows, no reload
    await page.wait_for_selector(row("edge-3", "offline"), timeout=30000)
    await page.wait_for_selector("#total:text('2 online 1 offline')")
    server = page.locator("#counts button.tally")  # one frps: its own count, which filters
    assert " ".join((await server.inner_text()).split()) == "frps 127.0.0.1 2 online 1 offline"
    assert await page.locator(f"{row('edge-3', 'offline')} a.shell").count() == 0
    await page.fill("#command", "true")
    await page.press("#command", "Enter")
    await page.wait_for_selector("#summary:text('2 ok · 0 failed · 1 unreachable')")
    offline = page.locator("#results .result", has_text="nodemaintenances-edge-3")
    assert "node offline: frp client edge-3 is offline now" in await offline.inner_text()
    for node in NODES:
        await page.uncheck(f".row[data-node='nodemaintenances-{node}'] input.pick")
    await page.press("#command", "Enter")
    await page.wait_for_selector(
        "#summary:text('Tick the nodes to run it on, or choose every online node.')"
    )
    await page.fill("#search", "edge-2")
    assert await page.locator(".spacer .row").count() == 1


async def test_the_shell_is_xterm_on_the_node_and_follows_the_window(
    fleet: FrpSetup, browser: Browser
) -> None:
    page = await signed_in(browser, fleet, "operator", "/ui/shell/nodemaintenances-edge-1")
    await page.wait_for_selector("#status:text('connected')", timeout=30000)
    screen = page.locator(".xterm-rows")
    await page.keyboard.type("echo $((6*7))\n")
    await page.wait_for_function(
        "document.querySelector('.xterm-rows').innerText.includes('\\n42')"
    )
    await page.keyboard.type("stty size\n")
    await page.wait_for_function(
        "/\\n\\d+ \\d+\\n/.test(document.querySelector('.xterm-rows').innerText)"
    )
    before = await page.evaluate("[window.terminal.rows, window.terminal.cols]")
    await page.set_viewport_size({"width": 700, "height": 400})
    await page.wait_for_function(f"window.terminal.cols !== {before[1]}")
    after = await page.evaluate("[window.terminal.rows, window.terminal.cols]")
    await page.keyboard.type("clear; stty size\n")
    await page.wait_for_function(
        f"document.querySelector('.xterm-rows').innerText.includes('{after[0]} {after[1]}')"
    )
    assert after != before
    # The node's output in UTF-8, whatever its shell's locale does with typed input.
    await page.keyboard.type("printf '\\344\\270\\255\\346\\226\\207 ok\\n'\n")
    await page.wait_for_function(
        "document.querySelector('.xterm-rows').innerText.includes('中文 ok')"
    )
    await page.keyboard.type("exit 4\n")
    await page.wait_for_selector("#status:text('exited with status 4')")
    assert await page.locator("#reconnect").is_visible()
    assert await screen.count() == 1


async def test_a_read_only_token_is_offered_no_shell_and_its_websocket_is_refused(
    fleet: FrpSetup, browser: Browser
) -> None:
    page = await signed_in(browser, fleet, "read")
    await page.wait_for_selector(row("edge-1"), timeout=30000)
    assert await page.locator("a.shell").count() == 0
    assert await page.locator("#run").count() == 0
    assert await page.locator("input.pick").count() == 0  # nothing to pick nodes for
    await page.goto(f"{fleet.adapter_url}/ui/shell/nodemaintenances-edge-1")
    await page.wait_for_selector("#status:text('may not open shells')")
    code = await page.evaluate(
        """() => new Promise((resolve) => {
          const token = sessionStorage.getItem("frp-adapter.token");
          const encoded = btoa(token).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
          const ws = new WebSocket(`ws://${location.host}/api/v1/nodes/nodemaintenances-edge-1/shell`,
            ["frp-adapter.v1", "base64url.bearer.authorization.k8s.io." + encoded]);
          ws.onclose = (event) => resolve(event.code);
        })"""
    )
    assert code == 1006  # refused before the upgrade (403)


async def test_a_shell_that_cannot_open_says_why(fleet: FrpSetup, browser: Browser) -> None:
    """Refused before the upgrade, the WebSocket tells the page only 1006: the console
    shows the adapter's own words (unknown node, offline node, a read-only caller)."""
    page = await signed_in(browser, fleet, "operator", "/ui/shell/nodemaintenances-nope")
    await page.wait_for_selector(
        "#status:text('refused: not found: nodemaintenance nodemaintenances-nope not found')"
    )
    page = await signed_in(browser, fleet, "operator", "/ui/")
    await page.wait_for_selector(row("edge-3"), timeout=30000)
    await fleet.processes.stop("edge-3")
    await page.wait_for_selector(row("edge-3", "offline"), timeout=60000)
    await page.goto(f"{fleet.adapter_url}/ui/shell/nodemaintenances-edge-3")
    await page.wait_for_selector("#status:text('refused: node offline: frp client edge-3')")
    assert await page.locator("#reconnect").is_visible()


@pytest.fixture
async def open_to_read(tmp_path: Path, console_built: None) -> AsyncIterator[FrpSetup]:
    """The fleet, read without a token from 127.0.0.1 (FRPA_TRUSTED_NETWORKS), as with no
    authentication configured; a token for anything more."""
    async with sshd_behind_frps(tmp_path, FRPA_TRUSTED_NETWORKS="127.0.0.1/32") as (frp, sshd):
        for node in NODES[:2]:
            frp.start_frpc(node, node, local_port=sshd.port)
        yield frp


async def test_the_list_is_open_to_read_and_a_sign_in_is_kept_into_shells(
    open_to_read: FrpSetup, browser: Browser, tmp_path: Path
) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    page = await context.new_page()
    await page.goto(f"{open_to_read.adapter_url}/ui/")
    for node in NODES[:2]:
        await page.wait_for_selector(row(node), timeout=30000)
    assert await page.locator(".badge.online").first.is_visible()
    assert await page.locator("a.shell").count() == 0  # nothing more without a token
    assert await page.locator("input.pick").count() == 0
    await screenshot(page, tmp_path, "list-1400x900")
    await page.click("#open-sign-in")
    form = await page.locator("#sign-in").inner_text()
    assert "frp-adapter" in form
    assert "FRPA_API_TOKENS_FILE" in form
    assert "kubectl create token" in form
    await page.fill("#token", TOKENS["operator"])
    await page.press("#token", "Enter")
    await page.wait_for_selector("#user:text('operator-user')")

    # The shell opens in this tab, signed in as it is.
    await page.click(f"{row('edge-1')} a.shell", timeout=30000)
    await page.wait_for_selector("#status:text('connected')", timeout=30000)
    assert page.url == f"{open_to_read.adapter_url}/ui/shell/nodemaintenances-edge-1"
    await page.keyboard.type("echo in-$((6*7))\n")
    await page.wait_for_function(
        "document.querySelector('.xterm-rows').innerText.includes('in-42')"
    )
    await screenshot(page, tmp_path, "shell-1400x900")
    await page.set_viewport_size({"width": 400, "height": 800})
    await page.wait_for_function("window.terminal.cols < 60")  # the terminal fits it
    await screenshot(page, tmp_path, "shell-400x800")
    # A tab of its own (as a middle click opens) is handed the token by this one: no URL,
    # no cookie carries it.
    other = await context.new_page()
    await other.goto(f"{open_to_read.adapter_url}/ui/shell/nodemaintenances-edge-2")
    await other.wait_for_selector("#status:text('connected')", timeout=30000)
    assert "token" not in other.url
    assert await context.cookies() == []
    # Signing out in one tab signs every tab out.
    await other.click("#sign-out")
    await page.wait_for_selector("#open-sign-in", timeout=30000)
    await page.wait_for_selector("#status:text('may not open shells')")
    await context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_the_list_fits_400_px_without_scrolling_sideways(
    fleet: FrpSetup, browser: Browser, tmp_path: Path, scheme: str
) -> None:
    # Far from UTC: the NMs' times are UTC without a zone, which a browser reads as local.
    page = await signed_in(
        browser, fleet, "operator", color_scheme=scheme, timezone_id="Asia/Shanghai"
    )
    await page.set_viewport_size({"width": 400, "height": 800})
    for node in NODES:
        await page.wait_for_selector(row(node), timeout=30000)
    await page.wait_for_selector("#total:text('3 online 0 offline')")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    # What tells nodes apart and what they do stays in sight; the rest waits for room.
    change = await page.locator(f"{row('edge-1')} .c-change").inner_text()
    assert re.fullmatch(r"NewProxy · \d+ s ago", change), change
    visible = [
        await page.locator(f"{row('edge-1')} .c-{key}").is_visible()
        for key in ("node", "state", "change", "port", "host", "labels")
    ]
    assert visible == [True, True, True, False, False, False]
    shell = page.locator(f"{row('edge-1')} a.shell")
    assert await shell.is_visible()
    box = await shell.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= 400
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == ("rgb(22, 22, 28)" if scheme == "dark" else "rgb(255, 255, 255)")
    await screenshot(page, tmp_path, f"list-400x800-{scheme}")


async def test_a_node_page_shows_its_changes_runs_a_command_and_moves_files(
    tmp_path: Path, console_built: None, browser: Browser
) -> None:
    async with sshd_behind_frps(tmp_path) as (frp, sshd):
        frp.start_frpc("edge-1", "edge-1", local_port=sshd.port)
        page = await signed_in(browser, frp, "operator", viewport={"width": 1400, "height": 900})
        await page.click(f"{row('edge-1')} .c-node a", timeout=30000)
        await page.wait_for_selector("#node-name:text('edge-1')")
        assert page.url == f"{frp.adapter_url}/ui/nodes/nodemaintenances-edge-1"
        await page.wait_for_selector("#history li:text('NewProxy')")
        facts = await page.locator("#facts").inner_text()
        port = await node_online(frp, "nodemaintenances-edge-1")
        assert f"127.0.0.1:{port}" in facts

        # A command, in words; it pins the host key, whose fingerprint the page shows.
        await page.fill("#node-command", "echo node-$((6*7)); echo warn >&2")
        await page.press("#node-command", "Enter")
        await page.wait_for_selector("#node-result b:text('exit 0')")
        assert await page.locator("#node-result pre.stdout").inner_text() == "node-42\n"
        assert await page.locator("#node-result pre.stderr").inner_text() == "warn\n"
        kind, blob = (await stored_status(frp))["sshHostKey"].split()[:2]
        digest = hashlib.sha256(base64.b64decode(blob)).digest()
        fingerprint = f"{kind} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"
        await page.wait_for_selector(f"#host-key:text('{fingerprint}')")

        # Offline and back: the page follows, and its changes say so, latest first.
        await frp.processes.stop("edge-1")
        await page.wait_for_selector(".node-title .badge.offline", timeout=30000)
        frp.start_frpc("edge-1", "edge-1", local_port=sshd.port)
        await page.wait_for_selector(".node-title .badge.online", timeout=30000)
        await page.wait_for_function("document.querySelectorAll('#history li').length === 3")
        changes = await page.locator("#history li").all_inner_texts()
        assert [c.split()[:2] for c in changes] == [
            ["online", "NewProxy"],
            ["offline", changes[1].split()[1]],
            ["online", "NewProxy"],
        ]
        await screenshot(page, tmp_path, "node-1400x900")

        # Files: a directory's entries, a download compared by hash, uploads chosen and
        # dropped, arriving whole on the node (this machine).
        here = tmp_path / "node-files"
        await asyncio.to_thread(here.mkdir)
        sample = os.urandom(3 * 65536 + 1)
        await asyncio.to_thread((here / "sample.bin").write_bytes, sample)
        await page.fill("#path", str(here))
        await page.press("#path", "Enter")
        await page.wait_for_selector("#entries button.entry:text('sample.bin')")
        async with page.expect_download() as downloading:
            await page.click("#entries button.entry:text('sample.bin')")
        saved = tmp_path / "downloaded.bin"
        await (await downloading.value).save_as(saved)
        assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(sample).digest()
        chosen = tmp_path / "chosen.bin"
        await asyncio.to_thread(chosen.write_bytes, os.urandom(1 << 20))
        await page.set_input_files("#upload", str(chosen))
        await page.wait_for_selector("#entries button.entry:text('chosen.bin')", timeout=30000)
        assert (here / "chosen.bin").read_bytes() == chosen.read_bytes()
        await page.evaluate(
            """() => {
              const dropped = new DataTransfer();
              dropped.items.add(new File(["dropped\\n"], "dropped.txt"));
              document.querySelector("#drop").dispatchEvent(
                new DragEvent("drop", { dataTransfer: dropped, bubbles: true }));
            }"""
        )
        await page.wait_for_selector("#entries button.entry:text('dropped.txt')", timeout=30000)
        assert (here / "dropped.txt").read_text() == "dropped\n"
        said = " ".join((await page.locator("#uploads").inner_text()).split())
        sent = hashlib.sha256(b"dropped\n").hexdigest()
        assert f"dropped.txt 8 B stored, sha256 {sent}" in said
        # A directory the node refuses to list says why, in its words.
        await page.fill("#path", str(here / "sample.bin" / "x"))
        await page.press("#path", "Enter")
        await page.wait_for_selector(f"#files-said:text('{here / 'sample.bin' / 'x'}')")
        refused = await page.locator("#files-said").inner_text()
        assert refused.startswith("no such file: "), refused
        await page.set_viewport_size({"width": 400, "height": 800})
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow == 0
        await screenshot(page, tmp_path, "node-400x800")


async def stored_status(frp: FrpSetup) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(headers=bearer("read")) as session,
        session.get(f"{frp.adapter_url}/api/v1/nodes/nodemaintenances-edge-1") as resp,
    ):
        status: dict[str, Any] = (await resp.json())["status"]
        return status


async def test_a_recorded_session_plays_back_and_the_audit_trail_shows_it(
    tmp_path: Path, console_built: None, browser: Browser
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    async with sshd_behind_frps(
        tmp_path,
        FRPA_SHELL_RECORDINGS=str(recordings),
        FRPA_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
    ) as (frp, sshd):
        frp.start_frpc("edge-1", "edge-1", local_port=sshd.port)
        await node_online(frp, "nodemaintenances-edge-1")
        shell = await signed_in(browser, frp, "admin", "/ui/shell/nodemaintenances-edge-1")
        await shell.wait_for_selector("#status:text('connected')", timeout=30000)
        await shell.keyboard.type("echo played-$((6*7))\n")
        await shell.wait_for_selector(".xterm-rows :text('played-42')")
        await shell.keyboard.type("exit 5\n")
        await shell.wait_for_selector("#status:text('exited with status 5')")

        # As the console runs, its policy enforced: the player's WebAssembly is let in.
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        await page.goto(f"{frp.adapter_url}/ui/sessions")
        await page.fill("#token", TOKENS["admin"])
        await page.press("#token", "Enter")
        await page.click("#sessions a", timeout=30000)
        assert "/ui/sessions/" in page.url
        await page.wait_for_selector("#player :text('played-42')", timeout=30000)
        await screenshot(page, tmp_path, "playback-1400x900")
        await page.set_viewport_size({"width": 400, "height": 800})
        await screenshot(page, tmp_path, "playback-400x800")

        await page.click("header nav a:text('Audit')")
        await page.wait_for_selector("#audit td:text('exited (5)')")
        cells = (
            await page.locator("#audit tr", has_text="exited (5)").locator("td").all_inner_texts()
        )
        assert cells[1:4] == ["admin-user", "shell", "edge-1"]
        await page.fill("#filter-user", "operator-user")
        await page.press("#filter-user", "Enter")
        await page.wait_for_selector("#records-said:text('none yet')")
        assert "user=operator-user" in page.url
        await context.close()

        # An operator is offered neither.
        operator = await signed_in(browser, frp, "operator")
        await operator.wait_for_selector(row("edge-1"), timeout=30000)
        assert await operator.locator("header nav a").all_inner_texts() == ["Nodes"]
