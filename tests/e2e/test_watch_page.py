"""The browser pages for real: headless Chromium watches with hls.js and publishes with WHIP.

``lpstream dev --offchain`` runs. In one test ffmpeg pushes RTMP and Chromium opens
``/watch/{stream}``; in the other Chromium publishes its fake camera from ``/publish/{stream}``
(WHIP, H.264 passed through) and the ladder made from it is checked over HTTP and played in a
second tab. The video must advance with real pictures. Screenshots go to the test artefacts
(``$LPSTREAM_ARTIFACTS``, default ``artifacts/`` in the checkout).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from benchmarks.harness.browser import chromium_path, open_browser
from tests.e2e.nodes import NodeProcess, http_get, push_command, wait_for

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("LPSTREAM_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))


@pytest.fixture(scope="module")
def dev_flags() -> tuple[str, ...]:
    return ("--whip-host=127.0.0.1",)


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


async def test_a_browser_publishes_with_whip_and_the_ladder_plays(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = dev_node.url("http")
    async with open_browser(tmp_path / "chromium.log") as browser:
        camera = await browser.new_page(f"{base}/publish/webcam")
        state = await camera.wait_for(
            "window.publisher && (window.publisher.error || window.publisher.state)",
            20,
            lambda s: s in ("connection connected",) or str(s).startswith("error"),
        )
        assert state == "connection connected", state
        # The fake camera's H.264 went through the segmenter and the ladder like RTMP.
        master = await trio.to_thread.run_sync(
            lambda: wait_for(
                lambda: (r := http_get(f"{base}/hls/webcam/index.m3u8"))[0] == 200 and r[1],
                30,
                "the master playlist of the WHIP stream",
            )
        )
        text = master.decode()
        # Chromium picks the camera size it sends (640x360 here), the ladder follows it.
        assert 'NAME="source"' in text and 'NAME="240p"' in text, text
        assert "RESOLUTION=426x240" in text, text
        assert "mp4a.40.2" in text  # Opus became AAC
        viewer = await browser.new_page(f"{base}/watch/webcam")
        clock = "document.getElementById('video').currentTime"
        start: float = await viewer.wait_for(clock, 40, lambda t: t > 0.5)
        await viewer.wait_for(clock, 20, lambda t: t > start + 2)
        await trio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        await camera.screenshot(ARTIFACTS / "publish-page.png")
        await viewer.screenshot(ARTIFACTS / "watch-whip-stream.png")
        status = await trio.to_thread.run_sync(lambda: http_get(f"{base}/api/status"))
        assert b'"webcam"' in status[1]


# A WebRTC publisher as most stacks are: camera and microphone added, no codec preference (so
# Chromium offers VP8 first), non-trickle WHIP.
_PUBLISH_WITHOUT_PREFERENCES = """
(async () => {
  const media = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const pc = new RTCPeerConnection();
  window.plain = {pc: pc, state: "new"};
  pc.onconnectionstatechange = () => { window.plain.state = pc.connectionState; };
  for (const track of media.getTracks()) pc.addTransceiver(track, {direction: "sendonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(resolve => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
  });
  const reply = await fetch("/whip/plain", {
    method: "POST", headers: {"Content-Type": "application/sdp"}, body: pc.localDescription.sdp});
  const answer = await reply.text();
  if (reply.status !== 201) return {status: reply.status, answer: answer};
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  return {status: reply.status, offer: pc.localDescription.sdp, answer: answer};
})()
"""


def _rtpmap_codecs(sdp: str, kind: str) -> list[str]:
    section = sdp[sdp.index(f"m={kind}") :]
    following = section.find("\nm=", 1)
    section = section if following < 0 else section[:following]
    return [
        line.split()[1].split("/")[0]
        for line in section.splitlines()
        if line.startswith("a=rtpmap:")
    ]


async def test_a_browser_without_codec_preferences_publishes_h264(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = dev_node.url("http")
    async with open_browser(tmp_path / "chromium.log") as browser:
        page = await browser.new_page(f"{base}/watch/plain")
        result = await page.evaluate(_PUBLISH_WITHOUT_PREFERENCES)
        assert result["status"] == 201, result
        offered = _rtpmap_codecs(result["offer"], "video")
        assert offered.index("VP8") < offered.index("H264"), offered  # the usual order
        assert set(_rtpmap_codecs(result["answer"], "video")) <= {"H264", "rtx"}
        assert _rtpmap_codecs(result["answer"], "audio") == ["opus"]
        await page.wait_for("window.plain.state", 20, lambda s: s == "connected")
        master = await trio.to_thread.run_sync(
            lambda: wait_for(
                lambda: (r := http_get(f"{base}/hls/plain/index.m3u8"))[0] == 200 and r[1],
                40,
                "the ladder of a publisher that offered VP8 first",
            )
        )
        assert 'NAME="240p"' in master.decode()


def _publish_only(codec: str, stream: str) -> str:
    """The same publisher limited to one codec (setCodecPreferences), as a stack without
    H.264 offers."""
    return _PUBLISH_WITHOUT_PREFERENCES.replace(
        'for (const track of media.getTracks()) pc.addTransceiver(track, {direction: "sendonly"});',
        f"""for (const track of media.getTracks()) {{
    const transceiver = pc.addTransceiver(track, {{direction: "sendonly"}});
    if (track.kind === "video") transceiver.setCodecPreferences(
      RTCRtpSender.getCapabilities("video").codecs.filter(c => c.mimeType === "video/{codec}"));
  }}""",
    ).replace("/whip/plain", f"/whip/{stream}")


@pytest.mark.parametrize("codec", ["VP8", "AV1"])
async def test_a_browser_offering_only_vp8_or_av1_publishes_and_the_ladder_plays(
    dev_node: NodeProcess, tmp_path: Path, codec: str
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = dev_node.url("http")
    stream = f"{codec.lower()}cam"
    async with open_browser(tmp_path / "chromium.log") as browser:
        page = await browser.new_page(f"{base}/watch/plain")
        result = await page.evaluate(_publish_only(codec, stream))
        assert result["status"] == 201, result
        assert set(_rtpmap_codecs(result["offer"], "video")) <= {codec, "rtx"}
        assert set(_rtpmap_codecs(result["answer"], "video")) - {"rtx"} == {codec}
        await page.wait_for("window.plain.state", 20, lambda s: s == "connected")
        master = await trio.to_thread.run_sync(
            lambda: wait_for(
                lambda: (r := http_get(f"{base}/hls/{stream}/index.m3u8"))[0] == 200 and r[1],
                40,
                f"the ladder of a {codec} publisher",
            )
        )
        text = master.decode()
        assert 'NAME="240p"' in text, text
        source = http_get(f"{base}/hls/{stream}/source/index.m3u8")
        if codec == "VP8":  # HLS cannot carry VP8: the master lists the H.264 ladder alone
            assert 'NAME="source"' not in text and source[0] == 404, text
        else:  # AV1 passes through as the source rendition, in fragmented MP4
            assert 'CODECS="av01.0.' in text and 'NAME="source"' in text, text
            assert '#EXT-X-MAP:URI="init' in source[1].decode()
        viewer = await browser.new_page(f"{base}/watch/{stream}")
        clock = "document.getElementById('video').currentTime"
        start: float = await viewer.wait_for(clock, 40, lambda t: t > 0.5)
        await viewer.wait_for(clock, 20, lambda t: t > start + 2)
