"""One output timeline for a forward, whatever the input's timestamps do.

How this works: segments arrive with MPEG-TS timestamps (90 kHz ticks). Consecutive segments
of one publish continue each other's timeline; across a discontinuity (a new publisher, a
jump), after segments were dropped, after a reconnect, or when a 33-bit timestamp wraps,
they do not. The output must never go back, so each segment gets an *offset* added to its
timestamps:

* A segment that continues the input keeps the current offset: its earliest timestamp is
  within ``tolerance`` of where the previous segment ended, and every stream's first
  timestamp is after that stream's last one.
* Any other segment is *placed*: the offset is chosen so that its earliest timestamp lands
  where the output ended (the latest timestamp plus duration of any stream). The output thus
  continues without a hole and without a step back; the time that was missing is not
  replayed as a pause.

:meth:`restart` (a new connection) makes the next segment placed. Nothing here reads a clock
or does I/O; the remuxer calls :meth:`offset_for` once per segment and :meth:`advance` once per
packet it writes.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["TICKS_PER_SECOND", "OutputTimeline"]

TICKS_PER_SECOND = 90_000
"""MPEG-TS timestamps count 90 kHz ticks."""


@attrs.define
class OutputTimeline:
    """Maps each segment's timestamps onto one output timeline that never goes back."""

    tolerance: int = TICKS_PER_SECOND
    """How far (ticks) a segment's start may be from the previous end and still continue it."""
    _offset: int | None = attrs.field(default=None, init=False)
    _input_end: int | None = attrs.field(default=None, init=False)
    _output_end: int = attrs.field(default=0, init=False)
    _last_dts: dict[str, int] = attrs.field(factory=dict, init=False)
    _placements: int = attrs.field(default=0, init=False)

    @property
    def output_end(self) -> int:
        """Where the output ends so far (ticks): the next placed segment starts here."""
        return self._output_end

    @property
    def placements(self) -> int:
        """Segments placed so far (the first one included)."""
        return self._placements

    def restart(self) -> None:
        """A new output begins: the next segment is placed, the timeline still goes on."""
        self._offset = None

    def offset_for(self, starts: Mapping[str, int], *, discontinuity: bool) -> int:
        """The offset (ticks) to add to every timestamp of a segment.

        Args:
            starts: each stream's first decode timestamp in the segment (input ticks), keyed by
                stream (e.g. ``video``, ``audio``); must not be empty.
            discontinuity: the gateway says this segment does not continue the previous one.
        """
        if not starts:
            raise ValueError("a segment with no timestamps has no offset")
        start = min(starts.values())
        offset = self._offset
        continues = (
            offset is not None
            and not discontinuity
            and self._input_end is not None
            and abs(start - self._input_end) <= self.tolerance
            and all(
                dts + offset > self._last_dts.get(kind, dts + offset - 1)
                for kind, dts in starts.items()
            )
        )
        if not continues or offset is None:
            offset = self._output_end - start
            self._offset = offset
            self._placements += 1
        self._input_end = start
        return offset

    def advance(self, kind: str, dts: int, duration: int) -> None:
        """Notes a packet written: ``dts`` on the output timeline, ``duration`` in ticks."""
        step = max(duration, 1)
        self._last_dts[kind] = max(self._last_dts.get(kind, dts), dts)
        self._output_end = max(self._output_end, dts + step)
        if self._offset is not None:
            end = dts - self._offset + step
            self._input_end = end if self._input_end is None else max(self._input_end, end)
