"""Every NM in memory, fed by list + watch (listed again on 410 Gone or a broken watch),
so reads cost no API request and what others change (a `kubectl edit`) is seen."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from kubernetes_asyncio import client, watch

from nodes.kubernetes.errors import ApiError, api_errors
from nodes.model import GROUP, VERSION, JsonObject
from nodes.store import StoreObserver

logger = logging.getLogger(__name__)

PLURAL = "nodemaintenances"
REQUEST_TIMEOUT = 10.0
_WATCH_SECONDS = 300
_RELIST_BACKOFF_MAX = 30.0
_LIST_CHUNK = 100


class NodeCache:
    def __init__(self, objects: client.CustomObjectsApi) -> None:
        self._objects = objects
        self.objects: dict[str, JsonObject] = {}
        self.synced = asyncio.Event()
        self._observers: list[StoreObserver] = []

    def subscribe(self, observer: StoreObserver) -> None:
        self._observers.append(observer)

    def keep(self, obj: JsonObject) -> JsonObject:
        """Remember an object a write returned: it is at least as new as the watch's."""
        self.objects[obj["metadata"]["name"]] = obj
        return obj

    async def fetch(self, name: str) -> JsonObject | None:
        """The NM from the API itself; None if there is none."""
        try:
            with api_errors(f"reading {name} failed"):
                obj: JsonObject = await self._objects.get_cluster_custom_object(
                    GROUP, VERSION, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return obj

    async def list(self) -> AsyncIterator[JsonObject]:
        if self.synced.is_set():
            objects = self.objects
        else:
            with api_errors(f"listing {PLURAL} failed"):
                listing = await self._objects.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT
                )
            objects = {obj["metadata"]["name"]: obj for obj in listing["items"]}
        for i, name in enumerate(sorted(objects)):
            if name in objects:  # not deleted meanwhile
                yield objects[name]
            if i % _LIST_CHUNK == _LIST_CHUNK - 1:
                await asyncio.sleep(0)

    async def watch_forever(self) -> None:
        """Keep the cache fed; API failures are retried here. If it ends any other way, the
        cache is stale: reads go to the API until a watch lists everything again."""
        try:
            await self._watch()
        finally:
            self.synced.clear()

    async def _watch(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._list_and_watch()
                backoff = 1.0
            except ApiError as e:
                if e.status == 410:
                    logger.info("watch of %s expired (410 Gone): listing again", PLURAL)
                    continue
                logger.warning("%s", e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _RELIST_BACKOFF_MAX)

    async def _list_and_watch(self) -> None:
        with api_errors(f"watching {PLURAL} failed"):
            listing = await self._objects.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
            gone = self.objects.keys() - {obj["metadata"]["name"] for obj in listing["items"]}
            self.objects = {obj["metadata"]["name"]: obj for obj in listing["items"]}
            self.synced.set()
            for name in gone:  # deleted while no watch was open
                self._notify_deletion(name)
            for obj in listing["items"]:
                self._notify(obj)
            async with watch.Watch().stream(
                self._objects.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                resource_version=listing["metadata"].get("resourceVersion"),
                timeout_seconds=_WATCH_SECONDS,
                _request_timeout=_WATCH_SECONDS + 30,
            ) as stream:
                async for event in stream:
                    obj = event["raw_object"]
                    name = obj.get("metadata", {}).get("name")
                    if event["type"] in ("ADDED", "MODIFIED") and name:
                        self.objects[name] = obj
                        self._notify(obj)
                    elif event["type"] == "DELETED" and name:
                        self.objects.pop(name, None)
                        self._notify_deletion(name)

    def _notify(self, obj: JsonObject) -> None:
        for observer in self._observers:
            observer.observe(obj)

    def _notify_deletion(self, name: str) -> None:
        for observer in self._observers:
            observer.observe_deletion(name)
