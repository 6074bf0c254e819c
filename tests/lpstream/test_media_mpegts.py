"""lpstream.media.mpegts against PyAV: packets, PAT and PMT, PES headers of a real x264
segment, the packet reader fed one byte at a time, and malformed packets."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lpstream.media.h264 import avc_info_from_annexb
from lpstream.media.mpegts import (
    PACKET_SIZE,
    PAT_PID,
    PacketReader,
    PesHeader,
    joined_payloads,
    packet_payload,
    packet_pid,
    pat_pmt_pids,
    pes_packet_length,
    pmt_stream_pid,
    psi_section,
    unit_start,
)
from tests.mediatools import make_clip


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ts") / "clip.ts"
    return make_clip(path, seconds=1.0, size="320x180", gop=15, fmt="mpegts")


@pytest.fixture(scope="module")
def clip(clip_file: Path) -> bytes:
    return clip_file.read_bytes()


def packets_of(data: bytes) -> list[bytes]:
    return [data[i : i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE)]


def video_pid(data: bytes) -> int:
    pat = next(p for p in packets_of(data) if packet_pid(p) == PAT_PID)
    pmt_pids = pat_pmt_pids(psi_section(pat))
    pmt = next(p for p in packets_of(data) if packet_pid(p) in pmt_pids)
    found = pmt_stream_pid(psi_section(pmt))
    assert found is not None
    return found


def test_the_reader_finds_every_packet_fed_one_byte_at_a_time(clip: bytes) -> None:
    reader = PacketReader()
    got = [found for i in range(len(clip)) for found in reader.feed(clip[i : i + 1])]
    assert got == [(i * PACKET_SIZE, p) for i, p in enumerate(packets_of(clip))]
    assert PacketReader().feed(clip) == got


def test_the_reader_skips_garbage_to_the_next_sync_byte(clip: bytes) -> None:
    noise = bytes(b for b in random.Random(7).randbytes(500) if b != 0x47)
    reader = PacketReader()
    got = reader.feed(noise + clip[:1000]) + reader.feed(clip[1000:])
    assert [p for _, p in got] == packets_of(clip)
    assert got[0][0] == len(noise)


def test_pat_and_pmt_name_the_video_pid_pyav_reads(clip: bytes, clip_file: Path) -> None:
    with av.open(str(clip_file)) as container:
        assert video_pid(clip) == container.streams.video[0].id


def test_pes_headers_carry_the_timestamps_pyav_reads(clip: bytes, clip_file: Path) -> None:
    pid = video_pid(clip)
    headers = []
    for packet in packets_of(clip):
        if packet_pid(packet) == pid and unit_start(packet):
            payload = packet_payload(packet)
            header = PesHeader.from_bytes(payload)
            assert header is not None and header.length == pes_packet_length(payload)
            assert payload[header.size :].startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))
            headers.append((header.pts, header.dts))
    with av.open(str(clip_file)) as container:
        stream = container.streams.video[0]
        assert stream.time_base == Fraction(1, 90_000)
        expected = [(p.pts, p.dts) for p in container.demux(stream) if p.size]
    assert headers == expected and len(headers) == 30


def test_joined_payloads_hold_the_first_sps(clip: bytes) -> None:
    info = avc_info_from_annexb(joined_payloads(clip))
    assert info is not None and (info.width, info.height) == (320, 180)
    assert joined_payloads(b"\x00" + clip) == b""  # not in sync: nothing
    assert len(joined_payloads(clip, limit=2 * PACKET_SIZE)) <= 2 * (PACKET_SIZE - 4)


def test_a_packet_without_payload_or_section_gives_empty_values() -> None:
    header = bytes([0x47, 0x40, 0x00])
    only_adaptation = header + bytes([0x20, 183]) + bytes(183)
    assert packet_payload(only_adaptation) == b"" and psi_section(only_adaptation) == b""
    too_long_adaptation = header + bytes([0x30, 255]) + bytes(183)
    assert packet_payload(too_long_adaptation) == b""
    not_a_start = bytes([0x47, 0x00, 0x00, 0x10]) + bytes(184)
    assert psi_section(not_a_start) == b"" and not unit_start(not_a_start)
    assert PesHeader.from_bytes(b"\x00\x00\x01\xe0") is None
    assert pes_packet_length(b"\x00\x00\x01") == 0


@given(body=st.binary(min_size=PACKET_SIZE - 1, max_size=PACKET_SIZE - 1))
def test_any_packet_gives_values_not_exceptions(body: bytes) -> None:
    packet = b"\x47" + body
    assert 0 <= packet_pid(packet) < 0x2000
    section = psi_section(packet)
    assert len(section) <= PACKET_SIZE
    assert all(0 <= pid < 0x2000 for pid in pat_pmt_pids(section))
    assert pmt_stream_pid(section) in (None, *range(0x2000))
    header = PesHeader.from_bytes(packet_payload(packet))
    assert header is None or header.size >= 9
