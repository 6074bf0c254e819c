"""Bad media never ends a stream: the segmenter drops what the muxer cannot take, rebases
timestamp jumps behind a discontinuity, bounds every segment and refuses audio-only streams.

Each test takes a real ffmpeg-made H.264/AAC clip, read as the RTMP ingest delivers it, puts
one fault into it, and checks the segments the way a player would: every one decodes (PyAV),
the output timeline runs on without holes or steps back, and the counters say what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import av
import pytest

from ingest.segmenter import (
    AUDIO_ONLY_REFUSAL,
    MAX_REFUSED_IN_A_ROW,
    MIN_JUMP_SEGMENT,
    PartCompleted,
    SegmentCompleted,
    SegmentData,
    Segmenter,
    SegmenterEvent,
    SegmentStarted,
)
from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from tests.mediatools import ffmpeg, flv_events, make_clip

HOURS_3 = 3 * 3600 * 1000
NEAR_2_32 = 2**32 - 5000
"""What RTMP's 32-bit wrap looks like from a publisher that jumps to just below it."""


@attrs.frozen
class Run:
    started: list[SegmentStarted]
    done: list[SegmentCompleted]
    data: dict[int, bytes]
    parts: dict[int, list[PartCompleted]]
    segmenter: Segmenter


def run(events: Sequence[MediaEvent], segmenter: Segmenter) -> Run:
    out: list[SegmenterEvent] = []
    for event in events:
        out.extend(segmenter.feed(event))
    out.extend(segmenter.finish())
    started: list[SegmentStarted] = []
    done: list[SegmentCompleted] = []
    data: dict[int, bytearray] = {}
    parts: dict[int, list[PartCompleted]] = {}
    for ev in out:
        if isinstance(ev, SegmentStarted):
            assert len(started) == len(done), "a segment started before the last one ended"
            started.append(ev)
            data[ev.seq] = bytearray()
        elif isinstance(ev, SegmentData):
            data[ev.seq].extend(ev.data)
        elif isinstance(ev, PartCompleted):
            parts.setdefault(ev.seq, []).append(ev)
        else:
            done.append(ev)
    assert len(started) == len(done)
    return Run(started, done, {k: bytes(v) for k, v in data.items()}, parts, segmenter)


def packets(events: Sequence[MediaEvent]) -> list[MediaPacket]:
    return [e for e in events if isinstance(e, MediaPacket)]


def video_at(events: Sequence[MediaEvent], ms: int, *, keyframe: bool = False) -> int:
    """Index in ``events`` of the first video packet at or after ``ms`` (a delta frame, unless
    ``keyframe``)."""
    for index, event in enumerate(events):
        if (
            isinstance(event, MediaPacket)
            and event.kind is TrackKind.VIDEO
            and event.dts >= ms
            and event.keyframe == keyframe
        ):
            return index
    raise AssertionError(f"no video packet after {ms} ms")


def shifted(
    events: Sequence[MediaEvent], by_ms: int, *, start: int = 0, base_ms: int = 0
) -> list[MediaEvent]:
    """Every packet from index ``start`` on moved by ``by_ms`` (all packets by ``base_ms``)."""
    out: list[MediaEvent] = []
    for index, event in enumerate(events):
        if isinstance(event, MediaPacket):
            move = base_ms + (by_ms if index >= start else 0)
            event = attrs.evolve(event, dts=event.dts + move, pts=event.pts + move)
        out.append(event)
    return out


def decode(path: Path) -> tuple[int, int, int]:
    """Decodes a file as a player does, going on past packets that fail: returns the video
    frames, the audio frames and the packets that failed."""
    video = audio = failed = 0
    with av.open(str(path)) as container:
        for packet in container.demux():
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                failed += 1
                continue
            for frame in frames:
                if isinstance(frame, av.VideoFrame):
                    video += 1
                else:
                    audio += 1
    return video, audio, failed


def assert_playable(
    tmp_path: Path, result: Run, *, bound_ms: float, damaged: bool = False
) -> tuple[int, int]:
    """Every segment lasts at most ``bound_ms`` and starts where the one before ended (the
    output timeline runs on); each one that opens on a keyframe decodes on its own (without
    a failure, unless the input was ``damaged``). Returns the (video, audio) frames a player
    decodes from the segments end to end."""
    for before, after in zip(result.done, result.done[1:], strict=False):
        assert after.start_ms == before.start_ms + before.duration_ms, (before, after)
    for segment in result.done:
        assert 0 < segment.duration_ms <= bound_ms, segment
        path = tmp_path / f"{segment.seq}.ts"
        path.write_bytes(result.data[segment.seq])
        if not segment.forced:
            video, _, failed = decode(path)
            assert video > 0 and (damaged or failed == 0), (segment, failed)
    whole = tmp_path / "all.ts"
    whole.write_bytes(b"".join(result.data[d.seq] for d in result.done))
    video, audio, failed = decode(whole)
    assert damaged or failed == 0
    return video, audio


