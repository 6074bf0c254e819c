"""Enhanced RTMP video in the RTMP ingest: real HEVC, AV1 and VP9 FLV written by PyAV's
FFmpeg, read tag by tag and checked against PyAV's own demuxer; H.264 under its FourCC;
ModEx built by hand per the spec; the refusals; every body cut at every length; fuzzing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import attrs
import av
import numpy as np
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtmp import RtmpServer
from ingest.rtmp.enhanced import MAX_MOD_EX, VIDEO_FOURCCS
from ingest.rtmp.flv import aggregate_events, audio_events, video_events
from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from tests.mediatools import make_clip, make_enhanced_clip

ENHANCED_CODECS = ("hevc", "av1", "vp9")
"""The codecs an Enhanced RTMP FLV carries that these tests write (VP8 has no FourCC)."""

VIDEO_TAG, AUDIO_TAG = 9, 8
SEQUENCE_START, CODED_FRAMES, SEQUENCE_END, CODED_FRAMES_X, METADATA, MOD_EX = 0, 1, 2, 3, 4, 7


@attrs.frozen
class Tag:
    kind: int
    timestamp: int
    body: bytes


@attrs.frozen
class Clip:
    codec: str
    path: Path
    tags: list[Tag]

    def video(self) -> list[Tag]:
        return [tag for tag in self.tags if tag.kind == VIDEO_TAG]


def flv_tags(path: Path) -> list[Tag]:
    """The tags of an FLV file: 11-byte headers, each tag followed by its back pointer."""
    data = path.read_bytes()
    assert data[:3] == b"FLV"
    pos = int.from_bytes(data[5:9], "big")
    assert data[pos : pos + 4] == bytes(4)
    pos += 4
    tags = []
    while pos < len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        body = data[pos + 11 : pos + 11 + size]
        assert int.from_bytes(data[pos + 11 + size : pos + 15 + size], "big") == 11 + size
        tags.append(Tag(data[pos] & 0x1F, timestamp, body))
        pos += 15 + size
    return tags


def demuxed(path: Path) -> tuple[bytes, list[MediaPacket]]:
    """PyAV's reading of a clip's video: the extradata, and the packets as ingest values."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base == Fraction(1, 1000)
        extradata = bytes(stream.codec_context.extradata or b"")
        packets = []
        for packet in container.demux(stream):
            if packet.size:
                assert packet.dts is not None and packet.pts is not None
                packets.append(
                    MediaPacket(
                        kind=TrackKind.VIDEO,
                        dts=packet.dts,
                        pts=packet.pts,
                        keyframe=packet.is_keyframe,
                        data=bytes(packet),
                    )
                )
    return extradata, packets


