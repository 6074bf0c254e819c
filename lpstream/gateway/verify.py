"""The gateway's check of what an orchestrator returns: decode every rendition and count.

An orchestrator reports, per rendition, the frames and pixels it encoded; payment is settled
from those pixels. The gateway decodes each rendition (on a thread) and compares: a rendition
that does not decode, or decodes to other figures than claimed, fails the job, the
orchestrator is suspended, and its claimed pixels are not settled.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import av

from lpstream.errors import LpstreamError
from lpstream.jobs import JobOutput

__all__ = ["RenditionMismatchError", "check_renditions", "count_pixels"]


class RenditionMismatchError(LpstreamError):
    """A rendition does not decode to what the orchestrator claimed."""


def count_pixels(data: bytes) -> tuple[int, int]:
    """(frames, pixels) of the video in MPEG-TS ``data``, by decoding it (blocking)."""
    frames = pixels = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
            if not container.streams.video:
                return 0, 0
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        frames += 1
                        pixels += frame.width * frame.height
    except av.FFmpegError as exc:
        raise RenditionMismatchError(f"undecodable: {exc}") from None
    return frames, pixels


def check_renditions(outputs: Sequence[JobOutput]) -> None:
    """Raises ``RenditionMismatchError`` unless every rendition decodes to its claims."""
    for output in outputs:
        frames, pixels = count_pixels(output.data)
        info = output.info
        if (frames, pixels) != (info.frames, info.pixels):
            raise RenditionMismatchError(
                f"rendition {info.name}: claims {info.frames} frames / {info.pixels} pixels, "
                f"decodes to {frames} / {pixels}"
            )
