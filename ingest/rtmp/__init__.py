"""RTMP publish ingest: a sans-IO protocol (:mod:`.protocol`) and its trio server (:mod:`.server`).

Broadcasters push to ``rtmp://HOST:PORT/APP/STREAM`` (ffmpeg, OBS, hardware encoders); the
server turns each publish into :mod:`lpstream.media` events for a :class:`PublishHandler`.
The chunk stream's reader and writer (:mod:`.chunk`) and AMF0 serve an RTMP client too (the
gateway's restreams).
"""

from __future__ import annotations

from . import amf0
from .chunk import ChunkReader, Message, MessageType, encode_message
from .handshake import HandshakeKind
from .protocol import (
    Connected,
    ConnectionClosed,
    ConnectionState,
    Event,
    PublishEnded,
    PublishRequested,
    RtmpServerConnection,
)
from .server import Publisher, PublishHandler, RtmpServer, RtmpServerStatistics

__all__ = [
    "ChunkReader",
    "Connected",
    "ConnectionClosed",
    "ConnectionState",
    "Event",
    "HandshakeKind",
    "Message",
    "MessageType",
    "PublishEnded",
    "PublishHandler",
    "PublishRequested",
    "Publisher",
    "RtmpServer",
    "RtmpServerConnection",
    "RtmpServerStatistics",
    "amf0",
    "encode_message",
]