def events_of(tags: list[Tag], read: Callable[[int, bytes], list[MediaEvent]]) -> list[MediaEvent]:
    return [event for tag in tags for event in read(tag.timestamp, tag.body)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    """Twelve frames (GOP 5) of each codec with AAC sound; H.264 the legacy way (ffmpeg)."""
    folder = tmp_path_factory.mktemp("eflv")
    made = {"h264": make_clip(folder / "h264.flv", seconds=0.4, size="320x240", gop=5)}
    for codec in ENHANCED_CODECS:
        made[codec] = make_enhanced_clip(folder / f"{codec}.flv", codec, seconds=0.4, gop=5)
    return {codec: Clip(codec, path, flv_tags(path)) for codec, path in made.items()}


# -- real media -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9"])
def test_ffmpeg_enhanced_flv_reads_as_pyav_demuxes_it(clips: dict[str, Clip], codec: str) -> None:
    clip = clips[codec]
    fourcc = {value: key for key, value in VIDEO_FOURCCS.items()}[codec]
    assert all(tag.body[0] & 0x80 and tag.body[1:5] == fourcc for tag in clip.video())
    events = events_of(clip.video(), video_events)
    extradata, packets = demuxed(clip.path)
    assert extradata
    assert [e for e in events if isinstance(e, CodecConfig)] == [
        CodecConfig(kind=TrackKind.VIDEO, codec=codec, data=extradata)
    ]
    assert [e for e in events if isinstance(e, MediaPacket)] == packets
    assert len(packets) == 12
    assert packets[0].keyframe
    assert not all(p.keyframe for p in packets)
    with av.open(str(clip.path)) as container:  # the name is FFmpeg's own for the codec
        assert container.streams.video[0].codec_context.codec.id == av.Codec(codec, "r").id


def test_the_clips_exercise_composition_offsets_and_colour_metadata(
    clips: dict[str, Clip],
) -> None:
    hevc = [p for p in events_of(clips["hevc"].video(), video_events) if isinstance(p, MediaPacket)]
    assert any(p.pts != p.dts for p in hevc)  # x265's B-frames: CodedFrames with an offset
    for codec in ("hevc", "av1", "vp9"):  # FFmpeg writes colorInfo as a Metadata packet
        types = {tag.body[0] & 0x0F for tag in clips[codec].video()}
        assert {SEQUENCE_START, CODED_FRAMES, METADATA} <= types


def test_the_sound_beside_enhanced_video_stays_legacy_aac(clips: dict[str, Clip]) -> None:
    audio = [tag for tag in clips["av1"].tags if tag.kind == AUDIO_TAG]
    assert audio and all(tag.body[0] >> 4 == 10 for tag in audio)  # FFmpeg 8 writes AAC so
    events = events_of(audio, audio_events)
    with av.open(str(clips["av1"].path)) as container:
        stream = container.streams.audio[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        frames = [bytes(p) for p in container.demux(stream) if p.size]
    assert events[0] == CodecConfig(kind=TrackKind.AUDIO, codec="aac", data=extradata)
    assert [e.data for e in events[1:] if isinstance(e, MediaPacket)] == frames


def as_avc1(body: bytes, *, explicit: bool) -> bytes:
    """A legacy AVC body rewritten under the ``avc1`` FourCC: a frame as CodedFramesX (offset
    zero implied) when its offset is zero, unless ``explicit``."""
    frame_type, packet_type, offset = body[0] >> 4, body[1], body[2:5]
    if packet_type == CODED_FRAMES and offset == bytes(3) and not explicit:
        return bytes((0x80 | frame_type << 4 | CODED_FRAMES_X,)) + b"avc1" + body[5:]
    if packet_type == CODED_FRAMES:
        return bytes((0x80 | frame_type << 4 | CODED_FRAMES,)) + b"avc1" + body[2:]
    return bytes((0x80 | frame_type << 4 | packet_type,)) + b"avc1" + body[5:]


def test_h264_under_its_fourcc_gives_what_legacy_avc_gives(clips: dict[str, Clip]) -> None:
    legacy = clips["h264"].video()
    enhanced = [
        Tag(t.kind, t.timestamp, as_avc1(t.body, explicit=i % 2 == 1)) for i, t in enumerate(legacy)
    ]
    assert {t.body[0] & 0x0F for t in enhanced} >= {CODED_FRAMES, CODED_FRAMES_X, SEQUENCE_END}
    events = events_of(enhanced, video_events)
    assert events == events_of(legacy, video_events)
    extradata, packets = demuxed(clips["h264"].path)
    assert events[0] == CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=extradata)
    assert events[1:] == packets


def test_enhanced_tags_in_an_aggregate_message(clips: dict[str, Clip]) -> None:
    tags = clips["hevc"].video()
    aggregate = b"".join(
        bytes((t.kind,))
        + len(t.body).to_bytes(3, "big")
        + (t.timestamp + 7000).to_bytes(3, "big")
        + bytes(4)
        + t.body
        + (11 + len(t.body)).to_bytes(4, "big")
        for t in tags
    )
    shifted = [Tag(t.kind, t.timestamp + 500, t.body) for t in tags]
    assert aggregate_events(500, aggregate) == events_of(shifted, video_events)


def header_size(body: bytes) -> int:
    """Bytes ahead of the data in one of FFmpeg's E-RTMP bodies (it writes no ModEx)."""
    with_offset = body[0] & 0x0F == CODED_FRAMES and body[1:5] in (b"hvc1", b"avc1")
    return 5 + 3 * with_offset


def cut_short(events: list[MediaEvent], data: bytes) -> MediaEvent:
    """The one event of a whole body, with the data a cut of it carries (the message length
    bounds the body: a cut record or frame reads as a shorter one)."""
    (event,) = events
    if isinstance(event, CodecConfig):
        return attrs.evolve(event, data=data)
    assert isinstance(event, MediaPacket)
    return attrs.evolve(event, data=data)


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9"])
def test_every_real_body_cut_at_every_length(clips: dict[str, Clip], codec: str) -> None:
    for tag in clips[codec].video():
        whole = video_events(tag.timestamp, tag.body)
        head = header_size(tag.body)
        fourcc = tag.body[1:5].decode()
        assert video_events(tag.timestamp, b"") == []
        for size in range(1, len(tag.body)):
            cut = tag.body[:size]
            if size < head:
                with pytest.raises(RemoteProtocolError, match="truncated enhanced RTMP video"):
                    video_events(tag.timestamp, cut)
            elif not whole:
                assert video_events(tag.timestamp, cut) == []
            elif size == head and isinstance(whole[0], CodecConfig):
                with pytest.raises(RemoteProtocolError, match=f"empty {fourcc!r} sequence start"):
                    video_events(tag.timestamp, cut)
            elif size == head:
                assert video_events(tag.timestamp, cut) == []
            else:
                assert video_events(tag.timestamp, cut) == [cut_short(whole, tag.body[head:size])]


# -- ModEx, built per the spec -----------------------------------------------------------------


def mod_ex(data: bytes, mod_type: int, next_type: int) -> bytes:
    """One ModEx: its size (``UI8 + 1``, or 255 then ``UI16 + 1``), data, type and next
    packet type."""
    size = len(data) - 1
    head = bytes((size,)) if size < 255 else b"\xff" + size.to_bytes(2, "big")
    return head + data + bytes((mod_type << 4 | next_type,))


def test_a_timestamp_offset_modifier_ahead_of_an_hevc_frame() -> None:
    nanos = (750_000).to_bytes(3, "big")  # within the spec: under 1 ms
    body = (
        b"\x97" + mod_ex(nanos, 0, CODED_FRAMES) + b"hvc1" + (-40).to_bytes(3, "big", signed=True)
    )
    assert video_events(1000, body + b"\x00\x00\x00\x02\x26\x01") == [
        MediaPacket(kind=TrackKind.VIDEO, dts=1000, pts=960, keyframe=True, data=b"\0\0\0\2\x26\1")
    ]


def test_modifiers_chained_sized_in_16_bits_or_unknown_are_taken_in_order() -> None:
    big_unknown = mod_ex(bytes(300), 5, MOD_EX)  # 300 bytes: the 16-bit size form
    nanos = mod_ex((2_500_000).to_bytes(3, "big") + b"\x00", 0, CODED_FRAMES_X)  # FFmpeg: +2 ms
    body = b"\xa7" + big_unknown + nanos + b"av01" + b"\x12\x00"
    assert video_events(40, body) == [
        MediaPacket(kind=TrackKind.VIDEO, dts=42, pts=42, keyframe=False, data=b"\x12\x00")
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x97\x05\x00\x00", "the ModEx data needs 6 bytes, 2 left"),
        (b"\x97\xff\x01", "the ModEx 16-bit size needs 2 bytes, 1 left"),
        (b"\x97\x00\x00", "the ModEx type needs 1 bytes, 0 left"),
        (b"\x97" + mod_ex(b"\x00\x01", 0, CODED_FRAMES) + b"hvc1", "TimestampOffsetNano of 2"),
        (b"\x97" + mod_ex(b"x", 3, MOD_EX) * (MAX_MOD_EX + 1), f"more than {MAX_MOD_EX} ModEx"),
    ],
)
def test_a_bad_modifier_is_a_remote_error(body: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        video_events(0, body)
    assert info.value.code == 400


# -- what is not taken --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x91xxxx\x00\x00\x00\x01", "unsupported video codec 'xxxx' \\(enhanced RTMP\\)"),
        (b"\x90vp08\x01", "unsupported video codec 'vp08'.*accepted: avc1.*hvc1.*av01.*vp09"),
        (b"\x90Opus\x01", "unsupported video codec 'Opus'"),
        (b"\x90\x00\xff\x01\x02x", "unsupported video codec '\\\\x00ÿ\\\\x01\\\\x02'"),
        (b"\x96\x01hvc1\x00xx", "multitrack E-RTMP is not supported \\(video 'hvc1'\\)"),
        (
            b"\x96\x21av01\x00\x00\x00\x02xx",
            "multitrack E-RTMP is not supported \\(video 'av01'\\)",
        ),
        (b"\x96\x00", "multitrack E-RTMP is not supported \\(video\\)"),
        (b"\x95av01\x01\x02\x03", "'av01' in the MPEG-2 TS descriptor form"),
    ],
)
def test_what_is_not_taken_is_refused_with_415(body: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        video_events(0, body)
    assert info.value.code == 415


def test_ffmpeg_opus_audio_in_enhanced_flv_is_refused_naming_opus(tmp_path: Path) -> None:
    path = tmp_path / "opus.flv"
    with av.open(str(path), "w", format="flv") as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        for i in range(3):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), "flt", "mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    audio = [tag for tag in flv_tags(path) if tag.kind == AUDIO_TAG]
    assert len(audio) >= 3
    for tag in audio:
        assert tag.body[0] >> 4 == 9
        with pytest.raises(RemoteProtocolError, match="unsupported audio codec 'Opus'") as info:
            audio_events(tag.timestamp, tag.body)
        assert info.value.code == 415


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (b"\x90fLaC\x00", "unsupported audio codec 'fLaC' \\(enhanced RTMP\\)", 415),
        (b"\x97" + mod_ex(b"\0\0\1", 0, 1) + b"ac-3", "unsupported audio codec 'ac-3'", 415),
        (b"\x95\x00Opus\x00", "multitrack E-RTMP is not supported \\(audio 'Opus'\\)", 415),
        (b"\x90Op", "truncated enhanced RTMP audio message: the FourCC needs 4 bytes", 400),
    ],
)
def test_enhanced_audio_is_refused(body: bytes, message: str, code: int) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        audio_events(0, body)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x9fhvc1", "reserved enhanced RTMP video packet type 15"),
        (b"\x81hvc1\x00\x00\x00x", "reserved video frame type 0"),
        (b"\xe1hvc1\x00\x00\x00x", "reserved video frame type 6"),
        (b"\x90hvc1", "empty 'hvc1' sequence start"),
        (b"\x91hvc1\x00\x00", "the composition time needs 3 bytes, 2 left"),
        (b"\x91av0", "the FourCC needs 4 bytes, 3 left"),
    ],
)
def test_a_body_against_the_spec_is_a_remote_error(body: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        video_events(0, body)
    assert info.value.code == 400


def test_bodies_without_a_picture_give_nothing() -> None:
    assert video_events(0, b"\xd1\x00") == []  # a command frame: no FourCC, one command byte
    assert video_events(0, b"\xd0") == []
    assert video_events(0, b"\x92vp09") == []  # SequenceEnd
    assert video_events(0, b"\x91vp09") == []  # an empty frame
    colour = b"\x02\x00\x09colorInfo\x03\x00\x00\x09"
    assert video_events(0, b"\xd4hvc1" + colour) == []  # Metadata, as FFmpeg writes it
    assert video_events(0, b"\x84vp09\xff") == []  # Metadata ignores the frame type


# -- properties --------------------------------------------------------------------------------

modifiers = st.lists(
    st.one_of(
        st.tuples(st.just(0), st.binary(min_size=3, max_size=4)),
        st.tuples(st.integers(1, 15), st.binary(min_size=1, max_size=300)),
    ),
    max_size=3,
)


@settings(deadline=None)
@given(
    frame_type=st.integers(1, 4),
    packet_type=st.sampled_from([SEQUENCE_START, CODED_FRAMES, SEQUENCE_END, CODED_FRAMES_X]),
    fourcc=st.sampled_from(sorted(VIDEO_FOURCCS)),
    offset=st.integers(-(1 << 23), (1 << 23) - 1),
    data=st.binary(min_size=1, max_size=64),
    mods=modifiers,
    timestamp=st.integers(0, (1 << 32) - 1),
)
def test_any_well_formed_body_reads_back(
    frame_type: int,
    packet_type: int,
    fourcc: bytes,
    offset: int,
    data: bytes,
    mods: list[tuple[int, bytes]],
    timestamp: int,
) -> None:
    chain = [MOD_EX] * len(mods) + [packet_type]
    body = bytes((0x80 | frame_type << 4 | chain[0],))
    for (mod_type, mod_data), next_type in zip(mods, chain[1:], strict=True):
        body += mod_ex(mod_data, mod_type, next_type)
    with_offset = packet_type == CODED_FRAMES and fourcc in (b"avc1", b"hvc1")
    body += fourcc + (offset.to_bytes(3, "big", signed=True) if with_offset else b"") + data
    shift = sum(int.from_bytes(d[:3], "big") // 1_000_000 for t, d in mods if t == 0)
    expected: list[MediaEvent] = []
    if packet_type == SEQUENCE_START:
        expected = [CodecConfig(kind=TrackKind.VIDEO, codec=VIDEO_FOURCCS[fourcc], data=data)]
    elif packet_type != SEQUENCE_END:
        dts = timestamp + shift
        pts = dts + offset if with_offset else dts
        keyframe = frame_type == 1
        expected = [
            MediaPacket(kind=TrackKind.VIDEO, dts=dts, pts=pts, keyframe=keyframe, data=data)
        ]
    assert video_events(timestamp, body) == expected


def outcome(read: Callable[[int, bytes], list[MediaEvent]], body: bytes) -> str:
    """``events`` or ``refused``: anything else (another exception) fails the test."""
    try:
        events = read(0, body)
    except RemoteProtocolError as exc:
        assert exc.code in (400, 415)
        return "refused"
    assert all(isinstance(e, CodecConfig | MediaPacket) for e in events)
    return "events"


@settings(deadline=None, max_examples=500)
@given(head=st.integers(0x80, 0xFF), rest=st.binary(max_size=80))
def test_random_enhanced_video_bodies_give_events_or_a_remote_error(head: int, rest: bytes) -> None:
    assert outcome(video_events, bytes((head,)) + rest) in ("events", "refused")


@settings(deadline=None, max_examples=200)
@given(head=st.integers(0x90, 0x9F), rest=st.binary(max_size=40))
def test_random_enhanced_audio_bodies_are_refused(head: int, rest: bytes) -> None:
    assert outcome(audio_events, bytes((head,)) + rest) == "refused"


@settings(deadline=None, max_examples=300)
@given(data=st.data())
def test_real_bodies_with_a_byte_changed_give_events_or_a_remote_error(
    clips: dict[str, Clip], data: st.DataObject
) -> None:
    tags = [t for c in ("hevc", "av1", "vp9") for t in clips[c].video()]
    body = bytearray(data.draw(st.sampled_from(tags)).body)
    where = data.draw(st.integers(0, min(len(body), 16) - 1))
    body[where] = data.draw(st.integers(0, 255))
    assert outcome(video_events, bytes(body)) in ("events", "refused")


# -- FFmpeg's RTMP client against the server ----------------------------------------------------


@attrs.define
class Recorder:
    events: list[MediaEvent] = attrs.field(factory=list)
    closed: trio.Event = attrs.field(factory=trio.Event)

    async def send(self, event: MediaEvent) -> None:
        self.events.append(event)

    async def aclose(self) -> None:
        self.closed.set()


@attrs.define
class OneStream:
    recorder: Recorder = attrs.field(factory=Recorder)

    async def start_publish(self, stream_name: str, **who: object) -> Recorder:
        assert stream_name == "cam"
        return self.recorder


PUSH = """
import sys, av
for target in sys.argv[2:]:
    with av.open(sys.argv[1]) as source, av.open(target, "w", format="flv") as out:
        video = source.streams.video[0]
        stream = out.add_stream_from_template(video, opaque=True)
        for packet in source.demux(video):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
"""
"""Copies a clip's video to a file and to an RTMP URL (PyAV's own RTMP client, FFmpeg 8)
alike: a copy rewrites the configuration record from the stream's parameters, so the file
says what was sent. It runs in a process of its own: PyAV holds the GIL while it waits on
the socket."""


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9"])
async def test_ffmpeg_publishes_over_enhanced_rtmp(
    clips: dict[str, Clip], codec: str, tmp_path: Path
) -> None:
    handler = OneStream()
    server = RtmpServer(handler=handler)
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(server.serve, "127.0.0.1", 0)
        url = f"rtmp://127.0.0.1:{port}/live/cam"
        sent = tmp_path / "sent.flv"
        with trio.fail_after(30):
            await trio.run_process(
                [sys.executable, "-c", PUSH, str(clips[codec].path), str(sent), url]
            )
            await handler.recorder.closed.wait()
        nursery.cancel_scope.cancel()
    extradata, packets = demuxed(sent)
    assert len(packets) == 12
    media = [e for e in handler.recorder.events if isinstance(e, CodecConfig | MediaPacket)]
    assert media == [CodecConfig(kind=TrackKind.VIDEO, codec=codec, data=extradata), *packets]
