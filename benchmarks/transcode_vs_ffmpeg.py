"""Ladder transcoding as a user runs it: ``lpstream transcode`` against one ffmpeg command line.

Both sides are whole processes started the same way (``subprocess.run``), so process start-up
(the interpreter and its imports on one side, loading FFmpeg's shared libraries on the other)
counts on both. Both decode the input once, scale it (bicubic) into every rendition's box,
encode with the same encoder under lpstream's settings (``benchmarks.harness.encoder_args``:
preset, bitrate, maxrate, bufsize, keyint, no scene cuts, an IDR wherever the source has a
keyframe, encoder threads chosen by the encoder), copy the audio and write one MPEG-TS file
per rendition. Runs alternate between the two; the medians and their ratio are printed
(target: lpstream / ffmpeg <= 1.0), with each side's FFmpeg and x264 build, the x264 settings
each output was encoded with (read back from the stream) and, for the start-up share, each
side's start-up alone (the interpreter importing the CLI and the worker, ``ffmpeg -version``).

With ``--source-codec hevc`` the generated clip is HEVC (libx265, as an Enhanced RTMP
publisher sends it), so both sides pay for decoding HEVC: what an HEVC source costs a worker
against an H.264 one, like for like with ffmpeg.

    python -m benchmarks.transcode_vs_ffmpeg [--input IN] [--seconds 10] [--runs 5]
        [--encoder auto|x264|nvenc] [--profiles FILE] [--source-codec h264|hevc]
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av

from benchmarks.harness.toolchain import (
    ENCODER_CHOICES,
    common_encoder,
    encoder_flag,
    ladder_command,
    print_toolchains,
    settings_difference,
    x264_settings,
)
from lpstream.media import DEFAULT_PROFILES, load_profiles

_SOURCE_ENCODERS = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast"],
    "hevc": ["-c:v", "libx265", "-preset", "veryfast", "-x265-params", "log-level=error"],
}


def make_input(path: Path, seconds: int, codec: str = "h264") -> None:
    """Writes a 720p30 ``codec`` (h264 or hevc) + AAC MPEG-TS test clip with 2 s GOPs."""
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(seconds),
            *_SOURCE_ENCODERS[codec], "-b:v", "3M", "-g", "60",
            "-c:a", "aac", "-b:a", "128k",
            "-f", "mpegts", str(path),
        ],
        check=True,
    )  # fmt: skip


def lpstream_program() -> list[str]:
    """The ``lpstream`` console script next to this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("lpstream")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lpstream"]


def timed(command: Sequence[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--input", type=Path, help="input file (default: a generated clip)")
    parser.add_argument("--seconds", type=int, default=10, help="length of the generated clip")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--encoder", choices=ENCODER_CHOICES, default="auto")
    parser.add_argument("--profiles", type=Path, help="profiles JSON (default ladder if unset)")
    parser.add_argument(
        "--source-codec",
        choices=sorted(_SOURCE_ENCODERS),
        default="h264",
        help="video codec of the generated clip (default h264)",
    )
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not on PATH", file=sys.stderr)
        return 2

    profiles = load_profiles(args.profiles) if args.profiles else DEFAULT_PROFILES
    encoder = common_encoder(args.encoder)
    with tempfile.TemporaryDirectory(prefix="lpstream-bench-") as tmp:
        tmp_dir = Path(tmp)
        src = args.input or tmp_dir / "input.ts"
        if args.input is None:
            make_input(src, args.seconds, args.source_codec)
        with av.open(str(src)) as probe:
            video = probe.streams.video[0]
            size = (video.codec_context.width, video.codec_context.height)
            rate = Fraction(video.average_rate or 30)
            tick = Fraction(video.time_base or Fraction(1, 90_000))
        ours_dir, theirs_dir = tmp_dir / "lpstream", tmp_dir / "ffmpeg"
        theirs_dir.mkdir()
        ours = [*lpstream_program(), "transcode", str(src), "-o", str(ours_dir),
                "--encoder", encoder_flag(encoder)]  # fmt: skip
        if args.profiles:
            ours += ["--profiles", str(args.profiles)]
        outputs = [
            ["-mpegts_copyts", "1", "-f", "mpegts", str(theirs_dir / f"{p.name}.ts")]
            for p in profiles
        ]
        theirs = ladder_command(src, size, rate, tick, profiles, outputs, encoder)

        print(f"input: {src} {video.codec_context.name} {size[0]}x{size[1]} {float(rate):g} fps")
        print_toolchains(encoder)
        print("lpstream:", shlex.join(ours))
        print("ffmpeg:  ", shlex.join(theirs))
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")

        walls: dict[str, list[float]] = {"lpstream": [], "ffmpeg": []}
        cpus: dict[str, list[float]] = {"lpstream": [], "ffmpeg": []}
        commands = {"lpstream": ours, "ffmpeg": theirs}
        # One warm-up of each (page cache, bytecode cache, dynamic loading), then alternate.
        for command in commands.values():
            timed(command)
        for run in range(args.runs):
            for side, command in commands.items():
                wall, cpu = timed(command)
                walls[side].append(wall)
                cpus[side].append(cpu)
            print(
                f"run {run + 1}: "
                + ", ".join(f"{s} {walls[s][-1]:.3f} s (cpu {cpus[s][-1]:.2f} s)" for s in walls)
            )

        # Start-up alone: the interpreter with what `lpstream transcode` imports before its
        # first frame (the CLI, PyAV and the worker), and ffmpeg loading its libraries.
        startup = {
            "lpstream": [sys.executable, "-c", "import lpstream.cli, workers.transcode"],
            "ffmpeg": ["ffmpeg", "-hide_banner", "-version"],
        }
        started = {s: statistics.median(timed(c)[0] for _ in range(args.runs)) for s, c in
                   startup.items()}  # fmt: skip

        for profile in profiles:
            a, b = ours_dir / f"{profile.name}.ts", theirs_dir / f"{profile.name}.ts"
            with av.open(str(a)) as c:
                frames = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
            print(
                f"  {profile.name}: {frames} frames, lpstream {a.stat().st_size} B, "
                f"ffmpeg {b.stat().st_size} B; x264 settings "
                f"{settings_difference(x264_settings(a), x264_settings(b))}"
            )
        medians = {s: statistics.median(walls[s]) for s in walls}
        for side in walls:
            print(
                f"median {side + ':':<9} {medians[side]:.3f} s wall, "
                f"{statistics.median(cpus[side]):.2f} s cpu; start-up alone "
                f"({shlex.join(startup[side][1:])}) {started[side]:.3f} s"
            )
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
        ratio = medians["lpstream"] / medians["ffmpeg"]
        print(f"ratio lpstream/ffmpeg (whole processes): {ratio:.3f} (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
