"""Thumbnails over real HTTP: a ``LowLatencyStream`` holding MPEG-TS segments made by ffmpeg
(a red one, then a blue one), the thumbnail route served by hypercorn, and the JPEG it answers
decoded with PyAV: the newest segment's first frame, 320 pixels wide, made once per segment
and age, one decode at a time; 404 for a stream that is not live or has no picture."""

from __future__ import annotations

import io
import subprocess
from collections.abc import AsyncIterator

import attrs
import av
import numpy as np
import pytest
import trio
from starlette.applications import Starlette

from lpstream.errors import MediaError
from lpstream.http.dashboard import dashboard_routes
from lpstream.http.limits import BodyReader
from lpstream.http.thumbnails import ThumbnailCache, first_frame_jpeg, latest_source_segment
from lpstream.playback.live import LivePlayback
from lpstream.playback.llhls import LowLatencyStream
from tests.access.client import Reply, call
from tests.asgi import serve_on_loopback
from tests.lpstream.fmp4_media import encode_fmp4

THUMB = "/api/streams/cam/thumbnail.jpg"


def segment_of(color: str) -> bytes:
    """One second of ``color`` at 640x360, H.264 with B-frames, as one MPEG-TS segment."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi"]
    command += ["-i", f"color=c={color}:size=640x360:rate=25", "-t", "1"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "25"]
    command += ["-pix_fmt", "yuv420p", "-f", "mpegts", "-"]
    return subprocess.run(command, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def red() -> bytes:
    return segment_of("red")


@pytest.fixture(scope="module")
def blue() -> bytes:
    return segment_of("blue")


@attrs.define
class Directory:
    streams: dict[str, LivePlayback] = attrs.Factory(dict)

    def playback(self, name: str) -> LivePlayback | None:
        return self.streams.get(name)


def new_stream(name: str = "cam") -> LowLatencyStream:
    return LowLatencyStream(name=name, rendition_order=("source", "240p"))


def picture(reply: Reply) -> np.ndarray:
    """The answer's JPEG as RGB pixels (and checks that it is a JPEG)."""
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "image/jpeg" and reply.body[:2] == b"\xff\xd8"
    with av.open(io.BytesIO(reply.body), mode="r") as container:
        frame = next(container.decode(video=0))
    return frame.to_ndarray(format="rgb24")


def is_red(pixels: np.ndarray) -> bool:
    r, g, b = pixels.reshape(-1, 3).mean(axis=0)
    return bool(r > 200 and g < 60 and b < 60)


def is_blue(pixels: np.ndarray) -> bool:
    r, g, b = pixels.reshape(-1, 3).mean(axis=0)
    return bool(b > 200 and r < 60 and g < 60)


async def serve(nursery: trio.Nursery, directory: Directory, cache: ThumbnailCache) -> int:
    routes = dashboard_routes(
        status=dict, playback=directory, api_tokens=None, bodies=BodyReader(), thumbnails=cache
    )
    port: int = await nursery.start(serve_on_loopback, Starlette(routes=routes))
    return port


@pytest.fixture
async def node(nursery: trio.Nursery) -> AsyncIterator[tuple[int, Directory, ThumbnailCache]]:
    directory, cache = Directory(), ThumbnailCache(max_age=60.0)
    yield await serve(nursery, directory, cache), directory, cache


async def test_the_thumbnail_is_the_newest_segments_first_frame(
    node: tuple[int, Directory, ThumbnailCache], red: bytes, blue: bytes
) -> None:
    port, directory, cache = node
    stream = new_stream()
    directory.streams["cam"] = LivePlayback(stream)
    assert (await call(port, "GET", THUMB)).status == 404  # live, but no segment yet
    stream.add_segment("source", 0, 1.0, red)
    stream.add_segment("240p", 0, 1.0, blue)  # only the source is shown
    first = await call(port, "GET", THUMB)
    pixels = picture(first)
    assert pixels.shape == (180, 320, 3) and is_red(pixels)
    assert (
        first.headers["x-thumbnail-segment"] == "0" and first.headers["cache-control"] == "no-store"
    )
    stream.add_segment("source", 1, 1.0, blue)
    # Within max_age the kept picture is served: nothing is decoded again.
    again = await call(port, "GET", THUMB)
    assert again.body == first.body and cache.made == 1
    cache.max_age = 0.0
    newer = await call(port, "GET", THUMB)
    assert is_blue(picture(newer)) and newer.headers["x-thumbnail-segment"] == "1"
    assert cache.made == 2
    # The same segment is never decoded twice, whatever its age.
    assert (await call(port, "GET", THUMB)).body == newer.body and cache.made == 2


