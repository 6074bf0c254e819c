"""What an anonymous RTMP client can make the server hold, and how a publish is stopped.

Sans-IO first (bytes only), then the trio server with real TCP clients.
"""

from __future__ import annotations

import pytest
import trio

from ingest.rtmp import ConnectionState, RtmpServerConnection
from ingest.rtmp.chunk import ChunkReader, MessageType
from ingest.rtmp.protocol import MAX_UNPUBLISHED_MESSAGE_SIZE, MAX_UNPUBLISHED_PENDING
from lpstream.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from lpstream.media import MediaPacket
from tests.ingest.test_rtmp_protocol import (
    AVCC,
    TestClient,
    avc,
    commands,
    connect_cmd,
    connected,
    drain,
    handshake,
    publishing,
    server_messages,
)
from tests.ingest.test_rtmp_server import (
    CONNECT,
    RecordingHandler,
    open_client,
    read_until_closed,
    running_server,
    wait_until,
)

# -- sans-IO ---------------------------------------------------------------------------------


def test_a_message_over_the_unpublished_limit_is_refused_at_its_header() -> None:
    conn = RtmpServerConnection()
    client = TestClient()
    handshake(conn)
    big = MAX_UNPUBLISHED_MESSAGE_SIZE + 1
    # Only the header and one chunk are sent: the refusal must not wait for the body.
    conn.receive_data(client.message(3, MessageType.COMMAND_AMF0, bytes(big))[:200])
    with pytest.raises(RemoteProtocolError) as refused:
        drain(conn)
    assert refused.value.code == 413
    assert conn.state is ConnectionState.ERROR


def test_unfinished_messages_before_publish_are_bounded() -> None:
    conn, client = connected()
    conn.receive_data(client.set_chunk_size(16_384))
    drain(conn)
    # Many chunk streams, each with a message begun (one whole chunk) and never finished.
    size = MAX_UNPUBLISHED_MESSAGE_SIZE
    started = 0
    with pytest.raises(RemoteProtocolError) as refused:
        for csid in range(10, 60):
            first_chunk = client.message(csid, MessageType.DATA_AMF0, bytes(size))[: 12 + 16_384]
            conn.receive_data(first_chunk)
            drain(conn)
            started += 1
    assert refused.value.code == 413
    assert "unfinished messages" in str(refused.value)
    assert started * 16_384 <= MAX_UNPUBLISHED_PENDING


def test_an_accepted_publish_takes_full_size_messages() -> None:
    conn, client = publishing()
    client.chunk_size = 65_536
    conn.receive_data(client.set_chunk_size(65_536))
    conn.receive_data(client.video(0, avc(1, 0, 0, AVCC)))
    frame = bytes(2 * 1024 * 1024)  # a 2 MiB keyframe: far over the anonymous limit
    conn.receive_data(client.video(33, avc(1, 1, 0, frame)))
    packets = [e for e in drain(conn) if isinstance(e, MediaPacket)]
    assert len(packets) == 1 and len(packets[0].data) >= len(frame)


def test_stop_publish_answers_netstream_failed_with_the_reason() -> None:
    conn, _ = publishing("cam")
    conn.stop_publish("bitrate over 60 Mbit/s")
    assert conn.closed
    status = commands(server_messages(conn.data_to_send()))[-1]
    assert status[0] == "onStatus"
    info = status[3]
    assert isinstance(info, dict)
    assert info["level"] == "error"
    assert info["code"] == "NetStream.Failed"
    assert info["description"] == "bitrate over 60 Mbit/s"
    with pytest.raises(LocalProtocolError):
        conn.stop_publish("again")


def test_stop_publish_needs_a_publish() -> None:
    conn, _ = connected()
    with pytest.raises(LocalProtocolError):
        conn.stop_publish("no")


# -- the server, real TCP ----------------------------------------------------------------------


