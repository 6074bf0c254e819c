"""The RTMP server protocol, bytes only: handshake, chunk stream, commands and media.

The client side here is written from the specification, independently of the code under test:
:func:`chunk` spells out one chunk header by hand and :class:`TestClient` compresses headers
the way ffmpeg's writer does (fmt 3 when only the timestamp delta repeats, 2 when length and
type repeat, 1 when the stream repeats).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtmp import (
    Connected,
    ConnectionClosed,
    ConnectionState,
    Event,
    HandshakeKind,
    PublishEnded,
    PublishRequested,
    RtmpServerConnection,
    amf0,
)
from ingest.rtmp.amf0 import UNDEFINED, AmfValue, EcmaArray
from ingest.rtmp.chunk import ChunkReader, Message, MessageType
from ingest.rtmp.handshake import server_response
from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.media import CodecConfig, MediaPacket, StreamMetadata, TrackKind

# -- a client written from the specification --------------------------------------------------

FP_KEY = b"Genuine Adobe Flash Player 001"
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + bytes.fromhex(
    "f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae"
)


def basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes((fmt << 6 | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes((fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))


def chunk(
    fmt: int,
    csid: int,
    payload: bytes = b"",
    *,
    ts: int = 0,
    length: int = 0,
    type_id: int = 0,
    stream_id: int = 0,
    ext: int | None = None,
) -> bytes:
    """One chunk, header fields spelled out; ``ext`` appends an extended timestamp."""
    out = basic_header(fmt, csid)
    if fmt <= 2:
        out += (0xFFFFFF if ext is not None else ts).to_bytes(3, "big")
    if fmt <= 1:
        out += length.to_bytes(3, "big") + bytes((type_id,))
    if fmt == 0:
        out += stream_id.to_bytes(4, "little")
    if ext is not None:
        out += ext.to_bytes(4, "big")
    return out + payload


def c1_plain() -> bytes:
    return bytes(8) + os.urandom(1528)


def c1_digest(schema: int) -> bytes:
    """A Flash-style C1: version set, digest placed by the schema's offset bytes."""
    c1 = bytearray(bytes(4) + bytes((9, 0, 124, 2)) + os.urandom(1528))
    base = 772 if schema == 0 else 8
    offset = sum(c1[base : base + 4]) % 728 + base + 4
    joined = bytes(c1[:offset] + c1[offset + 32 :])
    c1[offset : offset + 32] = hmac.new(FP_KEY, joined, hashlib.sha256).digest()
    return bytes(c1)


@attrs.define
class _Prev:
    ts: int
    delta: int
    length: int
    type_id: int
    stream_id: int


@attrs.define
class TestClient:
    """Encodes client messages with ffmpeg-style header compression."""

    __test__ = False
    chunk_size: int = 128
    prev: dict[int, _Prev] = attrs.field(factory=dict)

    def message(
        self, csid: int, type_id: int, payload: bytes, *, ts: int = 0, stream_id: int = 0
    ) -> bytes:
        prev = self.prev.get(csid)
        if prev is None or prev.stream_id != stream_id or ts < prev.ts:
            fmt, field = 0, ts
        else:
            field = ts - prev.ts
            if prev.length != len(payload) or prev.type_id != type_id:
                fmt = 1
            elif field != prev.delta:
                fmt = 2
            else:
                fmt = 3
        ext = field if field >= 0xFFFFFF else None
        out = chunk(
            fmt,
            csid,
            payload[: self.chunk_size],
            ts=field,
            length=len(payload),
            type_id=type_id,
            stream_id=stream_id,
            ext=ext,
        )
        for offset in range(self.chunk_size, len(payload), self.chunk_size):
            out += chunk(3, csid, payload[offset : offset + self.chunk_size], ext=ext)
        self.prev[csid] = _Prev(ts, field, len(payload), type_id, stream_id)
        return out

    def set_chunk_size(self, size: int) -> bytes:
        out = self.message(2, MessageType.SET_CHUNK_SIZE, struct.pack(">I", size))
        self.chunk_size = size
        return out

    def command(self, *values: AmfValue, stream_id: int = 0) -> bytes:
        csid = 8 if stream_id else 3
        return self.message(
            csid, MessageType.COMMAND_AMF0, amf0.encode_all(values), stream_id=stream_id
        )

    def video(self, ts: int, body: bytes) -> bytes:
        return self.message(6, MessageType.VIDEO, body, ts=ts, stream_id=1)

    def audio(self, ts: int, body: bytes) -> bytes:
        return self.message(4, MessageType.AUDIO, body, ts=ts, stream_id=1)


def connect_cmd(client: TestClient, app: str = "live") -> bytes:
    return client.command(
        "connect",
        1.0,
        {
            "app": app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; test)",
            "tcUrl": f"rtmp://127.0.0.1/{app}",
        },
    )


def publish_cmds(client: TestClient, name: str = "t") -> bytes:
    return (
        client.command("releaseStream", 2.0, None, name)
        + client.command("FCPublish", 3.0, None, name)
        + client.command("createStream", 4.0, None)
        + client.command("publish", 5.0, None, name, "live", stream_id=1)
    )


