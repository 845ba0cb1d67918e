"""The process's settings, each declared once: environment variable (the original
frp_adapter's names are honoured), flag, type, default, help, secret or not.

`Settings` is the declaration: every field is made by `_setting`, which carries the rest.
Parsing `--help` and the README's settings table are read from it. Loading only parses
text; files a setting names are opened where they are used, at start-up. A flag wins over
its variable; a bad value is a SettingsError naming what was given (flag or variable).
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, Literal, TypeVar

from schemas.labels import key_error

T = TypeVar("T")
FailureMode = Literal["open", "closed"]
LogFormat = Literal["text", "json"]

GROUPS = (
    "listen",
    "store",
    "frps",
    "node state",
    "admission",
    "SSH",
    "auth and audit",
    "notifications",
)
# The terminal client's (`frp-adapter ssh`, `exec`): the running adapter, and its token.
URL_VARIABLE = "FRPA_URL"
PORT_VARIABLE = "PORT"  # the original's: where to listen when FRP_ADAPTER_ADDRESS is unset
TOKEN_VARIABLE = "FRPA_TOKEN"  # noqa: S105  (a variable name)
_OURS = "FRPA_"
# frp's own config templating reads FRP_* variables too: an unknown one may be frp's.
_SHARED = "FRP_"
KUBERNETES = "kubernetes"
DEFAULT_FRPS = "default"
FRPS_BIND_PORT = 7000  # frps's own default `bindPort`
_SERVER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_USERINFO = re.compile(r"//[^/@\s]*@")
# A URL's query, up to whatever ends the URL in a text (space, quote, fragment).
_QUERY = re.compile(r"(://[^\s'\"?#]*\?)([^\s'\"#]*)")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Declared:
    """What a setting is, besides its name, type and default."""

    env: str
    group: str
    help: str
    parse: Callable[[str], Any]
    default_text: str  # the default as it is written, for --help and the README
    secret: bool  # read from the environment only: a flag would show in `ps`

    def flag(self, name: str) -> str | None:
        return None if self.secret else "--" + name.replace("_", "-")


def _setting(
    default: str | None,
    parse: Callable[[str], T],
    *,
    env: str,
    group: str,
    help: str,
    secret: bool = False,
) -> Any:
    declared = Declared(env, group, help, parse, default or "", secret)
    return field(
        default=None if default is None else parse(default),
        repr=not secret,
        metadata={"declared": declared},
    )


def redacted(text: str) -> str:
    """`text` with the userinfo and the query values of every URL in it removed, to show:
    secrets (a dashboard's password, a DingTalk robot's access_token) never reach a log, an
    error or a page."""
    return _QUERY.sub(_query_names, _USERINFO.sub("//", text))


def _query_names(found: re.Match[str]) -> str:
    """The query's parameter names, each value `***` (a part without `=` is all value)."""
    parts = (part.partition("=") for part in found[2].split("&"))
    return found[1] + "&".join(f"{name}=***" if eq else "***" for name, eq, _ in parts)


# Parsers: text in, value out; a ValueError's text completes "<flag or variable> ...".


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port or :port, not {text!r}")
    return host.strip("[]"), int(port)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:
        raise ValueError(f"must be seconds between 0 and 86400, not {text!r}")
    return seconds


# Ours, not the `backoff` package (its last release 2022) or tenacity's waits: a loop here
# counts its own failures (reset after a steady run, a long watch, a stored batch) and
# sleeps on the process's clock; what is left to share is `delay`, a line.
@dataclass(frozen=True, slots=True)
class Backoff:
    """The one retry policy: how long to wait before trying again after failures in a row.
    `first` seconds after the first, doubling (the factor), never more than `most`; each
    wait cut by a random part, up to `jitter` of it, so that what failed together (replicas
    relisting after the API server restarted, a webhook's outboxes) does not try again
    together. Never longer than `longest`, which the liveness probe is held against. One
    success starts it over."""

    first: float
    most: float
    jitter: float = 0.2

    def longest(self, failures_in_a_row: int) -> float:
        # Doubled as an exact integer, then capped: a float doubling overflows after ~1,000.
        return min(self.first * (1 << min(max(failures_in_a_row - 1, 0), 64)), self.most)

    def delay(self, failures_in_a_row: int) -> float:
        cut = self.jitter * random.random()  # noqa: S311  (a spread, not a secret)
        return self.longest(failures_in_a_row) * (1 - cut)


