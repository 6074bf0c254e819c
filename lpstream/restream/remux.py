"""Segments remuxed, packet for packet, into one continuous FLV or MPEG-TS output.

How this works: each segment (MPEG-TS, or fragmented MP4 for AV1 and VP9, told apart by its
first bytes) is demuxed with PyAV on its own (``av.open(BytesIO, format)``, which also finds
the H.264 parameter sets the FLV header needs). Its first video and first
audio stream are copied into an output container written to memory; no frame is decoded or
encoded. The output's streams are made from the first segment's (``add_stream_from_template``);
the FLV muxer turns Annex B H.264 into AVC and ADTS AAC into raw AAC by itself. When a later
segment's streams differ (a new publisher with another resolution or codec) the output is
ended and a new one begun, so its header carries the new parameters.

Timestamps go through :class:`~.timeline.OutputTimeline`, so the output never steps back:
not across segments, discontinuities, nor a new output. A new output starts at the first
video keyframe (segments begin with one). Packets whose duration the demuxer left at zero
take the gap to the stream's next packet, so a placed segment starts a whole frame after the
last one.

Everything here blocks (PyAV): drivers call it through ``trio.to_thread.run_sync``.
:class:`FlvRemuxer` hands out FLV tags (what RTMP carries), :class:`TsRemuxer` bytes (what
SRT carries).
"""

from __future__ import annotations

import abc
import io
import logging
from fractions import Fraction
from typing import Any

import attrs
import av
import av.container
import av.packet
import av.stream

from lpstream.errors import MediaError
from lpstream.media.segment_format import segment_format

from .timeline import TICKS_PER_SECOND, OutputTimeline
from .values import ForwardSegment

__all__ = ["FlvReader", "FlvRemuxer", "FlvTag", "TsRemuxer"]

log = logging.getLogger("lpstream.restream")

_TICK = Fraction(1, TICKS_PER_SECOND)
_FLV_HEADER = 9 + 4
"""The FLV file header and the first PreviousTagSize."""
_CARRIED: dict[str, dict[str, tuple[str, ...]]] = {
    "flv": {"video": ("h264", "hevc", "av1", "libdav1d", "vp9"), "audio": ("aac", "mp3")},
    "mpegts": {"video": ("h264", "hevc"), "audio": ("aac", "mp3")},
}
"""What each output carries (PyAV's decoder names): RTMP takes HEVC, AV1 and VP9 as Enhanced
RTMP, as FFmpeg 8 writes them; MPEG-TS (SRT) has no AV1 or VP9, so those forward sound only."""
_MUXER_OPTIONS = {
    "flv": {"flush_packets": "1", "flvflags": "no_duration_filesize+no_sequence_end"},
    "mpegts": {"flush_packets": "1"},
}
_DEFAULT_FRAME = TICKS_PER_SECOND // 30
_EMPTY_HEADER = {8: 2, 9: 5}
"""Payload length of an FLV sequence header that carries no configuration."""


@attrs.frozen(kw_only=True)
class FlvTag:
    """One FLV tag: an RTMP media or data message."""

    kind: int
    """8 audio, 9 video, 18 script data."""
    timestamp: int
    """Milliseconds (32 bits)."""
    payload: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


@attrs.define
class FlvReader:
    """Cuts an FLV byte stream into tags (sans-IO: feed bytes, take tags)."""

    _buffer: bytearray = attrs.field(factory=bytearray, init=False)
    _header_done: bool = attrs.field(default=False, init=False)

    def feed(self, data: bytes) -> list[FlvTag]:
        """Adds bytes; returns the tags they completed."""
        self._buffer += data
        buf = self._buffer
        pos = 0
        if not self._header_done:
            if len(buf) < _FLV_HEADER:
                return []
            if buf[:3] != b"FLV":
                raise MediaError("the FLV muxer wrote no FLV header")
            pos = int.from_bytes(buf[5:9], "big") + 4
            self._header_done = True
        tags: list[FlvTag] = []
        while len(buf) - pos >= 11:
            size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            end = pos + 11 + size + 4
            if len(buf) < end:
                break
            timestamp = int.from_bytes(buf[pos + 4 : pos + 7], "big") | buf[pos + 7] << 24
            tags.append(
                FlvTag(kind=buf[pos], timestamp=timestamp, payload=bytes(buf[pos + 11 : end - 4]))
            )
            pos = end
        del buf[:pos]
        return tags


