"""What the segmenter hands out: segment events, part events and its statistics."""

from __future__ import annotations

import attrs

__all__ = [
    "PartCompleted",
    "SegmentCompleted",
    "SegmentData",
    "SegmentStarted",
    "SegmenterEvent",
    "SegmenterStatistics",
]


@attrs.frozen(kw_only=True)
class SegmentStarted:
    """A new segment opened; its bytes follow as ``SegmentData``."""

    seq: int
    """Sequence number, counting from 0 for the stream."""
    start_ms: int
    """Decode timestamp of its first packet (video, unless audio cut it), in milliseconds, on
    the output timeline (the input's, rebased after jumps)."""
    discontinuity: bool = False
    """It follows a timestamp jump (the timeline was rebased): list it after
    EXT-X-DISCONTINUITY."""
    segment_format: str = "mpegts"
    """Its container, FFmpeg's name: ``mpegts`` (H.264, HEVC), ``mp4`` (fragmented, for AV1
    and VP9) or ``matroska`` (VP8); only MPEG-TS is cut into LL-HLS parts here."""


@attrs.frozen(kw_only=True)
class SegmentData:
    """A piece of the open segment's bytes (MPEG-TS or fragmented MP4)."""

    seq: int
    """The segment these bytes belong to."""
    data: bytes
    """MPEG-TS bytes, a whole number of 188-byte packets except perhaps at the end."""


@attrs.frozen(kw_only=True)
class SegmentCompleted:
    """The segment is closed: all its bytes were delivered."""

    seq: int
    """The segment that ended."""
    start_ms: int
    """Decode timestamp of its first video packet."""
    duration_ms: int
    """Its length: up to the next segment's first packet, or to the end of the stream."""
    size: int
    """Total bytes."""
    has_audio: bool
    """Whether it carries an audio track."""
    forced: bool
    """True when it opened without a keyframe (after ``max_duration``, or a jump)."""
    discontinuity: bool = False
    """As in its ``SegmentStarted``."""


@attrs.frozen(kw_only=True)
class SegmenterStatistics:
    """What the segmenter dropped or repaired so far (each kind is logged once)."""

    late_packets: int
    """Packets dropped because their decode timestamp was not after their track's last."""
    refused_packets: int
    """Packets dropped because the muxer refused them (damaged data)."""
    jumps: int
    """Timestamp jumps rebased."""
    repaired_pts: int
    """Packets whose presentation timestamp was inconsistent and set to the decode one."""
    forced_cuts: int
    """Segments cut without a keyframe (no keyframe for ``max_duration``, a jump, or audio
    running on without video)."""
    ignored_configs: int
    """New codec configurations that could not be used (the previous one stayed)."""


@attrs.frozen(kw_only=True)
class PartCompleted:
    """A partial segment of the open segment is complete (only with a ``part_target``)."""

    seq: int
    """The segment it belongs to."""
    index: int
    """Its place in the segment, from 0."""
    start_ms: int
    """Decode timestamp of its first video packet."""
    duration_ms: int
    """Up to the next part's first video packet (or the segment's end)."""
    independent: bool
    """Its first frame is a keyframe: a player can start decoding here."""
    data: bytes
    """MPEG-TS bytes, PAT and PMT first: exactly the ``SegmentData`` since the last part."""


SegmenterEvent = SegmentStarted | SegmentData | PartCompleted | SegmentCompleted
