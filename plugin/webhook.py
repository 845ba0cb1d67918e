"""`POST /frps/handler`: the frps server-plugin endpoint, on every frpc's connect path.

frps calls it for every frpc it serves, edge node or not, refuses the frpc when the call
fails, and waits on it with no timeout. So it answers from memory (no store or network
call before replying) and refuses only by decision: an admission rule, or a failing store
with FRPA_PLUGIN_FAILURE_MODE=closed. What it cannot read, a frpc it cannot identify, a
proxy it does not track, its own error: the call is allowed, counted by kind, and logged
once per kind and frpc. Every call that reaches an endpoint is answered HTTP 200 with
`"unchange": true` (without it frps replaces the content and the login fails), and a
reject always carries a reason (an empty one makes frpc believe it logged in and retry in
a tight loop); a wrong plugin secret or frps name is a 404, as any unknown path is.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from nodes.clock import Clock
from nodes.liveness import FrpsLiveness
from nodes.model import untrack
from plugin.admission import AdmissionError
from plugin.tracker import Ignored, SshProxyTracker
from schemas import frps, parse_json

logger = logging.getLogger(__name__)

_ALLOW = b'{"reject":false,"unchange":true}'
# Ops that carry nothing for us: answered at once.
_CHEAP_OPS = (frps.NEW_USER_CONN,)
# A node's Ping body is byte-for-byte the same all session (no timestamp, same run_id):
# the event read from it is kept, least recently used forgotten first, so a fleet of this
# many nodes pings without parsing. ~0.5 KB each.
_PING_MEMORY = 32768
_PING_MAX_BODY = 1024
# (kind, frpc) pairs already logged; forgotten all at once when full, to log them again.
_TOLD_MEMORY = 10000
UNREADABLE = "unreadable"
ERROR = "error"
UNHANDLED_KINDS = (UNREADABLE, "unidentified", "not_ssh", "unrecognised_ssh", ERROR)


class _UnreadableRequestError(Exception):
    def __init__(self, message: str, op: str = "invalid", who: str = "") -> None:
        super().__init__(message)
        self.op = op
        self.who = who


class FrpsPlugins:
    """The plugin endpoint of every frps the adapter serves, behind the plugin secret.

    `/frps/<name>/handler[/<secret>]` reaches frps `name`; `/frps/handler[/<secret>]`, the
    original path, the first. A wrong secret or name is a 404, as for any unknown path.
    """

    def __init__(self, endpoints: dict[str, PluginEndpoint], *, secret: str) -> None:
        self.endpoints = endpoints
        self._secret = secret.encode()

    async def handle(
        self, request: web.BaseRequest, server: str | None = None, secret: str = ""
    ) -> web.Response:
        """`server` and `secret` as the request's path gives them."""
        first = next(iter(self.endpoints.values()))
        endpoint = self.endpoints.get(server) if server else first
        if endpoint is None or not hmac.compare_digest(secret.encode(), self._secret):
            first.counts["unauthorized", "rejected"] += 1
            raise web.HTTPNotFound()
        return await endpoint.handle(request)


