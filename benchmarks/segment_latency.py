"""Time from a segment's last input byte at the gateway to all its renditions in the playlists.

Runs ``lpstream dev --offchain`` (gateway, orchestrator and worker in one process), pushes the
issue's 720p30 test stream with ffmpeg for ``--seconds``, then reads the gateway's own
measurement from ``/api/status`` (``publish_latency_ms``: segment closed by the segmenter ->
every rendition listed). The peer is store-and-forward transcoding: the ffmpeg command line
transcoding one complete 2 s segment of the same stream into the same ladder with the same
encoder and settings (``benchmarks.harness.ladder_command``), which is what a node that waits
for the whole segment before starting would add after the last byte. The node is running
before the stream starts, so start-up counts on neither side: the peer's figure is ffmpeg's own
``-benchmark`` ``rtime`` (its transcode loop; it leaves out process start-up and opening the
input).

    python -m benchmarks.segment_latency [--seconds 30] [--runs 5] [--encoder auto|x264|nvenc]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from benchmarks.harness.nodes import http_json, start_dev
from benchmarks.harness.toolchain import (
    ENCODER_CHOICES,
    common_encoder,
    encoder_flag,
    ladder_command,
    print_toolchains,
)
from lpstream.media import DEFAULT_PROFILES

PUSH = (
    "ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 "
    "-f lavfi -i sine -t {seconds} -c:v libx264 -g 60 -c:a aac -f flv {url}"
)


def store_and_forward_seconds(runs: int, encoder: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        seg = Path(tmp) / "seg.ts"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine", "-t", "2",
             "-c:v", "libx264", "-g", "60", "-c:a", "aac", "-f", "mpegts", str(seg)],
            check=True,
        )  # fmt: skip
        outputs = [
            ["-mpegts_copyts", "1", "-f", "mpegts", f"{tmp}/{p.name}.ts"] for p in DEFAULT_PROFILES
        ]
        command = ladder_command(
            seg, (1280, 720), Fraction(30), Fraction(1, 90_000), DEFAULT_PROFILES, outputs,
            encoder, head=["-nostats", "-benchmark"], loglevel="info",
        )  # fmt: skip
        times = []
        for _ in range(runs):
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            found = re.search(r"rtime=([0-9.]+)s", done.stderr)
            if found is None:
                raise RuntimeError(f"no -benchmark line in ffmpeg's output:\n{done.stderr}")
            times.append(float(found.group(1)))
        print("peer command:", " ".join(command))
        return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--encoder", choices=ENCODER_CHOICES, default="auto")
    args = parser.parse_args()
    encoder = common_encoder(args.encoder)
    print_toolchains(encoder)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")

    with tempfile.TemporaryDirectory() as logs:
        node = start_dev(Path(logs), f"--encoder={encoder_flag(encoder)}", "--log-level=warning")
        try:
            push = PUSH.format(seconds=args.seconds, url=f"{node.url('rtmp')}/live/bench")
            print("publisher:", push)
            subprocess.run(push.split(), check=True)
            time.sleep(3)
            status = http_json(f"{node.url('http')}/api/status")
        finally:
            node.stop()
    latency = status["streams"]["bench"]["publish_latency_ms"]
    peer = store_and_forward_seconds(args.runs, encoder) * 1000
    segment_ms = 2000.0
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"segments measured:            {latency['count']}")
    print(f"lpstream median (p95):        {latency['median']:.0f} ms ({latency['p95']:.0f} ms)")
    print(f"target 0.5 x segment:         {0.5 * segment_ms:.0f} ms")
    print(f"store-and-forward ffmpeg:     {peer:.0f} ms (median of {args.runs}, -benchmark rtime)")
    print(f"ratio lpstream / peer:        {latency['median'] / peer:.2f}")
    print(f"lpstream / target:            {latency['median'] / (0.5 * segment_ms):.2f}")


if __name__ == "__main__":
    main()
