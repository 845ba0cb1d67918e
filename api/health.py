"""Probes: `/healthz` (every background task runs) and `/readyz` (the store can keep writes)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.state import STATE


async def healthz(request: web.Request) -> web.Response:
    """Alive unless a background task is down (ended, or failing again and again: see
    `nodes.supervisor`): then 503, so an orchestrator restarts a process that stays so."""
    down = request.app[STATE].adapter.supervisor.down()
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
    stats = request.app[STATE].adapter.stats()
    frps: dict[str, dict[str, Any]] = {}
    for name, each in stats.frps.items():
        if each.watched:
            since = each.unreachable_since
            frps[name] = {
                "reachable": each.reachable,
                "unreachable_since": since.isoformat() if since else None,
                "down": each.down,  # past FRPA_FRPS_DOWN_AFTER: its nodes offline
                "probe_error": each.probe_error,
            }
        if reconciliation := each.reconciliation:
            frps.setdefault(name, {}).update(
                {
                    "reconciliations": reconciliation.runs,
                    "corrections": reconciliation.corrections,
                    "failures": reconciliation.failures,
                    "last_error": reconciliation.last_error,
                }
            )
    problem = stats.store_problem
    return web.json_response(
        {
            "status": "not ready" if problem else "ready",
            "leading": stats.leading,
            "store": {
                "loaded": stats.loaded,
                "failing": stats.store_failing,
                "backlog": stats.store_backlog,
                "problem": problem,
            },
            "frps": frps,
            "tasks": {
                name: {
                    "state": status.state,
                    "restarts": status.restarts,
                    "last_error": status.last_error,
                }
                for name, status in stats.tasks.items()
            },
        },
        status=503 if problem else 200,
    )
