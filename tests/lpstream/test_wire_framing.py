"""Frames and QUIC varints: exact bytes, limits checked before buffering, any chunking."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.wire import (
    MAX_VARINT,
    Frame,
    FrameDecoder,
    FrameType,
    decode_varint,
    encode_frame,
    encode_varint,
    varint_size,
)

VARINTS = [
    (0, "00"),
    (37, "25"),
    (63, "3f"),
    (64, "4040"),
    (15293, "7bbd"),
    (16383, "7fff"),
    (16384, "80004000"),
    (494878333, "9d7f3e7d"),
    ((1 << 30) - 1, "bfffffff"),
    (1 << 30, "c000000040000000"),
    (151288809941952652, "c2197c5eff14e88c"),
    (MAX_VARINT, "ffffffffffffffff"),
]


@pytest.mark.parametrize(("value", "wire"), VARINTS)
def test_varint_encodes_to_the_shortest_rfc9000_form(value: int, wire: str) -> None:
    assert encode_varint(value).hex() == wire
    assert varint_size(value) == len(wire) // 2


@pytest.mark.parametrize(("value", "wire"), VARINTS)
def test_varint_decodes_and_reports_where_it_ends(value: int, wire: str) -> None:
    raw = b"\xaa" + bytes.fromhex(wire) + b"\xbb"
    assert decode_varint(raw, 1) == (value, 1 + len(wire) // 2)


@pytest.mark.parametrize(("value", "wire"), VARINTS)
def test_varint_cut_short_needs_more_bytes(value: int, wire: str) -> None:
    raw = bytes.fromhex(wire)
    for end in range(len(raw)):
        assert decode_varint(raw[:end]) is None


@pytest.mark.parametrize("wire", ["4025", "80000025", "c000000000000025"])
def test_varint_accepts_longer_than_needed_forms(wire: str) -> None:
    assert decode_varint(bytes.fromhex(wire)) == (37, len(wire) // 2)


@pytest.mark.parametrize("value", [-1, MAX_VARINT + 1])
def test_varint_out_of_range_is_a_local_error(value: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_varint(value)


@given(st.integers(min_value=0, max_value=MAX_VARINT))
def test_varint_round_trips(value: int) -> None:
    raw = encode_varint(value)
    assert decode_varint(raw) == (value, len(raw))


FRAMES = [
    (FrameType.PING, b"", "0700"),
    (FrameType.JOB, b"\x80", "010180"),
    (FrameType.DATA, b"\x00abc", "020400616263"),
    (FrameType.SUMMARY, b"\x90", "0c0190"),
    (FrameType.ERROR, b"x" * 64, "044040" + "78" * 64),
    (FrameType.DATA, b"y" * 16384, "0280004000" + "79" * 16384),
]


@pytest.mark.parametrize(("frame_type", "body", "wire"), FRAMES)
def test_frame_is_type_varint_length_body(frame_type: FrameType, body: bytes, wire: str) -> None:
    assert encode_frame(frame_type, body).hex() == wire


def test_decoder_fed_one_byte_at_a_time_returns_each_frame_once_whole() -> None:
    stream = b"".join(encode_frame(t, body) for t, body, _ in FRAMES)
    decoder = FrameDecoder()
    frames = []
    for i in range(len(stream)):
        decoder.receive_data(stream[i : i + 1])
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert frames == [Frame(type=t, body=body) for t, body, _ in FRAMES]
    assert decoder.pending == 0


def test_decoder_returns_none_until_the_body_is_complete() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x07\x03ab")
    assert decoder.next_frame() is None
    assert decoder.pending == 4
    decoder.receive_data(b"c\x08")
    assert decoder.next_frame() == Frame(type=FrameType.PING, body=b"abc")
    assert decoder.next_frame() is None
    assert decoder.pending == 1


@pytest.mark.parametrize("type_byte", [0, 18, 0x7F, 0xFF])
def test_unknown_frame_type_is_refused_at_its_first_byte(type_byte: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(bytes([type_byte]))
    with pytest.raises(RemoteProtocolError) as exc:
        decoder.next_frame()
    assert exc.value.code == 400


def test_oversized_header_frame_is_refused_once_its_length_is_known() -> None:
    decoder = FrameDecoder(max_header_size=100)
    decoder.receive_data(b"\x01" + encode_varint(101))  # no body sent at all
    with pytest.raises(RemoteProtocolError) as exc:
        decoder.next_frame()
    assert exc.value.code == 413
    assert decoder.pending == 3


def test_header_frame_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_header_size=100)
    decoder.receive_data(encode_frame(FrameType.JOB, b"j" * 100))
    assert decoder.next_frame() == Frame(type=FrameType.JOB, body=b"j" * 100)


def test_default_header_limit_is_64_kib_and_data_limit_1_mib() -> None:
    ok = FrameDecoder()
    ok.receive_data(b"\x01" + encode_varint(64 * 1024) + b"\x02" + encode_varint(1024 * 1024))
    assert ok.next_frame() is None
    for head, size in ((b"\x01", 64 * 1024 + 1), (b"\x02", 1024 * 1024 + 1)):
        decoder = FrameDecoder()
        decoder.receive_data(head + encode_varint(size))
        with pytest.raises(RemoteProtocolError) as exc:
            decoder.next_frame()
        assert exc.value.code == 413


def test_data_frames_have_their_own_limit() -> None:
    decoder = FrameDecoder(max_header_size=10, max_data_size=1000)
    decoder.receive_data(encode_frame(FrameType.DATA, b"d" * 1000))
    assert decoder.next_frame() == Frame(type=FrameType.DATA, body=b"d" * 1000)
    decoder.receive_data(b"\x02" + encode_varint(1001))
    with pytest.raises(RemoteProtocolError) as exc:
        decoder.next_frame()
    assert exc.value.code == 413


def test_a_huge_length_is_refused_without_waiting_for_the_body() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x02\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(RemoteProtocolError) as exc:
        decoder.next_frame()
    assert exc.value.code == 413


def test_decoder_stays_broken_after_a_remote_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00")
    with pytest.raises(RemoteProtocolError) as first:
        decoder.next_frame()
    decoder.receive_data(encode_frame(FrameType.PING, b""))
    with pytest.raises(RemoteProtocolError) as second:
        decoder.next_frame()
    assert second.value is first.value


def test_eof_on_a_frame_boundary_is_clean() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(FrameType.PONG, b"\x80"))
    decoder.receive_eof()
    assert decoder.at_eof
    assert decoder.next_frame() == Frame(type=FrameType.PONG, body=b"\x80")
    assert decoder.next_frame() is None


@pytest.mark.parametrize("tail", [b"\x07", b"\x07\x40", b"\x07\x02a"])
def test_eof_inside_a_frame_is_a_remote_error(tail: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(tail)
    decoder.receive_eof()
    with pytest.raises(RemoteProtocolError) as exc:
        decoder.next_frame()
    assert exc.value.code == 400


def test_data_after_eof_is_a_local_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_eof()
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"\x07\x00")


frames_strategy = st.lists(
    st.builds(Frame, type=st.sampled_from(FrameType), body=st.binary(max_size=300)), max_size=8
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cuts ``data`` at the given positions (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(deadline=None)
@given(frames_strategy, st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_yields_the_same_frames(frames: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f.type, f.body) for f in frames)
    decoder = FrameDecoder()
    got = []
    for piece in split(stream, cuts):
        decoder.receive_data(piece)
        while (frame := decoder.next_frame()) is not None:
            got.append(frame)
    decoder.receive_eof()
    assert decoder.next_frame() is None
    assert got == frames


@settings(deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=300))
def test_random_bytes_raise_only_remote_protocol_errors(data: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_header_size=limit, max_data_size=limit)
    decoder.receive_data(data)
    decoder.receive_eof()
    try:
        while decoder.next_frame() is not None:
            pass
    except RemoteProtocolError as exc:
        assert exc.code in (400, 413)


BANNED = {"trio", "socket", "time", "asyncio", "select", "selectors", "threading", "os"}


def test_wire_package_does_no_io() -> None:
    package = Path(__file__).parents[2] / "lpstream" / "wire"
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in BANNED, f"{source.name} imports {name}"
