"""lpstream.media.hevc, .av1, .vp9 and .bits: picture sizes and codecs strings from the
configuration records of real encoders (x265, SVT-AV1, libvpx through PyAV's FFmpeg),
checked against PyAV's decoded frames and FFmpeg's own HLS master playlist; hand-built
headers for the branches those encoders do not reach; hypothesis for malformed input."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lpstream.media.av1 import Av1Info, av1_info_from_config, av1_info_from_obus, obus
from lpstream.media.bits import BitReader, unescape_rbsp
from lpstream.media.hevc import (
    HevcInfo,
    hevc_info_from_config,
    hevc_info_from_sps,
    hevc_length_size,
    hevc_nal_type,
    hevc_parameter_sets,
)
from lpstream.media.vp9 import Vp9Info, vp9_frame_size, vp9_info_from_config

X265 = {"x265-params": "log-level=error", "preset": "ultrafast"}
SVTAV1 = {"preset": "12"}
VPX = {"deadline": "realtime", "cpu-used": "8"}


def _encode(
    out: av.container.OutputContainer,
    codec: str,
    size: tuple[int, int],
    pix_fmt: str,
    options: dict[str, str],
    *,
    frames: int = 3,
    tag: str | None = None,
    color: dict[str, int] | None = None,
) -> None:
    """Encodes a few moving gradient frames at 5 frames/s into ``out``."""
    width, height = size
    stream = out.add_stream(codec, rate=5, options={"b": "300k", **options})
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if tag:
        stream.codec_tag = tag
    for name, value in (color or {}).items():
        setattr(stream.codec_context, name, value)
    ramp = np.add.outer(np.arange(height), np.arange(width)).astype(np.uint8)
    for i in range(frames):
        rgb = np.stack([ramp + 40 * i, ramp, 255 - ramp], axis=-1)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
        frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def _read_back(data: bytes) -> tuple[bytes, bytes, tuple[int, int]]:
    """The demuxed extradata, the first packet and the first decoded frame's size."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        extradata = stream.codec_context.extradata or b""
        first = bytes(next(p for p in container.demux(stream) if p.size))
    with av.open(io.BytesIO(data), "r") as container:
        frame = next(container.decode(video=0))
    return extradata, first, (frame.width, frame.height)


def muxed(
    fmt: str, codec: str, size: tuple[int, int], pix_fmt: str, options: dict[str, str]
) -> tuple[bytes, bytes, bytes, tuple[int, int]]:
    """Encodes into an in-memory ``fmt`` file (FLV is FFmpeg 8's Enhanced RTMP form);
    returns the file and what :func:`_read_back` reads from it."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        _encode(out, codec, size, pix_fmt, options)
    return buffer.getvalue(), *_read_back(buffer.getvalue())


def hls(
    tmp_path: Path,
    codec: str,
    size: tuple[int, int],
    pix_fmt: str,
    options: dict[str, str],
    **kw: Any,
) -> tuple[str, tuple[int, int], bytes]:
    """Encodes through FFmpeg's HLS muxer (fMP4 segments, a master playlist); returns the
    master's CODECS and RESOLUTION and init segment + first media segment as one file."""
    hls_options = {"hls_segment_type": "fmp4", "master_pl_name": "master.m3u8", "hls_time": "1"}
    with av.open(str(tmp_path / "index.m3u8"), "w", format="hls", options=hls_options) as out:
        _encode(out, codec, size, pix_fmt, options, frames=6, **kw)
    master = (tmp_path / "master.m3u8").read_text()
    codecs = re.search(r'CODECS="([^"]+)"', master)
    resolution = re.search(r"RESOLUTION=(\d+)x(\d+)", master)
    assert codecs and resolution, master
    media = (tmp_path / "init.mp4").read_bytes() + (tmp_path / "index0.m4s").read_bytes()
    return codecs[1], (int(resolution[1]), int(resolution[2])), media


