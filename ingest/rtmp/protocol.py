"""The server side of one RTMP publishing connection, sans-IO.

How this works
--------------
:class:`RtmpServerConnection` takes bytes with :meth:`~RtmpServerConnection.receive_data`,
hands out events with :meth:`~RtmpServerConnection.next_event` and bytes to write with
:meth:`~RtmpServerConnection.data_to_send`. It has no socket and no clock: the driver owns
timeouts, because "the peer sent nothing for a while" is a fact about waiting on a socket.
Like h11, input is only buffered on receipt and parsed as events are asked for, so the
caller's decisions (accept or refuse a publish) land in order with the peer's messages.

The states and what moves between them (``_TRANSITIONS`` holds this as data)::

    HANDSHAKE_C0C1 --C0+C1--> HANDSHAKE_C2 --C2--> AWAIT_CONNECT --connect--> CONNECTED
    CONNECTED --releaseStream / FCPublish / createStream / end--> CONNECTED
    CONNECTED --publish--> PUBLISH_PENDING
    PUBLISH_PENDING --accept_publish()--> PUBLISHING   (our caller decides)
    PUBLISH_PENDING --reject_publish()--> CLOSED
    PUBLISHING --FCUnpublish / deleteStream / closeStream--> CONNECTED   (PublishEnded)
    any --end of input--> CLOSED   (PublishEnded if publishing, then ConnectionClosed)
    any --peer breaks a rule--> ERROR   (RemoteProtocolError, raised again on later calls)

``publish`` yields :class:`PublishRequested` and then *pauses*: nothing more is parsed until
the caller answers, so media the client pipelined behind its ``publish`` only comes out after
``accept_publish()`` (input keeps being buffered meanwhile, so a driver answers before it
reads more). Audio, video and metadata are turned into :mod:`lpstream.media` values
while publishing and dropped in any other state (some clients send a last packet after
``FCUnpublish``). Only H.264 video and AAC audio are accepted; other codecs are a remote error
with code 415.

A remote error may leave an answer queued (``_error`` for an unknown app, ``onStatus`` for a
bad stream name); the driver sends what :meth:`data_to_send` still holds, then closes.
"""

from __future__ import annotations

import collections
import enum
import struct

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.media import (
    CodecConfig,
    MediaEvent,
    MediaPacket,
    StreamMetadata,
    TrackKind,
    check_stream_name,
)

from . import amf0
from .amf0 import UNDEFINED, AmfValue
from .chunk import (
    MAX_CHUNK_SIZE,
    MAX_MESSAGE_SIZE,
    ChunkReader,
    Message,
    MessageType,
    encode_message,
)
from .handshake import C1_SIZE, HandshakeKind, check_version, server_response

__all__ = [
    "Connected",
    "ConnectionClosed",
    "ConnectionState",
    "Event",
    "PublishEnded",
    "PublishRequested",
    "RtmpServerConnection",
]


# -- events -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Connected:
    """The client's ``connect`` was accepted."""

    app: str
    """The application name the client asked for (query string removed)."""
    tc_url: str
    """The ``tcUrl`` the client sent, or empty."""
    flash_ver: str
    """The client's ``flashVer`` (e.g. ``FMLE/3.0 (compatible; Lavf59.27.100)``), or empty."""


@attrs.frozen(kw_only=True)
class PublishRequested:
    """The client asked to publish; answer with ``accept_publish()`` or ``reject_publish()``."""

    stream_name: str
    """The stream name, query string removed (see :func:`lpstream.media.check_stream_name`)."""
    publish_type: str
    """``live``, ``record`` or ``append`` as the client sent it (``live`` if absent)."""


@attrs.frozen(kw_only=True)
class PublishEnded:
    """The publish that was accepted (or pending) is over."""

    stream_name: str
    """The stream that ended."""
    reason: str
    """What ended it: the client's command or ``connection closed``."""


@attrs.frozen(kw_only=True)
class ConnectionClosed:
    """The peer closed its side; no event follows."""

    reason: str
    """Why, in words."""


