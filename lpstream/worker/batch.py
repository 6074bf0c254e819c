"""Batch AI jobs on a worker: a JOB naming a capability and a model, run on the worker's
loaded models (``workers.batch.BatchModels``), its outputs streamed back as they come.

How this works: the job's upload is the request's input (a picture, an audio file, chat
messages as JSON), read whole first (the orchestrator's upload budget bounds it). The request
then runs on a worker thread in ``BatchModels.run``, which blocks while the model loads, while
the request waits for its turn or for others to batch with, and while it runs (in a pipeline
child process). The pipeline hands each piece of output to a sink on that thread; the sink
announces the outputs to the requester (RESULT) and queues each piece on a ``RelayPump``,
which sends them in order from the trio side, so an LLM's tokens leave as they are generated.
The pieces are also kept, so the answer's SUMMARY can be signed over the whole outputs.

Errors: a request the pipeline refuses (bad input, a prompt past the context, an unknown
model) is the requester's (400/413: nothing is billed, no other worker is tried); a model that
cannot load or a child that crashed or hung is this worker's (503: the orchestrator may try
another worker while no output has left).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import cast

import attrs
import trio

from lpstream.errors import RemoteProtocolError
from lpstream.jobs import JobError, JobOutput, Relay
from lpstream.taskgroups import one_error
from lpstream.trickle import SegmentBuffer
from lpstream.wire import AiModelOffer, Job, Rendition, RenditionInfo
from lpstream.worker.bridge import RelayPump
from workers.batch import BadRequestError, BatchModels, BatchOutput, BatchRequest
from workers.pipelines import PipelineError

__all__ = ["BatchJobs", "read_input"]

log = logging.getLogger("lpstream.worker")

MAX_BATCH_THREADS = 32
"""Batch requests in flight on one worker (each holds a thread, mostly waiting its turn in
``BatchModels``); more wait here."""


async def read_input(source: SegmentBuffer, limit: int) -> bytes:
    """The whole upload of a job, at most ``limit`` bytes.

    Raises:
        RemoteProtocolError: (413) past ``limit``.
    """
    data = bytearray()
    chunks = cast(AsyncGenerator[bytes, None], source.chunks())
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            data += chunk
            if len(data) > limit:
                raise RemoteProtocolError(f"the input is over {limit} bytes", code=413)
    return bytes(data)


class _JobSink:
    """A request's outputs, on the pipeline's thread: kept, and relayed as they come. The
    pool holds pipelines to the sink rules (``start`` once and first, tracks in range, one
    count of units per output: ``workers.batch.child.CheckedSink``)."""

    def __init__(self, relay: Relay | None, token: trio.lowlevel.TrioToken) -> None:
        self._relay = relay
        self._token = token
        self.pump = None if relay is None else RelayPump(relay, token)
        self.outputs: list[BatchOutput] = []
        self.tracks: list[bytearray] = []

    def start(self, outputs: Sequence[BatchOutput]) -> None:
        self.outputs = list(outputs)
        self.tracks = [bytearray() for _ in outputs]
        if self._relay is not None:
            renditions = [Rendition(name=o.name, width=o.width, height=o.height) for o in outputs]
            trio.from_thread.run(self._relay.start, renditions, trio_token=self._token)

    def data(self, track: int, payload: bytes) -> None:
        self.tracks[track] += payload
        if self.pump is not None:  # waits while the requester is far behind: backpressure
            self.pump.data(track, payload)


@attrs.define
class BatchJobs:
    """The batch AI side of a worker (see the module comment)."""

    models: BatchModels
    max_input: int = 64 * 1024 * 1024
    """Largest input in bytes (each pipeline has its own, smaller, limit too)."""
    _limiter: trio.CapacityLimiter = attrs.field(
        init=False, factory=lambda: trio.CapacityLimiter(MAX_BATCH_THREADS)
    )

    def offers(self) -> tuple[AiModelOffer, ...]:
        """The models this worker runs (prices are the orchestrator's)."""
        return tuple(
            AiModelOffer(
                capability=m.pipeline, model_id=m.model_id, warm=m.warm, capacity=m.capacity
            )
            for m in self.models.offered()
        )

    async def run(self, job: Job, source: SegmentBuffer, relay: Relay | None) -> list[JobOutput]:
        """Runs the batch request ``job`` carries; its outputs go to ``relay`` as produced.

        Raises:
            RemoteProtocolError: 400/413 the request was refused (see the module comment).
            JobError: 503 the model failed here.
        """
        data = await read_input(source, self.max_input)
        request = BatchRequest(params=dict(job.params), input=data)
        sink = _JobSink(relay, trio.lowlevel.current_trio_token())

        def work() -> tuple[int, ...]:
            # Models idle past their timeout are unloaded as new work comes, on this thread
            # (closing a child may take a moment).
            self.models.expire(time.monotonic())
            usage = self.models.run(job.capability, job.model_id, request, sink)
            return usage.units

        try:
            with one_error():
                async with trio.open_nursery() as nursery:
                    if sink.pump is not None:
                        nursery.start_soon(sink.pump.run)
                    units = await trio.to_thread.run_sync(work, limiter=self._limiter)
                    if sink.pump is not None:
                        await sink.pump.drain()
                    nursery.cancel_scope.cancel()
        except BadRequestError as exc:
            raise RemoteProtocolError(str(exc), code=exc.code) from None
        except PipelineError as exc:
            log.warning("batch job %s/%s failed: %s", job.capability, job.model_id, exc)
            raise JobError(f"{job.capability} {job.model_id}: {exc}", code=503) from None
        return [
            JobOutput(
                info=RenditionInfo(
                    name=output.name,
                    width=output.width,
                    height=output.height,
                    pixels=count,
                    frames=1 if output.width else 0,
                    size=len(track),
                    duration_ms=0,
                ),
                data=bytes(track),
            )
            for output, track, count in zip(sink.outputs, sink.tracks, units, strict=True)
        ]
