"""HLS over what is in a store: the playlists of segments that were stored, as plain state.

How this works:

* A ``StoredRendition`` lists the segments of one rendition that reached the store, in order.
  Its playlists name only those: a segment that was lost (the store failed, the queue was
  full, the rendition had a gap) is left out, and the next stored one follows an
  ``EXT-X-DISCONTINUITY``, which is how the gap is marked — no playlist names an object that
  is not there, so every player (ffmpeg's included, which knows no ``EXT-X-GAP``) plays on.
* Entries are numbered by the store (``index``, consecutive), not by the live sequence
  numbers in their URIs: a media sequence must count the entries a player has seen, and lost
  segments would break that count.
* A fragmented-MP4 segment (``ListedSegment.init``) is stored as ``{seq}.m4s`` and refers to
  its init section ``init{n}.mp4`` by number; the playlists list ``EXT-X-MAP`` where
  ``init_sections.needs_map`` says (the first entry shown, after a discontinuity, where the
  section changes) and are then of ``EXT-X-VERSION`` 6.
* ``render_media`` writes a live window (``window``: the newest entries, with
  ``EXT-X-MEDIA-SEQUENCE`` and ``EXT-X-DISCONTINUITY-SEQUENCE`` following what slid out), an
  ``EVENT`` playlist (everything so far; a recording in progress) or a ``VOD`` one (ended).
"""

from __future__ import annotations

import math

import attrs

from lpstream.playback.hls import RenditionInfo, segment_uri
from lpstream.playback.init_sections import MAP_VERSION, map_tag, needs_map
from lpstream.playback.listed import ListedSegment

__all__ = [
    "CACHE_EVENT_PLAYLIST",
    "CACHE_LIVE_PLAYLIST",
    "CACHE_SEGMENT",
    "CACHE_VOD_PLAYLIST",
    "PLAYLIST_TYPE",
    "ObjectWrite",
    "StoredEntry",
    "StoredRendition",
    "init_key",
    "segment_key",
]

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
"""Content type of every playlist."""
CACHE_SEGMENT = "public, max-age=31536000, immutable"
"""A segment never changes once stored."""
CACHE_LIVE_PLAYLIST = "public, max-age=1"
"""A live playlist changes every segment: a CDN may keep it a second."""
CACHE_EVENT_PLAYLIST = "no-cache"
"""A recording's playlist while it records (it grows)."""
CACHE_VOD_PLAYLIST = "public, max-age=60"
"""An ended recording's playlist (a recovery pass may still close it once)."""


def segment_key(prefix: str, listed: ListedSegment) -> str:
    """Where a listed segment is stored under ``prefix``: ``{rendition}/{seq}.ts`` or
    ``.m4s``."""
    fmp4 = listed.init is not None
    return f"{prefix}{listed.rendition}/{segment_uri(listed.seq, fmp4=fmp4)}"


def init_key(prefix: str, listed: ListedSegment) -> str | None:
    """Where the init section of an fMP4 segment is stored under ``prefix`` (None: MPEG-TS
    has none)."""
    if listed.init is None:
        return None
    return f"{prefix}{listed.rendition}/{listed.init.uri}"


@attrs.frozen
class ObjectWrite:
    """One object to put."""

    key: str
    data: bytes
    content_type: str
    cache_control: str


@attrs.frozen
class StoredEntry:
    """A stored segment as its playlists list it."""

    index: int
    """Position among the stored entries of its rendition (the playlists' media sequence)."""
    seq: int
    """Live sequence number (its URI)."""
    duration: float
    size: int
    discontinuity: bool
    init: int | None = None
    """Number of its init section (fMP4); None: MPEG-TS."""

    @property
    def uri(self) -> str:
        """Its name next to its playlist: ``{seq}.m4s`` or ``{seq}.ts``."""
        return segment_uri(self.seq, fmp4=self.init is not None)


@attrs.define
class StoredRendition:
    """The stored segments of one rendition (see the module comment)."""

    name: str
    info: RenditionInfo | None = None
    entries: list[StoredEntry] = attrs.Factory(list)
    peak_bps: int = 0
    bytes: int = 0
    lost: int = 0
    """Segments of this rendition that are not in the store."""
    _after_loss: bool = False
    _next_index: int = 0
    _forgotten_discontinuities: int = 0

    @property
    def listed(self) -> bool:
        return bool(self.entries)

    @property
    def listed_segments(self) -> int:
        return len(self.entries)

    @property
    def duration(self) -> float:
        return sum(e.duration for e in self.entries)

    def add(self, listed: ListedSegment, size: int) -> StoredEntry:
        """``listed`` is in the store now (``size`` bytes)."""
        if listed.info is not None:
            self.info = listed.info
        entry = StoredEntry(
            index=self._next_index,
            seq=listed.seq,
            duration=listed.duration,
            size=size,
            discontinuity=(listed.discontinuity or self._after_loss) and bool(self.entries),
            init=None if listed.init is None else listed.init.number,
        )
        self.entries.append(entry)
        self._next_index += 1
        self._after_loss = False
        self.bytes += size
        if listed.duration > 0:
            self.peak_bps = max(self.peak_bps, int(size * 8 / listed.duration))
        return entry

    def forget_oldest(self, keep: int) -> list[StoredEntry]:
        """Drops all but the newest ``keep`` entries (a live origin's old segments) and
        answers them; later playlists count their discontinuities."""
        dropped = self.entries[: max(0, len(self.entries) - keep)]
        del self.entries[: len(dropped)]
        self._forgotten_discontinuities += sum(e.discontinuity for e in dropped)
        return dropped

    def lose(self) -> None:
        """A segment of this rendition will not be in the store: the next one follows a
        discontinuity."""
        self.lost += 1
        self._after_loss = True

    def render_media(
        self, *, window: int | None = None, playlist_type: str | None = None, ended: bool = False
    ) -> str:
        """The media playlist: the newest ``window`` entries (None: all), of
        ``playlist_type`` (``EVENT``, ``VOD`` or None for a live window), ending with
        ``EXT-X-ENDLIST`` when ``ended``."""
        shown = self.entries if window is None else self.entries[-window:]
        slid_out = self.entries[: len(self.entries) - len(shown)]
        # A discontinuity counts once the segment it precedes slid out (RFC 8216, 6.2.2).
        discontinuity_sequence = self._forgotten_discontinuities + sum(
            e.discontinuity for e in slid_out
        )
        if shown and shown[0].discontinuity:  # its tag is not shown: it counts
            discontinuity_sequence += 1
        target = max((math.ceil(e.duration - 1e-3) for e in shown), default=1)
        version = MAP_VERSION if any(e.init is not None for e in shown) else 3
        lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}"]
        if playlist_type is not None:
            lines.append(f"#EXT-X-PLAYLIST-TYPE:{playlist_type}")
        lines.append(f"#EXT-X-TARGETDURATION:{max(target, 1)}")
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{shown[0].index if shown else 0}")
        if discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
        mapped: int | None = None
        for position, entry in enumerate(shown):
            discontinuity = entry.discontinuity and position > 0
            if discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if needs_map(entry.init, mapped, first=position == 0, discontinuity=discontinuity):
                assert entry.init is not None
                lines.append(map_tag(entry.init))
                mapped = entry.init
            lines.append(f"#EXTINF:{entry.duration:.3f},")
            lines.append(entry.uri)
        if ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"
