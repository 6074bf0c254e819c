"""How many 720p30 streams this machine transcodes in real time, one process per role.

Starts ``lpstream orchestrator`` (its worker in-process) and ``lpstream gateway`` as separate
processes (optionally a second orchestrator, each orchestrator pinned to its own core with
``taskset``), then pushes N copies of a pre-encoded 720p30 clip (``ffmpeg -re -c copy``, so
publishing costs almost nothing) for ``--seconds``, and counts a stream as real time when
every 360p/240p segment appeared and the gateway's publish latency p95 stayed under one
segment. The peer is the same load on the ffmpeg command line: N ``ffmpeg -re`` processes,
each decoding the same clip once and encoding the same two renditions with the same x264
settings; it keeps up when each finishes within 10 % of the clip's duration.

    python benchmarks/stream_capacity.py [--min-streams 1] [--max-streams 4] [--seconds 20]
        [--orchestrators 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def start(args: list[str], cpus: str | None = None) -> tuple[subprocess.Popen[bytes], list[str]]:
    command = [sys.executable, "-m", "lpstream", *args, "--log-level=warning"]
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    lines = []
    for raw in proc.stdout:
        lines.append(raw.decode().strip())
        if "ready" in lines[-1]:
            break
    return proc, lines


def found(lines: list[str], scheme: str) -> str:
    for line in lines:
        if m := re.search(rf"{scheme}://([^\s/]+)", line):
            return m.group(1)
    raise RuntimeError(f"no {scheme} address in {lines}")


def make_clip(folder: Path, seconds: float) -> Path:
    clip = folder / "clip.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-c:a", "aac", "-f", "flv",
         str(clip)],
        check=True,
    )  # fmt: skip
    return clip


def lpstream_keeps_up(streams: int, clip: Path, seconds: float, orchestrators: int) -> bool:
    cores = os.cpu_count() or 1
    orchs = [
        start(
            [
                "orchestrator",
                "--offchain",
                "--service-addr=127.0.0.1:0",
                "--orch-secret=s",
                f"--capacity={streams}",
            ],
            cpus=str(i % cores) if orchestrators > 1 else None,
        )
        for i in range(orchestrators)
    ]
    addresses = ",".join(found(lines, "quic") for _, lines in orchs)
    gateway, lines = start(
        ["gateway", "--offchain", f"--orch-addr={addresses}", "--rtmp-addr=127.0.0.1:0",
         "--http-addr=127.0.0.1:0"]
    )  # fmt: skip
    rtmp, http = found(lines, "rtmp"), found(lines, "http")
    try:
        pushers = [
            subprocess.Popen(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-re",
                    "-i",
                    str(clip),
                    "-c",
                    "copy",
                    "-f",
                    "flv",
                    f"rtmp://{rtmp}/live/s{i}",
                ]
            )
            for i in range(streams)
        ]
        for p in pushers:
            p.wait(timeout=seconds + 60)
        time.sleep(4)
        with urllib.request.urlopen(f"http://{http}/api/status") as response:
            status = json.load(response)
        ok = True
        for i in range(streams):
            facts = status["streams"].get(f"s{i}", {})
            latency = facts.get("publish_latency_ms", {})
            expected = int(seconds // 2) - 1
            if (latency.get("count") or 0) < expected or (latency.get("p95") or 1e9) > 2000:
                ok = False
            print(f"    stream s{i}: segments {latency.get('count')}, publish latency "
                  f"median {latency.get('median')} ms, p95 {latency.get('p95')} ms")  # fmt: skip
        return ok
    finally:
        gateway.terminate()
        for proc, _ in orchs:
            proc.terminate()
        for proc in [gateway, *(p for p, _ in orchs)]:
            proc.wait()


def ffmpeg_keeps_up(streams: int, clip: Path, seconds: float, out: Path) -> bool:
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-re", "-i", str(clip),
        "-filter_complex", "[0:v]split=2[a][b];[a]scale=640:360[v0];[b]scale=426:240[v1]",
        "-map", "[v0]", "-map", "0:a", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "400k",
        "-g", "60", "-c:a", "copy", "-f", "mpegts", "{out}/360p-{i}.ts",
        "-map", "[v1]", "-map", "0:a", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "250k",
        "-g", "60", "-c:a", "copy", "-f", "mpegts", "{out}/240p-{i}.ts",
    ]  # fmt: skip
    started = time.monotonic()
    procs = [
        subprocess.Popen([part.format(out=out, i=i) for part in command]) for i in range(streams)
    ]
    for p in procs:
        p.wait()
    elapsed = time.monotonic() - started
    print(f"    ffmpeg x{streams}: {elapsed:.1f} s for {seconds:.0f} s of input")
    return elapsed <= seconds * 1.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-streams", type=int, default=1)
    parser.add_argument("--max-streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--orchestrators", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp), args.seconds)
        ours = theirs = 0
        for n in range(args.min_streams, args.max_streams + 1):
            print(f"{n} stream(s):")
            if lpstream_keeps_up(n, clip, args.seconds, args.orchestrators):
                ours = n
            if ffmpeg_keeps_up(n, clip, args.seconds, Path(tmp)):
                theirs = n
        print(f"real-time 720p30 streams, default ladder, {os.cpu_count()} cores, "
              f"{args.orchestrators} orchestrator(s): lpstream {ours}, ffmpeg CLI {theirs}"
              f" (ratio {ours / theirs if theirs else float('nan'):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
