"""Node changes notified to a DingTalk robot (FRP_SERVER_WEBHOOK) and a JSON webhook
(FRPA_NOTIFY_URL), each a real receiver on 127.0.0.1, with the adapter's clock moved by
hand: the rate limit and the retries wait on it, never on the wall clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from api.app import create_app
from api.state import STATE
from nodes.model import NodeChange, NodeState, UniqueId, render_nm
from nodes.watch import QUEUE_SIZE
from tests.clock import FakeClock
from tests.support import (
    clock_of,
    close_proxy,
    eventually,
    free_port,
    new_proxy,
    settings_for,
)

Client = TestClient[web.Request, web.Application]
TOKEN = "0123456789abcdef-robot-token"  # a DingTalk access_token
INTERVAL = 10.0  # FRPA_NOTIFY_INTERVAL's default
GRACE = settings_for(Path()).close_grace_period

# notification.go in ttlv/frp_adapter (branch http), rendered by mustache and sent with
# dingrobot.SendMarkdown(title, text, []string{""}, true).
ORIGINAL_TEXT = (
    "####  节点{{operating}}  \n>  节点{{uid}}状态由{{status_now}} 变更为{{status}} "
    "![screenshot](https://z3.ax1x.com/2021/04/17/c4XKds.png)\n"
    "> ###### 发布from  [谐云](http://www.harmonycloud.cn/overindex) \n"
)


def original(operating: str, uid: str, status_now: str, status: str) -> dict[str, Any]:
    text = ORIGINAL_TEXT
    for name, value in [
        ("operating", operating),
        ("uid", uid),
        ("status_now", status_now),
        ("status", status),
    ]:
        text = text.replace("{{" + name + "}}", value)
    return {
        "msgtype": "markdown",
        "markdown": {"title": "节点创建更新通知", "text": text},
        "at": {"atMobiles": [""], "isAtAll": True},
    }


class Receiver:
    """DingTalk's robot endpoint and a JSON webhook: records what it is sent, answers as
    DingTalk does, or with `status`; while `held` is set, answers nothing until it is."""

    def __init__(self) -> None:
        self.dingtalk: list[dict[str, Any]] = []
        self.webhook: list[dict[str, Any]] = []
        self.queries: list[dict[str, str]] = []
        self.status = 200
        self.held: asyncio.Event | None = None
        self.requests = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/robot/send", self.robot)
        app.router.add_post("/hook", self.hook)
        return app

    async def robot(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.held is not None:
            await self.held.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="broken")
        assert request.content_type == "application/json"
        self.dingtalk.append(await request.json())
        self.queries.append(dict(request.query))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def hook(self, request: web.Request) -> web.Response:
        self.webhook.append(await request.json())
        return web.Response(status=204)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def receiving(receiver: Receiver, aiohttp_server: AiohttpServer) -> str:
    """The receiver's base URL."""
    server = await aiohttp_server(receiver.app())
    return str(server.make_url("")).rstrip("/")


async def adapter(tmp_path: Path, aiohttp_client: AiohttpClient, **settings: Any) -> Client:
    """The adapter, once its notifier watches the nodes (it starts after the store is read)."""
    client = await aiohttp_client(create_app(settings_for(tmp_path, **settings), clock=FakeClock()))

    async def watching() -> bool:
        return client.app[STATE].adapter.registry.watchers == 1

    await eventually(watching, what="the notifier watching")
    return client


async def allowed(client: Client, body: object) -> None:
    resp = await client.post("/frps/handler", json=body)
    assert await resp.json() == {"reject": False, "unchange": True}


