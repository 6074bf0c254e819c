"""The orchestrator's workers and the sessions pinned to them.

How this works
--------------
Workers are the in-process ``LocalWorker`` and ``RemoteWorker``s (one per registered
connection). A remote worker's jobs go to it on streams the orchestrator opens on the
worker's own connection.

Capacity is counted in work (``lpstream.orchestrator.capacity``): each worker takes its
``capacity`` in sessions' worth of pixels per second, and each session holds what it costs
(its estimate, then what its last job measured). A (stream, session) pair is pinned to a
worker while it keeps sending segments and is forgotten after ``session_ttl`` of silence (or
when its worker leaves). A session's next job goes to the same worker, whatever its cost now;
a new session goes to a worker that offers what the job needs and has its cost free, the one
with the most free, else a worker holding nothing at all (a session bigger than a whole worker
runs alone on one). When none has room the answer is ``BusyError`` (503) at once, naming the
budget: work is refused, never queued without bound.

A session with no job running holds its room for ``session_ttl``, but only while nobody else
needs it: once it has had no job running for ``reclaim_after`` seconds (a live session always
has one: the next segment's job starts as the last one's upload ends), a new session that
would not fit otherwise takes its room, and the silent one is forgotten. That is how the room
of a stream that ended, or that its gateway stopped sending, goes to a newcomer within a
second instead of after the ttl.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import attrs

from lpstream.errors import BusyError, RemoteProtocolError
from lpstream.jobs import JobOutput, Relay, request_job, request_update
from lpstream.orchestrator.capacity import SESSION_WORK, SessionCost, capacity_work, work_text
from lpstream.quic import QuicConnectionHandle
from lpstream.trickle import SegmentBuffer
from lpstream.wire import AiModelOffer, Job, LiveUpdate, LiveUpdated, RenditionInfo

__all__ = ["RemoteWorker", "SessionKey", "Worker", "WorkerPool"]

log = logging.getLogger("lpstream.orchestrator")

SessionKey = tuple[str, str]
"""(stream id, session id): what a session is pinned by."""

TRANSCODE = "transcode:h264"
"""The capability every orchestrator offers."""


class Worker(Protocol):
    """Something that transcodes: the local worker or a remote one."""

    worker_id: str
    capacity: int
    """Sessions' worth of work it takes (``lpstream.orchestrator.capacity``)."""

    def capabilities(self) -> tuple[str, ...]: ...

    def ai_models(self) -> tuple[AiModelOffer, ...]:
        """The batch AI models it runs (unpriced)."""
        ...

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[JobOutput]: ...

    async def update_live(
        self, stream_id: str, session_id: str, params: Mapping[str, object]
    ) -> LiveUpdated: ...


@attrs.define
class RemoteWorker:
    """A worker process that dialled in and registered with the secret."""

    worker_id: str
    capacity: int
    connection: QuicConnectionHandle
    offered: tuple[str, ...] = (TRANSCODE,)
    """The capabilities its WORKER_HELLO listed."""
    ai_offered: tuple[AiModelOffer, ...] = ()
    """The batch AI models its WORKER_HELLO listed."""
    response_timeout: float = 20.0
    """Seconds from the end of an upload to a complete answer (a batch AI job has
    ``batch_timeout``)."""
    batch_timeout: float = 900.0
    """Seconds from the end of a batch AI job's upload to its complete answer (a model may
    have to load, and an LLM writes for a while)."""

    def capabilities(self) -> tuple[str, ...]:
        return self.offered

    def ai_models(self) -> tuple[AiModelOffer, ...]:
        return self.ai_offered

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[JobOutput]:
        stream = await self.connection.open_stream()
        try:
            timeout = self.batch_timeout if job.capability else self.response_timeout
            result = await request_job(stream, job, source, response_timeout=timeout, relay=relay)
            return result.outputs
        finally:
            await stream.aclose()

    async def update_live(
        self, stream_id: str, session_id: str, params: Mapping[str, object]
    ) -> LiveUpdated:
        stream = await self.connection.open_stream()
        try:
            update = LiveUpdate(
                stream_id=stream_id,
                session_id=session_id,
                params={k: v for k, v in params.items() if isinstance(v, str | int | float)},
            )
            return await request_update(stream, update)
        finally:
            await stream.aclose()


@attrs.define
class _Session:
    worker_id: str
    last_used: float
    """When its last job was placed."""
    cost: SessionCost
    running: int = 0
    """Its jobs on the worker now."""
    idle_since: float = 0.0
    """When its last job ended (its start while one runs)."""

    def reclaimable(self, now: float, after: float) -> bool:
        return self.running == 0 and now - max(self.idle_since, self.last_used) > after