# The store writer's: the same policy started sooner and kept shorter than
# FRPA_RETRY_BACKOFF's, as a write answers 503 after 10 s unconfirmed and should have had
# several tries by then.
STORE_WRITE_BACKOFF = Backoff(0.1, 5.0)


def _backoff(text: str) -> Backoff:
    first, comma, most = text.partition(",")
    try:
        backoff = Backoff(_seconds(first), _seconds(most))
    except ValueError:
        comma = ""
    if not comma or not 0 < backoff.first <= backoff.most:
        raise ValueError(f"must be `first,most` seconds, 0 < first <= most, not {text!r}")
    return backoff


def _whole(most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not 0 < int(text) <= most:
            raise ValueError(f"must be from 1 to {most}, not {text!r}")
        return int(text)

    return parse


def _flag(text: str) -> bool:
    if text in ("0", "false"):
        return False
    if text in ("1", "true"):
        return True
    raise ValueError(f"must be 1 or 0, not {text!r}")


def _choice(*choices: T) -> Callable[[str], T]:
    def parse(text: str) -> T:
        for choice in choices:
            if text == choice or (isinstance(choice, str) and text.upper() == choice):
                return choice
        raise ValueError(f"must be {' or '.join(map(str, choices))}, not {text!r}")

    return parse


def _text(text: str) -> str:
    return text


def _store(url: str) -> str:
    if url != KUBERNETES:
        sqlite_path(url)
    return url


def sqlite_path(url: str) -> str:
    """The file a `sqlite:///relative.db` or `sqlite:////absolute.db` store URL names."""
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and sep and rest.startswith("/") and rest != "/":
        return rest[1:]
    raise ValueError(
        f"must be kubernetes, sqlite:///relative/file.db or sqlite:////absolute/file.db, "
        f"not {url!r}"
    )


def _frps_api(url: str) -> str:
    # The original took the proxy list URL (.../api/proxy/tcp); the base is what we need.
    base = url.rstrip("/").removesuffix("/api/proxy/tcp")
    if not base.startswith(("http://", "https://")) or base.endswith("://"):
        raise ValueError(f"must be an http(s) URL, not {redacted(url)!r}")
    return base


@dataclass(frozen=True, slots=True)
class FrpsServer:
    """One frps: its plugin calls arrive at `/frps/<name>/handler`; nodes dial `address`;
    frpc connects to `bind_port` there, which shows frps alive when it has no dashboard."""

    name: str
    address: str
    api: str | None = field(repr=False)  # its dashboard (may carry credentials)
    bind_port: int = FRPS_BIND_PORT


def _frps_host(text: str) -> tuple[str, int]:
    """`host`, `host:bind port` or `[IPv6]:bind port`; a bare IPv6 address has no port."""
    if text.count(":") == 1 or text.startswith("["):
        host, port = _address(text)
        if not host:
            raise ValueError(f"must name a host, not {text!r}")
        return host, port
    return text, FRPS_BIND_PORT


def _frps_servers(text: str) -> tuple[FrpsServer, ...]:
    servers = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, rest = entry.partition("=")
        address, _, api = rest.partition("=")
        if not _SERVER_NAME.fullmatch(name) or not address:
            raise ValueError(
                f"{redacted(entry)!r} is not name=address[:bind port][=dashboard URL] "
                "(names: lowercase letters, digits and '-')"
            )
        host, bind_port = _frps_host(address)
        servers.append(FrpsServer(name, host, _frps_api(api) if api else None, bind_port))
    for what, values in (
        ("names", [s.name for s in servers]),
        ("addresses", [s.address for s in servers]),
    ):
        if len(set(values)) != len(values):
            raise ValueError(f"frps {what} must differ")
    if not servers:
        raise ValueError("is empty")
    return tuple(servers)


def _webhook(url: str) -> str:
    # Not shown back: redacted() knows a URL's secrets only once it is a URL.
    if not url.startswith(("http://", "https://")) or url.endswith("://"):
        raise ValueError("must be an http(s) URL")
    return url


_ORIGIN = re.compile(r"https?://[^/\s:@?#]+(:\d{1,5})?")


def _origins(text: str) -> frozenset[str]:
    """Browser origins (`scheme://host[:port]`), or `*`: any origin, as the original had."""
    origins = frozenset(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins - {"*"}:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"{origin!r} is not an origin: scheme://host[:port] (no path), or * for any"
            )
    return origins


def _label_keys(text: str) -> tuple[str, ...]:
    keys = tuple(dict.fromkeys(key.strip() for key in text.split(",") if key.strip()))
    for key in keys:
        if why := key_error(key):
            raise ValueError(why)
    return keys


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(text: str) -> tuple[Network, ...]:
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in text.split(",")
            if part.strip()
        )
    except ValueError as e:
        raise ValueError(f"must be CIDRs, comma-separated: {e}") from e


