"""`/ui/`: the web console, as `web/` builds it into `api/ui/` (index.html, console.js,
console.css). The pages hold no data: the console signs in with a bearer token and calls
the API like any client. Without a build, `/ui/` says how to make one.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web

BUILT = Path(__file__).parent / "ui"
_ASSET = re.compile(r"[\w-]+\.(js|css)")
_TYPES = {"js": "text/javascript", "css": "text/css"}
# The console's own files only; xterm.js sets inline styles and measures with a <style>;
# asciinema-player's terminal is WebAssembly (compiled, which is not eval of script).
_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
)
_NOT_BUILT = """<!doctype html><title>frp-adapter</title>
<h1>The console is not built</h1>
<p>Install Node.js and npm, then reinstall (<code>pip install .</code> builds it), or build
it in place: <code>npm --prefix web ci && npm --prefix web run build</code>.</p>
"""


async def page(request: web.Request) -> web.Response:
    """The console's one page: the node list at `/ui/`, a shell at `/ui/shell/{nm_name}`."""
    index = BUILT / "index.html"
    if not index.is_file():
        return web.Response(status=503, text=_NOT_BUILT, content_type="text/html")
    return web.Response(
        body=await asyncio.to_thread(index.read_bytes),
        content_type="text/html",
        headers={"Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"},
    )


async def asset(request: web.Request) -> web.Response:
    """console.js, console.css, and the chunks console.js loads (names without a path)."""
    name = request.match_info["name"]
    found = _ASSET.fullmatch(name)
    path = BUILT / name
    if found is None or not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(
        body=await asyncio.to_thread(path.read_bytes), content_type=_TYPES[found[1]]
    )
