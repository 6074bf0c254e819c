"""HEVC and AV1 renditions: profiles that ask for them, the wire that carries them, and real
libx265 and SVT-AV1 encodes read back by PyAV and ffprobe as fragmented MP4."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs
import av
import msgspec
import pytest

from ingest.segmenter import Segmenter
from lpstream.errors import MediaError, RemoteProtocolError
from lpstream.media import DEFAULT_PROFILES, OUTPUT_CODECS, VideoProfile, parse_profiles
from lpstream.media.segment_format import segment_format
from lpstream.wire import FrameDecoder, FrameType, Job, ProfileSpec
from lpstream.wire.framing import encode_frame
from lpstream.wire.messages import decode_message, encode_message
from tests.ingest.test_segmenter import run_segmenter
from tests.mediatools import make_enhanced_clip
from tests.workers import test_transcode
from tests.workers.test_transcode import Collector, MakeTs, inspect_ts, run_ladder
from workers import LadderTranscoder, transcode_file
from workers.gpu import CPU_ENCODERS, NVENC_ENCODERS, encoder_for, nvenc_available
from workers.ladder.encoding import SVT_AV1_PRESETS, encoder_options
from workers.ladder.plan import plan_rendition

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

make_ts = test_transcode.make_ts
"""The MPEG-TS clip fixture of the H.264 ladder's tests."""

HEVC = VideoProfile(name="540p-hevc", width=960, height=540, bitrate=900_000, codec="hevc")
AV1 = VideoProfile(name="360p-av1", width=640, height=360, bitrate=300_000, codec="av1")


@attrs.frozen
class Mp4Info:
    """What a player sees in a fragmented MP4 rendition."""

    codec: str
    tag: str
    width: int
    height: int
    frame_pts: list[int]
    key_pts: list[int]
    audio_frames: int
    fragments: int
    """``moof`` boxes at the top level."""
    top_boxes: list[str]


def inspect_mp4(data: bytes) -> Mp4Info:
    boxes = top_level_boxes(data)
    with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
        video = container.streams.video[0]
        frame_pts: list[int] = []
        key_pts: list[int] = []
        audio_frames = 0
        for packet in container.demux():
            if packet.stream.type == "audio":
                audio_frames += len(packet.decode())
                continue
            if packet.is_keyframe and packet.pts is not None:
                key_pts.append(packet.pts)
            for frame in video.decode(packet):
                assert frame.pts is not None
                frame_pts.append(frame.pts)
        assert video.time_base == Fraction(1, 90_000)
        return Mp4Info(
            codec=video.codec_context.codec.name,
            tag=video.codec_tag,
            width=video.codec_context.width,
            height=video.codec_context.height,
            frame_pts=frame_pts,
            key_pts=key_pts,
            audio_frames=audio_frames,
            fragments=boxes.count("moof"),
            top_boxes=boxes,
        )