def _port_range(text: str) -> range:
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit() and 0 < int(first) <= int(last) < 65536):
        raise ValueError(f"must be FIRST-LAST, e.g. 16000-16999, not {text!r}")
    return range(int(first), int(last) + 1)


def _plugin_secret(secret: str) -> str:
    # It is a path segment frps sends: keep it to characters that need no escaping.
    if secret and (len(secret) < 16 or not all(c.isalnum() or c in "-_" for c in secret)):
        raise ValueError("must be at least 16 letters, digits, '-' or '_'")
    return secret


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    address: tuple[str, int] = _setting(
        ":8888", _address, env="FRP_ADAPTER_ADDRESS", group="listen", help="where to listen"
    )
    metrics_address: tuple[str, int] | None = _setting(
        None,
        _address,
        env="FRPA_METRICS_ADDRESS",
        group="listen",
        help="`host:port`: serve `/metrics` there alone, not on the API's port",
    )
    plugin_address: tuple[str, int] | None = _setting(
        None,
        _address,
        env="FRPA_PLUGIN_ADDRESS",
        group="listen",
        help="`host:port`: serve frps's plugin calls there alone, not on the API's port",
    )
    metric_labels: tuple[str, ...] = _setting(
        "",
        _label_keys,
        env="FRPA_METRIC_LABELS",
        group="listen",
        help="label keys, comma-separated (e.g. `site,env`): an online/offline gauge per "
        "value of each, at most 100 values a key",
    )
    tls_cert_file: str | None = _setting(
        None,
        _text,
        env="FRPA_TLS_CERT_FILE",
        group="listen",
        help="serve HTTPS (API, shells, plugin) with this certificate chain, reloaded when it "
        "changes; with FRPA_TLS_KEY_FILE",
    )
    tls_key_file: str | None = _setting(
        None,
        _text,
        env="FRPA_TLS_KEY_FILE",
        group="listen",
        help="the certificate's private key, reloaded when it changes",
    )
    shutdown_timeout: float = _setting(
        "10",
        _seconds,
        env="FRPA_SHUTDOWN_TIMEOUT",
        group="listen",
        help="seconds from SIGTERM to exit: shells closed, requests finished, writes drained",
    )
    slow_reader_timeout: float = _setting(
        "30",
        _seconds,
        env="FRPA_SLOW_READER_TIMEOUT",
        group="listen",
        help="drop a client of a node list or watch that takes nothing of it this long, "
        "seconds (0: never)",
    )
    log_level: str = _setting(
        "INFO",
        _choice("DEBUG", "INFO", "WARNING", "ERROR"),
        env="FRPA_LOG_LEVEL",
        group="listen",
        help="one line per node status change at INFO",
    )
    log_format: LogFormat = _setting(
        "text",
        _choice("text", "json"),
        env="FRPA_LOG_FORMAT",
        group="listen",
        help="`json`: one object per line; transitions carry `node`, `from`, `to`, `reason`, "
        "`run_id`",
    )

    store: str = _setting(
        "sqlite:///frpa.db",
        _store,
        env="FRPA_STORE",
        group="store",
        help="node store: `kubernetes`, or SQLite (`sqlite:////abs/path.db` for an absolute path)",
    )
    event_namespace: str = _setting(
        "default",
        _text,
        env="FRPA_EVENT_NAMESPACE",
        group="store",
        help="namespace of the NMs' Kubernetes Events and of the leader Lease",
    )
    event_min_interval: float = _setting(
        "30",
        _seconds,
        env="FRPA_EVENT_MIN_INTERVAL",
        group="store",
        help="at most one Kubernetes Event per node this often, seconds",
    )

    frps_address: str = _setting(
        "127.0.0.1",
        _text,
        env="FRPA_FRPS_ADDRESS",
        group="frps",
        help="frps address recorded in each NM: what SSH dials",
    )
    frps_bind_port: int = _setting(
        str(FRPS_BIND_PORT),
        _whole(65535),
        env="FRPA_FRPS_BIND_PORT",
        group="frps",
        help="frps's `bindPort`, where frpc connects: without a dashboard, frps is alive while "
        "it accepts connections there",
    )
    frps_api: str | None = _setting(
        None,
        _frps_api,
        env="FRP_SERVER_API",
        group="frps",
        help="frps dashboard, `http://frps:7500` (the original's `.../api/proxy/tcp` works too)",
    )
    frps_api_user: str = _setting(
        "", _text, env="FRP_SERVER_HTTPAUTHUSERNAME", group="frps", help="dashboard user"
    )
    frps_api_password: str = _setting(
        "",
        _text,
        env="FRP_SERVER_HTTPAUTHPASSWORD",
        group="frps",
        help="dashboard password",
        secret=True,
    )
    frps_servers: tuple[FrpsServer, ...] | None = _setting(
        None,
        _frps_servers,
        env="FRPA_FRPS_SERVERS",
        group="frps",
        help="several frps, `name=address[:bind port][=dashboard URL],...`, instead of "
        "`FRPA_FRPS_ADDRESS`, `FRPA_FRPS_BIND_PORT` and `FRP_SERVER_API` (see frps setup)",
    )
    plugin_secret: str = _setting(
        "",
        _plugin_secret,
        env="FRPA_PLUGIN_SECRET",
        group="frps",
        help="the plugin path's secret segment (`frp-adapter frps-config` makes one)",
        secret=True,
    )
    plugin_failure_mode: FailureMode = _setting(
        "open",
        _choice("open", "closed"),
        env="FRPA_PLUGIN_FAILURE_MODE",
        group="frps",
        help="`open`: our own failure lets frpc in; `closed`: a failing store rejects Login "
        "and NewProxy",
    )

    unique_id_meta_key: str = _setting(
        "unique_id",
        _text,
        env="FRPA_UNIQUE_ID_META_KEY",
        group="node state",
        help="frpc `metadatas` key holding the node's id",
    )
    close_grace_period: float = _setting(
        "2",
        _seconds,
        env="FRPA_CLOSE_GRACE_PERIOD",
        group="node state",
        help="seconds a CloseProxy waits for a new NewProxy",
    )
    retry_backoff: Backoff = _setting(
        "1,60",
        _backoff,
        env="FRPA_RETRY_BACKOFF",
        group="node state",
        help="`first,most` seconds: a background task that failed, a lost Kubernetes watch, "
        "an unread store or an undelivered notification is tried again after `first`, "
        "doubling up to `most`, each wait cut by up to a fifth at random",
    )
    heartbeat_persist_interval: float = _setting(
        "30",
        _seconds,
        env="FRPA_HEARTBEAT_PERSIST_INTERVAL",
        group="node state",
        help="store a node's last Ping at most this often, seconds; with replicas keep it "
        "under the heartbeat timeout minus frpc's heartbeat interval",
    )
    heartbeat_timeout: float = _setting(
        "90",
        _seconds,
        env="FRPA_HEARTBEAT_TIMEOUT",
        group="node state",
        help="offline a pinging node silent this long, seconds (3 x frpc's heartbeatInterval)",
    )
    frps_down_after: float = _setting(
        "60",
        _seconds,
        env="FRPA_FRPS_DOWN_AFTER",
        group="node state",
        help="offline every online node of an frps unreachable this long (its dashboard, else "
        "its bind port), seconds; `0`: frps is not watched",
    )
    reconcile_interval: float = _setting(
        "60",
        _seconds,
        env="FRPA_RECONCILE_INTERVAL",
        group="node state",
        help="check every node against frps's dashboard this often, seconds",
    )

    require_registered: bool = _setting(
        "0",
        _flag,
        env="FRPA_REQUIRE_REGISTERED",
        group="admission",
        help="`1`: refuse the Login of a node that has no NM yet",
    )
    node_tokens: bool = _setting(
        "0",
        _flag,
        env="FRPA_NODE_TOKENS",
        group="admission",
        help="`1`: every Login must carry its node's own token in `metadatas.token`",
    )
    allowed_ports: range | None = _setting(
        None,
        _port_range,
        env="FRPA_ALLOWED_PORTS",
        group="admission",
        help="`FIRST-LAST`: remote ports SSH proxies may ask for",
    )

    ssh_user: str = _setting(
        "root",
        _text,
        env="FRPA_SSH_USER",
        group="SSH",
        help="the user shell and exec log in as on nodes",
    )
    ssh_key_file: str | None = _setting(
        None,
        _text,
        env="FRPA_SSH_KEY_FILE",
        group="SSH",
        help="private key for nodes' sshd (read at start-up)",
    )
    ssh_password: str = _setting(
        "",
        _text,
        env="FRPA_SSH_PASSWORD",
        group="SSH",
        help="password for nodes' sshd",
        secret=True,
    )
    ssh_known_hosts: str | None = _setting(
        None,
        _text,
        env="FRPA_SSH_KNOWN_HOSTS",
        group="SSH",
        help="known_hosts naming nodes by NM name; unset: pin each node's key on first use",
    )
    ssh_connect_timeout: float = _setting(
        "10",
        _seconds,
        env="FRPA_SSH_CONNECT_TIMEOUT",
        group="SSH",
        help="seconds to connect and log in to a node",
    )
    ssh_idle_timeout: float = _setting(
        "60",
        _seconds,
        env="FRPA_SSH_IDLE_TIMEOUT",
        group="SSH",
        help="seconds a node's SSH connection is kept unused for the next exec, file or "
        "shell (0: closed after each)",
    )
    ssh_max_connections: int = _setting(
        "1000",
        _whole(1000000),
        env="FRPA_SSH_MAX_CONNECTIONS",
        group="SSH",
        help="unused SSH connections kept at most (the least recently used closed first)",
    )
    exec_timeout: float = _setting(
        "60",
        _seconds,
        env="FRPA_EXEC_TIMEOUT",
        group="SSH",
        help="seconds an exec may run unless the call says otherwise",
    )
    exec_timeout_max: float = _setting(
        "3600",
        _seconds,
        env="FRPA_EXEC_TIMEOUT_MAX",
        group="SSH",
        help="the longest timeout an exec call may ask for, seconds",
    )
    exec_output_limit: int = _setting(
        "16777216",
        _whole(1 << 30),
        env="FRPA_EXEC_OUTPUT_LIMIT",
        group="SSH",
        help="bytes of stdout, and of stderr, an exec keeps",
    )
    ws_heartbeat: float = _setting(
        "20",
        _seconds,
        env="FRPA_WS_HEARTBEAT",
        group="SSH",
        help="seconds between WebSocket pings on shells (0: none)",
    )
    max_upload_bytes: int = _setting(
        "10737418240",
        _whole(1 << 50),
        env="FRPA_MAX_UPLOAD_BYTES",
        group="SSH",
        help="the largest file an upload may write to a node, bytes",
    )
    sftp_step_timeout: float = _setting(
        "120",
        _seconds,
        env="FRPA_SFTP_STEP_TIMEOUT",
        group="SSH",
        help="seconds one SFTP step (a stat, an open, a read of up to 2 MiB, a write) may "
        "wait for the node before the transfer is abandoned (0: no limit)",
    )
    max_forwards_per_user: int = _setting(
        "20",
        _whole(100000),
        env="FRPA_MAX_FORWARDS_PER_USER",
        group="SSH",
        help="port forwards one token may hold open at once",
    )
    forward_idle_timeout: float = _setting(
        "600",
        _seconds,
        env="FRPA_FORWARD_IDLE_TIMEOUT",
        group="SSH",
        help="close a port forward that carried nothing either way this long, seconds",
    )
    max_shells_per_user: int = _setting(
        "10",
        _whole(100000),
        env="FRPA_MAX_SHELLS_PER_USER",
        group="SSH",
        help="shells one token may hold open at once",
    )

    api_tokens_file: str | None = _setting(
        None,
        _text,
        env="FRPA_API_TOKENS_FILE",
        group="auth and audit",
        help="bearer tokens, one `token name role [label selector]` per line "
        "(roles: read, operator, admin)",
    )
    kubernetes_auth: bool = _setting(
        "0",
        _flag,
        env="FRPA_KUBERNETES_AUTH",
        group="auth and audit",
        help="`1`: bearer tokens are the cluster's (TokenReview), allowed by its RBAC "
        "(SubjectAccessReview)",
    )
    insecure_no_auth: bool = _setting(
        "0",
        _flag,
        env="FRPA_INSECURE_NO_AUTH",
        group="auth and audit",
        help="`1`: shells and exec without any authentication (never on a shared network)",
    )
    allowed_origins: frozenset[str] = _setting(
        "",
        _origins,
        env="FRPA_ALLOWED_ORIGINS",
        group="auth and audit",
        help="browser origins (`scheme://host[:port]`, comma-separated; `*`: any, as the "
        "original) whose pages may call the API, open shells and make token-less writes, "
        "besides the adapter's own",
    )
    trusted_networks: tuple[Network, ...] = _setting(
        "",
        _networks,
        env="FRPA_TRUSTED_NETWORKS",
        group="auth and audit",
        help="CIDRs (e.g. the patched frps's) whose calls to the reads and the original's "
        "state routes need no token, audited as such",
    )
    audit_log: str | None = _setting(
        None,
        _text,
        env="FRPA_AUDIT_LOG",
        group="auth and audit",
        help="file to append audit records of actions on nodes to (reopened after rotation); "
        "`-` for stdout",
    )
    shell_recordings: str | None = _setting(
        None,
        _text,
        env="FRPA_SHELL_RECORDINGS",
        group="auth and audit",
        help="directory to record every shell session in, asciicast v2 (`asciinema play`)",
    )

    dingtalk_webhook: str | None = _setting(
        None,
        _webhook,
        env="FRP_SERVER_WEBHOOK",
        group="notifications",
        help="DingTalk robot URL (`https://oapi.dingtalk.com/robot/send?access_token=...`): "
        "the original's message for each node created and each online/offline change",
        secret=True,
    )
    notify_url: str | None = _setting(
        None,
        _webhook,
        env="FRPA_NOTIFY_URL",
        group="notifications",
        help="URL to POST each node created and each online/offline change to, as JSON "
        "(see Notifications)",
        secret=True,
    )
    notify_interval: float = _setting(
        "10",
        _seconds,
        env="FRPA_NOTIFY_INTERVAL",
        group="notifications",
        help="at most one message per destination this often, seconds; changes meanwhile "
        "are summarised in the next",
    )

    def servers(self) -> tuple[FrpsServer, ...]:
        """Every frps whose plugin calls this adapter answers; the first is the default."""
        return self.frps_servers or (
            FrpsServer(DEFAULT_FRPS, self.frps_address, self.frps_api, self.frps_bind_port),
        )


