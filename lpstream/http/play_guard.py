"""Play authorization over HTTP (``--play-auth``): HLS with ``?token=``, WHEP with a bearer.

How this works:

* :class:`PlayGuard` asks the :class:`~lpstream.access.PlayAuthorizer` and turns a refusal into
  the answer: 401 (with ``WWW-Authenticate: Bearer``) without a valid token, 403 when a valid
  one does not allow this stream, 503 when no decision can be made now.
* HLS (the routes of ``lpstream.http.app``): every playlist, init section, segment and part
  request (``.ts`` and ``.m4s`` alike) carries the token as ``?token=…`` (an
  ``Authorization: Bearer`` header works too). The playlists the node answers carry the same
  ``token`` in every URI they hold (:func:`lpstream.playback.playlist_query.carry_query`), so
  a player that was given the master playlist's URL needs nothing else.
* WHEP: :class:`WhepPlayGuard` is ASGI middleware in front of ``/whep/``: an offer (``POST``)
  and a session's ``DELETE`` need a bearer token that may watch the stream; preflights pass.
  Refusals carry WHEP's CORS header, as its own answers do.
"""

from __future__ import annotations

import attrs
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from lpstream.access import PlayAuthorizer, PlayProtocol, PlayRequest, Refusal
from lpstream.http.api_guard import bearer_of

__all__ = ["PlayGuard", "WhepPlayGuard", "hls_token"]


def hls_token(connection: HTTPConnection) -> str | None:
    """The token of an HLS request: ``?token=…``, else a bearer token."""
    return connection.query_params.get("token") or bearer_of(connection.headers)


def _remote(connection: HTTPConnection) -> str:
    client = connection.client
    return "" if client is None else f"{client.host}:{client.port}"


@attrs.define
class PlayGuard:
    """Refuses play requests the authorizer does not allow (see the module comment)."""

    authorizer: PlayAuthorizer

    async def refusal(
        self,
        connection: HTTPConnection,
        stream: str,
        protocol: PlayProtocol,
        token: str | None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Response | None:
        """The answer refusing this request, or None when it may go on."""
        decision = await self.authorizer.authorize(
            PlayRequest(
                stream=stream,
                protocol=protocol,
                url=str(connection.url),
                remote_addr=_remote(connection),
                token=token,
            )
        )
        if not isinstance(decision, Refusal):
            return None
        status = decision.status
        out = dict(headers or {})
        if status == 401:
            out["WWW-Authenticate"] = f'Bearer realm="{protocol}"'
        return PlainTextResponse(
            f"{decision.reason}\n",
            status_code=status,
            headers={**out, "Cache-Control": "no-store"},
        )


@attrs.define
class WhepPlayGuard:
    """ASGI middleware holding WHEP offers and session deletes to the play authorization."""

    app: ASGIApp
    guard: PlayGuard
    prefix: str = "/whep/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        stream = scope["path"][len(self.prefix) :].split("/", 1)[0]
        refused = await self.guard.refusal(
            connection,
            stream,
            "whep",
            bearer_of(Headers(scope=scope)),
            headers={"Access-Control-Allow-Origin": "*"},
        )
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)
