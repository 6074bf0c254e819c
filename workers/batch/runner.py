"""One loaded batch model: in a child process under a guardian, or in this process.

How this works
--------------
:class:`IsolatedBatchRunner` keeps one copy of a model in a child process
(``workers.batch.child``), forked from the pipeline child server of
``workers.pipelines.supervision`` (the same ``forkserver`` context live pipelines use: one
server, torch imported once). The child starts at the first :meth:`load` or
:meth:`run_batch`; a batch goes down the pipe as one message and each request's outputs come
back as the child produces them, passed to that request's sink at once (an LLM's tokens reach
the caller while the next is generated).

While a call waits, the runner's :class:`SupervisedChild` (the live pipelines' own, used as
is) polls the pipe in short steps and applies their guardian (``workers.pipelines.guardian``):
the child dying, a batch running past ``frame_deadline`` (the per-call deadline, 600 s for a
batch by default), loading past ``load_deadline`` or memory past ``memory_limit`` stops the
child (SIGKILL); the requests of that call not yet done fail with a ``PipelineError`` saying
what happened and when the model comes back, and the next call starts a new child once the
back-off is over.

A caller's sink that raises (its client left) fails only its own request, with that
exception; the batch goes on. :class:`LocalBatchRunner` has the same shape and runs the model
on the caller's thread (``isolate=False``): no deadline or memory limit can be enforced there.
One call runs at a time on a runner (a lock orders them); :meth:`close` may come from another
thread and ends a call in flight.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from workers.batch.base import BatchOutput, BatchPipeline, BatchRequest, BatchSink, BatchUsage
from workers.batch.child import (
    BatchChildSetup,
    CheckedSink,
    as_pipeline_error,
    error_from,
    run_checked,
    serve_batch,
)
from workers.pipelines.guardian import ChildFailure, PipelineGuardian
from workers.pipelines.params import PipelineError
from workers.pipelines.supervision import ChildGone, SupervisedChild

__all__ = ["BatchOutcome", "BatchRunner", "IsolatedBatchRunner", "LocalBatchRunner"]

BatchOutcome = BatchUsage | Exception
"""What one request of a call came to: its usage, or why it failed (a ``PipelineError``,
or the exception its own sink raised)."""


class BatchRunner(Protocol):
    """One copy of a model, as the pool drives it."""

    @property
    def device(self) -> str: ...
    @property
    def loaded(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def failures(self) -> list[ChildFailure]: ...
    def load(self) -> None: ...
    def run_batch(
        self, requests: Sequence[BatchRequest], sinks: Sequence[BatchSink]
    ) -> list[BatchOutcome]: ...
    def close(self) -> None: ...


class _Delivery:
    """Passes outputs to a caller's sink; the first exception it raises is kept and what
    follows is dropped, so one caller leaving fails only its own request."""

    def __init__(self, sink: BatchSink) -> None:
        self._sink = sink
        self.error: Exception | None = None

    def start(self, outputs: Sequence[BatchOutput]) -> None:
        if self.error is None:
            try:
                self._sink.start(outputs)
            except Exception as exc:
                self.error = exc

    def data(self, track: int, payload: bytes) -> None:
        if self.error is None:
            try:
                self._sink.data(track, payload)
            except Exception as exc:
                self.error = exc

    def outcome(self, result: BatchOutcome) -> BatchOutcome:
        return self.error if self.error is not None else result


class LocalBatchRunner:
    """A model loaded in this process, run on the caller's thread."""

    def __init__(self, pipeline: type[BatchPipeline], path: str, *, device: str = "cpu") -> None:
        self._pipeline = pipeline()
        self._path = path
        self._device = device
        self._lock = threading.Lock()
        self._loaded = False
        self._closed = False
        self.failures: list[ChildFailure] = []
        """Always empty: there is no child to stop."""

    @property
    def device(self) -> str:
        return self._device

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def pid(self) -> int | None:
        return None

    def load(self) -> None:
        """Loads the model, if it is not loaded.

        Raises:
            PipelineError: it cannot be loaded.
        """
        with self._lock:
            self._ensure_loaded()

    def run_batch(
        self, requests: Sequence[BatchRequest], sinks: Sequence[BatchSink]
    ) -> list[BatchOutcome]:
        """Runs checked ``requests`` together, each one's outputs to its sink.

        Raises:
            PipelineError: the model cannot be loaded (no request ran).
        """
        with self._lock:
            self._ensure_loaded()
            deliveries = [_Delivery(sink) for sink in sinks]
            checked = [CheckedSink(delivery) for delivery in deliveries]
            results = run_checked(self._pipeline, requests, checked)
            return [d.outcome(r) for d, r in zip(deliveries, results, strict=True)]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._loaded:
                self._loaded = False
                with contextlib.suppress(Exception):
                    self._pipeline.unload()

    def _ensure_loaded(self) -> None:
        if self._closed:
            raise PipelineError("the model was unloaded")
        if not self._loaded:
            try:
                self._pipeline.load(self._path, self._device)
            except Exception as exc:
                raise as_pipeline_error(exc) from exc
            self._loaded = True


