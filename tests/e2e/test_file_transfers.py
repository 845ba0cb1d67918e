"""Transfers are exact: whatever the body's size and however it is cut, every upload route
stores on the node the bytes sent and reports their size and sha256, and a download (a
Range of it, as RFC 9110 says) is the bytes the node holds. One adapter, frps, frpc and
sshd serve the whole module; the node is this machine, so its disk is read directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cli.client import copy
from tests.e2e.peers import FrpSetup, node_online, sshd_behind_frps
from tests.support import TOKENS, bearer, eventually

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
    # No warm connections: an SSH session's end is then its TCP connection's, which the
    # tests below watch from outside (tests/ssh/test_pool.py has the warm ones).
    async with sshd_behind_frps(directory, FRPA_SSH_IDLE_TIMEOUT="0") as (frp, sshd):
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


def with_grid(grid: Iterator[Upload | Download]) -> Callable[[Test], Test]:
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
        await copy(
            node.frp.adapter_url,
            str(source),
            f"{NODE}:{target}",
            TOKENS["operator"],
            recursive=False,
        )
        == 0
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


@dataclass(frozen=True)
class Download:
    size: int
    seed: int
    header: str | None
    reader: str  # whole, pieces (of `piece` bytes), cp
    piece: int = 1

    def expected(self, body: bytes) -> tuple[int, bytes]:
        """The status and body RFC 9110 asks for (416: none), by the header's own reading."""
        size = len(body)
        if self.header is None or not self.header.startswith("bytes="):
            return 200, body
        spec = self.header.removeprefix("bytes=")
        if "," in spec or spec.count("-") != 1:
            return 200, body
        first, last = spec.split("-")
        if not all(side.isdigit() or side == "" for side in (first, last)) or first == last == "":
            return 200, body
        if first == "":  # the last N bytes
            if int(last) == 0:
                return 416, b""
            part = body[-int(last) :]
        elif last and int(last) < int(first):
            return 200, body
        elif int(first) >= size:
            return 416, b""
        else:
            part = body[int(first) : int(last) + 1] if last else body[int(first) :]
        return (206 if len(part) < size else 200), part


def range_headers(size: int) -> st.SearchStrategy[str | None]:
    position = st.integers(0, size + 2)
    return st.one_of(
        st.none(),
        st.builds(lambda a, b: f"bytes={min(a, b)}-{max(a, b)}", position, position),
        st.builds(lambda a: f"bytes={a}-", position),
        st.builds(lambda n: f"bytes=-{n}", position),
        st.sampled_from(
            ["bytes=-0", "bytes=0-1,4-5", "bytes=abc", "bytes=5-3", "items=0-1", "bytes=-"]
        ),
    )


@st.composite
def downloads(draw: st.DrawFn) -> Download:
    size = draw(st.sampled_from(EDGES) | st.integers(0, 3 * MIB))
    reader = draw(st.sampled_from(["whole", "pieces", "cp"]))
    header = None if reader == "cp" else draw(range_headers(size))
    return Download(size, draw(st.integers(0, 1 << 32)), header, reader, draw(st.integers(1, MIB)))


def download_grid() -> Iterator[Download]:
    """Every edge size, whole and by each kind of Range header."""
    headers = (None, "bytes=1-", "bytes=-1", "bytes=-0", "bytes=0-1,4-5", "items=0-1")
    for size in EDGES:
        for header in headers:
            yield Download(size, seed=size, header=header, reader="whole")


@TRANSFERS
@given(case=downloads())
@with_grid(download_grid())
async def test_a_download_is_the_bytes_the_node_holds_or_the_range_asked(
    node: Node, case: Download
) -> None:
    source = node.fresh("held")
    body = random.Random(case.seed).randbytes(case.size)
    source.write_bytes(body)
    status, wanted = case.expected(body)
    if case.reader == "cp":
        copied = node.directory.parent / f"{source.name}.copied"
        assert (
            await copy(
                node.frp.adapter_url,
                f"{NODE}:{source}",
                str(copied),
                TOKENS["operator"],
                recursive=False,
            )
            == 0
        )
        assert copied.read_bytes() == body
        copied.unlink()
    else:
        headers = {} if case.header is None else {"Range": case.header}
        async with node.session.get(node.url(source), headers=headers) as resp:
            assert resp.status == status, (case.header, await resp.text())
            if status != 416:
                received = b""
                if case.reader == "whole":
                    received = await resp.read()
                else:
                    async for piece in resp.content.iter_chunked(case.piece):
                        received += piece
                assert (len(received), received == wanted) == (len(wanted), True)
    source.unlink()
    RUNS["download"] = RUNS.get("download", 0) + 1


