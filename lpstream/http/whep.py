"""The WHEP endpoint (WebRTC-HTTP Egress Protocol): HTTP in front of
:class:`ingest.whip.WhepPlayback`.

* ``POST /whep/{stream}`` plays the source rendition, ``POST /whep/{stream}/{rendition}`` a
  transcoded rendition (``360p``, ...) or an AI output, by the names the HLS playlists use.
  The body is an SDP offer (``Content-Type: application/sdp``) that receives H.264 video; the
  answer is ``201 Created`` with the SDP answer, a ``Location`` naming the session resource
  (``/whep/{stream}/{rendition}/{session}``) and an ``ETag``. Non-trickle ICE only: the
  answer holds every candidate.
* ``DELETE`` on the session resource ends it (200), or 404 if there is none; ``PATCH``
  (trickle ICE, ICE restart) answers 405 with ``Allow``, as for WHIP.
* ``OPTIONS`` answers CORS preflights and every answer carries the CORS headers, so a player
  on another origin can play.
* With a token configured (``--whep-token``), POST and DELETE need ``Authorization: Bearer
  <token>``; without it or with a wrong one they get 401 and ``WWW-Authenticate: Bearer``.
* Offers are read as WHIP's are (:func:`~lpstream.http.whip.read_sdp_offer`): 413 over
  64 KiB, 408 too slow, 503 too many bodies at once, 415 not ``application/sdp``.
* The other refusals come from ``WhepPlayback`` as ``RemoteProtocolError`` codes: 400 bad SDP,
  404 no such live stream or rendition, 415 no H.264 to receive, 503 session limit reached;
  the body is a one-line reason.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ingest.whip import WhepPlayback
from lpstream.errors import RemoteProtocolError
from lpstream.http.limits import BodyReader
from lpstream.http.whip import SDP, bearer_token, read_sdp_offer

__all__ = ["whep_routes"]

SOURCE = "source"
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
        headers["WWW-Authenticate"] = 'Bearer realm="whep"'
    return PlainTextResponse(f"{exc.reason}\n", status_code=exc.code, headers=headers)


def whep_routes(
    playback: WhepPlayback, *, prefix: str = "/whep", bodies: BodyReader | None = None
) -> list[Route]:
    """The WHEP routes under ``prefix``; ``playback`` must be running (``nursery.start``).
    ``bodies`` reads the offers (the app's one reader; a new one if None)."""
    bodies = bodies or BodyReader()

    async def play(request: Request) -> Response:
        stream = request.path_params["stream"]
        rendition = request.path_params.get("rendition", SOURCE)
        try:
            token = bearer_token(request)
            if playback.token is not None and token is None:
                # Refuse before reading a body from someone who may not watch.
                raise RemoteProtocolError("a bearer token is required", code=401)
            offer = await read_sdp_offer(request, bodies)
            answer = await playback.offer(stream, rendition, offer, token=token)
        except RemoteProtocolError as exc:
            return _error(exc)
        headers = {
            **_CORS,
            "Location": f"{prefix}/{stream}/{rendition}/{answer.session_id}",
            "ETag": answer.etag,
        }
        return Response(answer.sdp, status_code=201, media_type=SDP, headers=headers)

    async def session(request: Request) -> Response:
        params = request.path_params
        if request.method == "PATCH":
            return PlainTextResponse(
                "trickle ICE and ICE restarts are not supported; "
                "the answer to the offer holds every candidate\n",
                status_code=405,
                headers={**_CORS, "Allow": "DELETE, OPTIONS"},
            )
        try:
            await playback.delete(
                params["stream"],
                params["rendition"],
                params["session"],
                token=bearer_token(request),
            )
        except RemoteProtocolError as exc:
            return _error(exc)
        return PlainTextResponse("session ended\n", headers=_CORS)

    async def preflight(request: Request) -> Response:
        return Response(status_code=204, headers=_PREFLIGHT)

    resource = f"{prefix}/{{stream}}/{{rendition}}/{{session}}"
    return [
        Route(f"{prefix}/{{stream}}", play, methods=["POST"]),
        Route(f"{prefix}/{{stream}}", preflight, methods=["OPTIONS"]),
        Route(f"{prefix}/{{stream}}/{{rendition}}", play, methods=["POST"]),
        Route(f"{prefix}/{{stream}}/{{rendition}}", preflight, methods=["OPTIONS"]),
        Route(resource, session, methods=["DELETE", "PATCH"]),
        Route(resource, preflight, methods=["OPTIONS"]),
    ]
