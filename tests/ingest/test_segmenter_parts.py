"""The segmenter's LL-HLS parts: whole frames of about the part target, PAT/PMT first, that
end to end are the segment, byte for byte, and decode like it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.segmenter import (
    PartCompleted,
    SegmentCompleted,
    SegmentData,
    Segmenter,
    SegmenterEvent,
)
from tests.mediatools import flv_events, make_clip, probe_streams

PAT_PID = 0x0000
PMT_PID = 0x1000
"""Where FFmpeg's MPEG-TS muxer puts the PMT."""


def run(path: Path, segmenter: Segmenter) -> list[SegmenterEvent]:
    events = [out for event in flv_events(path) for out in segmenter.feed(event)]
    return events + segmenter.finish()


def segments_and_parts(
    events: list[SegmenterEvent],
) -> tuple[list[SegmentCompleted], dict[int, bytes], dict[int, list[PartCompleted]]]:
    done: list[SegmentCompleted] = []
    data: dict[int, bytearray] = {}
    parts: dict[int, list[PartCompleted]] = {}
    since_part = bytearray()
    for event in events:
        if isinstance(event, SegmentData):
            data.setdefault(event.seq, bytearray()).extend(event.data)
            since_part += event.data
        elif isinstance(event, PartCompleted):
            # A part's bytes are exactly the segment bytes delivered since the previous part.
            assert event.data == bytes(since_part)
            since_part.clear()
            parts.setdefault(event.seq, []).append(event)
        elif isinstance(event, SegmentCompleted):
            if parts:
                assert since_part == b"", "segment bytes after its last part"
            since_part.clear()
            done.append(event)
    return done, {seq: bytes(d) for seq, d in data.items()}, parts


def leading_pids(ts: bytes) -> list[int]:
    """PIDs of the TS packets before the first one carrying a PES start."""
    pids: list[int] = []
    for offset in range(0, len(ts), 188):
        pid = ((ts[offset + 1] & 0x1F) << 8) | ts[offset + 2]
        start = offset + 4 + (1 + ts[offset + 4] if ts[offset + 3] & 0x20 else 0)
        if ts[offset + 1] & 0x40 and ts[start : start + 3] == b"\x00\x00\x01":
            return pids
        pids.append(pid)
    return pids


def continuity_errors(ts: bytes) -> list[tuple[int, int]]:
    """(packet index, pid) of packets whose continuity counter does not follow on."""
    last: dict[int, int] = {}
    errors = []
    for index, offset in enumerate(range(0, len(ts), 188)):
        pid = ((ts[offset + 1] & 0x1F) << 8) | ts[offset + 2]
        if not ts[offset + 3] & 0x10:
            continue  # no payload: the counter does not advance
        cc = ts[offset + 3] & 0x0F
        if pid in last and cc != (last[pid] + 1) % 16:
            errors.append((index, pid))
        last[pid] = cc
    return errors


@pytest.mark.parametrize("bframes", [0, 3])
def test_parts_concatenate_into_the_segment_and_decode_like_it(
    tmp_path: Path, bframes: int
) -> None:
    clip = make_clip(tmp_path / "in.flv", seconds=6, gop=60, bframes=bframes)
    done, data, parts = segments_and_parts(run(clip, Segmenter(part_target=0.333)))
    assert [d.seq for d in done] == [0, 1, 2]
    for segment in done:
        seq = segment.seq
        ts = b"".join(p.data for p in parts[seq])
        assert ts == data[seq] and len(ts) == segment.size and len(ts) % 188 == 0
        assert continuity_errors(ts) == []
        path = tmp_path / f"{seq}.ts"
        path.write_bytes(ts)
        video, audio = probe_streams(path)
        assert video["frames"] == 60 and video["size"] == (640, 360)
        assert isinstance(audio["frames"], int) and audio["frames"] >= 80
        assert [p.index for p in parts[seq]] == list(range(len(parts[seq])))
        assert sum(p.duration_ms for p in parts[seq]) == segment.duration_ms
        assert parts[seq][0].start_ms == segment.start_ms


def test_parts_are_about_the_target_and_independent_on_keyframes(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.flv", seconds=6, gop=60)
    done, _, parts = segments_and_parts(run(clip, Segmenter(part_target=0.333)))
    for segment in done:
        listed = parts[segment.seq]
        assert len(listed) == 6  # 2 s in parts of 10 frames at 30 fps
        assert [p.independent for p in listed] == [True] + [False] * 5
        for part in listed:
            assert part.duration_ms == pytest.approx(333, abs=2)


@pytest.mark.parametrize("target", [0.2, 0.5, 1.0])
def test_each_part_opens_with_pat_and_pmt_and_decodes_from_an_independent_one(
    tmp_path: Path, target: float
) -> None:
    clip = make_clip(tmp_path / "in.flv", seconds=4, gop=60)
    done, _, parts = segments_and_parts(run(clip, Segmenter(part_target=target)))
    frame_ms = 1000 / 30
    for segment in done:
        for part in parts[segment.seq]:
            pids = leading_pids(part.data)
            assert PAT_PID in pids and pids.index(PAT_PID) < pids.index(PMT_PID), pids
            last = part is parts[segment.seq][-1]
            assert part.duration_ms <= target * 1000 + frame_ms / 2 + 1
            if not last:
                assert part.duration_ms >= target * 1000 - frame_ms / 2 - 1
        # A player may start on the first part alone.
        first = parts[segment.seq][0]
        path = tmp_path / f"{segment.seq}.0.ts"
        path.write_bytes(first.data)
        video, _ = probe_streams(path)
        assert video["frames"] == round(first.duration_ms / frame_ms)


def test_without_a_part_target_there_are_no_parts_and_no_extra_bytes(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.flv", seconds=4, gop=60)
    plain = run(clip, Segmenter())
    assert not any(isinstance(e, PartCompleted) for e in plain)
    parted = run(clip, Segmenter(part_target=0.333))
    _, plain_data, _ = segments_and_parts(plain)
    _, parted_data, _ = segments_and_parts(parted)
    for seq, ts in plain_data.items():
        # Parts only add a PAT and a PMT per part (two TS packets) to the segment.
        assert len(parted_data[seq]) - len(ts) <= 2 * 188 * 6


def test_a_stream_without_audio_is_cut_into_parts_too(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.flv", seconds=4, gop=60, audio=False)
    done, data, parts = segments_and_parts(run(clip, Segmenter(part_target=0.5)))
    assert [len(parts[d.seq]) for d in done] == [4, 4]
    path = tmp_path / "0.ts"
    path.write_bytes(data[0])
    (video,) = probe_streams(path)
    assert video["frames"] == 60
