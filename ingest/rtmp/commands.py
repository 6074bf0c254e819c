"""The commands a publisher sends and the messages the server answers with (sans-IO).

How this works
--------------
A command is an AMF0 list: its name, a transaction id, a command object (or null) and the
arguments. The helpers here read the parts a publish server needs, raising
:class:`~lpstream.errors.RemoteProtocolError` when the client got them wrong, and build the
answers (``_result``, ``_error``, ``onFCPublish``, ``onStatus``) that clients expect.

:class:`MessageWriter` turns what the server says into chunked bytes: protocol control on
chunk stream 2, connection commands on 3, stream status on 5, each written at the server's
chunk size (128 until ``connect`` is answered, :data:`OUT_CHUNK_SIZE` after). Which answer
fits which state is :mod:`.protocol`'s business; nothing here holds a connection's state.
"""

from __future__ import annotations

import struct

import attrs

from lpstream.errors import RemoteProtocolError
from lpstream.media import check_stream_name

from . import amf0
from .amf0 import UNDEFINED, AmfValue
from .chunk import MessageType, encode_message

__all__ = [
    "ENHANCED_VIDEO_FOURCCS",
    "OUT_CHUNK_SIZE",
    "PUBLISH_STREAM_ID",
    "WINDOW_ACK_SIZE",
    "MessageWriter",
    "command_name",
    "connect_rejected",
    "connect_result",
    "fc_publish_answer",
    "publish_name_query",
    "publish_stream_name",
    "stream_result",
    "transaction_id",
]

PUBLISH_STREAM_ID = 1
"""The message stream id ``createStream`` hands out."""
OUT_CHUNK_SIZE = 4096
"""Chunk size the server announces and writes with after ``connect``."""
WINDOW_ACK_SIZE = 2_500_000
"""Acknowledgement window and peer bandwidth the server announces."""

_CONTROL_CSID = 2
_COMMAND_CSID = 3
_STATUS_CSID = 5
_DEFAULT_CHUNK_SIZE = 128
_PEER_BANDWIDTH_DYNAMIC = b"\x02"

USER_STREAM_BEGIN = 0
USER_PING_REQUEST = 6
USER_PING_RESPONSE = 7

U32 = struct.Struct(">I")
U16 = struct.Struct(">H")


# -- what the client sent ---------------------------------------------------------------------


def command_name(values: list[AmfValue]) -> str:
    """The command's name, its first value."""
    if not values or not isinstance(values[0], str):
        raise RemoteProtocolError("command message does not start with a command name")
    return values[0]


def transaction_id(values: list[AmfValue]) -> float:
    """The command's transaction id (0 if absent), which its answer echoes."""
    tx = values[1] if len(values) > 1 else 0.0
    if isinstance(tx, bool) or not isinstance(tx, int | float):
        raise RemoteProtocolError(f"command {values[0]!r} has a non-numeric transaction id")
    return float(tx)


def publish_stream_name(raw: AmfValue) -> str:
    """The stream name a ``publish`` asks for, query string removed and checked."""
    if not isinstance(raw, str):
        raise RemoteProtocolError("publish without a stream name")
    try:
        return check_stream_name(raw.split("?", 1)[0])
    except ValueError as exc:
        raise RemoteProtocolError(str(exc)) from None


MAX_PUBLISH_QUERY = 4096
"""The longest query string kept from a publish name (a stream key or a token)."""


def publish_name_query(raw: AmfValue) -> str:
    """The query string after the stream name of a ``publish`` (without ``?``), or "" when
    there is none or it is longer than ``MAX_PUBLISH_QUERY``."""
    if not isinstance(raw, str):
        return ""
    query = raw.partition("?")[2]
    return query if len(query) <= MAX_PUBLISH_QUERY else ""


# -- what the server answers ------------------------------------------------------------------


ENHANCED_VIDEO_FOURCCS = ("avc1", "hvc1", "av01", "vp09")
"""The Enhanced RTMP video codecs a publisher may send (see :mod:`ingest.rtmp.enhanced`)."""
_CAN_DECODE = 1.0
"""``FourCcInfoMask.CanDecode`` of Enhanced RTMP v2: this end takes the codec in."""