def count(messages: list[Any], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(messages) >= n

    return check


def sample(client: Client, name: str, **labels: str) -> float | None:
    return client.app[STATE].metrics.get_sample_value(name, labels)


def change(client: Client, uid: str, status: Any, reason: str) -> None:
    client.app[STATE].adapter.registry.transition(
        UniqueId(uid), NodeChange(reason=reason, at=clock_of(client).now(), status=status)
    )


async def test_dingtalk_gets_the_originals_message_for_a_node_created_and_for_its_change(
    tmp_path: Path, aiohttp_client: AiohttpClient, receiver: Receiver, receiving: str
) -> None:
    url = f"{receiving}/robot/send?access_token={TOKEN}"
    client = await adapter(tmp_path, aiohttp_client, dingtalk_webhook=url)
    clock = clock_of(client)
    await allowed(client, new_proxy())
    await eventually(count(receiver.dingtalk, 1))
    assert receiver.dingtalk == [original("创建", "abc123", "Not created", "online")]
    assert receiver.queries == [{"access_token": TOKEN}]

    await clock.advance(GRACE)
    await allowed(client, close_proxy())
    await clock.advance(GRACE)  # offline now; its message waits out the interval
    await clock.advance(INTERVAL)
    await eventually(count(receiver.dingtalk, 2))
    assert receiver.dingtalk[1] == original("更新", "abc123", "online", "offline")


async def test_the_json_webhook_gets_each_change_with_its_fields(
    tmp_path: Path, aiohttp_client: AiohttpClient, receiver: Receiver, receiving: str
) -> None:
    client = await adapter(tmp_path, aiohttp_client, notify_url=f"{receiving}/hook")
    clock = clock_of(client)
    await allowed(client, new_proxy())
    await eventually(count(receiver.webhook, 1))
    created = clock.now().isoformat(timespec="seconds")
    await clock.advance(GRACE)
    await allowed(client, close_proxy())
    await clock.advance(GRACE)
    gone = clock.now().isoformat(timespec="seconds")
    await clock.advance(INTERVAL)
    await eventually(count(receiver.webhook, 2))
    node = {"node": "nodemaintenances-abc123", "unique_id": "abc123", "frps": "default"}
    assert receiver.webhook == [
        {
            "changes": [
                {
                    **node,
                    "from": None,
                    "to": "online",
                    "reason": "NewProxy",
                    "time": created,
                    "missed": False,
                }
            ],
            "dropped": 0,
        },
        {
            "changes": [
                {
                    **node,
                    "from": "online",
                    "to": "offline",
                    "reason": "CloseProxy",
                    "time": gone,
                    "missed": False,
                }
            ],
            "dropped": 0,
        },
    ]


@pytest.fixture
async def down_then_back(receiver: Receiver) -> AsyncIterator[tuple[int, Callable[[], Any]]]:
    """A port nothing listens on yet, and what starts the receiver on it."""
    port = free_port()
    runner = web.AppRunner(receiver.app(), access_log=None)  # its log is not the adapter's

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    yield port, start
    await runner.cleanup()


async def test_a_receiver_down_delays_no_state_change_and_gets_the_changes_once_it_is_back(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    receiver: Receiver,
    down_then_back: tuple[int, Callable[[], Awaitable[None]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, start = down_then_back
    url = f"http://127.0.0.1:{port}/robot/send?access_token={TOKEN}"
    client = await adapter(tmp_path, aiohttp_client, dingtalk_webhook=url)
    clock = clock_of(client)

    async def failed(n: int) -> None:
        async def check() -> bool:
            return sample(client, "frpa_notifications_total", **labels, result="failed") == n

        await eventually(check, what=f"{n} failed deliveries")

    labels = {"destination": "dingtalk"}
    with caplog.at_level(logging.INFO):
        await allowed(client, new_proxy("a", "aaa"))  # answered, connection refused behind
        await client.app[STATE].adapter.writer.flushed(UniqueId("aaa"))  # and stored
        await failed(1)

        await start()
        receiver.status = 500
        await allowed(client, new_proxy("b", "bbb"))
        await client.app[STATE].adapter.writer.flushed(UniqueId("bbb"))
        await clock.advance(INTERVAL)  # tried again no sooner than the interval
        await failed(2)
        assert receiver.requests == 1

        receiver.status = 200
        await clock.advance(INTERVAL)
        await eventually(count(receiver.dingtalk, 1))
    [message] = receiver.dingtalk
    text = message["markdown"]["text"]
    assert "状态由Not created 变更为online (2): aaa, bbb\n" in text  # both, in order
    assert sample(client, "frpa_notifications_total", **labels, result="sent") == 1
    assert sample(client, "frpa_notifications_total", **labels, result="failed") == 2
    logged = caplog.text
    assert "not delivered to" in logged
    assert "access_token=***" in logged
    assert TOKEN not in logged


async def test_a_receiver_that_does_not_answer_holds_up_no_state_change(
    tmp_path: Path, aiohttp_client: AiohttpClient, receiver: Receiver, receiving: str
) -> None:
    receiver.held = asyncio.Event()
    url = f"{receiving}/robot/send?access_token={TOKEN}"
    client = await adapter(tmp_path, aiohttp_client, dingtalk_webhook=url)
    await allowed(client, new_proxy("a", "aaa"))

    async def sent() -> bool:
        return receiver.requests == 1

    await eventually(sent, what="the first message sent")
    for uid in ("bbb", "ccc"):  # while that message hangs
        await allowed(client, new_proxy(uid[0], uid))
        await client.app[STATE].adapter.writer.flushed(UniqueId(uid))
    receiver.held.set()
    receiver.held = None
    await eventually(count(receiver.dingtalk, 1))
    await clock_of(client).advance(INTERVAL)
    await eventually(count(receiver.dingtalk, 2))
    assert receiver.dingtalk[0] == original("创建", "aaa", "Not created", "online")
    assert "(2): bbb, ccc\n" in receiver.dingtalk[1]["markdown"]["text"]


async def test_a_storm_of_500_nodes_and_an_frps_outage_are_a_few_messages_naming_the_nodes(
    tmp_path: Path, aiohttp_client: AiohttpClient, receiver: Receiver, receiving: str
) -> None:
    client = await adapter(
        tmp_path,
        aiohttp_client,
        dingtalk_webhook=f"{receiving}/robot/send?access_token={TOKEN}",
        notify_url=f"{receiving}/hook",
    )
    clock = clock_of(client)
    uids = [f"node-{i:03}" for i in range(500)]
    for uid in uids:
        await allowed(client, new_proxy(uid, uid))
    notifier = client.app[STATE].adapter.notifier
    assert notifier is not None
    [_, outbox] = notifier.outboxes

    async def all_queued() -> bool:  # so that the next message has every node's creation
        return sum(len(m["changes"]) for m in receiver.webhook) + outbox.backlog == 500

    await eventually(all_queued)
    await clock.advance(INTERVAL)
    for uid in uids:  # frps goes away: every node offline at once
        change(client, uid, "offline", "FrpsUnreachable")
    await clock.advance(INTERVAL)

    async def all_named() -> bool:
        changes = [c for m in receiver.webhook for c in m["changes"]]
        texts = [m["markdown"]["text"] for m in receiver.dingtalk]
        return len(changes) == 1000 and "offline (500)" in "".join(texts)

    await eventually(all_named, what="every change notified")
    assert len(receiver.dingtalk) <= 3
    assert len(receiver.webhook) <= 3
    texts = "".join(m["markdown"]["text"] for m in receiver.dingtalk)
    assert all(texts.count(uid) == 2 for uid in uids)  # created, then offline
    assert f"状态由online 变更为offline (500): {', '.join(uids)}\n" in texts
    changes = [c for m in receiver.webhook for c in m["changes"]]
    assert [c["unique_id"] for c in changes] == uids + uids
    assert [c["to"] for c in changes] == ["online"] * 500 + ["offline"] * 500


async def test_a_notifier_that_falls_behind_notifies_what_it_missed_as_such(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    receiver: Receiver,
    receiving: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await adapter(tmp_path, aiohttp_client, notify_url=f"{receiving}/hook")
    uids = [f"n{i:05}" for i in range(QUEUE_SIZE + 900)]
    for uid in uids:  # all in one turn of the loop: more than the watch holds
        change(client, uid, "online", "Reconciled")

    async def all_notified() -> bool:
        if len({c["unique_id"] for m in receiver.webhook for c in m["changes"]}) < len(uids):
            await clock_of(client).advance(INTERVAL)
            return False
        return True

    await eventually(all_notified, what="every node notified")
    changes = [c for m in receiver.webhook for c in m["changes"]]
    assert [c["unique_id"] for c in changes] == uids  # each once, in order
    assert [c["missed"] for c in changes] == [False] * QUEUE_SIZE + [True] * 900
    assert "notifier fell behind" in caplog.text


async def test_a_change_adopted_from_another_replica_is_that_replicas_to_notify(
    tmp_path: Path, aiohttp_client: AiohttpClient, receiver: Receiver, receiving: str
) -> None:
    client = await adapter(tmp_path, aiohttp_client, notify_url=f"{receiving}/hook")
    at = datetime(2026, 11, 25, tzinfo=UTC)
    theirs = NodeState(
        unique_id=UniqueId("theirs"),
        status="online",
        reason="NewProxy",
        last_transition=at,
        updated_at=at,
    )
    client.app[STATE].adapter.registry.observe(render_nm(theirs, None))  # as its NM watch tells it
    change(client, "mine", "online", "NewProxy")
    await eventually(count(receiver.webhook, 1))
    assert [c["unique_id"] for m in receiver.webhook for c in m["changes"]] == ["mine"]
