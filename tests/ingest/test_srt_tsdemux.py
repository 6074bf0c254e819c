"""The ingest MPEG-TS demuxer and ADTS reader against what ffmpeg writes and PyAV reads."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest.srt.tsdemux as tsdemux
from ingest.srt import AdtsReader, TsDemuxer
from ingest.srt.interleave import MAX_HOLD_MS, Interleaver
from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.media.h264 import NAL_AUD, avcc_units, nal_type, nal_units
from lpstream.media.mpegts import PACKET_SIZE, packet_pid
from tests.mediatools import ffmpeg, make_clip

WRAP_SECONDS = (1 << 33) / 90_000


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Three seconds of H.264 with B-frames and AAC, as ffmpeg muxes MPEG-TS."""
    path = tmp_path_factory.mktemp("ts") / "clip.ts"
    return make_clip(path, seconds=3, size="320x240", gop=30, bframes=2, fmt="mpegts").read_bytes()


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("ts") / "small.ts"
    return make_clip(path, seconds=0.5, size="64x48", gop=5, fmt="mpegts").read_bytes()


def demux(data: bytes, chunks: list[int] | None = None) -> tuple[list[MediaEvent], TsDemuxer]:
    demuxer = TsDemuxer()
    events: list[MediaEvent] = []
    if chunks is None:
        events += demuxer.feed(data)
    else:
        pos = 0
        for size in chunks:
            events += demuxer.feed(data[pos : pos + size])
            pos += size
        events += demuxer.feed(data[pos:])
    return events + demuxer.flush(), demuxer


def packets(events: list[MediaEvent], kind: TrackKind) -> list[MediaPacket]:
    return [e for e in events if isinstance(e, MediaPacket) and e.kind is kind]


def mux(path: Path, *args: str) -> bytes:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30", *args, "-f", "mpegts", str(path))
    return path.read_bytes()


def test_a_clip_demuxes_to_exactly_what_ffmpeg_reads(tmp_path: Path, clip: bytes) -> None:
    events, demuxer = demux(clip)
    (tmp_path / "clip.ts").write_bytes(clip)
    with av.open(str(tmp_path / "clip.ts")) as container:
        # (type, dts, pts, keyframe, bytes), read while the container is open
        reference = [
            (p.stream.type, p.dts, p.pts, p.is_keyframe, bytes(p))
            for p in container.demux()
            if p.size
        ]
    video_ref = [r for r in reference if r[0] == "video"]
    audio_ref = [r for r in reference if r[0] == "audio"]
    video, audio = packets(events, TrackKind.VIDEO), packets(events, TrackKind.AUDIO)
    assert len(video) == len(video_ref) == 90 and len(audio) == len(audio_ref) > 100
    for ours, (_, dts, pts, keyframe, data) in zip(video, video_ref, strict=True):
        assert dts is not None and pts is not None
        assert (ours.dts, ours.pts) == (dts // 90, pts // 90)
        assert ours.keyframe == keyframe
        units = [u for u in nal_units(data) if nal_type(u) != NAL_AUD]
        assert avcc_units(ours.data) == units
    for ours, (_, _, pts, _, data) in zip(audio, audio_ref, strict=True):
        assert pts is not None
        assert ours.dts == ours.pts == pts // 90
        assert ours.data == data[7:]  # the ADTS header is off
    configs = [e for e in events if isinstance(e, CodecConfig)]
    assert [c.kind for c in configs] == [
        TrackKind.VIDEO,
        TrackKind.AUDIO,
        TrackKind.VIDEO,
        TrackKind.VIDEO,
    ]
    assert configs[1] == CodecConfig(kind=TrackKind.AUDIO, codec="aac", data=bytes.fromhex("1208"))
    # B-frames: presentation runs ahead of decoding, and decode times only go up.
    assert any(p.pts > p.dts for p in video)
    assert all(a.dts < b.dts for a, b in itertools.pairwise(video))
    assert demuxer.dropped == 0 and demuxer.skipped == 0


def test_byte_at_a_time_gives_the_same_events(small_clip: bytes) -> None:
    whole, _ = demux(small_clip)
    one_by_one, _ = demux(small_clip, [1] * len(small_clip))
    assert one_by_one == whole and packets(whole, TrackKind.VIDEO)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=3000), max_size=200))
def test_any_chunking_gives_the_same_events(small_clip: bytes, sizes: list[int]) -> None:
    assert demux(small_clip, sizes)[0] == demux(small_clip)[0]


