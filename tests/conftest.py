from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kube import NodeMaintenanceEmulator, running_kube
from tests.sshd import Sshd, running_sshd


@pytest.fixture(autouse=True)
async def _no_task_left_behind() -> AsyncIterator[None]:
    """Fail any test that leaves an asyncio task running: every task must have an owner."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    left = [t for t in left if not t.done()]
    assert not left, f"tasks left behind: {left}"


@pytest.fixture
async def kube(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[NodeMaintenanceEmulator]:
    """A Kubernetes API peer on 127.0.0.1, named by KUBECONFIG."""
    async with running_kube(tmp_path) as (emulator, kubeconfig):
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        yield emulator


@pytest.fixture
async def sshd(tmp_path: Path) -> AsyncIterator[Sshd]:
    """A real OpenSSH sshd on 127.0.0.1, the node's."""
    async with running_sshd(tmp_path / "ssh") as server:
        yield server
