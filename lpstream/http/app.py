"""The node's HTTP surface: HLS playback, the watch page, status and metrics (ASGI)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ingest.whip import WhipIngest
from lpstream.http.watch import watch_routes
from lpstream.http.whip import whip_routes
from lpstream.metrics import Metrics
from lpstream.playback.hls import HlsStream

__all__ = ["PlaybackDirectory", "build_app"]

M3U8 = "application/vnd.apple.mpegurl"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class PlaybackDirectory(Protocol):
    """Where the HTTP layer finds live streams (the gateway implements it)."""

    def hls_stream(self, name: str) -> HlsStream | None: ...


def _no_store(body: str | bytes, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


def build_app(
    *,
    playback: PlaybackDirectory | None,
    status: Callable[[], Mapping[str, Any]],
    metrics: Metrics,
    whip: WhipIngest | None = None,
) -> Starlette:
    """Builds the ASGI app; ``playback`` is None on nodes that serve no viewers, ``whip``
    None on nodes that take no WHIP publishes."""

    def stream_or_404(request: Request) -> HlsStream | Response:
        name = request.path_params["stream"]
        if playback is None or not _NAME.match(name):
            return PlainTextResponse("no such stream\n", status_code=404)
        stream = playback.hls_stream(name)
        if stream is None:
            return PlainTextResponse("no such stream\n", status_code=404)
        return stream

    async def master(request: Request) -> Response:
        stream = stream_or_404(request)
        if isinstance(stream, Response):
            return stream
        text = stream.master_playlist()
        if text is None:
            return PlainTextResponse("stream is starting, retry shortly\n", status_code=404)
        return _no_store(text, M3U8)

    async def media(request: Request) -> Response:
        stream = stream_or_404(request)
        if isinstance(stream, Response):
            return stream
        text = stream.media_playlist(request.path_params["rendition"])
        if text is None:
            return PlainTextResponse("no such rendition, or none of it yet\n", status_code=404)
        return _no_store(text, M3U8)

    async def segment(request: Request) -> Response:
        stream = stream_or_404(request)
        if isinstance(stream, Response):
            return stream
        data = stream.segment(request.path_params["rendition"], int(request.path_params["seq"]))
        if data is None:
            return PlainTextResponse("segment is not available\n", status_code=404)
        return Response(data, media_type="video/mp2t", headers={"Cache-Control": "max-age=60"})

    async def api_status(request: Request) -> Response:
        return JSONResponse(dict(status()))

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    routes = [
        Route("/hls/{stream}/index.m3u8", master),
        Route("/hls/{stream}/{rendition}/index.m3u8", media),
        Route("/hls/{stream}/{rendition}/{seq:int}.ts", segment),
        Route("/api/status", api_status),
        Route("/metrics", prometheus),
        *watch_routes(),
    ]
    if whip is not None:
        routes += whip_routes(whip)
    return Starlette(routes=routes)
