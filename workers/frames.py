"""Frame memory: decoded PyAV frames as torch tensors, and pooled output frames.

How this works
--------------
Frames arrive from the decoder as planar YUV 4:2:0 (``yuv420p``) :class:`av.VideoFrame`\\ s and
leave for the encoder in the same format. Between the two, pipelines see torch tensors in one
of two layouts (:class:`PixelLayout`):

* ``YUV420``: the three planes as ``uint8`` tensors, Y ``[B, H, W]`` and U, V
  ``[B, H/2, W/2]`` (a :class:`YuvBatch`). On CPU with a batch of one these are *views of the
  decoder's memory*: each plane supports the buffer protocol, NumPy wraps it with the plane's
  line size as the row stride, and ``torch.from_numpy`` shares that memory. Nothing is copied;
  tests check it by data pointers. The decoder may still use that memory as a reference
  picture, so pipelines must treat their input as read-only.
* ``RGB``: ``float32`` ``[B, 3, H, W]`` in ``[0, 1]``, converted from the planes in torch (BT.601
  or BT.709 by the frame's colour tags, limited or full range; chroma is repeated 2x2, as
  libswscale's unscaled converter does). The conversion writes into a batch tensor the
  converter keeps and reuses, so steady state allocates nothing for the input.

Output goes into a :class:`FramePool`: a bounded set of preallocated ``yuv420p`` frames whose
planes are wrapped as tensors once. The pipeline's result is converted (RGB) or copied (YUV)
straight into a pooled frame's planes. A pooled frame is handed out again only when no one
else holds it: the pool compares the frame's Python reference count with the count it had when
the pool alone held it, and before reuse it calls ``make_writable()``, which gives the frame a
fresh buffer if the encoder still references the old one (the pool rewraps it and counts a
reallocation). When every pooled frame is held and the pool is full, a frame outside the pool
is made for that one use (counted as an overflow), so memory stays bounded by ``capacity``
plus what the consumer itself holds on to.

On a GPU (``device="cuda..."``) the same layouts live in CuPy buffers from a pool:
each decoded plane is uploaded once into a pooled CuPy array, torch sees it through DLPack
(no copy), the pipeline's result is written into pooled CuPy output planes, and those are
downloaded into the pooled CPU frame the encoder takes. CuPy is imported only on this path.

Frames must have even width and height (4:2:0 chroma covers 2x2 pixels; H.264 encoders need
it too). Output frames carry the input's ``pts``, ``time_base`` and colour tags.
"""

from __future__ import annotations

import enum
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import numpy as np
from av.video.frame import VideoFrame

from lpstream.errors import MediaError

if TYPE_CHECKING:
    import torch

__all__ = [
    "FrameConverter",
    "FramePool",
    "PixelLayout",
    "PoolStatistics",
    "YuvBatch",
    "planes_as_arrays",
    "planes_as_tensors",
    "rgb_to_yuv420",
    "yuv420_to_rgb",
]

_FORMAT: Final = "yuv420p"

# libavutil AVColorSpace / AVColorRange values used to pick the conversion matrix.
_SPC_BT709: Final = 1
_RANGE_JPEG: Final = 2

_KR_KB: Final = {False: (0.299, 0.114), True: (0.2126, 0.0722)}
"""Luma weights (Kr, Kb) of BT.601 (False) and BT.709 (True)."""


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


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """What a :class:`FramePool` has done so far."""

    capacity: int
    """Most frames the pool keeps."""
    allocated: int
    """Frames the pool keeps now (never more than ``capacity``)."""
    acquired: int
    """Frames handed out."""
    reused: int
    """Hand-outs that reused a pooled frame's memory."""
    reallocated: int
    """Reuses where the old buffer was still referenced elsewhere and got replaced."""
    overflow: int
    """Hand-outs made outside the pool because every pooled frame was held."""


