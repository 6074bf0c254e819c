"""GPU discovery: the CUDA devices of this machine, which encoders it can run, and which GPU
a new live session goes to.

Nothing here imports a GPU-only package at import time. The encoder check asks PyAV for an
NVENC encoder (``h264_nvenc``, ``hevc_nvenc``, ``av1_nvenc``) and then opens it on a tiny
frame, which only succeeds where the NVIDIA driver and a CUDA device with that encoder are
present (AV1 needs an Ada or later GPU; data-centre GPUs such as the H100 have no NVENC).
Devices are listed through torch (``torch.cuda``) when it is installed, else through CuPy;
neither, or no driver, means no GPU. Answers are computed once per process.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any, Final

import attrs
import av
from av.video.codeccontext import VideoCodecContext

from lpstream.errors import ConfigError, MediaError

__all__ = [
    "CPU_ENCODERS",
    "ENCODER_PREFERENCES",
    "NVENC_ENCODERS",
    "GpuInfo",
    "choose_encoder",
    "discover_gpus",
    "encoder_for",
    "nvdec_available",
    "nvenc_available",
    "place_session",
    "select_gpus",
]

NVENC: Final = "h264_nvenc"
X264: Final = "libx264"

CPU_ENCODERS: Final = {"h264": X264, "hevc": "libx265", "av1": "libsvtav1"}
"""The CPU encoder of each output codec (``lpstream.media.OUTPUT_CODECS``)."""
NVENC_ENCODERS: Final = {"h264": NVENC, "hevc": "hevc_nvenc", "av1": "av1_nvenc"}
"""The NVENC encoder of each output codec."""

ENCODER_PREFERENCES = ("auto", "nvenc", "x264")
"""Values accepted by :func:`choose_encoder` (also the encoder names themselves)."""


@functools.cache
def nvenc_available(codec: str = "h264") -> bool:
    """True when PyAV has the NVENC encoder of ``codec`` (``h264``, ``hevc``, ``av1``) and it
    can encode a frame on this machine."""
    encoder = NVENC_ENCODERS.get(codec)
    if encoder is None or encoder not in av.codecs_available:
        return False
    try:
        # Capture keeps the driver's "cannot load libcuda" noise off stderr.
        with av.logging.Capture():
            ctx = av.CodecContext.create(encoder, "w")
            if not isinstance(ctx, VideoCodecContext):
                return False
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


def encoder_for(codec: str, ladder_encoder: str) -> str:
    """The FFmpeg encoder of a ``codec`` rendition in a ladder running on ``ladder_encoder``
    (what :func:`choose_encoder` picked): that codec's NVENC encoder when the ladder runs on
    NVENC and this GPU has it, else its CPU encoder (libx264, libx265, libsvtav1).

    Raises:
        MediaError: ``codec`` is not an output codec.
    """
    if codec not in CPU_ENCODERS:
        raise MediaError(f"unknown output codec {codec!r}: expected one of h264, hevc, av1")
    if ladder_encoder == NVENC and nvenc_available(codec):
        return NVENC_ENCODERS[codec]
    return CPU_ENCODERS[codec]


@attrs.frozen(kw_only=True)
class GpuInfo:
    """One CUDA device, as a worker reports it."""

    index: int
    """CUDA device index (``cuda:N``)."""
    name: str
    """The device's name (``NVIDIA H100 80GB HBM3``)."""
    memory_total: int
    """Bytes of device memory."""
    memory_free: int
    """Bytes free when it was last looked at."""
    nvenc: bool
    """Whether FFmpeg's ``h264_nvenc`` encodes here."""
    nvdec: bool
    """Whether FFmpeg's ``h264_cuvid`` decoder is available."""

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "memory_total": self.memory_total,
            "memory_free": self.memory_free,
            "nvenc": self.nvenc,
            "nvdec": self.nvdec,
        }


def nvdec_available() -> bool:
    """True when PyAV has the ``h264_cuvid`` (NVDEC) decoder."""
    return "h264_cuvid" in av.codecs_available


@functools.cache
def discover_gpus() -> tuple[GpuInfo, ...]:
    """The CUDA devices of this machine (none without a driver, torch or CuPy)."""
    if not _driver_present():
        return ()  # without asking torch, whose import takes a second
    found = _torch_gpus()
    if found is None:
        found = _cupy_gpus()
    if not found:
        return ()
    nvenc, nvdec = nvenc_available(), nvdec_available()
    return tuple(
        GpuInfo(index=i, name=name, memory_total=total, memory_free=free, nvenc=nvenc, nvdec=nvdec)
        for i, name, total, free in found
    )


def _driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def _torch_gpus() -> list[tuple[int, str, int, int]] | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return []
        devices = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            devices.append((index, torch.cuda.get_device_name(index), total, free))
    except RuntimeError:
        return []
    return devices


def _cupy_gpus() -> list[tuple[int, str, int, int]]:
    try:
        import cupy  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return []
    try:
        devices = []
        for index in range(cupy.cuda.runtime.getDeviceCount()):
            with cupy.cuda.Device(index):
                free, total = cupy.cuda.runtime.memGetInfo()
                name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
            devices.append(
                (index, name.decode() if isinstance(name, bytes) else str(name), total, free)
            )
    except Exception:  # cupy without a driver raises its own CUDARuntimeError
        return []
    return devices


def select_gpus(choice: str, present: Sequence[GpuInfo]) -> tuple[GpuInfo, ...]:
    """The GPUs ``--gpus`` names among those ``present``: ``all``, ``none`` or indices
    (``0,2``).

    Raises:
        ConfigError: an index that is not a present device, or text that is none of these.
    """
    text = choice.strip().lower()
    if text in ("all", ""):
        return tuple(present)
    if text == "none":
        return ()
    by_index = {gpu.index: gpu for gpu in present}
    chosen: list[GpuInfo] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(f"--gpus: {choice!r}: expected all, none or device indices (0,2)")
        index = int(part)
        if index not in by_index:
            have = ", ".join(str(i) for i in sorted(by_index)) or "none"
            raise ConfigError(f"--gpus: there is no GPU {index} on this machine (present: {have})")
        if by_index[index] not in chosen:
            chosen.append(by_index[index])
    return tuple(chosen)


def place_session(gpus: Sequence[GpuInfo], sessions: Mapping[int, int]) -> GpuInfo:
    """The GPU a new live session goes to: the fewest sessions (``sessions`` by index), then
    the most free memory, then the lowest index.

    Raises:
        ValueError: ``gpus`` is empty.
    """
    if not gpus:
        raise ValueError("no GPU to place a session on")
    return min(gpus, key=lambda g: (sessions.get(g.index, 0), -g.memory_free, g.index))
