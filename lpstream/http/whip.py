"""The WHIP endpoint (RFC 9725): HTTP in front of :class:`ingest.whip.WhipIngest`.

* ``POST /whip/{stream}`` with an SDP offer (``Content-Type: application/sdp``) answers
  ``201 Created`` with the SDP answer, a ``Location`` naming the session resource and an
  ``ETag``. Only non-trickle ICE is offered: the answer already holds every candidate, and a
  client that gathered its own before posting (OBS, most encoders) needs nothing else.
* ``DELETE /whip/{stream}/{session}`` ends the session (200), or 404 if there is none.
* ``PATCH`` on a session (trickle ICE, ICE restart) answers 405 with ``Allow``: RFC 9725
  lets a session that does not support PATCH for any purpose answer so; clients then carry
  on without trickling.
* ``OPTIONS`` answers CORS preflights, so a page on another origin can publish from a
  browser; every answer carries the CORS headers and exposes ``Location`` and ``ETag``.
* With a token configured, POST and DELETE need ``Authorization: Bearer <token>``; without
  it or with a wrong one they get 401 and ``WWW-Authenticate: Bearer``. With publish
  authorization on (``--auth-webhook-url``, ``--publish-key``, ``--jwt-jwks``) the gateway
  decides each POST from the bearer token and the URL's query (``?key=``, ``?jwt=``), as for
  RTMP: a refusal is 401 or 403 with the reason (503 when no decision could be made).
* Bodies over 64 KiB get 413 (read as they stream, never whole first), bodies slower than
  the body timeout 408, and more bodies at once than the node takes 503
  (:class:`~lpstream.http.limits.BodyReader`); other content types get 415; the rest of the
  refusals come from ``WhipIngest`` as ``RemoteProtocolError`` codes (400 bad SDP, 409 stream
  live, 415 no H.264, 503 busy) with a one-line reason as the body.
* WHEP (:mod:`lpstream.http.whep`) is the same exchange the other way: it uses this module's
  endpoints (:func:`offer_endpoint`, :func:`session_endpoint`, :func:`preflight`) with its own
  routes, so both answer, refuse and allow CORS alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ingest.whip import MAX_OFFER_SIZE, WhipAnswer, WhipIngest
from lpstream.errors import RemoteProtocolError
from lpstream.http.api_guard import bearer_of
from lpstream.http.limits import BodyReader

__all__ = [
    "SDP",
    "bearer_token",
    "client_address",
    "offer_endpoint",
    "preflight",
    "read_sdp_offer",
    "session_endpoint",
    "whip_routes",
]

SDP = "application/sdp"
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag, Link",
}
_PREFLIGHT = {
    **_CORS,
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Max-Age": "86400",
}

Endpoint = Callable[[Request], Awaitable[Response]]


class SessionAnswer(Protocol):
    """An accepted offer's answer (``WhipAnswer``, ``WhepAnswer``)."""

    @property
    def sdp(self) -> str: ...

    @property
    def etag(self) -> str: ...


class TokenGuarded(Protocol):
    """An endpoint's service that may require a bearer token (``WhipIngest``,
    ``WhepPlayback``)."""

    @property
    def token(self) -> str | None: ...


def _refusal(exc: RemoteProtocolError, realm: str) -> Response:
    headers = dict(_CORS)
    if exc.code == 401:
        headers["WWW-Authenticate"] = f'Bearer realm="{realm}"'
    return PlainTextResponse(f"{exc.reason}\n", status_code=exc.code, headers=headers)


def client_address(request: Request) -> str:
    """The client's ``host:port`` (``[v6]:port``), or "" when the server does not say."""
    client = request.client
    if client is None:
        return ""
    host = f"[{client.host}]" if ":" in client.host else client.host
    return f"{host}:{client.port}"


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None (shared with WHEP)."""
    return bearer_of(request.headers)


async def read_sdp_offer(request: Request, bodies: BodyReader) -> bytes:
    """The body of an SDP offer (shared with WHEP).

    Raises:
        lpstream.errors.RemoteProtocolError: 415 not ``application/sdp``; 413, 408, 503 or 499
            from ``bodies`` (too large, too slow, too many at once, client gone).
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != SDP:
        raise RemoteProtocolError(f"the offer must be sent as {SDP}", code=415)
    return await bodies.read(request, MAX_OFFER_SIZE, what="SDP offer")


