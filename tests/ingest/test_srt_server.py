"""The trio SRT server against real ffmpeg publishers and real libsrt callers that misbehave."""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from benchmarks.harness.listeners import srt_listener_supported
from ingest.srt import SrtServer, SrtSocket, srt_available
from lpstream.errors import TransportError
from lpstream.media import CodecConfig, TrackKind
from tests.ingest.test_rtmp_server import RecordingHandler, RecordingPublisher

pytestmark = [
    pytest.mark.skipif(not srt_available(), reason="libsrt is not installed on this machine"),
    pytest.mark.skipif(
        not srt_listener_supported(), reason="the ffmpeg on PATH was built without libsrt"
    ),
]

LOGGER = "lpstream.ingest.srt"
PASSPHRASE = "correct-horse-battery"


@asynccontextmanager
async def running_server(
    handler: object, **settings: object
) -> AsyncIterator[tuple[SrtServer, int]]:
    server = SrtServer(handler=handler, **settings)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.serve, "127.0.0.1", 0)
        assert host == "127.0.0.1" and port > 0
        yield server, port
        nursery.cancel_scope.cancel()


async def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Polls ``condition`` (the server's counters have no event to wait on)."""
    with trio.fail_after(seconds):
        while True:
            if condition():
                return
            await trio.sleep(0.02)


def srt_url(port: int, stream_id: str, passphrase: str | None = None) -> str:
    # linger: ffmpeg closes at once, and live SRT drops what it has not sent yet
    url = f"srt://127.0.0.1:{port}?streamid={stream_id}&connect_timeout=3000000&linger=2"
    return url + (f"&passphrase={passphrase}" if passphrase else "")


async def run_ffmpeg(url: str, *codec: str, seconds: float = 3) -> int:
    command = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine",
        "-t", str(seconds), *(codec or ("-c:v", "libx264", "-g", "30", "-c:a", "aac")),
        "-f", "mpegts", url,
    ]  # fmt: skip
    with trio.fail_after(30):
        result = await trio.run_process(command, capture_stderr=True, check=False)
    return result.returncode


async def connect(port: int, stream_id: str, passphrase: str | None = None) -> SrtSocket:
    """A real libsrt caller that sends nothing unless told."""
    return await trio.to_thread.run_sync(
        functools.partial(
            SrtSocket.connect,
            "127.0.0.1",
            port,
            connect_timeout=3,
            write_timeout=3,
            stream_id=stream_id,
            passphrase=passphrase,
        )
    )


def check_three_second_stream(publisher: RecordingPublisher) -> None:
    configs = {(e.kind, e.codec) for e in publisher.events if isinstance(e, CodecConfig)}
    assert configs == {(TrackKind.VIDEO, "h264"), (TrackKind.AUDIO, "aac")}
    video, audio = publisher.packets(TrackKind.VIDEO), publisher.packets(TrackKind.AUDIO)
    assert len(video) == 90
    assert [i for i, p in enumerate(video) if p.keyframe] == [0, 30, 60]
    assert 120 <= len(audio) <= 140  # 3 s of 1024-sample frames at 44.1 kHz
    assert video[-1].dts - video[0].dts == pytest.approx(2967, abs=2)
    assert publisher.closed.is_set()