class IsolatedBatchRunner:
    """A model loaded in a child process (see the module comment)."""

    def __init__(
        self,
        pipeline: type[BatchPipeline],
        path: str,
        *,
        device: str = "cpu",
        guardian: PipelineGuardian | None = None,
        label: str | None = None,
    ) -> None:
        """``label`` names the model in messages (default: its capability)."""
        self._setup = BatchChildSetup(pipeline=pipeline, path=path, device=device)
        self._label = label or pipeline.spec.capability
        self._child = SupervisedChild(
            label=self._label,
            process_name=f"lpstream-batch-{pipeline.spec.capability}",
            call="finish its batch",
            load="load the model",
            guardian=guardian or PipelineGuardian(frame_deadline=600.0),
        )

    @property
    def guardian(self) -> PipelineGuardian:
        """The rules the child is watched by."""
        return self._child.guardian

    @property
    def failures(self) -> list[ChildFailure]:
        """Every stop of a child, oldest first (the newest 64)."""
        return self._child.failures

    @property
    def device(self) -> str:
        return self._setup.device

    @property
    def loaded(self) -> bool:
        return self._child.running

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def load(self) -> None:
        """Starts the child and loads the model, if it is not running.

        Raises:
            PipelineError: it cannot be loaded, the child failed, or it is backing off.
        """
        with self._child.lock:
            self._ensure_child()

    def run_batch(
        self, requests: Sequence[BatchRequest], sinks: Sequence[BatchSink]
    ) -> list[BatchOutcome]:
        """Runs checked ``requests`` together in the child, each one's outputs to its sink;
        a child that fails fails the requests not done yet.

        Raises:
            PipelineError: the model cannot be loaded now (no request ran).
        """
        child = self._child
        with child.lock:
            self._ensure_child()
            deliveries = [_Delivery(sink) for sink in sinks]
            results: list[BatchOutcome | None] = [None] * len(requests)
            try:
                child.send(("batch", list(requests)))
                deadline = child.guardian.deadline(time.monotonic())
                while True:
                    message = child.receive(deadline)
                    kind = message[0]
                    if kind == "batch-done":
                        break
                    if kind == "start":
                        deliveries[message[1]].start(message[2])
                    elif kind == "data":
                        deliveries[message[1]].data(message[2], message[3])
                    elif kind == "done":
                        results[message[1]] = BatchUsage(units=tuple(message[2]))
                    elif kind == "failed":
                        results[message[1]] = error_from(message[2], message[3])
            except ChildGone as gone:
                failure = self._failed(gone)
                results = [failure if r is None else r for r in results]
            outcomes: list[BatchOutcome] = []
            for delivery, result in zip(deliveries, results, strict=True):
                if result is None:
                    result = PipelineError(f"{self._label}: the child gave no result")
                outcomes.append(delivery.outcome(result))
            return outcomes

    def close(self) -> None:
        """Stops the child (once); a call in flight ends with its requests failed."""
        self._child.close(grace=5.0)

    # -- the child ------------------------------------------------------------------------

    def _ensure_child(self) -> None:
        child = self._child
        if child.closed:
            raise PipelineError(f"{self._label} was unloaded")
        if child.running:
            return
        now = time.monotonic()
        child.check_backoff()
        child.start(serve_batch, self._setup)
        try:
            child.send(("load",))
            answer = child.receive(child.guardian.deadline(now, loading=True), loading=True)
        except ChildGone as gone:
            raise self._failed(gone) from None
        if answer[0] != "loaded":
            child.end(grace=0.0)
            raise error_from(answer[1], f"{self._label} could not be loaded: {answer[2]}")
        child.guardian.started(time.monotonic())

    def _failed(self, gone: ChildGone) -> PipelineError:
        failure = self._child.fail(gone)
        if failure is None:  # stopped on purpose while the call waited
            return PipelineError(f"{self._label} was unloaded")
        return PipelineError(f"{self._label}: its process {failure.describe(time.monotonic())}")
