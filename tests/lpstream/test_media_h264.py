"""lpstream.media.h264: the two NAL framings, the avcC record, SPS parsing and access units,
against hand-made bytes, hypothesis and real x264 output."""

from __future__ import annotations

import contextlib
from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.h264 import (
    START_CODE,
    AvcInfo,
    access_unit_events,
    avc_decoder_configuration,
    avc_info_from_annexb,
    avc_info_from_config,
    avcc_units,
    nal_units,
    parameter_sets,
    parse_sps,
    to_annexb,
    to_avcc,
)
from tests.mediatools import flv_events, make_clip

SPS = bytes.fromhex("6742c01fda0140")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("6588840021")
SLICE = bytes.fromhex("419a0203")
AUD = bytes.fromhex("09f0")


def escaped(payload: bytes) -> bytes:
    """H.264 emulation prevention: a 03 after any 00 00 that a byte up to 03 follows, so the
    unit never holds a start code; a final byte that is not 0 (as RBSP trailing bits are)."""
    out = bytearray()
    zeros = 0
    for byte in payload:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out) + b"\x80"


nal_headers = st.integers(1, 0x7F).filter(lambda b: b & 0x1F != 0)
nal_unit = st.builds(lambda head, body: escaped(bytes([head]) + body), nal_headers, st.binary())
nal_unit_lists = st.lists(nal_unit, max_size=8)


@given(units=nal_unit_lists, short=st.lists(st.booleans(), min_size=8, max_size=8))
def test_annexb_and_avcc_carry_the_same_units_both_ways(
    units: list[bytes], short: list[bool]
) -> None:
    assert nal_units(to_annexb(units)) == units
    assert avcc_units(to_avcc(units)) == units
    assert to_avcc(nal_units(to_annexb(units))) == to_avcc(units)
    assert to_annexb(avcc_units(to_avcc(units))) == to_annexb(units)
    # 3-byte and 4-byte start codes mixed, as encoders write them
    codes = [b"\x00\x00\x01" if s else START_CODE for s in short]
    mixed = b"".join(code + unit for code, unit in zip(codes, units, strict=False))
    assert nal_units(mixed) == units


def test_annexb_splitting_skips_empty_units_and_keeps_the_last_whole() -> None:
    assert nal_units(b"") == [] and nal_units(b"\x00\x00\x01") == []
    assert nal_units(b"\x00\x00\x01" + SPS + b"\x00\x00\x00\x00\x01" + PPS) == [SPS, PPS]
    assert nal_units(b"junk\x00\x00\x01" + IDR + b"\x00") == [IDR + b"\x00"]


def test_avcc_splitting_refuses_a_length_past_the_end() -> None:
    assert avcc_units(b"\x00\x00\x00\x00" + to_avcc([IDR])) == [IDR]
    with pytest.raises(ValueError, match="past the end"):
        avcc_units(to_avcc([IDR])[:-1])
    assert avcc_units(b"\x00\x02" + SLICE[:2], length_size=2) == [SLICE[:2]]


@given(sps=st.binary(min_size=4), pps=st.binary(min_size=1))
def test_the_avcc_record_reads_back_what_was_written(sps: bytes, pps: bytes) -> None:
    sps = bytes([0x67]) + sps[1:]
    record = avc_decoder_configuration(sps, pps)
    assert record[:4] == bytes([1, *sps[1:4]])
    assert parameter_sets(record) == ([sps, pps], 4)


def test_a_truncated_avcc_record_is_refused_at_every_length() -> None:
    record = avc_decoder_configuration(SPS, PPS)
    for end in range(len(record)):
        with pytest.raises(ValueError):
            parameter_sets(record[:end])
    with pytest.raises(ValueError, match="too short"):
        avc_decoder_configuration(SPS[:3], PPS)


def test_a_record_without_an_sps_has_no_picture_info() -> None:
    record = bytes([1, 0x42, 0xC0, 0x1F, 0xFF, 0xE0, 1]) + len(PPS).to_bytes(2, "big") + PPS
    assert parameter_sets(record) == ([PPS], 4)
    with pytest.raises(ValueError, match="no SPS"):
        avc_info_from_config(record)


def test_a_keyframe_with_in_band_sets_gives_its_config_then_the_packet() -> None:
    unit = to_annexb([AUD, SPS, PPS, IDR])
    config, packet = access_unit_events(unit, dts=40, pts=80)
    assert config == CodecConfig(
        kind=TrackKind.VIDEO, codec="h264", data=avc_decoder_configuration(SPS, PPS)
    )
    assert packet == MediaPacket(
        kind=TrackKind.VIDEO, dts=40, pts=80, keyframe=True, data=to_avcc([SPS, PPS, IDR])
    )


def test_other_access_units_give_a_packet_only() -> None:
    (delta,) = access_unit_events(to_annexb([AUD, SLICE]), dts=1, pts=1)
    assert isinstance(delta, MediaPacket) and not delta.keyframe
    assert delta.data == to_avcc([SLICE])
    # The container's word wins; an IDR without its sets gives no config.
    (told,) = access_unit_events(to_annexb([SLICE]), dts=2, pts=2, keyframe=True)
    assert isinstance(told, MediaPacket) and told.keyframe
    (bare,) = access_unit_events(to_annexb([IDR]), dts=3, pts=3)
    assert isinstance(bare, MediaPacket) and bare.keyframe
    assert access_unit_events(to_annexb([AUD]), dts=4, pts=4) == []


@pytest.mark.parametrize(("size", "width", "height"), [("320x180", 320, 180), ("174x98", 174, 98)])
def test_the_sps_of_real_x264_output_gives_its_size_and_codec(
    tmp_path: Path, size: str, width: int, height: int
) -> None:
    clip = make_clip(tmp_path / "clip.flv", seconds=0.2, size=size, audio=False)
    config = next(e for e in flv_events(clip) if isinstance(e, CodecConfig))
    info = avc_info_from_config(config.data)
    assert (info.width, info.height) == (width, height)
    assert info.codecs.startswith("avc1.") and len(info.codecs) == 11
    with av.open(str(clip)) as container:
        packet = next(p for p in container.demux(video=0) if p.is_keyframe)
        stream = container.streams.video[0]
        annexb = av.BitStreamFilterContext("h264_mp4toannexb", in_stream=stream).filter(packet)
    assert avc_info_from_annexb(b"".join(bytes(p) for p in annexb)) == info


@given(data=st.binary(max_size=64))
def test_malformed_sps_bytes_raise_value_error_and_nothing_else(data: bytes) -> None:
    for sps in (bytes([0x67]) + data, SPS[: len(data) % len(SPS)]):
        with contextlib.suppress(ValueError):
            parse_sps(sps)
    found = avc_info_from_annexb(b"\x00\x00\x01\x67" + data)
    assert found is None or isinstance(found, AvcInfo)
