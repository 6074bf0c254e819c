"""What each side of a benchmark runs: the FFmpeg and x264 builds, the encoder and its settings.

How this works: lpstream encodes through PyAV, whose wheel bundles its own FFmpeg and x264;
the peer is the ``ffmpeg`` command line on PATH (Debian's FFmpeg 5.1 here), linked against the
system's libx264. Neither side can be told to use the other's libraries, so each benchmark
prints both. x264 writes its build and every setting it ran with into an SEI message in the
first frame (``x264 - core 164 r3095 baee400 - H.264/MPEG-4 AVC codec - ... - options:
cabac=1 ref=1 ...``): encoding one tiny frame on each side gives the build, and reading the
message from each side's output (:func:`x264_settings`) shows whether they ran with the same
settings.

Encoder family: lpstream's ``auto`` takes NVENC where a GPU is present, while a peer command
line names its encoder. :func:`common_encoder` picks one for both: ``h264_nvenc`` only when
PyAV and the command line can both open it, ``libx264`` otherwise. :func:`encoder_args` turns
the options lpstream's worker gives that encoder (``workers.transcode._encoder_options``, the
one place they are written) into command-line arguments, so the peer's rate control, GOP and
keyframe settings are lpstream's by construction. The encoder's threading is PyAV's default,
which lpstream keeps: slice threads, which libx264 turns into ``sliced-threads`` (two slices a
frame on two cores); the command line's default would be frame threads, so the peer is given
the same ``-thread_type``. :func:`settings_difference` shows what still differs.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import attrs
import av

from lpstream.media import VideoProfile, scaled_size
from workers.gpu import NVENC, X264, nvenc_available
from workers.transcode import _encoder_options

__all__ = [
    "ENCODER_CHOICES",
    "Toolchain",
    "cli_toolchain",
    "common_encoder",
    "encoder_args",
    "encoder_flag",
    "ladder_command",
    "lpstream_toolchain",
    "print_toolchains",
    "settings_difference",
    "x264_settings",
]

ENCODER_CHOICES = ("auto", "x264", "nvenc")
"""``--encoder`` of the benchmarks: ``auto`` is NVENC when both sides have it, else x264."""

_QUIET = ("ffmpeg", "-hide_banner", "-loglevel", "error", "-y")
_SEI = re.compile(rb"x264 - core [^\x00]*?(?=\x00|\x80)")


@attrs.frozen(kw_only=True)
class Toolchain:
    """The media libraries and encoder one side of a benchmark runs."""

    side: str
    """Who: ``lpstream (PyAV)`` or ``peer (ffmpeg CLI)``."""
    ffmpeg: str
    """FFmpeg's version (and libavcodec's)."""
    x264: str
    """x264's build string as it writes it into its output, or why it is unknown."""
    encoder: str
    """The FFmpeg encoder this side uses: ``libx264`` or ``h264_nvenc``."""

    def describe(self) -> str:
        return f"{self.side}: FFmpeg {self.ffmpeg}; x264 {self.x264}; encoder {self.encoder}"


def x264_settings(path: Path) -> str | None:
    """The ``options:`` part of the x264 SEI message in the first video packet of ``path``."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return None
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                found = _SEI.search(bytes(packet))
                if found is None:
                    return None
                text = found.group().decode("ascii", "replace")
                return text.split(" - options: ", 1)[1] if " - options: " in text else None
    return None


def settings_difference(ours: str | None, theirs: str | None) -> str:
    """``identical``, or the x264 settings that differ between two SEI option strings."""
    if ours is None or theirs is None:
        return "unknown (no x264 SEI in an output)"
    a = dict(item.split("=", 1) for item in ours.split() if "=" in item)
    b = dict(item.split("=", 1) for item in theirs.split() if "=" in item)
    differ = [f"{k} {a.get(k, '-')} vs {b.get(k, '-')}" for k in sorted(a.keys() | b.keys())
              if a.get(k) != b.get(k)]  # fmt: skip
    return "identical" if not differ else "differ: " + ", ".join(differ)


def _x264_build(data: bytes) -> str | None:
    found = _SEI.search(data)
    if found is None:
        return None
    return found.group().decode("ascii", "replace").split(" - ", 2)[1]


def lpstream_toolchain(encoder: str) -> Toolchain:
    """PyAV's bundled FFmpeg, and its x264 read from a frame it encodes."""
    codec = av.library_versions["libavcodec"]
    version = getattr(av, "ffmpeg_version_info", "?")
    return Toolchain(
        side=f"lpstream (PyAV {av.__version__})",
        ffmpeg=f"{version} (libavcodec {'.'.join(map(str, codec))})",
        x264=_pyav_x264(),
        encoder=encoder,
    )


