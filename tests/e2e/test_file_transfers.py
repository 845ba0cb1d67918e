"""Transfers are exact: whatever the body's size and however it is cut, every upload route
stores on the node the bytes sent and reports their size and sha256. One adapter, frps,
frpc and sshd serve the whole module; the node is this machine, so its disk is read
directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cli.client import copy
from tests.e2e.peers import FrpSetup, node_online, sshd_behind_frps
from tests.support import TOKENS, bearer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
NODE = "nodemaintenances-edge-1"
MIB = 1 << 20
EDGES = (0, 1, 4095, 4096, 4097, MIB - 1, MIB, MIB + 1)
SMALL = 16 << 10  # the largest body sent in 1-byte pieces: 16,384 chunks
ROUTES = ("put", "batch", "cp")
CUTS = ("one", "bytes", "random", "slow")
# Each example moves up to a few MiB through frps and opens an SSH connection of its own:
# enough of them to cover the edges and more, in well under a minute.
TRANSFERS = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
RUNS: dict[str, int] = {}
Test = TypeVar("Test", bound=Callable[..., Any])


@dataclass
class Node:
    frp: FrpSetup
    sshd_port: int
    directory: Path  # on the node's disk (this machine's)
    session: aiohttp.ClientSession
    made: Iterator[int] = field(default_factory=lambda: iter(range(1 << 30)))

    def url(self, path: Path | str) -> str:
        return f"{self.frp.adapter_url}/api/v1/nodes/{NODE}/files?path={path}"

    def fresh(self, name: str) -> Path:
        """A path no example wrote before."""
        return self.directory / f"{name}-{next(self.made)}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    directory = tmp_path_factory.mktemp("transfers")
    started = time.monotonic()
    async with sshd_behind_frps(directory) as (frp, sshd):
        frp.start_frpc("edge", "edge-1", local_port=sshd.port)
        await node_online(frp, NODE)
        (directory / "files").mkdir()
        async with aiohttp.ClientSession(headers=bearer("operator")) as session:
            yield Node(frp, sshd.port, directory / "files", session)
    print(f"\nfile transfers: {RUNS} examples in {time.monotonic() - started:.1f} s")


@dataclass(frozen=True)
class Upload:
    route: str
    cut: str
    size: int
    seed: int
    cuts: tuple[int, ...] = ()  # where a `random` cut splits the body

    def body(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size)

    def pieces(self, body: bytes) -> list[bytes]:
        if self.cut == "bytes":
            return [body[i : i + 1] for i in range(len(body))]
        if self.cut == "slow":
            step = max(len(body) // 4, 1)
            return [body[i : i + step] for i in range(0, len(body), step)]
        ends = sorted({0, len(body), *(c % (len(body) + 1) for c in self.cuts)})
        return [body[a:b] for a, b in itertools.pairwise(ends)]


@st.composite
def uploads(draw: st.DrawFn) -> Upload:
    route, cut = draw(st.sampled_from(ROUTES)), draw(st.sampled_from(CUTS))
    most = SMALL if cut == "bytes" else 3 * MIB
    size = draw(st.sampled_from([s for s in EDGES if s <= most]) | st.integers(0, most))
    cuts = tuple(draw(st.lists(st.integers(0, most), max_size=40))) if cut == "random" else ()
    return Upload(route, cut, size, draw(st.integers(0, 1 << 32)), cuts)


def upload_grid() -> Iterator[Upload]:
    """Every edge size by every cut and route (cp cuts the file itself; 1-byte pieces only
    for small bodies)."""
    for route in ROUTES:
        for cut in CUTS if route != "cp" else ("one",):
            for size in EDGES:
                if cut != "bytes" or size <= SMALL:
                    yield Upload(route, cut, size, seed=size, cuts=(1, 4096, size // 2))


def with_grid(grid: Iterator[Upload]) -> Callable[[Test], Test]:
    """Each case of `grid` as an explicit example: run every time, before any drawn one."""

    def add(test: Test) -> Test:
        for case in grid:
            test = example(case=case)(test)
        return test

    return add


async def send(node: Node, case: Upload, body: bytes, target: Path) -> dict[str, Any]:
    """`body` to `target` by `case`'s route, cut as `case` says: what the adapter reports."""
    pieces = case.pieces(body)

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            if case.cut == "slow":
                await asyncio.sleep(0.02)  # each piece reaches the adapter on its own
            yield piece

    # One piece: the whole body with its Content-Length; else chunked, a chunk a piece.
    data: io.BytesIO | AsyncIterator[bytes] = io.BytesIO(body) if case.cut == "one" else chunks()
    if case.route == "put":
        async with node.session.put(node.url(target), data=data) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
        return answer
    if case.route == "batch":
        async with node.session.put(
            f"{node.frp.adapter_url}/api/v1/files",
            params={"path": str(target), "nodes": NODE},
            data=data,
        ) as resp:
            assert resp.status == 200, await resp.text()
            (line,) = [json.loads(line) async for line in resp.content]
        assert line.pop("node") == NODE, line
        return dict(line)
    source = node.directory.parent / f"{target.name}.local"
    source.write_bytes(body)
    # `frp-adapter cp` fails unless the node holds the size and sha256 it read and sent.
    assert (
        await copy(node.frp.adapter_url, str(source), f"{NODE}:{target}", TOKENS["operator"]) == 0
    )
    source.unlink()
    return {"path": str(target), "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@TRANSFERS
@given(case=uploads())
@with_grid(upload_grid())
async def test_every_upload_route_stores_the_bytes_sent_and_says_so(
    node: Node, case: Upload
) -> None:
    body = case.body()
    target = node.fresh(case.route)
    answer = await send(node, case, body, target)
    stored = target.read_bytes()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (
        len(body),
        hashlib.sha256(body).hexdigest(),
    )
    assert answer == {
        "path": str(target),
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    assert not list(node.directory.glob(".*.frpa-*"))
    target.unlink()
    RUNS["upload"] = RUNS.get("upload", 0) + 1


async def test_one_nodes_unexpected_failure_is_its_line_and_the_others_go_on(
    node: Node,
) -> None:
    admin = bearer("admin")
    # An NM whose frps address no resolver takes: dialling it fails with a ValueError.
    form = {"frp_server_ip_address": "a" * 253, "unique_id": "unresolvable-1", "port": "2222"}
    async with node.session.post(
        f"{node.frp.adapter_url}/frp_create", data=form, headers=admin
    ) as resp:
        assert resp.status == 200, await resp.text()
    form = {"unique_id": "unresolvable-1", "status": "online"}
    async with node.session.put(
        f"{node.frp.adapter_url}/frp_update", data=form, headers=admin
    ) as resp:
        assert resp.status == 200, await resp.text()
    target = node.fresh("batch")
    async with node.session.put(
        f"{node.frp.adapter_url}/api/v1/files",
        params={"path": str(target), "nodes": f"{NODE},nodemaintenances-unresolvable-1"},
        data=b"pushed",
    ) as resp:
        assert resp.status == 200
        lines = {
            line["node"]: line async for line in (json.loads(raw) async for raw in resp.content)
        }
    assert lines[NODE]["size"] == 6
    assert lines["nodemaintenances-unresolvable-1"]["error"] == "internal error"
    assert target.read_bytes() == b"pushed"
