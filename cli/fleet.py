"""`frp-adapter ls`, and `exec` and `cp` on every node a label selector chooses: the
versioned API's list and batches, from a terminal. Exit 0 when every node did its part,
1 when one did not, 255 when the adapter cannot be reached or refuses."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from cli.client import CONNECT_SECONDS, COPY_CHUNK, adapter_session, answer_of, fail, refusal_of
from nodes.clock import cause

FAILED = 1
_PAGE = 500


async def list_nodes(
    url: str, label_selector: str | None, field_selector: str | None, token: str | None
) -> int:
    """One line per node: its NM name, status, last change and labels, as `kubectl get
    --show-labels` prints them."""
    query = {"limit": str(_PAGE)}
    for key, value in (("labelSelector", label_selector), ("fieldSelector", field_selector)):
        if value:
            query[key] = value
    rows = [("NAME", "STATUS", "SINCE", "LABELS")]
    async with adapter_session(token) as session:
        try:
            while True:
                async with session.get(f"{url.rstrip('/')}/api/v1/nodes", params=query) as resp:
                    answer = await answer_of(resp)
                if resp.status != 200:
                    return fail(refusal_of(answer))
                rows.extend(_row(item) for item in answer["items"])
                if not (after := answer["metadata"].get("continue")):
                    break
                query["continue"] = after
        except (aiohttp.ClientError, ValueError) as e:
            return fail(f"cannot reach the adapter at {url}: {cause(e, CONNECT_SECONDS)}")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]
        )
    return 0


def _row(item: dict[str, Any]) -> tuple[str, str, str, str]:
    status = item.get("status", {})
    services = status.get("services") or [{}]
    labels = item["metadata"].get("labels") or {}
    return (
        item["metadata"]["name"],
        str(services[0].get("status", "")),
        str(status.get("lastTransitionTime", "")),
        ",".join(f"{key}={value}" for key, value in sorted(labels.items())) or "<none>",
    )


async def run_on_many(
    url: str, label_selector: str, command: list[str], time_limit: float | None, token: str | None
) -> int:
    """Run `command` on every online node `label_selector` chooses; each node's output as
    it ends, under a line naming it."""
    body: dict[str, Any] = {"cmd": " ".join(command), "labelSelector": label_selector}
    if time_limit is not None:
        body["timeout"] = time_limit
    lines = _lines(url, "POST", "/api/v1/exec", token, json=body)
    worst = 0
    async for line in lines:
        if isinstance(line, int):
            return line
        node = line["node"]
        if "error" in line:
            print(f"== {node}: {refusal_of(line)}", flush=True)
            worst = FAILED
            continue
        ended = "timed out" if line["timed_out"] else f"exit {line['exit_status']}"
        print(f"== {node} ({ended})", flush=True)
        sys.stdout.write(line["stdout"])
        sys.stderr.write(line["stderr"])
        if line["exit_status"] != 0 or line["timed_out"]:
            worst = FAILED
    return worst


async def copy_to_many(
    url: str, label_selector: str, source: str, destination: str, token: str | None
) -> int:
    """`cp -l SELECTOR FILE :/path`: the file to every online node the selector chooses;
    a path ending in `/` gets the file's name."""
    path = destination.removeprefix(":")
    if not path.startswith("/"):
        return fail(f"{destination}: the path on the nodes must be absolute, as :/path")
    if path.endswith("/"):
        path += os.path.basename(source)
    try:
        file = await asyncio.to_thread(open, source, "rb")
    except OSError as e:
        return fail(f"{source}: {e.strerror}")

    async def chunks() -> AsyncIterator[bytes]:
        with file:
            while chunk := await asyncio.to_thread(file.read, COPY_CHUNK):
                yield chunk

    query = {"path": path, "labelSelector": label_selector}
    worst = 0
    async for line in _lines(url, "PUT", "/api/v1/files", token, params=query, data=chunks()):
        if isinstance(line, int):
            return line
        if "error" in line:
            print(f"{line['node']}: {refusal_of(line)}")
            worst = FAILED
        else:
            print(f"{line['node']}: {line['path']} {line['size']} bytes sha256 {line['sha256']}")
    return worst


async def _lines(
    url: str, method: str, path: str, token: str | None, **request: Any
) -> AsyncIterator[dict[str, Any] | int]:
    """The NDJSON lines of a batch as they come; an exit status instead when it fails."""
    async with adapter_session(token) as session:
        try:
            async with session.request(method, f"{url.rstrip('/')}{path}", **request) as resp:
                if resp.status != 200:
                    answer = await answer_of(resp)
                    yield fail(refusal_of(answer))
                    return
                async for raw in resp.content:
                    yield json.loads(raw)
        except (aiohttp.ClientError, ValueError) as e:
            yield fail(f"cannot reach the adapter at {url}: {cause(e, CONNECT_SECONDS)}")
