"""The one transcode of WHEP's sound: AAC (as RTMP and WHIP ingest deliver it) to Opus (what
WebRTC carries), blocking, for a worker thread.

How this works:

* :class:`AacToOpus` decodes the AAC, resamples it to 48 kHz stereo in 20 ms frames and
  encodes each with libopus (PyAV). It blocks for a fraction of a millisecond per packet.
* Timestamps stay on the stream's timeline (integer ms, as the source's video): a run of
  contiguous AAC frames is one run of Opus frames, the first starting at the first AAC
  frame's time and each next one 960 samples (20 ms) later; libopus's look-ahead (312
  samples) is taken off as FFmpeg does, so an Opus packet's time is the time of the first
  sample it decodes to. An AAC frame that does not follow on from the one before (a gap, a
  jump, a reset; more than :data:`CONTINUITY_MS` off) starts a new run. Times are rounded to
  the ms by the same rule within a run, so consecutive packets are exactly 20 ms apart.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import attrs
import av

from lpstream.errors import MediaError
from lpstream.media import CodecConfig, MediaPacket, TrackKind

__all__ = [
    "CONTINUITY_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AacToOpus",
    "AudioUnavailable",
]

SAMPLE_RATE = 48_000
"""Opus's clock: samples per second (and RTP ticks per second)."""
FRAME_SAMPLES = 960
"""Samples per Opus packet: 20 ms, WebRTC's usual frame."""
FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE
CONTINUITY_MS = 10
"""How far (ms) an AAC frame's time may be from where the one before it ended and still
continue the run (ms rounding is at most 1 ms; a lost AAC frame is 21 ms or more)."""
_TIME_BASE = Fraction(1, SAMPLE_RATE)


class AudioUnavailable(MediaError):
    """No Opus can be made of this audio: its configuration cannot be decoded, or the
    encoder cannot be opened."""


@attrs.define
class AacToOpus:
    """Decodes AAC ``MediaPacket``s and encodes them as Opus ones (see the module comment).

    Blocking; use from one thread at a time.
    """

    bit_rate: int = 64_000
    """Opus bit rate in bit/s."""
    _config: CodecConfig | None = attrs.field(default=None, init=False)
    _decoder: Any = attrs.field(default=None, init=False)
    _resampler: Any = attrs.field(default=None, init=False)
    _encoder: Any = attrs.field(default=None, init=False)
    _run_ms: int = attrs.field(default=0, init=False)
    """The first AAC frame's time of this run."""
    _in_samples: int = attrs.field(default=0, init=False)
    """Decoded samples of this run, at the decoder's rate."""
    _in_rate: int = attrs.field(default=0, init=False)
    _out_samples: int = attrs.field(default=0, init=False)
    """48 kHz samples handed to the encoder in this run."""

    def configure(self, config: CodecConfig) -> None:
        """Takes the AAC AudioSpecificConfig; a new one opens a new decoder (and run).

        Raises:
            AudioUnavailable: the config is not AAC or the decoder refuses it.
        """
        if config == self._config and self._decoder is not None:
            return
        if config.kind is not TrackKind.AUDIO or config.codec != "aac":
            raise AudioUnavailable(f"cannot encode {config.codec} audio to Opus, only AAC")
        try:
            decoder = av.CodecContext.create("aac", "r")
            decoder.extradata = config.data or None
            decoder.open()
        except (av.FFmpegError, ValueError) as exc:
            raise AudioUnavailable(f"cannot open the AAC decoder: {exc}") from None
        self._config, self._decoder = config, decoder
        self._encoder = None

    def encode(self, packet: MediaPacket) -> list[MediaPacket]:
        """One AAC packet in; the Opus packets it completes out (none, one or two).

        Raises:
            lpstream.errors.MediaError: no configuration yet, or the decoder or encoder
                refused the packet (:class:`AudioUnavailable` when the encoder cannot be
                opened).
        """
        if self._decoder is None:
            raise MediaError("AAC packet before the AAC configuration")
        try:
            frames = self._decoder.decode(av.Packet(packet.data))
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode an AAC packet: {exc}") from None
        out: list[MediaPacket] = []
        for frame in frames:
            out += self._encode_frame(frame, packet.pts)
        return out

    def _encode_frame(self, frame: Any, time_ms: int) -> list[MediaPacket]:
        rate = frame.sample_rate
        expected = self._run_ms + self._in_samples * 1000 / rate if self._in_rate else None
        if (
            self._encoder is None
            or rate != self._in_rate
            or expected is None
            or abs(time_ms - expected) > CONTINUITY_MS
        ):
            self._start_run(time_ms, rate)
        self._in_samples += frame.samples
        frame.pts = None  # the resampler's own times are not used: the run counts samples
        out: list[MediaPacket] = []
        try:
            for chunk in self._resampler.resample(frame):
                chunk.pts = self._run_ms * SAMPLE_RATE // 1000 + self._out_samples
                chunk.time_base = _TIME_BASE
                self._out_samples += chunk.samples
                for encoded in self._encoder.encode(chunk):
                    out.append(self._packet(encoded))
        except av.FFmpegError as exc:
            self._encoder = None  # its state is unknown: the next frame starts a new run
            raise MediaError(f"cannot encode Opus: {exc}") from None
        return out

    def _start_run(self, time_ms: int, rate: int) -> None:
        try:
            encoder = av.CodecContext.create("libopus", "w")
            encoder.sample_rate = SAMPLE_RATE
            encoder.layout = "stereo"
            encoder.format = "s16"
            encoder.bit_rate = self.bit_rate
            encoder.time_base = _TIME_BASE
            encoder.options = {"frame_duration": str(FRAME_MS), "application": "audio"}
            encoder.open()
        except (av.FFmpegError, ValueError) as exc:
            raise AudioUnavailable(f"cannot open the Opus encoder: {exc}") from None
        self._encoder = encoder
        self._resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=SAMPLE_RATE, frame_size=FRAME_SAMPLES
        )
        self._run_ms, self._in_rate = time_ms, rate
        self._in_samples = self._out_samples = 0

    def _packet(self, encoded: Any) -> MediaPacket:
        # libopus's look-ahead is already taken off (pts = first sample's time); every
        # packet of a run has the same sub-ms remainder, so rounding keeps them 20 ms apart.
        ticks = encoded.pts if encoded.pts is not None else 0
        ms = (ticks * 1000 + SAMPLE_RATE // 2) // SAMPLE_RATE
        return MediaPacket(kind=TrackKind.AUDIO, dts=ms, pts=ms, keyframe=True, data=bytes(encoded))
