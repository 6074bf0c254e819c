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
  Packet timestamps are carried over unchanged, so timestamps run on across segments.
* Packets before the first keyframe, and audio without an audio configuration, are dropped.
  A new codec configuration (e.g. a resolution change) takes effect at the next segment.
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
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, StreamMetadata, TrackKind

__all__ = [
    "PartCompleted",
    "SegmentCompleted",
    "SegmentData",
    "SegmentStarted",
    "Segmenter",
    "SegmenterEvent",
]

log = logging.getLogger("lpstream.ingest.segmenter")

_MS = Fraction(1, 1000)


@attrs.frozen(kw_only=True)
class SegmentStarted:
    """A new segment opened; its bytes follow as ``SegmentData``."""

    seq: int
    """Sequence number, counting from 0 for the stream."""
    start_ms: int
    """Decode timestamp of its first video packet, in milliseconds."""


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
    """True when it was cut without a keyframe after ``max_duration``."""


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

_TS_PACKET = 188
_PAT_PID = 0x0000
_SDT_PID = 0x0011
_H264_STREAM_TYPE = 0x1B


def _ts_pid(packet: bytes | bytearray) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def _psi_section(packet: bytes | bytearray) -> bytes:
    """The section a PSI packet starts (empty if it starts none)."""
    if not packet[1] & 0x40:
        return b""
    start = 4
    if packet[3] & 0x20:
        start += 1 + packet[4]
    if start >= _TS_PACKET:
        return b""
    start += 1 + packet[start]  # pointer_field
    section = bytes(packet[start:])
    if len(section) < 3:
        return b""
    length = ((section[1] & 0x0F) << 8) | section[2]
    return section[: 3 + length]


def _pat_pmt_pids(section: bytes) -> set[int]:
    pids = set()
    for offset in range(8, len(section) - 4 - 3, 4):
        program = int.from_bytes(section[offset : offset + 2], "big")
        if program != 0:
            pids.add(((section[offset + 2] & 0x1F) << 8) | section[offset + 3])
    return pids


def _pmt_video_pid(section: bytes) -> int | None:
    if len(section) < 16 or section[0] != 0x02:
        return None
    offset = 12 + (((section[10] & 0x0F) << 8) | section[11])
    while offset + 5 <= len(section) - 4:
        stream_type = section[offset]
        pid = ((section[offset + 1] & 0x1F) << 8) | section[offset + 2]
        if stream_type == _H264_STREAM_TYPE:
            return pid
        offset += 5 + (((section[offset + 3] & 0x0F) << 8) | section[offset + 4])
    return None


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

    def write(self, data: bytes) -> None:
        buffered = self._partial + data
        whole = len(buffered) - len(buffered) % _TS_PACKET
        self._partial = buffered[whole:]
        for offset in range(0, whole, _TS_PACKET):
            self._packet(bytearray(buffered[offset : offset + _TS_PACKET]))
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
        return pid in (_PAT_PID, _SDT_PID) or pid in self._pmt_pids

    def _packet(self, packet: bytearray) -> None:
        if packet[0] != 0x47:
            self._place_held()
            self._append(packet)
            return
        pid = _ts_pid(packet)
        if pid == _PAT_PID:
            section = _psi_section(packet)
            if section:
                self._pmt_pids |= _pat_pmt_pids(section)
                self._pat = self._pat or bytes(packet)
        elif pid in self._pmt_pids:
            video_pid = _pmt_video_pid(_psi_section(packet))
            if video_pid is not None:
                self._video_pid = video_pid
                self._pmt = self._pmt or bytes(packet)
        if self._is_psi(pid):
            self._held.append(packet)  # placed with whatever follows: it may open a part
            return
        if pid == self._video_pid and packet[1] & 0x40:
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
        held = {_ts_pid(p) for p in self._held}
        opening: list[bytearray] = []
        if self._pat is not None and _PAT_PID not in held:
            opening.append(bytearray(self._pat))
        if self._pmt is not None and not held & self._pmt_pids:
            opening.append(bytearray(self._pmt))
        self._held[:0] = opening

    def _place_held(self) -> None:
        for packet in self._held:
            pid = _ts_pid(packet)
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
    forced: bool = False
    size: int = 0
    last_ms: int = 0
    video_packets: int = 0
    part_starts: list[tuple[int, bool]] = attrs.Factory(list)
    """(start_ms, independent) of each part begun, in order."""
    parts_done: int = 0


