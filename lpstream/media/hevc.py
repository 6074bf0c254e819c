"""HEVC (H.265) bytes, parsed in one place: the hvcC record and what its SPS says.

How this works:

* FLV (Enhanced RTMP) and MP4 carry HEVC's parameter sets out of band in an
  ``HEVCDecoderConfigurationRecord`` (hvcC, ISO/IEC 14496-15 8.3.3): a 22-byte header (the
  general profile, tier and level, the chroma format and bit depths, the NAL length size)
  and then arrays of NAL units, one array per NAL unit type (VPS, SPS, PPS, often SEI).
  :func:`hevc_parameter_sets` returns the VPS, SPS and PPS units, :func:`hevc_length_size`
  the size of the NAL lengths in samples.
* :func:`hevc_info_from_sps` reads what playlists need from an SPS: its profile_tier_level
  (the general fields; sub-layer fields are skipped), the chroma format and the coded
  size less the conformance window, in chroma units (SubWidthC, SubHeightC). The general
  fields are taken from the SPS rather than the record's header, as FFmpeg does: the SPS is
  what the decoder reads.
* :attr:`HevcInfo.codecs` writes the codecs parameter of ISO/IEC 14496-15 Annex E, which
  HLS's ``CODECS`` attribute uses: ``hvc1.[A-C]<profile>.<compat>.<L|H><level>.<bytes>``,
  with the 32 compatibility flags bit-reversed in hex without leading zeros and the six
  constraint bytes in hex with trailing zero bytes dropped. The first constraint byte is
  always written, even when zero: FFmpeg, Apple's examples and DVB's codec-string pattern
  all carry at least one.

Sans-IO: bytes in, values out. A malformed input raises ``ValueError``; nothing here reads
past the bytes it is given.
"""

from __future__ import annotations

import attrs

from lpstream.media.bits import BitReader, unescape_rbsp

__all__ = [
    "HEVC_NAL_PPS",
    "HEVC_NAL_SPS",
    "HEVC_NAL_VPS",
    "HevcInfo",
    "hevc_info_from_config",
    "hevc_info_from_sps",
    "hevc_length_size",
    "hevc_nal_type",
    "hevc_parameter_sets",
]

HEVC_NAL_VPS = 32
"""Video parameter set."""
HEVC_NAL_SPS = 33
"""Sequence parameter set."""
HEVC_NAL_PPS = 34
"""Picture parameter set."""

_HEADER_SIZE = 22  # up to lengthSizeMinusOne; numOfArrays follows
_PROFILE_SPACES = ("", "A", "B", "C")
# SubWidthC and SubHeightC by chroma_format_idc (H.265 table 6-1); 4:0:0 and 4:4:4 crop in
# luma samples, 4:2:0 in chroma samples both ways, 4:2:2 horizontally only.
_CHROMA_UNITS = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}


@attrs.frozen(kw_only=True)
class HevcInfo:
    """What an HEVC sequence parameter set says about a stream."""

    general_profile_space: int
    """0 for the profiles of H.265 itself; 1 to 3 are written as A, B, C."""
    general_tier_flag: bool
    """True for the High tier, False for Main."""
    general_profile_idc: int
    """1 Main, 2 Main 10, 3 Main Still Picture, 4 range extensions, ..."""
    general_profile_compatibility_flags: int
    """The 32 flags as read, ``general_profile_compatibility_flag[0]`` the top bit."""
    general_constraint_indicator_flags: bytes
    """The six bytes starting with general_progressive_source_flag."""
    general_level_idc: int
    """Level times 30 (93 = 3.1)."""
    chroma_format_idc: int
    """0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4."""
    bit_depth_luma: int
    """Bits per luma sample."""
    bit_depth_chroma: int
    """Bits per chroma sample."""
    width: int
    """Picture width after the conformance window."""
    height: int
    """Picture height after the conformance window."""

    @property
    def codecs(self) -> str:
        """The codecs parameter for an ``hvc1`` sample entry, e.g. ``hvc1.1.6.L93.B0``."""
        return self.codecs_for("hvc1")

    def codecs_for(self, sample_entry: str) -> str:
        """The codecs parameter for the given sample entry (``hvc1`` or ``hev1``)."""
        flags = self.general_profile_compatibility_flags
        reversed_flags = int(f"{flags:032b}"[::-1], 2)
        constraints = self.general_constraint_indicator_flags.rstrip(b"\x00") or b"\x00"
        tier = "H" if self.general_tier_flag else "L"
        return ".".join(
            [
                sample_entry,
                f"{_PROFILE_SPACES[self.general_profile_space]}{self.general_profile_idc}",
                f"{reversed_flags:X}",
                f"{tier}{self.general_level_idc}",
                *(f"{byte:02X}" for byte in constraints),
            ]
        )


def hevc_nal_type(unit: bytes) -> int:
    """The ``nal_unit_type`` of an HEVC NAL unit (bits 1-6 of its first byte)."""
    if not unit:
        raise ValueError("empty NAL unit")
    return (unit[0] >> 1) & 0x3F


