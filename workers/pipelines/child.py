"""The pipeline child process: one pipeline instance, served over a pipe and a frame ring.

How this works
--------------
The worker starts this module's :func:`serve_pipeline` in a process of its own
(``multiprocessing``'s ``forkserver``: forked from a clean interpreter that imported torch,
nothing of the worker inherited but the pipe) with a :class:`ChildSetup`. The child builds an
ordinary ``PipelineRunner`` and answers requests one at a time, in order; every request gets
exactly one answer. Requests and answers are small
tuples (pickled by the pipe); pixels never are, they stay in the :class:`FrameRing`:

========================================  =============================================
request                                   answer
========================================  =============================================
``("prepare",)``                          ``("ok",)`` once the model is loaded
``("ring", name, slots, slot_bytes)``     ``("ok",)`` attached to a new ring
``("push", header, params, version)``     ``("frames", [header, ...], applied_version)``
``("flush", params, version)``            ``("frames", [header, ...], applied_version)``
``("stop",)``                             none: the child stops the pipeline and exits
========================================  =============================================

Any request may instead be answered ``("error", kind, message)``: ``kind`` is ``media`` (the
frames were wrong) or ``pipeline`` (the pipeline failed); the child goes on. ``params`` is the
full newest parameters when they changed since the last request (else None), tagged with the
parent's change ``version``; ``applied_version`` is the newest such version a batch has run
under. Slot 0 of the ring is the input, slots 1.. the outputs of one request. A closed pipe
(the parent died) ends the child.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import attrs

from lpstream.errors import MediaError
from workers.pipelines.base import Pipeline
from workers.pipelines.frame_ring import FrameHeader, FrameRecycler, FrameRing
from workers.pipelines.models import ModelDirectory
from workers.pipelines.params import PipelineError
from workers.pipelines.runner import PipelineRunner

__all__ = ["ChildSetup", "serve_pipeline"]

log = logging.getLogger("lpstream.worker.pipeline")


@attrs.frozen(kw_only=True)
class ChildSetup:
    """What a child is started with (pickled to the child: the class by its import path)."""

    pipeline: type[Pipeline]
    """The pipeline class; it must be importable (defined at a module's top level)."""
    params: Mapping[str, object]
    """Starting parameters (already validated by the parent)."""
    device: str = "cpu"
    """torch device."""
    models_root: str | None = None
    """The worker's models directory."""
    pool_size: int = 8
    """Output frames the runner's pool holds."""


def serve_pipeline(connection: Connection, setup: ChildSetup) -> None:
    """The child's main: answers requests until ``stop`` or a closed pipe."""
    models = ModelDirectory(None if setup.models_root is None else Path(setup.models_root))
    runner = PipelineRunner(
        setup.pipeline(),
        dict(setup.params),
        device=setup.device,
        pool_size=setup.pool_size,
        models=models,
    )
    child = _Child(runner)
    try:
        while True:
            try:
                request = connection.recv()
            except (EOFError, OSError):
                return  # the worker is gone
            if request[0] == "stop":
                return
            connection.send(child.answer(request))
    finally:
        runner.stop()
        child.close()


class _Child:
    def __init__(self, runner: PipelineRunner) -> None:
        self._runner = runner
        self._ring: FrameRing | None = None
        self._inputs = FrameRecycler(2 * runner.spec.batch_size + 2)
        self._sent_version = 0
        """The parent's version of the newest parameters given to the runner."""
        self._applied_version = 0

    def answer(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        try:
            return self._answer(request)
        except MediaError as exc:
            return ("error", "media", str(exc))
        except PipelineError as exc:
            return ("error", "pipeline", str(exc))
        except Exception as exc:  # a pipeline's own bug: told to the worker, the child lives
            log.exception("pipeline failed")
            return ("error", "pipeline", f"{type(exc).__name__}: {exc}")

    def _answer(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        kind = request[0]
        if kind == "prepare":
            self._runner.prepare()
            return ("ok",)
        if kind == "ring":
            _, name, slots, slot_bytes = request
            if self._ring is not None:
                self._ring.close()
            self._ring = FrameRing.attach(name, slots, slot_bytes)
            return ("ok",)
        if kind == "push":
            _, header, params, version = request
            self._take(params, version)
            frame = self._require_ring().read(
                header, into=self._inputs.acquire(header.width, header.height)
            )
            return self._frames(self._runner.push(frame))
        if kind == "flush":
            _, params, version = request
            self._take(params, version)
            return self._frames(self._runner.flush())
        raise PipelineError(f"unknown request {kind!r}")

    def _take(self, params: Mapping[str, object] | None, version: int) -> None:
        if params is not None:
            self._runner.update(params)
            self._sent_version = version

    def _frames(self, outputs: list[Any]) -> tuple[Any, ...]:
        ring = self._require_ring()
        if len(outputs) >= ring.slots:
            raise PipelineError(f"{len(outputs)} frames at once do not fit the ring")
        headers: list[FrameHeader] = [
            ring.write(slot, frame) for slot, frame in enumerate(outputs, start=1)
        ]
        if outputs and self._runner.applied_version == self._runner.version:
            self._applied_version = self._sent_version
        return ("frames", headers, self._applied_version)

    def _require_ring(self) -> FrameRing:
        if self._ring is None:
            raise PipelineError("no frame ring attached")
        return self._ring

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
