"""The segmenter's output timeline: timestamps made safe before anything else looks at them.

How this works:

The MPEG-TS muxer refuses, and a playlist would list, what a bad publisher sends, so every
packet goes through :meth:`Timeline.retime` first:

* per track, decode timestamps must strictly increase: a packet at or before its track's last
  one (late, duplicate, out of order) is dropped and counted;
* a step of more than ``max_timestamp_jump`` (either way) from the newest timestamp of the
  stream is a *jump* (a restarted encoder, a bogus offset, RTMP's 32-bit wrap): the track is
  rebased so that it continues one frame after its last packet, so the output timeline stays
  continuous. What a jump means for segments (a cut, a discontinuity) is the segmenter's call;
* a presentation timestamp before the decode timestamp, or further after it than the jump
  limit, is set to the decode timestamp (counted).

Each track also keeps its usual distance between packets, the "one frame" a rebased track
continues after, and what the end of a stream adds to its last packet.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from lpstream.media import MediaPacket, TrackKind

__all__ = ["MAX_TIMESTAMP_JUMP", "Timeline"]

MAX_TIMESTAMP_JUMP = 5.0
"""Seconds a timestamp may step from the stream's newest one (either way) before it is a jump."""
_DEFAULT_STEP_MS = {TrackKind.VIDEO: 33, TrackKind.AUDIO: 23}


@attrs.define
class _Track:
    """Where one track's timestamps stand."""

    step_ms: int
    """Its usual distance between packets, as last measured."""
    offset: int = 0
    """Added to its input timestamps to put them on the output timeline."""
    last_dts: int | None = None
    """Its newest decode timestamp on the output timeline."""


@attrs.define
class Timeline:
    """The output timeline of one stream's tracks (see the module comment)."""

    notice: Callable[..., None]
    """Told of each repair: ``notice(kind, timestamp)`` with kind ``late``, ``jump`` or ``pts``."""
    max_timestamp_jump: float = MAX_TIMESTAMP_JUMP
    """A timestamp further than this many seconds from the stream's newest one is a jump."""
    late: int = attrs.field(init=False, default=0)
    """Packets dropped for not being after their track's last one."""
    jumps: int = attrs.field(init=False, default=0)
    """Jumps rebased."""
    repaired_pts: int = attrs.field(init=False, default=0)
    """Presentation timestamps set to the decode timestamp."""
    jumped: bool = attrs.field(init=False, default=False)
    """Whether the packet retimed last was rebased after a jump."""
    _tracks: dict[TrackKind, _Track] = attrs.field(
        init=False,
        factory=lambda: {kind: _Track(step_ms=step) for kind, step in _DEFAULT_STEP_MS.items()},
    )
    _head: int | None = attrs.field(init=False, default=None)
    """The newest decode timestamp of the stream (any track), output timeline."""
    _first_ms: int | None = attrs.field(init=False, default=None)

    @property
    def span_ms(self) -> int:
        """From the first packet kept to the newest one, in milliseconds (0 before any)."""
        if self._head is None or self._first_ms is None:
            return 0
        return self._head - self._first_ms

    def step_ms(self, kind: TrackKind) -> int:
        """The usual distance between packets of track ``kind``, as last measured."""
        return self._tracks[kind].step_ms

    def output_ms(self, kind: TrackKind, input_ms: int) -> int:
        """Where an input timestamp of track ``kind`` lands on the output timeline."""
        return input_ms + self._tracks[kind].offset

    def retime(self, packet: MediaPacket) -> MediaPacket | None:
        """The packet on the output timeline, or None if it must be dropped."""
        track = self._tracks[packet.kind]
        dts = packet.dts + track.offset
        limit = round(self.max_timestamp_jump * 1000)
        head = self._head
        self.jumped = False
        if head is not None and abs(dts - head) > limit:
            target = head if track.last_dts is None else max(head, track.last_dts + track.step_ms)
            self.jumps += 1
            self.jumped = True
            self.notice("jump", dts - target)
            track.offset += target - dts
            dts = target
        elif track.last_dts is not None and dts <= track.last_dts:
            self.late += 1
            self.notice("late", dts)
            return None
        elif track.last_dts is not None and 0 < dts - track.last_dts < 1000:
            track.step_ms = dts - track.last_dts
        composition = packet.pts - packet.dts
        if not 0 <= composition <= limit:
            self.repaired_pts += 1
            self.notice("pts", composition)
            composition = 0
        track.last_dts = dts
        self._head = dts if head is None else max(head, dts)
        if self._first_ms is None:
            self._first_ms = dts
        if dts == packet.dts and composition == packet.pts - packet.dts:
            return packet
        return attrs.evolve(packet, dts=dts, pts=dts + composition)
