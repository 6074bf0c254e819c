"""The segmenter cuts real ffmpeg-made streams at keyframes into decodable MPEG-TS."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import pytest

from ingest.segmenter import SegmentCompleted, SegmentData, Segmenter, SegmentStarted
from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.segment_format import segment_format
from tests.mediatools import flv_events, make_clip, make_enhanced_clip, probe_streams


def run_segmenter(
    path: Path, segmenter: Segmenter
) -> tuple[list[SegmentCompleted], dict[int, bytes]]:
    done: list[SegmentCompleted] = []
    data: dict[int, bytearray] = {}
    events = []
    for event in flv_events(path):
        events.extend(segmenter.feed(event))
    events.extend(segmenter.finish())
    open_seq: int | None = None
    for ev in events:
        if isinstance(ev, SegmentStarted):
            assert open_seq is None, "a segment started before the previous one completed"
            open_seq = ev.seq
            data[ev.seq] = bytearray()
        elif isinstance(ev, SegmentData):
            assert ev.seq == open_seq
            data[ev.seq].extend(ev.data)
        else:
            assert isinstance(ev, SegmentCompleted), "no parts without a part target"
            assert ev.seq == open_seq
            assert ev.size == len(data[ev.seq])
            open_seq = None
            done.append(ev)
    return done, {k: bytes(v) for k, v in data.items()}


@pytest.mark.parametrize("bframes", [0, 3])
def test_segments_are_gop_aligned_decodable_and_continuous(tmp_path: Path, bframes: int) -> None:
    clip = make_clip(tmp_path / "in.flv", seconds=6, gop=60, bframes=bframes)
    done, data = run_segmenter(clip, Segmenter(target_duration=2.0))
    assert [d.seq for d in done] == [0, 1, 2]
    assert [d.start_ms - done[0].start_ms for d in done] == [0, 2000, 4000]
    for d in done:
        assert d.has_audio and not d.forced
        assert d.duration_ms == pytest.approx(2000, abs=40)
        path = tmp_path / f"{d.seq}.ts"
        path.write_bytes(data[d.seq])
        video, audio = probe_streams(path)
        assert video["frames"] == 60
        assert video["size"] == (640, 360)
        # Timestamps are the stream's own: segment n starts n * 2 s in.
        assert isinstance(video["first"], float)
        assert video["first"] == pytest.approx(d.start_ms / 1000, abs=0.15)
        assert isinstance(audio["frames"], int) and audio["frames"] >= 80  # ~2 s of 1024-sample AAC


def test_never_cuts_inside_a_long_gop(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.flv", seconds=8, gop=120, audio=False)
    done, data = run_segmenter(clip, Segmenter(target_duration=2.0))
    assert [d.duration_ms for d in done] == [pytest.approx(4000, abs=40)] * 2
    for d in done:
        assert not d.has_audio
        path = tmp_path / f"{d.seq}.ts"
        path.write_bytes(data[d.seq])
        (video,) = probe_streams(path)
        assert video["frames"] == 120


def test_forces_a_cut_without_keyframes_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clip = make_clip(tmp_path / "in.flv", seconds=7, gop=300, audio=False)
    caplog.set_level(logging.WARNING, "lpstream.ingest.segmenter")
    done, _ = run_segmenter(clip, Segmenter(target_duration=2.0, max_duration=3.0, stream_name="s"))
    assert [d.forced for d in done] == [False, True, True]
    assert done[0].duration_ms == pytest.approx(3000, abs=40)
    assert "no keyframe for 3.0 s" in caplog.text


def test_packets_before_the_first_keyframe_are_dropped() -> None:
    segmenter = Segmenter()
    config = CodecConfig(
        kind=TrackKind.VIDEO, codec="h264", data=b"\x01\x64\x00\x1e\xff\xe1\x00\x00"
    )
    assert segmenter.feed(config) == []
    delta = MediaPacket(
        kind=TrackKind.VIDEO, dts=0, pts=0, keyframe=False, data=b"\x00\x00\x00\x01\x41"
    )
    assert segmenter.feed(delta) == []
    assert segmenter.finish() == []


def test_unsupported_codec_is_a_media_error() -> None:
    with pytest.raises(MediaError, match="unsupported video codec 'theora'"):
        Segmenter().feed(CodecConfig(kind=TrackKind.VIDEO, codec="theora", data=b""))


def test_an_hevc_stream_is_cut_into_decodable_mpeg_ts(tmp_path: Path) -> None:
    # x265's B-frames put the second keyframe's decode time 100 ms before its 2 s, and segments
    # are measured on decode times: a 1.5 s target cuts there.
    clip = make_enhanced_clip(tmp_path / "in.flv", "hevc", seconds=4, gop=60)
    done, data = run_segmenter(clip, Segmenter(target_duration=1.5))
    assert [d.seq for d in done] == [0, 1]
    frames = 0
    for d in done:
        assert d.has_audio and not d.forced
        path = tmp_path / f"{d.seq}.ts"
        path.write_bytes(data[d.seq])
        with av.open(str(path)) as container:
            assert container.format.name == "mpegts"
            assert container.streams.video[0].codec_context.name == "hevc"
        video, _audio = probe_streams(path)
        assert isinstance(video["frames"], int) and video["frames"] > 50
        frames += video["frames"]
        assert video["size"] == (320, 240)
    assert frames == 120  # every frame decodes, in one segment or the other


@pytest.mark.parametrize(("codec", "suffix"), [("av1", "mp4"), ("vp9", "mp4"), ("vp8", "mkv")])
def test_av1_vp9_and_vp8_streams_are_cut_into_files_that_carry_them_on_one_timeline(
    tmp_path: Path, codec: str, suffix: str
) -> None:
    # AV1 and VP9 in fragmented MP4, VP8 (from WebRTC publishers) in Matroska.
    source = ".mkv" if codec == "vp8" else ".flv"
    clip = make_enhanced_clip(tmp_path / f"in{source}", codec, seconds=4, gop=30)
    # No parts are cut from fragmented MP4, even with a part target.
    done, data = run_segmenter(clip, Segmenter(target_duration=2.0, part_target=0.5))
    assert len(done) == 2
    frames = 0
    for d in done:
        assert d.has_audio and not d.forced
        path = tmp_path / f"{d.seq}.{suffix}"
        path.write_bytes(data[d.seq])
        assert segment_format(data[d.seq]) == {"mp4": "mp4", "mkv": "matroska"}[suffix]
        with av.open(str(path)) as container:
            assert container.streams.video[0].codec_context.name in {codec, "libdav1d"}
        video, audio = probe_streams(path)
        assert video["size"] == (320, 240)
        assert isinstance(video["frames"], int)
        frames += video["frames"]
        # The fragments keep the stream's own times: segment n starts where it was cut.
        assert isinstance(video["first"], float)
        assert video["first"] == pytest.approx(d.start_ms / 1000, abs=0.05)
        assert isinstance(audio["frames"], int) and audio["frames"] > 70
    assert frames == 120
