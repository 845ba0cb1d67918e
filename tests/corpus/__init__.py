"""What real frps 0.65 sends the plugin, for frpc configurations as people write them.

`FRPC_CONFIGS` are the frpc set-ups: with and without `user`, with and without
`metadatas`, every proxy type frps 0.65 offers, random remote ports, load-balancing
groups, health checks, proxy metadatas, heartbeats, and SSH proxies the adapter does not
take (named `sshd` or `node1-sshd`, or with `metadatas.role` at the frpc's top level).
`capture.py` runs each against real frps with a recording plugin and writes
`frps-0.65.jsonl`, one plugin call per line; the end-to-end tests run the same
configurations against the adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parent / "frps-0.65.jsonl"
SUBDOMAIN_HOST = "example.test"


@dataclass(frozen=True, slots=True)
class FrpcConfig:
    """`body` is frpc TOML after the server lines; `{port}`, `{port2}` are free remote
    ports and `{local}` a local port something listens on (health checks dial it)."""

    name: str
    body: str
    proxies: int  # how many proxies frpc starts
    ssh_node: str | None  # the unique_id its SSH proxy is online under, if it has one
    fixed_ssh_port: bool = False  # whether the SSH proxy asks for {port}
    fix: str | None = None  # the frpc.toml fix the adapter's WARNING names, if it warns


FRPC_CONFIGS = (
    FrpcConfig(
        "no-user-no-metas",
        """
[[proxies]]
name = "ssh"
type = "tcp"
localIP = "127.0.0.1"
localPort = {local}
remotePort = 0

[[proxies]]
name = "web"
type = "http"
localPort = {local}
customDomains = ["web.example.org"]
""",
        proxies=2,
        ssh_node=None,
    ),
    FrpcConfig(
        "user-without-metas",
        """
user = "edge-user"
[[proxies]]
name = "ssh"
type = "tcp"
localPort = {local}
remotePort = 0

[[proxies]]
name = "dns"
type = "udp"
localPort = 53
remotePort = {port2}
""",
        proxies=2,
        ssh_node="edge-user",
    ),
    FrpcConfig(
        "metas-without-user",
        """
metadatas.unique_id = "metasonly01"
[[proxies]]
name = "ssh"
type = "tcp"
localPort = {local}
remotePort = {port}

[[proxies]]
name = "private"
type = "stcp"
secretKey = "k"
localPort = {local}
""",
        proxies=2,
        ssh_node="metasonly01",
        fixed_ssh_port=True,
    ),
    FrpcConfig(
        "user-and-metas-every-type",
        """
user = "edge-full"
metadatas.unique_id = "fullnode01"
metadatas.region = "north"
transport.heartbeatInterval = 1
transport.heartbeatTimeout = 30

[[proxies]]
name = "ssh-fullnode01"
type = "tcp"
localPort = {local}
remotePort = {port}
metadatas.owner = "ops"

[[proxies]]
name = "secure"
type = "https"
localPort = {local}
subdomain = "secure"

[[proxies]]
name = "mux"
type = "tcpmux"
multiplexer = "httpconnect"
localPort = {local}
customDomains = ["mux.example.org"]

[[proxies]]
name = "sdns"
type = "sudp"
secretKey = "k"
localPort = 53

[[proxies]]
name = "p2p"
type = "xtcp"
secretKey = "k"
localPort = {local}

[[proxies]]
name = "lb-a"
type = "tcp"
localPort = {local}
remotePort = {port2}
loadBalancer.group = "lb"
loadBalancer.groupKey = "gk"

[[proxies]]
name = "lb-b"
type = "tcp"
localPort = {local}
remotePort = {port2}
loadBalancer.group = "lb"
loadBalancer.groupKey = "gk"

[[proxies]]
name = "checked"
type = "tcp"
localPort = {local}
remotePort = 0
healthCheck.type = "tcp"
healthCheck.intervalSeconds = 1
""",
        proxies=8,
        ssh_node="fullnode01",
        fixed_ssh_port=True,
    ),
    FrpcConfig(
        "ssh-by-role-meta",
        """
user = "edge-role"
metadatas.unique_id = "rolenode01"
transport.heartbeatInterval = 1
transport.heartbeatTimeout = 30

[[proxies]]
name = "shell"
type = "tcp"
localPort = {local}
remotePort = 0
metadatas.role = "ssh"

[[proxies]]
name = "site"
type = "http"
localPort = {local}
subdomain = "site"
""",
        proxies=2,
        ssh_node="rolenode01",
    ),
    FrpcConfig(
        "ssh-proxy-named-sshd",
        """
user = "edge-sshd"
[[proxies]]
name = "sshd"
type = "tcp"
localPort = {local}
remotePort = 0
""",
        proxies=1,
        ssh_node=None,
        fix='in the [[proxies]] entry with name = "sshd", write name = "ssh" (or "ssh-edge-sshd")',
    ),
    FrpcConfig(
        "ssh-proxy-named-node1-sshd",
        """
user = "node1"
metadatas.unique_id = "sshdnode01"
[[proxies]]
name = "node1-sshd"
type = "tcp"
localPort = {local}
remotePort = 0

[[proxies]]
name = "web"
type = "http"
localPort = {local}
subdomain = "node1"
""",
        proxies=2,
        ssh_node=None,
        fix='in the [[proxies]] entry with name = "node1-sshd", write name = "ssh" '
        '(or "ssh-sshdnode01")',
    ),
    FrpcConfig(
        "ssh-role-at-frpc-level",
        """
user = "edge-toprole"
metadatas.unique_id = "toprole01"
metadatas.role = "ssh"
[[proxies]]
name = "shell"
type = "tcp"
localPort = {local}
remotePort = 0
""",
        proxies=1,
        ssh_node=None,
        fix='move metadatas.role = "ssh" from the top (there it is the frpc\'s own and names '
        'no proxy) into the [[proxies]] entry with name = "shell"',
    ),
)


def frps_extra(http_port: int, https_port: int, tcpmux_port: int) -> str:
    """frps settings every proxy type above needs."""
    return f"""
vhostHTTPPort = {http_port}
vhostHTTPSPort = {https_port}
tcpmuxHTTPConnectPort = {tcpmux_port}
subDomainHost = "{SUBDOMAIN_HOST}"
"""


def frpc_toml(server_port: int, token: str, body: str) -> str:
    return f"""
serverAddr = "127.0.0.1"
serverPort = {server_port}
auth.token = "{token}"
loginFailExit = false
{body}"""


def load() -> list[dict[str, Any]]:
    """Every captured call: `frpc` (config name), `op`, `body` (the bytes frps sent)."""
    with CORPUS.open() as lines:
        return [json.loads(line) for line in lines]
