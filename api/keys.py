"""Typed keys of everything the app holds, declared in one place."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web

from api.audit import AuditLog
from api.auth import Access
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
# Node lists rendering at once; more wait their turn, so readers queue behind each other
# rather than in front of frps's plugin calls.
LISTS = web.AppKey("lists", asyncio.Semaphore)