@pytest.fixture(scope="module")
def clip_events(tmp_path_factory: pytest.TempPathFactory) -> list[MediaEvent]:
    """8 s of 320x180 at 30 fps, a keyframe every second, with AAC audio."""
    path = tmp_path_factory.mktemp("clip") / "in.flv"
    make_clip(path, seconds=8, size="320x180", gop=30)
    return list(flv_events(path))


def video_count(events: Sequence[MediaEvent]) -> int:
    return sum(p.kind is TrackKind.VIDEO for p in packets(events))


# -- small faults: the packet is dropped, the stream goes on ---------------------------------


def one_frame_100ms_late(events: list[MediaEvent]) -> list[MediaEvent]:
    index = video_at(events, 3000)
    packet = events[index]
    assert isinstance(packet, MediaPacket)
    events[index] = attrs.evolve(packet, dts=packet.dts - 100, pts=packet.pts - 100)
    return events


def a_duplicate(events: list[MediaEvent]) -> list[MediaEvent]:
    index = video_at(events, 3000)
    return [*events[: index + 1], events[index], *events[index + 1 :]]


def out_of_order(events: list[MediaEvent]) -> list[MediaEvent]:
    first = video_at(events, 3000)
    second = video_at(events[first + 1 :], 0) + first + 1
    events[first], events[second] = events[second], events[first]
    return events


@pytest.mark.parametrize(
    ("fault", "lost"),
    [(one_frame_100ms_late, 1), (a_duplicate, 0), (out_of_order, 1)],
    ids=["100ms-in-the-past", "duplicate-dts", "out-of-order-dts"],
)
def test_a_late_duplicate_or_reordered_frame_is_dropped_and_counted(
    tmp_path: Path,
    clip_events: list[MediaEvent],
    fault: Callable[[list[MediaEvent]], list[MediaEvent]],
    lost: int,
) -> None:
    events = fault(list(clip_events))
    result = run(events, Segmenter(target_duration=2.0, stream_name="late"))
    stats = result.segmenter.statistics()
    assert stats.late_packets == 1
    assert stats.jumps == stats.refused_packets == 0
    assert [d.duration_ms for d in result.done] == [pytest.approx(2000, abs=40)] * 4
    assert not any(d.discontinuity or d.forced for d in result.done)
    video, audio = assert_playable(tmp_path, result, bound_ms=2100)
    assert video == video_count(clip_events) - lost
    assert audio > 300


def test_a_short_step_back_drops_until_time_catches_up(
    tmp_path: Path, clip_events: list[MediaEvent]
) -> None:
    # One second back is no jump: what repeats the past is dropped, then the stream goes on.
    events = shifted(clip_events, -1000, start=video_at(clip_events, 3000))
    result = run(events, Segmenter(target_duration=2.0))
    stats = result.segmenter.statistics()
    assert stats.jumps == 0
    assert 50 <= stats.late_packets <= 90  # a second of video and audio
    assert not any(d.discontinuity for d in result.done)
    assert_playable(tmp_path, result, bound_ms=2100)


def test_an_inconsistent_presentation_time_is_set_to_the_decode_time(
    tmp_path: Path, clip_events: list[MediaEvent]
) -> None:
    events = list(clip_events)
    for at, pts_offset in [(2500, -50), (4500, 10 * 3600 * 1000)]:
        index = video_at(events, at)
        packet = events[index]
        assert isinstance(packet, MediaPacket)
        events[index] = attrs.evolve(packet, pts=packet.dts + pts_offset)
    result = run(events, Segmenter(target_duration=2.0))
    assert result.segmenter.statistics().repaired_pts == 2
    video, _ = assert_playable(tmp_path, result, bound_ms=2100)
    assert video == video_count(clip_events)


# -- jumps: rebased behind a discontinuity -----------------------------------------------------


