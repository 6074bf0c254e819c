"""The node's HTTP surface: HLS playback, the watch page, status and metrics (ASGI).

Playback is LL-HLS and plain HLS at the same URLs: a media playlist request without delivery
directives gets the current playlist at once (its LL-HLS tags are ignored by players that do
not know them); ``_HLS_msn`` / ``_HLS_part`` hold it until that part or segment is listed
(blocking reload), and a request for the preload-hinted part is held until the part exists.
The decisions are ``LowLatencyStream``'s; ``LivePlayback`` does the waiting and its limits.
A fragmented-MP4 rendition is served at the same places with other names: its init sections
``init{n}.mp4``, its segments ``{seq}.m4s`` and parts ``{seq}.{part}.m4s``; the same handlers
serve both formats, and a name in the format a segment or part does not have is 404.

Access, in front of every route (outermost first): CORS for HLS and the API
(:mod:`~lpstream.http.cors`, with ``cors_origins``), the API token for ``/api/*``,
``/metrics`` and the batch AI routes (:mod:`~lpstream.http.api_guard`), and with ``play``
the play authorization of WHEP (:mod:`~lpstream.http.play_guard`); HLS requests are
authorized by their routes here, before a stream is looked up, and the playlists then carry
the viewer's token in their URIs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ingest.whip import WhepPlayback, WhipIngest
from lpstream.access import PlayAuthorizer, SecretSet
from lpstream.gateway.ai_jobs import AiJobs
from lpstream.http.ai import AiDirectory, ai_routes
from lpstream.http.ai_jobs import ai_job_routes
from lpstream.http.api_guard import ApiGuard
from lpstream.http.cors import CorsMiddleware
from lpstream.http.dashboard import dashboard_routes
from lpstream.http.forwards import ForwardDirectory, forward_routes
from lpstream.http.limits import BodyReader, HttpLimits
from lpstream.http.metrics_app import metrics_response
from lpstream.http.orchestrator_admin import OrchestratorPricing, orchestrator_admin_routes
from lpstream.http.play_guard import PlayGuard, WhepPlayGuard, hls_token
from lpstream.http.recordings import RecordingDirectory, recording_routes
from lpstream.http.status import status_json
from lpstream.http.watch import watch_routes
from lpstream.http.whep import whep_routes
from lpstream.http.whip import whip_routes
from lpstream.media import check_stream_name
from lpstream.metrics import Metrics
from lpstream.playback.live import LivePlayback
from lpstream.playback.llhls import PartReady, PlaylistReady, Refused, WaitForUpdate
from lpstream.playback.playlist_query import carry_query, query_of
from lpstream.storage.store import content_type_of

__all__ = ["PlaybackDirectory", "build_app"]

M3U8 = "application/vnd.apple.mpegurl"
MEDIA_CACHE = "max-age=60"
_PART_PATH = "/hls/{stream}/{rendition}/{seq:media_number}.{part:media_number}"


class MediaNumberConvertor(Convertor[int]):
    """A segment or part number in a URL (``{seq:media_number}``): 1 to 15 digits, as the
    ``_HLS_msn`` and ``_HLS_part`` directives. Starlette's ``int`` takes any number of
    digits, and Python refuses to convert more than 4300 (a 500); a longer one names
    nothing here (404)."""

    regex = "[0-9]{1,15}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("media_number", MediaNumberConvertor())
"""Cache-Control of parts and segments: their bytes never change once published."""


class PlaybackDirectory(Protocol):
    """Where the HTTP layer finds live streams (the gateway implements it)."""

    def playback(self, name: str) -> LivePlayback | None: ...


def _no_store(body: str | bytes, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


def _playlist(text: str, token: str | None) -> Response:
    """A playlist answer; with a viewer's token, every URI in it carries the token."""
    if token is not None:
        text = carry_query(text, query_of({"token": token}))
    return _no_store(text, M3U8)


def _media(data: bytes, name: str) -> Response:
    """A segment, part or init section: immutable once published, typed by its name
    (``video/mp2t``, ``video/iso.segment``, ``video/mp4``), as the stored ones are."""
    return Response(data, media_type=content_type_of(name), headers={"Cache-Control": MEDIA_CACHE})


def _extension(fmp4: bool) -> str:
    return ".m4s" if fmp4 else ".ts"