AVCC = bytes.fromhex("0164001fffe1001967640028acd940780227e5c05a808080a0000003002000000781e3062c")
ASC = bytes.fromhex("1210")


def avc(frame_type: int, packet_type: int, cts: int, data: bytes) -> bytes:
    return bytes((frame_type << 4 | 7, packet_type)) + cts.to_bytes(3, "big", signed=True) + data


def aac(packet_type: int, data: bytes) -> bytes:
    return bytes((0xAF, packet_type)) + data


def handshake(conn: RtmpServerConnection, c1: bytes | None = None) -> bytes:
    """Runs C0 C1 C2 through ``conn``; returns S0 S1 S2."""
    conn.receive_data(b"\x03" + (c1 or c1_plain()))
    assert conn.next_event() is None
    response = conn.data_to_send()
    conn.receive_data(response[1:1537])
    assert conn.next_event() is None
    assert conn.handshake_complete
    return response


def server_messages(data: bytes, reader: ChunkReader | None = None) -> list[Message]:
    """Parses server output; without ``reader``, output written after ``connect`` (4096)."""
    if reader is None:
        reader = ChunkReader()
        reader.feed(bytes.fromhex("02 000000 000004 01 00000000 00001000"))
    reader.feed(data)
    return reader.read_messages()


def commands(messages: list[Message]) -> list[list[AmfValue]]:
    return [amf0.decode_all(m.payload) for m in messages if m.type_id == MessageType.COMMAND_AMF0]


def state_of(conn: RtmpServerConnection) -> ConnectionState:
    return conn.state  # read through a call, so mypy does not keep an earlier narrowing


def drain(conn: RtmpServerConnection) -> list[Event]:
    out: list[Event] = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def connected(app: str = "live") -> tuple[RtmpServerConnection, TestClient]:
    conn = RtmpServerConnection(app=app)
    client = TestClient()
    handshake(conn)
    conn.receive_data(connect_cmd(client))
    assert [type(e) for e in drain(conn)] == [Connected]
    conn.data_to_send()
    return conn, client


def publishing(name: str = "t") -> tuple[RtmpServerConnection, TestClient]:
    conn, client = connected()
    conn.receive_data(publish_cmds(client, name))
    assert drain(conn) == [PublishRequested(stream_name=name, publish_type="live")]
    conn.accept_publish()
    conn.data_to_send()
    return conn, client


# -- handshake --------------------------------------------------------------------------------


def test_plain_handshake_echoes_c1_as_s2_fed_one_byte_at_a_time() -> None:
    conn = RtmpServerConnection()
    c1 = c1_plain()
    for byte in b"\x03" + c1:
        assert conn.next_event() is None
        conn.receive_data(bytes((byte,)))
    assert conn.next_event() is None
    out = conn.data_to_send()
    assert len(out) == 1 + 1536 + 1536
    assert out[0] == 3
    assert out[1:9] == bytes(8)  # time 0, version 0: the plain form
    assert out[1537:] == c1
    assert conn.handshake_kind is HandshakeKind.PLAIN
    assert conn.state is ConnectionState.HANDSHAKE_C2
    for byte in out[1:1537]:
        conn.receive_data(bytes((byte,)))
        assert conn.next_event() is None
    assert state_of(conn) is ConnectionState.AWAIT_CONNECT


