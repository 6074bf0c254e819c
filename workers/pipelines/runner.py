"""Runs one pipeline over one stream's decoded frames, on a worker thread.

How this works
--------------
:class:`PipelineRunner` is blocking and single-consumer: one worker thread calls ``push`` /
``flush`` with decoded ``yuv420p`` frames and gets encoded-ready output frames back (from a
bounded ``FramePool``). Frames are gathered into batches of the pipeline's ``batch_size``;
``push`` returns nothing until a batch is full, ``flush`` runs what is gathered.

Parameter changes come from another thread (the control channel): :meth:`update` validates
them at once, so a bad request fails where it was made, and leaves the new :class:`Params` in
a one-slot mailbox under a lock. Before each batch the worker thread takes the mailbox and
calls the pipeline's ``update``; a batch therefore runs entirely under one set of parameters,
and several changes between two batches collapse into the last one (they are cumulative: each
is validated on top of the previous).

``process`` runs under ``torch.inference_mode()``. Output frames keep the input's timestamps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import attrs
from av.video.frame import VideoFrame

from lpstream.errors import MediaError
from workers.frames import FrameConverter, PoolStatistics
from workers.pipelines.base import (
    Pipeline,
    PipelineContext,
    PipelineSpec,
    RgbPipeline,
    YuvPipeline,
)
from workers.pipelines.models import ModelDirectory
from workers.pipelines.params import Params, PipelineError, validate

__all__ = ["PipelineRunner", "RunnerStatistics"]


@attrs.frozen(kw_only=True)
class RunnerStatistics:
    """What a runner has done so far."""

    frames_in: int
    """Frames pushed."""
    frames_out: int
    """Frames returned."""
    batches: int
    """``process`` calls."""
    updates: int
    """Parameter changes applied (not counting the starting parameters)."""
    process_seconds: float
    """Time spent converting and processing, excluding the caller's decode and encode."""
    pool: PoolStatistics | None
    """The output pool's statistics, once it exists."""


