"""The batch models of one worker: loaded on first use or at start, shared by its jobs.

How this works
--------------
:class:`BatchModels` holds one entry per offered model (an ``AiModel`` with a ``path``).
Jobs call :meth:`BatchModels.run` from worker threads, many at once; it blocks until that
request is done. There is no thread of its own: the callers do the work.

* A request is checked first (``cls.checked``: a 400/413 before anything waits), then queued
  on its model with its ``batch_key`` (None: it runs alone).
* A model has ``capacity`` slots: at most that many ``run_batch`` calls at once, each on its
  own copy of the model (a runner: a child process, or this process with ``isolate=False``).
  A waiting caller that finds a free slot takes the oldest queued request and becomes its
  batch's dispatcher: it waits up to ``batch_window`` after that request arrived for more with
  an equal key (while it gathers, no other dispatcher takes that key), takes up to
  ``spec.max_batch`` of them in arrival order, runs them in one call and hands each its
  outcome. The others wait for theirs; queued requests past the slots wait for one to free,
  and then go out together, so batches grow with load.
* A slot without an idle copy starts one: its device comes from ``place()`` (the worker's
  count of live sessions and loaded models per GPU) or ``device``, and the model loads in
  the dispatcher's call (the requests wait for it). ``warm`` models load one copy in
  :meth:`BatchModels.load_warm` and are never unloaded for idleness; the others are unloaded
  by :meth:`BatchModels.expire` once idle past ``idle_timeout``.
* Each copy in a child runs under its own guardian (deadlines, memory, back-off;
  ``workers.batch.runner``): a crash or a hang fails that call's requests, not the worker.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import attrs

from workers.batch.base import (
    BadRequestError,
    BatchPipeline,
    BatchRequest,
    BatchSink,
    BatchUsage,
)
from workers.batch.catalog import AiModel
from workers.batch.child import as_pipeline_error
from workers.batch.registry import BatchRegistry
from workers.batch.runner import BatchOutcome, BatchRunner, IsolatedBatchRunner, LocalBatchRunner
from workers.pipelines.guardian import PipelineGuardian
from workers.pipelines.params import InvalidParamsError, PipelineError

__all__ = ["BatchModels", "UnknownModelError"]

log = logging.getLogger("lpstream.worker.batch")


class UnknownModelError(BadRequestError, LookupError):
    """This worker has no such (capability, model) (answered 400)."""


@attrs.define(eq=False)
class _Pending:
    key: Hashable
    alone: bool
    request: BatchRequest
    sink: BatchSink
    arrived: float
    outcome: BatchOutcome | None = None


class _Model:
    """One offered model: its queue, slots and copies; guarded by ``cond``."""

    def __init__(self, model: AiModel, cls: type[BatchPipeline]) -> None:
        self.model = model
        self.cls = cls
        self.label = f"{model.pipeline} model {model.model_id!r}"
        self.cond = threading.Condition()
        self.queue: list[_Pending] = []
        self.gathering: set[Hashable] = set()
        self.active = 0
        """Slots in use: calls gathering or running."""
        self.copies: list[BatchRunner] = []
        self.idle: list[BatchRunner] = []
        self.last_used = time.monotonic()
        self.problem: str | None = None
        self.requests = self.batches = self.largest = self.failures = self.refused = 0
        self.seconds = 0.0
        try:
            self.keys: BatchPipeline | None = cls()  # computes batch keys; loads nothing
        except Exception:
            log.exception("%s: batch keys unavailable, requests run alone", self.label)
            self.keys = None

    def key_of(self, request: BatchRequest) -> Hashable | None:
        return None if self.keys is None else self.keys.batch_key(request)


class BatchModels:
    """The loaded batch models of one worker (see the module comment)."""

    def __init__(
        self,
        models: Sequence[AiModel],
        registry: BatchRegistry | None = None,
        *,
        isolate: bool = True,
        device: str = "cpu",
        place: Callable[[], str] | None = None,
        memory_limit: int | None = None,
        request_deadline: float = 600.0,
        load_deadline: float = 300.0,
        batch_window: float = 0.02,
        idle_timeout: float = 300.0,
    ) -> None:
        """Finds each offered model's pipeline; loads nothing.

        Raises:
            UnknownCapabilityError: a model's capability is not known here.
            PipelineError: its pipeline cannot be imported; a model listed twice.
        """
        registry = registry or BatchRegistry()
        self._isolate = isolate
        self._device = device
        self._place = place
        self._memory_limit = memory_limit
        self._request_deadline = request_deadline
        self._load_deadline = load_deadline
        self._batch_window = batch_window
        self._idle_timeout = idle_timeout
        self._closed = False
        self._models: dict[tuple[str, str], _Model] = {}
        for model in models:
            if model.path is None:
                continue
            if model.key in self._models:
                raise PipelineError(f"{model.pipeline} model {model.model_id!r} is listed twice")
            self._models[model.key] = _Model(model, registry.get(model.pipeline))

    def offered(self) -> tuple[AiModel, ...]:
        """The models this worker can run (those with a path)."""
        return tuple(entry.model for entry in self._models.values())

    def load_warm(self) -> None:
        """Loads one copy of every ``warm`` model; blocking. A model that fails is logged and
        its problem kept (:meth:`statistics`); the others still load."""
        for entry in self._models.values():
            if not entry.model.warm:
                continue
            with entry.cond:
                if self._closed or entry.copies or entry.active:
                    continue
                entry.active += 1
            runner = None
            try:
                runner = self._copy_for(entry)
                runner.load()
                with entry.cond:
                    entry.problem = None
                log.info("%s loaded on %s", entry.label, runner.device)
            except Exception as exc:  # kept and logged: the other models still load
                failure = as_pipeline_error(exc)
                with entry.cond:
                    entry.problem = str(failure)
                log.error("%s: %s", entry.label, failure)
            finally:
                self._release(entry, runner)

    def run(
        self, capability: str, model_id: str, request: BatchRequest, sink: BatchSink
    ) -> BatchUsage:
        """Runs ``request`` on the model, its outputs to ``sink``; blocking, thread-safe.

        Raises:
            UnknownModelError: this worker has no such model.
            BadRequestError, RequestTooLargeError, InvalidParamsError: the request cannot run.
            PipelineError: the model failed (loading, a crash, a hang).
            Exception: what ``sink`` raised.
        """
        entry = self._models.get((capability, model_id))
        if entry is None:
            have = ", ".join(f"{c} {m!r}" for c, m in self._models) or "none"
            raise UnknownModelError(
                f"this worker has no {capability} model {model_id!r} (it has: {have})"
            )
        try:
            checked = entry.cls.checked(request)
            key = entry.key_of(checked)
        except (BadRequestError, InvalidParamsError):
            with entry.cond:
                entry.refused += 1
            raise
        pending = _Pending(
            key=object() if key is None else key,
            alone=key is None,
            request=checked,
            sink=sink,
            arrived=time.monotonic(),
        )
        with entry.cond:
            if self._closed:
                raise PipelineError("the batch models were closed")
            entry.requests += 1
            entry.queue.append(pending)
            entry.cond.notify_all()
        while True:
            batch = self._next_batch(entry, pending)
            if batch is None:
                break
            self._dispatch(entry, batch)
        outcome = pending.outcome
        if isinstance(outcome, BatchUsage):
            return outcome
        assert outcome is not None
        raise _own(outcome)

    def devices(self) -> dict[str, int]:
        """Copies of models loaded (or loading) per device: for the worker's placement."""
        counts: dict[str, int] = {}
        for entry in self._models.values():
            with entry.cond:
                for runner in entry.copies:
                    counts[runner.device] = counts.get(runner.device, 0) + 1
        return counts

    def statistics(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per capability, per model: ``loaded``, ``device`` (of its first copy), ``devices``,
        ``warm``, ``capacity``, ``requests``, ``batches``, ``largest_batch``, ``failures``
        (requests the model failed), ``refused`` (bad requests), ``restarts`` (children
        stopped), ``seconds`` (in ``run_batch``), ``queued``, ``running``, ``problem``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (capability, model_id), entry in self._models.items():
            with entry.cond:
                devices = [runner.device for runner in entry.copies if runner.loaded]
                out.setdefault(capability, {})[model_id] = {
                    "loaded": bool(devices),
                    "device": devices[0] if devices else None,
                    "devices": devices,
                    "warm": entry.model.warm,
                    "capacity": entry.model.capacity,
                    "requests": entry.requests,
                    "batches": entry.batches,
                    "largest_batch": entry.largest,
                    "failures": entry.failures,
                    "refused": entry.refused,
                    "restarts": sum(len(runner.failures) for runner in entry.copies),
                    "seconds": round(entry.seconds, 6),
                    "queued": len(entry.queue),
                    "running": entry.active,
                    "problem": entry.problem,
                }
        return out

    def expire(self, now: float) -> tuple[AiModel, ...]:
        """Unloads models that are not warm and were idle past ``idle_timeout`` at ``now``
        (``time.monotonic()``); returns them."""
        expired: list[tuple[_Model, list[BatchRunner]]] = []
        for entry in self._models.values():
            with entry.cond:
                if entry.model.warm or entry.active or entry.queue or not entry.copies:
                    continue
                if now - entry.last_used < self._idle_timeout:
                    continue
                expired.append((entry, entry.copies))
                entry.copies, entry.idle = [], []
        for entry, copies in expired:
            for runner in copies:
                runner.close()
            log.info("%s unloaded after %g s idle", entry.label, self._idle_timeout)
        return tuple(entry.model for entry, _ in expired)

    def close(self) -> None:
        """Unloads every model; queued requests fail and calls in flight end."""
        self._closed = True
        copies: list[BatchRunner] = []
        for entry in self._models.values():
            with entry.cond:
                copies.extend(entry.copies)
                entry.cond.notify_all()
        for runner in copies:
            runner.close()

    # -- dispatching ----------------------------------------------------------------------

    def _next_batch(self, entry: _Model, pending: _Pending) -> list[_Pending] | None:
        """The batch this caller is to run next, or None once its own request is done."""
        with entry.cond:
            while True:
                if pending.outcome is not None:
                    return None
                if self._closed and pending in entry.queue:
                    entry.queue.remove(pending)
                    pending.outcome = PipelineError("the batch models were closed")
                    return None
                if entry.active < entry.model.capacity:
                    head = next((p for p in entry.queue if p.key not in entry.gathering), None)
                    if head is not None:
                        entry.active += 1
                        return self._gather(entry, head)
                entry.cond.wait()

    def _gather(self, entry: _Model, head: _Pending) -> list[_Pending]:
        """Takes ``head`` and the requests that may join it (``entry.cond`` held)."""
        limit = entry.cls.spec.max_batch
        if head.alone or limit == 1:
            entry.queue.remove(head)
            return [head]
        entry.gathering.add(head.key)
        try:
            deadline = head.arrived + self._batch_window
            while not self._closed:
                if sum(p.key == head.key for p in entry.queue) >= limit:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                entry.cond.wait(left)
        finally:
            entry.gathering.discard(head.key)
            entry.cond.notify_all()
        batch = [p for p in entry.queue if not p.alone and p.key == head.key][:limit]
        for p in batch:
            entry.queue.remove(p)
        return batch

    def _dispatch(self, entry: _Model, batch: list[_Pending]) -> None:
        """Runs ``batch`` in one call on a copy of the model; holds one slot."""
        runner: BatchRunner | None = None
        outcomes: list[BatchOutcome] = []
        started = time.perf_counter()
        try:
            runner = self._copy_for(entry)
            outcomes = runner.run_batch([p.request for p in batch], [p.sink for p in batch])
        except Exception as exc:  # loading failed: every request of the batch with it
            failure = as_pipeline_error(exc)
            outcomes = [failure] * len(batch)
            with entry.cond:
                entry.problem = str(failure)
        finally:
            if len(outcomes) != len(batch):  # interrupted
                outcomes = [PipelineError(f"{entry.label}: the call was interrupted")] * len(batch)
            seconds = time.perf_counter() - started
            with entry.cond:
                for p, outcome in zip(batch, outcomes, strict=True):
                    p.outcome = outcome
                    if isinstance(outcome, BadRequestError | InvalidParamsError):
                        entry.refused += 1
                    elif isinstance(outcome, PipelineError):
                        entry.failures += 1
                if any(isinstance(o, BatchUsage) for o in outcomes):
                    entry.problem = None
                entry.batches += 1
                entry.largest = max(entry.largest, len(batch))
                entry.seconds += seconds
            self._release(entry, runner)

    def _copy_for(self, entry: _Model) -> BatchRunner:
        """An idle copy of the model, or a new one (not loaded yet) for this slot."""
        with entry.cond:
            if self._closed:
                raise PipelineError("the batch models were closed")
            if entry.idle:
                return entry.idle.pop()
        # Every copy not idle serves another slot, so a new one stays within ``capacity``.
        device = self._place() if self._place is not None else self._device
        path = entry.model.path
        assert path is not None
        runner: BatchRunner
        if self._isolate:
            guardian = PipelineGuardian(
                frame_deadline=self._request_deadline,
                load_deadline=self._load_deadline,
                memory_limit=self._memory_limit,
            )
            runner = IsolatedBatchRunner(
                entry.cls, path, device=device, guardian=guardian, label=entry.label
            )
        else:
            runner = LocalBatchRunner(entry.cls, path, device=device)
        with entry.cond:
            entry.copies.append(runner)
        return runner

    def _release(self, entry: _Model, runner: BatchRunner | None) -> None:
        """Gives back a slot (and its copy, if any)."""
        with entry.cond:
            entry.active -= 1
            entry.last_used = time.monotonic()
            if runner is not None and runner in entry.copies:
                entry.idle.append(runner)
            entry.cond.notify_all()
        if runner is not None and self._closed:
            runner.close()


def _own(exc: Exception) -> Exception:
    """A copy of ``exc`` for this caller to raise: one failure can end every request of a
    batch, and threads raising one object would tangle its traceback."""
    try:
        return copy.copy(exc)
    except Exception:  # an exception that cannot be rebuilt from its args
        return exc