class _MemorySink:
    """The output's file: what the muxer writes waits here until taken (not seekable)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


@attrs.frozen
class _StreamShape:
    kind: str
    codec: str
    extradata: bytes
    width: int
    height: int
    sample_rate: int
    channels: int


def _shape(stream: av.stream.Stream) -> _StreamShape:
    ctx = stream.codec_context
    return _StreamShape(
        kind=stream.type,
        codec=ctx.name,
        # Demuxers differ on the zero bytes after the last parameter set; they mean nothing.
        extradata=bytes(ctx.extradata or b"").rstrip(b"\x00"),
        width=getattr(ctx, "width", 0) or 0,
        height=getattr(ctx, "height", 0) or 0,
        sample_rate=getattr(ctx, "sample_rate", 0) or 0,
        channels=getattr(ctx, "channels", 0) or 0,
    )


@attrs.define
class _Remuxer(abc.ABC):
    """What both outputs share: demux, pick streams, place on the timeline, mux."""

    container: str
    timeline: OutputTimeline = attrs.Factory(OutputTimeline)
    _sink: _MemorySink = attrs.field(factory=_MemorySink, init=False)
    _output: av.container.OutputContainer | None = attrs.field(default=None, init=False)
    _out_streams: dict[str, av.stream.Stream] = attrs.field(factory=dict, init=False)
    _shapes: tuple[_StreamShape, ...] = attrs.field(default=(), init=False)
    _need_keyframe: bool = attrs.field(default=True, init=False)

    def _remux(self, segment: ForwardSegment) -> None:
        """Remuxes one segment; what the muxer writes goes to :meth:`_emit`."""
        try:
            with av.open(
                io.BytesIO(segment.data), "r", format=segment_format(segment.data)
            ) as source:
                chosen = self._choose(source)
                if not chosen:
                    raise MediaError(f"segment {segment.seq} has no stream this output can carry")
                shapes = tuple(_shape(s) for s in chosen.values())
                if self._output is not None and shapes != self._shapes:
                    log.info("forwarded streams changed at segment %d: new output", segment.seq)
                    self._end_output()
                if self._output is None:
                    self._open_output(chosen, shapes)
                packets = self._packets(source, chosen)
                if packets:
                    self._mux(packets, discontinuity=segment.discontinuity)
        except av.FFmpegError as exc:
            raise MediaError(f"segment {segment.seq} could not be remuxed: {exc}") from exc
        finally:
            self._emit(self._sink.take())

    def _close(self) -> None:
        """Ends the output (its trailer goes to :meth:`_emit`)."""
        if self._output is None:
            return
        try:
            self._end_output()
        except av.FFmpegError as exc:
            raise MediaError(f"the output could not be finished: {exc}") from exc

    @abc.abstractmethod
    def _emit(self, data: bytes) -> None:
        """Takes what the current output wrote (called before a new output begins)."""

    def _output_opened(self) -> None:  # noqa: B027 - an optional hook: MPEG-TS needs none
        """Called when a new output begins."""

    def _choose(self, source: av.container.InputContainer) -> dict[str, av.stream.Stream]:
        chosen: dict[str, av.stream.Stream] = {}
        for stream in source.streams:
            if stream.type not in ("video", "audio") or stream.type in chosen:
                continue
            if stream.codec_context is None:
                continue
            if stream.codec_context.name not in _CARRIED[self.container][stream.type]:
                continue
            chosen[stream.type] = stream
        return chosen

    def _open_output(
        self, chosen: dict[str, av.stream.Stream], shapes: tuple[_StreamShape, ...]
    ) -> None:
        output = av.open(
            self._sink, "w", format=self.container, options=_MUXER_OPTIONS[self.container]
        )
        try:
            for kind, stream in chosen.items():
                self._out_streams[kind] = _stream_like(output, stream)
        except ValueError as exc:
            output.close()
            self._out_streams.clear()
            raise MediaError(f"{self.container} cannot carry these streams: {exc}") from exc
        self._output = output
        self._shapes = shapes
        self._need_keyframe = "video" in chosen
        self.timeline.restart()
        self._output_opened()

    def _end_output(self) -> None:
        output, self._output = self._output, None
        self._out_streams.clear()
        try:
            if output is not None:
                output.close()
        finally:
            self._emit(self._sink.take())

    def _packets(
        self, source: av.container.InputContainer, chosen: dict[str, av.stream.Stream]
    ) -> list[tuple[str, av.packet.Packet[Any], int]]:
        """The segment's packets to write, with their durations, in demux order."""
        kinds = {stream.index: kind for kind, stream in chosen.items()}
        packets: list[tuple[str, av.packet.Packet[Any]]] = []
        for packet in source.demux(*chosen.values()):
            if packet.size == 0 or packet.stream.index not in kinds:
                continue
            if packet.dts is None:
                if packet.pts is None:
                    continue
                packet.dts = packet.pts
            if packet.pts is None:
                packet.pts = packet.dts
            if packet.time_base is None:
                raise MediaError("a packet of the segment has no time base")
            if packet.time_base != _TICK:  # fragmented MP4: each track has its own
                _rebase(packet)
            kind = kinds[packet.stream.index]
            if self._need_keyframe:
                if kind != "video" or not packet.is_keyframe:
                    continue
                self._need_keyframe = False
            packets.append((kind, packet))
        return _with_durations(packets)

    def _mux(
        self, packets: list[tuple[str, av.packet.Packet[Any], int]], *, discontinuity: bool
    ) -> None:
        assert self._output is not None
        starts: dict[str, int] = {}
        for kind, packet, _ in packets:
            assert packet.dts is not None
            starts.setdefault(kind, packet.dts)
        offset = self.timeline.offset_for(starts, discontinuity=discontinuity)
        for kind, packet, duration in packets:
            assert packet.dts is not None and packet.pts is not None
            packet.dts += offset
            packet.pts += offset
            packet.duration = duration
            self.timeline.advance(kind, packet.dts, duration)
            packet.stream = self._out_streams[kind]
            self._output.mux_one(packet)


