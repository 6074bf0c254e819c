"""The orchestrator's workers and the sessions pinned to them.

How this works
--------------
Workers are the in-process ``LocalWorker`` and ``RemoteWorker``s (one per registered
connection). A remote worker's jobs go to it on streams the orchestrator opens on the
worker's own connection.

Capacity is counted in sessions, as in go-livepeer: a (stream, session) pair is pinned to a
worker while it keeps sending segments and is forgotten after ``session_ttl`` of silence (or
when its worker leaves). A session's next job goes to the same worker; a new session goes to
the worker with the most free slots that offers what the job needs. When every slot is taken
the answer is ``BusyError`` (503) at once: work is refused, never queued without bound.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import attrs

from lpstream.errors import BusyError, RemoteProtocolError
from lpstream.jobs import JobOutput, Relay, request_job, request_update
from lpstream.quic import QuicConnectionHandle
from lpstream.trickle import SegmentBuffer
from lpstream.wire import Job, LiveUpdate, LiveUpdated

__all__ = ["RemoteWorker", "SessionKey", "Worker", "WorkerPool"]

SessionKey = tuple[str, str]
"""(stream id, session id): what a session is pinned by."""

TRANSCODE = "transcode:h264"
"""The capability every orchestrator offers."""


class Worker(Protocol):
    """Something that transcodes: the local worker or a remote one."""

    worker_id: str
    capacity: int

    def capabilities(self) -> tuple[str, ...]: ...

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
    response_timeout: float = 20.0

    def capabilities(self) -> tuple[str, ...]:
        return self.offered

    async def run_job(
        self, job: Job, source: SegmentBuffer, relay: Relay | None = None
    ) -> Sequence[JobOutput]:
        stream = await self.connection.open_stream()
        try:
            result = await request_job(
                stream, job, source, response_timeout=self.response_timeout, relay=relay
            )
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


@attrs.define
class WorkerPool:
    """The registered workers and the sessions each holds (see the module comment)."""

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
        """Sessions all workers can take."""
        return sum(w.capacity for w in self._workers.values())

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

    def check_room(self) -> None:
        """Raises ``BusyError`` unless some worker has a free slot."""
        if not self._workers:
            raise BusyError("no workers are registered")
        if all(self.load(w.worker_id) >= w.capacity for w in self._workers.values()):
            raise BusyError(f"busy: all {self.capacity} sessions are in use")

    def assign(self, key: SessionKey, now: float, exclude: set[str], need: str = "") -> Worker:
        """The worker for ``key``'s next job: the one it is pinned to unless excluded, else
        the one with the most free slots among those offering ``need``, then pinned.

        Raises:
            BusyError: no worker has room (503).
            RemoteProtocolError: no worker offers ``need`` at all (400).
        """
        session = self._sessions.get(key)
        if session is not None and session.worker_id not in exclude:
            session.last_used = now
            return self._workers[session.worker_id]
        candidates = [
            w
            for w in self._workers.values()
            if w.worker_id not in exclude
            and self.load(w.worker_id) < w.capacity
            and (not need or need in w.capabilities())
        ]
        if not candidates:
            if not self._workers:
                raise BusyError("no workers are registered")
            if need and not any(need in w.capabilities() for w in self._workers.values()):
                raise RemoteProtocolError(f"no worker here offers {need}", code=400)
            raise BusyError(f"busy: all {self.capacity} sessions are in use")
        worker = max(candidates, key=lambda w: w.capacity - self.load(w.worker_id))
        self._sessions[key] = _Session(worker_id=worker.worker_id, last_used=now)
        return worker
