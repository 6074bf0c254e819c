"""Cuts a live stream of H.264/AAC packets into GOP-aligned MPEG-TS segments.

How this works:

* The segmenter is fed ``MediaEvent``s in arrival order (as RTMP delivers them) and returns
  events: ``SegmentStarted``, ``SegmentData`` (bytes as the muxer writes them, so the caller can
  forward a segment while it is still being produced) and ``SegmentCompleted``.
* A segment opens on a video keyframe. When the next keyframe arrives and the open segment is
  at least ``target_duration`` long, the segment is closed and a new one opens on that keyframe:
  segments are never cut inside a GOP. If no keyframe comes for ``max_duration`` the segment is
  cut anyway, with a warning, since a viewer would otherwise wait forever.
* Each segment is its own MPEG-TS file (PAT/PMT first) written by PyAV's muxer. The output
  streams are created from "template" streams that PyAV reads out of a tiny in-memory FLV
  holding just the codec configurations, so no encoder is ever opened: this is a remux.
  Packet timestamps are carried over unchanged (until a jump, see below), so timestamps run
  on across segments.
* Packets before the first keyframe, and audio without an audio configuration, are dropped.
  A new codec configuration (e.g. a resolution change) takes effect at the next segment; one
  that cannot be read is ignored (the previous one stays) unless there is no previous one.
* Timestamps are made safe before anything else looks at them (``_retime``), since the MPEG-TS
  muxer refuses, and a playlist would list, what a bad publisher sends:

  - per track, decode timestamps must strictly increase: a packet at or before its track's
    last one (late, duplicate, out of order) is dropped and counted;
  - a step of more than ``max_timestamp_jump`` (either way) from the newest timestamp of the
    stream is a *jump* (a restarted encoder, a bogus offset, RTMP's 32-bit wrap): the track is
    rebased so that it continues one frame after its last packet, so the output timeline stays
    continuous. After a video jump the next keyframe cuts the segment (so both sides still
    decode on their own) and the new segment is flagged ``discontinuity``. A segment younger than
    ``MIN_JUMP_SEGMENT`` is not cut for a jump, so a storm of jumps cannot make a segment per
    keyframe; the flag then goes to the next segment, whatever cuts it;
  - a presentation timestamp before the decode timestamp, or further after it than the jump
    limit, is set to the decode timestamp (counted).

  Each kind is logged once per stream at warning level and counted in ``statistics()``.
* A packet the muxer refuses (damaged H.264 whose NAL lengths do not add up, for instance) is
  dropped and counted; only ``MAX_REFUSED_IN_A_ROW`` refusals in a row end the stream.
* Every segment is bounded: video cuts at a keyframe after ``target_duration`` or at any frame
  after ``max_duration``, and audio that runs on without video (a stalled camera) cuts a
  segment of its own after ``max_duration``. With jumps rebased, no two packets are more than
  ``max_timestamp_jump`` apart, so no segment is longer than ``duration_bound``.
* A stream that has not opened its first segment after ``startup_limit`` seconds of media is
  refused with a ``MediaError`` saying why: audio only, no H.264 configuration, or no keyframe.
* With a ``part_target`` (LL-HLS), each segment is also delivered in *parts*: runs of whole
  frames of about the target, each a ``PartCompleted`` whose bytes are exactly the
  ``SegmentData`` bytes since the previous part, so parts concatenate into the segment.
  Cuts are decided on input (a video packet at least about ``part_target`` after the part's
  first one opens the next part) and applied to the muxer's output by ``_PartCutter``: one
  muxer per segment as before, its output split on 188-byte TS packets just before the PES
  that starts the cut frame. The muxer writes one PES per video packet, so counting video PES
  starts on the video PID finds the cut frame whatever the interleaver and the audio PES
  buffering hold back (audio a few ms older than the cut may land in the next part; it plays
  on in order). Every part opens with PAT and PMT (moved from the end of the previous part, or
  copied from the segment's first ones), and the PSI continuity counters are renumbered so the
  segment stays a valid TS; without parts nothing is inserted and the bytes are the muxer's.
  A part is ``independent`` when its first frame is a keyframe (always the first part of a
  segment, unless the segment was forced).

Muxing is a few microseconds per packet, so callers may run it on their event loop.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import attrs
import av

from lpstream.errors import MediaError
from lpstream.media import (
    MAX_SEGMENT_SECONDS,
    CodecConfig,
    MediaEvent,
    MediaPacket,
    StreamMetadata,
    TrackKind,
)
from lpstream.media.mpegts import (
    PACKET_SIZE,
    PAT_PID,
    SDT_PID,
    SYNC_BYTE,
    packet_pid,
    pat_pmt_pids,
    pmt_stream_pid,
    psi_section,
    unit_start,
)

__all__ = [
    "AUDIO_ONLY_REFUSAL",
    "MAX_REFUSED_IN_A_ROW",
    "MAX_TIMESTAMP_JUMP",
    "MIN_JUMP_SEGMENT",
    "STARTUP_LIMIT",
    "PartCompleted",
    "SegmentCompleted",
    "SegmentData",
    "SegmentStarted",
    "Segmenter",
    "SegmenterEvent",
    "SegmenterStatistics",
]

log = logging.getLogger("lpstream.ingest.segmenter")

_MS = Fraction(1, 1000)

MAX_TIMESTAMP_JUMP = 5.0
"""Seconds a timestamp may step from the stream's newest one (either way) before it is a jump."""
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
_DEFAULT_STEP_MS = {TrackKind.VIDEO: 33, TrackKind.AUDIO: 23}