@pytest.mark.parametrize(
    ("by_ms", "base_ms"),
    [(HOURS_3, 0), (NEAR_2_32, 0), (-60_000, 100_000), (6000, 0)],
    ids=["forward-3h", "near-2^32", "back-60s", "forward-6s"],
)
def test_a_jump_starts_a_segment_after_a_discontinuity_on_a_continuous_timeline(
    tmp_path: Path, clip_events: list[MediaEvent], by_ms: int, base_ms: int
) -> None:
    at = video_at(clip_events, 3000)  # a delta frame, mid-GOP and mid-segment
    events = shifted(clip_events, by_ms, start=at, base_ms=base_ms)
    segmenter = Segmenter(target_duration=2.0, part_target=0.333, stream_name="jumpy")
    result = run(events, segmenter)
    stats = segmenter.statistics()
    assert stats.jumps == 2  # the video, then the audio
    assert stats.late_packets == stats.refused_packets == 0
    flagged = [d for d in result.done if d.discontinuity]
    assert [s.discontinuity for s in result.started] == [d.discontinuity for d in result.done]
    assert len(flagged) == 1
    jump = flagged[0]
    assert not jump.forced  # cut at the first keyframe after the jump
    # The jump came just after 3 s (the timeline went on a frame after the newest packet before
    # it); the next keyframe was a second later.
    assert 4000 <= jump.start_ms - base_ms <= 4100
    # Segments stay about the target (cut at keyframes: up to a GOP more); nothing lasts hours.
    assert all(d.duration_ms <= 3100 for d in result.done)
    assert result.done[-1].start_ms + result.done[-1].duration_ms == pytest.approx(
        base_ms + 8000, abs=100
    )
    video, audio = assert_playable(tmp_path, result, bound_ms=3100)
    assert video == video_count(clip_events)
    assert audio > 300
    # Parts follow the rebased timeline too: none is longer than about the part target.
    assert all(p.duration_ms <= 350 for ps in result.parts.values() for p in ps)


def test_an_audio_jump_alone_is_rebased_without_a_discontinuity(
    tmp_path: Path, clip_events: list[MediaEvent]
) -> None:
    start = video_at(clip_events, 3000)
    events = [
        attrs.evolve(e, dts=e.dts + HOURS_3, pts=e.pts + HOURS_3)
        if index >= start and isinstance(e, MediaPacket) and e.kind is TrackKind.AUDIO
        else e
        for index, e in enumerate(clip_events)
    ]
    segmenter = Segmenter(target_duration=2.0)
    result = run(events, segmenter)
    assert segmenter.statistics().jumps == 1
    assert not any(d.discontinuity for d in result.done)
    # The audio's rebasing is known, so callers can map what they fed in to the output.
    last_audio = packets(events)[-1]
    assert last_audio.kind is TrackKind.AUDIO
    assert segmenter.output_ms(TrackKind.AUDIO, last_audio.dts) == pytest.approx(
        last_audio.dts - HOURS_3, abs=60
    )
    assert segmenter.output_ms(TrackKind.VIDEO, 5000) == 5000
    video, audio = assert_playable(tmp_path, result, bound_ms=2100)
    assert video == video_count(clip_events)
    assert audio > 300


def test_jumps_in_the_first_frames_of_a_segment_are_only_rebased(
    tmp_path: Path, clip_events: list[MediaEvent]
) -> None:
    # A storm of jumps (every video frame an hour away from the last) cannot make a segment
    # per frame: a jump cuts only a segment at least MIN_JUMP_SEGMENT long.
    events: list[MediaEvent] = []
    flip = 0
    for event in clip_events:
        if isinstance(event, MediaPacket) and event.kind is TrackKind.VIDEO and event.dts > 2000:
            flip ^= 1
        if isinstance(event, MediaPacket) and flip:
            event = attrs.evolve(event, dts=event.dts + 3_600_000, pts=event.pts + 3_600_000)
        events.append(event)
    result = run(events, Segmenter(target_duration=2.0))
    assert result.segmenter.statistics().jumps > 100
    assert all(d.duration_ms >= MIN_JUMP_SEGMENT * 1000 for d in result.done[:-1])
    assert len(result.done) <= 8 / MIN_JUMP_SEGMENT
    video, _ = assert_playable(tmp_path, result, bound_ms=2100)
    assert video > 0.9 * video_count(clip_events)


# -- damaged data --------------------------------------------------------------------------------