_WRONG_FORMAT = Refused(code=404, reason="part is not available in this format")


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
    api_tokens: SecretSet | None = None,
    play: PlayAuthorizer | None = None,
    cors_origins: Sequence[str] = (),
    recordings: RecordingDirectory | None = None,
    forwards: ForwardDirectory | None = None,
    orchestrator_admin: OrchestratorPricing | None = None,
    ai_jobs: AiJobs | None = None,
) -> Starlette:
    """Builds the ASGI app; ``playback`` is None on nodes that serve no viewers, ``whip``
    None on nodes that take no WHIP publishes, ``whep`` None on nodes with no WebRTC viewers.
    ``limits`` gives the request body budget (``body_timeout``, ``max_uploads``; the rest is
    the server's); every route that takes a body reads it through one ``BodyReader``.
    ``status`` gives the node's status value, which ``/api/status`` renders with
    ``lpstream.http.status.status_json``. ``api_tokens`` guard ``/api/*`` and ``/metrics``
    (None: loopback clients only), ``play`` decides who may watch over HLS and WHEP (None:
    anyone), ``cors_origins`` are the web origins whose pages may use HLS and the API,
    ``recordings`` starts, lists and serves recordings and ``forwards`` restreams (None on
    nodes without them); ``orchestrator_admin`` is the orchestrator whose price
    ``/api/orchestrator/price`` sets (None on nodes without one); ``ai_jobs`` runs batch AI
    jobs for go-livepeer's AI routes and ``/v1/`` (:mod:`~lpstream.http.ai_jobs`; None:
    those routes are absent)."""
    bodies = BodyReader.from_limits(limits or HttpLimits())
    guard = None if play is None else PlayGuard(play)

    async def open_stream(request: Request) -> tuple[LivePlayback, str | None] | Response:
        """The stream a request names and the viewer's ``?token=`` (to carry into the
        playlists' URIs); or the answer refusing it (play authorization first, then 404)."""
        token = None
        if guard is not None:
            stream_name = request.path_params["stream"]
            refused = await guard.refusal(request, stream_name, "hls", hls_token(request))
            if refused is not None:
                return refused
            token = request.query_params.get("token")
        try:
            name = check_stream_name(request.path_params["stream"])
        except ValueError:
            name = None
        stream = None if playback is None or name is None else playback.playback(name)
        if stream is None:
            return PlainTextResponse("no such stream\n", status_code=404)
        return stream, token

    async def master(request: Request) -> Response:
        opened = await open_stream(request)
        if isinstance(opened, Response):
            return opened
        stream, token = opened
        text = stream.stream.master_playlist()
        if text is None:
            return PlainTextResponse("stream is starting, retry shortly\n", status_code=404)
        return _playlist(text, token)

    async def media(request: Request) -> Response:
        opened = await open_stream(request)
        if isinstance(opened, Response):
            return opened
        stream, token = opened
        answer = await stream.answer_playlist(
            request.path_params["rendition"], request.query_params
        )
        if isinstance(answer, PlaylistReady):
            return _playlist(answer.text, token)
        assert isinstance(answer, Refused)
        return _refused(answer)

    def segment(fmp4: bool) -> Callable[[Request], Awaitable[Response]]:
        """The handler of segments named ``{seq}.m4s`` (``fmp4``) or ``{seq}.ts``."""

        async def answer(request: Request) -> Response:
            opened = await open_stream(request)
            if isinstance(opened, Response):
                return opened
            params = request.path_params
            data = opened[0].stream.segment(params["rendition"], params["seq"], fmp4=fmp4)
            if data is None:
                return PlainTextResponse("segment is not available\n", status_code=404)
            return _media(data, _extension(fmp4))

        return answer

    def part(fmp4: bool) -> Callable[[Request], Awaitable[Response]]:
        """The handler of parts named ``{seq}.{part}.m4s`` (``fmp4``) or ``{seq}.{part}.ts``;
        a part not published yet is waited for (blocking), in the format asked for only."""

        async def answer(request: Request) -> Response:
            opened = await open_stream(request)
            if isinstance(opened, Response):
                return opened
            stream = opened[0]
            params = request.path_params
            rendition, seq, index = params["rendition"], params["seq"], params["part"]
            found = stream.stream.answer_part(rendition, seq, index, fmp4=fmp4)
            if isinstance(found, WaitForUpdate):
                found = await stream.answer_part(rendition, seq, index)
            if isinstance(found, PartReady) and found.fmp4 != fmp4:
                found = _WRONG_FORMAT
            if isinstance(found, PartReady):
                return _media(found.data, _extension(fmp4))
            assert isinstance(found, Refused)
            return _refused(found)

        return answer

    async def init_section(request: Request) -> Response:
        opened = await open_stream(request)
        if isinstance(opened, Response):
            return opened
        params = request.path_params
        data = opened[0].stream.init(params["rendition"], params["number"])
        if data is None:
            return PlainTextResponse("init section is not available\n", status_code=404)
        return _media(data, ".mp4")

    async def api_status(request: Request) -> Response:
        return JSONResponse(status_json(status()))

    async def prometheus(request: Request) -> Response:
        return metrics_response(metrics)

    routes: list[BaseRoute] = [
        Route("/hls/{stream}/index.m3u8", master),
        Route("/hls/{stream}/{rendition}/index.m3u8", media),
        Route("/hls/{stream}/{rendition}/init{number:media_number}.mp4", init_section),
        Route("/hls/{stream}/{rendition}/{seq:media_number}.ts", segment(fmp4=False)),
        Route("/hls/{stream}/{rendition}/{seq:media_number}.m4s", segment(fmp4=True)),
        Route(f"{_PART_PATH}.ts", part(fmp4=False)),
        Route(f"{_PART_PATH}.m4s", part(fmp4=True)),
        Route("/api/status", api_status),
        Route("/metrics", prometheus),
        *watch_routes(),
        *dashboard_routes(status=status, playback=playback, api_tokens=api_tokens, bodies=bodies),
    ]
    if whip is not None:
        routes += whip_routes(whip, bodies=bodies)
    if whep is not None:
        routes += whep_routes(whep, bodies=bodies)
    if ai is not None:
        routes += ai_routes(ai, bodies=bodies)
    if recordings is not None:
        routes += recording_routes(recordings, guard=guard)
    if forwards is not None:
        routes += forward_routes(forwards, bodies=bodies)
    if orchestrator_admin is not None:
        routes += orchestrator_admin_routes(orchestrator_admin, bodies=bodies)
    if ai_jobs is not None:
        routes += ai_job_routes(ai_jobs, bodies=bodies)
    middleware = [
        Middleware(CorsMiddleware, origins=tuple(cors_origins)),
        Middleware(ApiGuard, tokens=api_tokens),
    ]
    if guard is not None and whep is not None:
        middleware.append(Middleware(WhepPlayGuard, guard=guard))
    return Starlette(routes=routes, middleware=middleware)
