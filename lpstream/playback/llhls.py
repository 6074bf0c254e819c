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
* Fragmented MP4 (``init_sections.py``): after ``set_init`` a rendition's hand-ins are fMP4
  media (``moof`` + ``mdat``) and each refers to the init section in force when it was handed
  in (a segment's later parts follow its first part), so results that arrive out of order
  keep theirs. Its playlist then lists ``.m4s`` URIs and ``EXT-X-MAP``; a segment's bytes are
  its parts' fragments end to end. Bytes are looked up with the format asked for (``fmp4``),
  and a request in the other format finds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

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
from lpstream.playback.init_sections import InitSection
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
from lpstream.playback.llhls_rendition import (
    Complete,
    Gap,
    HandIn,
    PartIn,
    RenditionState,
    StoredSegment,
    Whole,
    check_order,
    init_of,
)
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
    "InitSection",
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
    _renditions: dict[str, RenditionState] = attrs.field(init=False, factory=dict)
    _discontinuities: DiscontinuityMarks = attrs.field(init=False, factory=DiscontinuityMarks)
    _end: StreamEnd = attrs.field(init=False, default=StreamEnd())
    _version: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        for name in self.rendition_order:
            self._renditions[name] = RenditionState(name, self._new_playlist())

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
        init = self._current_init(rendition)
        self._hand_in(rendition, seq, PartIn(duration, data, independent, init))

    def complete_segment(self, rendition: str, seq: int) -> None:
        """Segment ``seq`` has all its parts; its duration is theirs added up."""
        self._hand_in(rendition, seq, Complete())

    def add_segment(self, rendition: str, seq: int, duration: float, data: bytes) -> None:
        """Hands in a whole segment that was not published in parts."""
        self._hand_in(rendition, seq, Whole(duration, data, self._current_init(rendition)))

    def add_gap(self, rendition: str, seq: int, duration: float) -> None:
        """Segment ``seq`` of ``rendition`` will never be whole: it is listed with EXT-X-GAP.

        Parts of it already published stay listed and can still be fetched.
        """
        self._hand_in(rendition, seq, Gap(duration, self._current_init(rendition)))

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
                        self._apply(r, seq, Complete())
                    else:
                        gap = Gap(float(r.playlist.target_duration), r.inits.current)
                        self._apply(r, seq, gap)
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
        self._renditions[name] = RenditionState(name, self._new_playlist(), next_seq=first_seq)
        self.rendition_order = (*self.rendition_order, name)
        self._version += 1

    def remove_rendition(self, name: str) -> None:
        """Takes out a rendition nothing was handed in for (the source of a codec HLS cannot
        carry): the master lists the others, its playlist is 404.

        Raises:
            ValueError: something of it was handed in already.
        """
        r = self._renditions.get(name)
        if r is None:
            return
        if r.data or r.pending or r.playlist.last_position is not None:
            raise ValueError(f"rendition {name!r} has segments already")
        del self._renditions[name]
        self.rendition_order = tuple(n for n in self.rendition_order if n != name)
        self._version += 1

    def set_info(self, info: RenditionInfo) -> None:
        self._renditions[info.name].info = info

    def set_init(self, rendition: str, init: bytes) -> None:
        """``rendition`` is fragmented MP4 from now on, and ``init`` (``ftyp`` + ``moov``) the
        Media Initialization Section of what is handed in next: segments and parts handed in
        after this call are fMP4 media (``moof`` + ``mdat``) that refer to it. Bytes equal to
        a section kept already keep its number; other bytes make a new one.

        Raises:
            KeyError: no such rendition.
            ValueError: ``init`` is empty.
        """
        r = self._renditions[rendition]
        number = r.inits.set(init)
        if r.playlist.upcoming_init != number:
            r.playlist.upcoming_init = number
            self._version += 1
        r.forget_unreferred_inits()

    def _current_init(self, rendition: str) -> int | None:
        return self._renditions[rendition].inits.current

    def _hand_in(self, name: str, seq: int, event: HandIn) -> None:
        r = self._renditions[name]
        if r.next_seq is None:
            r.next_seq = 0
        if seq < r.next_seq:
            return  # a late duplicate of something already listed
        if seq > r.next_seq:
            queued = r.pending.setdefault(seq, [])
            check_order(name, seq, queued, sum(isinstance(e, PartIn) for e in queued), event)
            queued.append(event)
            return
        check_order(name, seq, [], len(r.playlist.open_parts), event)
        self._apply(r, seq, event)
        while r.next_seq in r.pending:
            seq = r.next_seq
            for queued_event in r.pending.pop(seq):
                self._apply(r, seq, queued_event)

    def _apply(self, r: RenditionState, seq: int, event: HandIn) -> None:
        discontinuity = seq in self._discontinuities
        if isinstance(event, PartIn):
            open_parts = r.playlist.open_parts
            init = open_parts[0].init if open_parts else event.init
            r.playlist.add_part(
                PartialSegment(
                    seq=seq,
                    index=len(open_parts),
                    duration=event.duration,
                    independent=event.independent,
                    init=init,
                ),
                discontinuity=discontinuity,
            )
            stored = r.data.setdefault(seq, StoredSegment(init=init))
            stored.chunks.append(event.data)
            stored.parts += 1
            self._version += 1
            return
        open_parts = r.playlist.open_parts
        init = open_parts[0].init if open_parts else init_of(event)
        stored = r.data.setdefault(seq, StoredSegment(init=init))
        if isinstance(event, Complete):
            duration = sum(p.duration for p in open_parts)
            stored.complete = True
        elif isinstance(event, Whole):
            duration = event.duration
            stored.chunks = [event.data]
            stored.complete = True
        else:
            duration = event.duration
        r.playlist.complete(
            PlaylistEntry(
                seq=seq,
                duration=duration,
                uri=segment_uri(seq, fmp4=init is not None),
                discontinuity=discontinuity,
                gap=isinstance(event, Gap),
                init=init,
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
                    init=None if init is None else r.inits.get(init),
                )
            )
        if not stored.chunks:
            del r.data[seq]
        forget_expired(r.data, seq, self.window)
        r.forget_unreferred_inits()
        r.next_seq = seq + 1
        self._discontinuities.forget_passed(x.next_seq for x in self._renditions.values())
        self._version += 1
        self._maybe_end(r)

    def _maybe_end(self, r: RenditionState) -> None:
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

    def answer_part(
        self, rendition: str, seq: int, index: int, *, fmp4: bool | None = None
    ) -> PartAnswer:
        """Decides what to do with a request for part ``index`` of segment ``seq``; with
        ``fmp4``, for a part in that format only (``.m4s``: True, ``.ts``: False).

        A part not published yet but close ahead (the preload hint) is waited for, unless the
        part to be published next is of the other format.
        """
        r = self._renditions.get(rendition)
        if r is None:
            return Refused(code=404, reason="no such rendition")
        stored = r.data.get(seq)
        if stored is not None and 0 <= index < stored.parts:
            if not stored.has_format(fmp4):
                return Refused(code=404, reason="part is not available in this format")
            return PartReady(data=stored.chunks[index], fmp4=stored.init is not None)
        if fmp4 is not None and fmp4 != (r.playlist.next_part_init is not None):
            return Refused(code=404, reason="part is not available in this format")
        return answer_part(r.playlist, seq, index, None, version=self._version)

    def part(
        self, rendition: str, seq: int, index: int, *, fmp4: bool | None = None
    ) -> bytes | None:
        """Bytes of a published part (in the format ``fmp4`` asks for, if given), or None."""
        r = self._renditions.get(rendition)
        stored = None if r is None else r.data.get(seq)
        if stored is None or not 0 <= index < stored.parts or not stored.has_format(fmp4):
            return None
        return stored.chunks[index]

    def segment(self, rendition: str, seq: int, *, fmp4: bool | None = None) -> bytes | None:
        """Bytes of a complete segment (its parts end to end; in the format ``fmp4`` asks for,
        if given), or None."""
        r = self._renditions.get(rendition)
        stored = None if r is None else r.data.get(seq)
        if stored is None or not stored.complete or not stored.has_format(fmp4):
            return None
        return b"".join(stored.chunks)

    def segment_file(self, rendition: str, seq: int) -> bytes | None:
        """A complete segment as a file a demuxer reads on its own (MPEG-TS as it is, fMP4
        behind its init section), or None."""
        data = self.segment(rendition, seq)
        r = self._renditions.get(rendition)
        stored = None if r is None else r.data.get(seq)
        if data is None or stored is None or stored.init is None:
            return data
        init = self.init(rendition, stored.init)
        return None if init is None else init + data

    def init(self, rendition: str, number: int) -> bytes | None:
        """Bytes of init section ``number`` of ``rendition`` (``init{number}.mp4``) while it is
        kept, or None."""
        r = self._renditions.get(rendition)
        section = None if r is None else r.inits.get(number)
        return None if section is None else section.data

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