@attrs.frozen(kw_only=True)
class SegmentStarted:
    """A new segment opened; its bytes follow as ``SegmentData``."""

    seq: int
    """Sequence number, counting from 0 for the stream."""
    start_ms: int
    """Decode timestamp of its first packet (video, unless audio cut it), in milliseconds, on
    the output timeline (the input's, rebased after jumps)."""
    discontinuity: bool = False
    """It follows a timestamp jump (the timeline was rebased): list it after
    EXT-X-DISCONTINUITY."""


@attrs.frozen(kw_only=True)
class SegmentData:
    """A piece of the open segment's MPEG-TS bytes."""

    seq: int
    """The segment these bytes belong to."""
    data: bytes
    """MPEG-TS bytes, a whole number of 188-byte packets except perhaps at the end."""


@attrs.frozen(kw_only=True)
class SegmentCompleted:
    """The segment is closed: all its bytes were delivered."""

    seq: int
    """The segment that ended."""
    start_ms: int
    """Decode timestamp of its first video packet."""
    duration_ms: int
    """Its length: up to the next segment's first packet, or to the end of the stream."""
    size: int
    """Total bytes."""
    has_audio: bool
    """Whether it carries an audio track."""
    forced: bool
    """True when it opened without a keyframe (after ``max_duration``, or a jump)."""
    discontinuity: bool = False
    """As in its ``SegmentStarted``."""


@attrs.frozen(kw_only=True)
class SegmenterStatistics:
    """What the segmenter dropped or repaired so far (each kind is logged once)."""

    late_packets: int
    """Packets dropped because their decode timestamp was not after their track's last."""
    refused_packets: int
    """Packets dropped because the muxer refused them (damaged data)."""
    jumps: int
    """Timestamp jumps rebased."""
    repaired_pts: int
    """Packets whose presentation timestamp was inconsistent and set to the decode one."""
    forced_cuts: int
    """Segments cut without a keyframe (no keyframe for ``max_duration``, a jump, or audio
    running on without video)."""
    ignored_configs: int
    """New codec configurations that could not be used (the previous one stayed)."""


@attrs.frozen(kw_only=True)
class PartCompleted:
    """A partial segment of the open segment is complete (only with a ``part_target``)."""

    seq: int
    """The segment it belongs to."""
    index: int
    """Its place in the segment, from 0."""
    start_ms: int
    """Decode timestamp of its first video packet."""
    duration_ms: int
    """Up to the next part's first video packet (or the segment's end)."""
    independent: bool
    """Its first frame is a keyframe: a player can start decoding here."""
    data: bytes
    """MPEG-TS bytes, PAT and PMT first: exactly the ``SegmentData`` since the last part."""


SegmenterEvent = SegmentStarted | SegmentData | PartCompleted | SegmentCompleted


