"""What a live stream tells its outputs (recording, live origin, restreams) as it goes."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from lpstream.playback.hls import RenditionInfo
from lpstream.playback.init_sections import InitSection

__all__ = ["ListedSegment", "SegmentListener"]


@attrs.frozen(kw_only=True)
class ListedSegment:
    """A segment of one rendition, as its playlist lists it (in sequence order per rendition)."""

    rendition: str
    """Rendition name."""
    seq: int
    """Media sequence number (the live numbering: a restart continues it)."""
    duration: float
    """Seconds, as listed."""
    data: bytes | None
    """The whole segment: MPEG-TS, or fMP4 media (``moof`` + ``mdat``) when ``init`` is set;
    None for a gap: this rendition has no such segment."""
    discontinuity: bool = False
    """Its timestamps do not continue the rendition's previous segment (a restart or jump)."""
    info: RenditionInfo | None = None
    """What the master playlist says of the rendition, once known."""
    init: InitSection | None = None
    """The init section (``ftyp`` + ``moov``) of a fragmented-MP4 segment; None: MPEG-TS."""


SegmentListener = Callable[[ListedSegment], None]
"""Called for every segment a playlist lists; it must not block (outputs queue what they
take)."""
