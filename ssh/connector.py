"""Dial a node's sshd through frps, as the configured user, with its host key verified.

A node is dialled at `frpServerIpAddress:proxyPort` of its NM, only while it is online;
a node behind an frps that is unreachable is refused, or its failed dial blamed, for that.
Host keys are checked against `FRPA_SSH_KNOWN_HOSTS` when given, with entries naming
the node by its NM name (frps hands ports out again, so `[host]:port` would not say which
node a key belongs to). Without that file the first key seen is pinned in the NM's
`status.sshHostKey`, and a different key is refused until the pin is cleared.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import asyncssh
from asyncssh.known_hosts import KnownHostsArg

from nodes.clock import Clock, cause
from nodes.errors import AdapterError, NodeNotFoundError
from nodes.liveness import FrpsLiveness
from nodes.model import (
    ONLINE,
    InvalidUniqueIdError,
    NodeChange,
    NodeState,
    UniqueId,
    nm_name,
    unique_id_of,
)
from nodes.registry import NodeRegistry
from ssh.coalescing import DIALER
from ssh.pool import ConnectionPool, Key

logger = logging.getLogger(__name__)

# AES-GCM runs in OpenSSL with AES-NI; asyncssh's default first choice, chacha20-poly1305,
# moves a large `cat` at about half the rate.
_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
# A node that vanishes without a FIN (frps still holds the port) is noticed in 90 s.
_KEEPALIVE_SECONDS = 30
_KEEPALIVE_COUNT = 3
# What the node may send before we ask for more, and in what packets: larger than
# asyncssh's defaults (2 MiB, 32 KiB), so a download or a forward through frps costs
# fewer packets, each of which Python handles one by one. OpenSSH sends up to 256 KiB.
_WINDOW = 8 << 20
_PACKET = 128 << 10


class SshError(AdapterError):
    """The node cannot be reached over SSH, or its sshd failed what was asked."""

    kind = "ssh failed"
    stuck = False  # whether the connection may be stuck: then no new channel goes on it


class NodeTimeoutError(SshError):
    kind = "node timed out"
    stuck = True


class NodeOfflineError(SshError):
    kind = "node offline"


class FrpsUnreachableError(SshError):
    kind = "frps unreachable"


class HostKeyMismatchError(SshError):
    kind = "host key not trusted"


class NotConfiguredError(SshError):
    kind = "ssh not configured"


@dataclass(frozen=True, slots=True)
class SshTarget:
    name: str
    unique_id: UniqueId
    host: str
    port: int
    pinned_key: str


ClientKey = asyncssh.SSHKey


def read_client_key(path: str) -> ClientKey:
    """The private key in `path` (read at start-up); ValueError says why it cannot be used."""
    try:
        return asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as e:
        raise ValueError(f"cannot use {path!r} as an SSH private key: {e}") from e


class SshConnector:
    def __init__(
        self,
        registry: NodeRegistry,
        *,
        user: str,
        client_keys: Sequence[ClientKey],
        password: str,
        known_hosts: str | None,
        connect_timeout: float,
        frps: Mapping[str, FrpsLiveness],
        idle_timeout: float = 0.0,
        most_idle: int = 1,
        clock: Clock | None = None,
    ) -> None:
        self._registry = registry
        self.clock = clock or Clock()
        self.pool = ConnectionPool(
            registry, idle_timeout=idle_timeout, most=most_idle, clock=self.clock
        )
        self._frps = frps  # by address
        self._user = user
        self._client_keys = list(client_keys)
        self.shells_active = 0
        self.exec_results: Counter[str] = Counter()
        self._password = password
        self._known_hosts = known_hosts
        self.connect_timeout = connect_timeout

    def _known(self, name: str) -> NodeState:
        try:
            uid = unique_id_of(name)
        except InvalidUniqueIdError as e:
            raise NodeNotFoundError(f"nodemaintenance {name} not found: {e}") from e
        state = self._registry.get(uid)
        if state is None:
            raise NodeNotFoundError(f"nodemaintenance {name} not found")
        return state

    def online(self) -> list[str]:
        """The NM names of every online node."""
        return [nm_name(s.unique_id) for s in self._registry.states() if s.status == ONLINE]

    def target(self, name: str) -> SshTarget:
        """Where to dial the node named `name`; refuses unknown and offline nodes, no dial."""
        state = self._known(name)
        uid = state.unique_id
        frps = self._frps.get(state.frps_address or "")
        if frps is not None and frps.down:
            raise FrpsUnreachableError(frps.why())
        if state.status != ONLINE:
            raise NodeOfflineError(f"frp client {uid} is offline now")
        if not state.frps_address or state.remote_port is None:
            raise NodeOfflineError(f"frp client {uid} has no SSH proxy port yet")
        return SshTarget(name, uid, state.frps_address, state.remote_port, state.ssh_host_key)

    @asynccontextmanager
    async def connect(
        self, target: SshTarget, *, alone: bool = False
    ) -> AsyncIterator[asyncssh.SSHClientConnection]:
        """A connection to the node, a warm one when there is one (see `ssh.pool`);
        `alone`: no other channel on it while this one is used."""
        key = (target.name, target.host, target.port, target.pinned_key)
        warm = await self.pool.lease(key, alone=alone, dial=partial(self._dial, target))
        failed = False
        try:
            yield warm.conn
        except asyncssh.Error as e:
            # A channel refused (sshd's MaxSessions, say): the others on it go on.
            failed = isinstance(e, asyncssh.ChannelOpenError)
            raise SshError(f"{target.name}: {e.reason}") from e
        except SshError as e:
            failed = e.stuck
            raise
        finally:
            self.pool.release(warm, failed=failed)

    async def _dial(self, target: SshTarget) -> tuple[asyncssh.SSHClientConnection, Key]:
        """A new connection, logged in, its host key verified or pinned; keyed by the host
        key the node is now trusted by."""
        if not self._client_keys and not self._password:
            raise NotConfiguredError(
                "no SSH credentials: set FRPA_SSH_KEY_FILE or FRPA_SSH_PASSWORD"
            )
        known_hosts: KnownHostsArg
        if self._known_hosts:
            known_hosts = self._known_hosts
        elif target.pinned_key:
            known_hosts = asyncssh.import_known_hosts(f"{target.name} {target.pinned_key}\n")
        else:
            known_hosts = None
        try:
            conn = await asyncssh.connect(
                target.host,
                target.port,
                username=self._user,
                client_keys=self._client_keys or None,
                password=self._password or None,
                known_hosts=known_hosts,
                host_key_alias=target.name,
                agent_path=None,
                config=None,
                encryption_algs=_CIPHERS,
                connect_timeout=self.connect_timeout,
                login_timeout=self.connect_timeout,
                keepalive_interval=_KEEPALIVE_SECONDS,
                keepalive_count_max=_KEEPALIVE_COUNT,
                window=_WINDOW,
                max_pktsize=_PACKET,
                tunnel=DIALER,
            )
        except asyncssh.HostKeyNotVerifiable as e:
            raise HostKeyMismatchError(self._mismatch(target, e)) from e
        except asyncssh.PermissionDenied as e:
            raise SshError(f"{target.name}: sshd refused user {self._user!r}: {e}") from e
        # UnicodeError: a host name IDNA cannot encode (a label over 63 characters).
        except (OSError, TimeoutError, UnicodeError, asyncssh.Error) as e:
            frps = self._frps.get(target.host)
            if frps is not None and frps.unreachable:
                raise FrpsUnreachableError(frps.why()) from e
            raise SshError(
                f"{target.name}: cannot reach sshd at {target.host}:{target.port}: "
                f"{cause(e, self.connect_timeout)}"
            ) from e
        pinned = target.pinned_key
        if known_hosts is None:
            try:
                pinned = self._pin(target, conn)
            except BaseException:
                conn.close()
                raise
        return conn, (target.name, target.host, target.port, pinned)

    def _mismatch(self, target: SshTarget, error: asyncssh.HostKeyNotVerifiable | None) -> str:
        if self._known_hosts:
            return (
                f"{target.name}: host key not trusted by {self._known_hosts} "
                f"(entries name nodes by NM name): {error}"
            )
        return (
            f"{target.name}: sshd presented a host key other than the one pinned in "
            "status.sshHostKey; if the node was reinstalled, check the new key and clear "
            f"the pin: DELETE /api/v1/nodes/{target.name}/host-key"
        )

    def _pin(self, target: SshTarget, conn: asyncssh.SSHClientConnection) -> str:
        """The key the node showed, pinned unless one is; "" when none can be."""
        key = conn.get_server_host_key()
        state = self._registry.get(target.unique_id)
        if key is None or state is None:
            return ""
        seen = key.export_public_key("openssh").decode().strip()
        if state.ssh_host_key:
            # Another session pinned a key while this one was connecting.
            if state.ssh_host_key != seen:
                raise HostKeyMismatchError(self._mismatch(target, None))
            return seen
        logger.info("pinned the SSH host key of %s: %s", target.name, key.get_fingerprint())
        self._set_pin(target.unique_id, seen)
        return seen

    def unpin(self, name: str) -> None:
        """Forget the node's pinned host key: the next connection pins what it is shown."""
        uid = self._known(name).unique_id
        logger.warning("cleared the pinned SSH host key of %s", name)
        self._set_pin(uid, "")

    def _set_pin(self, uid: UniqueId, key: str) -> None:
        if self._registry.get(uid) is not None:  # a pin never creates a node
            self._registry.amend(
                uid, NodeChange(reason="HostKeyPinned", at=self.clock.now(), ssh_host_key=key)
            )
