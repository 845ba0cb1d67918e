"""`frp-adapter frps-config` and `frpc-config NODE`: the frps.toml and frpc.toml lines the
adapter's running settings ask for (frp 0.52+ TOML), ready to paste."""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

from nodes.model import UniqueId
from schemas.settings import FrpsServer, Settings

_DASHBOARD_PORT = 7500
# Without a dashboard or FRPA_ALLOWED_PORTS, a port to start from: each node needs its own.
_SOME_PORT = 22000


def frps_config(settings: Settings, host: str, secret: str) -> str:
    """For each frps: the dashboard the adapter reads, and its `[[httpPlugins]]` block.
    Tables only, so the lines hold wherever they are pasted in an frps.toml."""
    servers = settings.servers()
    port = (settings.plugin_address or settings.address)[1]
    blocks = []
    for server in servers:
        path = "/frps/handler" if len(servers) == 1 else f"/frps/{server.name}/handler"
        if secret:
            path = f"{path}/{secret}"
        blocks.append(
            f"# frps {server.name}\n{_dashboard(settings, server)}\n"
            f'[[httpPlugins]]\nname = "frp-adapter"\naddr = "{host}:{port}"\n'
            f'path = "{path}"\nops = ["Login", "NewProxy", "CloseProxy"]\n'
        )
    return "\n".join(blocks)


def _dashboard(settings: Settings, server: FrpsServer) -> str:
    """The dashboard where the adapter reads it, and only there, never without a password:
    it lists every node and can be asked to close proxies."""
    if server.api is None:
        password = secrets.token_urlsafe(18)
        return (
            "# its dashboard, on this host only (for the adapter elsewhere, the address it\n"
            "# reaches this frps at); give the adapter FRP_SERVER_API=http://<this frps>:"
            f"{_DASHBOARD_PORT},\n"
            f"# FRP_SERVER_HTTPAUTHUSERNAME=frp-adapter, FRP_SERVER_HTTPAUTHPASSWORD={password}\n"
            f'[webServer]\naddr = "127.0.0.1"\nport = {_DASHBOARD_PORT}\n'
            f'user = "frp-adapter"\npassword = "{password}"\n'
        )
    url = urlsplit(server.api)
    lines = [
        "[webServer]",
        f"addr = {json.dumps(url.hostname or '127.0.0.1')}  # where FRP_SERVER_API reaches it",
        f"port = {url.port or _DASHBOARD_PORT}",
    ]
    if settings.frps_api_user:
        lines.append(f"user = {json.dumps(settings.frps_api_user)}")
        # frps reads the value from its own environment (frp's config templates): the
        # password is neither shown here nor written in frps.toml. Quoted by the template
        # (a `"` in it stays in the string); unset or empty, it is no value and frps does
        # not start, where a plain "{{ ... }}" would give the dashboard the password
        # "<no value>", or none.
        lines.append(
            "password = {{ with .Envs.FRP_SERVER_HTTPAUTHPASSWORD }}"
            '{{ printf "%q" . }}{{ end }}  '
            "# frps starts only with FRP_SERVER_HTTPAUTHPASSWORD set"
        )
    else:
        lines.append("# set user and password, and FRP_SERVER_HTTPAUTHUSERNAME/PASSWORD to match")
    return "\n".join(lines) + "\n"


def frpc_config(
    settings: Settings, server: FrpsServer, unique_id: UniqueId, token: str | None, ssh_port: int
) -> str:
    """An edge node's frpc.toml: its id (and token) in metadatas, its sshd as a tcp proxy."""
    key = json.dumps(settings.unique_id_meta_key)
    lines = [
        f"# node {unique_id}, through frps {server.name}",
        f"serverAddr = {json.dumps(server.address)}",
        f"serverPort = {server.bind_port}  # frps's bindPort",
        f"user = {json.dumps(unique_id)}",
        f"metadatas.{key} = {json.dumps(unique_id)}",
    ]
    if token is not None:
        lines.append(f"metadatas.token = {json.dumps(token)}  # shown once: keep it here")
    if settings.allowed_ports is not None:
        port = f"{settings.allowed_ports.start}  # one of FRPA_ALLOWED_PORTS, free on frps"
    elif server.api is not None:
        port = "0  # frps picks one; the adapter reads it from frps's dashboard"
    else:
        port = f"{_SOME_PORT}  # a port free on frps, one per node"
    lines += [
        "",
        "[[proxies]]",
        'name = "ssh"',
        'type = "tcp"',
        'localIP = "127.0.0.1"',
        f"localPort = {ssh_port}  # the node's sshd",
        f"remotePort = {port}",
    ]
    return "\n".join(lines) + "\n"
