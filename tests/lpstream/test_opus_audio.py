"""The stream's sound for WebRTC viewers: real AAC (ffmpeg's encoder) in, real Opus (libopus)
out, decoded back and compared with what went in; the trio side encodes once for any number
of listeners, only while there are listeners."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest
import trio

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.playback.opus_audio import AudioSubscription, OpusAudio
from lpstream.playback.opus_transcode import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AacToOpus,
    AudioUnavailable,
)
from tests.mediatools import ffmpeg, flv_events


def aac_clip(path: Path, *, rate: int, channels: int, seconds: float = 2.0) -> Path:
    """A 440 Hz sine as AAC in FLV (as RTMP carries it)."""
    ffmpeg(
        *("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}"),
        *("-t", str(seconds), "-ac", str(channels), "-c:a", "aac", "-b:a", "96k"),
        *("-f", "flv", str(path)),
    )
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("aac")
    return {
        "44k-mono": aac_clip(folder / "mono.flv", rate=44_100, channels=1),
        "48k-stereo": aac_clip(folder / "stereo.flv", rate=48_000, channels=2),
        "long": aac_clip(folder / "long.flv", rate=44_100, channels=1, seconds=30),
    }


def read(path: Path) -> tuple[CodecConfig, list[MediaPacket]]:
    events = list(flv_events(path))
    config = next(e for e in events if isinstance(e, CodecConfig))
    return config, [e for e in events if isinstance(e, MediaPacket)]


def decode(packets: list[MediaPacket]) -> np.ndarray:
    """Opus packets back to mono PCM at 48 kHz, as a WebRTC receiver decodes them."""
    decoder = av.CodecContext.create("opus", "r")
    chunks = [
        frame.to_ndarray().mean(axis=0)
        for packet in packets
        for frame in decoder.decode(av.Packet(packet.data))
    ]
    return np.concatenate(chunks)


def dominant_frequency(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / SAMPLE_RATE)[int(spectrum.argmax())])


@pytest.mark.parametrize("clip", ["44k-mono", "48k-stereo"])
def test_aac_becomes_20_ms_opus_packets_on_the_stream_timeline(
    clips: dict[str, Path], clip: str
) -> None:
    config, aac = read(clips[clip])
    encoder = AacToOpus()
    encoder.configure(config)
    opus = [packet for each in aac for packet in encoder.encode(each)]

    assert all(p.kind is TrackKind.AUDIO and p.keyframe and p.dts == p.pts for p in opus)
    # The first packet starts 6.5 ms (libopus's look-ahead, rounded) before the first AAC
    # frame; each next one 20 ms later, with no gap.
    assert opus[0].pts == aac[0].pts - 6
    assert {b.pts - a.pts for a, b in itertools.pairwise(opus)} == {20}
    aac_ms = aac[-1].pts - aac[0].pts
    assert abs(len(opus) * 20 - aac_ms) <= 60, (len(opus), aac_ms)

    pcm = decode(opus)
    assert len(pcm) == len(opus) * FRAME_SAMPLES
    assert abs(dominant_frequency(pcm[SAMPLE_RATE // 10 :]) - 440) < 5
    assert 0.05 < np.abs(pcm[SAMPLE_RATE // 10 :]).max() < 1.0


def test_a_gap_in_the_aac_starts_a_new_run_at_the_time_the_sound_resumes(
    clips: dict[str, Path],
) -> None:
    config, aac = read(clips["44k-mono"])
    encoder = AacToOpus()
    encoder.configure(config)
    before = [p for each in aac[:30] for p in encoder.encode(each)]
    after = [p for each in aac[40:] for p in encoder.encode(each)]  # ten frames lost
    assert {b.pts - a.pts for a, b in itertools.pairwise(before)} == {20}
    assert after[0].pts == aac[40].pts - 6  # not where the run before would have gone on
    assert after[0].pts - before[-1].pts > 200
    assert {b.pts - a.pts for a, b in itertools.pairwise(after)} == {20}


def test_what_cannot_be_encoded_is_refused_with_a_reason(clips: dict[str, Path]) -> None:
    encoder = AacToOpus()
    with pytest.raises(AudioUnavailable, match="only AAC"):
        encoder.configure(CodecConfig(kind=TrackKind.AUDIO, codec="mp3", data=b""))
    config, aac = read(clips["44k-mono"])
    with pytest.raises(MediaError, match="before the AAC configuration"):
        encoder.encode(aac[0])
    encoder.configure(config)
    junk = MediaPacket(kind=TrackKind.AUDIO, dts=0, pts=0, keyframe=True, data=b"\xff" * 40)
    with pytest.raises(Exception, match="AAC packet"):
        encoder.encode(junk)
    assert encoder.encode(aac[1]) is not None  # the decoder goes on after a bad packet


async def feed(audio: OpusAudio, config: CodecConfig, aac: list[MediaPacket]) -> None:
    """Feeds the packets ten times faster than they play (encoding takes no notice)."""
    audio.feed(config)
    for packet in aac:
        await trio.sleep(0.002)
        audio.feed(packet)


async def test_one_encoder_serves_every_listener_and_only_while_someone_listens(
    clips: dict[str, Path],
) -> None:
    config, aac = read(clips["long"])
    audio = OpusAudio()
    assert audio.subscribe() is None  # no audio known yet
    async with trio.open_nursery() as nursery:
        nursery.start_soon(audio.run)
        nursery.start_soon(feed, audio, config, aac)
        await trio.sleep(0.2)
        figures = audio.statistics()
        assert audio.has_audio and not figures.encoder_running
        assert figures.aac_packets_in == 0  # nobody listens: nothing is even queued

        first, second = audio.subscribe(), audio.subscribe()
        assert first is not None and second is not None
        heard: dict[str, list[MediaPacket]] = {"first": [], "second": []}

        async def listen(name: str, subscription: AudioSubscription) -> None:
            while len(heard[name]) < 150:
                heard[name].append(await subscription.receive())

        async with trio.open_nursery() as listeners:
            listeners.start_soon(listen, "first", first)
            listeners.start_soon(listen, "second", second)
        assert heard["first"] == heard["second"]  # the very same packets: one encode
        figures = audio.statistics()
        assert figures.encoders_started == 1 and figures.listeners == 2
        assert figures.encoder_running and figures.opus_packets_out >= 150
        assert first.arrived_at is not None

        first.close()
        assert audio.statistics().encoder_running  # one listener is left
        second.close()
        figures = audio.statistics()
        assert figures.listeners == 0 and not figures.encoder_running
        await trio.sleep(0.2)
        assert audio.statistics().opus_packets_out == figures.opus_packets_out
        assert audio.statistics().aac_packets_in == figures.aac_packets_in
        with pytest.raises(trio.EndOfChannel):
            await first.receive()

        third = audio.subscribe()
        assert third is not None
        packet = await third.receive()
        assert packet.kind is TrackKind.AUDIO and audio.statistics().encoders_started == 2

        audio.end()
        with trio.fail_after(1):
            while third.receive_nowait() is not None:
                pass
            with pytest.raises(trio.EndOfChannel):
                await third.receive()
        assert audio.subscribe() is None  # ended
        nursery.cancel_scope.cancel()


async def test_a_listener_that_falls_behind_loses_its_oldest_packets_only(
    clips: dict[str, Path],
) -> None:
    config, aac = read(clips["long"])
    audio = OpusAudio(subscriber_packets=50)
    audio.feed(config)
    slow, keen = audio.subscribe(), audio.subscribe()
    assert slow is not None and keen is not None
    got: list[MediaPacket] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(audio.run)
        nursery.start_soon(feed, audio, config, aac[:200])
        with trio.move_on_after(2):
            while True:
                got.append(await keen.receive())
        nursery.cancel_scope.cancel()
    assert slow.dropped > 0 and keen.dropped == 0
    kept = []
    while (packet := slow.receive_nowait()) is not None:
        kept.append(packet)
    assert len(kept) == 50 and kept == got[-50:]  # the newest, in order


async def test_bad_packets_cost_themselves_and_the_rest_is_encoded(clips: dict[str, Path]) -> None:
    config, aac = read(clips["44k-mono"])
    audio = OpusAudio()
    audio.feed(config)
    listener = audio.subscribe()
    assert listener is not None
    junk = [
        MediaPacket(kind=TrackKind.AUDIO, dts=p.dts, pts=p.pts, keyframe=True, data=b"\xff" * 9)
        for p in aac[10:13]
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(audio.run)
        nursery.start_soon(feed, audio, config, aac[:10] + junk + aac[13:])
        await trio.sleep(1.5)
        nursery.cancel_scope.cancel()
    figures = audio.statistics()
    assert figures.failed_packets == 3 and figures.encoder_running
    assert figures.opus_packets_out > 60
