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
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

from nodes.model import InvalidUniqueIdError
from plugin.admission import AdmissionError
from plugin.tracker import SshProxyTracker
from schemas import frps

logger = logging.getLogger(__name__)

_ALLOW = b'{"reject":false,"unchange":true}'
# A node's Ping body is byte-for-byte the same for its whole session (no timestamp, same
# run_id), so the validated event is reused: Pings skip parsing after a node's first one.
# Bounded (oldest forgotten first) to about 10 MB; a forgotten body is just parsed again.
_PING_MEMORY = 16384
_PING_MAX_BODY = 2048
# Ops that carry nothing for us: answered at once.
_CHEAP_OPS = (frps.NEW_WORK_CONN, frps.NEW_USER_CONN)


class _InvalidRequestError(Exception):
    def __init__(self, message: str, op: str = "invalid") -> None:
        super().__init__(message)
        self.op = op


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
        self._pings: dict[bytes, frps.Ping] = {}
        # (op, allowed|rejected) -> requests; "invalid" stands for an op not understood.
        self.counts: Counter[tuple[str, str]] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        reason = self.decide(await request.read())
        if reason is None:
            return web.Response(body=_ALLOW, content_type="application/json")
        return web.json_response({"reject": True, "reject_reason": reason, "unchange": True})

    def decide(self, body: bytes) -> str | None:
        """None to let frps go on, else the reason to reject the operation."""
        op, reason = self._decide(body)
        # Only known ops become labels: an op name is whatever the request says.
        label = op if op in self._ops or op in _CHEAP_OPS else "invalid"
        self.counts[label, "allowed" if reason is None else "rejected"] += 1
        return reason

    def _decide(self, body: bytes) -> tuple[str, str | None]:
        op: str = frps.PING
        event: object | None = self._pings.get(body)
        if event is None:
            try:
                op, event = self._parse(body)
            except _InvalidRequestError as e:
                return e.op, str(e)
            if event is None:
                return op, None
            if isinstance(event, frps.Ping) and len(body) <= _PING_MAX_BODY:
                if len(self._pings) >= _PING_MEMORY:
                    del self._pings[next(iter(self._pings))]
                self._pings[body] = event
        try:
            if self._fail_closed and op in (frps.LOGIN, frps.NEW_PROXY) and self._store_failing():
                return op, "frp-adapter cannot store node state right now; try again later"
            self._ops[op][1](event)
        except (InvalidUniqueIdError, AdmissionError) as e:
            return op, f"{op} refused: {e}"
        except Exception:
            logger.exception("%s request failed inside frp-adapter", op)
            if self._fail_closed:
                return op, "frp-adapter failed to handle the request; try again later"
        return op, None

    def _parse(self, body: bytes) -> tuple[str, object | None]:
        """The op and its validated event; None for ops that carry nothing for us."""
        try:
            envelope = json.loads(body)
        except ValueError as e:
            raise _InvalidRequestError("invalid plugin request: the body is not JSON") from e
        if not isinstance(envelope, dict):
            raise _InvalidRequestError("invalid plugin request: the body is not a JSON object")
        op = envelope.get("op")
        content = envelope.get("content")
        if not isinstance(op, str) or not op:
            raise _InvalidRequestError("invalid plugin request: no op")
        if not isinstance(content, dict):
            raise _InvalidRequestError(f"invalid {op} request: content must be a JSON object", op)
        if op in _CHEAP_OPS:
            return op, None
        if op not in self._ops:
            raise _InvalidRequestError(f"invalid plugin request: unsupported op {op!r}")
        try:
            return op, self._ops[op][0].load(content)
        except ValidationError as e:
            raise _InvalidRequestError(f"invalid {op} request: {_flatten(e.messages)}", op) from e


def _flatten(messages: object, path: str = "") -> str:
    if isinstance(messages, dict):
        return "; ".join(_flatten(v, f"{path}{k}.") for k, v in messages.items())
    if isinstance(messages, list):
        return f"{path.rstrip('.')}: {' '.join(map(str, messages))}"
    return f"{path.rstrip('.')}: {messages}"
