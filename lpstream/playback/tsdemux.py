"""An incremental MPEG-TS demuxer for the H.264 video of a live stream (sans-IO).

How this works:

Bytes are fed as they arrive, in any split; :class:`~lpstream.media.mpegts.PacketReader`
cuts them into 188-byte packets (skipping garbage to the next sync byte). The PAT gives the
PMT's PID, the PMT the first H.264 stream's PID (stream type 0x1B). The video PID's PES
packets are gathered: a PES with a length (live AI output is muxed with
``omit_video_pes_length=0``) is complete as soon as its bytes are in; one without (length 0)
is complete when the next one starts, or at :meth:`TsVideoDemuxer.flush`. Each complete PES
is one access unit, turned into what the WebRTC fan-out takes
(:func:`~lpstream.media.h264.access_unit_events`): a ``CodecConfig`` (avcC from the in-band
SPS/PPS) before each keyframe, then an AVCC ``MediaPacket`` with times in ms.

:meth:`TsVideoDemuxer.feed_located` also says where in the byte stream each access unit's
PES began, so a reader can cut the stream into parts at frame boundaries (LL-HLS).

Limits: a PES larger than ``MAX_ACCESS_UNIT`` is dropped (counted), and garbage between
packets is skipped to the next sync byte.
"""

from __future__ import annotations

import attrs

from lpstream.media import MediaEvent
from lpstream.media.h264 import access_unit_events
from lpstream.media.mpegts import (
    PAT_PID,
    PacketReader,
    PesHeader,
    packet_payload,
    packet_pid,
    pat_pmt_pids,
    pes_packet_length,
    pmt_stream_pid,
    psi_section,
    unit_start,
)

__all__ = ["MAX_ACCESS_UNIT", "TsVideoDemuxer"]

MAX_ACCESS_UNIT = 4 * 1024 * 1024
"""Largest access unit kept (bytes)."""


@attrs.define
class TsVideoDemuxer:
    """Feed MPEG-TS bytes, get the H.264 access units out as soon as they are whole."""

    _reader: PacketReader = attrs.Factory(PacketReader)
    _pmt_pid: int | None = None
    _video_pid: int | None = None
    _pes: bytearray | None = None
    _pes_length: int = 0
    """Expected PES size in bytes (after the 6-byte start), 0 when unbounded."""
    _pes_offset: int = 0
    """Stream offset of the TS packet that began the open PES."""
    dropped: int = 0
    """Access units dropped (oversized or without timestamps)."""

    def feed(self, data: bytes) -> list[MediaEvent]:
        """The access units that ``data`` completed."""
        return [event for _, event in self.feed_located(data)]

    def feed_located(self, data: bytes) -> list[tuple[int, MediaEvent]]:
        """As :meth:`feed`, each event with the stream offset where its access unit began."""
        events: list[tuple[int, MediaEvent]] = []
        for at, packet in self._reader.feed(data):
            self._packet(packet, at, events)
        return events

    def flush(self) -> list[MediaEvent]:
        """The access unit still open (the stream ended)."""
        events: list[tuple[int, MediaEvent]] = []
        self._finish(events)
        return [event for _, event in events]

    def _packet(self, packet: bytes, at: int, events: list[tuple[int, MediaEvent]]) -> None:
        pid = packet_pid(packet)
        start = unit_start(packet)
        if pid == PAT_PID and start:
            pmt_pids = pat_pmt_pids(psi_section(packet))
            if pmt_pids:
                self._pmt_pid = pmt_pids[0]
        elif pid == self._pmt_pid and start:
            video_pid = pmt_stream_pid(psi_section(packet))
            if video_pid is not None:
                self._video_pid = video_pid
        elif pid == self._video_pid:
            payload = packet_payload(packet)
            if not payload:
                return
            if start:
                self._finish(events)
                self._pes = bytearray(payload)
                self._pes_offset = at
                self._pes_length = pes_packet_length(payload)
            elif self._pes is not None:
                self._pes += payload
                if len(self._pes) > MAX_ACCESS_UNIT:
                    self._pes = None
                    self.dropped += 1
            if (
                self._pes is not None
                and self._pes_length
                and len(self._pes) >= 6 + self._pes_length
            ):
                self._finish(events)

    def _finish(self, events: list[tuple[int, MediaEvent]]) -> None:
        pes, self._pes = self._pes, None
        header = PesHeader.from_bytes(pes) if pes is not None else None
        if pes is None or header is None:
            return
        if header.pts is None or header.dts is None:
            self.dropped += 1
            return
        body = bytes(pes[header.size :])
        if header.length:
            body = body[: max(0, 6 + header.length - header.size)]
        units = access_unit_events(body, dts=header.dts // 90, pts=header.pts // 90)
        events.extend((self._pes_offset, event) for event in units)