@pytest.mark.parametrize(
    ("schema", "kind"),
    [(0, HandshakeKind.DIGEST_SCHEMA0), (1, HandshakeKind.DIGEST_SCHEMA1)],
)
def test_digest_handshake_is_answered_with_digests(schema: int, kind: HandshakeKind) -> None:
    c1 = c1_digest(schema)
    conn = RtmpServerConnection()
    out = handshake(conn, c1)
    assert conn.handshake_kind is kind
    s1, s2 = out[1:1537], out[1537:]
    assert s1[4:8] != bytes(4)
    # S1 carries the server's digest in the client's schema.
    base = 772 if schema == 0 else 8
    offset = sum(s1[base : base + 4]) % 728 + base + 4
    expected = hmac.new(FMS_KEY[:36], s1[:offset] + s1[offset + 32 :], hashlib.sha256).digest()
    assert s1[offset : offset + 32] == expected
    # S2 is signed with a key derived from the client's digest.
    client_offset = sum(c1[base : base + 4]) % 728 + base + 4
    key = hmac.new(FMS_KEY, c1[client_offset : client_offset + 32], hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


def test_c1_with_a_version_but_no_valid_digest_gets_the_plain_form() -> None:
    c1 = bytes(4) + b"\x09\x00\x7c\x02" + bytes(1528)
    kind, out = server_response(c1, random_bytes=bytes)
    assert kind is HandshakeKind.PLAIN
    assert out == b"\x03" + bytes(1536) + c1


@pytest.mark.parametrize(
    ("version", "message"),
    [(6, "encrypted RTMP"), (0x47, "RTMP version 71 in C0 is not supported")],
)
def test_bad_c0_fails_on_its_first_byte(version: int, message: str) -> None:
    conn = RtmpServerConnection()
    conn.receive_data(bytes((version,)))
    with pytest.raises(RemoteProtocolError, match=message):
        conn.next_event()
    assert conn.state is ConnectionState.ERROR
    with pytest.raises(RemoteProtocolError, match=message):  # errors stick
        conn.next_event()


def test_end_of_input_during_the_handshake_closes() -> None:
    conn = RtmpServerConnection()
    conn.receive_data(b"\x03" + bytes(100))
    conn.receive_data(b"")
    assert drain(conn) == [
        ConnectionClosed(reason="peer closed the connection waiting for C0 and C1")
    ]
    assert conn.closed
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


# -- chunk stream -----------------------------------------------------------------------------

CHUNK_TABLE: list[tuple[str, list[str], list[tuple[int, int, int, int, bytes]]]] = [
    # (name, chunks as hex, expected (csid, type, stream id, timestamp, payload))
    ("fmt0", ["03 000064 000003 14 01000000 616263"], [(3, 20, 1, 100, b"abc")]),
    (
        "fmt1 keeps the stream id, adds the delta",
        ["04 000064 000001 08 01000000 aa", "44 000010 000002 09 bbcc"],
        [(4, 8, 1, 100, b"\xaa"), (4, 9, 1, 116, b"\xbb\xcc")],
    ),
    (
        "fmt2 keeps length and type",
        ["04 000064 000001 08 01000000 aa", "84 000021 bb"],
        [(4, 8, 1, 100, b"\xaa"), (4, 8, 1, 133, b"\xbb")],
    ),
    (
        "fmt3 new message repeats the delta",
        ["04 000064 000001 08 00000000 aa", "84 000021 bb", "c4 cc"],
        [(4, 8, 0, 100, b"\xaa"), (4, 8, 0, 133, b"\xbb"), (4, 8, 0, 166, b"\xcc")],
    ),
    (
        "fmt3 after fmt0 repeats the absolute field (as ffmpeg writes)",
        ["04 000021 000001 08 00000000 aa", "c4 bb"],
        [(4, 8, 0, 33, b"\xaa"), (4, 8, 0, 66, b"\xbb")],
    ),
    ("two-byte chunk stream id", ["00 00 000000 000001 14 00000000 05"], [(64, 20, 0, 0, b"\x05")]),
    (
        "three-byte chunk stream id",
        ["01 0001 000000 000001 14 00000000 05"],
        [(320, 20, 0, 0, b"\x05")],
    ),
    ("zero-length message", ["05 000007 000000 12 00000000"], [(5, 18, 0, 7, b"")]),
    (
        "extended timestamp",
        ["04 ffffff 000001 08 00000000 01000000 aa"],
        [(4, 8, 0, 0x1000000, b"\xaa")],
    ),
    (
        "extended timestamp on a fmt3 new message",
        ["04 ffffff 000001 08 00000000 01000000 aa", "c4 01000000 bb"],
        [(4, 8, 0, 0x1000000, b"\xaa"), (4, 8, 0, 0x2000000, b"\xbb")],
    ),
    (
        "absolute timestamp wraps past 32 bits",
        ["04 ffffff 000001 08 00000000 fffffff0 aa", "04 000010 000001 08 00000000 bb"],
        [(4, 8, 0, 0xFFFFFFF0, b"\xaa"), (4, 8, 0, 0x100000010, b"\xbb")],
    ),
    (
        "delta crosses 32 bits",
        ["04 ffffff 000001 08 00000000 fffffff0 aa", "84 000020 bb"],
        [(4, 8, 0, 0xFFFFFFF0, b"\xaa"), (4, 8, 0, 0x100000010, b"\xbb")],
    ),
    (
        "a delta of 2**31 or more goes back",
        ["04 000100 000001 08 00000000 aa", "84 ffffff fffffff0 bb"],
        [(4, 8, 0, 0x100, b"\xaa"), (4, 8, 0, 0xF0, b"\xbb")],
    ),
    (
        "interleaved chunk streams",
        [
            "04 000000 000082 08 00000000" + "11" * 128,
            "06 000005 000001 09 00000000 22",
            "c4 1111",
        ],
        [(6, 9, 0, 5, b"\x22"), (4, 8, 0, 0, b"\x11" * 130)],
    ),
    (
        "set chunk size applies to the next chunk",
        ["02 000000 000004 01 00000000 00000100", "04 000000 000100 08 00000000" + "33" * 256],
        [(4, 8, 0, 0, b"\x33" * 256)],
    ),
    (
        "abort drops the unfinished message",
        [
            "04 000000 000100 08 00000000" + "44" * 128,
            "02 000000 000004 02 00000000 00000004",
            "04 000009 000001 08 00000000 55",
        ],
        [(4, 8, 0, 9, b"\x55")],
    ),
]


@pytest.mark.parametrize(
    ("chunks", "expected"), [c[1:] for c in CHUNK_TABLE], ids=[c[0] for c in CHUNK_TABLE]
)
@pytest.mark.parametrize("byte_at_a_time", [False, True])
def test_chunk_table(
    chunks: list[str], expected: list[tuple[int, int, int, int, bytes]], byte_at_a_time: bool
) -> None:
    data = b"".join(bytes.fromhex(c) for c in chunks)
    reader = ChunkReader()
    messages: list[Message] = []
    if byte_at_a_time:
        for byte in data:
            reader.feed(bytes((byte,)))
            messages += reader.read_messages()
    else:
        reader.feed(data)
        messages = reader.read_messages()
    assert [
        (m.chunk_stream_id, m.type_id, m.stream_id, m.timestamp, m.payload) for m in messages
    ] == expected
    assert reader.buffered == 0


def test_continuation_chunks_with_and_without_the_extended_timestamp() -> None:
    payload = bytes(range(200))
    head = bytes.fromhex("04 ffffff 0000c8 09 01000000 01000000")
    with_ext = head + payload[:128] + bytes.fromhex("c4 01000000") + payload[128:]
    without_ext = head + payload[:128] + bytes.fromhex("c4") + payload[128:]
    for data in (with_ext, without_ext):
        (message,) = server_messages(data, ChunkReader())
        assert message.payload == payload
        assert message.timestamp == 0x1000000


def test_a_message_split_over_many_chunks() -> None:
    payload = os.urandom(1000)
    data = TestClient(chunk_size=128).message(7, 9, payload, ts=40, stream_id=1)
    assert data.count(b"\xc7") >= 7
    (message,) = server_messages(data, ChunkReader())
    assert message.payload == payload


@pytest.mark.parametrize(
    ("hex_bytes", "message"),
    [
        ("02 000000 000004 01 00000000 7fffffff", "chunk size 2147483647 over limit 1048576"),
        ("02 000000 000004 01 00000000 00000000", "invalid chunk size 0"),
        ("02 000000 000004 01 00000000 80000080", "invalid chunk size"),
        ("02 000000 000002 01 00000000 0080", "Set Chunk Size message of 2 bytes"),
        ("44 000000 000001 08 aa", "chunk stream 4 starts with a type-1 header"),
        ("c4 aa", "chunk stream 4 starts with a type-3 header"),
        ("04 000000 ffffff 08 00000000", "message of 16777215 bytes over limit"),
        (
            "04 000000 000100 08 00000000" + "00" * 128 + "04 000000 000001 08 00000000 00",
            "type-0 header before the previous message ended \\(128 of 256 bytes\\)",
        ),
    ],
)
def test_chunk_stream_errors(hex_bytes: str, message: str) -> None:
    reader = ChunkReader()
    reader.feed(bytes.fromhex(hex_bytes))
    with pytest.raises(RemoteProtocolError, match=message):
        reader.read_messages()


def test_chunk_size_limit_error_carries_413() -> None:
    reader = ChunkReader()
    reader.feed(bytes.fromhex("02 000000 000004 01 00000000 01000000"))
    with pytest.raises(RemoteProtocolError) as info:
        reader.read_messages()
    assert info.value.code == 413


def test_chunk_streams_are_limited() -> None:
    reader = ChunkReader()
    reader.feed(b"".join(chunk(0, csid, b"", type_id=8) for csid in range(3, 70)))
    with pytest.raises(RemoteProtocolError, match="more than 64 chunk streams"):
        reader.read_messages()


def test_unfinished_messages_are_limited() -> None:
    reader = ChunkReader(max_message_size=1000, max_pending=1500)
    reader.feed(chunk(0, 4, bytes(128), length=1000, type_id=8))
    reader.feed(chunk(0, 5, bytes(128), length=1000, type_id=8))
    assert reader.read_messages() == []
    reader.feed(b"".join(chunk(3, 4, bytes(128)) + chunk(3, 5, bytes(128)) for _ in range(5)))
    with pytest.raises(RemoteProtocolError, match="over 1500 bytes of unfinished messages"):
        reader.read_messages()


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_random_chunk_bytes_only_raise_remote_errors(data: bytes) -> None:
    reader = ChunkReader()
    reader.feed(data)
    with contextlib.suppress(RemoteProtocolError):
        reader.read_messages()


# -- control messages -------------------------------------------------------------------------


def test_acknowledgement_is_sent_when_the_window_fills() -> None:
    conn, client = connected()
    conn.receive_data(client.message(2, MessageType.WINDOW_ACK_SIZE, struct.pack(">I", 1000)))
    assert drain(conn) == []
    assert conn.data_to_send() == b""
    conn.receive_data(client.message(9, MessageType.SHARED_OBJECT_AMF0, bytes(1100), stream_id=0))
    assert drain(conn) == []
    sent = conn.bytes_received
    assert sent > 1000
    ack = bytes.fromhex("02 000000 000004 03 00000000") + struct.pack(">I", sent)
    assert conn.data_to_send() == ack


def test_ping_request_gets_a_ping_response() -> None:
    conn, client = connected()
    conn.receive_data(client.message(2, MessageType.USER_CONTROL, bytes.fromhex("0006 12345678")))
    assert drain(conn) == []
    assert conn.data_to_send() == bytes.fromhex("02 000000 000006 04 00000000 0007 12345678")


def test_other_user_control_events_and_peer_bandwidth_are_accepted() -> None:
    conn, client = connected()
    conn.receive_data(
        client.message(2, MessageType.USER_CONTROL, bytes.fromhex("0003 00000001 00000bb8"))
        + client.message(2, MessageType.SET_PEER_BANDWIDTH, bytes.fromhex("00001000 02"))
        + client.message(2, MessageType.ACKNOWLEDGEMENT, bytes.fromhex("00001000"))
    )
    assert drain(conn) == []
    assert conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("type_id", "payload", "message"),
    [
        (MessageType.USER_CONTROL, "00", "User Control message of 1 bytes"),
        (MessageType.USER_CONTROL, "0006 00", "PingRequest without a timestamp"),
        (MessageType.WINDOW_ACK_SIZE, "0000", "Window Acknowledgement Size of 2 bytes"),
        (MessageType.SET_PEER_BANDWIDTH, "00000001", "Set Peer Bandwidth of 4 bytes"),
    ],
)
def test_short_control_messages_are_remote_errors(type_id: int, payload: str, message: str) -> None:
    conn, client = connected()
    conn.receive_data(client.message(2, type_id, bytes.fromhex(payload)))
    with pytest.raises(RemoteProtocolError, match=message):
        drain(conn)


