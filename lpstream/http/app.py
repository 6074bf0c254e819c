"""The node's HTTP surface: HLS playback, the watch page, status and metrics (ASGI).

Playback is LL-HLS and plain HLS at the same URLs: a media playlist request without delivery
directives gets the current playlist at once (its LL-HLS tags are ignored by players that do
not know them); ``_HLS_msn`` / ``_HLS_part`` hold it until that part or segment is listed
(blocking reload), and a request for the preload-hinted part is held until the part exists.
The decisions are ``LowLatencyStream``'s; ``LivePlayback`` does the waiting and its limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ingest.whip import WhepPlayback, WhipIngest
from lpstream.http.ai import AiDirectory, ai_routes
from lpstream.http.limits import BodyReader, HttpLimits
from lpstream.http.status import status_json
from lpstream.http.watch import watch_routes
from lpstream.http.whep import whep_routes
from lpstream.http.whip import whip_routes
from lpstream.media import check_stream_name
from lpstream.metrics import Metrics
from lpstream.playback.live import LivePlayback
from lpstream.playback.llhls import PartReady, PlaylistReady, Refused

__all__ = ["PlaybackDirectory", "build_app"]

M3U8 = "application/vnd.apple.mpegurl"
MEDIA_CACHE = "max-age=60"
"""Cache-Control of parts and segments: their bytes never change once published."""


class PlaybackDirectory(Protocol):
    """Where the HTTP layer finds live streams (the gateway implements it)."""

    def playback(self, name: str) -> LivePlayback | None: ...


def _no_store(body: str | bytes, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


def _refused(answer: Refused) -> Response:
    return PlainTextResponse(
        f"{answer.reason}\n", status_code=answer.code, headers={"Cache-Control": "no-cache"}
    )


def build_app(
    *,
    playback: PlaybackDirectory | None,
    status: Callable[[], object],
    metrics: Metrics,
    whip: WhipIngest | None = None,
    whep: WhepPlayback | None = None,
    ai: AiDirectory | None = None,
    limits: HttpLimits | None = None,
) -> Starlette:
    """Builds the ASGI app; ``playback`` is None on nodes that serve no viewers, ``whip``
    None on nodes that take no WHIP publishes, ``whep`` None on nodes with no WebRTC viewers.
    ``limits`` gives the request body budget (``body_timeout``, ``max_uploads``; the rest is
    the server's); every route that takes a body reads it through one ``BodyReader``.
    ``status`` gives the node's status value, which ``/api/status`` renders with
    ``lpstream.http.status.status_json``."""
    bodies = BodyReader.from_limits(limits or HttpLimits())

    def stream_or_404(request: Request) -> LivePlayback | Response:
        try:
            name = check_stream_name(request.path_params["stream"])
        except ValueError:
            name = None
        stream = None if playback is None or name is None else playback.playback(name)
        if stream is None:
            return PlainTextResponse("no such stream\n", status_code=404)
        return stream

    async def master(request: Request) -> Response:
        stream = stream_or_404(request)
        if isinstance(stream, Response):
            return stream
        text = stream.stream.master_playlist()
        if text is None:
            return PlainTextResponse("stream is starting, retry shortly\n", status_code=404)
        return _no_store(text, M3U8)

    async def media(request: Request) -> Response:
        stream = stream_or_404(request)
        if isinstance(stream, Response):
            return stream
        answer = await stream.answer_playlist(
            request.path_params["rendition"], request.query_params
        )
        if isinstance(answer, PlaylistReady):
            return _no_store(answer.text, M3U8)
        assert isinstance(answer, Refused)
        return _refused(answer)

    async def segment(request: Request) -> Response:
        stream = stream_or_404(request)
        if isinstance(stream, Response):
            return stream
        data = stream.stream.segment(request.path_params["rendition"], request.path_params["seq"])
        if data is None:
            return PlainTextResponse("segment is not available\n", status_code=404)
        return Response(data, media_type="video/mp2t", headers={"Cache-Control": MEDIA_CACHE})

    async def part(request: Request) -> Response:
        stream = stream_or_404(request)
        if isinstance(stream, Response):
            return stream
        params = request.path_params
        answer = await stream.answer_part(params["rendition"], params["seq"], params["part"])
        if isinstance(answer, PartReady):
            return Response(
                answer.data, media_type="video/mp2t", headers={"Cache-Control": MEDIA_CACHE}
            )
        assert isinstance(answer, Refused)
        return _refused(answer)

    async def api_status(request: Request) -> Response:
        return JSONResponse(status_json(status()))

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    routes: list[BaseRoute] = [
        Route("/hls/{stream}/index.m3u8", master),
        Route("/hls/{stream}/{rendition}/index.m3u8", media),
        Route("/hls/{stream}/{rendition}/{seq:int}.ts", segment),
        Route("/hls/{stream}/{rendition}/{seq:int}.{part:int}.ts", part),
        Route("/api/status", api_status),
        Route("/metrics", prometheus),
        *watch_routes(),
    ]
    if whip is not None:
        routes += whip_routes(whip, bodies=bodies)
    if whep is not None:
        routes += whep_routes(whep, bodies=bodies)
    if ai is not None:
        routes += ai_routes(ai, bodies=bodies)
    return Starlette(routes=routes)
