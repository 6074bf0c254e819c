"""The node's HTTP surface: HLS playback, the watch page, status and metrics (ASGI)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

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
) -> Starlette:
    """Builds the ASGI app; ``playback`` is None on nodes that serve no viewers."""

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

    async def watch(request: Request) -> Response:
        name = request.path_params["stream"]
        if not _NAME.match(name):
            return PlainTextResponse("bad stream name\n", status_code=400)
        return HTMLResponse(_WATCH_PAGE.replace("{{name}}", html.escape(name)))

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
        Route("/watch/{stream}", watch),
        Route("/api/status", api_status),
        Route("/metrics", prometheus),
    ]
    return Starlette(routes=routes)


_WATCH_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{name}} · lpstream</title>
<style>body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:2rem}
video{width:100%;max-width:960px;background:#000}</style></head>
<body><h1>{{name}}</h1>
<video id="v" controls autoplay muted playsinline></video>
<p>HLS: <a href="/hls/{{name}}/index.m3u8">/hls/{{name}}/index.m3u8</a>
(open it in a player such as <code>ffplay</code>, VLC or Safari)</p>
<script>
const v = document.getElementById("v");
const src = "/hls/{{name}}/index.m3u8";
if (v.canPlayType("application/vnd.apple.mpegurl")) { v.src = src; }
else { document.body.insertAdjacentHTML("beforeend",
  "<p>This browser has no native HLS; open the URL above in a player.</p>"); }
</script></body></html>
"""