def test_times_run_on_past_the_33_bit_wrap(tmp_path: Path) -> None:
    data = mux(
        tmp_path / "wrap.ts",
        *("-f", "lavfi", "-i", "sine", "-t", "4", "-c:v", "libx264", "-g", "30"),
        *("-c:a", "aac", "-output_ts_offset", str(WRAP_SECONDS - 2)),
    )
    events, _ = demux(data)
    for kind in TrackKind:
        times = [p.dts for p in packets(events, kind)]
        assert all(a < b for a, b in itertools.pairwise(times)), kind
        assert times[0] < WRAP_SECONDS * 1000 < times[-1]
        assert times[-1] - times[0] == pytest.approx(4000, abs=100)


def test_bytes_out_of_sync_are_skipped_and_counted(clip: bytes) -> None:
    cut = 300 * PACKET_SIZE
    garbage = bytes(random.Random(1).randrange(256) for _ in range(5000)).replace(b"\x47", b"\x00")
    events, demuxer = demux(clip[:cut] + garbage + clip[cut:])
    whole, _ = demux(clip)
    assert demuxer.skipped == len(garbage)
    assert events == whole


def test_lost_packets_cost_the_frames_they_were_in_and_nothing_more(clip: bytes) -> None:
    whole, _ = demux(clip)
    kept = bytearray()
    video_pid = None
    lost_packets = 0
    for index in range(0, len(clip), PACKET_SIZE):
        packet = clip[index : index + PACKET_SIZE]
        pid = packet_pid(packet)
        if video_pid is None and pid not in (0, 0x11, 0x1000) and packet[1] & 0x40:
            video_pid = pid
        if pid == video_pid and index // PACKET_SIZE % 97 == 0:
            lost_packets += 1
            continue
        kept += packet
    events, demuxer = demux(bytes(kept))
    video, whole_video = packets(events, TrackKind.VIDEO), packets(whole, TrackKind.VIDEO)
    assert lost_packets <= demuxer.dropped
    # A lost packet costs the frame it was in, and the one before when it began a frame.
    assert demuxer.dropped <= len(whole_video) - len(video) <= 2 * lost_packets
    remaining = iter(whole_video)
    assert all(any(p == q for q in remaining) for p in video)  # intact, and in order
    assert packets(events, TrackKind.AUDIO) == packets(whole, TrackKind.AUDIO)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("-c:v", "mpeg2video"), "MPEG-2 video"),
        (("-c:v", "libx265", "-x265-params", "log-level=error"), "HEVC"),
        (("-f", "lavfi", "-i", "sine", "-c:v", "libx264", "-c:a", "ac3"), "AC-3"),
        (("-f", "lavfi", "-i", "sine", "-c:v", "libx264", "-c:a", "libopus"), "Opus"),
        (("-f", "lavfi", "-i", "sine", "-c:v", "libx264", "-c:a", "mp2"), "MPEG-1 audio"),
        (("-f", "lavfi", "-i", "sine", "-map", "1:a", "-c:a", "aac"), "no H.264 video"),
    ],
)
def test_codecs_that_are_not_taken_are_refused_by_name(
    tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    data = mux(tmp_path / "other.ts", *args, "-t", "0.5")
    with pytest.raises(RemoteProtocolError, match=named) as caught:
        demux(data)
    assert caught.value.code == 415


def test_bytes_that_are_not_mpeg_ts_are_refused_within_the_budget() -> None:
    noise = random.Random(7).randbytes(tsdemux.MAX_BYTES_BEFORE_PROGRAM + 65536)
    demuxer = TsDemuxer()
    with pytest.raises(RemoteProtocolError, match="no MPEG-TS program"):
        for start in range(0, len(noise), 65536):
            assert demuxer.feed(noise[start : start + 65536]) == []


def test_a_program_that_carries_no_media_is_refused_within_the_budget(clip: bytes) -> None:
    demuxer = TsDemuxer()
    demuxer.feed(clip[: 3 * PACKET_SIZE])  # SDT, PAT and PMT
    null = bytes([0x47, 0x1F, 0xFF, 0x10]) + bytes(184)
    with pytest.raises(RemoteProtocolError, match="no audio or video"):
        for _ in range(tsdemux.MAX_BYTES_WITHOUT_MEDIA // (PACKET_SIZE * 1000) + 2):
            demuxer.feed(null * 1000)


def test_tables_with_a_bad_crc_are_not_believed(clip: bytes) -> None:
    damaged = bytearray(clip)
    for index in range(0, len(damaged), PACKET_SIZE):
        if packet_pid(damaged[index : index + PACKET_SIZE]) == 0:
            damaged[index + 12] ^= 0x01  # inside the PAT section
    events, _ = demux(bytes(damaged))
    assert events == []


def test_an_oversized_access_unit_is_dropped_and_counted(
    clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tsdemux, "MAX_VIDEO_PES", 4000)
    events, demuxer = demux(clip)
    video = packets(events, TrackKind.VIDEO)
    assert demuxer.dropped > 0 and len(video) + demuxer.dropped == 90
    assert all(len(p.data) < 4000 for p in video)
    assert not any(p.keyframe for p in video)  # keyframes are the big ones here


# -- ADTS ------------------------------------------------------------------------------------


def adts_frame(
    payload: bytes, *, crc: bool = False, channels: int = 2, rate_index: int = 4
) -> bytes:
    size = (9 if crc else 7) + len(payload)
    header = bytearray(7)
    header[0] = 0xFF
    header[1] = 0xF0 | (0 if crc else 1)
    header[2] = (1 << 6) | (rate_index << 2) | (channels >> 2)  # AAC LC
    header[3] = ((channels & 3) << 6) | (size >> 11)
    header[4] = (size >> 3) & 0xFF
    header[5] = ((size & 7) << 5) | 0x1F
    header[6] = 0xFC
    return bytes(header) + (b"\x00\x00" if crc else b"") + payload


FRAMES = [bytes([n]) * (20 + n) for n in range(12)]


@settings(max_examples=100)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8), crc=st.booleans())
def test_adts_frames_split_anywhere_over_pes_read_the_same(cuts: list[int], crc: bool) -> None:
    stream = b"".join(adts_frame(f, crc=crc) for f in FRAMES)
    bounds = sorted({0, len(stream), *(min(c, len(stream)) for c in cuts)})
    reader = AdtsReader()
    frames = []
    for start, end in itertools.pairwise(bounds):
        frames += reader.feed(stream[start:end], 90_000 if start == 0 else None)
    assert [f.data for f in frames] == FRAMES
    assert {f.config for f in frames} == {bytes.fromhex("1210")}  # LC, 44.1 kHz, stereo
    assert [f.time for f in frames] == [90_000 + i * 1024 * 90_000 // 44100 for i in range(12)]
    assert reader.skipped == 0


def test_adts_skips_damage_to_the_next_frame() -> None:
    reader = AdtsReader()
    frames = reader.feed(adts_frame(b"a" * 30) + b"\x12\x34\x56" + adts_frame(b"b" * 30), 0)
    assert [f.data for f in frames] == [b"a" * 30, b"b" * 30] and reader.skipped == 3


def test_adts_without_a_channel_configuration_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="channel configuration 0") as caught:
        AdtsReader().feed(adts_frame(b"x" * 10, channels=0), 0)
    assert caught.value.code == 415


