"""H.264 bytes, parsed in one place: NAL units in both framings, the avcC record, the SPS.

How this works:

* H.264 travels in two framings. Annex B (MPEG-TS, what WebRTC depacketizers give and
  packetizers take) puts each NAL unit behind a start code, ``00 00 01`` or ``00 00 00 01``;
  :func:`nal_units` splits it and :func:`to_annexb` joins units with 4-byte start codes. AVCC
  (FLV/RTMP, MP4 and every ``MediaPacket`` of ours) puts each unit behind its length, 4 bytes
  here; :func:`avcc_units` splits it (any length size an avcC record names) and
  :func:`to_avcc` joins units with 4-byte lengths.
* A decoder needs the sequence and picture parameter sets (SPS, PPS) before the first frame.
  AVCC streams carry them out of band in an ``AVCDecoderConfigurationRecord`` (avcC, ISO
  14496-15): :func:`avc_decoder_configuration` writes one, :func:`parameter_sets` reads them
  back. Annex B streams repeat them in-band before keyframes: :func:`access_unit_events` turns
  one Annex B access unit into a ``CodecConfig`` (from those in-band sets) and an AVCC
  ``MediaPacket``, which is how ingest and playback take H.264.
* :func:`parse_sps` reads what playlists need from an SPS: profile, constraint flags, level
  and the picture size after cropping (HLS names ``avc1.PPCCLL`` and ``RESOLUTION``).

Sans-IO: bytes in, values out. A malformed input raises ``ValueError`` (or yields nothing
where the docstring says so); it never reads past the bytes it is given.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.media.bits import BitReader, unescape_rbsp

__all__ = [
    "NAL_AUD",
    "NAL_FILLER",
    "NAL_IDR",
    "NAL_PPS",
    "NAL_SPS",
    "START_CODE",
    "AvcInfo",
    "access_unit_events",
    "avc_decoder_configuration",
    "avc_info_from_annexb",
    "avc_info_from_config",
    "avcc_units",
    "nal_type",
    "nal_units",
    "parameter_sets",
    "parse_sps",
    "to_annexb",
    "to_avcc",
]

NAL_IDR = 5
"""Coded slice of an IDR picture: a keyframe."""
NAL_SPS = 7
"""Sequence parameter set."""
NAL_PPS = 8
"""Picture parameter set."""
NAL_AUD = 9
"""Access unit delimiter: marks where a unit starts, carries nothing a muxer needs."""
NAL_FILLER = 12
"""Filler data."""
START_CODE = b"\x00\x00\x00\x01"
"""The Annex B start code :func:`to_annexb` writes."""
_SHORT_START = b"\x00\x00\x01"


def nal_type(unit: bytes) -> int:
    """The ``nal_unit_type`` of a NAL unit (its first byte's low five bits)."""
    return unit[0] & 0x1F


def nal_units(data: bytes) -> list[bytes]:
    """Splits Annex B bytes into NAL units (start codes removed, empty units skipped).

    A zero byte just before a start code belongs to that (4-byte) start code, not to the
    unit before it; the last unit is kept whole.
    """
    units: list[bytes] = []
    start = -1
    i = 0
    while True:
        j = data.find(_SHORT_START, i)
        if start >= 0:
            if j < 0:
                unit = data[start:]
            else:
                end = j
                while end > start and data[end - 1] == 0:
                    end -= 1
                unit = data[start:end]
            if unit:
                units.append(unit)
        if j < 0:
            return units
        start = i = j + 3


def to_annexb(units: Iterable[bytes]) -> bytes:
    """Joins NAL units into Annex B bytes, each behind a 4-byte start code."""
    return b"".join(START_CODE + unit for unit in units)


def avcc_units(data: bytes, length_size: int = 4) -> list[bytes]:
    """Splits length-prefixed (AVCC) NAL units; zero-length ones are skipped.

    Raises:
        ValueError: a length runs past the end.
    """
    units: list[bytes] = []
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + length_size], "big")
        offset += length_size
        if size == 0:
            continue
        if offset + size > len(data):
            raise ValueError("an AVCC NAL unit runs past the end of the packet")
        units.append(data[offset : offset + size])
        offset += size
    return units


def to_avcc(units: Iterable[bytes]) -> bytes:
    """Joins NAL units into AVCC bytes, each behind its 4-byte length."""
    return b"".join(len(unit).to_bytes(4, "big") + unit for unit in units)


def avc_decoder_configuration(sps: bytes, pps: bytes) -> bytes:
    """Builds an AVCDecoderConfigurationRecord (``avcC``) for one SPS and one PPS, with
    4-byte NAL lengths; profile, compatibility and level are copied from the SPS.

    Raises:
        ValueError: the SPS is too short to hold them.
    """
    if len(sps) < 4:
        raise ValueError("SPS too short")
    return (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
        + len(sps).to_bytes(2, "big")
        + sps
        + b"\x01"
        + len(pps).to_bytes(2, "big")
        + pps
    )


