"""HLS playlists for live streams, as plain state with no I/O.

How this works:

* ``MediaPlaylist`` holds the live window of one rendition: segments are appended in sequence
  order, the window keeps the newest ``window`` entries, and ``EXT-X-MEDIA-SEQUENCE`` /
  ``EXT-X-DISCONTINUITY-SEQUENCE`` advance as entries fall out, as RFC 8216 requires.
* A segment whose rendition could not be made is listed with ``EXT-X-GAP`` so that sequence
  numbers stay aligned across renditions (players switch renditions by sequence number).
* ``HlsStream`` groups the renditions of one stream. Results for a segment can arrive out of
  order (several orchestrator streams in flight), so each rendition has a reorder buffer and
  publishes strictly in sequence: segment n+1 never appears before segment n is listed or gapped.
* A restarted stream (same name, new publisher) continues the numbering behind an
  ``EXT-X-DISCONTINUITY``, and so does a segment marked with ``mark_discontinuity`` (the
  segmenter rebased a timestamp jump) in every rendition; the end of a stream appends
  ``EXT-X-ENDLIST`` once every segment handed in is listed.
* ``EXT-X-TARGETDURATION`` is the configured target, or the longest segment listed rounded up
  if one is longer: it follows the window, so a long segment raises it only while it is listed
  (nothing carries into a restart once it left). No segment is listed longer than
  ``max_segment_duration`` (the segmenter's cut bound), whatever duration is handed in.
* Segment bytes are kept for the window plus a few more, so a player a little behind the live
  edge can still fetch what it just read from a playlist.
* An entry that refers to an init section (``PlaylistEntry.init``) is fragmented MP4: the
  playlist lists ``EXT-X-MAP`` where ``init_sections.needs_map`` says. ``HlsStream`` (no
  longer used by the node: the gateway serves ``llhls.LowLatencyStream``) hands in MPEG-TS
  only.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from lpstream.playback.init_sections import MAP_VERSION, map_tag, needs_map

__all__ = [
    "KEEP_EXTRA",
    "MAX_SEGMENT_DURATION",
    "DiscontinuityMarks",
    "HlsStream",
    "ListedRendition",
    "MediaPlaylist",
    "PlaylistEntry",
    "RenditionInfo",
    "StreamEnd",
    "forget_expired",
    "next_free_sequence",
    "render_master",
    "segment_uri",
]

KEEP_EXTRA = 4
"""Segments kept beyond the live window."""
MAX_SEGMENT_DURATION = 13.0
"""Seconds a listed segment may last at most: the segmenter's cut bound with its defaults (a
cut without keyframe after 8 s comes at the next packet, and packets are never more than the
5 s jump limit apart)."""
_MAX_DISCONTINUITIES = 1024
"""Discontinuity marks kept at most (the oldest goes first): a rendition that falls this far
behind lists its segments without them rather than the marks growing without bound."""


def segment_uri(seq: int, *, fmp4: bool = False) -> str:
    """URI of segment ``seq``, relative to its media playlist: ``.m4s`` for fragmented MP4,
    ``.ts`` for MPEG-TS."""
    return f"{seq}.m4s" if fmp4 else f"{seq}.ts"


def next_free_sequence(listed: Iterable[int], pending: Iterable[Collection[int]]) -> int:
    """The first sequence number after everything handed in: each rendition's next one to
    list (``listed``) and whatever waits in its reorder buffer (``pending``)."""
    return max((*listed, *(max(seqs) + 1 for seqs in pending if seqs)), default=0)


def forget_expired(data: dict[int, Any], newest: int, window: int) -> None:
    """Drops from ``data`` (by sequence number) the segments a player can no longer ask for:
    more than ``KEEP_EXTRA`` older than a live window of ``window`` ending at ``newest``."""
    for old in [seq for seq in data if seq < newest - window - KEEP_EXTRA]:
        del data[old]


@attrs.define
class DiscontinuityMarks:
    """Sequence numbers listed after EXT-X-DISCONTINUITY, until every rendition is past them.

    Every rendition of a stream lists the tag before a marked segment whenever it gets to it.
    """

    _marks: set[int] = attrs.Factory(set)

    def __contains__(self, seq: int) -> bool:
        return seq in self._marks

    def add(self, seq: int) -> None:
        """Marks segment ``seq``; past ``_MAX_DISCONTINUITIES`` marks the oldest goes."""
        self._marks.add(seq)
        if len(self._marks) > _MAX_DISCONTINUITIES:
            self._marks.discard(min(self._marks))

    def forget_passed(self, next_seqs: Iterable[int | None]) -> None:
        """Drops the marks every rendition is past, given the sequence number each one lists
        next (None: nothing yet)."""
        if not self._marks:
            return
        floor = min(0 if seq is None else seq for seq in next_seqs)
        if min(self._marks) < floor:
            self._marks = {seq for seq in self._marks if seq >= floor}


@attrs.frozen
class StreamEnd:
    """Whether the publisher left, and the last segment it handed to renditions."""

    ending: bool = False
    """The publisher left."""
    last_seq: int | None = None
    """The last segment handed in; None if there was none."""

    def reached(self, next_seq: int | None) -> bool:
        """Whether a rendition that lists ``next_seq`` next has listed all there will be."""
        if not self.ending:
            return False
        return self.last_seq is None or (next_seq is not None and next_seq > self.last_seq)


@attrs.frozen(kw_only=True)
class PlaylistEntry:
    """One segment line of a media playlist."""

    seq: int
    """Media sequence number."""
    duration: float
    """Duration in seconds (EXTINF)."""
    uri: str
    """Relative URI of the segment."""
    discontinuity: bool = False
    """Preceded by EXT-X-DISCONTINUITY."""
    gap: bool = False
    """Listed with EXT-X-GAP: the segment does not exist for this rendition."""
    init: int | None = None
    """Number of the init section (EXT-X-MAP) of a fragmented-MP4 segment; None: MPEG-TS."""


@attrs.define
class MediaPlaylist:
    """The live window of one rendition."""

    window: int = 6
    """How many segments the playlist lists."""
    target_duration: int = 2
    """EXT-X-TARGETDURATION at least (longer segments listed raise it while listed)."""
    max_segment_duration: float = attrs.field(
        default=MAX_SEGMENT_DURATION, validator=attrs.validators.gt(0)
    )
    """No segment is listed longer than this many seconds."""
    _entries: deque[PlaylistEntry] = attrs.Factory(deque)
    _media_sequence: int = 0
    _discontinuity_sequence: int = 0
    _ended: bool = False

    @property
    def entries(self) -> tuple[PlaylistEntry, ...]:
        return tuple(self._entries)

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def last_seq(self) -> int | None:
        return self._entries[-1].seq if self._entries else None

    @property
    def listed_target_duration(self) -> int:
        """EXT-X-TARGETDURATION now: the configured one, or the longest segment listed."""
        longest = max((e.duration for e in self._entries), default=0.0)
        return max(self.target_duration, math.ceil(longest - 1e-3))

    def append(self, entry: PlaylistEntry) -> None:
        """Lists a segment at the live edge and slides the window."""
        if self._entries and entry.seq != self._entries[-1].seq + 1:
            raise ValueError(f"segment {entry.seq} does not follow {self._entries[-1].seq}")
        if not self._entries:
            self._media_sequence = entry.seq
        self._ended = False
        if entry.duration > self.max_segment_duration:
            entry = attrs.evolve(entry, duration=self.max_segment_duration)
        self._entries.append(entry)
        while len(self._entries) > self.window:
            dropped = self._entries.popleft()
            self._media_sequence = dropped.seq + 1
            if self._entries[0].discontinuity:
                self._discontinuity_sequence += 1

    def end(self) -> None:
        self._ended = True

    def render(self) -> str:
        version = 3
        if any(e.init is not None for e in self._entries):
            version = MAP_VERSION
        if any(e.gap for e in self._entries):
            version = 8
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{version}",
            f"#EXT-X-TARGETDURATION:{self.listed_target_duration}",
            f"#EXT-X-MEDIA-SEQUENCE:{self._media_sequence}",
        ]
        if self._discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self._discontinuity_sequence}")
        mapped: int | None = None
        for index, entry in enumerate(self._entries):
            discontinuity = entry.discontinuity and index > 0
            if discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if needs_map(entry.init, mapped, first=index == 0, discontinuity=discontinuity):
                assert entry.init is not None
                lines.append(map_tag(entry.init))
                mapped = entry.init
            lines.append(f"#EXTINF:{entry.duration:.3f},")
            if entry.gap:
                lines.append("#EXT-X-GAP")
            lines.append(entry.uri)
        if self._ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


@attrs.frozen(kw_only=True)
class RenditionInfo:
    """What the master playlist says about a rendition."""

    name: str
    """Rendition name, the folder of its media playlist."""
    width: int
    """Picture width."""
    height: int
    """Picture height."""
    codecs: str
    """RFC 6381 codec list, e.g. ``avc1.64001f,mp4a.40.2``."""
    bandwidth: int
    """Peak bit rate in bit/s."""


@attrs.define
class _Rendition:
    playlist: MediaPlaylist
    info: RenditionInfo | None = None
    peak_bps: int = 0
    data: dict[int, bytes] = attrs.Factory(dict)
    pending: dict[int, tuple[float, bytes | None, bool]] = attrs.Factory(dict)
    next_seq: int | None = None

    @property
    def listed(self) -> bool:
        return bool(self.playlist.entries)

    @property
    def listed_segments(self) -> int:
        return len(self.playlist.entries)


@attrs.define
class HlsStream:
    """The playlists and segment bytes of one live stream (see the module comment)."""

    name: str
    """Stream name, as in ``/hls/{name}/index.m3u8``."""
    rendition_order: tuple[str, ...]
    """Rendition names, source first, in master playlist order."""
    window: int = 6
    """Live window of every media playlist."""
    target_duration: int = 2
    """EXT-X-TARGETDURATION at least (longer segments listed raise it while listed)."""
    max_segment_duration: float = attrs.field(
        default=MAX_SEGMENT_DURATION, validator=attrs.validators.gt(0)
    )
    """No segment is listed longer than this many seconds (the segmenter's cut bound)."""
    _renditions: dict[str, _Rendition] = attrs.Factory(dict)
    _discontinuities: DiscontinuityMarks = attrs.Factory(DiscontinuityMarks)
    _end: StreamEnd = StreamEnd()

    def __attrs_post_init__(self) -> None:
        for name in self.rendition_order:
            playlist = MediaPlaylist(
                window=self.window,
                target_duration=self.target_duration,
                max_segment_duration=self.max_segment_duration,
            )
            self._renditions[name] = _Rendition(playlist)

    @property
    def ended(self) -> bool:
        return all(r.playlist.ended for r in self._renditions.values())

    def restart(self, first_seq: int) -> None:
        """A new publisher took over the name; ``first_seq`` starts after a discontinuity."""
        self._discontinuities.add(first_seq)
        for r in self._renditions.values():
            r.next_seq = first_seq
        self._end = StreamEnd()

    def mark_discontinuity(self, seq: int) -> None:
        """Segment ``seq`` follows a discontinuity: every rendition lists EXT-X-DISCONTINUITY
        before it. Call it before anything of segment ``seq`` is handed in."""
        self._discontinuities.add(seq)

    def next_sequence(self) -> int:
        """The sequence number a restarted stream should continue from."""
        return next_free_sequence(
            (r.next_seq for r in self._renditions.values() if r.next_seq is not None),
            (r.pending for r in self._renditions.values()),
        )

    def has_info(self, rendition: str) -> bool:
        return self._renditions[rendition].info is not None

    def set_info(self, info: RenditionInfo) -> None:
        rendition = self._renditions[info.name]
        rendition.info = info

    def add_segment(self, rendition: str, seq: int, duration: float, data: bytes) -> None:
        """Hands in a finished segment of ``rendition``; it is listed once its turn comes."""
        self._hand_in(rendition, seq, duration, data)

    def add_gap(self, rendition: str, seq: int, duration: float) -> None:
        """Records that segment ``seq`` of ``rendition`` will never exist."""
        self._hand_in(rendition, seq, duration, None)

    def end(self, last_seq: int | None) -> None:
        """The publisher left; ``last_seq`` is the last segment handed to renditions."""
        self._end = StreamEnd(ending=True, last_seq=last_seq)
        for r in self._renditions.values():
            self._maybe_end(r)

    def _hand_in(self, name: str, seq: int, duration: float, data: bytes | None) -> None:
        r = self._renditions[name]
        if r.next_seq is not None and seq < r.next_seq:
            return  # a late duplicate of something already listed
        discontinuity = seq in self._discontinuities
        r.pending[seq] = (duration, data, discontinuity)
        if r.next_seq is None:
            r.next_seq = 0
        while r.next_seq in r.pending:
            seq_now = r.next_seq
            duration, payload, disc = r.pending.pop(seq_now)
            r.playlist.append(
                PlaylistEntry(
                    seq=seq_now,
                    duration=duration,
                    uri=segment_uri(seq_now),
                    discontinuity=disc,
                    gap=payload is None,
                )
            )
            if payload is not None:
                r.data[seq_now] = payload
                if duration > 0:
                    r.peak_bps = max(r.peak_bps, int(len(payload) * 8 / duration))
            forget_expired(r.data, seq_now, self.window)
            r.next_seq = seq_now + 1
        self._discontinuities.forget_passed(x.next_seq for x in self._renditions.values())
        self._maybe_end(r)

    def _maybe_end(self, r: _Rendition) -> None:
        if self._end.reached(r.next_seq):
            r.playlist.end()

    def media_playlist(self, rendition: str) -> str | None:
        r = self._renditions.get(rendition)
        if r is None or not r.playlist.entries:
            return None
        return r.playlist.render()

    def segment(self, rendition: str, seq: int) -> bytes | None:
        r = self._renditions.get(rendition)
        return None if r is None else r.data.get(seq)

    def master_playlist(self) -> str | None:
        """The master playlist: once every rendition has a segment, or the source has three."""
        return render_master(self.rendition_order, self._renditions)

    def renditions_ready(self) -> tuple[str, ...]:
        return tuple(n for n, r in self._renditions.items() if r.listed)


class ListedRendition(Protocol):
    """What the master playlist needs to know of a rendition."""

    @property
    def info(self) -> RenditionInfo | None: ...

    @property
    def peak_bps(self) -> int: ...

    @property
    def listed(self) -> bool:
        """Whether its media playlist lists anything yet."""

    @property
    def listed_segments(self) -> int:
        """How many complete segments its media playlist lists."""


def render_master(
    rendition_order: Sequence[str], renditions: Mapping[str, ListedRendition]
) -> str | None:
    """The master playlist over the renditions that list something and have their info; None
    until the source (``rendition_order[0]``) is ready and either every rendition is or the
    source has three segments (players look once, so the ladder should be there)."""
    ready = [
        (name, r.info, r.peak_bps)
        for name, r in renditions.items()
        if r.info is not None and r.listed
    ]
    source_segments = renditions[rendition_order[0]].listed_segments
    if not ready or ready[0][0] != rendition_order[0]:
        return None
    if len(ready) < len(rendition_order) and source_segments < 3:
        return None
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for name, info, peak_bps in ready:
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={max(info.bandwidth, peak_bps)},"
            f"RESOLUTION={info.width}x{info.height},"
            f'CODECS="{info.codecs}",NAME="{name}"'
        )
        lines.append(f"{name}/index.m3u8")
    return "\n".join(lines) + "\n"
