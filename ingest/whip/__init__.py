"""WHIP publish ingest (RFC 9725): WebRTC in, the same ``MediaEvent``s as RTMP out.

aiortc, and the asyncio loop it needs, stay inside this package: :class:`WhipIngest` is the
trio-facing class (:mod:`.server`), the SDP checks (:mod:`.sdp`) and the H.264 repackaging
(:mod:`.h264`) are sans-IO, and :mod:`.peer` is the only module that touches aiortc. H.264 is
passed through without re-encoding; Opus audio is transcoded to AAC (:mod:`.audio`).
"""

from __future__ import annotations

from .h264 import H264Track, avc_decoder_configuration, nal_units
from .sdp import MAX_OFFER_SIZE, MediaSection, OfferSummary, check_offer
from .server import WhipAnswer, WhipIngest, WhipStatistics

__all__ = [
    "MAX_OFFER_SIZE",
    "H264Track",
    "MediaSection",
    "OfferSummary",
    "WhipAnswer",
    "WhipIngest",
    "WhipStatistics",
    "avc_decoder_configuration",
    "check_offer",
    "nal_units",
]
