"""The text of an LL-HLS media playlist, rendered from a ``LowLatencyPlaylist``.

How this works:

* Parts (``EXT-X-PART``) are listed only for segments that end within ``PART_LINES_SPAN``
  target durations of the live edge; older segments are plain ``EXTINF`` lines. The open
  segment's parts come last, then ``EXT-X-PRELOAD-HINT`` naming the part after the last one
  published (unless the playlist ended), then the other renditions' reports.
* A delta update (``_HLS_skip=YES``) replaces the leading segments that end at least
  ``CAN-SKIP-UNTIL`` (``SKIP_BOUNDARY_SPAN`` target durations) before the live edge by one
  ``EXT-X-SKIP`` line; what follows is the tail of the full playlist, line for line. Nothing
  to skip: the full playlist.
* ``EXT-X-VERSION`` is the lowest that has every tag used: 3, 6 with EXT-X-MAP, 8 with a gap,
  9 with a skip, 10 for a ``v2`` skip.
* Fragmented MP4: ``EXT-X-MAP`` goes before the first segment listed (the first after the skip
  in a delta update), after every discontinuity and where the init section changes, ahead of
  that segment's part lines (``init_sections.needs_map``); the open segment's parts count as
  a segment.
* Part ``n.i.ts`` is part ``i`` of segment ``n.ts`` (``n.i.m4s`` of ``n.m4s`` in fMP4).
  Decimal times are rendered in steps of 10 us (:func:`units`, :func:`decimal`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lpstream.playback.init_sections import MAP_VERSION, map_tag, needs_map
from lpstream.playback.llhls_requests import SkipRequest

if TYPE_CHECKING:
    from lpstream.playback.llhls_playlist import (
        LowLatencyPlaylist,
        PartialSegment,
        RenditionReport,
    )

__all__ = [
    "DATERANGE_DELTA_VERSION",
    "DELTA_VERSION",
    "FULL_VERSION",
    "GAP_VERSION",
    "PART_HOLD_BACK_SPAN",
    "PART_LINES_SPAN",
    "SKIP_BOUNDARY_SPAN",
    "UNITS_PER_SECOND",
    "decimal",
    "part_uri",
    "render_playlist",
    "units",
]

PART_LINES_SPAN = 3
"""Parts stay listed while their segment ends within this many target durations of the edge."""
SKIP_BOUNDARY_SPAN = 6
"""CAN-SKIP-UNTIL, in target durations (the spec's minimum)."""
PART_HOLD_BACK_SPAN = 3
"""PART-HOLD-BACK, in part targets (the spec's recommendation)."""

FULL_VERSION = 3
"""EXT-X-VERSION of a full playlist, as in ``hls.py``: LL-HLS tags need no higher one."""
GAP_VERSION = 8
"""EXT-X-VERSION of a full playlist that lists a gap, as in ``hls.py``."""
DELTA_VERSION = 9
"""EXT-X-VERSION of a delta update (EXT-X-SKIP needs 9)."""
DATERANGE_DELTA_VERSION = 10
"""EXT-X-VERSION of a delta update that answers ``_HLS_skip=v2``."""

UNITS_PER_SECOND = 100_000
"""Decimal times are rendered in steps of 1/UNITS_PER_SECOND s (five decimals)."""


def part_uri(seq: int, index: int, *, fmp4: bool = False) -> str:
    """URI of part ``index`` of segment ``seq``, relative to its media playlist: ``.m4s`` for
    fragmented MP4, ``.ts`` for MPEG-TS."""
    return f"{seq}.{index}.m4s" if fmp4 else f"{seq}.{index}.ts"


def units(seconds: float) -> int:
    """``seconds`` in the steps decimal times are rendered in."""
    return round(seconds * UNITS_PER_SECOND)


def decimal(count: int) -> str:
    """A time of ``count`` steps as a decimal number of seconds, without trailing zeros."""
    whole, fraction = divmod(count, UNITS_PER_SECOND)
    text = f"{whole}.{fraction:05d}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def render_playlist(
    playlist: LowLatencyPlaylist,
    *,
    skip: SkipRequest = SkipRequest.NO,
    reports: Sequence[RenditionReport] = (),
) -> str:
    """The playlist text: full, or a delta update when ``skip`` asks for one."""
    segments = playlist.segments
    open_parts = playlist.open_parts
    ends: list[float] = []
    elapsed = 0.0
    for segment in segments:
        elapsed += segment.entry.duration
        ends.append(elapsed)
    edge = elapsed + sum(p.duration for p in open_parts)
    target_duration = playlist.target_duration
    part_units = playlist.advertised_part_units
    skipped = 0
    if skip is not SkipRequest.NO:
        boundary = edge - SKIP_BOUNDARY_SPAN * target_duration + 1e-6
        skipped = sum(1 for end in ends if end <= boundary)
    version = FULL_VERSION
    if any(s.entry.init is not None for s in segments[skipped:]) or any(
        p.init is not None for p in open_parts
    ):
        version = MAP_VERSION
    if any(s.entry.gap for s in segments):
        version = GAP_VERSION
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
        f"CAN-SKIP-UNTIL={decimal(SKIP_BOUNDARY_SPAN * target_duration * UNITS_PER_SECOND)},"
        f"PART-HOLD-BACK={decimal(PART_HOLD_BACK_SPAN * part_units)}",
        f"#EXT-X-PART-INF:PART-TARGET={decimal(part_units)}",
        f"#EXT-X-MEDIA-SEQUENCE:{playlist.media_sequence or 0}",
    ]
    if playlist.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{playlist.discontinuity_sequence}")
    if skipped:
        lines.append(skip_line)
    parts_after = edge - PART_LINES_SPAN * target_duration
    mapped: int | None = None
    for index, (segment, end) in enumerate(zip(segments, ends, strict=True)):
        if index < skipped:
            continue
        entry = segment.entry
        discontinuity = entry.discontinuity and index > 0
        if discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if needs_map(entry.init, mapped, first=index == skipped, discontinuity=discontinuity):
            assert entry.init is not None
            lines.append(map_tag(entry.init))
            mapped = entry.init
        if end > parts_after:
            lines.extend(_part_line(p) for p in segment.parts)
        lines.append(f"#EXTINF:{entry.duration:.3f},")
        if entry.gap:
            lines.append("#EXT-X-GAP")
        lines.append(entry.uri)
    open_discontinuity = playlist.open_discontinuity and bool(segments)
    if open_discontinuity:
        lines.append("#EXT-X-DISCONTINUITY")
    open_init = open_parts[0].init if open_parts else None
    if needs_map(
        open_init, mapped, first=len(segments) == skipped, discontinuity=open_discontinuity
    ):
        assert open_init is not None
        lines.append(map_tag(open_init))
    lines.extend(_part_line(p) for p in open_parts)
    upcoming = playlist.next_part
    if not playlist.ended and upcoming is not None:
        hint = part_uri(*upcoming, fmp4=playlist.next_part_init is not None)
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}"')
    lines.extend(report.render() for report in reports)
    if playlist.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _part_line(part: PartialSegment) -> str:
    line = f'#EXT-X-PART:DURATION={decimal(units(part.duration))},URI="{part.uri}"'
    return line + ",INDEPENDENT=YES" if part.independent else line
