"""The RTMP publisher against lpstream's own RTMP server protocol, joined in memory."""

from __future__ import annotations

import pytest

from ingest.rtmp import Connected, PublishRequested, RtmpServerConnection
from ingest.rtmp.chunk import ChunkReader, MessageType, encode_message
from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, StreamMetadata, TrackKind
from lpstream.restream.remux import FlvRemuxer, FlvTag
from lpstream.restream.rtmp_client import PublishState, RtmpPublishClient
from tests.restream.conftest import Clip


def exchange(
    client: RtmpPublishClient, server: RtmpServerConnection, *, bytewise: bool = False
) -> list[object]:
    """Moves bytes both ways until neither side has more; returns the server's events."""
    events: list[object] = []
    while True:
        up = client.data_to_send()
        if up:
            server.receive_data(up)
        events += server.events()
        down = server.data_to_send()
        if down:
            for i in range(len(down)) if bytewise else (None,):
                client.receive_data(down if i is None else down[i : i + 1])
        if not up and not down:
            return events


def new_client() -> RtmpPublishClient:
    return RtmpPublishClient(
        app="live", stream_key="cam-1", tc_url="rtmp://127.0.0.1:1935/live", random_bytes=bytes
    )


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
def test_client_publishes_and_server_accepts(bytewise: bool) -> None:
    client, server = new_client(), RtmpServerConnection(app="live")
    events = exchange(client, server, bytewise=bytewise)
    connected = [e for e in events if isinstance(e, Connected)]
    assert connected and connected[0].app == "live"
    assert connected[0].tc_url == "rtmp://127.0.0.1:1935/live"
    requested = [e for e in events if isinstance(e, PublishRequested)]
    assert [r.stream_name for r in requested] == ["cam-1"]
    assert client.state is PublishState.PUBLISHING
    server.accept_publish()
    exchange(client, server, bytewise=bytewise)
    assert client.live


def test_media_arrives_as_the_server_reads_it(clip: Clip) -> None:
    client, server = new_client(), RtmpServerConnection(app="live")
    exchange(client, server)
    server.accept_publish()
    exchange(client, server)
    remuxer = FlvRemuxer()
    for segment in clip.segments[:2]:
        for tag in remuxer.remux(segment):
            client.send_tag(tag)
    for tag in remuxer.close():
        client.send_tag(tag)
    events: list[MediaEvent] = [e for e in exchange(client, server) if not isinstance(e, Connected)]  # type: ignore[misc]
    configs = [e for e in events if isinstance(e, CodecConfig)]
    assert sorted(c.kind.value for c in configs) == ["audio", "video"]
    assert any(isinstance(e, StreamMetadata) for e in events)
    video = [e for e in events if isinstance(e, MediaPacket) and e.kind is TrackKind.VIDEO]
    audio = [e for e in events if isinstance(e, MediaPacket) and e.kind is TrackKind.AUDIO]
    assert video[0].keyframe and video[0].dts == 0
    assert len(video) == 120  # 4 s at 30 fps
    assert 180 < len(audio) <= 188  # 4 s of 1024-sample AAC frames at 48 kHz, less the tail
    dts = [p.dts for p in video]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)


def test_refused_publish_raises_with_the_servers_reason() -> None:
    client, server = new_client(), RtmpServerConnection(app="live")
    exchange(client, server)
    server.reject_publish("stream key not accepted")
    with pytest.raises(RemoteProtocolError) as info:
        exchange(client, server)
    assert "NetStream.Publish.BadName" in str(info.value)
    assert "stream key not accepted" in str(info.value)
    assert client.state is PublishState.CLOSED


def test_unknown_app_is_refused_at_connect() -> None:
    client, server = new_client(), RtmpServerConnection(app="other")
    with pytest.raises(RemoteProtocolError, match="unknown app"):
        exchange(client, server)  # the server's side: it queues an _error, then closes
    with pytest.raises(RemoteProtocolError) as info:
        client.receive_data(server.data_to_send())
    assert "refused connect" in str(info.value)
    assert client.state is PublishState.CLOSED


def test_server_hanging_up_is_an_error_naming_the_state() -> None:
    client = new_client()
    with pytest.raises(RemoteProtocolError, match="closed the connection \\(handshake\\)"):
        client.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"x")


def test_wrong_server_version_is_refused() -> None:
    client = new_client()
    with pytest.raises(RemoteProtocolError, match="version 6"):
        client.receive_data(b"\x06" + bytes(100))


def test_media_before_the_publish_is_accepted_is_a_local_error() -> None:
    client = new_client()
    with pytest.raises(LocalProtocolError):
        client.send_tag(FlvTag(kind=9, timestamp=0, payload=b"\x17\x01"))


def test_pings_are_answered_and_bytes_acknowledged() -> None:
    client, server = new_client(), RtmpServerConnection(app="live")
    exchange(client, server)
    client.data_to_send()
    window = encode_message(
        chunk_stream_id=2, type_id=MessageType.WINDOW_ACK_SIZE, stream_id=0,
        payload=(64).to_bytes(4, "big"), chunk_size=128,
    )  # fmt: skip
    ping = encode_message(
        chunk_stream_id=2, type_id=MessageType.USER_CONTROL, stream_id=0,
        payload=b"\x00\x06\x01\x02\x03\x04", chunk_size=128,
    )  # fmt: skip
    # The server's chunk size is already 4096 (it said so at connect).
    client.receive_data(window + ping + bytes(0))
    reader = ChunkReader()
    reader.feed(client.data_to_send())
    messages = reader.read_messages()
    kinds = [m.type_id for m in messages]
    assert MessageType.USER_CONTROL in kinds
    pong = next(m for m in messages if m.type_id == MessageType.USER_CONTROL)
    assert pong.payload == b"\x00\x07\x01\x02\x03\x04"
    assert MessageType.ACKNOWLEDGEMENT in kinds
