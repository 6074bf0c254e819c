"""lpstream.media.fmp4 against PyAV: fMP4 files that PyAV's FFmpeg writes (H.264, HEVC, AV1 and
VP9 with AAC or Opus, one fragment per frame and one per GOP) read back as PyAV demuxes them,
fed whole and one byte at a time; cut, corrupted and random bytes; every limit."""

from __future__ import annotations

import copy
import io
import itertools
import struct
from collections.abc import Callable
from fractions import Fraction
from itertools import accumulate
from typing import cast

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpstream.media.av1 import Av1Info, av1_info_from_config
from lpstream.media.fmp4 import (
    MAX_BOX,
    MAX_MOOV,
    MAX_TRUN_SAMPLES,
    Fmp4Event,
    Fmp4Reader,
    Fragment,
    InitSection,
    init_and_media,
)
from lpstream.media.h264 import AvcInfo, avc_info_from_config
from lpstream.media.hevc import HevcInfo, hevc_info_from_config
from lpstream.media.vp9 import vp9_info_from_config

PER_FRAME = "empty_moov+default_base_moof+frag_every_frame+frag_discont"
"""The gateway's movflags: one moof+mdat per frame."""
PER_GOP = "frag_keyframe+empty_moov+default_base_moof"
"""One fragment per GOP, video and sound interleaved in it."""
SIZE = (64, 48)
GOP = 10
FRAMES = 21  # three keyframes
ENCODERS: dict[str, tuple[str, dict[str, str], str]] = {
    "h264": ("libx264", {"preset": "ultrafast", "x264-params": "bframes=2"}, "avc1"),
    "hevc": (
        "libx265",
        {"preset": "ultrafast", "x265-params": "log-level=error:open-gop=0"},
        "hev1",
    ),
    "av1": ("libsvtav1", {"preset": "12", "svtav1-params": f"keyint={GOP}"}, "av01"),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}, "vp09"),
}
CASES = [(codec, flags, "aac") for codec in ENCODERS for flags in (PER_FRAME, PER_GOP)]
CASES.append(("vp9", PER_FRAME, "libopus"))
_CLIPS: dict[tuple[str, str, str, int], bytes] = {}


def encode(codec: str, movflags: str, sound: str = "aac", frames: int = FRAMES) -> bytes:
    """``frames`` frames of a moving picture in ``codec`` with a tone, as fragmented MP4."""
    key = (codec, movflags, sound, frames)
    if key in _CLIPS:
        return _CLIPS[key]
    encoder, options, _ = ENCODERS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4", options={"movflags": movflags}) as out:
        video = cast(av.VideoStream, out.add_stream(encoder, rate=30, options=options))
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        video.codec_context.gop_size = GOP
        audio = cast(
            av.AudioStream, out.add_stream(sound, rate=48_000 if sound == "libopus" else 44_100)
        )
        per_frame = 960 if sound == "libopus" else 1024
        tone = (0.2 * np.sin(np.arange(per_frame) / 4)).astype(np.float32)[None, :]
        rate, samples = audio.codec_context.sample_rate, 0
        for i in range(frames):
            picture = np.full((SIZE[1], SIZE[0], 3), (i * 12) % 256, np.uint8)
            picture[:, (i * 3) % SIZE[0]] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            while samples < (i + 1) * rate / 30:
                chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = rate, samples
                out.mux(audio.encode(chunk))
                samples += per_frame
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    _CLIPS[key] = buffer.getvalue()
    return _CLIPS[key]


def read_all(data: bytes) -> list[Fmp4Event]:
    reader = Fmp4Reader()
    return reader.feed(data) + reader.finish()


def split(events: list[Fmp4Event]) -> tuple[InitSection, list[Fragment]]:
    init, *fragments = events
    assert isinstance(init, InitSection)
    assert all(isinstance(f, Fragment) for f in fragments)
    return init, [f for f in fragments if isinstance(f, Fragment)]


