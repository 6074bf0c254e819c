"""Ladder transcoding: lpstream's ``transcode_file`` against one ffmpeg command line.

Both sides decode the input once, scale it (bicubic) to every rendition of the ladder, encode
with libx264 under the same settings (preset, bitrate, maxrate, bufsize, keyint, no scene
cuts, keyframes where the source has them, same thread count), copy the audio and write one
MPEG-TS file per rendition. Runs alternate between the two; the medians and their ratio are
printed (target: ours / ffmpeg <= 1.05).

    python benchmarks/transcode_vs_ffmpeg.py [--input IN.ts] [--runs 5] [--threads 0]

Note: PyAV wheels bundle their own FFmpeg and x264 builds, which may differ in version from the
ffmpeg on PATH; the script prints both.
"""

from __future__ import annotations

import argparse
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

from lpstream.media import DEFAULT_PROFILES, VideoProfile, load_profiles, scaled_size
from workers.transcode import transcode_file


def make_input(path: Path, seconds: int) -> None:
    """Writes a 720p30 H.264 + AAC MPEG-TS test clip with 2 s GOPs."""
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3M", "-g", "60",
            "-c:a", "aac", "-b:a", "128k",
            "-f", "mpegts", str(path),
        ],
        check=True,
    )  # fmt: skip


def source_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.width, ctx.height


def source_rate(path: Path) -> Fraction:
    with av.open(str(path)) as container:
        return Fraction(container.streams.video[0].average_rate or 30)


def ffmpeg_command(
    src: Path, out_dir: Path, profiles: Sequence[VideoProfile], threads: int
) -> list[str]:
    """One ffmpeg run producing the same ladder as ``transcode_file``."""
    width, height = source_size(src)
    n = len(profiles)
    graph = [f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n))]
    for i, profile in enumerate(profiles):
        w, h = scaled_size(width, height, profile)
        fps = f",fps={profile.fps}" if profile.fps else ""
        graph.append(f"[s{i}]scale={w}:{h}:flags=bicubic,format=yuv420p{fps}[v{i}]")
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-copyts", "-threads", "0",
        "-i", str(src), "-filter_complex", ";".join(graph),
    ]  # fmt: skip
    for i, profile in enumerate(profiles):
        rate = profile.fps or source_rate(src)
        keyint = max(1, round(profile.gop * rate)) if profile.gop > 0 else 0
        params = "scenecut=0" + (f":keyint={keyint}:min-keyint={keyint}" if keyint else "")
        cmd += [
            "-map", f"[v{i}]", "-map", "0:a?",
            "-c:v", "libx264", "-preset", profile.preset,
            "-b:v", str(profile.bitrate), "-maxrate", str(profile.bitrate * 6 // 5),
            "-bufsize", str(profile.bitrate * 2),
            "-x264-params", params, "-forced-idr", "1", "-force_key_frames", "source",
            "-threads", str(threads), "-fps_mode", "passthrough" if not profile.fps else "cfr",
            "-c:a", "copy", "-mpegts_copyts", "1",
            "-f", "mpegts", str(out_dir / f"{profile.name}.ts"),
        ]  # fmt: skip
    if any(p.profile for p in profiles):
        raise SystemExit("this benchmark compares ladders without an explicit x264 profile")
    return cmd


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--input", type=Path, help="MPEG-TS input (default: a generated clip)")
    parser.add_argument("--seconds", type=int, default=10, help="length of the generated clip")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="x264 threads (0 = auto)")
    parser.add_argument("--profiles", type=Path, help="profiles JSON (default ladder if unset)")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not on PATH", file=sys.stderr)
        return 2

    profiles = load_profiles(args.profiles) if args.profiles else DEFAULT_PROFILES
    with tempfile.TemporaryDirectory(prefix="lpstream-bench-") as tmp:
        tmp_dir = Path(tmp)
        src = args.input or tmp_dir / "input.ts"
        if args.input is None:
            make_input(src, args.seconds)
        ours_dir, theirs_dir = tmp_dir / "ours", tmp_dir / "ffmpeg"
        theirs_dir.mkdir()
        cmd = ffmpeg_command(src, theirs_dir, profiles, args.threads)

        ffmpeg_version = subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
        print(f"input: {src} {source_size(src)}")
        print(f"PyAV {av.__version__}, libavcodec {av.library_versions['libavcodec']}")
        print(f"CLI: {ffmpeg_version}")
        print("ffmpeg command:", shlex.join(cmd))

        ours: list[float] = []
        theirs: list[float] = []
        ours_cpu: list[float] = []
        theirs_cpu: list[float] = []
        # One warm-up of each (page cache, dynamic loading), then alternate.
        transcode_file(src, ours_dir, profiles, encoder="x264", threads=args.threads)
        subprocess.run(cmd, check=True)
        for run in range(args.runs):
            start, cpu = time.perf_counter(), time.process_time()
            results = transcode_file(src, ours_dir, profiles, encoder="x264", threads=args.threads)
            ours.append(time.perf_counter() - start)
            ours_cpu.append(time.process_time() - cpu)
            start, cpu = time.perf_counter(), _children_cpu()
            subprocess.run(cmd, check=True)
            theirs.append(time.perf_counter() - start)
            theirs_cpu.append(_children_cpu() - cpu)
            print(
                f"run {run + 1}: ours {ours[-1]:.3f} s (cpu {ours_cpu[-1]:.2f} s), "
                f"ffmpeg {theirs[-1]:.3f} s (cpu {theirs_cpu[-1]:.2f} s)"
            )

        for result in results:
            theirs_size = (theirs_dir / f"{result.name}.ts").stat().st_size
            print(
                f"  {result.name}: {result.width}x{result.height} {result.frames} frames, "
                f"ours {result.size} B, ffmpeg {theirs_size} B"
            )
        ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
        print(f"median ours:   {ours_median:.3f} s wall, {statistics.median(ours_cpu):.2f} s cpu")
        print(
            f"median ffmpeg: {theirs_median:.3f} s wall, {statistics.median(theirs_cpu):.2f} s cpu"
        )
        print(f"ratio ours/ffmpeg: {ours_median / theirs_median:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
