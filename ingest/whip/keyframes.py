"""What every WebRTC video track does with its frames, whatever the codec: nothing passes
before a keyframe (nor after a gap, until the next one), and decode times only increase.
Sans-IO."""

from __future__ import annotations

import attrs

__all__ = ["GatedTrack", "KeyframeGate"]


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


@attrs.define
class GatedTrack:
    """What the WebRTC video tracks (H.264, VP8, AV1) share: their keyframe gate."""

    _gate: KeyframeGate = attrs.Factory(KeyframeGate)

    @property
    def waiting_for_keyframe(self) -> bool:
        """True until a usable keyframe has been seen (again, after a gap)."""
        return self._gate.waiting

    @property
    def dropped(self) -> int:
        """Frames dropped while waiting for a keyframe, or unreadable."""
        return self._gate.dropped

    def wait_for_keyframe(self) -> None:
        """Drops frames until the next keyframe: call after frames were lost upstream."""
        self._gate.wait_for_keyframe()
