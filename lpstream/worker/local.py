"""Runs transcode and live AI jobs in this process: PyAV work on threads, fed by a trickling
upload.

The transcoder is blocking code. It runs on a worker thread (``trio.to_thread``) under a
``CapacityLimiter`` (``transcode_slots``, below), and reads the segment through
``TrickleReader`` (``lpstream.worker.bridge``), a blocking file object whose ``read`` asks
the trio thread for what more of the ``SegmentBuffer`` has arrived: decoding starts while the
upload is still arriving. A live job's output goes to its requester as it is encoded, through
a ``RelayPump`` that sends in order without the encoder waiting for each send. Outputs
are collected per rendition and handed back whole when the job is done, so a job that fails
half-way can be retried elsewhere without a partial result having escaped.

How many transcodes run at once: capacity is counted in work, pixels per second
(``lpstream.orchestrator.capacity``), so ``capacity`` sessions' worth may be many more cheap
sessions than ``capacity`` (``--capacity 1`` holds eleven 160x90 streams with the default
ladder). It is that budget, checked when a session is placed, that keeps the CPU from being
oversubscribed over time: the work admitted is what ``--capacity`` says the machine makes in
real time. The limiter only decides whether the jobs that arrive together wait for each other.
Sized to ``capacity`` alone, the admitted cheap sessions would queue behind one another and
miss their segments' time; sized to their count, it would start one encoder per session.
So it takes the larger of ``capacity`` (a default session's jobs never wait, as before) and
the CPU cores (the cheap sessions the budget admitted run side by side, one encode per
core, each short): at most one encode per core beyond what the budget already counts on.

A job naming a ``capability`` is a batch AI job (text-to-image, llm...), run on the worker's
loaded models by ``lpstream.worker.batch``. A job naming a ``pipeline`` is a live AI job: its
one profile is the output rendition, whose frames go through the session's pipeline
(``lpstream.worker.live``) between scaling and a zero-latency encode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from lpstream.errors import MediaError, RemoteProtocolError
from lpstream.jobs import JobOutput, Relay
from lpstream.taskgroups import one_error
from lpstream.trickle import SegmentBuffer
from lpstream.wire import AiModelOffer, Job, LiveUpdated, Rendition, RenditionInfo
from lpstream.worker.batch import BatchJobs
from lpstream.worker.bridge import RelayPump, TrickleReader
from lpstream.worker.live import LiveSession, LiveSessions
from workers import LadderTranscoder, RenditionOutput
from workers.pipelines import InvalidParamsError, PipelineError

__all__ = ["LocalWorker"]

log = logging.getLogger("lpstream.worker")


@attrs.define
class LocalWorker:
    """Transcodes with this process's CPU or GPU."""

    capacity: int = 2
    """The work it takes, in sessions' worth (``lpstream.orchestrator.capacity``)."""
    encoder: str = "auto"
    """``auto``, ``libx264`` or ``nvenc``."""
    worker_id: str = "local"
    live: LiveSessions = attrs.Factory(LiveSessions)
    """Live AI sessions and the pipelines they may use."""
    batch: BatchJobs | None = None
    """The batch AI models it runs (``--ai-models``); None: none."""
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _live_limiter: trio.CapacityLimiter = attrs.field(init=False)
    """Live AI jobs have their own threads: they follow real time (mostly waiting for input),
    so they must never queue behind transcodes, nor one session's job behind another's."""
    _jobs_done: int = 0

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.transcode_slots)
        self._live_limiter = trio.CapacityLimiter(2 * self.transcode_slots)

    @property
    def transcode_slots(self) -> int:
        """Transcodes that may run at once: the larger of ``capacity`` and the CPU cores
        (module comment)."""
        return max(1, self.capacity, os.cpu_count() or 1)

    @property
    def jobs_done(self) -> int:
        return self._jobs_done

    def capabilities(self) -> tuple[str, ...]:
        """What this worker runs: ``transcode:h264``, ``pipeline:NAME`` per pipeline and
        ``warm:NAME`` per pipeline it keeps loaded (``--warm``)."""
        return (
            "transcode:h264",
            *(f"pipeline:{n}" for n in self.live.registry.names()),
            *(f"warm:{n}" for n in self.live.warm_names()),
        )

    def ai_models(self) -> tuple[AiModelOffer, ...]:
        """The batch AI models it runs (unpriced: the orchestrator prices them)."""
        return () if self.batch is None else self.batch.offers()

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> list[JobOutput]:
        """Transcodes the segment in ``source`` (which may still be growing), or runs it
        through the session's pipeline when the job names one. A pipeline job's output
        also goes to ``relay`` as it is encoded, packet by packet (``ResultSink``).

        Raises:
            RemoteProtocolError: (400) the job's profiles or pipeline request are wrong.
            MediaError: the segment could not be decoded or encoded.
        """
        if job.capability:
            if self.batch is None:
                raise RemoteProtocolError("this worker runs no batch AI models", code=400)
            return await self.batch.run(job, source, relay)
        profiles = job.video_profiles()
        if not job.pipeline:
            transcoder = LadderTranscoder(tuple(profiles), encoder=self.encoder)
            return await self._run(transcoder, source, contextlib.nullcontext)
        if len(profiles) != 1:
            raise RemoteProtocolError(
                "a pipeline job names exactly one profile: its output", code=400
            )
        try:
            session = self.live.acquire(
                (job.stream_id, job.session_id), job.pipeline, job.params, trio.current_time()
            )
        except PipelineError as exc:
            raise RemoteProtocolError(str(exc), code=400) from None
        started = time.monotonic()  # the upload is arriving from now: real time starts here
        async with session.turn:  # in arrival order, one job at a time
            try:
                # Loading a model takes a while; frames that arrive meanwhile are late when
                # decoding begins, and are dropped until the session has caught up.
                await trio.to_thread.run_sync(self._prepare, session, limiter=self._live_limiter)
            except PipelineError as exc:
                raise MediaError(f"pipeline {job.pipeline!r} cannot start: {exc}") from exc
            transcoder = LadderTranscoder(
                tuple(profiles), encoder=self.encoder, stages={profiles[0].name: session}
            )
            outputs = await self._run(
                transcoder, source, session.running, session, relay, started=started
            )
        session.last_used = trio.current_time()
        return outputs

    @staticmethod
    def _prepare(session: LiveSession) -> None:
        with session.running():  # one job at a time: the next waits for the model to load
            session.runner.prepare()

    async def update_live(
        self, stream_id: str, session_id: str, params: Mapping[str, object], *, wait: float = 2.0
    ) -> LiveUpdated:
        """Changes a running session's parameters; returns where the change took effect,
        waiting up to ``wait`` seconds for the next frame.

        Raises:
            RemoteProtocolError: 404 no such session here, 400 invalid parameters.
        """
        session = self.live.get((stream_id, session_id))
        if session is None:
            raise RemoteProtocolError(f"no live session {session_id} here", code=404)
        try:
            version = session.update(params)
        except InvalidParamsError as exc:
            raise RemoteProtocolError(str(exc), code=400) from None
        # The encoder thread cannot set a trio.Event cheaply per frame: poll (2 ms) instead.
        for _ in range(max(1, round(wait / 0.002))):
            if session.applied(version).applied_pts is not None:
                break
            await trio.sleep(0.002)
        applied = session.applied(version)
        return LiveUpdated(
            version=version,
            after_pts=-1 if applied.after_pts is None else applied.after_pts,
            applied_pts=-1 if applied.applied_pts is None else applied.applied_pts,
            frames_between=applied.frames_between,
        )

    async def _run(
        self,
        transcoder: LadderTranscoder,
        source: SegmentBuffer,
        hold: Callable[[], contextlib.AbstractContextManager[Any]],
        session: LiveSession | None = None,
        relay: Relay | None = None,
        *,
        started: float | None = None,
    ) -> list[JobOutput]:
        profiles = transcoder.profiles
        outputs: list[bytearray] = [bytearray() for _ in profiles]
        token = trio.lowlevel.current_trio_token()
        reader = TrickleReader(source, token)
        pump = None if relay is None else RelayPump(relay, token)

        def on_data(index: int, data: bytes) -> None:
            outputs[index] += data
            if pump is not None:  # waits while the requester is far behind: backpressure
                pump.data(index, data)

        def on_start(renditions: list[tuple[str, int, int]]) -> None:
            if relay is not None:
                announced = [Rendition(name=n, width=w, height=h) for n, w, h in renditions]
                trio.from_thread.run(relay.start, announced, trio_token=token)

        def work() -> list[RenditionOutput]:
            with hold():
                return transcoder.transcode(reader, on_data, on_start, started=started)

        async def stop_reader_when_cancelled() -> None:
            try:
                await trio.sleep_forever()
            finally:
                reader.stop()

        try:
            with one_error():
                async with trio.open_nursery() as nursery:
                    # A blocked thread cannot be cancelled; ending its input makes it return.
                    nursery.start_soon(stop_reader_when_cancelled)
                    if pump is not None:
                        nursery.start_soon(pump.run)
                    limiter = self._limiter if session is None else self._live_limiter
                    results = await trio.to_thread.run_sync(work, limiter=limiter)
                    if pump is not None:
                        await pump.drain()
                    nursery.cancel_scope.cancel()
        except MediaError:
            raise
        except PipelineError as exc:
            raise MediaError(f"pipeline failed: {exc}") from exc
        except Exception as exc:  # a bug or an unmapped library error: report it, keep serving
            log.exception("transcode failed")
            raise MediaError(f"transcode failed: {exc}") from exc
        self._jobs_done += 1
        if session is not None:
            session.jobs += 1
            session.frames_out += sum(r.frames for r in results)
            session.dropped += sum(r.dropped for r in results)
            session.frames_in += sum(r.frames + r.dropped for r in results)
        return [
            JobOutput(
                info=RenditionInfo(
                    name=r.name,
                    width=r.width,
                    height=r.height,
                    pixels=r.pixels,
                    frames=r.frames,
                    size=len(outputs[i]),
                    duration_ms=r.duration_ms,
                    dropped=r.dropped,
                ),
                data=bytes(outputs[i]),
            )
            for i, r in enumerate(results)
        ]