@attrs.define
class WorkerPool:
    """The registered workers and the sessions each holds (see the module comment)."""

    reclaim_after: float = 1.0
    """Seconds without a running job after which a session's room may go to a new session
    that needs it."""
    _workers: dict[str, Worker] = attrs.Factory(dict)
    _sessions: dict[SessionKey, _Session] = attrs.Factory(dict)

    # -- workers ------------------------------------------------------------------------------

    def add(self, worker: Worker) -> None:
        """Registers ``worker`` (replacing one with the same id)."""
        self._workers[worker.worker_id] = worker

    def remove(self, worker_id: str) -> None:
        """Forgets a worker; its sessions are dropped at the next ``expire``."""
        self._workers.pop(worker_id, None)

    def __iter__(self) -> Iterator[Worker]:
        return iter(self._workers.values())

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def capacity(self) -> int:
        """Sessions' worth all workers can take (``--capacity`` summed)."""
        return sum(w.capacity for w in self._workers.values())

    @property
    def work_capacity(self) -> int:
        """Pixels per second all workers can take."""
        return capacity_work(self.capacity)

    def capabilities(self) -> tuple[str, ...]:
        """What the workers offer together, sorted; transcoding always (a node whose workers
        are still joining takes work as before: 503 until one has room)."""
        offered = {c for w in self._workers.values() for c in w.capabilities()}
        return tuple(sorted(offered | {TRANSCODE}))

    # -- sessions -----------------------------------------------------------------------------

    @property
    def sessions(self) -> int:
        """Sessions holding capacity."""
        return len(self._sessions)

    @property
    def work(self) -> int:
        """Pixels per second the sessions hold."""
        return sum(s.cost.work for s in self._sessions.values())

    @property
    def in_use(self) -> int:
        """The work held, in sessions' worth, rounded up (what ORCH_INFO's ``in_use`` says
        against its ``capacity``: equal means a default session no longer fits)."""
        return math.ceil(self.work / SESSION_WORK)

    def load(self, worker_id: str) -> int:
        """Sessions ``worker_id`` holds."""
        return sum(1 for s in self._sessions.values() if s.worker_id == worker_id)

    def expire(self, now: float, ttl: float) -> None:
        """Forgets the sessions silent for over ``ttl`` seconds and those of gone workers."""
        for key, session in list(self._sessions.items()):
            if now - session.last_used > ttl or session.worker_id not in self._workers:
                del self._sessions[key]

    def holder(self, key: SessionKey) -> Worker | None:
        """The worker ``key``'s session is pinned to, if it still is."""
        session = self._sessions.get(key)
        return None if session is None else self._workers.get(session.worker_id)

    def release(self, key: SessionKey) -> None:
        """Unpins ``key``'s session (its worker failed it)."""
        self._sessions.pop(key, None)

    def job_started(self, key: SessionKey) -> None:
        """A job of ``key``'s session went to its worker."""
        session = self._sessions.get(key)
        if session is not None:
            session.running += 1

    def job_ended(
        self, key: SessionKey, now: float, outputs: Sequence[RenditionInfo] | None = None
    ) -> None:
        """A job of ``key``'s session ended; ``outputs``, if it succeeded, measure its cost."""
        session = self._sessions.get(key)
        if session is None:
            return
        session.running = max(0, session.running - 1)
        session.idle_since = now
        if outputs:
            session.cost = session.cost.measured(outputs)

    def check_room(self, cost: SessionCost, now: float, need: str = "") -> None:
        """Raises ``BusyError`` unless some worker has room for a new session of ``cost``."""
        self._place(cost, now, set(), need)

    def assign(
        self,
        key: SessionKey,
        now: float,
        exclude: set[str],
        need: str = "",
        cost: SessionCost | None = None,
    ) -> Worker:
        """The worker for ``key``'s next job: the one it is pinned to unless excluded, else
        one with room for ``cost`` among those offering ``need`` (module comment), then
        pinned; the sessions whose room it took are forgotten.

        Raises:
            BusyError: no worker has room (503).
            RemoteProtocolError: no worker offers ``need`` at all (400).
        """
        session = self._sessions.get(key)
        if session is not None and session.worker_id not in exclude:
            session.last_used = now
            return self._workers[session.worker_id]
        cost = cost or (session.cost if session is not None else SessionCost(work=SESSION_WORK))
        worker, reclaimed = self._place(cost, now, exclude, need)
        for old in reclaimed:
            log.info(
                "session %s/%s: its room went to a new session after %.1f s idle",
                *old,
                now - self._sessions[old].idle_since,
            )
            del self._sessions[old]
        self._sessions[key] = _Session(
            worker_id=worker.worker_id, last_used=now, cost=cost, idle_since=now
        )
        return worker

    def _place(
        self, cost: SessionCost, now: float, exclude: set[str], need: str
    ) -> tuple[Worker, list[SessionKey]]:
        """The worker a new session of ``cost`` goes to, and the idle sessions whose room
        it takes there.

        Raises:
            BusyError: no worker has room (503), saying how much is free of what.
            RemoteProtocolError: no worker offers ``need`` at all (400).
        """
        if not self._workers:
            raise BusyError("no workers are registered")
        if need and not any(need in w.capabilities() for w in self._workers.values()):
            raise RemoteProtocolError(f"no worker here offers {need}", code=400)
        best: tuple[tuple[bool, int], Worker, list[SessionKey]] | None = None
        for worker in self._workers.values():
            if worker.worker_id in exclude or (need and need not in worker.capabilities()):
                continue
            held = [(k, s) for k, s in self._sessions.items() if s.worker_id == worker.worker_id]
            room = capacity_work(worker.capacity) - sum(s.cost.work for _, s in held)
            idle = sorted(
                ((k, s) for k, s in held if s.reclaimable(now, self.reclaim_after)),
                key=lambda item: item[1].idle_since,
            )
            reclaimed: list[SessionKey] = []
            while room < cost.work and idle:
                key, session = idle.pop(0)
                reclaimed.append(key)
                room += session.cost.work
            if room < cost.work and len(reclaimed) < len(held):
                continue  # a session bigger than a whole worker runs only on an empty one
            rank = (not reclaimed, room)
            if best is None or rank > best[0]:
                best = (rank, worker, reclaimed)
        if best is None:
            free = max(0, self.work_capacity - self.work)
            raise BusyError(
                f"busy: a new session needs {work_text(cost.work)}; the workers' capacity "
                f"({work_text(self.work_capacity)}, {self.capacity} sessions' worth) has "
                f"{work_text(free)} free"
            )
        return best[1], best[2]
