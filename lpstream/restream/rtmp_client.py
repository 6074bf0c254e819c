"""An RTMP publisher, sans-IO: what a forward says to an RTMP server to push a stream to it.

How this works
--------------
The client walks one path, one state per wait:

==================  ==============================  ============================================
state               waiting for                     then sends
==================  ==============================  ============================================
``handshake``       S0 S1 (sends C2), then S2       Set Chunk Size, ``connect``
``connecting``      ``_result`` of ``connect``      ``releaseStream``, ``FCPublish``,
                                                    ``createStream``
``creating``        ``_result`` of ``createStream`` ``publish(key, "live")`` on the new stream
``publishing``      ``onStatus`` Publish.Start      nothing: the stream is accepted
``live``            (media goes out)                FLV tags as RTMP messages
==================  ==============================  ============================================

The handshake is the plain form (C1 without a digest), which every server answers. An
``_error`` for ``connect`` or ``createStream``, an ``onStatus`` of level ``error`` (a bad key:
``NetStream.Publish.BadName``), a ``close`` or the server hanging up raise
:class:`~lpstream.errors.RemoteProtocolError` with what the server said; answers to
``releaseStream`` and ``FCPublish`` are ignored (servers differ on them). Pings are answered
and received bytes acknowledged per the server's window, at any state.

Media: each FLV tag becomes one message on the published stream (audio on chunk stream 4,
video on 6, ``onMetaData`` on 5 prefixed with ``@setDataFrame`` as publishers send it), at
the tag's timestamp. Nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import NoReturn

import attrs

from ingest.rtmp import ChunkReader, Message, MessageType, amf0, encode_message
from ingest.rtmp.amf0 import AmfValue
from lpstream.errors import LocalProtocolError, RemoteProtocolError

from .remux import FlvTag

__all__ = ["CHUNK_SIZE", "PublishState", "RtmpPublishClient"]

CHUNK_SIZE = 4096
"""Chunk size the client announces and writes with."""
FLASH_VER = "FMLE/3.0 (compatible; lpstream)"
"""What ``connect`` says the client is (servers expect an encoder's string)."""

_HANDSHAKE_SIZE = 1536
_RTMP_VERSION = 3
_MAX_SERVER_MESSAGE = 1 << 16
"""Largest message accepted from the server (it only sends commands and control)."""
_CONTROL_CSID = 2
_COMMAND_CSID = 3
_AUDIO_CSID = 4
_DATA_CSID = 5
_VIDEO_CSID = 6
_TX_CONNECT = 1.0
_TX_RELEASE = 2.0
_TX_FCPUBLISH = 3.0
_TX_CREATE = 4.0
_PING_REQUEST = 6
_PING_RESPONSE = 7
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_SET_DATA_FRAME = amf0.encode("@setDataFrame")


class PublishState(enum.Enum):
    """Where the client is (see the module comment)."""

    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CREATING = "creating"
    PUBLISHING = "publishing"
    LIVE = "live"
    CLOSED = "closed"


@attrs.define
class RtmpPublishClient:
    """Publishes one stream: bytes in with :meth:`receive_data`, bytes out with
    :meth:`data_to_send`, media in with :meth:`send_tag`."""

    app: str
    """Application to ``connect`` to."""
    stream_key: str = attrs.field(repr=False)
    """Name to ``publish`` (the stream key: a secret)."""
    tc_url: str
    """The ``tcUrl`` of ``connect``."""
    random_bytes: Callable[[int], bytes] = os.urandom
    """Filler of C1 (tests pass a fixed one)."""
    _state: PublishState = attrs.field(default=PublishState.HANDSHAKE, init=False)
    _handshake: bytearray = attrs.field(factory=bytearray, init=False)
    _c2_sent: bool = attrs.field(default=False, init=False)
    _reader: ChunkReader = attrs.field(
        factory=lambda: ChunkReader(
            max_message_size=_MAX_SERVER_MESSAGE, max_pending=4 * _MAX_SERVER_MESSAGE
        ),
        init=False,
    )
    _outgoing: bytearray = attrs.field(factory=bytearray, init=False)
    _stream_id: int = attrs.field(default=0, init=False)
    _received: int = attrs.field(default=0, init=False)
    _acknowledged: int = attrs.field(default=0, init=False)
    _ack_window: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        # C0 and C1 go out at once: time 0, zero version (the plain form), random filler.
        self._outgoing += (
            bytes((_RTMP_VERSION,)) + bytes(8) + self.random_bytes(_HANDSHAKE_SIZE - 8)
        )

    @property
    def state(self) -> PublishState:
        return self._state

    @property
    def live(self) -> bool:
        """True once the server has accepted the publish: media may be sent."""
        return self._state is PublishState.LIVE

    def data_to_send(self) -> bytes:
        """Bytes to write to the server (empty when there are none)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def receive_data(self, data: bytes | bytearray) -> None:
        """Takes bytes from the server; ``b""`` means it closed the connection.

        Raises:
            RemoteProtocolError: the server broke the protocol, refused the stream or hung up.
            LocalProtocolError: data after the connection was closed.
        """
        if self._state is PublishState.CLOSED:
            raise LocalProtocolError("receive_data after the connection closed")
        if not data:
            self._fail(f"the server closed the connection ({self._state.value})")
        try:
            if self._state is PublishState.HANDSHAKE:
                self._handshake += data
                data = self._step_handshake()
                if not data:
                    return
            self._received += len(data)
            self._reader.feed(data)
            for message in self._reader.read_messages():
                self._handle(message)
            self._acknowledge()
        except RemoteProtocolError:
            self._state = PublishState.CLOSED
            raise

    def send_tag(self, tag: FlvTag) -> None:
        """Queues one FLV tag as a message of the published stream.

        Raises:
            LocalProtocolError: the publish has not been accepted (or the connection closed).
        """
        if self._state is not PublishState.LIVE:
            raise LocalProtocolError(f"send_tag while {self._state.value}")
        if tag.kind == MessageType.AUDIO:
            csid, payload = _AUDIO_CSID, tag.payload
        elif tag.kind == MessageType.VIDEO:
            csid, payload = _VIDEO_CSID, tag.payload
        elif tag.kind == MessageType.DATA_AMF0:
            csid, payload = _DATA_CSID, _SET_DATA_FRAME + tag.payload
        else:
            return
        self._write(csid, tag.kind, self._stream_id, payload, tag.timestamp)

    # -- the machinery ------------------------------------------------------------------------

    def _fail(self, reason: str) -> NoReturn:
        self._state = PublishState.CLOSED
        raise RemoteProtocolError(reason, code=502)

    def _write(self, csid: int, type_id: int, stream_id: int, payload: bytes, ts: int = 0) -> None:
        self._outgoing += encode_message(
            chunk_stream_id=csid,
            type_id=type_id,
            stream_id=stream_id,
            payload=payload,
            chunk_size=CHUNK_SIZE,
            timestamp=ts,
        )

    def _command(self, values: list[AmfValue], stream_id: int = 0) -> None:
        csid = _DATA_CSID if stream_id else _COMMAND_CSID
        self._write(csid, MessageType.COMMAND_AMF0, stream_id, amf0.encode_all(values))

    def _step_handshake(self) -> bytes:
        """Consumes S0 S1 S2 as they come; returns what followed S2 (chunked messages)."""
        buf = self._handshake
        if buf and buf[0] != _RTMP_VERSION:
            self._fail(f"the server answered RTMP version {buf[0]} (want {_RTMP_VERSION})")
        if not self._c2_sent and len(buf) >= 1 + _HANDSHAKE_SIZE:
            self._outgoing += buf[1 : 1 + _HANDSHAKE_SIZE]  # C2 echoes S1
            self._c2_sent = True
        done = 1 + 2 * _HANDSHAKE_SIZE
        if len(buf) < done:
            return b""
        rest = bytes(buf[done:])
        buf.clear()
        # The client writes with its own chunk size from here on; the server reads it first.
        self._write(_CONTROL_CSID, MessageType.SET_CHUNK_SIZE, 0, _U32.pack(CHUNK_SIZE))
        self._command(
            [
                "connect",
                _TX_CONNECT,
                {
                    "app": self.app,
                    "type": "nonprivate",
                    "flashVer": FLASH_VER,
                    "tcUrl": self.tc_url,
                },
            ]
        )
        self._state = PublishState.CONNECTING
        return rest or b""

    def _acknowledge(self) -> None:
        if self._ack_window and self._received - self._acknowledged >= self._ack_window:
            self._acknowledged = self._received
            payload = _U32.pack(self._received & 0xFFFFFFFF)
            self._write(_CONTROL_CSID, MessageType.ACKNOWLEDGEMENT, 0, payload)

    def _handle(self, message: Message) -> None:
        kind = message.type_id
        if kind == MessageType.WINDOW_ACK_SIZE and len(message.payload) >= 4:
            self._ack_window = _U32.unpack_from(message.payload)[0]
        elif kind == MessageType.USER_CONTROL and len(message.payload) >= 6:
            if _U16.unpack_from(message.payload)[0] == _PING_REQUEST:
                pong = _U16.pack(_PING_RESPONSE) + message.payload[2:6]
                self._write(_CONTROL_CSID, MessageType.USER_CONTROL, 0, pong)
        elif kind == MessageType.COMMAND_AMF0:
            self._handle_command(amf0.decode_all(message.payload))

    def _handle_command(self, values: list[AmfValue]) -> None:
        name = values[0] if values and isinstance(values[0], str) else ""
        tx = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        state = self._state
        if name == "_result" and tx == _TX_CONNECT and state is PublishState.CONNECTING:
            self._command(["releaseStream", _TX_RELEASE, None, self.stream_key])
            self._command(["FCPublish", _TX_FCPUBLISH, None, self.stream_key])
            self._command(["createStream", _TX_CREATE, None])
            self._state = PublishState.CREATING
        elif name == "_result" and tx == _TX_CREATE and state is PublishState.CREATING:
            stream_id = values[3] if len(values) > 3 else None
            if not isinstance(stream_id, float) or not 0 < stream_id < 1 << 31:
                self._fail(f"createStream answered with no stream id ({stream_id!r})")
            self._stream_id = int(stream_id)
            self._command(["publish", 0.0, None, self.stream_key, "live"], self._stream_id)
            self._state = PublishState.PUBLISHING
        elif name == "_error" and tx in (_TX_CONNECT, _TX_CREATE):
            what = "connect" if tx == _TX_CONNECT else "createStream"
            self._fail(f"the server refused {what}: {_describe(values)}")
        elif name == "onStatus":
            info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
            if info.get("level") == "error":
                self._fail(f"the server refused the stream: {_describe(values)}")
            if info.get("code") == "NetStream.Publish.Start" and state is PublishState.PUBLISHING:
                self._state = PublishState.LIVE
        elif name == "close":
            self._fail("the server closed the stream")


def _describe(values: list[AmfValue]) -> str:
    """The code and description of an ``_error`` or ``onStatus`` (its info object)."""
    info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
    code = info.get("code")
    description = info.get("description")
    parts = [str(x) for x in (code, description) if isinstance(x, str) and x]
    return ": ".join(parts) or "no reason given"