def vpcc_box(mp4: bytes) -> bytes:
    """The payload (version, flags, record) of the vpcC box FFmpeg's MP4 muxer wrote."""
    at = mp4.index(b"vpcC")
    return mp4[at + 4 : at - 4 + int.from_bytes(mp4[at - 4 : at], "big")]


# HEVC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp4", "flv"])
@pytest.mark.parametrize(
    ("size", "pix_fmt", "chroma", "depth"),
    [
        ((318, 180), "yuv420p", 1, 8),
        ((1280, 720), "yuv420p10le", 1, 10),
        ((174, 99), "yuv422p", 2, 8),
        ((175, 99), "yuv444p", 3, 8),
        ((320, 180), "gray", 0, 8),
    ],
)
def test_an_x265_record_gives_the_decoded_picture_size(
    fmt: str, size: tuple[int, int], pix_fmt: str, chroma: int, depth: int
) -> None:
    _, record, _, decoded = muxed(fmt, "libx265", size, pix_fmt, X265)
    info = hevc_info_from_config(record)
    assert (info.width, info.height) == decoded == size
    assert (info.chroma_format_idc, info.bit_depth_luma, info.bit_depth_chroma) == (
        chroma,
        depth,
        depth,
    )
    units = hevc_parameter_sets(record)
    assert [hevc_nal_type(u) for u in units] == [32, 33, 34]
    assert hevc_info_from_sps(units[1]) == info
    assert hevc_length_size(record) == 4


@pytest.mark.parametrize(
    ("size", "pix_fmt", "expected"),
    [((318, 180), "yuv420p", "hvc1.1.6.L60.90"), ((1280, 720), "yuv420p10le", "hvc1.2.4.L93.90")],
)
def test_hevc_codecs_equal_those_of_ffmpegs_hls_master(
    tmp_path: Path, size: tuple[int, int], pix_fmt: str, expected: str
) -> None:
    codecs, resolution, media = hls(tmp_path, "libx265", size, pix_fmt, X265, tag="hvc1")
    record, _, decoded = _read_back(media)
    info = hevc_info_from_config(record)
    assert info.codecs == codecs == expected
    assert (info.width, info.height) == resolution == decoded


def test_range_extension_codecs_keep_every_nonzero_constraint_byte(tmp_path: Path) -> None:
    # x265's 4:4:4 SPS has constraint bytes 9E 08 00 00 00 00 and compatibility flag 4 only.
    # FFmpeg's muxer writes the first byte and only the high nibble of the second, so it
    # loses general_lower_bit_rate_constraint_flag (08); Annex E keeps whole bytes.
    codecs, _, media = hls(tmp_path, "libx265", (320, 180), "yuv444p", X265, tag="hvc1")
    info = hevc_info_from_config(_read_back(media)[0])
    assert info.general_constraint_indicator_flags == bytes.fromhex("9e0800000000")
    assert codecs == "hvc1.4.10.L60.9e"
    assert info.codecs == "hvc1.4.10.L60.9E.08"
    assert info.codecs_for("hev1") == "hev1.4.10.L60.9E.08"


# AV1 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp4", "flv"])
@pytest.mark.parametrize(
    ("size", "pix_fmt", "depth"),
    [((318, 180), "yuv420p", 8), ((317, 179), "yuv420p", 8), ((1280, 720), "yuv420p10le", 10)],
)
def test_an_svt_av1_record_gives_the_decoded_picture_size(
    fmt: str, size: tuple[int, int], pix_fmt: str, depth: int
) -> None:
    _, record, first, decoded = muxed(fmt, "libsvtav1", size, pix_fmt, SVTAV1)
    info = av1_info_from_config(record)
    assert (info.width, info.height) == decoded == size
    assert (info.seq_profile, info.bit_depth, info.monochrome) == (0, depth, False)
    assert av1_info_from_obus(first) == info  # the keyframe repeats the sequence header


def _with_defaults(codecs: str) -> str:
    """An av01 string in its long form, the optional fields filled with their defaults."""
    return codecs if codecs.count(".") > 3 else codecs + ".0.110.01.01.01.0"


