"""The ladder transcoder, driven with real MPEG-TS made by the ffmpeg CLI and read back by PyAV."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import attrs
import av
import pytest

from ingest.segmenter import Segmenter
from lpstream.errors import MediaError
from lpstream.media import DEFAULT_PROFILES, VideoProfile, scaled_size
from tests.ingest.test_segmenter import run_segmenter
from tests.mediatools import make_enhanced_clip
from workers import (
    LadderTranscoder,
    RenditionOutput,
    choose_encoder,
    nvenc_available,
    transcode_file,
)
from workers.transcode import _encoder_options

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

MakeTs = Callable[..., bytes]


@attrs.frozen
class TsInfo:
    """What a player sees in an MPEG-TS file."""

    width: int
    height: int
    frame_pts: list[int]
    """Presentation timestamps of the decoded video frames, in display order."""
    key_pts: list[int]
    """Presentation timestamps of the video keyframes."""
    audio_pts: list[int]
    """Timestamps of the audio packets."""


def inspect_ts(data: bytes) -> TsInfo:
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        video = container.streams.video[0]
        frame_pts: list[int] = []
        key_pts: list[int] = []
        audio_pts: list[int] = []
        for packet in container.demux():
            if packet.stream.type == "audio":
                if packet.size and packet.pts is not None:
                    audio_pts.append(packet.pts)
                continue
            if packet.is_keyframe and packet.pts is not None:
                key_pts.append(packet.pts)
            for frame in video.decode(packet):
                assert frame.pts is not None
                frame_pts.append(frame.pts)
        return TsInfo(
            width=video.codec_context.width,
            height=video.codec_context.height,
            frame_pts=frame_pts,
            key_pts=key_pts,
            audio_pts=audio_pts,
        )


@pytest.fixture(scope="session")
def make_ts(tmp_path_factory: pytest.TempPathFactory) -> MakeTs:
    """Builds (once per session and arguments) an MPEG-TS clip with the ffmpeg CLI."""
    cache: dict[tuple[object, ...], bytes] = {}
    folder = tmp_path_factory.mktemp("inputs")

    def make(
        *,
        size: str = "640x360",
        seconds: float = 2,
        rate: int = 30,
        gop: int = 60,
        audio: bool = True,
        source: str = "testsrc2",
        video_args: tuple[str, ...] = ("-preset", "ultrafast"),
    ) -> bytes:
        key = (size, seconds, rate, gop, audio, source, video_args)
        if key not in cache:
            path = folder / f"clip{len(cache)}.ts"
            cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
            cmd += ["-f", "lavfi", "-i", f"{source}=size={size}:rate={rate}"]
            if audio:
                cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
            cmd += ["-t", str(seconds), "-c:v", "libx264", "-g", str(gop), *video_args]
            if audio:
                cmd += ["-c:a", "aac", "-b:a", "64k"]
            cmd += ["-f", "mpegts", str(path)]
            subprocess.run(cmd, check=True)
            cache[key] = path.read_bytes()
        return cache[key]

    return make


@attrs.define
class Collector:
    """An ``on_data`` that keeps every rendition's bytes and counts the calls."""

    chunks: dict[int, list[bytes]] = attrs.Factory(dict)

    def __call__(self, index: int, data: bytes) -> None:
        self.chunks.setdefault(index, []).append(data)

    def output(self, index: int) -> bytes:
        return b"".join(self.chunks[index])


def run_ladder(
    data: bytes, profiles: tuple[VideoProfile, ...] = DEFAULT_PROFILES
) -> tuple[list[RenditionOutput], Collector]:
    collector = Collector()
    results = LadderTranscoder(profiles, encoder="x264").transcode(io.BytesIO(data), collector)
    return results, collector


