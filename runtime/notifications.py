"""Notifications of node changes: a node created, and each online/offline change.

To a DingTalk robot (`FRP_SERVER_WEBHOOK`, the original's markdown message) and to a
JSON webhook (`FRPA_NOTIFY_URL`). The notifier reads the registry's watch, so the plugin
path only queues an event; each destination has an outbox and one task sending from it,
in order, at most one message per interval: what comes meanwhile is summarised in the
next message. A message not delivered goes back to the front of its outbox and is tried
again, never sooner than the interval. Each replica notifies the changes it made itself
(`NodeEvent.made_here`): another replica's arrive through the store, and are its own to
notify.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import aiohttp

from nodes.clock import Clock, cause
from nodes.model import JsonObject, NodeState, NodeStatus, UniqueId, nm_name
from nodes.registry import NodeRegistry
from nodes.watch import NodeEvent, WatchEndedError
from schemas.settings import Backoff, Settings, redacted

logger = logging.getLogger(__name__)

Result = Literal["sent", "failed"]
RESULTS: tuple[Result, ...] = ("sent", "failed")
SEND_TIMEOUT = 10.0
# Changes an outbox holds while its destination fails; beyond it the oldest are dropped,
# and the next message says how many.
MAX_PENDING = 10_000
# Nodes judged between two yields when a watch that fell behind is caught up.
_RESYNC_CHUNK = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """One change to notify."""

    unique_id: UniqueId
    frps: str  # its name, as FRPA_FRPS_SERVERS gives it
    before: NodeStatus | None  # None: the node was created
    after: NodeStatus
    reason: str
    at: datetime
    # Found when the notifier caught up after falling behind: `before` is the status it
    # last saw, and another replica may have made the change.
    missed: bool


class DingTalk:
    """A DingTalk custom robot: the original's message for one change; for several, the
    same message summarising them, as DingTalk advises (20 messages a minute at most)."""

    name = "dingtalk"
    most = MAX_PENDING  # a summary names nodes up to `_NAMES_BUDGET` and counts the rest
    _TITLE = "节点创建更新通知"
    _FOOTER = "> ###### 发布from  [谐云](http://www.harmonycloud.cn/overindex) \n"
    # The original's text (mustache in notification.go), with the footer above.
    _ONE = (
        "####  节点{operating}  \n>  节点{uid}状态由{before} 变更为{after} "
        "![screenshot](https://z3.ax1x.com/2021/04/17/c4XKds.png)\n"
    )
    _NAMES_BUDGET = 8000  # bytes of node names in one summary, well under DingTalk's 20,000

    def __init__(self, url: str) -> None:
        self.url = url

    def body(self, notices: Sequence[Notice], dropped: int) -> JsonObject:
        if len(notices) == 1 and not dropped and not notices[0].missed:
            notice = notices[0]
            text = self._ONE.format(
                operating="创建" if notice.before is None else "更新",
                uid=notice.unique_id,
                before=_original_status(notice.before),
                after=notice.after,
            )
        else:
            text = self._summary(notices, dropped)
        return {
            "msgtype": "markdown",
            "markdown": {"title": self._TITLE, "text": text + self._FOOTER},
            # As the original's dingrobot.SendMarkdown(title, text, [""], true) sends it.
            "at": {"atMobiles": [""], "isAtAll": True},
        }

    def _summary(self, notices: Sequence[Notice], dropped: int) -> str:
        # Each node once, by its first and last status here, so its order is kept.
        nodes: dict[UniqueId, tuple[NodeStatus | None, NodeStatus, int, bool]] = {}
        for n in notices:
            first, _, count, missed = nodes.get(n.unique_id, (n.before, n.after, 0, False))
            nodes[n.unique_id] = (first, n.after, count + 1, missed or n.missed)
        groups: dict[tuple[NodeStatus | None, NodeStatus, bool], list[str]] = {}
        for uid, (first, last, count, missed) in nodes.items():
            groups.setdefault((first, last, missed), []).append(
                uid if count == 1 else f"{uid} ({count}次)"
            )
        lines = [f"####  节点汇总: {len(nodes)} 个节点, {len(notices)} 次变更  \n"]
        budget = self._NAMES_BUDGET
        for (first, last, missed), names in groups.items():
            shown = []
            for name in names:
                budget -= len(name.encode()) + 2
                if budget < 0:
                    break
                shown.append(name)
            rest = f" 等 {len(names)} 个" if len(shown) < len(names) else ""
            late = "(通知落后, 补报) " if missed else ""
            lines.append(
                f">  {late}状态由{_original_status(first)} 变更为{last} ({len(names)}): "
                f"{', '.join(shown)}{rest}\n"
            )
        if dropped:
            lines.append(f">  另有 {dropped} 次变更未列出: 通知长时间发不出去\n")
        return "".join(lines)

    @staticmethod
    async def refused(answer: aiohttp.ClientResponse) -> str | None:
        """Why DingTalk did not take the message (it answers 200 with an errcode), or None."""
        if answer.status != 200:
            return f"HTTP {answer.status}"
        try:
            found = json.loads(await answer.read())
            errcode, errmsg = found.get("errcode"), found.get("errmsg", "")
        except (ValueError, AttributeError):
            return "an answer that is not DingTalk's JSON"
        return None if errcode == 0 else f"errcode {errcode}: {errmsg}"


class JsonWebhook:
    """`{"changes": [{node, unique_id, frps, from, to, reason, time, missed}], "dropped"}`."""

    name = "webhook"
    most = 1000  # changes in one message; the rest go in the next

    def __init__(self, url: str) -> None:
        self.url = url

    def body(self, notices: Sequence[Notice], dropped: int) -> JsonObject:
        return {
            "changes": [
                {
                    "node": nm_name(n.unique_id),
                    "unique_id": n.unique_id,
                    "frps": n.frps,
                    "from": n.before,
                    "to": n.after,
                    "reason": n.reason,
                    "time": n.at.astimezone(UTC).isoformat(timespec="seconds"),
                    "missed": n.missed,
                }
                for n in notices
            ],
            "dropped": dropped,
        }

    @staticmethod
    async def refused(answer: aiohttp.ClientResponse) -> str | None:
        return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"


Destination = DingTalk | JsonWebhook


def _original_status(status: NodeStatus | None) -> str:
    return "Not created" if status is None else status


def destinations(settings: Settings) -> list[Destination]:
    """The destinations the settings name; none: nothing is notified."""
    found: list[Destination] = []
    if settings.dingtalk_webhook:
        found.append(DingTalk(settings.dingtalk_webhook))
    if settings.notify_url:
        found.append(JsonWebhook(settings.notify_url))
    return found


class Outbox:
    """One destination's changes not yet delivered, and the task that delivers them."""

    def __init__(
        self,
        destination: Destination,
        session: aiohttp.ClientSession,
        *,
        interval: float,
        backoff: Backoff,
        clock: Clock,
    ) -> None:
        self.destination = destination
        self._backoff = backoff
        self._session = session
        self._interval = interval
        self._clock = clock
        self._pending: deque[Notice] = deque()
        self._sending = 0  # changes in the message on its way
        self._dropped = 0
        self._ready = asyncio.Event()
        self._next_at: float | None = None  # monotonic; None: a message may go now
        self._failures = 0  # in a row
        self.results: Counter[Result] = Counter()

    @property
    def backlog(self) -> int:
        """Changes not delivered yet."""
        return len(self._pending) + self._sending

    def put(self, notice: Notice) -> None:
        self._pending.append(notice)
        self._trim()
        self._ready.set()

    async def run(self) -> None:
        clock = self._clock
        while True:
            await clock.wait(self._ready)
            if self._next_at is not None and (wait := self._next_at - clock.monotonic()) > 0:
                await clock.sleep(wait)
            notices = [
                self._pending.popleft()
                for _ in range(min(len(self._pending), self.destination.most))
            ]
            dropped, self._dropped = self._dropped, 0
            if not self._pending:
                self._ready.clear()
            self._sending = len(notices)
            why = await self._send(notices, dropped)
            self._sending = 0
            if why is None:
                self.results["sent"] += 1
                if self._failures:
                    logger.info("%s notifications delivered again", self.destination.name)
                self._failures = 0
                self._next_at = clock.monotonic() + self._interval
                continue
            self.results["failed"] += 1
            self._failures += 1
            # The process's backoff, never sooner than the interval allows.
            wait = max(self._interval, self._backoff.delay(self._failures))
            self._next_at = clock.monotonic() + wait
            logger.warning(
                "%s notification of %d change(s) not delivered to %s (%s); trying again in %g s",
                self.destination.name,
                len(notices) + dropped,
                redacted(self.destination.url),
                redacted(why),
                wait,
            )
            self._pending.extendleft(reversed(notices))
            self._dropped += dropped
            self._trim()
            self._ready.set()

    async def _send(self, notices: Sequence[Notice], dropped: int) -> str | None:
        """Why the message was not delivered; None if it was."""
        body = json.dumps(self.destination.body(notices, dropped), ensure_ascii=False)
        try:
            async with self._session.post(
                self.destination.url,
                data=body.encode(),
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT),
            ) as answer:
                return await self.destination.refused(answer)
        except (aiohttp.ClientError, TimeoutError) as e:
            return cause(e, SEND_TIMEOUT)

    def _trim(self) -> None:
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self._dropped += 1


