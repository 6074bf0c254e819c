"""AV1 bytes, parsed in one place: the av1C record, OBUs and the sequence header.

How this works:

* An AV1 stream is a sequence of OBUs (open bitstream units), each a one- or two-byte
  header, a LEB128 size (in the low-overhead format MP4, FLV and WebRTC use) and a payload.
  The sequence header OBU holds everything a playlist needs: profile, level and tier of
  operating point 0, the largest frame size and the colour configuration.
* FLV (Enhanced RTMP) and MP4 carry it out of band in an ``AV1CodecConfigurationRecord``
  (av1C, AV1-ISOBMFF): four bytes that repeat the profile, level, tier, bit depth and
  chroma format, then ``configOBUs``, which hold the sequence header.
  :func:`av1_info_from_config` reads the record, :func:`av1_info_from_obus` finds and reads
  the sequence header in any run of OBUs.
* :attr:`Av1Info.codecs` writes the codecs parameter of AV1-ISOBMFF, which HLS's
  ``CODECS`` uses: ``av01.P.LLT.DD`` and, when the stream is not what the short form
  implies, the optional fields ``.M.CCC.cp.tc.mc.F`` (all or none). The short form implies
  4:2:0 with an unknown chroma sample position, studio range and BT.709 colour (1, 1, 1);
  a stream that leaves its colour unspecified (no colour description, or the value 2) asks
  for nothing beyond that, so it keeps the short form unless another optional field
  differs, and then its colour is written as it is, unspecified (2). FFmpeg writes the
  long form whenever a colour description is present; for a description that equals the
  defaults the two strings mean the same.

Sans-IO: bytes in, values out. A malformed input raises ``ValueError``; nothing here reads
past the bytes it is given.
"""

from __future__ import annotations

import attrs

from lpstream.media.bits import BitReader

__all__ = [
    "OBU_SEQUENCE_HEADER",
    "Av1Info",
    "av1_config_record",
    "av1_info_from_config",
    "av1_info_from_obus",
    "av1_info_from_sequence_header",
    "leb128",
    "obus",
    "read_leb128",
]

OBU_SEQUENCE_HEADER = 1
"""The ``obu_type`` of a sequence header OBU."""

_CP_BT709, _TC_SRGB, _MC_IDENTITY = 1, 13, 0
_UNSPECIFIED = 2
# (monochrome, subsampling_x, subsampling_y, chroma_sample_position, primaries, transfer,
# matrix, full range) that the short codecs form implies.
_SHORT_FORM = (0, 1, 1, 0, 1, 1, 1, 0)


@attrs.frozen(kw_only=True)
class Av1Info:
    """What an AV1 sequence header says about a stream."""

    seq_profile: int
    """0 Main (4:2:0 and monochrome), 1 High (4:4:4), 2 Professional."""
    seq_level_idx_0: int
    """Level index of operating point 0 (0 = level 2.0, 4 = 3.0, 8 = 4.0, ...)."""
    seq_tier_0: int
    """Tier of operating point 0: 0 Main, 1 High."""
    bit_depth: int
    """8, 10 or 12."""
    monochrome: bool
    """True when the stream has no chroma planes."""
    chroma_subsampling_x: int
    """1 when chroma has half the luma width."""
    chroma_subsampling_y: int
    """1 when chroma has half the luma height."""
    chroma_sample_position: int
    """0 unknown, 1 vertical, 2 colocated (4:2:0 only)."""
    color_description_present: bool
    """Whether the stream names its colour primaries, transfer and matrix."""
    color_primaries: int
    """H.273 colour primaries (2 = unspecified)."""
    transfer_characteristics: int
    """H.273 transfer characteristics (2 = unspecified)."""
    matrix_coefficients: int
    """H.273 matrix coefficients (2 = unspecified)."""
    color_range: int
    """0 studio (limited) range, 1 full range."""
    width: int
    """Largest frame width (``max_frame_width_minus_1 + 1``)."""
    height: int
    """Largest frame height (``max_frame_height_minus_1 + 1``)."""

    @property
    def codecs(self) -> str:
        """The codecs parameter, e.g. ``av01.0.04M.08`` or
        ``av01.0.04M.10.0.112.09.16.09.0``."""
        short = (
            f"av01.{self.seq_profile}.{self.seq_level_idx_0:02d}"
            f"{'H' if self.seq_tier_0 else 'M'}.{self.bit_depth:02d}"
        )
        colour = (self.color_primaries, self.transfer_characteristics, self.matrix_coefficients)
        optional = (
            int(self.monochrome),
            self.chroma_subsampling_x,
            self.chroma_subsampling_y,
            self.chroma_sample_position,
            *(1 if value == _UNSPECIFIED else value for value in colour),
            self.color_range,
        )
        if optional == _SHORT_FORM:
            return short
        return (
            f"{short}.{int(self.monochrome)}.{self.chroma_subsampling_x}"
            f"{self.chroma_subsampling_y}{self.chroma_sample_position}"
            f".{colour[0]:02d}.{colour[1]:02d}.{colour[2]:02d}.{self.color_range}"
        )


