"""Recordings over HTTP: start and stop them, list them, play them back.

* ``POST /api/streams/{name}/record`` starts recording a live stream from its next segment
  (201 ``{"stream", "recording", "url"}``; 200 with the running one if it records already);
  ``DELETE`` ends the recording (200 ``{"recording": id}``, closed as VOD; 404 when it does
  not record); ``GET`` tells whether it records. 404 a stream that is not live, 503 a
  gateway without ``--record-store``.
* ``GET /api/recordings[?stream=NAME]`` lists the stored recordings, oldest first:
  ``{"recordings": [{"stream", "id", "state", "started_at", "ended_at", "duration",
  "bytes", "renditions": {name: {"segments", "duration", "bytes"}}, "lost_segments",
  "url"}]}``. ``state`` is ``recording``, ``ended`` or ``interrupted`` (the gateway died;
  closed at its next start).
* ``GET /vod/{stream}/{id}/index.m3u8`` (and ``{rendition}/index.m3u8``,
  ``{rendition}/{seq}.ts``; ``{rendition}/{seq}.m4s`` and ``{rendition}/init{n}.mp4`` of a
  fragmented-MP4 rendition) serves a recording back from the store, to any HLS player;
  ``/watch/{stream}?recording={id}`` plays it in the browser. With play authorization on
  it is asked as for the live stream (protocol ``hls``) and the playlists carry the token.

The ``/api/`` routes are behind the API token like every ``/api/*`` route. Names and ids
that no recording can have (``..``, ``/``, over-long) are 400 on the API and 404 on ``/vod/``
before the store is asked. (A ``%2f`` is decoded before routing, so it only ever splits the
path into names that are then checked the same way: nothing outside a recording is read.)
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from lpstream.errors import LpstreamError, ProtocolError
from lpstream.http.ai import json_error
from lpstream.http.play_guard import PlayGuard, hls_token
from lpstream.media import check_stream_name
from lpstream.playback.playlist_query import carry_query, query_of
from lpstream.storage.recordings import MASTER
from lpstream.storage.store import content_type_of
from lpstream.storage.stored_hls import CACHE_SEGMENT

__all__ = ["RecordingDirectory", "recording_routes"]


class RecordingDirectory(Protocol):
    """What the routes need (the gateway's ``OutputHub``)."""

    def start_recording(self, name: str) -> str: ...

    def stop_recording(self, name: str) -> str | None: ...

    def recording_of(self, name: str) -> str | None: ...

    async def recordings(self, stream: str | None = None) -> list[dict[str, Any]]: ...

    async def read_recording(self, stream: str, recording: str, path: str) -> bytes | None: ...


def _checked_name(name: str) -> str:
    try:
        return check_stream_name(name)
    except ValueError as exc:
        raise ProtocolError(str(exc), code=400) from None


def recording_routes(
    directory: RecordingDirectory, *, guard: PlayGuard | None = None
) -> list[BaseRoute]:
    """The recording routes; ``guard`` authorizes ``/vod/`` like live HLS (None: anyone)."""

    async def record(request: Request) -> Response:
        try:
            name = _checked_name(request.path_params["name"])
            if request.method == "GET":
                running = directory.recording_of(name)
                return JSONResponse({"stream": name, "recording": running})
            if request.method == "DELETE":
                stopped = directory.stop_recording(name)
                if stopped is None:
                    raise ProtocolError(f"stream {name!r} is not recording", code=404)
                return JSONResponse({"stream": name, "recording": stopped})
            running = directory.recording_of(name)
            recording = directory.start_recording(name)
        except LpstreamError as exc:
            return json_error(exc)
        return JSONResponse(
            {"stream": name, "recording": recording, "url": f"/vod/{name}/{recording}/{MASTER}"},
            status_code=200 if running == recording else 201,
        )

    async def listing(request: Request) -> Response:
        stream = request.query_params.get("stream")
        try:
            if stream is not None:
                _checked_name(stream)
            recordings = await directory.recordings(stream)
        except LpstreamError as exc:
            return json_error(exc)
        return JSONResponse({"recordings": recordings}, headers={"Cache-Control": "no-cache"})

    async def vod(request: Request) -> Response:
        params = request.path_params
        stream, path = params["stream"], params["path"]
        token = None
        if guard is not None:
            refused = await guard.refusal(request, stream, "hls", hls_token(request))
            if refused is not None:
                return refused
            token = request.query_params.get("token")
        try:
            data = await directory.read_recording(stream, params["recording"], path)
        except LpstreamError as exc:
            return json_error(exc)
        if data is None:
            return PlainTextResponse("no such recording or object\n", status_code=404)
        kind = content_type_of(path)
        if not path.endswith(".m3u8"):
            return Response(data, media_type=kind, headers={"Cache-Control": CACHE_SEGMENT})
        text = data.decode("utf-8", "replace")
        if token is not None:
            text = carry_query(text, query_of({"token": token}))
        return Response(text, media_type=kind, headers={"Cache-Control": "no-cache"})

    return [
        Route("/api/streams/{name}/record", record, methods=["GET", "POST", "DELETE"]),
        Route("/api/recordings", listing),
        Route("/vod/{stream}/{recording}/{path:path}", vod),
    ]
