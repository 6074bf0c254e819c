"""Frames between a worker and its pipeline child, through shared memory, never pickled.

How this works
--------------
A :class:`FrameRing` is one ``multiprocessing.shared_memory`` block cut into ``slots`` equal
slots; each holds one ``yuv420p`` frame's planes packed (Y, then U, then V, no row padding).
The parent creates the block and owns it (it unlinks it); the child attaches by name. Only a
:class:`FrameHeader` (slot, size, timestamp) travels over the pipe; the pixels are copied once
into the slot by the writer and once out of it by the reader. Who may touch which slot is the
request/answer protocol's business (``workers.pipelines.child``): the parent writes the input
slot before a request, the child writes the output slots before its answer.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from multiprocessing import shared_memory
from typing import Any

import attrs
import av
import numpy as np
from av.video.frame import VideoFrame

from workers.frames import planes_as_arrays

__all__ = ["FrameHeader", "FrameRecycler", "FrameRing", "frame_bytes"]


def frame_bytes(width: int, height: int) -> int:
    """Bytes of a packed ``yuv420p`` frame."""
    return width * height + 2 * ((width // 2) * (height // 2))


@attrs.frozen(kw_only=True)
class FrameHeader:
    """Which slot holds a frame, and what the frame is."""

    slot: int
    width: int
    height: int
    pts: int | None
    time_base: tuple[int, int] | None
    """``(numerator, denominator)``; None for a frame made in code without one."""


class FrameRing:
    """Fixed slots of packed frames in one shared memory block (see the module comment)."""

    def __init__(self, memory: shared_memory.SharedMemory, slots: int, slot_bytes: int) -> None:
        self._memory = memory
        self.slots = slots
        self.slot_bytes = slot_bytes
        buffer = memory.buf
        assert buffer is not None
        self._array: np.ndarray[Any, np.dtype[np.uint8]] = np.ndarray(
            (slots, slot_bytes), dtype=np.uint8, buffer=buffer
        )

    @classmethod
    def create(cls, slots: int, slot_bytes: int) -> FrameRing:
        """A new block (the caller owns it: :meth:`close` with ``unlink``)."""
        memory = shared_memory.SharedMemory(create=True, size=slots * slot_bytes)
        return cls(memory, slots, slot_bytes)

    @classmethod
    def attach(cls, name: str, slots: int, slot_bytes: int) -> FrameRing:
        """The block ``name`` made by another process, which keeps owning it."""
        # A child started with ``spawn`` shares its parent's resource tracker, so attaching
        # registers nothing new and the owner's unlink is the one that counts.
        memory = shared_memory.SharedMemory(name=name)
        return cls(memory, slots, slot_bytes)

    @property
    def name(self) -> str:
        return self._memory.name

    def fits(self, width: int, height: int) -> bool:
        return frame_bytes(width, height) <= self.slot_bytes

    def write(self, slot: int, frame: VideoFrame) -> FrameHeader:
        """Copies ``frame``'s planes into ``slot``.

        Raises:
            MediaError: the frame is not ``yuv420p`` with even sides.
            ValueError: it does not fit a slot.
        """
        width, height = frame.width, frame.height
        if not self.fits(width, height):
            raise ValueError(f"a {width}x{height} frame does not fit a {self.slot_bytes} B slot")
        row = self._array[slot]
        offset = 0
        for plane in planes_as_arrays(frame):
            size = plane.size
            row[offset : offset + size].reshape(plane.shape)[:] = plane
            offset += size
        base = frame.time_base
        return FrameHeader(
            slot=slot,
            width=width,
            height=height,
            pts=frame.pts,
            time_base=None if base is None else (base.numerator, base.denominator),
        )

    def read(self, header: FrameHeader, into: VideoFrame | None = None) -> VideoFrame:
        """The frame in ``header.slot``, copied out into ``into`` (or a new frame)."""
        width, height = header.width, header.height
        frame = into if into is not None else av.VideoFrame(width, height, "yuv420p")
        row = self._array[header.slot]
        offset = 0
        for plane in planes_as_arrays(frame):
            size = plane.size
            plane[:] = row[offset : offset + size].reshape(plane.shape)
            offset += size
        frame.pts = header.pts
        if header.time_base is not None:
            frame.time_base = Fraction(*header.time_base)
        return frame

    def close(self, *, unlink: bool = False) -> None:
        """Lets go of the block; its owner also removes it (``unlink``)."""
        del self._array
        self._memory.close()
        if unlink:
            self._memory.unlink()


class FrameRecycler:
    """Frames to read into, reused once no one else holds them.

    A fresh frame's memory costs a page fault per page on its first write (about 0.7 ms for
    512x512), several times the copy itself; reading into a frame already written avoids it.
    A frame is reused when its reference count is back to what it was when only this recycler
    held it (as ``workers.frames.FramePool`` does, without torch); ``make_writable`` then
    gives it new memory if FFmpeg (an encoder) still holds the old. Not thread-safe.
    """

    def __init__(self, capacity: int = 8) -> None:
        self._capacity = capacity
        self._held: list[_Held] = []

    def acquire(self, width: int, height: int) -> VideoFrame:
        """A ``yuv420p`` frame of this size that no one else holds."""
        for held in self._held:
            if held.free() and held.frame.width == width and held.frame.height == height:
                held.frame.make_writable()
                return held.frame
        held = _Held(av.VideoFrame(width, height, "yuv420p"))
        if len(self._held) >= self._capacity:
            self._held.pop(0)
        self._held.append(held)
        return held.frame


@attrs.define(eq=False)
class _Held:
    frame: VideoFrame

    def free(self) -> bool:
        """Only this holds the frame: its attribute, and the call's own argument."""
        return sys.getrefcount(self.frame) <= 2