def leb128(value: int) -> bytes:
    """``value`` as LEB128 (the OBU sizes of low-overhead AV1)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def av1_config_record(sequence_header: bytes) -> bytes:
    """The av1C record (AV1-ISOBMFF 2.3) of a stream whose sequence header OBU (header byte,
    size field and payload) is ``sequence_header``: its four-byte header from the sequence
    header's fields, then the OBU as its configOBUs.

    Raises:
        ValueError: ``sequence_header`` is not a well-formed sequence header OBU.
    """
    units = obus(sequence_header)
    if len(units) != 1 or units[0][0] != OBU_SEQUENCE_HEADER:
        raise ValueError("not one sequence header OBU")
    info = av1_info_from_sequence_header(units[0][1])
    return (
        bytes(
            [
                0x81,  # marker and version 1
                info.seq_profile << 5 | info.seq_level_idx_0,
                info.seq_tier_0 << 7
                | (info.bit_depth > 8) << 6
                | (info.bit_depth == 12) << 5
                | info.monochrome << 4
                | info.chroma_subsampling_x << 3
                | info.chroma_subsampling_y << 2
                | info.chroma_sample_position,
                0,  # no initial_presentation_delay
            ]
        )
        + sequence_header
    )


def read_leb128(data: bytes, offset: int) -> tuple[int, int]:
    """A LEB128 value at ``offset`` (at most 8 bytes) and the offset after it.

    Raises:
        ValueError: it runs past the end or over 8 bytes.
    """
    value = 0
    for i in range(8):
        if offset + i >= len(data):
            raise ValueError("OBU size ends early")
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, offset + i + 1
    raise ValueError("OBU size longer than 8 bytes")


def obus(data: bytes) -> list[tuple[int, bytes]]:
    """Splits low-overhead AV1 bytes into ``(obu_type, payload)`` pairs. An OBU without a
    size field runs to the end.

    Raises:
        ValueError: an OBU header is malformed or a size runs past the end.
    """
    units: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        header = data[offset]
        if header & 0x80:
            raise ValueError("OBU forbidden bit is set")
        obu_type = (header >> 3) & 0x0F
        offset += 2 if header & 0x04 else 1  # obu_extension_flag adds a byte
        if offset > len(data):
            raise ValueError("OBU header ends early")
        if header & 0x02:  # obu_has_size_field
            size, offset = read_leb128(data, offset)
        else:
            size = len(data) - offset
        if offset + size > len(data):
            raise ValueError("an OBU runs past the end")
        units.append((obu_type, data[offset : offset + size]))
        offset += size
    return units


def _skip_timing_and_operating_points(bits: BitReader) -> tuple[int, int]:
    """Reads the non-reduced sequence header up to the frame size; returns the level index
    and tier of operating point 0."""
    decoder_model_info_present = False
    buffer_delay_length = 0
    if bits.flag():  # timing_info_present_flag
        bits.skip(64)  # num_units_in_display_tick, time_scale
        if bits.flag():  # equal_picture_interval
            bits.uvlc()  # num_ticks_per_picture_minus_1
        decoder_model_info_present = bits.flag()
        if decoder_model_info_present:
            buffer_delay_length = bits.bits(5) + 1
            bits.skip(32 + 5 + 5)  # decoding tick, removal and presentation time lengths
    initial_display_delay_present = bits.flag()
    level_0 = tier_0 = -1
    for _ in range(bits.bits(5) + 1):  # operating_points_cnt_minus_1
        bits.skip(12)  # operating_point_idc
        level = bits.bits(5)
        tier = bits.bit() if level > 7 else 0
        if level_0 < 0:
            level_0, tier_0 = level, tier
        if decoder_model_info_present and bits.flag():
            bits.skip(2 * buffer_delay_length + 1)  # decoder and encoder delay, low delay
        if initial_display_delay_present and bits.flag():
            bits.skip(4)  # initial_display_delay_minus_1
    return level_0, tier_0


def _skip_tools(bits: BitReader, reduced: bool) -> None:
    """Skips the coding tool flags between the frame size and the colour config."""
    if not reduced and bits.flag():  # frame_id_numbers_present_flag
        bits.skip(4 + 3)
    bits.skip(3)  # use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if not reduced:
        bits.skip(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = bits.flag()
        if order_hint:
            bits.skip(2)  # enable_jnt_comp, enable_ref_frame_mvs
        force_screen_content_tools = 2
        if not bits.flag():  # seq_choose_screen_content_tools
            force_screen_content_tools = bits.bit()
        if force_screen_content_tools > 0 and not bits.flag():  # seq_choose_integer_mv
            bits.skip(1)  # seq_force_integer_mv
        if order_hint:
            bits.skip(3)  # order_hint_bits_minus_1
    bits.skip(3)  # enable_superres, enable_cdef, enable_restoration


def av1_info_from_sequence_header(payload: bytes) -> Av1Info:
    """Parses the payload of a sequence header OBU.

    Raises:
        ValueError: the payload is not a well-formed sequence header.
    """
    bits = BitReader(payload, "AV1 sequence header")
    profile = bits.bits(3)
    if profile > 2:
        raise ValueError(f"AV1 sequence header: reserved seq_profile {profile}")
    bits.skip(1)  # still_picture
    reduced = bits.flag()
    if reduced:
        level_0, tier_0 = bits.bits(5), 0
    else:
        level_0, tier_0 = _skip_timing_and_operating_points(bits)
    width_bits = bits.bits(4) + 1
    height_bits = bits.bits(4) + 1
    width = bits.bits(width_bits) + 1
    height = bits.bits(height_bits) + 1
    _skip_tools(bits, reduced)
    # color_config()
    high_bitdepth = bits.flag()
    if profile == 2 and high_bitdepth:
        bit_depth = 12 if bits.flag() else 10
    else:
        bit_depth = 10 if high_bitdepth else 8
    monochrome = False if profile == 1 else bits.flag()
    described = bits.flag()
    primaries = transfer = matrix = _UNSPECIFIED
    if described:
        primaries, transfer, matrix = bits.bits(8), bits.bits(8), bits.bits(8)
    sample_position = 0
    if monochrome:
        color_range, sub_x, sub_y = bits.bit(), 1, 1
    elif (primaries, transfer, matrix) == (_CP_BT709, _TC_SRGB, _MC_IDENTITY):
        color_range, sub_x, sub_y = 1, 0, 0
    else:
        color_range = bits.bit()
        if profile == 0:
            sub_x, sub_y = 1, 1
        elif profile == 1:
            sub_x, sub_y = 0, 0
        elif bit_depth == 12:
            sub_x = bits.bit()
            sub_y = bits.bit() if sub_x else 0
        else:
            sub_x, sub_y = 1, 0
        if sub_x and sub_y:
            sample_position = bits.bits(2)
    return Av1Info(
        seq_profile=profile,
        seq_level_idx_0=level_0,
        seq_tier_0=tier_0,
        bit_depth=bit_depth,
        monochrome=monochrome,
        chroma_subsampling_x=sub_x,
        chroma_subsampling_y=sub_y,
        chroma_sample_position=sample_position,
        color_description_present=described,
        color_primaries=primaries,
        transfer_characteristics=transfer,
        matrix_coefficients=matrix,
        color_range=color_range,
        width=width,
        height=height,
    )


def av1_info_from_obus(data: bytes) -> Av1Info:
    """Reads the first sequence header OBU in low-overhead AV1 bytes (a temporal unit, or
    an av1C record's configOBUs).

    Raises:
        ValueError: the OBUs are malformed, hold no sequence header, or it is malformed.
    """
    header = next((p for kind, p in obus(data) if kind == OBU_SEQUENCE_HEADER), None)
    if header is None:
        raise ValueError("no AV1 sequence header OBU")
    return av1_info_from_sequence_header(header)


def av1_info_from_config(av1c: bytes) -> Av1Info:
    """Reads an av1C record: its four-byte header and the sequence header in its
    configOBUs.

    Raises:
        ValueError: the record is malformed or holds no well-formed sequence header.
    """
    if len(av1c) < 4 or av1c[0] != 0x81:  # marker bit and version 1
        raise ValueError("not an av1C record")
    return av1_info_from_obus(av1c[4:])
