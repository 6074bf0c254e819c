"""Pipelines at 512x512: each against the same decode -> encode with no pipeline, in one run.

The peer is PyAV decoding an H.264 clip and encoding it again with libx264 (same settings) and
nothing in between. Each pipeline run does the same with the pipeline between decode and
encode (``PipelineRunner.push``, output frames from its pool). Runs alternate; medians are
printed, with:

* the pipeline's own rate (conversion + processing only, ``RunnerStatistics.process_seconds``),
  target 30 fps for at least one torch effect;
* the end-to-end rate and its ratio to the peer's;
* the per-frame overhead beyond decode + encode (target for ``noop``: <= 5 ms).

    python benchmarks/pipeline_fps.py [--seconds 10] [--runs 3] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import av
import torch
from av.video.stream import VideoStream

from workers.pipelines import PipelineRegistry

PIPELINES = ("noop", "color-grade", "cartoon")


def make_input(path: Path, seconds: int) -> None:
    """Writes a 512x512 30 fps H.264 MP4 (testsrc2, 2 s GOPs)."""
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=512x512:rate=30", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p",
            str(path),
        ],
        check=True,
    )  # fmt: skip


def run_once(src: Path, pipeline: str | None) -> tuple[float, float, int]:
    """Decodes, (processes), encodes; returns (wall seconds, pipeline seconds, frames)."""
    runner = PipelineRegistry(entry_points=False).create(pipeline) if pipeline else None
    if runner is not None:
        runner.prepare()
    frames = 0
    start = time.perf_counter()
    with (
        av.open(str(src)) as source,
        av.open(str(src.with_suffix(".out.ts")), mode="w", format="mpegts") as sink,
    ):
        out = sink.add_stream("libx264", rate=30, options={"preset": "veryfast", "g": "60"})
        assert isinstance(out, VideoStream)
        out.width, out.height, out.pix_fmt = 512, 512, "yuv420p"
        for frame in source.decode(video=0):
            frame.pict_type = av.video.frame.PictureType.NONE
            results = runner.push(frame) if runner is not None else [frame]
            for result in results:
                frames += 1
                sink.mux(out.encode(result))
        if runner is not None:
            for result in runner.flush():
                frames += 1
                sink.mux(out.encode(result))
        sink.mux(out.encode(None))
    wall = time.perf_counter() - start
    processing = runner.statistics().process_seconds if runner is not None else 0.0
    if runner is not None:
        runner.stop()
    return wall, processing, frames


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="length of the generated clip")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not on PATH", file=sys.stderr)
        return 2
    torch.set_num_threads(args.torch_threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} intra-op threads; PyAV {av.__version__}")

    with tempfile.TemporaryDirectory(prefix="lpstream-bench-") as tmp:
        src = Path(tmp) / "input.mp4"
        make_input(src, args.seconds)
        names: list[str | None] = [None, *PIPELINES]
        walls: dict[str | None, list[float]] = {n: [] for n in names}
        procs: dict[str | None, list[float]] = {n: [] for n in names}
        counts: dict[str | None, int] = {}
        for name in names:  # warm-up: page cache, lazy imports, first allocations
            run_once(src, name)
        for run in range(args.runs):
            for name in names:
                wall, processing, frames = run_once(src, name)
                walls[name].append(wall)
                procs[name].append(processing)
                counts[name] = frames
            print(
                f"run {run + 1}: " + ", ".join(f"{n or 'peer'} {walls[n][-1]:.2f} s" for n in names)
            )

        frames = counts[None]
        peer = statistics.median(walls[None])
        print(f"\n{frames} frames of 512x512")
        print(f"peer (PyAV decode -> libx264, no pipeline): {peer:.3f} s, {frames / peer:.1f} fps")
        for name in PIPELINES:
            wall = statistics.median(walls[name])
            processing = statistics.median(procs[name])
            per_frame = processing / frames * 1000
            overhead = (wall - peer) / frames * 1000
            print(
                f"{name:12s} pipeline alone {frames / processing:7.1f} fps"
                f" ({per_frame:.2f} ms/frame);"
                f" end to end {frames / wall:5.1f} fps, ratio to peer {wall / peer:.3f},"
                f" overhead {overhead:+.2f} ms/frame"
            )
        print("targets: one torch effect >= 30 fps; noop overhead <= 5 ms/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
