"""The WHEP endpoint (WebRTC-HTTP Egress Protocol): HTTP in front of
:class:`ingest.whip.WhepPlayback`.

* ``POST /whep/{stream}`` plays the source rendition, ``POST /whep/{stream}/{rendition}`` a
  transcoded rendition (``360p``, ...) or an AI output, by the names the HLS playlists use.
  The body is an SDP offer (``Content-Type: application/sdp``) that receives H.264 video, and
  audio if the viewer wants sound: an audio section that receives Opus gets the stream's sound
  (``sendonly``) when it has some, ``inactive`` otherwise. The answer is ``201 Created`` with
  the SDP answer, a ``Location`` naming the session resource
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
from starlette.routing import Route

from ingest.whip import WhepAnswer, WhepPlayback
from lpstream.http.limits import BodyReader
from lpstream.http.whip import offer_endpoint, preflight, session_endpoint

__all__ = ["whep_routes"]

SOURCE = "source"


def whep_routes(
    playback: WhepPlayback, *, prefix: str = "/whep", bodies: BodyReader | None = None
) -> list[Route]:
    """The WHEP routes under ``prefix``; ``playback`` must be running (``nursery.start``).
    ``bodies`` reads the offers (the app's one reader; a new one if None)."""

    async def play(request: Request, offer: bytes, token: str | None) -> tuple[WhepAnswer, str]:
        stream = request.path_params["stream"]
        rendition = request.path_params.get("rendition", SOURCE)
        answer = await playback.offer(stream, rendition, offer, token=token)
        return answer, f"{prefix}/{stream}/{rendition}/{answer.session_id}"

    async def end(request: Request, token: str | None) -> None:
        params = request.path_params
        await playback.delete(params["stream"], params["rendition"], params["session"], token=token)

    post = offer_endpoint(playback, play, bodies=bodies or BodyReader(), realm="whep")
    session = session_endpoint(end, realm="whep")
    resource = f"{prefix}/{{stream}}/{{rendition}}/{{session}}"
    return [
        Route(f"{prefix}/{{stream}}", post, methods=["POST"]),
        Route(f"{prefix}/{{stream}}", preflight, methods=["OPTIONS"]),
        Route(f"{prefix}/{{stream}}/{{rendition}}", post, methods=["POST"]),
        Route(f"{prefix}/{{stream}}/{{rendition}}", preflight, methods=["OPTIONS"]),
        Route(resource, session, methods=["DELETE", "PATCH"]),
        Route(resource, preflight, methods=["OPTIONS"]),
    ]