def test_frames_damaged_by_ffmpegs_noise_filter_are_dropped_or_passed_on(
    tmp_path: Path,
) -> None:
    clean = make_clip(tmp_path / "clean.flv", seconds=6, size="320x180", gop=30)
    noisy = tmp_path / "noisy.flv"
    ffmpeg("-i", str(clean), "-c", "copy", "-bsf:v", "noise=amount=200", "-f", "flv", str(noisy))
    segmenter = Segmenter(target_duration=2.0, part_target=0.333)
    result = run(list(flv_events(noisy)), segmenter)
    assert segmenter.statistics().refused_packets > 0  # NAL lengths that do not add up
    assert len(result.done) == 3
    video, _ = assert_playable(tmp_path, result, bound_ms=2100, damaged=True)
    assert video > 150


def test_a_nal_length_past_the_packet_is_refused_by_the_muxer_and_dropped(
    tmp_path: Path, clip_events: list[MediaEvent]
) -> None:
    events = list(clip_events)
    index = video_at(events, 3000)
    packet = events[index]
    assert isinstance(packet, MediaPacket)
    events[index] = attrs.evolve(packet, data=b"\x7f\xff\xff\xff" + packet.data[4:])
    result = run(events, Segmenter(target_duration=2.0))
    assert result.segmenter.statistics().refused_packets == 1
    video, _ = assert_playable(tmp_path, result, bound_ms=2100)
    assert video == video_count(clip_events) - 1


def test_parts_stay_whole_when_the_packet_that_would_open_one_is_refused(
    tmp_path: Path, clip_events: list[MediaEvent]
) -> None:
    # At 30 fps parts of 0.333 s open every tenth frame: damage every fifth delta frame, so
    # that some of the refused packets are the ones a part would have opened on.
    events: list[MediaEvent] = []
    delta = 0
    for event in clip_events:
        if isinstance(event, MediaPacket) and event.kind is TrackKind.VIDEO and not event.keyframe:
            delta += 1
            if delta % 5 == 0:
                event = attrs.evolve(event, data=b"\x7f\xff\xff\xff" + event.data[4:])
        events.append(event)
    segmenter = Segmenter(target_duration=2.0, part_target=0.333)
    result = run(events, segmenter)
    assert segmenter.statistics().refused_packets == delta // 5
    for done in result.done:
        parts = result.parts[done.seq]
        assert b"".join(p.data for p in parts) == result.data[done.seq]
        assert sum(p.duration_ms for p in parts) == done.duration_ms
        assert parts[0].independent
        assert all(250 <= p.duration_ms <= 400 for p in parts[:-1]), parts
    # Frames that refer to a lost one may not be shown; the rest play.
    video, _ = assert_playable(tmp_path, result, bound_ms=2100, damaged=True)
    assert video > 0.6 * video_count(clip_events)


def test_only_a_long_run_of_refused_packets_ends_the_stream(
    clip_events: list[MediaEvent],
) -> None:
    events = list(clip_events[: video_at(clip_events, 1000)])
    last = packets(events)[-1].dts
    segmenter = Segmenter()
    for event in events:
        segmenter.feed(event)
    damaged = [
        MediaPacket(
            kind=TrackKind.VIDEO, dts=last + 33 * n, pts=last + 33 * n, keyframe=False, data=b"\xff"
        )
        for n in range(1, MAX_REFUSED_IN_A_ROW + 1)
    ]
    for packet in damaged[:-1]:
        segmenter.feed(packet)
    assert segmenter.statistics().refused_packets == MAX_REFUSED_IN_A_ROW - 1
    with pytest.raises(MediaError, match=f"refused {MAX_REFUSED_IN_A_ROW} packets in a row"):
        segmenter.feed(damaged[-1])


def test_an_unusable_new_configuration_is_ignored_and_the_old_one_stays(
    tmp_path: Path, clip_events: list[MediaEvent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "lpstream.ingest.segmenter")
    events = list(clip_events)
    bad = CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=b"\x01garbage")
    index = video_at(events, 3000)
    events[index:index] = [bad, bad]
    result = run(events, Segmenter(target_duration=2.0, stream_name="cfg"))
    stats = result.segmenter.statistics()
    assert stats.ignored_configs == 2 and stats.refused_packets == 0
    assert caplog.text.count("configuration ignored") == 1  # logged once, then counted
    video, _ = assert_playable(tmp_path, result, bound_ms=2100)
    assert video == video_count(clip_events)