def _stream_like(output: av.container.OutputContainer, template: av.stream.Stream) -> Any:
    """An output stream copying ``template``'s parameters. A stream whose decoder has no
    encoder of the same name (AV1's ``libdav1d``) is copied with its decoder's context."""
    try:
        return output.add_stream_from_template(template)
    except av.codec.codec.UnknownCodecError:
        return output.add_stream_from_template(template, opaque=True)


def _rebase(packet: av.packet.Packet[Any]) -> None:
    """Puts a packet's times on the 90 kHz clock MPEG-TS segments use."""
    base = packet.time_base
    assert base is not None and packet.dts is not None and packet.pts is not None
    packet.dts = round(packet.dts * base / _TICK)
    packet.pts = round(packet.pts * base / _TICK)
    if packet.duration:
        packet.duration = round(packet.duration * base / _TICK)
    packet.time_base = _TICK


def _with_durations(
    packets: list[tuple[str, av.packet.Packet[Any]]],
) -> list[tuple[str, av.packet.Packet[Any], int]]:
    """Each packet with its duration: the demuxer's, else the gap to its stream's next one."""
    next_dts: dict[str, int] = {}
    last_gap: dict[str, int] = {}
    durations: list[int] = [0] * len(packets)
    for i in range(len(packets) - 1, -1, -1):
        kind, packet = packets[i]
        assert packet.dts is not None
        following = next_dts.get(kind)
        if following is not None and following > packet.dts:
            last_gap[kind] = following - packet.dts
        durations[i] = packet.duration or last_gap.get(kind) or 0
        next_dts[kind] = packet.dts
    for i, (kind, _) in enumerate(packets):
        if not durations[i]:
            durations[i] = last_gap.get(kind, _DEFAULT_FRAME)
    return [(kind, packet, durations[i]) for i, (kind, packet) in enumerate(packets)]