@pytest.mark.parametrize(
    ("pix_fmt", "color", "expected"),
    [
        ("yuv420p", None, "av01.0.00M.08"),
        ("yuv420p10le", {"color_primaries": 9, "color_trc": 16, "colorspace": 9}, None),
        ("yuv420p", {"color_primaries": 1, "color_trc": 1, "colorspace": 1}, "av01.0.00M.08"),
    ],
)
def test_av1_codecs_mean_what_ffmpegs_hls_master_says(
    tmp_path: Path, pix_fmt: str, color: dict[str, int] | None, expected: str | None
) -> None:
    codecs, resolution, media = hls(tmp_path, "libsvtav1", (320, 180), pix_fmt, SVTAV1, color=color)
    record, _, decoded = _read_back(media)
    info = av1_info_from_config(record)
    assert (info.width, info.height) == resolution == decoded
    # FFmpeg writes the long form whenever a colour description is present; where it equals
    # the defaults this module writes the short form, which means the same.
    assert _with_defaults(info.codecs) == _with_defaults(codecs)
    assert info.codecs == (expected or codecs)


def test_full_range_av1_without_colour_description_needs_the_long_form(tmp_path: Path) -> None:
    # FFmpeg keys the long form on the colour description alone, so it writes the short
    # form here, which implies studio range.
    codecs, _, media = hls(
        tmp_path, "libsvtav1", (320, 180), "yuv420p", SVTAV1, color={"color_range": 2}
    )
    info = av1_info_from_config(_read_back(media)[0])
    assert (info.color_description_present, info.color_range) == (False, 1)
    assert codecs == "av01.0.00M.08"
    assert info.codecs == "av01.0.00M.08.0.110.02.02.02.1"


# VP9 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "pix_fmt", "profile"),
    [((318, 180), "yuv420p", 0), ((1280, 720), "yuv420p", 0), ((175, 99), "yuv444p", 1)],
)
def test_vp9_records_from_flv_and_mp4_and_the_keyframe_size(
    size: tuple[int, int], pix_fmt: str, profile: int
) -> None:
    _, flv_record, keyframe, decoded = muxed("flv", "libvpx-vp9", size, pix_fmt, VPX)
    mp4, mp4_record, _, _ = muxed("mp4", "libvpx-vp9", size, pix_fmt, VPX)
    assert mp4_record == b""  # FFmpeg's MP4 demuxer keeps vpcC to itself
    box = vpcc_box(mp4)
    assert flv_record[:4] == box[:4] == b"\x01\x00\x00\x00"  # version 1, flags 0
    assert vp9_frame_size(keyframe) == decoded == size
    info = vp9_info_from_config(flv_record, keyframe)
    assert (info.width, info.height, info.profile, info.bit_depth) == (*size, profile, 8)
    assert vp9_info_from_config(box, keyframe) == info
    assert vp9_info_from_config(box[4:], keyframe) == info  # the bare record
    assert vp9_info_from_config(box[4:]).width == 0  # no keyframe, no size


def test_vp9_inter_frames_take_their_size_from_a_reference() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flv") as out:
        _encode(out, "libvpx-vp9", (160, 90), "yuv420p", VPX, frames=4)
    with av.open(io.BytesIO(buffer.getvalue()), "r") as container:
        packets = [(bytes(p), p.is_keyframe) for p in container.demux(video=0) if p.size]
    assert [vp9_frame_size(data) for data, _ in packets] == [
        (160, 90) if key else None for _, key in packets
    ]
    with pytest.raises(ValueError, match="not a keyframe"):
        vp9_info_from_config(b"\x01\x00\x00\x00\x00\x0a\x82\x02\x02\x02\x00\x00", packets[1][0])


