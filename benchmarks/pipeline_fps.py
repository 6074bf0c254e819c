"""Live AI pipelines through the worker's real path, against the same path with no pipeline
and against the ffmpeg command line, in one run.

What runs
---------
A 30 frames/s H.264 clip (``--source-size``, default 1024x1024, 2 s GOPs, no B-frames, as a
live encoder sends) is cut into 2 s MPEG-TS segments, the worker's unit. Each variant feeds
the segments one after another to ``workers.LadderTranscoder.transcode`` with one profile, the
gateway's ``ai`` rendition (``--size`` box, default 512x512, 1.5 Mbit/s, keyframes where the
source has them), exactly as ``lpstream.worker.local.LocalWorker`` does for a live AI job:

* ``ladder``: no stage: decode, scale, encode with the transcoding settings (x264 veryfast,
  B-frames and lookahead);
* ``identity``: a stage that hands each scaled frame back as it is: the staged (live) rendition
  with its zero-latency x264 encode, but no pipeline. This is decode + scale + encode of the
  live path, the reference for the pipelines' overhead;
* ``noop``, ``color-grade``, ``cartoon``: the pipeline as a ``lpstream.worker.live.LiveSession``
  over a ``PipelineRunner`` kept across the segments (one session, as a live stream has);
* ``ffmpeg`` (the named peer of ``identity``): ``ffmpeg -i seg.ts -vf scale=...:flags=bicubic``
  encoding with libx264 under the live rendition's own options
  (``benchmarks.harness.encoder_args``: zero-latency tuning, rate control, keyframes where the
  source has them), one process per segment as the worker takes one job per segment; the sum
  of their ``-benchmark`` ``rtime`` (the transcode loop: start-up is left out, as it is on
  lpstream's side, which runs in this process). Both sides' FFmpeg and x264 builds are
  printed; both encode with libx264.

Two modes:

* throughput: segments are read as fast as they decode, every frame is processed (the live
  path's drop-when-behind is switched off by setting ``workers.transcode._LIVE_SLACK`` to
  infinity, so a slow pipeline is measured, not dropped). Variants alternate run by run;
  medians are printed: wall ms and fps per frame, the pipeline's own time per frame (its
  conversions + processing, ``RunnerStatistics.process_seconds``), the overhead beyond
  ``identity``, ratios to ``identity``, and ``identity``'s ratio to ``ffmpeg`` (the same work:
  decode, scale, zero-latency encode; the other variants do more or other work than the peer).
* real time: each segment's bytes are released at the pace of the clip (a video packet's
  bytes when its timestamp comes, as a broadcaster's upload arrives), the live path as shipped
  (frames dropped when the stage falls 0.25 s behind). Printed: frames dropped, output fps, and
  per frame the time from its last input byte's release to its encoded packet being handed to
  ``on_data`` (the worker's part of glass-to-glass latency), median and p95, and the
  difference to ``identity``.

Targets (the live-AI issue): ``noop`` costs <= 5 ms a frame beyond decode + encode; at least
one torch effect (color-grade, cartoon) sustains 30 fps at 512x512 on this machine.

    .venv/bin/python -m benchmarks.pipeline_fps [--seconds 10] [--runs 3]
        [--source-size 1024x1024] [--size 512x512] [--torch-threads N] [--skip-realtime]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import attrs
import av
import numpy as np
import torch
from av.video.frame import VideoFrame

import workers.transcode
from benchmarks.harness.toolchain import encoder_args, print_toolchains
from lpstream.media import VideoProfile, scaled_size
from lpstream.worker.live import LiveSession
from workers import LadderTranscoder
from workers.gpu import X264
from workers.pipelines import PipelineRegistry

PIPELINES = ("noop", "color-grade", "cartoon")
VARIANTS = ("ladder", "identity", *PIPELINES)
REFERENCE = "identity"
PEER = "ffmpeg"
FPS = 30
AI_BITRATE = 1_500_000
"""The gateway's default ``ai`` rendition bitrate (``Gateway.ai_bitrate``)."""
CLIP_ENCODER = [
    "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
    "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
]  # fmt: skip
"""How the clip is encoded: a live encoder's settings, 2 s GOPs."""


# --- the clip ------------------------------------------------------------------------------


