"""Soak: does the node's memory stay flat over a long run with every kind of viewer?

Runs ``lpstream dev --offchain`` with two 1280x720 30 fps streams pushed by ffmpeg, an LL-HLS
viewer on the first (blocking playlist reloads with ``_HLS_msn``/``_HLS_part``, every part
fetched, as hls.js does), a WebRTC viewer on the second (headless Chromium on the node's own
``/watch/{stream}?whep=1&rendition=240p`` page: the 240p rendition, so that the browser's
decoding leaves the node its two cores) and a live AI ``noop`` session on the first (output in
a 320x320 box). The publishers use x264's ultrafast preset for the same reason. The node's RSS is
sampled every ``--interval`` seconds; the report gives the peak and the slope of a least-squares
line through the samples after ``--warmup`` (MB per hour; the target is about 0).

No peer: this measures lpstream against itself over time. Not part of CI (it runs 30 minutes).

    python -m benchmarks.soak [--minutes 30] [--interval 30] [--warmup 120] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.harness.nodes import start_dev

PUSH = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
    "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine",
    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60",
    "-c:a", "aac",
]  # fmt: skip


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return 0, b""


class LowLatencyViewer(threading.Thread):
    """Follows the source rendition's LL-HLS playlist with blocking reloads, fetching parts."""

    def __init__(self, base: str, stream: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = f"{base}/hls/{stream}/source/"
        self.stop_event = stop
        self.parts = 0
        self.errors = 0

    def run(self) -> None:
        fetched: set[str] = set()
        msn = part = None
        while not self.stop_event.is_set():
            query = "" if msn is None else f"?_HLS_msn={msn}&_HLS_part={part}"
            status, body = get(self.url + "index.m3u8" + query)
            if status != 200:
                self.errors += 1
                msn = part = None
                time.sleep(0.5)
                continue
            text = body.decode()
            uris = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', text)
            for uri in uris[-6:]:
                if uri not in fetched:
                    fetched.add(uri)
                    if get(self.url + uri)[0] == 200:
                        self.parts += 1
                    else:
                        self.errors += 1
            if len(fetched) > 2000:
                fetched = set(uris)
            hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.ts"', text)
            if hint:
                msn, part = int(hint.group(1)), int(hint.group(2))
            else:
                time.sleep(0.2)


def chromium_viewer(page: str) -> subprocess.Popen[bytes] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    return subprocess.Popen(
        [
            browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
            "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0", page,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return float("nan")
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return cov / var * 3600 if var else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds left out of the fit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    seconds = args.minutes * 60
    dev = start_dev(Path(tempfile.mkdtemp(prefix="lpstream-soak-")), "--log-level=warning")
    node, rtmp, http = dev.proc, dev.hostport("rtmp"), dev.hostport("http")
    base = f"http://{http}"
    stop = threading.Event()
    pushers: list[subprocess.Popen[bytes]] = []
    browser = None
    samples: list[tuple[float, float]] = []
    try:
        for name in ("soak1", "soak2"):
            command = [*PUSH, "-t", str(seconds + 60), "-f", "flv", f"rtmp://{rtmp}/live/{name}"]
            pushers.append(subprocess.Popen(command, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while get(f"{base}/hls/soak1/index.m3u8")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        request = urllib.request.Request(
            f"{base}/api/ai/soak1",
            data=json.dumps({"pipeline": "noop", "width": 320, "height": 320}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        viewer = LowLatencyViewer(base, "soak1", stop)
        viewer.start()
        browser = chromium_viewer(f"{base}/watch/soak2?whep=1&rendition=240p")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            rss = rss_mb(node.pid)
            samples.append((elapsed, rss))
            status = json.loads(get(f"{base}/api/status")[1] or b"{}")
            whep = status.get("whep", {}).get("active_sessions")
            print(
                f"{elapsed:7.0f} s  RSS {rss:7.1f} MB  ll-hls parts {viewer.parts}  "
                f"whep viewers {whep}",
                flush=True,
            )
            time.sleep(args.interval)
        fitted = [(t, r) for t, r in samples if t >= args.warmup]
        ai_status = json.loads(get(f"{base}/api/ai/soak1")[1] or b"{}")
        result = {
            "minutes": args.minutes,
            "samples": len(samples),
            "peak_mb": round(max(r for _, r in samples), 1),
            "first_mb": round(samples[0][1], 1),
            "last_mb": round(samples[-1][1], 1),
            "slope_mb_per_hour": round(slope_mb_per_hour(fitted), 2),
            "llhls_parts_fetched": viewer.parts,
            "llhls_errors": viewer.errors,
            "webrtc_viewer": "chromium" if browser is not None else "none (no chromium)",
            "ai_running": ai_status.get("running"),
            "python": sys.version.split()[0],
        }
        if args.json:
            print(json.dumps(result))
        else:
            for key, value in result.items():
                print(f"{key:22} {value}")
    finally:
        stop.set()
        for process in [*pushers, *([browser] if browser else []), node]:
            process.terminate()
        for process in [*pushers, *([browser] if browser else []), node]:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
