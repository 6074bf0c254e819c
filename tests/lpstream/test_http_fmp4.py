"""A fragmented-MP4 rendition over real HTTP: a clip encoded with PyAV (libx264), cut into its
init section and fragments, handed to a ``LowLatencyStream`` as parts the way the gateway
does, served by the app under hypercorn on loopback, and played back by ffmpeg's HLS client
frame for frame."""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import av
import pytest
import trio

from lpstream.access import JwtVerifier, PlayAuthorizer
from lpstream.http.app import build_app
from lpstream.metrics import Metrics
from lpstream.playback.hls import RenditionInfo
from lpstream.playback.live import LivePlayback
from lpstream.playback.llhls import LowLatencyStream
from tests.asgi import Reply, loopback_request, serve_on_loopback
from tests.lpstream.fmp4_media import Fmp4Clip, Fragment, encode_fmp4
from tests.lpstream.test_http_llhls import wait_blocked
from tests.lpstream.test_play_auth import SECRET, token_for

ORIGIN = "https://player.example"
PROBE = ("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0")


@pytest.fixture(scope="module")
def clip() -> Fmp4Clip:
    return encode_fmp4(frames=75, rate=25, gop=25)


@attrs.define
class Directory:
    live: LivePlayback

    def playback(self, name: str) -> LivePlayback | None:
        return self.live if name == "s" else None


@attrs.define
class Server:
    port: int
    live: LivePlayback

    async def get(self, path: str) -> Reply:
        return await loopback_request(self.port, "GET", path, headers={"Origin": ORIGIN})


def new_live(clip: Fmp4Clip) -> LivePlayback:
    stream = LowLatencyStream(name="s", rendition_order=("source",), part_target=0.2)
    stream.set_info(
        RenditionInfo(name="source", width=160, height=96, codecs="avc1.64000b", bandwidth=10**5)
    )
    stream.set_init("source", clip.init)
    return LivePlayback(stream)


def hand_in(live: LivePlayback, clip: Fmp4Clip, seq: int, parts: list[Fragment]) -> None:
    for part in parts:
        live.stream.add_part(
            "source",
            seq,
            part.frames / clip.rate,
            part.data,
            independent=part.first_frame % clip.gop == 0,
        )
    live.notify()


def publish_all(live: LivePlayback, clip: Fmp4Clip) -> None:
    segments = clip.segments()
    for seq, parts in enumerate(segments):
        hand_in(live, clip, seq, parts)
        live.stream.complete_segment("source", seq)
    live.stream.end(len(segments) - 1)
    live.notify()


@pytest.fixture
async def server(clip: Fmp4Clip) -> AsyncIterator[Server]:
    live = new_live(clip)
    app = build_app(
        playback=Directory(live), status=dict, metrics=Metrics(), cors_origins=(ORIGIN,)
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_on_loopback, app)
        yield Server(port=port, live=live)
        nursery.cancel_scope.cancel()


async def test_the_playlist_init_segments_and_parts_are_served(
    server: Server, clip: Fmp4Clip
) -> None:
    publish_all(server.live, clip)
    playlist = await server.get("/hls/s/source/index.m3u8")
    assert playlist.status == 200
    lines = playlist.text.splitlines()
    assert "#EXT-X-VERSION:6" in lines
    assert lines.count('#EXT-X-MAP:URI="init0.mp4"') == 1
    assert [x for x in lines if not x.startswith("#")] == ["0.m4s", "1.m4s", "2.m4s"]

    init = await server.get("/hls/s/source/init0.mp4")
    assert init.status == 200 and init.body == clip.init
    assert init.headers["content-type"] == "video/mp4"
    assert init.headers["cache-control"] == "max-age=60"
    assert init.headers["access-control-allow-origin"] == ORIGIN

    segments = clip.segments()
    for seq, parts in enumerate(segments):
        segment = await server.get(f"/hls/s/source/{seq}.m4s")
        assert segment.status == 200
        assert segment.body == b"".join(p.data for p in parts)
        assert segment.headers["content-type"] == "video/iso.segment"
        assert segment.headers["cache-control"] == "max-age=60"
        assert segment.headers["access-control-allow-origin"] == ORIGIN
    part = await server.get("/hls/s/source/2.3.m4s")
    assert part.status == 200 and part.body == segments[2][3].data
    assert part.headers["content-type"] == "video/iso.segment"


