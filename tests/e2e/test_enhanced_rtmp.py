"""Enhanced RTMP end to end: FFmpeg's own RTMP client (PyAV's FFmpeg 8) publishes HEVC, AV1
and VP9 into ``lpstream dev --offchain`` and the ladder plays; the source passes through with
its exact CODECS string (HEVC in MPEG-TS, AV1 and VP9 in fragmented MP4 with EXT-X-MAP)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.hls_check import HlsRecorder, check_recording, read_master_with_ffmpeg
from tests.e2e.nodes import NodeProcess, http_get, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.solo]
"""Alone: its HEVC and AV1 encoding would starve a live test beside it on two cores."""

LADDER_360P = {"source": (640, 360), "360p": (640, 360), "240p": (426, 240)}


def enhanced_push(
    node: NodeProcess, stream: str, codec: str, seconds: float
) -> subprocess.Popen[bytes]:
    url = f"{node.url('rtmp')}/live/{stream}"
    cmd = [sys.executable, "-m", "tests.e2e.enhanced_push", url, codec, str(seconds), "640x360"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


SOURCE_CODECS = {"hevc": 'CODECS="hvc1.1.6.L', "av1": 'CODECS="av01.0.', "vp9": 'CODECS="vp09.00.'}
"""How the master names each source: HEVC Main (profile 1, compatible with 1 and 2), AV1 Main
and VP9 profile 0, their levels from the publisher's records."""


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9"])
def test_ffmpeg_publishes_over_enhanced_rtmp_and_the_ladder_plays(
    dev_node: NodeProcess, tmp_path: Path, codec: str
) -> None:
    seconds = 10.0
    publisher = enhanced_push(dev_node, codec, codec, seconds)
    recorder = HlsRecorder(base=dev_node.url("http"), stream=codec, out_dir=tmp_path)
    recorder.start()
    base = dev_node.url("http")
    master_url = f"{base}/hls/{codec}/index.m3u8"
    wait_for(lambda: http_get(master_url)[0] == 200, 20, "the master playlist")
    client_out = tmp_path / "client.ts"
    client = read_master_with_ffmpeg(master_url, client_out, timeout=60)
    # LL-HLS parts of the source as it comes: MPEG-TS for HEVC, fMP4 fragments with its
    # init section (EXT-X-MAP) for AV1 and VP9.
    listed: list[re.Match[str]] = []

    def a_part_is_listed() -> bool:
        playlist = http_get(f"{base}/hls/{codec}/source/index.m3u8")[1].decode()
        found = re.search(
            r'#EXT-X-PART:DURATION=[0-9.]+,URI="([0-9]+\.[0-9]+\.(ts|m4s))"', playlist
        )
        listed[:] = [found] if found else []
        return found is not None

    wait_for(a_part_is_listed, 10, "an LL-HLS part of the source")
    part, playlist = listed[0], listed[0].string
    assert part.group(2) == ("ts" if codec == "hevc" else "m4s"), playlist
    assert ('#EXT-X-MAP:URI="init' in playlist) == (codec != "hevc"), playlist
    _, err = publisher.communicate(timeout=seconds + 30)
    assert publisher.returncode == 0, err.decode()
    recorder.wait(timeout=30)
    _, client_err = client.communicate(timeout=60)
    assert client.returncode == 0, client_err.decode()

    master = recorder.master
    assert SOURCE_CODECS[codec] in master, master
    assert master.count('CODECS="avc1.') == 2, master
    check_recording(
        recorder, expected_sizes=LADDER_360P, audio=True, gop_seconds=2, seconds=seconds
    )
