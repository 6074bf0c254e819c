"""The planes of a ``yuv420p`` frame as NumPy arrays and torch tensors, without a copy.

How this works: each plane of a PyAV frame supports the buffer protocol; NumPy wraps it with
the plane's line size as the row stride, and ``torch.from_numpy`` shares that memory. Nothing
is copied (tests check it by data pointers). The decoder may still use that memory as a
reference picture, so pipelines must treat their input as read-only.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

import attrs
import numpy as np
from av.video.frame import VideoFrame

from lpstream.errors import MediaError

if TYPE_CHECKING:
    import torch

__all__ = [
    "FORMAT",
    "PixelLayout",
    "YuvBatch",
    "check_frame",
    "check_size",
    "planes_as_arrays",
    "planes_as_tensors",
]

FORMAT: Final = "yuv420p"
"""The pixel format frames arrive and leave in."""


class PixelLayout(enum.Enum):
    """How a pipeline wants its pixels."""

    YUV420 = "yuv420"
    """``uint8`` planes as a :class:`YuvBatch`; zero-copy views of the decoder's frames on CPU."""
    RGB = "rgb"
    """``float32`` ``[B, 3, H, W]`` in ``[0, 1]``, converted from YUV in torch."""


@attrs.frozen(kw_only=True)
class YuvBatch:
    """A batch of planar YUV 4:2:0 frames as ``uint8`` tensors."""

    y: torch.Tensor
    """Luma, ``[B, H, W]``."""
    u: torch.Tensor
    """Blue-difference chroma, ``[B, H/2, W/2]``."""
    v: torch.Tensor
    """Red-difference chroma, ``[B, H/2, W/2]``."""

    @property
    def size(self) -> int:
        """Frames in the batch."""
        return int(self.y.shape[0])


def planes_as_arrays(frame: VideoFrame) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], ...]:
    """The planes of a ``yuv420p`` frame as NumPy views of its memory (no copy).

    Each array is ``[height, width]`` with the plane's line size as its row stride.

    Raises:
        MediaError: the frame is not ``yuv420p`` with even width and height.
    """
    check_frame(frame)
    arrays = []
    for plane in frame.planes:
        flat = np.frombuffer(memoryview(plane), dtype=np.uint8)
        rows = flat[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)
        arrays.append(rows[:, : plane.width])
    return tuple(arrays)


def planes_as_tensors(frame: VideoFrame) -> YuvBatch:
    """The planes of a ``yuv420p`` frame as a batch of one, sharing the frame's memory.

    Raises:
        MediaError: as :func:`planes_as_arrays`.
    """
    import torch

    y, u, v = (torch.from_numpy(a).unsqueeze(0) for a in planes_as_arrays(frame))
    return YuvBatch(y=y, u=u, v=v)


def check_size(width: int, height: int) -> None:
    """Raises MediaError unless both sides are even and positive."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise MediaError(f"frames must have even, positive width and height, not {width}x{height}")


def check_frame(frame: VideoFrame) -> None:
    """Raises MediaError unless the frame is ``yuv420p`` with even, positive sides."""
    if frame.format.name != FORMAT:
        raise MediaError(f"frames must be {FORMAT}, not {frame.format.name}")
    check_size(frame.width, frame.height)