def declared() -> Iterator[tuple[Field[Any], Declared]]:
    """Every setting, in declaration order (grouped)."""
    for f in fields(Settings):
        yield f, f.metadata["declared"]


def add_arguments(parser: argparse.ArgumentParser, shown: frozenset[str] | None = None) -> None:
    """A flag per setting that may have one, in groups; secrets, which have none, listed
    after them. With `shown`, only those settings are in the help (the others are still
    taken: the command reads the settings whole)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for f, setting in declared():
        flag = setting.flag(f.name)
        default = f" (default {setting.default_text})" if setting.default_text else ""
        told = f"{setting.help}{default} [{setting.env}]"
        if flag:
            groups[setting.group].add_argument(
                flag,
                metavar="VALUE",
                help=told if shown is None or f.name in shown else argparse.SUPPRESS,
            )
    secrets = [
        f"  {s.env:30} {s.help}"
        for f, s in declared()
        if s.secret and (shown is None or f.name in shown)
    ]
    told = "\n".join(["environment only (a flag would show in ps):", *secrets]) if secrets else ""
    parser.epilog = "\n\n".join(filter(None, [parser.epilog, told]))


def load_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Raises SettingsError for a bad value, or an unknown FRPA_ variable (a misspelling
    would otherwise be ignored)."""
    for name in environ:
        if name.startswith(_OURS) and name not in _known():
            raise SettingsError(_unknown(name))
        if name.startswith(_SHARED) and name not in _known() and _misspelt_original(name):
            raise SettingsError(_unknown(name))
    values: dict[str, Any] = {}
    given: dict[str, str] = {}  # setting -> the flag or variable it came from
    for f, setting in declared():
        flag = setting.flag(f.name)
        text: str | None = getattr(args, f.name, None) if flag else None
        source = flag
        if text is None:
            text, source = environ.get(setting.env) or None, setting.env
        if text is None:
            continue
        try:
            values[f.name] = setting.parse(text)
        except ValueError as e:
            raise SettingsError(f"{source}: {e}") from e
        given[f.name] = str(source)
    _check_together(given, values)
    if "address" not in given and (port := environ.get(PORT_VARIABLE)):
        # The original's `http` build listened on :$PORT (else :8080).
        try:
            values["address"] = _address(f":{port}")
        except ValueError as e:
            raise SettingsError(f"{PORT_VARIABLE}: {e}") from e
    return Settings(**values)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """What to say of each FRP_ variable no setting reads: frp's own, or a misspelling."""
    return [
        _unknown(name)
        for name in sorted(environ)
        if name.startswith(_SHARED) and name not in _known()
    ]


