"""A bounded pool of reusable ``yuv420p`` output frames, wrapped as tensors once.

How this works: the pipeline's result is converted (RGB) or copied (YUV) straight into a pooled
frame's planes. A pooled frame is handed out again only when no one else holds it: the pool
compares the frame's Python reference count with the count it had when the pool alone held
it, and before reuse it calls ``make_writable()``, which gives the frame a fresh buffer if the
encoder still references the old one (the pool rewraps it and counts a reallocation). When
every pooled frame is held and the pool is full, a frame outside the pool is made for that one
use (counted as an overflow), so memory stays bounded by ``capacity`` plus what the consumer
itself holds on to.
"""

from __future__ import annotations

import sys

import attrs
from av.video.frame import VideoFrame

from .planes import FORMAT, YuvBatch, check_size, planes_as_tensors

__all__ = ["FramePool", "PoolStatistics"]


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
        check_size(width, height)
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
            slot = _Slot.wrap(VideoFrame(self._width, self._height, FORMAT))
            self._slots.append(slot)
            self._next = 0
            return slot.frame, slot.planes
        self._overflow += 1
        frame = VideoFrame(self._width, self._height, FORMAT)
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
