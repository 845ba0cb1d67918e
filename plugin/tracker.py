"""Which node each frps event is about, and what it means for the node's SSH proxy.

frps events arrive late and out of order: frpc keeps its run_id across re-logins and frps
sends CloseProxy from a goroutine, so a CloseProxy may follow the NewProxy that replaced
it. The SSH proxy's NewProxy makes a node online at once; its CloseProxy makes it offline
only after a grace period with no new NewProxy and, when frps's dashboard is configured,
only if frps confirms the proxy is gone. Without a dashboard the facts decide: a
CloseProxy of another run_id than the node's is stale; one in a session a fresh frpc
process began (its Login had no run_id) is not; only in a session begun by a re-login
with the same run_id may it be the replaced control's, and there a CloseProxy within the
grace period of the NewProxy is taken as that.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from nodes.clock import Clock
from nodes.model import (
    OFFLINE,
    ONLINE,
    InvalidUniqueIdError,
    NodeChange,
    NodeState,
    UniqueId,
    parse_unique_id,
    untrack,
)
from nodes.registry import NAMED_BY_USER, NodeRegistry
from nodes.tasks import Tasks
from plugin.admission import Admission
from plugin.dashboard import DashboardError, FrpsDashboard
from schemas.frps import CloseProxy, FrpcUser, Login, NewProxy, NewWorkConn, Ping
from schemas.labels import parse_declared

logger = logging.getLogger(__name__)

# A Login is unauthenticated (frps checks the token after calling us): what it tells is
# kept only this long, to decorate the NM when the node's authenticated NewProxy follows.
LOGIN_MEMORY_SECONDS = 60.0
# Fixed paces over fixed windows, not the retry policy: the node's status waits on frps's
# answer (a new proxy shown online: 25 looks 0.2 s apart; a CloseProxy confirmed: 3 tries
# 1 s apart), and a doubling wait would stretch the window.
_PORT_LOOKUP_ATTEMPTS = 25
_PORT_LOOKUP_DELAY = 0.2
_CONFIRM_ATTEMPTS = 3
_CONFIRM_DELAY = 1.0
# A node frps did not show online is asked about again after this long, at the earliest;
# the asks of this many nodes are remembered (every frpc of an frps pings, edge or not).
_RECOVERY_RETRY_SECONDS = 300.0
_RECOVERY_MEMORY = 65536
# frps does not send a proxy's local port: a remote port 22 is the one port that tells.
_SSH_PORT = 22
LABELS_META = "labels"


class _LoginMemo(NamedTuple):
    at: float
    client_address: str
    frpc_version: str
    host_name: str
    fresh: bool  # a new frpc process: its Login carried no run_id


@dataclass(frozen=True, slots=True)
class Ignored:
    """Why an event changed no node: `kind` is a metric label, `who` names the frpc."""

    kind: str  # "unidentified", "not_ssh" or "unrecognised_ssh"
    who: str
    why: str


class SshProxyTracker:
    def __init__(
        self,
        registry: NodeRegistry,
        *,
        frps_address: str,
        unique_id_meta_key: str,
        close_grace_period: float,
        dashboard: FrpsDashboard | None,
        clock: Clock,
        on_relogin: Callable[[], None] | None = None,
        admission: Admission = Admission(),  # noqa: B008  (frozen: one shared default is fine)
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._admission = admission
        self._frps_address = frps_address
        self._meta_key = unique_id_meta_key
        self._grace = close_grace_period
        self._dashboard = dashboard
        self._on_relogin = on_relogin
        # Oldest first; an OrderedDict, because a dict's first key is found by skipping the
        # slots of every key deleted before it: O(n) per Login in a login storm. Not
        # cachetools' TTLCache: 3.0 us per Login against 1.0 us (measured, 50,000 nodes).
        self._logins: OrderedDict[UniqueId, _LoginMemo] = OrderedDict()
        # When each node's SSH proxy was opened, if not in a session a fresh Login began
        # (of those, a CloseProxy is never the replaced control's): one entry a node at
        # most, and none for a fleet that logged in fresh.
        self._reopened_at: dict[UniqueId, float] = {}
        self._recoveries = Tasks("recovery of")
        self._recovery_asked: OrderedDict[UniqueId, float] = OrderedDict()
        self._closing = Tasks("CloseProxy of")
        self._port_lookups = Tasks("port lookup of")
        # Malformed labels skipped, and what each node's frpc declared when last told of it.
        self.labels_skipped = 0
        self._labels_told: dict[UniqueId, str] = {}

    def unique_id(self, user: str, metas: Mapping[str, str]) -> UniqueId | Ignored:
        """The frpc's `metas[<meta key>]`, else its frps user; Ignored when neither can name
        an NM (not every frpc of an frps is an edge node)."""
        try:
            return parse_unique_id(metas.get(self._meta_key) or user)
        except InvalidUniqueIdError as e:
            return Ignored("unidentified", f"user {user!r}", str(e))

    def is_ssh_proxy(self, uid: UniqueId, owner: FrpcUser, event: NewProxy | CloseProxy) -> bool:
        """A tcp proxy with metas `role = "ssh"`, or named `ssh` or `ssh-<unique_id>`.

        frps reports names as `<user>.<name>`; CloseProxy carries no proxy metas, so a
        proxy recognised by its role is known by the name its node's state records.
        """
        if isinstance(event, NewProxy):
            if event.proxy_type != "tcp":
                return False
            if event.metas.get("role") == "ssh":
                return True
        elif (node := self._registry.get(uid)) and node.proxy_name == event.proxy_name:
            return True
        return _own_name(owner, event.proxy_name) in ("ssh", f"ssh-{uid}")

    def login(self, event: Login) -> Ignored | None:
        """Raises AdmissionError for a frpc that must not log in."""
        uid = self.unique_id(event.user, event.metas)
        if isinstance(uid, Ignored):
            self._admission.check_unidentified(uid.why)
            return uid
        self._admission.check_login(self._registry, uid, event.metas)
        node = self._registry.get(uid)
        if (
            self._on_relogin is not None
            and event.run_id
            and node is not None
            and node.status == ONLINE
            and node.run_id == event.run_id
        ):
            # frpc logs in again with its old run_id: its control is gone (frps restarted,
            # or the network blipped), and frps sends no CloseProxy when it restarts.
            self._on_relogin()
        now = self._clock.monotonic()
        self._logins.pop(uid, None)
        memo = self._logins[uid] = _LoginMemo(
            now, event.client_address, event.version, event.hostname, fresh=not event.run_id
        )
        untrack(memo)  # a login storm remembers one per node
        # The Login just kept is fresh, so this stops.
        while now - next(iter(self._logins.values())).at >= LOGIN_MEMORY_SECONDS:
            self._logins.popitem(last=False)
        return None

    def new_proxy(self, event: NewProxy) -> Ignored | None:
        """Raises AdmissionError for an SSH proxy on a port it must not have."""
        uid = self.unique_id(event.user.user, event.user.metas)
        if isinstance(uid, Ignored):
            return uid
        if not self.is_ssh_proxy(uid, event.user, event):
            self._recover(uid, event.user)
            return self._not_ssh(uid, event)
        self._admission.check_ssh_port(self._registry, uid, event.remote_port, self._frps_address)
        self._closing.cancel(uid)
        self._port_lookups.cancel(uid)
        memo = self._logins.pop(uid, None)
        declared = event.user.metas.get(LABELS_META, "")
        labels, skipped = parse_declared(declared)
        if skipped:
            self._skip_labels(uid, declared, skipped)
        if memo is not None and memo.fresh:
            self._reopened_at.pop(uid, None)
        else:
            self._reopened_at[uid] = self._clock.monotonic()
        change = NodeChange(
            reason="NewProxy",
            at=self._clock.now(),
            status=ONLINE,
            frps_address=self._frps_address,
            remote_port=event.remote_port,
            run_id=event.user.run_id,
            proxy_name=event.proxy_name,
            client_address=memo.client_address if memo else None,
            frpc_version=memo.frpc_version if memo else None,
            host_name=memo.host_name or None if memo else None,
            frpc_labels=labels,
        )
        if self._dashboard is not None:
            # frps binds the port after we answer; until frps shows the proxy online, the
            # call may be forged (no plugin secret) and its port another node's.
            self._port_lookups.spawn(uid, self._online_once_frps_confirms(uid, change))
        elif change.remote_port is None:
            logger.warning("node %s: a random remote port is unknown without a dashboard", uid)
            self._registry.transition(uid, change._replace(reason="NewProxyPortUnknown"))
        else:
            self._registry.transition(uid, change)
        return None

    def _skip_labels(self, uid: UniqueId, declared: str, skipped: list[str]) -> None:
        """Count labels a node's frpc declared wrongly; say why once per declaration: a
        label never keeps a node out."""
        self.labels_skipped += len(skipped)
        if self._labels_told.get(uid) != declared:
            self._labels_told[uid] = declared
            logger.warning(
                "node %s: skipped metadatas.labels %s; said once per frpc",
                uid,
                "; ".join(skipped),
            )

    def _not_ssh(self, uid: UniqueId, event: NewProxy) -> Ignored:
        """A proxy that is not the node's SSH proxy; `unrecognised_ssh`, with the frpc.toml
        fix, if it looks like one (a tcp proxy with `ssh` in its name or role, on remote
        port 22, or of a frpc whose top-level role says ssh) while this frpc run has given
        the node no SSH proxy. Once per run: a frpc keeps its run_id across re-logins."""
        name = _own_name(event.user, event.proxy_name)
        role = event.metas.get("role", "")
        by_role = "ssh" in role.lower()
        by_frpc_role = "ssh" in event.user.metas.get("role", "").lower()
        if (
            event.proxy_type != "tcp"
            or not (
                by_role or by_frpc_role or "ssh" in name.lower() or event.remote_port == _SSH_PORT
            )
            or self._has_ssh_proxy(uid, event.user.run_id)
        ):
            return Ignored("not_ssh", uid, f"{event.proxy_type} proxy {event.proxy_name!r}")
        entry = f'the [[proxies]] entry with name = "{name}"'
        if by_frpc_role and not by_role:
            fix = (
                'move metadatas.role = "ssh" from the top (there it is the frpc\'s own and '
                f"names no proxy) into {entry}"
            )
        elif by_role:
            fix = f'in {entry}, write metadatas.role = "ssh" (not "{role}")'
        else:
            fix = f'in {entry}, write name = "ssh" (or "ssh-{uid}"), or set metadatas.role = "ssh"'
        return Ignored(
            "unrecognised_ssh",
            f"{uid} run {event.user.run_id}",
            f'node {uid} has no SSH proxy from this frpc: tcp proxy "{name}" looks like one, '
            f'but the SSH proxy is a tcp proxy named "ssh" or "ssh-{uid}", or with '
            f'metadatas.role = "ssh" in its own [[proxies]] entry. If "{name}" is it, fix '
            f"frpc.toml: {fix}; then restart frpc",
        )

    def _has_ssh_proxy(self, uid: UniqueId, run_id: str) -> bool:
        """Whether this frpc run already opened the node's SSH proxy (frps is confirming
        it, or the node is online by it)."""
        if uid in self._port_lookups:
            return True
        node = self._registry.get(uid)
        return node is not None and node.status == ONLINE and node.run_id == run_id

    def close_proxy(self, event: CloseProxy) -> Ignored | None:
        uid = self.unique_id(event.user.user, event.user.metas)
        if isinstance(uid, Ignored):
            return uid
        if not self.is_ssh_proxy(uid, event.user, event):
            return Ignored("not_ssh", uid, f"proxy {event.proxy_name!r}")
        node = self._registry.get(uid)
        if node is not None and node.proxy_name and node.proxy_name != event.proxy_name:
            return None  # not the SSH proxy the node has now (renamed, or a forged call)
        if uid in self._closing:
            return None
        if self._dashboard is None and self._stale(uid, node, event):
            return None
        self._closing.spawn(uid, self._offline_unless_reopened(uid, event))
        return None

    def _stale(self, uid: UniqueId, node: NodeState | None, event: CloseProxy) -> bool:
        """Whether, by the facts alone, this CloseProxy is of a control already replaced."""
        run_id = event.user.run_id
        if node is not None and node.run_id and run_id and run_id != node.run_id:
            logger.info(
                "node %s: CloseProxy of run %s, now run %s: stale", uid, run_id, node.run_id
            )
            return True
        reopened_at = self._reopened_at.get(uid)
        if reopened_at is not None and self._clock.monotonic() - reopened_at < self._grace:
            logger.info("node %s: CloseProxy right after a re-login's NewProxy: stale", uid)
            return True
        return False

    def ping(self, event: Ping) -> Ignored | None:
        uid = self.unique_id(event.user.user, event.user.metas)
        if isinstance(uid, Ignored):
            return uid
        self._registry.heartbeat(uid, self._clock.now(), event.user.run_id)
        self._recover(uid, event.user)
        return None

    def new_work_conn(self, event: NewWorkConn) -> Ignored | None:
        uid = self.unique_id(event.user.user, event.user.metas)
        if isinstance(uid, Ignored):
            return uid
        self._recover(uid, event.user)
        return None

    def _recover(self, uid: UniqueId, user: FrpcUser) -> None:
        """A frpc frps serves is alive; if its node is not held online (its NewProxy lost:
        the adapter was down, or restarted with an empty store), ask frps for its SSH
        proxy under every name the adapter recognises."""
        node = self._registry.get(uid)
        if (
            self._dashboard is None
            or (node is not None and node.status == ONLINE)
            or uid in self._recoveries
            or uid in self._port_lookups
            or uid in self._closing
        ):
            return
        now = self._clock.monotonic()
        asked = self._recovery_asked.get(uid)
        if asked is not None and now - asked < _RECOVERY_RETRY_SECONDS:
            return
        self._recovery_asked.pop(uid, None)
        self._recovery_asked[uid] = now
        if len(self._recovery_asked) > _RECOVERY_MEMORY:
            self._recovery_asked.popitem(last=False)
        prefix = f"{user.user}." if user.user else ""
        names = [f"{prefix}ssh", f"{prefix}ssh-{uid}"]
        if node is not None and node.proxy_name:
            names.insert(0, node.proxy_name)
        self._recoveries.spawn(uid, self._online_if_frps_has(uid, user, names))

    async def _online_if_frps_has(self, uid: UniqueId, user: FrpcUser, names: list[str]) -> None:
        assert self._dashboard is not None
        for name in dict.fromkeys(names):
            try:
                info = await self._dashboard.tcp_proxy(name)
            except DashboardError as e:
                logger.warning("node %s: frps's dashboard failed: %s", uid, e)
                return
            if info is None or not info.online or not info.remote_port or self._held(uid, name):
                continue
            change = NodeChange(
                reason="Recovered",
                at=self._clock.now(),
                status=ONLINE,
                frps_address=self._frps_address,
                remote_port=info.remote_port,
                run_id=user.run_id,
                proxy_name=name,
            )
            self._registry.transition(uid, change)
            return

    def _held(self, uid: UniqueId, name: str) -> bool:
        """Whether SSH proxy `name` is another node's, online now. A node the reconciler
        named after the frps user (it cannot know the unique-id meta) gives it up to the
        node that names itself."""
        holder = self._registry.holder(self._frps_address, name)
        if holder is None or holder.unique_id == uid or holder.status != ONLINE:
            return False
        if holder.reason == NAMED_BY_USER:
            self._registry.transition(
                holder.unique_id,
                NodeChange(reason="ClaimedByItsNode", at=self._clock.now(), status=OFFLINE),
            )
            return False
        logger.warning(
            "node %s: SSH proxy %s is node %s's: not recorded", uid, name, holder.unique_id
        )
        return True

    async def close(self) -> None:
        for tasks in (self._closing, self._port_lookups, self._recoveries):
            await tasks.close()

    async def _online_once_frps_confirms(self, uid: UniqueId, change: NodeChange) -> None:
        """Online on the port frps shows for the proxy; not at all if frps does not have it
        online, or if it is another online node's; on the port claimed if frps's dashboard
        cannot be asked."""
        assert self._dashboard is not None
        name = str(change.proxy_name)
        failed = 0
        for _ in range(_PORT_LOOKUP_ATTEMPTS):
            try:
                info = await self._dashboard.tcp_proxy(name)
            except DashboardError as e:
                logger.warning("node %s: frps's dashboard failed: %s", uid, e)
                failed += 1
                info = None
            if info is not None and info.online and info.remote_port:
                break
            await self._clock.sleep(_PORT_LOOKUP_DELAY)
        else:
            if failed < _PORT_LOOKUP_ATTEMPTS:
                logger.warning("node %s: frps has no SSH proxy %s online: not recorded", uid, name)
                return
            reason = "NewProxyUnconfirmed" if change.remote_port else "NewProxyPortUnknown"
            self._registry.transition(uid, change._replace(reason=reason))
            return
        if self._held(uid, name):
            return
        self._registry.transition(uid, change._replace(remote_port=info.remote_port))

    async def _offline_unless_reopened(self, uid: UniqueId, event: CloseProxy) -> None:
        await self._clock.sleep(self._grace)
        reason = "CloseProxy"
        name = event.proxy_name
        if self._dashboard is not None:
            for attempt in range(1, _CONFIRM_ATTEMPTS + 1):
                try:
                    info = await self._dashboard.tcp_proxy(name)
                except DashboardError as e:
                    logger.warning("node %s: frps did not confirm CloseProxy: %s", uid, e)
                    if attempt < _CONFIRM_ATTEMPTS:
                        await self._clock.sleep(_CONFIRM_DELAY)
                    continue
                if info is None:
                    logger.warning(
                        "node %s: frps never had proxy %s: CloseProxy ignored", uid, name
                    )
                    return
                if info.online:
                    logger.info("node %s: stale CloseProxy ignored, frps has the proxy", uid)
                    return
                break
            else:
                reason = "CloseProxyUnconfirmed"
        self._registry.transition(
            uid,
            NodeChange(
                reason=reason, at=self._clock.now(), status=OFFLINE, run_id=event.user.run_id
            ),
        )


def _own_name(owner: FrpcUser, proxy_name: str) -> str:
    """The proxy's name in its frpc.toml: frps reports `<user>.<name>`."""
    return proxy_name.removeprefix(f"{owner.user}.") if owner.user else proxy_name
