"""Forwards to a real SRT destination (ffmpeg listening through libsrt)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from benchmarks.harness.listeners import FfmpegListener, srt_listener_supported
from lpstream.restream import (
    Forward,
    ForwardSettings,
    ForwardState,
    parse_forward_url,
    srt_available,
)
from tests.restream.conftest import Clip
from tests.restream.receivers import read_received, renumbered, wait_status

pytestmark = [
    pytest.mark.skipif(not srt_available(), reason="libsrt is not installed on this machine"),
    pytest.mark.skipif(
        not srt_listener_supported(), reason="the ffmpeg on PATH was built without libsrt"
    ),
]

FAST = ForwardSettings(connect_timeout=3, write_timeout=3, backoff_initial=0.2, backoff_max=1)
LATENCY = 0.12
"""SRT's default receiver latency: what arrives is handed to ffmpeg this much later."""


async def start_listener(out: Path, port: int | None = None) -> FfmpegListener:
    listener = FfmpegListener("srt", out, port=port)
    await trio.to_thread.run_sync(listener.wait_listening)
    return listener


async def test_forward_reaches_an_srt_listener_whole(tmp_path: Path, clip: Clip) -> None:
    listener = await start_listener(tmp_path / "received.ts")
    url = f"{listener.url}?streamid=publish/secret-key&latency=120000"
    forward = Forward(id="s1", target=parse_forward_url(url), rendition="source", settings=FAST)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward.run)
        with trio.fail_after(10):
            await forward.wait_state(ForwardState.LIVE)
        for segment in clip.segments[:3]:
            forward.offer(segment)
        status = await wait_status(forward, lambda s: s.segments_sent == 3)
        await trio.sleep(4 * LATENCY)  # the receiver delivers after its latency
        forward.close()
    assert status.url.endswith("?streamid=****&latency=120000")
    assert status.bytes_sent > sum(len(s.data) for s in clip.segments[:3]) * 0.8
    assert await trio.to_thread.run_sync(listener.wait) in (0, 1), listener.log()
    received = read_received(listener.out)
    assert received.sizes == ((320, 240),)
    assert abs(received.seconds - 6.0) < 0.2
    assert received.video_frames >= 175


@pytest.mark.slow
async def test_srt_forward_reconnects_to_a_restarted_destination(
    tmp_path: Path, clip: Clip
) -> None:
    first = await start_listener(tmp_path / "first.ts")
    forward = Forward(
        id="s2", target=parse_forward_url(first.url), rendition="source", settings=FAST
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward.run)
        with trio.fail_after(10):
            await forward.wait_state(ForwardState.LIVE)
        forward.offer(clip.segments[0])
        await wait_status(forward, lambda s: s.segments_sent == 1)
        first.kill()
        # SRT notices a dead peer by its silence (the peer idle timeout, here write_timeout),
        # or when a send fails: keep the segments coming as a live stream would.
        with trio.fail_after(15):
            seq = 1
            while forward.state is not ForwardState.RETRYING:
                forward.offer(renumbered(clip.segments[1:2], first=seq)[0])
                seq += 1
                await trio.sleep(0.5)
        second = await start_listener(tmp_path / "second.ts", port=first.port)
        with trio.fail_after(10):
            await forward.wait_state(ForwardState.LIVE)
        sent = forward.status().segments_sent
        for segment in renumbered(clip.segments[2:5], first=100):
            forward.offer(segment)
        status = await wait_status(forward, lambda s: s.segments_sent >= sent + 3)
        await trio.sleep(4 * LATENCY)
        forward.close()
    assert status.reconnects >= 1 and status.last_error
    await trio.to_thread.run_sync(second.wait)
    received = read_received(second.out)
    assert received.seconds >= 5.8
