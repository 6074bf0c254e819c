"""Time from a segment's last input byte at the gateway to all its renditions in the playlists.

Runs ``lpstream dev --offchain`` (gateway, orchestrator and worker in one process), pushes the
issue's 720p30 test stream with ffmpeg for ``--seconds``, then reads the gateway's own
measurement from ``/api/status`` (``publish_latency_ms``: segment closed by the segmenter ->
every rendition listed). The peer is store-and-forward transcoding: the ffmpeg command line
transcoding one complete 2 s segment into the same two renditions, which is what a node that
waits for the whole segment before starting would add after the last byte.

    python benchmarks/segment_latency.py [--seconds 30] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PUSH = (
    "ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 "
    "-f lavfi -i sine -t {seconds} -c:v libx264 -g 60 -c:a aac -f flv {url}"
)


def start_dev() -> tuple[subprocess.Popen[bytes], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lpstream", "dev", "--offchain", "--rtmp-addr=127.0.0.1:0",
         "--http-addr=127.0.0.1:0", "--service-addr=127.0.0.1:0", "--log-level=warning"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    rtmp = http = ""
    for raw in proc.stdout:
        line = raw.decode()
        if m := re.search(r"rtmp://([^/\s]+)", line):
            rtmp = m.group(1)
        if (m := re.search(r"http://([^/\s]+)", line)) and not http:
            http = m.group(1)
        if "ready" in line:
            break
    return proc, rtmp, http


def store_and_forward_seconds(runs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        seg = Path(tmp) / "seg.ts"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine", "-t", "2",
             "-c:v", "libx264", "-g", "60", "-c:a", "aac", "-f", "mpegts", str(seg)],
            check=True,
        )  # fmt: skip
        command = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(seg),
            "-filter_complex", "[0:v]split=2[a][b];[a]scale=640:360[v0];[b]scale=426:240[v1]",
            "-map", "[v0]", "-map", "0:a", "-c:v", "libx264", "-preset", "veryfast",
            "-b:v", "400k", "-c:a", "copy", "-f", "mpegts", f"{tmp}/360p.ts",
            "-map", "[v1]", "-map", "0:a", "-c:v", "libx264", "-preset", "veryfast",
            "-b:v", "250k", "-c:a", "copy", "-f", "mpegts", f"{tmp}/240p.ts",
        ]  # fmt: skip
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(command, check=True)
            times.append(time.perf_counter() - started)
        print("peer command:", " ".join(command))
        return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    proc, rtmp, http = start_dev()
    try:
        push = PUSH.format(seconds=args.seconds, url=f"rtmp://{rtmp}/live/bench")
        print("publisher:", push)
        subprocess.run(push.split(), check=True)
        time.sleep(3)
        with urllib.request.urlopen(f"http://{http}/api/status") as response:
            status = json.load(response)
    finally:
        proc.terminate()
        proc.wait()
    latency = status["streams"]["bench"]["publish_latency_ms"]
    peer = store_and_forward_seconds(args.runs) * 1000
    segment_ms = 2000.0
    print(f"segments measured:            {latency['count']}")
    print(f"lpstream median (p95):        {latency['median']:.0f} ms ({latency['p95']:.0f} ms)")
    print(f"target 0.5 x segment:         {0.5 * segment_ms:.0f} ms")
    print(f"store-and-forward ffmpeg:     {peer:.0f} ms (median of {args.runs})")
    print(f"ratio lpstream / peer:        {latency['median'] / peer:.2f}")
    print(f"ratio lpstream / target:      {latency['median'] / (0.5 * segment_ms):.2f}")


if __name__ == "__main__":
    main()