def connect_result(tx: float, *, enhanced: bool = False) -> list[AmfValue]:
    """``_result`` for an accepted ``connect``. With ``enhanced`` (the client announced
    Enhanced RTMP in its ``connect``: ``fourCcList`` or ``videoFourCcInfoMap``), the
    properties name the video codecs this server takes, as Enhanced RTMP v1 (``fourCcList``)
    and v2 (``videoFourCcInfoMap``, CanDecode) servers answer."""
    properties: dict[str, AmfValue] = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
    if enhanced:
        properties["fourCcList"] = list(ENHANCED_VIDEO_FOURCCS)
        properties["videoFourCcInfoMap"] = dict.fromkeys(ENHANCED_VIDEO_FOURCCS, _CAN_DECODE)
    return [
        "_result",
        tx,
        properties,
        {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": 0.0,
        },
    ]


def connect_rejected(tx: float, app: str) -> list[AmfValue]:
    """``_error`` for a ``connect`` to an application this server does not serve."""
    return [
        "_error",
        tx,
        None,
        {
            "level": "error",
            "code": "NetConnection.Connect.Rejected",
            "description": f"application {app!r} not found",
        },
    ]


def stream_result(tx: float, result: AmfValue = UNDEFINED) -> list[AmfValue]:
    """``_result`` for ``releaseStream`` (undefined) or ``createStream`` (the stream id)."""
    return ["_result", tx, None, result]


def fc_publish_answer(values: list[AmfValue]) -> list[AmfValue]:
    """``onFCPublish`` for an ``FCPublish``: it names the stream the client gave."""
    stream = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
    return [
        "onFCPublish",
        0.0,
        None,
        {"code": "NetStream.Publish.Start", "description": stream},
    ]


# -- bytes out --------------------------------------------------------------------------------


@attrs.define
class MessageWriter:
    """Chunks the server's messages into bytes for the peer."""

    _outgoing: bytearray = attrs.field(factory=bytearray, init=False)
    _chunk_size: int = attrs.field(default=_DEFAULT_CHUNK_SIZE, init=False)

    def data_to_send(self) -> bytes:
        """Bytes written so far and not yet taken (empty when there are none)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def write_raw(self, data: bytes) -> None:
        """Queues bytes that are not a chunked message (the handshake's)."""
        self._outgoing += data

    def write(self, csid: int, type_id: int, stream_id: int, payload: bytes) -> None:
        """Queues one message on chunk stream ``csid``."""
        self._outgoing += encode_message(
            chunk_stream_id=csid,
            type_id=type_id,
            stream_id=stream_id,
            payload=payload,
            chunk_size=self._chunk_size,
        )

    def write_control(self, type_id: int, payload: bytes) -> None:
        """Queues a protocol control message (acknowledgement, window, bandwidth)."""
        self.write(_CONTROL_CSID, type_id, 0, payload)

    def write_user_control(self, event_type: int, data: bytes) -> None:
        """Queues a User Control event (stream begin, ping response)."""
        self.write_control(MessageType.USER_CONTROL, U16.pack(event_type) + data)

    def write_connect_settings(self) -> None:
        """Announces the window, the peer bandwidth and the chunk size, then writes with it."""
        self.write_control(MessageType.WINDOW_ACK_SIZE, U32.pack(WINDOW_ACK_SIZE))
        self.write_control(
            MessageType.SET_PEER_BANDWIDTH, U32.pack(WINDOW_ACK_SIZE) + _PEER_BANDWIDTH_DYNAMIC
        )
        self.write_control(MessageType.SET_CHUNK_SIZE, U32.pack(OUT_CHUNK_SIZE))
        self._chunk_size = OUT_CHUNK_SIZE

    def write_command(self, values: list[AmfValue], stream_id: int = 0) -> None:
        """Queues an AMF0 command, on the connection (0) or on a message stream."""
        csid = _STATUS_CSID if stream_id else _COMMAND_CSID
        self.write(csid, MessageType.COMMAND_AMF0, stream_id, amf0.encode_all(values))

    def write_status(
        self, level: str, code: str, description: str, *, stream_name: str | None, stream_id: int
    ) -> None:
        """Queues ``onStatus`` on message stream ``stream_id`` (``details`` names the stream)."""
        info: dict[str, AmfValue] = {"level": level, "code": code, "description": description}
        if stream_name:
            info["details"] = stream_name
        self.write_command(["onStatus", 0.0, None, info], stream_id=stream_id)
