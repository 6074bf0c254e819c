"""Frame memory: decoded PyAV frames as torch tensors, and pooled output frames.

How this works
--------------
Frames arrive from the decoder as planar YUV 4:2:0 (``yuv420p``) :class:`av.VideoFrame`\\ s and
leave for the encoder in the same format. Between the two, pipelines see torch tensors in one
of two layouts (:class:`PixelLayout`):

* ``YUV420``: the three planes as ``uint8`` tensors (a :class:`YuvBatch`); on CPU with a batch
  of one these are *views of the decoder's memory* (``planes.py``).
* ``RGB``: ``float32`` ``[B, 3, H, W]`` in ``[0, 1]``, converted from the planes in torch
  (``colour.py``) into a batch tensor the converter keeps and reuses.

Output goes into a :class:`FramePool` of preallocated ``yuv420p`` frames whose planes are
wrapped as tensors once (``pool.py``); :class:`FrameConverter` (``converter.py``) moves one
stream's frames between the two worlds. On a GPU the same layouts live in pooled CuPy buffers
shared with torch through DLPack (``cuda.py``); CuPy is imported only on that path.

Frames must have even width and height (4:2:0 chroma covers 2x2 pixels; H.264 encoders need
it too). Output frames carry the input's ``pts``, ``time_base`` and colour tags.
"""

from .colour import rgb_to_yuv420, yuv420_to_rgb
from .converter import FrameConverter
from .planes import PixelLayout, YuvBatch, planes_as_arrays, planes_as_tensors
from .pool import FramePool, PoolStatistics

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