def make_clip(folder: Path, source_size: str, seconds: int) -> tuple[Path, list[Path]]:
    """Writes ``clip.ts`` (testsrc2) and its 2 s segments ``seg000.ts``...; returns both."""
    clip = folder / "clip.ts"
    quiet = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(
        [*quiet, "-f", "lavfi", "-i", f"testsrc2=size={source_size}:rate={FPS}",
         "-t", str(seconds), *CLIP_ENCODER, "-f", "mpegts", str(clip)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [*quiet, "-i", str(clip), "-c", "copy", "-f", "segment", "-segment_time", "2",
         "-segment_format", "mpegts",
         # as the gateway's segmenter writes them: each video PES with its length
         "-segment_format_options", "omit_video_pes_length=0",
         str(folder / "seg%03d.ts")],
        check=True,
    )  # fmt: skip
    return clip, sorted(folder.glob("seg*.ts"))


@attrs.frozen(kw_only=True)
class Segment:
    """One segment's bytes and when each part of it arrives, in clip seconds."""

    data: bytes
    marks: tuple[tuple[float, int], ...]
    """(clip time, bytes available): a video packet's bytes once its timestamp is reached."""
    arrivals: dict[int, float]
    """Video pts (90 kHz, as the transcoder keeps it) -> clip time its last byte arrives."""

    @classmethod
    def from_file(cls, path: Path, origin: int | None) -> tuple[Segment, int]:
        data = path.read_bytes()
        packets: list[tuple[int, int]] = []  # (pts, position)
        with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.pts is not None and packet.pos is not None and packet.pos >= 0:
                    packets.append((packet.pts, packet.pos))
        packets.sort(key=lambda p: p[1])
        if origin is None:
            origin = packets[0][0]
        marks: list[tuple[float, int]] = []
        arrivals: dict[int, float] = {}
        for i, (pts, _) in enumerate(packets):
            end = packets[i + 1][1] if i + 1 < len(packets) else len(data)
            at = (pts - origin) / 90_000
            marks.append((at, end))
            arrivals[pts] = at
        return cls(data=data, marks=tuple(marks), arrivals=arrivals), origin


class PacedReader:
    """A segment's bytes as an upload in real time: ``read`` blocks until they have arrived."""

    def __init__(self, segment: Segment, start: float) -> None:
        self._segment = segment
        self._start = start
        self._pos = 0
        self._mark = 0

    def read(self, size: int = -1, /) -> bytes:
        data, marks = self._segment.data, self._segment.marks
        if self._pos >= len(data):
            return b""
        while True:
            now = time.monotonic() - self._start
            while self._mark < len(marks) and marks[self._mark][0] <= now:
                self._mark += 1
            available = marks[self._mark - 1][1] if self._mark else 0
            if available > self._pos:
                break
            time.sleep(max(0.0, marks[self._mark][0] - now))
        end = available if size < 0 else min(available, self._pos + size)
        chunk = data[self._pos : end]
        self._pos = end
        return chunk


# --- stages and output timing --------------------------------------------------------------


class IdentityStage:
    """A ``FrameStage`` that hands each frame back: the live rendition without a pipeline."""

    def push(self, frame: VideoFrame, /) -> Sequence[VideoFrame]:
        return [frame]

    def flush(self) -> Sequence[VideoFrame]:
        return []


class OutputClock:
    """Notes when each video frame's PES starts in a rendition's MPEG-TS output (``on_data``),
    by its PTS: the moment the encoded frame leaves the transcoder."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self._rest = b""

    def feed(self, data: bytes) -> None:
        now = time.monotonic()
        data = self._rest + data
        whole = len(data) - len(data) % 188
        self._rest = data[whole:]
        for offset in range(0, whole, 188):
            pts = _pes_pts(data[offset : offset + 188])
            if pts is not None:
                self.times.setdefault(pts, now)


def _pes_pts(packet: bytes) -> int | None:
    """The PTS of a video PES that starts in this 188-byte TS packet, else None."""
    if packet[0] != 0x47 or not packet[1] & 0x40:  # sync byte, payload_unit_start_indicator
        return None
    payload = 4
    if packet[3] & 0x20:  # adaptation field
        payload += 1 + packet[4]
    pes = packet[payload:]
    if len(pes) < 14 or pes[:3] != b"\x00\x00\x01" or not 0xE0 <= pes[3] <= 0xEF:
        return None
    if not pes[7] & 0x80:
        return None
    p = pes[9:14]
    return ((p[0] >> 1) & 0x07) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1


# --- one variant over the clip -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Run:
    variant: str
    wall: float
    frames: int
    dropped: int
    stage_seconds: float
    latencies_ms: list[float]


def run_variant(
    variant: str, segments: Sequence[Segment], profile: VideoProfile, *, realtime: bool
) -> Run:
    """The clip's segments through one ``LadderTranscoder`` per segment, as a live worker."""
    session: LiveSession | None = None
    if variant in PIPELINES:
        runner = PipelineRegistry(entry_points=False).create(variant)
        runner.prepare()  # loading is not part of the per-frame path (done before the clock)
        session = LiveSession(("bench", "bench"), runner, 0.0)
    frames = dropped = 0
    clock = OutputClock()
    arrivals: dict[int, float] = {}
    start = time.monotonic() + 0.05
    try:
        for segment in segments:
            stages: dict[str, workers.transcode.FrameStage] = {}
            if session is not None:
                stages[profile.name] = session
            elif variant == "identity":
                stages[profile.name] = IdentityStage()
            transcoder = LadderTranscoder((profile,), encoder="x264", stages=stages)
            source: io.BytesIO | PacedReader
            if realtime:
                source = PacedReader(segment, start)
                arrivals.update({p: start + t for p, t in segment.arrivals.items()})
            else:
                source = io.BytesIO(segment.data)
            if session is not None:
                with session.running():
                    results = transcoder.transcode(source, lambda _, data: clock.feed(data))
            else:
                results = transcoder.transcode(source, lambda _, data: clock.feed(data))
            frames += results[0].frames
            dropped += results[0].dropped
        wall = time.monotonic() - start
    finally:
        if session is not None:
            session.runner.stop()
    stage_seconds = session.runner.statistics().process_seconds if session is not None else 0.0
    latencies = [(clock.times[p] - at) * 1000 for p, at in arrivals.items() if p in clock.times]
    return Run(
        variant=variant,
        wall=wall,
        frames=frames,
        dropped=dropped,
        stage_seconds=stage_seconds,
        latencies_ms=latencies,
    )


def run_throughput(variant: str, segments: Sequence[Segment], profile: VideoProfile) -> Run:
    """``run_variant`` with every frame processed, however slow the stage."""
    slack = workers.transcode._LIVE_SLACK
    workers.transcode._LIVE_SLACK = math.inf
    try:
        return run_variant(variant, segments, profile, realtime=False)
    finally:
        workers.transcode._LIVE_SLACK = slack


def ffmpeg_command(
    segment: Path, size: tuple[int, int], profile: VideoProfile, out: Path
) -> list[str]:
    """The peer: decode, scale (bicubic, as the ladder) and encode with the live settings."""
    width, height = size
    return [
        "ffmpeg", "-hide_banner", "-nostats", "-benchmark", "-y", "-copyts", "-i", str(segment),
        "-vf", f"scale={width}:{height}:flags=bicubic,format=yuv420p",
        *encoder_args(X264, profile, Fraction(FPS), live=True),
        "-enc_time_base:v", "1:90000", "-fps_mode", "passthrough",
        "-mpegts_copyts", "1", "-f", "mpegts", str(out),
    ]  # fmt: skip


def run_ffmpeg(commands: Sequence[list[str]]) -> float:
    """Seconds of ffmpeg's transcode loops (``-benchmark`` rtime), summed over ``commands``."""
    total = 0.0
    for command in commands:
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        found = re.search(r"rtime=([0-9.]+)s", done.stderr)
        if found is None:
            raise RuntimeError(f"no -benchmark line in ffmpeg's output:\n{done.stderr}")
        total += float(found.group(1))
    return total


# --- report --------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="clip length (2 s segments)")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per variant")
    parser.add_argument("--source-size", default="1024x1024", help="clip frame size")
    parser.add_argument("--size", default="512x512", help="the ai rendition's box")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--skip-realtime", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not on PATH", file=sys.stderr)
        return 2
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    width, height = (int(v) for v in args.size.split("x"))
    profile = VideoProfile.checked(name="ai", width=width, height=height, bitrate=AI_BITRATE, gop=0)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), "
        f"PyAV {av.__version__}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )

    with tempfile.TemporaryDirectory(prefix="lpstream-bench-") as tmp:
        clip, paths = make_clip(Path(tmp), args.source_size, args.seconds)
        segments: list[Segment] = []
        origin: int | None = None
        for path in paths:
            segment, origin = Segment.from_file(path, origin)
            segments.append(segment)
        with av.open(str(clip), mode="r") as probe:
            source = probe.streams.video[0].codec_context
            out_size = scaled_size(source.width, source.height, profile)
        commands = [ffmpeg_command(p, out_size, profile, Path(tmp) / "peer.ts") for p in paths]
        print(
            f"clip: testsrc2 {args.source_size} {FPS} fps, {args.seconds} s "
            f"({' '.join(CLIP_ENCODER)}), {len(segments)} segments of 2 s; "
            f"ai rendition {out_size[0]}x{out_size[1]} at {AI_BITRATE // 1000} kbit/s"
        )
        print_toolchains(X264)
        command = commands[0]
        print("peer, per segment: " + " ".join([*command[:7], "seg.ts", *command[8:-1], "out.ts"]))

        # -- throughput
        walls: dict[str, list[float]] = {v: [] for v in (*VARIANTS, PEER)}
        stage: dict[str, list[float]] = {v: [] for v in VARIANTS}
        counts: dict[str, tuple[int, int]] = {}
        for variant in VARIANTS:  # warm-up: page cache, lazy imports, first allocations
            run_throughput(variant, segments, profile)
        run_ffmpeg(commands)
        for run in range(args.runs):
            for variant in VARIANTS:
                result = run_throughput(variant, segments, profile)
                walls[variant].append(result.wall)
                stage[variant].append(result.stage_seconds)
                counts[variant] = (result.frames, result.dropped)
            walls[PEER].append(run_ffmpeg(commands))
            print(
                f"run {run + 1}: "
                + ", ".join(f"{v} {walls[v][-1]:.2f} s" for v in (*VARIANTS, PEER))
            )
        frames = counts[REFERENCE][0]
        print(f"\nthroughput: {frames} frames, medians of {args.runs} runs (ms per frame)")
        reference = statistics.median(walls[REFERENCE]) / frames * 1000
        peer = statistics.median(walls[PEER]) / frames * 1000
        print(
            f"{'variant':<12} {'wall ms':>8} {'best':>6} {'fps':>7}"
            f" {'stage ms':>9} {'stage fps':>9}"
            f" {'over identity':>14} {'/ identity':>10} {'/ ffmpeg':>9} {'dropped':>8}"
        )
        for variant in (PEER, *VARIANTS):
            ms = statistics.median(walls[variant]) / frames * 1000
            stage_ms = statistics.median(stage[variant]) / frames * 1000 if variant in stage else 0
            n, dropped = counts.get(variant, (frames, 0))
            print(
                f"{variant:<12} {ms:8.2f} {min(walls[variant]) / frames * 1000:6.2f}"
                f" {1000 / ms:7.1f}"
                + (
                    f" {stage_ms:9.2f} {1000 / stage_ms:9.1f}"
                    if stage_ms
                    else f" {'-':>9} {'-':>9}"
                )
                + f" {ms - reference:+14.2f} {ms / reference:10.3f}"
                + (f" {ms / peer:9.3f}" if variant in (REFERENCE, PEER) else f" {'-':>9}")
                + f" {dropped if n else '-':>8}"
            )
        noop_stage = statistics.median(stage["noop"]) / frames * 1000
        noop_over = statistics.median(walls["noop"]) / frames * 1000 - reference
        print(
            f"(1) noop beyond decode+scale+encode: {noop_stage:.2f} ms/frame of its own work "
            f"(conversions in and out), {noop_over:+.2f} ms/frame of wall time vs identity; "
            "target <= 5 ms"
        )
        for name in PIPELINES[1:]:
            ms = statistics.median(walls[name]) / frames * 1000
            print(f"(3) {name}: {1000 / ms:.1f} fps end to end, target 30 fps")

        if args.skip_realtime:
            return 0
        # -- real time
        print(f"\nreal time: {len(segments)} segments released at {FPS} fps, as shipped")
        print(
            f"{'variant':<12} {'frames':>6} {'dropped':>7} {'out fps':>7}"
            f" {'lat p50':>8} {'lat p95':>8} {'lat max':>8} {'p50-id':>7} {'p95-id':>7}"
        )
        realtime: dict[str, Run] = {}
        for variant in VARIANTS:
            realtime[variant] = result = run_variant(variant, segments, profile, realtime=True)
        ref = realtime[REFERENCE].latencies_ms
        clip_seconds = sum(len(s.arrivals) for s in segments) / FPS
        for variant, result in realtime.items():
            lat = result.latencies_ms
            print(
                f"{variant:<12} {result.frames:6d} {result.dropped:7d}"
                f" {result.frames / clip_seconds:7.1f} {_pct(lat, 50):8.1f} {_pct(lat, 95):8.1f}"
                f" {max(lat, default=math.nan):8.1f}"
                f" {_pct(lat, 50) - _pct(ref, 50):+7.1f} {_pct(lat, 95) - _pct(ref, 95):+7.1f}"
            )
        print(
            "(lat: ms from a frame's last input byte to its encoded PES reaching on_data; "
            "-id: minus identity)"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
