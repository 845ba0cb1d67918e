"""Probes: `/healthz` (every background task runs) and `/readyz` (the store can keep writes)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.keys import FRPS, LEADERSHIP, LOADED, RECONCILERS, STORE, SUPERVISOR, WRITER
from nodes.liveness import FrpsLiveness


async def healthz(request: web.Request) -> web.Response:
    """Alive unless a background task is down (ended, or failing again and again: see
    `nodes.supervisor`): then 503, so an orchestrator restarts a process that stays so."""
    down = request.app[SUPERVISOR].down()
    if down:
        return web.json_response({"status": "failing", "down": down}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready while the plugin path answers, which needs no store, and the store can keep
    what it is given: a deleted or unwritable SQLite file fails readiness (503). Background
    tasks are listed, with their restarts and last error, but do not count: the plugin path
    runs without them, and one down fails `/healthz`.

    An unreachable frps is named here, with since when, but leaves the adapter ready: the
    adapter is what serves its plugin calls as it comes back (and the other frps's
    meanwhile), and what tells the state of its nodes; unready, it would be taken out of
    its Service then, and frps would refuse every frpc Login."""
    writer = request.app[WRITER]
    problem = request.app[STORE].problem()
    frps: dict[str, dict[str, Any]] = {
        name: _liveness(live) for name, live in request.app[FRPS].items() if live.watched
    }
    for name, reconciler in request.app[RECONCILERS].items():
        frps.setdefault(name, {}).update(
            {
                "reconciliations": reconciler.runs,
                "corrections": reconciler.corrections,
                "failures": reconciler.failures,
                "last_error": reconciler.last_error,
            }
        )
    return web.json_response(
        {
            "status": "not ready" if problem else "ready",
            "leading": request.app[LEADERSHIP].leading,
            "store": {
                "loaded": request.app[LOADED].done(),
                "failing": writer.failing,
                "backlog": writer.backlog,
                "problem": problem,
            },
            "frps": frps,
            "tasks": {
                name: {
                    "state": status.state,
                    "restarts": status.restarts,
                    "last_error": status.last_error,
                }
                for name, status in request.app[SUPERVISOR].tasks().items()
            },
        },
        status=503 if problem else 200,
    )


def _liveness(live: FrpsLiveness) -> dict[str, Any]:
    unreachable = live.unreachable
    since = live.unreachable_since if unreachable else None
    return {
        "reachable": not unreachable,
        "unreachable_since": since.isoformat() if since else None,
        "down": live.down,  # past FRPA_FRPS_DOWN_AFTER: its nodes offline
        "probe_error": live.last_error if unreachable else None,
    }
