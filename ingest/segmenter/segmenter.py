"""The segmenter's cutting rules: when a segment (and, for LL-HLS, a part) ends.

How this works:

* The segmenter is fed ``MediaEvent``s in arrival order (as RTMP delivers them) and returns
  events: ``SegmentStarted``, ``SegmentData`` (bytes as the muxer writes them, so the caller
  can forward a segment while it is still being produced), ``PartCompleted`` (with a
  ``part_target``) and ``SegmentCompleted``. Every packet is put on the output timeline first
  (``timeline.py``: late packets dropped, jumps rebased) and then muxed into the open segment
  (``remux.py``); its parts are cut as in ``parts.py``.
* A segment opens on a video keyframe. When the next keyframe arrives and the open segment is
  at least ``target_duration`` long, the segment is closed and a new one opens on that
  keyframe: segments are never cut inside a GOP. If no keyframe comes for ``max_duration`` the
  segment is cut anyway, with a warning, since a viewer would otherwise wait forever.
* Packets before the first keyframe, and audio without an audio configuration, are dropped.
  A new codec configuration (e.g. a resolution change) takes effect at the next segment; one
  that cannot be read is ignored (the previous one stays) unless there is no previous one.
* After a video timestamp jump the next keyframe cuts the segment (so both sides still decode
  on their own) and the new segment is flagged ``discontinuity``. A segment younger than
  ``MIN_JUMP_SEGMENT`` is not cut for a jump, so a storm of jumps cannot make a segment per
  keyframe; the flag then goes to the next segment, whatever cuts it.
* A packet the muxer refuses (damaged H.264 whose NAL lengths do not add up, for instance) is
  dropped and counted; only ``MAX_REFUSED_IN_A_ROW`` refusals in a row end the stream.
* Every segment is bounded: video cuts at a keyframe after ``target_duration`` or at any frame
  after ``max_duration``, and audio that runs on without video (a stalled camera) cuts a
  segment of its own after ``max_duration``. With jumps rebased, no two packets are more than
  ``max_timestamp_jump`` apart, so no segment is longer than ``duration_bound``.
* A stream that has not opened its first segment after ``startup_limit`` seconds of media is
  refused with a ``MediaError`` saying why: audio only, no H.264 configuration, or no keyframe.
* A video packet at least about ``part_target`` after the open part's first one (nearest the
  target: half a frame early counts) opens the next part.
* Repairs of each kind are logged once per stream at warning level and counted in
  ``statistics()``.

Muxing is a few microseconds per packet, so callers may run it on their event loop.
"""

from __future__ import annotations

import attrs

from lpstream.errors import MediaError
from lpstream.media import (
    MAX_SEGMENT_SECONDS,
    CodecConfig,
    MediaEvent,
    MediaPacket,
    StreamMetadata,
    TrackKind,
)

from .events import (
    SegmentCompleted,
    SegmentData,
    SegmenterEvent,
    SegmenterStatistics,
    SegmentStarted,
)
from .file_mux import FileSegmentMuxer
from .notices import Notices, log
from .parts import SegmentParts
from .remux import (
    SEGMENT_VIDEO_CODECS,
    CodecTemplates,
    PacketRefused,
    SegmentMuxer,
    usable_templates,
)
from .timeline import MAX_TIMESTAMP_JUMP, Timeline

__all__ = [
    "AUDIO_ONLY_REFUSAL",
    "MAX_REFUSED_IN_A_ROW",
    "MIN_JUMP_SEGMENT",
    "STARTUP_LIMIT",
    "Segmenter",
]

MIN_JUMP_SEGMENT = 0.5
"""Seconds a segment must hold before a jump cuts it; a jump in a shorter one is only rebased."""
STARTUP_LIMIT = 10.0
"""Seconds of media a stream may send before its first segment must have opened."""
MAX_REFUSED_IN_A_ROW = 300
"""Packets in a row the muxer may refuse before the stream is given up as unreadable."""
AUDIO_ONLY_REFUSAL = "audio-only streams are not supported: publish video (H.264)"
"""The reason an audio-only stream is refused with."""
_STARTUP_PACKETS_PER_SECOND = 200
"""With ``startup_limit``: how many packets may come before the first segment, whatever
their timestamps say (a stream stuck on one timestamp still gets refused)."""
_VIDEO_SILENT_MS = 1000
"""Audio cuts an overlong segment only when video has been silent this long (otherwise the
next video packet cuts it, on the video's rules)."""