def top_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """(type, offset, size) of the top-level boxes of a well-formed file (32-bit sizes)."""
    boxes, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        boxes.append((kind.decode(), offset, size))
        offset += size
    return boxes


def demux(data: bytes) -> list[tuple[int, int, int, bool]]:
    """(track id, byte offset, dts, keyframe) of every packet PyAV demuxes from ``data``."""
    with av.open(io.BytesIO(data), "r") as container:
        return [
            (p.stream.id, p.pos, int(p.dts), bool(p.is_keyframe))
            for p in container.demux()
            if p.size and p.dts is not None and p.pos is not None
        ]


def decoded_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data), "r") as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize(("codec", "movflags", "sound"), CASES)
def test_the_init_section_describes_the_tracks_pyav_reads(
    codec: str, movflags: str, sound: str
) -> None:
    data = encode(codec, movflags, sound)
    init, _ = split(read_all(data))
    video, audio = init.tracks
    assert (video.handler, video.codec, video.width, video.height) == (
        "vide",
        ENCODERS[codec][2],
        *SIZE,
    )
    assert (audio.handler, audio.codec) == ("soun", "Opus" if sound == "libopus" else "mp4a")
    assert audio.config  # esds or dOps
    with av.open(io.BytesIO(data)) as container:
        streams = {s.id: s for s in container.streams}
        for track in init.tracks:
            assert streams[track.track_id].time_base == Fraction(1, track.timescale)
    readers: dict[str, Callable[[bytes], AvcInfo | HevcInfo | Av1Info]] = {
        "h264": avc_info_from_config,
        "hevc": hevc_info_from_config,
        "av1": av1_info_from_config,
    }
    if codec in readers:
        info = readers[codec](video.config)
        assert (info.width, info.height) == SIZE
    else:
        assert vp9_info_from_config(video.config).bit_depth == 8


@pytest.mark.parametrize(("codec", "movflags", "sound"), CASES)
def test_fragments_hold_the_samples_pyav_demuxes(codec: str, movflags: str, sound: str) -> None:
    data = encode(codec, movflags, sound)
    init, fragments = split(read_all(data))
    packets = demux(data)
    video_id = init.tracks[0].track_id
    start = len(init.data)
    for fragment in fragments:
        end = start + len(fragment.data)
        inside = [p for p in packets if start <= p[1] < end]
        for track in fragment.tracks:
            mine = [p for p in inside if p[0] == track.track_id]
            assert track.sample_count == len(mine)
            assert track.base_decode_time == mine[0][2]
            assert track.first_sample_sync == mine[0][3]
            if track.track_id == video_id:
                # FFmpeg marks sync samples as PyAV reads them back: none after the first here
                assert not any(p[3] for p in mine[1:])
        video = [t for t in fragment.tracks if t.track_id == video_id]
        assert fragment.starts_with_sync == bool(video and video[0].first_sample_sync)
        start = end
    assert sum(t.sample_count for f in fragments for t in f.tracks) == len(packets)
    keyframes = sum(1 for p in packets if p[0] == video_id and p[3])
    assert keyframes == (FRAMES + GOP - 1) // GOP
    assert sum(f.starts_with_sync for f in fragments) == keyframes
    if movflags == PER_GOP:
        assert all(f.starts_with_sync for f in fragments)


@pytest.mark.parametrize(("codec", "movflags", "sound"), CASES)
def test_each_fragment_lasts_until_the_next_one_of_its_track_starts(
    codec: str, movflags: str, sound: str
) -> None:
    _, fragments = split(read_all(encode(codec, movflags, sound)))
    # in one-frame fragments FFmpeg's sound durations do not add up (it writes zero defaults
    # and leaves gaps itself): sound is checked where fragments hold whole GOPs
    tracks = (1, 2) if movflags == PER_GOP else (1,)
    for track_id in tracks:
        runs = [t for f in fragments for t in f.tracks if t.track_id == track_id]
        assert len(runs) > 1
        for run, after in itertools.pairwise(runs):
            assert run.base_decode_time + run.duration == after.base_decode_time


