"""AV1 over RTP into ingest events: real SVT-AV1 temporal units packetized as the AOM RTP
payload format says (by a packetizer written here), read back by ``ingest.whip.av1``."""

from __future__ import annotations

import io
import random
from typing import Any

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.whip.av1 import Av1Track, framed_payload, temporal_unit
from lpstream.media import CodecConfig, MediaPacket
from lpstream.media.av1 import leb128, obus

Units = list[tuple[bytes, bool, bytes]]


@pytest.fixture(scope="module")
def clip() -> tuple[Units, bytes]:
    """Twenty 320x180 AV1 temporal units (low-overhead, as MP4 and FLV carry them) with their
    keyframe flags and TS-free bytes, and the stream's av1C record."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flv") as out:
        stream = out.add_stream("libsvtav1", rate=30, options={"preset": "12"})
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.codec_context.gop_size = 10
        for i in range(20):
            picture = np.full((180, 320, 3), (i * 9) % 256, np.uint8)
            picture[:, : i * 8 + 1] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r", format="flv") as container:
        record = bytes(container.streams.video[0].codec_context.extradata or b"")
        units = [
            (bytes(p), bool(p.is_keyframe), bytes(p)) for p in container.demux(video=0) if p.size
        ]
    return units, record


def rtp_payloads(unit: bytes, *, mtu: int, keyframe: bool, sized: bool) -> list[bytes]:
    """Packetizes one temporal unit as the AV1 RTP payload format does: OBUs without their
    size field (``sized``: with it), W=0 (every element behind a length) or, for a payload
    holding one element, W=1; fragments across packets with Z and Y; N on a keyframe's first."""
    elements = []
    for kind, payload in obus(unit):
        if kind == 2:
            continue  # temporal delimiters are not sent
        header = bytes([(kind << 3) | (0x02 if sized else 0)])
        elements.append(header + (leb128(len(payload)) if sized else b"") + payload)
    packets: list[bytes] = []
    current = bytearray()
    continued = False  # the current packet's first element goes on from the previous one

    def flush(*, goes_on: bool) -> None:
        packets.append(_payload(current, continued, goes_on, keyframe and not packets))

    for element in elements:
        rest, first = element, True
        while rest:
            room = mtu - 1 - len(current) - 2  # the aggregation header, a length of 2 bytes
            if room <= 0:  # full before this element begins
                flush(goes_on=False)
                current, continued = bytearray(), False
                continue
            piece, rest = rest[:room], rest[room:]
            current += leb128(len(piece)) + piece
            first = False
            if rest:  # the element goes on in the next packet
                flush(goes_on=True)
                current, continued = bytearray(), True
        assert not first
    if current:
        flush(goes_on=False)
    return packets


def _payload(body: bytearray, z: bool, y: bool, n: bool) -> bytes:
    return bytes([(0x80 if z else 0) | (0x40 if y else 0) | (0x08 if n else 0)]) + bytes(body)


def frame_of(payloads: list[bytes]) -> bytes:
    return b"".join(framed_payload(p) for p in payloads)


def without_delimiters(unit: bytes) -> bytes:
    """The low-overhead OBUs of ``unit`` minus temporal delimiters, sizes on every OBU."""
    out = b""
    for kind, payload in obus(unit):
        if kind != 2:
            out += bytes([(kind << 3) | 0x02]) + leb128(len(payload)) + payload
    return out


@pytest.mark.parametrize(("mtu", "sized"), [(1200, False), (120, False), (60, True), (37, False)])
def test_temporal_units_come_back_whole_and_decode(
    clip: tuple[Units, bytes], mtu: int, sized: bool
) -> None:
    units, record = clip
    track = Av1Track()
    events = []
    for i, (unit, keyframe, _) in enumerate(units):
        payloads = rtp_payloads(unit, mtu=mtu, keyframe=keyframe, sized=sized)
        assert all(len(p) <= mtu for p in payloads)
        events += track.feed(frame_of(payloads), timestamp_ms=i * 33)
    configs = [e for e in events if isinstance(e, CodecConfig)]
    packets = [e for e in events if isinstance(e, MediaPacket)]
    # One av1C, made from the stream's sequence header: its four-byte header as FFmpeg's own
    # record has it, then that sequence header OBU.
    (config,) = configs
    assert config.codec == "av1" and config.data[:4] == record[:4]
    assert obus(config.data[4:])[0][0] == 1
    assert [p.data for p in packets] == [without_delimiters(u) for u, _, _ in units]
    assert [p.keyframe for p in packets] == [k for _, k, _ in units]
    decoder: Any = av.CodecContext.create("libdav1d", "r")
    decoder.extradata = config.data
    frames = [f for p in packets for f in decoder.decode(av.Packet(p.data))]
    frames += decoder.decode(None)
    assert len(frames) == len(units)
    assert {(f.width, f.height) for f in frames} == {(320, 180)}


def test_frames_before_the_first_keyframe_and_after_a_gap_are_held(
    clip: tuple[Units, bytes],
) -> None:
    units, _ = clip
    track = Av1Track()
    frames = [frame_of(rtp_payloads(u, mtu=500, keyframe=k, sized=False)) for u, k, _ in units]
    assert track.feed(frames[3], 0) == []  # not a keyframe
    assert track.dropped == 1
    assert track.feed(frames[10], 1)[-1].keyframe  # type: ignore[union-attr]
    track.wait_for_keyframe()
    assert track.feed(frames[11], 2) == []


def test_a_fragment_whose_start_was_lost_drops_only_that_obu(clip: tuple[Units, bytes]) -> None:
    units, _ = clip
    payloads = rtp_payloads(units[0][0], mtu=24, keyframe=True, sized=False)
    assert len(payloads) > 3 and payloads[1][0] & 0x80  # the second continues the first
    # The first packet lost: the next one continues an OBU nobody began.
    unit = temporal_unit(frame_of(payloads[1:]))
    assert len(unit.data) < len(without_delimiters(units[0][0]))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_give_events_or_nothing(data: bytes) -> None:
    track = Av1Track()
    for event in track.feed(data, 0):
        assert isinstance(event, CodecConfig | MediaPacket)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_a_frame_cut_or_changed_anywhere_is_refused_or_read(cut: int, flip: int) -> None:
    rng = random.Random(cut * 256 + flip)
    body = bytes(rng.randrange(256) for _ in range(200))
    frame = frame_of([bytes([0x08]) + leb128(len(body)) + body])
    damaged = bytearray(frame[: cut % (len(frame) + 1)])
    if damaged:
        damaged[flip % len(damaged)] ^= 0xFF
    track = Av1Track()
    for event in track.feed(bytes(damaged), 0):
        assert isinstance(event, CodecConfig | MediaPacket)
