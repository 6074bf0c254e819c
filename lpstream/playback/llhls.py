"""Low-Latency HLS (RFC 8216bis) playlists for live streams, as plain state with no I/O.

How this works:

* A segment is published in *partial segments* ("parts") while it is being made: each part is a
  run of whole frames of about the part target (default 0.2 s), flagged ``INDEPENDENT=YES``
  when it opens on a keyframe. ``EXT-X-PART`` lines come before their parent segment; when the
  segment completes, its ``EXTINF`` line follows its parts, and its bytes are its parts' bytes
  end to end (MPEG-TS concatenates). Part ``n.i.ts`` is part ``i`` of segment ``n.ts``.
* ``LowLatencyPlaylist`` is one rendition: the window of complete segments (an ``hls.py``
  ``PlaylistEntry`` each, with its parts) and the parts of the open segment. Parts are listed
  only for segments that end within three target durations of the live edge; older segments
  are plain ``EXTINF`` lines. ``EXT-X-PRELOAD-HINT`` always names the part after the last one
  published, so a player can ask for it before it exists.
* Blocking playlist reload is a decision, not a wait. ``LowLatencyStream.answer_playlist``
  reads ``_HLS_msn`` / ``_HLS_part`` / ``_HLS_skip`` and answers ``PlaylistReady`` (send it),
  ``WaitForUpdate`` (ask again once ``version`` differs from the one given; answer 503 after
  ``timeout`` seconds) or ``Refused`` (400: malformed, an msn more than two segments past the
  last one, a part more than the Advance Part Limit ahead; 404: no such playlist). As the spec
  says, a part index past the last part of a complete segment asks for part 0 of the next.
  ``answer_part`` does the same for part bytes, so the preload-hinted part can be held open.
* ``LowLatencyStream`` is the LL-HLS twin of ``HlsStream``: the same reorder buffers (results
  arrive out of order; a rendition publishes strictly in sequence, so parts of segment n+1 wait
  until n is complete or gapped), the same gaps, restarts, end and master playlist, plus
  ``EXT-X-RENDITION-REPORT`` lines for the other renditions. ``version`` goes up on every
  change a viewer could see; that is what a driver waits on.
* Delta updates (``_HLS_skip=YES``) replace the leading segments that end at least
  ``CAN-SKIP-UNTIL`` (six target durations) before the live edge by one ``EXT-X-SKIP`` line;
  what follows is the tail of the full playlist, line for line. Nothing to skip: full playlist.
* Like ``EXT-X-TARGETDURATION`` in ``hls.py`` (the configured target, or the longest segment
  listed if one is longer), ``PART-TARGET`` is the configured part target or the longest part
  listed, whichever is more (one frame can be longer at very low frame rates), and
  ``PART-HOLD-BACK`` is three of it. Both follow the window: a long segment or part raises them
  only while it is listed, and nothing of it carries into a restart once it left. Defensively,
  a segment or part is never listed longer than ``max_segment_duration`` (the segmenter's cut
  bound), so a bogus duration cannot make a player wait hours. Times are rendered in steps of
  10 us.
* Discontinuities: a restart, or ``mark_discontinuity(seq)`` (the segmenter rebased a timestamp
  jump), puts ``EXT-X-DISCONTINUITY`` before segment ``seq`` of every rendition, whenever each
  one gets to it; ``EXT-X-DISCONTINUITY-SEQUENCE`` counts the tags that left the window.
* Part and segment bytes are kept for the window plus ``KEEP_EXTRA`` segments, as in ``hls.py``.
"""

from __future__ import annotations

import enum
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from lpstream.errors import RemoteProtocolError
from lpstream.playback.hls import (
    KEEP_EXTRA,
    MAX_SEGMENT_DURATION,
    PlaylistEntry,
    RenditionInfo,
    render_master,
)

__all__ = [
    "DEFAULT_PART_TARGET",
    "PART_TARGET_RANGE",
    "LowLatencyPlaylist",
    "LowLatencyStream",
    "ParentSegment",
    "PartAnswer",
    "PartReady",
    "PartialSegment",
    "PlaylistAnswer",
    "PlaylistReady",
    "PlaylistRequest",
    "Refused",
    "RenditionReport",
    "SkipRequest",
    "WaitForUpdate",
    "part_uri",
    "segment_uri",
]

