"""Enhanced RTMP end to end: FFmpeg's own RTMP client (PyAV's FFmpeg 8) publishes HEVC into
``lpstream dev --offchain`` and the ladder plays; the source passes through with its exact
``hvc1`` CODECS string."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.hls_check import HlsRecorder, check_recording, read_master_with_ffmpeg
from tests.e2e.nodes import NodeProcess, http_get, wait_for

pytestmark = [pytest.mark.slow]

LADDER_360P = {"source": (640, 360), "360p": (640, 360), "240p": (426, 240)}


def enhanced_push(
    node: NodeProcess, stream: str, codec: str, seconds: float
) -> subprocess.Popen[bytes]:
    url = f"{node.url('rtmp')}/live/{stream}"
    cmd = [sys.executable, "-m", "tests.e2e.enhanced_push", url, codec, str(seconds), "640x360"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_ffmpeg_publishes_hevc_over_enhanced_rtmp_and_the_ladder_plays(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    seconds = 10.0
    publisher = enhanced_push(dev_node, "hevc", "hevc", seconds)
    recorder = HlsRecorder(base=dev_node.url("http"), stream="hevc", out_dir=tmp_path)
    recorder.start()
    base = dev_node.url("http")
    wait_for(lambda: http_get(f"{base}/hls/hevc/index.m3u8")[0] == 200, 20, "the master playlist")
    client_out = tmp_path / "client.ts"
    client = read_master_with_ffmpeg(f"{base}/hls/hevc/index.m3u8", client_out, timeout=60)
    _, err = publisher.communicate(timeout=seconds + 30)
    assert publisher.returncode == 0, err.decode()
    recorder.wait(timeout=30)
    _, client_err = client.communicate(timeout=60)
    assert client.returncode == 0, client_err.decode()

    master = recorder.master
    # The source is HEVC Main (profile 1, compatible with 1 and 2), its level from the SPS.
    assert 'CODECS="hvc1.1.6.L' in master, master
    assert master.count('CODECS="avc1.') == 2, master
    check_recording(
        recorder, expected_sizes=LADDER_360P, audio=True, gop_seconds=2, seconds=seconds
    )