class Notifier:
    """Reads the registry's watch and puts each change made here in every outbox."""

    def __init__(
        self,
        registry: NodeRegistry,
        outboxes: Sequence[Outbox],
        *,
        frps_names: Mapping[str, str],
    ) -> None:
        self._registry = registry
        self.outboxes = outboxes
        self._frps_names = frps_names
        # Every node's status as last seen (made here or not): what a change is from.
        self._seen: dict[UniqueId, NodeStatus] = {}

    async def run(self, loaded: asyncio.Future[None]) -> None:
        """Once the stored nodes are in memory (read, they are not changes), notify each
        change; a watch that fell behind is caught up by comparing every node."""
        await loaded
        states, watch = self._registry.watch()
        self._seen = {state.unique_id: state.status for state in states}
        try:
            while True:
                try:
                    event = await watch.next()
                except WatchEndedError as e:
                    if not e.overrun:
                        return
                    self._registry.unwatch(watch)
                    states, watch = self._registry.watch()
                    await self._resync(states)
                    continue
                self._observe(event)
        finally:
            self._registry.unwatch(watch)

    def _observe(self, event: NodeEvent) -> None:
        state = event.state
        if event.type == "DELETED":
            self._seen.pop(state.unique_id, None)
            return
        before = self._seen.get(state.unique_id)
        if before != state.status:
            self._seen[state.unique_id] = state.status
            if event.made_here:
                self._put(state, before, missed=False)

    async def _resync(self, states: Sequence[NodeState]) -> None:
        logger.warning(
            "the notifier fell behind the node changes: each node whose status differs from "
            "the one it last saw is notified as missed"
        )
        seen, self._seen = self._seen, {}
        for i, state in enumerate(states, 1):
            self._seen[state.unique_id] = state.status
            before = seen.get(state.unique_id)
            if before != state.status:
                self._put(state, before, missed=True)
            if i % _RESYNC_CHUNK == 0:
                await asyncio.sleep(0)

    def _put(self, state: NodeState, before: NodeStatus | None, *, missed: bool) -> None:
        address = state.frps_address or ""
        notice = Notice(
            unique_id=state.unique_id,
            frps=self._frps_names.get(address, address),
            before=before,
            after=state.status,
            reason=state.reason,
            at=state.last_transition,
            missed=missed,
        )
        for outbox in self.outboxes:
            outbox.put(notice)
