"""Files on a node, over SFTP on the node's own SSH connection: streamed both ways, never
whole in memory. Only regular files are read or replaced. An upload is written under a
temporary name beside its destination and renamed over it only once complete, so a broken
upload leaves no file behind; one cut off where nothing could clean up (the adapter killed,
the node lost) is removed by a later upload to the same directory. Every SFTP step waits
for the node at most the step timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import re
import secrets
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from ssh.connector import NodeTimeoutError, SshConnector, SshError, SshTarget

T = TypeVar("T")

# What one SFTP read call asks for: asyncssh splits it into requests it keeps in flight
# together, so a larger call keeps the path through frps full.
_TRANSFER_SIZE = 1 << 21
# Writes outstanding: 8 of OpenSSH's largest (255 KiB) fill the node's 2 MiB window.
_WRITES_IN_FLIGHT = 8
_SAFE_PIECE = 16 << 10  # a server that states no limit takes this much (SFTP draft)
# An upload's temporary name, `.<name>.frpa-<8 hex digits>`, with the name cut to fit
# NAME_MAX; the pattern matches no name but those.
_NAME_MAX = 255
_TEMPORARY = re.compile(rb"\..+\.frpa-[0-9a-f]{8}", re.DOTALL)
# A temporary file unwritten this long belongs to no live upload (a client silent for an
# hour loses its upload).
_ABANDONED_SECONDS = 3600
_NOT_REGULAR = {
    asyncssh.FILEXFER_TYPE_FIFO: "a FIFO",
    asyncssh.FILEXFER_TYPE_SOCKET: "a socket",
    asyncssh.FILEXFER_TYPE_CHAR_DEVICE: "a character device",
    asyncssh.FILEXFER_TYPE_BLOCK_DEVICE: "a block device",
}


class FileError(SshError):
    """The node refused a file operation; the message is the node's own words."""

    kind = "file error"


