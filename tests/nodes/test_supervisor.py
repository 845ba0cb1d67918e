"""Background tasks under the one guard: a task that raises is logged with its traceback,
started again after a backoff, counted in metrics, and `/healthz` is red while it is down."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from api.keys import REGISTRY
from api.metrics import METRICS
from nodes.supervisor import STEADY_SECONDS
from tests.clock import FakeClock
from tests.support import clock_of, settings_for

PERIOD = settings_for(Path()).heartbeat_timeout / 3


async def test_a_task_that_raises_is_logged_restarted_and_red_on_healthz_while_down(
    tmp_path: Path, aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(create_app(settings_for(tmp_path), clock=FakeClock()))
    clock = clock_of(client)
    registry = client.app[REGISTRY]
    judged = registry.expire_heartbeats
    rounds: list[str] = []

    async def broken_once(now: datetime, limit: timedelta) -> int:
        rounds.append("judged")
        if len(rounds) == 1:
            raise RuntimeError("a bug in judging")
        return await judged(now, limit)

    registry.expire_heartbeats = broken_once  # type: ignore[method-assign]
    assert (await client.get("/healthz")).status == 200
    await clock.advance(PERIOD)
    assert rounds == ["judged"]
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert await resp.json() == {
        "status": "failing",
        "down": {"heartbeat-expiry": "RuntimeError: a bug in judging"},
    }
    (failure,) = [r for r in caplog.records if r.name == "nodes.supervisor"]
    assert failure.levelno == logging.ERROR
    assert "heartbeat-expiry failed" in failure.getMessage()
    assert failure.exc_info is not None

    await clock.advance(1)  # the backoff: started again, not yet steady
    assert (await client.get("/healthz")).status == 503
    await clock.advance(PERIOD)
    assert rounds == ["judged", "judged"]
    await clock.advance(STEADY_SECONDS - PERIOD)
    assert (await client.get("/healthz")).status == 200
    restarts = client.app[METRICS].get_sample_value(
        "frpa_task_restarts_total", {"task": "heartbeat-expiry"}
    )
    assert restarts == 1
    assert (
        client.app[METRICS].get_sample_value("frpa_task_restarts_total", {"task": "node-writer"})
        == 0
    )
