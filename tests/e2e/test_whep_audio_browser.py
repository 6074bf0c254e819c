"""WHEP with sound in a real browser: ffmpeg publishes over RTMP a picture that flashes white and
a ``sine`` (440 Hz) that beeps at each whole second (``benchmarks.harness.av_sync``), and
headless Chromium plays it from ``/whep/{stream}`` with an ``RTCPeerConnection`` that receives
video and audio (``av_sync.CHROMIUM_VIEWER``, run on a page of the node's origin).

Checked: the answer sends Opus; the browser gets an audio track beside the video, decodes
Opus, and plays sound (``inbound-rtp`` ``audioLevel`` above 0); /api/status counts the
listener and the packets.

The A/V offset is measured two ways and both are printed:

* The browser's own account (asserted within ±40 ms): ``estimatedPlayoutTimestamp`` of the
  audio and of the video ``inbound-rtp`` (each: the sender-clock time of what is being played
  out now, through the RTCP sender reports), sampled together; video minus audio is how far
  the sound lags the picture on the sender's clock. The node sends audio and video of the same
  instant together (``tests/lpstream/test_whep_audio.py`` measures that from the decoded
  media), so this is the offset a viewer gets, up to the sound device's own delay.
* End to end, from the media: when the flash is shown (``requestVideoFrameCallback``'s
  expected display time of the first white frame) and when the beep comes out of an
  ``AudioContext`` that takes the remote track (its output clock). This is not the sound the
  video element plays: Web Audio takes the track through its own input buffer to its own
  output device, a second audio clock, and the reading drifts with them (from about 40 to
  180 ms on the same node and source, while the browser's own account stays within 40 ms).
  So it is reported, and held only to a bound that a broken sync would break (a rendition's
  sound seconds early, two timelines).

``lpstream dev --offchain`` runs with a one-rendition ladder (the two-core test machines also
transcode it).
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import pytest
import trio

from benchmarks.harness.av_sync import marked_publish_command, measure_in_chromium
from benchmarks.harness.browser import chromium_path, open_browser
from tests.e2e.nodes import NodeProcess, http_json, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.solo]

SETTLE = 10.0
"""Seconds of playing before measuring: the browser's jitter buffers and lip sync settle."""
MEASURE = 10.0
"""Seconds measured."""
EPT_LIMIT_MS = 40.0
CONTENT_LIMIT_MS = 250.0


@pytest.fixture(scope="module")
def dev_flags(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    profiles = tmp_path_factory.mktemp("whep-audio") / "profiles.json"
    profiles.write_text(
        json.dumps([{"name": "144p", "width": 256, "height": 144, "bitrate": 200_000}])
    )
    return ("--whip-host=127.0.0.1", f"--profiles={profiles}")


async def test_chromium_plays_the_sound_of_a_whep_stream_in_step_with_its_picture(
    dev_node: NodeProcess, tmp_path: Path
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = dev_node.url("http")
    command = marked_publish_command(f"{dev_node.url('rtmp')}/live/av", SETTLE + MEASURE + 30)
    publisher = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL)
    try:

        def live() -> bool:
            stream = http_json(f"{base}/api/status")["streams"].get("av") or {}
            return bool(stream.get("live") and stream.get("source"))

        await trio.to_thread.run_sync(lambda: wait_for(live, 15, "the stream to go live"))
        async with open_browser(tmp_path / "chromium.log") as browser:
            measured = await measure_in_chromium(
                browser, base, "/whep/av", settle=SETTLE, seconds=MEASURE
            )
            status = await trio.to_thread.run_sync(lambda: http_json(f"{base}/api/status"))
    finally:
        publisher.kill()
        await publisher.wait()

    # Sound: an Opus track beside the video, and it plays (a sine is never silent).
    audio_section = measured.answer[measured.answer.index("m=audio") :]
    assert "a=sendonly" in audio_section and "opus/48000/2" in audio_section
    assert measured.kinds == ("audio", "video")
    stats = measured.stats
    assert any("audio/opus" in s.get("codecs", ()) for s in stats)
    levels = [s["audio"]["audioLevel"] for s in stats if (s.get("audio") or {}).get("audioLevel")]
    assert levels and max(levels) > 0, stats[-1]
    assert stats[-1]["audio"]["totalAudioEnergy"] > 0
    whep = status["whep"]
    (session,) = whep["sessions"]
    assert session["audio"] and whep["audio_packets_sent_total"] > MEASURE * 40
    audio = status["streams"]["av"]["webrtc"]["audio"]
    assert audio["listeners"] == 1 and audio["encoder_running"]

    # A/V offset, positive when the sound comes after the picture.
    ept, content = measured.ept_offsets, measured.content_offsets
    figures = measured.summary()
    print(
        f"WHEP A/V offset in Chromium: estimatedPlayoutTimestamp video - audio median "
        f"{figures['ept_median_ms']} ms (p10 {figures['ept_p10_ms']}, p90 "
        f"{figures['ept_p90_ms']}, {len(ept)} samples); flash to beep through Web Audio median "
        f"{figures['content_median_ms']} ms ({[round(c) for c in content]}); the node held "
        f"sound and picture {session['audio_lag_ms']} ms"
    )
    assert len(ept) >= MEASURE * 5, len(ept)
    assert abs(statistics.median(ept)) <= EPT_LIMIT_MS, ept
    assert len(content) >= MEASURE - 3, content
    assert abs(statistics.median(content)) <= CONTENT_LIMIT_MS, content
