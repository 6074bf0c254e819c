"""The per-publish limits: picture size from a real encoder's configuration, bitrate by arrival."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import av
import pytest

from lpstream.budget import MemoryBudget, process_rss
from lpstream.config import parse_bitrate, parse_byte_size, parse_pixels
from lpstream.errors import ConfigError, ProtocolError, RemoteProtocolError
from lpstream.gateway.ingest_limits import IngestLimits, IngestMeter
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.orchestrator.uploads import MAX_SEGMENT_SIZE
from tests.mediatools import flv_events, make_enhanced_clip


def avc_config(width: int, height: int) -> CodecConfig:
    """The avcC record libx264 writes for a ``width`` x ``height`` stream."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flv") as out:
        stream: Any = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        frame = av.VideoFrame(width, height, "yuv420p")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as container:
        record = bytes(container.streams.video[0].codec_context.extradata or b"")
    return CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=record)


def packet(size: int, dts: int = 0) -> MediaPacket:
    return MediaPacket(kind=TrackKind.VIDEO, dts=dts, pts=dts, keyframe=False, data=bytes(size))


def test_an_8k_configuration_is_refused_and_a_1080p_one_taken() -> None:
    meter = IngestMeter(IngestLimits())
    meter.check(avc_config(1920, 1080), now=0.0)
    with pytest.raises(RemoteProtocolError) as refused:
        meter.check(avc_config(8192, 4320), now=0.0)
    assert refused.value.code == 413
    assert "8192x4320" in str(refused.value)
    assert "--max-ingest-pixels" in str(refused.value)


def test_the_pixel_limit_is_the_configured_one() -> None:
    small = IngestMeter(IngestLimits(max_pixels=640 * 360))
    small.check(avc_config(640, 360), now=0.0)
    with pytest.raises(RemoteProtocolError):
        small.check(avc_config(642, 360), now=0.0)
    IngestMeter(IngestLimits(max_pixels=0)).check(avc_config(8192, 4320), now=0.0)


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9"])
def test_the_pixel_limit_holds_for_hevc_av1_and_vp9(tmp_path: Path, codec: str) -> None:
    # HEVC and AV1 records name their picture; VP9's does not, so its keyframes are read.
    clip = make_enhanced_clip(tmp_path / "in.flv", codec, seconds=0.2, size=(642, 360))
    events = list(flv_events(clip))
    for limit, refused in ((642 * 360, False), (640 * 360, True)):
        meter = IngestMeter(IngestLimits(max_pixels=limit))
        if not refused:
            for event in events:
                meter.check(event, now=0.0)
            continue
        with pytest.raises(RemoteProtocolError, match="picture 642x360 is larger") as error:
            for event in events:
                meter.check(event, now=0.0)
        assert error.value.code == 413


def test_a_burst_of_the_window_passes_and_a_sustained_excess_is_refused() -> None:
    # 1 MB/s, 4 MB of burst; frames without timestamps, so no frame rate limit here.
    limits = IngestLimits(max_bitrate=8_000_000, window=4.0, max_fps=0)
    meter = IngestMeter(limits)
    meter.check(packet(3_900_000), now=0.0)  # a buffered start: within the burst
    # Exactly the limit afterwards: 100 kB every 0.1 s for a minute.
    for step in range(600):
        meter.check(packet(100_000), now=(step + 1) * 0.1)
    # 25% over the limit: the burst left (0.1 MB) and 0.25 MB/s excess run out in a second.
    with pytest.raises(RemoteProtocolError) as refused:
        for step in range(100):
            meter.check(packet(125_000), now=60.0 + (step + 1) * 0.1)
    assert refused.value.code == 413
    assert step < 15
    assert "--max-ingest-bitrate" in str(refused.value)


def test_the_bitrate_is_measured_by_arrival_not_by_the_publishers_timestamps() -> None:
    meter = IngestMeter(IngestLimits(max_bitrate=8_000_000, window=1.0, max_fps=0))
    with pytest.raises(RemoteProtocolError, match="--max-ingest-bitrate"):
        # Timestamps claim an hour passed between packets; the clock says not.
        for index in range(10):
            meter.check(packet(300_000, dts=index * 3_600_000), now=index * 0.01)


