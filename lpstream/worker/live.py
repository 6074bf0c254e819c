"""Live AI sessions on a worker: one prepared pipeline per gateway session, fed job by job.

How this works:

* A live session's media arrives as a series of jobs (one per segment, each cut at a
  keyframe). The first job of a (stream, session) creates the session's ``PipelineRunner``;
  later jobs reuse it, so a model is loaded once per session, not per segment. A session no
  job has used for ``idle_timeout`` seconds is stopped and forgotten.
* A ``LiveSession`` is the ``FrameStage`` of the job's one output rendition: the transcoder's
  encoder thread hands it each scaled frame and encodes what comes back. Jobs of one session
  run one at a time (``running()`` holds a lock on the worker thread), because a runner has a
  single consumer; the next segment's job waits for the previous one's last frames.
* Parameter changes (``update``) are validated at once on the caller's thread and land in the
  runner's mailbox; the runner applies them before the next batch. The session remembers, per
  change, the last frame finished before it arrived and the first frame processed under it, so
  the control side can say exactly where it took effect.
* With ``isolate`` each session's pipeline runs in a child process of its own under a guardian
  (``workers.pipelines.isolated``): a crash, a hang or memory past ``pipeline_memory`` stops
  that child, fails the job that was running (the gateway tells the app an ``error`` event)
  and the next job starts a new one after a back-off. Without it, the pipeline runs on the
  job's thread in this process.
* Where the worker has GPUs (``gpus``), a new session goes to the one with the fewest
  sessions, then the most free memory (``workers.gpu.place_session``), and its pipeline runs
  on that ``cuda:N``; without, on ``device``.
* ``warm`` pipelines are loaded at start (:meth:`LiveSessions.load_warm`). A new session of a
  warm pipeline takes the loaded runner, with its own starting parameters, and another is
  loaded in the background for the next one.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import attrs
import trio
from av.video.frame import VideoFrame

from workers.gpu import GpuInfo, place_session
from workers.pipelines import Params, PipelineError, PipelineRegistry, PipelineSpec
from workers.pipelines.guardian import ChildFailure, PipelineGuardian
from workers.pipelines.isolated import IsolatedRunner
from workers.pipelines.runner import RunnerStatistics
from workers.pipelines.supervision import start_child_server

__all__ = ["LiveSession", "LiveSessions", "ParamsApplied", "SessionRunner", "WarmPipeline"]

log = logging.getLogger("lpstream.worker")

SessionKey = tuple[str, str]
"""(stream id, session id), as in the JOBs."""


class SessionRunner(Protocol):
    """What a session drives: a ``PipelineRunner`` here or an ``IsolatedRunner`` in a child."""

    @property
    def spec(self) -> PipelineSpec: ...
    @property
    def params(self) -> Params: ...
    @property
    def version(self) -> int: ...
    @property
    def applied_version(self) -> int: ...
    def prepare(self) -> None: ...
    def update(self, changes: Mapping[str, object]) -> Params: ...
    def adopt(self, params: Mapping[str, object]) -> Params: ...
    def push(self, frame: VideoFrame) -> list[VideoFrame]: ...
    def flush(self) -> list[VideoFrame]: ...
    def stop(self) -> None: ...
    def statistics(self) -> RunnerStatistics: ...


@attrs.frozen(kw_only=True)
class WarmPipeline:
    """A pipeline loaded at start (``--warm NAME[=PARAMS_JSON]``)."""

    name: str
    """The pipeline."""
    params: Mapping[str, object] = attrs.Factory(dict)
    """The parameters it is loaded with (a model named there is loaded)."""


@attrs.frozen(kw_only=True)
class ParamsApplied:
    """Where a parameter change took effect."""

    version: int
    """The change's number within its session (1 for the first change)."""
    after_pts: int | None
    """Timestamp of the last frame finished before the change arrived (None: none yet)."""
    applied_pts: int | None
    """Timestamp of the first frame processed with it (None: not applied yet)."""
    frames_between: int
    """Frames finished after the change arrived and before it applied: at most the frame
    (or batch) that was being processed when it came."""