def test_an_unusable_first_configuration_is_a_media_error(
    clip_events: list[MediaEvent],
) -> None:
    segmenter = Segmenter()
    segmenter.feed(CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=b"\x01garbage"))
    first = clip_events[video_at(clip_events, 0, keyframe=True)]
    with pytest.raises(MediaError, match=r"H\.264 configuration record cannot be used"):
        segmenter.feed(first)


# -- bounds and refusals -----------------------------------------------------------------------


def test_audio_running_on_without_video_cuts_bounded_segments(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = make_clip(tmp_path / "long.flv", seconds=20, size="320x180", gop=30)
    # The camera stalls from 2 s to 16 s while the microphone goes on.
    events = [
        e
        for e in flv_events(path)
        if not (isinstance(e, MediaPacket) and e.kind is TrackKind.VIDEO and 2000 <= e.dts < 16000)
    ]
    segmenter = Segmenter(target_duration=2.0, max_duration=4.0, part_target=0.333)
    result = run(events, segmenter)
    durations = [d.duration_ms for d in result.done]
    assert max(durations) <= 4100, durations
    assert sum(durations) == pytest.approx(20000, abs=100)
    assert segmenter.statistics().forced_cuts >= 3
    video, audio = assert_playable(tmp_path, result, bound_ms=4100)
    assert video == 60 + 120
    assert audio > 800
    # A segment that audio opened is delivered in parts too, its bytes end to end.
    for done in result.done:
        assert b"".join(p.data for p in result.parts[done.seq]) == result.data[done.seq]


def test_no_segment_outlasts_the_bound_even_at_one_frame_per_four_seconds(tmp_path: Path) -> None:
    path = tmp_path / "slow.flv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=0.25", "-t", "40",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "100", "-f", "flv", str(path),
    )  # fmt: skip
    segmenter = Segmenter(target_duration=2.0, max_duration=8.0)
    result = run(list(flv_events(path)), segmenter)
    assert segmenter.statistics().jumps == 0  # 4 s between frames is no jump
    assert max(d.duration_ms for d in result.done) <= segmenter.duration_bound * 1000
    assert_playable(tmp_path, result, bound_ms=segmenter.duration_bound * 1000)


@pytest.mark.parametrize("video_config", [False, True], ids=["plain", "with-a-video-config"])
def test_an_audio_only_publish_is_refused_with_a_clear_reason(
    tmp_path: Path, clip_events: list[MediaEvent], video_config: bool
) -> None:
    path = tmp_path / "audio.flv"
    ffmpeg("-f", "lavfi", "-i", "sine", "-t", "12", "-c:a", "aac", "-f", "flv", str(path))
    segmenter = Segmenter(startup_limit=10.0)
    if video_config:  # announcing video and sending none is audio only all the same
        assert isinstance(clip_events[0], CodecConfig)
        segmenter.feed(clip_events[0])
    produced: list[SegmenterEvent] = []
    with pytest.raises(MediaError) as caught:
        for event in flv_events(path):
            produced += segmenter.feed(event)
    assert str(caught.value) == AUDIO_ONLY_REFUSAL
    assert produced == []
    assert isinstance(event, MediaPacket) and 9900 <= event.dts <= 10100


def test_video_that_never_brings_a_keyframe_is_refused(clip_events: list[MediaEvent]) -> None:
    segmenter = Segmenter(startup_limit=5.0)
    with pytest.raises(MediaError, match=r"no H\.264 keyframe in the first 5 s"):
        for event in clip_events:
            video = isinstance(event, MediaPacket) and event.kind is TrackKind.VIDEO
            if not (video and isinstance(event, MediaPacket) and event.keyframe):
                segmenter.feed(event)  # everything but the video keyframes


def test_video_without_a_configuration_is_refused(clip_events: list[MediaEvent]) -> None:
    segmenter = Segmenter(startup_limit=5.0)
    with pytest.raises(MediaError, match=r"no H\.264 configuration"):
        for event in clip_events:
            if not (isinstance(event, CodecConfig) and event.kind is TrackKind.VIDEO):
                segmenter.feed(event)


def test_a_stream_stuck_on_one_timestamp_is_refused_too() -> None:
    segmenter = Segmenter(startup_limit=1.0)
    audio = MediaPacket(kind=TrackKind.AUDIO, dts=0, pts=0, keyframe=True, data=b"\x21")
    with pytest.raises(MediaError, match="audio-only"):
        for _ in range(1000):
            segmenter.feed(audio)
    assert segmenter.statistics().late_packets == 199
