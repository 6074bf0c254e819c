"""Frame buffers on a CUDA device: CuPy arrays that torch sees through DLPack.

How this works: each decoded plane is uploaded once into a pooled CuPy array, torch views it
with ``from_dlpack`` (no copy), the pipeline's result is written into pooled CuPy output
planes, and those are downloaded into the pooled CPU frame the encoder takes. CuPy is imported
only when a :class:`CudaBuffers` is made, so CPU-only machines never need it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from av.video.frame import VideoFrame

from lpstream.errors import MediaError

from .planes import YuvBatch, planes_as_arrays

__all__ = ["CudaBuffers"]


class CudaBuffers:
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
