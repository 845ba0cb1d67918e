"""Background tasks under the one guard: a task that raises is logged with its traceback,
started again after a backoff, and counted on `/readyz` and in metrics; `/healthz` is red
only while one is not running: ended, or waiting after failing again and again."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.state import STATE
from nodes.supervisor import FAILURES_DOWN, STEADY_SECONDS
from tests.clock import FakeClock
from tests.support import BACKOFF, clock_of, settings_for

PERIOD = settings_for(Path()).heartbeat_timeout / 3
ERROR = "RuntimeError: a bug in judging"


async def expiry_failing(
    tmp_path: Path, aiohttp_client: AiohttpClient, *, times: float
) -> tuple[TestClient[web.Request, web.Application], list[str]]:
    """An app whose heartbeat expiry raises at its first `times` rounds; and the rounds."""
    client = await aiohttp_client(create_app(settings_for(tmp_path), clock=FakeClock()))
    registry = client.app[STATE].adapter.registry
    judged = registry.expire_heartbeats
    rounds: list[str] = []

    async def broken(now: datetime, limit: timedelta) -> int:
        rounds.append("judged")
        if len(rounds) <= times:
            raise RuntimeError("a bug in judging")
        return await judged(now, limit)

    registry.expire_heartbeats = broken  # type: ignore[method-assign]
    return client, rounds


async def expiry_on_readyz(client: TestClient[web.Request, web.Application]) -> Any:
    resp = await client.get("/readyz")
    assert resp.status == 200
    return (await resp.json())["tasks"]["heartbeat-expiry"]


async def test_a_task_that_fails_once_is_logged_restarted_and_counted_and_healthz_stays_green(
    tmp_path: Path, aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    client, rounds = await expiry_failing(tmp_path, aiohttp_client, times=1)
    clock = clock_of(client)
    assert await expiry_on_readyz(client) == {
        "state": "running",
        "restarts": 0,
        "last_error": None,
    }
    await clock.advance(PERIOD)
    assert rounds == ["judged"]
    assert (await client.get("/healthz")).status == 200
    assert await expiry_on_readyz(client) == {
        "state": "waiting",
        "restarts": 1,
        "last_error": ERROR,
    }
    (failure,) = [r for r in caplog.records if r.name == "nodes.supervisor"]
    assert failure.levelno == logging.ERROR
    assert "heartbeat-expiry failed" in failure.getMessage()
    assert failure.exc_info is not None

    await clock.advance(BACKOFF.longest(1))
    assert (await client.get("/healthz")).status == 200
    await clock.advance(PERIOD)
    assert rounds == ["judged", "judged"]
    assert (await client.get("/healthz")).status == 200
    assert await expiry_on_readyz(client) == {
        "state": "running",
        "restarts": 1,
        "last_error": ERROR,
    }
    restarts = client.app[STATE].metrics.get_sample_value(
        "frpa_task_restarts_total", {"task": "heartbeat-expiry"}
    )
    assert restarts == 1
    assert (
        client.app[STATE].metrics.get_sample_value(
            "frpa_task_restarts_total", {"task": "node-writer"}
        )
        == 0
    )


async def test_a_loop_failing_at_every_round_is_red_on_healthz_while_it_waits_to_run_again(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    assert PERIOD < STEADY_SECONDS  # each run is too short to count as a recovery
    client, rounds = await expiry_failing(tmp_path, aiohttp_client, times=FAILURES_DOWN)
    clock = clock_of(client)
    await clock.advance(PERIOD)
    for failures in range(1, FAILURES_DOWN):
        assert (await client.get("/healthz")).status == 200
        await clock.advance(BACKOFF.longest(failures) + PERIOD)
    assert len(rounds) == FAILURES_DOWN
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert await resp.json() == {"status": "failing", "down": {"heartbeat-expiry": ERROR}}
    assert await expiry_on_readyz(client) == {
        "state": "waiting",
        "restarts": FAILURES_DOWN,
        "last_error": ERROR,
    }

    await clock.advance(BACKOFF.longest(FAILURES_DOWN))  # running again
    assert (await client.get("/healthz")).status == 200
    await clock.advance(PERIOD)
    assert len(rounds) == FAILURES_DOWN + 1
    assert (await client.get("/healthz")).status == 200


async def test_a_task_ended_by_a_cancelled_await_is_red_on_healthz_and_not_started_again(
    tmp_path: Path, aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path), clock=FakeClock()))
    registry = client.app[STATE].adapter.registry

    async def awaits_a_cancelled_future(now: datetime, limit: timedelta) -> int:
        cancelled = asyncio.get_running_loop().create_future()
        cancelled.cancel()
        await cancelled
        return 0

    registry.expire_heartbeats = awaits_a_cancelled_future  # type: ignore[method-assign]
    await clock_of(client).advance(PERIOD)
    error = "CancelledError: something it awaited was cancelled"
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert await resp.json() == {"status": "failing", "down": {"heartbeat-expiry": error}}
    assert await expiry_on_readyz(client) == {"state": "dead", "restarts": 0, "last_error": error}
    (ended,) = [r for r in caplog.records if r.name == "nodes.supervisor"]
    assert ended.levelno == logging.ERROR
    assert "heartbeat-expiry ended" in ended.getMessage()