@pytest.mark.parametrize(
    ("header", "status", "part"),
    [
        ("bytes=10-19", 206, slice(10, 20)),
        ("BYTES=10-19", 206, slice(10, 20)),
        ("bytes=990-", 206, slice(990, None)),
        ("bytes=-10", 206, slice(990, None)),
        ("bytes=0-5,", 206, slice(0, 6)),  # an empty list element counts for nothing
        ("bytes=0-", 200, slice(None)),
        ("bytes=-5000", 200, slice(None)),
        ("bytes=-0", 416, None),  # a zero-length suffix: unsatisfiable
        ("bytes=1000-", 416, None),
        ("bytes=0-1,5-6", 200, slice(None)),  # several ranges, not served: ignored
        ("bytes=5-3", 200, slice(None)),  # invalid: ignored
        ("bytes=abc", 200, slice(None)),
        ("bytes=-", 200, slice(None)),
        ("items=0-1", 200, slice(None)),  # another unit: ignored
    ],
)
async def test_range_headers_are_answered_as_rfc_9110_says(
    node: Node, header: str, status: int, part: slice | None
) -> None:
    source = node.fresh("ranged")
    body = os.urandom(1000)
    source.write_bytes(body)
    async with node.session.get(node.url(source), headers={"Range": header}) as resp:
        assert resp.status == status, await resp.text()
        if part is None:
            assert resp.headers["Content-Range"] == "bytes */1000"
        else:
            assert await resp.read() == body[part]


def sshd_connections(port: int) -> int:
    """TCP connections sshd on `port` still holds: open, or closed by the peer only."""
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.rpartition(":")[2], 16) == port and state in ("01", "08"):
            held += 1
    return held


async def sshd_idle(node: Node) -> bool:
    return sshd_connections(node.sshd_port) == 0


@pytest.mark.parametrize("kind", ["FIFO", "socket"])
async def test_only_regular_files_are_read_or_replaced(
    node: Node, kind: str, tmp_path: Path
) -> None:
    special = tmp_path / kind
    with socket.socket(socket.AF_UNIX) as listener:
        if kind == "FIFO":
            os.mkfifo(special)
        else:
            listener.bind(str(special))
        await eventually(partial(sshd_idle, node), what="no SSH session left from before")
        try:
            async with node.session.get(node.url(special)) as resp:
                assert resp.status == 400
                assert (await resp.json())[
                    "details"
                ] == f"{special}: is a {kind}, not a regular file"
            async with node.session.put(node.url(special), data=b"replaced?") as resp:
                assert resp.status == 400
                assert (await resp.json())[
                    "details"
                ] == f"{special}: is a {kind}, not a regular file"
            await eventually(partial(sshd_idle, node), what="the SSH session ended")
        finally:  # a node left blocked opening the FIFO is freed
            with contextlib.suppress(OSError):
                os.close(os.open(special, os.O_WRONLY | os.O_NONBLOCK))
    assert os.listdir(tmp_path) == [kind]


async def test_a_download_the_client_leaves_ends_its_ssh_session(node: Node) -> None:
    big = node.fresh("big")
    with big.open("wb") as file:
        file.truncate(1 << 30)  # sparse: a gibibyte to send, none of it on disk
    await eventually(partial(sshd_idle, node), what="no SSH session left from before")
    reader, writer = await asyncio.open_connection("127.0.0.1", node.frp.adapter_port)
    writer.write(
        f"GET /api/v1/nodes/{NODE}/files?path={big} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKENS['operator']}\r\n\r\n".encode()
    )
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readexactly(MIB)  # the transfer is under way
    assert sshd_connections(node.sshd_port) == 1
    writer.transport.abort()
    await eventually(partial(sshd_idle, node), what="the SSH session ended")
    big.unlink()


@pytest.mark.parametrize("name", ["n" * 255, "é" * 127], ids=["255 bytes", "254 bytes of é"])
async def test_a_name_of_up_to_255_bytes_uploads(node: Node, name: str) -> None:
    directory = node.fresh("names")
    directory.mkdir()
    async with node.session.put(node.url(directory / name), data=b"long name") as resp:
        assert resp.status == 200, await resp.text()
    assert [p.name for p in directory.iterdir()] == [name]
    assert (directory / name).read_bytes() == b"long name"


async def test_an_upload_removes_temporaries_abandoned_an_hour_before(node: Node) -> None:
    directory = node.fresh("abandoned")
    directory.mkdir()
    hours_ago = time.time() - 3700
    abandoned = ".app.conf.frpa-0123abcd"
    kept = {
        ".app.conf.frpa-4567cdef": time.time() - 1800,  # a live upload's, maybe
        ".app.conf.frpa-0123abc": hours_ago,  # not our name: 7 digits
        ".app.conf.frpa-0123ABCD": hours_ago,
        "app.conf.frpa-0123abcd": hours_ago,
        ".app.conf.frpa-0123abcd.bak": hours_ago,
    }
    for name, mtime in {abandoned: hours_ago, **kept}.items():
        (directory / name).write_bytes(b"part")
        os.utime(directory / name, (mtime, mtime))
    (directory / ".dir.frpa-89abcdef").mkdir()
    os.utime(directory / ".dir.frpa-89abcdef", (hours_ago, hours_ago))
    async with node.session.put(node.url(directory / "app.conf"), data=b"setting") as resp:
        assert resp.status == 200, await resp.text()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [*kept, ".dir.frpa-89abcdef", "app.conf"]
    )


async def test_one_nodes_failure_is_its_line_and_the_others_go_on(
    node: Node,
) -> None:
    admin = bearer("admin")
    # An NM whose frps address no resolver takes (a DNS label over 63 characters).
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
    unresolvable = lines["nodemaintenances-unresolvable-1"]
    assert unresolvable["error"] == "ssh failed"
    assert "cannot reach sshd at aaaa" in unresolvable["details"]
    assert target.read_bytes() == b"pushed"
