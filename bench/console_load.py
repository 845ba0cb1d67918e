"""The web console with a large fleet: what the page weighs, and how long until it lists
every node, against the API's own list of the same nodes as the peer.

    python bench/console_load.py [--nodes 10000] [--rounds 3]

N nodes are stored in SQLite before the adapter (`python -m cli serve`) starts. Debian's
Chromium (headless, playwright) signs in to `/ui/` and the time is taken from the
sign-in to the count "N of N nodes" on the page (the watch stream read, every row
indexed, the first screen drawn). The peer, in the same run: fetching every node through
`GET /api/v1/nodes` (pages of 5,000) and parsing it, as a script would. Printed: the
page's weight by file, the two times per round, and their ratio (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from playwright.async_api import Response, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.console import BUILT
from bench.reader_load import fill
from tests.e2e.peers import Processes
from tests.e2e.test_browser import CHROMIUM, FLAGS
from tests.support import TOKENS, free_port, tokens_file


async def api_list(url: str) -> int:
    """Every node through the list API, page after page; how many."""
    headers = {"Authorization": f"Bearer {TOKENS['read']}"}
    seen, after = 0, None
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            params = {"limit": "5000", **({"continue": after} if after else {})}
            async with session.get(f"{url}/api/v1/nodes", params=params) as resp:
                page = await resp.json()
            seen += len(page["items"])
            after = page["metadata"].get("continue")
            if not after:
                return seen


async def run(nodes: int, rounds: int) -> None:
    if not (BUILT / "console.js").is_file():
        sys.exit("build the console first: npm --prefix web ci && npm --prefix web run build")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        await fill(directory / "frpa.db", nodes)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        processes = Processes(directory)
        env = {
            "FRPA_STORE": f"sqlite:///{directory / 'frpa.db'}",
            "FRPA_API_TOKENS_FILE": str(tokens_file(directory)),
            "FRPA_LOG_LEVEL": "WARNING",
        }
        await processes.start_adapter(port, env)
        try:
            assert await api_list(url) == nodes  # loaded
            page_times, api_times, weight = [], [], {}
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                for _ in range(rounds):
                    started = time.perf_counter()
                    assert await api_list(url) == nodes
                    api_times.append(time.perf_counter() - started)
                    page = await browser.new_page(viewport={"width": 1400, "height": 900})

                    async def weigh(response: Response) -> None:
                        if "/ui/" in response.url:
                            name = response.url.rsplit("/", 1)[-1] or "index.html"
                            weight[name] = len(await response.body())

                    if not weight:  # weighed once: waiting on bodies slows the page
                        page.on("response", weigh)
                    await page.goto(f"{url}/ui/")
                    await page.fill("#token", TOKENS["read"])
                    started = time.perf_counter()
                    await page.click("#sign-in button")
                    await page.wait_for_selector(
                        f"#count:text('{nodes} of {nodes} nodes')", timeout=120000
                    )
                    page_times.append(time.perf_counter() - started)
                    await page.close()
                await browser.close()
        finally:
            await processes.stop_all()
    print(f"nodes: {nodes}")
    for name, size in sorted(weight.items()):
        print(f"  {name:12} {size / 1024:8.1f} KiB")
    print(f"  {'list page':12} {sum(weight.values()) / 1024:8.1f} KiB (uncompressed)")
    for i, (shown, listed) in enumerate(zip(page_times, api_times, strict=True)):
        print(f"round {i + 1}: console lists every node in {shown:.2f} s, the API {listed:.2f} s")
    ratio = statistics.median(page_times) / statistics.median(api_times)
    print(f"ratio console/API list (medians): {ratio:.2f}")
    print(f"machine: {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.nodes, args.rounds))


if __name__ == "__main__":
    main()