async def test_streams_that_are_not_live_get_404(
    node: tuple[int, Directory, ThumbnailCache], red: bytes
) -> None:
    port, directory, _ = node
    assert (await call(port, "GET", THUMB)).status == 404
    assert (await call(port, "GET", "/api/streams/..%2Fx/thumbnail.jpg")).status in (400, 404)
    stream = new_stream()
    directory.streams["cam"] = LivePlayback(stream)
    stream.add_segment("source", 0, 1.0, red)
    stream.add_segment("240p", 0, 1.0, red)
    assert is_red(picture(await call(port, "GET", THUMB)))
    stream.end(0)  # the publisher left and every rendition listed its last segment
    assert stream.ended
    gone = await call(port, "GET", THUMB)
    assert gone.status == 404 and "live" in gone.text


async def test_one_decode_serves_a_crowd(
    node: tuple[int, Directory, ThumbnailCache], red: bytes
) -> None:
    port, directory, cache = node
    stream = new_stream()
    stream.add_segment("source", 0, 1.0, red)
    directory.streams["cam"] = LivePlayback(stream)
    replies: list[Reply] = []

    async def ask() -> None:
        replies.append(await call(port, "GET", THUMB))

    async with trio.open_nursery() as crowd:
        for _ in range(6):
            crowd.start_soon(ask)
    assert len(replies) == 6 and all(is_red(picture(r)) for r in replies)
    assert {r.headers["x-thumbnail-segment"] for r in replies} == {"0"}
    assert cache.made == 1


async def test_past_the_waiting_limit_a_stream_without_a_picture_gets_503(
    nursery: trio.Nursery, red: bytes
) -> None:
    directory = Directory({"cam": LivePlayback(new_stream())})
    directory.streams["cam"].stream.add_segment("source", 0, 1.0, red)
    port = await serve(nursery, directory, ThumbnailCache(max_waiting=0))
    busy = await call(port, "GET", THUMB)
    assert busy.status == 503 and busy.headers["retry-after"] == "1"


async def test_a_segment_that_does_not_decode_has_no_picture(
    node: tuple[int, Directory, ThumbnailCache], red: bytes
) -> None:
    port, directory, _ = node
    stream = new_stream()
    stream.add_segment("source", 0, 1.0, b"\x47" + bytes(187) * 40)
    directory.streams["cam"] = LivePlayback(stream)
    reply = await call(port, "GET", THUMB)
    assert reply.status == 404 and "no picture" in reply.text
    stream.add_segment("source", 1, 1.0, red)  # the stream goes on, and so do its pictures
    assert is_red(picture(await call(port, "GET", THUMB)))


def test_the_newest_complete_segment_is_chosen_and_gaps_are_passed_over(
    red: bytes, blue: bytes
) -> None:
    stream = new_stream()
    assert latest_source_segment(stream) is None
    stream.add_segment("source", 0, 1.0, red)
    stream.add_segment("source", 1, 1.0, blue)
    stream.add_gap("source", 2, 1.0)
    assert latest_source_segment(stream) == (1, blue)
    with pytest.raises(MediaError):
        first_frame_jpeg(red[: 188 * 3])
    small = first_frame_jpeg(blue, width=160)
    with av.open(io.BytesIO(small), mode="r") as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (160, 90)


async def test_an_fmp4_source_segment_is_shown_with_its_init_section(
    node: tuple[int, Directory, ThumbnailCache],
) -> None:
    # An AV1 or VP9 source is listed as fragmented MP4: the segment held is media only, and
    # the picture needs the init section in front of it.
    port, directory, _ = node
    clip = encode_fmp4(codec="libsvtav1")
    stream = new_stream()
    directory.streams["cam"] = LivePlayback(stream)
    stream.set_init("source", clip.init)
    media = b"".join(f.data for f in clip.segments()[0])
    stream.add_segment("source", 0, 1.0, media)
    found = latest_source_segment(stream)
    assert found is not None and found[1] == clip.init + media
    reply = await call(port, "GET", THUMB)
    assert reply.status == 200 and reply.headers["x-thumbnail-segment"] == "0"
    assert picture(reply).shape == (192, 320, 3)
