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
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import attrs

__all__ = [
    "KEEP_EXTRA",
    "MAX_SEGMENT_DURATION",
    "HlsStream",
    "MediaPlaylist",
    "PlaylistEntry",
    "RenditionInfo",
    "render_master",
]

KEEP_EXTRA = 4
"""Segments kept beyond the live window."""
MAX_SEGMENT_DURATION = 13.0
"""Seconds a listed segment may last at most: the segmenter's cut bound with its defaults (a
cut without keyframe after 8 s comes at the next packet, and packets are never more than the
5 s jump limit apart)."""
_MAX_DISCONTINUITIES = 1024
"""Discontinuity marks kept at most (the oldest goes first)."""


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
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3" if not any(e.gap for e in self._entries) else "#EXT-X-VERSION:8",
            f"#EXT-X-TARGETDURATION:{self.listed_target_duration}",
            f"#EXT-X-MEDIA-SEQUENCE:{self._media_sequence}",
        ]
        if self._discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self._discontinuity_sequence}")
        for index, entry in enumerate(self._entries):
            if entry.discontinuity and index > 0:
                lines.append("#EXT-X-DISCONTINUITY")
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
    _discontinuities: set[int] = attrs.Factory(set)
    """Sequence numbers listed after EXT-X-DISCONTINUITY, until every rendition is past them."""
    _ending: bool = False
    _last_seq: int | None = None

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
        self._ending = False
        self._last_seq = None

    def mark_discontinuity(self, seq: int) -> None:
        """Segment ``seq`` follows a discontinuity: every rendition lists EXT-X-DISCONTINUITY
        before it. Call it before anything of segment ``seq`` is handed in."""
        self._discontinuities.add(seq)
        if len(self._discontinuities) > _MAX_DISCONTINUITIES:
            self._discontinuities.discard(min(self._discontinuities))

    def next_sequence(self) -> int:
        """The sequence number a restarted stream should continue from."""
        last = max(
            (r.next_seq for r in self._renditions.values() if r.next_seq is not None), default=0
        )
        pending = max(
            (max(r.pending) + 1 for r in self._renditions.values() if r.pending), default=0
        )
        return max(last, pending)

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
        self._ending = True
        self._last_seq = last_seq
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
                    uri=f"{seq_now}.ts",
                    discontinuity=disc,
                    gap=payload is None,
                )
            )
            if payload is not None:
                r.data[seq_now] = payload
                if duration > 0:
                    r.peak_bps = max(r.peak_bps, int(len(payload) * 8 / duration))
            for old in [s for s in r.data if s < seq_now - self.window - KEEP_EXTRA]:
                del r.data[old]
            r.next_seq = seq_now + 1
        floor = min(0 if x.next_seq is None else x.next_seq for x in self._renditions.values())
        if self._discontinuities and min(self._discontinuities) < floor:
            self._discontinuities = {s for s in self._discontinuities if s >= floor}
        self._maybe_end(r)

    def _maybe_end(self, r: _Rendition) -> None:
        if not self._ending:
            return
        if self._last_seq is None or (r.next_seq is not None and r.next_seq > self._last_seq):
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
        source = self._renditions[self.rendition_order[0]]
        return render_master(
            self.rendition_order,
            [
                (name, r.info, r.peak_bps)
                for name, r in self._renditions.items()
                if r.info is not None and r.playlist.entries
            ],
            source_segments=len(source.playlist.entries),
        )

    def renditions_ready(self) -> tuple[str, ...]:
        return tuple(n for n, r in self._renditions.items() if r.playlist.entries)


def render_master(
    rendition_order: Sequence[str],
    ready: Sequence[tuple[str, RenditionInfo, int]],
    *,
    source_segments: int,
) -> str | None:
    """The master playlist over the renditions that have segments, as (name, info, peak bit/s)
    in ``rendition_order``; None until the source is ready and either every rendition is or
    the source has three segments (players look once, so the ladder should be there)."""
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
