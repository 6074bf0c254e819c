"""The audio streams of a rendition: the source's audio copied, and for a fragmented MP4
rendition its AAC taken out of ADTS framing.

How this works:

* MPEG-TS carries AAC in ADTS frames, each behind a 7- or 9-byte header that states the audio
  object type, the sampling rate and the channels. MP4 carries the raw frames and states those
  once, as the AudioSpecificConfig of the sample entry; FFmpeg's MP4 muxer refuses ADTS
  ("Malformed AAC bitstream"), and PyAV's muxing does not insert ``aac_adtstoasc`` for it.
* The init section (the empty ``moov``) is written with the header, before any fragment. If
  an audio packet is muxed before the header is written (the decode loop's held-back audio
  usually is), the configuration is the one its first ADTS header states; otherwise it is
  built from the stream's parameters (``AAC LC`` unless the probe named Main, SSR or LTP). A
  later frame whose header states another configuration would not decode as the sample entry
  says, so it is dropped, as damaged framing is on the MPEG-TS path.
* A packet may hold several ADTS frames (a live job's input is not parsed into frames): each
  becomes its own packet, 1024 samples per raw block after the one before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction

import attrs
import av
import av.container
from av.audio.stream import AudioStream
from av.packet import Packet
from av.stream import Stream

from lpstream.errors import MediaError
from lpstream.media.adts import ADTS_SAMPLE_RATES, parse_adts_header
from workers.ladder.audio import AudioTrack

__all__ = ["AdtsUnwrapper", "add_audio_streams"]

_OBJECT_TYPES = {"Main": 1, "LC": 2, "SSR": 3, "LTP": 4}
"""AAC object types an ADTS header can state, by FFmpeg's profile name."""

_CHANNEL_CONFIGS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 8: 7}
"""AAC channel configuration by channel count."""


def add_audio_streams(
    container: av.container.OutputContainer,
    audio: Iterable[tuple[AudioStream, AudioTrack]],
    *,
    mp4: bool,
) -> tuple[dict[int, AudioStream], dict[int, AdtsUnwrapper]]:
    """Adds a copy of each source audio stream to ``container``: the output stream per source
    stream index, and for an ``mp4`` container the unwrapper of each ADTS stream."""
    streams: dict[int, AudioStream] = {}
    unwrappers: dict[int, AdtsUnwrapper] = {}
    for source, track in audio:
        out = container.add_stream_from_template(source)
        if not out.codec_context.sample_rate:
            out.codec_context.sample_rate = track.sample_rate
            if track.layout is not None:
                out.codec_context.layout = track.layout
        streams[source.index] = out
        if mp4:
            # The source's measured bit rate differs from segment to segment; without it
            # the init section (esds, btrt) is the same for every segment of a stream.
            out.codec_context.bit_rate = 0
        if mp4 and track.adts:
            unwrappers[source.index] = AdtsUnwrapper(
                stream=out, ticks_per_sample=track.ticks_per_sample
            )
    return streams, unwrappers


@attrs.define(eq=False)
class AdtsUnwrapper:
    """Turns ADTS AAC packets into the raw frames an MP4 stream carries (see the module
    comment)."""

    stream: AudioStream
    """The output stream."""
    ticks_per_sample: Fraction
    """Source time-base ticks per audio sample."""
    config: bytes | None = None
    """The AudioSpecificConfig written in the sample entry, once chosen."""

    def before_header(self) -> None:
        """Chooses the configuration from the stream's parameters if no frame has yet; call
        it before the container's header is written.

        Raises:
            MediaError: the sampling rate or channel count is not one AAC can state.
        """
        if self.config is not None:
            return
        ctx = self.stream.codec_context
        channels = _CHANNEL_CONFIGS.get(ctx.layout.nb_channels)
        if ctx.sample_rate not in ADTS_SAMPLE_RATES or channels is None:
            raise MediaError(
                f"AAC at {ctx.sample_rate} Hz with {ctx.layout.nb_channels} channels "
                "cannot be described for MP4"
            )
        object_type = _OBJECT_TYPES.get(ctx.profile or "", 2)
        rate_index = ADTS_SAMPLE_RATES.index(ctx.sample_rate)
        value = (object_type << 11) | (rate_index << 7) | (channels << 3)
        self._choose(value.to_bytes(2, "big"))

    def frames(self, packet: Packet[Stream]) -> Iterator[Packet[Stream]]:
        """The raw AAC frames of ``packet``, each its own packet (for the output stream)."""
        data = bytes(packet)
        pts = packet.pts
        at = 0
        while pts is not None and (header := parse_adts_header(data, at)) is not None:
            end = at + header.frame_size
            if end > len(data):
                break
            duration = round(header.samples * self.ticks_per_sample)
            if self.config is None:
                self._choose(header.audio_specific_config)
            if header.audio_specific_config == self.config:
                frame = Packet(data[at + header.header_size : end])
                frame.pts = frame.dts = pts
                frame.duration = duration
                frame.time_base = packet.time_base
                frame.stream = self.stream
                yield frame
            pts += duration
            at = end

    def _choose(self, config: bytes) -> None:
        self.config = config
        self.stream.codec_context.extradata = config
