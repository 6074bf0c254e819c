"""Forwards to a real RTMP destination (ffmpeg listening), including one that dies."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import attrs
import pytest
import trio

from benchmarks.harness.listeners import FfmpegListener
from ingest.rtmp import PublishRequested, RtmpServerConnection
from lpstream.restream import (
    Forward,
    ForwardSegment,
    ForwardSettings,
    ForwardState,
    parse_forward_url,
)
from tests.restream.conftest import Clip
from tests.restream.receivers import read_received, renumbered, wait_status

FAST = ForwardSettings(connect_timeout=3, write_timeout=3, backoff_initial=0.2, backoff_max=1)


async def start_listener(kind: str, out: Path, port: int | None = None) -> FfmpegListener:
    listener = FfmpegListener(kind, out, port=port)
    await trio.to_thread.run_sync(listener.wait_listening)
    return listener


def forward_to(url: str, settings: ForwardSettings = FAST) -> Forward:
    return Forward(id="f1", target=parse_forward_url(url), rendition="source", settings=settings)


async def test_forward_reaches_an_rtmp_listener_whole(tmp_path: Path, clip: Clip) -> None:
    listener = await start_listener("rtmp", tmp_path / "received.ts")
    forward = forward_to(listener.url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward.run)
        with trio.fail_after(10):
            await forward.wait_state(ForwardState.LIVE)
        for segment in clip.segments:
            forward.offer(segment)
        status = await wait_status(forward, lambda s: s.segments_sent == len(clip.segments))
        forward.close()
    assert forward.state is ForwardState.STOPPED
    assert status.state == "live" and status.reconnects == 0 and status.last_error is None
    assert status.bytes_sent > 0.8 * sum(len(s.data) for s in clip.segments)
    assert status.url.endswith("/live/****")
    assert await trio.to_thread.run_sync(listener.wait) == 0, listener.log()
    received = read_received(listener.out)
    assert received.sizes == ((320, 240),)
    # What the muxer still held when the forward closed (a frame or two) never left.
    assert 355 <= received.video_frames <= 360
    assert abs(received.seconds - clip.seconds) < 0.2
    assert received.audio_packets > 0.95 * clip.seconds * 48_000 / 1024


async def test_forward_reconnects_to_a_restarted_destination(tmp_path: Path, clip: Clip) -> None:
    first = await start_listener("rtmp", tmp_path / "first.ts")
    forward = forward_to(first.url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward.run)
        with trio.fail_after(10):
            await forward.wait_state(ForwardState.LIVE)
        for segment in clip.segments[:2]:
            forward.offer(segment)
        await wait_status(forward, lambda s: s.segments_sent == 2)
        first.kill()
        with trio.fail_after(10):
            await forward.wait_state(ForwardState.RETRYING)
        assert forward.status().last_error
        second = await start_listener("rtmp", tmp_path / "second.ts", port=first.port)
        with trio.fail_after(10):
            await forward.wait_state(ForwardState.LIVE)
        later = renumbered(clip.segments[2:], first=2)
        for segment in later:
            forward.offer(segment)
        status = await wait_status(forward, lambda s: s.segments_sent == 2 + len(later))
        forward.close()
    assert status.reconnects >= 1
    assert await trio.to_thread.run_sync(second.wait) == 0, second.log()
    received = read_received(second.out)
    assert abs(received.seconds - 2.0 * len(later)) < 0.2
    assert received.video_frames >= 60 * len(later) - 5


async def test_offer_on_a_full_queue_drops_the_oldest(
    tmp_path: Path, clip: Clip, caplog: pytest.LogCaptureFixture
) -> None:
    listener = await start_listener("rtmp", tmp_path / "received.ts")
    forward = forward_to(listener.url, ForwardSettings(queue_segments=3))
    segments = renumbered(clip.segments[:5], first=0)
    with caplog.at_level(logging.WARNING, logger="lpstream.restream"):
        for segment in segments:
            forward.offer(segment)  # nothing sends yet: the queue fills
    status = forward.status()
    assert (status.queued, status.segments_dropped) == (3, 2)
    assert len([r for r in caplog.records if "dropping segments" in r.message]) == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward.run)
        status = await wait_status(forward, lambda s: s.segments_sent == 3)
        forward.close()
    assert status.segments_dropped == 2
    assert await trio.to_thread.run_sync(listener.wait) == 0, listener.log()
    received = read_received(listener.out)
    # The three newest (2, 3, 4) arrived: six seconds, joined without a hole.
    assert abs(received.seconds - 6.0) < 0.2


async def test_a_silent_destination_times_out(clip: Clip) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []
    settings = ForwardSettings(connect_timeout=0.5, backoff_initial=0.1, backoff_max=0.2)
    forward = forward_to(f"rtmp://127.0.0.1:{port}/live/key", settings)

    async def accept_and_say_nothing() -> None:
        while True:
            held.append(await listeners[0].accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_say_nothing)
        nursery.start_soon(forward.run)
        status = await wait_status(forward, lambda s: s.reconnects >= 2, within=5)
        forward.close()
        nursery.cancel_scope.cancel()
    for stream in [*held, *listeners]:
        await stream.aclose()
    assert status.state in ("retrying", "connecting")
    assert status.last_error is not None and "timed out" in status.last_error
    assert "key" not in status.last_error.replace("/live/****", "")
    assert len(held) >= 2


async def test_a_refused_connection_backs_off_and_counts_reconnects() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there now
    settings = ForwardSettings(backoff_initial=0.05, backoff_max=0.2)
    forward = forward_to(f"rtmp://127.0.0.1:{port}/live/key", settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward.run)
        start = trio.current_time()
        status = await wait_status(forward, lambda s: s.reconnects >= 4, within=5)
        elapsed = trio.current_time() - start
        forward.close()
    # Waits of 0.05, 0.1, 0.2, 0.2 before the fourth reconnect.
    assert elapsed >= 0.5
    assert status.state == "retrying"
    assert status.last_error is not None and "connecting to rtmp://127.0.0.1" in status.last_error
    assert forward.state is ForwardState.STOPPED


async def test_a_new_publisher_with_another_size_goes_on_in_the_same_forward(
    tmp_path: Path, clip: Clip, other_clip: Clip
) -> None:
    listener = await start_listener("rtmp", tmp_path / "received.ts")
    forward = forward_to(listener.url)
    sequence = [
        *clip.segments[:2],
        attrs.evolve(other_clip.segments[0], discontinuity=True),
        other_clip.segments[1],
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward.run)
        for segment in sequence:
            forward.offer(segment)
        status = await wait_status(forward, lambda s: s.segments_sent == len(sequence))
        forward.close()
    assert status.reconnects == 0
    assert await trio.to_thread.run_sync(listener.wait) == 0, listener.log()
    received = read_received(listener.out)
    assert received.sizes == ((320, 240), (256, 144))
    assert abs(received.seconds - 8.0) < 0.2


async def test_a_refused_stream_key_shows_the_reason_but_not_the_key() -> None:
    async def refuse_every_publish(stream: trio.SocketStream) -> None:
        connection = RtmpServerConnection(app="live")
        async with stream:
            while not connection.closed:
                data = await stream.receive_some(65_536)
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, PublishRequested):
                        connection.reject_publish(f"key {event.stream_name} is not allowed")
                await stream.send_all(connection.data_to_send())

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, refuse_every_publish, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        forward = forward_to(f"rtmp://127.0.0.1:{port}/live/sk-live-7f3a9")
        nursery.start_soon(forward.run)
        status = await wait_status(forward, lambda s: s.last_error is not None)
        forward.close()
        nursery.cancel_scope.cancel()
    assert status.state == "retrying"
    assert status.last_error is not None
    assert "NetStream.Publish.BadName: key **** is not allowed" in status.last_error
    assert "sk-live-7f3a9" not in repr(status)


async def test_a_segment_that_cannot_be_remuxed_is_skipped_not_fatal(
    tmp_path: Path, clip: Clip
) -> None:
    listener = await start_listener("rtmp", tmp_path / "received.ts")
    forward = forward_to(listener.url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward.run)
        forward.offer(clip.segments[0])
        forward.offer(ForwardSegment(seq=1, data=b"\x47" + bytes(2000)))
        forward.offer(clip.segments[2])
        status = await wait_status(forward, lambda s: s.segments_sent == 2)
        forward.close()
    assert (status.segments_dropped, status.reconnects) == (1, 0)
    assert status.last_error is not None and "segment 1" in status.last_error
    assert await trio.to_thread.run_sync(listener.wait) == 0, listener.log()
    assert abs(read_received(listener.out).seconds - 4.0) < 0.2
