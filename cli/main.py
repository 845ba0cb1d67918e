"""`frp-adapter [serve] [--flags]` runs the adapter; `unique-id` prints this host's id;
`ssh NM_NAME` and `exec NM_NAME -- CMD` talk to a running adapter."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import gc
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

import aiohttp
from aiohttp import web

from api.app import IDLE_CONNECTION_SECONDS, create_app
from api.state import STATE
from cli import client, fleet
from cli.configs import frpc_config, frps_config
from cli.identity import NoPhysicalInterfaceError, physical_macs, unique_id_from_macs
from cli.limits import accept_errors, raise_file_limit
from cli.logs import setup_logging
from nodes.model import InvalidUniqueIdError, nm_name, parse_unique_id
from nodes.store import StoreError
from schemas.settings import (
    TOKEN_VARIABLE,
    URL_VARIABLE,
    Settings,
    SettingsError,
    add_arguments,
    load_settings,
    unknown_variables,
)

logger = logging.getLogger(__name__)
_COMMANDS = (
    "serve",
    "unique-id",
    "frps-config",
    "frpc-config",
    "ssh",
    "exec",
    "cp",
    "ls",
    "port-forward",
)


def main(argv: Sequence[str] | None = None) -> None:
    args = _kubeconfig(list(sys.argv[1:] if argv is None else argv))
    if args and not args[0].startswith("-") and args[0] not in _COMMANDS:
        nearest = difflib.get_close_matches(args[0], _COMMANDS, n=1)
        hint = f"; did you mean {nearest[0]}?" if nearest else ""
        sys.exit(f"frp-adapter: no command {args[0]!r}{hint} (commands: {', '.join(_COMMANDS)})")
    if not args or (args[0] not in (*_COMMANDS, "-h", "--help")):
        args.insert(0, "serve")
    parser, subcommands = _parser()
    parsed, unknown = parser.parse_known_args(args)
    if unknown:
        _refuse_unknown(subcommands[parsed.command], unknown)
    if parsed.command == "unique-id":
        sys.exit(_print_unique_id())
    if parsed.command == "frps-config":
        sys.exit(_print_frps_config(parsed))
    token = os.environ.get(TOKEN_VARIABLE)
    if parsed.command == "frpc-config":
        _run_client(_print_frpc_config(parsed, token))
    if parsed.command == "ssh":
        _run_client(client.ssh(parsed.url, parsed.nm_name, token))
    if parsed.command == "ls":
        listing = fleet.list_nodes(parsed.url, parsed.selector, parsed.field_selector, token)
        _run_client(listing)
    if parsed.command == "cp":
        _run_client(_copy(parsed, token))
    if parsed.command == "port-forward":
        local, _, remote = parsed.ports.rpartition(":")
        if not remote.isdigit() or not (local or "0").isdigit():
            parser.error("port-forward needs [LOCAL:]REMOTE ports, e.g. 8080:80 or 5432")
        forwarding = client.port_forward(
            parsed.url, parsed.nm_name, int(local or remote), int(remote), token
        )
        with contextlib.suppress(KeyboardInterrupt):
            sys.exit(asyncio.run(forwarding))
        sys.exit(0)
    if parsed.command == "exec":
        _run_client(_exec(parser, parsed, token))
    sys.exit(_serve(parsed))


def _run_client(command: Coroutine[Any, Any, int]) -> NoReturn:
    """Exit with what `command` returns; Ctrl-C (where it is not the node's, as in a raw
    terminal) ends it as it ends a shell's command: 130, without a traceback."""
    try:
        sys.exit(asyncio.run(command))
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)


async def _copy(parsed: argparse.Namespace, token: str | None) -> int:
    if parsed.selector and parsed.recursive:
        return client.fail("cp -l copies one file to many nodes: -r is for one node")
    if parsed.selector:
        return await fleet.copy_to_many(
            parsed.url, parsed.selector, parsed.source, parsed.destination, token
        )
    return await client.copy(
        parsed.url, parsed.source, parsed.destination, token, recursive=parsed.recursive
    )


