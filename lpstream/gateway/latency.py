"""A live stream's latency figures at the gateway, from when its source frames arrived.

How this works: the publish session notes each source video frame as it arrives, by its
timestamps on the segments' timeline (the segmenter rebases timestamps after a jump, so the
parts and the AI output speak that timeline too). Three figures come of it:

* part latency: a source part is listed; the last frame that arrived before the part's end
  (by decode time) says how long the part waited for the listing;
* AI frame latency: an AI output frame comes back; the source frame with its presentation
  time (one ms either side: one end rounds timestamps to the ms) says how long the pipeline
  added;
* publish latency: from a segment's last byte (its buffer closing) to all its transcoded
  renditions being listed, noted by whoever lists them.

Each figure keeps a bounded window of recent samples; arrivals are bounded the same way.
"""

from __future__ import annotations

import collections

import attrs

from lpstream.gateway.status import LatencySummary

__all__ = ["LatencyRecorder"]

ARRIVALS_KEPT = 512
"""Video arrivals kept for the part latency (a part's frames are among the latest)."""
FRAMES_KEPT = 900
"""Frame arrivals kept for the AI frame latency (30 s at 30 fps)."""


@attrs.define
class LatencyRecorder:
    """Arrival times of a stream's source frames and the latencies measured against them."""

    _publish: collections.deque[float] = attrs.Factory(lambda: collections.deque(maxlen=200))
    _parts: collections.deque[float] = attrs.Factory(lambda: collections.deque(maxlen=1000))
    _arrivals: collections.deque[tuple[int, float]] = attrs.Factory(
        lambda: collections.deque(maxlen=ARRIVALS_KEPT)
    )
    """(decode time in ms, arrival) of the latest video frames."""
    _frames: dict[int, float] = attrs.Factory(dict)
    """Presentation time in ms -> arrival, oldest first."""

    def video_arrived(self, dts_ms: int, pts_ms: int, now: float) -> None:
        """A source video frame reached the gateway at ``now``."""
        self._arrivals.append((dts_ms, now))
        self._frames[pts_ms] = now
        while len(self._frames) > FRAMES_KEPT:
            del self._frames[next(iter(self._frames))]

    def part_listed(self, end_ms: int, now: float) -> None:
        """A source part ending at ``end_ms`` was listed at ``now``."""
        for dts, arrived in reversed(self._arrivals):
            if dts < end_ms:
                self._parts.append(now - arrived)
                return

    def frame_back(self, pts_ms: int, now: float) -> float | None:
        """Seconds since the source frame of an AI output frame at ``pts_ms`` arrived; None
        when that frame is not known (or was matched already)."""
        arrived = self._frames.pop(pts_ms, None)
        if arrived is None:
            arrived = self._frames.pop(pts_ms - 1, None) or self._frames.pop(pts_ms + 1, None)
        return None if arrived is None else now - arrived

    def renditions_listed(self, seconds: float) -> None:
        """A segment's renditions were listed ``seconds`` after its last byte."""
        self._publish.append(seconds)

    def publish_latency(self) -> LatencySummary:
        """From a source segment's end to its renditions being listed."""
        return LatencySummary.from_samples(self._publish)

    def part_latency(self) -> LatencySummary:
        """From a source part's media arriving to the part being listed."""
        return LatencySummary.from_samples(self._parts)
