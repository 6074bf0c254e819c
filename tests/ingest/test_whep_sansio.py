"""WHEP's sans-IO parts: the playback offer check and one viewer's playout (Annex B with
in-band parameter sets, the viewer's timeline, the fast-forward to live, restarts; the sound's
timeline, its lag and its pacing)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.whip import OutgoingFrame, Playout, check_playback_offer
from ingest.whip.playout import AudioPlayout, OutgoingAudio, SendDelays
from ingest.whip.sdp import read_playback_offer
from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.media.h264 import avc_decoder_configuration, avcc_units, nal_units, parameter_sets

SPS = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84, 0x00])
SLICE = bytes([0x41, 0x9A, 0x02, 0x00])
CONFIG = CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=avc_decoder_configuration(SPS, PPS))


def avcc(*units: bytes) -> bytes:
    return b"".join(len(u).to_bytes(4, "big") + u for u in units)


def packet(dts: int, *units: bytes, keyframe: bool = False, cto: int = 0) -> MediaPacket:
    return MediaPacket(
        kind=TrackKind.VIDEO, dts=dts, pts=dts + cto, keyframe=keyframe, data=avcc(*units)
    )


OFFER = """v=0\r
o=- 1 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
a=ice-ufrag:abcd\r
a=ice-pwd:abcdefghijklmnopqrstuvwx\r
a=fingerprint:sha-256 00:11\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=mid:0\r
a=recvonly\r
a=rtpmap:111 opus/48000/2\r
m=video 9 UDP/TLS/RTP/SAVPF 96 102\r
a=mid:1\r
a=recvonly\r
a=rtpmap:96 VP8/90000\r
a=rtpmap:102 H264/90000\r
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r
"""


def test_a_viewer_offer_that_receives_h264_passes() -> None:
    video = check_playback_offer(OFFER)
    assert video.direction == "recvonly" and "H264" in video.codecs


@pytest.mark.parametrize(
    ("offer", "code", "says"),
    [
        (OFFER.replace("a=recvonly", "a=sendonly"), 400, "a viewer must receive"),
        (OFFER.replace("packetization-mode=1", "packetization-mode=0"), 415, "VP8, H264"),
        (OFFER.split("m=video")[0], 415, "no video"),
        (OFFER.replace("a=fingerprint:sha-256 00:11\r\n", ""), 400, "fingerprint"),
        ("hello", 400, "v=0"),
    ],
)
def test_a_viewer_offer_is_refused_with_the_reason(offer: str, code: int, says: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        check_playback_offer(offer)
    assert caught.value.code == code and says in caught.value.reason


def test_the_offer_gets_sound_when_its_audio_receives_opus() -> None:
    offer = read_playback_offer(OFFER)
    assert offer.audio is not None and offer.audio.direction == "recvonly"
    assert offer.video == check_playback_offer(OFFER)
    sendrecv = OFFER.replace("a=mid:0\r\na=recvonly", "a=mid:0\r\na=sendrecv")
    assert read_playback_offer(sendrecv).audio is not None
    # Audio that does not receive, or has no Opus, is no reason to refuse: it gets nothing.
    sending = OFFER.replace("a=mid:0\r\na=recvonly", "a=mid:0\r\na=sendonly")
    assert read_playback_offer(sending).audio is None
    pcmu = OFFER.replace("111 opus/48000/2", "0 PCMU/8000").replace("SAVPF 111", "SAVPF 0")
    assert read_playback_offer(pcmu).audio is None
    video_only = OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1")
    video_only = (
        video_only[: video_only.index("m=audio")] + video_only[video_only.index("m=video") :]
    )
    assert read_playback_offer(video_only).audio is None


def test_parameter_sets_come_out_of_the_avcc_record() -> None:
    assert parameter_sets(CONFIG.data) == ([SPS, PPS], 4)
    with pytest.raises(ValueError):
        parameter_sets(CONFIG.data[:-2])


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=6))
def test_avcc_units_round_trip(units: list[bytes]) -> None:
    assert avcc_units(avcc(*units)) == units


def test_keyframes_get_the_parameter_sets_in_band_and_nothing_precedes_the_first() -> None:
    playout = Playout()
    playout.configure(CONFIG)
    assert playout.feed(packet(0, SLICE), due=0.0, now=0.0) is None  # no keyframe yet
    key = playout.feed(packet(33, IDR, keyframe=True), due=0.0, now=0.0)
    assert key is not None and key.keyframe
    assert key.data == b"".join(b"\x00\x00\x00\x01" + u for u in (SPS, PPS, IDR))
    assert nal_units(key.data) == [SPS, PPS, IDR]
    delta = playout.feed(packet(66, SLICE), due=0.033, now=0.0)
    assert delta is not None and nal_units(delta.data) == [SLICE] and not delta.keyframe
    # A keyframe that carries its own SPS and PPS (WebRTC sources) is sent as it is.
    own = playout.feed(packet(99, SPS, PPS, IDR, keyframe=True), due=0.066, now=0.066)
    assert own is not None and nal_units(own.data) == [SPS, PPS, IDR]
    assert playout.skipped == 1 and playout.frames == 3


def test_on_time_frames_are_held_until_due_and_keep_the_source_cadence() -> None:
    playout = Playout()
    playout.configure(CONFIG)
    first = playout.feed(packet(1000, IDR, keyframe=True), due=5.0, now=5.0)
    early = playout.feed(packet(1033, SLICE, cto=66), due=5.033, now=5.001)
    gap = playout.feed(packet(2033, IDR, keyframe=True), due=6.033, now=6.0)  # 1 s later
    assert first is not None and early is not None and gap is not None
    assert (first.timestamp_ms, first.send_at) == (0, 5.0)
    assert early.send_at == 5.033 and early.timestamp_ms == 33 + 66  # composition offset kept
    assert gap.timestamp_ms == 1033 and gap.send_at == 6.033


def test_late_frames_are_fast_forwarded_evenly_then_the_cadence_resumes() -> None:
    playout = Playout(catch_up_step=0.004)
    playout.configure(CONFIG)
    now = 10.0
    # A new viewer gets the GOP under way: 2 s of frames, all due already.
    frames = [
        playout.feed(packet(d, IDR if d == 0 else SLICE, keyframe=d == 0), 8.0 + d / 1000, now)
        for d in range(0, 2000, 40)
    ]
    sent = [f for f in frames if f is not None]
    assert [f.timestamp_ms for f in sent] == [4 * i for i in range(50)]
    assert [round(f.send_at, 3) for f in sent] == [round(now + 0.004 * i, 3) for i in range(50)]
    # Live has moved on meanwhile (the catch-up takes 0.2 s): still late, still fast.
    behind = playout.feed(packet(2040, SLICE), due=10.04, now=10.001)
    assert behind is not None and behind.timestamp_ms == 200
    assert behind.send_at == pytest.approx(10.2)
    # Then the frames due after the catch-up: sent when due, a decode-time step apart.
    live = playout.feed(packet(2080, SLICE), due=10.25, now=10.002)
    assert live is not None and live.send_at == 10.25 and live.timestamp_ms == 200 + 40


def test_restarts_are_rate_limited() -> None:
    playout = Playout(restart_interval=1.0)
    assert playout.should_restart(0.0)
    assert not playout.should_restart(0.5)
    assert playout.should_restart(1.2)
    assert not playout.should_restart(2.1)


def real_ms(frame: OutgoingFrame, origin: float) -> int:
    return round((frame.send_at - origin) * 1000)


def test_the_timeline_follows_real_time_when_the_source_stamps_run_slow() -> None:
    # An encoder that falls behind stamps frames 33 ms apart, but they come 50 ms apart: on
    # its own stamps the viewer's timeline would fall 17 ms a frame further behind real time,
    # and a browser that learnt that rate holds every frame later when the source catches up.
    playout = Playout(timeline_slack=0.016)
    playout.configure(CONFIG)
    sent = []
    for n in range(60):
        at = 20.0 + 0.05 * n
        frame = playout.feed(packet(33 * n, IDR if n == 0 else SLICE, keyframe=n == 0), at, at)
        assert frame is not None
        sent.append(frame)
    assert all(abs(f.timestamp_ms - real_ms(f, 20.0)) <= 16 for f in sent)
    assert [b.timestamp_ms - a.timestamp_ms for a, b in itertools.pairwise(sent[10:])] == [50] * 49


def test_jitter_within_the_slack_keeps_the_source_cadence() -> None:
    playout = Playout(timeline_slack=0.016)
    playout.configure(CONFIG)
    stamps = []
    for n in range(30):
        at = 5.0 + 0.033 * n + (0.012 if n % 2 else 0.0)  # every other frame 12 ms late
        frame = playout.feed(packet(33 * n, IDR if n == 0 else SLICE, keyframe=n == 0), at, at)
        assert frame is not None and frame.send_at == at
        stamps.append(frame.timestamp_ms)
    assert stamps == [33 * n for n in range(30)]


def test_after_a_stall_and_its_burst_the_timeline_is_back_on_real_time() -> None:
    playout = Playout(timeline_slack=0.016)
    playout.configure(CONFIG)
    frames: list[OutgoingFrame] = []

    def arrive(n: int, at: float) -> None:
        frame = playout.feed(packet(33 * n, IDR if n == 0 else SLICE, keyframe=n == 0), at, at)
        assert frame is not None
        frames.append(frame)

    for n in range(10):
        arrive(n, 1.0 + 0.033 * n)
    for n in range(10, 16):  # the publisher stalled 0.25 s; six frames come at once
        arrive(n, 1.58)
    for n in range(16, 40):
        arrive(n, 1.58 + 0.033 * (n - 15))
    assert [f.send_at for f in frames[10:16]] == [1.58] * 6  # each sent as it arrives
    # Stamps keep rising, stray from the send times by at most the slack (plus 1 ms a frame
    # of the burst), and are back to the source's cadence right after it.
    stamps = [f.timestamp_ms for f in frames]
    assert stamps == sorted(set(stamps))
    assert all(abs(f.timestamp_ms - real_ms(f, 1.0)) <= 16 + 6 for f in frames)
    assert [b - a for a, b in itertools.pairwise(stamps[20:])] == [33] * 19


def test_send_delays_count_the_fast_forward_apart() -> None:
    playout = Playout(catch_up_step=0.004)
    playout.configure(CONFIG)
    delays = SendDelays()
    # A new viewer at 10.0 gets a GOP that arrived from 9.0 on (due as it arrived).
    for n in range(30):
        arrived = 9.0 + 0.033 * n
        frame = playout.feed(
            packet(33 * n, IDR if n == 0 else SLICE, keyframe=n == 0), arrived, 10.0
        )
        assert frame is not None and frame.catching_up  # the keyframe too: it is late
        delays.note(frame, arrived, frame.send_at)
    # Then live frames (the fast-forward is over at 10.12), each sent 2 ms after it arrived.
    for n in range(36, 66):
        arrived = 9.0 + 0.033 * n
        frame = playout.feed(packet(33 * n, SLICE), arrived, arrived)
        assert frame is not None and not frame.catching_up
        delays.note(frame, arrived, frame.send_at + 0.002)
    stats = delays.statistics()
    assert (stats.frames, stats.catch_up_frames) == (60, 30)
    assert stats.median_ms == stats.p95_ms == stats.max_ms == 2.0


# --- sound ----------------------------------------------------------------------------------


def opus(ms: int) -> MediaPacket:
    return MediaPacket(kind=TrackKind.AUDIO, dts=ms, pts=ms, keyframe=True, data=b"\xfc" + bytes(3))


def test_early_sound_waits_until_due_and_keeps_20_ms_steps() -> None:
    # A transcoded rendition plays seconds behind the source: its sound comes early.
    playout = AudioPlayout()
    sent = [playout.feed(opus(20 * n), due=3.0 + 0.02 * n, now=1.0) for n in range(50)]
    assert all(isinstance(a, OutgoingAudio) for a in sent)
    assert [a.send_at for a in sent if a] == [pytest.approx(3.0 + 0.02 * n) for n in range(50)]
    assert [a.timestamp for a in sent if a] == [960 * n for n in range(50)]
    assert playout.lag == 0.0


def test_sound_that_is_late_sets_the_lag_and_then_goes_out_paced_by_it() -> None:
    # The source's sound: each Opus packet exists 10 to 40 ms after its time is due.
    playout = AudioPlayout(lag_quantile=0.9, window=100)
    sent: list[OutgoingAudio] = []
    for n in range(300):
        due = 1.0 + 0.02 * n
        lateness = 0.010 + 0.030 * ((n * 7) % 10) / 9  # 10 ms to 40 ms, evenly
        now = max(due + lateness, sent[-1].send_at if sent else 0.0)
        out = playout.feed(opus(20 * n), due=due, now=now, available=due + lateness)
        assert out is not None
        sent.append(out)
    assert playout.lag == pytest.approx(0.0367, abs=0.002)  # the 90th percentile
    settled = sent[150:]
    # Each goes out `lag` after it is due: evenly, 20 ms apart, as the RTP times say.
    assert all(
        a.send_at == pytest.approx(1.0 + 0.02 * (150 + i) + playout.lag, abs=0.004)
        for i, a in enumerate(settled)
    )
    assert {b.timestamp - a.timestamp for a, b in itertools.pairwise(sent)} == {960}


def test_sound_far_behind_is_skipped_not_fast_forwarded() -> None:
    playout = AudioPlayout(late=0.5)
    assert playout.feed(opus(0), due=1.0, now=1.6) is None  # queued while ICE ran
    first = playout.feed(opus(20), due=1.62, now=1.65)
    assert first is not None and first.timestamp == 0 and playout.skipped == 1


def test_after_a_stall_the_sound_jumps_ahead_skips_its_backlog_and_is_live_again() -> None:
    playout = AudioPlayout(timeline_slack=0.06, max_lag=0.0)
    sent = [playout.feed(opus(20 * n), due=0.02 * n, now=0.02 * n) for n in range(10)]
    # 300 ms of nothing, then 15 packets at once (each due when it was made), then live.
    burst = [playout.feed(opus(200 + 20 * n), due=0.2 + 0.02 * n, now=0.5) for n in range(15)]
    live = [
        playout.feed(opus(500 + 20 * n), due=0.5 + 0.02 * n, now=0.5 + 0.02 * n)
        for n in range(1, 11)
    ]
    assert all(sent)
    # The timeline jumps to the send times (one gap); the burst goes out at once until the
    # timeline is the slack ahead of them, and the rest of it is skipped, and then live sound
    # until the timeline is back on the send times: nothing is held back.
    assert [out is not None for out in burst] == [True] * 4 + [False] * 11
    assert [out is not None for out in live] == [False] * 3 + [True] * 7
    assert playout.skipped == 14
    after = [a for a in sent + burst + live if a is not None]
    assert all(a.send_at == 0.5 for a in after[10:14])
    assert [round(a.send_at, 2) for a in after[14:]] == [
        round(0.58 + 0.02 * n, 2) for n in range(7)
    ]
    steps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(after)]
    assert sum(s > 960 for s in steps) == 1 and min(steps) == 960  # one gap, at the stall
    tick_ms = 1 / 48  # the send times are rounded to whole ticks
    assert all(
        abs(a.timestamp / 48 - (a.send_at - after[0].send_at) * 1000) <= 60 + tick_ms for a in after
    )


def test_a_new_viewer_starts_at_live_sound_not_at_what_queued() -> None:
    playout = AudioPlayout(timeline_slack=0.1, max_lag=0.0)
    queued = [playout.feed(opus(20 * n), due=1.0 + 0.02 * n, now=1.4) for n in range(20)]
    # Packets more than the slack behind are skipped; it starts with the first within it.
    assert [out is not None for out in queued] == [False] * 15 + [True] * 5
    first = next(out for out in queued if out is not None)
    assert first.timestamp == 0 and first.send_at == 1.4


@given(
    st.lists(
        st.tuples(st.integers(1, 120), st.floats(-2.0, 1.0), st.floats(0.0, 0.05)),
        min_size=1,
        max_size=80,
    )
)
def test_the_sound_timeline_always_rises_by_a_frame_and_stays_near_the_send_times(
    steps: list[tuple[int, float, float]],
) -> None:
    playout = AudioPlayout()
    ms, now = 0, 100.0
    last: OutgoingAudio | None = None
    first: OutgoingAudio | None = None
    slack = playout.timeline_slack * 1000
    for gap_ms, early, wait in steps:
        ms += gap_ms
        now += wait
        skipped = playout.skipped
        out = playout.feed(opus(ms), due=now + early, now=now)
        if out is None:
            assert playout.skipped == skipped + 1
            continue
        assert out.send_at >= now
        if last is not None and first is not None:
            assert out.timestamp >= last.timestamp + 960
            assert out.send_at >= last.send_at
            real_ms = (out.send_at - first.send_at) * 1000
            assert abs(out.timestamp / 48 - real_ms) <= slack + 1 / 48  # a tick of rounding
        first = first or out
        last = out
        now = max(now, out.send_at)
