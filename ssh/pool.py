"""Warm SSH connections: one login to a node serves the channels after it, as OpenSSH's
ControlMaster does, so an exec, a file or a shell pays a channel (a few ms through frps)
instead of a handshake (~200 ms).

A connection is opened on first use, kept FRPA_SSH_IDLE_TIMEOUT once unused, and at most
FRPA_SSH_MAX_CONNECTIONS idle ones are kept (the least recently used is closed first). A
node gone offline, moved to another port, or whose trusted host key changed has its
connections closed at once; one that died is replaced at its next use (its channels fail,
no other's). Every connection logs in as the adapter's one SSH identity.

Shells on a PTY, files and port forwards share connections, up to CHANNELS_MOST at once
on one (sshd's MaxSessions). A connection that refuses a channel or leaves one unanswered
takes no new ones; those on it go on, and it is closed after the last. An exec, or a shell without a
PTY, holds its connection alone while it runs: its timeout kill finds its processes by
the connection's SSH_CONNECTION (SSH gives a channel's processes no mark of their own),
so no one else's may carry it then; what an earlier user left running is told apart by
its start time (to within half a second of the exec's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import asyncssh

from nodes.clock import Clock
from nodes.model import ONLINE, NodeState, unique_id_of
from nodes.registry import NodeRegistry

logger = logging.getLogger(__name__)

# What a connection is for: a node, where frps reaches it, the host key it must show.
Key = tuple[str, str, int, str]
# Channels at once on one connection: OpenSSH's sshd refuses sessions past MaxSessions,
# 10 unless its config says otherwise; the next ones get a connection of their own.
CHANNELS_MOST = 8


@dataclass(eq=False, slots=True)
class Warm:
    key: Key
    conn: asyncssh.SSHClientConnection
    users: int = 0  # channels leased on it now
    alone: bool = False  # leased by one that must be alone on it
    idle_since: float = 0.0


class ConnectionPool:
    def __init__(
        self, registry: NodeRegistry, *, idle_timeout: float, most: int, clock: Clock
    ) -> None:
        self._registry = registry
        self._idle_timeout = idle_timeout
        self._most = most
        self._clock = clock
        self._by_node: dict[str, list[Warm]] = {}
        self._idle = asyncio.Event()  # set when a connection may be idle
        self.opened = 0
        self.reused = 0

    def _all(self) -> list[Warm]:
        return [w for found in self._by_node.values() for w in found]

    def counts(self) -> tuple[int, int]:
        """(busy, idle) connections now."""
        warm = self._all()
        busy = sum(1 for w in warm if w.users)
        return busy, len(warm) - busy

    async def lease(
        self,
        key: Key,
        *,
        alone: bool,
        dial: Callable[[], Awaitable[tuple[asyncssh.SSHClientConnection, Key]]],
    ) -> Warm:
        """A connection for `key`'s node: a warm one that can take the channel, else a new
        one `dial` opens (and keys by the host key it pinned, if it pinned one). `release`
        it once its channel is done."""
        name = key[0]
        for warm in list(self._by_node.get(name, ())):
            if warm.key != key or warm.conn.is_closed():  # moved, re-keyed, or died
                self._retire(warm)
        for warm in self._by_node.get(name, ()):
            if warm.users == 0 or not (alone or warm.alone or warm.users >= CHANNELS_MOST):
                warm.users += 1
                warm.alone = alone
                self.reused += 1
                return warm
        conn, key = await dial()
        self.opened += 1
        warm = Warm(key, conn, users=1, alone=alone)
        if name not in self._by_node:
            self._registry.follow(unique_id_of(name), partial(self._changed, name))
        self._by_node.setdefault(name, []).append(warm)
        return warm

    def release(self, warm: Warm, *, failed: bool = False) -> None:
        """The channel leased with `warm` is done; `failed`: the connection failed it
        (refused to open it, or did not answer in time), so no channel goes on it again,
        and it is closed once the others on it are done."""
        warm.users -= 1
        if failed:
            self._retire(warm)
        if warm.users:
            return
        warm.alone = False
        warm.idle_since = self._clock.monotonic()
        if (
            not self._idle_timeout
            or warm.conn.is_closed()
            or warm not in self._by_node.get(warm.key[0], ())
        ):
            self._drop(warm)
            return
        self._idle.set()
        idle = sorted(
            (w for w in self._all() if not w.users),
            key=lambda w: w.idle_since,
        )
        for oldest in idle[: max(len(idle) - self._most, 0)]:
            self._drop(oldest)

    def _retire(self, warm: Warm) -> None:
        """Out of the pool: no new channel on it, and closed once the last one is done."""
        if warm.users:
            self._forget(warm)
        else:
            self._drop(warm)

    def _drop(self, warm: Warm) -> None:
        """Out of the pool and closed: channels on it fail, as on a connection that broke."""
        self._forget(warm)
        warm.conn.close()

    def _forget(self, warm: Warm) -> None:
        found = self._by_node.get(warm.key[0], [])
        if warm in found:
            found.remove(warm)
            if not found:
                del self._by_node[warm.key[0]]
                self._registry.unfollow(unique_id_of(warm.key[0]))

    def close(self) -> None:
        for warm in self._all():
            self._drop(warm)

    async def run(self) -> None:
        """Close idle connections when their time is up; all of them when stopped."""
        try:
            await self._expire()
        finally:
            self.close()

    async def _expire(self) -> None:
        clock = self._clock
        while True:
            idle = [w for w in self._all() if not w.users]
            if not idle:
                self._idle.clear()
                await clock.wait(self._idle)
                continue
            oldest = min(idle, key=lambda w: w.idle_since)
            left = oldest.idle_since + self._idle_timeout - clock.monotonic()
            if left > 0:
                await clock.sleep(left)
            elif not oldest.users:
                logger.debug("closing the idle SSH connection to %s", oldest.key[0])
                self._drop(oldest)

    def _changed(self, name: str, state: NodeState | None) -> None:
        """A node with connections here changed: they go at once if it went offline (or
        away), moved, or is trusted by another host key."""
        for warm in list(self._by_node.get(name, ())):
            if (
                state is None
                or state.status != ONLINE
                or warm.key[1:]
                != (
                    state.frps_address,
                    state.remote_port,
                    state.ssh_host_key,
                )
            ):
                self._drop(warm)
