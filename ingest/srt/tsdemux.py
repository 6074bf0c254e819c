"""A publisher's MPEG-TS turned into the media events ingest hands on (sans-IO).

How this works:

* Bytes are fed as they arrive, in any split; :class:`~lpstream.media.mpegts.PacketReader`
  cuts them into 188-byte packets (skipping bytes out of sync, which are counted).
* The program comes from the PSI: the PAT (PID 0) names the first program's PMT PID, the PMT
  lists its elementary streams (:mod:`lpstream.media.psi`). Sections are gathered over packets up to
  :data:`MAX_SECTION` bytes and taken only when their CRC holds, so stray bytes that look like
  packets cannot rewrite the program. The first H.264 stream (type 0x1B) is the video, the
  first AAC one (0x0F, ADTS) the audio; any other audio or video codec is refused with code
  415 naming it (by stream type, or by the registration or DVB descriptor of a private
  stream); data streams (SCTE-35, ID3, private data) are ignored. A program without H.264
  video is refused.
* Each stream's PES packets are gathered from its TS packets. A PES with a length is whole
  when its bytes are in; one without (video, as most muxers write it) when the next one
  starts, or at :meth:`TsDemuxer.flush`. A continuity counter that skips (lost packets: SRT
  drops what comes too late) drops the PES being gathered; a PES over its limit
  (:data:`MAX_VIDEO_PES`, :data:`MAX_AUDIO_PES`) is dropped too. Drops are counted, never
  fatal.
* A video PES is one access unit, Annex B: :func:`~lpstream.media.h264.access_unit_events`
  makes the ``CodecConfig`` (from the in-band SPS/PPS, before keyframes) and the AVCC
  ``MediaPacket``. An audio PES holds ADTS frames: :class:`~.adts.AdtsReader` cuts them, and
  each becomes a raw AAC ``MediaPacket``, after a ``CodecConfig`` whenever the
  AudioSpecificConfig changes.
* Times are 90 kHz, 33 bits, and wrap every 26.5 hours: each is read as the value nearest the
  last one, so the timeline runs on past the wrap; events carry milliseconds.
* Events leave in decode order across the tracks, every track's configuration before the
  first frame (:class:`~.interleave.Interleaver`): muxers let audio trail the video.

Budgets, as the peer controls every size: no program within
:data:`MAX_BYTES_BEFORE_PROGRAM` bytes, or no media within :data:`MAX_BYTES_WITHOUT_MEDIA`,
is a :class:`~lpstream.errors.RemoteProtocolError` (the stream is not MPEG-TS, or carries
nothing we can use).
"""

from __future__ import annotations

import attrs

from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.media.h264 import access_unit_events
from lpstream.media.mpegts import (
    PACKET_SIZE,
    PAT_PID,
    STREAM_TYPE_H264,
    PacketReader,
    PesHeader,
    packet_payload,
    packet_pid,
    pat_pmt_pids,
    pes_packet_length,
    unit_start,
)
from lpstream.media.psi import mpeg_crc32, program_streams, refused_codec

from .adts import AdtsReader
from .interleave import Interleaver

__all__ = [
    "MAX_AUDIO_PES",
    "MAX_BYTES_BEFORE_PROGRAM",
    "MAX_BYTES_WITHOUT_MEDIA",
    "MAX_SECTION",
    "MAX_VIDEO_PES",
    "STREAM_TYPE_AAC",
    "TsDemuxer",
]

STREAM_TYPE_AAC = 0x0F
"""A PMT's stream type for AAC in ADTS frames."""
MAX_VIDEO_PES = 4 * 1024 * 1024
"""Largest video access unit kept (bytes)."""
MAX_AUDIO_PES = 64 * 1024
"""Largest audio PES kept (bytes)."""
MAX_SECTION = 1024
"""Largest PSI section (PAT, PMT) gathered; the standard's limit for both."""
MAX_BYTES_BEFORE_PROGRAM = 4 * 1024 * 1024
"""Bytes a stream may send before its PAT and PMT (muxers repeat them every ~0.1 s)."""
MAX_BYTES_WITHOUT_MEDIA = 16 * 1024 * 1024
"""Bytes a stream may send after its program without a single audio or video frame."""
_WRAP = 1 << 33
_PAT_TABLE = 0x00
_PMT_TABLE = 0x02


@attrs.define
class _Elementary:
    """One elementary stream's PES being gathered."""

    kind: TrackKind
    limit: int
    data: bytearray | None = None
    length: int = 0
    """``PES_packet_length`` of the open PES: bytes after its first six, 0 when unbounded."""
    counter: int | None = None
    """The continuity counter of its last TS packet with a payload."""
    orphaned: bool = False
    """Payloads are coming for a PES that is not being gathered (counted as dropped once)."""


