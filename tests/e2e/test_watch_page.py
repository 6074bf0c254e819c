"""The watch page in a real browser: headless Chromium plays a live stream with hls.js.

``lpstream dev --offchain`` runs, ffmpeg pushes RTMP, Chromium opens ``/watch/{stream}`` and
the video must advance with real pictures. A screenshot of the page goes to the test
artefacts (``$LPSTREAM_ARTIFACTS``, default ``artifacts/`` in the checkout).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.browser import chromium_path, open_browser
from tests.e2e.nodes import NodeProcess, http_get, push_command, wait_for

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("LPSTREAM_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))


@pytest.fixture
def dev_node(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(
        [
            "dev",
            "--offchain",
            "--rtmp-addr=127.0.0.1:0",
            "--http-addr=127.0.0.1:0",
            "--service-addr=127.0.0.1:0",
        ],
        name="dev",
        log_dir=tmp_path,
    )
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()


async def test_the_watch_page_plays_the_stream_with_hlsjs(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = dev_node.url("http")
    status, script = http_get(f"{base}/static/hls.min.js")
    assert status == 200 and b"Hls" in script[:200_000]

    publisher = await trio.lowlevel.open_process(
        push_command(f"{dev_node.url('rtmp')}/live/cam", seconds=25, size="640x360"),
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: http_get(f"{base}/hls/cam/index.m3u8")[0] == 200, 20, "the stream")
        async with open_browser(tmp_path / "chromium.log") as browser:
            page = await browser.new_page(f"{base}/watch/cam")
            engine = await page.wait_for("window.player && window.player.engine", 15)
            assert str(engine).startswith("hls.js ")
            # The video advances for real: time moves and frames are decoded.
            clock = "document.getElementById('video').currentTime"
            start: float = await page.wait_for(clock, 30, lambda t: t > 0.5)
            await page.wait_for(clock, 15, lambda t: t > start + 2)
            width = await page.evaluate("document.getElementById('video').videoWidth")
            frames = await page.evaluate(
                "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"
            )
            assert width in (426, 640) and frames > 30, (width, frames)
            await trio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "watch-page.png"
            await page.screenshot(shot)
            assert (await trio.Path(shot).stat()).st_size > 10_000
    finally:
        publisher.kill()
        await publisher.wait()
