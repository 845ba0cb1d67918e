"""Faults of the SQLite file and its process, with the adapter's own command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.peers import Processes
from tests.support import eventually, free_port, new_proxy

pytestmark = pytest.mark.e2e


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as r,
    ):
        return r.status, await r.text()


async def test_a_second_adapter_on_the_same_file_refuses_to_start(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    db = tmp_path / "frpa.db"
    env = {"FRPA_STORE": f"sqlite:///{db}"}
    try:
        await processes.start_adapter(free_port(), env, name="first")
        first_pid = processes.running["first"].pid
        with pytest.raises(RuntimeError, match="exited with 1"):
            await processes.start_adapter(free_port(), env, name="second")
        errors = [line for line in processes.log("second").splitlines() if "frp-adapter:" in line]
        assert errors == [
            f"frp-adapter: {db} is in use by another frp-adapter (pid {first_pid}): "
            "one process per file"
        ]
    finally:
        await processes.stop_all()


async def test_a_deleted_database_fails_readiness_and_no_write_is_acknowledged(
    tmp_path: Path,
) -> None:
    processes, port = Processes(tmp_path), free_port()
    db = tmp_path / "frpa.db"
    try:
        await processes.start_adapter(port, {"FRPA_STORE": f"sqlite:///{db}"})
        assert (await get(port, "/readyz"))[0] == 200
        os.unlink(db)

        async def not_ready() -> bool:
            return (await get(port, "/readyz"))[0] == 503

        await eventually(not_ready, within=3, what="readiness failing")
        _, body = await get(port, "/readyz")
        assert f"SQLite file {db} is gone" in json.loads(body)["store"]["problem"]
        async with aiohttp.ClientSession() as session:
            await session.post(f"http://127.0.0.1:{port}/frps/handler", json=new_proxy())

        async def said() -> bool:
            return f"SQLite file {db} is gone" in processes.log("adapter")

        await eventually(said, within=5, what="the log naming the file")
        assert json.loads((await get(port, "/readyz"))[1])["store"]["backlog"] == 1
    finally:
        await processes.stop_all()


async def test_dashboard_credentials_in_its_url_are_used_and_never_shown(tmp_path: Path) -> None:
    processes, port, dashboard = Processes(tmp_path), free_port(), free_port()
    try:
        await processes.start_adapter(
            port,
            {
                "FRPA_STORE": f"sqlite:///{tmp_path / 'frpa.db'}",
                "FRP_SERVER_API": f"http://admin:s3cr3t-pass@127.0.0.1:{dashboard}",
            },
        )

        async def failed_once() -> bool:
            _, body = await get(port, "/readyz")
            return bool(json.loads(body)["frps"]["default"]["failures"] > 0)

        await eventually(failed_once, what="a reconciliation against no dashboard")
        _, body = await get(port, "/readyz")
        _, metrics = await get(port, "/metrics")
        for shown in (body, metrics, processes.log("adapter")):
            assert "s3cr3t-pass" not in shown
        assert f"http://127.0.0.1:{dashboard}/api/proxy/tcp" in body
    finally:
        await processes.stop_all()
