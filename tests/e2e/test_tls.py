"""HTTPS end to end: real frps calls the plugin over TLS, a shell opens over wss://, and a
certificate replaced on disk is served to the next connection without a restart."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.peers import sqlite_frp
from tests.sshd import running_sshd
from tests.support import certificate, eventually

pytestmark = pytest.mark.e2e


async def served_certificate(port: int) -> bytes:
    """The certificate a new TLS connection to 127.0.0.1:`port` is shown (DER)."""
    anything = ssl.create_default_context()
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=anything)
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return der


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


async def test_frps_and_a_shell_over_tls_and_a_rotated_certificate_served_at_once(
    tmp_path: Path,
) -> None:
    first_cert, first_key = certificate(tmp_path, "first")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(first_cert.read_bytes())
    key.write_bytes(first_key.read_bytes())
    async with running_sshd(tmp_path / "ssh") as sshd, sqlite_frp(tmp_path) as frp:
        await frp.start_adapter(
            FRPA_TLS_CERT_FILE=str(cert),
            FRPA_TLS_KEY_FILE=str(key),
            FRPA_INSECURE_NO_AUTH="1",
            FRPA_SSH_USER=sshd.user,
            FRPA_SSH_KEY_FILE=str(sshd.user_key),
        )
        await frp.start_frps(plugin_scheme="https://")
        frp.start_frpc("edge", "edge-1", local_port=sshd.port)
        trusted = ssl.create_default_context(cafile=str(first_cert))
        base = f"https://127.0.0.1:{frp.adapter_port}"
        async with aiohttp.ClientSession() as session:

            async def online() -> bool:
                async with session.get(
                    f"{base}/api/v1/nodes/nodemaintenances-edge-1", ssl=trusted
                ) as resp:
                    body = await resp.json() if resp.status == 200 else {}
                return bool(body) and body["status"]["services"][0]["status"] == "online"

            await eventually(online, within=30, what="the node online through frps over TLS")
            async with session.ws_connect(
                f"wss://127.0.0.1:{frp.adapter_port}/api/v1/nodes/nodemaintenances-edge-1/shell",
                ssl=trusted,
            ) as ws:
                await ws.send_str("echo over-tls-$((6*7))\r")
                seen = b""
                async with asyncio.timeout(15):
                    while b"over-tls-42\r\n" not in seen:
                        msg = await ws.receive()
                        assert msg.type == aiohttp.WSMsgType.BINARY, msg
                        seen += msg.data

        assert await served_certificate(frp.adapter_port) == der(first_cert)
        second_cert, second_key = certificate(tmp_path, "second")
        os.replace(second_key, key)  # as cert-manager does: each file replaced whole
        os.replace(second_cert, cert)

        async def rotated() -> bool:
            return await served_certificate(frp.adapter_port) == der(cert)

        await eventually(rotated, within=15, what="the new certificate served")
        assert frp.processes.running["adapter"].poll() is None  # no restart
