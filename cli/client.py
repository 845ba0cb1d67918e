"""`frp-adapter ssh` and `frp-adapter exec`: a terminal's client of a running adapter.

Both speak the versioned API at `--url` (`FRPA_URL`, default http://127.0.0.1:8888), with
the bearer token in `FRPA_TOKEN` (a `--token` flag would show it in `ps`), and exit as
ssh does: with the remote exit status, 255 when the node cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import signal
import stat
import sys
import termios
import tty
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from nodes.clock import cause
from nodes.tasks import first_to_end
from schemas.settings import URL_VARIABLE

DEFAULT_URL = "http://127.0.0.1:8888"
UNREACHABLE = 255
TIMED_OUT = 124  # as GNU timeout exits
CONNECT_SECONDS = 30.0


async def answer_of(resp: aiohttp.ClientResponse) -> Any:
    """The JSON answer of an frp-adapter; ValueError, in words, for what is not one (the
    URL of frps's dashboard, or of a web page)."""
    try:
        return await resp.json(content_type=None)
    except ValueError:
        kind = resp.headers.get("Content-Type", "no content type")
        raise ValueError(
            f"{resp.url.origin()} answered {resp.status} ({kind}), not as frp-adapter's API "
            f"does: is --url ({URL_VARIABLE}) the adapter's address?"
        ) from None


def adapter_url(text: str) -> str:
    """`--url` as given, `http://` added when it has no scheme; ArgumentTypeError says
    what is wrong with one that cannot be the adapter's."""
    url = text if "://" in text else f"http://{text}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not the adapter's URL: http(s)://host[:port], e.g. {DEFAULT_URL}"
        )
    return url


def adapter_session(token: str | None) -> aiohttp.ClientSession:
    """A session with the adapter: each connection given CONNECT_SECONDS, and no limit
    after it (aiohttp's default cuts every request at 5 minutes: a long exec, copy or
    batch; the adapter bounds those itself)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS),
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )


async def ssh(url: str, name: str, token: str | None) -> int:
    """An interactive shell on node `name`, in this terminal (raw mode while it lasts); with
    input from a pipe or a file, a shell without a PTY that reads it, as `ssh -T`."""
    cols, rows = _terminal_size()
    shell_url = f"{url.rstrip('/')}/api/v1/nodes/{name}/shell?cols={cols}&rows={rows}"
    if not os.isatty(sys.stdin.fileno()):
        shell_url += "&tty=false"
    timeout = aiohttp.ClientWSTimeout(ws_close=5)
    async with adapter_session(token) as session:
        try:
            ws = await session.ws_connect(shell_url, heartbeat=20, timeout=timeout)
        except aiohttp.WSServerHandshakeError as e:
            return fail(f"{name}: {e.status} {await _refusal(session, shell_url, e.status)}")
        except aiohttp.ClientError as e:
            return fail(f"cannot reach the adapter at {url}: {cause(e, CONNECT_SECONDS)}")
        async with ws:
            with _raw_terminal():
                return await _Terminal(ws).run()


async def run(
    url: str, name: str, command: list[str], time_limit: float | None, token: str | None
) -> int:
    """Run `command` on node `name`; its output goes to stdout and stderr.

    The words of `command` are joined with spaces for the node's shell, as ssh does.
    """
    body: dict[str, Any] = {"cmd": " ".join(command)}
    if time_limit is not None:
        body["timeout"] = time_limit
    async with adapter_session(token) as session:
        try:
            async with session.post(
                f"{url.rstrip('/')}/api/v1/nodes/{name}/exec", json=body
            ) as resp:
                answer = await answer_of(resp)
        except (aiohttp.ClientError, ValueError) as e:
            return fail(f"cannot reach the adapter at {url}: {cause(e, CONNECT_SECONDS)}")
    if resp.status != 200:
        return fail(f"{name}: {refusal_of(answer)}")
    sys.stdout.write(answer["stdout"])
    sys.stderr.write(answer["stderr"])
    if answer["truncated"]:
        fail("(output truncated)")
    if answer["timed_out"]:
        fail(f"{name}: timed out after {answer['duration_ms']} ms")
        return TIMED_OUT
    status = answer["exit_status"]
    return status if isinstance(status, int) else UNREACHABLE


async def issue_frpc_token(url: str, name: str, token: str | None, *, force: bool) -> str:
    """A new frpc token for node `name` (the previous one stops working: only with `force`
    when it has one); ClientError or ValueError says why not."""
    nodes = f"{url.rstrip('/')}/api/v1/nodes"
    async with adapter_session(token) as session:
        async with session.get(f"{nodes}/{name}") as resp:
            node = await answer_of(resp) if resp.status == 200 else {}
        if node.get("status", {}).get("frpcTokenHash") and not force:
            raise ValueError(
                f"{name} has a token already, which its frpc.toml holds: a new one would "
                "refuse its frpc at its next restart (--force replaces it)"
            )
        async with session.post(f"{nodes}/{name}/frpc-token") as resp:
            answer = await answer_of(resp)
    if resp.status != 200:
        raise ValueError(f"{resp.status} {refusal_of(answer)}")
    issued: str = answer["token"]
    return issued


COPY_CHUNK = 1 << 18
COPY_INCOMPLETE = 1  # as scp exits when something was not copied
# The node's refusals of one item (no such file, not a regular file, not permitted), in the
# adapter's words: a tree's copy says them and goes on, as scp's; any other (the node
# unknown or offline, forbidden, the adapter gone) stops it.
_ITEM_REFUSALS = ("no such file", "file error")


class _CopyError(Exception):
    """What stops a copy (or one item of a tree), in words; `kind`, the adapter's word for
    its refusal."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


