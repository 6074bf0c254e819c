"""LL-HLS over real HTTP: the app served by hypercorn on loopback, a real HTTP client, and a
``LivePlayback`` driven the way the gateway drives it (hand in, then ``notify``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from lpstream.http.app import build_app
from lpstream.metrics import Metrics
from lpstream.playback.hls import RenditionInfo
from lpstream.playback.live import LivePlayback
from lpstream.playback.llhls import LowLatencyStream, Refused
from tests.asgi import Reply, loopback_request, serve_on_loopback

PART = 0.25
"""Eight parts make a 2 s segment."""


@attrs.define
class Directory:
    streams: dict[str, LivePlayback] = attrs.Factory(dict)

    def playback(self, name: str) -> LivePlayback | None:
        return self.streams.get(name)


@attrs.define
class Server:
    port: int
    live: LivePlayback

    async def get(self, path: str) -> Reply:
        return await loopback_request(self.port, "GET", path)

    async def get_while_blocked(self, path: str, then: Any) -> Reply:
        """GETs ``path``, checks that the server holds it, runs ``then()``, returns the reply."""
        result: list[Reply] = []

        async def fetch() -> None:
            result.append(await self.get(path))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            await wait_blocked(self.live)
            assert result == []  # held by the server, not answered
            then()
            self.live.notify()
        return result[0]


async def wait_blocked(live: LivePlayback) -> None:
    """Returns once the server holds a request (the client runs in another thread)."""
    for _ in range(1000):
        if live.blocked:
            return
        await trio.sleep(0.01)
    raise AssertionError("no request was held")


def part_bytes(seq: int, index: int) -> bytes:
    return f"segment {seq} part {index}".encode().ljust(188, b"\xff")


def add_part(live: LivePlayback, seq: int, index: int) -> None:
    live.stream.add_part("source", seq, PART, part_bytes(seq, index), independent=index == 0)


def publish_segment(live: LivePlayback, seq: int, parts: int = 8) -> None:
    for index in range(parts):
        add_part(live, seq, index)
    live.stream.complete_segment("source", seq)
    live.notify()


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    max_blocked = getattr(request, "param", 1000)
    stream = LowLatencyStream(name="s", rendition_order=("source", "360p"), part_target=PART)
    stream.set_info(
        RenditionInfo(name="source", width=640, height=360, codecs="avc1.64001e", bandwidth=10**6)
    )
    live = LivePlayback(stream, max_blocked=max_blocked)
    app = build_app(playback=Directory({"s": live}), status=dict, metrics=Metrics())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_on_loopback, app)
        yield Server(port=port, live=live)
        nursery.cancel_scope.cancel()


async def test_a_plain_playlist_request_is_answered_at_once(server: Server) -> None:
    publish_segment(server.live, 0)
    publish_segment(server.live, 1)
    reply = await server.get("/hls/s/source/index.m3u8")
    assert reply.status == 200 and reply.headers["cache-control"] == "no-cache"
    assert reply.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    text = reply.body.decode()
    lines = text.splitlines()
    # What a plain HLS player reads: EXTINF and URI lines, in order; the rest is tags it skips.
    assert [line for line in lines if not line.startswith("#")] == ["0.ts", "1.ts"]
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES" in text
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="2.0.ts"' in text
    segment = await server.get("/hls/s/source/1.ts")
    assert segment.status == 200 and segment.headers["cache-control"] == "max-age=60"
    assert segment.body == b"".join(part_bytes(1, i) for i in range(8))


async def test_a_blocking_reload_returns_when_the_part_is_added(server: Server) -> None:
    publish_segment(server.live, 0)
    add_part(server.live, 1, 0)
    server.live.notify()
    reply = await server.get_while_blocked(
        "/hls/s/source/index.m3u8?_HLS_msn=1&_HLS_part=1", lambda: add_part(server.live, 1, 1)
    )
    assert reply.status == 200 and reply.headers["cache-control"] == "no-cache"
    assert '#EXT-X-PART:DURATION=0.25,URI="1.1.ts"' in reply.body.decode()
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.2.ts"' in reply.body.decode()


async def test_a_blocking_reload_for_a_whole_segment_waits_for_its_completion(
    server: Server,
) -> None:
    publish_segment(server.live, 0)
    for index in range(7):
        add_part(server.live, 1, index)
    server.live.notify()

    def finish() -> None:
        add_part(server.live, 1, 7)
        server.live.stream.complete_segment("source", 1)

    reply = await server.get_while_blocked("/hls/s/source/index.m3u8?_HLS_msn=1", finish)
    assert reply.status == 200 and "\n1.ts\n" in reply.body.decode()


async def test_requests_too_far_ahead_are_400_with_the_reason(server: Server) -> None:
    publish_segment(server.live, 0)
    reply = await server.get("/hls/s/source/index.m3u8?_HLS_msn=9")
    assert reply.status == 400 and b"_HLS_msn=9 is too far ahead" in reply.body
    reply = await server.get("/hls/s/source/index.m3u8?_HLS_msn=1&_HLS_part=40")
    assert reply.status == 400 and b"_HLS_part=40 is too far ahead" in reply.body
    reply = await server.get("/hls/s/source/index.m3u8?_HLS_part=1")
    assert reply.status == 400 and b"_HLS_part needs _HLS_msn" in reply.body
    assert server.live.blocked == 0


async def test_the_preload_hinted_part_is_held_until_it_exists(server: Server) -> None:
    publish_segment(server.live, 0)
    reply = await server.get_while_blocked(
        "/hls/s/source/1.0.ts", lambda: add_part(server.live, 1, 0)
    )
    assert reply.status == 200 and reply.body == part_bytes(1, 0)
    assert reply.headers["content-type"] == "video/mp2t"
    assert reply.headers["cache-control"] == "max-age=60"
    published = await server.get("/hls/s/source/0.3.ts")
    assert published.status == 200 and published.body == part_bytes(0, 3)


async def test_parts_far_ahead_or_unknown_are_404(server: Server) -> None:
    publish_segment(server.live, 0)
    assert (await server.get("/hls/s/source/1.30.ts")).status == 404
    assert (await server.get("/hls/s/720p/0.0.ts")).status == 404
    assert (await server.get("/hls/nope/source/0.0.ts")).status == 404


async def test_a_blocked_request_gives_up_with_503_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = LowLatencyStream(name="s", rendition_order=("source",), part_target=PART)
    live = LivePlayback(stream)
    publish_segment(live, 0)
    started = trio.current_time()
    answer = await live.answer_playlist("source", {"_HLS_msn": "1"})
    assert answer == Refused(code=503, reason="no update in time, retry")
    assert trio.current_time() - started == pytest.approx(6.0)  # three target durations
    assert live.blocked == 0


@pytest.mark.parametrize("server", [1], indirect=True)
async def test_blocked_requests_beyond_the_limit_are_refused_with_503(server: Server) -> None:
    publish_segment(server.live, 0)
    first: list[Reply] = []

    async def fetch_first() -> None:
        first.append(await server.get("/hls/s/source/index.m3u8?_HLS_msn=1&_HLS_part=0"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch_first)
        await wait_blocked(server.live)
        second = await server.get("/hls/s/source/1.0.ts")
        assert second.status == 503 and b"too many requests waiting" in second.body
        assert first == []
        add_part(server.live, 1, 0)
        server.live.notify()
    assert first[0].status == 200 and 'URI="1.0.ts"' in first[0].body.decode()
    assert server.live.blocked == 0
