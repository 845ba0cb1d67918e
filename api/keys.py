"""Typed keys of everything the app holds, declared in one place."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web

from api.audit import AuditLog
from api.auth import Access
from api.notifications import Notifier
from api.shutdown import Shutdown
from api.tls import Certificates
from nodes.clock import Clock
from nodes.expiry import HeartbeatExpiry
from nodes.liveness import FrpsLiveness
from nodes.registry import NodeRegistry
from nodes.store import Leadership, NodeStore
from nodes.supervisor import Supervisor
from nodes.writer import NodeWriter
from plugin.reconciler import FrpsReconciler
from plugin.webhook import FrpsPlugins
from schemas.settings import Settings
from ssh.connector import SshConnector

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", NodeStore)
WRITER = web.AppKey("writer", NodeWriter)
REGISTRY = web.AppKey("registry", NodeRegistry)
PLUGINS = web.AppKey("plugins", FrpsPlugins)
LOADED = web.AppKey("loaded", asyncio.Task[None])
RECONCILERS = web.AppKey("reconcilers", dict[str, FrpsReconciler])  # frps with a dashboard
FRPS = web.AppKey("frps", dict[str, FrpsLiveness])  # by name, every frps served
SSH = web.AppKey("ssh", SshConnector)
ACCESS = web.AppKey("access", Access)
AUDIT = web.AppKey("audit", AuditLog)
SHELLS_BY_USER = web.AppKey("shells_by_user", Counter[str])
FORWARDS_BY_USER = web.AppKey("forwards_by_user", Counter[str])
LEADERSHIP = web.AppKey("leadership", Leadership)
EXPIRY = web.AppKey("expiry", HeartbeatExpiry)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
SHUTDOWN = web.AppKey("shutdown", Shutdown)
TLS = web.AppKey("tls", Certificates)  # with FRPA_TLS_CERT_FILE only
# With FRP_SERVER_WEBHOOK or FRPA_NOTIFY_URL only.
NOTIFIER = web.AppKey("notifier", Notifier)
# Render slots: node lists (and watches' first lists) rendering at once; more wait their
# turn, so readers queue behind each other rather than in front of frps's plugin calls.
# A slot is held while a piece of an answer is rendered, never while a client reads it.
LISTS = web.AppKey("lists", asyncio.Semaphore)
# Clients dropped for taking nothing of an answer for FRPA_SLOW_READER_TIMEOUT, by route.
SLOW_READERS = web.AppKey("slow_readers", Counter[str])