def messages(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


async def test_ffmpeg_publishes_h264_and_aac_over_srt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    handler = RecordingHandler()
    async with running_server(handler) as (server, port):
        assert await run_ffmpeg(srt_url(port, "#!::r=live/cam,m=publish")) == 0
        publisher = handler.live["cam"]
        await wait_until(publisher.closed.is_set)
        check_three_second_stream(publisher)
        await wait_until(lambda: server.statistics().open_connections == 0)
        stats = server.statistics()
    assert (stats.connections_total, stats.active_publishers, stats.errors_total) == (1, 0, 0)
    assert stats.unpublished_connections == 0 and stats.refused_total == 0
    assert len(messages(caplog, "stream 'cam': publish ended: the caller left")) == 1


@pytest.mark.parametrize(
    ("stream_id", "reason"),
    [
        ("#!::r=live/cam,m=request", "takes publishers only (m=publish)"),
        ("other/cam", "unknown application 'other'"),
        ("live/..", "invalid stream name"),
        ("", "no stream id"),
    ],
)
async def test_a_bad_stream_id_is_refused_in_the_handshake_and_logged_once(
    caplog: pytest.LogCaptureFixture, stream_id: str, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = RecordingHandler()
    async with running_server(handler) as (server, port):
        with pytest.raises(TransportError, match="connecting to srt://"):
            await connect(port, stream_id)
        await wait_until(lambda: server.statistics().refused_total == 1)
        assert server.statistics().connections_total == 0
    assert handler.live == {}
    refused = messages(caplog, "refused in the handshake: bad stream id:")
    assert len(refused) == 1 and reason in refused[0]


async def test_a_wrong_passphrase_is_refused_by_libsrt_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = RecordingHandler()
    async with running_server(handler, passphrase=PASSPHRASE) as (server, port):
        for wrong in ("not the passphrase", None):
            with pytest.raises(TransportError):
                await connect(port, "live/cam", passphrase=wrong)
        await wait_until(lambda: server.statistics().refused_total == 2)
        assert handler.live == {}
        # The right one goes through, and the stream plays.
        url = srt_url(port, "live/cam", passphrase=PASSPHRASE)
        assert await run_ffmpeg(url) == 0
        await wait_until(handler.live["cam"].closed.is_set)
    check_three_second_stream(handler.live["cam"])
    refusals = messages(caplog, "refused in the handshake: libsrt:")
    assert len(refusals) == 2
    assert "SRT 127.0.0.1:" in refusals[0] and "stream 'cam'" in refusals[0]
    assert "BADSECRET" in refusals[0] and "UNSECURE" in refusals[1]


async def test_a_stalled_sender_is_closed_while_another_stream_flows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = RecordingHandler()
    async with running_server(handler, idle_timeout=1.5) as (server, port):
        stalled = await connect(port, "live/stalled")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_ffmpeg, srt_url(port, "live/flowing"))
                await wait_until(lambda: "stalled" in handler.live)
                await wait_until(handler.live["stalled"].closed.is_set, seconds=5)
        finally:
            stalled.close()
        await wait_until(handler.live["flowing"].closed.is_set)
        stats = server.statistics()
    check_three_second_stream(handler.live["flowing"])
    assert handler.live["stalled"].events == []
    closed = messages(caplog, "stalled sender: no data for 1.5 s (code 408)")
    assert len(closed) == 1 and "stream 'stalled'" in closed[0]
    assert stats.errors_total == 1


async def test_random_datagrams_to_the_port_change_nothing() -> None:
    handler = RecordingHandler()
    async with running_server(handler) as (server, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for size in [1, 16, 64, 1316, 1500] * 100:
                udp.sendto(os.urandom(size), ("127.0.0.1", port))
        assert await run_ffmpeg(srt_url(port, "live/after")) == 0
        await wait_until(handler.live["after"].closed.is_set)
        stats = server.statistics()
    check_three_second_stream(handler.live["after"])
    assert (stats.connections_total, stats.errors_total, stats.refused_total) == (1, 0, 0)


async def test_media_that_is_not_taken_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = RecordingHandler()
    async with running_server(handler) as (server, port), trio.open_nursery() as nursery:
        nursery.start_soon(run_ffmpeg, srt_url(port, "live/good"))
        await run_ffmpeg(srt_url(port, "live/mpeg2"), "-c:v", "mpeg2video", "-an", seconds=2)
        await wait_until(handler.live["mpeg2"].closed.is_set)
        # The good caller runs beside it: on a loaded machine it may not even be publishing yet.
        await wait_until(lambda: "good" in handler.live and handler.live["good"].closed.is_set())
        assert server.statistics().errors_total == 1
    check_three_second_stream(handler.live["good"])
    closed = messages(caplog, "unsupported MPEG-2 video stream")
    assert len(closed) == 1 and "stream 'mpeg2'" in closed[0] and "(code 415)" in closed[0]


async def test_a_name_that_is_live_is_refused_to_a_second_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = RecordingHandler()
    async with running_server(handler) as (server, port):
        first = await connect(port, "#!::r=live/cam,m=publish")
        second = await connect(port, "live/cam")
        try:
            await wait_until(lambda: server.statistics().errors_total == 1)
            assert server.statistics().active_publishers == 1
            assert not handler.live["cam"].closed.is_set()
        finally:
            first.close()
            second.close()
    refused = messages(caplog, "publish refused: stream 'cam' already has a publisher")
    assert len(refused) == 1


@attrs.define
class SlowHandler:
    """Decides on nothing until told: every caller waits in publish authorization."""

    release: trio.Event = attrs.field(factory=trio.Event)
    asked: int = 0

    async def start_publish(self, stream_name: str, **who: object) -> RecordingPublisher:
        self.asked += 1
        await self.release.wait()
        return RecordingPublisher(name=stream_name)


async def test_connections_not_publishing_are_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = SlowHandler()
    async with running_server(handler, max_unpublished=2) as (server, port):
        callers = [await connect(port, f"live/wait{n}") for n in range(2)]
        await wait_until(lambda: handler.asked == 2)
        assert server.statistics().unpublished_connections == 2
        with pytest.raises(TransportError):
            await connect(port, "live/one-too-many")
        await wait_until(lambda: server.statistics().refused_total == 1)
        handler.release.set()
        await wait_until(lambda: server.statistics().unpublished_connections == 0)
        assert server.statistics().active_publishers == 2
        for caller in callers:
            caller.close()
    assert len(messages(caplog, "too many connections not publishing (2; the limit is 2)")) == 1
