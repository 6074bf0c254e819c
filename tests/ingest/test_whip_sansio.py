"""The sans-IO parts of WHIP ingest: the offer checks and the Annex B to AVCC repackaging."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from ingest.whip import H264Track, check_offer
from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.h264 import avc_decoder_configuration, nal_units

# An offer shaped like OBS's (libdatachannel): bundled audio + video, every candidate inline.
OBS_OFFER = "\r\n".join(
    [
        "v=0",
        "o=rtc 2911395361 0 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic:WMS *",
        "a=ice-options:ice2,trickle",
        "a=fingerprint:sha-256 3C:7E:B2:8B:1D:0A:6D:1E:00:5F:C9:E9:6B:2A:7A:7E:"
        "6B:31:5A:5F:1C:6B:9E:76:0B:36:6D:62:05:92:0A:3D",
        "m=audio 56102 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 192.0.2.10",
        "a=mid:0",
        "a=sendonly",
        "a=ice-ufrag:Fz8k",
        "a=ice-pwd:7dK0bXk9pJ6QmWbq3hTz1e",
        "a=setup:actpass",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1",
        "a=candidate:1 1 UDP 2122317823 192.0.2.10 56102 typ host",
        "a=end-of-candidates",
        "m=video 56102 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 192.0.2.10",
        "a=mid:1",
        "a=sendonly",
        "a=ice-ufrag:Fz8k",
        "a=ice-pwd:7dK0bXk9pJ6QmWbq3hTz1e",
        "a=setup:actpass",
        "a=rtcp-mux",
        "a=rtpmap:96 H264/90000",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 goog-remb",
        "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
        "",
    ]
)


def _edit(old: str, new: str) -> str:
    assert old in OBS_OFFER
    return OBS_OFFER.replace(old, new)


def test_an_obs_offer_passes_with_h264_and_opus() -> None:
    summary = check_offer(OBS_OFFER.encode())
    assert summary.video.codecs == ("H264",)
    assert summary.video.h264_packetization_modes == (1,)
    assert summary.audio is not None and summary.audio.codecs == ("OPUS",)


def _with_video(*codecs: str) -> str:
    """The OBS offer with its video section offering ``codecs`` (payload types 96 on)."""
    types = " ".join(str(96 + i) for i in range(len(codecs)))
    lines = [f"a=rtpmap:{96 + i} {codec}/90000" for i, codec in enumerate(codecs)]
    offer = _edit("m=video 56102 UDP/TLS/RTP/SAVPF 96", f"m=video 56102 UDP/TLS/RTP/SAVPF {types}")
    offer = offer.replace("a=rtpmap:96 H264/90000", "\r\n".join(lines))
    h264 = 96 + codecs.index("H264") if "H264" in codecs else None  # its fmtp follows it
    return offer.replace("a=fmtp:96 ", f"a=fmtp:{h264} " if h264 is not None else "a=fmtp:127 ")


@pytest.mark.parametrize(
    ("codecs", "taken"),
    [
        (("VP8", "H264", "AV1"), "h264"),  # H.264 whenever offered: it passes through to WHEP
        (("VP8", "AV1"), "av1"),  # then AV1: its source passes through to HLS (fMP4)
        (("VP9", "VP8"), "vp8"),
        (("AV1",), "av1"),
    ],
)
def test_the_answer_takes_one_codec_h264_then_av1_then_vp8(
    codecs: tuple[str, ...], taken: str
) -> None:
    assert check_offer(_with_video(*codecs)).video_codec == taken


def test_an_offer_without_audio_passes() -> None:
    video_only = "m=video" + OBS_OFFER.split("m=video", 1)[1]
    head = OBS_OFFER.split("m=audio", 1)[0].replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1")
    assert check_offer(head + video_only).audio is None


@pytest.mark.parametrize(
    ("offer", "code", "words"),
    [
        (b"\xff\xfe not text", 400, "not UTF-8"),
        ("", 400, "v=0"),
        ("hello\r\n", 400, "v=0"),
        ("v=0\r\nthis line is bad\r\n", 400, "line 2"),
        (_edit("m=video 56102 UDP/TLS/RTP/SAVPF 96", "m=video x"), 400, "m= line"),
        (_edit("a=fingerprint:", "a=x-fingerprint:"), 400, "fingerprint"),
        (OBS_OFFER.replace("a=ice-ufrag:Fz8k", "").replace("a=ice-pwd:", "a=x:"), 400, "ice"),
        (_edit("a=rtpmap:96 H264/90000", "a=rtpmap:96 VP9/90000"), 415, "offered: VP9"),
        (_edit("packetization-mode=1", "packetization-mode=0"), 415, "packetization-mode=1"),
        (_edit("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 PCMU/8000"), 415, "no Opus"),
        (OBS_OFFER.split("m=audio", 1)[0], 415, "no video"),
        (OBS_OFFER + "m=video" + OBS_OFFER.split("m=video", 1)[1], 400, "simulcast"),
        (_edit("a=mid:1\r\na=sendonly", "a=mid:1\r\na=recvonly"), 400, "must send"),
        ("v=0\r\n" + "a=x\r\n" * 20_000, 413, "over"),
    ],
)
def test_refused_offers_say_why_with_the_status_to_answer(
    offer: str | bytes, code: int, words: str
) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        check_offer(offer)
    assert caught.value.code == code
    assert words.lower() in caught.value.reason.lower()


SPS = bytes.fromhex("6742c01fda0140")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("6588840021")
P_SLICE = bytes.fromhex("419a0203")
AUD = bytes.fromhex("09f0")


def annexb(*units: bytes, long_codes: bool = True) -> bytes:
    code = b"\x00\x00\x00\x01" if long_codes else b"\x00\x00\x01"
    return b"".join(code + u for u in units)


def avcc(*units: bytes) -> bytes:
    return b"".join(len(u).to_bytes(4, "big") + u for u in units)


@pytest.mark.parametrize("long_codes", [True, False])
def test_nal_units_splits_on_three_and_four_byte_start_codes(long_codes: bool) -> None:
    data = annexb(SPS, PPS, IDR, long_codes=long_codes)
    assert nal_units(data) == [SPS, PPS, IDR]
    assert nal_units(b"\x00\x00\x01" + SPS + b"\x00\x00\x00\x00\x01" + PPS) == [SPS, PPS]
    assert nal_units(b"") == [] and nal_units(b"\x00\x00\x01") == []


def test_the_avcc_record_carries_profile_level_sps_and_pps() -> None:
    record = avc_decoder_configuration(SPS, PPS)
    assert record[:6] == bytes([1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1])
    assert record[6:8] == len(SPS).to_bytes(2, "big") and record[8 : 8 + len(SPS)] == SPS
    assert record[8 + len(SPS) :] == b"\x01" + len(PPS).to_bytes(2, "big") + PPS


def test_frames_before_the_first_idr_are_dropped_then_config_and_avcc_follow() -> None:
    track = H264Track()
    assert track.feed(annexb(P_SLICE), 0) == []
    assert track.waiting_for_keyframe and track.dropped == 1
    events = track.feed(annexb(AUD, SPS, PPS, IDR), 33)
    assert events == [
        CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=avc_decoder_configuration(SPS, PPS)),
        MediaPacket(kind=TrackKind.VIDEO, dts=33, pts=33, keyframe=True, data=avcc(SPS, PPS, IDR)),
    ]
    assert not track.waiting_for_keyframe
    assert track.feed(annexb(P_SLICE), 66) == [
        MediaPacket(kind=TrackKind.VIDEO, dts=66, pts=66, keyframe=False, data=avcc(P_SLICE))
    ]


def test_a_repeated_config_is_sent_once_and_a_new_one_again() -> None:
    track = H264Track()
    first = track.feed(annexb(SPS, PPS, IDR), 0)
    again = track.feed(annexb(SPS, PPS, IDR), 33)
    assert [type(e) for e in first] == [CodecConfig, MediaPacket]
    assert [type(e) for e in again] == [MediaPacket]
    other_sps = bytes.fromhex("6742c01eda0280")
    changed = track.feed(annexb(other_sps, PPS, IDR), 66)
    assert isinstance(changed[0], CodecConfig)
    assert changed[0].data == avc_decoder_configuration(other_sps, PPS)


def test_times_always_increase_and_a_gap_waits_for_the_next_idr() -> None:
    track = H264Track()
    track.feed(annexb(SPS, PPS, IDR), 100)
    [same] = track.feed(annexb(P_SLICE), 100)
    assert isinstance(same, MediaPacket) and same.dts == same.pts == 101
    track.wait_for_keyframe()
    assert track.feed(annexb(P_SLICE), 133) == []
    [packet] = track.feed(annexb(SPS, PPS, IDR), 166)
    assert isinstance(packet, MediaPacket) and packet.keyframe and packet.dts == 166


def test_real_x264_output_becomes_decodable_avcc() -> None:
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 160, 96, "yuv420p"
    encoder.options = {"tune": "zerolatency", "x264-params": "keyint=10:min-keyint=10:bframes=0"}
    encoder.framerate = fractions.Fraction(30, 1)
    track = H264Track()
    events = []
    for n in range(25):
        image = np.full((96, 160, 3), n * 9 % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = n
        for packet in encoder.encode(frame):
            events += track.feed(bytes(packet), n * 33)
    for packet in encoder.encode(None):
        events += track.feed(bytes(packet), 25 * 33)
    [config] = [e for e in events if isinstance(e, CodecConfig)]
    packets = [e for e in events if isinstance(e, MediaPacket)]
    assert sum(p.keyframe for p in packets) == 3
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = config.data
    frames = [f for p in packets for f in decoder.decode(av.Packet(p.data))]
    frames += decoder.decode(None)
    assert len(frames) == 25
    assert {(f.width, f.height) for f in frames} == {(160, 96)}
