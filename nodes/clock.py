"""Time as the process reads it: one object, so tests can move it by hand.

Every part that reads the time, stamps a change or sleeps takes a `Clock` (the app's
`CLOCK`); none reads `time` or `datetime.now` or sleeps on the event loop directly. A call
that ran out of time is told here too, by its time limit (`cause`).
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from datetime import UTC, datetime


class Clock:
    # The system's functions themselves, not methods calling them: `clock.monotonic()`
    # costs what `time.monotonic()` does, and a held `clock.monotonic` less (the plugin
    # path reads them on every request). A test's clock overrides them with methods.
    monotonic = staticmethod(time.monotonic)
    """Seconds for measuring intervals; never goes back."""

    perf_counter = staticmethod(time.perf_counter)
    """Seconds for measuring what work costs the loop (a sweep, a request): real time even
    on a test's clock, which moves the time parts wait for, not how long work takes."""

    def now(self) -> datetime:
        """The wall clock, for timestamps that are stored and shown."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event) -> None:
        """Until `event` is set, however long: a part with nothing to do waits for its work
        here, so a test's clock can tell it is idle rather than still busy."""
        await event.wait()


# "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)": the words between.
_OPENSSL_WRAPPING = re.compile(r"^\[SSL: \w+\] | \(_ssl\.c:\d+\)$")


def cause(error: BaseException, time_limit: float) -> str:
    """What went wrong, for a message: a timeout says nothing of itself (the text of
    `TimeoutError()` is empty), so it is told by the time limit that ran out."""
    if isinstance(error, TimeoutError):
        return f"timed out after {time_limit:g} s"
    # aiohttp's connection errors hold the system's words; their own text adds its
    # connection key ("ssl:default") to them.
    os_error = getattr(error, "os_error", None)
    if isinstance(os_error, ssl.SSLError):  # its errno is OpenSSL's, not the system's
        said = _OPENSSL_WRAPPING.sub("", os_error.strerror or "") or os_error.reason
        return f"cannot connect: TLS: {said or type(os_error).__name__}"
    if isinstance(os_error, OSError):  # asyncio's strerror names the address: errno's words
        number = os_error.errno or 0
        words = os.strerror(number) if number > 0 else os_error.strerror
        return f"cannot connect: {words or str(os_error) or type(os_error).__name__}"
    return str(error) or type(error).__name__
