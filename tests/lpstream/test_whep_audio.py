"""WHEP with sound, in one process: ffmpeg publishes over RTMP a clip whose picture flashes and
whose sound beeps at each whole second (``benchmarks.harness.av_sync``), a real gateway
(``whep_harness``) sends it to aiortc viewers, and what reaches them is decoded.

Lip sync is measured as a browser's is achieved: each track's RTP times are put on the
sender's clock by its RTCP sender reports, the flash's onset in the decoded video and the
beep's in the decoded Opus are found, and the beep's sender time minus the flash's is the
offset the viewer's player would line the tracks up to. It holds within ±40 ms for the
source and for a transcoded rendition (whose audio must wait for its video).
"""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import trio

from benchmarks.harness.av_sync import (
    SenderClock,
    beep_onsets,
    envelope,
    flash_onsets,
    marked_source,
    pair_offsets,
)
from lpstream.playback.opus_transcode import FRAME_SAMPLES, SAMPLE_RATE
from tests.lpstream.whep_harness import (
    HEIGHT,
    WIDTH,
    AiortcViewer,
    Node,
    open_whep_node,
    play,
)
from tests.mediatools import ffmpeg, make_clip

pytestmark = [pytest.mark.slow, pytest.mark.solo]

VIDEO_RATE = 90_000
OFFSET_LIMIT = 0.040


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with open_whep_node() as running:
        yield running


@pytest.fixture(scope="module")
def marked_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of the flashing, beeping source: H.264 (1 s GOPs, no B-frames) and AAC."""
    path = tmp_path_factory.mktemp("whep-audio") / "marked.flv"
    ffmpeg(
        *marked_source(size=f"{WIDTH}x{HEIGHT}"),
        "-t",
        "20",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-bf",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-f",
        "flv",
        str(path),
    )
    return path


async def publish(node: Node, clip: Path, name: str) -> trio.Process:
    """ffmpeg pushes ``clip`` unchanged, in real time, as ``name``."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(clip)]
    command += ["-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{node.rtmp_port}/live/{name}"]
    process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL)
    await node.wait_for(lambda: node.gateway.subscribe(name, "source") is not None, 10, name)
    return process


def flash_times(viewer: AiortcViewer) -> list[float]:
    """Flash onsets of the viewer's video, on the sender's clock."""
    clock = SenderClock(viewer.video_reports, VIDEO_RATE)
    decoder = av.CodecContext.create("h264", "r")
    lumas: list[tuple[float, float]] = []
    for rtp, data in viewer.video:
        packet = av.Packet(data)
        packet.pts = rtp
        for frame in decoder.decode(packet):
            assert frame.pts is not None
            luma = frame.to_ndarray(format="gray").mean()
            lumas.append((clock.seconds(frame.pts), float(luma)))
    return flash_onsets(lumas)


def opus_pcm(packets: list[tuple[int, bytes]]) -> list[tuple[int, np.ndarray]]:
    """Each Opus packet decoded: (RTP time, mono samples)."""
    decoder = av.CodecContext.create("opus", "r")
    decoded: list[tuple[int, np.ndarray]] = []
    for rtp, data in packets:
        for frame in decoder.decode(av.Packet(data)):
            decoded.append((rtp, frame.to_ndarray().mean(axis=0)))
    return decoded


def beep_times(viewer: AiortcViewer) -> list[float]:
    """Beep onsets of the viewer's sound, on the sender's clock."""
    clock = SenderClock(viewer.audio_reports, SAMPLE_RATE)
    levels: list[tuple[float, float]] = []
    for rtp, samples in opus_pcm(viewer.audio):
        levels += envelope(samples, clock.seconds(rtp), SAMPLE_RATE)
    return beep_onsets(levels)


def av_offsets(viewer: AiortcViewer) -> list[float]:
    return pair_offsets(beep_times(viewer), flash_times(viewer))


def audio(node: Node, stream: str = "cam") -> dict[str, Any]:
    """The stream's audio figures, as /api/status shows them."""
    statistics = node.gateway.status().streams[stream].statistics
    assert statistics is not None
    figures = statistics.webrtc["audio"]
    assert isinstance(figures, dict)
    return figures


def without_opus(offer: str) -> str:
    """``offer`` with Opus taken out of its audio section (PCMU and PCMA are left)."""
    opus = next(
        line.split()[0].split(":")[1]
        for line in offer.splitlines()
        if line.startswith("a=rtpmap:") and "opus" in line.lower()
    )
    lines = []
    for line in offer.splitlines():
        if line.startswith("m=audio"):
            line = " ".join(part for part in line.split() if part != opus)
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")) and line.split()[0].endswith(
            f":{opus}"
        ):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


async def watch(node: Node, path: str, seconds: float) -> AiortcViewer:
    viewer, _ = await play(node, path)
    await node.wait_for(lambda: len(viewer.audio) > 0, 10, f"sound on {path}")
    await trio.sleep(seconds)
    figures = node.whep.statistics()
    (session,) = figures.sessions
    print(
        f"{path}: sound and picture held {session.audio_lag_ms} ms; {session.send_delay}; "
        f"{figures.audio_packets_sent_total} Opus packets sent, "
        f"{figures.audio_packets_dropped_total} dropped"
    )
    # Sound is dropped only to start at live and after a stall: a few packets at most.
    assert figures.audio_packets_dropped_total < 0.1 * figures.audio_packets_sent_total
    await node.run_client(viewer.close)
    return viewer