@pytest.mark.parametrize(
    "path",
    [
        "/hls/s/source/0.ts",  # an fMP4 segment asked for as MPEG-TS
        "/hls/s/source/0.1.ts",
        "/hls/s/source/init1.mp4",  # no such init section
        "/hls/s/low/init0.mp4",  # no such rendition
        "/hls/s/source/9.m4s",
        "/hls/s/source/init0.m4s",
    ],
)
async def test_wrong_names_are_404(server: Server, clip: Fmp4Clip, path: str) -> None:
    publish_all(server.live, clip)
    reply = await server.get(path)
    assert reply.status == 404, reply


async def test_a_blocked_part_request_is_answered_when_the_m4s_part_comes(
    server: Server, clip: Fmp4Clip
) -> None:
    first, second = clip.segments()[:2]
    hand_in(server.live, clip, 0, first)
    server.live.stream.complete_segment("source", 0)
    hand_in(server.live, clip, 1, second[:1])
    playlist = await server.get("/hls/s/source/index.m3u8")
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="1.1.m4s"' in playlist.text
    # The same hinted part asked for as MPEG-TS is refused at once, not held.
    assert (await server.get("/hls/s/source/1.1.ts")).status == 404
    result: list[Reply] = []

    async def fetch() -> None:
        result.append(await server.get("/hls/s/source/1.1.m4s"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        await wait_blocked(server.live)
        assert result == []
        hand_in(server.live, clip, 1, second[1:2])
    assert result[0].status == 200 and result[0].body == second[1].data
    assert result[0].headers["content-type"] == "video/iso.segment"


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_ffmpeg_plays_the_rendition_back_frame_for_frame(
    server: Server, clip: Fmp4Clip, tmp_path: Path
) -> None:
    publish_all(server.live, clip)
    out = tmp_path / "out.mp4"
    url = f"http://127.0.0.1:{server.port}/hls/s/source/index.m3u8"
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", url]
    result = await trio.run_process(
        [*command, "-c", "copy", str(out)], capture_stderr=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert await trio.to_thread.run_sync(count_frames, out) == clip.frames


async def test_init_sections_need_the_play_token(clip: Fmp4Clip) -> None:
    live = new_live(clip)
    publish_all(live, clip)
    play = PlayAuthorizer(mode="jwt", jwt=JwtVerifier(secret=SECRET))
    app = build_app(playback=Directory(live), status=dict, metrics=Metrics(), play=play)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_on_loopback, app)
        for path in ("init0.mp4", "0.m4s", "0.1.m4s"):
            refused = await loopback_request(port, "GET", f"/hls/s/source/{path}")
            assert refused.status == 401, path
        token = urllib.parse.quote(token_for("s"))
        playlist = await loopback_request(port, "GET", f"/hls/s/source/index.m3u8?token={token}")
        assert f'#EXT-X-MAP:URI="init0.mp4?token={token}"' in playlist.text
        init = await loopback_request(port, "GET", f"/hls/s/source/init0.mp4?token={token}")
        assert init.status == 200 and init.body == clip.init
        nursery.cancel_scope.cancel()


def test_ffprobe_reads_init_and_segment_as_one_file(clip: Fmp4Clip, tmp_path: Path) -> None:
    """What the init section and a segment's parts make together is a playable MP4."""
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(clip.init + b"".join(p.data for p in clip.segments()[1]))
    probe = subprocess.run(
        [*PROBE, "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(joined)],
        capture_output=True,
        check=True,
    )
    assert int(probe.stdout.decode().strip()) == clip.gop
