"""What publish authorization costs a publisher: publish-to-first-segment time with an auth
webhook against without.

Two ``lpstream dev --offchain`` nodes with the same settings, one with ``--auth-webhook-url``
naming a local webhook server (answering 200 to every publish, as a permissive operator would;
``--auth-webhook-cache=0`` so every publish asks it). Runs alternate between the two; each run
publishes a new stream with ffmpeg over RTMP and measures from ffmpeg's start to the first
source segment listed in the stream's media playlist. Prints the median of each side, their
ratio and the versions used.

    python -m benchmarks.publish_auth [--runs 5]
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import lpstream
from benchmarks.harness.nodes import (
    NodeProcess,
    http_get,
    parse_media_playlist,
    push_command,
    start_dev,
)

FLAGS = ("--segment-duration=1",)
"""The settings both nodes share."""


class AllowEverything(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def first_segment_seconds(node: NodeProcess, stream: str, timeout: float = 30.0) -> float:
    """Publishes ``stream`` and returns the seconds to its first listed source segment."""
    base = node.url("http")
    started = time.monotonic()
    publisher = subprocess.Popen(
        push_command(f"{node.url('rtmp')}/live/{stream}", seconds=8, size="640x360"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - started < timeout:
            status, body = http_get(f"{base}/hls/{stream}/source/index.m3u8", timeout=2)
            if status == 200 and parse_media_playlist(body.decode())[1]:
                return time.monotonic() - started
            time.sleep(0.02)
        raise RuntimeError(f"no segment of {stream} within {timeout:g} s")
    finally:
        publisher.terminate()
        publisher.wait(10)


def ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def main(runs: int) -> None:
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AllowEverything)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{hook.server_address[1]}/auth"
    folder = Path(tempfile.mkdtemp(prefix="publish-auth-"))
    plain = start_dev(folder / "plain", *FLAGS, name="plain")
    hooked = start_dev(
        folder / "hooked",
        *FLAGS,
        f"--auth-webhook-url={hook_url}",
        "--auth-webhook-cache=0",
        name="hooked",
    )
    times: dict[str, list[float]] = {"without": [], "with webhook": []}
    try:
        for n, (side, node) in zip(
            range(2 * runs), itertools.cycle([("without", plain), ("with webhook", hooked)])
        ):
            seconds = first_segment_seconds(node, f"bench{n}")
            times[side].append(seconds)
            print(f"run {n + 1:>2} {side:<13} {seconds * 1000:7.0f} ms", flush=True)
            time.sleep(1.0)
    finally:
        plain.stop()
        hooked.stop()
        hook.shutdown()
        hook.server_close()
    without = statistics.median(times["without"])
    with_hook = statistics.median(times["with webhook"])
    print(
        f"lpstream {lpstream.__version__}, Python {platform.python_version()}, {ffmpeg_version()}"
    )
    print(f"publish to first source segment, median of {runs} runs each (segment target 1 s):")
    print(f"  without publish authorization: {without * 1000:7.0f} ms")
    print(f"  with an auth webhook (200):    {with_hook * 1000:7.0f} ms")
    print(f"  ratio (with / without):        {with_hook / without:7.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each side (at least 5)")
    args = parser.parse_args()
    main(max(5, args.runs))