def _refused(path: str, answer: Any) -> _CopyError:
    kind = answer.get("error") if isinstance(answer, dict) else ""
    return _CopyError(f"{path}: {refusal_of(answer)}", str(kind))


async def copy(
    url: str, source: str, destination: str, token: str | None, *, recursive: bool
) -> int:
    """`cp [-r] SRC DST`, one side `NM_NAME:/path` on a node, the other a local path, as
    scp: a destination that is a directory gets the source's name in it; with `recursive`,
    a directory is copied whole (files keep their modes under this umask, links to
    directories are not followed). What could not be copied is said, and the exit is 1;
    255 when the adapter cannot be reached or refuses to act (the node offline, a token's
    rights)."""
    for spec in (source, destination):
        name, colon, path = spec.partition(":")
        if colon and name.startswith("nodemaintenances-") and not path.startswith("/"):
            return fail(
                f"{spec}: a path on a node is absolute, from its root: {name}:/home/<user>/{path}"
            )
    remote_source, remote_destination = _on_node(source), _on_node(destination)
    if (remote_source is None) == (remote_destination is None):
        return fail("cp copies between here and a node: one side must be NM_NAME:/path")
    nodes = f"{url.rstrip('/')}/api/v1/nodes"
    async with adapter_session(token) as session:
        name, path = remote_source or remote_destination  # type: ignore[misc]
        node = _Node(session, f"{nodes}/{name}")
        try:
            if remote_destination is not None:
                await _upload(node, source, path, recursive=recursive)
            else:
                await _download(node, path, destination, recursive=recursive)
        except _CopyError as e:
            fail(str(e))
            # As scp: 1 for what was not copied; 255 for the adapter's refusal to act.
            return UNREACHABLE if e.kind and e.kind not in _ITEM_REFUSALS else COPY_INCOMPLETE
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            return fail(f"cp failed: {cause(e, CONNECT_SECONDS)}")
        except OSError as e:
            if e.filename is None:  # of a connection, not of a file
                return fail(f"cp failed: {cause(e, CONNECT_SECONDS)}")
            fail(f"{e.filename}: {e.strerror}")  # a source this machine cannot read, ...
            return COPY_INCOMPLETE
        except (KeyError, TypeError) as e:
            return fail(f"cp failed: an answer the adapter does not give ({e!r})")
    return COPY_INCOMPLETE if node.skipped else 0


