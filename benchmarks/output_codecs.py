"""What an HEVC or AV1 rendition costs and saves, against H.264 and the ffmpeg command line.

Two measurements on one generated 720p30 H.264 + AAC clip (testsrc2, 2 s GOPs):

1. CPU per stream: ``lpstream transcode`` making one 640x360 rendition of each codec (a
   profile with ``"codec"``), against one ffmpeg command line making the same rendition with
   the same encoder settings (``benchmarks.harness.toolchain.ladder_command``: the worker's
   options for that encoder, the source's keyframes kept). Whole processes, runs alternating,
   medians of CPU seconds (user + system). The two sides run different builds of each encoder
   (PyAV's FFmpeg 8 against Debian's FFmpeg 5.1): both are printed, and a side-by-side ratio
   only where the encoder builds match. lpstream's HEVC and AV1 renditions against its own
   H.264 one (same process, same input) is like for like and always printed.
2. Bits at equal quality: each codec's rendition made by lpstream at several bitrates, its
   PSNR against the source scaled the same way (bicubic, FFmpeg's ``psnr`` filter; Debian's
   FFmpeg has no libvmaf), and the Bjøntegaard rate difference against H.264 (the average
   bitrate change at equal PSNR over the range the curves share; negative: fewer bits).

    python -m benchmarks.output_codecs [--seconds 10] [--runs 3]
        [--bitrates 250000,500000,1000000,2000000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from benchmarks.harness.toolchain import cli_toolchain, ladder_command, lpstream_toolchain
from benchmarks.transcode_vs_ffmpeg import lpstream_program, make_input, timed
from lpstream.media import VideoProfile
from workers.gpu import CPU_ENCODERS

CODECS = ("h264", "hevc", "av1")
_SUFFIX = {"h264": ".ts", "hevc": ".mp4", "av1": ".mp4"}
_MP4 = ["-movflags", "empty_moov+default_base_moof+frag_discont", "-frag_duration", "100000",
        "-video_track_timescale", "90000", "-bsf:a", "aac_adtstoasc"]  # fmt: skip
"""The worker's fragmented-MP4 muxer settings, on the command line (whose MP4 muxer wants the
ADTS headers of copied AAC removed, as the worker removes them)."""
_VERSION_LINES = {
    "libx265": re.compile(r"HEVC encoder version (\S+)"),
    "libsvtav1": re.compile(r"SVT-AV1 Encoder Lib (v\S+)"),
}


def profile_for(codec: str, bitrate: int) -> VideoProfile:
    """The 640x360 rendition of ``codec`` at ``bitrate``."""
    return VideoProfile(name=codec, width=640, height=360, bitrate=bitrate, codec=codec)


def write_profiles(path: Path, profile: VideoProfile) -> Path:
    path.write_text(json.dumps([profile.to_json()]))
    return path


def ours_command(src: Path, out: Path, profiles: Path) -> list[str]:
    return [*lpstream_program(), "transcode", str(src), "-o", str(out), "--profiles",
            str(profiles), "--encoder", "libx264"]  # fmt: skip


def theirs_command(src: Path, out: Path, profile: VideoProfile) -> list[str]:
    with av.open(str(src)) as probe:
        video = probe.streams.video[0]
        size = (video.codec_context.width, video.codec_context.height)
        rate = Fraction(video.average_rate or 30)
        tick = Fraction(video.time_base or Fraction(1, 90_000))
    muxer = ["-f", "mpegts"] if profile.codec == "h264" else [*_MP4, "-f", "mp4"]
    if profile.codec == "hevc":
        muxer = ["-tag:v", "hvc1", *muxer]
    output = [*muxer, str(out / (profile.name + _SUFFIX[profile.codec]))]
    return ladder_command(src, size, rate, tick, [profile], [output], CPU_ENCODERS[profile.codec])


def encoder_build(encoder: str, *, peer: bool) -> str:
    """The build of ``encoder`` on one side: x264's from the SEI it writes, x265's and
    SVT-AV1's from the banner they print when one frame is encoded."""
    if encoder == "libx264":
        chain = cli_toolchain(encoder) if peer else lpstream_toolchain(encoder)
        return "x264 " + chain.x264
    if peer:
        command = ["ffmpeg", "-hide_banner", "-f", "lavfi", "-i", "color=size=64x64:rate=30",
                   "-frames:v", "1", "-c:v", encoder, "-f", "null", "-"]  # fmt: skip
    else:
        command = [sys.executable, "-c", _ONE_FRAME.format(encoder=encoder)]
    env = {**os.environ, "SVT_LOG": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = _VERSION_LINES[encoder].search(result.stderr + result.stdout)
    return f"{encoder} {found.group(1)}" if found else f"{encoder} (unknown build)"


_ONE_FRAME = """
import av
with av.open("/dev/null", "w", format="null") as out:
    s = out.add_stream("{encoder}", rate=30)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    out.mux(s.encode(av.VideoFrame(64, 64, "yuv420p")))
    out.mux(s.encode(None))
"""
"""Encodes one frame with PyAV, which lets the encoder print its banner."""


def video_bitrate(path: Path) -> float:
    """Bits per second of a file's video packets (over first to last picture plus one)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 30)
        size, first, last = 0, math.inf, -math.inf
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None or stream.time_base is None:
                continue
            size += packet.size
            t = float(packet.pts * stream.time_base)
            first, last = min(first, t), max(last, t)
    return size * 8 / (last - first + 1 / rate)


def psnr(rendition: Path, source: Path) -> float:
    """Average PSNR (all planes) of ``rendition`` against ``source`` scaled to its size."""
    graph = (
        "[1:v]scale=640:360:flags=bicubic,format=yuv420p[ref];"
        "[0:v]format=yuv420p[out];[out][ref]psnr"
    )
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(rendition), "-i", str(source), "-lavfi", graph,
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"average:([0-9.]+|inf)", result.stderr)
    if found is None:
        raise RuntimeError(f"no PSNR in ffmpeg's output: {result.stderr[-500:]}")
    return float(found.group(1))


def bd_rate(reference: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjøntegaard rate difference in percent of ``test`` against ``reference`` (points of
    (bitrate, PSNR)): log-rate interpolated piecewise-linearly over the PSNR range both
    cover; None when they share none."""
    ref = sorted((q, math.log(r)) for r, q in reference)
    new = sorted((q, math.log(r)) for r, q in test)
    low, high = max(ref[0][0], new[0][0]), min(ref[-1][0], new[-1][0])
    if high <= low:
        return None
    grid = np.linspace(low, high, 100)
    ref_rate = np.interp(grid, [q for q, _ in ref], [r for _, r in ref])
    new_rate = np.interp(grid, [q for q, _ in new], [r for _, r in new])
    return float((math.exp(float(np.mean(new_rate - ref_rate))) - 1) * 100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="length of the generated clip")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bitrates", default="250000,500000,1000000,2000000")
    args = parser.parse_args(argv)
    bitrates = [int(b) for b in args.bitrates.split(",")]
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1's banner on every run would bury the figures
    with tempfile.TemporaryDirectory(prefix="lpstream-codecs-") as tmp:
        tmp_dir = Path(tmp)
        src = tmp_dir / "input.ts"
        make_input(src, args.seconds)
        print(f"input: testsrc2 1280x720 30 fps, {args.seconds} s, H.264 3 Mb/s; rendition 640x360")
        print(f"PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}; peer: "
              + subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True,
                               check=True).stdout.splitlines()[0])  # fmt: skip
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")

        print("\n1. CPU per stream (whole processes, median of", args.runs, "runs)")
        cpu: dict[str, dict[str, float]] = {}
        for codec in CODECS:
            profile = profile_for(codec, 500_000)
            ours_dir, theirs_dir = tmp_dir / f"ours-{codec}", tmp_dir / f"theirs-{codec}"
            theirs_dir.mkdir()
            commands = {
                "lpstream": ours_command(
                    src, ours_dir, write_profiles(tmp_dir / f"{codec}.json", profile)
                ),
                "ffmpeg": theirs_command(src, theirs_dir, profile),
            }
            for command in commands.values():
                timed(command)
            samples: dict[str, list[float]] = {"lpstream": [], "ffmpeg": []}
            for _ in range(args.runs):
                for side, command in commands.items():
                    samples[side].append(timed(command)[1])
            cpu[codec] = {side: statistics.median(v) for side, v in samples.items()}
            builds = {
                side: encoder_build(CPU_ENCODERS[codec], peer=side == "ffmpeg") for side in commands
            }
            print(
                f"  {codec}: lpstream {cpu[codec]['lpstream']:.2f} s cpu ({builds['lpstream']}), "
                f"ffmpeg {cpu[codec]['ffmpeg']:.2f} s cpu ({builds['ffmpeg']})"
            )
            if builds["lpstream"] == builds["ffmpeg"] and "unknown" not in builds["lpstream"]:
                ratio = cpu[codec]["lpstream"] / cpu[codec]["ffmpeg"]
                print(f"    ratio lpstream/ffmpeg: {ratio:.2f}")
            else:
                print("    no ratio: the two sides run different builds of the encoder")
            print("    lpstream:", shlex.join(commands["lpstream"]))
            print("    ffmpeg:  ", shlex.join(commands["ffmpeg"]))
        for codec in ("hevc", "av1"):
            print(
                f"  lpstream {codec} / lpstream h264 (same process, same input): "
                f"{cpu[codec]['lpstream'] / cpu['h264']['lpstream']:.2f}"
            )

        print("\n2. Bits at equal PSNR (lpstream's renditions)")
        curves: dict[str, list[tuple[float, float]]] = {}
        for codec in CODECS:
            curves[codec] = []
            for bitrate in bitrates:
                profile = profile_for(codec, bitrate)
                out = tmp_dir / f"rd-{codec}-{bitrate}"
                subprocess.run(
                    ours_command(src, out, write_profiles(tmp_dir / "rd.json", profile)),
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                path = out / (codec + _SUFFIX[codec])
                point = (video_bitrate(path), psnr(path, src))
                curves[codec].append(point)
                print(f"  {codec} asked {bitrate} b/s: {point[0]:.0f} b/s, PSNR {point[1]:.2f} dB")
        for codec in ("hevc", "av1"):
            change = bd_rate(curves["h264"], curves[codec])
            said = "no PSNR range in common" if change is None else f"{change:+.1f}% bits"
            print(f"  {codec} against h264 at equal PSNR (BD-rate): {said}")
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