class NoSuchFileError(FileError):
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
    def __init__(self, sftp: asyncssh.SFTPClient, step_timeout: float | None) -> None:
        self._sftp = sftp
        self._timeout = step_timeout

    async def is_directory(self, path: str) -> bool:
        attrs = await _step(path, self._timeout, self._sftp.stat(path))
        return attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY

    async def reading(self, path: str) -> Reading:
        """The regular file `path`, open, so a refusal comes before any byte is promised.
        Anything else is refused unopened: opening a FIFO would wait for a writer."""
        attrs = await _step(path, self._timeout, self._sftp.stat(path))
        _refuse_unless_regular(path, attrs)
        file = await _step(path, self._timeout, self._sftp.open(path, "rb", encoding=None))
        return Reading(path, file, attrs.size or 0, self._timeout)

    async def listing(self, path: str) -> list[Entry]:
        names = await _step(path, self._timeout, self._sftp.readdir(path))
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

    async def make_directory(self, path: str) -> None:
        """The directory `path` and those missing on the way to it, as `mkdir -p` makes
        them; FileError when something else is in the way."""
        await _step(path, self._timeout, self._sftp.makedirs(path, exist_ok=True))

    async def write(self, path: str, chunks: AsyncIterable[bytes], *, mode: int) -> Stored:
        """`chunks` to the regular file `path` (replaced whole, or made), as the node
        holds them: the size the node reports for the written file, and the sha256 of the
        bytes the node acknowledged."""
        with suppress(NoSuchFileError):  # nothing there yet: made
            _refuse_unless_regular(path, await _step(path, self._timeout, self._sftp.stat(path)))
        directory, name = posixpath.split(path)
        temporary = posixpath.join(directory, _temporary_name(name))
        file = await _step(path, self._timeout, self._sftp.open(temporary, "wb", encoding=None))
        try:
            # The file was just made: its mtime is the node's clock, whatever the adapter's.
            created = await _step(path, self._timeout, file.stat())
            await self._sweep(directory, created.mtime or 0)
            with _answers(path, self._timeout):
                upload = _Upload(file, self._sftp.limits.max_write_len, self._timeout)
                size, sha256 = await upload.send(chunks)
            held = (await _step(path, self._timeout, file.stat())).size
            if held != size:
                raise FileError(f"{path}: the node holds {held} bytes of the {size} written")
            await _step(path, self._timeout, file.close())
            await _step(path, self._timeout, self._sftp.chmod(temporary, mode))
            await _step(path, self._timeout, self._sftp.posix_rename(temporary, path))
        except BaseException:
            await self._forget(temporary)
            raise
        return Stored(path, size, sha256)

    async def _sweep(self, directory: str, now: float) -> None:
        """Remove this adapter's temporary files in `directory` abandoned (see
        `_ABANDONED_SECONDS`) by uploads cut off where no one could clean up. A directory
        that cannot be listed is left as it is: the upload goes on."""
        try:
            names = await _step(directory, self._timeout, self._sftp.readdir(directory.encode()))
        except FileError:
            return
        for entry in names:
            assert isinstance(entry.filename, bytes)  # listed by a bytes path
            if (
                _TEMPORARY.fullmatch(entry.filename)
                and entry.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR
                and (entry.attrs.mtime or now) < now - _ABANDONED_SECONDS
            ):
                await self._forget(posixpath.join(directory.encode(), entry.filename))

    async def _forget(self, path: str | bytes) -> None:
        with suppress(asyncssh.Error, OSError, TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._sftp.remove(path)


class Reading:
    """A regular file open on the node, and its size when opened."""

    def __init__(
        self, path: str, file: asyncssh.SFTPClientFile, size: int, step_timeout: float | None
    ) -> None:
        self.size = size
        self._path = path
        self._file = file
        self._timeout = step_timeout

    async def chunks(self, start: int, length: int) -> AsyncGenerator[bytes, None]:
        """Up to `length` bytes from `start` (fewer if the file shrank). Left early, the file
        is not closed: the handle ends with the connection, the node not waited for."""
        while length > 0:
            want = min(_TRANSFER_SIZE, length)
            data = await _step(self._path, self._timeout, self._file.read(want, start))
            assert isinstance(data, bytes)  # opened without an encoding
            if not data:
                break
            start += len(data)
            length -= len(data)
            yield data
        await _step(self._path, self._timeout, self._file.close())


class _Upload:
    """One write request per piece the server takes whole, up to `_WRITES_IN_FLIGHT` of them
    outstanding while the body is still arriving: the path through frps never drains
    between pieces, and a slow node holds the body back instead of the adapter buffering it.
    A thread hashes the pieces while they travel (hashlib lets go of the GIL)."""

    def __init__(
        self, file: asyncssh.SFTPClientFile, piece: int, step_timeout: float | None
    ) -> None:
        self._file = file
        self._piece = piece or _SAFE_PIECE
        self._timeout = step_timeout
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
            async with asyncio.timeout(self._timeout):
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
            async with asyncio.timeout(self._timeout):
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
async def node_files(
    connector: SshConnector, target: SshTarget, *, step_timeout: float | None
) -> AsyncIterator[NodeFiles]:
    """The node's files, each SFTP step given `step_timeout` seconds (None: no limit). The
    SFTP session is closed after, unwaited: a node stuck in a step would hold up a polite
    close (on a warm connection, one left open would hold one of sshd's MaxSessions)."""
    async with connector.connect(target) as conn:
        try:
            async with asyncio.timeout(step_timeout):
                sftp = await conn.start_sftp_client()
        except TimeoutError as e:
            raise NodeTimeoutError(
                f"{target.name}: SFTP did not start in {step_timeout:g} s"
            ) from e
        except asyncssh.Error as e:  # e.g. no sftp subsystem on the node
            raise SshError(f"{target.name}: no SFTP on the node's sshd: {e.reason}") from e
        try:
            yield NodeFiles(sftp, step_timeout)
        finally:
            sftp.exit()


async def _step(path: str, within: float | None, step: Awaitable[T]) -> T:
    """`step`, given `within` seconds (None: no limit) to answer."""
    with _answers(path, within):
        async with asyncio.timeout(within):
            return await step


@contextmanager
def _answers(path: str, within: float | None) -> Iterator[None]:
    """The node's refusals and silences, as the errors that say them."""
    try:
        yield
    except asyncssh.SFTPError as e:
        raise _refused(path, e) from e
    except TimeoutError as e:
        raise NodeTimeoutError(
            f"{path}: the node did not answer within {within:g} s (FRPA_SFTP_STEP_TIMEOUT)"
        ) from e


def _temporary_name(name: str) -> str:
    suffix = f".frpa-{secrets.token_hex(4)}"
    room = _NAME_MAX - len(".") - len(suffix)
    return f".{name.encode()[:room].decode(errors='ignore')}{suffix}"


def _refuse_unless_regular(path: str, attrs: asyncssh.SFTPAttrs) -> None:
    if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
        raise FileError(f"{path}: is a directory")
    if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
        what = _NOT_REGULAR.get(attrs.type, "a special file")
        raise FileError(f"{path}: is {what}, not a regular file")


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