# -- the publish sequence ---------------------------------------------------------------------


def full_session(client: TestClient) -> bytes:
    """What a publisher sends from C2 on: ffmpeg's order, with long and wrapping timestamps."""
    big = 0xFFFFF0  # crosses into extended timestamps
    return (
        client.set_chunk_size(60)
        + client.message(2, MessageType.WINDOW_ACK_SIZE, struct.pack(">I", 5_000_000))
        + connect_cmd(client)
        + publish_cmds(client)
        + client.message(
            5,
            MessageType.DATA_AMF0,
            amf0.encode_all(
                ["@setDataFrame", "onMetaData", EcmaArray(width=320.0, encoder="Lavf")]
            ),
            stream_id=1,
        )
        + client.video(0, avc(1, 0, 0, AVCC))
        + client.audio(0, aac(0, ASC))
        + client.video(0, avc(1, 1, 67, b"\x00\x00\x00\x05\x65keyfr" * 20))
        + client.audio(23, aac(1, b"\x21aac-frame"))
        + client.video(33, avc(2, 1, -33, b"\x00\x00\x00\x02\x41p"))
        + client.video(big, avc(2, 1, 0, b"\x00\x00\x00\x02\x41q"))
        + client.video(big + 33, avc(2, 1, 0, b"\x00\x00\x00\x02\x41r" * 40))
        + client.video(big + 66, avc(2, 1, 0, b"\x00\x00\x00\x02\x41s"))
        + client.video(big + 66, avc(2, 2, 0, b""))
        + client.command("FCUnpublish", 6.0, None, "t")
        + client.command("deleteStream", 7.0, None, 1.0)
    )


