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
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import trio
from av.video.frame import VideoFrame

from workers.pipelines import PipelineError, PipelineRegistry, PipelineRunner

__all__ = ["LiveSession", "LiveSessions", "ParamsApplied"]

log = logging.getLogger("lpstream.worker")

SessionKey = tuple[str, str]
"""(stream id, session id), as in the JOBs."""


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

    def __init__(self, key: SessionKey, runner: PipelineRunner, now: float) -> None:
        self.key = key
        self.runner = runner
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
        return self.runner.pipeline.spec.name

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
        }


@attrs.define
class LiveSessions:
    """The live sessions of one worker, by (stream, session)."""

    registry: PipelineRegistry = attrs.Factory(PipelineRegistry)
    device: str = "cpu"
    """torch device the pipelines run on."""
    idle_timeout: float = 30.0
    """Seconds without a job after which a session's pipeline is stopped."""
    _sessions: dict[SessionKey, LiveSession] = attrs.Factory(dict)

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
            runner = self.registry.create(pipeline, params, device=self.device)
            session = self._sessions[key] = LiveSession(key, runner, now)
            log.info("live session %s/%s: %s started", key[0], key[1], pipeline)
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
        """Stops every session (the worker is stopping)."""
        for session in self._sessions.values():
            session.runner.stop()
        self._sessions.clear()

    def statistics(self) -> dict[str, Any]:
        return {f"{k[0]}/{k[1]}": s.statistics() for k, s in self._sessions.items()}
