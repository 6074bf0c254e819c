"""MPEG-TS bytes, parsed in one place: packets, PSI sections (PAT, PMT) and PES headers.

How this works:

* A transport stream is 188-byte packets, each opening with the sync byte 0x47 and a 4-byte
  header: the PID (which elementary stream or table it carries), the payload unit start flag
  (a PES packet or a PSI section begins in this packet), the adaptation field control (an
  adaptation field, a payload, or both) and a 4-bit continuity counter.
  :func:`packet_pid`, :func:`unit_start` and :func:`packet_payload` read them;
  :class:`PacketReader` cuts a byte stream fed in any pieces into packets, skipping garbage
  to the next sync byte.
* The tables that say where the video is are PSI sections: the PAT (PID 0) names each
  program's PMT PID, a PMT names each stream's type and PID (0x1B is H.264). Each fits one
  packet as muxers write them; :func:`psi_section` returns the section a packet starts,
  :func:`pat_pmt_pids` and :func:`pmt_stream_pid` read the two tables.
* An elementary stream's access units travel in PES packets spread over the payloads of its
  PID's TS packets: :class:`PesHeader` reads a PES packet's header (its length, 0 when
  unbounded, and its 90 kHz timestamps).

Sans-IO: bytes in, values out. A short or malformed packet yields empty values or None,
never an exception and never a read past its bytes.
"""

from __future__ import annotations

import attrs

from lpstream.media.psi import program_streams

__all__ = [
    "PACKET_SIZE",
    "PAT_PID",
    "SDT_PID",
    "STREAM_TYPE_H264",
    "STREAM_TYPE_HEVC",
    "SYNC_BYTE",
    "VIDEO_STREAM_TYPES",
    "PacketReader",
    "PesHeader",
    "joined_payloads",
    "packet_payload",
    "packet_pid",
    "pat_pmt_pids",
    "pes_packet_length",
    "pes_timestamp",
    "pmt_stream_pid",
    "psi_section",
    "unit_start",
]

PACKET_SIZE = 188
"""Bytes in a TS packet."""
SYNC_BYTE = 0x47
"""The first byte of every TS packet."""
PAT_PID = 0x0000
"""The PID of the program association table."""
SDT_PID = 0x0011
"""The PID of the service description table."""
STREAM_TYPE_H264 = 0x1B
"""A PMT's stream type for H.264 video."""
STREAM_TYPE_HEVC = 0x24
"""A PMT's stream type for HEVC video."""
VIDEO_STREAM_TYPES = frozenset([STREAM_TYPE_H264, STREAM_TYPE_HEVC])
"""The video stream types segments carry in MPEG-TS."""
_PMT_TABLE_ID = 0x02

Packet = bytes | bytearray


def packet_pid(packet: Packet) -> int:
    """The PID of a TS packet."""
    return ((packet[1] & 0x1F) << 8) | packet[2]


def unit_start(packet: Packet) -> bool:
    """Whether a PES packet or a PSI section starts in this TS packet."""
    return bool(packet[1] & 0x40)


def packet_payload(packet: Packet) -> bytes:
    """The payload of a TS packet, after its adaptation field (empty when it has none)."""
    control = (packet[3] >> 4) & 0x3
    start = 4
    if control & 0x2:
        start += 1 + packet[4]
    if not control & 0x1 or start >= len(packet):
        return b""
    return bytes(packet[start:])


def joined_payloads(data: bytes, limit: int = 64 * 1024) -> bytes:
    """The payloads of the TS packets in the first ``limit`` bytes of ``data``, joined (PSI
    and PES headers included), up to the first packet that is not in sync.

    Enough to find the first SPS of a segment (:func:`lpstream.media.h264.avc_info_from_annexb`),
    which is what playlists need.
    """
    out = bytearray()
    for offset in range(0, min(len(data), limit) - PACKET_SIZE + 1, PACKET_SIZE):
        packet = data[offset : offset + PACKET_SIZE]
        if packet[0] != SYNC_BYTE:
            break
        out += packet_payload(packet)
    return bytes(out)


