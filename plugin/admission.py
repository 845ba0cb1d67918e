"""Which frpc frps may let in: optional checks on Login and on the SSH proxy's NewProxy.

Each check is off unless set: `FRPA_REQUIRE_REGISTERED` admits only nodes that have an
NM already; `FRPA_NODE_TOKENS` makes every Login carry its own node's token
(`metadatas.token`, issued by `POST /api/v1/nodes/{nm_name}/frpc-token` and stored only
as a SHA-256 digest), so one leaked frps token does not let anyone pose as any node;
`FRPA_ALLOWED_PORTS` bounds the SSH proxy's remote port, which no other online node of
the same frps may hold. A refusal is deliberate, whatever FRPA_PLUGIN_FAILURE_MODE says.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from nodes.model import UniqueId, token_digest
from nodes.registry import NodeRegistry

TOKEN_META = "token"  # noqa: S105  (a metadatas key)


class AdmissionError(Exception):
    """Why frpc is refused; frpc logs the text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    require_registered: bool = False
    node_tokens: bool = False
    ports: range | None = None

    def check_unidentified(self, why: str) -> None:
        """A frpc that names no node is let in unless only registered nodes may be."""
        if self.require_registered or self.node_tokens:
            raise AdmissionError(f"only registered nodes may log in, this frpc names none: {why}")

    def check_login(self, registry: NodeRegistry, uid: UniqueId, metas: Mapping[str, str]) -> None:
        node = registry.get(uid)
        if self.require_registered and node is None:
            raise AdmissionError(
                f"node {uid} is not registered: an administrator must create its "
                "NodeMaintenance first"
            )
        if self.node_tokens:
            if node is None or not node.frpc_token_hash:
                raise AdmissionError(f"node {uid} has no frpc token issued")
            given = token_digest(metas.get(TOKEN_META, ""))
            if not hmac.compare_digest(given, node.frpc_token_hash):
                raise AdmissionError(f"node {uid}: metadatas.token is not this node's token")

    def check_ssh_port(
        self, registry: NodeRegistry, uid: UniqueId, port: int | None, frps_address: str
    ) -> None:
        if self.ports is None or port is None:  # a random port is frps's to choose
            return
        if port not in self.ports:
            raise AdmissionError(
                f"remote port {port} is outside the allowed {self.ports.start}-"
                f"{self.ports.stop - 1}"
            )
        for holder in registry.port_holders(frps_address, port):
            if holder != uid:
                raise AdmissionError(f"remote port {port} is held by node {holder}")
