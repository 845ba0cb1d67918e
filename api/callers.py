"""Who calls: the three roles, and the identity access control gives each request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from aiohttp import web

from schemas.labels import EVERY_NODE, Selector


class Role(IntEnum):
    """Each role may do what the ones below it may."""

    NONE = 0  # a known caller RBAC does not allow
    READ = 1  # fetch and list nodes
    OPERATOR = 2  # shells and commands on nodes
    ADMIN = 3  # create, update and retire nodes; clear host-key pins


ROLE_NAMES = {"read": Role.READ, "operator": Role.OPERATOR, "admin": Role.ADMIN}


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    role: Role
    # The nodes this caller may see and act on; any other is answered as if unknown.
    scope: Selector = EVERY_NODE


ANONYMOUS = Identity("anonymous", Role.NONE)  # who calls when authentication is off
IDENTITY = web.RequestKey("identity", Identity)
