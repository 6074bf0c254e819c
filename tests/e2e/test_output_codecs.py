"""HEVC and AV1 renditions end to end: ``lpstream dev --offchain`` with a ladder of H.264, HEVC
and AV1 profiles, ffmpeg publishing H.264 over RTMP. The HEVC and AV1 renditions are HLS with
fragmented-MP4 segments behind EXT-X-MAP, named by their exact CODECS; ffprobe reads their
segments, ffmpeg as an HLS client reads the whole master, hls.js in Chromium plays the AV1 one.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from benchmarks.harness.browser import chromium_path, open_browser
from tests.e2e.hls_check import HlsRecorder, check_recording
from tests.e2e.nodes import NodeProcess, http_get, push_command, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.solo]
"""Alone: its HEVC and AV1 encoding would starve a live test beside it on two cores."""

PROFILES = [
    {"name": "360p", "width": 640, "height": 360, "bitrate": 400_000},
    {"name": "hevc", "width": 426, "height": 240, "bitrate": 200_000, "codec": "hevc"},
    {"name": "av1", "width": 426, "height": 240, "bitrate": 150_000, "codec": "av1"},
]
SIZES = {"source": (640, 360), "360p": (640, 360), "hevc": (426, 240), "av1": (426, 240)}


@pytest.fixture(scope="module")
def profiles_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("profiles") / "profiles.json"
    path.write_text(json.dumps(PROFILES))
    yield path


@pytest.fixture(scope="module")
def dev_flags(profiles_file: Path) -> tuple[str, ...]:
    return ("--profiles", str(profiles_file))


def ffprobe_codec(path: Path) -> str:
    """The video codec ffprobe (Debian's FFmpeg 5.1, another build than ours) reads."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,codec_tag_string", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_hevc_and_av1_renditions_are_fmp4_hls_that_ffmpeg_reads(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    seconds = 10.0
    base = dev_node.url("http")
    publisher = subprocess.Popen(
        push_command(f"{dev_node.url('rtmp')}/live/codecs", seconds=seconds, size="640x360"),
        stderr=subprocess.PIPE,
    )
    recorder = HlsRecorder(base=base, stream="codecs", out_dir=tmp_path)
    recorder.start()
    master_url = f"{base}/hls/codecs/index.m3u8"
    wait_for(lambda: http_get(master_url)[0] == 200, 30, "the master playlist")
    # ffmpeg as an HLS client takes every variant of the master, MPEG-TS and fMP4 alike.
    everything = tmp_path / "everything.mkv"
    client = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-live_start_index", "0",
         "-i", master_url, "-map", "0:v", "-c", "copy", "-f", "matroska", str(everything)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = publisher.communicate(timeout=seconds + 30)
    assert publisher.returncode == 0, err.decode()
    recorder.wait(timeout=60)
    _, client_err = client.communicate(timeout=60)
    assert client.returncode == 0, client_err.decode()

    master = recorder.master
    assert 'CODECS="hvc1.1.6.L' in master and 'CODECS="av01.0.' in master, master
    assert master.count('CODECS="avc1.') == 2, master  # the source and 360p
    for name in ("hevc", "av1"):
        playlist = http_get(f"{base}/hls/codecs/{name}/index.m3u8")[1].decode()
        assert '#EXT-X-MAP:URI="init0.mp4"' in playlist and ".m4s" in playlist, playlist
    check_recording(recorder, expected_sizes=SIZES, audio=True, gop_seconds=2, seconds=seconds)
    seq = recorder.seqs("hevc")[1]
    assert ffprobe_codec(recorder.segments[("hevc", seq)]) == "hevc,hvc1"
    assert ffprobe_codec(recorder.segments[("av1", seq)]) == "av1,av01"
    listed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
         str(everything)],
        capture_output=True, check=True, text=True,
    ).stdout.split()  # fmt: skip
    assert sorted(set(listed)) == ["av1", "h264", "hevc"], listed


async def test_hlsjs_in_chromium_plays_the_av1_rendition(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = dev_node.url("http")
    publisher = await trio.lowlevel.open_process(
        push_command(f"{dev_node.url('rtmp')}/live/play", seconds=30, size="640x360"),
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: http_get(f"{base}/hls/play/index.m3u8")[0] == 200, 30, "the stream")
        async with open_browser(tmp_path / "chromium.log") as browser:
            page = await browser.new_page(f"{base}/watch/play")
            # hls.js keeps the levels this browser decodes (headless Chromium: no HEVC).
            await page.wait_for(
                "window.player && window.player.hls.levels.some("
                "l => (l.videoCodec || '').startsWith('av01.'))",
                20,
            )
            codecs = await page.evaluate("window.player.hls.levels.map(l => l.videoCodec)")
            av1 = next(i for i, codec in enumerate(codecs) if codec.startswith("av01."))
            supported = await page.evaluate(
                f"MediaSource.isTypeSupported('video/mp4; codecs=\"{codecs[av1]}\"')"
            )
            assert supported, codecs
            await page.evaluate(f"window.player.hls.currentLevel = {av1}")
            level = (
                "(window.player.hls.levels[window.player.hls.currentLevel] || {}).videoCodec || ''"
            )
            await page.wait_for(level, 20, lambda codec: str(codec).startswith("av01."))
            # The AV1 pictures play: the video is the rendition's size and frames advance.
            width = "document.getElementById('video').videoWidth"
            await page.wait_for(width, 20, lambda w: w == 426)
            quality = "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"
            start: int = await page.evaluate(quality)
            await page.wait_for(quality, 20, lambda frames: frames > start + 30)
            errors = await page.evaluate("window.player.errors")
            assert not [e for e in errors if "Error" in e and "buffer" not in e.lower()], errors
    finally:
        publisher.kill()
        await publisher.wait()