class PipelineRunner:
    """One pipeline instance working through one stream's frames."""

    def __init__(
        self,
        pipeline: Pipeline,
        params: Mapping[str, object] | None = None,
        *,
        device: str = "cpu",
        pool_size: int = 8,
        models: ModelDirectory | None = None,
    ) -> None:
        """Validates the starting parameters (a model name against ``models``, the worker's
        models directory: none, and no model can be named); nothing is loaded until
        :meth:`prepare`.

        Raises:
            InvalidParamsError: ``params`` do not fit the pipeline's declaration.
            MediaError: ``device`` cannot be used.
        """
        self._pipeline = pipeline
        self._spec = pipeline.spec
        self._models = models or ModelDirectory()
        self._params = validate(
            self._spec.name, self._spec.params, params or {}, models=self._models
        )
        self._context = PipelineContext(device=device, models=self._models)
        self._converter = FrameConverter(pipeline.layout, device=device, pool_size=pool_size)
        self._lock = threading.Lock()
        self._latest = self._params
        """Newest validated parameters; what ``update`` builds on."""
        self._mailbox: Params | None = None
        self._version = 0
        """Changes validated so far (``update`` calls that succeeded)."""
        self._applied_version = 0
        """The newest change a batch has run under."""
        self._mailbox_version = 0
        self._pending: list[VideoFrame] = []
        self._prepared = False
        self._stopped = False
        self._frames_in = 0
        self._frames_out = 0
        self._batches = 0
        self._updates = 0
        self._seconds = 0.0

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    @property
    def spec(self) -> PipelineSpec:
        return self._spec

    @property
    def params(self) -> Params:
        """The newest parameters (applied before the next batch if not yet)."""
        with self._lock:
            return self._latest

    @property
    def version(self) -> int:
        """How many changes :meth:`update` has accepted (0: the starting parameters)."""
        with self._lock:
            return self._version

    @property
    def applied_version(self) -> int:
        """The newest accepted change that a processed batch has run under."""
        with self._lock:
            return self._applied_version

    def prepare(self) -> None:
        """Loads the pipeline (blocking); :meth:`push` does it first if not called.

        Raises:
            PipelineError: the pipeline cannot run here (missing torch, model or file).
        """
        if self._prepared:
            return
        if self._stopped:
            raise PipelineError("the runner was stopped")
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise PipelineError(
                f"pipeline {self._spec.name!r} needs torch (pip install 'lpstream[ai]')"
            ) from exc
        with self._lock:
            params, self._mailbox = self._latest, None
            self._applied_version = self._version
        self._pipeline.prepare(self._context, params)
        self._pipeline.update(params)
        self._params = params
        self._prepared = True

    def update(self, changes: Mapping[str, object]) -> Params:
        """Validates ``changes`` now; they apply before the next batch. Thread-safe.

        Returns:
            The full parameters that will apply.

        Raises:
            InvalidParamsError: listing everything wrong; nothing is changed then.
        """
        with self._lock:
            params = validate(
                self._spec.name, self._spec.params, changes, base=self._latest, models=self._models
            )
            self._latest = self._mailbox = params
            self._version += 1
            self._mailbox_version = self._version
        return params

    def adopt(self, params: Mapping[str, object]) -> Params:
        """Takes new starting parameters (a warm runner given to a session), validated from
        the defaults and applied before the next batch; not counted as a change.

        Raises:
            InvalidParamsError: nothing is changed then.
        """
        with self._lock:
            full = validate(self._spec.name, self._spec.params, params, models=self._models)
            self._latest = self._mailbox = full
            self._mailbox_version = self._version
        return full

    def push(self, frame: VideoFrame) -> list[VideoFrame]:
        """Adds a decoded frame; returns output frames when a batch is complete.

        Raises:
            MediaError: the frame is not ``yuv420p`` with even sides, or the pipeline
                returned the wrong shape.
            PipelineError: as :meth:`prepare`, or the runner was stopped.
        """
        if self._stopped:
            raise PipelineError("the runner was stopped")
        self._pending.append(frame)
        self._frames_in += 1
        if len(self._pending) < self._spec.batch_size:
            return []
        return self._run()

    def flush(self) -> list[VideoFrame]:
        """Processes the frames gathered so far (a short batch); returns their outputs."""
        if not self._pending:
            return []
        return self._run()

    def stop(self) -> None:
        """Stops the pipeline (once); gathered frames that were not flushed are dropped."""
        if self._stopped:
            return
        self._stopped = True
        self._pending.clear()
        if self._prepared:
            self._pipeline.stop()

    def statistics(self) -> RunnerStatistics:
        pool = self._converter.pool
        return RunnerStatistics(
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            batches=self._batches,
            updates=self._updates,
            process_seconds=self._seconds,
            pool=pool.statistics() if pool is not None else None,
        )

    def _run(self) -> list[VideoFrame]:
        import torch

        self.prepare()
        frames, self._pending = self._pending, []
        with self._lock:
            changed, self._mailbox = self._mailbox, None
            if changed is not None:
                self._applied_version = self._mailbox_version
        if changed is not None:
            self._pipeline.update(changed)
            self._params = changed
            self._updates += 1
        start = time.perf_counter()
        pipeline, converter = self._pipeline, self._converter
        with torch.inference_mode():
            if isinstance(pipeline, RgbPipeline):
                rgb = pipeline.process(converter.to_rgb(frames), self._params)
                outputs = converter.from_rgb(rgb, frames)
            elif isinstance(pipeline, YuvPipeline):
                planes = pipeline.process(converter.to_yuv(frames), self._params)
                outputs = converter.from_yuv(planes, frames)
            else:
                raise MediaError(f"{type(pipeline).__name__} is neither RGB nor YUV")
        self._seconds += time.perf_counter() - start
        self._batches += 1
        self._frames_out += len(outputs)
        return outputs
