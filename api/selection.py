"""Which nodes a request chooses: `labelSelector` and `fieldSelector` as Kubernetes reads
them (`schemas.labels`), within the caller's scope (its token's selector)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from aiohttp import web

from api.callers import IDENTITY
from api.state import STATE
from nodes.errors import InvalidInputError, NodeNotFoundError
from nodes.model import NAME_PREFIX, InvalidUniqueIdError, NodeState, nm_name, unique_id_of
from schemas.labels import (
    EVERY_NODE,
    FieldName,
    FieldSelector,
    Selector,
    SelectorError,
    parse_field_selector,
    parse_selector,
)
from ssh.connector import SshTarget

_ONLINE: tuple[FieldName, bool, str] = ("status", True, "online")


@dataclass(frozen=True, slots=True)
class Choice:
    """The nodes a request chooses: all that its selectors and the caller's scope match."""

    labels: Selector
    fields: FieldSelector
    scope: Selector
    frps_names: Mapping[str, str]  # frps address -> its name

    def __call__(self, state: NodeState) -> bool:
        labels = state.known_labels
        return (
            self.scope.matches(labels)
            and self.labels.matches(labels)
            and (not self.fields.requirements or self.fields.matches(partial(self._field, state)))
        )

    def _field(self, state: NodeState, name: FieldName) -> str:
        if name == "status":
            return state.status
        if name == "metadata.name":
            return nm_name(state.unique_id)
        return self.frps_names.get(state.frps_address or "", "")


def choice(
    request: web.Request,
    label_selector: str | None = None,
    field_selector: str | None = None,
    *,
    status: str | None = None,
) -> Choice:
    """The caller's choice of nodes; InvalidInputError points at what cannot be read."""
    adapter = request.app[STATE].adapter
    frps_names = {live.address: name for name, live in adapter.frps.items()}
    try:
        labels = parse_selector(label_selector) if label_selector else EVERY_NODE
    except SelectorError as e:
        raise InvalidInputError(f"labelSelector {e}", kind="invalid selector") from e
    try:
        fields = parse_field_selector(field_selector or "", frozenset(frps_names.values()))
    except SelectorError as e:
        raise InvalidInputError(f"fieldSelector {e}", kind="invalid selector") from e
    if status is not None:
        fields = FieldSelector((*fields.requirements, ("status", True, status)))
    return Choice(labels, fields, request[IDENTITY].scope, frps_names)


def node_target(request: web.Request, name: str) -> SshTarget:
    """Where to dial node `name`, a request body names, for the caller of `request`: a node
    outside its scope is not found, as one nobody knows (the guard sees to nodes a path
    names)."""
    if not request.app[STATE].access.in_scope(request, name):
        raise NodeNotFoundError(f"nodemaintenance {name} not found")
    return request.app[STATE].adapter.ssh.target(name)


def batch_names(request: web.Request, data: Mapping[str, Any]) -> list[str]:
    """The NM names a batch runs on: the `nodes` it lists that its selectors choose (a
    listed node nobody knows, or outside the caller's scope, keeps its "not found" line),
    else every online node they choose."""
    chosen = choice(request, data["label_selector"], data["field_selector"], status=data["status"])
    registry = request.app[STATE].adapter.registry
    if data["nodes"] is None:
        online = replace(chosen, fields=FieldSelector((*chosen.fields.requirements, _ONLINE)))
        return [nm_name(state.unique_id) for state in registry.states() if online(state)]
    names = []
    for name in dict.fromkeys(data["nodes"]):
        try:
            state = registry.get(unique_id_of(name))
        except InvalidUniqueIdError:
            state = None
        if state is None or not chosen.scope.matches(state.known_labels) or chosen(state):
            names.append(name)
    return names


def original_name(request: web.Request, name: str) -> str:
    """The NM the original's shell and exec routes mean by `name`: the original took the
    part after its first `-` as the unique_id (app/action/reverse_proxy/reverse_proxy.go:63,
    130), so `ssh-<unique_id>` named the node too. `name` itself when an NM has it."""
    registry = request.app[STATE].adapter.registry
    for candidate in (name, NAME_PREFIX + name.partition("-")[2]):
        try:
            if registry.get(unique_id_of(candidate)) is not None:
                return candidate
        except InvalidUniqueIdError:
            continue
    return name
