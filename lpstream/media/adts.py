"""AAC's ADTS frame header, parsed in one place (ISO/IEC 14496-3, 1.A.2).

An ADTS frame is a 7-byte header (9 with a CRC) and raw AAC data: ``frame_length`` counts
both. The header states what a decoder is told out of band elsewhere — the audio object type,
the sampling rate, the channel configuration — which :attr:`AdtsHeader.audio_specific_config`
gives in the form an MP4 or FLV stream carries it.
"""

from __future__ import annotations

import attrs

__all__ = ["ADTS_MIN_HEADER", "ADTS_SAMPLE_RATES", "AdtsHeader", "parse_adts_header"]

ADTS_MIN_HEADER = 7
ADTS_SAMPLE_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
"""Sampling rates by ``sampling_frequency_index``."""


@attrs.frozen(kw_only=True)
class AdtsHeader:
    """What one ADTS header says."""

    header_size: int
    """7, or 9 with a CRC."""
    frame_size: int
    """Header and raw data, bytes."""
    object_type: int
    """Audio object type (2: AAC LC)."""
    rate_index: int
    channels: int
    """Channel configuration (0: stated in a program config element)."""
    raw_blocks: int
    """Raw data blocks in the frame (1 in almost every stream)."""

    @property
    def sample_rate(self) -> int:
        return ADTS_SAMPLE_RATES[self.rate_index]

    @property
    def samples(self) -> int:
        """PCM samples per channel the frame decodes to."""
        return self.raw_blocks * 1024

    @property
    def audio_specific_config(self) -> bytes:
        """The 2-byte AudioSpecificConfig of these parameters."""
        value = (self.object_type << 11) | (self.rate_index << 7) | (self.channels << 3)
        return value.to_bytes(2, "big")


def parse_adts_header(data: bytes | bytearray | memoryview, at: int = 0) -> AdtsHeader | None:
    """The ADTS header at ``data[at:]``; None if the bytes there do not start a valid one (no
    sync word, a reserved sampling rate, a frame shorter than its header)."""
    b = bytes(data[at : at + ADTS_MIN_HEADER])
    if len(b) < ADTS_MIN_HEADER or b[0] != 0xFF or b[1] & 0xF6 != 0xF0:
        return None
    header_size = 7 if b[1] & 0x01 else 9
    rate_index = (b[2] >> 2) & 0x0F
    frame_size = ((b[3] & 0x03) << 11) | (b[4] << 3) | (b[5] >> 5)
    if rate_index >= len(ADTS_SAMPLE_RATES) or frame_size < header_size:
        return None
    return AdtsHeader(
        header_size=header_size,
        frame_size=frame_size,
        object_type=(b[2] >> 6) + 1,
        rate_index=rate_index,
        channels=((b[2] & 0x01) << 2) | (b[3] >> 6),
        raw_blocks=(b[6] & 0x03) + 1,
    )
