"""What keeps a crowd of connections from taking the plugin path down.

Every connection costs a file descriptor; at the soft limit (often 1024) the listening
socket can accept no more, and frps's next plugin call on a new connection fails. So the
soft limit is raised to the hard one, idle connections are closed after
`api.app.IDLE_CONNECTION_SECONDS`, and when descriptors do run out, asyncio's accept errors (one per
pending connection per loop tick, each with a traceback) are logged once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from api.app import IDLE_CONNECTION_SECONDS
from api.state import STATE
from nodes.clock import Clock

logger = logging.getLogger(__name__)

_ACCEPT_ERROR = "socket.accept() out of system resource"
_ACCEPT_ERROR_INTERVAL = 60.0


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            logger.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, e)
            return soft
    return hard


class AcceptErrors:
    """A loop exception handler: accept errors said once per interval, the rest as usual."""

    def __init__(self, clock: Clock) -> None:
        self._monotonic = clock.monotonic
        self._said_at = -_ACCEPT_ERROR_INTERVAL
        self._unsaid = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_ERROR:
            loop.default_exception_handler(context)
            return
        self._unsaid += 1
        now = self._monotonic()
        if now - self._said_at < _ACCEPT_ERROR_INTERVAL:
            return
        logger.error(
            "cannot accept connections: %s (%d time(s) since last said; open files limit %d); "
            "idle connections close after %g s",
            context.get("exception"),
            self._unsaid,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            IDLE_CONNECTION_SECONDS,
        )
        self._said_at, self._unsaid = now, 0


async def accept_errors(app: web.Application) -> AsyncIterator[None]:
    """While the app runs, accept errors go to `AcceptErrors`."""
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrors(app[STATE].adapter.clock))
    try:
        yield
    finally:
        loop.set_exception_handler(before)
