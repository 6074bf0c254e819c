"""Low-Latency HLS (RFC 8216bis) for live streams, as plain state with no I/O.

How this works:

* ``LowLatencyStream`` is the LL-HLS twin of ``HlsStream``: one ``LowLatencyPlaylist`` per
  rendition (``llhls_playlist.py``), fed parts and segments as the gateway gets them, plus the
  bytes of the window. Results arrive out of order, so each rendition has a reorder buffer and
  publishes strictly in sequence: parts of segment n+1 wait until n is complete or gapped. A
  segment's bytes are its parts' bytes end to end (MPEG-TS concatenates).
* Gaps, restarts, the end and the master playlist follow ``hls.py``'s rules; each media
  playlist also carries ``EXT-X-RENDITION-REPORT`` lines for the other renditions.
* Discontinuities: a restart, or ``mark_discontinuity(seq)`` (the segmenter rebased a timestamp
  jump), puts ``EXT-X-DISCONTINUITY`` before segment ``seq`` of every rendition, whenever each
  one gets to it.
* ``version`` goes up on every change a viewer could see; that is what a driver (``live.py``)
  waits on. ``answer_playlist`` and ``answer_part`` decide what a (blocking) request gets
  (``llhls_requests.py``); the playlist text is ``llhls_render.py``'s.
* Part and segment bytes are kept for the window plus ``KEEP_EXTRA`` segments, as in ``hls.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import attrs

from lpstream.playback.hls import (
    MAX_SEGMENT_DURATION,
    DiscontinuityMarks,
    PlaylistEntry,
    RenditionInfo,
    StreamEnd,
    forget_expired,
    next_free_sequence,
    render_master,
    segment_uri,
)
from lpstream.playback.listed import ListedSegment, SegmentListener
from lpstream.playback.llhls_playlist import (
    DEFAULT_PART_TARGET,
    PART_TARGET_RANGE,
    LowLatencyPlaylist,
    ParentSegment,
    PartialSegment,
    RenditionReport,
    check_part_target,
)
from lpstream.playback.llhls_render import part_uri
from lpstream.playback.llhls_requests import (
    PartAnswer,
    PartReady,
    PlaylistAnswer,
    PlaylistReady,
    PlaylistRequest,
    Refused,
    SkipRequest,
    WaitForUpdate,
    answer_part,
    answer_playlist,
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
    name: str
    playlist: LowLatencyPlaylist
    info: RenditionInfo | None = None
    peak_bps: int = 0
    data: dict[int, _Stored] = attrs.Factory(dict)
    pending: dict[int, list[_HandIn]] = attrs.Factory(dict)
    next_seq: int | None = None

    @property
    def listed(self) -> bool:
        return self.playlist.last_position is not None

    @property
    def listed_segments(self) -> int:
        return len(self.playlist.segments)


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
    part_target: float = attrs.field(default=DEFAULT_PART_TARGET, validator=check_part_target)
    """Part target duration in seconds, 0.1 to 1.0."""
    target_duration: int = 2
    """EXT-X-TARGETDURATION at least (longer segments listed raise it while listed)."""
    max_segment_duration: float = attrs.field(
        default=MAX_SEGMENT_DURATION, validator=attrs.validators.gt(0)
    )
    """No segment or part is listed longer than this many seconds (the segmenter's cut bound)."""
    listener: SegmentListener | None = attrs.field(default=None, kw_only=True)
    """Told of every segment as it is listed, whole or as a gap (the stream's outputs)."""
    _renditions: dict[str, _Rendition] = attrs.field(init=False, factory=dict)
    _discontinuities: DiscontinuityMarks = attrs.field(init=False, factory=DiscontinuityMarks)
    _end: StreamEnd = attrs.field(init=False, default=StreamEnd())
    _version: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        for name in self.rendition_order:
            self._renditions[name] = _Rendition(name, self._new_playlist())

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
        self._end = StreamEnd(ending=True, last_seq=last_seq)
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
        self._end = StreamEnd()
        self._version += 1

    def mark_discontinuity(self, seq: int) -> None:
        """Segment ``seq`` follows a discontinuity (its timestamps do not continue from the
        segment before): every rendition lists EXT-X-DISCONTINUITY before it.

        Call it before anything of segment ``seq`` is handed in; a rendition that listed it
        already is left as it is.
        """
        self._discontinuities.add(seq)

    def next_sequence(self) -> int:
        """The sequence number a restarted stream should continue from."""
        return next_free_sequence(
            (
                r.next_seq + (1 if r.playlist.open_parts else 0)
                for r in self._renditions.values()
                if r.next_seq is not None
            ),
            (r.pending for r in self._renditions.values()),
        )

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
        self._renditions[name] = _Rendition(name, self._new_playlist(), next_seq=first_seq)
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
        if self.listener is not None:
            listed = r.playlist.segments[-1].entry
            self.listener(
                ListedSegment(
                    rendition=r.name,
                    seq=seq,
                    duration=listed.duration,
                    data=b"".join(stored.chunks) if stored.complete else None,
                    discontinuity=listed.discontinuity,
                    info=r.info,
                )
            )
        if not stored.chunks:
            del r.data[seq]
        forget_expired(r.data, seq, self.window)
        r.next_seq = seq + 1
        self._discontinuities.forget_passed(x.next_seq for x in self._renditions.values())
        self._version += 1
        self._maybe_end(r)

    def _maybe_end(self, r: _Rendition) -> None:
        if r.playlist.ended or r.playlist.open_parts:
            return
        if self._end.reached(r.next_seq):
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
        return answer_playlist(
            r.playlist, query, version=self._version, reports=self.rendition_reports(rendition)
        )

    def answer_part(self, rendition: str, seq: int, index: int) -> PartAnswer:
        """Decides what to do with a request for part ``index`` of segment ``seq``.

        A part not published yet but close ahead (the preload hint) is waited for.
        """
        r = self._renditions.get(rendition)
        if r is None:
            return Refused(code=404, reason="no such rendition")
        data = self.part(rendition, seq, index)
        return answer_part(r.playlist, seq, index, data, version=self._version)

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
        return render_master(self.rendition_order, self._renditions)

    def renditions_ready(self) -> tuple[str, ...]:
        return tuple(n for n, r in self._renditions.items() if r.listed)


def _check_order(name: str, seq: int, queued: list[_HandIn], parts: int, event: _HandIn) -> None:
    """Refuses hand-ins that no segment could be made of (our caller's mistake)."""
    if queued and not isinstance(queued[-1], _PartIn):
        raise ValueError(f"segment {seq} of {name} was already finished")
    if isinstance(event, _Complete) and parts == 0:
        raise ValueError(f"segment {seq} of {name} has no parts; hand it in whole or as a gap")
    if isinstance(event, _Whole) and parts > 0:
        raise ValueError(f"segment {seq} of {name} has parts; complete it instead")
