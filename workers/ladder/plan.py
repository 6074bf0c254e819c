"""Ladder planning: how each rendition is made, decided once the first frame sizes the source.

How this works:

* A rendition is the source fitted into its profile's box (``scaled_size``), in ``yuv420p``,
  at the source's frame rate unless the profile names another one.
* A profile with an ``fps`` different from the source's drops or repeats frames by timestamp:
  output slot ``k`` sits at ``first_pts + k / fps`` and takes the first source frame whose
  timestamp is within half a source frame of it (``step`` and ``tolerance``, in source ticks).
  A staged (live AI) rendition never converts: its stage keeps the source's timing.
* A staged rendition is live: its encoder gets zero-latency settings, its queue is shorter and
  its muxer hands on each packet at once, writing each video PES's length.
* The source frame rate comes from the container, then the codec timing, then the median
  distance between the packet timestamps seen while priming; 30 fps if none says.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from fractions import Fraction

import attrs

from lpstream.media import VideoProfile, scaled_size
from workers.ladder.encoding import encoder_options

__all__ = ["RenditionPlan", "plan_rendition", "source_rate"]

_QUEUED_FRAMES = 4
"""Decoded frames waiting per rendition before the decoder waits for the encoder."""

_LIVE_QUEUED_FRAMES = 2
"""Decoded frames waiting for a staged (live AI) rendition."""

_MUX_OPTIONS = {
    # Keep the source timestamps: no 1.4 s PCR offset, no shifting to zero.
    "mpegts_copyts": "1",
    "avoid_negative_ts": "disabled",
    # A rendition waits at most 1 s for the audio before its video is written out.
    "max_interleave_delta": "1000000",
}

_LIVE_MUX_OPTIONS = {**_MUX_OPTIONS, "flush_packets": "1", "omit_video_pes_length": "0"}
"""A staged rendition's muxer hands each packet on at once instead of filling a buffer, and
writes each video PES's length, so a reader knows a frame is whole as soon as it is in."""

_FALLBACK_RATE = Fraction(30)
"""Frame rate assumed when neither the container nor the stream timing says."""


@attrs.frozen(kw_only=True)
class RenditionPlan:
    """How one rendition of the ladder is made."""

    index: int
    """Its output index (the profile's place in the ladder)."""
    profile: VideoProfile
    """The profile it follows."""
    width: int
    """Encoded width: the source fitted into the profile's box."""
    height: int
    """Encoded height."""
    rate: Fraction
    """Output frame rate."""
    step: Fraction | None
    """Output frame interval in source ticks when the frame rate is converted, else None."""
    tolerance: int
    """Half a source frame, in ticks: how early a frame may fill an output slot."""
    interval: Fraction
    """Output frame interval in source ticks, for the duration."""
    live: bool
    """A staged (live AI) rendition."""
    encoder_options: Mapping[str, str]
    """Options of its encoder."""
    mux_options: Mapping[str, str]
    """Options of its MPEG-TS muxer."""
    queued_frames: int
    """Decoded frames that may wait for its worker thread."""


def plan_rendition(
    index: int,
    profile: VideoProfile,
    *,
    source_size: tuple[int, int],
    source_rate: Fraction,
    tick: Fraction,
    encoder: str,
    live: bool,
) -> RenditionPlan:
    """Plans rendition ``index`` for a source of ``source_size`` at ``source_rate``, whose
    timestamps count in ``tick`` seconds; ``live`` for a staged rendition."""
    width, height = scaled_size(*source_size, profile)
    convert = not live and bool(profile.fps) and Fraction(profile.fps) != source_rate
    rate = Fraction(profile.fps) if convert else source_rate
    return RenditionPlan(
        index=index,
        profile=profile,
        width=width,
        height=height,
        rate=rate,
        step=1 / (rate * tick) if convert else None,
        tolerance=int(1 / (source_rate * tick) / 2),
        interval=1 / (rate * tick),
        live=live,
        encoder_options=encoder_options(encoder, profile, rate, live=live),
        mux_options=_LIVE_MUX_OPTIONS if live else _MUX_OPTIONS,
        queued_frames=_LIVE_QUEUED_FRAMES if live else _QUEUED_FRAMES,
    )


def source_rate(
    declared: Iterable[Fraction | None], packet_pts: Iterable[int], tick: Fraction
) -> Fraction:
    """The source frame rate: the first ``declared`` rate that is plausible (container, then
    codec timing), else the median distance between ``packet_pts``, else 30 fps."""
    for rate in declared:
        if rate and 1 <= rate <= 240:
            return Fraction(rate)
    pts = sorted(set(packet_pts))
    deltas = sorted(b - a for a, b in itertools.pairwise(pts))
    if deltas:
        estimate = 1 / (deltas[len(deltas) // 2] * tick)
        if 1 <= estimate <= 240:
            return estimate.limit_denominator(1001)
    return _FALLBACK_RATE
