"""CORS, for browser consoles served from another origin, as the original answered them
(main/main.go `Cors`): an origin in `FRPA_ALLOWED_ORIGINS`, or any with `*`, gets every
`OPTIONS` answered 200 `"Options Request!"` with the original's allowed methods, headers
and max-age, and its CORS headers on every answer; never with credentials. Any other
origin gets no CORS headers, so the browser refuses to show it what it asked. CORS cannot
stop what a page sends without asking (a form, a WebSocket): `api.auth` checks the origin
of WebSocket upgrades and of writes let in without a token, by the same setting.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from api.gojson import go_json_response

ANY = "*"
# Word for word the original's.
_ALLOWED = {
    hdrs.ACCESS_CONTROL_ALLOW_METHODS: "POST, GET, OPTIONS, PUT, DELETE,UPDATE",
    hdrs.ACCESS_CONTROL_ALLOW_HEADERS: (
        "Authorization, Content-Length, X-CSRF-Token, Token,session,X_Requested_With,Accept, "
        "Origin, Host, Connection, Accept-Encoding, Accept-Language,DNT, X-CustomHeader, "
        "Keep-Alive, User-Agent, X-Requested-With, If-Modified-Since, Cache-Control, "
        "Content-Type, Pragma"
    ),
    hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: (
        "Content-Length, Access-Control-Allow-Origin, Access-Control-Allow-Headers,"
        "Cache-Control,Content-Language,Content-Type,Expires,Last-Modified,Pragma,FooBar"
    ),
    hdrs.ACCESS_CONTROL_MAX_AGE: "172800",
    hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS: "false",
}


class Cors:
    def __init__(self, origins: frozenset[str]) -> None:
        self._origins = origins

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (ANY in self._origins or origin in self._origins)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """An allowed origin's OPTIONS, answered as the original did: it names no route,
        so no rule applies."""
        if request.method == hdrs.METH_OPTIONS and self.allows(request.headers.get(hdrs.ORIGIN)):
            return go_json_response("Options Request!")
        return await handler(request)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer to an allowed origin, streamed and refused ones too, may be read."""
        origin = request.headers.get(hdrs.ORIGIN)
        if ANY not in self._origins:
            response.headers.add(hdrs.VARY, hdrs.ORIGIN)
        if self.allows(origin):
            response.headers.update(_ALLOWED)
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = (
                ANY if ANY in self._origins else str(origin)
            )
