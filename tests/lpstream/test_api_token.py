"""The API token over real HTTP: every ``/api/*`` route of the app (enumerated, so a new one
cannot be missed), the live AI WebSocket and ``/metrics`` answer 401 without it and as usual
with it; other routes never ask; without a token only loopback clients are served."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from trio_websocket import open_websocket_url

from ingest.whip import WhepPlayback, WhipIngest
from lpstream.access import SecretSet
from lpstream.config import HostPort
from lpstream.errors import BusyError, ProtocolError
from lpstream.gateway.ai_jobs import AiJobOutcome, AiJobRequest, ModelOffer
from lpstream.gateway.live_ai import LiveAiSession, ParamValue
from lpstream.gateway.output_hub import OutputHub
from lpstream.http.api_guard import ApiGuard, guarded, request_identity, warn_if_open
from lpstream.http.app import build_app
from lpstream.jobs import Relay
from lpstream.media import VideoProfile
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from tests.access.client import asgi_call, call
from tests.asgi import serve_on_loopback
from tests.lpstream.test_stream_names import Directory, NoPublishes, NoStreams

TOKEN = "api-token-for-tests"
OTHER_TOKEN = "another-api-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class OneAiSession:
    """A node with one live AI session, on stream ``cam``; starting another is refused."""

    def __init__(self) -> None:
        self.session = LiveAiSession(
            stream="cam",
            session="s-ai",
            pipeline="noop",
            params={},
            profile=VideoProfile(name="ai", width=512, height=512, bitrate=1_000_000),
            pool=cast(Any, None),  # no job is run: the tests only connect
        )

    def start_ai(
        self,
        stream_name: str,
        pipeline: str,
        params: dict[str, ParamValue],
        size: tuple[int, int] | None = None,
        *,
        started_by: str | None = None,
    ) -> LiveAiSession:
        raise ProtocolError(f"stream {stream_name!r} is not live", code=404)

    def ai_session(self, stream_name: str) -> LiveAiSession | None:
        return self.session if stream_name == "cam" else None


class NoAiJobs:
    """Batch AI with no orchestrator offering anything: every job is refused (503)."""

    def offered_models(self) -> list[ModelOffer]:
        return []

    async def run_ai_job(self, request: AiJobRequest, relay: Relay) -> AiJobOutcome:
        raise BusyError("no orchestrator offers it")


def the_app(tokens: SecretSet | None) -> Starlette:
    outputs = OutputHub(metrics=Metrics())  # no store, no live stream: 503 and 404 answers
    return build_app(
        playback=Directory(),
        status=dict,
        metrics=Metrics(),
        whip=WhipIngest(handler=NoPublishes()),
        whep=WhepPlayback(source=NoStreams()),
        ai=OneAiSession(),
        ai_jobs=NoAiJobs(),
        api_tokens=tokens,
        recordings=outputs,
        forwards=outputs,
        orchestrator_admin=Orchestrator(secret="s", metrics=Metrics()),
    )


@pytest.fixture
async def port(nursery: trio.Nursery) -> AsyncIterator[int]:
    tokens = SecretSet.of("api", [TOKEN, OTHER_TOKEN], flag="--api-token")
    yield await nursery.start(serve_on_loopback, the_app(tokens))


def requests_of(app: Starlette) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route of ``app``, path parameters filled in."""
    found = []
    for route in app.routes:
        if isinstance(route, Route):
            path = re.sub(r"\{[^}:]+(:\w+)?\}", lambda m: "7" if m.group(1) else "cam", route.path)
            found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


async def test_every_api_route_and_metrics_need_the_token(port: int) -> None:
    requests = [(m, p) for m, p in requests_of(the_app(None)) if guarded(p)]
    assert {p for _, p in requests} >= {
        "/api/status",
        "/metrics",
        "/api/ai/cam",
        "/api/recordings",
        "/api/streams/cam/record",
        "/api/streams/cam/forward",
        "/api/orchestrator/price",
    }
    for method, path in requests:
        refused = await call(port, method, path)
        assert refused.status == 401, (method, path, refused)
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = await call(port, method, path, headers={"Authorization": "Bearer nope-nope"})
        assert wrong.status == 401, (method, path)
        allowed = await call(port, method, path, headers=BEARER)
        assert allowed.status not in (401, 403), (method, path, allowed)
    expected = {
        ("GET", "/api/status"): 200,
        ("GET", "/metrics"): 200,
        ("GET", "/api/ai/cam"): 200,
        ("POST", "/api/ai/cam"): 404,  # reached the route: the stream is not live
    }
    start = b'{"pipeline": "noop"}'
    for (method, path), status in expected.items():
        assert (await call(port, method, path, headers=BEARER, body=start)).status == status
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    assert (await call(port, "GET", "/api/status", headers=other)).status == 200


