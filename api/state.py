"""`STATE`: the one thing the app holds, the adapter and the HTTP layer's own parts."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from api.audit import AuditLog
from api.auth import Access
from api.shutdown import Shutdown
from api.tls import Certificates
from runtime.adapter import Adapter


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    adapter: Adapter
    access: Access
    audit: AuditLog
    shutdown: Shutdown
    metrics: CollectorRegistry
    tls: Certificates | None  # with FRPA_TLS_CERT_FILE only
    # Render slots: node lists (and watches' first lists) rendering at once; more wait
    # their turn, so readers queue behind each other rather than in front of frps's plugin
    # calls. A slot is held while a piece of an answer is rendered, never while a client
    # reads it.
    lists: asyncio.Semaphore
    # Clients dropped for taking nothing of an answer for FRPA_SLOW_READER_TIMEOUT, by route.
    slow_readers: Counter[str]
    shells_by_user: Counter[str]
    forwards_by_user: Counter[str]


STATE = web.AppKey("state", State)
