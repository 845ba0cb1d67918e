"""Settings from the environment (the original frp_adapter's names are honoured), or flags.

A flag wins over its environment variable; an invalid value is a SettingsError whose text
is the one line the CLI prints before exiting with code 2.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from api.auth import TokensFileError, read_tokens
from nodes.store import KUBERNETES, InvalidStoreUrlError, check_store_url
from plugin.dashboard import redacted
from ssh.connector import read_client_key

FailureMode = Literal["open", "closed"]


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FrpsServer:
    """One frps: its plugin calls arrive at `/frps/<name>/handler`; nodes dial `address`."""

    name: str
    address: str
    api: str | None = field(repr=False)  # its dashboard (may carry credentials)


DEFAULT_FRPS = "default"
_SERVER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    host: str = ""
    port: int = 8888
    # FRPA_METRICS_ADDRESS: /metrics on a port of its own instead of the API's.
    metrics_address: tuple[str, int] | None = None
    store_url: str = "sqlite:///frpa.db"
    frps_address: str = "127.0.0.1"
    frps_api: str | None = field(default=None, repr=False)  # may carry credentials
    frps_api_user: str = ""
    frps_api_password: str = field(default="", repr=False)
    # FRPA_FRPS_SERVERS; empty: the one server of frps_address and frps_api.
    frps_servers: tuple[FrpsServer, ...] = ()
    unique_id_meta_key: str = "unique_id"
    close_grace_period: float = 2.0
    heartbeat_persist_interval: float = 30.0
    heartbeat_timeout: float = 90.0
    reconcile_interval: float = 60.0
    plugin_failure_mode: FailureMode = "open"
    shutdown_timeout: float = 10.0
    event_namespace: str = "default"
    event_min_interval: float = 30.0
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    ssh_user: str = "root"
    ssh_key_file: str | None = None
    ssh_password: str = field(default="", repr=False)
    ssh_known_hosts: str | None = None
    ssh_connect_timeout: float = 10.0
    exec_timeout: float = 60.0
    exec_output_limit: int = 1 << 20
    ws_heartbeat: float = 20.0
    api_tokens_file: str | None = None
    insecure_no_auth: bool = False
    kubernetes_auth: bool = False
    allowed_origins: frozenset[str] = frozenset()
    plugin_secret: str = field(default="", repr=False)
    audit_log: str | None = None
    require_registered: bool = False
    node_tokens: bool = False
    allowed_ports: range | None = None
    shell_recordings: str | None = None
    max_shells_per_user: int = 10
    exec_timeout_max: float = 3600.0

    def servers(self) -> tuple[FrpsServer, ...]:
        """Every frps whose plugin calls this adapter answers; the first is the default."""
        return self.frps_servers or (FrpsServer(DEFAULT_FRPS, self.frps_address, self.frps_api),)


# flag -> (environment variable, help); the password has no flag: it would show in `ps`.
OPTIONS: dict[str, tuple[str, str]] = {
    "address": ("FRP_ADAPTER_ADDRESS", "host:port to listen on (default :8888)"),
    "metrics-address": (
        "FRPA_METRICS_ADDRESS",
        "host:port to serve /metrics on alone, instead of on the API's port",
    ),
    "store": ("FRPA_STORE", "kubernetes, or a SQLite URL (default sqlite:///frpa.db)"),
    "frps-address": ("FRPA_FRPS_ADDRESS", "frps address SSH dials, recorded in every NM"),
    "frps-api": ("FRP_SERVER_API", "frps dashboard API URL, e.g. http://127.0.0.1:7500"),
    "frps-api-user": ("FRP_SERVER_HTTPAUTHUSERNAME", "frps dashboard user"),
    "frps-servers": (
        "FRPA_FRPS_SERVERS",
        "several frps: name=address[=dashboard URL], comma-separated (instead of "
        "FRPA_FRPS_ADDRESS and FRP_SERVER_API)",
    ),
    "unique-id-meta-key": ("FRPA_UNIQUE_ID_META_KEY", "frpc metadatas key holding the id"),
    "close-grace-period": ("FRPA_CLOSE_GRACE_PERIOD", "seconds a CloseProxy waits (default 2)"),
    "heartbeat-persist-interval": (
        "FRPA_HEARTBEAT_PERSIST_INTERVAL",
        "store a node's last Ping at most this often, seconds (default 30)",
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
    "ssh-user": ("FRPA_SSH_USER", "user the adapter logs in to nodes' sshd as (default root)"),
    "ssh-key-file": ("FRPA_SSH_KEY_FILE", "private key file for nodes' sshd"),
    "ssh-known-hosts": (
        "FRPA_SSH_KNOWN_HOSTS",
        "known_hosts file naming nodes by NM name; without it host keys are pinned on first use",
    ),
    "ssh-connect-timeout": (
        "FRPA_SSH_CONNECT_TIMEOUT",
        "seconds to connect and log in to a node's sshd (default 10)",
    ),
    "exec-timeout": ("FRPA_EXEC_TIMEOUT", "default seconds an exec may run (default 60)"),
    "exec-output-limit": (
        "FRPA_EXEC_OUTPUT_LIMIT",
        "bytes of stdout and of stderr an exec keeps (default 1048576)",
    ),
    "ws-heartbeat": (
        "FRPA_WS_HEARTBEAT",
        "seconds between WebSocket pings on shell sessions (default 20)",
    ),
    "api-tokens-file": (
        "FRPA_API_TOKENS_FILE",
        "bearer tokens, one `token name role` per line (roles: read, operator, admin)",
    ),
    "kubernetes-auth": (
        "FRPA_KUBERNETES_AUTH",
        "1: bearer tokens are the cluster's (TokenReview), allowed by RBAC (SubjectAccessReview)",
    ),
    "insecure-no-auth": (
        "FRPA_INSECURE_NO_AUTH",
        "1: serve shell and exec without any authentication (never on a shared network)",
    ),
    "allowed-origins": (
        "FRPA_ALLOWED_ORIGINS",
        "comma-separated browser origins allowed to open shells, besides this host's own",
    ),
    "require-registered": (
        "FRPA_REQUIRE_REGISTERED",
        "1: refuse the Login of a node that has no NodeMaintenance yet",
    ),
    "node-tokens": (
        "FRPA_NODE_TOKENS",
        "1: every Login must carry its node's own token in metadatas.token",
    ),
    "allowed-ports": (
        "FRPA_ALLOWED_PORTS",
        "remote ports SSH proxies may ask for, e.g. 16000-16999",
    ),
    "audit-log": ("FRPA_AUDIT_LOG", "file to append shell and exec audit records to; - for stdout"),
    "shell-recordings": (
        "FRPA_SHELL_RECORDINGS",
        "directory to record every shell session in, asciicast v2 (asciinema play)",
    ),
    "max-shells-per-user": (
        "FRPA_MAX_SHELLS_PER_USER",
        "shells one token may hold open at once (default 10)",
    ),
    "exec-timeout-max": (
        "FRPA_EXEC_TIMEOUT_MAX",
        "the longest timeout an exec call may ask for, seconds (default 3600)",
    ),
}
PASSWORD_ENV = "FRP_SERVER_HTTPAUTHPASSWORD"  # noqa: S105  (a variable name)
SSH_PASSWORD_ENV = "FRPA_SSH_PASSWORD"  # noqa: S105  (a variable name)
PLUGIN_SECRET_ENV = "FRPA_PLUGIN_SECRET"  # noqa: S105  (a variable name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (env, text) in OPTIONS.items():
        parser.add_argument(f"--{flag}", metavar=env, help=f"{text} [{env}]")


def load_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    def value(flag: str) -> str | None:
        given: str | None = getattr(args, flag.replace("-", "_"))
        return given if given is not None else environ.get(OPTIONS[flag][0]) or None

    defaults = Settings()
    host, port = _address(value("address") or ":8888", "FRP_ADAPTER_ADDRESS")
    frps_api = value("frps-api")
    return Settings(
        host=host,
        port=port,
        metrics_address=_address(metrics, "FRPA_METRICS_ADDRESS")
        if (metrics := value("metrics-address"))
        else None,
        store_url=_store_url(value("store") or defaults.store_url),
        frps_address=value("frps-address") or defaults.frps_address,
        frps_api=_frps_api(frps_api) if frps_api else None,
        frps_api_user=value("frps-api-user") or "",
        frps_api_password=environ.get(PASSWORD_ENV, ""),
        frps_servers=_frps_servers(value("frps-servers"), value("frps-address") or frps_api),
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
        ssh_user=value("ssh-user") or defaults.ssh_user,
        ssh_key_file=_ssh_key_file(value("ssh-key-file")),
        ssh_password=environ.get(SSH_PASSWORD_ENV, ""),
        ssh_known_hosts=_readable_file("ssh-known-hosts", value("ssh-known-hosts")),
        ssh_connect_timeout=_seconds("ssh-connect-timeout", value, defaults.ssh_connect_timeout),
        exec_timeout=_seconds("exec-timeout", value, defaults.exec_timeout),
        exec_output_limit=_whole(
            "exec-output-limit", value, defaults.exec_output_limit, most=1 << 30
        ),
        ws_heartbeat=_seconds("ws-heartbeat", value, defaults.ws_heartbeat),
        api_tokens_file=_tokens_file(value("api-tokens-file")),
        insecure_no_auth=_flag("insecure-no-auth", value("insecure-no-auth")),
        kubernetes_auth=_kubernetes_auth(
            value("kubernetes-auth"), value("store"), value("api-tokens-file")
        ),
        allowed_origins=frozenset(
            origin.strip().rstrip("/")
            for origin in (value("allowed-origins") or "").split(",")
            if origin.strip()
        ),
        plugin_secret=_plugin_secret(environ.get(PLUGIN_SECRET_ENV, "")),
        audit_log=_audit_log(value("audit-log")),
        require_registered=_flag("require-registered", value("require-registered")),
        node_tokens=_flag("node-tokens", value("node-tokens")),
        allowed_ports=_port_range(value("allowed-ports")),
        shell_recordings=_directory("shell-recordings", value("shell-recordings")),
        max_shells_per_user=_whole(
            "max-shells-per-user", value, defaults.max_shells_per_user, most=100000
        ),
        exec_timeout_max=_seconds("exec-timeout-max", value, defaults.exec_timeout_max),
    )


def _address(text: str, variable: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{variable} must be host:port or :port, not {text!r}")
    return host.strip("[]"), int(port)


def _frps_api(url: str) -> str:
    # The original took the proxy list URL (.../api/proxy/tcp); the base is what we need.
    base = url.rstrip("/").removesuffix("/api/proxy/tcp")
    if not base.startswith(("http://", "https://")) or base.endswith("://"):
        raise SettingsError(f"FRP_SERVER_API must be an http(s) URL, not {redacted(url)!r}")
    return base


def _frps_servers(text: str | None, single_given: str | None) -> tuple[FrpsServer, ...]:
    if text is None:
        return ()
    if single_given:
        raise SettingsError(
            "FRPA_FRPS_SERVERS names every frps: drop FRPA_FRPS_ADDRESS and FRP_SERVER_API"
        )
    servers = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, rest = entry.partition("=")
        address, _, api = rest.partition("=")
        if not _SERVER_NAME.fullmatch(name) or not address:
            raise SettingsError(
                f"FRPA_FRPS_SERVERS: {redacted(entry)!r} is not name=address[=dashboard URL] "
                "(names: lowercase letters, digits and '-')"
            )
        servers.append(FrpsServer(name, address, _frps_api(api) if api else None))
    for what, values in (
        ("names", [s.name for s in servers]),
        ("addresses", [s.address for s in servers]),
    ):
        if len(set(values)) != len(values):
            raise SettingsError(f"FRPA_FRPS_SERVERS: frps {what} must differ")
    if not servers:
        raise SettingsError("FRPA_FRPS_SERVERS is empty")
    return tuple(servers)


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


def _whole(flag: str, value: Callable[[str], str | None], default: int, *, most: int) -> int:
    text = value(flag)
    if text is None:
        return default
    if not text.isdigit() or not 0 < int(text) <= most:
        raise SettingsError(f"{OPTIONS[flag][0]} must be from 1 to {most}, not {text!r}")
    return int(text)


def _tokens_file(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        read_tokens(path)
    except TokensFileError as e:
        raise SettingsError(f"FRPA_API_TOKENS_FILE: {e}") from e
    return path


def _port_range(text: str | None) -> range | None:
    if text is None:
        return None
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit() and 0 < int(first) <= int(last) < 65536):
        raise SettingsError(
            f"FRPA_ALLOWED_PORTS must be FIRST-LAST, e.g. 16000-16999, not {text!r}"
        )
    return range(int(first), int(last) + 1)


def _audit_log(path: str | None) -> str | None:
    if path is None or path == "-":
        return path
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise SettingsError(f"FRPA_AUDIT_LOG: cannot append to {path!r}: {e.strerror}") from e
    return path


def _directory(flag: str, path: str | None) -> str | None:
    if path is not None and not (os.path.isdir(path) and os.access(path, os.W_OK)):
        raise SettingsError(f"{OPTIONS[flag][0]}: {path!r} is not a writable directory")
    return path


def _kubernetes_auth(text: str | None, store: str | None, tokens_file: str | None) -> bool:
    if not _flag("kubernetes-auth", text):
        return False
    if store != KUBERNETES:
        raise SettingsError("FRPA_KUBERNETES_AUTH needs FRPA_STORE=kubernetes")
    if tokens_file:
        raise SettingsError("FRPA_KUBERNETES_AUTH and FRPA_API_TOKENS_FILE: choose one")
    return True


def _flag(flag: str, text: str | None) -> bool:
    if text is None or text in ("0", "false"):
        return False
    if text in ("1", "true"):
        return True
    raise SettingsError(f"{OPTIONS[flag][0]} must be 1 or 0, not {text!r}")


def _plugin_secret(secret: str) -> str:
    # It is a path segment frps sends: keep it to characters that need no escaping.
    if secret and (len(secret) < 16 or not all(c.isalnum() or c in "-_" for c in secret)):
        raise SettingsError(f"{PLUGIN_SECRET_ENV} must be at least 16 letters, digits, '-' or '_'")
    return secret


def _ssh_key_file(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        read_client_key(path)
    except ValueError as e:
        raise SettingsError(f"FRPA_SSH_KEY_FILE: {e}") from e
    return path


def _readable_file(flag: str, path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise SettingsError(f"{OPTIONS[flag][0]}: cannot read {path!r}: {e.strerror}") from e
    return path


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
