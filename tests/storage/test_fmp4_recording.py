"""A recording of a fragmented-MP4 rendition: a real clip (PyAV, libx264) handed to a
``LowLatencyStream`` whose listener is a recording sink into a ``file://`` store; the init
section and ``.m4s`` segments land next to a VOD playlist with EXT-X-MAP, and the recording
routes serve them back to ffmpeg's HLS client, frame for frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import av
import trio

from lpstream.errors import ProtocolError
from lpstream.http.app import build_app
from lpstream.metrics import Metrics
from lpstream.playback.hls import RenditionInfo
from lpstream.playback.init_sections import InitSection
from lpstream.playback.listed import ListedSegment
from lpstream.playback.llhls import LowLatencyStream
from lpstream.storage import ObjectStore, open_store
from lpstream.storage.library import RecordingLibrary
from lpstream.storage.origin import OriginObjects
from lpstream.storage.recordings import Manifest, RecordingObjects
from lpstream.storage.sink import SegmentSink, register_metrics
from lpstream.storage.store import InvalidKey
from tests.asgi import loopback_request, serve_on_loopback
from tests.lpstream.fmp4_media import Fmp4Clip, encode_fmp4

RECORDING = "20261207T110000Z"
FFMPEG = ("ffmpeg", "-hide_banner", "-loglevel", "error", "-y")


@attrs.define
class Recordings:
    """The recording routes' directory over a library (reads only)."""

    library: RecordingLibrary

    def start_recording(self, name: str) -> str:
        # As the node answers for a stream that is not live: these tests read recordings only.
        raise ProtocolError(f"stream {name!r} is not live", code=404)

    def stop_recording(self, name: str) -> str | None:
        return None

    def recording_of(self, name: str) -> str | None:
        return None

    async def recordings(self, stream: str | None = None) -> list[dict[str, Any]]:
        return [m.public() for m in await self.library.manifests(stream)]

    async def read_recording(self, stream: str, recording: str, path: str) -> bytes | None:
        try:  # as the gateway's OutputHub: a name no recording has is none of them (404)
            return await self.library.read(stream, recording, path)
        except InvalidKey:
            return None


async def record(store: ObjectStore, clip: Fmp4Clip) -> None:
    """Records the clip as rendition ``source`` of stream ``cam``, published in parts."""
    metrics = Metrics()
    register_metrics(metrics)
    objects = RecordingObjects(
        stream="cam", id=RECORDING, started_at=1000.0, rendition_order=("source",)
    )
    sink = SegmentSink(kind="record", stream="cam", store=store, objects=objects, metrics=metrics)
    stream = LowLatencyStream(
        name="cam", rendition_order=("source",), part_target=0.2, listener=sink.offer
    )
    stream.set_info(
        RenditionInfo(name="source", width=160, height=96, codecs="avc1.64000b", bandwidth=10**5)
    )
    stream.set_init("source", clip.init)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        segments = clip.segments()
        for seq, parts in enumerate(segments):
            for part in parts:
                stream.add_part(
                    "source",
                    seq,
                    part.frames / clip.rate,
                    part.data,
                    independent=part.first_frame % clip.gop == 0,
                )
            stream.complete_segment("source", seq)
            await trio.sleep(0.02)
        stream.end(len(segments) - 1)
        sink.end()
    assert sink.status().lost == 0


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_an_fmp4_recording_is_stored_and_played_back(tmp_path: Path) -> None:
    clip = encode_fmp4(frames=75, rate=25, gop=25)
    store = open_store(f"file://{tmp_path / 'store'}")
    await store.check()
    await record(store, clip)

    library = RecordingLibrary(store)
    keys = [o.key for o in await store.list(f"cam/{RECORDING}/source/")]
    folder = f"cam/{RECORDING}/source/"
    assert sorted(keys) == sorted(
        folder + name for name in ("init0.mp4", "0.m4s", "1.m4s", "2.m4s", "index.m3u8")
    )
    assert await library.read("cam", RECORDING, "source/init0.mp4") == clip.init
    segments = clip.segments()
    assert await library.read("cam", RECORDING, "source/1.m4s") == b"".join(
        p.data for p in segments[1]
    )
    text = (await library.read("cam", RECORDING, "source/index.m3u8") or b"").decode()
    lines = text.splitlines()
    assert "#EXT-X-VERSION:6" in lines and "#EXT-X-PLAYLIST-TYPE:VOD" in lines
    assert lines[-1] == "#EXT-X-ENDLIST"
    assert lines.count('#EXT-X-MAP:URI="init0.mp4"') == 1
    assert lines.index('#EXT-X-MAP:URI="init0.mp4"') < lines.index("0.m4s")
    manifest = await library.manifest("cam", RECORDING)
    assert isinstance(manifest, Manifest) and manifest.state == "ended"
    assert manifest.renditions["source"].segments == 3
    assert manifest.renditions["source"].bytes == sum(len(f.data) for f in clip.fragments)

    app = build_app(playback=None, status=dict, metrics=Metrics(), recordings=Recordings(library))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_on_loopback, app)
        init = await loopback_request(port, "GET", f"/vod/cam/{RECORDING}/source/init0.mp4")
        assert init.status == 200 and init.body == clip.init
        assert init.headers["content-type"] == "video/mp4"
        segment = await loopback_request(port, "GET", f"/vod/cam/{RECORDING}/source/2.m4s")
        assert segment.status == 200 and segment.headers["content-type"] == "video/iso.segment"
        wrong = await loopback_request(port, "GET", f"/vod/cam/{RECORDING}/source/2.mp4")
        assert wrong.status == 404
        out = tmp_path / "out.mp4"
        url = f"http://127.0.0.1:{port}/vod/cam/{RECORDING}/index.m3u8"
        result = await trio.run_process(
            [*FFMPEG, "-i", url, "-c", "copy", str(out)],
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        nursery.cancel_scope.cancel()
    assert await trio.to_thread.run_sync(count_frames, out) == clip.frames


async def test_the_origin_stores_each_init_section_once_and_deletes_it_with_its_segments(
    tmp_path: Path,
) -> None:
    store = open_store(f"file://{tmp_path / 'origin'}")
    await store.check()
    metrics = Metrics()
    register_metrics(metrics)
    objects = OriginObjects(stream="cam", rendition_order=("source",), window=1)
    sink = SegmentSink(kind="origin", stream="cam", store=store, objects=objects, metrics=metrics)
    old, new = InitSection(number=0, data=b"init A"), InitSection(number=1, data=b"init B")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        for seq in range(8):
            section = old if seq < 2 else new
            sink.offer(
                ListedSegment(
                    rendition="source", seq=seq, duration=2.0, data=b"media", init=section
                )
            )
            await trio.sleep(0.02)
            if seq == 1:
                assert await store.get("cam/source/init0.mp4") == b"init A"
        sink.end()
    keys = sorted(o.key for o in await store.list("cam/source/"))
    # The window (1) and KEEP_EXTRA (4) segments stay; init0 went with segment 1.
    assert keys == [
        "cam/source/3.m4s",
        "cam/source/4.m4s",
        "cam/source/5.m4s",
        "cam/source/6.m4s",
        "cam/source/7.m4s",
        "cam/source/index.m3u8",
        "cam/source/init1.mp4",
    ]
    assert await store.get("cam/source/init1.mp4") == b"init B"
    text = (await store.get("cam/source/index.m3u8") or b"").decode()
    assert '#EXT-X-MAP:URI="init1.mp4"' in text and "7.m4s" in text
    # Every segment stored, none failed or lost.
    assert (sink.status().stored, sink.status().lost, sink.status().failures) == (8, 0, 0)
