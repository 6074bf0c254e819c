"""The trio RTMP server against real ffmpeg publishers and real misbehaving TCP clients."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from ingest.rtmp import RtmpServer, amf0
from ingest.rtmp.amf0 import AmfValue
from ingest.rtmp.chunk import ChunkReader, MessageType, encode_message
from lpstream.errors import StreamInUseError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, StreamMetadata, TrackKind

LOGGER = "lpstream.ingest.rtmp"


# -- a real handler: records what it is given, refuses a name already live -------------------


@attrs.define
class RecordingPublisher:
    name: str
    events: list[MediaEvent] = attrs.field(factory=list)
    closed: trio.Event = attrs.field(factory=trio.Event)
    media: trio.Event = attrs.field(factory=trio.Event)
    fail_after: int | None = None

    async def send(self, event: MediaEvent) -> None:
        if self.fail_after is not None and len(self.events) >= self.fail_after:
            raise trio.BrokenResourceError("sink gone")
        self.events.append(event)
        if isinstance(event, MediaPacket):
            self.media.set()

    async def aclose(self) -> None:
        assert not self.closed.is_set(), "aclose called twice"
        self.closed.set()

    def packets(self, kind: TrackKind) -> list[MediaPacket]:
        return [e for e in self.events if isinstance(e, MediaPacket) and e.kind is kind]


@attrs.define
class RecordingHandler:
    live: dict[str, RecordingPublisher] = attrs.field(factory=dict)
    finished: list[RecordingPublisher] = attrs.field(factory=list)
    fail_after: int | None = None
    started: trio.Event = attrs.field(factory=trio.Event)

    async def start_publish(self, stream_name: str, **who: object) -> RecordingPublisher:
        current = self.live.get(stream_name)
        if current is not None and not current.closed.is_set():
            raise StreamInUseError(f"stream {stream_name!r} already has a publisher")
        if current is not None:
            self.finished.append(current)
        publisher = RecordingPublisher(name=stream_name, fail_after=self.fail_after)
        self.live[stream_name] = publisher
        self.started.set()
        return publisher


@asynccontextmanager
async def running_server(
    handler: RecordingHandler, *, handshake_timeout: float = 10.0, idle_timeout: float = 15.0
) -> AsyncIterator[tuple[RtmpServer, int]]:
    server = RtmpServer(
        handler=handler, handshake_timeout=handshake_timeout, idle_timeout=idle_timeout
    )
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.serve, "127.0.0.1", 0)
        assert host == "127.0.0.1"
        assert port > 0
        yield server, port
        nursery.cancel_scope.cancel()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Polls ``condition`` (the server's counters have no event to wait on) for up to 10 s."""
    with trio.fail_after(10):
        while True:
            if condition():
                return
            await trio.sleep(0.01)


# -- ffmpeg ----------------------------------------------------------------------------------


def ffmpeg_cmd(port: int, name: str, seconds: float = 3) -> list[str]:
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "30",
        "-c:a",
        "aac",
        "-f",
        "flv",
        f"rtmp://127.0.0.1:{port}/live/{name}",
    ]


async def run_ffmpeg(port: int, name: str) -> int:
    with trio.fail_after(30):
        result = await trio.run_process(ffmpeg_cmd(port, name), capture_stderr=True, check=False)
    return result.returncode


def check_three_second_stream(publisher: RecordingPublisher) -> None:
    configs = [e for e in publisher.events if isinstance(e, CodecConfig)]
    assert {(c.kind, c.codec) for c in configs} == {
        (TrackKind.VIDEO, "h264"),
        (TrackKind.AUDIO, "aac"),
    }
    video = publisher.packets(TrackKind.VIDEO)
    audio = publisher.packets(TrackKind.AUDIO)
    assert len(video) == 90
    assert [i for i, p in enumerate(video) if p.keyframe] == [0, 30, 60]
    assert 120 <= len(audio) <= 140  # 3 s of 1024-sample frames at 44.1 kHz
    for packets in (video, audio):
        dts = [p.dts for p in packets]
        assert dts == sorted(dts)
    assert all(p.pts >= p.dts for p in video)
    assert 2900 <= video[-1].dts <= 3100
    first_media = next(i for i, e in enumerate(publisher.events) if isinstance(e, MediaPacket))
    assert all(isinstance(e, CodecConfig | StreamMetadata) for e in publisher.events[:first_media])
    assert publisher.closed.is_set()


