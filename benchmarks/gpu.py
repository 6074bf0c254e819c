"""What a GPU gives lpstream's worker: NVENC ladder streams against the ffmpeg command line,
live AI frames/s and the latency a pipeline adds, and a zero-copy check of the live path.
On a machine without a GPU it runs in a reduced form that measures no GPU figure.

What runs
---------
First the versions (Python, torch, PyAV and its FFmpeg, the ffmpeg CLI, CuPy, diffusers) and
the device: on CUDA the GPU's name, memory and NVENC/NVDEC (``workers.gpu.discover_gpus``).

* ``nvenc``: a 720p30 clip of ``--seconds`` (``benchmarks.transcode_vs_ffmpeg.make_input``)
  through the default ladder, k = 1, 2, 4... ``--max-streams`` streams at once: lpstream's
  ``transcode_file`` (the worker's ``LadderTranscoder``) on k threads, then k ffmpeg
  processes making the same ladder with the same ``h264_nvenc`` settings
  (``benchmarks.harness.toolchain.ladder_command``); both decode in software. Per k: wall
  seconds, frames/s and speed (clip seconds per wall second: the real-time streams that
  throughput carries); a side keeps real time at k when its k streams end within the clip's
  length. The ratio (lpstream over ffmpeg, same k, same encoder) is like for like. Where
  h264_nvenc cannot run on both sides (no driver; a GPU without NVENC engines, such as the
  H100 and A100; PyAV or ffmpeg built without it) the section says why and is skipped.
* ``ai``: at each of ``--sizes``, ``--frames`` frames through ``noop``, ``color-grade`` and
  ``img2img-diffusion`` on a tiny random Stable Diffusion model built here offline
  (sd-turbo's layout and scheduler, a few thousand weights; nothing is downloaded), in a
  ``PipelineRunner`` on ``--device`` and, with ``--isolated`` (default), in an
  ``IsolatedRunner`` (a child process, as in ``benchmarks.pipeline_isolation``). Per
  pipeline: frames/s; latency per frame, from handing it to the runner to its output frame,
  median and p95; and the latency added: those minus a pass-through's (the live path's stage
  without a pipeline, ``benchmarks.pipeline_fps.IdentityStage``).
* ``zerocopy`` (CUDA and CuPy): frames through ``PipelineRunner`` objects whose pipelines note
  where their input is. Checked by data pointers: the YUV planes a pipeline gets are CuPy's
  upload buffer seen by torch through DLPack (not memory of torch's allocator), the same
  device buffer every frame; RGB input is converted on the device into one reused tensor;
  the output reaches the encoder by one download a frame into pooled host frames, unchanged.

Nothing fails on a figure: exit 0 when it ran, 2 with a message on a real error. On a GPU
machine (``pip install 'lpstream[ai,gpu]'``), one command runs it all on ``cuda:0``:

    .venv/bin/python -m benchmarks.gpu [--device cuda:0|cpu] [--sizes 512x512,1280x720]
        [--frames 200] [--warmup 10] [--seconds 10] [--max-streams 32] [--no-isolated]
        [--sections nvenc,ai,zerocopy] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import collections
import importlib
import itertools
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import av
import torch
from av.video.frame import VideoFrame

from benchmarks.harness.toolchain import (
    common_encoder,
    encoder_flag,
    ladder_command,
    print_toolchains,
)
from benchmarks.pipeline_fps import IdentityStage
from benchmarks.pipeline_isolation import random_frames
from benchmarks.transcode_vs_ffmpeg import make_input
from lpstream.errors import ConfigError, MediaError
from lpstream.media import DEFAULT_PROFILES
from workers.frames import YuvBatch, planes_as_arrays
from workers.gpu import discover_gpus
from workers.pipelines import (
    ModelDirectory,
    Params,
    PipelineError,
    PipelineRegistry,
    PipelineRunner,
    PipelineSpec,
    RgbPipeline,
    YuvPipeline,
)
from workers.pipelines.isolated import IsolatedRunner
from workers.transcode import transcode_file

__all__ = ["SECTIONS", "ladder_streams", "main"]

SECTIONS = ("nvenc", "ai", "zerocopy")
PIPELINES = ("noop", "color-grade", "img2img-diffusion")
TINY = "tiny-sd"
"""The tiny diffusion model's name in the benchmark's models directory."""


def _optional_version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except ImportError:
        return "not installed"


def print_versions() -> None:
    cli = "not on PATH"
    if shutil.which("ffmpeg"):
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
        cli = out.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" Copyright")[0]
    print(
        f"python {platform.python_version()}; torch {torch.__version__} (CUDA "
        f"{torch.version.cuda or 'none'}); PyAV {av.__version__} (FFmpeg "
        f"{getattr(av, 'ffmpeg_version_info', '?')}); ffmpeg CLI {cli}; "
        f"cupy {_optional_version('cupy')}; diffusers {_optional_version('diffusers')}"
    )


def pick_device(choice: str | None) -> str:
    """The torch device to run on (printed with what it is).

    Raises:
        ConfigError: a CUDA device that is not here, or CUDA without CuPy.
    """
    gpus = discover_gpus()
    choice = choice or ("cuda:0" if gpus else "cpu")
    if choice == "cpu":
        why = "no GPU" if not gpus else f"{len(gpus)} GPU(s) here, not used"
        print(f"device: cpu ({why}: GPU figures are not measured)")
        return "cpu"
    index = choice.removeprefix("cuda").removeprefix(":") or "0"
    gpu = next((g for g in gpus if index.isdigit() and g.index == int(index)), None)
    if gpu is None:
        have = ", ".join(g.device for g in gpus) or "none"
        raise ConfigError(f"--device {choice}: no such CUDA device here (present: {have})")
    if _optional_version("cupy") == "not installed":
        raise ConfigError(f"--device {choice} needs CuPy (pip install 'lpstream[gpu]')")
    print(
        f"device: {gpu.device} {gpu.name}, {gpu.memory_total / 2**30:.1f} GiB "
        f"({gpu.memory_free / 2**30:.1f} GiB free), NVENC {'yes' if gpu.nvenc else 'no'}, "
        f"NVDEC {'yes' if gpu.nvdec else 'no'}"
    )
    return gpu.device


# --- nvenc: ladder streams against the ffmpeg CLI --------------------------------------------


def _ours(src: Path, out: Path, encoder: str, streams: int) -> float:
    with ThreadPoolExecutor(streams) as pool:
        start = time.perf_counter()
        flag = encoder_flag(encoder)
        jobs = [pool.submit(transcode_file, src, out / f"l{i}", DEFAULT_PROFILES, encoder=flag)
                for i in range(streams)]  # fmt: skip
        for job in jobs:
            job.result()
        return time.perf_counter() - start


def _theirs(commands: Sequence[list[str]]) -> float:
    start = time.perf_counter()
    running = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True) for c in commands]
    errors = [process.communicate()[1] for process in running]
    wall = time.perf_counter() - start
    for process, error in zip(running, errors, strict=True):
        if process.returncode:
            raise MediaError(f"ffmpeg exited with {process.returncode}: {error.strip()[-300:]}")
    return wall


def ladder_streams(encoder: str, seconds: int, max_streams: int) -> None:
    """The default ladder of a ``seconds`` 720p30 clip, k streams at once, on each side."""
    with tempfile.TemporaryDirectory(prefix="lpstream-gpu-") as tmp:
        folder, src = Path(tmp), Path(tmp) / "input.ts"
        make_input(src, seconds)
        with av.open(str(src)) as probe:
            video = probe.streams.video[0]
            size = (video.codec_context.width, video.codec_context.height)
            rate = Fraction(video.average_rate or 30)
            tick = Fraction(video.time_base or Fraction(1, 90_000))

        def peer(i: int) -> list[str]:
            outputs = [["-mpegts_copyts", "1", "-f", "mpegts", str(folder / f"f{i}-{p.name}.ts")]
                       for p in DEFAULT_PROFILES]  # fmt: skip
            return ladder_command(src, size, rate, tick, DEFAULT_PROFILES, outputs, encoder)

        print_toolchains(encoder)
        print(f"clip {size[0]}x{size[1]} {float(rate):g} fps, {seconds} s; ladder "
              + ", ".join(f"{p.name} {p.bitrate // 1000} kbit/s" for p in DEFAULT_PROFILES)
              + f"\nlpstream: workers.transcode.transcode_file(clip, dir, DEFAULT_PROFILES, "
              f"encoder={encoder_flag(encoder)!r}), one thread per stream"
              f"\nffmpeg:   {shlex.join(peer(0))}")  # fmt: skip
        sides: dict[str, Callable[[int], float]] = {
            "lpstream": lambda k: _ours(src, folder, encoder, k),
            "ffmpeg": lambda k: _theirs([peer(i) for i in range(k)]),
        }
        for run in sides.values():  # warm-up: the driver, the encoder, the page cache
            run(1)
        kept = dict.fromkeys(sides, 0)
        speed: dict[str, dict[int, float]] = {side: {} for side in sides}
        k = 1
        while k <= max_streams and any(kept[side] == k // 2 for side in sides):
            for side, run in sides.items():
                if kept[side] < k // 2:
                    continue  # it fell behind (or failed) with fewer streams
                try:
                    wall = run(k)
                except MediaError as exc:
                    print(f"  {side:<8} {k:3d} streams: failed ({exc})")
                    continue
                speed[side][k] = k * seconds / wall
                kept[side] = k if wall <= seconds else kept[side]
                print(f"  {side:<8} {k:3d} streams: {wall:7.2f} s wall, "
                      f"{k * seconds * rate / wall:8.1f} frames/s, speed {k * seconds / wall:6.2f}x"
                      f" real time{'' if wall <= seconds else '  (behind)'}")  # fmt: skip
            k *= 2
        print(f"real-time streams kept, both sides {encoder}: lpstream {kept['lpstream']}, "
              f"ffmpeg {kept['ffmpeg']}")  # fmt: skip
        both = sorted(set(speed["lpstream"]) & set(speed["ffmpeg"]))
        if both:
            print(f"ratio lpstream/ffmpeg, throughput at {both[-1]} streams: "
                  f"{speed['lpstream'][both[-1]] / speed['ffmpeg'][both[-1]]:.3f}")  # fmt: skip


def nvenc_section(device: str, seconds: int, max_streams: int) -> None:
    print("\n== nvenc: default ladder, lpstream against the ffmpeg CLI, both h264_nvenc")
    try:
        encoder = common_encoder("nvenc")
    except SystemExit as exc:
        print(f"nvenc: skipped: {str(exc).split(';')[0]}")
        return
    if device == "cpu":
        print("nvenc: skipped: --device cpu (GPU figures are not measured)")
        return
    ladder_streams(encoder, seconds, max_streams)


# --- ai: pipelines' frames/s and added latency ----------------------------------------------


def time_stage(
    stage: IdentityStage | PipelineRunner | IsolatedRunner,
    frames: Sequence[VideoFrame],
    count: int,
    warmup: int,
) -> tuple[float, list[float]]:
    """(frames/s, per-frame latencies in ms) of ``count`` frames through ``stage`` after
    ``warmup`` frames; outputs leave in input order, so each is matched with the oldest in."""
    for frame in itertools.islice(itertools.cycle(frames), warmup):
        stage.push(frame)
    stage.flush()
    sent: collections.deque[float] = collections.deque()
    latencies: list[float] = []
    start = time.perf_counter()
    for frame in itertools.islice(itertools.cycle(frames), count):
        sent.append(time.perf_counter())
        for _ in stage.push(frame):
            latencies.append((time.perf_counter() - sent.popleft()) * 1000)
    for _ in stage.flush():
        latencies.append((time.perf_counter() - sent.popleft()) * 1000)
    return count / (time.perf_counter() - start), latencies


def _p(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[round(q / 100 * (len(ordered) - 1))] if ordered else 0.0


def ai_section(
    device: str, sizes: Sequence[tuple[int, int]], count: int, warmup: int, isolated: bool
) -> None:
    print(f"\n== ai: {count} frames per run on {device}, batch 1, after {warmup} warm-up frames")
    with tempfile.TemporaryDirectory(prefix="lpstream-gpu-models-") as tmp:
        registry = PipelineRegistry(entry_points=False, models=ModelDirectory(Path(tmp)))
        params: dict[str, dict[str, object]] = {"img2img-diffusion": {"model": TINY}}
        names = list(PIPELINES)
        try:
            from benchmarks.harness.tiny_diffusion import build_tiny_img2img

            build_tiny_img2img(Path(tmp) / TINY)
        except ImportError as exc:
            print(f"ai img2img-diffusion: skipped: needs diffusers and transformers ({exc})")
            names.remove("img2img-diffusion")
        for width, height in sizes:
            frames = random_frames(min(count, 30), width, height)
            size = f"{width}x{height}"
            identity = IdentityStage()
            _, base = time_stage(identity, frames, count, warmup)
            print(f"ai {size} pass-through: latency p50 {_p(base, 50):.4f} ms "
                  f"p95 {_p(base, 95):.4f} ms")  # fmt: skip
            for name in names:
                runners: list[tuple[str, PipelineRunner | IsolatedRunner]] = [
                    ("in-process", registry.create(name, params.get(name), device=device))
                ]
                if isolated:
                    runners.append(("child", IsolatedRunner(
                        registry.get(name), params.get(name), device=device,
                        models=registry.models)))  # fmt: skip
                for where, runner in runners:
                    try:
                        runner.prepare()
                        fps, lat = time_stage(runner, frames, count, warmup)
                    finally:
                        runner.stop()
                    print(
                        f"ai {size} {name:<17} {where:<10} {fps:9.1f} fps  latency p50 "
                        f"{_p(lat, 50):8.3f} ms p95 {_p(lat, 95):8.3f} ms  added p50 "
                        f"{_p(lat, 50) - _p(base, 50):+8.3f} ms p95 "
                        f"{_p(lat, 95) - _p(base, 95):+8.3f} ms"
                    )


# --- zerocopy: where the live path's frames live --------------------------------------------


class _YuvProbe(YuvPipeline):
    """Notes the device and address of the luma plane it gets, and CuPy's view of it."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(name="yuv-probe", description="Notes pointers.")

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def process(self, frames: YuvBatch, params: Params) -> YuvBatch:
        cupy: Any = importlib.import_module("cupy")
        y = frames.y
        self.seen.append((y.device.type, y.data_ptr(), int(cupy.from_dlpack(y).data.ptr)))
        return frames


