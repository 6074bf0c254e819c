"""Restreams over HTTP: forward a live stream's rendition to another RTMP or SRT service.

* ``POST /api/streams/{name}/forward`` with ``{"url": "rtmp://…" | "rtmps://…" | "srt://…",
  "rendition": "source"}`` (``rendition`` optional, default ``source``) starts one: 201 and
  its status (``id``, ``url`` with the stream key masked, ``rendition``, ``state``:
  ``connecting`` | ``live`` | ``retrying`` | ``stopped``, bytes and segments sent, segments
  dropped, reconnects, ``last_error``). 400 a URL of another scheme or a bad rendition, 404
  a stream that is not live, 409 the same forward exists or the stream has as many as it may
  (8), 501 ``srt://`` on a node without libsrt.
* ``GET /api/streams/{name}/forward`` lists them (``{"forwards": [...]}``);
  ``DELETE /api/streams/{name}/forward/{id}`` stops one (200, its last status).

The forwarded stream is the rendition's own packets, never re-encoded; it reconnects with
backoff when the destination drops and ends with the stream. ``--forward URL`` restreams
every stream's source. Behind the API token like every ``/api/*`` route.
"""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lpstream.errors import LpstreamError, ProtocolError
from lpstream.http.ai import json_error, load_json_object
from lpstream.http.limits import BodyReader
from lpstream.http.status import status_json
from lpstream.media import check_stream_name
from lpstream.restream import ForwardStatus

__all__ = ["ForwardDirectory", "forward_routes"]

MAX_BODY = 8 * 1024
"""Largest request body (a URL is at most 2 KiB)."""


class ForwardDirectory(Protocol):
    """What the routes need (the gateway's ``OutputHub``)."""

    def add_forward(self, name: str, url: str, rendition: str) -> ForwardStatus: ...

    def forwards(self, name: str) -> list[ForwardStatus]: ...

    def remove_forward(self, name: str, forward_id: str) -> ForwardStatus: ...


def forward_routes(
    directory: ForwardDirectory, *, bodies: BodyReader | None = None
) -> list[BaseRoute]:
    """The restream routes; ``bodies`` reads request bodies (the app's one reader)."""
    reader = bodies or BodyReader()

    def stream_of(request: Request) -> str:
        try:
            return check_stream_name(request.path_params["name"])
        except ValueError as exc:
            raise ProtocolError(str(exc), code=400) from None

    async def forwards(request: Request) -> Response:
        try:
            name = stream_of(request)
            if request.method == "GET":
                listed = directory.forwards(name)
                return JSONResponse({"forwards": [status_json(f) for f in listed]})
            body = load_json_object(
                (await reader.read(request, MAX_BODY)).decode("utf-8", "replace")
            )
            url, rendition = body.get("url"), body.get("rendition", "source")
            if not isinstance(url, str) or not isinstance(rendition, str):
                raise ProtocolError('expected {"url": "rtmp://…", "rendition": "source"}')
            started = directory.add_forward(name, url, rendition)
        except LpstreamError as exc:
            return json_error(exc)
        return JSONResponse(status_json(started), status_code=201)

    async def forward(request: Request) -> Response:
        try:
            stopped = directory.remove_forward(stream_of(request), request.path_params["id"])
        except LpstreamError as exc:
            return json_error(exc)
        return JSONResponse(status_json(stopped))

    return [
        Route("/api/streams/{name}/forward", forwards, methods=["GET", "POST"]),
        Route("/api/streams/{name}/forward/{id}", forward, methods=["DELETE"]),
    ]