def test_default_ladder_makes_aligned_renditions_of_a_720p_segment(make_ts: MakeTs) -> None:
    source = make_ts(size="1280x720", gop=30)
    src = inspect_ts(source)
    assert len(src.frame_pts) == 60 and len(src.key_pts) == 2

    results, collector = run_ladder(source)

    assert scaled_size(1280, 720, DEFAULT_PROFILES[1]) == (426, 240)
    assert [(r.name, r.width, r.height) for r in results] == [
        ("360p", 640, 360),
        ("240p", 426, 240),
    ]
    for index, result in enumerate(results):
        data = collector.output(index)
        out = inspect_ts(data)
        assert (out.width, out.height) == (result.width, result.height)
        assert result.frames == len(out.frame_pts) == 60
        assert result.pixels == 60 * result.width * result.height
        assert result.size == len(data)
        assert result.duration_ms == 2000
        # Same timestamps as the source: no offset, no shift, nothing dropped.
        assert out.frame_pts == src.frame_pts
        assert out.audio_pts == src.audio_pts
        assert len(out.audio_pts) > 80  # ~2 s of 1024-sample AAC frames at 48 kHz
        # GOPs line up with the source's, so segments cut at the same places.
        assert out.key_pts == src.key_pts


def test_output_streams_out_while_a_blocking_pipe_is_still_being_written(
    make_ts: MakeTs,
) -> None:
    source = make_ts(size="320x180", seconds=6, gop=30)
    collector = Collector()
    output_started = threading.Event()
    calls_during_upload: list[int] = []

    def on_data(index: int, data: bytes) -> None:
        collector(index, data)
        output_started.set()

    read_fd, write_fd = os.pipe()

    def upload() -> None:
        half = len(source) // 2
        with os.fdopen(write_fd, "wb", buffering=0) as pipe:
            for start in range(0, half, 8192):
                pipe.write(source[start : min(start + 8192, half)])
            # Hold the second half back until output appears (or give up after a while).
            if output_started.wait(timeout=30):
                calls_during_upload.append(sum(map(len, collector.chunks.values())))
            for start in range(half, len(source), 8192):
                pipe.write(source[start : start + 8192])

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            results = LadderTranscoder(DEFAULT_PROFILES, encoder="x264").transcode(pipe, on_data)
    finally:
        uploader.join()

    # Output began while half of the input had not been sent yet.
    assert len(calls_during_upload) == 1 and calls_during_upload[0] >= 1
    assert sum(map(len, collector.chunks.values())) > 4
    assert [r.frames for r in results] == [180, 180]
    assert len(inspect_ts(collector.output(0)).frame_pts) == 180


def test_four_by_three_source_keeps_its_shape(make_ts: MakeTs) -> None:
    results, collector = run_ladder(make_ts(size="640x480", seconds=1))

    assert [(r.width, r.height) for r in results] == [(480, 360), (320, 240)]
    out = inspect_ts(collector.output(0))
    assert (out.width, out.height) == (480, 360)


def test_odd_sized_444_source_gives_even_yuv420p_renditions(make_ts: MakeTs) -> None:
    source = make_ts(
        size="641x361",
        seconds=1,
        source="testsrc",
        video_args=("-preset", "ultrafast", "-pix_fmt", "yuv444p"),
    )
    results, collector = run_ladder(source)

    assert [(r.width, r.height) for r in results] == [(640, 360), (426, 240)]
    with av.open(io.BytesIO(collector.output(1)), mode="r", format="mpegts") as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height, frame.format.name) == (426, 240, "yuv420p")


def test_input_without_audio_gives_video_only_renditions(make_ts: MakeTs) -> None:
    results, collector = run_ladder(make_ts(seconds=1, audio=False))

    assert [r.frames for r in results] == [30, 30]
    with av.open(io.BytesIO(collector.output(0)), mode="r", format="mpegts") as container:
        assert [s.type for s in container.streams] == ["video"]


def test_b_frame_input_keeps_every_frame_and_timestamp(make_ts: MakeTs) -> None:
    source = make_ts(seconds=1, video_args=("-preset", "superfast", "-bf", "3"))
    src = inspect_ts(source)

    results, collector = run_ladder(source)

    assert results[0].frames == 30
    assert inspect_ts(collector.output(0)).frame_pts == src.frame_pts


