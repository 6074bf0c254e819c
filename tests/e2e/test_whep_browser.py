"""WebRTC both ways in a real browser: headless Chromium publishes its fake camera with WHIP
from ``/publish/{stream}`` and another tab plays it with WHEP from ``/watch/{stream}?whep=1``
(opened first, it waits for the stream to go live).

``lpstream dev --offchain`` runs with a one-rendition ladder (the two-core test machines also
transcode it). The viewer's ``RTCPeerConnection`` must decode frames of the camera's size;
``/api/status`` must count the session and what was sent. The screenshot goes to the test
artefacts (``$LPSTREAM_ARTIFACTS``, default ``artifacts/`` in the checkout).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from benchmarks.harness.browser import chromium_path, open_browser
from tests.e2e.nodes import NodeProcess, http_json

pytestmark = [pytest.mark.slow, pytest.mark.solo]

ARTIFACTS = Path(os.environ.get("LPSTREAM_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))


@pytest.fixture(scope="module")
def dev_flags(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    profiles = tmp_path_factory.mktemp("whep") / "profiles.json"
    profiles.write_text(
        json.dumps([{"name": "144p", "width": 256, "height": 144, "bitrate": 200_000}])
    )
    return ("--whip-host=127.0.0.1", f"--profiles={profiles}")


async def test_a_browser_publishes_with_whip_and_another_plays_it_with_whep(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = dev_node.url("http")
    async with open_browser(tmp_path / "chromium.log") as browser:
        # The viewer comes first: no such stream yet (404), the page offers again until it is.
        viewer = await browser.new_page(f"{base}/watch/webcam?whep=1")
        error = await viewer.wait_for("window.player.error", 10)
        assert "WHEP answered 404" in error, error
        camera = await browser.new_page(f"{base}/publish/webcam")
        state = await camera.wait_for(
            "window.publisher && (window.publisher.error || window.publisher.state)",
            20,
            lambda s: s == "connection connected" or str(s).startswith("error"),
        )
        assert state == "connection connected", state

        await viewer.command("Page.bringToFront")  # a background tab paints no frames
        await viewer.wait_for("window.player.state", 20, lambda s: s == "connection connected")
        # Frames are decoded and shown: the video element's frame callbacks and the
        # connection's own count both go up, at the camera's size.
        await viewer.wait_for("window.player.frames", 20, lambda n: n > 60)
        decoded = await viewer.wait_for("window.player.framesDecoded", 10, lambda n: n > 30)
        size = await viewer.evaluate("[video.videoWidth, video.videoHeight]")
        assert size[0] > 0 and size[1] > 0, size
        codec = await viewer.evaluate(
            """(async () => {
                let mime = null;
                (await window.player.pc.getStats()).forEach(s => {
                    if (s.type === "codec" && s.mimeType.startsWith("video/")) mime = s.mimeType;
                });
                return mime;
            })()"""
        )
        assert codec == "video/H264", codec
        await trio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        await viewer.screenshot(ARTIFACTS / "whep-watch.png")
        assert (await trio.Path(ARTIFACTS / "whep-watch.png").stat()).st_size > 10_000

        status = await trio.to_thread.run_sync(lambda: http_json(f"{base}/api/status"))
        whep = status["whep"]
        assert whep["active_sessions"] == 1 and whep["frames_sent_total"] >= decoded, whep
        assert status["streams"]["webcam"]["webrtc"]["renditions"]["source"]["subscribers"] == 1

        # The publisher leaves: the stream ends, so does its WHEP session, and the page goes
        # back to offering (and is told 404) until the stream is live again.
        attempts = await viewer.evaluate("window.player.attempts")
        await camera.evaluate("window.publisher.pc.close()")
        error = await viewer.wait_for(
            f"window.player.attempts > {attempts} && window.player.error", 10
        )
        assert "WHEP answered 404" in error, error
        status = await trio.to_thread.run_sync(lambda: http_json(f"{base}/api/status"))
        assert status["whep"]["active_sessions"] == 0, status["whep"]
