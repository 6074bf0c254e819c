"""Live AI over HTTP: start, inspect and stop a stream's session; steer it over a WebSocket.

* ``POST /api/ai/{stream}`` with ``{"pipeline": NAME, "params": {...}, "width": W,
  "height": H}`` (all but ``pipeline`` optional) starts a session on a live stream: 201 and
  its status; 400 bad request, 404 stream not live, 409 a session already runs, 503 none can.
  The session carries who started it (the API identity, ``started_by`` in its status); with
  ``--api-spend-limit`` its payments count against that identity's wei per hour, and past it
  the session stops with an ``error`` and a ``stopped`` event saying so.
* ``GET /api/ai/{stream}`` is its status; ``DELETE`` stops it (204).
* ``/api/ai/{stream}/control`` is a WebSocket: the app sends ``{"params": {...}}`` (changes
  of some parameters) and receives JSON events: ``params`` (the change took effect, with the
  frame timestamp it applied at), ``stats``, ``billed``, ``paid``, ``swapped``, ``error``,
  ``stopped``. ``swapped`` says the session moved to another orchestrator because its own
  died, stalled or refused it: ``{"type": "swapped", "old": "host:port", "new": "host:port",
  "reason": ..., "gap_ms": N}`` (milliseconds from the last AI frame of the old one to the
  first of the new one); the status counts ``swaps`` and gives ``last_swap_gap_ms``. When no
  other orchestrator can take the session, ``error`` and ``stopped`` say why.
  A refused change is answered with an ``error`` event and the socket stays open.
  A parameter that names a model (the ``torchscript`` and ``img2img-diffusion`` pipelines'
  ``model``) takes a model's name in the worker's models directory: a path, ``..`` and the like
  are refused here with 400 and the reason, at the start and on the WebSocket, before anything
  reaches a worker (which checks again, and that the model is there:
  ``workers.pipelines.models``).
  Money in the status and the events is rendered as in ``/api/status`` (``status_json``):
  ``{"wei": "<whole wei>", "eth": <float>}`` (``billed``, ``credit``, ``balance``,
  ``orchestrator_balance``, ``price_per_second``), never a fraction string. Messages
  are at most 64 KiB, parameters flat (name to string, number or boolean). The start body is
  read as it streams (413 past 64 KiB, 408 too slow, 503 too many bodies at once:
  :class:`~lpstream.http.limits.BodyReader`); a bigger WebSocket message is refused by the
  server's protocol layer as it arrives (close 1009, ``HttpLimits.max_websocket_message``).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Protocol

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from lpstream.errors import LpstreamError, ProtocolError
from lpstream.gateway.live_ai import LiveAiSession, ParamValue
from lpstream.http.api_guard import request_identity
from lpstream.http.limits import BodyReader
from lpstream.http.status import status_json
from lpstream.json_depth import json_nesting
from lpstream.media import check_stream_name
from workers.pipelines import InvalidParamsError, PipelineRegistry

__all__ = [
    "AiDirectory",
    "ai_routes",
    "check_model_names",
    "json_error",
    "load_json_object",
    "parse_params",
]

MAX_MESSAGE = 64 * 1024
"""Largest request body or WebSocket message."""
MAX_DEPTH = 8
"""Deepest JSON nesting read (checked before parsing: the parser recurses)."""


class AiDirectory(Protocol):
    """What the routes need from the gateway."""

    def start_ai(
        self,
        stream_name: str,
        pipeline: str,
        params: dict[str, ParamValue],
        size: tuple[int, int] | None = None,
        *,
        started_by: str | None = None,
    ) -> LiveAiSession: ...

    def ai_session(self, stream_name: str) -> LiveAiSession | None: ...


def load_json_object(text: str) -> dict[str, Any]:
    """A JSON object of at most ``MAX_MESSAGE`` bytes nested at most ``MAX_DEPTH`` deep.

    Raises:
        ProtocolError: 413 too big; 400 too deep, not JSON or not an object.
    """
    if len(text) > MAX_MESSAGE:
        raise ProtocolError(f"message over {MAX_MESSAGE} bytes", code=413)
    if json_nesting(text.encode()) > MAX_DEPTH:
        raise ProtocolError(f"JSON nested deeper than {MAX_DEPTH} levels", code=400)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}", code=400) from None
    if not isinstance(value, dict):
        raise ProtocolError("expected a JSON object", code=400)
    return value


def parse_params(value: object) -> dict[str, ParamValue]:
    """Checks a ``params`` object: flat, names to strings, numbers or booleans."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("params must be an object", code=400)
    params: dict[str, ParamValue] = {}
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) or len(key) > 128:
            raise ProtocolError(
                f"parameter {key[:128]!r}: expected a string, number or boolean", code=400
            )
        params[key] = item
    if len(params) > 32:
        raise ProtocolError("at most 32 parameters", code=400)
    return params


