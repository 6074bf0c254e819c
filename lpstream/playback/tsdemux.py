"""An incremental MPEG-TS demuxer for the H.264 video of a live stream (sans-IO).

How this works:

Bytes are fed as they arrive, in any split. Whole 188-byte packets are read; the PAT gives
the PMT's PID, the PMT the first H.264 stream's PID (stream type 0x1B). The video PID's PES
packets are gathered: a PES with a length (live AI output is muxed with
``omit_video_pes_length=0``) is complete as soon as its bytes are in; one without (length 0)
is complete when the next one starts, or at :meth:`TsVideoDemuxer.flush`. Each complete PES
is one access unit, turned into what the WebRTC fan-out takes: a ``CodecConfig`` (avcC from
the in-band SPS/PPS) before each keyframe, then an AVCC ``MediaPacket`` with times in ms.

:meth:`TsVideoDemuxer.feed_located` also says where in the byte stream each access unit's
PES began, so a reader can cut the stream into parts at frame boundaries (LL-HLS).

Limits: a PES larger than ``MAX_ACCESS_UNIT`` is dropped (counted), and garbage between
packets is skipped to the next sync byte.
"""

from __future__ import annotations

import attrs

from ingest.whip.h264 import avc_decoder_configuration, nal_units
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind

__all__ = ["MAX_ACCESS_UNIT", "TsVideoDemuxer"]

PACKET = 188
SYNC = 0x47
MAX_ACCESS_UNIT = 4 * 1024 * 1024
"""Largest access unit kept (bytes)."""
_H264 = 0x1B
_NAL_IDR, _NAL_SPS, _NAL_PPS, _NAL_AUD = 5, 7, 8, 9


@attrs.define
class TsVideoDemuxer:
    """Feed MPEG-TS bytes, get the H.264 access units out as soon as they are whole."""

    _pending: bytearray = attrs.Factory(bytearray)
    _pmt_pid: int | None = None
    _video_pid: int | None = None
    _pes: bytearray | None = None
    _pes_length: int = 0
    """Expected PES size in bytes (after the 6-byte start), 0 when unbounded."""
    _pes_offset: int = 0
    """Stream offset of the TS packet that began the open PES."""
    _consumed: int = 0
    """Bytes of the stream before ``_pending``."""
    dropped: int = 0
    """Access units dropped (oversized or without timestamps)."""

    def feed(self, data: bytes) -> list[MediaEvent]:
        """The access units that ``data`` completed."""
        return [event for _, event in self.feed_located(data)]

    def feed_located(self, data: bytes) -> list[tuple[int, MediaEvent]]:
        """As :meth:`feed`, each event with the stream offset where its access unit began."""
        self._pending += data
        events: list[tuple[int, MediaEvent]] = []
        pending = self._pending
        offset = 0
        while len(pending) - offset >= PACKET:
            if pending[offset] != SYNC:
                offset += 1
                continue
            self._packet(bytes(pending[offset : offset + PACKET]), self._consumed + offset, events)
            offset += PACKET
        del pending[:offset]
        self._consumed += offset
        return events

    def flush(self) -> list[MediaEvent]:
        """The access unit still open (the stream ended)."""
        events: list[tuple[int, MediaEvent]] = []
        self._finish(events)
        return [event for _, event in events]

    def _packet(self, packet: bytes, at: int, events: list[tuple[int, MediaEvent]]) -> None:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        start = bool(packet[1] & 0x40)
        control = (packet[3] >> 4) & 0x3
        offset = 4
        if control & 0x2:
            offset += 1 + packet[4]
        if not control & 0x1 or offset >= PACKET:
            return
        payload = packet[offset:]
        if pid == 0 and start:
            self._pat(payload)
        elif pid == self._pmt_pid and start:
            self._pmt(payload)
        elif pid == self._video_pid:
            if start:
                self._finish(events)
                self._pes = bytearray(payload)
                self._pes_offset = at
                self._pes_length = int.from_bytes(payload[4:6], "big") if len(payload) >= 6 else 0
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

    def _section(self, payload: bytes) -> bytes:
        pointer = payload[0]
        section = payload[1 + pointer :]
        if len(section) < 3:
            return b""
        length = ((section[1] & 0x0F) << 8) | section[2]
        return section[: 3 + length]

    def _pat(self, payload: bytes) -> None:
        section = self._section(payload)
        for i in range(8, len(section) - 4, 4):
            program = int.from_bytes(section[i : i + 2], "big")
            if program != 0:
                self._pmt_pid = ((section[i + 2] & 0x1F) << 8) | section[i + 3]
                return

    def _pmt(self, payload: bytes) -> None:
        section = self._section(payload)
        if len(section) < 12:
            return
        info_length = ((section[10] & 0x0F) << 8) | section[11]
        i = 12 + info_length
        while i + 5 <= len(section) - 4:
            stream_type = section[i]
            pid = ((section[i + 1] & 0x1F) << 8) | section[i + 2]
            es_length = ((section[i + 3] & 0x0F) << 8) | section[i + 4]
            if stream_type == _H264:
                self._video_pid = pid
                return
            i += 5 + es_length

    def _finish(self, events: list[tuple[int, MediaEvent]]) -> None:
        pes, self._pes = self._pes, None
        if pes is None or len(pes) < 9 or pes[:3] != b"\x00\x00\x01":
            return
        flags, header_length = pes[7], pes[8]
        body = bytes(pes[9 + header_length :])
        if self._pes_length:
            body = body[: max(0, 6 + self._pes_length - 9 - header_length)]
        if not flags & 0x80 or len(pes) < 14:
            self.dropped += 1
            return
        pts = _timestamp(pes[9:14])
        dts = _timestamp(pes[14:19]) if flags & 0x40 and len(pes) >= 19 else pts
        units = [u for u in nal_units(body) if u and (u[0] & 0x1F) != _NAL_AUD]
        if not units:
            return
        keyframe = any(u[0] & 0x1F == _NAL_IDR for u in units)
        if keyframe:
            sps = next((u for u in units if u[0] & 0x1F == _NAL_SPS), None)
            pps = next((u for u in units if u[0] & 0x1F == _NAL_PPS), None)
            if sps is not None and pps is not None and len(sps) >= 4:
                config = CodecConfig(
                    kind=TrackKind.VIDEO, codec="h264", data=avc_decoder_configuration(sps, pps)
                )
                events.append((self._pes_offset, config))
        packet = MediaPacket(
            kind=TrackKind.VIDEO,
            dts=dts // 90,
            pts=pts // 90,
            keyframe=keyframe,
            data=b"".join(len(u).to_bytes(4, "big") + u for u in units),
        )
        events.append((self._pes_offset, packet))


def _timestamp(field: bytes | bytearray) -> int:
    """A 33-bit PES timestamp (90 kHz) from its 5-byte field."""
    return (
        ((field[0] >> 1) & 0x07) << 30
        | field[1] << 22
        | (field[2] >> 1) << 15
        | field[3] << 7
        | field[4] >> 1
    )
