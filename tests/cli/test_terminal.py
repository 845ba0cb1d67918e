"""`frp-adapter ssh`'s two ends, in process: the output ends the session and says how."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any, cast

import aiohttp
import pytest

from cli.client import _Terminal


class _Shell:
    """A shell's WebSocket as the client sees it: `frames`, then its end."""

    def __init__(self, *frames: str) -> None:
        self._frames = iter(frames)

    def __aiter__(self) -> _Shell:
        return self

    async def __anext__(self) -> aiohttp.WSMessage:
        for frame in self._frames:
            return aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, frame, None)
        raise StopAsyncIteration


@pytest.fixture
def idle_stdin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A terminal nobody types on."""
    read, write = os.pipe()
    with os.fdopen(read, "rb", 0) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        yield
    os.close(write)


@pytest.mark.usefixtures("idle_stdin")
async def test_the_shells_exit_status_is_the_terminals() -> None:
    shell = _Shell(json.dumps({"type": "exit", "exit_status": 3}))
    assert await _Terminal(cast(Any, shell)).run() == 3


@pytest.mark.usefixtures("idle_stdin")
async def test_a_frame_the_terminal_cannot_read_is_raised_not_taken_for_a_lost_node() -> None:
    # The pump kept what ended the output to itself: this exited 255 without a word.
    with pytest.raises(json.JSONDecodeError):
        await _Terminal(cast(Any, _Shell("{not json"))).run()
