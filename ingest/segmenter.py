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

Muxing is a few microseconds per packet, so callers may run it on their event loop.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import attrs
import av

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, StreamMetadata, TrackKind

__all__ = [
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


SegmenterEvent = SegmentStarted | SegmentData | SegmentCompleted


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
    container: Any
    video: Any
    audio: Any
    forced: bool = False
    size: int = 0
    last_ms: int = 0


@attrs.define
class Segmenter:
    """Turns ``MediaEvent``s into MPEG-TS segment events; see the module comment."""

    target_duration: float = 2.0
    """Cut at the first keyframe at least this many seconds into a segment."""
    max_duration: float = 8.0
    """Cut without a keyframe after this many seconds (with a warning)."""
    stream_name: str = ""
    """Used in log messages only."""
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
        if self._segment is not None:
            self._mux(self._segment.video, packet)

    def _open(self, start_ms: int, *, forced: bool) -> None:
        assert self._video_config is not None
        if self._templates is None:
            self._templates = _template_streams(self._video_config, self._audio_config)
        seq = self._next_seq
        self._next_seq += 1
        sink = _Sink(lambda data: self._emit(seq, data))
        try:
            container = av.open(sink, mode="w", format="mpegts")
            v_template, a_template = self._templates
            video = container.add_stream_from_template(v_template)
            audio = container.add_stream_from_template(a_template) if a_template else None
        except av.FFmpegError as exc:
            raise MediaError(f"cannot start MPEG-TS segment: {exc}") from exc
        self._segment = _OpenSegment(
            seq=seq,
            start_ms=start_ms,
            container=container,
            video=video,
            audio=audio,
            forced=forced,
            last_ms=start_ms,
        )
        self._pending.append(SegmentStarted(seq=seq, start_ms=start_ms))

    def _emit(self, seq: int, data: bytes) -> None:
        if self._segment is not None and self._segment.seq == seq:
            self._segment.size += len(data)
        self._pending.append(SegmentData(seq=seq, data=data))

    def _close(self, end_ms: int) -> None:
        seg = self._segment
        assert seg is not None
        try:
            seg.container.close()
        except av.FFmpegError as exc:
            raise MediaError(f"cannot finish MPEG-TS segment {seg.seq}: {exc}") from exc
        self._segment = None
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