@attrs.define
class _OpenSegment:
    seq: int
    start_ms: int
    muxer: SegmentMuxer | FileSegmentMuxer
    parts: SegmentParts
    forced: bool = False
    discontinuity: bool = False
    size: int = 0
    last_ms: int = 0
    """Decode timestamp of its newest video packet (its start while it has none)."""
    last_audio_ms: int | None = None
    video_packets: int = 0


@attrs.define
class Segmenter:
    """Turns ``MediaEvent``s into MPEG-TS segment events; see the module comment."""

    target_duration: float = 2.0
    """Cut at the first keyframe at least this many seconds into a segment."""
    max_duration: float = MAX_SEGMENT_SECONDS
    """Cut without a keyframe after this many seconds (with a warning)."""
    stream_name: str = ""
    """Used in log messages only."""
    part_target: float | None = None
    """Also deliver each segment in parts of about this many seconds (LL-HLS); None: no parts."""
    max_timestamp_jump: float = MAX_TIMESTAMP_JUMP
    """A timestamp further than this many seconds from the stream's newest one is a jump."""
    startup_limit: float = STARTUP_LIMIT
    """Seconds of media after which a stream that has opened no segment yet is refused."""
    _notices: Notices = attrs.field(init=False)
    _timeline: Timeline = attrs.field(init=False)
    _video_config: CodecConfig | None = attrs.field(init=False, default=None)
    _audio_config: CodecConfig | None = attrs.field(init=False, default=None)
    _templates: CodecTemplates | None = attrs.field(init=False, default=None)
    _segment: _OpenSegment | None = attrs.field(init=False, default=None)
    _next_seq: int = attrs.field(init=False, default=0)
    _pending: list[SegmenterEvent] = attrs.field(init=False, factory=list)
    _packets_waiting: int = attrs.field(init=False, default=0)
    _video_packets_seen: bool = attrs.field(init=False, default=False)
    _jump_pending: bool = attrs.field(init=False, default=False)
    _refused: int = attrs.field(init=False, default=0)
    _refused_in_a_row: int = attrs.field(init=False, default=0)
    _forced_cuts: int = attrs.field(init=False, default=0)
    _ignored_configs: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._notices = Notices(self.stream_name)
        self._timeline = Timeline(self._notices, max_timestamp_jump=self.max_timestamp_jump)

    @property
    def duration_bound(self) -> float:
        """No segment is longer than this many seconds: a cut after ``max_duration`` comes at
        the next packet, and packets are never more than ``max_timestamp_jump`` apart."""
        return self.max_duration + self.max_timestamp_jump

    def output_ms(self, kind: TrackKind, input_ms: int) -> int:
        """Where a timestamp of track ``kind`` as fed in lands on the output timeline (the
        segments' timestamps), with the track's rebasing so far: the identity until a jump."""
        return self._timeline.output_ms(kind, input_ms)

    def statistics(self) -> SegmenterStatistics:
        return SegmenterStatistics(
            late_packets=self._timeline.late,
            refused_packets=self._refused,
            jumps=self._timeline.jumps,
            repaired_pts=self._timeline.repaired_pts,
            forced_cuts=self._forced_cuts,
            ignored_configs=self._ignored_configs,
        )

    def feed(self, event: MediaEvent) -> list[SegmenterEvent]:
        """Takes one media event and returns what it completed or produced.

        Raises:
            MediaError: the stream cannot be segmented (an unsupported codec, a configuration
                that cannot be read, audio only or no keyframe after ``startup_limit``, a
                muxer that refuses everything); the caller ends the stream with the reason.
        """
        if isinstance(event, CodecConfig):
            self._configure(event)
        elif isinstance(event, MediaPacket):
            self._packet(event)
        elif isinstance(event, StreamMetadata):
            pass
        out, self._pending = self._pending, []
        return out

    def finish(self) -> list[SegmenterEvent]:
        """Ends the stream: closes the open segment, if any."""
        seg = self._segment
        if seg is not None:
            if seg.video_packets or seg.last_audio_ms is None:
                end = seg.last_ms + self._timeline.step_ms(TrackKind.VIDEO)
            else:
                end = seg.last_audio_ms + self._timeline.step_ms(TrackKind.AUDIO)
            self._close(end)
        out, self._pending = self._pending, []
        return out

    def _configure(self, config: CodecConfig) -> None:
        video: CodecConfig | None
        audio: CodecConfig | None
        if config.kind is TrackKind.VIDEO:
            if config.codec not in SEGMENT_VIDEO_CODECS:
                raise MediaError(
                    f"unsupported video codec {config.codec!r}: segments carry "
                    + ", ".join(sorted(SEGMENT_VIDEO_CODECS))
                )
            if config == self._video_config:
                return
            video, audio = config, self._audio_config
        else:
            if config.codec != "aac":
                raise MediaError(f"unsupported audio codec {config.codec!r}")
            if config == self._audio_config:
                return
            video, audio = self._video_config, config
        if video is None or self._templates is None:
            # Nothing usable yet: read when the first segment opens (and refused then).
            self._video_config, self._audio_config = video, audio
            return
        try:
            templates = usable_templates(video, audio)
        except MediaError as exc:
            self._ignored_configs += 1
            self._notices("config", config.kind.value, exc)
            return
        self._video_config, self._audio_config, self._templates = video, audio, templates

    # -- packets ----------------------------------------------------------------------------

    def _packet(self, packet: MediaPacket) -> None:
        timed = self._timeline.retime(packet)
        # Segments follow the video: its jump marks the discontinuity (audio jumping with it,
        # a little before or after, must not mark a second one).
        if self._timeline.jumped and self._next_seq and packet.kind is TrackKind.VIDEO:
            self._jump_pending = True
        if timed is not None:
            if timed.kind is TrackKind.VIDEO:
                self._video_packets_seen = True
                self._video_packet(timed)
            else:
                self._audio_packet(timed)
        if not self._next_seq:
            self._packets_waiting += 1
            self._check_startup()

    def _check_startup(self) -> None:
        """Refuses a stream that sent ``startup_limit`` seconds of media and opened nothing."""
        if (
            self._timeline.span_ms < self.startup_limit * 1000
            and self._packets_waiting < self.startup_limit * _STARTUP_PACKETS_PER_SECOND
        ):
            return
        limit = f"{self.startup_limit:g} s"
        if not self._video_packets_seen:
            raise MediaError(AUDIO_ONLY_REFUSAL)
        if self._video_config is None:
            raise MediaError(
                f"no H.264 configuration (AVC sequence header) in the first {limit}: "
                "the video cannot be read"
            )
        raise MediaError(
            f"no H.264 keyframe in the first {limit}: set the encoder's keyframe interval "
            f"to {self.target_duration:g} s"
        )

    def _audio_packet(self, packet: MediaPacket) -> None:
        seg = self._segment
        if seg is None or not seg.muxer.has_audio:
            return
        if (
            packet.dts - seg.start_ms >= self.max_duration * 1000
            and packet.dts - seg.last_ms >= _VIDEO_SILENT_MS
        ):
            # Audio running on without video: bound the segment all the same.
            log.warning(
                "stream %r: no video for %.1f s, cutting segment %d on audio",
                self.stream_name,
                (packet.dts - seg.last_ms) / 1000,
                seg.seq,
            )
            self._close(packet.dts)
            self._open(packet.dts, forced=True, independent=False)
            seg = self._segment
            assert seg is not None and seg.muxer.has_audio
        seg.last_audio_ms = packet.dts
        self._mux(packet)

    def _video_packet(self, packet: MediaPacket) -> None:
        if self._video_config is None:
            return
        seg = self._segment
        if seg is None:
            if packet.keyframe:
                self._open(packet.dts, forced=False, independent=True)
        else:
            elapsed_ms = packet.dts - seg.start_ms
            jumped = self._jump_pending and elapsed_ms >= MIN_JUMP_SEGMENT * 1000
            if packet.keyframe and (jumped or elapsed_ms >= self.target_duration * 1000):
                self._close(packet.dts)
                self._open(packet.dts, forced=False, independent=True)
            elif elapsed_ms >= self.max_duration * 1000:
                log.warning(
                    "stream %r: no keyframe for %.1f s, cutting segment %d without one; "
                    "set the encoder's keyframe interval to %g s or less",
                    self.stream_name,
                    elapsed_ms / 1000,
                    seg.seq,
                    self.target_duration,
                )
                self._close(packet.dts)
                self._open(packet.dts, forced=True, independent=packet.keyframe)
        seg = self._segment
        if seg is None:
            return
        cut = False
        if seg.video_packets and self.part_target is not None and self._cuts_parts:
            # Cut at the frame nearest the target, so parts stay close to it. (Not before the
            # first video packet: in a segment that audio opened, nothing may be out yet.)
            part_ms = packet.dts - seg.parts.last_start_ms
            step_ms = self._timeline.step_ms(TrackKind.VIDEO)
            if part_ms >= self.part_target * 1000 - step_ms / 2:
                cut = True
                seg.parts.cut_before(seg.video_packets, packet.dts, keyframe=packet.keyframe)
        if self._mux(packet):
            seg.video_packets += 1
            seg.last_ms = max(seg.last_ms, packet.dts)
        elif cut:  # the refused packet opens no part: the next one may
            seg.parts.cancel_cut(seg.video_packets)

    # -- segments ---------------------------------------------------------------------------

    def _open(self, start_ms: int, *, forced: bool, independent: bool) -> None:
        """Opens the next segment; it is flagged ``discontinuity`` if a jump came since the
        last one opened."""
        discontinuity, self._jump_pending = self._jump_pending, False
        if self._templates is None:
            assert self._video_config is not None
            self._templates = usable_templates(self._video_config, self._audio_config)
        if forced:
            self._forced_cuts += 1
        seq = self._next_seq
        self._next_seq += 1
        parts = SegmentParts(
            seq=seq,
            start_ms=start_ms,
            independent=independent,
            on_bytes=lambda data: self._emit(seg, data),
            on_part=(lambda part: self._pending.append(part)) if self._cuts_parts else None,
        )
        muxer: SegmentMuxer | FileSegmentMuxer
        if self._templates.segment_format != "mpegts":
            muxer = FileSegmentMuxer(self._templates, parts.write)
        else:
            muxer = SegmentMuxer(self._templates, parts.write)
        seg = _OpenSegment(
            seq=seq,
            start_ms=start_ms,
            muxer=muxer,
            parts=parts,
            forced=forced,
            discontinuity=discontinuity,
            last_ms=start_ms,
        )
        self._segment = seg
        self._pending.append(
            SegmentStarted(
                seq=seq,
                start_ms=start_ms,
                discontinuity=discontinuity,
                segment_format=self._templates.segment_format,
            )
        )

    @property
    def _cuts_parts(self) -> bool:
        """Whether segments are cut into LL-HLS parts: with a part target, in MPEG-TS."""
        templates = self._templates
        return (
            self.part_target is not None
            and templates is not None
            and templates.segment_format == "mpegts"
        )

    def _emit(self, seg: _OpenSegment, data: bytes) -> None:
        seg.size += len(data)
        self._pending.append(SegmentData(seq=seg.seq, data=data))

    def _close(self, end_ms: int) -> None:
        seg = self._segment
        assert seg is not None
        try:
            seg.muxer.close()
        except PacketRefused as exc:
            # What was written stays: a damaged tail plays as far as it goes.
            log.warning(
                "stream %r: segment %d did not finish cleanly: %s", self.stream_name, seg.seq, exc
            )
        self._segment = None
        seg.parts.close(end_ms)
        self._pending.append(
            SegmentCompleted(
                seq=seg.seq,
                start_ms=seg.start_ms,
                duration_ms=max(0, end_ms - seg.start_ms),
                size=seg.size,
                has_audio=seg.muxer.has_audio,
                forced=seg.forced,
                discontinuity=seg.discontinuity,
            )
        )

    def _mux(self, packet: MediaPacket) -> bool:
        """Muxes a packet into the open segment; False if it was refused (dropped)."""
        seg = self._segment
        assert seg is not None
        try:
            seg.muxer.mux(packet)
        except PacketRefused as exc:
            self._refused += 1
            self._refused_in_a_row += 1
            self._notices("refused", packet.dts, exc)
            if self._refused_in_a_row >= MAX_REFUSED_IN_A_ROW:
                raise MediaError(
                    f"the muxer refused {self._refused_in_a_row} packets in a row "
                    f"(the last at {packet.dts} ms: {exc}); the media cannot be read"
                ) from exc
            return False
        self._refused_in_a_row = 0
        return True