@pytest.mark.parametrize(("codec", "movflags", "sound"), CASES)
def test_init_then_fragments_from_each_keyframe_decode(
    codec: str, movflags: str, sound: str
) -> None:
    data = encode(codec, movflags, sound)
    init, fragments = split(read_all(data))
    assert data.startswith(init.data + b"".join(f.data for f in fragments))
    video_id = init.tracks[0].track_id
    for i, fragment in enumerate(fragments):
        if fragment.starts_with_sync:
            rest = fragments[i:]
            samples = sum(t.sample_count for f in rest for t in f.tracks if t.track_id == video_id)
            assert decoded_frames(init.data + b"".join(f.data for f in rest)) == samples


@pytest.mark.parametrize(("codec", "movflags", "sound"), CASES)
def test_split_matches_the_reader(codec: str, movflags: str, sound: str) -> None:
    data = encode(codec, movflags, sound)
    init, fragments = split(read_all(data))
    head, media = init_and_media(data)
    assert head == init.data
    body = b"".join(f.data for f in fragments)
    assert media.startswith(body)
    assert [kind for kind, _, _ in top_boxes(media[len(body) :])] in ([], ["mfra"])
    assert [kind for kind, _, _ in top_boxes(head)] == ["ftyp", "moov"]
    assert init_and_media(head) == (head, b"")


@pytest.mark.parametrize(("codec", "movflags", "sound"), CASES)
def test_one_byte_at_a_time_gives_each_event_as_its_last_byte_arrives(
    codec: str, movflags: str, sound: str
) -> None:
    data = encode(codec, movflags, sound)
    whole = read_all(data)
    init, fragments = split(whole)
    ends = list(accumulate([len(init.data), *(len(f.data) for f in fragments)]))
    due = [ends[0] + 8, *ends[1:]]  # the init: once the first fragment's first header is in
    reader = Fmp4Reader()
    got: list[Fmp4Event] = []
    for n in range(1, len(data) + 1):
        got += reader.feed(data[n - 1 : n])
        assert len(got) == sum(1 for at in due if at <= n)
    assert got + reader.finish() == whole


def test_a_stream_that_ends_anywhere_ends_cleanly_only_between_fragments() -> None:
    data = encode("av1", PER_FRAME, frames=6)
    whole = read_all(data)
    init, fragments = split(whole)
    ends = set(accumulate([len(init.data), *(len(f.data) for f in fragments)]))
    reader = Fmp4Reader()
    got: list[Fmp4Event] = []
    clean = set()
    for n in range(1, len(data) + 1):
        got += reader.feed(data[n - 1 : n])
        try:
            last = copy.deepcopy(reader).finish()
        except ValueError:
            continue
        clean.add(n)
        assert got + last == whole[: len(got) + len(last)]
    assert clean == ends | {len(data)}


def test_a_plain_frag_keyframe_file_keeps_the_moov_samples_in_its_init() -> None:
    data = encode("vp9", "frag_keyframe")
    init, fragments = split(read_all(data))
    assert [kind for kind, _, _ in top_boxes(init.data)] == ["ftyp", "moov", "mdat"]
    assert init_and_media(data)[0] == init.data
    assert all(f.starts_with_sync for f in fragments)
    assert fragments[0].tracks[0].base_decode_time > 0
    assert decoded_frames(init.data + b"".join(f.data for f in fragments)) == FRAMES


def largesize(data: bytes, offset: int) -> bytes:
    """``data`` with the box at ``offset`` rewritten with a 64-bit largesize header."""
    size, kind = struct.unpack(">I4s", data[offset : offset + 8])
    header = struct.pack(">I4sQ", 1, kind, size + 8)
    return data[:offset] + header + data[offset + 8 :]


