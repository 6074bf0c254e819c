"""One stream's frames in a pipeline's layout, and the pipeline's results in pooled frames.

How this works: on CPU a batch of one in the YUV layout is the decoder's memory itself
(``planes.py``); a larger batch is gathered into tensors the converter keeps and reuses, and
the RGB layout is converted into a reused batch tensor (``colour.py``). Results go into frames
of a :class:`FramePool` sized like the input (``pool.py``), stamped with the input frames'
``pts``, ``time_base`` and colour tags. On a CUDA device uploads and result planes live in
``CudaBuffers`` (``cuda.py``) and only the final download touches the pooled CPU frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from av.video.frame import VideoFrame

from lpstream.errors import MediaError

from .colour import colour_tags, rgb_to_yuv420, yuv420_to_rgb
from .cuda import CudaBuffers
from .planes import PixelLayout, YuvBatch, check_frame, planes_as_tensors
from .pool import FramePool

if TYPE_CHECKING:
    import torch

__all__ = ["FrameConverter"]


class FrameConverter:
    """Moves one stream's frames into a pipeline's layout and its results into pooled frames.

    Not thread-safe: one runner thread uses it. Batches are gathered into tensors the converter
    keeps and reuses; on CPU a batch of one in the YUV layout is the decoder's memory itself.
    """

    def __init__(self, layout: PixelLayout, *, device: str = "cpu", pool_size: int = 8) -> None:
        """Sets up conversion for ``layout`` on ``device`` (``cpu`` or a CUDA device).

        Raises:
            MediaError: a CUDA device was asked for and CuPy or CUDA is not available.
        """
        self._layout = layout
        self._device = device
        self._pool_size = pool_size
        self._pool: FramePool | None = None
        self._rgb: torch.Tensor | None = None
        self._gathered: YuvBatch | None = None
        self._cuda = CudaBuffers(device) if device.startswith("cuda") else None

    @property
    def layout(self) -> PixelLayout:
        return self._layout

    @property
    def pool(self) -> FramePool | None:
        """The output pool, made when the first frames are converted."""
        return self._pool

    def to_yuv(self, frames: Sequence[VideoFrame]) -> YuvBatch:
        """The frames' planes as one batch: views (CPU, one frame), else gathered copies.

        Raises:
            MediaError: no frames, frames of mixed sizes, or not ``yuv420p`` with even sides.
        """
        if not frames:
            raise MediaError("a batch needs at least one frame")
        first = frames[0]
        for frame in frames:
            check_frame(frame)
            if (frame.width, frame.height) != (first.width, first.height):
                raise MediaError("every frame of a batch must have the same size")
        if self._cuda is not None:
            return self._cuda.upload(frames)
        if len(frames) == 1:
            return planes_as_tensors(first)
        import torch

        gathered = self._gathered
        if gathered is None or gathered.y.shape != (len(frames), first.height, first.width):
            h, w = first.height, first.width
            gathered = self._gathered = YuvBatch(
                y=torch.empty((len(frames), h, w), dtype=torch.uint8),
                u=torch.empty((len(frames), h // 2, w // 2), dtype=torch.uint8),
                v=torch.empty((len(frames), h // 2, w // 2), dtype=torch.uint8),
            )
        for i, frame in enumerate(frames):
            view = planes_as_tensors(frame)
            gathered.y[i].copy_(view.y[0])
            gathered.u[i].copy_(view.u[0])
            gathered.v[i].copy_(view.v[0])
        return gathered

    def to_rgb(self, frames: Sequence[VideoFrame]) -> torch.Tensor:
        """The frames as ``float32 [B, 3, H, W]`` RGB in ``[0, 1]``, in a reused tensor.

        Raises:
            MediaError: as :meth:`to_yuv`.
        """
        import torch

        planes = self.to_yuv(frames)
        shape = (planes.size, 3, int(planes.y.shape[1]), int(planes.y.shape[2]))
        if self._rgb is None or tuple(self._rgb.shape) != shape:
            self._rgb = torch.empty(shape, dtype=torch.float32, device=planes.y.device)
        bt709, full = colour_tags(frames[0])
        return yuv420_to_rgb(planes, self._rgb, bt709=bt709, full_range=full)

    def from_yuv(self, result: YuvBatch, like: Sequence[VideoFrame]) -> list[VideoFrame]:
        """Copies a YUV result into pooled frames stamped like the input frames ``like``.

        Raises:
            MediaError: the result's shape does not match the input frames.
        """
        self._check_result(tuple(result.y.shape), like)
        outputs = []
        for i, source in enumerate(like):
            frame, planes = self._pool_for(source).acquire()
            if self._cuda is not None:
                self._cuda.download(result, i, planes)
            else:
                planes.y[0].copy_(result.y[i])
                planes.u[0].copy_(result.u[i])
                planes.v[0].copy_(result.v[i])
            outputs.append(_stamp(frame, source))
        return outputs

    def from_rgb(self, result: torch.Tensor, like: Sequence[VideoFrame]) -> list[VideoFrame]:
        """Converts an RGB result into pooled frames stamped like the input frames ``like``.

        Raises:
            MediaError: the result's shape does not match the input frames.
        """
        batch, channels, height, width = result.shape
        if channels != 3:
            raise MediaError(f"an RGB result needs 3 channels, not {channels}")
        self._check_result((batch, height, width), like)
        bt709, full = colour_tags(like[0])
        if self._cuda is not None:
            planes = self._cuda.output_planes(batch, height, width)
            rgb_to_yuv420(result, planes, bt709=bt709, full_range=full)
            return self.from_yuv(planes, like)
        outputs = []
        for i, source in enumerate(like):
            frame, planes = self._pool_for(source).acquire()
            rgb_to_yuv420(result[i : i + 1], planes, bt709=bt709, full_range=full)
            outputs.append(_stamp(frame, source))
        return outputs

    def _pool_for(self, frame: VideoFrame) -> FramePool:
        pool = self._pool
        if pool is None or (pool.width, pool.height) != (frame.width, frame.height):
            pool = self._pool = FramePool(frame.width, frame.height, capacity=self._pool_size)
        return pool

    def _check_result(self, shape: tuple[int, ...], like: Sequence[VideoFrame]) -> None:
        if not like:
            raise MediaError("a result needs the frames it was made from")
        expected = (len(like), like[0].height, like[0].width)
        if tuple(int(n) for n in shape) != expected:
            raise MediaError(
                f"the pipeline returned frames of shape {tuple(shape)}; expected {expected} "
                "(batch, height, width): pipelines keep the batch size and the frame size"
            )


def _stamp(frame: VideoFrame, source: VideoFrame) -> VideoFrame:
    frame.pts = source.pts
    if source.time_base is not None:  # a frame made in code may have none
        frame.time_base = source.time_base
    frame.colorspace = source.colorspace
    frame.color_range = source.color_range
    return frame