@attrs.define
class FlvRemuxer(_Remuxer):
    """Segments in, FLV tags out (for RTMP). Blocking: run it in a thread."""

    container: str = "flv"
    _reader: FlvReader = attrs.field(factory=FlvReader, init=False)
    _media_sent: set[int] = attrs.field(factory=set, init=False)
    _pending: list[FlvTag] = attrs.field(factory=list, init=False)
    _last_timestamp: int = attrs.field(default=0, init=False)

    def remux(self, segment: ForwardSegment) -> list[FlvTag]:
        """The tags that carry ``segment`` (and any held back from the one before).

        Raises:
            MediaError: the segment could not be demuxed or has nothing FLV can carry.
        """
        self._remux(segment)
        return self._take_tags()

    def close(self) -> list[FlvTag]:
        """Ends the output; returns its last tags."""
        self._close()
        return self._take_tags()

    def _emit(self, data: bytes) -> None:
        self._pending += self._reader.feed(data)

    def _output_opened(self) -> None:
        self._reader = FlvReader()
        self._media_sent.clear()

    def _take_tags(self) -> list[FlvTag]:
        tags, self._pending = self._pending, []
        return self._without_repeated_headers(tags)

    def _without_repeated_headers(self, tags: list[FlvTag]) -> list[FlvTag]:
        """Keeps the sequence headers an output starts with and drops the muxer's later ones.

        The FLV muxer writes a stream's header again (stamped 0) whenever a segment's demuxer
        finds the parameter sets anew, even when they differ only by a trailing zero byte;
        real changes start a new output, which sends its own. An empty AAC header (written
        before the ADTS-to-ASC filter has seen a frame) is dropped as well.
        """
        kept: list[FlvTag] = []
        for tag in tags:
            if _is_sequence_header(tag):
                if tag.kind in self._media_sent or len(tag.payload) <= _EMPTY_HEADER[tag.kind]:
                    continue
                tag = attrs.evolve(tag, timestamp=max(tag.timestamp, self._last_timestamp))
            elif tag.kind in (8, 9):
                self._media_sent.add(tag.kind)
                self._last_timestamp = max(self._last_timestamp, tag.timestamp)
            kept.append(tag)
        return kept


def _is_sequence_header(tag: FlvTag) -> bool:
    """An AVC decoder configuration or AAC AudioSpecificConfig tag."""
    payload = tag.payload
    if len(payload) < 2 or payload[1] != 0:
        return False
    if tag.kind == 9:
        return payload[0] & 0x0F == 7
    return tag.kind == 8 and payload[0] >> 4 == 10


@attrs.define
class TsRemuxer(_Remuxer):
    """Segments in, MPEG-TS bytes out (for SRT). Blocking: run it in a thread."""

    container: str = "mpegts"
    _pending: bytearray = attrs.field(factory=bytearray, init=False)

    def remux(self, segment: ForwardSegment) -> bytes:
        """The bytes that carry ``segment`` (and any held back from the one before).

        Raises:
            MediaError: the segment could not be demuxed or has nothing to carry.
        """
        self._remux(segment)
        return self._take_bytes()

    def close(self) -> bytes:
        """Ends the output; returns its last bytes."""
        self._close()
        return self._take_bytes()

    def _emit(self, data: bytes) -> None:
        self._pending += data

    def _take_bytes(self) -> bytes:
        data = bytes(self._pending)
        self._pending.clear()
        return data
