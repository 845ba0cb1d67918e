"""The audit trail is written before an action touches a node, against a real sshd.

A full disk is `/dev/full` (every write fails with ENOSPC) behind the audit file's name:
the adapter follows the name, as it does after a rotation.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from api.state import STATE
from ssh.session import run_command
from tests.ssh.test_ssh import NODE, Client, adapter, register, run
from tests.sshd import Sshd


@pytest.fixture
def audit_name(tmp_path: Path) -> Path:
    """The audit log's name: a link to a file now, to be pointed at a full disk."""
    (tmp_path / "audit.real").touch()
    name = tmp_path / "audit.jsonl"
    name.symlink_to(tmp_path / "audit.real")
    return name


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd, audit_name: Path
) -> Client:
    client = await adapter(aiohttp_client, tmp_path, sshd, audit_log=str(audit_name))
    await register(client, "abc123", sshd.port)
    return client


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fill_disk(name: Path) -> None:
    name.unlink()
    name.symlink_to("/dev/full")


def hang_disk(name: Path) -> Path:
    """`name` to a FIFO nobody reads: opening it for writing waits for ever."""
    hung = name.with_name("hung")
    os.mkfifo(hung)
    name.unlink()
    name.symlink_to(hung)
    return hung


async def test_with_a_full_disk_nothing_audited_runs_and_each_refusal_says_why(
    client: Client, tmp_path: Path, audit_name: Path
) -> None:
    ran = tmp_path / "ran"
    fill_disk(audit_name)
    refusals: list[aiohttp.ClientResponse] = [
        await client.post(f"/api/v1/nodes/{NODE}/exec", json={"cmd": f"touch {ran}"}),
        await client.post("/api/v1/exec", json={"cmd": f"touch {ran}", "nodes": [NODE]}),
        await client.put(f"/api/v1/nodes/{NODE}/files", params={"path": str(ran)}, data=b"x"),
        await client.put("/api/v1/files", params={"path": str(ran), "nodes": NODE}, data=b"x"),
        await client.get(f"/api/v1/nodes/{NODE}/files", params={"path": str(tmp_path)}),
        await client.get(f"/api/v1/nodes/{NODE}/shell"),
        await client.get(f"/api/v1/nodes/{NODE}/portforward", params={"port": "22"}),
        await client.post(f"/api/v1/nodes/{NODE}/frpc-token"),
        await client.delete(f"/api/v1/nodes/{NODE}/host-key"),
        await client.post("/reverse_proxy_shell", data={"nm_name": NODE, "cmd": f"touch {ran}"}),
    ]
    for resp in refusals:
        body = await resp.json()
        assert resp.status == 503, (resp.url, body)
        said = body.get("details") or body["error"]["message"]
        assert "audit log" in said
        assert "No space left on device" in said
    assert not ran.exists()
    metrics = await (await client.get("/metrics")).text()
    assert f"frpa_audit_write_failures_total {len(refusals)}.0" in metrics