def parameter_sets(config: bytes) -> tuple[list[bytes], int]:
    """The SPS and PPS NAL units of an avcC record (SPSs first) and its NAL length size
    (1, 2 or 4).

    Raises:
        ValueError: the record is malformed.
    """
    if len(config) < 7 or config[0] != 1:
        raise ValueError("not an avcC record")
    length_size = (config[4] & 0x03) + 1
    units: list[bytes] = []
    offset = 5
    for mask in (0x1F, 0xFF):  # numOfSequenceParameterSets has 5 bits, the PPS count 8
        if offset >= len(config):
            raise ValueError("avcC record ends early")
        count = config[offset] & mask
        offset += 1
        for _ in range(count):
            size = int.from_bytes(config[offset : offset + 2], "big")
            unit = config[offset + 2 : offset + 2 + size]
            if size == 0 or len(unit) != size:
                raise ValueError("avcC record ends inside a parameter set")
            units.append(unit)
            offset += 2 + size
    return units, length_size


def _in_band_configuration(units: list[bytes]) -> bytes | None:
    sps = next((u for u in units if nal_type(u) == NAL_SPS), None)
    pps = next((u for u in units if nal_type(u) == NAL_PPS), None)
    if sps is None or pps is None or len(sps) < 4:
        return None
    return avc_decoder_configuration(sps, pps)


def access_unit_events(
    annexb: bytes, *, dts: int, pts: int, keyframe: bool | None = None
) -> list[MediaEvent]:
    """One Annex B access unit as ingest events: a ``CodecConfig`` (avcC from the unit's
    in-band SPS and PPS) when it is a keyframe that carries both, then the AVCC
    ``MediaPacket`` (access unit delimiters dropped). Nothing when it holds no NAL unit.

    Args:
        annexb: the access unit.
        dts: decode time in ms.
        pts: presentation time in ms.
        keyframe: whether it is a keyframe, when the container says so; None: when it holds
            an IDR slice.
    """
    units = [u for u in nal_units(annexb) if nal_type(u) != NAL_AUD]
    if not units:
        return []
    if keyframe is None:
        keyframe = any(nal_type(u) == NAL_IDR for u in units)
    events: list[MediaEvent] = []
    config = _in_band_configuration(units) if keyframe else None
    if config is not None:
        events.append(CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=config))
    events.append(
        MediaPacket(kind=TrackKind.VIDEO, dts=dts, pts=pts, keyframe=keyframe, data=to_avcc(units))
    )
    return events


@attrs.frozen(kw_only=True)
class AvcInfo:
    """What a sequence parameter set says about a stream."""

    profile_idc: int
    """H.264 profile (66 baseline, 77 main, 100 high, ...)."""
    constraint_flags: int
    """The constraint_set flags byte."""
    level_idc: int
    """Level times ten (31 = 3.1)."""
    width: int
    """Picture width after cropping."""
    height: int
    """Picture height after cropping."""

    @property
    def codecs(self) -> str:
        """The RFC 6381 codec string, e.g. ``avc1.64001f``."""
        return f"avc1.{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


def _skip_scaling_list(bits: BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + bits.se() + 256) % 256
        last = nxt if nxt != 0 else last


def parse_sps(nal: bytes) -> AvcInfo:
    """Parses an SPS NAL unit (starting with its one-byte NAL header).

    Raises:
        ValueError: the bytes are not a well-formed SPS.
    """
    if len(nal) < 4 or nal_type(nal) != NAL_SPS:
        raise ValueError("not an SPS NAL unit")
    rbsp = unescape_rbsp(nal[1:])
    if len(rbsp) < 3:
        raise ValueError("SPS ends early")
    profile_idc, constraints, level_idc = rbsp[0], rbsp[1], rbsp[2]
    bits = BitReader(rbsp[3:], "SPS")
    bits.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            bits.bit()  # separate_colour_plane_flag
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.bit()  # qpprime_y_zero_transform_bypass_flag
        if bits.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if bits.bit():
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.bit()
        bits.se()
        bits.se()
        for _ in range(min(bits.ue(), 255)):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.bit()
    if not frame_mbs_only:
        bits.bit()  # mb_adaptive_frame_field_flag
    bits.bit()  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if bits.bit():  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        crop_x = 1 if chroma_format_idc in (0, 3) else 2
        crop_y = (1 if chroma_format_idc in (0, 2, 3) else 2) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return AvcInfo(
        profile_idc=profile_idc,
        constraint_flags=constraints,
        level_idc=level_idc,
        width=width,
        height=height,
    )


def avc_info_from_config(record: bytes) -> AvcInfo:
    """Reads the first SPS of an avcC record.

    Raises:
        ValueError: the record is malformed, holds no SPS, or its SPS is malformed.
    """
    units, _ = parameter_sets(record)
    sps = next((u for u in units if nal_type(u) == NAL_SPS), None)
    if sps is None:
        raise ValueError("avcC record holds no SPS")
    return parse_sps(sps)


def avc_info_from_annexb(data: bytes) -> AvcInfo | None:
    """Reads the first SPS in Annex B bytes (e.g. the start of an MPEG-TS segment's
    payload); None when there is none or it is malformed.

    MPEG-TS packets interleave their headers with the PES payload, so for a TS segment pass
    the joined payloads (:func:`lpstream.media.mpegts.joined_payloads`) and accept that an
    SPS split across TS packets is missed.
    """
    sps = next((u for u in nal_units(data) if nal_type(u) == NAL_SPS), None)
    if sps is None:
        return None
    try:
        return parse_sps(sps)
    except ValueError:
        return None