def _known() -> set[str]:
    return {setting.env for _, setting in declared()} | {URL_VARIABLE, TOKEN_VARIABLE}


def _misspelt_original(name: str) -> bool:
    """Whether an unknown FRP_ variable is one of the original's misspelt (FRP_ADAPTER_ADDR):
    other FRP_ variables may be frp's own, and are only warned of."""
    originals = {env for env in _known() if env.startswith(_SHARED)}
    return bool(difflib.get_close_matches(name, originals, n=1, cutoff=0.85))


def _unknown(name: str) -> str:
    nearest = difflib.get_close_matches(name, _known(), n=1)
    hint = f"; did you mean {nearest[0]}?" if nearest else " (frp-adapter serve --help)"
    return f"{name} is not a setting{hint}"


def _check_together(given: Mapping[str, str], values: Mapping[str, Any]) -> None:
    if "frps_servers" in given and {"frps_address", "frps_bind_port", "frps_api"} & given.keys():
        raise SettingsError(
            f"{given['frps_servers']} names every frps: drop FRPA_FRPS_ADDRESS, "
            "FRPA_FRPS_BIND_PORT and FRP_SERVER_API"
        )
    if ("tls_cert_file" in given) != ("tls_key_file" in given):
        raise SettingsError("FRPA_TLS_CERT_FILE and FRPA_TLS_KEY_FILE: give both, or neither")
    if values.get("kubernetes_auth"):
        if values.get("store") != KUBERNETES:
            raise SettingsError("FRPA_KUBERNETES_AUTH needs FRPA_STORE=kubernetes")
        if "api_tokens_file" in given:
            raise SettingsError("FRPA_KUBERNETES_AUTH and FRPA_API_TOKENS_FILE: choose one")


def settings_table() -> str:
    """The README's settings tables, a table per group."""
    lines: list[str] = []
    for group in GROUPS:
        lines += [f"#### {group[0].upper()}{group[1:]}", ""]
        lines += ["| Variable | Flag | Default | Meaning |", "|---|---|---|---|"]
        for f, setting in declared():
            if setting.group != group:
                continue
            flag = f"`{setting.flag(f.name)}`" if setting.flag(f.name) else "(none: secret)"
            default = f"`{setting.default_text}`" if setting.default_text else "unset"
            lines.append(f"| `{setting.env}` | {flag} | {default} | {setting.help} |")
        lines.append("")
    return "\n".join(lines)