EXPECTED_MEDIA: list[Event] = [
    StreamMetadata(values={"width": 320.0, "encoder": "Lavf"}),
    CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=AVCC),
    CodecConfig(kind=TrackKind.AUDIO, codec="aac", data=ASC),
    MediaPacket(
        kind=TrackKind.VIDEO, dts=0, pts=67, keyframe=True, data=b"\x00\x00\x00\x05\x65keyfr" * 20
    ),
    MediaPacket(kind=TrackKind.AUDIO, dts=23, pts=23, keyframe=True, data=b"\x21aac-frame"),
    MediaPacket(kind=TrackKind.VIDEO, dts=33, pts=0, keyframe=False, data=b"\x00\x00\x00\x02\x41p"),
    MediaPacket(
        kind=TrackKind.VIDEO,
        dts=0xFFFFF0,
        pts=0xFFFFF0,
        keyframe=False,
        data=b"\x00\x00\x00\x02\x41q",
    ),
    MediaPacket(
        kind=TrackKind.VIDEO,
        dts=0xFFFFF0 + 33,
        pts=0xFFFFF0 + 33,
        keyframe=False,
        data=b"\x00\x00\x00\x02\x41r" * 40,
    ),
    MediaPacket(
        kind=TrackKind.VIDEO,
        dts=0xFFFFF0 + 66,
        pts=0xFFFFF0 + 66,
        keyframe=False,
        data=b"\x00\x00\x00\x02\x41s",
    ),
    PublishEnded(stream_name="t", reason="FCUnpublish"),
    ConnectionClosed(reason="peer closed the connection"),
]


