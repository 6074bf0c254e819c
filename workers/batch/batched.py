"""The base of batch pipelines whose work is done a batch at a time.

A pipeline that runs concurrent requests together (pictures in one diffusers call, audio
windows in one ``generate`` call) implements ``run_batch``; ``run`` is then a batch of one,
so a request gives the same outputs alone as in a batch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from workers.batch.base import BatchPipeline, BatchRequest, BatchSink, BatchUsage
from workers.pipelines.params import PipelineError

__all__ = ["BatchedPipeline"]


class BatchedPipeline(BatchPipeline):
    """A batch pipeline that implements ``run_batch``; ``run`` runs a batch of one."""

    def run(self, request: BatchRequest, sink: BatchSink) -> BatchUsage:
        (result,) = self.run_batch([request], [sink])
        if isinstance(result, PipelineError):
            raise result
        return result

    @abc.abstractmethod
    def run_batch(
        self, requests: Sequence[BatchRequest], sinks: Sequence[BatchSink]
    ) -> list[BatchUsage | PipelineError]:
        """Runs requests with one ``batch_key`` together: per request, its usage or the error
        it failed with (one request's bad input fails that request only)."""
