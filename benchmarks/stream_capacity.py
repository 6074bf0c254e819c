"""How many 720p30 streams this machine transcodes in real time: lpstream against the ffmpeg
command line, under the same load, the same encoder settings and the same pass rule.

lpstream: ``lpstream orchestrator`` (its worker in-process) and ``lpstream gateway`` run as
separate processes (optionally several orchestrators, each pinned to its own core with
``taskset``). N publishers push a pre-encoded 720p30 clip (``ffmpeg -re -c copy``, so
publishing costs almost nothing) over RTMP for ``--seconds``; the gateway measures each
segment's publish latency (the source segment closed at the gateway -> every rendition of the
default ladder listed in its playlist) and ``/api/status`` reports it.

Peer: per stream, one ffmpeg process making the same ladder (``benchmarks.harness``: decoded
once, scaled bicubic into each profile's box, encoded with lpstream's rate control, GOP and
keyframe settings and the same encoder) into HLS with 2 s segments, fed by the same publisher
(``ffmpeg -re -c copy`` to MPEG-TS) through a pipe; it probes at most 0.5 s of its input
(``-analyzeduration``: FFmpeg's default of 5 s would hold the first segments back, where
lpstream's worker starts within 32 KiB and the gateway knows the stream from RTMP's header).
A segment's latency is the time it is
listed in every rendition's playlist (polled every 20 ms) minus the time its source ended:
the first byte from the publisher plus the segment's end in the clip (publishers send at the
clip's pace). Both sides' processes are started before the publishers, so start-up counts on
neither side.

Pass rule, both sides: a stream keeps up when at least ``seconds // 2 - 1`` segments were listed
and their p95 publish latency (nearest rank, as the gateway's) is at most one segment (2 s).

    python -m benchmarks.stream_capacity [--min-streams 1] [--max-streams 4] [--seconds 20]
        [--orchestrators 1] [--encoder auto|x264|nvenc]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from benchmarks.harness.nodes import LPSTREAM, NodeProcess, http_json
from benchmarks.harness.toolchain import (
    ENCODER_CHOICES,
    common_encoder,
    encoder_flag,
    ladder_command,
    print_toolchains,
)
from lpstream.media import DEFAULT_PROFILES

SEGMENT = 2.0
"""Seconds per segment on both sides (the gateway's default, ``-hls_time`` of the peer)."""
RATE = Fraction(30)
TICK = Fraction(1, 90_000)
"""The publisher's clip: 30 fps, MPEG-TS time base on both sides."""
QUIET = ["ffmpeg", "-hide_banner", "-loglevel", "error"]


def make_clip(folder: Path, seconds: float) -> Path:
    clip = folder / "clip.flv"
    subprocess.run(
        [*QUIET, "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi",
         "-i", "sine", "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-g", "60",
         "-c:a", "aac", "-f", "flv", str(clip)],
        check=True,
    )  # fmt: skip
    return clip


def publisher(clip: Path, *output: str) -> list[str]:
    return [*QUIET, "-re", "-i", str(clip), "-c", "copy", *output]


def p95(samples: Sequence[float]) -> float | None:
    """Nearest-rank 95th percentile, as the gateway's ``LatencySummary``."""
    ordered = sorted(samples)
    return ordered[int(0.95 * (len(ordered) - 1))] if ordered else None


def keeps_up(count: int, latency_p95_ms: float | None, seconds: float) -> bool:
    """The pass rule of both sides."""
    expected = int(seconds // SEGMENT) - 1
    return count >= expected and latency_p95_ms is not None and latency_p95_ms <= SEGMENT * 1000


def lpstream_keeps_up(
    streams: int, clip: Path, seconds: float, orchestrators: int, encoder: str, logs: Path
) -> bool:
    cores = os.cpu_count() or 1
    pin = orchestrators > 1 and shutil.which("taskset") is not None
    orchs = [
        NodeProcess(
            ["orchestrator", "--offchain", "--service-addr=127.0.0.1:0", "--orch-secret=s",
             f"--capacity={streams}", f"--encoder={encoder_flag(encoder)}",
             "--log-level=warning"],
            name=f"orchestrator{i}",
            log_dir=logs,
            program=[*(["taskset", "-c", str(i % cores)] if pin else []), *LPSTREAM],
        )
        for i in range(orchestrators)
    ]  # fmt: skip
    nodes = list(orchs)
    try:
        for orch in orchs:
            orch.wait_ready()
        addresses = ",".join(orch.hostport("quic") for orch in orchs)
        gateway = NodeProcess(
            ["gateway", "--offchain", f"--orch-addr={addresses}", "--rtmp-addr=127.0.0.1:0",
             "--http-addr=127.0.0.1:0", "--log-level=warning"],
            name="gateway",
            log_dir=logs,
        )  # fmt: skip
        nodes.append(gateway)
        gateway.wait_ready()
        rtmp, http = gateway.hostport("rtmp"), gateway.hostport("http")
        pushers = [
            subprocess.Popen(publisher(clip, "-f", "flv", f"rtmp://{rtmp}/live/s{i}"))
            for i in range(streams)
        ]
        for p in pushers:
            p.wait(timeout=seconds + 60)
        time.sleep(4)
        status = http_json(f"http://{http}/api/status")
        ok = True
        for i in range(streams):
            latency = status["streams"].get(f"s{i}", {}).get("publish_latency_ms", {})
            ok &= keeps_up(latency.get("count") or 0, latency.get("p95"), seconds)
            print(f"    lpstream s{i}: segments {latency.get('count')}, publish latency "
                  f"median {latency.get('median')} ms, p95 {latency.get('p95')} ms")  # fmt: skip
        return ok
    finally:
        for node in reversed(nodes):
            node.stop()


class PeerStream:
    """One ffmpeg ladder process fed by a publisher through a pipe, and its playlists watched."""

    def __init__(self, index: int, clip: Path, out: Path, encoder: str) -> None:
        self.out = out / f"s{index}"
        self.out.mkdir()
        outputs = [
            ["-f", "hls", "-hls_time", str(SEGMENT), "-hls_list_size", "0",
             "-hls_segment_filename", str(self.out / f"{p.name}-%d.ts"),
             str(self.out / f"{p.name}.m3u8")]
            for p in DEFAULT_PROFILES
        ]  # fmt: skip
        command = ladder_command(
            Path("pipe:0"), (1280, 720), RATE, TICK, DEFAULT_PROFILES, outputs, encoder,
            head=["-analyzeduration", "500000", "-f", "mpegts"],  # see the module's docstring
        )  # fmt: skip
        self.transcoder = subprocess.Popen(command, stdin=subprocess.PIPE)
        self.clip = clip
        self.first_byte: float | None = None
        self.listed: list[float] = []
        """Wall time each segment was first listed in every rendition's playlist."""
        self._relay: threading.Thread | None = None

    def publish(self) -> None:
        pusher = subprocess.Popen(
            publisher(self.clip, "-f", "mpegts", "-flush_packets", "1", "pipe:1"),
            stdout=subprocess.PIPE,
        )
        self._relay = threading.Thread(target=self._forward, args=(pusher,), daemon=True)
        self._relay.start()

    def _forward(self, pusher: subprocess.Popen[bytes]) -> None:
        assert pusher.stdout is not None and self.transcoder.stdin is not None
        while chunk := os.read(pusher.stdout.fileno(), 1 << 16):
            if self.first_byte is None:
                self.first_byte = time.monotonic()
            self.transcoder.stdin.write(chunk)
            self.transcoder.stdin.flush()
        self.transcoder.stdin.close()
        pusher.wait()

    def poll(self, now: float) -> None:
        counts = []
        for profile in DEFAULT_PROFILES:
            try:
                text = (self.out / f"{profile.name}.m3u8").read_text()
            except FileNotFoundError:
                text = ""
            counts.append(sum(1 for line in text.splitlines() if line.endswith(".ts")))
        while len(self.listed) < min(counts):
            self.listed.append(now)

    def running(self) -> bool:
        return self.transcoder.poll() is None

    def latencies_ms(self, seconds: float) -> list[float]:
        assert self.first_byte is not None
        return [
            (listed - self.first_byte - min((k + 1) * SEGMENT, seconds)) * 1000
            for k, listed in enumerate(self.listed)
        ]


def ffmpeg_keeps_up(streams: int, clip: Path, seconds: float, encoder: str, out: Path) -> bool:
    peers = [PeerStream(i, clip, out, encoder) for i in range(streams)]
    time.sleep(1)  # every transcoder started (and waiting on its pipe) before publishing
    for peer in peers:
        peer.publish()
    deadline = time.monotonic() + seconds + 60
    while any(peer.running() for peer in peers) and time.monotonic() < deadline:
        now = time.monotonic()
        for peer in peers:
            peer.poll(now)
        time.sleep(0.02)
    ok = True
    for i, peer in enumerate(peers):
        peer.poll(time.monotonic())
        if peer.running():
            peer.transcoder.kill()
        peer.transcoder.wait()
        latencies = peer.latencies_ms(seconds) if peer.first_byte is not None else []
        worst = p95(latencies)
        ok &= keeps_up(len(latencies), worst, seconds)
        median = sorted(latencies)[len(latencies) // 2] if latencies else None
        print(f"    ffmpeg   s{i}: segments {len(latencies)}, publish latency median "
              f"{median and round(median, 1)} ms, p95 {worst and round(worst, 1)} ms")  # fmt: skip
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-streams", type=int, default=1)
    parser.add_argument("--max-streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--orchestrators", type=int, default=1)
    parser.add_argument("--encoder", choices=ENCODER_CHOICES, default="auto")
    args = parser.parse_args()
    encoder = common_encoder(args.encoder)
    print_toolchains(encoder)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp), args.seconds)
        ours = theirs = 0
        for n in range(args.min_streams, args.max_streams + 1):
            print(f"{n} stream(s):")
            with tempfile.TemporaryDirectory(dir=tmp) as logs:
                if lpstream_keeps_up(n, clip, args.seconds, args.orchestrators, encoder,
                                     Path(logs)):  # fmt: skip
                    ours = n
            with tempfile.TemporaryDirectory(dir=tmp) as out:
                if ffmpeg_keeps_up(n, clip, args.seconds, encoder, Path(out)):
                    theirs = n
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
        ratio = f"{ours / theirs:.2f}" if theirs else "n/a (the peer kept up with none)"
        print(f"real-time 720p30 streams, default ladder, {os.cpu_count()} cores, "
              f"{args.orchestrators} orchestrator(s): lpstream {ours}, ffmpeg CLI {theirs}"
              f" (ratio {ratio})")  # fmt: skip


if __name__ == "__main__":
    main()
