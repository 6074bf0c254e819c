"""The batch model child process: one loaded model, served over a pipe.

How this works
--------------
The worker starts :func:`serve_batch` in a process of its own (``forkserver``, from the
context ``workers.pipelines.supervision`` owns: a clean interpreter that imported torch once)
with a :class:`BatchChildSetup`. The child creates the pipeline and answers requests one at a
time, in order. Requests, outputs and answers are small enough to be pickled by the pipe
(inputs are bounded by ``spec.max_input``):

=============================  ===========================================================
request                        answers
=============================  ===========================================================
``("load",)``                  ``("loaded",)``, or ``("error", code, message)``
``("batch", [request, ...])``  per request ``i``: ``("start", i, outputs)``, then
                               ``("data", i, track, bytes)`` as produced, and at the end
                               ``("done", i, units)`` or ``("failed", i, code, message)``;
                               then ``("batch-done",)``
``("stop",)``                  none: the child unloads the model and exits
=============================  ===========================================================

``code`` is the status a failure answers with: 400 or 413 for a request that cannot run
(:class:`BadRequestError`), 500 for the model's own failure. A closed pipe (the worker died)
ends the child. :class:`CheckedSink` holds a pipeline to the sink rules (``start`` once,
first; tracks in range; one unit count per output), here and in the in-process runner.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import attrs

from workers.batch.base import (
    BadRequestError,
    BatchOutput,
    BatchPipeline,
    BatchRequest,
    BatchSink,
    BatchUsage,
    RequestTooLargeError,
)
from workers.pipelines.params import InvalidParamsError, PipelineError

__all__ = [
    "BatchChildSetup",
    "CheckedSink",
    "as_pipeline_error",
    "error_code",
    "error_from",
    "run_checked",
    "serve_batch",
]

log = logging.getLogger("lpstream.worker.batch")


@attrs.frozen(kw_only=True)
class BatchChildSetup:
    """What a batch child is started with (the class travels by its import path)."""

    pipeline: type[BatchPipeline]
    """The pipeline class; defined at a module's top level."""
    path: str
    """The model's local directory."""
    device: str = "cpu"
    """torch device."""


def error_code(exc: BaseException) -> int:
    """The status ``exc`` answers with: 400/413 for a request that cannot run, else 500."""
    if isinstance(exc, BadRequestError):
        return int(exc.code)
    if isinstance(exc, InvalidParamsError):
        return 400
    return 500


def error_from(code: int, message: str) -> PipelineError:
    """The exception a failure reported as ``(code, message)`` stands for."""
    if code == RequestTooLargeError.code:
        return RequestTooLargeError(message)
    if 400 <= code < 500:
        return BadRequestError(message)
    return PipelineError(message)


def as_pipeline_error(exc: Exception) -> PipelineError:
    """``exc`` as a :class:`PipelineError` (a pipeline's own bug is logged and named)."""
    if isinstance(exc, PipelineError):
        return exc
    log.error("batch pipeline failed", exc_info=exc)
    return PipelineError(f"{type(exc).__name__}: {exc}")


class CheckedSink:
    """A sink that holds the pipeline to the sink rules before passing outputs on."""

    def __init__(self, target: BatchSink) -> None:
        self._target = target
        self._outputs: tuple[BatchOutput, ...] | None = None

    def start(self, outputs: Sequence[BatchOutput]) -> None:
        if self._outputs is not None:
            raise PipelineError("the pipeline named its outputs twice")
        named = tuple(outputs)
        if not all(isinstance(output, BatchOutput) for output in named):
            raise PipelineError("the pipeline named outputs that are not BatchOutput values")
        self._outputs = named
        self._target.start(named)

    def data(self, track: int, payload: bytes) -> None:
        if self._outputs is None:
            raise PipelineError("the pipeline sent output before naming its outputs")
        if not 0 <= track < len(self._outputs):
            raise PipelineError(
                f"the pipeline sent output on track {track} of {len(self._outputs)}"
            )
        self._target.data(track, bytes(payload))

    def finish(self, result: BatchUsage | Exception) -> BatchUsage | PipelineError:
        """The request's outcome: its usage if it fits the outputs named, else the failure."""
        if isinstance(result, Exception):
            return as_pipeline_error(result)
        if not isinstance(result, BatchUsage):
            return PipelineError(f"the pipeline returned {type(result).__name__}, not usage")
        if self._outputs is None:
            return PipelineError("the pipeline finished a request without naming its outputs")
        units = result.units
        if len(units) != len(self._outputs) or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in units
        ):
            return PipelineError(f"the pipeline billed {units!r} for {len(self._outputs)} outputs")
        return result


def run_checked(
    pipeline: BatchPipeline, requests: Sequence[BatchRequest], sinks: Sequence[CheckedSink]
) -> list[BatchUsage | PipelineError]:
    """``pipeline.run_batch``, each outcome checked; an exception fails every request."""
    try:
        results: list[Any] = list(pipeline.run_batch(requests, sinks))
        if len(results) != len(requests):
            raise PipelineError(f"the pipeline gave {len(results)} results for {len(requests)}")
    except Exception as exc:  # one failure for the whole call
        failure = as_pipeline_error(exc)
        return [failure] * len(requests)
    return [sink.finish(result) for sink, result in zip(sinks, results, strict=True)]


class _PipeTarget:
    def __init__(self, connection: Connection, index: int) -> None:
        self._connection = connection
        self._index = index

    def start(self, outputs: Sequence[BatchOutput]) -> None:
        self._connection.send(("start", self._index, tuple(outputs)))

    def data(self, track: int, payload: bytes) -> None:
        self._connection.send(("data", self._index, track, payload))


def serve_batch(connection: Connection, setup: BatchChildSetup) -> None:
    """The child's main: answers requests until ``stop`` or a closed pipe."""
    pipeline = setup.pipeline()
    loaded = False
    try:
        while True:
            request = connection.recv()
            if request[0] == "stop":
                return
            if request[0] == "load":
                try:
                    if not loaded:
                        pipeline.load(setup.path, setup.device)
                        loaded = True
                    connection.send(("loaded",))
                except Exception as exc:  # told to the worker; the child lives
                    failure = as_pipeline_error(exc)
                    connection.send(("error", error_code(failure), str(failure)))
                continue
            requests: list[BatchRequest] = request[1]
            sinks = [CheckedSink(_PipeTarget(connection, i)) for i in range(len(requests))]
            for i, outcome in enumerate(run_checked(pipeline, requests, sinks)):
                if isinstance(outcome, BatchUsage):
                    connection.send(("done", i, outcome.units))
                else:
                    connection.send(("failed", i, error_code(outcome), str(outcome)))
            connection.send(("batch-done",))
    except (EOFError, OSError):
        return  # the worker is gone
    finally:
        if loaded:
            with contextlib.suppress(Exception):
                pipeline.unload()
