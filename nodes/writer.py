"""Store writes behind the plugin endpoint: coalesced per node, retried until stored; only
a shutdown that runs out of time leaves some unwritten (logged, with their count).

Callers hand over a node's newest state and return at once. One task writes batches;
a node whose state changes while a write is pending costs no extra write (the newest state
replaces the pending one), and a failed batch goes back to the queue, unless newer states
superseded it, and is retried with a bounded backoff for as long as it takes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Collection
from typing import NamedTuple

from nodes.clock import Clock
from nodes.model import NodeState, UniqueId, untrack
from nodes.store import NodeStore, StoreError
from schemas.settings import STORE_WRITE_BACKOFF, Backoff

logger = logging.getLogger(__name__)


class _Pending(NamedTuple):
    seq: int
    state: NodeState


class NodeWriter:
    def __init__(
        self,
        store: NodeStore,
        *,
        batch_size: int = 500,
        retry: Backoff = STORE_WRITE_BACKOFF,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._clock = clock or Clock()
        self._batch_size = batch_size
        self._retry = retry
        self._pending: dict[UniqueId, _Pending] = {}
        self._in_flight: dict[UniqueId, int] = {}
        self._seq = 0
        self._waiters: dict[UniqueId, list[tuple[int, asyncio.Future[None]]]] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.failing = False
        self.writes = 0
        self.failures = 0

    def submit(self, state: NodeState) -> None:
        self._seq += 1
        pending = self._pending[state.unique_id] = _Pending(self._seq, state)
        untrack(pending)  # a storm queues one per node
        self._wakeup.set()
        self._idle.clear()

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._in_flight)

    def pending(self, unique_id: UniqueId) -> bool:
        """Whether a state of this node is queued or being written."""
        return unique_id in self._pending or unique_id in self._in_flight

    async def flushed(self, unique_id: UniqueId) -> None:
        """Return once everything submitted so far for this node is stored."""
        pending = self._pending.get(unique_id)
        target = pending.seq if pending else self._in_flight.get(unique_id)
        if target is None:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(unique_id, []).append((target, future))
        await future

    async def run(self) -> None:
        failures = 0
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._clock.wait(self._wakeup)
            batch = self._take_batch()
            failed = await self._write(batch)
            self._in_flight.clear()
            self._requeue({uid: item for uid, item in batch.items() if uid in failed})
            self._stored({uid: item for uid, item in batch.items() if uid not in failed})
            if failed:
                self.failures += len(failed)
                self.failing = True
                failures += 1
                await self._clock.sleep(self._retry.delay(failures))
            else:
                if self.failing:
                    logger.info("store writes recovered")
                self.failing = False
                failures = 0

    async def _write(self, batch: dict[UniqueId, _Pending]) -> Collection[UniqueId]:
        """The nodes of `batch` that were not stored."""
        try:
            await self._store.apply([item.state for item in batch.values()])
        except StoreError as e:
            logger.warning("store write failed, %d node(s) stay queued: %s", len(batch), e)
            return batch if e.failed is None else e.failed
        except Exception:
            logger.exception("store write raised, %d node(s) stay queued", len(batch))
            return batch
        return ()

    async def drained(self) -> None:
        """Return once nothing is queued or being written."""
        await self._idle.wait()

    def _take_batch(self) -> dict[UniqueId, _Pending]:
        batch: dict[UniqueId, _Pending] = {}
        # islice: a storm queues a fleet, and a batch would copy every queued key.
        for uid in list(itertools.islice(self._pending, self._batch_size)):
            batch[uid] = self._pending.pop(uid)
            self._in_flight[uid] = batch[uid].seq
        return batch

    def _requeue(self, batch: dict[UniqueId, _Pending]) -> None:
        for uid, item in batch.items():
            self._pending.setdefault(uid, item)

    def _stored(self, batch: dict[UniqueId, _Pending]) -> None:
        self.writes += len(batch)
        for uid, item in batch.items():
            waiters = self._waiters.pop(uid, [])
            still = [(t, f) for t, f in waiters if t > item.seq]
            for target, future in waiters:
                if target <= item.seq and not future.done():
                    future.set_result(None)
            if still:
                self._waiters[uid] = still
        if not self._pending and not self._in_flight:
            self._idle.set()
