"""What every WebRTC video track does with its frames, whatever the codec: nothing passes
before a keyframe (nor after a gap, until the next one), and decode times only increase.
Sans-IO."""

from __future__ import annotations

import attrs

__all__ = ["KeyframeGate"]


@attrs.define
class KeyframeGate:
    """Lets frames through from a keyframe on, and times them (see the module comment)."""

    waiting: bool = True
    """True until a keyframe has passed (again, after :meth:`wait_for_keyframe`)."""
    dropped: int = 0
    """Frames held back while waiting."""
    _last_dts: int | None = None

    def wait_for_keyframe(self) -> None:
        """Holds frames back until the next keyframe: call after frames were lost upstream."""
        self.waiting = True

    def passes(self, *, keyframe: bool) -> bool:
        """Whether a frame goes on (a usable keyframe ends the wait); counts the held back."""
        if keyframe:
            self.waiting = False
        if self.waiting:
            self.dropped += 1
        return not self.waiting

    def drop(self) -> None:
        """A frame that cannot be used: it is counted, and the wait goes on (or starts)."""
        self.dropped += 1
        self.waiting = True

    def dts(self, timestamp_ms: int) -> int:
        """The frame's decode time: ``timestamp_ms``, at least 1 ms after the last one."""
        dts = timestamp_ms
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1
        self._last_dts = dts
        return dts
