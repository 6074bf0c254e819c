"""``noop``: frames pass through unchanged; measures what the pipeline path itself costs."""

from __future__ import annotations

from typing import ClassVar

from workers.frames import YuvBatch
from workers.pipelines.base import PipelineSpec, YuvPipeline
from workers.pipelines.params import Params

__all__ = ["NoopPipeline"]


class NoopPipeline(YuvPipeline):
    """Returns its input: the output is the decoded frame, bit for bit, in a pooled frame."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="noop", description="Passes frames through unchanged (measures the path)."
    )

    def process(self, frames: YuvBatch, params: Params) -> YuvBatch:
        return frames