async def test_ffmpeg_publishes_h264_and_aac() -> None:
    handler = RecordingHandler()
    async with running_server(handler) as (server, port):
        assert await run_ffmpeg(port, "t") == 0
        publisher = handler.live["t"]
        await wait_until(publisher.closed.is_set)
        metadata = [e for e in publisher.events if isinstance(e, StreamMetadata)]
        assert metadata[0].values["width"] == 320.0
        check_three_second_stream(publisher)
        await wait_until(lambda: server.statistics().open_connections == 0)
        stats = server.statistics()
        assert (stats.active_publishers, stats.connections_total, stats.errors_total) == (0, 1, 0)


async def test_two_publishers_at_once_and_a_duplicate_name_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = RecordingHandler()
    codes: dict[str, int] = {}

    async def publish(name: str, key: str) -> None:
        codes[key] = await run_ffmpeg(port, name)

    async with running_server(handler) as (server, port), trio.open_nursery() as nursery:
        nursery.start_soon(publish, "a", "a")
        nursery.start_soon(publish, "b", "b")
        await wait_until(lambda: "a" in handler.live and handler.live["a"].media.is_set())
        assert server.statistics().active_publishers >= 1
        first = handler.live["a"]
        await publish("a", "duplicate")
        assert codes["duplicate"] != 0
        assert handler.live["a"] is first  # the first publisher kept its name
        assert not first.closed.is_set()
    assert codes == {"a": 0, "b": 0, "duplicate": codes["duplicate"]}
    check_three_second_stream(handler.live["a"])
    check_three_second_stream(handler.live["b"])
    refusals = [r for r in caplog.records if "publish refused" in r.getMessage()]
    assert len(refusals) == 1
    assert "stream 'a'" in refusals[0].getMessage()
    assert "already has a publisher" in refusals[0].getMessage()
    assert server.statistics().errors_total == 1


# -- a minimal client over TCP ---------------------------------------------------------------


def message(csid: int, type_id: int, payload: bytes, stream_id: int = 0) -> bytes:
    return encode_message(
        chunk_stream_id=csid,
        type_id=type_id,
        stream_id=stream_id,
        payload=payload,
        chunk_size=128,
    )


def command(*values: AmfValue, stream_id: int = 0) -> bytes:
    return message(3, MessageType.COMMAND_AMF0, amf0.encode_all(values), stream_id)


CONNECT = command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})


def publish(name: str) -> bytes:
    return command("createStream", 2.0, None) + command(
        "publish", 3.0, None, name, "live", stream_id=1
    )


