"""GPU discovery: which H.264 encoder this machine can run.

Nothing here imports a GPU-only package; the check asks PyAV for the ``h264_nvenc``
encoder and then opens it on a tiny frame, which only succeeds where the NVIDIA driver and a
CUDA device are present. The answer is computed once per process.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Final

import av

from lpstream.errors import MediaError

__all__ = ["ENCODER_PREFERENCES", "choose_encoder", "nvenc_available"]

NVENC: Final = "h264_nvenc"
X264: Final = "libx264"

ENCODER_PREFERENCES = ("auto", "nvenc", "x264")
"""Values accepted by :func:`choose_encoder` (also the encoder names themselves)."""


@functools.cache
def nvenc_available() -> bool:
    """True when PyAV has ``h264_nvenc`` and it can encode a frame on this machine."""
    if NVENC not in av.codecs_available:
        return False
    try:
        # Capture keeps the driver's "cannot load libcuda" noise off stderr.
        with av.logging.Capture():
            ctx = av.CodecContext.create(NVENC, "w")
            ctx.width = 256
            ctx.height = 144
            ctx.pix_fmt = "yuv420p"
            ctx.time_base = Fraction(1, 30)
            ctx.framerate = Fraction(30, 1)
            ctx.open()
            frame = av.VideoFrame(256, 144, "yuv420p")
            frame.pts = 0
            ctx.encode(frame)
            ctx.encode(None)
    except (av.FFmpegError, OSError, ValueError, RuntimeError):
        return False
    return True


def choose_encoder(preference: str = "auto") -> str:
    """The FFmpeg encoder name for ``preference``: ``auto``, ``nvenc`` or ``x264``.

    ``auto`` picks ``h264_nvenc`` where it works and ``libx264`` elsewhere.

    Raises:
        MediaError: ``nvenc`` was asked for but cannot run here, or the preference is unknown.
    """
    wanted = preference.strip().lower()
    if wanted in ("nvenc", NVENC):
        if not nvenc_available():
            raise MediaError(
                "the nvenc encoder was requested but h264_nvenc cannot run here "
                "(PyAV lacks it, or no CUDA device/driver is present); use 'auto' or 'x264'"
            )
        return NVENC
    if wanted in ("x264", X264, "cpu"):
        return X264
    if wanted == "auto":
        return NVENC if nvenc_available() else X264
    raise MediaError(f"unknown encoder {preference!r}: expected one of auto, nvenc, x264")
