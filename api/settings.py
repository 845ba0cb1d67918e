"""Settings from the environment (the original frp_adapter's names are honoured), or flags.

A flag wins over its environment variable; an invalid value is a SettingsError whose text
is the one line the CLI prints before exiting with code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from nodes.store import InvalidStoreUrlError, check_store_url

FailureMode = Literal["open", "closed"]


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    host: str = ""
    port: int = 8888
    store_url: str = "sqlite:///frpa.db"
    frps_address: str = "127.0.0.1"
    frps_api: str | None = None
    frps_api_user: str = ""
    frps_api_password: str = field(default="", repr=False)
    unique_id_meta_key: str = "unique_id"
    close_grace_period: float = 2.0
    heartbeat_persist_interval: float = 60.0
    heartbeat_timeout: float = 90.0
    reconcile_interval: float = 60.0
    plugin_failure_mode: FailureMode = "open"
    shutdown_timeout: float = 10.0
    event_namespace: str = "default"
    event_min_interval: float = 30.0
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"


# flag -> (environment variable, help); the password has no flag: it would show in `ps`.
OPTIONS: dict[str, tuple[str, str]] = {
    "address": ("FRP_ADAPTER_ADDRESS", "host:port to listen on (default :8888)"),
    "store": ("FRPA_STORE", "kubernetes, or a SQLite URL (default sqlite:///frpa.db)"),
    "frps-address": ("FRPA_FRPS_ADDRESS", "frps address SSH dials, recorded in every NM"),
    "frps-api": ("FRP_SERVER_API", "frps dashboard API URL, e.g. http://127.0.0.1:7500"),
    "frps-api-user": ("FRP_SERVER_HTTPAUTHUSERNAME", "frps dashboard user"),
    "unique-id-meta-key": ("FRPA_UNIQUE_ID_META_KEY", "frpc metadatas key holding the id"),
    "close-grace-period": ("FRPA_CLOSE_GRACE_PERIOD", "seconds a CloseProxy waits (default 2)"),
    "heartbeat-persist-interval": (
        "FRPA_HEARTBEAT_PERSIST_INTERVAL",
        "store a node's last Ping at most this often, seconds (default 60)",
    ),
    "heartbeat-timeout": (
        "FRPA_HEARTBEAT_TIMEOUT",
        "offline a pinging node silent this long, seconds (default 90: 3 x frpc's 30 s)",
    ),
    "reconcile-interval": (
        "FRPA_RECONCILE_INTERVAL",
        "check every node against frps's dashboard this often, seconds (default 60)",
    ),
    "plugin-failure-mode": (
        "FRPA_PLUGIN_FAILURE_MODE",
        "open: our own failure lets frpc in; closed: it rejects (default open)",
    ),
    "shutdown-timeout": ("FRPA_SHUTDOWN_TIMEOUT", "seconds to drain writes on exit (default 10)"),
    "event-namespace": ("FRPA_EVENT_NAMESPACE", "namespace of NM Kubernetes Events (default)"),
    "event-min-interval": (
        "FRPA_EVENT_MIN_INTERVAL",
        "at most one Kubernetes Event per node this often, seconds (default 30)",
    ),
    "log-level": ("FRPA_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    "log-format": ("FRPA_LOG_FORMAT", "text or json (default text)"),
}
PASSWORD_ENV = "FRP_SERVER_HTTPAUTHPASSWORD"  # noqa: S105  (a variable name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (env, text) in OPTIONS.items():
        parser.add_argument(f"--{flag}", metavar=env, help=f"{text} [{env}]")


def load_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    def value(flag: str) -> str | None:
        given: str | None = getattr(args, flag.replace("-", "_"))
        return given if given is not None else environ.get(OPTIONS[flag][0]) or None

    defaults = Settings()
    host, port = _address(value("address") or ":8888")
    frps_api = value("frps-api")
    return Settings(
        host=host,
        port=port,
        store_url=_store_url(value("store") or defaults.store_url),
        frps_address=value("frps-address") or defaults.frps_address,
        frps_api=_frps_api(frps_api) if frps_api else None,
        frps_api_user=value("frps-api-user") or "",
        frps_api_password=environ.get(PASSWORD_ENV, ""),
        unique_id_meta_key=value("unique-id-meta-key") or defaults.unique_id_meta_key,
        close_grace_period=_seconds("close-grace-period", value, defaults.close_grace_period),
        heartbeat_persist_interval=_seconds(
            "heartbeat-persist-interval", value, defaults.heartbeat_persist_interval
        ),
        heartbeat_timeout=_seconds("heartbeat-timeout", value, defaults.heartbeat_timeout),
        reconcile_interval=_seconds("reconcile-interval", value, defaults.reconcile_interval),
        plugin_failure_mode=_failure_mode(value("plugin-failure-mode") or "open"),
        shutdown_timeout=_seconds("shutdown-timeout", value, defaults.shutdown_timeout),
        event_namespace=value("event-namespace") or defaults.event_namespace,
        event_min_interval=_seconds("event-min-interval", value, defaults.event_min_interval),
        log_level=_log_level(value("log-level") or defaults.log_level),
        log_format=_log_format(value("log-format") or defaults.log_format),
    )


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"FRP_ADAPTER_ADDRESS must be host:port or :port, not {text!r}")
    return host.strip("[]"), int(port)


def _frps_api(url: str) -> str:
    # The original took the proxy list URL (.../api/proxy/tcp); the base is what we need.
    base = url.rstrip("/").removesuffix("/api/proxy/tcp")
    if not base.startswith(("http://", "https://")) or base.endswith("://"):
        raise SettingsError(f"FRP_SERVER_API must be an http(s) URL, not {url!r}")
    return base


def _store_url(url: str) -> str:
    try:
        check_store_url(url)
    except InvalidStoreUrlError as e:
        raise SettingsError(f"FRPA_STORE: {e}") from e
    return url


def _seconds(flag: str, value: Callable[[str], str | None], default: float) -> float:
    text = value(flag)
    if text is None:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:
        raise SettingsError(f"{OPTIONS[flag][0]} must be seconds between 0 and 86400, not {text!r}")
    return seconds


def _failure_mode(text: str) -> FailureMode:
    if text == "open":
        return "open"
    if text == "closed":
        return "closed"
    raise SettingsError(f"FRPA_PLUGIN_FAILURE_MODE must be open or closed, not {text!r}")


def _log_format(text: str) -> Literal["text", "json"]:
    if text == "text":
        return "text"
    if text == "json":
        return "json"
    raise SettingsError(f"FRPA_LOG_FORMAT must be text or json, not {text!r}")


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"FRPA_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {text!r}")
    return level
