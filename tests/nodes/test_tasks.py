"""The task toolkit: an owner's tasks log their failures and end with it; the pump ends
every way of a stream when the first ends; the one backoff policy."""

from __future__ import annotations

import asyncio

import pytest

import nodes.tasks
from nodes.tasks import Tasks, first_to_end
from schemas.settings import Backoff, Settings, SettingsError
from tests.schemas.test_settings import load


async def test_a_failed_task_is_logged_when_it_ends_and_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks("test work")
    failed = asyncio.Event()

    async def fail() -> None:
        failed.set()
        raise ValueError("no luck")

    tasks.spawn("a", fail())
    await failed.wait()
    await tasks.wait()
    await asyncio.sleep(0)  # the done callback runs on the next turn
    assert "a" not in tasks
    assert "test work: a failed" in caplog.text
    assert "ValueError: no luck" in caplog.text


async def test_close_cancels_and_awaits_every_task_and_cancel_forgets_one() -> None:
    tasks = Tasks("test work")
    started, ended = asyncio.Event(), []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            ended.append(name)

    tasks.spawn("a", forever("a"))
    tasks.spawn("b", forever("b"))
    await started.wait()
    tasks.cancel("a")
    assert "a" not in tasks
    assert "b" in tasks
    await tasks.close()
    assert sorted(ended) == ["a", "b"]


async def test_a_task_that_holds_its_cancellation_off_is_logged_and_left_by_a_close(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    let_go, holding = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            holding.set()
            await let_go.wait()  # as a wait on a thread does

    tasks = Tasks("test work")
    task = tasks.spawn("a", stubborn())
    await asyncio.sleep(0)  # it runs to its wait
    # Given no time, the close tells what it leaves at once (one without the bound hung).
    monkeypatch.setattr(nodes.tasks, "STOP_SECONDS", 0)
    await tasks.close()
    assert "test work: 1 task(s) still running 0 s after being cancelled" in caplog.text
    assert "left behind: test work: a" in caplog.text
    await holding.wait()
    let_go.set()
    await task


async def test_the_first_way_to_end_ends_the_others_and_says_how_it_ended() -> None:
    cancelled: list[str] = []

    async def hang(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def done() -> None:
        await asyncio.sleep(0)

    async def broken() -> None:
        raise ConnectionResetError("gone")

    assert await first_to_end({"in": hang("in"), "out": done()}) == ("out", None)
    first, error = await first_to_end({"in": hang("in2"), "out": broken()})
    assert first == "out"
    assert isinstance(error, ConnectionResetError)
    assert cancelled == ["in", "in2"]


def test_the_backoff_doubles_to_its_most_and_never_overflows() -> None:
    backoff = Settings().retry_backoff
    assert [backoff.longest(n) for n in (1, 2, 3, 6, 7, 10_000)] == [1, 2, 4, 32, 60, 60]
    assert Backoff(0.5, 3, jitter=0).delay(4) == 3


def test_each_wait_is_cut_at_random_by_up_to_the_jitter() -> None:
    backoff = Settings().retry_backoff
    for n in (1, 7):
        waits = {backoff.delay(n) for _ in range(100)}
        assert all(backoff.longest(n) * 0.8 <= wait <= backoff.longest(n) for wait in waits)
        assert len(waits) > 50  # spread: what failed together does not retry together


@pytest.mark.parametrize("value", ["5", "0,10", "10,5", "a,b", "1,", ",1", "1,90000"])
def test_a_backoff_that_cannot_be_is_refused_at_start_up(value: str) -> None:
    with pytest.raises(SettingsError, match="FRPA_RETRY_BACKOFF"):
        load(FRPA_RETRY_BACKOFF=value)


def test_the_backoff_is_taken_from_the_environment() -> None:
    assert load(FRPA_RETRY_BACKOFF="0.5,30").retry_backoff == Backoff(0.5, 30.0)
    assert load("--retry-backoff", "2,20").retry_backoff == Backoff(2.0, 20.0)