async def _hold_connection(port: int, source: str, held: list[trio.SocketStream]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    held.append(stream)


async def test_connections_not_publishing_are_capped_per_address_and_in_all() -> None:
    handler = RecordingHandler()
    async with running_server(handler) as (server, port):
        server.max_unpublished = 6
        server.max_unpublished_per_address = 3
        held: list[trio.SocketStream] = []
        for _ in range(3):
            await _hold_connection(port, "127.0.0.1", held)
        await wait_until(lambda: server.statistics().unpublished_connections == 3)
        # The fourth from the same address is closed at once, before any handshake.
        extra = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.1")
        assert await read_until_closed(extra) == b""
        assert server.statistics().refused_total == 1
        # Other addresses may still come, up to the total.
        for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3"):
            await _hold_connection(port, source, held)
        await wait_until(lambda: server.statistics().unpublished_connections == 6)
        extra = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.4")
        assert await read_until_closed(extra) == b""
        assert server.statistics().refused_total == 2
        for stream in held:
            await stream.aclose()
        await wait_until(lambda: server.statistics().unpublished_connections == 0)
        # Once they are gone a new client is served again.
        stream = await open_client(port)
        await stream.send_all(CONNECT)
        await stream.aclose()


async def test_a_publishing_connection_no_longer_counts_as_anonymous() -> None:
    handler = RecordingHandler()
    async with running_server(handler) as (server, port):
        server.max_unpublished_per_address = 1
        client = TestClient()
        stream = await open_client(port)
        await stream.send_all(
            connect_cmd(client)
            + client.command("createStream", 2.0, None)
            + client.command("publish", 3.0, None, "cam", "live", stream_id=1)
        )
        await wait_until(lambda: server.statistics().active_publishers == 1)
        assert server.statistics().unpublished_connections == 0
        # Its address may open another (anonymous) connection now.
        other = await open_client(port)
        await wait_until(lambda: server.statistics().unpublished_connections == 1)
        await other.aclose()
        await stream.aclose()


class RefusingPublisher:
    """A publisher that stops the publish (as the gateway's does when a limit is broken)."""

    def __init__(self) -> None:
        self.events = 0
        self.closed = trio.Event()

    async def send(self, event: object) -> None:
        self.events += 1
        if self.events > 2:
            raise ProtocolError("bitrate over 60 Mbit/s for more than 4 s", code=413)

    async def aclose(self) -> None:
        self.closed.set()


class RefusingHandler:
    def __init__(self) -> None:
        self.publisher = RefusingPublisher()

    async def start_publish(self, stream_name: str, **who: object) -> RefusingPublisher:
        return self.publisher


async def test_a_publish_the_node_stops_tells_the_client_why() -> None:
    handler = RefusingHandler()
    async with running_server(handler) as (server, port):  # type: ignore[arg-type]
        client = TestClient()
        stream = await open_client(port)
        await stream.send_all(
            connect_cmd(client)
            + client.command("createStream", 2.0, None)
            + client.command("publish", 3.0, None, "cam", "live", stream_id=1)
            + client.video(0, avc(1, 0, 0, AVCC))
            + b"".join(
                client.video(ts, avc(1, 1, 0, b"\x00\x00\x00\x01\x65")) for ts in range(33, 200, 33)
            )
        )
        data = await read_until_closed(stream)
        await wait_until(lambda: server.statistics().active_publishers == 0)
    assert handler.publisher.closed.is_set()
    statuses = [c[3] for c in commands(server_messages(data, ChunkReader())) if c[0] == "onStatus"]
    assert [s["code"] for s in statuses if isinstance(s, dict)] == [
        "NetStream.Publish.Start",
        "NetStream.Failed",
    ]
    last = statuses[-1]
    assert isinstance(last, dict)
    assert last["description"] == "bitrate over 60 Mbit/s for more than 4 s"


def test_accept_errors_are_logged_once_per_interval_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno
    import logging

    log = logging.getLogger("trio.serve_listeners")
    try:
        raise OSError(errno.EMFILE, "Too many open files")
    except OSError:
        with caplog.at_level(logging.DEBUG, logger="trio.serve_listeners"):
            for _ in range(50):  # trio retries every 100 ms: five seconds of EMFILE
                log.error("accept returned %s; retrying", "EMFILE", exc_info=True)
    records = [r for r in caplog.records if r.name == "trio.serve_listeners"]
    assert len(records) == 1
    assert records[0].levelname == "WARNING"
    assert records[0].exc_info is None