def test_variable_gop_source_keyframes_are_kept_in_every_rendition(make_ts: MakeTs) -> None:
    source = make_ts(
        seconds=2,
        gop=1000,
        video_args=("-preset", "ultrafast", "-sc_threshold", "0", "-force_key_frames", "0,0.4,1.3"),
    )
    src = inspect_ts(source)
    assert len(src.key_pts) == 3

    _, collector = run_ladder(source)

    for index in (0, 1):
        assert inspect_ts(collector.output(index)).key_pts == src.key_pts


def test_profile_gop_adds_keyframes_inside_a_long_source_gop(make_ts: MakeTs) -> None:
    profile = VideoProfile(name="short", width=320, height=180, bitrate=200_000, gop=0.5)
    source = make_ts(seconds=2, gop=1000)

    _, collector = run_ladder(source, (profile,))

    out = inspect_ts(collector.output(0))
    steps = {b - a for a, b in zip(out.key_pts, out.key_pts[1:], strict=False)}
    assert len(out.key_pts) == 4 and steps == {45_000}  # every 0.5 s at 90 kHz


def test_profile_at_half_the_frame_rate_halves_the_frames(make_ts: MakeTs) -> None:
    source = make_ts(seconds=2)
    src = inspect_ts(source)
    half = VideoProfile(name="15fps", width=320, height=180, bitrate=200_000, fps=15)

    results, collector = run_ladder(source, (half,))

    out = inspect_ts(collector.output(0))
    assert results[0].frames == len(out.frame_pts) == 30
    assert out.frame_pts == src.frame_pts[::2]
    assert results[0].duration_ms == 2000
    assert out.key_pts[0] == src.key_pts[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "no MPEG-TS video"), (b"\x00garbage\xff" * 4000, "no MPEG-TS video")],
    ids=["empty", "garbage"],
)
def test_undecodable_input_is_a_media_error(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        run_ladder(data)


def test_input_without_video_is_a_media_error(tmp_path: Path) -> None:
    path = tmp_path / "audio.ts"
    subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine"),
            *("-t", "1", "-c:a", "aac", "-f", "mpegts", str(path)),
        ],
        check=True,
    )
    with pytest.raises(MediaError, match="no video stream"):
        run_ladder(path.read_bytes())


class Gone(Exception):
    """Raised by a test's reader or callback."""


def test_an_error_raised_by_on_data_stops_the_ladder_and_reaches_the_caller(
    make_ts: MakeTs,
) -> None:
    calls: list[int] = []
    threads_before = set(threading.enumerate())

    def on_data(index: int, data: bytes) -> None:
        calls.append(index)
        raise Gone

    with pytest.raises(Gone):
        LadderTranscoder(DEFAULT_PROFILES, encoder="x264").transcode(
            io.BytesIO(make_ts(seconds=1)), on_data
        )
    assert len(calls) == 1  # nothing more is written once the caller's side failed
    assert set(threading.enumerate()) <= threads_before  # the encoder threads are gone


def test_an_error_raised_by_the_source_reaches_the_caller_unchanged(make_ts: MakeTs) -> None:
    data = make_ts(seconds=2)
    threads_before = set(threading.enumerate())

    class BrokenUpload(io.RawIOBase):
        def __init__(self) -> None:
            self.offset = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            if self.offset > len(data) // 2:
                raise Gone
            chunk = data[self.offset : self.offset + min(size, 4096)]
            self.offset += len(chunk)
            return chunk

    with pytest.raises(Gone):
        LadderTranscoder(DEFAULT_PROFILES, encoder="x264").transcode(BrokenUpload(), Collector())
    assert set(threading.enumerate()) <= threads_before


