"""The API token: who may use ``/api/*``, the live AI WebSocket, ``/metrics`` and the batch
AI routes.

How this works:

* :class:`ApiGuard` is ASGI middleware in front of every route, so a route added later under
  ``/api/`` or ``/v1/`` is guarded without a word of its own. Guarded: every path under
  ``/api/`` (HTTP and WebSocket, so ``/api/ai/{stream}/control`` too), ``/metrics``, and the
  batch AI routes, which spend the gateway's money: go-livepeer's (:data:`AI_JOB_PATHS`) and
  every path under ``/v1/`` (OpenAI's: its clients send their key as ``Authorization: Bearer``,
  so ``OpenAI(base_url=".../v1", api_key=<API token>)`` works); nothing else.
* With API tokens (``--api-token``, ``--api-token-file``) a request needs
  ``Authorization: Bearer <token>``; a WebSocket may send ``?token=<token>`` instead, as
  browsers cannot set headers on one. Tokens are matched in constant time
  (:class:`~lpstream.access.SecretSet`). Without one: 401 and ``WWW-Authenticate: Bearer``; a
  WebSocket gets the same 401 as its handshake answer.
* Without API tokens only loopback clients are served; others get 403 naming ``--api-token``
  (the node warns at start when its HTTP address is not loopback: :func:`warn_if_open`).
  A reverse proxy on the same host makes every client loopback: behind one, set a token.
* The request's identity goes into the ASGI scope as ``lpstream.identity``: ``api:<short
  hash>`` of the token, or ``loopback`` (see :func:`request_identity`), so a route can say who
  started what and hold each token to its own limits.
* CORS preflights (``OPTIONS``) never carry credentials; :mod:`lpstream.http.cors` answers
  them before this guard is reached.
"""

from __future__ import annotations

import logging
import urllib.parse

import attrs
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from lpstream.access import SecretSet
from lpstream.config import HostPort, is_loopback

__all__ = [
    "AI_JOB_PATHS",
    "IDENTITY_KEY",
    "LOOPBACK_IDENTITY",
    "ApiGuard",
    "authorize",
    "bearer_of",
    "guarded",
    "request_identity",
    "warn_if_open",
]

log = logging.getLogger("lpstream.http")

IDENTITY_KEY = "lpstream.identity"
"""The ASGI scope key holding who made a guarded request."""
LOOPBACK_IDENTITY = "loopback"
"""The identity of a loopback client of a node without API tokens."""
_REALM = 'Bearer realm="api"'


AI_JOB_PATHS = ("/text-to-image", "/image-to-image", "/upscale", "/audio-to-text", "/llm")
"""Go-livepeer's batch AI routes (:mod:`lpstream.http.ai_jobs`)."""


def guarded(path: str) -> bool:
    """Whether ``path`` needs the API token."""
    if path.startswith(("/api/", "/v1/")):
        return True
    return path.rstrip("/") in ("/api", "/v1", "/metrics", *AI_JOB_PATHS)


def bearer_of(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def request_identity(connection: HTTPConnection) -> str | None:
    """Who made a guarded request (``api:…`` or ``loopback``); None on other routes."""
    identity = connection.scope.get(IDENTITY_KEY)
    return identity if isinstance(identity, str) else None


def warn_if_open(addr: HostPort, tokens: SecretSet | None) -> None:
    """Warns when the API answers only loopback clients on an address others reach."""
    if tokens is None and not is_loopback(addr.host):
        log.warning(
            "http %s is not loopback and no --api-token is set: /api/*, /metrics and the AI "
            "routes answer loopback clients only (others get 403); set --api-token to use them "
            "from elsewhere",
            addr,
        )


@attrs.define
class ApiGuard:
    """ASGI middleware holding ``/api/*``, ``/metrics`` and the batch AI routes to the API
    tokens (see the module comment)."""

    app: ASGIApp
    tokens: SecretSet | None = None
    """The API tokens; None: loopback clients only."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        identity, status, reason = self._decide(scope)
        if identity is not None:
            await self.app({**scope, IDENTITY_KEY: identity}, receive, send)
            return
        headers = {"WWW-Authenticate": _REALM} if status == 401 else {}
        response = PlainTextResponse(f"{reason}\n", status_code=status, headers=headers)
        if scope["type"] == "http":
            await response(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:
            await websocket.close(code=1008, reason=reason)

    def _decide(self, scope: Scope) -> tuple[str | None, int, str]:
        """(identity, 0, "") to serve it; (None, status, reason) to refuse it."""
        presented = bearer_of(Headers(scope=scope))
        if presented is None and scope["type"] == "websocket":
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            presented = (query.get("token") or [None])[0]
        client = scope.get("client")
        return authorize(self.tokens, client[0] if client else None, presented)


def authorize(
    tokens: SecretSet | None, client: str | None, presented: str | None
) -> tuple[str | None, int, str]:
    """The guard's rules for a request from host ``client`` presenting token ``presented``:
    (identity, 0, "") to serve it; (None, status, reason) to refuse it. For a route that
    takes the token another way (the dashboard's form)."""
    if tokens is None:
        if is_loopback(client):
            return LOOPBACK_IDENTITY, 0, ""
        return None, 403, "the API answers loopback clients only: set --api-token"
    if presented is None:
        return None, 401, "an API token is required (Authorization: Bearer <token>)"
    identity = tokens.match(presented)
    if identity is None:
        return None, 401, "the API token is not valid"
    return identity, 0, ""
