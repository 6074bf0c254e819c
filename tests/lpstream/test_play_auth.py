"""Play authorization over real HTTP, in one process: HLS with ``?token=`` (a player walking
every URI of the playlists gets everything with it, 401 without) and WHEP with a bearer."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import AsyncIterator

import jwt
import pytest
import trio

from ingest.whip import WhepPlayback
from lpstream.access import JwtVerifier, PlayAuthorizer, SecretSet
from lpstream.http.app import build_app
from lpstream.metrics import Metrics
from lpstream.playback.live import LivePlayback
from tests.access.client import call
from tests.asgi import serve_on_loopback
from tests.lpstream.test_playlist_query import live_stream, uris
from tests.lpstream.test_stream_names import NoStreams

SECRET = "play-secret-of-at-least-thirty-two-bytes"


def token_for(stream: str, *, action: str = "read", expires_in: float = 300) -> str:
    claims = {
        "sub": "viewer-1",
        "exp": int(time.time() + expires_in),
        "lpstream_permissions": [{"action": action, "path": stream}],
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


class OneStream:
    def __init__(self) -> None:
        self.live = LivePlayback(live_stream())

    def playback(self, name: str) -> LivePlayback | None:
        return self.live if name == "cam" else None


@pytest.fixture
async def port(nursery: trio.Nursery) -> AsyncIterator[int]:
    play = PlayAuthorizer(
        mode="jwt",
        jwt=JwtVerifier(secret=SECRET),
        whep_token=SecretSet.of("whep", ["old-whep-token"], flag="--whep-token", min_length=1),
    )
    app = build_app(
        playback=OneStream(),
        status=dict,
        metrics=Metrics(),
        whep=WhepPlayback(source=NoStreams()),
        play=play,
    )
    yield await nursery.start(serve_on_loopback, app)


async def test_a_player_with_the_token_gets_every_uri_of_the_playlists(port: int) -> None:
    token = token_for("cam")
    query = f"token={urllib.parse.quote(token)}"
    pending, seen = [f"/hls/cam/index.m3u8?{query}"], set()
    hint = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"')
    fetched = 0
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        reply = await call(port, "GET", path)
        assert reply.status == 200, (path, reply)
        fetched += 1
        if not path.split("?")[0].endswith(".m3u8"):
            continue
        hinted = set(hint.findall(reply.text))  # a part still to come: held, not fetched here
        for uri in uris(reply.text):
            assert uri.endswith(f"?{query}"), (path, uri)
            if uri not in hinted:
                pending.append(urllib.parse.urljoin(path, uri))
    # master, two media playlists, their segments and the source's parts
    assert fetched > 12


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/hls/cam/index.m3u8", None, 401),
        ("/hls/cam/source/index.m3u8", None, 401),
        ("/hls/cam/source/1.ts", None, 401),
        ("/hls/cam/source/1.2.ts", None, 401),
        ("/hls/cam/index.m3u8", "not-a-jwt", 401),
        ("/hls/cam/index.m3u8", token_for("cam", expires_in=-60), 401),
        ("/hls/cam/index.m3u8", token_for("other"), 403),
        ("/hls/cam/index.m3u8", token_for("cam", action="publish"), 403),
        ("/hls/nope/index.m3u8", None, 401),  # refused before any lookup: no probing names
        ("/hls/nope/index.m3u8", token_for("nope"), 404),
    ],
)
async def test_without_a_valid_token_hls_is_refused(
    port: int, path: str, token: str | None, status: int
) -> None:
    target = path if token is None else f"{path}?token={urllib.parse.quote(token)}"
    reply = await call(port, "GET", target)
    assert reply.status == status, reply
    if status == 401:
        assert reply.headers["www-authenticate"] == 'Bearer realm="hls"'


async def test_a_bearer_header_works_for_hls_too(port: int) -> None:
    bearer = {"Authorization": f"Bearer {token_for('cam')}"}
    assert (await call(port, "GET", "/hls/cam/index.m3u8", headers=bearer)).status == 200


async def test_whep_needs_a_bearer_token_that_may_watch(port: int) -> None:
    offer = {"Content-Type": "text/plain"}  # not an SDP offer: WHEP's own 415 once let in
    refused = await call(port, "POST", "/whep/cam", headers=offer, body=b"x")
    assert refused.status == 401 and refused.headers["www-authenticate"] == 'Bearer realm="whep"'
    assert refused.headers["access-control-allow-origin"] == "*"
    for bearer, status in [
        (token_for("cam"), 415),
        ("old-whep-token", 415),  # --whep-token keeps working
        (token_for("other"), 403),
        ("wrong", 401),
    ]:
        headers = {**offer, "Authorization": f"Bearer {bearer}"}
        reply = await call(port, "POST", "/whep/cam/360p", headers=headers, body=b"x")
        assert reply.status == status, (bearer, reply)
    session = "/whep/cam/source/0123456789abcdef"
    assert (await call(port, "DELETE", session)).status == 401
    viewer = {"Authorization": f"Bearer {token_for('cam')}"}
    assert (await call(port, "DELETE", session, headers=viewer)).status == 404
    assert (await call(port, "OPTIONS", "/whep/cam")).status == 204  # preflights pass
