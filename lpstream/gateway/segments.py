"""A segment on its way through the gateway: cut from the source, sent out as a job, back as
renditions; and the seam (``SegmentTranscoder``) that turns the one into the other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs

from lpstream.jobs import Relay
from lpstream.media import VideoProfile
from lpstream.trickle import SegmentBuffer

__all__ = ["RenditionSegment", "SegmentJob", "SegmentTranscoder", "SourceSegment"]


@attrs.define(eq=False)
class SourceSegment:
    """A source segment as the segmenter cuts it: its bytes as they come (sent on while still
    being written), the source's facts when it started, its duration once it ends."""

    seq: int
    """Sequence number in the stream's playlists."""
    buffer: SegmentBuffer
    """Its bytes; closed when the segment is complete, failed when it never will be."""
    source_size: tuple[int, int] = (0, 0)
    """Width and height of the source picture ((0, 0) while unknown)."""
    fps: float = 30.0
    """Source frame rate (from the publisher's metadata, 30 if it gives none)."""
    duration: float | None = None
    """Seconds, once the segmenter completed it."""


@attrs.frozen(kw_only=True)
class SegmentJob:
    """What the gateway asks an orchestrator to do with one segment."""

    stream: str
    """Stream name."""
    session: str
    """Identifies this publish session (a restart is a new session)."""
    seq: int
    """Segment sequence number in the stream's playlists."""
    duration_ms: int
    """Expected duration (the target; the real one is known when the segment ends)."""
    profiles: tuple[VideoProfile, ...]
    """The renditions to make."""
    source_width: int = 0
    """Width of the source picture (0 if unknown); with the height it sizes the fee."""
    source_height: int = 0
    """Height of the source picture (0 if unknown)."""
    fps: float = 30.0
    """Source frame rate (from the publisher's metadata, 30 if it gives none)."""
    pipeline: str = ""
    """Live AI pipeline to run instead of transcoding (``profiles`` is then its output)."""
    params: Mapping[str, str | int | float | bool] = attrs.field(factory=dict)
    """The pipeline's parameters when the session starts on a worker."""

    @classmethod
    def from_segment(
        cls,
        segment: SourceSegment,
        *,
        stream: str,
        session: str,
        target: float,
        profiles: tuple[VideoProfile, ...],
        pipeline: str = "",
        params: Mapping[str, str | int | float | bool] | None = None,
    ) -> SegmentJob:
        """The job for ``segment`` of ``stream`` (its duration the ``target``, in seconds)."""
        return cls(
            stream=stream,
            session=session,
            seq=segment.seq,
            duration_ms=int(target * 1000),
            profiles=profiles,
            source_width=segment.source_size[0],
            source_height=segment.source_size[1],
            fps=segment.fps,
            pipeline=pipeline,
            params=dict(params or {}),
        )


@attrs.frozen(kw_only=True)
class RenditionSegment:
    """One rendition of a segment, as returned by an orchestrator."""

    name: str
    """Profile name."""
    width: int
    """Picture width the worker produced."""
    height: int
    """Picture height."""
    pixels: int
    """Pixels encoded (frames x width x height)."""
    data: bytes
    """MPEG-TS bytes."""
    frames: int = 0
    """Frames encoded."""
    dropped: int = 0
    """Input frames a live pipeline left out (behind real time)."""


class SegmentTranscoder(Protocol):
    """Turns a segment (being written into ``source``) into renditions, or raises; with a
    ``relay``, a pipeline job's output is also handed to it as it arrives."""

    async def transcode(
        self, job: SegmentJob, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[RenditionSegment]: ...