@attrs.define
class _PartCutter:
    """Splits one segment's MPEG-TS output into parts (see the module comment)."""

    on_bytes: Callable[[bytes], None]
    """Takes the segment's bytes, final and in order."""
    on_part: Callable[[bytes], None]
    """Takes a finished part's bytes (after the ``on_bytes`` calls that carried them)."""
    _partial: bytes = b""
    _held: list[bytearray] = attrs.Factory(list)
    _part: bytearray = attrs.Factory(bytearray)
    _out: bytearray = attrs.Factory(bytearray)
    _pmt_pids: set[int] = attrs.Factory(set)
    _video_pid: int | None = None
    _pat: bytes | None = None
    _pmt: bytes | None = None
    _counters: dict[int, int] = attrs.Factory(dict)
    _pes_seen: int = 0
    _cuts: deque[int] = attrs.Factory(deque)

    def cut_before(self, ordinal: int) -> None:
        """The video packet with this ordinal (from 0, in mux order) opens a new part."""
        self._cuts.append(ordinal)

    def cancel_cut(self, ordinal: int) -> None:
        """Takes back ``cut_before(ordinal)`` if that packet never came (it was refused)."""
        if self._cuts and self._cuts[-1] == ordinal and self._pes_seen <= ordinal:
            self._cuts.pop()

    def write(self, data: bytes) -> None:
        buffered = self._partial + data
        whole = len(buffered) - len(buffered) % PACKET_SIZE
        self._partial = buffered[whole:]
        for offset in range(0, whole, PACKET_SIZE):
            self._packet(bytearray(buffered[offset : offset + PACKET_SIZE]))
        self._flush_out()

    def close(self) -> bytes:
        """Places what is left; returns the last part's bytes."""
        self._place_held()
        if self._partial:
            self._append(bytearray(self._partial))
            self._partial = b""
        self._flush_out()
        last, self._part = bytes(self._part), bytearray()
        return last

    def _is_psi(self, pid: int) -> bool:
        return pid in (PAT_PID, SDT_PID) or pid in self._pmt_pids

    def _packet(self, packet: bytearray) -> None:
        if packet[0] != SYNC_BYTE:
            self._place_held()
            self._append(packet)
            return
        pid = packet_pid(packet)
        if pid == PAT_PID:
            section = psi_section(packet)
            if section:
                self._pmt_pids.update(pat_pmt_pids(section))
                self._pat = self._pat or bytes(packet)
        elif pid in self._pmt_pids:
            video_pid = pmt_stream_pid(psi_section(packet))
            if video_pid is not None:
                self._video_pid = video_pid
                self._pmt = self._pmt or bytes(packet)
        if self._is_psi(pid):
            self._held.append(packet)  # placed with whatever follows: it may open a part
            return
        if pid == self._video_pid and unit_start(packet):
            ordinal, self._pes_seen = self._pes_seen, self._pes_seen + 1
            if self._cuts and self._cuts[0] == ordinal:
                self._cuts.popleft()
                self._start_part()
        self._place_held()
        self._append(packet)

    def _start_part(self) -> None:
        self._flush_out()
        if self._part:
            self.on_part(bytes(self._part))
            self._part = bytearray()
        held = {packet_pid(p) for p in self._held}
        opening: list[bytearray] = []
        if self._pat is not None and PAT_PID not in held:
            opening.append(bytearray(self._pat))
        if self._pmt is not None and not held & self._pmt_pids:
            opening.append(bytearray(self._pmt))
        self._held[:0] = opening

    def _place_held(self) -> None:
        for packet in self._held:
            pid = packet_pid(packet)
            count = self._counters.get(pid, 0)
            self._counters[pid] = count + 1
            packet[3] = (packet[3] & 0xF0) | (count & 0x0F)
            self._append(packet)
        self._held.clear()

    def _append(self, packet: bytearray) -> None:
        self._part += packet
        self._out += packet

    def _flush_out(self) -> None:
        if self._out:
            self.on_bytes(bytes(self._out))
            self._out = bytearray()


def _flv_tag(tag_type: int, payload: bytes) -> bytes:
    size = len(payload)
    header = bytes([tag_type]) + size.to_bytes(3, "big") + b"\x00\x00\x00\x00" + b"\x00\x00\x00"
    return header + payload + (11 + size).to_bytes(4, "big")


def _template_streams(video: CodecConfig, audio: CodecConfig | None) -> tuple[Any, Any]:
    """Returns PyAV input streams describing the codecs, for ``add_stream_from_template``."""
    flags = 0x05 if audio is not None else 0x01
    flv = b"FLV\x01" + bytes([flags]) + b"\x00\x00\x00\x09\x00\x00\x00\x00"
    flv += _flv_tag(9, b"\x17\x00\x00\x00\x00" + video.data)
    if audio is not None:
        flv += _flv_tag(8, b"\xaf\x00" + audio.data)
    try:
        container = av.open(
            io.BytesIO(flv), format="flv", options={"probesize": "32", "analyzeduration": "0"}
        )
    except av.FFmpegError as exc:
        raise MediaError(f"codec configuration is not usable: {exc}") from exc
    v = container.streams.video[0] if container.streams.video else None
    a = container.streams.audio[0] if (audio is not None and container.streams.audio) else None
    if v is None:
        raise MediaError("the H.264 configuration record could not be read")
    return v, a