async def _exec(
    parser: argparse.ArgumentParser, parsed: argparse.Namespace, token: str | None
) -> int:
    command = parsed.cmd[1:] if parsed.cmd[:1] == ["--"] else parsed.cmd
    if parsed.selector:  # no node is named: what argparse took for one is the command
        command = [parsed.nm_name, *command] if parsed.nm_name else command
    if not command or not (parsed.selector or parsed.nm_name):
        parser.error("exec needs a node and a command: exec NM_NAME -- CMD, or -l SELECTOR -- CMD")
    if parsed.selector:
        return await fleet.run_on_many(parsed.url, parsed.selector, command, parsed.timeout, token)
    return await client.run(parsed.url, parsed.nm_name, command, parsed.timeout, token)


def _kubeconfig(args: list[str]) -> list[str]:
    """`args` without the original's `-kubeconfig PATH` (Go's flag package also takes
    `--kubeconfig`, and `=PATH`), which sets KUBECONFIG, as the flag meant there."""
    rest: list[str] = []
    taken = iter(args)
    for arg in taken:
        name, eq, value = arg.partition("=")
        if name not in ("-kubeconfig", "--kubeconfig"):
            rest.append(arg)
            continue
        path = value if eq else next(taken, "")
        if not path:
            sys.exit(f"frp-adapter: {name} needs a path")
        os.environ["KUBECONFIG"] = path
    return rest