# -- interleaving ----------------------------------------------------------------------------


def test_events_leave_in_decode_order_with_every_configuration_first(clip: bytes) -> None:
    events, _ = demux(clip)
    assert [type(e) for e in events[:3]] == [CodecConfig, CodecConfig, MediaPacket]
    media = [e for e in events if isinstance(e, MediaPacket)]
    assert [p.dts for p in media] == sorted(p.dts for p in media)


def test_a_silent_track_holds_the_others_back_one_second_at_most() -> None:
    order = Interleaver(tracks=frozenset(TrackKind))
    out = order.push(CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=b"v"))
    held_for = []
    for n in range(90):
        frame = MediaPacket(kind=TrackKind.VIDEO, dts=n * 33, pts=n * 33, keyframe=n == 0, data=b"")
        out += order.push(frame)
        released = [p.dts for p in out if isinstance(p, MediaPacket)]
        held_for.append(n * 33 - (released[-1] if released else -33))
    assert out[0] == CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=b"v")
    assert max(held_for) <= MAX_HOLD_MS + 33 and len(out) > 50
    assert [p.dts for p in out[1:] if isinstance(p, MediaPacket)] == [
        n * 33 for n in range(len(out) - 1)
    ]
    assert len(out) - 1 + len(order.flush()) == 90
