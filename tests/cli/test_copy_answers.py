"""`frp-adapter cp -r` against answers a real node cannot be made to give on cue: a
refusal in the middle of a tree (the node gone offline, the token's rights changed), and
listings with names that are no names. The CLI runs as a process; the files API it talks
to answers as the adapter's does (its JSON shapes, statuses and envelopes)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

NODE = "nodemaintenances-n1"


def entry(name: Any, kind: str = "file") -> dict[str, Any]:
    return {"name": name, "type": kind, "size": 1, "mode": 0o644, "mtime": 0}


async def adapter(aiohttp_server: AiohttpServer, tree: dict[str, Any]) -> str:
    """The files route over `tree`: a path's listing (a list of entries), its bytes, or a
    (status, error, details) refusal."""

    async def files(request: web.Request) -> web.StreamResponse:
        held = tree.get(request.query["path"], (404, "no such file", "gone"))
        if isinstance(held, list):
            return web.json_response({"path": request.query["path"], "items": held})
        if isinstance(held, bytes):
            return web.Response(body=held, content_type="application/octet-stream")
        if isinstance(held, dict):  # an answer without the parts the CLI reads
            return web.json_response(held)
        status, error, details = held
        return web.json_response({"error": error, "details": details}, status=status)

    app = web.Application()
    app.router.add_get(f"/api/v1/nodes/{NODE}/files", files)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def cp_r(url: str, source: str, destination: Path) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "cp", "-r", "--url", url, source, str(destination),
        env={**os.environ, "FRPA_TOKEN": "t"}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, err.decode().splitlines()


@pytest.mark.parametrize(
    ("status", "error"), [(403, "forbidden"), (409, "node offline"), (504, "node timed out")]
)
async def test_a_refusal_in_the_middle_of_a_tree_stops_it_in_words(
    aiohttp_server: AiohttpServer, tmp_path: Path, status: int, error: str
) -> None:
    """Not an empty directory and exit 0, as before: the adapter's words, and 255."""
    url = await adapter(
        aiohttp_server,
        {
            "/d": [entry("a"), entry("sub", "directory")],
            "/d/a": b"a",
            "/d/sub": (status, error, "why"),
        },
    )
    code, said = await cp_r(url, f"{NODE}:/d", tmp_path / "copy")
    assert (code, said) == (255, [f"frp-adapter: /d/sub: {error}: why"])
    assert (tmp_path / "copy" / "a").read_bytes() == b"a"
    assert not (tmp_path / "copy" / "sub").exists()


async def test_names_that_are_no_names_are_said_and_the_rest_copied(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    bad = ["", ".", "..", "a/b", "../../escape", "nul\0name", 7]
    url = await adapter(
        aiohttp_server, {"/d": [*(entry(name) for name in bad), entry("good")], "/d/good": b"g"}
    )
    code, said = await cp_r(url, f"{NODE}:/d", tmp_path / "here" / "copy")
    assert code == 1
    assert said == [
        f"frp-adapter: /d: the node listed {name!r}, which is no name: skipped" for name in bad
    ]
    assert sorted(os.listdir(tmp_path / "here")) == ["copy"]
    assert os.listdir(tmp_path / "here" / "copy") == ["good"]


@pytest.mark.parametrize(
    "answer", [{"path": "/d"}, {"items": "no list"}, {"items": [{"name": "x"}]}]
)
async def test_an_answer_the_adapter_does_not_give_is_said_without_a_traceback(
    aiohttp_server: AiohttpServer, tmp_path: Path, answer: dict[str, Any]
) -> None:
    url = await adapter(aiohttp_server, {"/d": answer})
    code, said = await cp_r(url, f"{NODE}:/d", tmp_path / "copy")
    assert code == 255
    assert len(said) == 1
    assert said[0].startswith("frp-adapter: cp failed: an answer the adapter does not give")


async def test_an_adapter_gone_mid_tree_stops_the_copy(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """Gone after the second file (nothing listens there any more): not one failed item
    after another, each waiting for a connection of its own, but one line and 255."""
    puts: list[str] = []
    listening: list[web.BaseSite] = []

    async def put(request: web.Request) -> web.StreamResponse:
        puts.append(request.query["path"])
        body = await request.read()
        digest = hashlib.sha256(body).hexdigest()
        answer = web.json_response({"path": request.query["path"], "size": 1, "sha256": digest})
        if len(puts) == 2:
            for site in listening:
                await site.stop()
            answer.force_close()
        return answer

    async def mkdir(request: web.Request) -> web.Response:
        return web.json_response({"path": request.query["path"]})

    async def files(request: web.Request) -> web.Response:
        return web.json_response({"error": "no such file", "details": "gone"}, status=404)

    app = web.Application()
    app.router.add_put(f"/api/v1/nodes/{NODE}/files", put)
    app.router.add_get(f"/api/v1/nodes/{NODE}/files", files)
    app.router.add_post(f"/api/v1/nodes/{NODE}/directories", mkdir)
    server = await aiohttp_server(app)
    assert server.runner is not None
    listening.extend(server.runner.sites)
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in "abcd":
        (tree / name).write_bytes(b"x")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "cp", "-r", "--url", str(server.make_url("")),
        str(tree), f"{NODE}:/t", env={**os.environ, "FRPA_TOKEN": "t"},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 30)
    said = err.decode().splitlines()
    assert process.returncode == 255
    assert len(said) == 1
    assert said[0].startswith("frp-adapter: cp failed: "), said
    assert len(puts) == 2