@attrs.define
class TsDemuxer:
    """Feed MPEG-TS bytes, get ``MediaEvent``s (see the module comment)."""

    dropped: int = 0
    """PES packets dropped: lost packets within them, over the limit, or without a time."""
    skipped: int = 0
    """Bytes skipped: out of TS sync, or not ADTS."""
    _reader: PacketReader = attrs.Factory(PacketReader)
    _adts: AdtsReader = attrs.Factory(AdtsReader)
    _order: Interleaver = attrs.Factory(Interleaver)
    _next_offset: int = 0
    _seen: int = 0
    _media_mark: int = 0
    """``_seen`` when the program was found or the last frame was demuxed."""
    _sections: dict[int, bytearray] = attrs.Factory(dict)
    _pat: bytes = b""
    _pmt: bytes = b""
    _pmt_pid: int | None = None
    _streams: dict[int, _Elementary] = attrs.Factory(dict)
    _audio_config: bytes | None = None
    _last_time: int | None = None

    def feed(self, data: bytes) -> list[MediaEvent]:
        """The events that ``data`` completed.

        Raises:
            RemoteProtocolError: 415 a codec that is not taken, 400 a stream that is not
                MPEG-TS or carries no media (see the budgets in the module comment).
        """
        events: list[MediaEvent] = []
        for offset, packet in self._reader.feed(data):
            self.skipped += offset - self._next_offset
            self._next_offset = offset + PACKET_SIZE
            self._packet(packet, events)
        self._seen += len(data)
        if events:
            self._media_mark = self._seen
        ordered = [out for event in events for out in self._order.push(event)]
        if not self._pmt and self._seen > MAX_BYTES_BEFORE_PROGRAM:
            raise RemoteProtocolError(
                f"no MPEG-TS program (PAT and PMT) in the first {self._seen} bytes: "
                "send MPEG-TS with H.264 video"
            )
        if self._pmt and self._seen - self._media_mark > MAX_BYTES_WITHOUT_MEDIA:
            raise RemoteProtocolError(
                f"no audio or video frame in {self._seen - self._media_mark} bytes of MPEG-TS"
            )
        return ordered

    def flush(self) -> list[MediaEvent]:
        """The events of what is still open (the stream ended)."""
        events: list[MediaEvent] = []
        for stream in self._streams.values():
            self._finish(stream, events)
        ordered = [out for event in events for out in self._order.push(event)]
        return ordered + self._order.flush()

    def _packet(self, packet: bytes, events: list[MediaEvent]) -> None:
        if packet[1] & 0x80:  # transport_error_indicator: the sender knows it is damaged
            stream = self._streams.get(packet_pid(packet))
            if stream is not None:
                self._lose(stream)
            return
        pid = packet_pid(packet)
        if pid == PAT_PID or pid == self._pmt_pid:
            section = self._section(pid, packet)
            if section is not None:
                self._table(pid, section)
        elif pid in self._streams:
            self._elementary(self._streams[pid], packet, events)

    def _section(self, pid: int, packet: bytes) -> bytes | None:
        """The PSI section of ``pid`` that this packet completes, if it is intact."""
        payload = packet_payload(packet)
        if unit_start(packet):
            if not payload or 1 + payload[0] > len(payload):
                self._sections.pop(pid, None)
                return None
            gathered = bytearray(payload[1 + payload[0] :])
        elif pid in self._sections:
            gathered = self._sections[pid] + payload
        else:
            return None
        self._sections[pid] = gathered
        if len(gathered) < 3:
            return None
        total = 3 + (((gathered[1] & 0x0F) << 8) | gathered[2])
        if total > MAX_SECTION or total < 12:
            del self._sections[pid]
            return None
        if len(gathered) < total:
            return None
        del self._sections[pid]
        section = bytes(gathered[:total])
        return section if mpeg_crc32(section) == 0 else None

    def _table(self, pid: int, section: bytes) -> None:
        if pid == PAT_PID and section[0] == _PAT_TABLE and section != self._pat:
            pmt_pids = pat_pmt_pids(section)
            if pmt_pids:
                self._pat = section
                if pmt_pids[0] != self._pmt_pid:
                    self._pmt_pid, self._pmt = pmt_pids[0], b""
        elif (
            pid == self._pmt_pid
            and section[0] == _PMT_TABLE
            and section != self._pmt
            and len(section) >= 16
        ):
            self._program(section)

    def _program(self, section: bytes) -> None:
        video = audio = None
        for stream_type, pid, descriptors in program_streams(section):
            refused = refused_codec(stream_type, descriptors)
            if refused is not None:
                raise RemoteProtocolError(
                    f"unsupported {refused} stream (MPEG-TS stream type 0x{stream_type:02X}, "
                    f"PID {pid}); H.264 video and AAC audio are accepted",
                    code=415,
                )
            if stream_type == STREAM_TYPE_H264 and video is None:
                video = pid
            elif stream_type == STREAM_TYPE_AAC and audio is None:
                audio = pid
        if video is None:
            raise RemoteProtocolError(
                "the MPEG-TS program has no H.264 video stream; H.264 video (and AAC audio) "
                "is accepted",
                code=415,
            )
        wanted = {video: (TrackKind.VIDEO, MAX_VIDEO_PES)}
        if audio is not None:
            wanted[audio] = (TrackKind.AUDIO, MAX_AUDIO_PES)
        streams: dict[int, _Elementary] = {}
        for pid, (kind, limit) in wanted.items():
            known = self._streams.get(pid)
            streams[pid] = (
                known
                if known is not None and known.kind is kind
                else (_Elementary(kind=kind, limit=limit))
            )
        self._streams = streams
        self._order.tracks = frozenset(kind for kind, _ in wanted.values())
        if not self._pmt:
            self._media_mark = self._seen
        self._pmt = section

    def _elementary(self, stream: _Elementary, packet: bytes, events: list[MediaEvent]) -> None:
        control = (packet[3] >> 4) & 0x3
        if control & 0x2 and packet[4] and packet[5] & 0x80:  # discontinuity_indicator
            stream.counter = None
        if control & 0x1:
            counter = packet[3] & 0x0F
            if stream.counter is not None:
                if counter == stream.counter:
                    return  # a duplicate packet, which the standard allows once
                if counter != (stream.counter + 1) & 0x0F:
                    self._lose(stream)
            stream.counter = counter
        payload = packet_payload(packet)
        if not payload:
            return
        if unit_start(packet):
            self._finish(stream, events)
            stream.length = pes_packet_length(payload)
            stream.orphaned = 6 + stream.length > stream.limit
            if stream.orphaned:
                self.dropped += 1
                return
            stream.data = bytearray(payload)
        elif stream.data is not None:
            stream.data += payload
            if len(stream.data) > stream.limit:
                stream.data, stream.orphaned = None, True
                self.dropped += 1
                return
        else:
            if not stream.orphaned:  # its start was lost
                stream.orphaned = True
                self.dropped += 1
            return
        if stream.length and len(stream.data) >= 6 + stream.length:
            self._finish(stream, events)

    def _lose(self, stream: _Elementary) -> None:
        """Packets of ``stream`` were lost: what it was gathering cannot be whole."""
        if stream.data is not None:
            stream.data, stream.orphaned = None, True
            self.dropped += 1
        if stream.kind is TrackKind.AUDIO:
            self._adts.reset()

    def _finish(self, stream: _Elementary, events: list[MediaEvent]) -> None:
        pes, stream.data = stream.data, None
        if pes is None:
            return
        header = PesHeader.from_bytes(pes)
        if header is None:
            self.dropped += 1
            return
        body = bytes(pes[header.size : 6 + header.length] if header.length else pes[header.size :])
        if stream.kind is TrackKind.VIDEO:
            if header.pts is None or header.dts is None:
                self.dropped += 1
                return
            dts = self._time(header.dts)
            pts = dts + _signed((header.pts - header.dts) % _WRAP)
            try:
                events += access_unit_events(body, dts=dts // 90, pts=pts // 90)
            except ValueError:  # parameter sets that cannot be read: the unit is lost
                self.dropped += 1
            return
        skipped = self._adts.skipped
        frames = self._adts.feed(body, None if header.pts is None else self._time(header.pts))
        self.skipped += self._adts.skipped - skipped
        for frame in frames:
            if frame.config != self._audio_config:
                self._audio_config = frame.config
                events.append(CodecConfig(kind=TrackKind.AUDIO, codec="aac", data=frame.config))
            ms = frame.time // 90
            events.append(
                MediaPacket(kind=TrackKind.AUDIO, dts=ms, pts=ms, keyframe=True, data=frame.data)
            )

    def _time(self, ts: int) -> int:
        """A 33-bit time as the value nearest the last one read: the timeline past the wrap."""
        if self._last_time is None:
            self._last_time = ts
            return ts
        value = self._last_time + _signed((ts - self._last_time) % _WRAP)
        self._last_time = value
        return value


def _signed(delta: int) -> int:
    """A difference of 33-bit times (mod 2**33) as the signed step it most likely is."""
    return delta - _WRAP if delta >= _WRAP // 2 else delta