@attrs.define
class Segmenter:
    """Turns ``MediaEvent``s into MPEG-TS segment events; see the module comment."""

    target_duration: float = 2.0
    """Cut at the first keyframe at least this many seconds into a segment."""
    max_duration: float = 8.0
    """Cut without a keyframe after this many seconds (with a warning)."""
    stream_name: str = ""
    """Used in log messages only."""
    part_target: float | None = None
    """Also deliver each segment in parts of about this many seconds (LL-HLS); None: no parts."""
    _video_config: CodecConfig | None = None
    _audio_config: CodecConfig | None = None
    _templates: tuple[Any, Any] | None = None
    _segment: _OpenSegment | None = None
    _next_seq: int = 0
    _pending: list[SegmenterEvent] = attrs.Factory(list)
    _frame_ms: int = 33
    _last_video_dts: int | None = None

    def feed(self, event: MediaEvent) -> list[SegmenterEvent]:
        """Takes one media event and returns what it completed or produced."""
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
        if self._segment is not None:
            seg = self._segment
            self._close(seg.last_ms + self._frame_ms)
        out, self._pending = self._pending, []
        return out

    def _configure(self, config: CodecConfig) -> None:
        if config.kind is TrackKind.VIDEO:
            if config.codec != "h264":
                raise MediaError(f"unsupported video codec {config.codec!r}")
            changed = self._video_config != config
            self._video_config = config
        else:
            if config.codec != "aac":
                raise MediaError(f"unsupported audio codec {config.codec!r}")
            changed = self._audio_config != config
            self._audio_config = config
        if changed:
            self._templates = None

    def _packet(self, packet: MediaPacket) -> None:
        if packet.kind is TrackKind.VIDEO:
            self._video_packet(packet)
        elif self._segment is not None and self._segment.audio is not None:
            self._mux(self._segment.audio, packet)

    def _video_packet(self, packet: MediaPacket) -> None:
        if self._video_config is None:
            return
        if self._last_video_dts is not None and 0 < packet.dts - self._last_video_dts < 1000:
            self._frame_ms = packet.dts - self._last_video_dts
        self._last_video_dts = packet.dts
        seg = self._segment
        if seg is None:
            if packet.keyframe:
                self._open(packet.dts, forced=False)
        else:
            elapsed_ms = packet.dts - seg.start_ms
            if packet.keyframe and elapsed_ms >= self.target_duration * 1000:
                self._close(packet.dts)
                self._open(packet.dts, forced=False)
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
                self._open(packet.dts, forced=True)
        seg = self._segment
        if seg is None:
            return
        if seg.video_packets == 0:
            seg.part_starts.append((packet.dts, packet.keyframe))
        elif self.part_target is not None:
            # Cut at the frame nearest the target, so parts stay close to it.
            part_ms = packet.dts - seg.part_starts[-1][0]
            if part_ms >= self.part_target * 1000 - self._frame_ms / 2:
                seg.cutter.cut_before(seg.video_packets)
                seg.part_starts.append((packet.dts, packet.keyframe))
        seg.video_packets += 1
        self._mux(seg.video, packet)

    def _open(self, start_ms: int, *, forced: bool) -> None:
        assert self._video_config is not None
        if self._templates is None:
            self._templates = _template_streams(self._video_config, self._audio_config)
        seq = self._next_seq
        self._next_seq += 1
        cutter = _PartCutter(
            on_bytes=lambda data: self._emit(seg, data),
            on_part=lambda data: self._emit_part(seg, data, end_ms=None),
        )
        seg = _OpenSegment(seq=seq, start_ms=start_ms, cutter=cutter, forced=forced)
        seg.last_ms = start_ms
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
            seg.video = seg.container.add_stream_from_template(v_template)
            if a_template:
                seg.audio = seg.container.add_stream_from_template(a_template)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot start MPEG-TS segment: {exc}") from exc
        self._segment = seg
        self._pending.append(SegmentStarted(seq=seq, start_ms=start_ms))

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
            raise MediaError(f"cannot finish MPEG-TS segment {seg.seq}: {exc}") from exc
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
            )
        )

    def _mux(self, stream: Any, packet: MediaPacket) -> None:
        seg = self._segment
        assert seg is not None
        out = av.Packet(packet.data)
        out.dts = packet.dts
        out.pts = packet.pts
        out.time_base = _MS
        out.is_keyframe = packet.keyframe
        out.stream = stream
        try:
            seg.container.mux(out)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot mux packet at {packet.dts} ms: {exc}") from exc
        if packet.kind is TrackKind.VIDEO:
            seg.last_ms = max(seg.last_ms, packet.dts)