@pytest.mark.parametrize("byte_at_a_time", [False, True])
def test_full_publish_session(byte_at_a_time: bool) -> None:
    conn = RtmpServerConnection()
    client = TestClient()
    c1 = c1_digest(1)
    data = b"\x03" + c1 + bytes(1536) + full_session(client)
    events: list[Event] = []
    pieces = [bytes((b,)) for b in data] if byte_at_a_time else [data]
    for piece in pieces:
        conn.receive_data(piece)
        while (event := conn.next_event()) is not None:
            events.append(event)
            if isinstance(event, PublishRequested):
                conn.accept_publish()
    conn.receive_data(b"")
    events += drain(conn)
    assert events == [
        Connected(
            app="live", tc_url="rtmp://127.0.0.1/live", flash_ver="FMLE/3.0 (compatible; test)"
        ),
        PublishRequested(stream_name="t", publish_type="live"),
        *EXPECTED_MEDIA,
    ]
    assert conn.state is ConnectionState.CLOSED

    out = conn.data_to_send()
    assert conn.handshake_kind is HandshakeKind.DIGEST_SCHEMA1
    reader = ChunkReader()
    messages = server_messages(out[3073:], reader)
    assert reader.chunk_size == 4096  # the server's Set Chunk Size (applied, not returned)
    controls = [(m.type_id, m.payload) for m in messages if m.chunk_stream_id == 2]
    assert controls[:2] == [
        (MessageType.WINDOW_ACK_SIZE, struct.pack(">I", 2_500_000)),
        (MessageType.SET_PEER_BANDWIDTH, struct.pack(">I", 2_500_000) + b"\x02"),
    ]
    assert (MessageType.USER_CONTROL, bytes.fromhex("0000 00000001")) in controls  # StreamBegin 1
    replies = commands(messages)
    assert [r[:2] for r in replies] == [
        ["_result", 1.0],
        ["_result", 2.0],
        ["onFCPublish", 0.0],
        ["_result", 4.0],
        ["onStatus", 0.0],
    ]  # nothing answers FCUnpublish or deleteStream: the client is about to close
    assert replies[0][3] == {
        "level": "status",
        "code": "NetConnection.Connect.Success",
        "description": "Connection succeeded.",
        "objectEncoding": 0.0,
    }
    assert replies[1][2:] == [None, UNDEFINED]
    assert replies[3][2:] == [None, 1.0]
    status = replies[4][3]
    assert isinstance(status, dict)
    assert status["code"] == "NetStream.Publish.Start"
    assert status["level"] == "status"
    on_status = [m for m in messages if m.type_id == MessageType.COMMAND_AMF0][4]
    assert on_status.stream_id == 1


def test_publish_pauses_until_answered() -> None:
    conn, client = connected()
    conn.receive_data(
        publish_cmds(client)
        + client.video(0, avc(1, 0, 0, AVCC))
        + client.command("deleteStream", 9.0, None, 1.0)
    )
    assert drain(conn) == [PublishRequested(stream_name="t", publish_type="live")]
    assert conn.state is ConnectionState.PUBLISH_PENDING
    assert conn.next_event() is None  # held, however often asked
    conn.accept_publish()
    assert drain(conn) == [
        CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=AVCC),
        PublishEnded(stream_name="t", reason="deleteStream"),
    ]
    assert state_of(conn) is ConnectionState.CONNECTED


def test_events_stops_at_a_publish_request() -> None:
    conn, client = connected()
    conn.receive_data(publish_cmds(client) + client.video(0, avc(1, 0, 0, AVCC)))
    assert conn.events() == [PublishRequested(stream_name="t", publish_type="live")]
    conn.accept_publish()
    assert conn.events() == [CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=AVCC)]


def test_rejected_publish_answers_bad_name_and_closes() -> None:
    conn, client = connected()
    conn.receive_data(publish_cmds(client) + client.video(0, avc(1, 0, 0, AVCC)))
    assert drain(conn) == [PublishRequested(stream_name="t", publish_type="live")]
    conn.data_to_send()
    conn.reject_publish("stream 't' is already being published")
    assert conn.closed
    assert drain(conn) == []
    (status,) = commands(server_messages(conn.data_to_send()))
    assert status[0] == "onStatus"
    assert status[3] == {
        "level": "error",
        "code": "NetStream.Publish.BadName",
        "description": "stream 't' is already being published",
        "details": "t",
    }


def test_accept_or_reject_without_a_pending_publish_is_a_local_error() -> None:
    conn, _ = connected()
    with pytest.raises(LocalProtocolError, match=r"accept_publish\(\) while connected"):
        conn.accept_publish()
    with pytest.raises(LocalProtocolError, match=r"reject_publish\(\) while connected"):
        conn.reject_publish("no")


def test_end_of_input_while_publishing_ends_the_publish() -> None:
    conn, client = publishing()
    conn.receive_data(client.audio(0, aac(0, ASC)))
    conn.receive_data(b"")
    assert drain(conn) == [
        CodecConfig(kind=TrackKind.AUDIO, codec="aac", data=ASC),
        PublishEnded(stream_name="t", reason="connection closed"),
        ConnectionClosed(reason="peer closed the connection"),
    ]


def test_a_second_publish_after_the_first_ended() -> None:
    conn, client = publishing("one")
    conn.receive_data(client.command("closeStream", 0.0, None))
    assert drain(conn) == [PublishEnded(stream_name="one", reason="closeStream")]
    conn.receive_data(client.command("publish", 8.0, None, "two", stream_id=1))
    assert drain(conn) == [PublishRequested(stream_name="two", publish_type="live")]


def test_query_string_is_stripped_from_app_and_stream_name_and_kept_apart() -> None:
    conn = RtmpServerConnection()
    client = TestClient()
    handshake(conn)
    conn.receive_data(connect_cmd(client, app="live/?secret=1"))
    conn.receive_data(publish_cmds(client, "cam1?key=abc"))
    assert drain(conn) == [
        Connected(
            app="live",
            tc_url="rtmp://127.0.0.1/live/?secret=1",
            flash_ver="FMLE/3.0 (compatible; test)",
        ),
        PublishRequested(stream_name="cam1", publish_type="live", query="key=abc"),
    ]


