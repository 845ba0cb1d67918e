"""CORS, for browser consoles served from another origin: an origin in
`FRPA_ALLOWED_ORIGINS` gets its preflights answered and `Access-Control-Allow-Origin` on
every answer; any other origin gets no CORS headers, so the browser refuses to show it
what it asked. (The original allowed every origin.) CORS cannot stop what a page sends
without asking (a form, a WebSocket): `api.auth` checks the origin of WebSocket upgrades
and of writes let in without a token.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

_METHODS = "GET, POST, PUT, DELETE"
_HEADERS = "Authorization, Content-Type"
_PREFLIGHT_SECONDS = "600"


class Cors:
    def __init__(self, origins: frozenset[str]) -> None:
        self._origins = origins

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer an allowed origin's preflight; it names no route, so no rule applies."""
        if (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
            and request.headers.get(hdrs.ORIGIN) in self._origins
        ):
            return web.Response(
                status=204,
                headers={
                    hdrs.ACCESS_CONTROL_ALLOW_METHODS: _METHODS,
                    hdrs.ACCESS_CONTROL_ALLOW_HEADERS: _HEADERS,
                    hdrs.ACCESS_CONTROL_MAX_AGE: _PREFLIGHT_SECONDS,
                },
            )
        return await handler(request)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer to an allowed origin, streamed and refused ones too, may be read."""
        origin = request.headers.get(hdrs.ORIGIN)
        response.headers.add(hdrs.VARY, hdrs.ORIGIN)
        if origin in self._origins:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
