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
* The profile's codec picks the encoder (``workers.gpu.encoder_for``) and the container: an
  H.264 rendition is MPEG-TS; an HEVC or AV1 one is fragmented MP4 (CMAF: ``ftyp`` and an
  empty ``moov``, then a ``moof`` + ``mdat`` every 100 ms), which HLS serves with
  ``EXT-X-MAP``. Both keep the source's timestamps on a 90 kHz video clock. In the MP4 each
  fragment's ``tfdt`` is its first packet's decode time and presentation times follow from
  positive composition offsets, with no edit list (``use_editlist=0``): FFmpeg's default
  there starts the track at the first packet's presentation time, which moves every frame of
  an encoder with B-frames (x265) later by its reorder delay.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from fractions import Fraction

import attrs

from lpstream.media import VideoProfile, scaled_size
from workers.gpu import encoder_for
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

_MP4_MUX_OPTIONS = {
    # CMAF: init section first, then a fragment every 100 ms. Not frag_every_frame: FFmpeg
    # then writes AAC fragments whose samples decoders lose (ingest/segmenter/fmp4_mux.py).
    "movflags": "empty_moov+default_base_moof+frag_discont",
    "frag_duration": "100000",
    # Keep the source timestamps (see the module comment).
    "avoid_negative_ts": "disabled",
    "use_editlist": "0",
    "video_track_timescale": "90000",
    "max_interleave_delta": "1000000",
}

_LIVE_MP4_MUX_OPTIONS = {**_MP4_MUX_OPTIONS, "flush_packets": "1"}
"""A staged MP4 rendition hands each fragment on as soon as it is written."""

_CONTAINERS = {"h264": "mpegts", "hevc": "mp4", "av1": "mp4"}
"""FFmpeg's muxer for a rendition of each output codec."""

_CODEC_TAGS = {"hevc": "hvc1"}
"""MP4 sample entry where FFmpeg's default is not the one players need: HEVC as ``hvc1``
(parameter sets in the sample entry only), which Apple's players require, not ``hev1``."""

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
    encoder: str
    """The FFmpeg encoder that makes it (``libx264``, ``libx265``, ``libsvtav1``, or the
    NVENC one of its codec)."""
    encoder_options: Mapping[str, str]
    """Options of its encoder."""
    container: str
    """FFmpeg's name of its container: ``mpegts`` (H.264) or ``mp4`` (fragmented; HEVC,
    AV1)."""
    mux_options: Mapping[str, str]
    """Options of its muxer."""
    codec_tag: str
    """The MP4 sample entry to write (``hvc1`` for HEVC), or empty for FFmpeg's."""
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
    timestamps count in ``tick`` seconds, in a ladder running on ``encoder`` (what
    ``workers.gpu.choose_encoder`` picked: ``libx264`` or ``h264_nvenc``); ``live`` for a
    staged rendition.

    Raises:
        MediaError: the profile's codec is not an output codec.
    """
    width, height = scaled_size(*source_size, profile)
    codec_encoder = encoder_for(profile.codec, encoder)
    container = _CONTAINERS[profile.codec]
    if container == "mp4":
        mux_options = _LIVE_MP4_MUX_OPTIONS if live else _MP4_MUX_OPTIONS
    else:
        mux_options = _LIVE_MUX_OPTIONS if live else _MUX_OPTIONS
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
        encoder=codec_encoder,
        encoder_options=encoder_options(codec_encoder, profile, rate, live=live),
        container=container,
        mux_options=mux_options,
        codec_tag=_CODEC_TAGS.get(profile.codec, "") if container == "mp4" else "",
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
