"""The live window of one LL-HLS rendition, in segments and parts, as plain state.

How this works:

* A segment is published in *partial segments* ("parts") while it is being made: each part is
  a run of whole frames of about the part target (default 0.2 s), flagged ``INDEPENDENT=YES``
  when it opens on a keyframe. When the segment completes, it becomes a ``ParentSegment``: its
  ``hls.py`` ``PlaylistEntry`` with its parts attached.
* ``LowLatencyPlaylist`` holds the window of complete segments and the parts of the open one,
  and answers where the live edge is: the last thing listed (``last_position``), the part to
  be published next (``next_part``, the preload hint), whether a position is listed yet
  (``contains``) and how far ahead one is (``parts_ahead``). It checks that parts and segments
  come in order; the stream (``llhls.py``) puts them in order first.
* Like ``EXT-X-TARGETDURATION`` in ``hls.py`` (the configured target, or the longest segment
  listed if one is longer), ``PART-TARGET`` is the configured part target or the longest part
  listed, whichever is more (one frame can be longer at very low frame rates), and
  ``PART-HOLD-BACK`` is three of it. Both follow the window: a long segment or part raises them
  only while it is listed, and nothing of it carries into a restart once it left. Defensively,
  a segment or part is never listed longer than ``max_segment_duration`` (the segmenter's cut
  bound), so a bogus duration cannot make a player wait hours.
* ``EXT-X-DISCONTINUITY-SEQUENCE`` counts the discontinuity tags that left the window. The
  text itself is ``llhls_render.py``'s.
* In a fragmented-MP4 rendition every part and segment carries the number of its init
  section (``init``); ``upcoming_init`` is the one a part not handed in yet will have, which
  names the preload hint (``.m4s`` or ``.ts``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs

from lpstream.playback.hls import MAX_SEGMENT_DURATION, PlaylistEntry
from lpstream.playback.llhls_render import (
    PART_HOLD_BACK_SPAN,
    SKIP_BOUNDARY_SPAN,
    UNITS_PER_SECOND,
    part_uri,
    render_playlist,
    units,
)
from lpstream.playback.llhls_requests import SkipRequest

__all__ = [
    "DEFAULT_PART_TARGET",
    "PART_TARGET_RANGE",
    "LowLatencyPlaylist",
    "ParentSegment",
    "PartialSegment",
    "RenditionReport",
    "check_part_target",
]

DEFAULT_PART_TARGET = 0.2
"""Part target duration in seconds when none is configured."""
PART_TARGET_RANGE = (0.1, 1.0)
"""Part targets a stream may be configured with, in seconds."""


def check_part_target(instance: Any, attribute: Any, value: float) -> None:
    """attrs validator: a part target within ``PART_TARGET_RANGE``."""
    low, high = PART_TARGET_RANGE
    if not low <= value <= high:
        raise ValueError(f"part target must be {low}-{high} s, not {value}")


@attrs.frozen(kw_only=True)
class PartialSegment:
    """One part of a segment, an EXT-X-PART line."""

    seq: int
    """Media sequence number of its parent segment."""
    index: int
    """Its place in the parent segment, from 0."""
    duration: float
    """Duration in seconds."""
    independent: bool = False
    """Opens with a keyframe (INDEPENDENT=YES)."""
    init: int | None = None
    """Number of the init section of a fragmented-MP4 part; None: MPEG-TS."""

    @property
    def uri(self) -> str:
        return part_uri(self.seq, self.index, fmp4=self.init is not None)


@attrs.frozen(kw_only=True)
class ParentSegment:
    """A complete segment of a low-latency playlist and the parts it was published in."""

    entry: PlaylistEntry
    """Its EXTINF line (and gap and discontinuity flags)."""
    parts: tuple[PartialSegment, ...] = ()
    """Its parts, in order; none for a gap or a segment handed in whole."""


@attrs.frozen(kw_only=True)
class RenditionReport:
    """Where another rendition of the stream is (EXT-X-RENDITION-REPORT)."""

    uri: str
    """That rendition's media playlist, relative to the playlist carrying the report."""
    last_msn: int
    """Sequence number of its newest segment, complete or in progress."""
    last_part: int | None = None
    """Index of its newest part in that segment; None when that segment has no parts."""

    def render(self) -> str:
        line = f'#EXT-X-RENDITION-REPORT:URI="{self.uri}",LAST-MSN={self.last_msn}'
        return line if self.last_part is None else f"{line},LAST-PART={self.last_part}"


