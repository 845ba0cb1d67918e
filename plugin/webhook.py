"""`POST /frps/handler`: the frps server-plugin endpoint, on every edge node's connect path.

frps refuses every frpc Login while this endpoint is unreachable and waits on it with no
timeout, so it answers from memory: no store call, no network call, before replying.
It always answers HTTP 200 with `"unchange": true` (without it frps replaces the content
and the login fails), and a reject always carries a reason (an empty one makes frpc
believe it logged in and retry in a tight loop).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

from nodes.model import InvalidUniqueIdError
from plugin.tracker import SshProxyTracker
from schemas import frps

logger = logging.getLogger(__name__)

_ALLOW = b'{"reject":false,"unchange":true}'


class _InvalidRequestError(Exception):
    pass


class PluginEndpoint:
    def __init__(
        self,
        tracker: SshProxyTracker,
        *,
        fail_closed: bool,
        store_failing: Callable[[], bool],
    ) -> None:
        self._fail_closed = fail_closed
        self._store_failing = store_failing
        self._ops: dict[str, tuple[Schema, Callable[[Any], None]]] = {
            frps.LOGIN: (frps.LoginSchema(), tracker.login),
            frps.NEW_PROXY: (frps.NewProxySchema(), tracker.new_proxy),
            frps.CLOSE_PROXY: (frps.CloseProxySchema(), tracker.close_proxy),
            frps.PING: (frps.PingSchema(), tracker.ping),
        }

    async def handle(self, request: web.Request) -> web.Response:
        reason = self.decide(await request.read(), request.query.get("op"))
        if reason is None:
            return web.Response(body=_ALLOW, content_type="application/json")
        return web.json_response({"reject": True, "reject_reason": reason, "unchange": True})

    def decide(self, body: bytes, query_op: str | None) -> str | None:
        """None to let frps go on, else the reason to reject the operation."""
        try:
            op, content = _envelope(body, query_op)
        except _InvalidRequestError as e:
            return f"invalid plugin request: {e}"
        if op in (frps.NEW_WORK_CONN, frps.NEW_USER_CONN):
            return None
        if op not in self._ops:
            return f"invalid plugin request: unsupported op {op!r}"
        schema, handle = self._ops[op]
        try:
            event = schema.load(content)
        except ValidationError as e:
            return f"invalid {op} request: {_flatten(e.messages)}"
        try:
            if self._fail_closed and op in (frps.LOGIN, frps.NEW_PROXY) and self._store_failing():
                return "frp-adapter cannot store node state right now; try again later"
            handle(event)
        except InvalidUniqueIdError as e:
            return f"{op} refused: {e}"
        except Exception:
            logger.exception("%s request failed inside frp-adapter", op)
            if self._fail_closed:
                return "frp-adapter failed to handle the request; try again later"
        return None


def _envelope(body: bytes, query_op: str | None) -> tuple[str, dict[str, Any]]:
    try:
        envelope = json.loads(body)
    except ValueError as e:
        raise _InvalidRequestError("the body is not JSON") from e
    if not isinstance(envelope, dict):
        raise _InvalidRequestError("the body is not a JSON object")
    op = envelope.get("op") or query_op
    content = envelope.get("content")
    if not isinstance(op, str) or not op:
        raise _InvalidRequestError("no op")
    if not isinstance(content, dict):
        raise _InvalidRequestError(f"{op}: content must be a JSON object")
    return op, content


def _flatten(messages: object, path: str = "") -> str:
    if isinstance(messages, dict):
        return "; ".join(_flatten(v, f"{path}{k}.") for k, v in messages.items())
    if isinstance(messages, list):
        return f"{path.rstrip('.')}: {' '.join(map(str, messages))}"
    return f"{path.rstrip('.')}: {messages}"
