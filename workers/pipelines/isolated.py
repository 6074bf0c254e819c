"""A pipeline run in a child process, watched by a guardian: the worker side.

How this works
--------------
:class:`IsolatedRunner` has the shape of ``PipelineRunner`` (``prepare``, ``push``, ``flush``,
``update``, ``stop``) so a live session cannot tell them apart, but the pipeline lives in a
child process (``workers.pipelines.child``), forked from the server process that imported
torch once (``workers.pipelines.supervision``: a fresh interpreter that never touched a GPU
or a thread of ours, so forking it is safe; its ``start_child_server`` starts it ahead of
the first session). A frame is copied into slot 0 of a shared-memory :class:`FrameRing`, a
small request goes down the pipe, and the answer names the output slots, copied out into new
frames: no pixels are pickled.

While a request waits, its :class:`SupervisedChild` polls the pipe in short steps and between
them applies the guardian's rules (``workers.pipelines.guardian``): a dead child, a request
past its deadline or a child past its memory limit is killed (SIGKILL) and the request fails
with a ``PipelineError`` saying what happened and when the child comes back; the session's
job fails with it (its gateway tells the app an ``error`` event) and the next job starts a
new child once the back-off is over, with the newest parameters. The worker process and its
transcodes are untouched.

Parameter changes are validated here, on the caller's thread, exactly as ``PipelineRunner``
does, and travel with the next request; the child reports which change its last batch ran
under. ``push``, ``flush`` and ``prepare`` run on one worker thread at a time (a lock orders
them); ``update`` and ``stop`` may come from another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from av.video.frame import VideoFrame

from lpstream.errors import MediaError
from workers.frames.planes import check_frame
from workers.pipelines.base import Pipeline, PipelineSpec
from workers.pipelines.child import ChildSetup, serve_pipeline
from workers.pipelines.frame_ring import FrameRecycler, FrameRing, frame_bytes
from workers.pipelines.guardian import ChildFailure, PipelineGuardian
from workers.pipelines.models import ModelDirectory
from workers.pipelines.params import Params, PipelineError, validate
from workers.pipelines.runner import RunnerStatistics
from workers.pipelines.supervision import ChildGone, SupervisedChild

__all__ = ["IsolatedRunner"]


class IsolatedRunner:
    """One pipeline instance in a child process (see the module comment)."""

    def __init__(
        self,
        pipeline: type[Pipeline],
        params: Mapping[str, object] | None = None,
        *,
        device: str = "cpu",
        models: ModelDirectory | None = None,
        guardian: PipelineGuardian | None = None,
        pool_size: int = 8,
        on_failure: Callable[[ChildFailure], None] | None = None,
    ) -> None:
        """Validates the starting parameters; the child starts at :meth:`prepare`.

        Raises:
            InvalidParamsError: ``params`` do not fit the pipeline's declaration.
        """
        self._class = pipeline
        self._spec = pipeline.spec
        self._models = models or ModelDirectory()
        self._device = device
        self._pool_size = pool_size
        self._child = SupervisedChild(
            label=f"pipeline {self._spec.name!r}",
            process_name=f"lpstream-pipeline-{self._spec.name}",
            call="return a frame",
            load="load the pipeline",
            guardian=guardian or PipelineGuardian(),
            on_failure=on_failure,
        )
        self._latest = validate(
            self._spec.name, self._spec.params, params or {}, models=self._models
        )
        self._state = threading.Lock()
        """Guards the parameters and versions (``update`` comes from another thread)."""
        self._version = 0
        self._applied_version = 0
        self._pending: tuple[Params, int] | None = None
        """Newest parameters not yet sent to the child, with their version."""
        self._ring: FrameRing | None = None
        self._outputs = FrameRecycler(pool_size)
        self._child_ring: str | None = None
        """The ring the child is attached to."""
        self._frames_in = 0
        self._frames_out = 0
        self._batches = 0
        self._updates = 0
        self._seconds = 0.0

    # -- the PipelineRunner shape ---------------------------------------------------------

    @property
    def guardian(self) -> PipelineGuardian:
        """The rules the child is watched by."""
        return self._child.guardian

    @property
    def failures(self) -> list[ChildFailure]:
        """Every stop of a child, oldest first (the newest 64)."""
        return self._child.failures

    @property
    def spec(self) -> PipelineSpec:
        return self._spec

    @property
    def params(self) -> Params:
        with self._state:
            return self._latest

    @property
    def version(self) -> int:
        with self._state:
            return self._version

    @property
    def applied_version(self) -> int:
        with self._state:
            return self._applied_version

    @property
    def pid(self) -> int | None:
        """The child's process id while one runs."""
        return self._child.pid

    def prepare(self) -> None:
        """Starts the child and loads the pipeline in it (blocking), if none runs.

        Raises:
            PipelineError: the child is waiting out its back-off, failed to start, or the
                pipeline cannot load.
        """
        with self._child.lock:
            self._ensure_child()

    def update(self, changes: Mapping[str, object]) -> Params:
        """Validates ``changes`` now; they travel with the next frame. Thread-safe.

        Raises:
            InvalidParamsError: nothing is changed then.
        """
        with self._state:
            params = validate(
                self._spec.name, self._spec.params, changes, base=self._latest, models=self._models
            )
            self._version += 1
            self._latest = params
            self._pending = (params, self._version)
        return params

    def adopt(self, params: Mapping[str, object]) -> Params:
        """Takes new starting parameters (a warm runner given to a session), validated from
        the defaults and not counted as a change.

        Raises:
            InvalidParamsError: nothing is changed then.
        """
        with self._state:
            full = validate(self._spec.name, self._spec.params, params, models=self._models)
            self._latest = full
            self._pending = (full, self._version)
        return full

    def push(self, frame: VideoFrame) -> list[VideoFrame]:
        """Sends a frame; returns the output frames of a completed batch.

        Raises:
            MediaError: the frame is not ``yuv420p`` with even sides, or the pipeline's
                output was wrong.
            PipelineError: the child failed (it was stopped; the message says when it comes
                back), or the runner was stopped.
        """
        check_frame(frame)
        with self._child.lock:
            self._ensure_child()
            ring = self._ring_for(frame.width, frame.height)
            header = ring.write(0, frame)
            params, version = self._take_pending()
            self._frames_in += 1
            return self._frames(("push", header, params, version))

    def flush(self) -> list[VideoFrame]:
        """Runs the frames the child gathered (a short batch); returns their outputs."""
        with self._child.lock:
            if not self._child.running or self._ring is None:
                return []
            params, version = self._take_pending()
            return self._frames(("flush", params, version))

    def stop(self) -> None:
        """Stops the child (once); nothing can run afterwards."""
        self._child.close(grace=2.0)
        with self._child.lock:
            if self._ring is not None:
                self._ring.close(unlink=True)
                self._ring = None

    def statistics(self) -> RunnerStatistics:
        return RunnerStatistics(
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            batches=self._batches,
            updates=self._updates,
            process_seconds=self._seconds,
            pool=None,
        )

    # -- the child ------------------------------------------------------------------------

    def _ensure_child(self) -> None:
        child = self._child
        if child.closed:
            raise PipelineError("the runner was stopped")
        if child.running:
            return
        child.check_backoff()
        with self._state:
            params = self._latest
            self._pending = None
            applied = self._version
        setup = ChildSetup(
            pipeline=self._class,
            params=dict(params),
            device=self._device,
            models_root=None if self._models.root is None else str(self._models.root),
            pool_size=self._pool_size,
        )
        child.start(serve_pipeline, setup)
        self._child_ring = None
        try:
            self._request(("prepare",), loading=True)
        except PipelineError:
            child.kill()
            child.end(grace=0.0)
            raise
        with self._state:
            self._applied_version = applied
        child.guardian.started(time.monotonic())

    def _ring_for(self, width: int, height: int) -> FrameRing:
        ring = self._ring
        if ring is None or not ring.fits(width, height):
            if ring is not None:
                ring.close(unlink=True)
            ring = self._ring = FrameRing.create(
                1 + self._spec.batch_size, frame_bytes(width, height)
            )
        if self._child_ring != ring.name:
            self._request(("ring", ring.name, ring.slots, ring.slot_bytes))
            self._child_ring = ring.name
        return ring

    def _take_pending(self) -> tuple[dict[str, object] | None, int]:
        with self._state:
            pending, self._pending = self._pending, None
        if pending is None:
            return None, 0
        return dict(pending[0]), pending[1]

    def _frames(self, request: tuple[Any, ...]) -> list[VideoFrame]:
        started = time.perf_counter()
        _, headers, applied = self._request(request)
        ring = self._ring
        assert ring is not None
        outputs = [ring.read(h, into=self._outputs.acquire(h.width, h.height)) for h in headers]
        if outputs:
            self._batches += 1
            self._frames_out += len(outputs)
            with self._state:
                if applied != self._applied_version:
                    self._updates += 1
                self._applied_version = applied
        self._seconds += time.perf_counter() - started
        return outputs

    def _request(self, request: tuple[Any, ...], *, loading: bool = False) -> tuple[Any, ...]:
        """Sends ``request`` and waits for its answer under the guardian's rules.

        Raises:
            MediaError, PipelineError: as the child answered.
            PipelineError: the child failed and was stopped.
        """
        try:
            answer = self._child.request(request, loading=loading)
        except ChildGone as gone:
            failure = self._child.fail(gone)
            if failure is None:  # stopped on purpose while the request waited
                raise PipelineError("the runner was stopped") from None
            raise PipelineError(
                f"pipeline {self._spec.name!r} child {failure.describe(time.monotonic())}"
            ) from None
        if answer[0] == "error":
            _, kind, message = answer
            raise (MediaError if kind == "media" else PipelineError)(message)
        return answer  # type: ignore[no-any-return]
