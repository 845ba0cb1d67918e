"""Every node's current state, in memory, and the one function that changes it.

Whatever decides a node's status (frps events, reconciliation with frps, heartbeat
expiry, the REST API) calls `NodeRegistry.transition`; nothing else writes node status.
It answers from memory and hands the result to the writer, so callers on frps's login path
never wait on the store.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import cast

from nodes.clock import Clock
from nodes.model import (
    OFFLINE,
    ONLINE,
    InvalidUniqueIdError,
    JsonObject,
    NodeChange,
    NodeState,
    NodeStatus,
    UniqueId,
    apply_change,
    state_from_nm,
    stored_labels,
    unique_id_of,
    untrack,
)
from nodes.store import NodeStore, StoreError
from nodes.watch import NodeEvent, NodeWatch
from nodes.writer import NodeWriter
from schemas.settings import Backoff

logger = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = "HeartbeatTimeout"
# A node reconciliation found by an SSH proxy named `<user>.ssh` and named after that frps
# user: a unique-id meta, if the frpc has one, cannot be known from frps's dashboard.
NAMED_BY_USER = "ReconciledByUser"
# Nodes a page passes at most, chosen or not: a selector few nodes match holds the loop
# ~3 ms a page (2,000 nodes judged by a label and a field selector), however large the fleet.
PAGE_SCAN = 2000
# Nodes judged for silence between two yields to the plugin path.
_EXPIRY_CHUNK = 500
# Status changes kept per node, for its page: (at, status, reason), the latest last.
HISTORY = 10  # a node that only flaps holds ~760 bytes of them (its times most), one change ~72

Change = tuple[datetime, NodeStatus, str]


class NodeRegistry:
    def __init__(
        self,
        writer: NodeWriter,
        *,
        heartbeat_persist_interval: float,
        clock: Clock | None = None,
        label_keys: tuple[str, ...] = (),
    ) -> None:
        self._writer = writer
        self._clock = clock or Clock()
        self._heartbeat_persist_interval = timedelta(seconds=heartbeat_persist_interval)
        self._states: dict[UniqueId, NodeState] = {}
        self._heartbeats: dict[UniqueId, datetime] = {}
        self._pinging_runs: dict[UniqueId, str] = {}  # the run_id of each node's last Ping
        # Silence is judged from a heap of (a Ping time of the node, node), one entry per
        # node that may be judged: a sweep touches the nodes due, not the fleet.
        self._due: list[tuple[datetime, UniqueId]] = []
        self._scheduled: set[UniqueId] = set()
        # The sequence number of each node's last change (`sequence` is the latest).
        self.sequence = 0
        self._changed: dict[UniqueId, int] = {}
        # Every node's id in name order, for pages; new ids are appended unsorted and
        # sorted in by the next page read, so the plugin path never pays for the order.
        self._order: list[UniqueId] = []
        self._order_sorted = True
        # Which node records each SSH proxy, by frps address, then proxy name (unique in
        # frps): a map per frps, as for ports, not a tuple key per node (~56 bytes more).
        self._by_proxy: dict[str | None, dict[str, UniqueId]] = {}
        # Which online node holds each remote port, per frps address: admission's port check
        # without a walk of the fleet. One map per frps, not a tuple key per node: a node
        # costs its slot (~52 bytes), and the maps hold only ints, strings and untracked
        # tuples, so the collector never tracks them. A port frps gave again before its
        # first node was seen offline is held by a tuple of both nodes.
        self._by_port: dict[str | None, dict[int, UniqueId | tuple[UniqueId, ...]]] = {}
        # How many nodes have each (status, frps address): metrics without a walk of the fleet.
        self._counts: Counter[tuple[NodeStatus, str | None]] = Counter()
        # And how many have each (label key, its value, status), for FRPA_METRIC_LABELS' keys.
        self._label_keys = label_keys
        self._label_counts: Counter[tuple[str, str, str]] = Counter()
        self.heartbeat_expiries = 0
        # Status changes made here, by (status to, reason): a few reasons, named in code.
        self.transitions: Counter[tuple[NodeStatus, str]] = Counter()
        self._watches: set[NodeWatch] = set()
        # Each node's last HISTORY status changes, made here or seen in the store, as one
        # flat tuple (at, status, reason, at, ...) the collector does not track: a tuple a
        # change cost ~56 bytes more. A node's first change costs ~64 bytes.
        self._history: dict[UniqueId, tuple[datetime | str, ...]] = {}
        # Who follows a node's every change (None: deleted), as it is made: a few nodes'
        # (those with warm SSH connections), at one lookup per change while any is.
        self._followers: dict[UniqueId, Callable[[NodeState | None], None]] = {}

    def get(self, unique_id: UniqueId) -> NodeState | None:
        return self._states.get(unique_id)

    def history(self, unique_id: UniqueId) -> tuple[Change, ...]:
        """The node's last HISTORY status changes this process knows of, oldest first:
        since it started, and the one stored before."""
        flat = self._history.get(unique_id, ())
        return tuple(cast(Change, flat[i : i + 3]) for i in range(0, len(flat), 3))

    def follow(self, unique_id: UniqueId, changed: Callable[[NodeState | None], None]) -> None:
        """Call `changed` with each new state of the node, None once it is deleted; until
        `unfollow`. It runs within the change: it must not await nor change nodes."""
        self._followers[unique_id] = changed

    def unfollow(self, unique_id: UniqueId) -> None:
        self._followers.pop(unique_id, None)

    def states(self) -> list[NodeState]:
        return list(self._states.values())

    def page(
        self,
        after: UniqueId | None,
        limit: int,
        chosen: Callable[[NodeState], bool] | None = None,
    ) -> tuple[list[NodeState], UniqueId | None]:
        """Up to `limit` nodes (`chosen` ones) in name order after `after`, and where the next
        page starts (None: this is the last). Costs the nodes it passes, not the fleet: a
        page passes at most PAGE_SCAN nodes (or `limit` and one), so fewer than `limit`
        chosen ones may come before the next page, as Kubernetes lists do."""
        if not self._order_sorted:
            self._order = [uid for uid in self._order if uid in self._states]
            self._order.sort()  # an already sorted run plus the new ids: about linear
            self._order_sorted = True
        found: list[NodeState] = []
        start = bisect.bisect_right(self._order, after) if after else 0
        most = max(PAGE_SCAN, limit + 1)
        for i in range(start, len(self._order)):
            if i - start == most:
                return found, self._order[i - 1]
            state = self._states.get(self._order[i])
            if state is None or (chosen is not None and not chosen(state)):
                continue
            if len(found) == limit:
                return found, found[-1].unique_id
            found.append(state)
        return found, None

    def counts(self) -> dict[tuple[NodeStatus, str | None], int]:
        """How many nodes have each (status, frps address)."""
        return +self._counts

    def label_counts(self) -> dict[tuple[str, str, str], int]:
        """How many nodes have each (label key, value, status), for the keys counted."""
        return +self._label_counts

    def _count(self, state: NodeState, by: int) -> None:
        self._counts[state.status, state.frps_address] += by
        if self._label_keys:
            labels = dict(state.known_labels)
            for key in self._label_keys:
                if (value := labels.get(key)) is not None:
                    self._label_counts[key, value, state.status] += by

    def holder(self, frps_address: str, proxy_name: str) -> NodeState | None:
        """The node that records SSH proxy `proxy_name` of that frps, if any."""
        names = self._by_proxy.get(frps_address)
        uid = None if names is None else names.get(proxy_name)
        return None if uid is None else self._states.get(uid)

    def port_holders(self, frps_address: str, port: int) -> tuple[UniqueId, ...]:
        """The online nodes that record remote port `port` of that frps."""
        ports = self._by_port.get(frps_address)
        held = None if ports is None else ports.get(port)
        if held is None:
            return ()
        return held if isinstance(held, tuple) else (held,)

    def changed_since(self, unique_id: UniqueId, sequence: int) -> bool:
        """Whether the node changed after `sequence` was the registry's `sequence`."""
        return self._changed.get(unique_id, 0) > sequence

    def transition(self, unique_id: UniqueId, change: NodeChange) -> NodeState:
        current = self._states.get(unique_id)
        heartbeat = self._heartbeats.get(unique_id)
        if heartbeat and (change.last_heartbeat is None or heartbeat > change.last_heartbeat):
            change = change._replace(last_heartbeat=heartbeat)
        new = apply_change(current, unique_id, change)
        if new is current:
            return new
        self._put(new, made_here=True)
        if current is None or new.status != current.status:
            self.transitions[new.status, new.reason] += 1
            before = current.status if current else "unknown"
            logger.info(
                "node %s %s -> %s (%s) run_id=%s",
                unique_id,
                before,
                new.status,
                new.reason,
                new.run_id or "-",
                extra={
                    "node": unique_id,
                    "from": before,
                    "to": new.status,
                    "reason": new.reason,
                    "run_id": new.run_id,
                },
            )
        self._writer.submit(new)
        return new

    def amend(self, unique_id: UniqueId, change: NodeChange) -> NodeState:
        """A change of fields other than the status: a known node keeps its reason, which
        says why its status is what it is; `change.reason` names a node this creates."""
        current = self._states.get(unique_id)
        if current is not None:
            change = change._replace(reason=current.reason)
        return self.transition(unique_id, change)

    def heartbeat(self, unique_id: UniqueId, at: datetime, run_id: str) -> None:
        """Remember a Ping; persist it only every `heartbeat_persist_interval` per node."""
        self._heartbeats[unique_id] = at
        self._pinging_runs[unique_id] = run_id
        self._schedule(unique_id, at)
        state = self._states.get(unique_id)
        if state is not None and state.reason == HEARTBEAT_TIMEOUT:
            self.transition(unique_id, NodeChange(reason="Ping", at=at, status=ONLINE))
            return
        if state is None or state.status != ONLINE:
            return
        last = state.last_heartbeat
        if last is None or at - last >= self._heartbeat_persist_interval:
            self.amend(unique_id, NodeChange(reason="Ping", at=at, last_heartbeat=at))

    async def expire_heartbeats(self, now: datetime, limit: timedelta) -> int:
        """Offline every online node whose Pings stopped `limit` ago; how many.

        Only nodes whose frpc sends Pings (has a heartbeat) are judged so: a Ping this
        replica got from the frpc process now online (same run_id, even if it came before
        the NewProxy), or the last Ping stored after the node came online (replicas store
        a node's Ping every persist interval, whichever replica got it). A node is looked
        at once its entry is `limit` old, and scheduled again at its latest Ping.
        """
        expired = judged = 0
        while self._due and now - self._due[0][0] > limit:
            _, uid = heapq.heappop(self._due)
            latest = self._latest_ping(uid)
            if latest is not None and now - latest <= limit:
                heapq.heappush(self._due, (latest, uid))
            else:
                self._scheduled.discard(uid)
                if latest is not None:
                    silent = NodeChange(reason=HEARTBEAT_TIMEOUT, at=now, status=OFFLINE)
                    self.transition(uid, silent)
                    expired += 1
            judged += 1
            if judged % _EXPIRY_CHUNK == 0:
                await asyncio.sleep(0)
        self.heartbeat_expiries += expired
        return expired

    def _latest_ping(self, uid: UniqueId) -> datetime | None:
        """The Ping an online node is judged by; None if it is not judged."""
        state = self._states.get(uid)
        if state is None or state.status != ONLINE:
            return None
        pings = []
        if uid in self._heartbeats and self._pinging_runs[uid] == state.run_id:
            pings.append(self._heartbeats[uid])
        if state.last_heartbeat is not None and state.last_heartbeat > state.last_transition:
            pings.append(state.last_heartbeat)
        return max(pings, default=None)

    def _schedule(self, uid: UniqueId, at: datetime) -> None:
        if uid not in self._scheduled:
            self._scheduled.add(uid)
            heapq.heappush(self._due, (at, uid))

    def observe(self, obj: JsonObject) -> None:
        """Adopt a node's state as another replica stored it, without writing it again.

        Our own state wins while we have a write of the node pending, or when it is newer
        (the store keeps times to the second); our own writes echo back unchanged.
        """
        try:
            uid = unique_id_of(str(obj.get("metadata", {}).get("name", "")))
        except InvalidUniqueIdError:
            return
        if self._writer.pending(uid):  # first: a storm's writes echo while they are pending
            return
        stored = state_from_nm(obj)
        current = self._states.get(uid)
        if current is not None:
            if _to_the_second(current) == stored or stored.updated_at < _second(current.updated_at):
                return
            heartbeat = max(
                (t for t in (current.last_heartbeat, stored.last_heartbeat) if t is not None),
                default=None,
            )
            stored = stored._replace(last_heartbeat=heartbeat)
        self._put(stored, made_here=False)

    def observe_deletion(self, name: str) -> None:
        """Drop a node whose NM someone deleted from the store, unless we are writing it."""
        try:
            unique_id = unique_id_of(name)
        except InvalidUniqueIdError:
            return
        if self._writer.pending(unique_id) or (gone := self._states.pop(unique_id, None)) is None:
            return
        self._unindex(gone)
        if (held := _port_held(gone)) is not None:
            self._release_port(unique_id, *held)
        self._count(gone, -1)
        if self._watches:
            self._tell(NodeEvent("DELETED", gone, made_here=False))
        self._heartbeats.pop(unique_id, None)
        self._pinging_runs.pop(unique_id, None)
        self._history.pop(unique_id, None)
        self._changed[unique_id] = self.sequence = self.sequence + 1
        if (changed := self._followers.get(unique_id)) is not None:
            changed(None)
        self._order_sorted = False

    def watch(self) -> tuple[list[NodeState], NodeWatch]:
        """Every node now, and a watch of every change after: `unwatch` it when done."""
        watch = NodeWatch()
        self._watches.add(watch)
        return list(self._states.values()), watch

    @property
    def watchers(self) -> int:
        return len(self._watches)

    def unwatch(self, watch: NodeWatch) -> None:
        self._watches.discard(watch)

    def end_watches(self) -> None:
        """Shutting down: every watch ends once its reader has what is queued."""
        for watch in self._watches:
            watch.end(overrun=False)

    def _tell(self, event: NodeEvent) -> None:
        for watch in self._watches:
            watch.put(event)

    def _put(self, state: NodeState, *, made_here: bool) -> None:
        untrack(state)  # one per node, kept: the collector need not walk them
        uid = state.unique_id
        old = self._states.get(uid)
        if self._watches:
            self._tell(NodeEvent("ADDED" if old is None else "MODIFIED", state, made_here))
        if old is None:
            self._order.append(uid)
            self._order_sorted = False
        else:
            self._count(old, -1)
            if old.frps_address != state.frps_address or old.proxy_name != state.proxy_name:
                self._unindex(old)
        self._count(state, 1)
        if state.proxy_name:
            names = self._by_proxy.get(state.frps_address)
            if names is None:
                names = self._by_proxy[state.frps_address] = {}
            names[state.proxy_name] = uid
        held, holds = _port_held(old), _port_held(state)
        if held != holds:
            if held is not None:
                self._release_port(uid, *held)
            if holds is not None:
                self._hold_port(uid, *holds)
        if (
            old is None
            or old.status != state.status
            or old.last_transition != state.last_transition
        ):
            before = self._history.get(uid, ())[3 - 3 * HISTORY :]
            kept = (*before, state.last_transition, state.status, state.reason)
            untrack(kept)  # else it would make the map tracked again until a full collection
            self._history[uid] = kept
        self._states[uid] = state
        self._changed[uid] = self.sequence = self.sequence + 1
        if self._followers and (changed := self._followers.get(uid)) is not None:
            changed(state)
        if state.status == ONLINE and state.last_heartbeat is not None:
            self._schedule(uid, state.last_heartbeat)

    def _unindex(self, state: NodeState) -> None:
        names = self._by_proxy.get(state.frps_address)
        if names is not None and names.get(state.proxy_name) == state.unique_id:
            del names[state.proxy_name]

    def _hold_port(self, uid: UniqueId, frps_address: str | None, port: int) -> None:
        ports = self._by_port.get(frps_address)
        if ports is None:
            ports = self._by_port[frps_address] = {}
        held = ports.get(port)
        if held is None:
            ports[port] = uid
            return
        holders = (*held, uid) if isinstance(held, tuple) else (held, uid)
        untrack(holders)  # a tracked tuple would make its map tracked again
        ports[port] = holders

    def _release_port(self, uid: UniqueId, frps_address: str | None, port: int) -> None:
        ports = self._by_port[frps_address]
        held = ports[port]
        if not isinstance(held, tuple):
            del ports[port]
            return
        rest = tuple(holder for holder in held if holder != uid)
        untrack(rest)
        ports[port] = rest[0] if len(rest) == 1 else rest

    async def load(self, store: NodeStore, backoff: Backoff) -> int:
        """Seed memory from the store, retrying until it can be read; nodes already in
        memory (changed by events since start-up, or heard of from the store's watch) win.
        The number of nodes then known."""
        failures = 0
        while True:
            try:
                async for obj in store.list():
                    try:
                        unique_id = unique_id_of(str(obj.get("metadata", {}).get("name", "")))
                        current = self._states.get(unique_id)
                        if current is None:
                            self._put(state_from_nm(obj), made_here=False)
                        elif current.labels is None:  # changed since start-up: it wins
                            labels, _ = stored_labels(obj, current)
                            self._put(current._replace(labels=labels), made_here=False)
                    except InvalidUniqueIdError as e:
                        logger.warning("ignoring a stored object that is not ours: %s", e)
            except StoreError as e:
                failures += 1
                wait = backoff.delay(failures)
                logger.warning("cannot read stored nodes yet, again in %g s: %s", wait, e)
                await self._clock.sleep(wait)
                continue
            break
        logger.info("stored nodes read: %d node(s) known", len(self._states))
        return len(self._states)


def _port_held(state: NodeState | None) -> tuple[str | None, int] | None:
    """The (frps address, remote port) a node holds: an online node's port, if known."""
    if state is None or state.status != ONLINE or state.remote_port is None:
        return None
    return state.frps_address, state.remote_port


def _second(at: datetime) -> datetime:
    return at.replace(microsecond=0)


def _to_the_second(state: NodeState) -> NodeState:
    """`state` as the store keeps it: times to the second."""
    return state._replace(
        last_transition=_second(state.last_transition),
        updated_at=_second(state.updated_at),
        last_heartbeat=_second(state.last_heartbeat) if state.last_heartbeat else None,
    )
