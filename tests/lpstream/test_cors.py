"""CORS for HLS and the API (``--cors-origin``) over real HTTP: headers on answers, preflights
answered before the API token is asked for, WHIP and WHEP keeping their own."""

from __future__ import annotations

import pytest
import trio

from ingest.whip import WhepPlayback, WhipIngest
from lpstream.access import SecretSet, check_cors_origin
from lpstream.errors import ConfigError
from lpstream.http.app import build_app
from lpstream.metrics import Metrics
from tests.access.client import call
from tests.asgi import serve_on_loopback
from tests.lpstream.test_stream_names import Directory, NoPublishes, NoStreams

PLAYER = "https://player.example"
TOKEN = "api-token-for-cors"


async def serve(nursery: trio.Nursery, origins: tuple[str, ...]) -> int:
    app = build_app(
        playback=Directory(),
        status=dict,
        metrics=Metrics(),
        whip=WhipIngest(handler=NoPublishes()),
        whep=WhepPlayback(source=NoStreams()),
        api_tokens=SecretSet.of("api", [TOKEN], flag="--api-token"),
        cors_origins=origins,
    )
    port: int = await nursery.start(serve_on_loopback, app)
    return port


def preflight(origin: str, method: str = "GET") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization",
    }


async def test_an_allowed_origin_gets_cors_on_hls_and_the_api(nursery: trio.Nursery) -> None:
    port = await serve(nursery, (PLAYER, "https://other.example"))
    for path, token, status in [
        ("/hls/cam/index.m3u8", None, 404),
        ("/api/status", TOKEN, 200),
        ("/api/status", None, 401),  # so a page can tell a missing token from a network error
    ]:
        headers = {"Origin": PLAYER}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        reply = await call(port, "GET", path, headers=headers)
        assert reply.status == status
        assert reply.headers["access-control-allow-origin"] == PLAYER
        assert "Origin" in reply.headers["vary"]
    stranger = await call(
        port, "GET", "/hls/cam/index.m3u8", headers={"Origin": "https://x.example"}
    )
    assert "access-control-allow-origin" not in stranger.headers
    assert "Origin" in stranger.headers["vary"]


async def test_preflights_are_answered_without_the_token(nursery: trio.Nursery) -> None:
    port = await serve(nursery, (PLAYER,))
    reply = await call(port, "OPTIONS", "/api/ai/cam", headers=preflight(PLAYER, "POST"))
    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == PLAYER
    assert "POST" in reply.headers["access-control-allow-methods"]
    assert "Authorization" in reply.headers["access-control-allow-headers"]
    hls = await call(port, "OPTIONS", "/hls/cam/index.m3u8", headers=preflight(PLAYER))
    assert hls.status == 204
    refused = await call(port, "OPTIONS", "/api/status", headers=preflight("https://x.example"))
    assert refused.status == 403 and "access-control-allow-origin" not in refused.headers


async def test_any_origin_with_a_star(nursery: trio.Nursery) -> None:
    port = await serve(nursery, ("*",))
    reply = await call(port, "GET", "/hls/cam/index.m3u8", headers={"Origin": "https://a.example"})
    assert reply.headers["access-control-allow-origin"] == "*"


async def test_without_origins_nothing_changes_and_whip_whep_keep_theirs(
    nursery: trio.Nursery,
) -> None:
    port = await serve(nursery, ())
    reply = await call(port, "GET", "/hls/cam/index.m3u8", headers={"Origin": PLAYER})
    assert "access-control-allow-origin" not in reply.headers and "vary" not in reply.headers
    assert (await call(port, "OPTIONS", "/api/status", headers=preflight(PLAYER))).status != 204
    port = await serve(nursery, (PLAYER,))
    for path in ("/whip/cam", "/whep/cam"):
        own = await call(port, "OPTIONS", path, headers=preflight(PLAYER, "POST"))
        assert own.status == 204 and own.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("*", "*"),
        ("https://Player.Example", "https://player.example"),
        ("http://h:8080", "http://h:8080"),
        ("https://p.example/", "https://p.example"),
    ],
)
def test_origins_are_read_as_browsers_send_them(given: str, origin: str) -> None:
    assert check_cors_origin(given) == origin


@pytest.mark.parametrize(
    "given", ["player.example", "https://p.example/app", "ftp://p", "https://"]
)
def test_an_origin_that_no_browser_sends_is_a_configuration_error(given: str) -> None:
    with pytest.raises(ConfigError, match="--cors-origin"):
        check_cors_origin(given)
