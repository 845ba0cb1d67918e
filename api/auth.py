"""Who may call what: bearer tokens, three roles, and one table of access rules.

Every route's rule is declared with it in `api.routes`, which puts each handler behind
its rule; the app refuses to start with a route the table does not hold, so nothing can
be left open by mistake. Tokens come from `FRPA_API_TOKENS_FILE`, one
`token name role [selector]` per line (`#` starts a comment; the token may be given as
`sha256:<hex digest>` so the file need not hold secrets), reloaded when it changes. Only
SHA-256 digests of tokens are kept in memory and compared. A token with a label selector
(its scope) reaches only the nodes that match it: the guard answers a route naming any
other node as if the node did not exist, and lists and batches leave them out.

A token travels in `Authorization: Bearer <token>`, or, for WebSocket upgrades (browsers
cannot set headers on those), as the subprotocol
`base64url.bearer.authorization.k8s.io.<token, base64url without padding>`, the form
Kubernetes accepts for exec; the client also offers `frp-adapter.v1`, which is the one
selected. A WebSocket upgrade from a browser page of another origin is refused unless
that origin is in `FRPA_ALLOWED_ORIGINS` (or it is `*`), and so is a write let in without a token
(anonymously, or from a trusted network): a page anywhere can make a browser post a form.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from cachetools import TTLCache

from api.audit import AuditLog, start_record
from api.callers import ANONYMOUS, IDENTITY, ROLE_NAMES, Identity, Role
from api.errors import (
    AuthNotConfiguredError,
    ForbiddenError,
    TokenUncheckedError,
    UnauthorizedError,
)
from api.watched import stamp
from nodes.clock import Clock
from nodes.errors import NodeNotFoundError
from nodes.model import token_digest
from nodes.reviews import Reviewer, ReviewError
from schemas import half_surrogate
from schemas.labels import EVERY_NODE, Labels, SelectorError, parse_selector
from schemas.settings import Network

logger = logging.getLogger(__name__)

WS_PROTOCOL = "frp-adapter.v1"
_WS_TOKEN_PREFIX = "base64url.bearer.authorization.k8s.io."  # noqa: S105  (a prefix)
RELOAD_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call a route: callers of `role` or above (None: anyone). With
    FRPA_KUBERNETES_AUTH, a SubjectAccessReview asks instead whether the caller may `verb`
    `nodemaintenances` (or its `subresource`): the NM the path names, else all of them."""

    role: Role | None
    verb: str = ""
    subresource: str = ""
    # Open to anyone while no authentication is configured: what the original offered
    # (reads and its state routes), never shells, commands, credentials or host keys.
    anonymous: bool = False

    def __post_init__(self) -> None:
        if self.role is not None and not self.verb:
            raise ValueError("a guarded route needs the Kubernetes verb it stands for")