def test_unknown_commands_are_ignored() -> None:
    conn, client = connected()
    conn.receive_data(
        client.command("_checkbw", 2.0, None) + client.command("getStreamLength", 3.0)
    )
    assert drain(conn) == []


def test_amf3_command_and_data_variants() -> None:
    conn = RtmpServerConnection()
    client = TestClient()
    handshake(conn)
    connect = amf0.encode_all(["connect", 1.0, {"app": "live"}])
    conn.receive_data(client.message(3, MessageType.COMMAND_AMF3, b"\x00" + connect))
    conn.receive_data(publish_cmds(client))
    expected: list[type] = [Connected, PublishRequested]
    assert [type(e) for e in drain(conn)] == expected
    conn.accept_publish()
    data = amf0.encode_all(["onMetaData", {"fps": 30.0}])
    conn.receive_data(client.message(5, MessageType.DATA_AMF3, b"\x00" + data, stream_id=1))
    assert drain(conn) == [StreamMetadata(values={"fps": 30.0})]


def test_aggregate_messages_are_split_into_their_tags() -> None:
    def tag(type_id: int, ts: int, body: bytes) -> bytes:
        header = bytes((type_id,)) + len(body).to_bytes(3, "big") + ts.to_bytes(3, "big")
        return header + bytes((ts >> 24,)) + bytes(3) + body + struct.pack(">I", 11 + len(body))

    conn, client = publishing()
    body = tag(8, 1000, aac(1, b"a")) + tag(9, 1010, avc(1, 1, 0, b"v"))
    conn.receive_data(client.message(4, MessageType.AGGREGATE, body, ts=500, stream_id=1))
    assert drain(conn) == [
        MediaPacket(kind=TrackKind.AUDIO, dts=500, pts=500, keyframe=True, data=b"a"),
        MediaPacket(kind=TrackKind.VIDEO, dts=510, pts=510, keyframe=True, data=b"v"),
    ]
    conn.receive_data(client.message(4, MessageType.AGGREGATE, body[:-3], ts=600, stream_id=1))
    with pytest.raises(RemoteProtocolError, match="truncated tag in aggregate message"):
        drain(conn)


def test_media_outside_a_publish_is_dropped() -> None:
    conn, client = connected()
    conn.receive_data(client.video(0, avc(1, 0, 0, AVCC)) + client.audio(0, aac(0, ASC)))
    assert drain(conn) == []


def test_empty_media_messages_and_video_info_frames_are_ignored() -> None:
    conn, client = publishing()
    conn.receive_data(
        client.video(0, b"")
        + client.audio(0, b"")
        + client.video(1, b"\x57\x00")
        + client.video(2, avc(2, 1, 0, b""))
    )
    assert drain(conn) == []


# -- what the peer may not do -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (b"\x22\x01\x00\x00\x00xx", "unsupported video codec id 2; only 7 \\(H.264\\)", 415),
        (b"\x91xxxx\x00\x00\x00x", "unsupported video codec 'xxxx' \\(enhanced RTMP\\)", 415),
        (b"\x9chvc1xxxx", "reserved enhanced RTMP video packet type 12", 400),
        (b"\x17\x01\x00", "AVC video message of 3 bytes", 400),
        (b"\x17\x07\x00\x00\x00xx", "unknown AVC packet type 7", 400),
        (b"\x17\x00\x00\x00\x00", "empty AVC sequence header", 400),
    ],
)
def test_bad_video_is_a_remote_error(body: bytes, message: str, code: int) -> None:
    conn, client = publishing()
    conn.receive_data(client.video(0, body))
    with pytest.raises(RemoteProtocolError, match=message) as info:
        drain(conn)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x2f\x01xx", "unsupported audio codec id 2; only 10 \\(AAC\\)"),
        (b"\xaf", "AAC audio message without a packet type"),
        (b"\xaf\x05x", "unknown AAC packet type 5"),
        (b"\xaf\x00", "empty AAC sequence header"),
    ],
)
def test_bad_audio_is_a_remote_error(body: bytes, message: str) -> None:
    conn, client = publishing()
    conn.receive_data(client.audio(0, body))
    with pytest.raises(RemoteProtocolError, match=message):
        drain(conn)


def test_publish_before_connect_is_a_remote_error() -> None:
    conn = RtmpServerConnection()
    client = TestClient()
    handshake(conn)
    conn.receive_data(client.command("publish", 5.0, None, "t", "live", stream_id=1))
    with pytest.raises(RemoteProtocolError, match="'publish' before 'connect'"):
        conn.next_event()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("connect", 9.0, {"app": "live"}), "'connect' not allowed while connected"),
        (("publish", 5.0, None, "t"), None),
        (("play", 5.0, None, "t"), "'play' refused: this server only takes publishers"),
        ((5.0, "connect"), "does not start with a command name"),
        (("createStream", "x", None), "non-numeric transaction id"),
    ],
)
def test_commands_out_of_place(command: tuple[AmfValue, ...], message: str | None) -> None:
    conn, client = connected()
    conn.receive_data(client.command(*command))
    if message is None:
        assert drain(conn) == [PublishRequested(stream_name="t", publish_type="live")]
        conn.receive_data(client.command(*command))  # paused: nothing is read
        assert drain(conn) == []
        return
    with pytest.raises(RemoteProtocolError, match=message):
        drain(conn)