@pytest.mark.parametrize(
    ("pix_fmt", "expected"),
    [("yuv420p", "vp09.00.11.08"), ("yuv444p", "vp09.01.11.08.03.02.02.02.00")],
)
def test_vp9_codecs_against_ffmpegs_hls_master(tmp_path: Path, pix_fmt: str, expected: str) -> None:
    codecs, resolution, media = hls(tmp_path, "libvpx-vp9", (320, 180), pix_fmt, VPX)
    _, keyframe, decoded = _read_back(media)
    info = vp9_info_from_config(vpcc_box(media), keyframe)
    assert (info.width, info.height) == resolution == decoded
    # FFmpeg always writes the short form; 4:4:4 is not what it implies (4:2:0), so the
    # optional fields follow, colour as the record has it (unspecified).
    assert info.codecs == expected
    assert info.codecs.startswith(codecs)


# The specifications' worked examples ---------------------------------------------------


def test_the_worked_examples_of_the_specifications() -> None:
    # ISO/IEC 14496-15 Annex E: Main profile, Main tier, level 3.1, progressive, non-packed.
    main = HevcInfo(
        general_profile_space=0,
        general_tier_flag=False,
        general_profile_idc=1,
        general_profile_compatibility_flags=0x60000000,
        general_constraint_indicator_flags=bytes.fromhex("b00000000000"),
        general_level_idc=93,
        chroma_format_idc=1,
        bit_depth_luma=8,
        bit_depth_chroma=8,
        width=1280,
        height=720,
    )
    assert main.codecs_for("hev1") == "hev1.1.6.L93.B0"
    # Apple's HLS authoring example: Main 10, level 4.1.
    main10 = attrs.evolve(
        main,
        general_profile_idc=2,
        general_profile_compatibility_flags=0x20000000,
        general_level_idc=123,
    )
    assert main10.codecs == "hvc1.2.4.L123.B0"
    # By the same rule: profile space 1 is written A, the high tier H.
    spaced = attrs.evolve(main, general_profile_space=1, general_tier_flag=True)
    assert spaced.codecs == "hvc1.A1.6.H93.B0"
    # All-zero constraint bytes keep the first one: parsers (DVB's pattern) want one.
    assert attrs.evolve(main, general_constraint_indicator_flags=bytes(6)).codecs == (
        "hvc1.1.6.L93.00"
    )
    # AV1-ISOBMFF's codecs parameter: Main profile, level 3.0, Main tier, 10-bit, 4:2:0
    # colocated, BT.2100 PQ.
    hdr = Av1Info(
        seq_profile=0,
        seq_level_idx_0=4,
        seq_tier_0=0,
        bit_depth=10,
        monochrome=False,
        chroma_subsampling_x=1,
        chroma_subsampling_y=1,
        chroma_sample_position=2,
        color_description_present=True,
        color_primaries=9,
        transfer_characteristics=16,
        matrix_coefficients=9,
        color_range=0,
        width=1920,
        height=1080,
    )
    assert hdr.codecs == "av01.0.04M.10.0.112.09.16.09.0"
    sdr = attrs.evolve(hdr, bit_depth=8, chroma_sample_position=0)
    assert attrs.evolve(sdr, color_primaries=1, transfer_characteristics=1).codecs == (
        "av01.0.04M.08.0.110.01.01.09.0"
    )
    bt709 = attrs.evolve(sdr, color_primaries=1, transfer_characteristics=1, matrix_coefficients=1)
    assert bt709.codecs == "av01.0.04M.08"
    # The VP9 ISO binding's codecs parameter: profile 2, level 1, 10-bit, 4:2:0 colocated,
    # BT.2020, PQ, full range.
    vp9 = Vp9Info(
        profile=2,
        level=10,
        bit_depth=10,
        chroma_subsampling=1,
        video_full_range_flag=True,
        colour_primaries=9,
        transfer_characteristics=16,
        matrix_coefficients=9,
        width=0,
        height=0,
    )
    assert vp9.codecs == "vp09.02.10.10.01.09.16.09.01"


# The bit reader --------------------------------------------------------------------------