@functools.cache
def _pyav_x264() -> str:
    try:
        ctx = av.CodecContext.create(X264, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
        ctx.time_base = Fraction(1, 30)
        ctx.open()
        frame = av.VideoFrame(64, 64, "yuv420p")
        frame.pts = 0
        data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    except av.FFmpegError as exc:
        return f"unknown ({exc})"
    return _x264_build(data) or "unknown (no SEI in its output)"


def cli_toolchain(encoder: str) -> Toolchain:
    """``ffmpeg -version`` of the command line on PATH, and its x264 from a frame it encodes."""
    text = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    version = text.splitlines()[0].removeprefix("ffmpeg version ").split(" Copyright")[0]
    found = re.search(r"libavcodec\s+(\d+\.\s*\d+\.\s*\d+)", text)
    if found:
        version += f" (libavcodec {found.group(1).replace(' ', '')})"
    return Toolchain(side="peer (ffmpeg CLI)", ffmpeg=version, x264=_cli_x264(), encoder=encoder)


@functools.cache
def _cli_x264() -> str:
    done = subprocess.run(
        [*_QUIET, "-f", "lavfi", "-i", "color=size=64x64:rate=30", "-frames:v", "1",
         "-c:v", X264, "-f", "h264", "-"],
        capture_output=True,
    )  # fmt: skip
    if done.returncode:
        return f"unknown (ffmpeg exited with {done.returncode})"
    return _x264_build(done.stdout) or "unknown (no SEI in its output)"


@functools.cache
def _cli_nvenc() -> bool:
    done = subprocess.run(
        [*_QUIET, "-f", "lavfi", "-i", "color=size=256x144:rate=30", "-frames:v", "1",
         "-c:v", NVENC, "-f", "null", "-"],
        capture_output=True,
    )  # fmt: skip
    return done.returncode == 0


def common_encoder(preference: str) -> str:
    """The FFmpeg encoder both sides use for ``preference`` (one of :data:`ENCODER_CHOICES`).

    Raises:
        SystemExit: ``nvenc`` was asked for and one side cannot run it.
    """
    both_nvenc = preference != "x264" and nvenc_available() and _cli_nvenc()
    if preference == "nvenc" and not both_nvenc:
        raise SystemExit(
            f"h264_nvenc is not usable on both sides (PyAV: {nvenc_available()}, "
            f"ffmpeg CLI: {_cli_nvenc()}); use --encoder x264"
        )
    return NVENC if both_nvenc else X264


def encoder_flag(encoder: str) -> str:
    """The value of lpstream's ``--encoder`` flag that selects ``encoder``."""
    return "nvenc" if encoder == NVENC else X264


def encoder_args(
    encoder: str,
    profile: VideoProfile,
    rate: Fraction,
    *,
    live: bool = False,
    threads: int = 0,
) -> list[str]:
    """One output's encoder arguments for the ffmpeg command line, as lpstream's worker sets
    its encoder for ``profile``: codec options, bitrate, thread count, source keyframes kept."""
    args = ["-c:v", encoder, "-b:v", str(profile.bitrate), "-threads", str(threads)]
    args += ["-thread_type", _pyav_thread_type(encoder)]
    for key, value in _encoder_options(encoder, profile, rate, live=live).items():
        args += [f"-{key}:v" if key == "profile" else f"-{key}", value]
    return [*args, "-force_key_frames", "source"]


@functools.cache
def _pyav_thread_type(encoder: str) -> str:
    """The threading PyAV gives a new encoder, which lpstream's worker keeps (slice threads:
    for libx264 that is ``sliced-threads``), as the command line's ``-thread_type`` value; the
    command line's own default (slice+frame) would make libx264 use frame threads."""
    kind = av.CodecContext.create(encoder, "w").thread_type
    return "+".join(flag.name.lower() for flag in type(kind) if flag in kind and flag.name)


def ladder_command(
    src: Path,
    size: tuple[int, int],
    rate: Fraction,
    tick: Fraction,
    profiles: Sequence[VideoProfile],
    outputs: Sequence[Sequence[str]],
    encoder: str,
    *,
    head: Sequence[str] = (),
    threads: int = 0,
    loglevel: str = "error",
) -> list[str]:
    """One ffmpeg process making lpstream's ladder of ``src``: decoded once, scaled (bicubic)
    into every profile's box, encoded as lpstream's worker encodes, the audio copied.

    Args:
        size: the source's frame size; ``rate`` its frame rate; ``tick`` its time base (the
            worker's encoder time base).
        outputs: per profile, the muxer arguments and the output name (``-f mpegts out.ts``).
        head: global and input options (``-benchmark``, ``-re``, ``-f mpegts``) placed before
            ``-i``.
        threads: encoder threads per rendition (0: the encoder chooses), as ``--threads``.
    """
    n = len(profiles)
    graph = [f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n))]
    for i, profile in enumerate(profiles):
        w, h = scaled_size(*size, profile)
        fps = f",fps={profile.fps}" if profile.fps and Fraction(profile.fps) != rate else ""
        graph.append(f"[s{i}]scale={w}:{h}:flags=bicubic,format=yuv420p{fps}[v{i}]")
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", loglevel, "-y", "-copyts", "-threads", "0",
        *head, "-i", str(src),
        "-filter_complex", ";".join(graph),
    ]  # fmt: skip
    for i, (profile, output) in enumerate(zip(profiles, outputs, strict=True)):
        converted = bool(profile.fps) and Fraction(profile.fps) != rate
        cmd += [
            "-map", f"[v{i}]", "-map", "0:a?",
            *encoder_args(encoder, profile, Fraction(profile.fps) if converted else rate,
                          threads=threads),
            "-enc_time_base:v", f"{tick.numerator}:{tick.denominator}",
            "-fps_mode", "cfr" if converted else "passthrough",
            "-c:a", "copy", *output,
        ]  # fmt: skip
    return cmd


def print_toolchains(encoder: str, *, peer: bool = True) -> None:
    """Prints what lpstream runs and, with ``peer``, what the ffmpeg command line runs."""
    print(lpstream_toolchain(encoder).describe())
    if peer:
        print(cli_toolchain(encoder).describe())