def _usable_templates(video: CodecConfig, audio: CodecConfig | None) -> tuple[Any, Any]:
    """``_template_streams``, checked the way they will be used: FFmpeg's AVCC to Annex B
    filter must accept the H.264 configuration (else it would refuse every packet)."""
    templates = _template_streams(video, audio)
    try:
        av.BitStreamFilterContext("h264_mp4toannexb", in_stream=templates[0])
    except av.FFmpegError as exc:
        raise MediaError(f"the H.264 configuration record cannot be used: {exc}") from exc
    return templates


class _Sink(io.RawIOBase):
    """A write-only file whose bytes go to a callback."""

    def __init__(self, on_write: Callable[[bytes], None]) -> None:
        self._on_write = on_write

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        if data:
            self._on_write(data)
        return len(data)


@attrs.define
class _OpenSegment:
    seq: int
    start_ms: int
    cutter: _PartCutter
    container: Any = None
    video: Any = None
    audio: Any = None
    annexb: Any = None
    """FFmpeg's AVCC to Annex B filter for its video (see ``Segmenter._mux``)."""
    forced: bool = False
    discontinuity: bool = False
    size: int = 0
    last_ms: int = 0
    """Decode timestamp of its newest video packet (its start while it has none)."""
    last_audio_ms: int | None = None
    video_packets: int = 0
    part_starts: list[tuple[int, bool]] = attrs.Factory(list)
    """(start_ms, independent) of each part begun, in order."""
    parts_done: int = 0


@attrs.define
class _Track:
    """Where one track's timestamps stand (see ``Segmenter._retime``)."""

    step_ms: int
    """Its usual distance between packets, as last measured."""
    offset: int = 0
    """Added to its input timestamps to put them on the output timeline."""
    last_dts: int | None = None
    """Its newest decode timestamp on the output timeline."""