Event = Connected | PublishRequested | PublishEnded | ConnectionClosed | MediaEvent
"""Everything :meth:`RtmpServerConnection.next_event` returns."""


# -- the state machine ------------------------------------------------------------------------


class ConnectionState(enum.Enum):
    """Where a connection is; the values read well in error messages."""

    HANDSHAKE_C0C1 = "waiting for C0 and C1"
    HANDSHAKE_C2 = "waiting for C2"
    AWAIT_CONNECT = "waiting for connect"
    CONNECTED = "connected"
    PUBLISH_PENDING = "publish pending"
    PUBLISHING = "publishing"
    CLOSED = "closed"
    ERROR = "error"


_S = ConnectionState
_TRANSITIONS: dict[tuple[ConnectionState, str], ConnectionState] = {
    (_S.HANDSHAKE_C0C1, "C0+C1"): _S.HANDSHAKE_C2,
    (_S.HANDSHAKE_C2, "C2"): _S.AWAIT_CONNECT,
    (_S.AWAIT_CONNECT, "connect"): _S.CONNECTED,
    (_S.CONNECTED, "releaseStream"): _S.CONNECTED,
    (_S.CONNECTED, "FCPublish"): _S.CONNECTED,
    (_S.CONNECTED, "createStream"): _S.CONNECTED,
    (_S.CONNECTED, "publish"): _S.PUBLISH_PENDING,
    (_S.CONNECTED, "FCUnpublish"): _S.CONNECTED,
    (_S.CONNECTED, "deleteStream"): _S.CONNECTED,
    (_S.CONNECTED, "closeStream"): _S.CONNECTED,
    (_S.PUBLISH_PENDING, "accept_publish"): _S.PUBLISHING,
    (_S.PUBLISH_PENDING, "reject_publish"): _S.CLOSED,
    (_S.PUBLISHING, "stop_publish"): _S.CLOSED,
    (_S.PUBLISHING, "FCUnpublish"): _S.CONNECTED,
    (_S.PUBLISHING, "deleteStream"): _S.CONNECTED,
    (_S.PUBLISHING, "closeStream"): _S.CONNECTED,
}
"""(state, trigger) -> next state. Triggers are command names, handshake steps and the
caller's ``accept_publish`` / ``reject_publish``; a pair not listed is not allowed."""

_COMMANDS = frozenset(trigger for _, trigger in _TRANSITIONS) - {
    "C0+C1",
    "C2",
    "accept_publish",
    "reject_publish",
    "stop_publish",
}
_PLAY_COMMANDS = frozenset({"play", "play2", "seek", "pause"})
_HANDSHAKE_STATES = frozenset({_S.HANDSHAKE_C0C1, _S.HANDSHAKE_C2})
_MEDIA_STATES = frozenset({_S.PUBLISHING})

# -- wire constants ---------------------------------------------------------------------------

_CONTROL_CSID = 2
_COMMAND_CSID = 3
_STATUS_CSID = 5
PUBLISH_STREAM_ID = 1
"""The message stream id ``createStream`` hands out."""
OUT_CHUNK_SIZE = 4096
"""Chunk size the server announces and writes with after ``connect``."""
WINDOW_ACK_SIZE = 2_500_000
"""Acknowledgement window and peer bandwidth the server announces."""

_USER_STREAM_BEGIN = 0
_USER_PING_REQUEST = 6
_USER_PING_RESPONSE = 7

_VIDEO_CODEC_AVC = 7
_VIDEO_FRAME_KEY = 1
_VIDEO_FRAME_INFO = 5
_AUDIO_CODEC_AAC = 10
_FLV_TAG_HEADER = 11

MAX_UNPUBLISHED_MESSAGE_SIZE = 64 * 1024
"""Largest message before a publish is accepted: commands are a few hundred bytes."""
MAX_UNPUBLISHED_PENDING = 256 * 1024
"""Most bytes of unfinished messages buffered before a publish is accepted."""

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


