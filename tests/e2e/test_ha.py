"""Two adapter replicas behind a real nginx, one killed with SIGKILL mid login storm.

frps calls its plugin through nginx (Debian's), which spreads requests over both
replicas and resends a request whose replica died under it to the other one
(`proxy_next_upstream ... non_idempotent`: every plugin op may be answered twice). Both
replicas share one Kubernetes API peer. 200 real frpc nodes log in at once; the leading
replica is killed with SIGKILL during the storm.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.peers import FrpSetup, Processes, frp_binaries, wait_for_port
from tests.kube import NodeMaintenanceEmulator, running_kube
from tests.support import eventually, free_port

pytestmark = pytest.mark.e2e

NGINX = "/usr/sbin/nginx"
NODES = 200
LEASE = ("frp-adapter-leader", "default")


def nginx_config(directory: Path, port: int, upstreams: list[int]) -> Path:
    servers = "".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=60s; " for p in upstreams)
    config = directory / "nginx.conf"
    config.write_text(
        f"""
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/nginx-body;
    proxy_temp_path {directory}/nginx-proxy;
    upstream adapters {{ {servers} keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://adapters;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout non_idempotent;
            proxy_connect_timeout 1s;
            proxy_read_timeout 10s;
        }}
    }}
}}
"""
    )
    return config


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[NodeMaintenanceEmulator, Path]]:
    async with running_kube(tmp_path) as peer:
        yield peer


async def test_killing_the_leader_mid_storm_refuses_no_login_and_loses_no_node(
    tmp_path: Path, kube: tuple[NodeMaintenanceEmulator, Path]
) -> None:
    emulator, kubeconfig = kube
    emulator.history_limit = 100  # kmock re-scans its history per request (see tests/kube.py)
    processes = Processes(tmp_path)
    frps, frpc = frp_binaries(tmp_path)
    frp = FrpSetup(
        processes, frps, frpc, {"FRPA_STORE": "kubernetes", "KUBECONFIG": str(kubeconfig)}
    )
    ports = {"a": free_port(), "b": free_port()}
    balancer = free_port()
    try:
        await frp.start_adapter("a", ports["a"], FRPA_RECONCILE_INTERVAL="10")
        await eventually(lambda: _holder_is(emulator, processes, "a"), within=15, what="a leads")
        await frp.start_adapter("b", ports["b"], FRPA_RECONCILE_INTERVAL="10")
        processes.start(
            "nginx",
            [
                NGINX,
                "-p",
                str(tmp_path),
                "-c",
                str(nginx_config(tmp_path, balancer, list(ports.values()))),
            ],
        )
        await wait_for_port(balancer, processes.running["nginx"])
        await frp.start_frps(plugin_port=balancer)

        for i in range(NODES):
            frp.start_frpc(f"ha-{i}", f"ha-{i}", proxy=f"ssh-ha-{i}")

        await eventually(
            lambda: _online_count_at_least(emulator, NODES // 4), within=60, what="storm going"
        )
        processes.running["a"].send_signal(signal.SIGKILL)  # the leader, mid storm
        await processes.wait("a")

        async def everyone_online() -> bool:
            return await _online_count_at_least(emulator, NODES)

        try:
            await eventually(everyone_online, within=90, what=f"all {NODES} nodes online")
        except AssertionError:
            raise AssertionError(_diagnosis(emulator, processes)) from None
        await eventually(lambda: _holder_is(emulator, processes, "b"), within=30, what="b leads")
        refused = [
            name
            for i in range(NODES)
            if "login to the server failed" in processes.log(name := f"ha-{i}")
            or "start error" in processes.log(name)
        ]
        assert refused == [], processes.log(refused[0])
    finally:
        await processes.stop_all()


async def _online_count_at_least(emulator: NodeMaintenanceEmulator, count: int) -> bool:
    online = [
        name
        for name, obj in emulator.node_maintenances().items()
        if any(s.get("status") == "online" for s in obj.get("status", {}).get("services", []))
    ]
    return len(online) >= count


async def _holder_is(emulator: NodeMaintenanceEmulator, processes: Processes, name: str) -> bool:
    if name not in processes.running:
        return False
    identity = f"{socket.gethostname()}-{processes.running[name].pid}"
    return emulator.lease_holder(*LEASE) == identity


def _diagnosis(emulator: NodeMaintenanceEmulator, processes: Processes) -> str:
    nms = emulator.node_maintenances()
    offline = [
        name
        for name, obj in nms.items()
        if not any(s.get("status") == "online" for s in obj.get("status", {}).get("services", []))
    ]
    missing = [
        f"nodemaintenances-ha-{i}" for i in range(NODES) if f"nodemaintenances-ha-{i}" not in nms
    ]
    return (
        f"{len(nms)} NMs, offline {offline[:5]} ({len(offline)}), missing {missing[:5]} "
        f"({len(missing)}), lease {emulator.lease_holder(*LEASE)}\n"
        f"b: {processes.log('b')[-3000:]}"
    )