async def open_client(port: int) -> trio.SocketStream:
    """Connects and finishes the plain handshake."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x03" + bytes(1536))
    received = b""
    with trio.fail_after(5):
        while len(received) < 3073:
            received += await stream.receive_some()
    await stream.send_all(received[1:1537])
    return stream


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some():
                data += chunk
        except trio.BrokenResourceError:
            pass  # a reset: the server closed with our bytes unread
    await stream.aclose()
    return data


async def read_commands(stream: trio.SocketStream, count: int) -> list[list[AmfValue]]:
    reader = ChunkReader()
    found: list[list[AmfValue]] = []
    with trio.fail_after(5):
        while len(found) < count:
            reader.feed(await stream.receive_some())
            found += [
                amf0.decode_all(m.payload)
                for m in reader.read_messages()
                if m.type_id == MessageType.COMMAND_AMF0
            ]
    return found


# -- misbehaving clients ----------------------------------------------------------------------


async def send_random_bytes(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4000))
    return await read_until_closed(stream)


async def send_truncated_handshake(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x03" + bytes(700))
    return await read_until_closed(stream)


async def send_oversized_chunk_size(port: int) -> bytes:
    stream = await open_client(port)
    await stream.send_all(message(2, MessageType.SET_CHUNK_SIZE, struct.pack(">I", 0x7FFFFFFF)))
    return await read_until_closed(stream)


async def send_malformed_command(port: int) -> bytes:
    stream = await open_client(port)
    await stream.send_all(message(3, MessageType.COMMAND_AMF0, b"\x02\x00\x40connect"))
    return await read_until_closed(stream)


async def publish_without_connect(port: int) -> bytes:
    stream = await open_client(port)
    await stream.send_all(command("publish", 3.0, None, "x", "live", stream_id=1))
    return await read_until_closed(stream)


async def stall_after_connect(port: int) -> bytes:
    stream = await open_client(port)
    await stream.send_all(CONNECT)
    return await read_until_closed(stream)


async def send_unsupported_codec(port: int) -> bytes:
    stream = await open_client(port)
    await stream.send_all(CONNECT + publish("vp6"))
    await read_commands(stream, 3)  # connect, createStream, onStatus
    await stream.send_all(message(6, MessageType.VIDEO, b"\x14\x00\x00", stream_id=1))
    return await read_until_closed(stream)


BAD_CLIENTS: dict[str, tuple[Callable[[int], Awaitable[bytes]], str]] = {
    "random bytes": (send_random_bytes, "RTMP version 71 in C0 is not supported"),
    "truncated handshake": (send_truncated_handshake, "handshake not finished within"),
    "oversized chunk size": (send_oversized_chunk_size, "chunk size 2147483647 over limit"),
    "malformed AMF command": (send_malformed_command, "truncated AMF0 string"),
    "publish without connect": (publish_without_connect, "'publish' before 'connect'"),
    "stalled client": (stall_after_connect, "stalled client: no data for"),
    "unsupported codec": (send_unsupported_codec, "unsupported video codec id 4"),
}


@pytest.mark.parametrize("case", list(BAD_CLIENTS))
async def test_a_misbehaving_client_is_closed_with_a_logged_reason(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    client, reason = BAD_CLIENTS[case]
    handler = RecordingHandler()
    async with running_server(handler, handshake_timeout=0.5, idle_timeout=0.5) as (server, port):
        await client(port)
        await wait_until(lambda: server.statistics().open_connections == 0)
        stats = server.statistics()
        assert (stats.errors_total, stats.active_publishers) == (1, 0)
    (record,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    text = record.getMessage()
    assert reason in text
    assert "RTMP 127.0.0.1:" in text
    if case == "unsupported codec":
        assert "stream 'vp6'" in text
        assert handler.live["vp6"].closed.is_set()


async def test_misbehaving_clients_do_not_disturb_a_publisher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = RecordingHandler()
    async with running_server(handler, handshake_timeout=0.5, idle_timeout=2.0) as (server, port):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ffmpeg, port, "good")
            await wait_until(lambda: "good" in handler.live and handler.live["good"].media.is_set())
            async with trio.open_nursery() as bad:
                for client, _ in BAD_CLIENTS.values():
                    bad.start_soon(client, port)
        good = handler.live["good"]
        await wait_until(good.closed.is_set)
        check_three_second_stream(good)
        await wait_until(lambda: server.statistics().open_connections == 0)
        assert server.statistics().errors_total == len(BAD_CLIENTS)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for _, reason in BAD_CLIENTS.values():
        assert any(reason in m for m in messages), reason


# -- publisher life cycle ----------------------------------------------------------------------


async def test_refused_publish_gets_bad_name_and_the_first_publisher_stays() -> None:
    handler = RecordingHandler()
    async with running_server(handler) as (server, port):
        first = await open_client(port)
        await first.send_all(CONNECT + publish("cam"))
        replies = await read_commands(first, 3)
        status = replies[2][3]
        assert isinstance(status, dict)
        assert status["code"] == "NetStream.Publish.Start"

        second = await open_client(port)
        await second.send_all(CONNECT + publish("cam"))
        replies = await read_commands(second, 3)
        status = replies[2][3]
        assert isinstance(status, dict)
        assert status["code"] == "NetStream.Publish.BadName"
        assert "already has a publisher" in str(status["description"])
        await read_until_closed(second)

        await first.send_all(message(6, MessageType.VIDEO, b"\x17\x00\x00\x00\x00\x01", 1))
        publisher = handler.live["cam"]
        await wait_until(lambda: len(publisher.events) == 1)
        assert server.statistics().active_publishers == 1
        await first.aclose()
        await wait_until(publisher.closed.is_set)
        assert server.statistics().active_publishers == 0


async def test_a_failing_publisher_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    handler = RecordingHandler(fail_after=0)
    async with running_server(handler) as (server, port):
        stream = await open_client(port)
        await stream.send_all(CONNECT + publish("x"))
        await read_commands(stream, 3)
        await stream.send_all(message(6, MessageType.VIDEO, b"\x17\x00\x00\x00\x00\x01", 1))
        await read_until_closed(stream)
        assert handler.live["x"].closed.is_set()
        await wait_until(lambda: server.statistics().open_connections == 0)
        # The server still serves.
        again = await open_client(port)
        await again.send_all(CONNECT)
        assert (await read_commands(again, 1))[0][0] == "_result"
        await again.aclose()
    assert any("publisher failed" in r.getMessage() for r in caplog.records)


async def test_cancelling_the_server_closes_live_publishers() -> None:
    handler = RecordingHandler()
    server = RtmpServer(handler=handler)
    with trio.move_on_after(10) as outer:
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(server.serve, "127.0.0.1", 0)
            stream = await open_client(port)
            await stream.send_all(CONNECT + publish("live1"))
            await read_commands(stream, 3)
            await wait_until(lambda: server.statistics().active_publishers == 1)
            nursery.cancel_scope.cancel()
    assert not outer.cancelled_caught
    assert handler.live["live1"].closed.is_set()
    assert server.statistics().open_connections == 0
    await stream.aclose()
