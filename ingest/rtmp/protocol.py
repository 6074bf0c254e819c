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
(:mod:`.flv`) while publishing and dropped unread in any other state (some clients send a
last packet after ``FCUnpublish``). H.264 video (and HEVC, AV1 and VP9 over Enhanced RTMP)
and AAC audio are accepted; other codecs are a remote error with code 415. Commands are read
and answered with :mod:`.commands`; the handshake is :mod:`.handshake`, the chunk stream
:mod:`.chunk`.

A remote error may leave an answer queued (``_error`` for an unknown app, ``onStatus`` for a
bad stream name); the driver sends what :meth:`data_to_send` still holds, then closes.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.media import MediaEvent

from . import amf0
from .amf0 import AmfValue
from .chunk import MAX_CHUNK_SIZE, MAX_MESSAGE_SIZE, ChunkReader, Message, MessageType
from .commands import (
    OUT_CHUNK_SIZE,
    PUBLISH_STREAM_ID,
    U16,
    U32,
    USER_PING_REQUEST,
    USER_PING_RESPONSE,
    USER_STREAM_BEGIN,
    WINDOW_ACK_SIZE,
    MessageWriter,
    command_name,
    connect_rejected,
    connect_result,
    fc_publish_answer,
    publish_name_query,
    publish_stream_name,
    stream_result,
    transaction_id,
)
from .events import Connected, ConnectionClosed, Event, PublishEnded, PublishRequested
from .flv import aggregate_events, audio_events, metadata_events, video_events
from .handshake import C1_SIZE, HandshakeKind, check_version, server_response

__all__ = [
    "MAX_UNPUBLISHED_MESSAGE_SIZE",
    "MAX_UNPUBLISHED_PENDING",
    "OUT_CHUNK_SIZE",
    "PUBLISH_STREAM_ID",
    "WINDOW_ACK_SIZE",
    "Connected",
    "ConnectionClosed",
    "ConnectionState",
    "Event",
    "PublishEnded",
    "PublishRequested",
    "RtmpServerConnection",
]


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

_MEDIA_MESSAGES: dict[int, Callable[[int, bytes], list[MediaEvent]]] = {
    MessageType.VIDEO: video_events,
    MessageType.AUDIO: audio_events,
    MessageType.AGGREGATE: aggregate_events,
}
"""Media message types and the :mod:`.flv` function that reads each (at its timestamp)."""

MAX_UNPUBLISHED_MESSAGE_SIZE = 64 * 1024
"""Largest message before a publish is accepted: commands are a few hundred bytes."""
MAX_UNPUBLISHED_PENDING = 256 * 1024
"""Most bytes of unfinished messages buffered before a publish is accepted."""


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
    _writer: MessageWriter = attrs.field(factory=MessageWriter, init=False)
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
            self._feed_reader(data)

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
        return self._writer.data_to_send()

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
        self._writer.write_user_control(USER_STREAM_BEGIN, U32.pack(self._publish_stream_id))
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

    def _feed_reader(self, data: bytes | bytearray | memoryview) -> None:
        self._reader.feed(data)
        self._reader_dirty = True
        self._bytes_received += len(data)

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
                self._writer.write_raw(response)
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
                    self._feed_reader(rest)
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
            self._writer.write_control(
                MessageType.ACKNOWLEDGEMENT, U32.pack(self._bytes_received & 0xFFFFFFFF)
            )

    # -- incoming messages --------------------------------------------------------------------

    def _handle_message(self, message: Message) -> None:
        kind = message.type_id
        payload = message.payload
        if kind in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            self._handle_command(message, _decode_amf(kind, payload))
        elif kind in (MessageType.DATA_AMF0, MessageType.DATA_AMF3):
            values = _decode_amf(kind, payload)
            if self._state in _MEDIA_STATES:
                self._events.extend(metadata_events(values))
        elif kind in _MEDIA_MESSAGES:
            if self._state in _MEDIA_STATES:
                self._events.extend(_MEDIA_MESSAGES[kind](message.timestamp, payload))
        elif kind == MessageType.USER_CONTROL:
            self._handle_user_control(payload)
        elif kind == MessageType.WINDOW_ACK_SIZE:
            if len(payload) < 4:
                raise RemoteProtocolError(f"Window Acknowledgement Size of {len(payload)} bytes")
            self._ack_window = U32.unpack_from(payload)[0]
        elif kind == MessageType.SET_PEER_BANDWIDTH and len(payload) < 5:
            raise RemoteProtocolError(f"Set Peer Bandwidth of {len(payload)} bytes")
        # Acknowledgements, shared objects and unknown types need nothing from a publish server.

    def _handle_user_control(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise RemoteProtocolError(f"User Control message of {len(payload)} bytes")
        event_type = U16.unpack_from(payload)[0]
        if event_type == USER_PING_REQUEST:
            if len(payload) < 6:
                raise RemoteProtocolError("PingRequest without a timestamp")
            self._writer.write_user_control(USER_PING_RESPONSE, payload[2:6])

    def _handle_command(self, message: Message, values: list[AmfValue]) -> None:
        name = command_name(values)
        if name in _PLAY_COMMANDS:
            raise RemoteProtocolError(
                f"{name!r} refused: this server only takes publishers", code=405
            )
        if name not in _COMMANDS:
            return  # _checkbw, getStreamLength, responses to calls we never make, ...
        tx = transaction_id(values)
        was_publishing = self._state is _S.PUBLISHING
        self._transition(name)
        if name == "connect":
            self._on_connect(tx, values)
        elif name == "releaseStream":
            self._writer.write_command(stream_result(tx))
        elif name == "FCPublish":
            self._writer.write_command(fc_publish_answer(values))
        elif name == "createStream":
            self._writer.write_command(stream_result(tx, float(PUBLISH_STREAM_ID)))
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
            self._writer.write_command(connect_rejected(tx, app))
            raise RemoteProtocolError(
                f"connect to unknown app {app!r} (this server serves {self.app!r})", code=404
            )
        self._writer.write_connect_settings()
        enhanced = "fourCcList" in command or "videoFourCcInfoMap" in command
        self._writer.write_command(connect_result(tx, enhanced=enhanced))
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
        raw_name = values[3] if len(values) > 3 else None
        try:
            name = publish_stream_name(raw_name)
        except RemoteProtocolError as exc:
            self._send_status("error", "NetStream.Publish.BadName", str(exc))
            raise
        publish_type = values[4] if len(values) > 4 else "live"
        self._stream_name = name
        self._events.append(
            PublishRequested(
                stream_name=name,
                publish_type=publish_type if isinstance(publish_type, str) else "live",
                query=publish_name_query(raw_name),
            )
        )

    def _send_status(self, level: str, code: str, description: str) -> None:
        self._writer.write_status(
            level,
            code,
            description,
            stream_name=self._stream_name,
            stream_id=self._publish_stream_id,
        )


def _decode_amf(kind: int, payload: bytes) -> list[AmfValue]:
    """The values of a command or data message; the AMF3 forms hold AMF0 behind a 0 byte."""
    if kind in (MessageType.COMMAND_AMF3, MessageType.DATA_AMF3) and payload[:1] == b"\x00":
        payload = payload[1:]
    return amf0.decode_all(payload)
