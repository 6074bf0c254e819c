"""WHEP lip sync: how far a WebRTC viewer's sound is from its picture, in headless Chromium.

How this works:

* One ``lpstream dev --offchain`` with a one-rendition ladder (``--rendition``, 144p by
  default); ffmpeg publishes over RTMP a picture that flashes white and a 440 Hz ``sine``
  that beeps at each whole second, libx264 (``zerolatency``, 1 s GOPs) and AAC, live
  (``benchmarks.harness.av_sync.marked_publish_command``).
* For each path (the source, ``/whep/{stream}``, and the rendition,
  ``/whep/{stream}/{rendition}``) a fresh Chromium plays it with an ``RTCPeerConnection``
  receiving video and audio, lets it settle ``--settle`` seconds, then measures for
  ``--seconds`` (``av_sync.measure_in_chromium``):

  - the browser's account: video minus audio ``estimatedPlayoutTimestamp`` of the
    ``inbound-rtp`` stats, sampled together every 100 ms: how far the sound played out lags
    the picture, on the sender's clock (RTCP sender reports). The node sends the sound and
    the picture of one instant together (``tests/lpstream/test_whep_audio.py`` checks that
    on the decoded media, on the sender's clock), so this is the offset a viewer gets, up to
    the sound device's own delay;
  - from the media: beep output time (an ``AudioContext`` taking the remote track) minus the
    flash's display time (``requestVideoFrameCallback``). Web Audio runs the track through a
    buffer to a second audio device, so this reading includes a latency the video element's
    sound does not have, and it drifts between runs; printed for what it is.

* Also printed per path: the node's figures for the session (how long it held sound and
  picture so that they leave together, ``audio_lag_ms``; frames' send delay), and the
  browser's jitter buffer delays per track.

Peer: none is measured. A peer would be another server that takes RTMP (AAC) and plays it
over WebRTC with Opus (MediaMTX, Janus, a WHEP-capable FFmpeg); none is installed here, and
Debian's FFmpeg 5.1 has no WHIP/WHEP. The figures are absolute, against the issue's target
(±40 ms); ITU-R BT.1359 puts the threshold of detectability at 45 ms of sound ahead and
125 ms of sound behind the picture.

    .venv/bin/python -m benchmarks.whep_av_sync [--seconds 20] [--settle 10]
        [--rendition 144p] [--json]

(Run it as a module from the checkout.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import trio

from benchmarks.harness.av_sync import marked_publish_command, measure_in_chromium
from benchmarks.harness.browser import open_browser
from benchmarks.harness.nodes import http_json, start_dev, wait_for

STREAM = "sync"


def _jitter_buffer_ms(stats: list[dict[str, Any]], kind: str) -> float | None:
    """Mean jitter buffer delay (ms) per emitted sample or frame over the measured stretch."""
    if len(stats) < 2:
        return None
    first, last = stats[0].get(kind) or {}, stats[-1].get(kind) or {}
    try:
        emitted = last["jitterBufferEmittedCount"] - first["jitterBufferEmittedCount"]
        delay = last["jitterBufferDelay"] - first["jitterBufferDelay"]
    except (KeyError, TypeError):
        return None
    return round(delay / emitted * 1000, 1) if emitted else None


async def measure(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    profiles = log_dir / "profiles.json"
    profiles.write_text(
        json.dumps([{"name": args.rendition, "width": 256, "height": 144, "bitrate": 200_000}])
    )
    node = start_dev(log_dir, "--whip-host=127.0.0.1", f"--profiles={profiles}")
    results: dict[str, Any] = {}
    try:
        base = node.url("http")
        paths = {"source": f"/whep/{STREAM}", args.rendition: f"/whep/{STREAM}/{args.rendition}"}
        seconds = (args.settle + args.seconds + 15) * len(paths) + 30
        command = marked_publish_command(f"{node.url('rtmp')}/live/{STREAM}", seconds)
        publisher = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL)
        try:

            def ready() -> bool:
                stream = http_json(f"{base}/api/status")["streams"].get(STREAM) or {}
                return args.rendition in (stream.get("renditions") or ())

            await trio.to_thread.run_sync(lambda: wait_for(ready, 30, "the rendition"))
            for name, path in paths.items():
                async with open_browser(log_dir / f"chromium-{name}.log") as browser:
                    measured = await measure_in_chromium(
                        browser, base, path, settle=args.settle, seconds=args.seconds
                    )
                    status = await trio.to_thread.run_sync(lambda: http_json(f"{base}/api/status"))
                sessions = [
                    s for s in status["whep"]["sessions"] if s["rendition"] == path.split("/")[-1]
                ] or status["whep"]["sessions"]
                session = sessions[-1] if sessions else {}
                results[name] = {
                    **measured.summary(),
                    "kinds": list(measured.kinds),
                    "node_audio_lag_ms": session.get("audio_lag_ms"),
                    "node_send_delay_median_ms": (session.get("send_delay") or {}).get("median_ms"),
                    "browser_audio_jitter_buffer_ms": _jitter_buffer_ms(measured.stats, "audio"),
                    "browser_video_jitter_buffer_ms": _jitter_buffer_ms(measured.stats, "video"),
                }
        finally:
            publisher.kill()
            await publisher.wait()
    finally:
        node.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured per path")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds played first")
    parser.add_argument("--rendition", default="144p", help="the ladder's one rendition")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="whep-av-sync-") as folder:
        results = trio.run(measure, args, Path(folder))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("WHEP lip sync in headless Chromium (positive: the sound lags the picture)")
    print("peer: none (no other RTMP-to-WebRTC server here); target |offset| <= 40 ms")
    for name, figures in results.items():
        print(
            f"  {name}: browser (estimatedPlayoutTimestamp, video - audio) median "
            f"{figures['ept_median_ms']} ms, p10 {figures['ept_p10_ms']}, p90 "
            f"{figures['ept_p90_ms']} ({figures['ept_samples']} samples)"
        )
        print(
            f"    flash to beep through Web Audio: median {figures['content_median_ms']} ms "
            f"(min {figures['content_min_ms']}, max {figures['content_max_ms']}, "
            f"{figures['content_pairs']} pairs)"
        )
        print(
            f"    node: sound and picture held {figures['node_audio_lag_ms']} ms; frames sent "
            f"{figures['node_send_delay_median_ms']} ms after arrival (median); browser "
            f"jitter buffers: audio {figures['browser_audio_jitter_buffer_ms']} ms, video "
            f"{figures['browser_video_jitter_buffer_ms']} ms"
        )


if __name__ == "__main__":
    main()
