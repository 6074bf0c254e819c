"""What the PSI tables of an MPEG-TS program say (sans-IO): their CRC, the elementary streams a
PMT lists, and which audio or video codec a stream carries when it is one ingest does not take.

A PMT names each stream's type (0x1B H.264, 0x0F AAC in ADTS, 0x24 HEVC, ...); a private PES
stream (type 0x06) names its codec in a descriptor instead: a registration descriptor's
format identifier (``Opus``, ``AC-3``, ``AV01``), or a DVB descriptor (AC-3, E-AC-3, DTS, the
extension descriptor of Opus). Anything else is data (SCTE-35, ID3, private sections).
"""

from __future__ import annotations

__all__ = ["mpeg_crc32", "program_streams", "refused_codec"]

_PRIVATE_PES = 0x06
_CODEC_TYPES = {
    0x01: "MPEG-1 video",
    0x02: "MPEG-2 video",
    0x03: "MPEG-1 audio",
    0x04: "MPEG-2 audio",
    0x10: "MPEG-4 Part 2 video",
    0x11: "AAC in LATM",
    0x1C: "MPEG-4 audio",
    0x24: "HEVC",
    0x33: "VVC",
    0x42: "AVS",
    0x80: "PCM",
    0x81: "AC-3",
    0x87: "E-AC-3",
    0xD1: "Dirac",
    0xEA: "VC-1",
}
"""Audio and video stream types that are not taken, by name."""
_REGISTRATIONS = {
    b"Opus": "Opus",
    b"AC-3": "AC-3",
    b"EAC3": "E-AC-3",
    b"HEVC": "HEVC",
    b"AV01": "AV1",
    b"VC-1": "VC-1",
    b"BSSD": "SMPTE 302M audio",
    b"DTS1": "DTS",
    b"DTS2": "DTS",
    b"DTS3": "DTS",
}
"""Codecs that private PES streams name in a registration descriptor (tag 5)."""
_DVB_AUDIO = {0x6A: "AC-3", 0x7A: "E-AC-3", 0x7B: "DTS"}
"""DVB descriptors that make a private PES stream audio."""
_DVB_EXTENSION, _DVB_EXTENSION_OPUS = 0x7F, 0x80


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def mpeg_crc32(data: bytes | bytearray) -> int:
    """CRC-32/MPEG-2 of ``data``; 0 over a whole PSI section (its CRC included) that is intact."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def _descriptors(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, body) of each descriptor in a descriptor loop, as far as they fit."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 2 <= len(data) and pos + 2 + data[pos + 1] <= len(data):
        out.append((data[pos], data[pos + 2 : pos + 2 + data[pos + 1]]))
        pos += 2 + data[pos + 1]
    return out


def refused_codec(stream_type: int, descriptors: bytes) -> str | None:
    """The name of the audio or video codec a stream carries that is not taken; None for
    the taken ones and for data."""
    if stream_type in _CODEC_TYPES:
        return _CODEC_TYPES[stream_type]
    if stream_type != _PRIVATE_PES:
        return None
    for tag, body in _descriptors(descriptors):
        if tag == 0x05 and body[:4] in _REGISTRATIONS:
            return _REGISTRATIONS[body[:4]]
        if tag in _DVB_AUDIO:
            return _DVB_AUDIO[tag]
        if tag == _DVB_EXTENSION and body[:1] == bytes([_DVB_EXTENSION_OPUS]):
            return "Opus"
    return None


def program_streams(section: bytes) -> list[tuple[int, int, bytes]]:
    """(stream type, PID, descriptors) of each elementary stream a PMT section lists."""
    end = len(section) - 4  # the CRC
    pos = 12 + (((section[10] & 0x0F) << 8) | section[11])
    streams: list[tuple[int, int, bytes]] = []
    while pos + 5 <= end:
        info = ((section[pos + 3] & 0x0F) << 8) | section[pos + 4]
        pid = ((section[pos + 1] & 0x1F) << 8) | section[pos + 2]
        streams.append((section[pos], pid, section[pos + 5 : min(pos + 5 + info, end)]))
        pos += 5 + info
    return streams