class LiveSession:
    """One gateway session's running pipeline (see the module comment)."""

    def __init__(
        self, key: SessionKey, runner: SessionRunner, now: float, device: str = "cpu"
    ) -> None:
        self.key = key
        self.runner = runner
        self.device = device
        """Where its pipeline runs (``cpu``, ``cuda:N``)."""
        self.last_used = now
        self._job_lock = threading.Lock()
        self.turn = trio.Lock()
        """Held by a job from its arrival to its end: trio's lock is fair, so the jobs of a
        session run in the order they came (the next segment never overtakes the previous
        one while that one waits for the model)."""
        self._lock = threading.Lock()
        self._frames_done = 0
        self._last_pts: int | None = None
        self._arrivals: dict[int, tuple[int | None, int]] = {}
        """version -> (last pts done, frames done) when it arrived."""
        self._applied: list[tuple[int, int, int]] = []
        """(version, pts, frames done) at each batch that ran under newer parameters."""
        self.jobs = 0
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0

    @property
    def pipeline(self) -> str:
        return self.runner.spec.name

    @property
    def busy(self) -> bool:
        """A job (or the model's loading) holds the session now, or waits for it."""
        return self._job_lock.locked() or self.turn.locked()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Held by a job's worker thread while it feeds this session."""
        with self._job_lock:
            yield

    # -- FrameStage, on the encoder thread ---------------------------------------------------

    def push(self, frame: VideoFrame) -> Sequence[VideoFrame]:
        before = self.runner.applied_version
        outputs = self.runner.push(frame)
        self._note(before, outputs)
        return outputs

    def flush(self) -> Sequence[VideoFrame]:
        before = self.runner.applied_version
        outputs = self.runner.flush()
        self._note(before, outputs)
        return outputs

    def _note(self, before: int, outputs: Sequence[VideoFrame]) -> None:
        if not outputs:
            return
        after = self.runner.applied_version
        with self._lock:
            if after != before:
                self._applied.append((after, outputs[0].pts or 0, self._frames_done))
                del self._applied[:-64]
            self._frames_done += len(outputs)
            self._last_pts = outputs[-1].pts

    # -- control, on the trio thread ---------------------------------------------------------

    def update(self, changes: Mapping[str, object]) -> int:
        """Validates and queues ``changes``; returns their version.

        Raises:
            InvalidParamsError: nothing changes then.
        """
        with self._lock:
            self.runner.update(changes)
            version = self.runner.version
            self._arrivals[version] = (self._last_pts, self._frames_done)
            for old in [v for v in self._arrivals if v <= version - 64]:
                del self._arrivals[old]
        return version

    def applied(self, version: int) -> ParamsApplied:
        """Where change ``version`` took effect, as far as is known now."""
        with self._lock:
            after_pts, frames_then = self._arrivals.get(version, (None, 0))
            index = bisect.bisect_left(self._applied, version, key=lambda entry: entry[0])
            if index == len(self._applied):
                return ParamsApplied(
                    version=version, after_pts=after_pts, applied_pts=None, frames_between=0
                )
            _, pts, frames_before = self._applied[index]
            return ParamsApplied(
                version=version,
                after_pts=after_pts,
                applied_pts=pts,
                frames_between=max(0, frames_before - frames_then),
            )

    def statistics(self) -> dict[str, Any]:
        runner = self.runner.statistics()
        return {
            "pipeline": self.pipeline,
            "jobs": self.jobs,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "updates": runner.updates,
            "process_seconds": round(runner.process_seconds, 3),
            "params": dict(self.runner.params),
            "device": self.device,
        }


@attrs.define
class _WarmSlot:
    """One warm pipeline: the runner loaded for the next session, while it loads."""

    warm: WarmPipeline
    runner: SessionRunner | None = None
    loading: SessionRunner | None = None
    """The runner while it loads (stopped if the worker stops meanwhile)."""
    device: str = "cpu"
    """Where ``runner`` runs."""
    ready: threading.Event = attrs.Factory(threading.Event)
    """Set once ``runner`` is loaded (or failed: ``problem``)."""
    problem: str | None = None


