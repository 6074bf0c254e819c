"""Batch AI over HTTP: go-livepeer's AI routes and OpenAI's chat completions (ASGI).

Routes (the gateway's; they spend its money, so :mod:`~lpstream.http.api_guard` holds them to
the API token as it holds ``/api/*``):

* ``POST /text-to-image`` (JSON), ``/image-to-image`` and ``/upscale`` (a form, file field
  ``image``), ``/audio-to-text`` (a form, file field ``audio``), ``/llm`` (JSON), answered
  as go-livepeer answers them: ai-worker's ``ImageResponse``, ``TextResponse`` and
  ``LLMResponse``; errors ``{"detail": {"msg": ...}}``.
* ``POST /v1/chat/completions`` and ``GET /v1/models``, answered as OpenAI answers them
  (errors ``{"error": {"message", "type", "param", "code"}}``), so OpenAI's clients work
  with ``base_url=".../v1"`` and the API token as their key.

How this works
--------------
A request's body is read through the app's :class:`~lpstream.http.limits.BodyReader` within
its route's limit (JSON 1 MiB; a picture form 20 MiB and 256 KiB; an audio form 50 MiB and
256 KiB: :mod:`lpstream.gateway.ai_requests`), parsed, checked by the capability's batch pipeline
class (``checked``: 400/413) and priced (``quote``: the units paid ahead) before anything is
sent. The job then runs when its answer is served: the route returns a ``Response`` whose
ASGI ``__call__`` runs ``AiJobs.run_ai_job`` while it listens for the client leaving (then
the job is cancelled, quietly: a debug line); no async generator holds a nursery. A whole
answer is rendered from the outcome. A streamed one (``stream: true``) sends its headers
when the relay's ``start`` comes (the first output byte), one server-sent event per piece of
the ``completion`` output as it arrives, the closing events (finish reason, usage) once the
job is done, then ``data: [DONE]``. A failure before ``start`` is a JSON error with its
status; after it, an error event ends the stream. Statuses: a ``ProtocolError``'s code, 503
for ``BusyError``, 502 a broken orchestrator, 504 one too slow, 500 (logged with its
traceback) anything unexpected.
"""

from __future__ import annotations

import codecs
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from lpstream.errors import ProtocolError
from lpstream.gateway.ai_answers import (
    SSE_DONE,
    ChatAnswer,
    TokenUsage,
    Track,
    image_response,
    livepeer_error,
    models_list,
    openai_error,
    sse_event,
    text_response,
)
from lpstream.gateway.ai_jobs import AiJobOutcome, AiJobRequest, AiJobs
from lpstream.gateway.ai_requests import (
    AI_ROUTES,
    CHAT_COMPLETIONS,
    AiRoute,
    ParsedAiRequest,
    choose_model,
    parse_ai_request,
)
from lpstream.http.limits import CLIENT_LEFT, BodyReader
from lpstream.jobs import error_code
from lpstream.wire import Rendition
from lpstream.wire.fields import ParamValue
from workers.batch import BatchPipeline, BatchRegistry, BatchRequest
from workers.pipelines import PipelineError

__all__ = ["SEED_HEADER", "PipelineLookup", "ai_job_routes", "registry_lookup"]

log = logging.getLogger("lpstream.http.ai_jobs")

PipelineLookup = Callable[[str], type[BatchPipeline]]
"""The batch pipeline class of a capability (``BatchRegistry().get``)."""
SEED_HEADER = "Lpstream-Seed"
"""The seed a job ran with (random when the request gave none)."""
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@functools.cache
def registry_lookup() -> PipelineLookup:
    """The node's batch pipelines: built-ins and plugins (their classes import on first use,
    and none imports torch then)."""
    return BatchRegistry().get


def _checked_and_quoted(
    cls: type[BatchPipeline], request: BatchRequest
) -> tuple[BatchRequest, int]:
    checked = cls.checked(request)
    return checked, cls.quote(checked)


