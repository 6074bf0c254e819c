"""Media the restream tests forward: a test pattern cut into MPEG-TS segments by ffmpeg."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from lpstream.restream import ForwardSegment
from tests.mediatools import ffmpeg

SEGMENT_SECONDS = 2.0
"""Each segment's length: the GOP (60 frames at 30 fps)."""


@attrs.frozen(kw_only=True)
class Clip:
    """One publisher's segments, as the gateway would hand them to a forward."""

    segments: tuple[ForwardSegment, ...]
    width: int
    height: int

    @property
    def seconds(self) -> float:
        return SEGMENT_SECONDS * len(self.segments)


def _cut(
    directory: Path, *, seconds: int, size: str, first_seq: int = 0
) -> tuple[ForwardSegment, ...]:
    """A testsrc2 clip (H.264, 2 s GOP, B-frames, AAC) cut into 2 s MPEG-TS segments."""
    directory.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-keyint_min", "60",
        "-sc_threshold", "0", "-bf", "2", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "segment", "-segment_time", str(SEGMENT_SECONDS), "-segment_format", "mpegts",
        str(directory / "seg%03d.ts"),
    )  # fmt: skip
    paths = sorted(directory.glob("seg*.ts"))
    assert len(paths) == round(seconds / SEGMENT_SECONDS)
    return tuple(
        ForwardSegment(seq=first_seq + i, data=path.read_bytes()) for i, path in enumerate(paths)
    )


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """12 s of 320x240 in six segments."""
    return Clip(
        segments=_cut(tmp_path_factory.mktemp("clip"), seconds=12, size="320x240"),
        width=320,
        height=240,
    )


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """4 s of 256x144 in two segments: a second publisher with other parameters."""
    return Clip(
        segments=_cut(tmp_path_factory.mktemp("other"), seconds=4, size="256x144", first_seq=100),
        width=256,
        height=144,
    )
