"""SRT publish ingest: MPEG-TS over SRT from contribution encoders, OBS, FFmpeg and cameras.

A caller publishes to ``srt://HOST:PORT?streamid=#!::r=live/{stream},m=publish`` (or a plain
``live/{stream}``); the server turns each publish into :mod:`lpstream.media` events for a
``PublishHandler``, as RTMP and WHIP do.

libsrt, through ``ctypes``, stays inside this package: :mod:`.libsrt` is the one binding (the
gateway's ``srt://`` restreams call out with its :class:`SrtSocket`), :mod:`.listener` listens,
and :class:`SrtServer` (:mod:`.server`) is the trio-facing class, which runs libsrt's blocking
calls in worker threads. The stream id (:mod:`.streamid`), MPEG-TS (:mod:`.tsdemux`) and ADTS
(:mod:`.adts`) are read sans-IO.
"""

from __future__ import annotations

from .adts import AacFrame, AdtsReader
from .libsrt import LIVE_MAX_PAYLOAD, TS_MESSAGE_SIZE, SrtSocket, srt_available
from .listener import HandshakeRefusal, HandshakeRequest, SrtConnectionEnded, SrtListener, SrtPeer
from .server import SrtServer, SrtServerStatistics
from .streamid import MAX_STREAM_ID, StreamId, StreamIdError, parse_stream_id
from .tsdemux import TsDemuxer

__all__ = [
    "LIVE_MAX_PAYLOAD",
    "MAX_STREAM_ID",
    "TS_MESSAGE_SIZE",
    "AacFrame",
    "AdtsReader",
    "HandshakeRefusal",
    "HandshakeRequest",
    "SrtConnectionEnded",
    "SrtListener",
    "SrtPeer",
    "SrtServer",
    "SrtServerStatistics",
    "SrtSocket",
    "StreamId",
    "StreamIdError",
    "TsDemuxer",
    "parse_stream_id",
    "srt_available",
]