def test_transcode_file_writes_renditions_that_ffprobe_reads(
    make_ts: MakeTs, tmp_path: Path
) -> None:
    src = tmp_path / "in.ts"
    src.write_bytes(make_ts(seconds=1))

    results = transcode_file(src, tmp_path / "out", DEFAULT_PROFILES, encoder="x264")

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["240p.ts", "360p.ts"]
    for result in results:
        probe = subprocess.run(
            [
                *("ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height"),
                *("-of", "csv=p=0", str(tmp_path / "out" / f"{result.name}.ts")),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert set(probe.stdout.split()) == {f"h264,{result.width},{result.height}", "aac"}
        assert (tmp_path / "out" / f"{result.name}.ts").stat().st_size == result.size


def test_a_ladder_needs_profiles() -> None:
    with pytest.raises(MediaError):
        LadderTranscoder([])


def test_choose_encoder_maps_preferences() -> None:
    assert choose_encoder("x264") == "libx264"
    assert choose_encoder("auto") == ("h264_nvenc" if nvenc_available() else "libx264")
    with pytest.raises(MediaError, match="unknown encoder"):
        choose_encoder("vp9")


def test_asking_for_nvenc_without_a_gpu_is_a_clear_error() -> None:
    if nvenc_available():
        pytest.skip("h264_nvenc works on this machine")
    with pytest.raises(MediaError, match="nvenc"):
        choose_encoder("nvenc")


@pytest.fixture
def nvenc() -> Iterator[None]:
    if not nvenc_available():
        pytest.skip("h264_nvenc is not usable here (no CUDA device or PyAV without NVENC)")
    yield


@pytest.mark.gpu
@pytest.mark.usefixtures("nvenc")
def test_nvenc_ladder_matches_the_source_timing(make_ts: MakeTs) -> None:
    source = make_ts(size="1280x720", gop=30)
    src = inspect_ts(source)
    collector = Collector()

    results = LadderTranscoder(DEFAULT_PROFILES, encoder="nvenc").transcode(
        io.BytesIO(source), collector
    )

    for index, result in enumerate(results):
        out = inspect_ts(collector.output(index))
        assert (out.width, out.height) == (result.width, result.height)
        assert out.frame_pts == src.frame_pts
        assert out.key_pts == src.key_pts


def test_damage_in_the_middle_of_a_segment_is_skipped_not_fatal(make_ts: MakeTs) -> None:
    data = bytearray(make_ts(seconds=2))
    middle = len(data) // 2
    data[middle : middle + 20_000] = bytes(range(256)) * 78 + bytes(32)

    results, collector = run_ladder(bytes(data))

    assert all(20 < r.frames <= 60 for r in results)
    assert len(inspect_ts(collector.output(0)).frame_pts) == results[0].frames


@pytest.mark.parametrize("encoder", ["libx264", "h264_nvenc"])
def test_every_encoder_option_is_one_the_encoder_knows(encoder: str) -> None:
    if encoder not in av.codecs_available:
        pytest.skip(f"PyAV has no {encoder}")
    supported = av.CodecContext.create(encoder, "w").supported_options
    known = {o.name for o in supported.generic} | {o.name for o in supported.private}
    profile = VideoProfile(name="p", width=640, height=360, bitrate=400_000, profile="main")

    options = _encoder_options(encoder, profile, Fraction(30))

    assert set(options) <= known
    assert options["forced-idr"] == "1"


def test_a_staged_rendition_gets_each_frame_as_soon_as_its_bytes_are_in(tmp_path: Path) -> None:
    """A live job's input carries one frame per PES with its length (as the segmenter
    writes it): each frame reaches the stage once its PES is read, before any byte of the
    next frame (FFmpeg's H.264 parser held each one until the next began: a frame interval),
    every frame keeps its timestamp, and the audio passes through."""
    from lpstream.media import MediaPacket
    from lpstream.playback.tsdemux import TsVideoDemuxer
    from tests.mediatools import make_clip

    clip = make_clip(tmp_path / "clip.flv", seconds=3, size="320x240", gop=30)
    buffer = io.BytesIO()
    with (
        av.open(str(clip)) as source,
        av.open(
            buffer, "w", format="mpegts", container_options={"omit_video_pes_length": "0"}
        ) as segment,
    ):
        streams = {s.index: segment.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                segment.mux(packet)
    data = buffer.getvalue()
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as parsed:
        audio_in = [p.pts for p in parsed.demux(parsed.streams.audio[0]) if p.size]
    starts = [  # each frame's first byte
        at for at, event in TsVideoDemuxer().feed_located(data) if isinstance(event, MediaPacket)
    ]

    # Past the probe, the reader hands out the next frame's first byte only once the frame
    # before it has reached the stage (waiting up to 2 s): a demuxer that holds a frame until
    # the next one begins stalls here.
    gates = [k for k in range(1, len(starts)) if starts[k] > 48 * 1024]
    seen: list[int] = []
    stalls: list[int] = []
    arrived = threading.Condition()

    class Reader:
        position = 0

        def read(self, size: int = -1) -> bytes:
            while gates and self.position >= starts[gates[0]]:
                frame = gates.pop(0)
                with arrived:
                    if not arrived.wait_for(lambda: len(seen) >= frame, timeout=2):  # noqa: B023
                        stalls.append(frame)
                        gates.clear()
            chunk = data[self.position : self.position + 188]  # one TS packet at a time
            self.position += len(chunk)
            return chunk

    class Identity:
        def push(self, frame: av.VideoFrame, /) -> list[av.VideoFrame]:
            assert frame.pts is not None
            with arrived:
                seen.append(frame.pts)
                arrived.notify_all()
            return [frame]

        def flush(self) -> list[av.VideoFrame]:
            return []

    reader = Reader()
    total_gates = len(gates)
    profile = VideoProfile(name="ai", width=160, height=120, bitrate=300_000)
    out = bytearray()
    [result] = LadderTranscoder((profile,), stages={"ai": Identity()}).transcode(
        reader, lambda _, chunk: out.extend(chunk)
    )
    assert total_gates >= 60 and not stalls, f"frame {stalls} waited for the next one's bytes"
    assert result.frames == len(seen) == len(starts) == 90 and result.dropped == 0
    with av.open(io.BytesIO(bytes(out)), mode="r", format="mpegts") as output:
        kinds_and_pts = [(p.stream.type, p.pts) for p in output.demux() if p.size]
    video_pts = sorted(pts for kind, pts in kinds_and_pts if kind == "video" and pts is not None)
    audio_out = [pts for kind, pts in kinds_and_pts if kind == "audio"]
    assert video_pts == seen
    assert audio_out and set(audio_out) <= set(audio_in) and audio_out[0] == audio_in[0]


@pytest.mark.slow
def test_frames_that_arrived_while_the_probe_waited_are_not_late(tmp_path: Path) -> None:
    """A live job's input arrives in real time; the demuxer decodes nothing until its probe
    has 32 KiB, which at this bitrate is over half a second of frames. Those frames are not
    late (they could not be decoded sooner): a stage faster than real time gets every one,
    none is dropped."""
    import time

    from tests.mediatools import make_clip

    clip = make_clip(tmp_path / "clip.ts", seconds=2, size="320x180", gop=60, fmt="mpegts")
    data = clip.read_bytes()
    assert len(data) > 64 * 1024  # the probe waits for a good part of the segment
    seconds = 2.0
    began = time.monotonic()

    class RealTimeReader:
        position = 0

        def read(self, size: int = -1) -> bytes:
            # The bytes arrive evenly over the clip's two seconds.
            due = int(len(data) * min(1.0, (time.monotonic() - began) / seconds))
            while due <= self.position < len(data):
                time.sleep(0.005)
                due = int(len(data) * min(1.0, (time.monotonic() - began) / seconds))
            chunk = data[self.position : min(due, self.position + max(size, 1))]
            self.position += len(chunk)
            return chunk

    class TwentyMilliseconds:
        def push(self, frame: av.VideoFrame, /) -> list[av.VideoFrame]:
            time.sleep(0.02)  # two thirds of a frame interval: faster than real time
            return [frame]

        def flush(self) -> list[av.VideoFrame]:
            return []

    profile = VideoProfile(name="ai", width=320, height=180, bitrate=300_000)
    [result] = LadderTranscoder((profile,), stages={"ai": TwentyMilliseconds()}).transcode(
        RealTimeReader(), lambda _, chunk: None, started=began
    )
    assert result.frames == 60 and result.dropped == 0, result


def run_live_job_in_ts_packets(data: bytes) -> tuple[int, bytes]:
    """Runs ``data`` as a live job read seven TS packets at a time: how much had been read
    when the first frame reached the stage, and the output."""
    position = 0
    read_at_first_frame: list[int] = []

    class TsPacketsReader:
        def read(self, size: int = -1) -> bytes:
            nonlocal position
            chunk = data[position : position + min(size, 7 * 188)]
            position += len(chunk)
            return chunk

    class FirstFrame:
        def push(self, frame: av.VideoFrame, /) -> list[av.VideoFrame]:
            if not read_at_first_frame:
                read_at_first_frame.append(position)
            return [frame]

        def flush(self) -> list[av.VideoFrame]:
            return []

    profile = VideoProfile(name="ai", width=320, height=180, bitrate=300_000)
    out = bytearray()
    [result] = LadderTranscoder((profile,), stages={"ai": FirstFrame()}).transcode(
        TsPacketsReader(), lambda _, chunk: out.extend(chunk)
    )
    assert result.frames == 60
    return read_at_first_frame[0], bytes(out)


def test_a_live_job_decodes_its_first_frame_after_a_short_probe(tmp_path: Path) -> None:
    """The demuxer decodes nothing until its probe ends: for a live job that is 8 KiB (and
    on until FFmpeg has the picture's size), not the 32 KiB that are most of a second of a
    small stream. With sound, the audio still comes through whole."""
    from tests.mediatools import make_clip

    silent = make_clip(tmp_path / "silent.ts", seconds=2, size="320x180", audio=False, fmt="mpegts")
    read, _ = run_live_job_in_ts_packets(silent.read_bytes())
    assert read < 16 * 1024, read  # with 32 KiB: 38 KiB
    # (ffmpeg's muxer holds its first audio back, and the ladder waits for it: no timing here)
    sound = make_clip(tmp_path / "sound.ts", seconds=2, size="320x180", fmt="mpegts")
    _, out = run_live_job_in_ts_packets(sound.read_bytes())
    with av.open(io.BytesIO(out), mode="r", format="mpegts") as output:
        assert sum(1 for _ in output.decode(audio=0)) > 80


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9", "vp8"])
def test_hevc_av1_vp9_and_vp8_segments_make_the_ladder_on_the_sources_timeline(
    tmp_path: Path, codec: str
) -> None:
    # Cut by the segmenter as a publisher's Enhanced RTMP (or WebRTC's VP8) would be: HEVC in
    # MPEG-TS, AV1 and VP9 in fragmented MP4, VP8 in Matroska; the second segment, so its
    # times do not start at 0.
    source = tmp_path / ("in.mkv" if codec == "vp8" else "in.flv")
    clip = make_enhanced_clip(source, codec, seconds=4, gop=60, size=(640, 360))
    done, data = run_segmenter(clip, Segmenter(target_duration=1.5))
    segment = data[done[1].seq]
    with av.open(io.BytesIO(segment), mode="r") as container:
        source_pts = sorted(round(float(frame.time) * 1000) for frame in container.decode(video=0))

    results, collector = run_ladder(segment)

    assert [(r.name, r.width, r.height) for r in results] == [
        ("360p", 640, 360),
        ("240p", 426, 240),
    ]
    for index, result in enumerate(results):
        out = inspect_ts(collector.output(index))
        assert result.frames == len(out.frame_pts) == len(source_pts)
        # The renditions keep the source's times (90 kHz MPEG-TS against ms).
        assert [round(pts / 90) for pts in out.frame_pts] == pytest.approx(source_pts, abs=1)
        assert len(out.audio_pts) > 60