def _command_name(values: list[AmfValue]) -> str:
    if not values or not isinstance(values[0], str):
        raise RemoteProtocolError("command message does not start with a command name")
    return values[0]


def _transaction_id(values: list[AmfValue]) -> float:
    tx = values[1] if len(values) > 1 else 0.0
    if isinstance(tx, bool) or not isinstance(tx, int | float):
        raise RemoteProtocolError(f"command {values[0]!r} has a non-numeric transaction id")
    return float(tx)


def _check_stream_name(raw: AmfValue) -> str:
    if not isinstance(raw, str):
        raise RemoteProtocolError("publish without a stream name")
    try:
        return check_stream_name(raw.split("?", 1)[0])
    except ValueError as exc:
        raise RemoteProtocolError(str(exc)) from None


@attrs.define
class RtmpServerConnection:
    """One client connection, from the handshake to the end of its publish.

    Attributes:
        app: the application name clients must ``connect`` to (``rtmp://host/APP/stream``).
    """

    app: str = "live"
    max_chunk_size: int = MAX_CHUNK_SIZE
    """Largest chunk size the client may set."""
    max_message_size: int = MAX_MESSAGE_SIZE
    """Largest message the client may send once its publish is accepted."""
    max_unpublished_message_size: int = MAX_UNPUBLISHED_MESSAGE_SIZE
    """Largest message before the publish is accepted (only commands are expected then)."""
    max_unpublished_pending: int = MAX_UNPUBLISHED_PENDING
    """Bytes of unfinished messages a client may have buffered before its publish is
    accepted: what an anonymous connection can make the server hold."""
    _state: ConnectionState = attrs.field(default=ConnectionState.HANDSHAKE_C0C1, init=False)
    _handshake: bytearray = attrs.field(factory=bytearray, init=False)
    _handshake_kind: HandshakeKind | None = attrs.field(default=None, init=False)
    _reader: ChunkReader = attrs.field(init=False)
    _reader_dirty: bool = attrs.field(default=False, init=False)
    _inbox: collections.deque[Message] = attrs.field(factory=collections.deque, init=False)
    _events: collections.deque[Event] = attrs.field(factory=collections.deque, init=False)
    _outgoing: bytearray = attrs.field(factory=bytearray, init=False)
    _out_chunk_size: int = attrs.field(default=128, init=False)
    _eof: bool = attrs.field(default=False, init=False)
    _error: RemoteProtocolError | None = attrs.field(default=None, init=False)
    _bytes_received: int = attrs.field(default=0, init=False)
    _last_ack: int = attrs.field(default=0, init=False)
    _ack_window: int = attrs.field(default=0, init=False)
    _stream_name: str | None = attrs.field(default=None, init=False)
    _publish_stream_id: int = attrs.field(default=PUBLISH_STREAM_ID, init=False)

    def __attrs_post_init__(self) -> None:
        self._reader = ChunkReader(
            max_chunk_size=self.max_chunk_size,
            max_message_size=min(self.max_message_size, self.max_unpublished_message_size),
            max_pending=self.max_unpublished_pending,
        )

    # -- what the caller reads ----------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """Where the connection is (see the module comment)."""
        return self._state

    @property
    def handshake_complete(self) -> bool:
        """True once C2 is in (the driver switches from the handshake to the idle timeout)."""
        return self._state not in _HANDSHAKE_STATES

    @property
    def handshake_kind(self) -> HandshakeKind | None:
        """Which handshake form the client used, once C1 is in."""
        return self._handshake_kind

    @property
    def closed(self) -> bool:
        """True when nothing more will come: send what is left, then close the socket."""
        return self._state in (ConnectionState.CLOSED, ConnectionState.ERROR)

    @property
    def stream_name(self) -> str | None:
        """The stream asked for by the last ``publish``, if any."""
        return self._stream_name

    @property
    def bytes_received(self) -> int:
        """Bytes received after the handshake (what Acknowledgements count)."""
        return self._bytes_received

    # -- bytes in, events out, bytes out ------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffers received bytes; ``b""`` means the peer closed its side.

        Raises:
            LocalProtocolError: data after end of input.
        """
        if self._eof:
            raise LocalProtocolError("receive_data after end of input")
        if not data:
            self._eof = True
        elif self._state in _HANDSHAKE_STATES:
            self._handshake += data
        elif not self.closed:
            self._reader.feed(data)
            self._reader_dirty = True
            self._bytes_received += len(data)

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more data (or ``accept_publish``) is needed.

        Raises:
            RemoteProtocolError: the peer broke the protocol; the connection is dead (and the
                same error is raised again on later calls).
        """
        if self._error is not None:
            raise self._error
        try:
            while not self._events and self._step():
                pass
        except RemoteProtocolError as exc:
            self._state = ConnectionState.ERROR
            self._error = exc
            raise
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """Every event available now (stops at a :class:`PublishRequested`)."""
        out: list[Event] = []
        while (event := self.next_event()) is not None:
            out.append(event)
            if isinstance(event, PublishRequested):
                break
        return out

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer (empty when there are none)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    # -- the caller's decisions ---------------------------------------------------------------

    def accept_publish(self) -> None:
        """Answers :class:`PublishRequested` with ``NetStream.Publish.Start``.

        Raises:
            LocalProtocolError: no publish is pending.
        """
        self._transition("accept_publish")
        self._reader.set_limits(
            max_message_size=self.max_message_size, max_pending=2 * self.max_message_size
        )
        self._send_user_control(_USER_STREAM_BEGIN, _U32.pack(self._publish_stream_id))
        self._send_status(
            "status",
            "NetStream.Publish.Start",
            f"{self._stream_name} is now published.",
        )

    def reject_publish(self, reason: str) -> None:
        """Answers :class:`PublishRequested` with ``NetStream.Publish.BadName``; then close.

        Raises:
            LocalProtocolError: no publish is pending.
        """
        self._transition("reject_publish")
        self._send_status("error", "NetStream.Publish.BadName", reason)

    def stop_publish(self, reason: str) -> None:
        """Ends an accepted publish from our side (a limit was broken, the stream failed):
        answers ``NetStream.Failed`` with ``reason``; then close.

        Raises:
            LocalProtocolError: nothing is being published.
        """
        self._transition("stop_publish")
        self._send_status("error", "NetStream.Failed", reason)

    # -- the machinery ------------------------------------------------------------------------

    def _transition(self, trigger: str) -> None:
        key = (self._state, trigger)
        if key not in _TRANSITIONS:
            if trigger in ("accept_publish", "reject_publish", "stop_publish"):
                raise LocalProtocolError(f"{trigger}() while {self._state.value}")
            if self._state is ConnectionState.AWAIT_CONNECT:
                raise RemoteProtocolError(f"{trigger!r} before 'connect'")
            raise RemoteProtocolError(f"{trigger!r} not allowed while {self._state.value}")
        self._state = _TRANSITIONS[key]

    def _step(self) -> bool:
        """Does one unit of work; False when nothing more can be done now."""
        state = self._state
        if state in (_S.CLOSED, _S.ERROR, _S.PUBLISH_PENDING):
            return False
        if state is _S.HANDSHAKE_C0C1:
            if self._handshake:
                check_version(self._handshake[0])
            if len(self._handshake) >= 1 + C1_SIZE:
                c1 = bytes(self._handshake[1 : 1 + C1_SIZE])
                del self._handshake[: 1 + C1_SIZE]
                self._handshake_kind, response = server_response(c1)
                self._outgoing += response
                self._transition("C0+C1")
                return True
            return self._end_of_input()
        if state is _S.HANDSHAKE_C2:
            if len(self._handshake) >= C1_SIZE:
                # C2 echoes S1 (plain) or signs it (digest); clients do not agree on which,
                # and nothing depends on it, so it is not checked.
                rest = self._handshake[C1_SIZE:]
                self._handshake = bytearray()
                self._transition("C2")
                if rest:
                    self._reader.feed(rest)
                    self._reader_dirty = True
                    self._bytes_received += len(rest)
                return True
            return self._end_of_input()
        if self._inbox:
            self._handle_message(self._inbox.popleft())
            self._maybe_acknowledge()
            return True
        if self._reader_dirty:
            self._reader_dirty = False
            self._inbox.extend(self._reader.read_messages())
            return True
        return self._end_of_input()

    def _end_of_input(self) -> bool:
        if not self._eof:
            return False
        if self._state in (_S.PUBLISHING, _S.PUBLISH_PENDING) and self._stream_name:
            self._events.append(
                PublishEnded(stream_name=self._stream_name, reason="connection closed")
            )
        if self._state in _HANDSHAKE_STATES:
            reason = f"peer closed the connection {self._state.value}"
        else:
            reason = "peer closed the connection"
        self._events.append(ConnectionClosed(reason=reason))
        self._state = _S.CLOSED
        return True

    def _maybe_acknowledge(self) -> None:
        if self._ack_window and self._bytes_received - self._last_ack >= self._ack_window:
            self._last_ack = self._bytes_received
            self._send(
                _CONTROL_CSID,
                MessageType.ACKNOWLEDGEMENT,
                0,
                _U32.pack(self._bytes_received & 0xFFFFFFFF),
            )

    # -- incoming messages --------------------------------------------------------------------

    def _handle_message(self, message: Message) -> None:
        kind = message.type_id
        payload = message.payload
        if kind in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            if kind == MessageType.COMMAND_AMF3 and payload[:1] == b"\x00":
                payload = payload[1:]
            self._handle_command(message, amf0.decode_all(payload))
        elif kind in (MessageType.DATA_AMF0, MessageType.DATA_AMF3):
            if kind == MessageType.DATA_AMF3 and payload[:1] == b"\x00":
                payload = payload[1:]
            self._handle_data(amf0.decode_all(payload))
        elif kind == MessageType.VIDEO:
            self._handle_video(message.timestamp, payload)
        elif kind == MessageType.AUDIO:
            self._handle_audio(message.timestamp, payload)
        elif kind == MessageType.AGGREGATE:
            self._handle_aggregate(message.timestamp, payload)
        elif kind == MessageType.USER_CONTROL:
            self._handle_user_control(payload)
        elif kind == MessageType.WINDOW_ACK_SIZE:
            if len(payload) < 4:
                raise RemoteProtocolError(f"Window Acknowledgement Size of {len(payload)} bytes")
            self._ack_window = _U32.unpack_from(payload)[0]
        elif kind == MessageType.SET_PEER_BANDWIDTH and len(payload) < 5:
            raise RemoteProtocolError(f"Set Peer Bandwidth of {len(payload)} bytes")
        # Acknowledgements, shared objects and unknown types need nothing from a publish server.

    def _handle_user_control(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise RemoteProtocolError(f"User Control message of {len(payload)} bytes")
        event_type = _U16.unpack_from(payload)[0]
        if event_type == _USER_PING_REQUEST:
            if len(payload) < 6:
                raise RemoteProtocolError("PingRequest without a timestamp")
            self._send_user_control(_USER_PING_RESPONSE, payload[2:6])

    def _handle_command(self, message: Message, values: list[AmfValue]) -> None:
        name = _command_name(values)
        if name in _PLAY_COMMANDS:
            raise RemoteProtocolError(
                f"{name!r} refused: this server only takes publishers", code=405
            )
        if name not in _COMMANDS:
            return  # _checkbw, getStreamLength, responses to calls we never make, ...
        tx = _transaction_id(values)
        was_publishing = self._state is _S.PUBLISHING
        self._transition(name)
        if name == "connect":
            self._on_connect(tx, values)
        elif name == "releaseStream":
            self._send_command(["_result", tx, None, UNDEFINED])
        elif name == "FCPublish":
            stream = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
            self._send_command(
                [
                    "onFCPublish",
                    0.0,
                    None,
                    {"code": "NetStream.Publish.Start", "description": stream},
                ]
            )
        elif name == "createStream":
            self._send_command(["_result", tx, None, float(PUBLISH_STREAM_ID)])
        elif name == "publish":
            self._on_publish(message, values)
        elif was_publishing:  # FCUnpublish, deleteStream, closeStream
            # No answer: ffmpeg closes right after deleteStream, and bytes it never reads
            # would turn its close into a reset.
            assert self._stream_name is not None
            self._events.append(PublishEnded(stream_name=self._stream_name, reason=name))

    def _on_connect(self, tx: float, values: list[AmfValue]) -> None:
        command = values[2] if len(values) > 2 else None
        if not isinstance(command, dict):
            raise RemoteProtocolError("connect without a command object")
        app_value = command.get("app")
        if not isinstance(app_value, str):
            raise RemoteProtocolError("connect without an app name")
        app = app_value.split("?", 1)[0].strip("/")
        if app != self.app:
            self._send_command(
                [
                    "_error",
                    tx,
                    None,
                    {
                        "level": "error",
                        "code": "NetConnection.Connect.Rejected",
                        "description": f"application {app!r} not found",
                    },
                ]
            )
            raise RemoteProtocolError(
                f"connect to unknown app {app!r} (this server serves {self.app!r})", code=404
            )
        self._send(_CONTROL_CSID, MessageType.WINDOW_ACK_SIZE, 0, _U32.pack(WINDOW_ACK_SIZE))
        self._send(
            _CONTROL_CSID, MessageType.SET_PEER_BANDWIDTH, 0, _U32.pack(WINDOW_ACK_SIZE) + b"\x02"
        )
        self._send(_CONTROL_CSID, MessageType.SET_CHUNK_SIZE, 0, _U32.pack(OUT_CHUNK_SIZE))
        self._out_chunk_size = OUT_CHUNK_SIZE
        self._send_command(
            [
                "_result",
                tx,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0.0,
                },
            ]
        )
        tc_url = command.get("tcUrl")
        flash_ver = command.get("flashVer")
        self._events.append(
            Connected(
                app=app,
                tc_url=tc_url if isinstance(tc_url, str) else "",
                flash_ver=flash_ver if isinstance(flash_ver, str) else "",
            )
        )

    def _on_publish(self, message: Message, values: list[AmfValue]) -> None:
        self._publish_stream_id = message.stream_id or PUBLISH_STREAM_ID
        try:
            name = _check_stream_name(values[3] if len(values) > 3 else None)
        except RemoteProtocolError as exc:
            self._send_status("error", "NetStream.Publish.BadName", str(exc))
            raise
        publish_type = values[4] if len(values) > 4 else "live"
        self._stream_name = name
        self._events.append(
            PublishRequested(
                stream_name=name,
                publish_type=publish_type if isinstance(publish_type, str) else "live",
            )
        )

    def _handle_data(self, values: list[AmfValue]) -> None:
        if self._state not in _MEDIA_STATES:
            return
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            self._events.append(StreamMetadata(values=dict(values[1])))

    def _handle_video(self, timestamp: int, payload: bytes) -> None:
        if self._state not in _MEDIA_STATES or not payload:
            return
        head = payload[0]
        if head & 0x80:
            fourcc = payload[1:5].decode("ascii", "replace")
            raise RemoteProtocolError(
                f"unsupported video codec {fourcc!r} (enhanced RTMP); only H.264 is accepted",
                code=415,
            )
        frame_type, codec = head >> 4, head & 0x0F
        if frame_type == _VIDEO_FRAME_INFO:
            return
        if codec != _VIDEO_CODEC_AVC:
            raise RemoteProtocolError(
                f"unsupported video codec id {codec}; only 7 (H.264) is accepted", code=415
            )
        if len(payload) < 5:
            raise RemoteProtocolError(f"AVC video message of {len(payload)} bytes (header is 5)")
        packet_type = payload[1]
        data = payload[5:]
        if packet_type == 0:
            if not data:
                raise RemoteProtocolError("empty AVC sequence header")
            self._events.append(CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=data))
        elif packet_type == 1:
            if data:
                offset = int.from_bytes(payload[2:5], "big", signed=True)
                self._events.append(
                    MediaPacket(
                        kind=TrackKind.VIDEO,
                        dts=timestamp,
                        pts=timestamp + offset,
                        keyframe=frame_type == _VIDEO_FRAME_KEY,
                        data=data,
                    )
                )
        elif packet_type != 2:  # 2 is end of sequence
            raise RemoteProtocolError(f"unknown AVC packet type {packet_type}")

    def _handle_audio(self, timestamp: int, payload: bytes) -> None:
        if self._state not in _MEDIA_STATES or not payload:
            return
        codec = payload[0] >> 4
        if codec != _AUDIO_CODEC_AAC:
            raise RemoteProtocolError(
                f"unsupported audio codec id {codec}; only 10 (AAC) is accepted", code=415
            )
        if len(payload) < 2:
            raise RemoteProtocolError("AAC audio message without a packet type")
        packet_type = payload[1]
        data = payload[2:]
        if packet_type == 0:
            if not data:
                raise RemoteProtocolError("empty AAC sequence header")
            self._events.append(CodecConfig(kind=TrackKind.AUDIO, codec="aac", data=data))
        elif packet_type == 1:
            if data:
                self._events.append(
                    MediaPacket(
                        kind=TrackKind.AUDIO, dts=timestamp, pts=timestamp, keyframe=True, data=data
                    )
                )
        else:
            raise RemoteProtocolError(f"unknown AAC packet type {packet_type}")

    def _handle_aggregate(self, timestamp: int, payload: bytes) -> None:
        """An aggregate message is FLV tags back to back; their times are relative to the first."""
        if self._state not in _MEDIA_STATES:
            return
        pos = 0
        first: int | None = None
        while pos < len(payload):
            if pos + _FLV_TAG_HEADER > len(payload):
                raise RemoteProtocolError("truncated tag header in aggregate message")
            tag_type = payload[pos]
            size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
            tag_time = int.from_bytes(payload[pos + 4 : pos + 7], "big") | (payload[pos + 7] << 24)
            body_end = pos + _FLV_TAG_HEADER + size
            if body_end + 4 > len(payload):
                raise RemoteProtocolError("truncated tag in aggregate message")
            body = payload[pos + _FLV_TAG_HEADER : body_end]
            if first is None:
                first = tag_time
            when = timestamp + tag_time - first
            if tag_type == MessageType.VIDEO:
                self._handle_video(when, body)
            elif tag_type == MessageType.AUDIO:
                self._handle_audio(when, body)
            elif tag_type == MessageType.DATA_AMF0:
                self._handle_data(amf0.decode_all(body))
            pos = body_end + 4  # skip the back pointer

    # -- outgoing messages --------------------------------------------------------------------

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes) -> None:
        self._outgoing += encode_message(
            chunk_stream_id=csid,
            type_id=type_id,
            stream_id=stream_id,
            payload=payload,
            chunk_size=self._out_chunk_size,
        )

    def _send_user_control(self, event_type: int, data: bytes) -> None:
        self._send(_CONTROL_CSID, MessageType.USER_CONTROL, 0, _U16.pack(event_type) + data)

    def _send_command(self, values: list[AmfValue], stream_id: int = 0) -> None:
        csid = _STATUS_CSID if stream_id else _COMMAND_CSID
        self._send(csid, MessageType.COMMAND_AMF0, stream_id, amf0.encode_all(values))

    def _send_status(self, level: str, code: str, description: str) -> None:
        info: dict[str, AmfValue] = {"level": level, "code": code, "description": description}
        if self._stream_name:
            info["details"] = self._stream_name
        self._send_command(["onStatus", 0.0, None, info], stream_id=self._publish_stream_id)
