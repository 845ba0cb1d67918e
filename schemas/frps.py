"""The frps server-plugin protocol (frp doc/server_plugin.md), as frps 0.65 really sends it.

frps is written in Go: a map or slice it never filled is sent as JSON `null` (an frpc
without `metadatas` gets `"metas": null`), and fields come and go between versions. So
every reader here takes `null` and absence as the empty value, ignores fields it does not
know, and raises UnreadableError only for a field of another JSON type than frps sends.
Plain functions rather than marshmallow schemas: they run on every frpc's connect path,
where a schema load costs ~20 µs a call; and events are NamedTuples, built in a third of a
frozen dataclass's time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

LOGIN = "Login"
NEW_PROXY = "NewProxy"
CLOSE_PROXY = "CloseProxy"
PING = "Ping"
NEW_WORK_CONN = "NewWorkConn"
NEW_USER_CONN = "NewUserConn"

_MAX_PORT = 65535
_NO_METAS: Mapping[str, str] = MappingProxyType({})


class UnreadableError(ValueError):
    """A field is of another JSON type than frps sends; the text names it."""


class FrpcUser(NamedTuple):
    """The `user` block frps repeats in every op after Login."""

    user: str = ""
    metas: Mapping[str, str] = _NO_METAS
    run_id: str = ""


class Login(NamedTuple):
    user: str = ""
    metas: Mapping[str, str] = _NO_METAS
    run_id: str = ""
    version: str = ""
    hostname: str = ""
    os: str = ""
    arch: str = ""
    client_address: str = ""


class NewProxy(NamedTuple):
    user: FrpcUser
    proxy_name: str
    proxy_type: str
    metas: Mapping[str, str] = _NO_METAS
    remote_port: int | None = None  # absent when frpc asked for a random port


class CloseProxy(NamedTuple):
    user: FrpcUser
    proxy_name: str


class Ping(NamedTuple):
    user: FrpcUser


class NewWorkConn(NamedTuple):
    user: FrpcUser


Event = Login | NewProxy | CloseProxy | Ping | NewWorkConn


def _string(content: Mapping[str, Any], key: str, where: str) -> str:
    value = content.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UnreadableError(f"{where}{key}: a string was expected")
    return value


def _metas(content: Mapping[str, Any], where: str) -> Mapping[str, str]:
    value = content.get("metas")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnreadableError(f"{where}metas: an object of strings was expected")
    if not all(isinstance(v, str) for v in value.values()):
        raise UnreadableError(f"{where}metas: every value must be a string")
    return value


def _user(content: Mapping[str, Any]) -> FrpcUser:
    value = content.get("user")
    if value is None:
        return FrpcUser()
    if not isinstance(value, dict):
        raise UnreadableError("user: an object was expected")
    return FrpcUser(
        user=_string(value, "user", "user."),
        metas=_metas(value, "user."),
        run_id=_string(value, "run_id", "user."),
    )


def _port(content: Mapping[str, Any]) -> int | None:
    value = content.get("remote_port")
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= _MAX_PORT:
        raise UnreadableError(f"remote_port: a port number was expected, not {value!r}")
    return value or None


def read_login(content: Mapping[str, Any]) -> Login:
    return Login(
        user=_string(content, "user", ""),
        metas=_metas(content, ""),
        run_id=_string(content, "run_id", ""),
        version=_string(content, "version", ""),
        hostname=_string(content, "hostname", ""),
        os=_string(content, "os", ""),
        arch=_string(content, "arch", ""),
        client_address=_string(content, "client_address", ""),
    )


def read_new_proxy(content: Mapping[str, Any]) -> NewProxy:
    return NewProxy(
        user=_user(content),
        proxy_name=_string(content, "proxy_name", ""),
        proxy_type=_string(content, "proxy_type", ""),
        metas=_metas(content, ""),
        remote_port=_port(content),
    )


def read_close_proxy(content: Mapping[str, Any]) -> CloseProxy:
    return CloseProxy(user=_user(content), proxy_name=_string(content, "proxy_name", ""))


def read_ping(content: Mapping[str, Any]) -> Ping:
    return Ping(user=_user(content))


def read_new_work_conn(content: Mapping[str, Any]) -> NewWorkConn:
    return NewWorkConn(user=_user(content))


READERS: dict[str, Callable[[Mapping[str, Any]], Event]] = {
    LOGIN: read_login,
    NEW_PROXY: read_new_proxy,
    CLOSE_PROXY: read_close_proxy,
    PING: read_ping,
    NEW_WORK_CONN: read_new_work_conn,
}
