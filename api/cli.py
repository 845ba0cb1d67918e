"""`frp-adapter [serve] [--flags]` runs the adapter; `frp-adapter unique-id` prints the id."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from api.app import create_app
from api.settings import SettingsError, add_arguments, load_settings
from nodes.identity import NoPhysicalInterfaceError, physical_macs, unique_id_from_macs
from nodes.store import StoreError

_COMMANDS = ("serve", "unique-id")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0] not in (*_COMMANDS, "-h", "--help")):
        args.insert(0, "serve")
    parser = argparse.ArgumentParser(
        prog="frp-adapter", description="frps server plugin that keeps NodeMaintenance status"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_arguments(commands.add_parser("serve", help="run the adapter (the default)"))
    commands.add_parser("unique-id", help="print this host's unique_id for frpc's metadatas")
    parsed = parser.parse_args(args)
    if parsed.command == "unique-id":
        sys.exit(_print_unique_id())
    sys.exit(_serve(parsed))


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with a state transition's fields as keys of their own."""

    FIELDS = ("node", "from", "to", "reason", "run_id")

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{key: getattr(record, key) for key in self.FIELDS if hasattr(record, key)},
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _print_unique_id() -> int:
    try:
        print(unique_id_from_macs(physical_macs()))
    except (NoPhysicalInterfaceError, OSError) as e:
        print(f"frp-adapter: cannot compute unique_id: {e}", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args, os.environ)
    except SettingsError as e:
        print(f"frp-adapter: {e}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if settings.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    try:
        web.run_app(
            create_app(settings),
            host=settings.host or None,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout,
            access_log=None,
            print=None,
        )
    except (StoreError, OSError) as e:
        print(f"frp-adapter: {e}", file=sys.stderr)
        return 1
    return 0
