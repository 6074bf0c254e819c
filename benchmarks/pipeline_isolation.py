"""What running a live AI pipeline in a child process costs, against running it in this
process, on the same frames in the same run; and a session's start, cold and warm.

What runs
---------
* Per frame: ``--frames`` distinct ``yuv420p`` frames of ``--size`` (default 512x512) go
  through ``noop`` and ``color-grade``, once with an in-process ``PipelineRunner`` (today's
  path without isolation) and once with an ``IsolatedRunner`` (a child process under its
  guardian: the frame copied into a shared-memory slot, a small request down a pipe, the
  output copied out of its slot). Both are warmed up first; the two alternate ``--runs`` times
  and the medians are printed: ms per frame each way and the difference, the time the process
  boundary adds to a frame. Target (the live-AI issue): <= 2 ms added per frame at 512x512 on
  the CPU.
* Session start: from a session's request (``LiveSessions.acquire``) to its first AI frame,
  for a pipeline whose model takes ``--load-seconds`` to load (``slow-to-load``, sleeping
  in ``prepare``), cold (a child started and the model loaded for the session) and
  warm (``--warm``: a child loaded at start, handed to the session).

Figures depend on the machine's load: the boundary is two process switches per frame, which
a busy machine makes slower. Nothing here fails on a figure.

    .venv/bin/python -m benchmarks.pipeline_isolation [--frames 300] [--runs 3]
        [--size 512x512] [--load-seconds 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import av
import numpy as np
from av.video.frame import VideoFrame

from lpstream.worker.live import LiveSessions, WarmPipeline
from workers.frames import YuvBatch, planes_as_arrays
from workers.pipelines import (
    FloatParam,
    Params,
    Pipeline,
    PipelineContext,
    PipelineRegistry,
    PipelineRunner,
    PipelineSpec,
)
from workers.pipelines.effects import ColorGradePipeline
from workers.pipelines.isolated import IsolatedRunner
from workers.pipelines.noop import NoopPipeline

__all__ = ["SlowToLoadPipeline", "main", "random_frames"]


class SlowToLoadPipeline(NoopPipeline):
    """Passes frames through after a model load of ``load_seconds``."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="slow-to-load",
        description="Passes frames through after a slow model load.",
        params=(FloatParam(name="load_seconds", default=1.0, minimum=0.0, maximum=60.0),),
    )

    def prepare(self, context: PipelineContext, params: Params) -> None:
        time.sleep(params.get_float("load_seconds"))

    def process(self, frames: YuvBatch, params: Params) -> YuvBatch:
        return frames


def random_frames(count: int, width: int, height: int) -> list[VideoFrame]:
    rng = np.random.default_rng(1)
    frames = []
    for pts in range(count):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in planes_as_arrays(frame):
            plane[:] = rng.integers(0, 256, plane.shape, dtype=np.uint8)
        frame.pts = pts
        frames.append(frame)
    return frames


def _ms_per_frame(push: Callable[[VideoFrame], object], frames: Sequence[VideoFrame]) -> float:
    started = time.perf_counter()
    for frame in frames:
        push(frame)
    return (time.perf_counter() - started) / len(frames) * 1000


def per_frame(pipeline: type[Pipeline], frames: Sequence[VideoFrame], runs: int) -> None:
    here = PipelineRunner(pipeline())
    child = IsolatedRunner(pipeline)
    try:
        here.prepare()
        child.prepare()
        for frame in frames[:30]:  # warm both up: pools, rings, caches
            here.push(frame)
            child.push(frame)
        inside, isolated = [], []
        for _ in range(runs):
            inside.append(_ms_per_frame(here.push, frames))
            isolated.append(_ms_per_frame(child.push, frames))
    finally:
        here.stop()
        child.stop()
    a, b = statistics.median(inside), statistics.median(isolated)
    print(
        f"{pipeline.spec.name:<12} in process {a:7.3f} ms/frame   child process {b:7.3f} ms/frame"
        f"   added {b - a:+7.3f} ms/frame   (runs: {', '.join(f'{x:.2f}' for x in isolated)})"
    )


def start_seconds(live: LiveSessions, session: str, load_seconds: float) -> float:
    frame = av.VideoFrame(160, 90, "yuv420p")
    frame.pts = 0
    started = time.perf_counter()
    handle = live.acquire(
        ("bench", session), "slow-to-load", {"load_seconds": load_seconds}, time.monotonic()
    )
    handle.runner.prepare()
    handle.push(frame)
    return time.perf_counter() - started


def session_start(load_seconds: float) -> None:
    registry = PipelineRegistry(entry_points=False)
    registry.register(SlowToLoadPipeline, source="benchmark")
    cold_live = LiveSessions(registry=registry, isolate=True)
    warm_live = LiveSessions(
        registry=registry,
        isolate=True,
        warm=(WarmPipeline(name="slow-to-load", params={"load_seconds": load_seconds}),),
    )
    try:
        cold = start_seconds(cold_live, "cold", load_seconds)
        warm_live.load_warm()
        warm = start_seconds(warm_live, "warm", load_seconds)
    finally:
        cold_live.close()
        warm_live.close()
    print(
        f"session start to first AI frame (model load {load_seconds:g} s): "
        f"cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--load-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    width, height = (int(side) for side in args.size.split("x"))
    frames = random_frames(args.frames, width, height)
    print(f"{args.frames} frames of {width}x{height}, {args.runs} runs, medians")
    for pipeline in (NoopPipeline, ColorGradePipeline):
        per_frame(pipeline, frames, args.runs)
    session_start(args.load_seconds)


if __name__ == "__main__":
    main()