OPEN = Rule(None)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A caller `Access.decide` lets through."""

    identity: Identity
    # Let in without a token, from a trusted network: the guard writes an audit record.
    trusted: bool = False


# What `Access.decide` refuses a caller with: raised by the guard, a False for `may`.
Refusal = UnauthorizedError | ForbiddenError | AuthNotConfiguredError | TokenUncheckedError
_SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})
_REVIEW_CACHE_SECONDS = 10.0
_REVIEW_CACHE_SIZE = 10000


class TokensFileError(ValueError):
    pass


def parse_tokens(text: str, source: str) -> dict[str, Identity]:
    """Token digest -> identity, from the lines of a tokens file."""
    tokens: dict[str, Identity] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split(None, 3)
        where = f"{source}:{number}"
        if len(fields) < 3:
            raise TokensFileError(
                f"{where}: expected `token name role [selector]`, got {len(fields)} fields"
            )
        token, name, role = fields[:3]
        try:
            scope = parse_selector(fields[3]) if len(fields) == 4 else EVERY_NODE
        except SelectorError as e:
            raise TokensFileError(f"{where}: the scope of {name!r}: {e}") from e
        if role not in ROLE_NAMES:
            raise TokensFileError(f"{where}: role must be read, operator or admin, not {role!r}")
        if token.startswith("sha256:"):
            key = token.removeprefix("sha256:").lower()
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                raise TokensFileError(f"{where}: sha256: must be followed by 64 hex digits")
        elif len(token) < 16:
            raise TokensFileError(f"{where}: token of {name!r} is shorter than 16 characters")
        else:
            key = token_digest(token)
        if key in tokens:
            raise TokensFileError(f"{where}: the token of {name!r} is given twice")
        tokens[key] = Identity(name, ROLE_NAMES[role], scope)
    if not tokens:
        raise TokensFileError(f"{source}: no tokens")
    return tokens


def read_tokens(path: str) -> dict[str, Identity]:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_tokens(f.read(), path)
    except OSError as e:
        raise TokensFileError(f"cannot read {path}: {e.strerror}") from e


class Access:
    """Decides every request: reads tokens, applies the routes' rules, checks the origins
    of WebSocket upgrades and of writes without a token. Reads the tokens file when made
    (TokensFileError)."""

    def __init__(
        self,
        rules: Mapping[tuple[str, str], Rule],
        *,
        tokens_file: str | None,
        insecure: bool,
        allowed_origins: frozenset[str],
        trusted_networks: tuple[Network, ...],
        audit: AuditLog,
        clock: Clock,
        node_labels: Callable[[str], Labels | None],
    ) -> None:
        self._rules = rules
        self._node_labels = node_labels
        self._clock = clock
        self._tokens_file = tokens_file
        self._tokens = read_tokens(tokens_file) if tokens_file else {}
        self._stamp = stamp(tokens_file) if tokens_file else None
        self.insecure = insecure
        self._allowed_origins = allowed_origins
        self._trusted = trusted_networks
        self._audit = audit
        self.denied = 0
        # Set at start-up when the cluster authenticates and authorizes API callers.
        self.reviewer: Reviewer | None = None
        # Answers of the Kubernetes API, a few seconds each (the least used go first when
        # full), on the process's clock.
        self._reviews: TTLCache[tuple[str, ...], Identity | None] = TTLCache(
            _REVIEW_CACHE_SIZE, _REVIEW_CACHE_SECONDS, timer=clock.monotonic
        )

    async def watch(self) -> None:
        """Reload the tokens file whenever it changes; a broken edit keeps the old tokens."""
        if not self._tokens_file:
            return
        while True:
            await self._clock.sleep(RELOAD_SECONDS)
            seen = await asyncio.to_thread(stamp, self._tokens_file)
            if seen == self._stamp:
                continue
            self._stamp = seen
            try:
                self._tokens = await asyncio.to_thread(read_tokens, self._tokens_file)
            except TokensFileError as e:
                logger.error("keeping the previous API tokens: %s", e)
                continue
            logger.info("reloaded %d API token(s) from %s", len(self._tokens), self._tokens_file)

    def guard(self, rule: Rule, handler: Handler) -> Handler:
        """`handler` behind `rule`, as `decide` has it; an open route's handler as it is (the
        plugin path pays nothing for access)."""
        if rule.role is None:
            return handler

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            decision = await self.decide(request, rule, request.method)
            if not isinstance(decision, Admitted):
                raise self._refused(request, decision)
            request[IDENTITY] = decision.identity
            if (name := request.match_info.get("nm_name")) and not self.in_scope(request, name):
                raise NodeNotFoundError(f"nodemaintenance {name} not found")
            if decision.trusted:
                record = start_record(
                    request, "trusted", request.match_info.get("nm_name", ""), request.path_qs
                )
                record.result = f"{request.method} let in without a token"
                await self._audit.begin(record)
            return await handler(request)

        return guarded

    def in_scope(self, request: web.Request, name: str) -> bool:
        """Whether the caller of `request` may see the node NM `name` names: a scoped
        token sees only the known nodes its selector matches."""
        scope = request[IDENTITY].scope
        if not scope.requirements:
            return True
        labels = self._node_labels(name)
        return labels is not None and scope.matches(labels)

    async def may(self, request: web.Request, method: str, path: str) -> bool:
        """Whether the caller of `request` would be let through to route `method path`: what
        `decide` says of it, so the console offers only what the routes then allow."""
        return isinstance(await self.decide(request, self._rules[method, path], method), Admitted)

    async def decide(self, request: web.Request, rule: Rule, method: str) -> Admitted | Refusal:
        """The caller of `request`, let through to a route of `method` under `rule`, or the
        refusal to raise. The one decision: the guard applies it to each request, `may` asks
        it about routes the caller has not called yet (the NM name, the WebSocket upgrade and
        the origin are then those of `request`). Changes nothing; a Kubernetes review is
        remembered for a few seconds."""
        needed = rule.role
        if needed is None:
            return Admitted(ANONYMOUS)
        # CORS does not cover WebSockets: any page may open one, so every upgrade's
        # origin is checked, token or not.
        if _is_websocket(request) and (foreign := self._foreign_page(request)):
            return ForbiddenError(foreign)
        if not self._tokens_file and self.reviewer is None:
            if not (rule.anonymous or self.insecure):
                return AuthNotConfiguredError(
                    "no API tokens are configured: set FRPA_API_TOKENS_FILE or "
                    "FRPA_KUBERNETES_AUTH=1 (or FRPA_INSECURE_NO_AUTH=1 to allow everything "
                    "to anyone)"
                )
            if foreign := self._foreign_write(request, method):
                return ForbiddenError(foreign)
            return Admitted(ANONYMOUS)
        token = _presented_token(request)
        if token is None and rule.anonymous and self._from_trusted_network(request):
            if foreign := self._foreign_write(request, method):
                return ForbiddenError(foreign)
            return Admitted(Identity(f"trusted network {request.remote}", needed), trusted=True)
        if self.reviewer is not None:
            return await self._by_kubernetes(request, token, rule, needed)
        identity = self._tokens.get(token_digest(token)) if token else None
        if identity is None:
            return UnauthorizedError(
                "a valid bearer token is required" if token is None else "unknown token"
            )
        if identity.role < needed:
            return ForbiddenError(
                f"{identity.name} ({identity.role.name.lower()}) may not do this: "
                f"it needs {needed.name.lower()}"
            )
        return Admitted(identity)

    async def _by_kubernetes(
        self, request: web.Request, token: str | None, rule: Rule, needed: Role
    ) -> Admitted | Refusal:
        if not token:
            return UnauthorizedError("a valid bearer token is required")
        verb, subresource = rule.verb, rule.subresource
        name = request.match_info.get("nm_name")
        try:
            identity = await self._review(token, verb, subresource, name, needed)
        except ReviewError as e:
            return TokenUncheckedError(str(e))
        if identity is None:
            return UnauthorizedError("the Kubernetes API does not know this token")
        if identity.role < needed:
            target = f"nodemaintenances{'/' + subresource if subresource else ''}"
            return ForbiddenError(f"{identity.name} may not {verb} {target} {name or ''}".rstrip())
        return Admitted(identity)

    async def _review(
        self, token: str, verb: str, subresource: str, name: str | None, needed: Role
    ) -> Identity | None:
        """The caller, with `needed` as its role when RBAC allows the action, else NONE.

        Answers are remembered for a few seconds: a browser's shell or a batch otherwise
        costs two API calls per request.
        """
        assert self.reviewer is not None
        cache_key = (token_digest(token), verb, subresource, name or "")
        if cache_key in self._reviews:
            cached: Identity | None = self._reviews[cache_key]
            return cached
        user = await self.reviewer.user(token)
        identity = None
        if user is not None:
            allowed = await self.reviewer.allowed(
                user, verb=verb, subresource=subresource, name=name
            )
            identity = Identity(user["username"], needed if allowed else Role.NONE)
        self._reviews[cache_key] = identity
        return identity

    def _refused(self, request: web.Request, refusal: Refusal) -> Refusal:
        """`refusal`, for the guard to raise; a caller refused (401, 403) is counted and
        logged, unlike a setup that cannot decide (no authentication, no review)."""
        if isinstance(refusal, UnauthorizedError | ForbiddenError):
            self.denied += 1
            logger.warning(
                "denied %s %s from %s: %s", request.method, request.path, request.remote, refusal
            )
        return refusal

    def _from_trusted_network(self, request: web.Request) -> bool:
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:  # a Unix socket, or no peer address at all
            return False
        return any(address in network for network in self._trusted)

    def _foreign_write(self, request: web.Request, method: str) -> str | None:
        """Why a write no token vouches for is refused: a page of another origin had a
        browser send it (a form, or a no-cors fetch, needs no CORS consent). None for
        reads, and for frps and scripts, which send neither `Origin` nor `Sec-Fetch-Site`."""
        if method in _SAFE_METHODS:
            return None
        return self._foreign_page(request)

    def _foreign_page(self, request: web.Request) -> str | None:
        """Why `request` counts as sent by a browser for a page of an origin neither this
        adapter's nor in FRPA_ALLOWED_ORIGINS; None when it does not."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin in self._allowed_origins or "*" in self._allowed_origins:
            return None
        # Sec-Fetch-Site is the browser's own verdict, the page's scheme included, which
        # a proxy ending TLS in front of the adapter hides from it; Origin's host and port
        # serve where a browser sends no Sec-Fetch-Site.
        cross_site = request.headers.get(hdrs.SEC_FETCH_SITE) == "cross-site"
        if cross_site or (origin is not None and urlsplit(origin).netloc != request.host):
            return f"origin {origin or 'of another site'} is not allowed"
        return None


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _presented_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return _sendable(token.strip())
    for offered in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(","):
        protocol = offered.strip()
        if protocol.startswith(_WS_TOKEN_PREFIX):
            encoded = protocol.removeprefix(_WS_TOKEN_PREFIX)
            try:
                token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except ValueError:  # not base64 (nor ASCII), or not UTF-8 once decoded
                return ""
            return token
    return None


def _sendable(token: str) -> str:
    """`token`, or "" (nobody's) when it holds bytes that are not UTF-8: aiohttp keeps
    them as surrogates, which no digest can encode."""
    return "" if half_surrogate(token) else token
