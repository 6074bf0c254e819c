"""VP9 bytes, parsed in one place: the vpcC record and a keyframe's uncompressed header.

How this works:

* FLV (Enhanced RTMP) and MP4 describe a VP9 track with a ``VPCodecConfigurationRecord``
  (vpcC, "VP Codec ISO Media File Format Binding"): profile, level, bit depth, chroma
  subsampling, range and H.273 colour, with no picture size. MP4 holds it in a full box
  (version 1, flags 0, then the record); FFmpeg's FLV muxer writes that box payload too,
  so FFmpeg's demuxers give the record behind those four bytes. :func:`vp9_info_from_config`
  takes the record with or without them: a bare record's third byte holds its bit depth
  and is never zero, so three zero bytes after the first mark the box's version and flags.
* The picture size lives in each keyframe's uncompressed header (VP9 bitstream 6.2), which
  :func:`vp9_frame_size` reads; intra-only frames carry it too. Other frames take their size
  from a reference and give ``None``.
* :attr:`Vp9Info.codecs` writes the codecs parameter of that binding, which HLS's
  ``CODECS`` uses: ``vp09.PP.LL.DD`` and, when the stream is not what the short form
  implies, the optional ``.CC.cp.tc.mc.FF`` (all or none). The short form implies 4:2:0
  colocated chroma (1), BT.709 colour (1, 1, 1) and studio range; colour left unspecified
  (2) asks for nothing beyond that, so it keeps the short form unless another optional
  field differs, and is then written as it is. FFmpeg's HLS muxer always writes the short
  form.

Sans-IO: bytes in, values out. A malformed input raises ``ValueError``; nothing here reads
past the bytes it is given.
"""

from __future__ import annotations

import attrs

from lpstream.media.bits import BitReader

__all__ = ["Vp9Info", "vp9_frame_size", "vp9_info_from_config"]

_SYNC_CODE = 0x498342
_CS_RGB = 7
_UNSPECIFIED = 2
# (chromaSubsampling, colourPrimaries, transferCharacteristics, matrixCoefficients,
# videoFullRangeFlag) that the short codecs form implies.
_SHORT_FORM = (1, 1, 1, 1, 0)


@attrs.frozen(kw_only=True)
class Vp9Info:
    """What a vpcC record (and a keyframe) say about a VP9 stream."""

    profile: int
    """0 (8-bit 4:2:0), 1 (8-bit 4:2:2/4:4:0/4:4:4), 2 and 3 (their 10- and 12-bit kin)."""
    level: int
    """Level times ten (10 = 1, 31 = 3.1), 0 when the writer did not say."""
    bit_depth: int
    """8, 10 or 12."""
    chroma_subsampling: int
    """0 4:2:0 vertical, 1 4:2:0 colocated with luma (0, 0), 2 4:2:2, 3 4:4:4."""
    video_full_range_flag: bool
    """True for full range, False for studio (limited) range."""
    colour_primaries: int
    """H.273 colour primaries (2 = unspecified)."""
    transfer_characteristics: int
    """H.273 transfer characteristics (2 = unspecified)."""
    matrix_coefficients: int
    """H.273 matrix coefficients (2 = unspecified)."""
    width: int
    """Picture width from a keyframe; 0 when none was given."""
    height: int
    """Picture height from a keyframe; 0 when none was given."""

    @property
    def codecs(self) -> str:
        """The codecs parameter, e.g. ``vp09.00.31.08`` or ``vp09.02.10.10.01.09.16.09.01``."""
        short = f"vp09.{self.profile:02d}.{self.level:02d}.{self.bit_depth:02d}"
        colour = (self.colour_primaries, self.transfer_characteristics, self.matrix_coefficients)
        full_range = int(self.video_full_range_flag)
        optional = (
            self.chroma_subsampling,
            *(1 if value == _UNSPECIFIED else value for value in colour),
            full_range,
        )
        if optional == _SHORT_FORM:
            return short
        return (
            f"{short}.{self.chroma_subsampling:02d}.{colour[0]:02d}.{colour[1]:02d}"
            f".{colour[2]:02d}.{full_range:02d}"
        )


def vp9_info_from_config(vpcc: bytes, keyframe: bytes | None = None) -> Vp9Info:
    """Reads a vpcC record, bare or behind its full box's version and flags; the size from
    ``keyframe`` when one is given.

    Raises:
        ValueError: the record is malformed, or ``keyframe`` is not a well-formed keyframe
            (or intra-only frame).
    """
    record = vpcc
    if len(vpcc) >= 4 and vpcc[1:4] == b"\x00\x00\x00":
        if vpcc[0] != 1:
            raise ValueError(f"vpcC version {vpcc[0]} is not supported")
        record = vpcc[4:]
    if len(record) < 8:
        raise ValueError("not a vpcC record")
    init_size = int.from_bytes(record[6:8], "big")
    if len(record) < 8 + init_size:
        raise ValueError("vpcC record ends inside its initialization data")
    profile, level = record[0], record[1]
    bit_depth, chroma, full_range = record[2] >> 4, (record[2] >> 1) & 0x07, record[2] & 1
    if profile > 3 or bit_depth not in (8, 10, 12) or chroma > 3:
        raise ValueError(
            f"vpcC record: profile {profile}, bit depth {bit_depth} or chroma {chroma} invalid"
        )
    width = height = 0
    if keyframe is not None:
        size = vp9_frame_size(keyframe)
        if size is None:
            raise ValueError("the frame given for the VP9 picture size is not a keyframe")
        width, height = size
    return Vp9Info(
        profile=profile,
        level=level,
        bit_depth=bit_depth,
        chroma_subsampling=chroma,
        video_full_range_flag=bool(full_range),
        colour_primaries=record[3],
        transfer_characteristics=record[4],
        matrix_coefficients=record[5],
        width=width,
        height=height,
    )


def _skip_color_config(bits: BitReader, profile: int) -> None:
    if profile >= 2:
        bits.skip(1)  # ten_or_twelve_bit
    color_space = bits.bits(3)
    if color_space != _CS_RGB:
        bits.skip(1)  # color_range
        if profile in (1, 3):
            bits.skip(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        bits.skip(1)  # reserved_zero


def _sync_code(bits: BitReader) -> None:
    if bits.bits(24) != _SYNC_CODE:
        raise ValueError("VP9 frame header: bad frame sync code")


def vp9_frame_size(frame: bytes) -> tuple[int, int] | None:
    """The ``(width, height)`` a VP9 keyframe or intra-only frame declares; ``None`` for
    any other frame (it takes its size from a reference).

    A superframe starts with its first frame, so a whole packet can be given.

    Raises:
        ValueError: the bytes are not a well-formed VP9 frame header.
    """
    bits = BitReader(frame, "VP9 frame header")
    if bits.bits(2) != 2:
        raise ValueError("not a VP9 frame: bad frame marker")
    profile = bits.bit() | (bits.bit() << 1)
    if profile == 3:
        bits.skip(1)  # reserved_zero
    if bits.flag():  # show_existing_frame
        return None
    key_frame = bits.bit() == 0
    show_frame = bits.flag()
    error_resilient = bits.flag()
    if key_frame:
        _sync_code(bits)
        _skip_color_config(bits, profile)
    else:
        intra_only = False if show_frame else bits.flag()
        if not intra_only:
            return None
        if not error_resilient:
            bits.skip(2)  # reset_frame_context
        _sync_code(bits)
        if profile > 0:
            _skip_color_config(bits, profile)
        bits.skip(8)  # refresh_frame_flags
    return bits.bits(16) + 1, bits.bits(16) + 1