@attrs.define
class LiveSessions:
    """The live sessions of one worker, by (stream, session)."""

    registry: PipelineRegistry = attrs.Factory(PipelineRegistry)
    device: str = "cpu"
    """torch device the pipelines run on where there is no GPU in ``gpus``."""
    idle_timeout: float = 30.0
    """Seconds without a job after which a session's pipeline is stopped."""
    isolate: bool = False
    """Runs each session's pipeline in a child process under a guardian (module comment)."""
    pipeline_memory: int | None = None
    """Bytes of resident memory a pipeline child may hold (``--pipeline-memory``)."""
    frame_deadline: float = 10.0
    """Seconds a pipeline child may take for a frame before it counts as hung."""
    first_backoff: float = 0.5
    """Seconds before a failed child's first restart (doubling, up to 30 s)."""
    gpus: tuple[GpuInfo, ...] = ()
    """The GPUs sessions are placed on (``--gpus``); none: ``device``."""
    warm: tuple[WarmPipeline, ...] = ()
    """Pipelines loaded at start (``--warm``)."""
    _sessions: dict[SessionKey, LiveSession] = attrs.Factory(dict)
    _warm_slots: list[_WarmSlot] = attrs.Factory(list)
    _failures: dict[tuple[str, str], int] = attrs.Factory(dict)
    """(pipeline, kind) -> pipeline children stopped for it."""
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    _closed: bool = False
    """Set by :meth:`close`: a warm pipeline still loading then is stopped, not a failure."""

    def acquire(
        self, key: SessionKey, pipeline: str, params: Mapping[str, object], now: float
    ) -> LiveSession:
        """The session for ``key``, created with ``pipeline`` and ``params`` if new.

        Raises:
            UnknownPipelineError: no such pipeline here.
            InvalidParamsError: ``params`` do not fit it.
            PipelineError: the session runs another pipeline.
        """
        self.expire(now)
        session = self._sessions.get(key)
        if session is None:
            taken = self._take_warm(pipeline, params)
            if taken is None:
                device = self._place()
                runner = self._new_runner(pipeline, params, device)
                how = "started"
            else:
                runner, device = taken
                how = "started warm"
            session = self._sessions[key] = LiveSession(key, runner, now, device)
            log.info("live session %s/%s: %s %s on %s", key[0], key[1], pipeline, how, device)
        elif session.pipeline != pipeline:
            raise PipelineError(
                f"session {key[1]} runs {session.pipeline!r}, not {pipeline!r}: "
                "start a new session to change pipelines"
            )
        session.last_used = now
        return session

    def get(self, key: SessionKey) -> LiveSession | None:
        return self._sessions.get(key)

    def expire(self, now: float) -> None:
        """Stops the sessions idle for longer than ``idle_timeout``."""
        for key, session in list(self._sessions.items()):
            if now - session.last_used > self.idle_timeout and not session.busy:
                del self._sessions[key]
                session.runner.stop()
                log.info("live session %s/%s: stopped after being idle", *key)

    def close(self) -> None:
        """Stops every session and warm pipeline (the worker is stopping)."""
        for session in self._sessions.values():
            session.runner.stop()
        self._sessions.clear()
        with self._lock:
            self._closed = True
            slots, self._warm_slots = self._warm_slots, []
        for slot in slots:
            for runner in (slot.runner, slot.loading):
                if runner is not None:
                    runner.stop()

    def sessions_by_device(self) -> dict[str, int]:
        """How many sessions have their pipeline on each device (``cpu``, ``cuda:N``)."""
        counts: dict[str, int] = {}
        for session in list(self._sessions.values()):
            counts[session.device] = counts.get(session.device, 0) + 1
        return counts

    def statistics(self) -> dict[str, Any]:
        return {f"{k[0]}/{k[1]}": s.statistics() for k, s in self._sessions.items()}

    def failures(self) -> dict[tuple[str, str], int]:
        """Pipeline children stopped, by (pipeline, why: crashed, hung, memory)."""
        with self._lock:
            return dict(self._failures)

    def preload(self) -> None:
        """Imports what the pipelines run on (torch), so that a new session's first job does
        not wait seconds for it (blocking: call it on a thread): here, or with ``isolate`` in
        the process pipeline children are forked from. Without torch, the session's first
        job says so."""
        if self.isolate:
            start_child_server()
            return
        with suppress(ImportError):
            import torch  # noqa: F401

    # -- warm pipelines ---------------------------------------------------------------------

    def load_warm(self) -> None:
        """Loads every ``warm`` pipeline (blocking: call it on a thread at start).

        Raises:
            UnknownPipelineError: a warm pipeline is not installed here.
            InvalidParamsError: its parameters do not fit it.
        """
        for warm in self.warm:  # check them all before loading any
            self.registry.get(warm.name)
        slots = [_WarmSlot(warm) for warm in self.warm]
        with self._lock:
            self._warm_slots.extend(slots)
        for slot in slots:
            self._load_slot(slot)

    def warm_names(self) -> list[str]:
        """The warm pipelines that loaded (whether or not one is ready this moment)."""
        with self._lock:
            return sorted({s.warm.name for s in self._warm_slots if s.problem is None})

    def _load_slot(self, slot: _WarmSlot) -> None:
        warm = slot.warm
        slot.device = self._place()
        try:
            runner = slot.loading = self._new_runner(warm.name, warm.params, slot.device)
            with self._lock:
                closed = self._closed
            if closed:
                runner.stop()  # the worker stopped before this one began
            runner.prepare()
        except PipelineError as exc:
            slot.problem = str(exc)
            with self._lock:
                closed = self._closed
            if not closed:  # else stopped with the worker while it loaded: no failure
                log.error("warm pipeline %s could not load: %s", warm.name, exc)
        else:
            with self._lock:
                slot.runner, closed = runner, self._closed
            if closed:
                runner.stop()
            else:
                log.info("warm pipeline %s loaded", warm.name)
        slot.loading = None
        slot.ready.set()

    def _take_warm(
        self, pipeline: str, params: Mapping[str, object]
    ) -> tuple[SessionRunner, str] | None:
        with self._lock:
            slot = next(
                (
                    s
                    for s in self._warm_slots
                    if s.warm.name == pipeline and s.ready.is_set() and s.runner is not None
                ),
                None,
            )
            if slot is None:
                return None
            runner, device = slot.runner, slot.device
            assert runner is not None
            runner.adopt(params)  # InvalidParamsError: the warm runner stays for another
            index = self._warm_slots.index(slot)
            fresh = self._warm_slots[index] = _WarmSlot(slot.warm)
        threading.Thread(
            target=self._load_slot, args=(fresh,), name=f"warm-{pipeline}", daemon=True
        ).start()
        return runner, device

    # -- runners ----------------------------------------------------------------------------

    def _place(self) -> str:
        if not self.gpus:
            return self.device
        loads: dict[int, int] = {}
        for session in self._sessions.values():
            if session.device.startswith("cuda:"):
                index = int(session.device.partition(":")[2])
                loads[index] = loads.get(index, 0) + 1
        return f"cuda:{place_session(self.gpus, loads).index}"

    def _new_runner(
        self, pipeline: str, params: Mapping[str, object], device: str
    ) -> SessionRunner:
        if not self.isolate:
            return self.registry.create(pipeline, params, device=device)
        guardian = PipelineGuardian(
            frame_deadline=self.frame_deadline,
            memory_limit=self.pipeline_memory,
            first_backoff=self.first_backoff,
        )
        return IsolatedRunner(
            self.registry.get(pipeline),
            params,
            device=device,
            models=self.registry.models,
            guardian=guardian,
            on_failure=lambda failure: self._note_failure(pipeline, failure),
        )

    def _note_failure(self, pipeline: str, failure: ChildFailure) -> None:
        log.warning("pipeline %s: child stopped: %s", pipeline, failure.detail)
        with self._lock:
            key = (pipeline, failure.kind.value)
            self._failures[key] = self._failures.get(key, 0) + 1
