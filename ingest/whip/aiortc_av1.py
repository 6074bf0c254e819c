"""Teaches aiortc 1.16 to receive AV1, which it does not know: the codec in its table (so an
offer's AV1 is negotiated) and each AV1 RTP payload kept whole behind its length (aiortc
joins a frame's payloads, and AV1's aggregation headers need their packet boundaries).

How this works: aiortc negotiates from the module-level ``aiortc.codecs.CODECS`` and its
receiver depayloads each packet with the ``depayload`` it imported into
``aiortc.rtcrtpreceiver``; :func:`teach_aiortc_av1` appends an ``video/AV1`` entry (with its
RTX) to the one and wraps the other, once per process. It reaches into aiortc's internals,
so it checks they are there and fails loudly otherwise, as the WHIP receiver's frame tap
does. aiortc never decodes AV1 here: the WHIP receiver takes frames before its decoder.
The answer offers AV1 only to a session that takes it (codec preferences), and WHEP sends
H.264 only, so nothing else changes.
"""

from __future__ import annotations

from typing import Any

import aiortc.codecs
import aiortc.rtcrtpreceiver
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

from .av1 import framed_payload

__all__ = ["teach_aiortc_av1"]

_AV1 = "video/AV1"
_PAYLOAD_TYPE = 45
"""aiortc numbers its own video codecs from 97; a dynamic type clear of them (the offer's
type is used on the wire anyway)."""


def teach_aiortc_av1() -> None:
    """Makes aiortc negotiate and depayload AV1 (idempotent; see the module comment).

    Raises:
        RuntimeError: aiortc is not laid out as 1.16 is.
    """
    codecs: Any = getattr(aiortc.codecs, "CODECS", None)
    original: Any = getattr(aiortc.rtcrtpreceiver, "depayload", None)
    if not isinstance(codecs, dict) or "video" not in codecs or not callable(original):
        raise RuntimeError("aiortc has no codec table or depayload to extend; written for 1.16")
    if any(c.mimeType == _AV1 for c in codecs["video"]):
        return
    feedback = [
        RTCRtcpFeedback(type="nack"),
        RTCRtcpFeedback(type="nack", parameter="pli"),
        RTCRtcpFeedback(type="goog-remb"),
    ]
    codecs["video"] += [
        RTCRtpCodecParameters(
            mimeType=_AV1, clockRate=90000, payloadType=_PAYLOAD_TYPE, rtcpFeedback=feedback
        ),
        RTCRtpCodecParameters(
            mimeType="video/rtx",
            clockRate=90000,
            payloadType=_PAYLOAD_TYPE + 1,
            parameters={"apt": _PAYLOAD_TYPE},
        ),
    ]

    def depayload(codec: RTCRtpCodecParameters, payload: bytes) -> bytes:
        if codec.name.upper() == "AV1":
            return framed_payload(payload)
        result: bytes = original(codec, payload)
        return result

    aiortc.rtcrtpreceiver.depayload = depayload  # type: ignore[attr-defined]
