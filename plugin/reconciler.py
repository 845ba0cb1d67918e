"""Reconciliation with frps's own view: what pushed events missed, frps's dashboard tells.

frps never retries a plugin call, so an event lost while the adapter was down or
restarting is gone. At start-up and then every interval, the SSH proxy each node's
state names is looked up in frps's proxy list and the node corrected through the same
transition as events. A node changed by an event since the list was read is left
alone (the event is newer), and a failing dashboard flips nothing: it is logged,
counted and shown on /readyz.

The original's patched frps (ttlv/frp v0.33) records its nodes through the original's
routes, which name no proxy, and lists each proxy with the `unique_id` of its frpc: its
answer is read by node, as the original's start-up check read it
(`frp_adapter_init/do_some_check.go` in ttlv/frp_adapter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nodes.clock import Clock
from nodes.model import (
    OFFLINE,
    ONLINE,
    InvalidUniqueIdError,
    NodeChange,
    NodeState,
    UniqueId,
    parse_unique_id,
)
from nodes.registry import NAMED_BY_USER, NodeRegistry
from nodes.tasks import Tasks
from plugin.dashboard import DashboardError, FrpsDashboard, ProxyInfo

logger = logging.getLogger(__name__)

RECONCILED = "Reconciled"
# After a node logs in again with its old run_id (frps restarted), the nodes frps served
# get this long to come back before frps's view decides who is offline.
RELOGIN_SETTLE_SECONDS = 20.0
# Nodes compared between two yields to the plugin path: about a millisecond's work.
_CHUNK = 1000


class FrpsReconciler:
    def __init__(
        self,
        registry: NodeRegistry,
        dashboard: FrpsDashboard,
        *,
        interval: float,
        frps_address: str,
        only_frps: bool,
        leading: Callable[[], bool],
        clock: Clock,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._leading = leading
        self._dashboard = dashboard
        self._interval = interval
        self._frps_address = frps_address
        # Judged by node (an answer of the patched frps, or an empty one), every node is
        # the only frps's, as in the original; with several, the nodes recorded under its
        # address.
        self._only_frps = only_frps
        self._soon = Tasks("reconciliation soon")
        self._loaded = asyncio.Event()
        # `<user>.ssh` proxies no node claims, and since when (monotonic).
        self._unclaimed: dict[str, float] = {}
        self.runs = 0
        self.corrections = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_seconds = 0.0  # of the last pass, from asking frps to the last node

    async def run(self, loaded: asyncio.Future[None]) -> None:
        """Once the stored nodes are in memory, reconcile every interval (when leading).
        The first pass is a won lead's (`reconcile_soon`): every leader wins at start."""
        await loaded
        self._loaded.set()
        while True:
            await self._clock.sleep(self._interval)
            if self._leading():
                await self.reconcile()

    def relogin_seen(self) -> None:
        """A node logged in again with its old run_id: frps restarted, or the network blipped,
        and frps sends no CloseProxy for what it lost."""
        self.reconcile_soon(RELOGIN_SETTLE_SECONDS)

    def reconcile_soon(self, delay: float) -> None:
        """One extra reconciliation `delay` seconds from now, however often asked meanwhile."""
        if "soon" not in self._soon:
            self._soon.spawn("soon", self._reconcile_after(delay))

    async def close(self) -> None:
        await self._soon.close()

    async def _reconcile_after(self, delay: float) -> int:
        await self._loaded.wait()  # judged against fewer nodes, a stored one looks lost
        await self._clock.sleep(delay)
        return await self.reconcile() if self._leading() else 0

    async def reconcile(self) -> int:
        """Correct every node frps disagrees with; the number corrected. The comparison
        yields to the plugin path every `_CHUNK` nodes."""
        started = self._clock.perf_counter()
        asked_at = self._registry.sequence
        try:
            proxies = await self._dashboard.tcp_proxies()
        except DashboardError as e:
            self.failures += 1
            self.last_error = str(e)
            logger.warning("reconciliation skipped, frps's dashboard failed: %s", e)
            return 0
        self.runs += 1
        self.last_error = None
        listed = await _by_node(proxies)
        corrected = await self._correct(proxies, listed, asked_at)
        corrected += await (self._discover(proxies) if listed is None else self._create(listed))
        self.corrections += corrected
        self.last_seconds = self._clock.perf_counter() - started
        if corrected:
            logger.info("reconciliation corrected %d node(s)", corrected)
        return corrected

    async def _correct(
        self, proxies: dict[str, ProxyInfo], listed: _Listed | None, asked_at: int
    ) -> int:
        """Flip the known nodes frps shows otherwise."""
        if listed is None and not proxies:
            listed = _NOTHING  # whichever frps answered, it has nothing of any node
        corrected = 0
        states = self._registry.states()
        for i, state in enumerate(states):
            if i % _CHUNK == _CHUNK - 1:
                await asyncio.sleep(0)
            # A node changed since frps was asked was changed by a newer event: it wins (and
            # `state`, read before the yields, may be stale only for such a node).
            uid = state.unique_id
            holder = self._registry.holder(self._frps_address, state.proxy_name)
            if self._registry.changed_since(uid, asked_at) or (
                holder is not None and holder.unique_id != uid  # another node has it now
            ):
                continue
            if listed is not None:
                if not self._judges(state, listed.addresses):
                    continue
                proxy = listed.proxies.get(uid)
                address = proxy.frps_address if proxy and proxy.frps_address else state.frps_address
            else:
                # A node recorded under another frps's address is that frps's to judge; one
                # with no proxy name (recorded by the original's routes) cannot be found
                # in frps 0.65's list.
                if not state.proxy_name or state.frps_address != self._frps_address:
                    continue
                proxy, address = proxies.get(state.proxy_name), self._frps_address
            change = self._correction(state, proxy, address)
            if change is not None:
                self._registry.transition(uid, change)
                corrected += 1
        return corrected

    def _judges(self, state: NodeState, addresses: frozenset[str]) -> bool:
        """Whether the node is this frps's, judged by node: see `_only_frps`; the patched
        frps also owns the nodes recorded under the address it lists as its own."""
        return (
            self._only_frps
            or state.frps_address == self._frps_address
            or state.frps_address in addresses
        )

    def _correction(
        self, state: NodeState, proxy: ProxyInfo | None, address: str | None
    ) -> NodeChange | None:
        """What frps's `proxy` of the node changes of it, if anything."""
        at = self._clock.now()
        if proxy is not None and proxy.online:
            port = proxy.remote_port or state.remote_port
            if (
                state.status == ONLINE
                and port == state.remote_port
                and address == state.frps_address
            ):
                return None
            return NodeChange(
                reason=RECONCILED, at=at, status=ONLINE, remote_port=port, frps_address=address
            )
        if state.status == ONLINE:
            return NodeChange(reason=RECONCILED, at=at, status=OFFLINE)
        return None

    async def _create(self, listed: _Listed) -> int:
        """Nodes online in the patched frps that no node records, created as the original's
        start-up check did. It also created those listed offline; not here: this runs every
        interval, and an NM deleted by hand would come back each time."""
        created = 0
        for i, (uid, proxy) in enumerate(listed.proxies.items()):
            if i % _CHUNK == _CHUNK - 1:
                await asyncio.sleep(0)
            if not proxy.online or self._registry.get(uid) is not None:
                continue
            self._registry.transition(
                uid,
                NodeChange(
                    reason=RECONCILED,
                    at=self._clock.now(),
                    status=ONLINE,
                    remote_port=proxy.remote_port,
                    frps_address=proxy.frps_address or self._frps_address,
                ),
            )
            created += 1
        return created

    async def _discover(self, proxies: dict[str, ProxyInfo]) -> int:
        """Online SSH proxies no node records: a NewProxy answered but never (or only half)
        stored, by a replica killed or an adapter restarted on a store that lost it.

        `ssh-<unique_id>` names its node. `<user>.ssh` names only the frps user: the node
        is taken to be the user's once the proxy stayed unclaimed for a whole interval (the
        node's own Pings, which carry its unique-id meta, recover it first), and gives the
        proxy up to a node that claims it later.
        """
        found = 0
        now = self._clock.monotonic()
        unclaimed = {}
        for i, (name, proxy) in enumerate(proxies.items()):
            if i % _CHUNK == _CHUNK - 1:
                await asyncio.sleep(0)
            if not proxy.online or self._registry.holder(self._frps_address, name) is not None:
                continue
            uid, reason = _unique_id_in(name), RECONCILED
            if uid is None:
                uid, reason = _user_of(name), NAMED_BY_USER
                if uid is None:
                    continue
                unclaimed[name] = since = self._unclaimed.get(name, now)
                if now - since < self._interval:
                    continue
            state = self._registry.get(uid)
            if state is not None and state.proxy_name:
                continue
            self._registry.transition(
                uid,
                NodeChange(
                    reason=reason,
                    at=self._clock.now(),
                    status=ONLINE,
                    remote_port=proxy.remote_port,
                    frps_address=self._frps_address,
                    proxy_name=name,
                ),
            )
            found += 1
        self._unclaimed = unclaimed
        return found