@attrs.frozen(kw_only=True)
class _Prepared:
    """A checked, priced request, ready to run."""

    route: AiRoute
    parsed: ParsedAiRequest
    job: AiJobRequest


def ai_job_routes(
    jobs: AiJobs, *, bodies: BodyReader | None = None, pipelines: PipelineLookup | None = None
) -> list[BaseRoute]:
    """The batch AI routes (see the module comment); ``bodies`` reads request bodies (the
    app's one reader; a new one if None), ``pipelines`` finds a capability's pipeline class
    (the registry's if None)."""
    reader = bodies or BodyReader()

    async def prepare(route: AiRoute, request: Request) -> _Prepared:
        cls = (pipelines or registry_lookup())(route.capability)
        body = await reader.read(request, route.max_body, what=f"{route.path} body")
        parsed = parse_ai_request(route, request.headers.get("content-type"), body, cls.spec)
        # Reading a picture's or an audio file's header (and an audio file's packets when it
        # states no duration) is blocking work: off the trio thread.
        checked, units = await trio.to_thread.run_sync(
            _checked_and_quoted, cls, BatchRequest(params=parsed.params, input=parsed.input)
        )
        model = choose_model(route.capability, parsed.model_id, jobs.offered_models())
        job = AiJobRequest(
            capability=route.capability,
            model_id=model,
            params=_wire_params(checked.params),
            input=checked.input,
            units=units,
        )
        return _Prepared(route=route, parsed=parsed, job=job)

    def endpoint(route: AiRoute) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                prepared = await prepare(route, request)
            except Exception as exc:
                return _error_response(route, exc)
            return _JobAnswer(jobs, prepared)

        return answer

    async def models(request: Request) -> Response:
        return JSONResponse(models_list(jobs.offered_models()))

    return [
        *(Route(path, endpoint(route), methods=["POST"]) for path, route in AI_ROUTES.items()),
        Route(CHAT_COMPLETIONS.path, endpoint(CHAT_COMPLETIONS), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]


def _wire_params(params: Mapping[str, object]) -> dict[str, ParamValue]:
    """Checked parameters as the JOB message carries them."""
    wire: dict[str, ParamValue] = {}
    for name, value in params.items():
        if not isinstance(value, str | int | float | bool):
            raise ProtocolError(f"parameter {name} cannot be sent ({type(value).__name__})")
        wire[name] = value
    return wire


def _status_of(exc: Exception) -> int:
    if isinstance(exc, PipelineError):  # checked/quote: BadRequestError 400, 413
        code = getattr(exc, "code", 400)
        return code if isinstance(code, int) else 400
    return error_code(exc)


def _error_body(route: AiRoute, exc: Exception, status: int) -> dict[str, Any]:
    message = str(exc) if status != 500 else "internal error"
    if route.openai:
        param, kind = getattr(exc, "param", None), getattr(exc, "kind", None)
        return openai_error(message, status, param=param, kind=kind)
    return livepeer_error(message)


def _error_response(route: AiRoute, exc: Exception) -> Response:
    status = _status_of(exc)
    if status == CLIENT_LEFT:  # logged by the body reader: a client leaving is normal
        pass
    elif status == 500:
        log.error("%s failed", route.path, exc_info=exc)
    elif status >= 500:
        log.warning("%s failed with %d: %s", route.path, status, exc)
    else:
        log.info("%s refused with %d: %s", route.path, status, exc)
    return JSONResponse(_error_body(route, exc, status), status_code=status)


def _tracks(outcome: AiJobOutcome) -> list[Track]:
    return [Track(name=o.info.name, data=o.data, units=o.info.pixels) for o in outcome.outputs]


def _finish_reason(tracks: Sequence[Track]) -> str:
    found = next((t.data for t in tracks if t.name == "finish"), b"")
    return "length" if found.strip() == b"length" else "stop"


class _Ignore:
    """A relay for whole answers: the outcome holds every output."""

    async def start(self, renditions: Sequence[Rendition]) -> None:
        pass

    async def data(self, track: int, payload: bytes) -> None:
        pass


class _JobAnswer(Response):
    """Runs a prepared job when served and answers with its outcome, whole or streamed (see
    the module comment)."""

    def __init__(self, jobs: AiJobs, prepared: _Prepared) -> None:
        super().__init__(status_code=200)
        self._jobs = jobs
        self._prepared = prepared
        seed = prepared.job.params.get("seed")
        self._extra_headers = {SEED_HEADER: str(seed)} if isinstance(seed, int) else {}
        self._client_left = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_client, receive, nursery.cancel_scope)
            if self._prepared.parsed.stream:
                await self._stream(scope, receive, send)
            else:
                await self._whole(scope, receive, send)
            nursery.cancel_scope.cancel()
        if self._client_left:
            route, job = self._prepared.route, self._prepared.job
            log.debug("%s (%s): the client left; the job was ended", route.path, job.model_id)

    async def _watch_client(self, receive: Receive, cancel: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._client_left = True
        cancel.cancel()

    def _answer(self) -> ChatAnswer:
        parsed, job = self._prepared.parsed, self._prepared.job
        return ChatAnswer(
            id=f"chatcmpl-{secrets.token_hex(12)}",
            model=job.model_id,
            created=int(time.time()),
            openai=self._prepared.route.openai,
            include_usage=parsed.include_usage,
        )

    async def _whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, job = self._prepared.route, self._prepared.job
        try:
            outcome = await self._jobs.run_ai_job(job, _Ignore())
            body = self._render(outcome)
        except Exception as exc:
            response = _error_response(route, exc)
        else:
            response = JSONResponse(body, headers=self._extra_headers)
        await response(scope, receive, send)

    def _render(self, outcome: AiJobOutcome) -> dict[str, Any]:
        tracks = _tracks(outcome)
        capability = self._prepared.job.capability
        if capability == "audio-to-text":
            return text_response(tracks)
        if capability == "llm":
            text = b"".join(t.data for t in tracks if t.name == "completion")
            usage = TokenUsage.from_tracks(tracks)
            answer = self._answer()
            return answer.whole(text.decode(errors="replace"), _finish_reason(tracks), usage)
        seed = self._prepared.job.params.get("seed", 0)
        return image_response(tracks, seed if isinstance(seed, int) else 0)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = _EventRelay(send=send, answer=self._answer(), headers=self._extra_headers)
        route = self._prepared.route
        try:
            outcome = await self._jobs.run_ai_job(self._prepared.job, relay)
            if not relay.started:
                await relay.start(())
            tracks = _tracks(outcome)
            for chunk in relay.answer.last_chunks(
                _finish_reason(tracks), TokenUsage.from_tracks(tracks)
            ):
                await relay.event(sse_event(chunk))
            await relay.end(SSE_DONE)
        except Exception as exc:
            if not relay.started:
                await _error_response(route, exc)(scope, receive, send)
                return
            status = _status_of(exc)
            log.warning("%s stream failed with %d: %s", route.path, status, exc)
            await relay.end(sse_event(_error_body(route, exc, status)))


@attrs.define
class _EventRelay:
    """Passes a streamed job's outputs on as server-sent events."""

    send: Send
    answer: ChatAnswer
    headers: Mapping[str, str]
    started: bool = False
    _names: tuple[str, ...] = ()
    _pieces: int = 0
    _decoder: codecs.IncrementalDecoder = attrs.Factory(
        lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    async def start(self, renditions: Sequence[Rendition]) -> None:
        self._names = tuple(r.name for r in renditions)
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        headers += [(k.lower().encode(), v.encode()) for k, v in _SSE_HEADERS.items()]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        self.started = True
        first = self.answer.first_chunk()
        if first is not None:
            await self.event(sse_event(first))

    async def data(self, track: int, payload: bytes) -> None:
        if track < len(self._names) and self._names[track] == "completion":
            text = self._decoder.decode(payload)
            if text:
                self._pieces += 1
                await self.event(sse_event(self.answer.delta_chunk(text, self._pieces)))

    async def event(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": False})