class PluginEndpoint:
    def __init__(
        self,
        tracker: SshProxyTracker,
        *,
        liveness: FrpsLiveness,
        clock: Clock,
        fail_closed: bool,
        store_failing: Callable[[], bool],
    ) -> None:
        self._liveness = liveness
        self._monotonic = clock.monotonic
        self._fail_closed = fail_closed
        self._store_failing = store_failing
        self._handlers: dict[str, Callable[[Any], Ignored | None]] = {
            frps.LOGIN: tracker.login,
            frps.NEW_PROXY: tracker.new_proxy,
            frps.CLOSE_PROXY: tracker.close_proxy,
            frps.PING: tracker.ping,
            frps.NEW_WORK_CONN: tracker.new_work_conn,
        }
        # Kept by hand, not cachetools': on the plugin path an OrderedDict's C code costs
        # 0.7 us per lookup and insert, cachetools' LRUCache 2.5 us (measured, 50,000 keys).
        self._pings: OrderedDict[bytes, frps.Ping] = OrderedDict()
        self._told: set[tuple[str, str]] = set()
        # (op, allowed|rejected) -> requests; "invalid" stands for an op not understood.
        self.counts: Counter[tuple[str, str]] = Counter()
        # Calls allowed without changing any node, by kind: unreadable, unidentified,
        # not_ssh (a proxy that is not a node's SSH proxy), unrecognised_ssh (one that
        # looks like it, of a node that has none), error (our own failure).
        self.unhandled: Counter[str] = Counter()

    async def handle(self, request: web.BaseRequest) -> web.Response:
        self._liveness.heard_at = self._monotonic()  # any call is frps alive
        try:
            body = await request.read()
        except (ConnectionError, web.RequestPayloadError) as e:  # a body broken off
            self._note(UNREADABLE, "", f"the body cannot be read: {e}")
            self.counts["invalid", "allowed"] += 1
            return web.Response(body=_ALLOW, content_type="application/json")
        reason = self.decide(body)
        if reason is None:
            return web.Response(body=_ALLOW, content_type="application/json")
        return web.json_response({"reject": True, "reject_reason": reason, "unchange": True})

    def decide(self, body: bytes) -> str | None:
        """None to let frps go on, else the reason to reject the operation."""
        op, reason = self._decide(body)
        # Only known ops become labels: an op name is whatever the request says.
        label = op if op in self._handlers or op in _CHEAP_OPS else "invalid"
        self.counts[label, "allowed" if reason is None else "rejected"] += 1
        return reason

    def _decide(self, body: bytes) -> tuple[str, str | None]:
        op = frps.PING
        event: frps.Event | None = self._pings.get(body)
        if event is not None:
            self._pings.move_to_end(body)
        else:
            try:
                op, event = self._parse(body)
            except _UnreadableRequestError as e:
                self._note(UNREADABLE, e.who, str(e))
                return e.op, None
            if event is None:
                return op, None
            if isinstance(event, frps.Ping) and len(body) <= _PING_MAX_BODY:
                untrack(event.user)  # strings and a dict of strings; a fleet's worth kept
                untrack(event)
                self._pings[body] = event
                if len(self._pings) > _PING_MEMORY:
                    self._pings.popitem(last=False)
        try:
            if self._fail_closed and op in (frps.LOGIN, frps.NEW_PROXY) and self._store_failing():
                return op, "frp-adapter cannot store node state right now; try again later"
            ignored = self._handlers[op](event)
        except AdmissionError as e:
            reason = f"{op} refused: {e}"
            self._say_refused(_who(event), reason)
            return op, reason
        except Exception:
            self._note(ERROR, _who(event), f"{op} failed inside frp-adapter", exc_info=True)
            return op, None
        if ignored is not None:
            self._note(ignored.kind, ignored.who, f"{op}: {ignored.why}")
        return op, None

    def _first(self, said: tuple[str, str]) -> bool:
        """Whether `said` is new to the log; the memory starts over when full, so a fleet
        of failing frpc cannot grow it."""
        if said in self._told:
            return False
        if len(self._told) >= _TOLD_MEMORY:
            self._told.clear()
        self._told.add(said)
        return True

    def _say_refused(self, who: str, reason: str) -> None:
        """Log a refused frpc at WARNING, once per frpc and reason: a refused frpc tries
        again every few seconds."""
        if self._first((who, reason)):
            logger.warning("%s: %s; said once per frpc and reason", who or "frpc unknown", reason)

    def _note(self, kind: str, who: str, why: str, *, exc_info: bool = False) -> None:
        """Count a call allowed without a node change; log it once per kind and frpc."""
        self.unhandled[kind] += 1
        if not self._first((kind, who)):
            return
        level = logging.INFO if kind in ("unidentified", "not_ssh") else logging.WARNING
        if exc_info:
            level = logging.ERROR
        logger.log(
            level,
            "frps plugin call allowed, %s (%s): %s; said once per frpc",
            kind,
            who or "frpc unknown",
            why,
            exc_info=exc_info,
        )

    def _parse(self, body: bytes) -> tuple[str, frps.Event | None]:
        """The op and its event; None for ops that carry nothing for us."""
        try:
            envelope = parse_json(body)
        except ValueError as e:
            raise _UnreadableRequestError("the body is not JSON") from e
        if not isinstance(envelope, dict):
            raise _UnreadableRequestError("the body is not a JSON object")
        op = envelope.get("op")
        content = envelope.get("content")
        if not isinstance(op, str) or not op:
            raise _UnreadableRequestError("no op")
        if op in _CHEAP_OPS:
            return op, None
        if not isinstance(content, dict):
            raise _UnreadableRequestError(f"{op}: content must be a JSON object", op)
        read = frps.READERS.get(op)
        if read is None:
            raise _UnreadableRequestError(f"unsupported op {op!r}")
        try:
            return op, read(content)
        except frps.UnreadableError as e:
            raise _UnreadableRequestError(f"{op}: {e}", op, _user_of(content)) from e


def _who(event: frps.Event) -> str:
    return event.user if isinstance(event, frps.Login) else event.user.user


def _user_of(content: dict[str, Any]) -> str:
    """Best effort, for a log line: the frps user of a content that cannot be read whole."""
    user = content.get("user")
    if isinstance(user, dict):
        user = user.get("user")
    return user if isinstance(user, str) else ""
