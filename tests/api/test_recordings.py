"""Recorded shell sessions and the audit trail, read back by admins: real shells on a real
sshd make them, the routes list and serve them, latest first, within the caller's scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from tests.sshd import Sshd
from tests.support import bearer, settings_for, tokens_file

Client = TestClient[web.Request, web.Application]
SCOPED = {"Authorization": "Bearer sh-admin-token-0123456789"}


async def adapter(aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd, **more: Any) -> Client:
    tokens = tokens_file(tmp_path)
    scoped = SCOPED["Authorization"].removeprefix("Bearer ")
    tokens.write_text(tokens.read_text() + f"{scoped} sh-admin admin site=sh\n")
    settings = settings_for(
        tmp_path,
        ssh_user=sshd.user,
        ssh_key_file=str(sshd.user_key),
        api_tokens_file=str(tokens),
        **more,
    )
    client = await aiohttp_client(create_app(settings))
    for uid in ("sh1", "bj1"):
        form = {"frp_server_ip_address": "127.0.0.1", "unique_id": uid, "port": sshd.port}
        assert (await client.post("/frp_create", data=form, headers=bearer("admin"))).ok
    patch = {"metadata": {"labels": {"site": "sh"}}}
    resp = await client.patch(
        "/api/v1/nodes/nodemaintenances-sh1", json=patch, headers=bearer("admin")
    )
    assert resp.status == 200, await resp.text()
    return client


async def shell(client: Client, node: str, role: str, line: str) -> None:
    async with client.ws_connect(f"/api/v1/nodes/{node}/shell", headers=bearer(role)) as ws:
        await ws.send_bytes(f"{line}; exit 3\r".encode())
        while (msg := await ws.receive(timeout=15)).type != aiohttp.WSMsgType.TEXT:
            assert msg.type == aiohttp.WSMsgType.BINARY
        assert json.loads(msg.data) == {"type": "exit", "exit_status": 3}


async def items(client: Client, path: str, headers: dict[str, str], **query: str) -> Any:
    resp = await client.get(path, params=query, headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["items"]


async def test_sessions_are_listed_latest_first_and_played_back_as_recorded(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    client = await adapter(
        aiohttp_client, tmp_path, sshd, shell_recordings=str(recordings),
        audit_log=str(tmp_path / "audit.jsonl"),
    )  # fmt: skip
    await shell(client, "nodemaintenances-sh1", "operator", "echo first-$((6*7))")
    await shell(client, "nodemaintenances-bj1", "admin", "echo second")
    await shell(client, "nodemaintenances-sh1", "admin", "echo third")

    found = await items(client, "/api/v1/sessions", bearer("admin"))
    assert [(s["node"], s["user"]) for s in found] == [
        ("nodemaintenances-sh1", "admin-user"),
        ("nodemaintenances-bj1", "admin-user"),
        ("nodemaintenances-sh1", "operator-user"),
    ]
    assert all((s["cols"], s["rows"]) == (80, 24) and s["size"] > 0 for s in found)
    by_node = await items(client, "/api/v1/sessions", bearer("admin"), node="nodemaintenances-sh1")
    assert len(by_node) == 2
    by_user = await items(client, "/api/v1/sessions", bearer("admin"), user="operator-user")
    assert [s["name"] for s in by_user] == [found[2]["name"]]
    assert len(await items(client, "/api/v1/sessions", bearer("admin"), limit="1")) == 1
    # A scoped admin: its nodes' only, and not the others' by name either.
    scoped = await items(client, "/api/v1/sessions", SCOPED)
    assert [s["node"] for s in scoped] == ["nodemaintenances-sh1"] * 2
    resp = await client.get(f"/api/v1/sessions/{found[1]['name']}", headers=SCOPED)
    assert resp.status == 404

    resp = await client.get(f"/api/v1/sessions/{found[2]['name']}", headers=bearer("admin"))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-asciicast"
    header, *events = (await resp.text()).splitlines()
    assert json.loads(header)["title"] == "nodemaintenances-sh1 (operator-user)"
    assert "first-42" in "".join(json.loads(event)[2] for event in events)
    for name in ("nope", "x%2F..%2F..%2Faudit.jsonl"):
        resp = await client.get(f"/api/v1/sessions/{name}", headers=bearer("admin"))
        assert resp.status == 404
        assert (await resp.json())["error"] == "not kept"
    # Operators' own keystrokes and screens: admins only.
    assert (await client.get("/api/v1/sessions", headers=bearer("operator"))).status == 403
    resp = await client.get("/api/v1/sessions", params={"limit": "0"}, headers=bearer("admin"))
    assert resp.status == 400

    # The audit trail: each action once, as it ended, latest first.
    actions = await items(client, "/api/v1/audit", bearer("admin"))
    shells = [a for a in actions if a["event"] == "shell"]
    assert [(a["node"], a["user"], a["exit_status"]) for a in shells] == [
        ("nodemaintenances-sh1", "admin-user", 3),
        ("nodemaintenances-bj1", "admin-user", 3),
        ("nodemaintenances-sh1", "operator-user", 3),
    ]
    assert len({a["id"] for a in actions}) == len(actions)
    assert all(a["result"] != "started" for a in actions)
    assert [a["event"] for a in actions][-1] == "label"  # the first, the labels' patch
    mine = await items(client, "/api/v1/audit", bearer("admin"), user="operator-user")
    assert [a["node"] for a in mine] == ["nodemaintenances-sh1"]
    assert {a["node"] for a in await items(client, "/api/v1/audit", SCOPED)} == {
        "nodemaintenances-sh1"
    }
    assert (await client.get("/api/v1/audit", headers=bearer("operator"))).status == 403


async def test_without_recordings_or_an_audit_file_the_answer_says_which_setting(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd)
    for path, setting in (
        ("/api/v1/sessions", "FRPA_SHELL_RECORDINGS"),
        ("/api/v1/audit", "FRPA_AUDIT_LOG"),
    ):
        resp = await client.get(path, headers=bearer("admin"))
        assert resp.status == 404
        body = await resp.json()
        assert body["error"] == "not kept"
        assert setting in body["details"]