def offer_endpoint(
    service: TokenGuarded,
    answer: Callable[[Request, bytes, str | None], Awaitable[tuple[SessionAnswer, str]]],
    *,
    bodies: BodyReader,
    realm: str,
) -> Endpoint:
    """The ``POST`` of an offer (shared with WHEP): ``answer(request, offer, token)`` gives the
    answer and its session's resource path, sent back as ``201 Created`` with ``Location`` and
    ``ETag``; a refusal is its code and one-line reason (401s name ``realm``)."""

    async def post(request: Request) -> Response:
        try:
            token = bearer_token(request)
            if service.token is not None and token is None:
                # Refuse before reading a body from someone who may not come in.
                raise RemoteProtocolError("a bearer token is required", code=401)
            offer = await read_sdp_offer(request, bodies)
            accepted, location = await answer(request, offer, token)
        except RemoteProtocolError as exc:
            return _refusal(exc, realm)
        headers = {**_CORS, "Location": location, "ETag": accepted.etag}
        return Response(accepted.sdp, status_code=201, media_type=SDP, headers=headers)

    return post


def session_endpoint(
    end: Callable[[Request, str | None], Awaitable[None]], *, realm: str
) -> Endpoint:
    """``DELETE`` and ``PATCH`` on a session resource (shared with WHEP): ``DELETE`` ends the
    session with ``end(request, token)``; ``PATCH`` (trickle ICE, ICE restart) is answered 405
    with ``Allow``, as RFC 9725 lets a session that takes no PATCH do."""

    async def session(request: Request) -> Response:
        if request.method == "PATCH":
            return PlainTextResponse(
                "trickle ICE and ICE restarts are not supported; "
                "the answer to the offer holds every candidate\n",
                status_code=405,
                headers={**_CORS, "Allow": "DELETE, OPTIONS"},
            )
        try:
            await end(request, bearer_token(request))
        except RemoteProtocolError as exc:
            return _refusal(exc, realm)
        return PlainTextResponse("session ended\n", headers=_CORS)

    return session


async def preflight(request: Request) -> Response:
    """Answers a CORS preflight on an offer or session resource (shared with WHEP)."""
    return Response(status_code=204, headers=_PREFLIGHT)


def whip_routes(
    ingest: WhipIngest, *, prefix: str = "/whip", bodies: BodyReader | None = None
) -> list[Route]:
    """The WHIP routes under ``prefix``; ``ingest`` must be running (``nursery.start``).
    ``bodies`` reads the offers (the app's one reader; a new one if None)."""

    async def publish(request: Request, offer: bytes, token: str | None) -> tuple[WhipAnswer, str]:
        stream = request.path_params["stream"]
        answer = await ingest.offer(
            stream,
            offer,
            token=token,
            remote_addr=client_address(request),
            url=str(request.url),
            query=request.url.query,
        )
        return answer, f"{prefix}/{stream}/{answer.session_id}"

    async def end(request: Request, token: str | None) -> None:
        params = request.path_params
        await ingest.delete(params["stream"], params["session"], token=token)

    post = offer_endpoint(ingest, publish, bodies=bodies or BodyReader(), realm="whip")
    session = session_endpoint(end, realm="whip")
    return [
        Route(f"{prefix}/{{stream}}", post, methods=["POST"]),
        Route(f"{prefix}/{{stream}}", preflight, methods=["OPTIONS"]),
        Route(f"{prefix}/{{stream}}/{{session}}", session, methods=["DELETE", "PATCH"]),
        Route(f"{prefix}/{{stream}}/{{session}}", preflight, methods=["OPTIONS"]),
    ]