async def test_a_viewer_hears_the_source_in_sync_with_its_picture(
    node: Node, marked_clip: Path
) -> None:
    process = await publish(node, marked_clip, "cam")
    try:
        viewer = await watch(node, "/whep/cam", 8)
    finally:
        process.kill()
        await process.wait()

    # Opus, 20 ms a packet, back to back on the RTP timeline, decoding to 48 kHz sound.
    assert len(viewer.audio) > 300, len(viewer.audio)
    steps = [b[0] - a[0] for a, b in zip(viewer.audio, viewer.audio[1:], strict=False)]
    assert statistics.mode(steps) == FRAME_SAMPLES
    assert sum(step == FRAME_SAMPLES for step in steps) > 0.95 * len(steps), steps
    pcm = np.concatenate([samples for _, samples in opus_pcm(viewer.audio)])
    assert np.abs(pcm).max() > 0.05  # sound, not silence

    offsets = av_offsets(viewer)
    print(f"source: A/V offset on the sender's clock, ms: {[round(o * 1000) for o in offsets]}")
    assert len(offsets) >= 6, offsets
    assert abs(statistics.median(offsets)) <= OFFSET_LIMIT, offsets


async def test_a_rendition_viewer_hears_the_sound_held_back_with_its_picture(
    node: Node, marked_clip: Path
) -> None:
    process = await publish(node, marked_clip, "cam")
    try:
        source = node.gateway.subscribe("cam", "source")
        assert source is not None
        source.close()
        viewer = await watch(node, "/whep/cam/copy", 8)
    finally:
        process.kill()
        await process.wait()
    offsets = av_offsets(viewer)
    print(f"rendition: A/V offset on the sender's clock, ms: {[round(o * 1000) for o in offsets]}")
    assert len(offsets) >= 5, offsets
    assert abs(statistics.median(offsets)) <= OFFSET_LIMIT, offsets


async def test_one_opus_encoder_serves_every_viewer_and_stops_without_them(
    node: Node, marked_clip: Path
) -> None:
    process = await publish(node, marked_clip, "cam")
    try:
        await node.wait_for(lambda: audio(node)["has_audio"], 5, "the stream's AAC config")
        assert not audio(node)["encoder_running"]  # nobody listens: nothing is encoded

        first, _ = await play(node, "/whep/cam")
        second, _ = await play(node, "/whep/cam/copy")
        await node.wait_for(lambda: len(first.audio) >= 100, 10, "sound to the first")
        await node.wait_for(lambda: len(second.audio) >= 50, 10, "sound to the second")
        figures = audio(node)
        assert figures["listeners"] == 2 and figures["encoder_running"]
        assert figures["encoders_started"] == 1
        # One encode, two listeners: the rendition's viewer gets the very packets the
        # source's viewer got (later: with its picture).
        assert {data for _, data in second.audio[:50]} <= {data for _, data in first.audio}
        assert figures["opus_packets_out"] <= figures["aac_packets_in"] * 2

        for viewer in (first, second):
            await node.run_client(viewer.close)
        await node.wait_for(lambda: node.whep.statistics().active_sessions == 0, 5, "closes")
        figures = audio(node)
        assert figures["listeners"] == 0 and not figures["encoder_running"]
        await trio.sleep(0.5)
        assert audio(node)["opus_packets_out"] == figures["opus_packets_out"]  # stopped

        third, _ = await play(node, "/whep/cam")
        await node.wait_for(lambda: len(third.audio) >= 10, 10, "sound to the third")
        assert audio(node)["encoders_started"] == 2
        await node.run_client(third.close)
    finally:
        process.kill()
        await process.wait()


async def test_the_answer_sends_audio_only_when_there_is_sound_to_send(
    node: Node, tmp_path: Path
) -> None:
    silent = make_clip(tmp_path / "silent.flv", seconds=8, size=f"{WIDTH}x{HEIGHT}", audio=False)
    process = await publish(node, silent, "mute")
    try:
        # A stream without sound: the offer's audio is answered inactive, the picture plays.
        viewer, reply = await play(node, "/whep/mute")
        answer = reply.body.decode()
        audio_section = answer[answer.index("m=audio") :]
        assert "a=inactive" in audio_section or audio_section.startswith("m=audio 0 ")
        await node.wait_for(lambda: len(viewer.frames) >= 30, 10, "the picture")
        assert not viewer.audio
        (session,) = node.whep.statistics().sessions
        assert not session.audio
        await node.run_client(viewer.close)

        # An offer with no audio section gets none.
        quiet, reply = await play(node, "/whep/mute", audio=False)
        assert "m=audio" not in reply.body.decode()
        await node.run_client(quiet.close)
    finally:
        process.kill()
        await process.wait()


async def test_an_offer_without_opus_gets_the_picture_and_no_sound(
    node: Node, marked_clip: Path
) -> None:
    process = await publish(node, marked_clip, "cam")
    try:
        viewer = AiortcViewer()
        offer = await node.run_client(viewer.offer)
        no_opus = without_opus(offer)
        assert "opus" not in no_opus.lower() and "m=audio" in no_opus
        reply = await node.post_offer("/whep/cam", no_opus)
        assert reply.status == 201, reply.body
        audio_section = reply.body.decode()[reply.body.decode().index("m=audio") :]
        assert "a=sendonly" not in audio_section
        await node.run_client(lambda: viewer.accept(reply.body.decode()))
        await node.wait_for(lambda: len(viewer.frames) >= 30, 10, "the picture")
        assert not viewer.audio and not node.whep.statistics().sessions[0].audio
        await node.run_client(viewer.close)
    finally:
        process.kill()
        await process.wait()