def test_largesize_boxes_read_like_the_short_ones() -> None:
    data = encode("av1", PER_FRAME)
    boxes = top_boxes(data)
    moov = next(offset for kind, offset, _ in boxes if kind == "moov")
    last_mdat = next(offset for kind, offset, _ in reversed(boxes) if kind == "mdat")
    changed = largesize(largesize(data, last_mdat), moov)
    init, fragments = split(read_all(data))
    init2, fragments2 = split(read_all(changed))
    assert init2.tracks == init.tracks
    assert len(init2.data) == len(init.data) + 8
    assert [f.tracks for f in fragments2] == [f.tracks for f in fragments]
    assert len(fragments2[-1].data) == len(fragments[-1].data) + 8
    assert init_and_media(changed)[0] == init2.data
    # the rewritten mdat's samples moved by 8 bytes: decode the fragments before it
    before = fragments2[:-1]
    video = sum(t.sample_count for f in before for t in f.tracks if t.track_id == 1)
    assert decoded_frames(init2.data + b"".join(f.data for f in before)) == video


def to_the_end(data: bytes) -> bytes:
    """``data`` up to its last mdat, whose size is rewritten as 0 ("to the end")."""
    offset, size = next((o, s) for kind, o, s in reversed(top_boxes(data)) if kind == "mdat")
    return data[:offset] + b"\0\0\0\0mdat" + data[offset + 8 : offset + size]


def test_a_final_mdat_sized_to_the_end_splits_but_a_live_reader_refuses_it() -> None:
    data = to_the_end(encode("h264", PER_GOP))
    init, media = init_and_media(data)
    assert init + media == data
    reader = Fmp4Reader()
    with pytest.raises(ValueError, match="a live stream has no end"):
        reader.feed(data)
    with pytest.raises(ValueError, match="only a final mdat"):
        init_and_media(b"\0\0\0\0" + data[4:])  # the ftyp sized to the end


def trun_count(data: bytes, count: int) -> bytes:
    """``data`` with the sample count of its first trun set to ``count``."""
    at = data.index(b"trun") + 8
    return data[:at] + count.to_bytes(4, "big") + data[at + 4 :]


def test_a_trun_over_the_sample_limit_is_refused() -> None:
    data = encode("vp9", PER_FRAME)  # runs carry no per-sample fields: any count fits
    _, fragments = split(read_all(trun_count(data, MAX_TRUN_SAMPLES)))
    assert fragments[0].tracks[0].sample_count == MAX_TRUN_SAMPLES
    with pytest.raises(ValueError, match="MAX_TRUN_SAMPLES"):
        read_all(trun_count(data, MAX_TRUN_SAMPLES + 1))


