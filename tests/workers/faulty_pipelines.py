"""Pipelines that misbehave on request, for the isolation tests: they run in pipeline child
processes, so they live at a module's top level (a child imports them by name)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from workers.frames import YuvBatch
from workers.pipelines import FloatParam, IntParam, Params, PipelineContext, PipelineSpec
from workers.pipelines.noop import NoopPipeline

__all__ = ["FaultyPipeline"]


class FaultyPipeline(NoopPipeline):
    """Passes frames through; loads slowly, hangs or hoards memory when told to."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="faulty",
        description="Passes frames through; misbehaves when its parameters say so.",
        params=(
            FloatParam(name="load_seconds", default=0.0, minimum=0.0, maximum=30.0),
            FloatParam(name="frame_seconds", default=0.0, minimum=0.0, maximum=1.0),
            IntParam(name="hang_at", default=-1, minimum=-1, description="-1: never"),
            IntParam(name="hoard_at", default=-1, minimum=-1, description="-1: never"),
            IntParam(name="hoard_mib", default=0, minimum=0, maximum=4096),
        ),
    )

    def __init__(self) -> None:
        self._frames = 0
        self._hoard: list[Any] = []

    def prepare(self, context: PipelineContext, params: Params) -> None:
        time.sleep(params.get_float("load_seconds"))

    def process(self, frames: YuvBatch, params: Params) -> YuvBatch:
        seen, self._frames = self._frames, self._frames + frames.size
        hang_at, hoard_at = params.get_int("hang_at"), params.get_int("hoard_at")
        if 0 <= hang_at <= seen:
            time.sleep(3600)
        if 0 <= hoard_at <= seen and not self._hoard:
            self._hoard.append(np.ones(params.get_int("hoard_mib") * 2**20, dtype=np.uint8))
            time.sleep(1.0)  # long enough for the guardian to look
        time.sleep(params.get_float("frame_seconds"))
        return frames