def test_a_stream_at_its_frame_rate_passes_with_a_backlog_at_once() -> None:
    meter = IngestMeter(IngestLimits(max_fps=60, max_bitrate=0))
    # A reconnecting encoder's backlog: 1.5 s of 60 fps frames arriving at once.
    for index in range(90):
        meter.check(packet(100, dts=index * 1000 // 60), now=0.0)
    # Then a minute of 60 fps in real time, with audio, which is not counted.
    for index in range(90, 3690):
        now = (index - 89) / 60
        meter.check(packet(100, dts=index * 1000 // 60), now=now)
        audio = MediaPacket(kind=TrackKind.AUDIO, dts=index, pts=index, keyframe=True, data=b"")
        meter.check(audio, now=now)


def test_an_absurd_frame_rate_by_timestamps_is_refused_within_a_fraction_of_a_second() -> None:
    meter = IngestMeter(IngestLimits(max_fps=120, max_bitrate=0))
    with pytest.raises(RemoteProtocolError, match="frame rate over 120 fps") as refused:
        for index in range(1000):  # 1000 fps, sent in real time
            meter.check(packet(100, dts=index), now=index / 1000)
    assert refused.value.code == 413
    assert "--max-ingest-fps" in str(refused.value)
    assert index == 240  # the 241st frame within 2 s of timestamps: a quarter second in
    same = IngestMeter(IngestLimits(max_fps=120, max_bitrate=0))
    with pytest.raises(RemoteProtocolError, match="frame rate over 120 fps"):
        for index in range(300):  # every frame claims the same time
            same.check(packet(100, dts=5000), now=index / 30)


def test_frames_faster_than_real_time_are_refused_by_arrival() -> None:
    meter = IngestMeter(IngestLimits(max_fps=30, max_bitrate=0))
    with pytest.raises(RemoteProtocolError, match="frames arrive faster than 30 a second"):
        # A 25 fps file pushed without -re: its timestamps are honest, its pace is 10x.
        for index in range(1000):
            meter.check(packet(100, dts=index * 40), now=index / 250)
    assert index < 80
    # A jump back in timestamps (an encoder restarting) starts the count afresh.
    restarted = IngestMeter(IngestLimits(max_fps=30, max_bitrate=0))
    for index in range(300):
        restarted.check(packet(100, dts=(index % 50) * 40), now=index / 25)


def test_a_segment_cannot_outgrow_what_the_limits_let_in() -> None:
    limits = IngestLimits(max_bitrate=60_000_000, window=2.0, max_segment_duration=8.0)
    assert limits.segment_limit == int(7_500_000 * 10 * 1.1)
    # The orchestrator sizes its uploads by the same rule: what a gateway accepts, it takes.
    assert limits.segment_limit == IngestLimits().segment_limit == MAX_SEGMENT_SIZE
    assert IngestLimits(max_bitrate=0).segment_limit == 64 * 1024 * 1024


def test_limit_flags_parse_as_people_write_them() -> None:
    assert parse_pixels("4096x2304") == 4096 * 2304
    assert parse_pixels("0") == 0
    assert parse_bitrate("60M") == 60_000_000
    assert parse_bitrate("8000k") == 8_000_000
    assert parse_bitrate("2.5Mbps") == 2_500_000
    assert parse_byte_size("2G") == 2 * 2**30
    assert parse_byte_size("512MB") == 512 * 2**20
    for bad in ("lots", "-1M", "4096x"):
        with pytest.raises(ConfigError):
            parse_pixels(bad) if "x" in bad else parse_bitrate(bad)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_memory_budget_refuses_new_work_once_rss_is_over_it() -> None:
    rss = process_rss()
    assert rss > 10 * 2**20
    MemoryBudget(limit=rss * 4).check("a new stream")
    MemoryBudget(limit=0).check("a new stream")
    budget = MemoryBudget(limit=rss // 2)
    with pytest.raises(ProtocolError) as refused:
        budget.check("a new stream")
    assert refused.value.code == 503
    assert "memory budget" in str(refused.value)
    assert budget.refused_total == 1
