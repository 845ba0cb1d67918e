"""Every NM in memory, fed by list + watch (listed again on 410 Gone or a broken watch),
so reads cost no API request and what others change (a `kubectl edit`) is seen.

Each NM is kept as compact JSON, deflated against a typical NM, and parsed when used: as
dicts a fleet's NMs took ~6 KB each and kept the cyclic garbage collector walking them
(pauses of tens of ms on the plugin path at 50,000 nodes); as text ~1 KB, and deflated
~0.1 KB (12 us to deflate, 2 us to inflate), bytes the collector never visits. One bytes
object a node holds its resourceVersion too: a tuple and a string beside it cost ~120 B.
The API server's managedFields are not kept: nothing here reads them, and they are more
than half of an NM's JSON."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.http_exceptions import LineTooLong
from kubernetes_asyncio import client

from nodes.clock import Clock
from nodes.kubernetes.errors import (
    ApiError,
    APIGoneError,
    APINotFoundError,
    api_errors,
    refusal,
)
from nodes.model import (
    GROUP,
    ONLINE,
    VERSION,
    JsonObject,
    NodeState,
    UniqueId,
    compact_json,
    render_nm,
)
from nodes.store import StoreObserver
from schemas import parse_json
from schemas.settings import Backoff

logger = logging.getLogger(__name__)

PLURAL = "nodemaintenances"
REQUEST_TIMEOUT = 10.0
_WATCH_SECONDS = 300
# The server ends a watch after _WATCH_SECONDS; the client gives up on a silent one later.
_WATCH_REQUEST_SECONDS = _WATCH_SECONDS + 30
_MIN_WATCH_SECONDS = 1.0
# Of a watch's refusal, read for its Status's message: a Status is ~0.3 KB; a proxy's
# page, unbounded, says nothing more.
_REFUSAL_BYTES = 64 * 1024
_REFUSAL_SECONDS = 2.0
_SYNC_WAIT_SECONDS = 60.0
_LIST_CHUNK = 100
_PAGE = 200  # parsed in one step on the loop: 500 (kubectl's) took up to 25 ms
# What NMs share (keys, fixed values) is said once, in the dictionary deflate starts from.
# A 4 KB window holds it and an NM; the smallest memory level, because setting up the
# deflater's tables was most of the cost.
_WINDOW_BITS = -12  # raw deflate: no header or checksum per entry
_MEMORY_LEVEL = 1


def _typical_nm() -> bytes:
    # Read once, at import, outside the clock: only how well NMs deflate depends on it.
    now = datetime.now(UTC)  # this year's times share their digits with it
    state = NodeState(
        unique_id=UniqueId("node"),
        status=ONLINE,
        reason="NewProxy",
        last_transition=now,
        updated_at=now,
        frps_address="127.0.0.1",
        remote_port=10000,
        frpc_version="0.65.0",
    )
    obj = render_nm(state, None)
    obj["metadata"].update(resourceVersion="", uid="", generation=1, creationTimestamp="")
    return compact_json(obj)


_DICTIONARY = _typical_nm()


class NodeCache:
    def __init__(
        self, objects: client.CustomObjectsApi, *, backoff: Backoff, clock: Clock | None = None
    ) -> None:
        self._objects = objects
        self._backoff = backoff  # between relists after the watch failed
        self._clock = clock or Clock()
        # name -> `_entry` of its NM
        self._kept: dict[str, bytes] = {}
        self.synced = asyncio.Event()
        self._observers: list[StoreObserver] = []

    def subscribe(self, observer: StoreObserver) -> None:
        self._observers.append(observer)

    def get(self, name: str) -> JsonObject | None:
        kept = self._kept.get(name)
        return None if kept is None else _parsed(kept)

    def keep(self, obj: JsonObject) -> JsonObject:
        """Remember an object a write returned: it is at least as new as the watch's."""
        self._keep(obj)
        return obj

    def _keep(self, obj: JsonObject) -> None:
        self._kept[obj["metadata"]["name"]] = _entry(obj)

    async def fetch(self, name: str) -> JsonObject | None:
        """The NM from the API itself; None if there is none."""
        try:
            with api_errors(f"reading {name} failed", REQUEST_TIMEOUT):
                obj: JsonObject = await self._objects.get_cluster_custom_object(
                    GROUP, VERSION, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
        except APINotFoundError:
            return None
        return obj

    async def list(self) -> AsyncIterator[JsonObject]:
        """From memory once the watch has listed every NM; the API is listed a second time
        only if the watch has not within `_SYNC_WAIT_SECONDS` (at 100,000 NMs one list
        holds the loop for ~10 s in steps: two at once doubled the start-up)."""
        try:
            async with asyncio.timeout(_SYNC_WAIT_SECONDS):
                await self.synced.wait()
        except TimeoutError:
            logger.warning(
                "the watch has not listed %s in %.0f s: listing them apart",
                PLURAL,
                _SYNC_WAIT_SECONDS,
            )
        if self.synced.is_set():
            kept = self._kept
            for i, name in enumerate(sorted(kept)):
                if name in kept:  # not deleted meanwhile
                    yield _parsed(kept[name])
                if i % _LIST_CHUNK == _LIST_CHUNK - 1:
                    await asyncio.sleep(0)
            return
        async for page, _ in self._pages():  # the API lists in name order
            for i, obj in enumerate(page):
                yield obj
                if i % _LIST_CHUNK == _LIST_CHUNK - 1:
                    await asyncio.sleep(0)

    async def _pages(self) -> AsyncIterator[tuple[Sequence[JsonObject], str | None]]:
        """Every NM, a page at a time as kubectl and client-go list, with the list's
        resourceVersion: one answer of 50,000 NMs held the loop for over a second, most of
        it in garbage collections over the objects parsed so far."""
        token = ""  # none: from the first NM
        while True:
            with api_errors(f"listing {PLURAL} failed", REQUEST_TIMEOUT):
                page = await self._objects.list_cluster_custom_object(
                    GROUP,
                    VERSION,
                    PLURAL,
                    limit=_PAGE,
                    _continue=token,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            metadata = page.get("metadata", {})
            yield page["items"], metadata.get("resourceVersion")
            token = metadata.get("continue") or ""
            if not token:
                return

    async def watch_forever(self) -> None:
        """Keep the cache fed; API failures are retried here. If it ends any other way, the
        cache is stale: reads go to the API until a watch lists everything again."""
        try:
            await self._watch()
        finally:
            self.synced.clear()

    async def _watch(self) -> None:
        """List, then watch from there. A watch that ends (its timeout) is opened again
        where it stopped; only 410 Gone or a failure lists everything again: at 50,000
        NMs a list holds the loop for about a second."""
        clock = self._clock
        failures = 0
        while True:
            try:
                version = await self._relist()
                failures = 0
                while True:
                    opened = clock.monotonic()
                    version = await self._watch_from(version)
                    # A proxy that cuts long requests at once must not make this a loop.
                    await clock.sleep(_MIN_WATCH_SECONDS - (clock.monotonic() - opened))
            except APIGoneError:
                logger.info("watch of %s expired (410 Gone): listing again", PLURAL)
                continue
            except ApiError as e:
                logger.warning("%s", e)
            failures += 1
            await clock.sleep(self._backoff.delay(failures))

    async def _watch_from(self, version: str | None) -> str | None:
        """Follow the changes after `version` until the watch ends; the last version seen
        (bookmarks keep it current while no NM changes).

        The stream is read here, a line an event, each parsed once by orjson: the client's
        Watch parsed them with `json` and took ~5 % of the adapter's CPU in a storm, where
        every write of ours echoes back."""
        seen = version
        with api_errors(f"watching {PLURAL} failed", _WATCH_REQUEST_SECONDS):
            answer = await self._objects.list_cluster_custom_object(
                GROUP,
                VERSION,
                PLURAL,
                watch=True,
                resource_version=version or "",  # "": none, the API's unset
                allow_watch_bookmarks=True,
                timeout_seconds=_WATCH_SECONDS,
                _request_timeout=_WATCH_REQUEST_SECONDS,
                _preload_content=False,  # the answer itself, not read nor checked
            )
            async with answer:
                if not 200 <= answer.status <= 299:
                    body = await _head(answer.content, _REFUSAL_BYTES)
                    raise refusal(answer.status, answer.reason, body)
                try:
                    async for line in answer.content:
                        if line.strip():
                            seen = self._follow(parse_json(line)) or seen
                except (ValueError, LineTooLong) as e:  # not JSON; past the reader's limit
                    raise ApiError(f"watching {PLURAL} failed: {e}", None) from e
        return seen

    def _follow(self, event: Any) -> str | None:
        """Take in one watch event; the version it brings, if any."""
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise ValueError(f"a watch event without an object: {str(event)[:200]}")
        kind = event.get("type")
        if kind == "ERROR":  # a Status: 410 Gone when `version` is too old
            reason = f"{obj.get('reason')}: {obj.get('message')}"
            raise client.ApiException(status=obj.get("code"), reason=reason)
        metadata = obj.get("metadata") or {}
        name = metadata.get("name")
        if kind in ("ADDED", "MODIFIED") and name:
            known = self._kept.get(name)
            echoed = _version_of(obj)
            if known is None or not echoed or _version(known) != echoed:  # else our echo
                self._keep(obj)
                self._notify(obj)
        elif kind == "DELETED" and name:
            self._kept.pop(name, None)
            self._notify_deletion(name)
        version = metadata.get("resourceVersion")
        return version if isinstance(version, str) else None

    async def _relist(self) -> str | None:
        """Keep every NM the API lists, and tell the observers; the list's resourceVersion.
        (Each page is let go here: a watch that held the list kept every NM as dicts.)"""
        kept: dict[str, bytes] = {}
        version = None
        async for page, listed in self._pages():
            version = listed
            for i, obj in enumerate(page):
                kept[obj["metadata"]["name"]] = _entry(obj)
                self._notify(obj)
                if i % _LIST_CHUNK == _LIST_CHUNK - 1:
                    await asyncio.sleep(0)
        gone, self._kept = self._kept.keys() - kept.keys(), kept
        self.synced.set()
        for name in gone:  # deleted while no watch was open
            self._notify_deletion(name)
        return version

    def _notify(self, obj: JsonObject) -> None:
        for observer in self._observers:
            observer.observe(obj)

    def _notify_deletion(self, name: str) -> None:
        for observer in self._observers:
            observer.observe_deletion(name)


async def _head(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes of a body, however many pieces it comes in; what came, if it
    stalls `_REFUSAL_SECONDS` or breaks off: the refusal is said with its status anyway,
    and the watch lists again without waiting out its own time limit."""
    body = bytearray()
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with asyncio.timeout(_REFUSAL_SECONDS):
            while len(body) < limit and (piece := await content.read(limit - len(body))):
                body += piece
    return bytes(body)


def _entry(obj: JsonObject) -> bytes:
    """The NM's resourceVersion after its length in one byte (0: none kept), then the NM
    as compact JSON, deflated; its managedFields dropped from `obj` itself (every NM here
    is an answer of the API's, ours alone)."""
    obj["metadata"].pop("managedFields", None)
    deflater = zlib.compressobj(
        zlib.Z_DEFAULT_COMPRESSION,
        zlib.DEFLATED,
        _WINDOW_BITS,
        _MEMORY_LEVEL,
        zdict=_DICTIONARY,
    )
    version = _version_of(obj) or b""
    return (
        bytes((len(version),)) + version + deflater.compress(compact_json(obj)) + deflater.flush()
    )


def _version_of(obj: JsonObject) -> bytes | None:
    """Its resourceVersion (opaque, in practice a number); None if it has none, or one too
    long for its length byte: an echo of it is then never taken for ours."""
    version = str(obj["metadata"].get("resourceVersion") or "").encode()
    return version if 0 < len(version) < 256 else None


def _version(entry: bytes) -> bytes | None:
    return entry[1 : 1 + entry[0]] or None


def _parsed(entry: bytes) -> JsonObject:
    inflater = zlib.decompressobj(_WINDOW_BITS, zdict=_DICTIONARY)
    deflated = memoryview(entry)[1 + entry[0] :]
    obj: JsonObject = parse_json(inflater.decompress(deflated) + inflater.flush())
    return obj