def test_a_second_publish_while_publishing_is_a_remote_error() -> None:
    conn, client = publishing()
    conn.receive_data(client.command("publish", 6.0, None, "u", stream_id=1))
    with pytest.raises(RemoteProtocolError, match="'publish' not allowed while publishing"):
        drain(conn)


def test_connect_to_another_app_is_answered_with_error_then_fails() -> None:
    conn = RtmpServerConnection(app="live")
    client = TestClient()
    handshake(conn)
    conn.data_to_send()
    conn.receive_data(connect_cmd(client, app="vod"))
    with pytest.raises(RemoteProtocolError, match="connect to unknown app 'vod'") as info:
        conn.next_event()
    assert info.value.code == 404
    (reply,) = commands(server_messages(conn.data_to_send()))
    assert reply[0] == "_error"
    assert isinstance(reply[3], dict)
    assert reply[3]["code"] == "NetConnection.Connect.Rejected"


@pytest.mark.parametrize(
    ("connect", "message"),
    [
        (("connect", 1.0), "connect without a command object"),
        (("connect", 1.0, {"tcUrl": "x"}), "connect without an app name"),
    ],
)
def test_malformed_connect(connect: tuple[AmfValue, ...], message: str) -> None:
    conn = RtmpServerConnection()
    client = TestClient()
    handshake(conn)
    conn.receive_data(client.command(*connect))
    with pytest.raises(RemoteProtocolError, match=message):
        conn.next_event()


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "x" * 129, None])
def test_bad_stream_names_are_refused(name: str | None) -> None:
    conn, client = connected()
    conn.receive_data(client.command("publish", 5.0, None, name, stream_id=1))
    with pytest.raises(RemoteProtocolError, match="stream name"):
        drain(conn)
    (status,) = commands(server_messages(conn.data_to_send()))
    assert isinstance(status[3], dict)
    assert status[3]["code"] == "NetStream.Publish.BadName"


def test_malformed_amf_in_a_command_is_a_remote_error() -> None:
    conn, client = connected()
    conn.receive_data(client.message(3, MessageType.COMMAND_AMF0, b"\x02\x00\x10abc"))
    with pytest.raises(RemoteProtocolError, match="truncated AMF0 string"):
        drain(conn)


# -- garbage ----------------------------------------------------------------------------------


def _feed_and_drain(conn: RtmpServerConnection, data: bytes) -> None:
    try:
        conn.receive_data(data)
        for _ in range(10_000):
            event = conn.next_event()
            if event is None:
                break
            if isinstance(event, PublishRequested):
                conn.accept_publish()
    except RemoteProtocolError:
        assert conn.state is ConnectionState.ERROR


@settings(deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_from_the_start_only_raise_remote_errors(data: bytes) -> None:
    _feed_and_drain(RtmpServerConnection(), data)


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_after_connect_only_raise_remote_errors(data: bytes) -> None:
    conn, _ = connected()
    _feed_and_drain(conn, data)


@settings(deadline=None, max_examples=60)
@given(st.data())
def test_corrupted_sessions_only_raise_remote_errors(data: st.DataObject) -> None:
    session = bytearray(full_session(TestClient()))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(session) - 1))
        session[index] = data.draw(st.integers(0, 255))
    conn = RtmpServerConnection()
    handshake(conn)
    cut = data.draw(st.integers(1, len(session)))
    _feed_and_drain(conn, bytes(session[:cut]))


@pytest.mark.parametrize(
    "announced",
    [
        {},
        {"fourCcList": ["av01", "vp09", "hvc1"]},  # Enhanced RTMP v1, as FFmpeg sends it
        {"videoFourCcInfoMap": {"hvc1": 1.0, "av01": 1.0}},  # v2
    ],
)
def test_connect_answers_the_enhanced_rtmp_codecs_to_a_client_that_asks(
    announced: dict[str, AmfValue],
) -> None:
    conn = RtmpServerConnection(app="live")
    client = TestClient()
    handshake(conn)
    conn.data_to_send()
    command = {"app": "live", "tcUrl": "rtmp://127.0.0.1/live", **announced}
    conn.receive_data(client.command("connect", 1.0, command))
    drain(conn)
    (reply,) = [c for c in commands(server_messages(conn.data_to_send())) if c[0] == "_result"]
    properties = reply[2]
    assert isinstance(properties, dict) and properties["fmsVer"]
    if not announced:  # a legacy client gets the legacy answer
        assert "fourCcList" not in properties and "videoFourCcInfoMap" not in properties
        return
    assert properties["fourCcList"] == ["avc1", "hvc1", "av01", "vp09"]
    assert properties["videoFourCcInfoMap"] == dict.fromkeys(properties["fourCcList"], 1.0)
