"""The source's audio, copied unchanged into every rendition.

How this works:

* A small probe often knows an audio stream exists (the PMT says so) but not its sample rate,
  and the muxer refuses a stream without one. So the decode loop holds the first packets back
  ("priming") until every audio stream has told us its parameters: :meth:`AudioTrack.from_packet`
  reads them from the probe, or else from the ADTS header of the stream's first packet.
* With a small probe the demuxer does not know the AAC frame duration either, so only the
  first frame of each PES packet carries a timestamp; :meth:`AudioTrack.stamp` gives the others
  theirs, following it, and drops what the MPEG-TS muxer would refuse (damaged ADTS framing,
  timestamps that go back in time).
"""

from __future__ import annotations

from fractions import Fraction

import attrs
from av.audio.stream import AudioStream
from av.packet import Packet
from av.stream import Stream

from lpstream.media.adts import ADTS_MIN_HEADER, parse_adts_header

__all__ = ["AudioTrack", "adts_header"]

_AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "7.1"}


@attrs.define
class AudioTrack:
    """A source audio stream that is copied: its parameters and its running timestamp."""

    sample_rate: int
    layout: str | None
    ticks_per_sample: Fraction
    adts: bool
    """AAC in ADTS frames (as MPEG-TS carries it): each packet must start with a header."""
    next_pts: int | None = None
    last_dts: int | None = None

    @classmethod
    def from_packet(cls, packet: Packet[Stream]) -> AudioTrack | None:
        """Parameters from the probe, else from the packet's ADTS header; None if unknown."""
        stream = packet.stream
        if not isinstance(stream, AudioStream) or stream.time_base is None:
            return None
        sample_rate, layout = stream.codec_context.sample_rate, None
        if not sample_rate:
            if stream.codec_context.name != "aac":
                return None
            header = adts_header(packet)
            if header is None:
                return None
            sample_rate, layout = header[0], _AAC_LAYOUTS.get(header[1])
        return cls(
            sample_rate=sample_rate,
            layout=layout,
            ticks_per_sample=1 / (sample_rate * stream.time_base),
            adts=stream.codec_context.name == "aac" and not stream.codec_context.extradata,
        )

    def stamp(self, packet: Packet[Stream]) -> bool:
        """Gives ``packet`` a timestamp if the demuxer could not; False to drop it.

        With a small probe the demuxer does not know the AAC frame duration, so only the
        first frame of each PES packet carries a timestamp; the others follow it.
        """
        if packet.is_corrupt:
            return False
        header = adts_header(packet) if self.adts else None
        if self.adts and header is None:
            return False  # damaged: the MPEG-TS muxer needs ADTS framing for AAC
        if packet.pts is None:
            if self.next_pts is None or header is None:
                return False
            packet.pts = packet.dts = self.next_pts
            packet.duration = round(header[2] * self.ticks_per_sample)
        elif not packet.duration and header is not None:
            packet.duration = round(header[2] * self.ticks_per_sample)
        dts = packet.pts if packet.dts is None else packet.dts
        if self.last_dts is not None and dts <= self.last_dts:
            return False  # damaged input went back in time; the muxer would refuse it
        self.last_dts = dts
        self.next_pts = packet.pts + (packet.duration or 0)
        return True


def adts_header(packet: Packet[Stream]) -> tuple[int, int, int] | None:
    """(sample rate, channel configuration, samples) of an ADTS frame, or None."""
    header = parse_adts_header(memoryview(packet)[:ADTS_MIN_HEADER]) if packet.size >= 7 else None
    if header is None:
        return None
    return header.sample_rate, header.channels, header.samples
