"""Files on a node, over SFTP on the node's own SSH connection: streamed both ways, never
whole in memory. An upload is written under a temporary name beside its destination and
renamed over it only once complete, so a broken upload leaves no file behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import secrets
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import asyncssh

from ssh.connector import SshConnector, SshError, SshTarget

# What one SFTP read call asks for: asyncssh splits it into requests it keeps in flight
# together, so a larger call keeps the path through frps full.
_TRANSFER_SIZE = 1 << 21
# Writes outstanding: 8 of OpenSSH's largest (255 KiB) fill the node's 2 MiB window.
_WRITES_IN_FLIGHT = 8
_SAFE_PIECE = 16 << 10  # a server that states no limit takes this much (SFTP draft)


class FileError(SshError):
    """The node refused a file operation; the message is the node's own words."""

    status = 400
    kind = "file error"


class NoSuchFileError(FileError):
    status = 404
    kind = "no such file"


@dataclass(frozen=True, slots=True)
class Stored:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    type: str  # file, directory, link, other
    size: int
    mode: int
    mtime: int


def checked_path(path: str) -> str:
    """An absolute path without `..`; ValueError says what is wrong with it."""
    if not path.startswith("/"):
        raise ValueError(f"the path must be absolute, not {path!r}")
    if "\0" in path or ".." in path.split("/"):
        raise ValueError(f"the path may not hold '..' or NUL: {path!r}")
    return posixpath.normpath(path)


class NodeFiles:
    def __init__(self, sftp: asyncssh.SFTPClient) -> None:
        self._sftp = sftp

    async def kind(self, path: str) -> str:
        try:
            attrs = await self._sftp.stat(path)
        except asyncssh.SFTPError as e:
            raise _refused(path, e) from e
        return _type(attrs)

    async def size(self, path: str) -> int:
        try:
            return (await self._sftp.stat(path)).size or 0
        except asyncssh.SFTPError as e:
            raise _refused(path, e) from e

    async def listing(self, path: str) -> list[Entry]:
        try:
            names = await self._sftp.readdir(path)
        except asyncssh.SFTPError as e:
            raise _refused(path, e) from e
        return sorted(
            (
                Entry(
                    name=str(n.filename),
                    type=_type(n.attrs),
                    size=n.attrs.size or 0,
                    mode=(n.attrs.permissions or 0) & 0o7777,
                    mtime=int(n.attrs.mtime or 0),
                )
                for n in names
                if n.filename not in (".", "..")
            ),
            key=lambda entry: entry.name,
        )

    async def read(self, path: str, start: int, length: int) -> AsyncIterator[bytes]:
        try:
            async with self._sftp.open(path, "rb", encoding=None) as file:
                await file.seek(start)
                while length > 0:
                    data = await file.read(min(_TRANSFER_SIZE, length))
                    assert isinstance(data, bytes)  # opened without an encoding
                    if not data:
                        return
                    length -= len(data)
                    yield data
        except asyncssh.SFTPError as e:
            raise _refused(path, e) from e

    async def write(self, path: str, chunks: AsyncIterable[bytes], *, mode: int) -> Stored:
        if await self._exists(path) and await self.kind(path) == "directory":
            raise FileError(f"{path}: is a directory")
        directory, name = posixpath.split(path)
        temporary = posixpath.join(directory, f".{name}.frpa-{secrets.token_hex(4)}")
        try:
            async with self._sftp.open(temporary, "wb", encoding=None) as file:
                size, sha256 = await _Upload(file, self._sftp.limits.max_write_len).send(chunks)
            await self._sftp.chmod(temporary, mode)
            await self._sftp.posix_rename(temporary, path)
        except asyncssh.SFTPError as e:
            await self._forget(temporary)
            raise _refused(path, e) from e
        except BaseException:
            await self._forget(temporary)
            raise
        return Stored(path, size, sha256)

    async def _exists(self, path: str) -> bool:
        try:
            await self._sftp.stat(path)
        except asyncssh.SFTPNoSuchFile:
            return False
        except asyncssh.SFTPError as e:
            raise _refused(path, e) from e
        return True

    async def _forget(self, path: str) -> None:
        with suppress(asyncssh.Error, OSError):
            await self._sftp.remove(path)


class _Upload:
    """One write request per piece the server takes whole, up to `_WRITES_IN_FLIGHT` of them
    outstanding while the body is still arriving: the path through frps never drains
    between pieces, and a slow node holds the body back instead of the adapter buffering it.
    A thread hashes the pieces while they travel (hashlib lets go of the GIL)."""

    def __init__(self, file: asyncssh.SFTPClientFile, piece: int) -> None:
        self._file = file
        self._piece = piece or _SAFE_PIECE
        self._writes: deque[asyncio.Task[int]] = deque()
        self._hashing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hashing.set_result(None)
        self._digest = hashlib.sha256()
        self._size = 0
        self._hashed = 0
        self._unhashed: list[bytes] = []

    async def send(self, chunks: AsyncIterable[bytes]) -> tuple[int, str]:
        pending = bytearray()
        try:
            async for chunk in chunks:
                pending += chunk
                while len(pending) >= self._piece:
                    with memoryview(pending) as view:
                        piece = bytes(view[: self._piece])
                    del pending[: self._piece]
                    await self._start(piece)
            await self._start(bytes(pending))
            await asyncio.gather(*self._writes)
            await self._hash()
            await self._hashing
        finally:
            tasks: list[asyncio.Future[Any]] = [*self._writes, self._hashing]
            for task in tasks:
                task.cancel()  # none left running once it failed or was cancelled
            await asyncio.gather(*tasks, return_exceptions=True)
        return self._size, self._digest.hexdigest()

    async def _start(self, piece: bytes) -> None:
        if len(self._writes) >= _WRITES_IN_FLIGHT:
            await self._writes.popleft()
        self._writes.append(asyncio.create_task(self._file.write(piece, self._size)))
        self._size += len(piece)
        self._unhashed.append(piece)
        if self._size - self._hashed >= _TRANSFER_SIZE:
            await self._hash()

    async def _hash(self) -> None:
        """Hand what arrived since the last time to a thread, once the last one is done: one
        thread call per 2 MiB, as each call costs the loop a wait for the GIL."""
        await self._hashing
        pieces, self._unhashed = self._unhashed, []
        self._hashed = self._size
        self._hashing = asyncio.create_task(asyncio.to_thread(self._update, pieces))

    def _update(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self._digest.update(piece)


@asynccontextmanager
async def node_files(connector: SshConnector, target: SshTarget) -> AsyncIterator[NodeFiles]:
    async with connector.connect(target) as conn:
        try:
            sftp_client = await conn.start_sftp_client()
        except asyncssh.Error as e:  # e.g. no sftp subsystem on the node
            raise SshError(f"{target.name}: no SFTP on the node's sshd: {e.reason}") from e
        async with sftp_client as sftp:
            yield NodeFiles(sftp)


def _type(attrs: asyncssh.SFTPAttrs) -> str:
    kinds = {
        asyncssh.FILEXFER_TYPE_REGULAR: "file",
        asyncssh.FILEXFER_TYPE_DIRECTORY: "directory",
        asyncssh.FILEXFER_TYPE_SYMLINK: "link",
    }
    return kinds.get(attrs.type, "other")


def _refused(path: str, error: asyncssh.SFTPError) -> FileError:
    if isinstance(error, asyncssh.SFTPNoSuchFile):
        return NoSuchFileError(f"{path}: {error.reason}")
    return FileError(f"{path}: {error.reason}")