@attrs.define
class LowLatencyPlaylist:
    """The live window of one rendition, in segments and parts (see the module comment)."""

    part_target: float = attrs.field(default=DEFAULT_PART_TARGET, validator=check_part_target)
    """Configured part target duration in seconds."""
    window: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    """How many complete segments the playlist lists."""
    _target_duration: int = 2
    max_segment_duration: float = attrs.field(
        default=MAX_SEGMENT_DURATION, validator=attrs.validators.gt(0)
    )
    """No segment or part is listed longer than this many seconds (the segmenter's cut bound)."""
    upcoming_init: int | None = attrs.field(default=None, kw_only=True)
    """Init section of the parts handed in from now on (None: MPEG-TS); the stream sets it."""
    _segments: deque[ParentSegment] = attrs.field(init=False, factory=deque)
    _open: list[PartialSegment] = attrs.field(init=False, factory=list)
    _open_discontinuity: bool = attrs.field(init=False, default=False)
    _discontinuity_sequence: int = attrs.field(init=False, default=0)
    _part_target_units: int = attrs.field(init=False, default=0)
    _ended: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._part_target_units = units(self.part_target)

    @property
    def segments(self) -> tuple[ParentSegment, ...]:
        """Complete segments in the window, oldest first."""
        return tuple(self._segments)

    @property
    def open_parts(self) -> tuple[PartialSegment, ...]:
        """Parts of the segment being made."""
        return tuple(self._open)

    @property
    def open_discontinuity(self) -> bool:
        """Whether the segment being made follows a discontinuity."""
        return self._open_discontinuity

    @property
    def discontinuity_sequence(self) -> int:
        """EXT-X-DISCONTINUITY-SEQUENCE: discontinuity tags that left the window."""
        return self._discontinuity_sequence

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def media_sequence(self) -> int | None:
        """EXT-X-MEDIA-SEQUENCE: the first segment listed; None while nothing is."""
        if self._segments:
            return self._segments[0].entry.seq
        return self._open[0].seq if self._open else None

    @property
    def target_duration(self) -> int:
        """EXT-X-TARGETDURATION: the configured one, or the longest segment listed rounded up."""
        longest = max((s.entry.duration for s in self._segments), default=0.0)
        return max(self._target_duration, math.ceil(longest - 1e-3))

    @property
    def advertised_part_units(self) -> int:
        """PART-TARGET in rendering steps (see ``llhls_render.units``)."""
        listed = (p for s in self._segments for p in s.parts)
        longest = max((p.duration for p in (*listed, *self._open)), default=0.0)
        return max(self._part_target_units, units(longest))

    @property
    def advertised_part_target(self) -> float:
        """PART-TARGET: the configured target, or the longest part listed if one is longer."""
        return self.advertised_part_units / UNITS_PER_SECOND

    @property
    def part_hold_back(self) -> float:
        return PART_HOLD_BACK_SPAN * self.advertised_part_units / UNITS_PER_SECOND

    @property
    def can_skip_until(self) -> float:
        return float(SKIP_BOUNDARY_SPAN * self.target_duration)

    @property
    def advance_part_limit(self) -> float:
        """How many parts past the last one a request may ask for (the spec's formula)."""
        target = self.advertised_part_target
        return 3 / target if target < 1 else 3.0

    @property
    def last_position(self) -> tuple[int, int | None] | None:
        """(msn, part) of the newest thing listed: a part, or a segment without parts."""
        if self._open:
            return self._open[-1].seq, self._open[-1].index
        if not self._segments:
            return None
        last = self._segments[-1]
        return last.entry.seq, (last.parts[-1].index if last.parts else None)

    @property
    def next_part(self) -> tuple[int, int] | None:
        """(msn, part) of the part to be published next: the preload hint."""
        if self._open:
            return self._open[-1].seq, self._open[-1].index + 1
        if not self._segments:
            return None
        return self._segments[-1].entry.seq + 1, 0

    @property
    def next_part_init(self) -> int | None:
        """Init section of the part to be published next: the open segment's, or
        ``upcoming_init`` when a segment starts next."""
        return self._open[0].init if self._open else self.upcoming_init

    def add_part(self, part: PartialSegment, *, discontinuity: bool = False) -> None:
        """Lists a part at the live edge; ``discontinuity`` marks a segment's first part."""
        if part.duration <= 0:
            raise ValueError(f"part {part.uri} has no duration")
        expected = self.next_part
        if expected is None and part.index != 0:
            raise ValueError(f"part {part.uri} is not the first part of a segment")
        if expected is not None and (part.seq, part.index) != expected:
            raise ValueError(f"part {part.uri} does not follow {part_uri(*expected)}")
        if not self._open:
            self._open_discontinuity = discontinuity
        if part.duration > self.max_segment_duration:
            part = attrs.evolve(part, duration=self.max_segment_duration)
        self._open.append(part)
        self._ended = False

    def complete(self, entry: PlaylistEntry) -> None:
        """Lists a complete segment: the open one (its parts attach) or one without parts."""
        if self._open and entry.seq != self._open[0].seq:
            raise ValueError(f"segment {entry.seq} completed while {self._open[0].seq} is open")
        if self._segments and entry.seq != self._segments[-1].entry.seq + 1:
            raise ValueError(f"segment {entry.seq} does not follow {self._segments[-1].entry.seq}")
        entry = attrs.evolve(
            entry,
            discontinuity=entry.discontinuity or self._open_discontinuity,
            duration=min(entry.duration, self.max_segment_duration),
        )
        self._segments.append(ParentSegment(entry=entry, parts=tuple(self._open)))
        self._open.clear()
        self._open_discontinuity = False
        self._ended = False
        while len(self._segments) > self.window:
            self._segments.popleft()
            if self._segments[0].entry.discontinuity:
                self._discontinuity_sequence += 1

    def end(self) -> None:
        """Marks the playlist finished (EXT-X-ENDLIST); the open segment must be complete."""
        if self._open:
            raise ValueError(f"segment {self._open[0].seq} is still open")
        self._ended = True

    def contains(self, msn: int, part: int | None) -> bool:
        """Whether the playlist lists segment ``msn`` (or part ``part`` of it) or later.

        A part index past the last part of a complete segment stands for part 0 of the next
        segment, as RFC 8216bis says for blocking reloads.
        """
        if part is None:
            return bool(self._segments) and msn <= self._segments[-1].entry.seq
        upcoming = self.next_part
        if upcoming is None:
            return False
        seq, index = upcoming
        if msn < seq - 1:
            return True
        if msn == seq - 1:
            if not self._segments or self._segments[-1].entry.seq != msn:
                return True  # older than anything listed, and parts of ``seq`` are
            return part < len(self._segments[-1].parts) or index > 0
        return msn == seq and part < index

    def parts_ahead(self, msn: int, part: int) -> int | None:
        """At least how many parts must still be published before part ``part`` of ``msn``.

        None when that part is not in the future: published already, or past the end of a
        segment that is complete.
        """
        upcoming = self.next_part
        if upcoming is None:
            return None
        seq, index = upcoming
        if msn < seq or (msn == seq and part < index):
            return None
        return part - index + 1 if msn == seq else part + 1

    def render(
        self, *, skip: SkipRequest = SkipRequest.NO, reports: Sequence[RenditionReport] = ()
    ) -> str:
        """The playlist text: full, or a delta update when ``skip`` asks for one."""
        return render_playlist(self, skip=skip, reports=reports)