DEFAULT_PART_TARGET = 0.2
"""Part target duration in seconds when none is configured."""
PART_TARGET_RANGE = (0.1, 1.0)
"""Part targets a stream may be configured with, in seconds."""
PART_LINES_SPAN = 3
"""Parts stay listed while their segment ends within this many target durations of the edge."""
SKIP_BOUNDARY_SPAN = 6
"""CAN-SKIP-UNTIL, in target durations (the spec's minimum)."""
PART_HOLD_BACK_SPAN = 3
"""PART-HOLD-BACK, in part targets (the spec's recommendation)."""
BLOCKING_SPAN = 3
"""How long a blocked request is held, in target durations, before the driver answers 503."""
MSN_AHEAD_LIMIT = 2
"""How many segments past the last one a blocking request may ask for (the spec's rule)."""

FULL_VERSION = 3
"""EXT-X-VERSION of a full playlist, as in ``hls.py``: LL-HLS tags need no higher one."""
GAP_VERSION = 8
"""EXT-X-VERSION of a full playlist that lists a gap, as in ``hls.py``."""
DELTA_VERSION = 9
"""EXT-X-VERSION of a delta update (EXT-X-SKIP needs 9)."""
DATERANGE_DELTA_VERSION = 10
"""EXT-X-VERSION of a delta update that answers ``_HLS_skip=v2``."""

_MAX_DISCONTINUITIES = 1024
"""Discontinuity marks kept at most (the oldest goes first): a rendition that falls this far
behind lists its segments without them rather than the marks growing without bound."""
_UNITS = 100_000
"""Decimal times are rendered in steps of 1/_UNITS s (five decimals)."""
_DIRECTIVE = re.compile(r"[0-9]{1,15}")


def segment_uri(seq: int) -> str:
    """URI of segment ``seq``, relative to its media playlist (as in ``hls.py``)."""
    return f"{seq}.ts"


def part_uri(seq: int, index: int) -> str:
    """URI of part ``index`` of segment ``seq``, relative to its media playlist."""
    return f"{seq}.{index}.ts"


def _units(seconds: float) -> int:
    return round(seconds * _UNITS)


def _decimal(units: int) -> str:
    whole, fraction = divmod(units, _UNITS)
    text = f"{whole}.{fraction:05d}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _part_target_in_range(instance: Any, attribute: Any, value: float) -> None:
    low, high = PART_TARGET_RANGE
    if not low <= value <= high:
        raise ValueError(f"part target must be {low}-{high} s, not {value}")


class SkipRequest(enum.Enum):
    """What ``_HLS_skip`` asked for."""

    NO = "NO"
    """A full playlist."""
    YES = "YES"
    """A delta update: old segments replaced by EXT-X-SKIP."""
    V2 = "v2"
    """A delta update that also skips date ranges (this server lists none)."""


_SKIP_VALUES = {"YES": SkipRequest.YES, "v2": SkipRequest.V2}


def _part_needs_msn(instance: PlaylistRequest, attribute: Any, value: int | None) -> None:
    if value is not None and instance.msn is None:
        raise ValueError("a part directive needs an msn directive")


@attrs.frozen(kw_only=True)
class PlaylistRequest:
    """The delivery directives of one media playlist request."""

    msn: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    """``_HLS_msn``: hold the answer until segment ``msn`` (or part ``part`` of it) is listed."""
    part: int | None = attrs.field(
        default=None,
        validator=[attrs.validators.optional(attrs.validators.ge(0)), _part_needs_msn],
    )
    """``_HLS_part``: the part of segment ``msn`` to wait for."""
    skip: SkipRequest = SkipRequest.NO
    """``_HLS_skip``: full playlist or delta update."""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> PlaylistRequest:
        """Reads the directives of a query string; other parameters are ignored.

        Raises:
            RemoteProtocolError: (400) a directive is malformed or ``_HLS_part`` comes alone.
        """
        msn = _directive(query, "_HLS_msn")
        part = _directive(query, "_HLS_part")
        if part is not None and msn is None:
            raise RemoteProtocolError("_HLS_part needs _HLS_msn", code=400)
        raw_skip = query.get("_HLS_skip")
        skip = SkipRequest.NO if raw_skip is None else _SKIP_VALUES.get(raw_skip)
        if skip is None:
            raise RemoteProtocolError(
                f"_HLS_skip must be YES or v2, not {str(raw_skip)[:20]!r}", code=400
            )
        return cls(msn=msn, part=part, skip=skip)