def top_level_boxes(data: bytes) -> list[str]:
    boxes, at = [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        assert size >= 8, f"bad box size at {at}"
        boxes.append(kind.decode("latin-1"))
        at += size
    assert at == len(data)
    return boxes


# -- real encodes --------------------------------------------------------------------------


@pytest.mark.slow
def test_hevc_and_av1_renditions_next_to_the_default_ladder_keep_the_source_timeline(
    make_ts: MakeTs,
) -> None:
    source = make_ts(size="1280x720", gop=30)
    src = inspect_ts(source)
    assert len(src.frame_pts) == 60 and len(src.key_pts) == 2
    ladder = (*DEFAULT_PROFILES, HEVC, AV1)

    results, collector = run_ladder(source, ladder)

    assert [(r.name, r.width, r.height, r.frames) for r in results] == [
        ("360p", 640, 360, 60),
        ("240p", 426, 240, 60),
        ("540p-hevc", 960, 540, 60),
        ("360p-av1", 640, 360, 60),
    ]
    for index in (0, 1):  # H.264 stays MPEG-TS, as it was
        data = collector.output(index)
        assert segment_format(data) == "mpegts" and data[0] == 0x47
        ts = inspect_ts(data)
        assert ts.frame_pts == src.frame_pts and ts.key_pts == src.key_pts
    for index, (codec, tag) in ((2, ("hevc", "hvc1")), (3, ("libdav1d", "av01"))):
        data = collector.output(index)
        result = results[index]
        assert data[4:8] == b"ftyp" and segment_format(data) == "mp4"
        assert len(collector.chunks[index]) > 1  # streamed out, not handed over at the end
        out = inspect_mp4(data)
        assert (out.codec, out.tag) == (codec, tag)
        assert (out.width, out.height) == (result.width, result.height)
        # CMAF: init section (ftyp + empty moov), then moof + mdat pairs, every 100 ms.
        assert out.top_boxes[:2] == ["ftyp", "moov"]
        assert out.fragments >= 15
        assert result.size == len(data) and result.duration_ms == 2000
        # Every frame decodes, at the source's timestamps (90 kHz, no shift), and GOPs line up
        # with the source's (its second keyframe is inside the profile's 2 s GOP: forced).
        assert out.frame_pts == src.frame_pts
        assert out.key_pts == src.key_pts
        assert out.audio_frames > 80  # ~2 s of 1024-sample AAC frames at 48 kHz
        # Rate control holds to the profile's bitrate (video plus 64 kb/s of audio).
        assert result.size * 8 / 2 < result_bitrate_ceiling(ladder[index])


def result_bitrate_ceiling(profile: VideoProfile) -> float:
    return profile.bitrate * 1.5 + 64_000 * 1.1


def video_packets(data: bytes) -> list[tuple[int, int]]:
    """(pts, size) of a fragmented MP4 rendition's video packets, in presentation order."""
    with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
        video = container.streams.video[0]
        return sorted(
            (p.pts, p.size) for p in container.demux(video) if p.size and p.pts is not None
        )


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [2, 4], ids=["one-segment", "two-gops"])
def test_no_two_seconds_of_an_av1_rendition_take_much_more_than_its_bitrate(
    make_ts: MakeTs, seconds: int
) -> None:
    # The orchestrator and the gateway hold segments to sizes made from the bitrate: each
    # window of 60 frames (2 s at 30 fps), wherever it starts, stays within 1.4 times it,
    # for a segment encoded alone (as a worker does) and across a GOP boundary. SVT-AV1's
    # constant bitrate measured 1.18 to 1.28 here from run to run (its threads make it vary
    # on a loaded machine); its variable bitrate reached 1.6, which this refuses.
    source = make_ts(size="1280x720", seconds=seconds, gop=60)
    profile = attrs.evolve(AV1, bitrate=500_000)

    _, collector = run_ladder(source, (profile,))

    sizes = [size for _, size in video_packets(collector.output(0))]
    assert len(sizes) == 30 * seconds
    windows = [sum(sizes[at : at + 60]) * 8 / 2 for at in range(len(sizes) - 59)]
    assert max(windows) <= profile.bitrate * 1.4
    assert sum(sizes) * 8 / seconds > profile.bitrate * 0.7  # the bits are spent, not starved


@pytest.mark.parametrize("profile", [HEVC, AV1], ids=["hevc", "av1"])
def test_every_source_keyframe_is_a_keyframe_of_the_rendition(
    make_ts: MakeTs, profile: VideoProfile
) -> None:
    source = make_ts(
        seconds=2,
        gop=1000,
        video_args=("-preset", "ultrafast", "-sc_threshold", "0", "-force_key_frames", "0,0.4,1.3"),
    )
    src = inspect_ts(source)
    assert len(src.key_pts) == 3

    _, collector = run_ladder(source, (attrs.evolve(profile, width=320, height=180),))

    out = inspect_mp4(collector.output(0))
    assert out.key_pts == src.key_pts
    assert out.frame_pts == src.frame_pts