def _record_units(hvcc: bytes) -> list[bytes]:
    """Every NAL unit in an hvcC record's arrays, in record order."""
    if len(hvcc) < _HEADER_SIZE or hvcc[0] != 1:
        raise ValueError("not an hvcC record")
    if len(hvcc) == _HEADER_SIZE:
        raise ValueError("hvcC record ends before its NAL unit arrays")
    units: list[bytes] = []
    offset = _HEADER_SIZE
    arrays = hvcc[offset]
    offset += 1
    for _ in range(arrays):
        if offset + 3 > len(hvcc):
            raise ValueError("hvcC record ends inside an array header")
        count = int.from_bytes(hvcc[offset + 1 : offset + 3], "big")
        offset += 3
        for _ in range(count):
            if offset + 2 > len(hvcc):
                raise ValueError("hvcC record ends inside a NAL unit length")
            size = int.from_bytes(hvcc[offset : offset + 2], "big")
            unit = hvcc[offset + 2 : offset + 2 + size]
            if size == 0 or len(unit) != size:
                raise ValueError("hvcC record ends inside a NAL unit")
            units.append(unit)
            offset += 2 + size
    return units


def hevc_parameter_sets(hvcc: bytes) -> list[bytes]:
    """The VPS, SPS and PPS NAL units of an hvcC record, in that order (record order within
    each type); other units (SEI) are left out.

    Raises:
        ValueError: the record is malformed.
    """
    units = _record_units(hvcc)
    return [
        unit
        for kind in (HEVC_NAL_VPS, HEVC_NAL_SPS, HEVC_NAL_PPS)
        for unit in units
        if hevc_nal_type(unit) == kind
    ]


def hevc_length_size(hvcc: bytes) -> int:
    """The size in bytes (1, 2 or 4) of the NAL unit lengths in the samples an hvcC record
    describes.

    Raises:
        ValueError: the record is malformed.
    """
    if len(hvcc) < _HEADER_SIZE or hvcc[0] != 1:
        raise ValueError("not an hvcC record")
    size = (hvcc[21] & 0x03) + 1
    if size == 3:
        raise ValueError("hvcC record names a 3-byte NAL length")
    return size


def _skip_sub_layers(bits: BitReader, max_sub_layers_minus1: int) -> None:
    present = [(bits.flag(), bits.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        bits.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            bits.skip(88)  # sub-layer profile space ... inbld flag
        if level_present:
            bits.skip(8)  # sub_layer_level_idc


def hevc_info_from_sps(nal: bytes) -> HevcInfo:
    """Parses an HEVC SPS NAL unit (starting with its two-byte NAL header).

    Raises:
        ValueError: the bytes are not a well-formed SPS.
    """
    if len(nal) < 3 or hevc_nal_type(nal) != HEVC_NAL_SPS:
        raise ValueError("not an HEVC SPS NAL unit")
    bits = BitReader(unescape_rbsp(nal[2:]), "HEVC SPS")
    bits.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = bits.bits(3)
    bits.skip(1)  # sps_temporal_id_nesting_flag
    profile_space = bits.bits(2)
    tier = bits.flag()
    profile_idc = bits.bits(5)
    compatibility = bits.bits(32)
    constraints = bits.bits(48).to_bytes(6, "big")
    level_idc = bits.bits(8)
    _skip_sub_layers(bits, max_sub_layers_minus1)
    bits.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = bits.ue()
    if chroma_format_idc > 3:
        raise ValueError(f"HEVC SPS: chroma_format_idc {chroma_format_idc} out of range")
    sub_width, sub_height = _CHROMA_UNITS[chroma_format_idc]
    if chroma_format_idc == 3 and bits.flag():  # separate_colour_plane_flag
        sub_width, sub_height = 1, 1
    width = bits.ue()
    height = bits.ue()
    if bits.flag():  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
    if width <= 0 or height <= 0:
        raise ValueError(f"HEVC SPS: picture size {width}x{height} is empty")
    bit_depth_luma = bits.ue() + 8
    bit_depth_chroma = bits.ue() + 8
    if bit_depth_luma > 16 or bit_depth_chroma > 16:
        raise ValueError("HEVC SPS: bit depth out of range")
    return HevcInfo(
        general_profile_space=profile_space,
        general_tier_flag=tier,
        general_profile_idc=profile_idc,
        general_profile_compatibility_flags=compatibility,
        general_constraint_indicator_flags=constraints,
        general_level_idc=level_idc,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
    )


def hevc_info_from_config(hvcc: bytes) -> HevcInfo:
    """Reads the first SPS of an hvcC record.

    Raises:
        ValueError: the record is malformed, holds no SPS, or its SPS is malformed.
    """
    sps = next((u for u in _record_units(hvcc) if hevc_nal_type(u) == HEVC_NAL_SPS), None)
    if sps is None:
        raise ValueError("hvcC record holds no SPS")
    return hevc_info_from_sps(sps)