async def _upload(node: _Node, source: str, path: str, *, recursive: bool) -> None:
    if path.endswith("/") or await node.listing(path) is not None:
        name = os.path.basename(await asyncio.to_thread(os.path.abspath, source))  # `..`, `.`
        if not _sendable(name):
            raise _CopyError(f"{_shown(source)}: a name that is not UTF-8: name the copy")
        if not name:
            raise _CopyError(f"{source} has no name to give the copy: name it, NM_NAME:/path/NAME")
        path = posixpath.join(path, name)
    if not await asyncio.to_thread(os.path.isdir, source):
        await node.upload(source, path)
    elif not recursive:
        raise _CopyError(f"{source} is a directory: cp -r copies directories")
    else:
        await node.upload_tree(source, path)


async def _download(node: _Node, path: str, destination: str, *, recursive: bool) -> None:
    items = await node.listing(path)
    if await asyncio.to_thread(os.path.isdir, destination):
        name = posixpath.basename(posixpath.normpath(path))
        if not name:
            raise _CopyError(f"{path} has no name to give the copy: name it, {destination}/NAME")
        destination = os.path.join(destination, name)
    if items is None:
        await node.download(path, destination)
    elif not recursive:
        raise _CopyError(f"{path} is a directory: cp -r copies directories")
    else:
        await node.download_tree(path, destination, items)


def _walk(source: str) -> tuple[list[tuple[str, list[str], list[str]]], list[str]]:
    """os.walk's (directory, subdirectories, files) under `source`, without what cannot be
    copied from here, and that in words: directories that cannot be listed, and names that
    are not UTF-8 (a URL cannot carry them: they would arrive under another name)."""
    unsendable: list[str] = []

    def unread(error: OSError) -> None:
        unsendable.append(f"{_shown(str(error.filename))}: {error.strerror}, skipped")

    walked = []
    for directory, subdirectories, names in os.walk(source, onerror=unread):
        for name in (*subdirectories, *names):
            if not _sendable(name):
                where = _shown(os.path.join(directory, name))
                unsendable.append(f"{where}: a name that is not UTF-8, skipped")
        subdirectories[:] = [name for name in subdirectories if _sendable(name)]
        walked.append((directory, subdirectories, [name for name in names if _sendable(name)]))
    return walked, unsendable


