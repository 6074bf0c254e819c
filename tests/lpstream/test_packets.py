"""The viewers' packet fan-out, sans-IO: GOP kept for new viewers, bounded queues that drop a
slow viewer to the next keyframe, stale packets, restarts, the live clock; and the MPEG-TS
demux of a rendition segment."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.media.h264 import avc_info_from_config
from lpstream.playback.packets import LiveClock, PacketFanout, Subscriber, ts_access_units
from tests.mediatools import make_clip

CONFIG = CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=b"\x01avcC")
NEW_CONFIG = CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=b"\x01avcC2")


def packet(dts: int, *, keyframe: bool = False, size: int = 10) -> MediaPacket:
    return MediaPacket(
        kind=TrackKind.VIDEO, dts=dts, pts=dts, keyframe=keyframe, data=bytes([dts % 256]) * size
    )


def drain(subscriber: Subscriber) -> list[MediaEvent]:
    out: list[MediaEvent] = []
    while (event := subscriber.receive_nowait()) is not None:
        out.append(event)
    return out


def dts_of(events: list[MediaEvent]) -> list[int]:
    return [e.dts for e in events if isinstance(e, MediaPacket)]


def feed(fanout: PacketFanout, *packets: MediaPacket, now: float = 0.0) -> None:
    for p in packets:
        fanout.publish(p, now)


def test_a_new_subscriber_starts_at_the_current_gop_with_its_config() -> None:
    fanout = PacketFanout(name="source")
    fanout.publish(CONFIG, 0)
    feed(fanout, packet(0, keyframe=True), packet(33), packet(66, keyframe=True), packet(99))
    subscriber = fanout.subscribe()
    assert drain(subscriber) == [CONFIG, packet(66, keyframe=True), packet(99)]
    feed(fanout, packet(133))
    assert drain(subscriber) == [packet(133)]


def test_a_subscriber_before_any_keyframe_waits_for_one() -> None:
    fanout = PacketFanout(name="source")
    fanout.publish(CONFIG, 0)
    feed(fanout, packet(0))  # joined mid-GOP: nothing kept
    subscriber = fanout.subscribe()
    feed(fanout, packet(33), packet(66, keyframe=True))
    assert drain(subscriber) == [CONFIG, packet(66, keyframe=True)]
    assert subscriber.dropped == 0  # skipped, not lost: it was never behind


def test_a_slow_subscriber_drops_to_the_next_keyframe_and_others_are_untouched() -> None:
    fanout = PacketFanout(
        name="source", max_gop_packets=4, subscriber_packets=4, max_gop_bytes=1000
    )
    fanout.publish(CONFIG, 0)
    slow, fast = fanout.subscribe(), fanout.subscribe()
    feed(fanout, packet(0, keyframe=True), packet(33), packet(66))
    drain(fast)
    feed(fanout, packet(99), packet(133))  # slow holds 5 > 4: emptied, waits for a keyframe
    drain(fast)
    feed(fanout, packet(166), packet(200, keyframe=True), packet(233))
    assert dts_of(drain(fast)) == [166, 200, 233]
    events = drain(slow)
    assert events == [CONFIG, packet(200, keyframe=True), packet(233)]
    assert slow.dropped == 6 and fast.dropped == 0
    assert fanout.statistics().dropped_packets == 6


def test_the_byte_bound_holds_as_well() -> None:
    fanout = PacketFanout(
        name="source",
        max_gop_packets=10,
        subscriber_packets=10,
        max_gop_bytes=100,
        subscriber_bytes=100,
    )
    subscriber = fanout.subscribe()
    feed(fanout, packet(0, keyframe=True, size=60), packet(33, size=60))
    assert drain(subscriber) == [] and subscriber.waiting_for_keyframe
    assert fanout.statistics().gop_packets == 0  # the GOP outgrew its bound: not kept


def test_a_config_change_reaches_queued_subscribers_and_the_next_gop() -> None:
    fanout = PacketFanout(name="source")
    fanout.publish(CONFIG, 0)
    subscriber = fanout.subscribe()
    feed(fanout, packet(0, keyframe=True))
    fanout.publish(NEW_CONFIG, 0)
    feed(fanout, packet(33, keyframe=True))
    assert drain(subscriber) == [
        CONFIG,
        packet(0, keyframe=True),
        NEW_CONFIG,
        packet(33, keyframe=True),
    ]
    assert drain(fanout.subscribe())[0] == NEW_CONFIG


def test_stale_packets_are_dropped_and_a_timestamp_reset_is_not() -> None:
    fanout = PacketFanout(name="360p")
    subscriber = fanout.subscribe()
    feed(fanout, packet(2000, keyframe=True), packet(2033))
    feed(fanout, packet(0, keyframe=True), packet(33))  # a segment that came back late
    feed(fanout, packet(50_000, keyframe=True))
    feed(fanout, packet(0, keyframe=True))  # 50 s back: the timestamps restarted
    assert dts_of(drain(subscriber)) == [2000, 2033, 50_000, 0]
    assert fanout.statistics().stale_packets == 2


def test_a_restart_replays_the_current_gop() -> None:
    fanout = PacketFanout(name="source")
    fanout.publish(CONFIG, 0)
    subscriber = fanout.subscribe()
    feed(fanout, packet(0, keyframe=True), packet(33), packet(66))
    assert dts_of(drain(subscriber)) == [0, 33, 66]
    feed(fanout, packet(99))
    fanout.restart(subscriber)
    assert drain(subscriber) == [CONFIG, *(packet(d, keyframe=d == 0) for d in (0, 33, 66, 99))]


def test_end_lets_subscribers_take_their_queue_then_ends_them() -> None:
    fanout = PacketFanout(name="source")
    subscriber = fanout.subscribe()
    feed(fanout, packet(0, keyframe=True))
    fanout.end()
    assert not subscriber.ended
    assert dts_of(drain(subscriber)) == [0]
    assert subscriber.ended
    assert fanout.subscribe().ended
    fanout.unsubscribe(subscriber)
    assert fanout.statistics().subscribers == 0


def test_the_live_clock_follows_a_real_time_source_and_paces_a_burst() -> None:
    clock = LiveClock(max_early=3.0)
    # A source in real time: live is the newest frame, a late one pulls the clock back.
    clock.note(0, now=10.0)
    clock.note(33, now=10.033)
    assert clock.due(33) == pytest.approx(10.033)
    clock.note(66, now=10.100)  # 34 ms late
    assert clock.due(66) == pytest.approx(10.100) and clock.due(99) == pytest.approx(10.133)
    # A segment burst (1 s of frames at once) ahead of live: each is due at its time.
    for dts in range(1000, 2000, 33):
        clock.note(dts, now=11.0)
    assert clock.position(11.0) == pytest.approx(966)  # live is just before the burst
    assert clock.due(1990) == pytest.approx(12.024)
    # Far ahead (a jump): the clock jumps with it.
    clock.note(100_000, now=12.0)
    assert clock.due(100_000) == pytest.approx(12.0)


def test_a_real_time_clock_makes_every_packet_due_when_it_arrives() -> None:
    # A publisher stalls 0.4 s, sends what it held up at once, then is on schedule again. A
    # clock that may run behind the newest packet (max_early > 0) stays anchored on the late
    # arrival and holds every later frame by the stall, for as long as the stream runs; the
    # source's clock (max_early 0) has each frame due as it comes.
    arrivals = [(33 * n, 1.0 + 0.033 * n) for n in range(10)]
    arrivals += [(33 * n, 1.73) for n in range(10, 22)]  # the stall's frames, at once
    arrivals += [(33 * n, 1.004 + 0.033 * n) for n in range(22, 60)]
    sticky, real_time = LiveClock(max_early=0.5), LiveClock(max_early=0.0)
    held = []
    for dts, now in arrivals:
        sticky.note(dts, now)
        real_time.note(dts, now)
        assert real_time.due(dts) == pytest.approx(now)
        held.append(sticky.due(dts) - now)
    assert held[-1] == pytest.approx(0.4, abs=0.02)


def test_queued_packets_keep_when_they_were_published() -> None:
    fanout = PacketFanout(name="source", max_early=0.0)
    fanout.publish(CONFIG, 1.0)
    feed(fanout, packet(0, keyframe=True), now=1.0)
    feed(fanout, packet(33), now=1.04)
    subscriber = fanout.subscribe()  # at 1.5: the GOP is replayed with its arrival times
    assert subscriber.published_at is None
    times: list[float | None] = []
    feed(fanout, packet(66), now=1.5)
    for _ in range(4):
        subscriber.receive_nowait()
        times.append(subscriber.published_at)
    assert times == [1.0, 1.0, 1.04, 1.5]  # the config goes with its keyframe


def test_a_rendition_segment_demuxes_into_avcc_access_units(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "r.ts", seconds=1, size="160x120", gop=15, fmt="mpegts")
    events = ts_access_units(clip.read_bytes())
    configs = [e for e in events if isinstance(e, CodecConfig)]
    packets = [e for e in events if isinstance(e, MediaPacket)]
    assert len(packets) == 30 and len(configs) == 2  # a config before each keyframe
    assert [p.keyframe for p in packets].count(True) == 2 and packets[0].keyframe
    info = avc_info_from_config(configs[0].data)  # an avcC with the segment's SPS
    assert (info.width, info.height) == (160, 120)
    dts = [p.dts for p in packets]
    assert dts == sorted(dts) and dts[1] - dts[0] in (33, 34)
    for p in packets:  # AVCC: 4-byte lengths that add up, no access unit delimiters
        offset, types = 0, []
        while offset < len(p.data):
            size = int.from_bytes(p.data[offset : offset + 4], "big")
            types.append(p.data[offset + 4] & 0x1F)
            offset += 4 + size
        assert offset == len(p.data) and 9 not in types
    with pytest.raises(MediaError):
        ts_access_units(b"\x47" + b"\x00" * 1000)