async def test_the_end_record_lost_to_a_disk_that_fills_mid_way_keeps_the_result(
    client: Client, tmp_path: Path, audit_name: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fill_then_run(*args: Any, **kwargs: Any) -> Any:
        fill_disk(audit_name)
        return await run_command(*args, **kwargs)

    monkeypatch.setattr("api.v1.run_command", fill_then_run)
    status, body = await run(client, "echo ran")
    assert (status, body["stdout"]) == (200, "ran\n")
    (started,) = records(tmp_path / "audit.real")
    assert (started["command"], started["result"]) == ("echo ran", "started")


async def test_records_follow_the_file_when_it_is_rotated_or_deleted(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd
) -> None:
    log, rotated = tmp_path / "audit.log", tmp_path / "audit.log.1"
    client = await adapter(aiohttp_client, tmp_path, sshd, audit_log=str(log))
    await register(client, "abc123", sshd.port)
    await run(client, "echo one")
    log.rename(rotated)  # as logrotate does
    await run(client, "echo two")
    assert [r["command"] for r in records(rotated)] == ["echo one"] * 2
    assert [r["command"] for r in records(log)] == ["echo two"] * 2
    log.unlink()
    await run(client, "echo three")
    assert [r["command"] for r in records(log)] == ["echo three"] * 2


async def test_a_command_that_is_not_unicode_is_refused_before_anything_runs(
    client: Client, audit_name: Path
) -> None:
    body = '{"cmd": "echo \\ud800"}'
    for path, extra in ((f"/api/v1/nodes/{NODE}/exec", ""), ("/api/v1/exec", ', "nodes": []')):
        resp = await client.post(path, data=body[:-1] + extra + "}", headers=JSON)
        said = await resp.json()
        assert resp.status == 400, said
        assert "surrogate" in json.dumps(said)
    resp = await client.post(
        "/api/v1/exec", data=f'{{"cmd": "true", "nodes": ["{NODE}", "x\\udfff"]}}', headers=JSON
    )
    assert resp.status == 400
    assert records(audit_name) == []


JSON = {"Content-Type": "application/json"}


async def test_one_nodes_unexpected_error_is_its_own_line_and_the_others_run(
    aiohttp_client: AiohttpClient, tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await adapter(aiohttp_client, tmp_path, sshd)
    for uid in ("abc123", "broken"):
        await register(client, uid, sshd.port)

    async def broken_on_one(connector: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        if target.name.endswith("broken"):
            raise RuntimeError("a fault of the adapter's own")
        return await run_command(connector, target, *args, **kwargs)

    monkeypatch.setattr("api.v1.run_command", broken_on_one)
    resp = await client.post(
        "/api/v1/exec", json={"cmd": "echo ok", "nodes": [NODE, "nodemaintenances-broken"]}
    )
    assert resp.status == 200
    lines = {line["node"]: line for line in map(json.loads, (await resp.text()).splitlines())}
    assert lines[NODE]["stdout"] == "ok\n"
    assert lines["nodemaintenances-broken"]["error"] == "internal error"
    said = lines["nodemaintenances-broken"]["details"]
    assert said == "RuntimeError: a fault of the adapter's own"  # in words, not a repr


async def test_an_audit_log_that_hangs_refuses_in_time_and_holds_up_nothing_else(
    client: Client, tmp_path: Path, audit_name: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO with no reader behind the name is a disk that hangs (an NFS server gone):
    opening it for writing waits for ever. The actions wait at most WRITE_SECONDS and are
    refused; the store, whose writes also run in threads, goes on."""
    monkeypatch.setattr("api.audit.WRITE_SECONDS", 0.5)
    ran = tmp_path / "ran"
    hung = hang_disk(audit_name)
    try:
        execs = [
            asyncio.ensure_future(
                client.post(f"/api/v1/nodes/{NODE}/exec", json={"cmd": f"touch {ran}"})
            )
            for _ in range(12)  # more than asyncio's default executor has threads
        ]
        await asyncio.sleep(0.1)
        # Waited on, not cancelled: a store read cancelled waits for its thread anyway.
        read = asyncio.ensure_future(client.app[STATE].adapter.store.get(NODE))
        read_done, _ = await asyncio.wait([read], timeout=5)
        assert read_done, "the store's read waited behind the audit log"
        assert read.result() is not None
        answered, _ = await asyncio.wait(execs, timeout=5)
        assert len(answered) == len(execs), "actions waited on the audit log for ever"
        for resp in (e.result() for e in execs):
            body = await resp.json()
            assert resp.status == 503, body
            assert "timed out after 0.5 s" in body["details"]
        assert not ran.exists()
    finally:
        reader = os.open(hung, os.O_RDONLY | os.O_NONBLOCK)  # frees the thread that waits
        await asyncio.sleep(0.1)
        os.close(reader)