def planes_as_arrays(frame: VideoFrame) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], ...]:
    """The planes of a ``yuv420p`` frame as NumPy views of its memory (no copy).

    Each array is ``[height, width]`` with the plane's line size as its row stride.

    Raises:
        MediaError: the frame is not ``yuv420p`` with even width and height.
    """
    _check_frame(frame)
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


def yuv420_to_rgb(
    planes: YuvBatch, out: torch.Tensor, *, bt709: bool = False, full_range: bool = False
) -> torch.Tensor:
    """Converts YUV 4:2:0 planes into ``out`` (``float32 [B, 3, H, W]`` in ``[0, 1]``).

    Chroma is repeated over each 2x2 block. Values are clamped to ``[0, 1]``.

    Returns:
        ``out``.
    """
    import torch

    batch, height, width = planes.y.shape
    kr, kb = _KR_KB[bt709]
    kg = 1.0 - kr - kb
    y_scale, c_scale = (1 / 255, 1 / 255) if full_range else (1 / 219, 1 / 224)
    y_off = 0.0 if full_range else 16.0
    dtype, device = out.dtype, out.device
    luma = planes.y.to(dtype).sub_(y_off).mul_(y_scale).unsqueeze(1)
    # Chroma contribution of each channel at half resolution, as one matrix product.
    from_uv = torch.tensor(
        [
            [0.0, (2 - 2 * kr) * c_scale],
            [-(2 - 2 * kb) * kb / kg * c_scale, -(2 - 2 * kr) * kr / kg * c_scale],
            [(2 - 2 * kb) * c_scale, 0.0],
        ],
        dtype=dtype,
        device=device,
    )
    uv = torch.stack((planes.u, planes.v), dim=1).to(dtype).sub_(128.0)
    chroma = torch.matmul(from_uv, uv.view(batch, 2, -1)).view(batch, 3, height // 2, width // 2)
    # Each of the four pixels of a 2x2 block gets its luma plus the block's chroma.
    for row in (0, 1):
        for col in (0, 1):
            torch.add(luma[..., row::2, col::2], chroma, out=out[..., row::2, col::2])
    return out.clamp_(0.0, 1.0)


def rgb_to_yuv420(
    rgb: torch.Tensor, out: YuvBatch, *, bt709: bool = False, full_range: bool = False
) -> YuvBatch:
    """Converts ``float [B, 3, H, W]`` RGB in ``[0, 1]`` into the ``uint8`` planes ``out``.

    Chroma is computed from the mean RGB of each 2x2 block; values are rounded and clamped.

    Returns:
        ``out``.
    """
    import torch

    batch, _, height, width = rgb.shape
    kr, kb = _KR_KB[bt709]
    kg = 1.0 - kr - kb
    if full_range:
        y_scale, c_scale, y_off = 255.0, 255.0, 0.5
    else:
        y_scale, c_scale, y_off = 219.0, 224.0, 16.5
    # Matrix products: elementwise channel arithmetic is several times slower on CPU.
    to_y = torch.tensor([[kr, kg, kb]], dtype=rgb.dtype, device=rgb.device) * y_scale
    u_scale, v_scale = c_scale / (2 - 2 * kb) / 4, c_scale / (2 - 2 * kr) / 4  # 4: block sum
    to_uv = torch.tensor(
        [
            [-kr * u_scale, -kg * u_scale, (1 - kb) * u_scale],
            [(1 - kr) * v_scale, -kg * v_scale, -kb * v_scale],
        ],
        dtype=rgb.dtype,
        device=rgb.device,
    )
    luma = torch.matmul(to_y, rgb.reshape(batch, 3, height * width))
    out.y.copy_(luma.view(batch, height, width).add_(y_off).clamp_(0.0, 255.0))
    blocks = rgb[..., 0::2, 0::2] + rgb[..., 1::2, 0::2]
    blocks += rgb[..., 0::2, 1::2]
    blocks += rgb[..., 1::2, 1::2]
    chroma = torch.matmul(to_uv, blocks.reshape(batch, 3, -1)).add_(128.5).clamp_(0.0, 255.0)
    chroma = chroma.view(batch, 2, height // 2, width // 2)
    out.u.copy_(chroma[:, 0])
    out.v.copy_(chroma[:, 1])
    return out


class FramePool:
    """A bounded set of reusable ``yuv420p`` output frames of one size.

    Not thread-safe: one pipeline runner owns a pool and uses it from one thread at a time.
    """

    def __init__(self, width: int, height: int, *, capacity: int = 8) -> None:
        """Makes an empty pool; frames are allocated on first use, up to ``capacity``.

        Raises:
            MediaError: odd or non-positive size.
            ValueError: ``capacity`` below 1.
        """
        if capacity < 1:
            raise ValueError("a frame pool needs a capacity of at least 1")
        _check_size(width, height)
        self._width = width
        self._height = height
        self._capacity = capacity
        self._slots: list[_Slot] = []
        self._next = 0
        self._acquired = 0
        self._reused = 0
        self._reallocated = 0
        self._overflow = 0

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    def acquire(self) -> tuple[VideoFrame, YuvBatch]:
        """A frame no one else holds, and its planes as tensors of one frame (no copy).

        The caller writes into the planes, then hands the frame on; once the last outside
        reference to it is dropped the pool may hand it out again.
        """
        self._acquired += 1
        count = len(self._slots)
        for step in range(count):
            index = (self._next + step) % count
            slot = self._slots[index]
            if slot.references() > slot.baseline:
                continue  # someone downstream still holds it
            self._next = (index + 1) % count
            self._reused += 1
            slot.frame.make_writable()
            if slot.frame.planes[0].buffer_ptr != slot.pointer:
                # The encoder still referenced the old buffer; FFmpeg gave us a new one.
                self._reallocated += 1
                slot = self._slots[index] = _Slot.wrap(slot.frame)
            return slot.frame, slot.planes
        if count < self._capacity:
            slot = _Slot.wrap(VideoFrame(self._width, self._height, _FORMAT))
            self._slots.append(slot)
            self._next = 0
            return slot.frame, slot.planes
        self._overflow += 1
        frame = VideoFrame(self._width, self._height, _FORMAT)
        return frame, planes_as_tensors(frame)

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            capacity=self._capacity,
            allocated=len(self._slots),
            acquired=self._acquired,
            reused=self._reused,
            reallocated=self._reallocated,
            overflow=self._overflow,
        )


@attrs.define(eq=False)
class _Slot:
    """One pooled frame, its tensors, and its reference count when only the pool holds it."""

    frame: VideoFrame
    planes: YuvBatch
    pointer: int
    baseline: int = 0
    """``references()`` while no one outside the pool holds the frame."""

    @classmethod
    def wrap(cls, frame: VideoFrame) -> _Slot:
        slot = cls(frame=frame, planes=planes_as_tensors(frame), pointer=frame.planes[0].buffer_ptr)
        del frame  # from here on only the slot (and its plane views) refer to the frame
        slot.baseline = slot.references()
        return slot

    def references(self) -> int:
        """References to the frame, not counting this call's own."""
        return sys.getrefcount(self.frame) - 1


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
        self._cuda = _CudaBuffers(device) if device.startswith("cuda") else None

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
            _check_frame(frame)
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
        bt709, full = _colour(frames[0])
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
        bt709, full = _colour(like[0])
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


class _CudaBuffers:
    """CuPy buffers on one CUDA device, shared with torch through DLPack.

    Inputs are uploaded into pooled CuPy planes; torch tensors view them (``from_dlpack``).
    Outputs are written by torch into pooled CuPy planes and downloaded into CPU frames.
    """

    def __init__(self, device: str) -> None:
        try:
            self._cupy: Any = importlib.import_module("cupy")
        except ImportError as exc:
            raise MediaError(f"device {device!r} needs CuPy (pip install 'lpstream[gpu]')") from exc
        try:
            count = int(self._cupy.cuda.runtime.getDeviceCount())
        except Exception as exc:  # CuPy raises its own CUDARuntimeError without a driver
            raise MediaError(f"device {device!r}: CUDA is not usable here: {exc}") from exc
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise MediaError(f"device {device!r} does not exist ({count} CUDA devices)")
        self._device = self._cupy.cuda.Device(index)
        self._inputs: list[tuple[Any, Any, Any]] = []
        self._input_views: YuvBatch | None = None
        self._outputs: tuple[Any, Any, Any] | None = None
        self._output_views: YuvBatch | None = None

    def upload(self, frames: Sequence[VideoFrame]) -> YuvBatch:
        """Copies the frames' planes into pooled CuPy buffers; torch views them (no copy)."""
        cupy = self._cupy
        from torch.utils.dlpack import from_dlpack

        batch, height, width = len(frames), frames[0].height, frames[0].width
        if self._input_views is None or self._input_views.y.shape != (batch, height, width):
            with self._device:
                arrays = (
                    cupy.empty((batch, height, width), dtype=cupy.uint8),
                    cupy.empty((batch, height // 2, width // 2), dtype=cupy.uint8),
                    cupy.empty((batch, height // 2, width // 2), dtype=cupy.uint8),
                )
            self._inputs = [arrays]
            self._input_views = YuvBatch(
                y=from_dlpack(arrays[0]),
                u=from_dlpack(arrays[1]),
                v=from_dlpack(arrays[2]),
            )
        arrays = self._inputs[0]
        with self._device:
            for i, frame in enumerate(frames):
                for array, plane in zip(arrays, planes_as_arrays(frame), strict=True):
                    array[i].set(np.ascontiguousarray(plane))
        return self._input_views

    def output_planes(self, batch: int, height: int, width: int) -> YuvBatch:
        """Pooled CuPy output planes, seen by torch through DLPack."""
        cupy = self._cupy
        from torch.utils.dlpack import from_dlpack

        if self._output_views is None or self._output_views.y.shape != (batch, height, width):
            with self._device:
                self._outputs = (
                    cupy.empty((batch, height, width), dtype=cupy.uint8),
                    cupy.empty((batch, height // 2, width // 2), dtype=cupy.uint8),
                    cupy.empty((batch, height // 2, width // 2), dtype=cupy.uint8),
                )
            self._output_views = YuvBatch(
                y=from_dlpack(self._outputs[0]),
                u=from_dlpack(self._outputs[1]),
                v=from_dlpack(self._outputs[2]),
            )
        return self._output_views

    def download(self, result: YuvBatch, index: int, planes: YuvBatch) -> None:
        """Copies frame ``index`` of a CUDA result into the CPU planes of a pooled frame."""
        for source, target in zip(
            (result.y, result.u, result.v), (planes.y, planes.u, planes.v), strict=True
        ):
            target[0].copy_(source[index])


def _stamp(frame: VideoFrame, source: VideoFrame) -> VideoFrame:
    frame.pts = source.pts
    if source.time_base is not None:  # a frame made in code may have none
        frame.time_base = source.time_base
    frame.colorspace = source.colorspace
    frame.color_range = source.color_range
    return frame


def _colour(frame: VideoFrame) -> tuple[bool, bool]:
    """(BT.709, full range) from the frame's tags; untagged frames are BT.601 limited range."""
    return frame.colorspace == _SPC_BT709, frame.color_range == _RANGE_JPEG


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise MediaError(f"frames must have even, positive width and height, not {width}x{height}")


def _check_frame(frame: VideoFrame) -> None:
    if frame.format.name != _FORMAT:
        raise MediaError(f"frames must be {_FORMAT}, not {frame.format.name}")
    _check_size(frame.width, frame.height)