@functools.cache
def _pipelines() -> PipelineRegistry:
    """The pipelines this node knows, for the form of their model names."""
    return PipelineRegistry()


def check_model_names(pipeline: str, params: dict[str, ParamValue]) -> None:
    """Refuses (400) a model parameter of ``pipeline`` that holds a path, ``..`` or the like.

    Raises:
        ProtocolError: 400, naming the parameter and what is wrong.
    """
    try:
        _pipelines().check_model_names(pipeline, params)
    except InvalidParamsError as exc:
        raise ProtocolError(str(exc), code=400) from None


def json_error(exc: LpstreamError) -> Response:
    """The JSON answer to a refused API request: ``{"error": reason}`` with its code."""
    code = exc.code if isinstance(exc, ProtocolError) else 500
    return JSONResponse({"error": str(exc)}, status_code=code)


def ai_routes(directory: AiDirectory, *, bodies: BodyReader | None = None) -> list[BaseRoute]:
    """The live AI routes; ``bodies`` reads request bodies (the app's one reader; a new one
    if None)."""
    reader = bodies or BodyReader()

    async def start(request: Request) -> Response:
        stream = request.path_params["stream"]
        try:
            try:
                check_stream_name(stream)
            except ValueError as exc:
                raise ProtocolError(str(exc), code=400) from None
            body = await reader.read(request, MAX_MESSAGE)
            request_json = load_json_object(body.decode("utf-8", errors="replace"))
            pipeline = request_json.get("pipeline")
            if not isinstance(pipeline, str) or not pipeline:
                raise ProtocolError("pipeline: a pipeline name is required", code=400)
            size = None
            if "width" in request_json or "height" in request_json:
                width, height = request_json.get("width", 512), request_json.get("height", 512)
                if not isinstance(width, int) or not isinstance(height, int):
                    raise ProtocolError("width and height are integers", code=400)
                size = (width, height)
            params = parse_params(request_json.get("params"))
            check_model_names(pipeline, params)
            try:
                session = directory.start_ai(
                    stream, pipeline, params, size, started_by=request_identity(request)
                )
            except ValueError as exc:
                raise ProtocolError(str(exc), code=400) from None
        except LpstreamError as exc:
            return json_error(exc)
        return JSONResponse(status_json(session.status()), status_code=201)

    async def status(request: Request) -> Response:
        session = directory.ai_session(request.path_params["stream"])
        if session is None:
            return JSONResponse({"error": "no live AI session"}, status_code=404)
        if request.method == "DELETE":
            session.stop()
            return Response(status_code=204)
        return JSONResponse(status_json(session.status()))

    async def control(websocket: WebSocket) -> None:
        session = directory.ai_session(websocket.path_params["stream"])
        if session is None or not session.running:
            await websocket.close(code=4404, reason="no running live AI session")
            return
        await websocket.accept()
        async with session.subscribe() as events, trio.open_nursery() as nursery:

            async def forward() -> None:
                async for event in events:
                    await websocket.send_json(status_json(event))
                    if event.get("type") == "stopped":
                        await websocket.close(code=1000)
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(forward)
            try:
                while True:
                    text: str | None = await websocket.receive_text()
                    try:
                        if text is None:  # a binary message
                            raise ProtocolError("messages are JSON text", code=400)
                        message = load_json_object(text)
                        changes = parse_params(message.get("params"))
                        check_model_names(session.pipeline, changes)
                        await session.update(changes)
                    except LpstreamError as exc:  # the answer is the params event
                        await websocket.send_json({"type": "error", "message": str(exc)})
            except WebSocketDisconnect:
                pass
            nursery.cancel_scope.cancel()

    return [
        Route("/api/ai/{stream}", start, methods=["POST"]),
        Route("/api/ai/{stream}", status, methods=["GET", "DELETE"]),
        WebSocketRoute("/api/ai/{stream}/control", control),
    ]