def _directive(query: Mapping[str, str], key: str) -> int | None:
    raw = query.get(key)
    if raw is None:
        return None
    if not _DIRECTIVE.fullmatch(raw):
        raise RemoteProtocolError(
            f"{key} must be a non-negative integer, not {raw[:20]!r}", code=400
        )
    return int(raw)


@attrs.frozen(kw_only=True)
class PlaylistReady:
    """Answer the playlist request now."""

    text: str
    """The playlist (full, or a delta update if one was asked for)."""


@attrs.frozen(kw_only=True)
class PartReady:
    """Answer the part request now."""

    data: bytes
    """The part's MPEG-TS bytes."""


@attrs.frozen(kw_only=True)
class WaitForUpdate:
    """Hold the request: ask again once the stream's ``version`` is no longer ``version``."""

    version: int
    """The stream version the answer was given at."""
    timeout: float
    """Seconds to hold the request in all; past them, answer 503."""


@attrs.frozen(kw_only=True)
class Refused:
    """Answer the request with an error status."""

    code: int
    """HTTP status: 400 for a bad request, 404 for something that does not (or no longer) exist."""
    reason: str
    """A short explanation for the response body."""


PlaylistAnswer: TypeAlias = PlaylistReady | WaitForUpdate | Refused
"""What ``LowLatencyStream.answer_playlist`` says to do with a playlist request."""
PartAnswer: TypeAlias = PartReady | WaitForUpdate | Refused
"""What ``LowLatencyStream.answer_part`` says to do with a part request."""


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

    @property
    def uri(self) -> str:
        return part_uri(self.seq, self.index)


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

    part_target: float = attrs.field(default=DEFAULT_PART_TARGET, validator=_part_target_in_range)
    """Configured part target duration in seconds."""
    window: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    """How many complete segments the playlist lists."""
    _target_duration: int = 2
    max_segment_duration: float = attrs.field(
        default=MAX_SEGMENT_DURATION, validator=attrs.validators.gt(0)
    )
    """No segment or part is listed longer than this many seconds (the segmenter's cut bound)."""
    _segments: deque[ParentSegment] = attrs.field(init=False, factory=deque)
    _open: list[PartialSegment] = attrs.field(init=False, factory=list)
    _open_discontinuity: bool = attrs.field(init=False, default=False)
    _discontinuity_sequence: int = attrs.field(init=False, default=0)
    _part_target_units: int = attrs.field(init=False, default=0)
    _ended: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._part_target_units = _units(self.part_target)

    @property
    def segments(self) -> tuple[ParentSegment, ...]:
        """Complete segments in the window, oldest first."""
        return tuple(self._segments)

    @property
    def open_parts(self) -> tuple[PartialSegment, ...]:
        """Parts of the segment being made."""
        return tuple(self._open)

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
    def advertised_part_target(self) -> float:
        """PART-TARGET: the configured target, or the longest part listed if one is longer."""
        return self._advertised_part_units() / _UNITS

    @property
    def part_hold_back(self) -> float:
        return PART_HOLD_BACK_SPAN * self._advertised_part_units() / _UNITS

    @property
    def can_skip_until(self) -> float:
        return float(SKIP_BOUNDARY_SPAN * self.target_duration)

    def _advertised_part_units(self) -> int:
        listed = (p for s in self._segments for p in s.parts)
        longest = max((p.duration for p in (*listed, *self._open)), default=0.0)
        return max(self._part_target_units, _units(longest))

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

    def refusal(self, request: PlaylistRequest) -> Refused | None:
        """The 400 a blocking request earns by asking too far ahead, if it does."""
        last = self.last_position
        if request.msn is None or last is None:
            return None
        if request.msn > last[0] + MSN_AHEAD_LIMIT:
            return Refused(code=400, reason=f"_HLS_msn={request.msn} is too far ahead")
        if request.part is not None:
            ahead = self.parts_ahead(request.msn, request.part)
            if ahead is not None and ahead > self.advance_part_limit:
                return Refused(code=400, reason=f"_HLS_part={request.part} is too far ahead")
        return None

    def render(
        self, *, skip: SkipRequest = SkipRequest.NO, reports: Sequence[RenditionReport] = ()
    ) -> str:
        """The playlist text: full, or a delta update when ``skip`` asks for one."""
        segments = list(self._segments)
        ends: list[float] = []
        elapsed = 0.0
        for segment in segments:
            elapsed += segment.entry.duration
            ends.append(elapsed)
        edge = elapsed + sum(p.duration for p in self._open)
        target_duration = self.target_duration
        part_units = self._advertised_part_units()
        skipped = 0
        if skip is not SkipRequest.NO:
            boundary = edge - SKIP_BOUNDARY_SPAN * target_duration + 1e-6
            skipped = sum(1 for end in ends if end <= boundary)
        version = GAP_VERSION if any(s.entry.gap for s in segments) else FULL_VERSION
        skip_line = f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}"
        if skipped:
            version = DELTA_VERSION
        if skipped and skip is SkipRequest.V2:
            version = DATERANGE_DELTA_VERSION
            skip_line += ',RECENTLY-REMOVED-DATERANGES=""'
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{version}",
            f"#EXT-X-TARGETDURATION:{target_duration}",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
            f"CAN-SKIP-UNTIL={_decimal(SKIP_BOUNDARY_SPAN * target_duration * _UNITS)},"
            f"PART-HOLD-BACK={_decimal(PART_HOLD_BACK_SPAN * part_units)}",
            f"#EXT-X-PART-INF:PART-TARGET={_decimal(part_units)}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence or 0}",
        ]
        if self._discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self._discontinuity_sequence}")
        if skipped:
            lines.append(skip_line)
        parts_after = edge - PART_LINES_SPAN * target_duration
        for index, (segment, end) in enumerate(zip(segments, ends, strict=True)):
            if index < skipped:
                continue
            entry = segment.entry
            if entry.discontinuity and index > 0:
                lines.append("#EXT-X-DISCONTINUITY")
            if end > parts_after:
                lines.extend(_part_line(p) for p in segment.parts)
            lines.append(f"#EXTINF:{entry.duration:.3f},")
            if entry.gap:
                lines.append("#EXT-X-GAP")
            lines.append(entry.uri)
        if self._open_discontinuity and segments:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.extend(_part_line(p) for p in self._open)
        upcoming = self.next_part
        if not self._ended and upcoming is not None:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_uri(*upcoming)}"')
        lines.extend(report.render() for report in reports)
        if self._ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def _part_line(part: PartialSegment) -> str:
    line = f'#EXT-X-PART:DURATION={_decimal(_units(part.duration))},URI="{part.uri}"'
    return line + ",INDEPENDENT=YES" if part.independent else line


