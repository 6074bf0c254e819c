"""What a session costs the workers, in pixels per second, and what a worker can take.

How this works
--------------
Capacity is counted in work, not in sessions: four 160x90 streams cost little, a 1080p
ladder costs a lot, and the same budget holds both.

* A transcoding session's work is the pixels per second its ladder makes: the sum over its
  profiles of the size the worker really encodes (the profile's box fitted to the source,
  never upscaled: ``lpstream.media.scaled_size``) times the frame rate (the profile's, or
  the source's where the profile keeps it). A live AI session's work is its output size
  times the frame rate times the pipeline's cost factor (``PipelineSpec.cost``: work per
  output pixel against encoding one; a pipeline no registry here knows counts 1).
* Before a session's first job only the JOB and the first bytes of its upload are known:
  the picture size is read from the first H.264 or HEVC SPS in them (``upload_picture``; the
  profile's box if none is found) and the source rate is assumed to be ``ASSUMED_FPS``. When
  a job is done the session costs what its outputs measured (``measured_work``: pixels over
  duration, frames a live pipeline dropped included), so a 60 fps source counts double from
  its second segment on.
* A worker's capacity is its ``--capacity`` in sessions' worth: ``capacity * SESSION_WORK``.
  One session's worth is the default ladder (360p + 240p, go-livepeer's P360p30fps16x9 and
  P240p30fps16x9) made from a 30 fps source of 640x360 or more: 9,979,200 pixels per second.
  So ``--capacity 4`` takes four such streams, as it did when sessions were counted, or
  thirteen 720p sources with a 240p-only ladder, or forty-six 160x90 streams with the default
  ladder; a ladder with a 720p30 rendition (27.6 Mpx/s) takes 2.8 sessions' worth.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import cast

import attrs

from lpstream.media import VideoProfile, scaled_size
from lpstream.media.mpegts import joined_payloads
from lpstream.media.video import video_info_from_annexb
from lpstream.trickle import SegmentBuffer
from lpstream.wire import Job, RenditionInfo
from workers.pipelines import PipelineError, PipelineRegistry

__all__ = [
    "ASSUMED_FPS",
    "SESSION_WORK",
    "SessionCost",
    "capacity_work",
    "ladder_work",
    "measured_work",
    "pipeline_cost",
    "upload_picture",
    "work_text",
]

ASSUMED_FPS = 30.0
"""Frames per second assumed of a source until a job has measured it."""
SESSION_WORK = (640 * 360 + 426 * 240) * 30
"""One session's worth of work, in pixels per second: the default ladder from a 30 fps source
of 640x360 or more (the unit ``--capacity`` counts in)."""
PICTURE_PROBE = 64 * 1024
"""Upload bytes read at most, looking for the picture size, before a new session is placed."""


def capacity_work(sessions: int) -> int:
    """The pixels per second ``sessions`` sessions' worth of capacity takes."""
    return max(0, sessions) * SESSION_WORK


def work_text(work: float) -> str:
    """``work`` pixels per second for people: ``9.98 Mpx/s``."""
    return f"{work / 1e6:.3g} Mpx/s"


def ladder_work(
    profiles: Iterable[VideoProfile], picture: tuple[int, int], fps: float = ASSUMED_FPS
) -> int:
    """Pixels per second of ``profiles`` made from a ``picture`` source at ``fps``; an unknown
    picture, ``(0, 0)``, counts each profile's whole box."""
    total = 0.0
    for profile in profiles:
        width, height = scaled_size(picture[0], picture[1], profile)
        total += width * height * (profile.fps or fps)
    return math.ceil(total)


@functools.cache
def _pipelines() -> PipelineRegistry:
    return PipelineRegistry()


def pipeline_cost(name: str) -> float:
    """The cost factor a pipeline declares (``PipelineSpec.cost``); 1 for one no registry
    here knows."""
    try:
        return float(_pipelines().get(name).spec.cost)
    except PipelineError:
        return 1.0


@attrs.frozen(kw_only=True)
class SessionCost:
    """What a session's jobs cost its worker."""

    work: int
    """Pixels per second, the cost factor applied."""
    factor: float = 1.0
    """Work per output pixel (a live AI pipeline's cost; 1 for transcoding)."""

    @classmethod
    def of_job(cls, job: Job, picture: tuple[int, int]) -> SessionCost:
        """The estimate for a new session whose first job is ``job``, its source ``picture``
        (``(0, 0)``: unknown) at ``ASSUMED_FPS``."""
        factor = pipeline_cost(job.pipeline) if job.pipeline else 1.0
        work = ladder_work(job.video_profiles(), picture)
        return cls(work=math.ceil(work * factor), factor=factor)

    def measured(self, outputs: Sequence[RenditionInfo]) -> SessionCost:
        """This cost corrected by what a job's ``outputs`` measured (unchanged when they
        measured nothing)."""
        rate = measured_work(outputs)
        if rate is None:
            return self
        return attrs.evolve(self, work=math.ceil(rate * self.factor))


def measured_work(outputs: Sequence[RenditionInfo]) -> float | None:
    """Pixels per second a job's outputs took: each rendition's pixels (with the frames a live
    pipeline dropped, at the same size) over its duration; None if nothing was measured."""
    total = 0.0
    for info in outputs:
        if info.frames <= 0 or info.duration_ms <= 0:
            continue
        per_frame = info.pixels / info.frames
        total += per_frame * (info.frames + info.dropped) / (info.duration_ms / 1000)
    return total or None


async def upload_picture(source: SegmentBuffer, limit: int = PICTURE_PROBE) -> tuple[int, int]:
    """The picture size of the MPEG-TS segment arriving in ``source``, from its first H.264 or
    HEVC SPS:
    waits for bytes until one is found, ``limit`` bytes came or the upload ended; ``(0, 0)``
    when none was found.

    Raises:
        MediaError: the upload failed first.
    """
    data = b""
    chunks = cast(AsyncGenerator[bytes, None], source.chunks())
    try:
        async for chunk in chunks:
            data += chunk
            info = video_info_from_annexb(joined_payloads(data, limit))
            if info is not None:
                return info.width, info.height
            if len(data) >= limit:
                break
    finally:
        await chunks.aclose()
    return 0, 0
