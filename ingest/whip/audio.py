"""Opus from WebRTC in, AAC for HLS out: the one transcode WHIP ingest does.

WebRTC carries Opus; MPEG-TS segments and HLS players want AAC, as RTMP delivers it. The
WebRTC stack decodes Opus to 48 kHz PCM frames; :class:`OpusToAac` resamples them into the
1024-sample frames the AAC encoder takes and encodes them. It blocks for tens of microseconds
per frame, so the driver calls it from a worker thread.

Timestamps: each PCM frame carries its RTP time (48 kHz, counted from the track's first
packet); the encoder keeps them, so gaps in the source stay gaps. Packet times are that time
in ms plus the track's start offset, kept at or above zero and strictly increasing (the
encoder's priming packet starts one frame early), as the muxer requires.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import attrs
import av

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaPacket, TrackKind

__all__ = ["OpusToAac"]

SAMPLE_RATE = 48_000
_TIME_BASE = Fraction(1, SAMPLE_RATE)


def _open_encoder(bit_rate: int) -> Any:
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate = SAMPLE_RATE
    encoder.layout = "stereo"
    encoder.format = "fltp"
    encoder.bit_rate = bit_rate
    encoder.time_base = _TIME_BASE
    encoder.open()
    return encoder


@attrs.define
class OpusToAac:
    """Encodes decoded WebRTC audio frames as AAC ``MediaPacket``s."""

    bit_rate: int = 128_000
    """AAC bit rate in bit/s."""
    offset_ms: int = 0
    """Added to every packet time: where the audio track starts on the session's clock."""
    _last_ms: int = attrs.field(default=-1, init=False)
    _encoder: Any = attrs.field(init=False)
    _resampler: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        try:
            self._encoder = _open_encoder(self.bit_rate)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot open the AAC encoder: {exc}") from exc
        self._resampler = av.AudioResampler(
            format="fltp", layout="stereo", rate=SAMPLE_RATE, frame_size=1024
        )

    def config(self) -> CodecConfig:
        """The AudioSpecificConfig of the encoder, to send before the first packet."""
        return CodecConfig(
            kind=TrackKind.AUDIO, codec="aac", data=bytes(self._encoder.extradata or b"")
        )

    def encode(self, frame: Any) -> list[MediaPacket]:
        """Takes one decoded audio frame (a PyAV ``AudioFrame``); returns AAC packets."""
        out: list[MediaPacket] = []
        try:
            for chunk in self._resampler.resample(frame):
                for packet in self._encoder.encode(chunk):
                    out.append(self._packet(packet))
        except av.FFmpegError as exc:
            raise MediaError(f"cannot encode audio: {exc}") from exc
        return out

    def _packet(self, packet: Any) -> MediaPacket:
        pts = packet.pts if packet.pts is not None else 0
        ms = max(0, self.offset_ms + pts * 1000 // SAMPLE_RATE, self._last_ms + 1)
        self._last_ms = ms
        return MediaPacket(kind=TrackKind.AUDIO, dts=ms, pts=ms, keyframe=True, data=bytes(packet))