class _RgbProbe(RgbPipeline):
    """Notes the device and address of the RGB batch it gets; returns it as it is."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(name="rgb-probe", description="Notes pointers.")

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def process(self, frames: torch.Tensor, params: Params) -> torch.Tensor:
        self.seen.append((frames.device.type, frames.data_ptr()))
        return frames


def _torch_owns(pointer: int) -> bool:
    """Whether ``pointer`` is in memory torch's CUDA allocator handed out (not CuPy's)."""
    segments = torch.cuda.memory_snapshot()  # type: ignore[no-untyped-call, unused-ignore]
    return any(s["address"] <= pointer < s["address"] + s["total_size"] for s in segments)


def zerocopy_section(device: str, sizes: Sequence[tuple[int, int]]) -> None:
    print("\n== zerocopy: where a frame lives from upload to the encoder")
    if not device.startswith("cuda"):
        print(f"zerocopy: skipped: zero-copy check needs CUDA and CuPy (device {device})")
        return
    (width, height), count = sizes[0], 8
    frames = random_frames(count, width, height)
    yuv, rgb = _YuvProbe(), _RgbProbe()
    runners = [PipelineRunner(probe, device=device, pool_size=4) for probe in (yuv, rgb)]
    host: set[int] = set()
    same = True
    try:
        for frame in frames:
            for out in runners[0].push(frame):  # batch 1: this frame's output
                host.add(out.planes[0].buffer_ptr)
                pairs = zip(planes_as_arrays(out), planes_as_arrays(frame), strict=True)
                same &= all(bool((a == b).all()) for a, b in pairs)
                del out  # back to the pool, as when the encoder lets go of it
            runners[1].push(frame)
        pointer = yuv.seen[0][1]
        cupy_owned = all(s[1] == s[2] for s in yuv.seen) and not _torch_owns(pointer)
    finally:
        for runner in runners:
            runner.stop()
    yuv_ok = {s[0] for s in yuv.seen} == {"cuda"} and {s[1] for s in yuv.seen} == {pointer}
    rgb_ok = {s[0] for s in rgb.seen} == {"cuda"} and len({s[1] for s in rgb.seen}) == 1
    yes = {True: "yes", False: "NO"}
    print(f"zerocopy {width}x{height}, {count} frames on {device}:\n"
          f"  YUV input on the device, one buffer for every frame ({pointer:#x}): {yes[yuv_ok]};"
          f" CuPy's upload buffer seen through DLPack, not a torch copy: {yes[cupy_owned]}\n"
          f"  RGB input converted on the device into one reused tensor: {yes[rgb_ok]}\n"
          f"  to the encoder: one download a frame into {len(host)} pooled host frame(s) for "
          f"{count} frames; pixels unchanged: {yes[same]}")  # fmt: skip
    print(f"zero-copy between upload and download: {yes[yuv_ok and cupy_owned and rgb_ok]}")


def _sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().partition("x")
        if not (width.isdigit() and height.isdigit()) or int(width) % 2 or int(height) % 2:
            raise argparse.ArgumentTypeError(f"{item!r}: expected WIDTHxHEIGHT with even sides")
        sizes.append((int(width), int(height)))
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--device", help="cuda:N or cpu (default: cuda:0 where there is one)")
    parser.add_argument("--sizes", type=_sizes, default="512x512,1280x720", help="WxH,...")
    parser.add_argument("--frames", type=int, default=200, help="frames per ai run")
    parser.add_argument("--warmup", type=int, default=10, help="frames before each ai run")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--seconds", type=int, default=10, help="nvenc clip length")
    parser.add_argument("--max-streams", type=int, default=32, help="nvenc: most streams tried")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="which of " + ",".join(SECTIONS)
    )
    parser.add_argument("--isolated", action=argparse.BooleanOptionalAction, default=True,
                        help="ai: also run each pipeline in a child process")  # fmt: skip
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown or args.frames < 1 or args.seconds < 1 or args.warmup < 0:
        parser.error(f"--sections: unknown {sorted(unknown)}" if unknown else "counts must be >= 1")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        print_versions()
        device = pick_device(args.device)
        if "nvenc" in sections:
            nvenc_section(device, args.seconds, args.max_streams)
        if "ai" in sections:
            ai_section(device, args.sizes, args.frames, args.warmup, args.isolated)
        if "zerocopy" in sections:
            zerocopy_section(device, args.sizes)
    except (ConfigError, MediaError, PipelineError, OSError, subprocess.CalledProcessError) as exc:
        print(f"benchmarks.gpu: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