_NOTICES = {
    "late": "packet at %d ms is not after its track's last one (late, duplicate or out of "
    "order): dropped",
    "jump": "timestamps jumped by %d ms: rebased, so the stream runs on from where it was",
    "pts": "presentation timestamp %d ms away from the decode timestamp: set to it",
    "refused": "the muxer refused a packet at %d ms (%s): dropped",
    "config": "new %s configuration ignored, the previous one stays: %s",
}


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
    _video_config: CodecConfig | None = None
    _audio_config: CodecConfig | None = None
    _templates: tuple[Any, Any] | None = None
    _segment: _OpenSegment | None = None
    _next_seq: int = 0
    _pending: list[SegmenterEvent] = attrs.Factory(list)
    _tracks: dict[TrackKind, _Track] = attrs.Factory(
        lambda: {kind: _Track(step_ms=step) for kind, step in _DEFAULT_STEP_MS.items()}
    )
    _head: int | None = None
    """The newest decode timestamp of the stream (any track), output timeline."""
    _first_ms: int | None = None
    _packets_waiting: int = 0
    _video_packets_seen: bool = False
    _jump_pending: bool = False
    _late: int = 0
    _refused: int = 0
    _refused_in_a_row: int = 0
    _jumps: int = 0
    _repaired_pts: int = 0
    _forced_cuts: int = 0
    _ignored_configs: int = 0
    _noticed: set[str] = attrs.Factory(set)

    @property
    def duration_bound(self) -> float:
        """No segment is longer than this many seconds: a cut after ``max_duration`` comes at
        the next packet, and packets are never more than ``max_timestamp_jump`` apart."""
        return self.max_duration + self.max_timestamp_jump

    def output_ms(self, kind: TrackKind, input_ms: int) -> int:
        """Where a timestamp of track ``kind`` as fed in lands on the output timeline (the
        segments' timestamps), with the track's rebasing so far: the identity until a jump."""
        return input_ms + self._tracks[kind].offset

    def statistics(self) -> SegmenterStatistics:
        return SegmenterStatistics(
            late_packets=self._late,
            refused_packets=self._refused,
            jumps=self._jumps,
            repaired_pts=self._repaired_pts,
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
                end = seg.last_ms + self._tracks[TrackKind.VIDEO].step_ms
            else:
                end = seg.last_audio_ms + self._tracks[TrackKind.AUDIO].step_ms
            self._close(end)
        out, self._pending = self._pending, []
        return out

    def _notice(self, kind: str, *args: object) -> None:
        """Logs the first event of a kind at warning level, later ones at debug level."""
        if kind in self._noticed:
            log.debug("stream %r: " + _NOTICES[kind], self.stream_name, *args)
            return
        self._noticed.add(kind)
        log.warning(
            "stream %r: " + _NOTICES[kind] + " (further ones are counted, not logged)",
            self.stream_name,
            *args,
        )

    def _configure(self, config: CodecConfig) -> None:
        video: CodecConfig | None
        audio: CodecConfig | None
        if config.kind is TrackKind.VIDEO:
            if config.codec != "h264":
                raise MediaError(f"unsupported video codec {config.codec!r}")
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
            templates = _usable_templates(video, audio)
        except MediaError as exc:
            self._ignored_configs += 1
            self._notice("config", config.kind.value, exc)
            return
        self._video_config, self._audio_config, self._templates = video, audio, templates

    # -- timestamps -------------------------------------------------------------------------

    def _retime(self, packet: MediaPacket) -> MediaPacket | None:
        """The packet on the output timeline, or None if it must be dropped (see the module
        comment)."""
        track = self._tracks[packet.kind]
        dts = packet.dts + track.offset
        limit = round(self.max_timestamp_jump * 1000)
        head = self._head
        if head is not None and abs(dts - head) > limit:
            target = head if track.last_dts is None else max(head, track.last_dts + track.step_ms)
            self._jumps += 1
            self._notice("jump", dts - target)
            track.offset += target - dts
            dts = target
            # Segments follow the video: its jump marks the discontinuity (audio jumping with
            # it, a little before or after, must not mark a second one).
            if self._next_seq and packet.kind is TrackKind.VIDEO:
                self._jump_pending = True
        elif track.last_dts is not None and dts <= track.last_dts:
            self._late += 1
            self._notice("late", dts)
            return None
        elif track.last_dts is not None and 0 < dts - track.last_dts < 1000:
            track.step_ms = dts - track.last_dts
        composition = packet.pts - packet.dts
        if not 0 <= composition <= limit:
            self._repaired_pts += 1
            self._notice("pts", composition)
            composition = 0
        track.last_dts = dts
        self._head = dts if head is None else max(head, dts)
        if self._first_ms is None:
            self._first_ms = dts
        if dts == packet.dts and composition == packet.pts - packet.dts:
            return packet
        return attrs.evolve(packet, dts=dts, pts=dts + composition)

    # -- packets ----------------------------------------------------------------------------

    def _packet(self, packet: MediaPacket) -> None:
        timed = self._retime(packet)
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
        waited_ms = (
            0 if self._head is None or self._first_ms is None else self._head - self._first_ms
        )
        if (
            waited_ms < self.startup_limit * 1000
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
        if seg is None or seg.audio is None:
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
            assert seg is not None and seg.audio is not None
        seg.last_audio_ms = packet.dts
        self._mux(seg.audio, packet)

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
        if seg.video_packets and self.part_target is not None:
            # Cut at the frame nearest the target, so parts stay close to it. (Not before the
            # first video packet: in a segment that audio opened, nothing may be out yet.)
            part_ms = packet.dts - seg.part_starts[-1][0]
            step_ms = self._tracks[TrackKind.VIDEO].step_ms
            if part_ms >= self.part_target * 1000 - step_ms / 2:
                cut = True
                seg.cutter.cut_before(seg.video_packets)
                seg.part_starts.append((packet.dts, packet.keyframe))
        if self._mux(seg.video, packet):
            seg.video_packets += 1
            seg.last_ms = max(seg.last_ms, packet.dts)
        elif cut:  # the refused packet opens no part: the next one may
            seg.cutter.cancel_cut(seg.video_packets)
            seg.part_starts.pop()

    # -- segments ---------------------------------------------------------------------------

    def _open(self, start_ms: int, *, forced: bool, independent: bool) -> None:
        """Opens the next segment; it is flagged ``discontinuity`` if a jump came since the
        last one opened."""
        discontinuity, self._jump_pending = self._jump_pending, False
        if self._templates is None:
            assert self._video_config is not None
            self._templates = _usable_templates(self._video_config, self._audio_config)
        if forced:
            self._forced_cuts += 1
        seq = self._next_seq
        self._next_seq += 1
        cutter = _PartCutter(
            on_bytes=lambda data: self._emit(seg, data),
            on_part=lambda data: self._emit_part(seg, data, end_ms=None),
        )
        seg = _OpenSegment(
            seq=seq, start_ms=start_ms, cutter=cutter, forced=forced, discontinuity=discontinuity
        )
        seg.last_ms = start_ms
        seg.part_starts.append((start_ms, independent))
        try:
            # Each packet is written out as soon as it is muxed (not when a 32 KiB buffer
            # fills: 130 ms of 720p), and each video PES says its length, so a reader
            # downstream (a worker decoding while the segment uploads, an LL-HLS part) can
            # take a frame as soon as it is in.
            seg.container = av.open(
                _Sink(cutter.write),
                mode="w",
                format="mpegts",
                container_options={"omit_video_pes_length": "0", "flush_packets": "1"},
            )
            v_template, a_template = self._templates
            seg.annexb = av.BitStreamFilterContext("h264_mp4toannexb", in_stream=v_template)
            seg.video = seg.container.add_stream_from_template(v_template)
            if a_template:
                seg.audio = seg.container.add_stream_from_template(a_template)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot start MPEG-TS segment: {exc}") from exc
        self._segment = seg
        self._pending.append(
            SegmentStarted(seq=seq, start_ms=start_ms, discontinuity=discontinuity)
        )

    def _emit(self, seg: _OpenSegment, data: bytes) -> None:
        seg.size += len(data)
        self._pending.append(SegmentData(seq=seg.seq, data=data))

    def _emit_part(self, seg: _OpenSegment, data: bytes, *, end_ms: int | None) -> None:
        if self.part_target is None:
            return
        index = seg.parts_done
        seg.parts_done += 1
        start_ms, independent = seg.part_starts[index]
        if end_ms is None:
            end_ms = seg.part_starts[index + 1][0]
        self._pending.append(
            PartCompleted(
                seq=seg.seq,
                index=index,
                start_ms=start_ms,
                duration_ms=max(0, end_ms - start_ms),
                independent=independent,
                data=data,
            )
        )

    def _close(self, end_ms: int) -> None:
        seg = self._segment
        assert seg is not None
        try:
            seg.container.close()
        except av.FFmpegError as exc:
            # What was written stays: a damaged tail plays as far as it goes.
            log.warning(
                "stream %r: segment %d did not finish cleanly: %s", self.stream_name, seg.seq, exc
            )
        self._segment = None
        last = seg.cutter.close()
        if last:
            self._emit_part(seg, last, end_ms=end_ms)
        self._pending.append(
            SegmentCompleted(
                seq=seg.seq,
                start_ms=seg.start_ms,
                duration_ms=max(0, end_ms - seg.start_ms),
                size=seg.size,
                has_audio=seg.audio is not None,
                forced=seg.forced,
                discontinuity=seg.discontinuity,
            )
        )

    def _mux(self, stream: Any, packet: MediaPacket) -> bool:
        """Muxes a packet into the open segment; False if it was refused (dropped).

        Video goes through FFmpeg's AVCC to Annex B filter here rather than the one the
        MPEG-TS muxer would add by itself: the muxer adds its own only if a segment's first
        packet looks like AVCC, and then passes every later packet on unconverted, so one
        damaged first packet would make the whole segment unplayable. Here the filter refuses
        a packet whose NAL lengths do not add up, and only that packet is lost.
        """
        seg = self._segment
        assert seg is not None
        out = av.Packet(packet.data)
        out.dts = packet.dts
        out.pts = packet.pts
        out.time_base = _MS
        out.is_keyframe = packet.keyframe
        try:
            muxed = [out] if stream is not seg.video else seg.annexb.filter(out)
            for item in muxed:
                item.time_base = _MS
                item.stream = stream
                seg.container.mux(item)
        except av.FFmpegError as exc:
            self._refused += 1
            self._refused_in_a_row += 1
            self._notice("refused", packet.dts, exc)
            if self._refused_in_a_row >= MAX_REFUSED_IN_A_ROW:
                raise MediaError(
                    f"the muxer refused {self._refused_in_a_row} packets in a row "
                    f"(the last at {packet.dts} ms: {exc}); the media cannot be read"
                ) from exc
            return False
        self._refused_in_a_row = 0
        return True