async def test_routes_outside_the_api_never_ask_for_it(port: int) -> None:
    outside = [(m, p) for m, p in requests_of(the_app(None)) if not guarded(p)]
    assert any(p.startswith("/hls/") for _, p in outside)
    for method, path in outside:
        reply = await call(port, method, path, body=b"" if method != "GET" else None)
        assert reply.status != 401 and "api token" not in reply.text.lower(), (method, path)


UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def test_the_ai_websocket_needs_the_token_as_a_header_or_in_the_query(port: int) -> None:
    control = "/api/ai/cam/control"
    for path in (control, f"{control}?token=wrong-token"):
        refused = await call(port, "GET", path, headers=UPGRADE)  # the handshake's answer
        assert refused.status == 401, refused
        assert refused.headers["www-authenticate"].startswith("Bearer")
    url = f"ws://127.0.0.1:{port}{control}"
    for target, headers in [
        (url, [(b"authorization", f"Bearer {TOKEN}".encode())]),
        (f"{url}?token={TOKEN}", []),
    ]:
        async with open_websocket_url(target, extra_headers=headers) as ws:
            await ws.send_message('{"params": "not an object"}')
            event = json.loads(await ws.get_message())
            assert event == {"type": "error", "message": "params must be an object"}


async def test_without_a_token_loopback_clients_are_served_and_others_refused(
    nursery: trio.Nursery,
) -> None:
    app = the_app(None)
    port = await nursery.start(serve_on_loopback, app)
    assert (await call(port, "GET", "/api/status")).status == 200
    assert (await call(port, "GET", "/metrics")).status == 200
    for client in [("203.0.113.5", 40000), ("2001:db8::1", 40000), ("10.0.0.2", 1)]:
        for path in ("/api/status", "/metrics", "/api/ai/cam"):
            refused = await asgi_call(app, "GET", path, client=client)
            assert refused.status == 403 and "--api-token" in refused.text, (client, path)
        assert (await asgi_call(app, "GET", "/watch/cam", client=client)).status == 200
    for loopback in [("127.0.0.1", 1), ("::1", 1), ("::ffff:127.0.0.1", 1)]:
        assert (await asgi_call(app, "GET", "/api/status", client=loopback)).status == 200


async def test_with_a_token_other_machines_use_the_api_too() -> None:
    app = the_app(SecretSet.of("api", [TOKEN], flag="--api-token"))
    remote = ("203.0.113.5", 40000)
    assert (await asgi_call(app, "GET", "/api/status", client=remote)).status == 401
    reply = await asgi_call(app, "GET", "/api/status", client=remote, headers=BEARER)
    assert reply.status == 200


async def test_a_route_knows_which_token_was_used() -> None:
    async def whoami(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request_identity(request)))

    tokens = SecretSet.of("api", [TOKEN, OTHER_TOKEN], flag="--api-token")
    inner = Starlette(routes=[Route("/api/whoami", whoami), WebSocketRoute("/api/ws", whoami)])
    guard = ApiGuard(inner, tokens=tokens)
    client = ("203.0.113.5", 1)
    first = await asgi_call(guard, "GET", "/api/whoami", client=client, headers=BEARER)
    second = await asgi_call(
        guard,
        "GET",
        "/api/whoami",
        client=client,
        headers={"Authorization": f"Bearer {OTHER_TOKEN}"},
    )
    assert first.text.startswith("api:") and second.text.startswith("api:")
    assert first.text != second.text and TOKEN not in first.text
    open_guard = ApiGuard(inner)
    loopback = await asgi_call(open_guard, "GET", "/api/whoami", client=("127.0.0.1", 1))
    assert loopback.text == "loopback"


def test_the_node_warns_when_its_api_is_reachable_without_a_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = SecretSet.of("api", [TOKEN], flag="--api-token")
    with caplog.at_level(logging.WARNING, logger="lpstream.http"):
        warn_if_open(HostPort("127.0.0.1", 8935), None)
        warn_if_open(HostPort("0.0.0.0", 8935), tokens)
        assert caplog.records == []
        warn_if_open(HostPort("0.0.0.0", 8935), None)
    (record,) = caplog.records
    assert "--api-token" in record.getMessage() and "0.0.0.0:8935" in record.getMessage()
