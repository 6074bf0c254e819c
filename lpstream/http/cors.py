"""CORS for HLS and the API (``--cors-origin``), so a player or a dashboard on another web
origin can use them.

How this works:

* Only under ``/hls/``, ``/api/``, ``/v1/`` and the batch AI routes (``/text-to-image``...),
  and only with origins configured; WHIP and WHEP answer
  CORS themselves (any origin), and without ``--cors-origin`` nothing changes.
* A request whose ``Origin`` is allowed (listed, or ``*`` configured) gets
  ``Access-Control-Allow-Origin`` (the origin, or ``*``) on its answer, whatever the answer is
  (a 401 too, so a page can tell a missing token from a network error). Every answer under
  those paths carries ``Vary: Origin`` so a cache keeps one per origin.
* A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered here, before
  the API guard (preflights carry no credentials): 204 with the methods and the headers a
  page may send (``Authorization``, ``Content-Type``) for an allowed origin, 403 otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lpstream.http.api_guard import AI_JOB_PATHS

__all__ = ["CORS_PATHS", "PREFLIGHT_MAX_AGE", "CorsMiddleware"]

CORS_PATHS = ("/hls/", "/api/", "/v1/", *AI_JOB_PATHS)
"""The paths whose answers carry CORS headers."""
PREFLIGHT_MAX_AGE = 600
"""Seconds a browser may reuse a preflight's answer."""
_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
_HEADERS = "Authorization, Content-Type"


@attrs.define
class CorsMiddleware:
    """ASGI middleware adding CORS to HLS and the API (see the module comment)."""

    app: ASGIApp
    origins: Sequence[str] = ()
    """Allowed origins (``scheme://host[:port]``), or ``*``."""

    def allowed(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``; None if not allowed."""
        if origin is None:
            return None
        if "*" in self.origins:
            return "*"
        return origin if origin.lower() in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.origins or not scope["path"].startswith(CORS_PATHS):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        allow = self.allowed(headers.get("origin"))
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(allow)(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.add_vary_header("Origin")
                if allow is not None:
                    out["Access-Control-Allow-Origin"] = allow
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    def _preflight(allow: str | None) -> Response:
        if allow is None:
            return PlainTextResponse(
                "this origin may not use this node (--cors-origin)\n",
                status_code=403,
                headers={"Vary": "Origin"},
            )
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": allow,
                "Access-Control-Allow-Methods": _METHODS,
                "Access-Control-Allow-Headers": _HEADERS,
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
                "Vary": "Origin",
            },
        )
