"""RTMP publish ingest: a sans-IO protocol (:mod:`.protocol`) and its trio server (:mod:`.server`).

Broadcasters push to ``rtmp://HOST:PORT/APP/STREAM`` (ffmpeg, OBS, hardware encoders); the
server turns each publish into :mod:`lpstream.media` events for a :class:`PublishHandler`.
"""

from __future__ import annotations

from . import amf0
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
    "Connected",
    "ConnectionClosed",
    "ConnectionState",
    "Event",
    "HandshakeKind",
    "PublishEnded",
    "PublishHandler",
    "PublishRequested",
    "Publisher",
    "RtmpServer",
    "RtmpServerConnection",
    "RtmpServerStatistics",
    "amf0",
]