@dataclass(frozen=True, slots=True)
class _Listed:
    """An answer read by node: each node's proxy, and the addresses frps gave as its own."""

    proxies: dict[UniqueId, ProxyInfo]
    addresses: frozenset[str]


_NOTHING = _Listed({}, frozenset())


async def _by_node(proxies: dict[str, ProxyInfo]) -> _Listed | None:
    """The patched frps's answer by node; None for frps 0.65's (no proxy carries a
    `unique_id`), or an empty answer."""
    by_node: dict[UniqueId, ProxyInfo] = {}
    addresses = set()
    patched = False
    for i, (name, proxy) in enumerate(proxies.items()):
        if i % _CHUNK == _CHUNK - 1:
            await asyncio.sleep(0)
        if proxy.unique_id is None:
            continue
        patched = True
        if proxy.frps_address:
            addresses.add(proxy.frps_address)
        try:
            uid = parse_unique_id(proxy.unique_id)  # "" from an frpc that is not patched
        except InvalidUniqueIdError:
            continue
        # Every proxy of an frpc carries its unique_id; the node's is its SSH proxy.
        if uid not in by_node or _unique_id_in(name) == uid:
            by_node[uid] = proxy
    return _Listed(by_node, frozenset(addresses)) if patched else None


def _user_of(proxy_name: str) -> UniqueId | None:
    """The frps user in `<user>.ssh`, if it can name a node."""
    user, dot, rest = proxy_name.rpartition(".")
    if not dot or rest != "ssh":
        return None
    try:
        return parse_unique_id(user)
    except InvalidUniqueIdError:
        return None


def _unique_id_in(proxy_name: str) -> UniqueId | None:
    """The id in `<user>.ssh-<unique_id>` (or `ssh-<unique_id>`), if it is one."""
    _, dot, rest = proxy_name.rpartition(".ssh-")
    candidate = rest if dot else proxy_name.removeprefix("ssh-")
    if not dot and not proxy_name.startswith("ssh-"):
        return None
    try:
        return parse_unique_id(candidate)
    except InvalidUniqueIdError:
        return None
