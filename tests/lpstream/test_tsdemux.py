"""The incremental MPEG-TS video demuxer against PyAV's demuxer, fed in arbitrary pieces."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpstream.media import CodecConfig, MediaEvent, MediaPacket
from lpstream.playback.packets import ts_access_units
from lpstream.playback.tsdemux import TsVideoDemuxer
from tests.mediatools import make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("ts") / "clip.ts"
    return make_clip(path, seconds=2.0, size="320x180", gop=30, fmt="mpegts").read_bytes()


def demux_in_pieces(data: bytes, cuts: list[int]) -> list[MediaEvent]:
    demuxer = TsVideoDemuxer()
    events: list[MediaEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        events += demuxer.feed(data[start:cut])
        start = max(start, cut)
    return events + demuxer.flush()


def test_it_finds_the_same_access_units_as_pyav(clip: bytes) -> None:
    expected = ts_access_units(clip)
    got = demux_in_pieces(clip, [])
    assert got == expected
    packets = [e for e in got if isinstance(e, MediaPacket)]
    assert len(packets) == 60 and sum(p.keyframe for p in packets) == 2
    assert sum(isinstance(e, CodecConfig) for e in got) == 2


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_split_gives_the_same_units(clip: bytes, seed: int) -> None:
    rng = random.Random(seed)
    cuts = [rng.randrange(len(clip)) for _ in range(rng.randrange(1, 200))]
    assert demux_in_pieces(clip, cuts) == demux_in_pieces(clip, [])


def test_garbage_and_truncation_cost_units_not_a_crash(clip: bytes) -> None:
    demuxer = TsVideoDemuxer()
    noise = bytes(random.Random(1).randrange(256) for _ in range(5000))
    events = demuxer.feed(noise) + demuxer.feed(clip[: len(clip) // 2]) + demuxer.flush()
    assert 0 < sum(isinstance(e, MediaPacket) for e in events) < 60
