"""Just enough H.264 parsing for playlists: the avcC record and the SPS picture size.

HLS master playlists name each rendition's codec (``avc1.PPCCLL``) and resolution; both come
from the sequence parameter set, which sits in the avcC record (RTMP/FLV) or in the first
Annex B access unit of an MPEG-TS segment.
"""

from __future__ import annotations

import attrs

__all__ = ["AvcInfo", "avc_info_from_annexb", "avc_info_from_config", "parse_sps"]


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


class _Bits:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def bit(self) -> int:
        byte = self._pos >> 3
        if byte >= len(self._data):
            raise ValueError("SPS ends early")
        value = (self._data[byte] >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _skip_scaling_list(bits: _Bits, size: int) -> None:
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
    if len(nal) < 4 or nal[0] & 0x1F != 7:
        raise ValueError("not an SPS NAL unit")
    rbsp = _unescape(nal[1:])
    profile_idc, constraints, level_idc = rbsp[0], rbsp[1], rbsp[2]
    bits = _Bits(rbsp[3:])
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
    """Reads the first SPS of an AVCDecoderConfigurationRecord (avcC)."""
    if len(record) < 8 or record[0] != 1:
        raise ValueError("not an avcC record")
    count = record[5] & 0x1F
    if count == 0:
        raise ValueError("avcC record holds no SPS")
    length = int.from_bytes(record[6:8], "big")
    sps = record[8 : 8 + length]
    if len(sps) != length:
        raise ValueError("avcC record ends inside its SPS")
    return parse_sps(sps)


def avc_info_from_annexb(data: bytes) -> AvcInfo | None:
    """Finds the first SPS in Annex B bytes (e.g. the start of an MPEG-TS segment's payload).

    MPEG-TS packets interleave 4-byte headers with the PES payload, so for a TS segment pass
    the concatenated payload or accept that an SPS split across TS packets is missed.
    """
    start = 0
    while True:
        idx = data.find(b"\x00\x00\x01", start)
        if idx < 0 or idx + 3 >= len(data):
            return None
        if data[idx + 3] & 0x1F == 7:
            end = data.find(b"\x00\x00\x01", idx + 3)
            nal = data[idx + 3 : end if end > 0 else len(data)]
            try:
                return parse_sps(nal.rstrip(b"\x00") if end > 0 else nal)
            except (ValueError, IndexError):
                return None
        start = idx + 3
