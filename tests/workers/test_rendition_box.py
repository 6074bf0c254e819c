"""The transcoder sizes renditions by ``lpstream.media.scaled_size``: an odd box that rounding
to even would overflow still gets a rendition inside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest

from lpstream.media import VideoProfile, scaled_size
from tests.mediatools import make_clip
from workers import transcode_file

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")


def test_a_720p_source_in_a_643_wide_box_is_encoded_at_642x362(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.ts", seconds=0.2, size="1280x720", audio=False, fmt="mpegts")
    profile = VideoProfile(name="odd", width=643, height=1000, bitrate=300_000, preset="ultrafast")
    (result,) = transcode_file(source, tmp_path / "out", [profile], encoder="x264")
    assert (result.width, result.height) == scaled_size(1280, 720, profile) == (642, 362)
    with av.open(str(tmp_path / "out" / "odd.ts")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (642, 362)
