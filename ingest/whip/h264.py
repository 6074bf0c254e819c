"""Turns the H.264 access units a WebRTC receiver reassembles into ingest ``MediaEvent``s.

How this works:

* The WebRTC stack depacketizes RTP (single NAL units, STAP-A, FU-A) into one Annex B access
  unit per frame (NAL units behind ``00 00 00 01`` start codes), with the frame's RTP time.
* RTMP ingest delivers H.264 as an ``avcC`` configuration record plus AVCC packets (4-byte
  length-prefixed NAL units), and the segmenter expects exactly that; :class:`H264Track` makes
  the same out of Annex B (the byte handling is :mod:`lpstream.media.h264`'s). WebRTC senders
  repeat SPS and PPS in-band before each IDR; the first pair seen with an IDR becomes the
  ``CodecConfig``, and a changed pair (a new resolution) is sent as a new ``CodecConfig`` ahead
  of its IDR, which the segmenter applies at the next cut.
* Nothing is sent before the first IDR that has SPS and PPS: a decoder could not start there.
  After a gap (frames dropped upstream) the driver calls :meth:`H264Track.wait_for_keyframe`
  and frames are dropped again until the next IDR; :attr:`H264Track.waiting_for_keyframe`
  tells the driver to ask the sender for one (RTCP PLI).
* WebRTC H.264 has no B-frames, so decode and presentation times are equal; they are forced
  to increase by at least 1 ms, as the muxer requires.

This module is sans-IO: bytes and integers in, values out.
"""

from __future__ import annotations

import attrs

from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.media.h264 import (
    NAL_AUD,
    NAL_FILLER,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    avc_decoder_configuration,
    nal_type,
    nal_units,
    to_avcc,
)

from .keyframes import GatedTrack

__all__ = ["H264Track"]

_DROPPED = {NAL_AUD, NAL_FILLER}  # carry nothing a muxer needs


@attrs.define
class H264Track(GatedTrack):
    """Annex B access units in, ``CodecConfig`` and AVCC ``MediaPacket``s out."""

    _sps: bytes | None = None
    _pps: bytes | None = None
    _config: bytes | None = None

    def feed(self, data: bytes, timestamp_ms: int) -> list[MediaEvent]:
        """Takes one Annex B access unit and its time in ms; returns the events it makes."""
        units = [u for u in nal_units(data) if nal_type(u) not in _DROPPED]
        if not units:
            return []
        keyframe = False
        for unit in units:
            kind = nal_type(unit)
            if kind == NAL_SPS:
                self._sps = unit
            elif kind == NAL_PPS:
                self._pps = unit
            elif kind == NAL_IDR:
                keyframe = True
        events: list[MediaEvent] = []
        usable = keyframe and self._sps is not None and self._pps is not None
        if usable:
            assert self._sps is not None and self._pps is not None
            config = avc_decoder_configuration(self._sps, self._pps)
            if config != self._config:
                self._config = config
                events.append(CodecConfig(kind=TrackKind.VIDEO, codec="h264", data=config))
        if not self._gate.passes(keyframe=usable):
            return []
        dts = self._gate.dts(timestamp_ms)
        events.append(
            MediaPacket(
                kind=TrackKind.VIDEO, dts=dts, pts=dts, keyframe=keyframe, data=to_avcc(units)
            )
        )
        return events
