"""Audio and video events put back in decode order, configurations first (sans-IO).

How this works: an MPEG-TS muxer writes each track when it suits it, so audio may trail the
video by half a second or more (FFmpeg's default ``max_delay`` is 0.7 s), and the first video
keyframe comes before the audio's first frame. The segmenter opens its first segment at that
keyframe with the tracks it knows then, so the audio's configuration must come first, and it
cuts segments by the video, so audio should not lag far behind it.

:class:`Interleaver` keeps a queue per track the program has. At the start it holds
everything until every track has sent its configuration and a frame, then lets the
configurations out first. After that it lets out the frame with the lowest decode time
whenever every track has one waiting (a configuration goes with the frame behind it). A track
that falls silent does not stall the others: once the waiting media spans ``max_hold_ms``,
or ``max_events`` are held, the oldest goes out anyway.
"""

from __future__ import annotations

import collections

import attrs

from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind

__all__ = ["MAX_HOLD_EVENTS", "MAX_HOLD_MS", "Interleaver"]

MAX_HOLD_MS = 1000
"""Milliseconds of media held while a track has nothing waiting."""
MAX_HOLD_EVENTS = 1000
"""Events held at most, whatever their times."""


@attrs.define
class Interleaver:
    """Feed events as a demuxer makes them; get them in decode order (module comment)."""

    tracks: frozenset[TrackKind] = frozenset({TrackKind.VIDEO})
    """The tracks the program has (set it from the PMT)."""
    max_hold_ms: int = MAX_HOLD_MS
    """Media held at most while a track has nothing waiting, in milliseconds."""
    max_events: int = MAX_HOLD_EVENTS
    """Events held at most."""
    _queues: dict[TrackKind, collections.deque[MediaEvent]] = attrs.Factory(
        lambda: {kind: collections.deque() for kind in TrackKind}
    )
    _started: bool = False
    _configured: set[TrackKind] = attrs.Factory(set)
    _framed: set[TrackKind] = attrs.Factory(set)
    _held: int = 0
    _newest: int | None = None
    """The latest decode time held."""

    def push(self, event: MediaEvent) -> list[MediaEvent]:
        """Takes one event; returns what may go out now."""
        kind = event.kind if isinstance(event, CodecConfig | MediaPacket) else TrackKind.VIDEO
        self._queues[kind].append(event)
        self._held += 1
        if isinstance(event, CodecConfig):
            self._configured.add(kind)
        if isinstance(event, MediaPacket):
            self._framed.add(kind)
            self._newest = event.dts if self._newest is None else max(self._newest, event.dts)
        return self._release(final=False)

    def flush(self) -> list[MediaEvent]:
        """Everything still held, in order (the stream ended)."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> list[MediaEvent]:
        out: list[MediaEvent] = []
        if not self._started:
            ready = self.tracks <= self._configured & self._framed
            if not (final or ready or self._over_budget()):
                return out
            self._started = True
            for queue in self._queues.values():  # every track's configuration first
                while queue and not isinstance(queue[0], MediaPacket):
                    out.append(self._pop(queue))
        while True:
            for queue in self._queues.values():
                while queue and not isinstance(queue[0], MediaPacket):
                    out.append(self._pop(queue))
            heads = [q for q in self._queues.values() if q]
            if not heads:
                return out
            waiting = all(self._queues[kind] for kind in self.tracks)
            if not (final or waiting or self._over_budget()):
                return out
            oldest = min(heads, key=lambda q: _dts(q[0]))
            out.append(self._pop(oldest))

    def _over_budget(self) -> bool:
        if self._held >= self.max_events:
            return True
        oldest = [
            next((e.dts for e in queue if isinstance(e, MediaPacket)), None)
            for queue in self._queues.values()
        ]
        held = [dts for dts in oldest if dts is not None]
        return (
            bool(held)
            and self._newest is not None
            and self._newest - min(held) >= (self.max_hold_ms)
        )

    def _pop(self, queue: collections.deque[MediaEvent]) -> MediaEvent:
        self._held -= 1
        return queue.popleft()


def _dts(event: MediaEvent) -> int:
    return event.dts if isinstance(event, MediaPacket) else 0