def _sendable(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:  # os's undecodable bytes, as lone surrogates
        return False
    return True


def _shown(path: str) -> str:
    return os.fsencode(path).decode(errors="backslashreplace")


def _on_node(spec: str) -> tuple[str, str] | None:
    name, colon, path = spec.partition(":")
    if colon and name.startswith("nodemaintenances-") and path.startswith("/"):
        return name, path
    return None


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


class _Node:
    """A node's files, through the adapter's files API; `skipped`, the items of a tree
    not copied (said as they are met)."""

    def __init__(self, session: aiohttp.ClientSession, node_url: str) -> None:
        self._session = session
        self._url = node_url
        self._umask = _umask()
        self.skipped = 0

    def _skip(self, message: str) -> None:
        self.skipped += 1
        fail(message)

    async def _item(self, copying: Awaitable[None]) -> bool:
        """Whether one item of a tree was copied: the node's refusal of it, or this
        machine's, is said and the copy goes on, as scp's; any other stops it."""
        try:
            await copying
        except _CopyError as e:
            if e.kind not in _ITEM_REFUSALS:
                raise
            self._skip(str(e))
        except (aiohttp.ClientError, TimeoutError):  # the adapter's, not this item's
            raise
        except OSError as e:  # this machine's, of this item
            self._skip(f"{e.filename}: {e.strerror}" if e.filename else str(e))
        else:
            return True
        return False

    async def listing(self, path: str) -> list[dict[str, Any]] | None:
        """The entries of `path` when it is a directory on the node; None when it is a file
        or is not there (an empty file has no first byte: 416); _CopyError when the node or
        the adapter refuses to say."""
        # One byte of a file is asked for: a directory answers its listing whole, a file not.
        async with self._session.get(
            f"{self._url}/files", params={"path": path}, headers={"Range": "bytes=0-0"}
        ) as resp:
            if resp.status == 416 or (
                resp.status in (200, 206) and resp.content_type != "application/json"
            ):
                return None
            answer = await answer_of(resp)
        if resp.status == 404 and _refused(path, answer).kind == "no such file":
            return None
        if resp.status != 200:
            raise _refused(path, answer)
        items: list[dict[str, Any]] = answer["items"]
        return items

    async def upload(self, source: str, path: str) -> None:
        mode = (await asyncio.to_thread(os.stat, source)).st_mode & 0o777
        total = await asyncio.to_thread(os.path.getsize, source)
        progress = _Progress(source, total)
        sent, sent_size = hashlib.sha256(), 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal sent_size
            with open(source, "rb") as file:  # noqa: ASYNC230  (reads below, in a thread)
                while chunk := await asyncio.to_thread(file.read, COPY_CHUNK):
                    progress.add(len(chunk))
                    sent.update(chunk)
                    sent_size += len(chunk)
                    yield chunk

        async with self._session.put(
            f"{self._url}/files", params={"path": path, "mode": f"{mode:04o}"}, data=chunks()
        ) as resp:
            answer = await answer_of(resp)
        progress.done()
        if resp.status != 200:
            raise _refused(path, answer)
        # The adapter says what the node holds: it must be what left here.
        if (answer["size"], answer["sha256"]) != (sent_size, sent.hexdigest()):
            raise _CopyError(
                f"{path}: the node holds {answer['size']} bytes, sha256 {answer['sha256']}; "
                f"sent {sent_size} bytes, sha256 {sent.hexdigest()}"
            )

    async def upload_tree(self, source: str, path: str) -> None:
        walked, unsendable = await asyncio.to_thread(_walk, source)
        for said in unsendable:
            self._skip(said)
        await self._make_directory(path)  # where all goes: without it, nothing can
        for directory, subdirectories, names in walked:
            relative = directory[len(source) :].strip(os.sep)  # os.walk's are under source
            remote = posixpath.normpath(posixpath.join(path, relative))
            if relative and not await self._item(self._make_directory(remote)):
                continue
            for name in sorted(names):
                local = os.path.join(directory, name)
                if not await asyncio.to_thread(os.path.isfile, local):
                    self._skip(f"{local}: not a regular file, skipped")
                else:
                    await self._item(self.upload(local, posixpath.join(remote, name)))
            for name in subdirectories:  # os.walk goes into none of them
                if await asyncio.to_thread(os.path.islink, os.path.join(directory, name)):
                    self._skip(f"{os.path.join(directory, name)}: a link to a directory, skipped")

    async def _make_directory(self, path: str) -> None:
        async with self._session.post(f"{self._url}/directories", params={"path": path}) as resp:
            answer = await answer_of(resp)
        if resp.status != 200:
            raise _refused(path, answer)

    async def download(self, path: str, destination: str, mode: int | None = None) -> None:
        """The file `path` into `destination`; with `mode`, that mode under this umask when
        `destination` is made here."""
        async with self._session.get(f"{self._url}/files", params={"path": path}) as resp:
            if resp.status != 200:
                raise _refused(path, await answer_of(resp))
            if resp.content_type == "application/json":  # a directory since it was looked at
                raise _CopyError(f"{path} is a directory: cp -r copies directories")
            progress = _Progress(path, int(resp.headers["Content-Length"]))
            new = not await asyncio.to_thread(os.path.lexists, destination)
            with open(destination, "wb") as file:  # noqa: ASYNC230  (writes below, in a thread)
                async for chunk in resp.content.iter_chunked(COPY_CHUNK):
                    await asyncio.to_thread(file.write, chunk)
                    progress.add(len(chunk))
                if mode is not None and new:  # as scp: a file that was there keeps its own
                    await asyncio.to_thread(os.fchmod, file.fileno(), mode & 0o777 & ~self._umask)
        progress.done()

    async def download_tree(self, path: str, destination: str, items: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(os.makedirs, destination, exist_ok=True)
        for item in items:
            name = item["name"]
            if (
                not isinstance(name, str)
                or not name
                or "/" in name
                or "\0" in name
                or (name in (".", ".."))
            ):
                self._skip(f"{path}: the node listed {name!r}, which is no name: skipped")
                continue
            await self._item(self._download_item(item, path, destination))

    async def _download_item(self, item: dict[str, Any], path: str, destination: str) -> None:
        remote, local = posixpath.join(path, item["name"]), os.path.join(destination, item["name"])
        inner = await self.listing(remote) if item["type"] in ("directory", "link") else None
        if item["type"] == "directory":
            if inner is None:
                self._skip(f"{remote}: no longer a directory on the node, skipped")
            else:
                await self.download_tree(remote, local, inner)
        elif inner is not None:
            self._skip(f"{remote}: a link to a directory, skipped")
        elif item["type"] == "file":
            await self.download(remote, local, item["mode"])
        elif item["type"] == "link":  # to a file: copied as one, with a mode of its own
            await self.download(remote, local)
        else:
            self._skip(f"{remote}: not a regular file, skipped")


class _Progress:
    """A progress line on a terminal's stderr; nothing when stderr is not a terminal."""

    def __init__(self, name: str, total: int) -> None:
        self._name = os.path.basename(name)
        self._total = total
        self._done = 0
        self._shown = sys.stderr.isatty()

    def add(self, size: int) -> None:
        self._done += size
        if self._shown:
            share = self._done * 100 // max(self._total, 1)
            sys.stderr.write(f"\r{self._name} {self._done >> 20}/{self._total >> 20} MiB {share}%")
            sys.stderr.flush()

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\n")


async def port_forward(url: str, name: str, local: int, remote: int, token: str | None) -> int:
    """Listen on 127.0.0.1:`local`; each connection goes to the node's `remote` port over
    a WebSocket of its own, as `kubectl port-forward` does. Runs until interrupted."""
    forward_url = f"{url.rstrip('/')}/api/v1/nodes/{name}/portforward?port={remote}"

    async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with adapter_session(token) as session:
            try:
                ws = await session.ws_connect(forward_url, heartbeat=20, max_msg_size=1 << 21)
            except (aiohttp.ClientError, OSError) as e:
                fail(f"{name}:{remote}: {cause(e, CONNECT_SECONDS)}")
                writer.close()
                return
            async with ws:
                await _both_ways(reader, writer, ws, f"{name}:{remote}")

    try:
        server = await asyncio.start_server(carry, "127.0.0.1", local)
    except OSError as e:
        return fail(f"cannot listen on 127.0.0.1:{local}: {e.strerror}")
    port = server.sockets[0].getsockname()[1]
    print(f"Forwarding from 127.0.0.1:{port} -> {name}:{remote}", flush=True)
    async with server:
        await server.serve_forever()
    return 0


async def _both_ways(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ws: aiohttp.ClientWebSocketResponse,
    where: str,
) -> None:
    async def out() -> None:
        while data := await reader.read(1 << 16):
            await ws.send_bytes(data)

    async def back() -> None:
        while (msg := await ws.receive()).type == aiohttp.WSMsgType.BINARY:
            writer.write(msg.data)
            await writer.drain()
        if msg.type == aiohttp.WSMsgType.CLOSE and msg.data != aiohttp.WSCloseCode.OK:
            fail(f"{where}: {msg.extra}")  # the adapter's words: the port refused, say
        elif msg.type != aiohttp.WSMsgType.CLOSE:  # gone without a close frame
            raise ws.exception() or ConnectionResetError("the adapter's end closed unannounced")

    try:
        _, error = await first_to_end({"out": out(), "back": back()})
    finally:
        writer.close()
    if error is not None:  # either way broke: the connection is cut, and that is said
        fail(f"{where}: the connection broke off: {cause(error, CONNECT_SECONDS)}")


class _Terminal:
    """Keystrokes and resizes go out through one queue, in order; output comes back."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._status = UNREACHABLE
        self._outbox: asyncio.Queue[bytes | str] = asyncio.Queue(maxsize=64)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGWINCH, self._resized)
        try:
            _, error = await first_to_end({"output": self._output(), "input": self._input()})
        finally:
            loop.remove_signal_handler(signal.SIGWINCH)
        if error is not None:
            raise error
        return self._status

    async def _input(self) -> None:
        """Keystrokes and resizes to the node until the session ends: neither the end of
        this terminal's input nor a send the closing WebSocket refused ends it, as the
        output has the shell's exit status still to read."""
        try:
            async with asyncio.TaskGroup() as sending:
                sending.create_task(self._keystrokes())
                sending.create_task(self._send())
        except* ConnectionError:
            await asyncio.Event().wait()

    def _resized(self) -> None:
        cols, rows = _terminal_size()
        with contextlib.suppress(asyncio.QueueFull):  # the next SIGWINCH will tell again
            self._outbox.put_nowait(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def _send(self) -> None:
        while True:
            frame = await self._outbox.get()
            if isinstance(frame, bytes):
                await self._ws.send_bytes(frame)
            else:
                await self._ws.send_str(frame)

    async def _keystrokes(self) -> None:
        fd = sys.stdin.fileno()
        async for data in _input_of(fd):
            await self._outbox.put(data)
        # Input from a pipe or a file has ended: so has the node's shell's (without a PTY).
        await self._outbox.put(json.dumps({"type": "eof"}))

    async def _output(self) -> None:
        out = sys.stdout.buffer
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                out.write(msg.data)
                out.flush()
            elif msg.type == aiohttp.WSMsgType.TEXT:
                control = json.loads(msg.data)
                if control.get("type") == "exit":
                    status = control.get("exit_status")
                    self._status = status if isinstance(status, int) else UNREACHABLE
                elif control.get("type") == "error":
                    fail(f"\r\n{control.get('message')}\r")


async def _input_of(fd: int) -> AsyncIterator[bytes]:
    """What arrives on `fd` (this terminal, a pipe, a file, /dev/null) until it ends."""
    mode = os.fstat(fd).st_mode
    if not (os.isatty(fd) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        # A file or /dev/null: epoll takes neither, so they are read in a thread.
        while data := await asyncio.to_thread(os.read, fd, 4096):
            yield data
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    # A duplicate, so closing the pipe transport leaves our stdin open.
    stdin = os.fdopen(os.dup(fd), "rb", 0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    try:
        while data := await reader.read(4096):
            yield data
    finally:
        transport.close()
        os.set_blocking(fd, True)  # the duplicate shared our stdin's non-blocking flag


async def _refusal(session: aiohttp.ClientSession, shell_url: str, status: int) -> str:
    """Why the adapter refused the shell, in its own words: a failed WebSocket handshake
    drops the body, so the same request is made once more, plainly, to read it."""
    try:
        async with session.get(shell_url) as resp:
            answer = await answer_of(resp)
    except (aiohttp.ClientError, ValueError):
        return "a valid token is needed in FRPA_TOKEN" if status == 401 else "refused"
    return refusal_of(answer)


def refusal_of(answer: Any) -> str:
    """The adapter's refusal (or a batch line's failure), in its words."""
    if not isinstance(answer, dict):
        return f"an answer the adapter does not give: {str(answer)[:80]}"
    return f"{answer.get('error')}: {answer.get('details')}"


def fail(message: str) -> int:
    print(f"frp-adapter: {message}", file=sys.stderr)
    return UNREACHABLE


def _terminal_size() -> tuple[int, int]:
    """This terminal's size; 80 x 24 where it tells none (not a tty, or 0 x 0)."""
    size = os.get_terminal_size() if sys.stdout.isatty() else os.terminal_size((0, 0))
    return size.columns or 80, size.lines or 24


@contextlib.contextmanager
def _raw_terminal() -> Iterator[None]:
    """Raw mode, so keystrokes (Ctrl-C too) go to the node; restored however we leave."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)  # keeps what was typed ahead (TCSAFLUSH drops it)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