@attrs.frozen
class _PartIn:
    duration: float
    data: bytes
    independent: bool


@attrs.frozen
class _Complete:
    pass


@attrs.frozen
class _Gap:
    duration: float


@attrs.frozen
class _Whole:
    duration: float
    data: bytes


_HandIn: TypeAlias = _PartIn | _Complete | _Gap | _Whole


@attrs.define
class _Stored:
    chunks: list[bytes] = attrs.Factory(list)
    parts: int = 0
    complete: bool = False


@attrs.define
class _Rendition:
    playlist: LowLatencyPlaylist
    info: RenditionInfo | None = None
    peak_bps: int = 0
    data: dict[int, _Stored] = attrs.Factory(dict)
    pending: dict[int, list[_HandIn]] = attrs.Factory(dict)
    next_seq: int | None = None


@attrs.define
class LowLatencyStream:
    """The low-latency playlists, parts and segments of one live stream (see the module comment).

    Hand-ins name a rendition of ``rendition_order``; any other name raises ``KeyError``.
    """

    name: str
    """Stream name, as in ``/hls/{name}/index.m3u8``."""
    rendition_order: tuple[str, ...]
    """Rendition names, source first, in master playlist order."""
    window: int = 6
    """Live window of every media playlist, in complete segments."""
    part_target: float = attrs.field(default=DEFAULT_PART_TARGET, validator=_part_target_in_range)
    """Part target duration in seconds, 0.1 to 1.0."""
    target_duration: int = 2
    """EXT-X-TARGETDURATION at least (longer segments listed raise it while listed)."""
    max_segment_duration: float = attrs.field(
        default=MAX_SEGMENT_DURATION, validator=attrs.validators.gt(0)
    )
    """No segment or part is listed longer than this many seconds (the segmenter's cut bound)."""
    _renditions: dict[str, _Rendition] = attrs.field(init=False, factory=dict)
    _discontinuities: set[int] = attrs.field(init=False, factory=set)
    """Sequence numbers listed after EXT-X-DISCONTINUITY, until every rendition is past them."""
    _ending: bool = attrs.field(init=False, default=False)
    _last_seq: int | None = attrs.field(init=False, default=None)
    _version: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        for name in self.rendition_order:
            self._renditions[name] = _Rendition(self._new_playlist())

    def _new_playlist(self) -> LowLatencyPlaylist:
        return LowLatencyPlaylist(
            part_target=self.part_target,
            window=self.window,
            target_duration=self.target_duration,
            max_segment_duration=self.max_segment_duration,
        )

    @property
    def version(self) -> int:
        """Goes up whenever any playlist of the stream changes; drivers wait on it."""
        return self._version

    @property
    def ended(self) -> bool:
        return all(r.playlist.ended for r in self._renditions.values())

    def playlist(self, rendition: str) -> LowLatencyPlaylist:
        """The playlist state of ``rendition`` (read it; hand things in through the stream)."""
        return self._renditions[rendition].playlist

    # -- hand-ins -------------------------------------------------------------------------

    def add_part(
        self, rendition: str, seq: int, duration: float, data: bytes, *, independent: bool
    ) -> None:
        """Hands in the next part of segment ``seq``; it is listed once its turn comes."""
        if duration <= 0:
            raise ValueError(f"part of segment {seq} has no duration")
        self._hand_in(rendition, seq, _PartIn(duration, data, independent))

    def complete_segment(self, rendition: str, seq: int) -> None:
        """Segment ``seq`` has all its parts; its duration is theirs added up."""
        self._hand_in(rendition, seq, _Complete())

    def add_segment(self, rendition: str, seq: int, duration: float, data: bytes) -> None:
        """Hands in a whole segment that was not published in parts."""
        self._hand_in(rendition, seq, _Whole(duration, data))

    def add_gap(self, rendition: str, seq: int, duration: float) -> None:
        """Segment ``seq`` of ``rendition`` will never be whole: it is listed with EXT-X-GAP.

        Parts of it already published stay listed and can still be fetched.
        """
        self._hand_in(rendition, seq, _Gap(duration))

    def end(self, last_seq: int | None) -> None:
        """The publisher left; ``last_seq`` is the last segment handed to renditions."""
        self._ending = True
        self._last_seq = last_seq
        for r in self._renditions.values():
            self._maybe_end(r)

    def restart(self, first_seq: int) -> None:
        """A new publisher took over the name; ``first_seq`` starts after a discontinuity.

        ``first_seq`` comes from ``next_sequence``. A rendition still short of it is brought
        up to it first: an open segment is completed with the parts it has, and a segment
        that never came is listed as a gap of one target duration, so numbers stay aligned.
        """
        for r in self._renditions.values():
            while r.next_seq is not None and r.next_seq < first_seq:
                seq = r.next_seq
                for event in r.pending.pop(seq, []):
                    self._apply(r, seq, event)
                if r.next_seq == seq:
                    if r.playlist.open_parts:
                        self._apply(r, seq, _Complete())
                    else:
                        self._apply(r, seq, _Gap(float(r.playlist.target_duration)))
            r.next_seq = first_seq
        self._discontinuities.add(first_seq)
        self._ending = False
        self._last_seq = None
        self._version += 1

    def mark_discontinuity(self, seq: int) -> None:
        """Segment ``seq`` follows a discontinuity (its timestamps do not continue from the
        segment before): every rendition lists EXT-X-DISCONTINUITY before it.

        Call it before anything of segment ``seq`` is handed in; a rendition that listed it
        already is left as it is.
        """
        self._discontinuities.add(seq)
        if len(self._discontinuities) > _MAX_DISCONTINUITIES:
            self._discontinuities.discard(min(self._discontinuities))

    def next_sequence(self) -> int:
        """The sequence number a restarted stream should continue from."""
        listed = max(
            (
                r.next_seq + (1 if r.playlist.open_parts else 0)
                for r in self._renditions.values()
                if r.next_seq is not None
            ),
            default=0,
        )
        pending = max(
            (max(r.pending) + 1 for r in self._renditions.values() if r.pending), default=0
        )
        return max(listed, pending)

    def has_info(self, rendition: str) -> bool:
        return self._renditions[rendition].info is not None

    def has_rendition(self, rendition: str) -> bool:
        return rendition in self._renditions

    def add_rendition(self, name: str, first_seq: int) -> None:
        """Adds a rendition that starts mid-stream (a live AI output) at segment
        ``first_seq``; it is listed last in the master playlist.

        Raises:
            ValueError: the stream has a rendition of that name already.
        """
        if name in self._renditions:
            raise ValueError(f"rendition {name!r} exists already")
        self._renditions[name] = _Rendition(self._new_playlist(), next_seq=first_seq)
        self.rendition_order = (*self.rendition_order, name)
        self._version += 1

    def set_info(self, info: RenditionInfo) -> None:
        self._renditions[info.name].info = info

    def _hand_in(self, name: str, seq: int, event: _HandIn) -> None:
        r = self._renditions[name]
        if r.next_seq is None:
            r.next_seq = 0
        if seq < r.next_seq:
            return  # a late duplicate of something already listed
        if seq > r.next_seq:
            queued = r.pending.setdefault(seq, [])
            _check_order(name, seq, queued, sum(isinstance(e, _PartIn) for e in queued), event)
            queued.append(event)
            return
        _check_order(name, seq, [], len(r.playlist.open_parts), event)
        self._apply(r, seq, event)
        while r.next_seq in r.pending:
            seq = r.next_seq
            for queued_event in r.pending.pop(seq):
                self._apply(r, seq, queued_event)

    def _apply(self, r: _Rendition, seq: int, event: _HandIn) -> None:
        discontinuity = seq in self._discontinuities
        if isinstance(event, _PartIn):
            index = len(r.playlist.open_parts)
            r.playlist.add_part(
                PartialSegment(
                    seq=seq, index=index, duration=event.duration, independent=event.independent
                ),
                discontinuity=discontinuity,
            )
            stored = r.data.setdefault(seq, _Stored())
            stored.chunks.append(event.data)
            stored.parts += 1
            self._version += 1
            return
        stored = r.data.setdefault(seq, _Stored())
        if isinstance(event, _Complete):
            duration = sum(p.duration for p in r.playlist.open_parts)
            stored.complete = True
        elif isinstance(event, _Whole):
            duration = event.duration
            stored.chunks = [event.data]
            stored.complete = True
        else:
            duration = event.duration
        r.playlist.complete(
            PlaylistEntry(
                seq=seq,
                duration=duration,
                uri=segment_uri(seq),
                discontinuity=discontinuity,
                gap=isinstance(event, _Gap),
            )
        )
        if stored.complete and duration > 0:
            size = sum(len(chunk) for chunk in stored.chunks)
            r.peak_bps = max(r.peak_bps, int(size * 8 / duration))
        if not stored.chunks:
            del r.data[seq]
        for old in [s for s in r.data if s < seq - self.window - KEEP_EXTRA]:
            del r.data[old]
        r.next_seq = seq + 1
        self._forget_discontinuities()
        self._version += 1
        self._maybe_end(r)

    def _forget_discontinuities(self) -> None:
        """Drops the marks every rendition is past."""
        if not self._discontinuities:
            return
        floor = min(0 if r.next_seq is None else r.next_seq for r in self._renditions.values())
        if min(self._discontinuities) < floor:
            self._discontinuities = {s for s in self._discontinuities if s >= floor}

    def _maybe_end(self, r: _Rendition) -> None:
        if not self._ending or r.playlist.ended or r.playlist.open_parts:
            return
        if self._last_seq is None or (r.next_seq is not None and r.next_seq > self._last_seq):
            r.playlist.end()
            self._version += 1

    # -- what viewers get -----------------------------------------------------------------

    def media_playlist(self, rendition: str) -> str | None:
        """The full playlist of ``rendition``; None until it lists something."""
        r = self._renditions.get(rendition)
        if r is None or r.playlist.last_position is None:
            return None
        return r.playlist.render(reports=self.rendition_reports(rendition))

    def answer_playlist(self, rendition: str, query: Mapping[str, str]) -> PlaylistAnswer:
        """Decides what to do with a media playlist request and its query string."""
        r = self._renditions.get(rendition)
        if r is None:
            return Refused(code=404, reason="no such rendition")
        try:
            request = PlaylistRequest.from_query(query)
        except RemoteProtocolError as exc:
            return Refused(code=exc.code, reason=exc.reason)
        playlist = r.playlist
        if playlist.last_position is None:
            return Refused(code=404, reason="nothing of this rendition yet")
        if request.msn is not None and not playlist.ended:
            refusal = playlist.refusal(request)
            if refusal is not None:
                return refusal
            if not playlist.contains(request.msn, request.part):
                return self._wait(playlist)
        text = playlist.render(skip=request.skip, reports=self.rendition_reports(rendition))
        return PlaylistReady(text=text)

    def answer_part(self, rendition: str, seq: int, index: int) -> PartAnswer:
        """Decides what to do with a request for part ``index`` of segment ``seq``.

        A part not published yet but close ahead (the preload hint) is waited for.
        """
        r = self._renditions.get(rendition)
        if r is None:
            return Refused(code=404, reason="no such rendition")
        data = self.part(rendition, seq, index)
        if data is not None:
            return PartReady(data=data)
        playlist = r.playlist
        last = playlist.last_position
        ahead = playlist.parts_ahead(seq, index)
        if (
            playlist.ended
            or last is None
            or ahead is None
            or seq > last[0] + MSN_AHEAD_LIMIT
            or ahead > playlist.advance_part_limit
        ):
            return Refused(code=404, reason="part is not available")
        return self._wait(playlist)

    def _wait(self, playlist: LowLatencyPlaylist) -> WaitForUpdate:
        return WaitForUpdate(
            version=self._version, timeout=float(BLOCKING_SPAN * playlist.target_duration)
        )

    def part(self, rendition: str, seq: int, index: int) -> bytes | None:
        """Bytes of a published part, or None."""
        r = self._renditions.get(rendition)
        stored = None if r is None else r.data.get(seq)
        if stored is None or not 0 <= index < stored.parts:
            return None
        return stored.chunks[index]

    def segment(self, rendition: str, seq: int) -> bytes | None:
        """Bytes of a complete segment (its parts end to end), or None."""
        r = self._renditions.get(rendition)
        stored = None if r is None else r.data.get(seq)
        if stored is None or not stored.complete:
            return None
        return b"".join(stored.chunks)

    def rendition_reports(self, rendition: str) -> list[RenditionReport]:
        """Reports on every other rendition that lists something, in master playlist order."""
        reports = []
        for name, r in self._renditions.items():
            last = r.playlist.last_position
            if name != rendition and last is not None:
                reports.append(
                    RenditionReport(
                        uri=f"../{name}/index.m3u8", last_msn=last[0], last_part=last[1]
                    )
                )
        return reports

    def master_playlist(self) -> str | None:
        """The master playlist, on the same rules as ``HlsStream.master_playlist``."""
        source = self._renditions[self.rendition_order[0]]
        return render_master(
            self.rendition_order,
            [
                (name, r.info, r.peak_bps)
                for name, r in self._renditions.items()
                if r.info is not None and r.playlist.last_position is not None
            ],
            source_segments=len(source.playlist.segments),
        )

    def renditions_ready(self) -> tuple[str, ...]:
        return tuple(n for n, r in self._renditions.items() if r.playlist.last_position is not None)


def _check_order(name: str, seq: int, queued: list[_HandIn], parts: int, event: _HandIn) -> None:
    """Refuses hand-ins that no segment could be made of (our caller's mistake)."""
    if queued and not isinstance(queued[-1], _PartIn):
        raise ValueError(f"segment {seq} of {name} was already finished")
    if isinstance(event, _Complete) and parts == 0:
        raise ValueError(f"segment {seq} of {name} has no parts; hand it in whole or as a gap")
    if isinstance(event, _Whole) and parts > 0:
        raise ValueError(f"segment {seq} of {name} has parts; complete it instead")