def _refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exits with the subcommand's usage and the flag it has nearest to the first unknown
    (argparse names neither)."""
    given = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
    flags = [flag for action in parser._actions for flag in action.option_strings]
    nearest = difflib.get_close_matches(given.partition("=")[0], flags, n=1)
    hint = f"; did you mean {nearest[0]}?" if nearest else ""
    parser.error(f"unrecognized argument {given!r}{hint}")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="frp-adapter", description="frps server plugin that keeps NodeMaintenance status"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_arguments(commands.add_parser("serve", help="run the adapter (the default)"))
    commands.add_parser("unique-id", help="print this host's unique_id for frpc's metadatas")
    add_arguments(
        command(
            commands,
            "frps-config",
            "print the frps.toml lines these settings need (plugin, dashboard)",
            "frp-adapter frps-config >> frps.toml",
        ),
        _FRPS,
    )
    node_config = command(
        commands,
        "frpc-config",
        "print an edge node's frpc.toml (issues its token with node tokens)",
        "FRPA_URL=http://adapter:8888 FRPA_TOKEN=... frp-adapter frpc-config node-1 > frpc.toml",
    )
    add_arguments(node_config, _FRPS | {"unique_id_meta_key", "node_tokens", "allowed_ports"})
    _add_url(node_config)
    node_config.add_argument("--frps", help="the frps it logs in to (default: the first)")
    node_config.add_argument(
        "--local-port", type=int, default=22, help="the node's sshd port (default 22)"
    )
    node_config.add_argument(
        "--force", action="store_true", help="replace the node's frpc token if it has one"
    )
    node_config.add_argument("unique_id")
    shell = command(
        commands,
        "ssh",
        "open a shell on a node (NM name); input from a pipe runs and ends as ssh -T",
        "frp-adapter ssh nodemaintenances-node-1",
    )
    _add_url(shell)
    shell.add_argument("nm_name")
    listing = command(
        commands, "ls", "list nodes: ls [-l SELECTOR]", "frp-adapter ls -l 'site=sh,env in (prod)'"
    )
    _add_url(listing)
    _add_selector(listing)
    listing.add_argument(
        "--field-selector", help="by status (online, offline) or frps, e.g. status=online"
    )
    remote = commands.add_parser(
        "exec",
        help="run a command on a node, or on every online node a selector chooses: "
        "exec NM_NAME -- CMD, exec -l SELECTOR -- CMD",
        description="Run CMD on a node (or on every online node SELECTOR chooses) and exit "
        "with its status, as ssh does. As ssh, the words of CMD are joined with spaces and "
        "the node's shell reads the line: quote what must stay one word for it, e.g. "
        "exec NODE -- sh -c \"'echo out; exit 7'\" (or exec NODE -- 'echo out; exit 7').",
    )
    _add_url(remote)
    _add_selector(remote)
    remote.add_argument("--timeout", type=float, help="seconds (default: the adapter's)")
    remote.add_argument("nm_name", nargs="?")
    remote.add_argument("cmd", nargs=argparse.REMAINDER)
    copying = command(
        commands,
        "cp",
        "copy files to or from a node, as scp: cp [-r] SRC DST, one of them NM_NAME:/path; "
        "or a file to every online node a selector chooses: cp -l SELECTOR FILE :/path",
        "frp-adapter cp app.conf nodemaintenances-node-1:/etc/app/\n"
        "  frp-adapter cp -r nodemaintenances-node-1:/var/log/app ./logs",
    )
    _add_url(copying)
    _add_selector(copying)
    copying.add_argument(
        "-r", "--recursive", action="store_true", help="copy directories, and what is in them"
    )
    copying.add_argument("source")
    copying.add_argument("destination")
    forward = command(
        commands,
        "port-forward",
        "reach a node's local port: port-forward NM_NAME [LOCAL:]REMOTE",
        "frp-adapter port-forward nodemaintenances-node-1 8080:80",
    )
    _add_url(forward)
    forward.add_argument("nm_name")
    forward.add_argument("ports", metavar="[LOCAL:]REMOTE")
    return parser, commands.choices


# The settings frps-config and frpc-config read; the others are taken but not shown.
_FRPS = frozenset(
    {"address", "frps_address", "frps_bind_port", "frps_api", "frps_api_user", "frps_api_password",
     "frps_servers", "plugin_secret"}
)  # fmt: skip


def command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    does: str,
    example: str,
) -> argparse.ArgumentParser:
    """A subcommand that says in one line what it does, and shows an example."""
    return commands.add_parser(
        name,
        help=does,
        description=does[0].upper() + does[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_selector(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-l", "--selector", help="nodes by label, as kubectl takes it: site=sh,env in (prod)"
    )


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        type=client.adapter_url,
        default=os.environ.get(URL_VARIABLE, client.DEFAULT_URL),
        help=f"the running adapter [{URL_VARIABLE}, default {client.DEFAULT_URL}]",
    )


def _print_unique_id() -> int:
    try:
        print(unique_id_from_macs(physical_macs()))
    except (NoPhysicalInterfaceError, OSError) as e:
        print(f"frp-adapter: cannot compute unique_id: {e}", file=sys.stderr)
        return 1
    return 0


def _print_frps_config(args: argparse.Namespace) -> int:
    """frps sends no header: without a secret on the plugin path, anyone who reaches the
    adapter can pose as frps. So a secret is made up when the settings have none."""
    try:
        settings = load_settings(args, os.environ)
    except SettingsError as e:
        print(f"frp-adapter: {e}", file=sys.stderr)
        return 2
    secret = settings.plugin_secret
    if not secret:
        secret = secrets.token_urlsafe(24)
        print(f"# Start the adapter with FRPA_PLUGIN_SECRET={secret}, and give frps:\n")
    host = (settings.plugin_address or settings.address)[0] or socket.gethostname()
    print(frps_config(settings, host, secret), end="")
    return 0


async def _print_frpc_config(args: argparse.Namespace, token: str | None) -> int:
    try:
        settings = load_settings(args, os.environ)
        uid = parse_unique_id(args.unique_id)
    except (SettingsError, InvalidUniqueIdError) as e:
        print(f"frp-adapter: {e}", file=sys.stderr)
        return 2
    servers = {server.name: server for server in settings.servers()}
    server = servers.get(args.frps) if args.frps else next(iter(servers.values()))
    if server is None:
        print(f"frp-adapter: no frps {args.frps!r}: {', '.join(servers)}", file=sys.stderr)
        return 2
    node_token = None
    if settings.node_tokens:
        try:
            node_token = await client.issue_frpc_token(
                args.url, nm_name(uid), token, force=args.force
            )
        except (aiohttp.ClientError, ValueError, KeyError) as e:
            print(f"frp-adapter: cannot issue the node's token at {args.url}: {e}", file=sys.stderr)
            return client.UNREACHABLE
    print(frpc_config(settings, server, uid, node_token, args.local_port), end="")
    return 0


async def _freeze_what_lives_for_good(_: web.Application) -> None:
    """Everything made by now (modules, the app, the registry's and writer's maps) lives as
    long as the process. A full garbage collection walks every item of every tracked map:
    at 50,000 nodes that held the loop 45-65 ms. Frozen, they are no longer walked."""
    gc.freeze()


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args, os.environ)
        app = create_app(settings)
    except SettingsError as e:
        print(f"frp-adapter: {e}", file=sys.stderr)
        return 2
    setup_logging(settings)
    for doubt in unknown_variables(os.environ):
        logger.warning("%s: ignored", doubt)
    logger.info("open files limit: %d", raise_file_limit())
    _say_what_is_open(settings)
    app.cleanup_ctx.insert(0, accept_errors)
    app.on_startup.append(_freeze_what_lives_for_good)  # after every cleanup_ctx start
    try:
        web.run_app(
            app,
            host=settings.address[0] or None,
            port=settings.address[1],
            keepalive_timeout=IDLE_CONNECTION_SECONDS,
            # In-flight requests get half the budget; the writes to drain, the rest.
            shutdown_timeout=settings.shutdown_timeout / 2,
            ssl_context=tls.served if (tls := app[STATE].tls) else None,
            access_log=None,
            print=lambda _: _say_listening(settings),
        )
    except (StoreError, OSError) as e:
        print(f"frp-adapter: {e}", file=sys.stderr)
        return 1
    return 0


def _say_listening(settings: Settings) -> None:
    host, port = settings.address
    scheme = "https" if settings.tls_cert_file else "http"
    logger.info("listening on %s://%s:%d", scheme, host or "0.0.0.0", port)  # noqa: S104
    if settings.metrics_address is not None:
        host, port = settings.metrics_address
        logger.info("metrics on http://%s:%d/metrics", host or "0.0.0.0", port)  # noqa: S104
    if settings.plugin_address is not None:
        host, port = settings.plugin_address
        logger.info("frps plugin calls on %s://%s:%d", scheme, host or "0.0.0.0", port)  # noqa: S104


def _say_what_is_open(settings: Settings) -> None:
    if settings.insecure_no_auth:
        logger.warning(
            "FRPA_INSECURE_NO_AUTH=1: anyone who reaches this port can open shells and run "
            "commands on every node, and change every node's state"
        )
    elif not settings.api_tokens_file and not settings.kubernetes_auth:
        logger.warning(
            "no FRPA_API_TOKENS_FILE: anyone who reaches this port may read nodes and use the "
            "original's state routes; shells, exec, frpc tokens and host-key pins are disabled"
        )
    if not settings.plugin_secret:
        logger.warning(
            "no FRPA_PLUGIN_SECRET: anyone who reaches this port can send plugin calls as "
            "if from frps (`frp-adapter frps-config` prints a plugin block with a secret)"
        )
    for server in settings.servers():
        if server.api is None:
            logger.warning(
                "frps %s has no dashboard configured: remote ports frps picks at random stay "
                "unknown, nothing missed while the adapter was down is corrected, and a "
                "CloseProxy is judged by its run_id and session alone",
                server.name,
            )