def test_sizes_over_the_limits_are_refused_from_the_header_alone() -> None:
    init, media = init_and_media(encode("vp9", PER_FRAME))
    moof = media[: int.from_bytes(media[:4], "big")]
    mdat = struct.pack(">I4s", MAX_BOX + 1, b"mdat")
    with pytest.raises(ValueError, match="MAX_BOX"):
        Fmp4Reader().feed(init + moof + mdat)
    moov = struct.pack(">I4s", MAX_MOOV + 1, b"moov")
    with pytest.raises(ValueError, match="MAX_MOOV"):
        Fmp4Reader().feed(init[:28] + moov)
    with pytest.raises(ValueError, match="MAX_MOOV"):
        Fmp4Reader().feed(init + struct.pack(">I4s", MAX_MOOV + 1, b"moof"))
    huge = struct.pack(">I4sQ", 1, b"free", MAX_BOX + 1)
    with pytest.raises(ValueError, match="MAX_BOX"):
        Fmp4Reader().feed(huge)
    with pytest.raises(ValueError, match="MAX_BOX"):
        init_and_media(init + huge)
    free = struct.pack(">I4s", MAX_BOX // 2 + 8, b"free")
    reader = Fmp4Reader()
    reader.feed(free)
    with pytest.raises(ValueError, match=r"init section .* over MAX_BOX"):
        reader.feed(b"\0" * (MAX_BOX // 2) + free)


def cut(data: bytes, kind: str, nth: int = 0) -> tuple[int, int]:
    """(offset, end) of the ``nth`` top-level box of ``kind``."""
    offset, size = [(o, s) for k, o, s in top_boxes(data) if k == kind][nth]
    return offset, offset + size


BROKEN: list[tuple[Callable[[bytes], bytes], str]] = [
    (lambda d: d[:-3], "ends inside a box"),
    (lambda d: d[: cut(d, "moof")[1]], "moof without its mdat"),
    (lambda d: d[cut(d, "moof")[0] :], "moof' box before the moov"),
    (lambda d: d[: cut(d, "moof", 1)[0]] + d[cut(d, "moof", 1)[1] :], "mdat with no moof"),
    (lambda d: d[: cut(d, "moof")[1]] + d[cut(d, "moof")[0] :], "moof after a moof"),
    (
        lambda d: d[: cut(d, "moof")[0]] + d[slice(*cut(d, "moov"))] + d[cut(d, "moof")[0] :],
        "second moov",
    ),
    (lambda d: d[: cut(d, "moov")[0]], "without a moov"),
    (lambda d: d[: cut(d, "moof")[0] + 11] + b"\xff" + d[cut(d, "moof")[0] + 12 :], "runs past"),
    (lambda d: d[: cut(d, "moof")[0]] + b"\0\0\0\4free" + d[cut(d, "moof")[0] :], "under its"),
    (lambda d: d[: d.index(b"tfhd") + 8] + b"\0\0\0\x09" + d[d.index(b"tfhd") + 12 :], "track 9"),
]


@pytest.mark.parametrize(("make", "message"), BROKEN)
def test_broken_streams_are_refused_with_the_reason(
    make: Callable[[bytes], bytes], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        read_all(make(encode("vp9", PER_FRAME)))


def test_init_and_media_refuses_what_is_not_a_whole_segment() -> None:
    data = encode("hevc", PER_FRAME)
    moof = data.index(b"moof") - 4
    with pytest.raises(ValueError, match="no moov"):
        init_and_media(data[:28])
    with pytest.raises(ValueError, match="before the moov"):
        init_and_media(data[moof:])
    with pytest.raises(ValueError, match="cut short"):
        init_and_media(data[:-1])
    with pytest.raises(ValueError, match="box header"):
        init_and_media(data + b"\0\0")


def outcome(data: bytes) -> list[Fmp4Event] | str:
    """The reader's events for ``data``, or the reason it refused it; nothing else escapes."""
    try:
        return read_all(data)
    except ValueError as error:
        return str(error)


def check_split(data: bytes) -> None:
    try:
        init, media = init_and_media(data)
    except ValueError:
        return
    assert init + media == data


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_give_events_or_a_value_error(data: bytes) -> None:
    outcome(data)
    outcome(b"\0\0\0\x10ftypisom\0\0\0\0" + data)
    check_split(data)


@_FUZZ
@given(st.sampled_from(CASES), st.data())
def test_a_file_cut_anywhere_gives_a_prefix_of_its_events_or_a_value_error(
    case: tuple[str, str, str], draw: st.DataObject
) -> None:
    data = encode(*case)
    whole = read_all(data)
    cut = draw.draw(st.integers(0, len(data)))
    reader = Fmp4Reader()
    events = reader.feed(data[:cut])
    assert events == whole[: len(events)]
    result = outcome(data[:cut])
    assert isinstance(result, str) or result == whole[: len(result)]
    check_split(data[:cut])


@_FUZZ
@given(st.sampled_from(CASES), st.data())
def test_a_file_with_one_byte_changed_gives_events_or_a_value_error(
    case: tuple[str, str, str], draw: st.DataObject
) -> None:
    data = bytearray(encode(*case))
    at = draw.draw(st.integers(0, len(data) - 1))
    data[at] = draw.draw(st.integers(0, 255))
    result = outcome(bytes(data))
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    reader = Fmp4Reader()
    try:
        pieces: list[Fmp4Event] = []
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            pieces += reader.feed(bytes(data[start:end]))
        pieces += reader.finish()
    except ValueError as error:
        assert isinstance(result, str), error
    else:
        assert pieces == result
    check_split(bytes(data))
