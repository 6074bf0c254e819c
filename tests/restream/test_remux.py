"""Remuxing segments without re-encoding: one continuous output, read back with PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import attrs
import av
import pytest

from ingest.segmenter import Segmenter
from lpstream.errors import MediaError
from lpstream.restream import ForwardSegment
from lpstream.restream.remux import FlvRemuxer, TsRemuxer
from tests.ingest.test_segmenter import run_segmenter
from tests.mediatools import make_enhanced_clip
from tests.restream.conftest import Clip


def publish_sequence(clip: Clip, other_clip: Clip) -> list[ForwardSegment]:
    """Three segments; a new publisher with another size (flagged); the first again, unflagged
    (its timestamps jump back)."""
    return [
        *clip.segments[:3],
        attrs.evolve(other_clip.segments[0], discontinuity=True),
        other_clip.segments[1],
        attrs.evolve(clip.segments[0], seq=200),
    ]


def test_ts_output_continues_through_discontinuities_and_decodes(
    clip: Clip, other_clip: Clip
) -> None:
    remuxer = TsRemuxer()
    data = b"".join(remuxer.remux(s) for s in publish_sequence(clip, other_clip)) + remuxer.close()
    last: dict[str, int] = {}
    sizes: list[tuple[int, int]] = []
    frames = 0
    with av.open(io.BytesIO(data), "r", format="mpegts") as output:
        video = [s for s in output.streams if s.type == "video"]
        assert video and any(s.type == "audio" for s in output.streams)
        for packet in output.demux():
            kind = packet.stream.type
            if packet.dts is not None:
                assert packet.dts > last.get(kind, -1), f"{kind} steps back at {packet.dts}"
                last[kind] = packet.dts
            if kind == "video":  # the last, empty packet flushes the frames B-frames held
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    frames += 1
                    if not sizes or sizes[-1] != (frame.width, frame.height):
                        sizes.append((frame.width, frame.height))
    assert sizes == [(320, 240), (256, 144), (320, 240)]
    assert frames == 6 * 60
    seconds = (last["video"] - 0) / 90_000
    assert 11.5 < seconds < 12.5


def test_flv_tags_carry_one_header_per_layout_and_never_step_back(
    clip: Clip, other_clip: Clip
) -> None:
    remuxer = FlvRemuxer()
    tags = [t for s in publish_sequence(clip, other_clip) for t in remuxer.remux(s)]
    tags += remuxer.close()
    headers = [t for t in tags if t.kind == 9 and t.payload[1] == 0]
    # 320x240, then 256x144, then 320x240 again: each layout change is a new output.
    assert len(headers) == 3
    assert headers[0].timestamp == 0
    assert 5900 < headers[1].timestamp < 6100
    last: dict[int, int] = {}
    for tag in tags:
        if tag.kind in (8, 9):
            assert tag.timestamp >= last.get(tag.kind, 0)
            last[tag.kind] = tag.timestamp
    keyframes = [t for t in tags if t.kind == 9 and t.payload[0] >> 4 == 1 and t.payload[1] == 1]
    assert len(keyframes) == 6
    audio_headers = [t for t in tags if t.kind == 8 and t.payload[1] == 0]
    assert all(len(t.payload) > 2 for t in audio_headers)


def test_a_bad_segment_is_a_media_error_and_the_next_one_goes_on(clip: Clip) -> None:
    remuxer = TsRemuxer()
    first = remuxer.remux(clip.segments[0])
    with pytest.raises(MediaError):
        remuxer.remux(ForwardSegment(seq=1, data=b"\x47" + bytes(1000)))
    rest = remuxer.remux(clip.segments[1]) + remuxer.close()
    with av.open(io.BytesIO(first + rest), "r", format="mpegts") as output:
        frames = sum(1 for p in output.demux(video=0) if p.size and p.is_keyframe)
    assert frames == 2


def test_a_new_remuxer_starts_at_a_keyframe(clip: Clip) -> None:
    remuxer = FlvRemuxer()
    tags = remuxer.remux(clip.segments[1])
    media = [t for t in tags if t.kind == 9 and t.payload[1] == 1]
    assert media[0].payload[0] >> 4 == 1  # the first video frame sent is a keyframe


@pytest.mark.parametrize("codec", ["av1", "vp9"])
def test_av1_and_vp9_sources_forward_as_enhanced_rtmp_and_as_sound_over_srt(
    tmp_path: Path, codec: str
) -> None:
    # The source's segments as the segmenter cuts them: fragmented MP4, init section and all.
    clip = make_enhanced_clip(tmp_path / "in.flv", codec, seconds=4, gop=30)
    done, data = run_segmenter(clip, Segmenter(target_duration=2.0))
    segments = [ForwardSegment(seq=d.seq, data=data[d.seq]) for d in done]
    flv = FlvRemuxer()
    tags = [t for s in segments for t in flv.remux(s)] + flv.close()
    video = [t for t in tags if t.kind == 9]
    # Enhanced RTMP: the IsExHeader bit and the codec's FourCC.
    fourcc = {"av1": b"av01", "vp9": b"vp09"}[codec]
    assert video and all(t.payload[0] & 0x80 and t.payload[1:5] == fourcc for t in video)
    assert sum(1 for t in video if t.payload[0] & 0x0F in (1, 3)) == 120  # every frame
    ts = TsRemuxer()
    out = b"".join(ts.remux(s) for s in segments) + ts.close()
    with av.open(io.BytesIO(out), "r", format="mpegts") as container:
        assert [s.type for s in container.streams] == ["audio"]
