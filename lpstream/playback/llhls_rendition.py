"""What a ``LowLatencyStream`` keeps of one rendition: the hand-ins waiting for their turn, the
bytes of its window and its init sections, as plain state (``llhls.py`` drives it)."""

from __future__ import annotations

from typing import TypeAlias

import attrs

from lpstream.playback.hls import RenditionInfo
from lpstream.playback.init_sections import InitSections
from lpstream.playback.llhls_playlist import LowLatencyPlaylist

__all__ = [
    "Complete",
    "Gap",
    "HandIn",
    "PartIn",
    "RenditionState",
    "StoredSegment",
    "Whole",
    "check_order",
    "init_of",
]


@attrs.frozen
class PartIn:
    """The next part of a segment."""

    duration: float
    data: bytes
    independent: bool
    """Opens with a keyframe."""
    init: int | None
    """Init section in force when it was handed in (None: MPEG-TS)."""


@attrs.frozen
class Complete:
    """The segment has all its parts (its init section is its first part's)."""


@attrs.frozen
class Gap:
    """The segment will never be whole."""

    duration: float
    init: int | None
    """Init section in force when it was handed in (None: MPEG-TS)."""


@attrs.frozen
class Whole:
    """A whole segment, not published in parts."""

    duration: float
    data: bytes
    init: int | None
    """Init section in force when it was handed in (None: MPEG-TS)."""


HandIn: TypeAlias = PartIn | Complete | Gap | Whole
"""Anything handed in for a segment."""


def init_of(event: HandIn) -> int | None:
    """The init section a hand-in refers to (None for ``Complete`` and MPEG-TS)."""
    return None if isinstance(event, Complete) else event.init


@attrs.define
class StoredSegment:
    """The bytes of one segment: its parts so far, or the whole of it."""

    chunks: list[bytes] = attrs.Factory(list)
    parts: int = 0
    """How many of ``chunks`` are published parts."""
    complete: bool = False
    init: int | None = None
    """Its init section; None: MPEG-TS."""

    def has_format(self, fmp4: bool | None) -> bool:
        """Whether it is fMP4 (``fmp4`` True) or MPEG-TS (False); None: either."""
        return fmp4 is None or fmp4 == (self.init is not None)


@attrs.define
class RenditionState:
    """One rendition of a ``LowLatencyStream``."""

    name: str
    playlist: LowLatencyPlaylist
    info: RenditionInfo | None = None
    peak_bps: int = 0
    data: dict[int, StoredSegment] = attrs.Factory(dict)
    pending: dict[int, list[HandIn]] = attrs.Factory(dict)
    """Hand-ins of segments after ``next_seq``, waiting for their turn."""
    next_seq: int | None = None
    inits: InitSections = attrs.Factory(InitSections)

    @property
    def listed(self) -> bool:
        return self.playlist.last_position is not None

    @property
    def listed_segments(self) -> int:
        return len(self.playlist.segments)

    def forget_unreferred_inits(self) -> None:
        """Drops the init sections nothing stored, listed or waiting refers to any more."""
        self.inits.retain(
            [
                *(stored.init for stored in self.data.values()),
                *(s.entry.init for s in self.playlist.segments),
                *(p.init for p in self.playlist.open_parts),
                *(init_of(e) for events in self.pending.values() for e in events),
            ]
        )


def check_order(name: str, seq: int, queued: list[HandIn], parts: int, event: HandIn) -> None:
    """Refuses hand-ins that no segment could be made of (our caller's mistake)."""
    if queued and not isinstance(queued[-1], PartIn):
        raise ValueError(f"segment {seq} of {name} was already finished")
    if isinstance(event, Complete) and parts == 0:
        raise ValueError(f"segment {seq} of {name} has no parts; hand it in whole or as a gap")
    if isinstance(event, Whole) and parts > 0:
        raise ValueError(f"segment {seq} of {name} has parts; complete it instead")
