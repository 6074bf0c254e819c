"""VP8 frames from a WebRTC receiver into ingest events, checked against libvpx's own output."""

from __future__ import annotations

import io
import itertools

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.whip import Vp8Track
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.vp8 import vp8_is_keyframe, vp8_keyframe_size


@pytest.fixture(scope="module")
def frames() -> list[tuple[bytes, bool]]:
    """Thirty 318x180 VP8 frames from libvpx, a keyframe every ten, with its keyframe flags."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ivf") as out:
        stream = out.add_stream("libvpx", rate=30, options={"deadline": "realtime"})
        stream.width, stream.height, stream.pix_fmt = 318, 180, "yuv420p"
        stream.codec_context.gop_size = 10
        for i in range(30):
            picture = np.full((180, 318, 3), (i * 8) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r", format="ivf") as container:
        return [(bytes(p), bool(p.is_keyframe)) for p in container.demux(video=0) if p.size]


def test_keyframes_and_their_size_are_read_as_libvpx_wrote_them(
    frames: list[tuple[bytes, bool]],
) -> None:
    assert [vp8_is_keyframe(data) for data, _ in frames] == [key for _, key in frames]
    assert sum(key for _, key in frames) == 3
    for data, key in frames:
        if key:
            assert vp8_keyframe_size(data) == (318, 180)
        else:
            with pytest.raises(ValueError, match="not a VP8 keyframe"):
                vp8_keyframe_size(data)


def test_the_track_starts_at_a_keyframe_and_passes_frames_through(
    frames: list[tuple[bytes, bool]],
) -> None:
    track = Vp8Track()
    events = []
    # The stream is joined mid-GOP: frames before the first keyframe are dropped.
    for i, (data, _) in enumerate(frames[5:]):
        events += track.feed(data, timestamp_ms=i * 33)
    assert track.dropped == 5 and not track.waiting_for_keyframe
    assert events[0] == CodecConfig(kind=TrackKind.VIDEO, codec="vp8", data=b"")
    packets = [e for e in events if isinstance(e, MediaPacket)]
    assert [p.data for p in packets] == [data for data, _ in frames[10:]]
    assert packets[0].keyframe and all(b.dts > a.dts for a, b in itertools.pairwise(packets))
    # After a gap the track waits for the next keyframe again.
    track.wait_for_keyframe()
    assert track.feed(frames[11][0], timestamp_ms=10_000) == []
    assert track.feed(frames[20][0], timestamp_ms=10_033)[-1].keyframe  # type: ignore[union-attr]


def test_equal_timestamps_still_increase(frames: list[tuple[bytes, bool]]) -> None:
    track = Vp8Track()
    dts = [
        e.dts for data, _ in frames[:5] for e in track.feed(data, 0) if isinstance(e, MediaPacket)
    ]
    assert dts == [0, 1, 2, 3, 4]


@given(st.binary(max_size=64))
def test_any_bytes_give_events_or_nothing_never_an_error(data: bytes) -> None:
    track = Vp8Track()
    for event in track.feed(data, 0):
        assert isinstance(event, CodecConfig | MediaPacket)
    if vp8_is_keyframe(data):
        try:
            width, height = vp8_keyframe_size(data)
        except ValueError:
            return
        assert 0 < width < 16384 and 0 < height < 16384