def test_transcode_file_writes_mp4_renditions_that_ffprobe_reads(
    make_ts: MakeTs, tmp_path: Path
) -> None:
    src = tmp_path / "in.ts"
    src.write_bytes(make_ts(seconds=1))
    small = tuple(attrs.evolve(p, width=320, height=180) for p in (HEVC, AV1))

    results = transcode_file(src, tmp_path / "out", (DEFAULT_PROFILES[1], *small), encoder="x264")

    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["240p.ts", "360p-av1.mp4", "540p-hevc.mp4"]
    for result, codec in zip(results[1:], ("hevc", "av1"), strict=True):
        path = tmp_path / "out" / f"{result.name}.mp4"
        probe = subprocess.run(
            [
                *("ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height"),
                *("-of", "csv=p=0", str(path)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert set(probe.stdout.split()) == {f"{codec},{result.width},{result.height}", "aac"}
        assert path.stat().st_size == result.size


def init_section(data: bytes) -> bytes:
    """The ``ftyp`` and ``moov`` boxes of a rendition: what HLS serves as its EXT-X-MAP."""
    out, at = b"", 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind in (b"ftyp", b"moov"):
            out += data[at : at + size]
        at += size
    return out


def test_every_segment_of_a_stream_has_the_same_init_section(make_ts: MakeTs) -> None:
    small = tuple(attrs.evolve(p, width=320, height=180) for p in (HEVC, AV1))
    inits = []
    for content in ("testsrc2", "testsrc"):  # other pictures, other audio bit rate
        _, collector = run_ladder(make_ts(seconds=1, source=content), small)
        inits.append([init_section(collector.output(i)) for i in range(len(small))])

    assert inits[0] == inits[1]
    assert all(len(init) > 500 for init in inits[0])


class Identity:
    """A live stage that hands every frame on as it comes."""

    def push(self, frame: av.VideoFrame, /) -> list[av.VideoFrame]:
        return [frame]

    def flush(self) -> list[av.VideoFrame]:
        return []


@pytest.mark.parametrize("profile", [HEVC, AV1], ids=["hevc", "av1"])
def test_a_staged_rendition_in_hevc_or_av1_streams_fragments_with_its_sound(
    make_ts: MakeTs, profile: VideoProfile
) -> None:
    # A live job's input is not parsed into frames: its audio packets may hold several ADTS
    # frames, which MP4 must get one by one.
    source = make_ts(seconds=2, size="320x180")
    src = inspect_ts(source)
    position = 0

    class TsPacketsReader:
        def read(self, size: int = -1) -> bytes:
            nonlocal position
            chunk = source[position : position + min(size, 7 * 188)]
            position += len(chunk)
            return chunk

    collector = Collector()
    small = attrs.evolve(profile, width=320, height=180)
    [result] = LadderTranscoder((small,), stages={small.name: Identity()}).transcode(
        TsPacketsReader(), collector
    )

    data = collector.output(0)
    out = inspect_mp4(data)
    assert result.frames == len(out.frame_pts) == 60
    assert out.frame_pts == src.frame_pts and out.key_pts == src.key_pts
    assert len(src.audio_pts) > 80 and out.audio_frames >= len(src.audio_pts) - 2
    assert len(collector.chunks[0]) >= out.fragments  # each fragment left as it was written


def test_an_av1_fragmented_mp4_segment_makes_an_hevc_rendition(tmp_path: Path) -> None:
    # Its AAC comes with an AudioSpecificConfig (no ADTS): copied as it is.
    clip = make_enhanced_clip(tmp_path / "in.flv", "av1", seconds=4, gop=60, size=(640, 360))
    done, data = run_segmenter(clip, Segmenter(target_duration=1.5))
    segment = data[done[1].seq]
    assert segment_format(segment) == "mp4"
    with av.open(io.BytesIO(segment), mode="r") as container:
        source_ms = [round(float(frame.time) * 1000) for frame in container.decode(video=0)]

    results, collector = run_ladder(segment, (attrs.evolve(HEVC, width=320, height=180),))

    out = inspect_mp4(collector.output(0))
    assert results[0].frames == len(out.frame_pts) == len(source_ms)
    assert [round(pts / 90) for pts in out.frame_pts] == pytest.approx(sorted(source_ms), abs=1)
    assert out.audio_frames > 60


def test_an_unknown_codec_in_a_profile_built_in_code_is_a_media_error() -> None:
    unchecked = VideoProfile(name="p", width=320, height=180, bitrate=200_000, codec="vp8")
    with pytest.raises(MediaError, match="vp8"):
        plan_rendition(
            0,
            unchecked,
            source_size=(640, 360),
            source_rate=Fraction(30),
            tick=Fraction(1, 90_000),
            encoder="libx264",
            live=False,
        )


# -- plans and encoder options -----------------------------------------------------------------


def plan(profile: VideoProfile, *, live: bool = False, encoder: str = "libx264") -> Any:
    return plan_rendition(
        0,
        profile,
        source_size=(1280, 720),
        source_rate=Fraction(30),
        tick=Fraction(1, 90_000),
        encoder=encoder,
        live=live,
    )


def test_an_h264_rendition_is_planned_as_before() -> None:
    h264 = plan(DEFAULT_PROFILES[0])

    assert (h264.encoder, h264.container, h264.codec_tag) == ("libx264", "mpegts", "")
    assert dict(h264.mux_options) == {
        "mpegts_copyts": "1",
        "avoid_negative_ts": "disabled",
        "max_interleave_delta": "1000000",
    }
    assert dict(h264.encoder_options) == {
        "maxrate": "480000",
        "bufsize": "800000",
        "forced-idr": "1",
        "preset": "veryfast",
        "x264-params": "scenecut=0:keyint=60:min-keyint=60",
    }


@pytest.mark.parametrize("live", [False, True])
def test_hevc_and_av1_renditions_are_planned_as_fragmented_mp4(live: bool) -> None:
    hevc, av1_ = plan(HEVC, live=live), plan(AV1, live=live)

    assert (hevc.encoder, hevc.container, hevc.codec_tag) == ("libx265", "mp4", "hvc1")
    assert (av1_.encoder, av1_.container, av1_.codec_tag) == ("libsvtav1", "mp4", "")
    for planned in (hevc, av1_):
        options = dict(planned.mux_options)
        assert options["movflags"] == "empty_moov+default_base_moof+frag_discont"
        assert options["frag_duration"] == "100000"
        assert "frag_every_frame" not in options["movflags"]
        assert options["avoid_negative_ts"] == "disabled"
        assert options["video_track_timescale"] == "90000"
        assert options["use_editlist"] == "0"
        assert options.get("flush_packets") == ("1" if live else None)
    x265 = hevc.encoder_options["x265-params"].split(":")
    assert {"scenecut=0", "open-gop=0", "keyint=60", "min-keyint=60"} <= set(x265)
    assert hevc.encoder_options["forced-idr"] == "1"
    assert hevc.encoder_options["maxrate"] == "1080000"
    assert hevc.encoder_options.get("tune") == ("zerolatency" if live else None)
    svt = av1_.encoder_options["svtav1-params"].split(":")
    assert {"scd=0", "keyint=60", "irefresh-type=2"} <= set(svt)
    # Constant bitrate over a two-second buffer, no reordered frames, live or not.
    assert {"rc=2", "pred-struct=1"} <= set(svt)
    assert av1_.encoder_options["bufsize"] == "600000"
    assert av1_.encoder_options["preset"] == "7"


@pytest.mark.parametrize(
    "encoder", sorted({*CPU_ENCODERS.values(), *NVENC_ENCODERS.values()} - {"libx264"})
)
@pytest.mark.parametrize("live", [False, True])
def test_every_encoder_option_is_one_the_encoder_knows(encoder: str, live: bool) -> None:
    if encoder not in av.codecs_available:
        pytest.skip(f"PyAV has no {encoder}")
    supported = av.CodecContext.create(encoder, "w").supported_options
    known = {o.name for o in supported.generic} | {o.name for o in supported.private}
    pairs = [*CPU_ENCODERS.items(), *NVENC_ENCODERS.items()]
    codec = next(c for c, e in pairs if e == encoder)
    profile = attrs.evolve(HEVC, codec=codec)

    options = encoder_options(encoder, profile, Fraction(30), live=live)

    assert set(options) <= known


X264_PRESETS = (
    *("ultrafast", "superfast", "veryfast", "faster", "fast"),
    *("medium", "slow", "slower", "veryslow", "placebo"),
)


def test_svt_av1_presets_follow_the_documented_mapping() -> None:
    assert set(SVT_AV1_PRESETS) == set(X264_PRESETS)
    assert SVT_AV1_PRESETS["veryfast"] == 7 and SVT_AV1_PRESETS["medium"] == 5
    assert max(SVT_AV1_PRESETS.values()) <= 9  # SVT-AV1's faster presets are for tooling
    speeds = [SVT_AV1_PRESETS[name] for name in X264_PRESETS]
    assert speeds == sorted(speeds, reverse=True)  # slower x264 names, slower SVT presets
    for name in X264_PRESETS:
        options = encoder_options("libsvtav1", attrs.evolve(AV1, preset=name), Fraction(30))
        assert options["preset"] == str(SVT_AV1_PRESETS[name])
        x265 = encoder_options("libx265", attrs.evolve(HEVC, preset=name), Fraction(30))
        assert x265["preset"] == name


def test_the_cpu_path_is_taken_unless_nvenc_runs_the_ladder() -> None:
    for codec, cpu in CPU_ENCODERS.items():
        assert encoder_for(codec, "libx264") == cpu
        expected = NVENC_ENCODERS[codec] if nvenc_available(codec) else cpu
        assert encoder_for(codec, "h264_nvenc") == expected
    with pytest.raises(MediaError, match="h264, hevc, av1"):
        encoder_for("vp9", "libx264")


# -- profiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", OUTPUT_CODECS)
def test_a_profile_with_a_codec_round_trips_through_json(codec: str) -> None:
    profile = VideoProfile.from_json(
        {"name": "p", "width": 640, "height": 360, "bitrate": 500_000, "codec": codec.upper()}
    )

    assert profile.codec == codec
    assert VideoProfile.from_json(profile.to_json()) == profile
    assert parse_profiles(msgspec.json.encode([profile.to_json()])) == (profile,)


def test_a_profile_without_a_codec_is_h264() -> None:
    profile = VideoProfile.from_json({"name": "p", "width": 640, "height": 360, "bitrate": 1000})
    assert profile.codec == "h264"
    assert all(p.codec == "h264" for p in DEFAULT_PROFILES)


PROFILE = {"name": "p", "width": 640, "height": 360, "bitrate": 400_000}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"codec": "vp9"}, r"unknown codec 'vp9': use one of h264, hevc, av1"),
        ({"codec": "h265"}, r"unknown codec 'h265': use one of h264, hevc, av1"),
        ({"codec": "hevc", "profile": "main"}, r"'main' is an H.264 setting; a hevc rendition"),
        ({"codec": "av1", "profile": "H264High"}, r"H.264 setting; a av1 rendition takes none"),
    ],
)
def test_a_bad_codec_or_a_codec_profile_mismatch_is_refused(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        VideoProfile.from_json(PROFILE | change)


def test_hevc_and_av1_profiles_take_no_profile_but_none() -> None:
    profile = VideoProfile.from_json(PROFILE | {"codec": "hevc", "profile": "none"})
    assert profile.profile == ""
    with pytest.raises(ValueError, match=r"H\.264 setting"):
        VideoProfile.checked(**(PROFILE | {"codec": "av1", "profile": "high"}))
    with pytest.raises(ValueError, match="unknown codec"):
        VideoProfile.checked(**(PROFILE | {"codec": "mpeg2video"}))


# -- the wire ----------------------------------------------------------------------------------


def decode_one(wire: bytes) -> Any:
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    frame = decoder.next_frame()
    assert frame is not None and decoder.pending == 0
    return decode_message(frame)


def job_body(job: Job) -> Any:
    """The JOB's msgpack body as plain data, to change as a peer's code might."""
    decoder = FrameDecoder()
    decoder.receive_data(encode_message(job))
    frame = decoder.next_frame()
    assert frame is not None
    return msgspec.msgpack.decode(frame.body)


def test_hevc_and_av1_profiles_round_trip_through_a_job() -> None:
    ladder = (*DEFAULT_PROFILES, HEVC, AV1)
    job = Job(
        stream_id="s",
        seq=3,
        duration_ms=2000,
        profiles=tuple(ProfileSpec.from_profile(p) for p in ladder),
    )

    received = decode_one(encode_message(job))

    assert received == job
    assert received.video_profiles() == ladder


def test_a_job_from_a_peer_without_codecs_means_h264() -> None:
    job = Job(stream_id="s", seq=0, duration_ms=2000, profiles=(ProfileSpec.from_profile(AV1),))
    body = job_body(job)
    assert body["profiles"][0].pop("codec") == "av1"

    received = decode_one(encode_frame(FrameType.JOB, msgspec.msgpack.encode(body)))

    assert received.video_profiles() == (attrs.evolve(AV1, codec="h264"),)


def test_a_job_with_an_unknown_codec_is_refused_while_decoding() -> None:
    job = Job(stream_id="s", seq=0, duration_ms=2000, profiles=(ProfileSpec.from_profile(HEVC),))
    body = job_body(job)
    body["profiles"][0]["codec"] = "vp8"

    with pytest.raises(RemoteProtocolError, match=r"codec") as exc:
        decode_one(encode_frame(FrameType.JOB, msgspec.msgpack.encode(body)))
    assert exc.value.code == 400