def psi_section(packet: Packet) -> bytes:
    """The PSI section that starts in this TS packet, cut to its length (empty if none
    starts here). Sections that go on into the next packet are not joined: PAT and PMT fit
    one packet as muxers write them."""
    if not unit_start(packet):
        return b""
    payload = packet_payload(packet)
    if not payload:
        return b""
    section = payload[1 + payload[0] :]  # after the pointer_field and what it skips
    if len(section) < 3:
        return b""
    length = ((section[1] & 0x0F) << 8) | section[2]
    return section[: 3 + length]


def pat_pmt_pids(section: bytes) -> list[int]:
    """The PMT PIDs a PAT section names, in its order (the network PID of program 0 left
    out)."""
    pids: list[int] = []
    for offset in range(8, len(section) - 4 - 3, 4):  # 4-byte entries, then the CRC
        program = int.from_bytes(section[offset : offset + 2], "big")
        if program != 0:
            pids.append(((section[offset + 2] & 0x1F) << 8) | section[offset + 3])
    return pids


def pmt_stream_pid(
    section: bytes, stream_type: int | frozenset[int] = STREAM_TYPE_H264
) -> int | None:
    """The PID of the first stream of ``stream_type`` (or of one of them) a PMT section
    names, or None."""
    if len(section) < 16 or section[0] != _PMT_TABLE_ID:
        return None
    kinds = stream_type if isinstance(stream_type, frozenset) else frozenset([stream_type])
    return next((pid for kind, pid, _ in program_streams(section) if kind in kinds), None)


def pes_packet_length(payload: Packet) -> int:
    """The ``PES_packet_length`` of the PES packet ``payload`` starts: bytes after its first
    six, 0 when unbounded (or when ``payload`` is too short to say)."""
    return int.from_bytes(payload[4:6], "big") if len(payload) >= 6 else 0


def pes_timestamp(field: Packet) -> int:
    """A 33-bit PES timestamp (90 kHz) from its 5-byte field."""
    return (
        ((field[0] >> 1) & 0x07) << 30
        | field[1] << 22
        | (field[2] >> 1) << 15
        | field[3] << 7
        | field[4] >> 1
    )


@attrs.frozen(kw_only=True)
class PesHeader:
    """The header of a PES packet."""

    length: int
    """``PES_packet_length``: bytes after the first six, 0 when unbounded."""
    size: int
    """Bytes of the header: the elementary stream data starts here."""
    pts: int | None
    """Presentation timestamp (90 kHz), None when the packet carries none."""
    dts: int | None
    """Decode timestamp (90 kHz): the PTS when only that is given, None without a PTS."""

    @classmethod
    def from_bytes(cls, pes: Packet) -> PesHeader | None:
        """Reads the header a PES packet starts with; None when ``pes`` does not start one."""
        if len(pes) < 9 or pes[:3] != b"\x00\x00\x01":
            return None
        flags = pes[7]
        pts = dts = None
        if flags & 0x80 and len(pes) >= 14:
            pts = dts = pes_timestamp(pes[9:14])
            if flags & 0x40 and len(pes) >= 19:
                dts = pes_timestamp(pes[14:19])
        return cls(length=pes_packet_length(pes), size=9 + pes[8], pts=pts, dts=dts)


@attrs.define
class PacketReader:
    """Cuts a byte stream, fed in any pieces, into TS packets; bytes that are not in sync
    are skipped one at a time until a sync byte is found."""

    _pending: bytearray = attrs.Factory(bytearray)
    _consumed: int = 0
    """Bytes of the stream before ``_pending``."""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The whole packets that ``data`` completed, each with its offset in the stream."""
        self._pending += data
        pending = self._pending
        packets: list[tuple[int, bytes]] = []
        offset = 0
        while len(pending) - offset >= PACKET_SIZE:
            if pending[offset] != SYNC_BYTE:
                offset += 1
                continue
            packets.append((self._consumed + offset, bytes(pending[offset : offset + PACKET_SIZE])))
            offset += PACKET_SIZE
        del pending[:offset]
        self._consumed += offset
        return packets
