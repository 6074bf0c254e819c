"""Turns the VP8 frames a WebRTC receiver reassembles into ingest ``MediaEvent``s.

How this works: VP8 has no configuration record; a ``CodecConfig`` with no data names the
codec (a new one when a keyframe's picture size changes, applied by the segmenter at its next
cut), and each frame becomes a ``MediaPacket`` as it is. Nothing is sent before the first
keyframe, nor after a gap until the next one (:meth:`Vp8Track.wait_for_keyframe`, as
:class:`~.h264.H264Track` does). WebRTC VP8 is never reordered: decode and presentation times
are equal, forced to increase by at least 1 ms. Sans-IO.
"""

from __future__ import annotations

import attrs

from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.media.vp8 import vp8_is_keyframe, vp8_keyframe_size

from .keyframes import GatedTrack

__all__ = ["Vp8Track"]


@attrs.define
class Vp8Track(GatedTrack):
    """VP8 frames in, ``CodecConfig`` and ``MediaPacket``s out."""

    _size: tuple[int, int] | None = None

    def feed(self, data: bytes, timestamp_ms: int) -> list[MediaEvent]:
        """Takes one VP8 frame and its time in ms; returns the events it makes."""
        if not data:
            return []
        keyframe = vp8_is_keyframe(data)
        events: list[MediaEvent] = []
        if keyframe:
            try:
                size = vp8_keyframe_size(data)
            except ValueError:
                self._gate.drop()
                return []
            if size != self._size:
                self._size = size
                events.append(CodecConfig(kind=TrackKind.VIDEO, codec="vp8", data=b""))
        if not self._gate.passes(keyframe=keyframe):
            return []
        dts = self._gate.dts(timestamp_ms)
        events.append(
            MediaPacket(kind=TrackKind.VIDEO, dts=dts, pts=dts, keyframe=keyframe, data=data)
        )
        return events