class BitWriter:
    """Writes fields most significant bit first, as the readers expect them."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits += [(value >> i) & 1 for i in reversed(range(n))]

    def ue(self, value: int) -> None:
        """exp-Golomb, which is also AV1's uvlc() for values below 2**32 - 1."""
        self.u((value + 1).bit_length() - 1, 0)
        self.u((value + 1).bit_length(), value + 1)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def data(self) -> bytes:
        """The bits with RBSP trailing bits (a one, then zeros to a byte boundary)."""
        bits = [*self.bits, 1] + [0] * (-(len(self.bits) + 1) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


fields = st.lists(st.tuples(st.sampled_from(["u", "ue", "se"]), st.integers(0, 2**20)), max_size=40)


@given(fields=fields)
def test_the_bit_reader_reads_what_was_written(fields: list[tuple[str, int]]) -> None:
    writer = BitWriter()
    for kind, value in fields:
        if kind == "u":
            writer.u(21, value)
        else:
            getattr(writer, kind)(value if kind == "ue" else value - 2**19)
    reader = BitReader(writer.data(), "test")
    for kind, value in fields:
        if kind == "u":
            assert reader.bits(21) == value
        elif kind == "ue":
            assert reader.ue() == value
        else:
            assert reader.se() == value - 2**19
    assert reader.bit() == 1 and reader.remaining < 8
    reader.skip(reader.remaining)
    with pytest.raises(ValueError, match="test ends early"):
        reader.bit()


def test_the_bit_reader_refuses_overlong_codes_and_reads_across_bytes() -> None:
    with pytest.raises(ValueError, match="exp-Golomb"):
        BitReader(bytes(5)).ue()
    assert BitReader(bytes(5)).uvlc() == 2**32 - 1  # AV1 reads no value bits past 32 zeros
    reader = BitReader(bytes.fromhex("f0f0f0f0f0f0f0f0f0"))
    assert (reader.bits(4), reader.bits(64), reader.position) == (15, 0x0F0F0F0F0F0F0F0F, 68)
    escaped_bytes = bytes.fromhex("00 00 03 00 00 03 01 00 00 03 03")
    assert unescape_rbsp(escaped_bytes) == bytes.fromhex("00 00 00 00 01 00 00 03")


# Hand-built headers: the branches real encoders do not reach ---------------------------


def escaped(rbsp: bytes) -> bytes:
    """H.26x emulation prevention: a 03 after 00 00 that a byte up to 03 follows."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


@st.composite
def hevc_sps(draw: st.DrawFn) -> tuple[bytes, HevcInfo]:
    """An SPS with sub-layers, any chroma format and conformance window, and its info."""
    w, n = BitWriter(), st.integers
    sub_layers = draw(n(0, 6))
    w.u(4, draw(n(0, 15)))
    w.u(3, sub_layers)
    w.u(1, 1)
    space, tier, idc = draw(n(0, 3)), draw(st.booleans()), draw(n(0, 31))
    compat, constraints, level = draw(n(0, 2**32 - 1)), draw(n(0, 2**48 - 1)), draw(n(0, 255))
    for bits, value in (
        (2, space),
        (1, tier),
        (5, idc),
        (32, compat),
        (48, constraints),
        (8, level),
    ):
        w.u(bits, value)
    present = [(draw(st.booleans()), draw(st.booleans())) for _ in range(sub_layers)]
    for profile_present, level_present in present:
        w.u(1, profile_present)
        w.u(1, level_present)
    if sub_layers:
        w.u(2 * (8 - sub_layers), 0)
    for profile_present, level_present in present:
        if profile_present:
            w.u(88, draw(n(0, 2**88 - 1)))
        if level_present:
            w.u(8, draw(n(0, 255)))
    w.ue(draw(n(0, 15)))
    chroma = draw(n(0, 3))
    w.ue(chroma)
    separate = chroma == 3 and draw(st.booleans())
    if chroma == 3:
        w.u(1, separate)
    unit_x, unit_y = (1, 1) if separate else {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma]
    width, height = draw(n(1, 8192)), draw(n(1, 4320))
    window = [draw(n(0, 40)) for _ in range(4)]
    w.ue(width + unit_x * (window[0] + window[1]))
    w.ue(height + unit_y * (window[2] + window[3]))
    w.u(1, 1)
    for offset in window:
        w.ue(offset)
    depth_luma, depth_chroma = draw(n(0, 8)), draw(n(0, 8))
    w.ue(depth_luma)
    w.ue(depth_chroma)
    info = HevcInfo(
        general_profile_space=space,
        general_tier_flag=tier,
        general_profile_idc=idc,
        general_profile_compatibility_flags=compat,
        general_constraint_indicator_flags=constraints.to_bytes(6, "big"),
        general_level_idc=level,
        chroma_format_idc=chroma,
        bit_depth_luma=depth_luma + 8,
        bit_depth_chroma=depth_chroma + 8,
        width=width,
        height=height,
    )
    return b"\x42\x01" + escaped(w.data()), info


def hvcc(arrays: list[list[bytes]]) -> bytes:
    """An hvcC record (4-byte lengths) holding these NAL unit arrays."""
    head = bytes([1]) + bytes(12) + bytes.fromhex("f000fcfdf8f800000f")
    body = b"".join(
        bytes([hevc_nal_type(units[0])])
        + len(units).to_bytes(2, "big")
        + b"".join(len(u).to_bytes(2, "big") + u for u in units)
        for units in arrays
    )
    return head + bytes([len(arrays)]) + body


@given(sps=hevc_sps())
def test_a_hand_built_sps_reads_back_its_fields(sps: tuple[bytes, HevcInfo]) -> None:
    nal, info = sps
    assert hevc_info_from_sps(nal) == info
    vps, pps, sei = b"\x40\x01\x0c", b"\x44\x01\xc1", b"\x4e\x01\x05"
    record = hvcc([[pps], [sei], [nal], [vps]])
    assert hevc_parameter_sets(record) == [vps, nal, pps]
    assert hevc_info_from_config(record) == info
    with pytest.raises(ValueError, match="no SPS"):
        hevc_info_from_config(hvcc([[vps], [pps]]))


@st.composite
def av1_sequence_header(draw: st.DrawFn) -> tuple[bytes, Av1Info]:
    """A sequence header OBU payload (reduced or not, with timing, decoder models and many
    operating points, any colour config) and its info."""
    w, n, flag = BitWriter(), st.integers, st.booleans()
    profile, reduced = draw(n(0, 2)), draw(flag)
    w.u(3, profile)
    w.u(1, draw(flag))  # still_picture
    w.u(1, reduced)
    if reduced:
        level, tier = draw(n(0, 31)), 0
        w.u(5, level)
    else:
        timing, model, delay_bits = draw(flag), False, 0
        w.u(1, timing)
        if timing:
            w.u(64, draw(n(0, 2**64 - 1)))
            equal = draw(flag)
            w.u(1, equal)
            if equal:
                w.ue(draw(n(0, 2**20)))
            model = draw(flag)
            w.u(1, model)
            if model:
                delay_bits = draw(n(1, 32))
                w.u(5, delay_bits - 1)
                w.u(42, draw(n(0, 2**42 - 1)))
        display_delay = draw(flag)
        w.u(1, display_delay)
        points = draw(st.lists(st.tuples(n(0, 31), flag, flag, flag), min_size=1, max_size=32))
        w.u(5, len(points) - 1)
        for point_level, point_tier, has_model, has_delay in points:
            w.u(12, draw(n(0, 4095)))
            w.u(5, point_level)
            if point_level > 7:
                w.u(1, point_tier)
            if model:
                w.u(1, has_model)
                if has_model:
                    w.u(2 * delay_bits + 1, draw(n(0, 2 ** (2 * delay_bits + 1) - 1)))
            if display_delay:
                w.u(1, has_delay)
                if has_delay:
                    w.u(4, draw(n(0, 15)))
        level, tier = points[0][0], int(points[0][1] and points[0][0] > 7)
    width_bits, height_bits = draw(n(1, 16)), draw(n(1, 16))
    width, height = draw(n(1, 2**width_bits)), draw(n(1, 2**height_bits))
    for bits, value in ((4, width_bits - 1), (4, height_bits - 1)):
        w.u(bits, value)
    w.u(width_bits, width - 1)
    w.u(height_bits, height - 1)
    if not reduced:
        frame_ids = draw(flag)
        w.u(1, frame_ids)
        if frame_ids:
            w.u(7, draw(n(0, 127)))
    w.u(3, draw(n(0, 7)))
    if not reduced:
        w.u(4, draw(n(0, 15)))
        order_hint, choose_tools = draw(flag), draw(flag)
        w.u(1, order_hint)
        if order_hint:
            w.u(2, draw(n(0, 3)))
        w.u(1, choose_tools)
        force_tools = 2 if choose_tools else draw(n(0, 1))
        if not choose_tools:
            w.u(1, force_tools)
        if force_tools:
            choose_mv = draw(flag)
            w.u(1, choose_mv)
            if not choose_mv:
                w.u(1, draw(n(0, 1)))
        if order_hint:
            w.u(3, draw(n(0, 7)))
    w.u(3, draw(n(0, 7)))
    # color_config()
    high, twelve = draw(flag), draw(flag)
    w.u(1, high)
    if profile == 2 and high:
        w.u(1, twelve)
    depth = (12 if twelve else 10) if profile == 2 and high else (10 if high else 8)
    mono = profile != 1 and draw(flag)
    if profile != 1:
        w.u(1, mono)
    described = draw(flag)
    w.u(1, described)
    colour = (2, 2, 2)
    if described:
        colour = draw(st.one_of(st.just((1, 13, 0)), st.tuples(n(0, 255), n(0, 255), n(0, 255))))
        for value in colour:
            w.u(8, value)
    position = 0
    if colour == (1, 13, 0) and not mono:
        full, sub_x, sub_y = 1, 0, 0
    else:
        full = draw(n(0, 1))
        w.u(1, full)
        if mono or profile == 0:
            sub_x, sub_y = 1, 1
        elif profile == 1:
            sub_x, sub_y = 0, 0
        elif depth == 12:
            sub_x = draw(n(0, 1))
            sub_y = draw(n(0, 1)) if sub_x else 0
            w.u(1, sub_x)
            if sub_x:
                w.u(1, sub_y)
        else:
            sub_x, sub_y = 1, 0
        if sub_x and sub_y and not mono:
            position = draw(n(0, 3))
            w.u(2, position)
    info = Av1Info(
        seq_profile=profile,
        seq_level_idx_0=level,
        seq_tier_0=tier,
        bit_depth=depth,
        monochrome=mono,
        chroma_subsampling_x=sub_x,
        chroma_subsampling_y=sub_y,
        chroma_sample_position=position,
        color_description_present=described,
        color_primaries=colour[0],
        transfer_characteristics=colour[1],
        matrix_coefficients=colour[2],
        color_range=full,
        width=width,
        height=height,
    )
    return w.data(), info


def leb128(value: int, width: int = 1) -> bytes:
    """LEB128, padded to ``width`` bytes (a longer encoding than needed is allowed)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        more = value > 0 or len(out) + 1 < width
        out.append(byte | 0x80 if more else byte)
        if not more:
            return bytes(out)


def obu(obu_type: int, payload: bytes, *, sized: bool = True, extension: bool = False) -> bytes:
    """One OBU; with an extension header, its size padded to 4 bytes."""
    header = bytes([obu_type << 3 | extension << 2 | sized << 1])
    if extension:
        header += b"\x28"  # temporal_id 1, spatial_id 1
    return header + (leb128(len(payload), 4 if extension else 1) if sized else b"") + payload


@given(header=av1_sequence_header(), extension=st.booleans())
def test_a_hand_built_sequence_header_reads_back_its_fields(
    header: tuple[bytes, Av1Info], extension: bool
) -> None:
    payload, info = header
    temporal_unit = obu(2, b"") + obu(1, payload, extension=extension) + obu(6, b"\x10\x00")
    assert obus(temporal_unit)[1] == (1, payload)
    assert av1_info_from_obus(temporal_unit) == info
    assert av1_info_from_config(b"\x81\x00\x0c\x00" + obu(1, payload, sized=False)) == info
    with pytest.raises(ValueError, match="no AV1 sequence header"):
        av1_info_from_config(b"\x81\x00\x0c\x00" + obu(5, payload))


# Malformed input: ValueError or a value, nothing else ----------------------------------

Parser = Callable[[bytes], object]
PARSERS: list[tuple[Parser, bytes]] = [
    # each parser with a prefix that takes random bytes past its first check
    (hevc_info_from_config, b"\x01"),
    (hevc_parameter_sets, b"\x01"),
    (hevc_length_size, b"\x01"),
    (hevc_info_from_sps, b"\x42\x01"),
    (av1_info_from_config, b"\x81\x00\x0c\x00\x0a"),
    (av1_info_from_obus, b"\x0a"),
    (obus, b""),
    (vp9_info_from_config, b"\x01\x00\x00\x00"),
    (vp9_frame_size, b"\x82\x49\x83\x42"),
]


def value_or_value_error(parse: Parser, data: bytes) -> object:
    with contextlib.suppress(ValueError):
        return parse(data)
    return ValueError


@given(data=st.binary(max_size=128))
def test_random_bytes_give_a_value_or_a_value_error(data: bytes) -> None:
    for parse, prefix in PARSERS:
        value_or_value_error(parse, data)
        value_or_value_error(parse, prefix + data)


@pytest.fixture(scope="module")
def real() -> dict[str, bytes]:
    _, hvcc_record, _, _ = muxed("mp4", "libx265", (318, 180), "yuv420p", X265)
    _, av1c_record, temporal_unit, _ = muxed("flv", "libsvtav1", (318, 180), "yuv420p", SVTAV1)
    _, vpcc_record, keyframe, _ = muxed("flv", "libvpx-vp9", (318, 180), "yuv420p", VPX)
    return {
        "hvcC": hvcc_record,
        "av1C": av1c_record,
        "vpcC": vpcc_record,
        "av1 keyframe": temporal_unit,
        "vp9 keyframe": keyframe,
    }


REAL_PARSERS: dict[str, list[Parser]] = {
    "hvcC": [hevc_info_from_config, hevc_parameter_sets],
    "av1C": [av1_info_from_config],
    "vpcC": [vp9_info_from_config],
    "av1 keyframe": [av1_info_from_obus, obus],
    "vp9 keyframe": [vp9_frame_size],
}


def test_real_records_cut_short_are_refused_at_every_length(real: dict[str, bytes]) -> None:
    for name in ("hvcC", "av1C", "vpcC"):
        for end in range(len(real[name])):
            for parse in REAL_PARSERS[name]:
                assert value_or_value_error(parse, real[name][:end]) is ValueError, (name, end)
    # A frame cut short gives the size once its header is whole, and ValueError before.
    for name, whole in (("av1 keyframe", av1_info_from_obus), ("vp9 keyframe", vp9_frame_size)):
        data, expected = real[name], whole(real[name])
        results = [value_or_value_error(whole, data[:end]) for end in range(len(data))]
        assert set(map(repr, results)) <= {repr(ValueError), repr(expected)}
        assert results[0] is ValueError


@given(
    name=st.sampled_from(sorted(REAL_PARSERS)), at=st.integers(0, 2**16), byte=st.integers(0, 255)
)
def test_real_records_with_a_byte_changed_give_a_value_or_a_value_error(
    real: dict[str, bytes], name: str, at: int, byte: int
) -> None:
    data = bytearray(real[name])
    data[at % len(data)] = byte
    for parse in REAL_PARSERS[name]:
        value_or_value_error(parse, bytes(data))
