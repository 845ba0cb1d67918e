"""The frps server-plugin protocol (frp doc/server_plugin.md), as frps 0.65 really sends it.

frps adds fields between versions, so every schema excludes unknown keys; only what the
adapter uses is declared, and only what it cannot do without is required.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, post_load, validate

LOGIN = "Login"
NEW_PROXY = "NewProxy"
CLOSE_PROXY = "CloseProxy"
PING = "Ping"
NEW_WORK_CONN = "NewWorkConn"
NEW_USER_CONN = "NewUserConn"


@dataclass(frozen=True, slots=True, kw_only=True)
class FrpcUser:
    """The `user` block frps repeats in every op after Login."""

    user: str
    metas: dict[str, str] = field(default_factory=dict)
    run_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Login:
    user: str
    metas: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    version: str = ""
    hostname: str = ""
    os: str = ""
    arch: str = ""
    client_address: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewProxy:
    user: FrpcUser
    proxy_name: str
    proxy_type: str
    metas: dict[str, str] = field(default_factory=dict)
    remote_port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseProxy:
    user: FrpcUser
    proxy_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    user: FrpcUser


class _Content(Schema):
    class Meta:
        unknown = EXCLUDE


_metas = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class FrpcUserSchema(_Content):
    user = fields.String(load_default="")
    metas = _metas
    run_id = fields.String(load_default="")

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> FrpcUser:
        return FrpcUser(**data)


class LoginSchema(_Content):
    user = fields.String(load_default="")
    metas = _metas
    run_id = fields.String(load_default="")
    version = fields.String(load_default="")
    hostname = fields.String(load_default="")
    os = fields.String(load_default="")
    arch = fields.String(load_default="")
    client_address = fields.String(load_default="")

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Login:
        return Login(**data)


class NewProxySchema(_Content):
    user = fields.Nested(FrpcUserSchema, required=True)
    proxy_name = fields.String(required=True, validate=validate.Length(min=1))
    proxy_type = fields.String(required=True)
    metas = _metas
    remote_port = fields.Integer(load_default=None, validate=validate.Range(min=0, max=65535))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> NewProxy:
        return NewProxy(**data)


class CloseProxySchema(_Content):
    user = fields.Nested(FrpcUserSchema, required=True)
    proxy_name = fields.String(required=True, validate=validate.Length(min=1))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> CloseProxy:
        return CloseProxy(**data)


class PingSchema(_Content):
    user = fields.Nested(FrpcUserSchema, required=True)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Ping:
        return Ping(**data)
