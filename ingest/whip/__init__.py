"""WebRTC at the node: WHIP publish ingest (RFC 9725) and WHEP playback.

WHIP: WebRTC in, the same ``MediaEvent``s as RTMP out. WHEP: a live stream's H.264 out to
WebRTC viewers, packet by packet, from the gateway's fan-out.

aiortc, and the asyncio loops it needs, stay inside this package: :class:`WhipIngest`
(:mod:`.server`) and :class:`WhepPlayback` (:mod:`.whep`) are the trio-facing classes, and
what they share (the loop, the table of sessions, admission, ending) is :mod:`.sessions`; the
SDP checks (:mod:`.sdp`), the H.264 repackaging (:mod:`.h264`, over :mod:`lpstream.media.h264`)
and a viewer's pacing (:mod:`.playout`) are sans-IO; :mod:`.peer`, :mod:`.whep_peer` and what
they share (:mod:`.rtc`) are the only modules that touch aiortc. H.264 is passed through
without re-encoding both ways; WHIP's Opus audio is transcoded to AAC (:mod:`.audio`); WHEP
sends the stream's sound as Opus, encoded once per stream by the node and handed in as
packets (:class:`PlaybackAudio`, :mod:`.whep_feed`).
"""

from __future__ import annotations

from .h264 import H264Track
from .playout import OutgoingFrame, Playout
from .sdp import MAX_OFFER_SIZE, MediaSection, OfferSummary, check_offer, check_playback_offer
from .server import WhipAnswer, WhipIngest, WhipStatistics
from .vp8 import Vp8Track
from .whep import (
    PlaybackSource,
    PlaybackSubscription,
    WhepAnswer,
    WhepPlayback,
    WhepStatistics,
)
from .whep_feed import PlaybackAudio

__all__ = [
    "MAX_OFFER_SIZE",
    "H264Track",
    "MediaSection",
    "OfferSummary",
    "OutgoingFrame",
    "PlaybackAudio",
    "PlaybackSource",
    "PlaybackSubscription",
    "Playout",
    "Vp8Track",
    "WhepAnswer",
    "WhepPlayback",
    "WhepStatistics",
    "WhipAnswer",
    "WhipIngest",
    "WhipStatistics",
    "check_offer",
    "check_playback_offer",
]
