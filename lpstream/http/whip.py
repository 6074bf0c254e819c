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
  it or with a wrong one they get 401 and ``WWW-Authenticate: Bearer``.
* Bodies over 64 KiB get 413 (read as they stream, never whole first), bodies slower than
  the body timeout 408, and more bodies at once than the node takes 503
  (:class:`~lpstream.http.limits.BodyReader`); other content types get 415; the rest of the
  refusals come from ``WhipIngest`` as ``RemoteProtocolError`` codes (400 bad SDP, 409 stream
  live, 415 no H.264, 503 busy) with a one-line reason as the body.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ingest.whip import MAX_OFFER_SIZE, WhipIngest
from lpstream.errors import RemoteProtocolError
from lpstream.http.limits import BodyReader

__all__ = ["SDP", "bearer_token", "read_sdp_offer", "whip_routes"]

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


def _error(exc: RemoteProtocolError) -> Response:
    headers = dict(_CORS)
    if exc.code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="whip"'
    return PlainTextResponse(f"{exc.reason}\n", status_code=exc.code, headers=headers)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None (shared with WHEP)."""
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


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


def whip_routes(
    ingest: WhipIngest, *, prefix: str = "/whip", bodies: BodyReader | None = None
) -> list[Route]:
    """The WHIP routes under ``prefix``; ``ingest`` must be running (``nursery.start``).
    ``bodies`` reads the offers (the app's one reader; a new one if None)."""
    bodies = bodies or BodyReader()

    async def publish(request: Request) -> Response:
        stream = request.path_params["stream"]
        try:
            token = bearer_token(request)
            if ingest.token is not None and token is None:
                # Refuse before reading a body from someone who may not publish.
                raise RemoteProtocolError("a bearer token is required", code=401)
            offer = await read_sdp_offer(request, bodies)
            answer = await ingest.offer(stream, offer, token=token)
        except RemoteProtocolError as exc:
            return _error(exc)
        headers = {
            **_CORS,
            "Location": f"{prefix}/{stream}/{answer.session_id}",
            "ETag": answer.etag,
        }
        return Response(answer.sdp, status_code=201, media_type=SDP, headers=headers)

    async def session(request: Request) -> Response:
        stream = request.path_params["stream"]
        if request.method == "PATCH":
            return PlainTextResponse(
                "trickle ICE and ICE restarts are not supported; "
                "the answer to the offer holds every candidate\n",
                status_code=405,
                headers={**_CORS, "Allow": "DELETE, OPTIONS"},
            )
        try:
            await ingest.delete(stream, request.path_params["session"], token=bearer_token(request))
        except RemoteProtocolError as exc:
            return _error(exc)
        return PlainTextResponse("session ended\n", headers=_CORS)

    async def preflight(request: Request) -> Response:
        return Response(status_code=204, headers=_PREFLIGHT)

    return [
        Route(f"{prefix}/{{stream}}", publish, methods=["POST"]),
        Route(f"{prefix}/{{stream}}", preflight, methods=["OPTIONS"]),
        Route(f"{prefix}/{{stream}}/{{session}}", session, methods=["DELETE", "PATCH"]),
        Route(f"{prefix}/{{stream}}/{{session}}", preflight, methods=["OPTIONS"]),
    ]
